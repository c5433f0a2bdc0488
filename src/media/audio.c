/* audio.c - WAV / raw PCM decoding, mixing to mono, resampling to 16 kHz.
 *
 * Why this shape: client audio is untrusted bytes, so the parser reads every
 * field through bounds-checked little-endian helpers and validates it before
 * any size is computed from it; sizes are bounded by the buffer's length, so
 * no multiplication below can overflow. Decoding is two passes: bytes ->
 * mono float at the source rate (one malloc), then libsoxr's one-shot
 * resampler -> 16 kHz (a second malloc, the result). The contract is in
 * audio.h. */
#include "audio.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <soxr.h>

#define FMT_PCM 1
#define FMT_FLOAT 3
#define FMT_EXTENSIBLE 0xFFFE

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void clip(float *v, size_t n) {
    for (size_t i = 0; i < n; i++) v[i] = v[i] < -1.0f ? -1.0f : v[i] > 1.0f ? 1.0f : v[i];
}

void ls_audio_free(ls_audio *a) {
    if (!a) return;
    free(a->samples);
    a->samples = NULL;
    a->n = 0;
}

/* Sample layout after parsing: what the frames of the data bytes look like. */
typedef struct {
    int is_float; /* 0: int16, 1: float32 */
    int channels;
    int rate;
} layout;

/* long long: both a caller's int and a header's uint32 fit unchanged. */
static int check_rate_channels(long long rate, long long channels, ls_err *err) {
    if (rate < LS_AUDIO_MIN_RATE || rate > LS_AUDIO_MAX_RATE)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "unsupported sample rate %lld Hz (expected %d..%d Hz)", rate,
                          LS_AUDIO_MIN_RATE, LS_AUDIO_MAX_RATE);
    if (channels < 1 || channels > LS_AUDIO_MAX_CHANNELS)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "unsupported channel count %lld (expected 1..%d)", channels,
                          LS_AUDIO_MAX_CHANNELS);
    return 0;
}

static int check_duration(size_t frames, int rate, double max_seconds, ls_err *err) {
    if (!(max_seconds > 0))
        return ls_err_set(err, LS_INVALID_ARGUMENT, "max_seconds must be > 0 (got %g)", max_seconds);
    double secs = (double)frames / rate;
    if (secs > max_seconds)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "audio too long: %.2f s, the limit is %g s", secs,
                          max_seconds);
    return 0;
}

/* frames interleaved frames of l -> *mono (malloc'd, frames floats, mixed by
 * averaging, clipped to [-1, 1]). */
static int to_mono(const uint8_t *p, size_t frames, layout l, float **mono, ls_err *err) {
    *mono = NULL;
    if (frames == 0) return 0;
    float *m = malloc(frames * sizeof *m);
    if (!m) return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for %zu audio samples", frames);
    const size_t bps = l.is_float ? 4 : 2;
    const float inv_ch = 1.0f / (float)l.channels;
    for (size_t i = 0; i < frames; i++) {
        const uint8_t *f = p + i * bps * (size_t)l.channels;
        float acc = 0;
        for (int c = 0; c < l.channels; c++) {
            float v;
            if (l.is_float) {
                uint32_t u = rd32(f + 4 * (size_t)c);
                memcpy(&v, &u, sizeof v);
                if (!isfinite(v)) {
                    free(m);
                    return ls_err_set(err, LS_INVALID_ARGUMENT,
                                      "float sample %zu (channel %d) is NaN or infinite (expected finite values "
                                      "in [-1, 1])",
                                      i, c);
                }
                v = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
            } else {
                v = (float)(int16_t)rd16(f + 2 * (size_t)c) * (1.0f / 32768.0f);
            }
            acc += v;
        }
        m[i] = l.channels == 1 ? acc : acc * inv_ch;
    }
    *mono = m;
    return 0;
}

int ls_audio_resample(const float *in, size_t n, int in_rate, ls_audio *out, ls_err *err) {
    out->samples = NULL;
    out->n = 0;
    if (in_rate < LS_AUDIO_MIN_RATE || in_rate > LS_AUDIO_MAX_RATE)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "unsupported sample rate %d Hz (expected %d..%d Hz)", in_rate,
                          LS_AUDIO_MIN_RATE, LS_AUDIO_MAX_RATE);
    if (n == 0) return 0;
    size_t olen = in_rate == LS_AUDIO_RATE ? n : (size_t)((double)n * LS_AUDIO_RATE / in_rate + 0.5);
    if (olen == 0) return 0; /* a few samples at a high rate: less than one output sample */
    float *o = malloc(olen * sizeof *o);
    if (!o) return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for %zu resampled samples", olen);
    if (in_rate == LS_AUDIO_RATE) {
        memcpy(o, in, n * sizeof *o);
    } else {
        soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
        soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
        soxr_runtime_spec_t rt = soxr_runtime_spec(1); /* no threads of its own: the caller's thread */
        size_t idone = 0, odone = 0;
        soxr_error_t e = soxr_oneshot((double)in_rate, (double)LS_AUDIO_RATE, 1, in, n, &idone, o, olen, &odone,
                                      &io, &q, &rt);
        if (e) {
            free(o);
            return ls_err_set(err, LS_INTERNAL, "resampling %d Hz -> %d Hz failed: %s", in_rate, LS_AUDIO_RATE, e);
        }
        assert(odone <= olen);
        /* soxr's one-shot flush delivers the whole length; should it come up
         * short, the tail is silence rather than uninitialised memory. */
        for (size_t i = odone; i < olen; i++) o[i] = 0;
    }
    clip(o, olen);
    out->samples = o;
    out->n = olen;
    return 0;
}

int ls_audio_mix_pcm(const uint8_t *data, size_t frames, int is_float, int channels, float **mono, ls_err *err) {
    assert(channels >= 1 && channels <= LS_AUDIO_MAX_CHANNELS);
    return to_mono(data, frames, (layout){.is_float = is_float != 0, .channels = channels, .rate = 0}, mono, err);
}

/* The shared tail of both decoders: frames of l at p -> *out. */
static int decode_frames(const uint8_t *p, size_t frames, layout l, double max_seconds, ls_audio *out,
                         ls_err *err) {
    if (check_duration(frames, l.rate, max_seconds, err)) return -1;
    float *mono;
    if (to_mono(p, frames, l, &mono, err)) return -1;
    int rc = ls_audio_resample(mono, frames, l.rate, out, err);
    free(mono);
    return rc;
}

int ls_audio_decode_pcm(const uint8_t *data, size_t len, const char *encoding, int rate, int channels,
                        double max_seconds, ls_audio *out, ls_err *err) {
    out->samples = NULL;
    out->n = 0;
    layout l = {.channels = channels, .rate = rate};
    if (encoding && strcmp(encoding, "s16le") == 0)
        l.is_float = 0;
    else if (encoding && strcmp(encoding, "f32le") == 0)
        l.is_float = 1;
    else
        return ls_err_set(err, LS_INVALID_ARGUMENT, "unknown pcm encoding \"%.64s\" (expected \"s16le\" or \"f32le\")",
                          encoding ? encoding : "");
    if (check_rate_channels(rate, channels, err)) return -1;
    size_t frame = (size_t)channels * (l.is_float ? 4 : 2);
    if (len % frame)
        return ls_err_set(err, LS_INVALID_ARGUMENT,
                          "not a whole number of sample frames: %zu bytes is not a multiple of %zu (%d channels x "
                          "%d bytes per sample)",
                          len, frame, channels, l.is_float ? 4 : 2);
    return decode_frames(data, len / frame, l, max_seconds, out, err);
}

/* Parse the "fmt " payload (sz bytes at p) into *l. */
static int parse_fmt(const uint8_t *p, uint32_t sz, layout *l, ls_err *err) {
    if (sz < 16)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "fmt chunk of %u bytes is truncated (expected at least 16)", sz);
    unsigned tag = rd16(p);
    unsigned channels = rd16(p + 2);
    uint32_t rate = rd32(p + 4);
    unsigned block_align = rd16(p + 12);
    unsigned bits = rd16(p + 14);
    if (tag == FMT_EXTENSIBLE) {
        /* cbSize(2) validBits(2) channelMask(4) subformat GUID(16): the GUID is
         * the old format tag followed by the fixed KSDATAFORMAT tail. */
        static const uint8_t tail[14] = {0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80,
                                         0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71};
        if (sz < 40 || rd16(p + 16) < 22)
            return ls_err_set(err, LS_INVALID_ARGUMENT,
                              "WAVE_FORMAT_EXTENSIBLE fmt chunk of %u bytes is truncated (expected 40 bytes with "
                              "a 22-byte extension)",
                              sz);
        if (memcmp(p + 26, tail, sizeof tail) != 0)
            return ls_err_set(err, LS_INVALID_ARGUMENT,
                              "unknown WAVE_FORMAT_EXTENSIBLE subformat GUID (expected PCM or IEEE float)");
        tag = rd16(p + 24);
        if (tag != FMT_PCM && tag != FMT_FLOAT)
            return ls_err_set(err, LS_INVALID_ARGUMENT,
                              "unknown WAVE_FORMAT_EXTENSIBLE subformat %u (expected 1 = PCM or 3 = IEEE float)",
                              tag);
    }
    if (tag == FMT_PCM) {
        if (bits != 16)
            return ls_err_set(err, LS_INVALID_ARGUMENT,
                              "unsupported bits per sample %u for PCM (expected 16)", bits);
        l->is_float = 0;
    } else if (tag == FMT_FLOAT) {
        if (bits != 32)
            return ls_err_set(err, LS_INVALID_ARGUMENT,
                              "unsupported bits per sample %u for IEEE float (expected 32)", bits);
        l->is_float = 1;
    } else {
        return ls_err_set(err, LS_INVALID_ARGUMENT,
                          "unknown format tag %u (expected 1 = PCM, 3 = IEEE float or 0xFFFE = extensible)", tag);
    }
    if (check_rate_channels(rate, channels, err)) return -1;
    l->rate = (int)rate;
    l->channels = (int)channels;
    if (block_align != channels * (bits / 8))
        return ls_err_set(err, LS_INVALID_ARGUMENT,
                          "block align %u does not match %u channels x %u bits (expected %u)", block_align,
                          channels, bits, channels * (bits / 8));
    return 0;
}

int ls_audio_decode_wav(const uint8_t *data, size_t len, double max_seconds, ls_audio *out, ls_err *err) {
    out->samples = NULL;
    out->n = 0;
    if (len < 12)
        return ls_err_set(err, LS_INVALID_ARGUMENT,
                          "truncated header: %zu bytes (a WAV file starts with 12: \"RIFF\", size, \"WAVE\")", len);
    if (memcmp(data, "RIFF", 4) != 0 || memcmp(data + 8, "WAVE", 4) != 0)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "not a RIFF WAVE file (expected \"RIFF\"....\"WAVE\")");
    layout l = {0};
    int have_fmt = 0, have_data = 0;
    const uint8_t *pcm = NULL;
    size_t pcm_len = 0;
    int clamped = 0;
    size_t pos = 12;
    while (len - pos >= 8 && !(have_fmt && have_data)) {
        const uint8_t *id = data + pos;
        uint32_t sz = rd32(data + pos + 4);
        size_t body = pos + 8, left = len - body;
        if (memcmp(id, "fmt ", 4) == 0 && !have_fmt) {
            if (sz > left)
                return ls_err_set(err, LS_INVALID_ARGUMENT,
                                  "truncated fmt chunk: it declares %u bytes, %zu are there", sz, left);
            if (parse_fmt(data + body, sz, &l, err)) return -1;
            have_fmt = 1;
        } else if (memcmp(id, "data", 4) == 0 && !have_data) {
            have_data = 1;
            pcm = data + body;
            pcm_len = sz;
            if (sz > left) { /* streamed (0xFFFFFFFF) or cut off: what is there */
                pcm_len = left;
                clamped = 1;
                break;
            }
        }
        if (sz > left) break; /* an unknown chunk running off the end: nothing more to find */
        pos = body + sz;
        if ((sz & 1) && pos < len) pos++; /* pad byte after an odd-sized chunk */
    }
    if (!have_fmt)
        return ls_err_set(err, LS_INVALID_ARGUMENT,
                          have_data ? "missing fmt chunk before the end of the data (expected \"fmt \" then "
                                      "\"data\")"
                                    : "missing fmt chunk (expected a \"fmt \" chunk)");
    if (!have_data) return ls_err_set(err, LS_INVALID_ARGUMENT, "missing data chunk (expected a \"data\" chunk)");
    size_t frame = (size_t)l.channels * (l.is_float ? 4 : 2);
    if (pcm_len % frame) {
        if (!clamped)
            return ls_err_set(err, LS_INVALID_ARGUMENT,
                              "data chunk is not a whole number of sample frames: %zu bytes is not a multiple of "
                              "%zu (%d channels x %d bytes per sample)",
                              pcm_len, frame, l.channels, l.is_float ? 4 : 2);
        pcm_len -= pcm_len % frame; /* a cut-off file's partial last frame */
    }
    return decode_frames(pcm, pcm_len / frame, l, max_seconds, out, err);
}

/* ---- streaming resampler --------------------------------------------------
 *
 * libsoxr's stream interface runs the same filter as its one-shot call and
 * keeps its own input position, so the output does not depend on where the
 * input was cut: checked sample for sample against ls_audio_resample in
 * test_audio.c. The one thing the one-shot call decides differently is the
 * length (round(n * 16000 / rate), the flush padded or cut to it), which
 * ls_resampler_finish reproduces. */

struct ls_resampler {
    int rate;
    soxr_t soxr; /* NULL at 16 kHz: a copy */
    size_t in_total, out_total;
};

static soxr_t soxr_for(int rate, soxr_error_t *e) {
    soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
    soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
    soxr_runtime_spec_t rt = soxr_runtime_spec(1);
    return soxr_create((double)rate, (double)LS_AUDIO_RATE, 1, e, &io, &q, &rt);
}

ls_resampler *ls_resampler_new(int in_rate, ls_err *err) {
    if (in_rate < LS_AUDIO_MIN_RATE || in_rate > LS_AUDIO_MAX_RATE) {
        ls_err_set(err, LS_INVALID_ARGUMENT, "unsupported sample rate %d Hz (expected %d..%d Hz)", in_rate,
                   LS_AUDIO_MIN_RATE, LS_AUDIO_MAX_RATE);
        return NULL;
    }
    ls_resampler *r = calloc(1, sizeof *r);
    if (!r) {
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for a resampler");
        return NULL;
    }
    r->rate = in_rate;
    if (in_rate != LS_AUDIO_RATE) {
        soxr_error_t e = NULL;
        r->soxr = soxr_for(in_rate, &e);
        if (!r->soxr || e) {
            ls_err_set(err, LS_INTERNAL, "resampler %d Hz -> %d Hz: %s", in_rate, LS_AUDIO_RATE, e ? e : "failed");
            soxr_delete(r->soxr);
            free(r);
            return NULL;
        }
    }
    return r;
}

void ls_resampler_free(ls_resampler *r) {
    if (!r) return;
    soxr_delete(r->soxr);
    free(r);
}

/* Append what soxr gives for in[0..n) (in NULL: the flush) to out. */
static int resampler_run(ls_resampler *r, const float *in, size_t n, ls_audio *out, ls_err *err) {
    size_t cap = out->n + (size_t)((double)n * LS_AUDIO_RATE / r->rate) + 1024;
    for (;;) {
        float *p = realloc(out->samples, cap * sizeof *p);
        if (!p) return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for %zu resampled samples", cap);
        out->samples = p;
        size_t idone = 0, odone = 0;
        soxr_error_t e = soxr_process(r->soxr, in, n, in ? &idone : NULL, p + out->n, cap - out->n, &odone);
        if (e) return ls_err_set(err, LS_INTERNAL, "resampling %d Hz -> %d Hz failed: %s", r->rate, LS_AUDIO_RATE, e);
        out->n += odone;
        if (in) {
            in += idone;
            n -= idone;
            if (n == 0) return 0;
        } else if (odone == 0) {
            return 0; /* flushed */
        }
        if (out->n == cap) cap *= 2;
    }
}

int ls_resampler_push(ls_resampler *r, const float *in, size_t n, ls_audio *out, ls_err *err) {
    out->samples = NULL;
    out->n = 0;
    r->in_total += n;
    int rc = 0;
    if (n == 0) return 0;
    if (!r->soxr) {
        if (!(out->samples = malloc(n * sizeof *out->samples)))
            return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for %zu samples", n);
        memcpy(out->samples, in, n * sizeof *in);
        out->n = n;
    } else {
        rc = resampler_run(r, in, n, out, err);
    }
    /* Never past the one-shot length of what has arrived: soxr lags its
     * input, so this holds, and the finish can then only pad or cut its own
     * flush. */
    assert(rc || r->out_total + out->n <= (size_t)((double)r->in_total * LS_AUDIO_RATE / r->rate + 0.5));
    if (rc) {
        ls_audio_free(out);
        return rc;
    }
    clip(out->samples, out->n);
    r->out_total += out->n;
    return 0;
}

int ls_resampler_finish(ls_resampler *r, ls_audio *out, ls_err *err) {
    out->samples = NULL;
    out->n = 0;
    size_t want = r->rate == LS_AUDIO_RATE ? r->in_total
                                           : (size_t)((double)r->in_total * LS_AUDIO_RATE / r->rate + 0.5);
    assert(r->out_total <= want); /* see ls_resampler_push */
    if (r->soxr && r->in_total > 0 && resampler_run(r, NULL, 0, out, err) != 0) {
        ls_audio_free(out);
        return -1;
    }
    size_t n = want > r->out_total ? want - r->out_total : 0; /* the flush, cut or padded to the one-shot length */
    if (n == 0) {
        ls_audio_free(out);
        return 0;
    }
    float *p = realloc(out->samples, n * sizeof *p);
    if (!p) {
        ls_audio_free(out);
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for %zu resampled samples", n);
    }
    for (size_t i = out->n; i < n; i++) p[i] = 0;
    clip(p, n);
    out->samples = p;
    out->n = n;
    r->out_total = want;
    return 0;
}

double ls_resampler_latency_ms(int in_rate) {
    if (in_rate == LS_AUDIO_RATE || in_rate < LS_AUDIO_MIN_RATE || in_rate > LS_AUDIO_MAX_RATE) return 0;
    soxr_error_t e = NULL;
    soxr_t s = soxr_for(in_rate, &e);
    if (!s || e) {
        soxr_delete(s);
        return 0;
    }
    /* What the resampler holds back once streaming: 400 ms of silence in
     * 20 ms pieces, the most of its own count of output samples not yet
     * given out after each (it works in blocks, so the count rises and
     * falls). */
    float in[LS_AUDIO_MAX_RATE / 50], out[LS_AUDIO_RATE / 10];
    memset(in, 0, sizeof in);
    double held = 0;
    for (int i = 0; i < 20; i++) {
        size_t idone = 0, odone = 0;
        soxr_process(s, in, (size_t)in_rate / 50, &idone, out, sizeof out / sizeof *out, &odone);
        held = fmax(held, soxr_delay(s));
    }
    double ms = held * 1000.0 / LS_AUDIO_RATE;
    soxr_delete(s);
    return ms;
}
