/* fuzz_wav.c - libFuzzer target: the WAV decoder (audio.h) and the mel
 * features of what it returns (mel.h).
 *
 * Any bytes go to ls_audio_decode_wav (max_seconds 600, as the service's
 * default). Invariants:
 *  - failures are INVALID_ARGUMENT with a non-empty, printable message and
 *    return no samples;
 *  - on success every sample is finite and in [-1, 1], and there are at most
 *    len + 1 of them (16-bit frames at the lowest rate, 8 kHz, double);
 *  - the mel features of the samples are in [-4, 4] and finite, and the
 *    window assembly of them stays inside its buffers (ASan). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "audio.h"
#include "mel.h"

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_wav: invariant broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    ls_err err = {0};
    check(ls_mel_init(&err) == 0, "ls_mel_init");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ls_audio a = {0};
    ls_err err = {.code = LS_OK, .msg = ""};
    if (ls_audio_decode_wav(data, size, 600, &a, &err) != 0) {
        check(err.code == LS_INVALID_ARGUMENT, "INVALID_ARGUMENT on failure");
        check(err.msg[0] != 0, "a message on failure");
        for (const char *p = err.msg; *p; p++) check((unsigned char)*p >= 0x20 && *p != 0x7f, "printable message");
        check(a.samples == NULL && a.n == 0, "no samples on failure");
        return 0;
    }
    check(a.n <= size + 1, "at most len + 1 samples");
    check((a.n == 0) == (a.samples == NULL), "samples NULL exactly when empty");
    for (size_t i = 0; i < a.n; i++) check(isfinite(a.samples[i]) && fabsf(a.samples[i]) <= 1.0f, "sample in [-1, 1]");
    size_t t = ls_mel_frames(a.n), nw = 0;
    float *mel = malloc(t * LS_MEL_BINS * sizeof *mel);
    check(mel != NULL, "malloc");
    check(ls_mel_compute(a.samples, a.n, mel, &err) == 0, "mel of decoded audio");
    for (size_t i = 0; i < t * LS_MEL_BINS; i++) check(mel[i] >= -4.0f && mel[i] <= 4.0f, "mel in [-4, 4]");
    if (ls_mel_window_count(t, &nw, &err) == 0) {
        float *win = malloc(nw * LS_MEL_BINS * LS_MEL_WINDOW * sizeof *win);
        check(win != NULL, "malloc");
        ls_mel_windows(mel, t, 0, nw, win);
        free(win);
    } else {
        check(t < LS_MEL_WINDOW && err.code == LS_INVALID_ARGUMENT, "too short only below 16 frames");
    }
    free(mel);
    ls_audio_free(&a);
    return 0;
}
