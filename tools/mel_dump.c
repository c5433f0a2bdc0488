/* mel_dump.c - lsmel: the audio front end (audio.h, mel.h) as a command, so
 * tests and benchmarks outside C can check and time exactly the code the
 * server runs.
 *
 *   lsmel IN [input kind] [outputs] [--bench R]
 *
 * Input kind (default --wav):
 *   --wav                     IN is a WAV file (ls_audio_decode_wav)
 *   --pcm ENC RATE CHANNELS   IN is raw PCM (ls_audio_decode_pcm), ENC s16le|f32le
 *   --f32                     IN is raw float32 mono 16 kHz samples, used as is
 *   --max-seconds S           the decoders' limit (default 600)
 * Outputs (raw little-endian float32, row-major):
 *   --samples F      the 16 kHz mono samples
 *   --mel F          [T, 80]
 *   --windows F      encoder windows [N, 80, 16] (--win-range FIRST COUNT: only those)
 *   --encoder W --feat F
 *                    W is a [1280, 512] float32 matrix, a stand-in linear
 *                    "encoder": feat[k] = flatten(window k) @ W gives [N, 512];
 *                    F gets the U-Net windows [N + 2, 16, 512]
 *                    (--feat-range FIRST COUNT: only those frames)
 *   --bench R        time R rounds of mel + encoder windows + U-Net windows
 *                    (the latter over fixed pseudo-random encoder outputs),
 *                    and of decoding (+ resampling) for WAV / PCM input
 * Prints one JSON line: samples, frames (T), windows (N), and the timings
 * with --bench. Exit status 1 with the error on stderr on failure. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audio.h"
#include "mel.h"

static int die(const char *fmt, const char *arg) {
    fprintf(stderr, "lsmel: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    return 1;
}

static int write_f32(const char *path, const float *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(p, sizeof *p, n, f) : 0;
    return (fclose(f) != 0 || w != n) ? -1 : 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 2) return die("%s", "usage: lsmel IN [--wav | --pcm ENC RATE CH | --f32] [outputs] (see tools/mel_dump.c)");
    const char *in = argv[1], *kind = "wav", *enc = NULL;
    const char *o_samples = NULL, *o_mel = NULL, *o_win = NULL, *o_feat = NULL, *w_path = NULL;
    int rate = 0, channels = 0, bench = 0;
    double max_seconds = 600;
    size_t win_first = 0, win_count = (size_t)-1, feat_first = 0, feat_count = (size_t)-1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        int left = argc - i - 1;
        if (!strcmp(a, "--wav")) kind = "wav";
        else if (!strcmp(a, "--f32")) kind = "f32";
        else if (!strcmp(a, "--pcm") && left >= 3) {
            kind = "pcm";
            enc = argv[++i];
            rate = atoi(argv[++i]);
            channels = atoi(argv[++i]);
        } else if (!strcmp(a, "--max-seconds") && left >= 1) max_seconds = atof(argv[++i]);
        else if (!strcmp(a, "--samples") && left >= 1) o_samples = argv[++i];
        else if (!strcmp(a, "--mel") && left >= 1) o_mel = argv[++i];
        else if (!strcmp(a, "--windows") && left >= 1) o_win = argv[++i];
        else if (!strcmp(a, "--encoder") && left >= 1) w_path = argv[++i];
        else if (!strcmp(a, "--feat") && left >= 1) o_feat = argv[++i];
        else if (!strcmp(a, "--win-range") && left >= 2) {
            win_first = strtoul(argv[++i], NULL, 10);
            win_count = strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(a, "--feat-range") && left >= 2) {
            feat_first = strtoul(argv[++i], NULL, 10);
            feat_count = strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(a, "--bench") && left >= 1) bench = atoi(argv[++i]);
        else return die("unknown or incomplete argument %s", a);
    }
    if (o_feat && !w_path) return die("%s", "--feat needs --encoder W");

    ls_err err = {0};
    ls_buf file = {0};
    ls_audio au = {0};
    float *mel = NULL, *win = NULL, *feat = NULL, *fw = NULL, *wmat = NULL;
    ls_buf wbuf = {0};
    int rc = 1;
    if (ls_read_file(in, &file, (size_t)1 << 31) != 0) {
        rc = die("cannot read %s", in);
        goto done;
    }
    if (!strcmp(kind, "f32")) {
        au.n = file.len / sizeof(float);
        au.samples = malloc(au.n ? au.n * sizeof(float) : 1);
        if (!au.samples) goto oom;
        memcpy(au.samples, file.data, au.n * sizeof(float));
    } else if (!strcmp(kind, "wav") ? ls_audio_decode_wav(file.data, file.len, max_seconds, &au, &err)
                                    : ls_audio_decode_pcm(file.data, file.len, enc, rate, channels, max_seconds,
                                                          &au, &err)) {
        fprintf(stderr, "lsmel: %s: %s: %s\n", in, ls_code_name(err.code), err.msg);
        goto done;
    }
    if (o_samples && write_f32(o_samples, au.samples, au.n)) {
        rc = die("cannot write %s", o_samples);
        goto done;
    }
    if (ls_mel_init(&err)) goto fail;
    size_t t = ls_mel_frames(au.n), n = 0;
    mel = malloc(t * LS_MEL_BINS * sizeof *mel);
    if (!mel) goto oom;
    if (ls_mel_compute(au.samples, au.n, mel, &err)) goto fail;
    if (o_mel && write_f32(o_mel, mel, t * LS_MEL_BINS)) {
        rc = die("cannot write %s", o_mel);
        goto done;
    }
    const size_t wsz = LS_MEL_BINS * LS_MEL_WINDOW, fsz = LS_FEAT_WINDOW * LS_FEAT_DIM;
    int need_windows = o_win || o_feat || bench;
    if (need_windows) {
        if (ls_mel_window_count(t, &n, &err)) goto fail;
        win = malloc(n * wsz * sizeof *win);
        feat = malloc(n * LS_FEAT_DIM * sizeof *feat);
        fw = malloc((n + 2) * fsz * sizeof *fw);
        if (!win || !feat || !fw) goto oom;
        ls_mel_windows(mel, t, 0, n, win);
    }
    if (o_win) {
        if (win_count == (size_t)-1) win_count = n - (win_first < n ? win_first : n);
        if (win_first + win_count > n) {
            rc = die("%s", "--win-range past the last window");
            goto done;
        }
        ls_mel_windows(mel, t, win_first, win_count, win);
        if (write_f32(o_win, win, win_count * wsz)) {
            rc = die("cannot write %s", o_win);
            goto done;
        }
        ls_mel_windows(mel, t, 0, n, win);
    }
    if (o_feat) {
        if (ls_read_file(w_path, &wbuf, (size_t)1 << 30) != 0 || wbuf.len != wsz * LS_FEAT_DIM * sizeof(float)) {
            rc = die("cannot read %s as a [1280, 512] float32 matrix", w_path);
            goto done;
        }
        wmat = (float *)(void *)wbuf.data; /* malloc'd by ls_buf: aligned for float */
        for (size_t k = 0; k < n; k++) { /* plain loops: the stand-in encoder, not the model */
            float *f = feat + k * LS_FEAT_DIM;
            for (size_t o = 0; o < LS_FEAT_DIM; o++) f[o] = 0;
            for (size_t i = 0; i < wsz; i++) {
                float x = win[k * wsz + i];
                const float *wr = wmat + i * LS_FEAT_DIM;
                for (size_t o = 0; o < LS_FEAT_DIM; o++) f[o] += x * wr[o];
            }
        }
        if (feat_count == (size_t)-1) feat_count = n + 2 - (feat_first < n + 2 ? feat_first : n + 2);
        if (feat_first + feat_count > n + 2) {
            rc = die("%s", "--feat-range past the last video frame");
            goto done;
        }
        ls_feat_windows(feat, n, feat_first, feat_count, fw);
        if (write_f32(o_feat, fw, feat_count * fsz)) {
            rc = die("cannot write %s", o_feat);
            goto done;
        }
    }
    printf("{\"samples\": %zu, \"frames\": %zu, \"windows\": %zu", au.n, t, n);
    if (bench > 0) {
        uint32_t s = 12345;
        for (size_t i = 0; i < n * LS_FEAT_DIM; i++) {
            s = s * 1664525u + 1013904223u;
            feat[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
        }
        double t_mel = 0, t_win = 0, t0;
        for (int r = 0; r < bench; r++) {
            t0 = now_s();
            if (ls_mel_compute(au.samples, au.n, mel, &err)) goto fail;
            double t1 = now_s();
            ls_mel_windows(mel, t, 0, n, win);
            ls_feat_windows_all(feat, n, fw);
            t_win += now_s() - t1;
            t_mel += t1 - t0;
        }
        printf(", \"rounds\": %d, \"mel_s\": %.9f, \"windows_s\": %.9f", bench, t_mel / bench, t_win / bench);
        if (strcmp(kind, "f32") != 0) { /* decoding (and resampling) on its own */
            double t_dec = 0;
            for (int r = 0; r < bench; r++) {
                ls_audio tmp = {0};
                t0 = now_s();
                int drc = !strcmp(kind, "wav") ? ls_audio_decode_wav(file.data, file.len, max_seconds, &tmp, &err)
                                               : ls_audio_decode_pcm(file.data, file.len, enc, rate, channels,
                                                                     max_seconds, &tmp, &err);
                t_dec += now_s() - t0;
                ls_audio_free(&tmp);
                if (drc) goto fail;
            }
            printf(", \"decode_s\": %.9f", t_dec / bench);
        }
    }
    printf("}\n");
    rc = 0;
    goto done;
oom:
    rc = die("%s", "out of memory");
    goto done;
fail:
    fprintf(stderr, "lsmel: %s: %s\n", ls_code_name(err.code), err.msg);
done:
    free(fw);
    free(feat);
    free(win);
    free(mel);
    ls_buf_free(&wbuf);
    ls_audio_free(&au);
    ls_buf_free(&file);
    ls_mel_cleanup();
    return rc;
}
