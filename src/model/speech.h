/* speech.h - speech that arrives in pieces (a live session) -> the U-Net
 * windows of every frame whose audio is complete, exactly the windows the
 * whole speech would give (model.h's ls_model_speech + ls_speech_windows).
 *
 * Why exact: a session's frames must be the frames RenderSpeech gives for the
 * concatenated audio, whatever the chunking. Each stage only turns out what
 * no later audio can change:
 *   - mel frame t is final once samples up to t*200 + 400 have arrived (its
 *     centred window and the pre-emphasis of its first sample lie inside);
 *   - encoder window k (mel rows floor(80k/25) .. +16) is final once those
 *     rows are, while the end-of-audio clamp cannot apply to it;
 *   - video frame i (rows i-8 .. i+7 of the padded encoder outputs) is final
 *     once encoder output i+6 is, so a frame waits for about 453 ms of audio
 *     past its own time (DESIGN.md's lookahead).
 * ls_speech_stream_finish applies the reference's end rules (zero padding
 * after the last sample, the clamped last windows, the repeated last output)
 * to what is left. Samples no future mel frame reads are dropped as the
 * stream advances; mel rows and encoder outputs are kept (26 + 51 KB per
 * second of speech), bounded by the caller's duration limit.
 *
 * Not thread-safe: one stream, one caller. */
#ifndef LS_SPEECH_H
#define LS_SPEECH_H

#include "model.h"

typedef struct ls_speech_stream ls_speech_stream;

/* A stream through m's audio encoder (m must have one, and outlive the
 * stream). NULL on out of memory. */
ls_speech_stream *ls_speech_stream_new(ls_model *m);
void ls_speech_stream_free(ls_speech_stream *s);

/* Append n 16 kHz mono samples and compute what became final. Errors:
 * RESOURCE_EXHAUSTED, the encoder's. */
int ls_speech_stream_push(ls_speech_stream *s, const float *x, size_t n, ls_err *err);

/* No more audio: everything left becomes final. Errors: INVALID_ARGUMENT
 * "audio too short" (under 16 mel frames in all), the encoder's. */
int ls_speech_stream_finish(ls_speech_stream *s, ls_err *err);

/* Frames final and not yet taken. */
size_t ls_speech_stream_ready(const ls_speech_stream *s);

/* Frames taken so far (= the index of the next one). */
size_t ls_speech_stream_taken(const ls_speech_stream *s);

/* After finish: the speech's frame count, N + 2; before: 0. */
size_t ls_speech_stream_total(const ls_speech_stream *s);

/* Samples pushed so far. */
size_t ls_speech_stream_samples(const ls_speech_stream *s);

/* The windows of the next count (<= ready) frames into out (count x 32 x 16
 * x 16 floats), which are then taken. */
void ls_speech_stream_take(ls_speech_stream *s, size_t count, float *out);

#endif
