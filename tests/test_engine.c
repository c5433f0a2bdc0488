/* test_engine.c - the engine's results do not depend on where its inputs lie
 * (engine.h). ONNX Runtime's vectorised ReduceMean sums in an order set by
 * the input's address mod 16; both demo networks reduce their audio input, so
 * without the engine's aligned copy the outputs below differ in the last bit
 * for inputs 4, 8 or 12 bytes off (seen before the copy existed).
 *
 * Also: runs through an OrtIoBinding (engine.io_binding) give the same bits
 * as plain runs; the CUDA provider, where this ONNX Runtime cannot give it
 * (the CPU release), is a FAILED_PRECONDITION naming the providers and
 * ORT_ROOT at every entry point, and where it can, its outputs are close to
 * the CPU's.
 *
 * Usage: test_engine DEMO_DIR (the build's demo/, with models/demo.onnx and
 * models/demo_encoder.onnx). */
#include <dlfcn.h>
#include <math.h>
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
    ls_encoder *e = ls_encoder_open(path, NULL, &err);
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
    ls_engine *e = ls_engine_open(path, NULL, &err);
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

/* U-Net outputs of 3 frames on opts (into out, 3 x output_per_frame). */
static int unet_outputs(const char *path, const ls_engine_opts *opts, float **out, size_t *n, ls_err *err) {
    ls_engine *e = ls_engine_open(path, opts, err);
    if (!e) return -1;
    size_t vpf = ls_engine_visual_per_frame(e), apf = ls_engine_audio_per_frame(e);
    *n = 3 * ls_engine_output_per_frame(e);
    float *vis = ls_alloc_aligned(3 * vpf * sizeof(float)), *aud = ls_alloc_aligned(3 * apf * sizeof(float));
    *out = ls_alloc_aligned(*n * sizeof(float));
    if (!vis || !aud || !*out) abort();
    fill(vis, 3 * vpf, 11, 0.0f, 1.0f);
    fill(aud, 3 * apf, 5, -0.5f, 3.0f);
    int rc = ls_engine_run(e, vis, aud, 0, 3, *out, err);
    free(vis);
    free(aud);
    ls_engine_close(e);
    return rc;
}

/* Encoder outputs of 5 windows on opts (5 x 512). */
static int encoder_outputs(const char *path, const ls_engine_opts *opts, float *out, ls_err *err) {
    ls_encoder *e = ls_encoder_open(path, opts, err);
    if (!e) return -1;
    float *in = ls_alloc_aligned(5 * 80 * 16 * sizeof(float));
    if (!in) abort();
    fill(in, 5 * 80 * 16, 9, -4.0f, 5.0f);
    int rc = ls_encoder_run(e, in, 5, out, err);
    free(in);
    ls_encoder_close(e);
    return rc;
}

static void test_io_binding(const char *unet, const char *encoder) {
    ls_err err = {0};
    ls_engine_opts plain = {.provider = LS_EP_CPU}, bound = {.provider = LS_EP_CPU, .io_binding = 1};
    float *a = NULL, *b = NULL;
    size_t n = 0;
    CHECK(unet_outputs(unet, &plain, &a, &n, &err) == 0, "U-Net without IoBinding: %s", err.msg);
    CHECK(unet_outputs(unet, &bound, &b, &n, &err) == 0, "U-Net with IoBinding: %s", err.msg);
    CHECK(a && b && memcmp(a, b, n * sizeof(float)) == 0, "U-Net: IoBinding gave other bits");
    int nonzero = 0;
    for (size_t i = 0; a && i < n; i++) nonzero += a[i] != 0.0f;
    CHECK(nonzero > 0, "U-Net: outputs all zero (the comparison would prove nothing)");
    free(a);
    free(b);
    float ea[5 * 512], eb[5 * 512];
    memset(ea, 0, sizeof ea);
    memset(eb, 0xff, sizeof eb);
    CHECK(encoder_outputs(encoder, &plain, ea, &err) == 0, "encoder without IoBinding: %s", err.msg);
    CHECK(encoder_outputs(encoder, &bound, eb, &err) == 0, "encoder with IoBinding: %s", err.msg);
    CHECK(memcmp(ea, eb, sizeof ea) == 0, "encoder: IoBinding gave other bits");
}

/* The CUDA provider: refused with the full message where this ONNX Runtime
 * has none; where it has one, close to the CPU's outputs. */
static void test_cuda(const char *unet, const char *encoder) {
    ls_err err = {0};
    ls_engine_opts cuda = {.provider = LS_EP_CUDA, .device_id = 0, .cudnn_search = LS_CUDNN_HEURISTIC, .io_binding = 1};
    char providers[256];
    ls_engine_providers(providers, sizeof providers);
    CHECK(strstr(providers, "CPUExecutionProvider") != NULL, "providers listed: %s", providers);
    CHECK(!strcmp(ls_engine_provider_name(LS_EP_CUDA), "cuda") && !strcmp(ls_engine_provider_name(LS_EP_CPU), "cpu"),
          "provider names");
    if (ls_engine_provider_check(&cuda, &err) != 0) {
        printf("engine: CUDA unavailable here: %s\n", err.msg);
        CHECK(err.code == LS_FAILED_PRECONDITION, "check: code %d", err.code);
        CHECK(strstr(err.msg, "CUDA execution provider unavailable in ONNX Runtime") && strstr(err.msg, providers) &&
                  strstr(err.msg, "ORT_ROOT") && strstr(err.msg, "onnxruntime-linux-x64-gpu") && !strchr(err.msg, '\n'),
              "check: message names the providers, ORT_ROOT and the GPU release, on one line: %s", err.msg);
        ls_err e2 = {0};
        CHECK(!ls_engine_open(unet, &cuda, &e2) && e2.code == LS_FAILED_PRECONDITION && strstr(e2.msg, unet) &&
                  strstr(e2.msg, "CUDA execution provider unavailable") && strstr(e2.msg, "ORT_ROOT"),
              "open on cuda: refused naming the file and the reason: %s", e2.msg);
        ls_err e3 = {0};
        CHECK(!ls_encoder_open(encoder, &cuda, &e3) && e3.code == LS_FAILED_PRECONDITION &&
                  strstr(e3.msg, encoder) && strstr(e3.msg, "CUDA execution provider unavailable"),
              "encoder on cuda: refused naming the file and the reason: %s", e3.msg);
        /* No GPU library, no reading: what lets the CPU build charge 0 GPU bytes. */
        void *nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!nvml) CHECK(ls_engine_gpu_used_bytes(0) == -1, "no NVML: the GPU reading is -1");
        else dlclose(nvml);
        return;
    }
    printf("engine: CUDA available (device 0 uses %lld bytes)\n", (long long)ls_engine_gpu_used_bytes(0));
    float *cpu = NULL, *gpu = NULL;
    size_t n = 0;
    ls_engine_opts plain = {.provider = LS_EP_CPU};
    CHECK(unet_outputs(unet, &plain, &cpu, &n, &err) == 0, "U-Net on cpu: %s", err.msg);
    CHECK(unet_outputs(unet, &cuda, &gpu, &n, &err) == 0, "U-Net on cuda: %s", err.msg);
    double worst = 0;
    for (size_t i = 0; cpu && gpu && i < n; i++) worst = fmax(worst, fabs((double)cpu[i] - gpu[i]));
    CHECK(cpu && gpu && worst < 1e-3, "U-Net cuda vs cpu: max |diff| %g", worst);
    free(cpu);
    free(gpu);
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
    char encoder[4096];
    snprintf(encoder, sizeof encoder, "%s/models/demo_encoder.onnx", argv[1]);
    test_io_binding(path, encoder);
    test_cuda(path, encoder);
    ls_engine_global_shutdown();
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("engine: ok\n");
    return 0;
}
