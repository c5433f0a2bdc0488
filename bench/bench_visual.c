/* bench_visual.c - the server-built visual input and the paste, per frame,
 * on one core (issue: audio-only requests, items 3 and 7).
 *
 *   bench_visual FRAME.rgb W H X1 Y1 X2 Y2 REPS
 *
 * FRAME.rgb: raw RGB24 W x H (bench_visual.py writes it from a photo). For
 * the rectangle [X1,X2)x[Y1,Y2) it times, REPS times each, median ms:
 *   build_uncached  crop -> 328^2 cubic -> 6 planes u8 -> float32 (visual.h)
 *   build_cached    the float32 conversion of cached planes only
 *   paste_cubic     ls_composite with interp cubic (the reference's paste)
 *   paste_linear    the same, bilinear
 * and writes the uncached u8 planes to FRAME.rgb.planes for the caller to
 * compare with OpenCV. Output: one "name ms" line each. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compositor.h"
#include "visual.h"

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s FRAME.rgb W H X1 Y1 X2 Y2 REPS\n", argv[0]);
        return 2;
    }
    int w = atoi(argv[2]), h = atoi(argv[3]), reps = atoi(argv[8]);
    ls_rect r = {atoi(argv[4]), atoi(argv[5]), atoi(argv[6]), atoi(argv[7])};
    size_t fbytes = (size_t)w * h * 3;
    uint8_t *frame = malloc(fbytes), *work = malloc(fbytes);
    FILE *f = fopen(argv[1], "rb");
    if (!frame || !work || !f || fread(frame, 1, fbytes, f) != fbytes) {
        fprintf(stderr, "cannot read %zu bytes from %s\n", fbytes, argv[1]);
        return 1;
    }
    fclose(f);
    int bad[4] = {5, 5, 310, 305};
    ls_visual_opts o = {.size = 320, .margin = 4, .mask = ls_visual_mask_for(bad, 320), .interp = LS_INTERP_CUBIC,
                        .bgr = 1};
    size_t n = ls_visual_u8_bytes(&o);
    uint8_t *u8 = malloc(n);
    float *fl = malloc(n * sizeof(float));
    double *t = malloc((size_t)reps * sizeof *t);
    ls_buf scratch = {0};
    ls_err err = {0};
    if (!u8 || !fl || !t) return 1;

    for (int i = 0; i < reps; i++) {
        uint64_t t0 = ls_mono_ns();
        if (ls_visual_build_u8(frame, (size_t)w * 3, r, &o, u8, &scratch, &err) != 0) {
            fprintf(stderr, "build: %s\n", err.msg);
            return 1;
        }
        ls_visual_to_float(u8, n, fl);
        t[i] = (double)(ls_mono_ns() - t0) / 1e6;
    }
    printf("build_uncached %.4f\n", median(t, reps));
    for (int i = 0; i < reps; i++) {
        uint64_t t0 = ls_mono_ns();
        ls_visual_to_float(u8, n, fl);
        t[i] = (double)(ls_mono_ns() - t0) / 1e6;
    }
    printf("build_cached %.4f\n", median(t, reps));

    /* The paste of a prediction (here: the real crop planes as floats). */
    const ls_interp kinds[2] = {LS_INTERP_CUBIC, LS_INTERP_LINEAR};
    const char *names[2] = {"paste_cubic", "paste_linear"};
    for (int k = 0; k < 2; k++) {
        ls_composite_opts co = {.pred_size = 320, .margin = 4, .bgr = 1, .interp = kinds[k]};
        for (int i = 0; i < reps; i++) {
            memcpy(work, frame, fbytes);
            uint64_t t0 = ls_mono_ns();
            if (ls_composite(work, w, h, r, fl, &co, &scratch, &err) != 0) {
                fprintf(stderr, "composite: %s\n", err.msg);
                return 1;
            }
            t[i] = (double)(ls_mono_ns() - t0) / 1e6;
        }
        printf("%s %.4f\n", names[k], median(t, reps));
    }
    char path[4096];
    snprintf(path, sizeof path, "%s.planes", argv[1]);
    FILE *out = fopen(path, "wb");
    if (!out || fwrite(u8, 1, n, out) != n) return 1;
    fclose(out);
    ls_buf_free(&scratch);
    free(t);
    free(fl);
    free(u8);
    free(work);
    free(frame);
    return 0;
}
