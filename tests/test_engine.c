/* test_engine.c - the engine's results do not depend on where its inputs lie
 * (engine.h). ONNX Runtime's vectorised ReduceMean sums in an order set by
 * the input's address mod 16; both demo networks reduce their audio input, so
 * without the engine's aligned copy the outputs below differ in the last bit
 * for inputs 4, 8 or 12 bytes off (seen before the copy existed).
 *
 * Usage: test_engine DEMO_DIR (the build's demo/, with models/demo.onnx and
 * models/demo_encoder.onnx). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

static int failures;
#define CHECK(c, ...)                                                                                                  \
    do {                                                                                                               \
        if (!(c)) {                                                                                                    \
            failures++;                                                                                                \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                       \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fputc('\n', stderr);                                                                                       \
        }                                                                                                              \
    } while (0)

/* Deterministic values in [lo, lo + span). */
static void fill(float *p, size_t n, uint32_t seed, float lo, float span) {
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        p[i] = lo + span * (float)(x >> 8) / (float)(1 << 24);
    }
}

/* A copy of n floats `off` bytes past a 64-byte boundary (owner: *base). */
static float *shifted(const float *src, size_t n, size_t off, void **base) {
    *base = ls_alloc_aligned(n * sizeof(float) + 64);
    if (!*base) return NULL;
    float *p = (float *)((char *)*base + off);
    memcpy(p, src, n * sizeof(float));
    return p;
}

static void test_encoder(const char *path) {
    ls_err err = {0};
    ls_encoder *e = ls_encoder_open(path, &err);
    CHECK(e, "open %s: %s", path, err.msg);
    if (!e) return;
    static const int batches[] = {1, 5, 17};
    for (size_t bi = 0; bi < sizeof batches / sizeof *batches; bi++) {
        int b = batches[bi];
        size_t n = (size_t)b * 80 * 16;
        float *src = ls_alloc_aligned(n * sizeof(float));
        float *want = malloc((size_t)b * 512 * sizeof(float)), *got = malloc((size_t)b * 512 * sizeof(float));
        if (!src || !want || !got) abort();
        fill(src, n, (uint32_t)b, -3.0f, 4.0f);
        CHECK(ls_encoder_run(e, src, b, want, &err) == 0, "encoder batch %d: %s", b, err.msg);
        for (size_t off = 4; off < 64; off += 4) {
            void *base;
            float *in = shifted(src, n, off, &base);
            if (!in) abort();
            CHECK(ls_encoder_run(e, in, b, got, &err) == 0, "encoder batch %d at +%zu: %s", b, off, err.msg);
            CHECK(memcmp(got, want, (size_t)b * 512 * sizeof(float)) == 0,
                  "encoder batch %d: input %zu bytes past alignment gave other bits", b, off);
            free(base);
        }
        free(src);
        free(want);
        free(got);
    }
    ls_encoder_close(e);
}

static void test_unet(const char *path) {
    ls_err err = {0};
    ls_engine *e = ls_engine_open(path, &err);
    CHECK(e, "open %s: %s", path, err.msg);
    if (!e) return;
    size_t vpf = ls_engine_visual_per_frame(e), apf = ls_engine_audio_per_frame(e), opf = ls_engine_output_per_frame(e);
    for (int b = 1; b <= 3; b += 2) {
        float *vis = ls_alloc_aligned((size_t)b * vpf * sizeof(float));
        float *aud = ls_alloc_aligned((size_t)b * apf * sizeof(float));
        float *want = malloc((size_t)b * opf * sizeof(float)), *got = malloc((size_t)b * opf * sizeof(float));
        if (!vis || !aud || !want || !got) abort();
        fill(vis, (size_t)b * vpf, 7, 0.0f, 1.0f);
        fill(aud, (size_t)b * apf, 3 + (uint32_t)b, -0.5f, 3.0f);
        CHECK(ls_engine_run(e, vis, aud, 0, b, want, &err) == 0, "U-Net batch %d: %s", b, err.msg);
        for (size_t off = 4; off < 64; off += 4) {
            void *vbase, *abase;
            float *v = shifted(vis, (size_t)b * vpf, off, &vbase), *a = shifted(aud, (size_t)b * apf, off, &abase);
            if (!v || !a) abort();
            CHECK(ls_engine_run(e, vis, a, 0, b, got, &err) == 0, "U-Net batch %d audio at +%zu: %s", b, off, err.msg);
            CHECK(memcmp(got, want, (size_t)b * opf * sizeof(float)) == 0,
                  "U-Net batch %d: audio %zu bytes past alignment gave other bits", b, off);
            CHECK(ls_engine_run(e, v, aud, 0, b, got, &err) == 0, "U-Net batch %d visual at +%zu: %s", b, off, err.msg);
            CHECK(memcmp(got, want, (size_t)b * opf * sizeof(float)) == 0,
                  "U-Net batch %d: visual %zu bytes past alignment gave other bits", b, off);
            free(vbase);
            free(abase);
        }
        free(vis);
        free(aud);
        free(want);
        free(got);
    }
    ls_engine_close(e);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DEMO_DIR\n", argv[0]);
        return 2;
    }
    ls_err err = {0};
    /* One intra-op thread: the address effect is per kernel, not per thread,
     * and TSan (which runs the unit tests) cannot see ORT's own pool. */
    if (ls_engine_global_init(1, 1, &err) != 0) {
        fprintf(stderr, "FAIL onnxruntime: %s\n", err.msg);
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/models/demo_encoder.onnx", argv[1]);
    test_encoder(path);
    snprintf(path, sizeof path, "%s/models/demo.onnx", argv[1]);
    test_unet(path);
    ls_engine_global_shutdown();
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("engine: ok\n");
    return 0;
}
