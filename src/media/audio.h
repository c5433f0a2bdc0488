/* audio.h - speech in: a client's audio bytes -> float32 mono 16 kHz samples.
 *
 * The audio encoder of the lip-sync models was trained on mel features of
 * 16 kHz mono speech (mel.h). Clients send whatever their recorder wrote, so
 * this layer accepts the two forms a client realistically has and turns both
 * into that one signal:
 *
 *   - a RIFF WAVE file: WAVE_FORMAT_PCM (1) with 16 bits per sample,
 *     WAVE_FORMAT_IEEE_FLOAT (3) with 32 bits, or WAVE_FORMAT_EXTENSIBLE
 *     (0xFFFE) whose subformat GUID is one of those two;
 *   - raw interleaved PCM, "s16le" or "f32le", with a rate and a channel count
 *     stated by the caller.
 *
 * Conversion: PCM16 is divided by 32768, so it lies in [-1, 32767/32768].
 * Float samples must be finite; values outside [-1, 1] are clipped to it.
 * Several channels are mixed to mono by averaging. Any rate in
 * [LS_AUDIO_MIN_RATE, LS_AUDIO_MAX_RATE] is resampled to 16 kHz with libsoxr
 * (high quality, linear phase); the resampler's output is clipped to [-1, 1]
 * again, since a band-limited full-scale signal may ring slightly past it.
 *
 * WAV parsing choices:
 *   - the RIFF size field is not trusted (streaming writers leave it 0 or
 *     0xFFFFFFFF): chunks are walked until the end of the buffer;
 *   - chunks other than "fmt " and "data" (LIST, fact, cue, ...) are skipped,
 *     including the pad byte that follows an odd-sized chunk;
 *   - a "data" chunk whose size runs past the end of the buffer (streamed WAVs
 *     write 0xFFFFFFFF, or the file was cut off) is clamped to the bytes that
 *     are there, and a trailing partial sample frame is then dropped; a data
 *     chunk that fits but is not a whole number of frames is an error;
 *   - the first "fmt " and the first "data" chunk are used.
 *
 * Every failure is INVALID_ARGUMENT with a message that names what is wrong
 * and what was expected; nothing is allocated then. No global state: every
 * function may be called from any thread. */
#ifndef LS_AUDIO_H
#define LS_AUDIO_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define LS_AUDIO_RATE 16000     /* the output rate, Hz */
#define LS_AUDIO_MIN_RATE 8000  /* accepted input rates, Hz, inclusive */
#define LS_AUDIO_MAX_RATE 192000
#define LS_AUDIO_MAX_CHANNELS 32 /* accepted channel counts: 1..32 */

/* Decoded audio: n float32 samples, mono, LS_AUDIO_RATE, each in [-1, 1].
 * Owned by the caller: free with ls_audio_free (samples is NULL when n is 0). */
typedef struct {
    float *samples;
    size_t n;
} ls_audio;

/* Decode a RIFF WAVE file of len bytes. Audio longer than max_seconds (at its
 * own rate, before resampling; the service passes audio.max_seconds) is
 * refused; max_seconds must be > 0. Returns 0 and fills *out, or -1 with
 * *err set (INVALID_ARGUMENT for bad audio, RESOURCE_EXHAUSTED when memory
 * runs out, INTERNAL if the resampler fails). */
int ls_audio_decode_wav(const uint8_t *data, size_t len, double max_seconds, ls_audio *out, ls_err *err);

/* Decode raw interleaved PCM: encoding "s16le" or "f32le", rate in
 * [LS_AUDIO_MIN_RATE, LS_AUDIO_MAX_RATE], channels in 1..LS_AUDIO_MAX_CHANNELS;
 * len must be a whole number of frames (channels x bytes per sample).
 * Otherwise as ls_audio_decode_wav. */
int ls_audio_decode_pcm(const uint8_t *data, size_t len, const char *encoding, int rate, int channels,
                        double max_seconds, ls_audio *out, ls_err *err);

/* frames interleaved sample frames (s16le, or f32le when is_float; channels
 * 1..LS_AUDIO_MAX_CHANNELS) -> *mono, frames floats (NULL when 0), converted,
 * clipped and averaged exactly as the decoders do. INVALID_ARGUMENT for a
 * float that is not finite. */
int ls_audio_mix_pcm(const uint8_t *data, size_t frames, int is_float, int channels, float **mono, ls_err *err);

/* Resample n mono samples at in_rate (LS_AUDIO_MIN_RATE..LS_AUDIO_MAX_RATE)
 * to LS_AUDIO_RATE, output clipped to [-1, 1]; a copy when in_rate is
 * already 16 kHz. The output has round(n * 16000 / in_rate) samples. Used by
 * both decoders; public so the resampler can be tested on its own. */
int ls_audio_resample(const float *in, size_t n, int in_rate, ls_audio *out, ls_err *err);

/* Streaming resampling, for audio that arrives in pieces (live sessions):
 * the concatenation of every push's output and the finish's is exactly
 * ls_audio_resample of the concatenated input, sample for sample, wherever
 * the input was cut (libsoxr's stream and one-shot paths run one filter; the
 * finish pads or cuts the flush to the one-shot length). Each push/finish
 * fills *out with the samples it produced (possibly none), owned by the
 * caller. in_rate as for ls_audio_resample; at 16 kHz the pieces are copied.
 * One resampler per stream, used by one thread at a time. */
typedef struct ls_resampler ls_resampler;
ls_resampler *ls_resampler_new(int in_rate, ls_err *err);
int ls_resampler_push(ls_resampler *r, const float *in, size_t n, ls_audio *out, ls_err *err);
/* No more input: the rest. Call once; push no more after it. */
int ls_resampler_finish(ls_resampler *r, ls_audio *out, ls_err *err);
void ls_resampler_free(ls_resampler *r);
/* How far the output lags the input once streaming at in_rate (ms at the
 * output; 0 at 16 kHz): added to a session's lookahead. */
double ls_resampler_latency_ms(int in_rate);

/* Free out's samples and zero it. NULL or an empty ls_audio is fine. */
void ls_audio_free(ls_audio *a);

#endif
