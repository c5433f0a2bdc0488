/* mel.h - 16 kHz speech -> normalised log-mel frames -> the model's windows.
 *
 * The lip-sync models were trained on one exact feature recipe (Wav2Lip's
 * audio.py); anything else gives the encoder inputs it never saw, so this file
 * is the recipe, with every constant fixed:
 *
 *   1. x: mono float32 at 16000 Hz in [-1, 1] (audio.h makes it).
 *   2. pre-emphasis: y[0] = x[0], y[n] = x[n] - 0.97 x[n-1].
 *   3. STFT: n_fft 800, hop 200, periodic Hann window of 800
 *      (w[n] = 0.5 - 0.5 cos(2 pi n / 800)), centred frames: y is padded with
 *      400 zeros on each side (constant padding, not reflection), so a signal
 *      of len samples has T = 1 + floor(len / 200) frames, 80 per second.
 *      Magnitude |X| (not power) of the 401 bins.
 *   4. 80 Slaney mel filters (librosa filters.mel(sr=16000, n_fft=800,
 *      n_mels=80, fmin=55, fmax=7600, htk=False, norm="slaney")).
 *   5. S = 20 log10(max(1e-5, mel)) - 20; out = clip(8 (S + 100) / 100 - 4,
 *      -4, 4). Output [T, 80], row-major (frame-major).
 *
 * Then the two window assemblies around the audio encoder (pure functions,
 * no ONNX here):
 *   - encoder input: N windows of 16 mel frames, window k starting at frame
 *     floor(80 k / 25) (the last start clamped to T - 16), each transposed to
 *     [80 mel bins, 16 frames];
 *   - U-Net input: the encoder's N outputs of 512 are padded to N + 2 rows
 *     (first row repeated before, last after), one per video frame at 25 fps;
 *     frame i sees rows [i - 8, i + 8) of that padded array, zero rows past
 *     either end: [16, 512] floats.
 *
 * Threads: ls_mel_init must have returned 0 before any ls_mel_compute; after
 * that ls_mel_compute may run on any number of threads at once (each call
 * has its own buffers; the FFT plan and mel basis are read-only). The window
 * functions need no init. */
#ifndef LS_MEL_H
#define LS_MEL_H

#include <stddef.h>

#include "common.h"

#define LS_MEL_RATE 16000 /* input sample rate, Hz */
#define LS_MEL_NFFT 800
#define LS_MEL_HOP 200
#define LS_MEL_BINS 80     /* mel bins per frame */
#define LS_MEL_FPS 80      /* mel frames per second (LS_MEL_RATE / LS_MEL_HOP) */
#define LS_MEL_WINDOW 16   /* mel frames per encoder window */
#define LS_VIDEO_FPS 25    /* video frames per second */
#define LS_FEAT_DIM 512    /* encoder output per window */
#define LS_FEAT_WINDOW 16  /* encoder rows per U-Net frame window */

/* Plan the FFT and build the mel basis. Call once at start-up, before other
 * threads use ls_mel_compute; a second call while initialised does nothing.
 * Returns 0, or -1 with *err set (INTERNAL: FFTW could not plan,
 * RESOURCE_EXHAUSTED: out of memory). */
int ls_mel_init(ls_err *err);

/* Release what ls_mel_init made (and FFTW's own planner state). Call once at
 * exit, when no ls_mel_compute runs; ls_mel_init may be called again later. */
void ls_mel_cleanup(void);

/* T for a signal of n samples: 1 + n / LS_MEL_HOP. */
size_t ls_mel_frames(size_t n);

/* The features of x[0..n) into out, which holds ls_mel_frames(n) *
 * LS_MEL_BINS floats ([T, 80], row t is frame t). n may be 0 (one frame of
 * silence). Returns 0, or -1 with *err set (FAILED_PRECONDITION before
 * ls_mel_init, RESOURCE_EXHAUSTED). */
int ls_mel_compute(const float *x, size_t n, float *out, ls_err *err);

/* Frames [first, last) of the features of x[0..n) (last <= ls_mel_frames(n))
 * into out, which holds (last - first) x 80 floats: each equal to that
 * frame of ls_mel_compute(x, n). A live caller with the first n samples of a
 * longer signal gets the final value of frame t whenever t * 200 + 400 <= n
 * (its window and its pre-emphasis lie inside what has arrived). */
int ls_mel_compute_range(const float *x, size_t n, size_t first, size_t last, float *out, ls_err *err);

/* N, the number of encoder windows for T mel frames:
 * int((T - 16) / 80.0 * 25) + 2, evaluated in double exactly so. T < 16:
 * -1 with INVALID_ARGUMENT "audio too short: T mel frames, need at least 16". */
int ls_mel_window_count(size_t t, size_t *n, ls_err *err);

/* Encoder windows [first, first + count) of mel ([t, 80]) into out, which
 * holds count x 80 x 16 floats: out[k][m][j] = mel[start_k + j][m] (the same
 * bytes as a [count, 1, 80, 16] tensor). Requires t >= 16 and
 * first + count <= the window count of t (asserted). */
void ls_mel_windows(const float *mel, size_t t, size_t first, size_t count, float *out);

/* The U-Net windows of video frames [first, first + count) from the encoder's
 * output feat ([n, 512], n >= 1) into out, which holds count x 16 x 512
 * floats (= [count, 32, 16, 16]). There are n + 2 video frames; requires
 * first + count <= n + 2 (asserted). */
void ls_feat_windows(const float *feat, size_t n, size_t first, size_t count, float *out);

/* All n + 2 of them: out holds (n + 2) x 16 x 512 floats. */
void ls_feat_windows_all(const float *feat, size_t n, float *out);

#endif
