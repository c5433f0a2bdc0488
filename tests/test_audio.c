/* test_audio.c - unit tests of the audio front end (audio.h, mel.h).
 *
 * WAV files are built byte by byte here, so every header field the parser
 * looks at is under the test's control; every refusal is checked for its code
 * (INVALID_ARGUMENT) and for the key word of its message. The resampler is
 * checked by what it must preserve (a sine's frequency and RMS), the window
 * assembly against an explicitly padded array on small synthetic inputs, and
 * ls_mel_compute from several threads against one thread's result. The mel
 * values themselves are compared with numpy in tests/python/test_mel.py.
 * Prints one line per check and a final "N passed, M failed" line. */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio.h"
#include "mel.h"

static int g_pass, g_fail;

static void check_(int ok, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check_(int ok, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s - ", ok ? "ok" : "FAIL");
    vprintf(fmt, ap);
    va_end(ap);
    if (ok) {
        printf("\n");
        g_pass++;
    } else {
        printf(" (line %d)\n", line);
        g_fail++;
    }
    fflush(stdout);
}
#define CHECK(cond, ...) check_((cond) ? 1 : 0, __LINE__, __VA_ARGS__)

/* ---- a byte builder for WAV files ---- */

typedef struct {
    uint8_t b[8192];
    size_t n;
} bytes;

static void put(bytes *w, const void *p, size_t n) {
    if (w->n + n > sizeof w->b) abort();
    memcpy(w->b + w->n, p, n);
    w->n += n;
}
static void put16(bytes *w, unsigned v) {
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put(w, b, 2);
}
static void put32(bytes *w, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(w, b, 4);
}
static void putf(bytes *w, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put32(w, u);
}
static void riff(bytes *w) {
    w->n = 0;
    put(w, "RIFF", 4);
    put32(w, 0); /* patched by finish() */
    put(w, "WAVE", 4);
}
static void finish(bytes *w) {
    uint32_t v = (uint32_t)(w->n - 8);
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    memcpy(w->b + 4, b, 4);
}
/* A plain 16-byte fmt chunk. */
static void fmt(bytes *w, unsigned tag, unsigned ch, uint32_t rate, unsigned bits) {
    put(w, "fmt ", 4);
    put32(w, 16);
    put16(w, tag);
    put16(w, ch);
    put32(w, rate);
    put32(w, rate * ch * (bits / 8));
    put16(w, ch * (bits / 8));
    put16(w, bits);
}
/* A 40-byte WAVE_FORMAT_EXTENSIBLE fmt chunk with subformat sub. */
static void fmt_ext(bytes *w, unsigned sub, unsigned ch, uint32_t rate, unsigned bits, int bad_guid) {
    static const uint8_t tail[14] = {0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80,
                                     0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71};
    put(w, "fmt ", 4);
    put32(w, 40);
    put16(w, 0xFFFE);
    put16(w, ch);
    put32(w, rate);
    put32(w, rate * ch * (bits / 8));
    put16(w, ch * (bits / 8));
    put16(w, bits);
    put16(w, 22);
    put16(w, bits);
    put32(w, ch == 2 ? 3 : 4); /* channel mask */
    put16(w, sub);
    uint8_t t[14];
    memcpy(t, tail, 14);
    if (bad_guid) t[13] ^= 1;
    put(w, t, 14);
}
static void data_hdr(bytes *w, uint32_t size) {
    put(w, "data", 4);
    put32(w, size);
}
static void data16(bytes *w, const int16_t *s, size_t n) {
    data_hdr(w, (uint32_t)(2 * n));
    for (size_t i = 0; i < n; i++) put16(w, (uint16_t)s[i]);
}


/* ---- decoding ---- */

static void test_wav_ok(void) {
    bytes w;
    ls_audio a;
    ls_err err = {0};
    const int16_t s[4] = {0, 16384, -32768, 32767};

    riff(&w);
    fmt(&w, 1, 1, 16000, 16);
    data16(&w, s, 4);
    finish(&w);
    int rc = ls_audio_decode_wav(w.b, w.n, 600, &a, &err);
    CHECK(rc == 0 && a.n == 4, "pcm16 mono 16 kHz decodes to 4 samples (%s)", rc ? err.msg : "");
    CHECK(rc == 0 && a.samples[0] == 0 && a.samples[1] == 0.5f && a.samples[2] == -1.0f &&
              a.samples[3] == 32767.0f / 32768.0f,
          "pcm16 is divided by 32768");
    ls_audio_free(&a);
    CHECK(a.samples == NULL && a.n == 0, "ls_audio_free zeroes");

    /* Stereo: L/R averaged. */
    const int16_t st[6] = {16384, 0, -32768, -32768, 1000, -1000};
    riff(&w);
    fmt(&w, 1, 2, 16000, 16);
    data16(&w, st, 6);
    finish(&w);
    rc = ls_audio_decode_wav(w.b, w.n, 600, &a, &err);
    CHECK(rc == 0 && a.n == 3 && a.samples[0] == 0.25f && a.samples[1] == -1.0f && a.samples[2] == 0.0f,
          "stereo is mixed to mono by averaging");
    ls_audio_free(&a);

    /* Four channels. */
    const int16_t q[4] = {8192, 8192, 8192, -8192};
    riff(&w);
    fmt(&w, 1, 4, 16000, 16);
    data16(&w, q, 4);
    finish(&w);
    rc = ls_audio_decode_wav(w.b, w.n, 600, &a, &err);
    CHECK(rc == 0 && a.n == 1 && a.samples[0] == 0.125f, "4 channels averaged");
    ls_audio_free(&a);

    /* Float32, values past [-1, 1] clipped. */
    riff(&w);
    fmt(&w, 3, 1, 16000, 32);
    data_hdr(&w, 16);
    putf(&w, 0.5f);
    putf(&w, -0.25f);
    putf(&w, 2.0f);
    putf(&w, -3.0f);
    finish(&w);
    rc = ls_audio_decode_wav(w.b, w.n, 600, &a, &err);
    CHECK(rc == 0 && a.n == 4 && a.samples[0] == 0.5f && a.samples[1] == -0.25f && a.samples[2] == 1.0f &&
              a.samples[3] == -1.0f,
          "float32 decodes, clipped to [-1, 1]");
    ls_audio_free(&a);

    /* Extensible PCM stereo, and extensible float mono. */
    riff(&w);
    fmt_ext(&w, 1, 2, 16000, 16, 0);
    data16(&w, st, 6);
    finish(&w);
    rc = ls_audio_decode_wav(w.b, w.n, 600, &a, &err);
    CHECK(rc == 0 && a.n == 3 && a.samples[0] == 0.25f, "WAVE_FORMAT_EXTENSIBLE PCM16 stereo (%s)",
          rc ? err.msg : "");
    ls_audio_free(&a);
    riff(&w);
    fmt_ext(&w, 3, 1, 16000, 32, 0);
    data_hdr(&w, 8);
    putf(&w, 0.125f);
    putf(&w, -0.5f);
    finish(&w);
    rc = ls_audio_decode_wav(w.b, w.n, 600, &a, &err);
    CHECK(rc == 0 && a.n == 2 && a.samples[0] == 0.125f && a.samples[1] == -0.5f,
          "WAVE_FORMAT_EXTENSIBLE float32 (%s)", rc ? err.msg : "");
    ls_audio_free(&a);

    /* An odd-sized unknown chunk (with its pad byte) before fmt, a LIST chunk
     * between fmt and data, and a trailing chunk after data. */
    riff(&w);
    put(&w, "junk", 4);
    put32(&w, 3);
    put(&w, "abc\0", 4);
    fmt(&w, 1, 1, 16000, 16);
    put(&w, "LIST", 4);
    put32(&w, 12);
    put(&w, "INFOISFT\0\0\0\0", 12);
    data16(&w, s, 4);
    put(&w, "id3 ", 4);
    put32(&w, 2);
    put(&w, "xy", 2);
    finish(&w);
    rc = ls_audio_decode_wav(w.b, w.n, 600, &a, &err);
    CHECK(rc == 0 && a.n == 4 && a.samples[1] == 0.5f, "odd chunk padding and LIST chunk skipped (%s)",
          rc ? err.msg : "");
    ls_audio_free(&a);

    /* data before fmt is fine when data's size fits. */
    riff(&w);
    data16(&w, s, 4);
    fmt(&w, 1, 1, 16000, 16);
    finish(&w);
    rc = ls_audio_decode_wav(w.b, w.n, 600, &a, &err);
    CHECK(rc == 0 && a.n == 4, "data chunk before fmt chunk");
    ls_audio_free(&a);

    /* Streamed: data size 0xFFFFFFFF, clamped; a partial last frame dropped. */
    riff(&w);
    fmt(&w, 1, 1, 16000, 16);
    data_hdr(&w, 0xFFFFFFFFu);
    for (int i = 0; i < 4; i++) put16(&w, (uint16_t)s[i]);
    put(&w, "\x7f", 1);
    rc = ls_audio_decode_wav(w.b, w.n, 600, &a, &err);
    CHECK(rc == 0 && a.n == 4 && a.samples[3] == 32767.0f / 32768.0f,
          "data size 0xFFFFFFFF clamped to the file, partial frame dropped (%s)", rc ? err.msg : "");
    ls_audio_free(&a);

    /* Empty data: no samples, no allocation. */
    riff(&w);
    fmt(&w, 1, 1, 16000, 16);
    data_hdr(&w, 0);
    rc = ls_audio_decode_wav(w.b, w.n, 600, &a, &err);
    CHECK(rc == 0 && a.n == 0 && a.samples == NULL, "empty data chunk: 0 samples");

    /* Raw PCM. */
    uint8_t raw[8] = {0, 0x40, 0, 0, 0, 0x80, 0, 0x80}; /* s16le stereo: (16384,0), (-32768,-32768) */
    rc = ls_audio_decode_pcm(raw, 8, "s16le", 16000, 2, 600, &a, &err);
    CHECK(rc == 0 && a.n == 2 && a.samples[0] == 0.25f && a.samples[1] == -1.0f, "raw s16le stereo");
    ls_audio_free(&a);
    float fr[3] = {0.75f, -0.5f, 1.5f};
    rc = ls_audio_decode_pcm((const uint8_t *)fr, sizeof fr, "f32le", 16000, 1, 600, &a, &err);
    CHECK(rc == 0 && a.n == 3 && a.samples[0] == 0.75f && a.samples[2] == 1.0f, "raw f32le mono");
    ls_audio_free(&a);
}

/* A WAV that fails: code INVALID_ARGUMENT, message containing word, nothing returned. */
static void expect_bad(const bytes *w, double max_seconds, const char *word, const char *what) {
    ls_audio a = {(float *)1, 99};
    ls_err err = {0};
    int rc = ls_audio_decode_wav(w->b, w->n, max_seconds, &a, &err);
    CHECK(rc == -1 && err.code == LS_INVALID_ARGUMENT && strstr(err.msg, word) && a.samples == NULL && a.n == 0,
          "%s: INVALID_ARGUMENT \"%s\"", what, err.msg);
}
static void expect_bad_pcm(const uint8_t *p, size_t len, const char *enc, int rate, int ch, double max_seconds,
                           const char *word, const char *what) {
    ls_audio a = {(float *)1, 99};
    ls_err err = {0};
    int rc = ls_audio_decode_pcm(p, len, enc, rate, ch, max_seconds, &a, &err);
    CHECK(rc == -1 && err.code == LS_INVALID_ARGUMENT && strstr(err.msg, word) && a.samples == NULL && a.n == 0,
          "%s: INVALID_ARGUMENT \"%s\"", what, err.msg);
}

static void test_wav_bad(void) {
    bytes w;
    const int16_t s[4] = {1, 2, 3, 4};

    riff(&w);
    w.n = 10;
    expect_bad(&w, 600, "truncated header", "10 bytes");
    riff(&w);
    memcpy(w.b + 8, "AVI ", 4);
    fmt(&w, 1, 1, 16000, 16);
    expect_bad(&w, 600, "RIFF WAVE", "not WAVE");
    riff(&w);
    data16(&w, s, 4);
    expect_bad(&w, 600, "missing fmt", "no fmt chunk");
    riff(&w);
    fmt(&w, 1, 1, 16000, 16);
    put(&w, "LIST", 4);
    put32(&w, 0);
    expect_bad(&w, 600, "missing data", "no data chunk");
    riff(&w);
    fmt(&w, 1, 1, 16000, 16);
    w.n -= 4;
    expect_bad(&w, 600, "truncated fmt", "fmt chunk cut off");
    riff(&w);
    put(&w, "fmt ", 4);
    put32(&w, 10);
    put(&w, "0123456789", 10);
    data16(&w, s, 4);
    expect_bad(&w, 600, "fmt chunk of 10 bytes", "fmt chunk too short");
    riff(&w);
    fmt(&w, 2, 1, 16000, 16);
    data16(&w, s, 4);
    expect_bad(&w, 600, "unknown format tag", "ADPCM");
    riff(&w);
    fmt(&w, 1, 1, 16000, 24);
    data16(&w, s, 3);
    expect_bad(&w, 600, "bits per sample", "PCM 24-bit");
    riff(&w);
    fmt(&w, 1, 1, 16000, 8);
    data16(&w, s, 4);
    expect_bad(&w, 600, "bits per sample", "PCM 8-bit");
    riff(&w);
    fmt(&w, 3, 1, 16000, 64);
    data16(&w, s, 4);
    expect_bad(&w, 600, "bits per sample", "float 64-bit");
    riff(&w);
    fmt(&w, 1, 1, 0, 16);
    data16(&w, s, 4);
    expect_bad(&w, 600, "sample rate", "rate 0");
    riff(&w);
    fmt(&w, 1, 1, 4000000000u, 16);
    data16(&w, s, 4);
    expect_bad(&w, 600, "4000000000 Hz (expected 8000..192000 Hz)", "rate 4e9");
    riff(&w);
    fmt(&w, 1, 1, 7999, 16);
    data16(&w, s, 4);
    expect_bad(&w, 600, "sample rate", "rate 7999");
    riff(&w);
    fmt(&w, 1, 0, 16000, 16);
    data16(&w, s, 4);
    expect_bad(&w, 600, "channel count", "0 channels");
    riff(&w);
    fmt(&w, 1, 1000, 16000, 16);
    data16(&w, s, 4);
    expect_bad(&w, 600, "channel count", "1000 channels");
    riff(&w);
    fmt(&w, 1, 1, 16000, 16);
    data_hdr(&w, 3);
    put(&w, "abc\0", 4);
    expect_bad(&w, 600, "whole number of sample frames", "3 data bytes of PCM16");
    riff(&w);
    fmt(&w, 1, 2, 16000, 16);
    data16(&w, s, 3);
    expect_bad(&w, 600, "whole number of sample frames", "3 samples of stereo");
    riff(&w);
    fmt(&w, 1, 2, 16000, 16);
    w.b[12 + 8 + 12] = 2; /* block align 2 for stereo 16-bit */
    data16(&w, s, 4);
    expect_bad(&w, 600, "block align", "wrong block align");
    riff(&w);
    fmt_ext(&w, 1, 2, 16000, 16, 1);
    data16(&w, s, 4);
    expect_bad(&w, 600, "subformat", "extensible with an unknown GUID");
    riff(&w);
    fmt_ext(&w, 2, 1, 16000, 16, 0);
    data16(&w, s, 4);
    expect_bad(&w, 600, "subformat", "extensible ADPCM");
    riff(&w);
    fmt(&w, 1, 1, 16000, 16);
    data16(&w, s, 4);
    expect_bad(&w, 3.0 / 16000, "too long", "4 samples over a 3-sample limit");
    expect_bad(&w, 0, "max_seconds", "max_seconds 0");
    riff(&w);
    fmt(&w, 3, 1, 16000, 32);
    data_hdr(&w, 8);
    putf(&w, 0.5f);
    putf(&w, NAN);
    expect_bad(&w, 600, "NaN", "NaN float sample");

    uint8_t raw[8] = {0};
    expect_bad_pcm(raw, 8, "s24le", 16000, 1, 600, "pcm encoding", "encoding s24le");
    expect_bad_pcm(raw, 8, NULL, 16000, 1, 600, "pcm encoding", "no encoding");
    expect_bad_pcm(raw, 8, "s16le", 0, 1, 600, "sample rate", "pcm rate 0");
    expect_bad_pcm(raw, 8, "s16le", 1000000, 1, 600, "sample rate", "pcm rate 1e6");
    expect_bad_pcm(raw, 8, "s16le", 16000, 0, 600, "channel count", "pcm 0 channels");
    expect_bad_pcm(raw, 8, "f32le", 16000, -2, 600, "channel count", "pcm -2 channels");
    expect_bad_pcm(raw, 7, "s16le", 16000, 1, 600, "whole number of sample frames", "pcm odd byte count");
    expect_bad_pcm(raw, 8, "f32le", 16000, 3, 600, "whole number of sample frames", "pcm f32 8 bytes x 3 ch");
    expect_bad_pcm(raw, 8, "s16le", 16000, 1, 1e-4, "too long", "pcm over max_seconds");
}

/* ---- resampling ---- */

/* Power of x at frequency f (Goertzel). */
static double tone_power(const float *x, size_t n, double f, double rate) {
    double c = 2 * cos(2 * M_PI * f / rate), s1 = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        double s0 = x[i] + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    return s1 * s1 + s2 * s2 - c * s1 * s2;
}

static void check_sine(const ls_audio *a, size_t want_n, double f, double amp, const char *what) {
    CHECK(a->n == want_n, "%s: %zu samples (want %zu)", what, a->n, want_n);
    if (a->n < 2000) return;
    /* Skip 0.05 s at each end (the filter's ramp in and out). */
    const float *x = a->samples + 800;
    size_t n = a->n - 1600;
    double best_f = 0, best_p = -1;
    for (double g = 50; g < 7950; g += 10) {
        double p = tone_power(x, n, g, LS_AUDIO_RATE);
        if (p > best_p) best_p = p, best_f = g;
    }
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    double rms = sqrt(ss / n), want = amp / sqrt(2.0);
    CHECK(fabs(best_f - f) <= 10, "%s: dominant frequency %.0f Hz (want %.0f)", what, best_f, f);
    CHECK(fabs(rms - want) <= 0.01 * want, "%s: RMS %.5f (want %.5f)", what, rms, want);
    /* The tail is the signal too, not zero fill. */
    double tail = 0;
    for (size_t i = a->n - 100; i < a->n; i++) tail += (double)a->samples[i] * a->samples[i];
    CHECK(sqrt(tail / 100) > 0.5 * want, "%s: the last 100 samples carry the sine (RMS %.4f)", what,
          sqrt(tail / 100));
}

static float *sine(size_t n, double f, double amp, double rate) {
    float *x = malloc(n * sizeof *x);
    if (!x) abort();
    for (size_t i = 0; i < n; i++) x[i] = (float)(amp * sin(2 * M_PI * f * i / rate));
    return x;
}

static void test_resample(void) {
    ls_audio a;
    ls_err err = {0};
    float *x = sine(48000, 1000, 0.5, 48000);
    int rc = ls_audio_resample(x, 48000, 48000, &a, &err);
    CHECK(rc == 0, "48 kHz -> 16 kHz (%s)", rc ? err.msg : "");
    check_sine(&a, 16000, 1000, 0.5, "48 kHz 1 kHz sine");
    ls_audio_free(&a);
    free(x);

    x = sine(8000, 440, 0.8, 8000);
    rc = ls_audio_resample(x, 8000, 8000, &a, &err);
    CHECK(rc == 0, "8 kHz -> 16 kHz");
    check_sine(&a, 16000, 440, 0.8, "8 kHz 440 Hz sine");
    ls_audio_free(&a);
    free(x);

    x = sine(22050 * 2, 3000, 0.3, 22050);
    rc = ls_audio_resample(x, 22050 * 2, 22050, &a, &err);
    check_sine(&a, 32000, 3000, 0.3, "22.05 kHz 3 kHz sine");
    ls_audio_free(&a);
    free(x);

    /* 44.1 kHz stereo through the WAV decoder; one channel silent halves it. */
    size_t n = 4410;
    bytes w;
    riff(&w);
    fmt(&w, 1, 2, 44100, 16);
    data_hdr(&w, 0); /* streamed: size unknown */
    memset(w.b + w.n - 4, 0xFF, 4);
    for (size_t i = 0; i < n && w.n + 4 <= sizeof w.b; i++) {
        put16(&w, (uint16_t)(int16_t)lrint(16384 * sin(2 * M_PI * 2000.0 * i / 44100)));
        put16(&w, 0);
    }
    size_t frames = (w.n - 44) / 4;
    rc = ls_audio_decode_wav(w.b, w.n, 600, &a, &err);
    CHECK(rc == 0, "44.1 kHz stereo WAV (%s)", rc ? err.msg : "");
    size_t want = (size_t)(frames * 16000.0 / 44100 + 0.5);
    CHECK(a.n == want, "44.1 kHz: %zu frames -> %zu samples (want %zu)", frames, a.n, want);
    double p2k = a.n ? tone_power(a.samples, a.n, 2000, 16000) : 0, p1k = a.n ? tone_power(a.samples, a.n, 1000, 16000) : 0;
    CHECK(p2k > 100 * p1k, "44.1 kHz: the 2 kHz tone survives");
    ls_audio_free(&a);

    /* A full-scale square wave rings past 1 after band limiting: clipped. */
    float sq[4800];
    for (int i = 0; i < 4800; i++) sq[i] = (i / 24) % 2 ? 1.0f : -1.0f;
    rc = ls_audio_resample(sq, 4800, 48000, &a, &err);
    float mx = 0;
    for (size_t i = 0; i < a.n; i++) mx = fmaxf(mx, fabsf(a.samples[i]));
    CHECK(rc == 0 && a.n == 1600 && mx <= 1.0f, "resampled full-scale square wave stays in [-1, 1] (max %g)", mx);
    ls_audio_free(&a);

    rc = ls_audio_resample(sq, 1, 48000, &a, &err);
    CHECK(rc == 0 && a.n == 0 && a.samples == NULL, "1 sample at 48 kHz -> 0 samples");
    rc = ls_audio_resample(sq, 4, 48000, &a, &err);
    CHECK(rc == 0 && a.n == 1, "4 samples at 48 kHz -> 1 sample (%zu)", a.n);
    ls_audio_free(&a);
}


/* The streaming resampler against the one-shot one: pieces of random sizes
 * (1 sample up to 1 s), the same samples, the same count. */
static void stream_case(int rate, size_t n, size_t max_piece, unsigned seed) {
    float *x = malloc(n * sizeof *x + 1);
    if (!x) abort();
    srand(seed);
    for (size_t i = 0; i < n; i++) /* speech-like: tones that come and go, with full-scale peaks */
        x[i] = (float)(0.6 * sin(0.013 * (double)i) * ((i / 777) % 3 != 0) + 0.4 * ((rand() % 2001) - 1000) / 1000.0);
    ls_err err = {0};
    ls_audio one;
    int rc = ls_audio_resample(x, n, rate, &one, &err);
    ls_resampler *r = ls_resampler_new(rate, &err);
    CHECK(rc == 0 && r, "%d Hz: one-shot and stream set up (%s)", rate, err.msg);
    float *got = malloc((one.n + 1) * sizeof *got + 4096 * sizeof *got);
    size_t have = 0, pos = 0, pushes = 0;
    int ok = r && got;
    while (ok && pos <= n) {
        size_t k = pos == n ? 0 : 1 + (size_t)rand() % max_piece;
        if (k > n - pos) k = n - pos;
        ls_audio piece;
        ok = (pos < n ? ls_resampler_push(r, x + pos, k, &piece, &err) : ls_resampler_finish(r, &piece, &err)) == 0;
        if (ok && have + piece.n > one.n + 4096) ok = 0;
        if (ok) {
            if (piece.n) memcpy(got + have, piece.samples, piece.n * sizeof *got);
            have += piece.n;
        }
        ls_audio_free(&piece);
        pushes++;
        if (pos == n) break;
        pos += k;
    }
    CHECK(ok && have == one.n, "%d Hz, %zu samples in %zu pieces: %zu out, one-shot %zu (%s)", rate, n, pushes, have,
          one.n, err.msg);
    size_t diff = 0;
    for (size_t i = 0; ok && i < have && i < one.n; i++) diff += memcmp(&got[i], &one.samples[i], sizeof *got) != 0;
    CHECK(ok && diff == 0, "%d Hz: stream output identical to the one-shot, sample for sample (%zu differ)", rate,
          diff);
    ls_resampler_free(r);
    ls_audio_free(&one);
    free(got);
    free(x);
}

static void test_resampler_stream(void) {
    stream_case(48000, 48000 * 3 + 17, 4800, 1);
    stream_case(44100, 44100 * 2 + 5, 441, 2);
    stream_case(8000, 8000 * 3, 8000, 3);
    stream_case(22050, 22050, 1, 4); /* one sample at a time */
    stream_case(16000, 16000 * 2 + 1, 3000, 5);
    stream_case(192000, 192000, 19200, 6);
    stream_case(48000, 5, 2, 7); /* shorter than the filter */

    ls_err err = {0};
    ls_resampler *r = ls_resampler_new(7999, &err);
    CHECK(!r && err.code == LS_INVALID_ARGUMENT && strstr(err.msg, "8000..192000"), "7999 Hz refused (%s)", err.msg);
    ls_audio a;
    r = ls_resampler_new(48000, &err);
    CHECK(r && ls_resampler_finish(r, &a, &err) == 0 && a.n == 0, "no input: no output");
    ls_resampler_free(r);
    double l44 = ls_resampler_latency_ms(44100), l48 = ls_resampler_latency_ms(48000);
    CHECK(ls_resampler_latency_ms(16000) == 0 && l48 > 0 && l48 < 100 && l44 > 0 && l44 < 100,
          "latency: 0 at 16 kHz, 48 kHz %.1f ms, 44.1 kHz %.1f ms", l48, l44);
}

/* ---- mel ---- */

static void test_mel_basics(void) {
    ls_err err = {0};
    float out[2 * LS_MEL_BINS];
    float one = 0.5f;
    int rc = ls_mel_compute(&one, 1, out, &err);
    CHECK(rc == -1 && err.code == LS_FAILED_PRECONDITION, "ls_mel_compute before init: FAILED_PRECONDITION");
    CHECK(ls_mel_init(&err) == 0 && ls_mel_init(&err) == 0, "ls_mel_init, twice");
    CHECK(ls_mel_frames(0) == 1 && ls_mel_frames(199) == 1 && ls_mel_frames(200) == 2 && ls_mel_frames(16000) == 81,
          "T = 1 + len / 200");
    rc = ls_mel_compute(NULL, 0, out, &err);
    int all = 1;
    for (int m = 0; m < LS_MEL_BINS; m++) all &= out[m] == -4.0f;
    CHECK(rc == 0 && all, "empty signal: one frame, all -4");

    float *x = sine(16000, 1000, 1.0, 16000);
    size_t t = ls_mel_frames(16000);
    float *mel = malloc(t * LS_MEL_BINS * sizeof *mel);
    if (!mel) abort();
    rc = ls_mel_compute(x, 16000, mel, &err);
    /* 1 kHz is mel 15: filter (15 - mel(55)) / step ~ 24 of 80 peaks. */
    const float *row = mel + 40 * LS_MEL_BINS;
    int peak = 0;
    for (int m = 1; m < LS_MEL_BINS; m++)
        if (row[m] > row[peak]) peak = m;
    float lo = 4, hi = -4;
    for (size_t i = 0; i < t * LS_MEL_BINS; i++) lo = fminf(lo, mel[i]), hi = fmaxf(hi, mel[i]);
    CHECK(rc == 0 && peak >= 22 && peak <= 26 && row[peak] > 1.0f,
          "1 kHz full-scale sine peaks in mel bin %d (%.3f)", peak, row[peak]);
    CHECK(lo >= -4.0f && hi <= 4.0f, "values in [-4, 4] (%.3f..%.3f)", lo, hi);
    free(mel);
    free(x);
}

static void test_windows(void) {
    ls_err err = {0};
    size_t n = 0;
    int rc = ls_mel_window_count(15, &n, &err);
    CHECK(rc == -1 && err.code == LS_INVALID_ARGUMENT && strstr(err.msg, "audio too short") &&
              strstr(err.msg, "15 mel frames"),
          "T = 15: \"%s\"", err.msg);
    CHECK(ls_mel_window_count(16, &n, &err) == 0 && n == 2, "T = 16: N = 2");
    CHECK(ls_mel_window_count(17, &n, &err) == 0 && n == 2, "T = 17: N = 2");
    CHECK(ls_mel_window_count(96, &n, &err) == 0 && n == 27, "T = 96: N = 27");
    CHECK(ls_mel_window_count(801, &n, &err) == 0 && n == 247, "T = 801 (10 s): N = 247");

    /* mel[t][m] = 100 t + m, T = 20: N = int(4 / 80 * 25) + 2 = 3, starts 0, 3, 6 -> clamped to 4. */
    enum { T = 20 };
    float mel[T * LS_MEL_BINS];
    for (int t = 0; t < T; t++)
        for (int m = 0; m < LS_MEL_BINS; m++) mel[t * LS_MEL_BINS + m] = (float)(100 * t + m);
    CHECK(ls_mel_window_count(T, &n, &err) == 0 && n == 3, "T = 20: N = 3");
    static float win[3 * LS_MEL_BINS * LS_MEL_WINDOW], part[2 * LS_MEL_BINS * LS_MEL_WINDOW];
    ls_mel_windows(mel, T, 0, 3, win);
    const int starts[3] = {0, 3, 4};
    int ok = 1;
    for (int k = 0; k < 3; k++)
        for (int m = 0; m < LS_MEL_BINS; m++)
            for (int j = 0; j < LS_MEL_WINDOW; j++)
                ok &= win[(k * LS_MEL_BINS + m) * LS_MEL_WINDOW + j] == (float)(100 * (starts[k] + j) + m);
    CHECK(ok, "encoder windows: [80, 16] transposed, starts 0, 3 and the last clamped to T - 16");
    ls_mel_windows(mel, T, 1, 2, part);
    CHECK(!memcmp(part, win + LS_MEL_BINS * LS_MEL_WINDOW, sizeof part), "encoder windows: a range equals the slice");

    /* Encoder output n = 3 rows, feat[r][d] = 1000 (r + 1) + d; padded P = [f0, f0, f1, f2, f2]. */
    enum { NF = 3, NV = NF + 2, W = LS_FEAT_WINDOW * LS_FEAT_DIM };
    static float feat[NF * LS_FEAT_DIM], padded[NV * LS_FEAT_DIM], all[NV * W], some[2 * W];
    for (int r = 0; r < NF; r++)
        for (int d = 0; d < LS_FEAT_DIM; d++) feat[r * LS_FEAT_DIM + d] = (float)(1000 * (r + 1) + d);
    const int src[NV] = {0, 0, 1, 2, 2};
    for (int p = 0; p < NV; p++) memcpy(padded + p * LS_FEAT_DIM, feat + src[p] * LS_FEAT_DIM, LS_FEAT_DIM * 4);
    ls_feat_windows_all(feat, NF, all);
    ok = 1;
    int zeros = 0;
    for (int i = 0; i < NV; i++)
        for (int j = 0; j < LS_FEAT_WINDOW; j++) {
            int p = i - 8 + j;
            for (int d = 0; d < LS_FEAT_DIM; d++) {
                float want = (p < 0 || p >= NV) ? 0.0f : padded[p * LS_FEAT_DIM + d];
                ok &= all[i * W + j * LS_FEAT_DIM + d] == want;
            }
            zeros += p < 0 || p >= NV;
        }
    CHECK(ok, "U-Net windows: rows [i-8, i+8) of the N+2 padded rows, zeros beyond (%d zero rows)", zeros);
    CHECK(all[8 * LS_FEAT_DIM] == 1000 && all[9 * LS_FEAT_DIM] == 1000 && all[12 * LS_FEAT_DIM] == 3000 &&
              all[7 * LS_FEAT_DIM + 5] == 0 && all[13 * LS_FEAT_DIM] == 0,
          "frame 0: zeros, first row twice, ..., last row twice, zeros");
    ls_feat_windows(feat, NF, 3, 2, some);
    CHECK(!memcmp(some, all + 3 * W, sizeof some), "U-Net windows: frames [3, 5) equal the slice of all");

    /* n = 1: three frames of the same row. */
    ls_feat_windows_all(feat, 1, all);
    CHECK(all[(0 * LS_FEAT_WINDOW + 8) * LS_FEAT_DIM] == 1000 && all[(2 * LS_FEAT_WINDOW + 6) * LS_FEAT_DIM] == 1000 &&
              all[(2 * LS_FEAT_WINDOW + 9) * LS_FEAT_DIM] == 0,
          "U-Net windows of a single encoder row");
}

/* ---- threads ---- */

#define TN 48000
typedef struct {
    const float *x;
    float *mel;
    int rc;
    ls_audio au;
} job;

static void *worker(void *arg) {
    job *j = arg;
    ls_err err = {0};
    j->rc = 0;
    for (int r = 0; r < 3 && j->rc == 0; r++) {
        j->rc = ls_mel_compute(j->x, TN, j->mel, &err);
        ls_audio_free(&j->au);
        if (j->rc == 0) j->rc = ls_audio_resample(j->x, TN, 48000, &j->au, &err);
    }
    return NULL;
}

static void test_threads(void) {
    float *x = malloc(TN * sizeof *x);
    if (!x) abort();
    uint32_t s = 1;
    for (int i = 0; i < TN; i++) { /* noise plus a chirp: every bin busy */
        s = s * 1664525u + 1013904223u;
        x[i] = 0.3f * (float)sin(0.00001 * i * i) + 0.2f * ((float)(s >> 8) / 16777216.0f - 0.5f);
    }
    size_t t = ls_mel_frames(TN);
    ls_err err = {0};
    float *ref = malloc(t * LS_MEL_BINS * sizeof *ref);
    ls_audio ref_au = {0};
    if (!ref || ls_mel_compute(x, TN, ref, &err) || ls_audio_resample(x, TN, 48000, &ref_au, &err)) abort();
    enum { NT = 4 };
    job jobs[NT];
    pthread_t th[NT];
    for (int i = 0; i < NT; i++) {
        jobs[i] = (job){.x = x, .mel = malloc(t * LS_MEL_BINS * sizeof(float))};
        if (!jobs[i].mel || pthread_create(&th[i], NULL, worker, &jobs[i])) abort();
    }
    int ok = 1;
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        ok &= jobs[i].rc == 0 && !memcmp(jobs[i].mel, ref, t * LS_MEL_BINS * sizeof(float)) &&
              jobs[i].au.n == ref_au.n && !memcmp(jobs[i].au.samples, ref_au.samples, ref_au.n * sizeof(float));
        free(jobs[i].mel);
        ls_audio_free(&jobs[i].au);
    }
    CHECK(ok, "%d threads computing mel and resampling at once match one thread bit for bit", NT);
    ls_audio_free(&ref_au);
    free(ref);
    free(x);
}

int main(void) {
    test_wav_ok();
    test_wav_bad();
    test_resample();
    test_resampler_stream();
    test_mel_basics();
    test_windows();
    test_threads();
    ls_mel_cleanup();
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
