/* bench_engine.c - the server's in-process costs around one request, without
 * gRPC in the way (target 3's breakdown and target 7's raw inference).
 *
 *   bench_engine --config FILE.yaml --id MODEL [--batch 5] [--runs 20]
 *                [--warmup 2] [--intra 0] [--inter 1] [--png-level 1] [--switch ID2]
 *
 * Measures, interleaved run by run so drift hits every part alike:
 *   raw      ls_engine_run on its own session of the model's file (the raw
 *            ONNX Runtime Run; engine.c adds no copy around it), without
 *            IoBinding, and raw_bound: the same on a second session with
 *            engine.io_binding (OrtIoBinding per run), both on the config's
 *            execution provider,
 *   infer    ls_model_infer on the configured model (src/model/model.c: tensor
 *            checks incl. the NaN/Inf scan, run, composite + encode of the
 *            batch over the pool); its own inference_ms and composite_ms,
 *            and the rest (wall - inference - composite) = validation + setup,
 * and, once per run as well, the server's byte handling of a request of that
 * batch (src/net/transport.c, src/serve/service.c):
 *   flatten  grpc_byte_buffer_reader_readall over the request as 16 KiB slices
 *            (what the transport does with a received message),
 *   unpack   multitenant__composite_batch_request__unpack + free_unpacked,
 *   pack     the response with the batch's real PNGs (get_packed_size, a fresh
 *            buffer, pack), as service.c pack() does,
 *   memcpy   a plain memcpy of the request's size, for scale.
 * and, where the build has src/net/wire.h (the zero-copy request path):
 *   wire_decode  ls_infer_request_decode over the same 16 KiB slices (each
 *            tensor copied once, NaN/Inf checked during the copy),
 *   nan_scan     ls_first_non_finite over the request's floats alone.
 * and, where wire.h has the compact encodings (proto fields 8-10):
 *   wire_decode_f16  the same request with visual and audio as binary16,
 *   wire_decode_u8   visual as uint8 and audio as binary16,
 *            both decoded (converted to float32 during the one copy) from
 *            16 KiB slices like the float request.
 * Engine threads as in the server: ls_engine_global_init(intra, inter) and
 * ls_pool_start(0).
 *
 * Also prints what the avatar holds once every frame is prepared
 * (ls_avatar_memory_used) next to what it is charged (ls_avatar_memory).
 * With --switch ID2: instead, ls_model_infer alternating between the two
 * models vs staying on one (see switch_bench).
 * Output: a line per quantity (p50 and mean, ms) and "RESULT {json}". */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/slice.h>

#include "config.h"
#include "engine.h"
#include "model.h"
#include "multitenant.pb-c.h"
#include "pool.h"
#include "service.h" /* ls_service_model_spec */
/* The zero-copy request decoder (src/net/wire.h), where the build has it: the
 * server then decodes from gRPC's slices (one copy + NaN/Inf scan) instead
 * of flatten + protobuf-c unpack. */
#if defined(__has_include)
#if __has_include("wire.h")
#include "wire.h"
#define HAVE_WIRE 1
#endif
#endif
#ifndef HAVE_WIRE
#define HAVE_WIRE 0
#endif
#if HAVE_WIRE && defined(LS_TENSOR_CACHE_MAX)
#define HAVE_COMPACT 1
#else
#define HAVE_COMPACT 0
#endif

enum { Q_RAW, Q_RAW_BOUND, Q_INFER, Q_INFER_INF, Q_INFER_COMP, Q_INFER_REST, Q_FLATTEN, Q_UNPACK, Q_PACK, Q_MEMCPY, Q_DECODE,
       Q_SCAN, Q_DECODE_F16, Q_DECODE_U8, NQ };
static const char *qname[NQ] = {"raw_run", "raw_run_bound", "infer_wall", "infer_inference", "infer_composite",
                                "infer_validation_setup", "flatten", "unpack", "pack_response", "memcpy",
                                "wire_decode", "nan_scan", "wire_decode_f16", "wire_decode_u8"};

static void die(const char *what, const ls_err *err) {
    fprintf(stderr, "bench_engine: %s: %s\n", what, err ? err->msg : "failed");
    exit(1);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double ms_since(uint64_t t0) { return (double)(ls_mono_ns() - t0) / 1e6; }

/* Deterministic inputs in [0,1) (xorshift), as a client would send. */
static void fill(float *v, size_t n, uint32_t seed) {
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v[i] = (float)(x >> 8) / 16777216.0f;
    }
}

#if HAVE_COMPACT
/* A request with the tensors in a compact encoding (u8: visual uint8 =
 * round(v * 255), audio binary16; else both binary16), cut into 16 KiB
 * slices as the transport hands them over. Truncating binary16 rounding is
 * enough for timing; inputs in [0, 1) never make NaN/Inf. */
static grpc_slice *compact_slices(const char *id, int batch, const float *v, size_t nv, const float *a, size_t na,
                                  int u8, size_t *nslices) {
    uint8_t *vb = malloc(nv * 2), *ab = malloc(na * 2);
    if (!vb || !ab) die("malloc", NULL);
    for (size_t i = 0; i < nv + na; i++) {
        float f = i < nv ? v[i] : a[i - nv];
        uint8_t *dst = i < nv ? vb + (u8 ? i : 2 * i) : ab + 2 * (i - nv);
        if (u8 && i < nv) {
            *dst = (uint8_t)lrintf(f * 255.0f);
            continue;
        }
        uint32_t x;
        memcpy(&x, &f, 4);
        uint32_t ax = x & 0x7fffffffu, h = ax < 0x38800000u ? 0 : (ax >> 13) - (112u << 10);
        h |= (x >> 16) & 0x8000u;
        dst[0] = (uint8_t)(h & 0xff);
        dst[1] = (uint8_t)(h >> 8);
    }
    Multitenant__CompositeBatchRequest q = MULTITENANT__COMPOSITE_BATCH_REQUEST__INIT;
    q.model_id = (char *)id;
    q.batch_size = batch;
    if (u8)
        q.visual_frames_u8 = (ProtobufCBinaryData){.len = nv, .data = vb};
    else
        q.visual_frames_f16 = (ProtobufCBinaryData){.len = nv * 2, .data = vb};
    q.audio_features_f16 = (ProtobufCBinaryData){.len = na * 2, .data = ab};
    size_t len = multitenant__composite_batch_request__get_packed_size(&q);
    uint8_t *buf = malloc(len);
    if (!buf) die("malloc", NULL);
    multitenant__composite_batch_request__pack(&q, buf);
    const size_t slice_bytes = 16 * 1024;
    *nslices = (len + slice_bytes - 1) / slice_bytes;
    grpc_slice *sl = malloc(*nslices * sizeof *sl);
    for (size_t s = 0; s < *nslices; s++) {
        size_t off = s * slice_bytes, n = len - off < slice_bytes ? len - off : slice_bytes;
        sl[s] = grpc_slice_from_copied_buffer((const char *)buf + off, n);
    }
    free(buf);
    free(vb);
    free(ab);
    return sl;
}

/* ls_infer_request_decode over slices; ms. */
static double decode_ms(grpc_slice *sl, size_t n, size_t nv) {
    ls_span *spans = malloc(n * sizeof *spans);
    if (!spans) die("malloc", NULL);
    for (size_t k = 0; k < n; k++) spans[k] = (ls_span){GRPC_SLICE_START_PTR(sl[k]), GRPC_SLICE_LENGTH(sl[k])};
    ls_infer_request wr;
    ls_err err;
    uint64_t t0 = ls_mono_ns();
    if (ls_infer_request_decode(spans, n, &wr, &err)) die("ls_infer_request_decode", &err);
    double ms = ms_since(t0);
    if (wr.n_visual != nv || wr.visual_bad >= 0 || wr.audio_bad >= 0) die("compact decode", NULL);
    ls_infer_request_free(&wr);
    free(spans);
    return ms;
}
#endif

/* --switch: ls_model_infer alternating two loaded models (A,B,A,B) vs one
 * (A,A,A,A), in interleaved blocks of 10, `runs` blocks of each; medians and
 * the per-block differences (mean +- standard error). In-process, so the
 * gRPC jitter that hides a 0.1 ms difference is not there. */
static int switch_bench(const char *config, const char *ida, const char *idb, int batch, int blocks, int intra,
                        int inter, int level) {
    ls_err err;
    ls_config cfg;
    if (!config || !ida || !idb) return 2;
    if (ls_config_load_file(config, &cfg, &err)) die(config, &err);
    const ls_model_config *ca = ls_config_find(&cfg, ida), *cb = ls_config_find(&cfg, idb);
    if (!ca || !cb) die("--id/--switch", &(ls_err){.msg = "not in the config"});
    if (ls_engine_global_init(intra, inter, &err)) die("ls_engine_global_init", &err);
    if (ls_pool_start(0)) die("ls_pool_start", NULL);
    ls_mem mem;
    ls_model_spec sa = ls_service_model_spec(&cfg, ca), sb = ls_service_model_spec(&cfg, cb);
    ls_model *m[2] = {ls_model_load(&sa, level, &mem, &err), NULL};
    if (!m[0]) die(ida, &err);
    if (!(m[1] = ls_model_load(&sb, level, &mem, &err))) die(idb, &err);
    const ls_engine *e = ls_model_engine(m[0]);
    size_t nv = (size_t)batch * ls_engine_visual_per_frame(e), na = (size_t)batch * ls_engine_audio_per_frame(e);
    float *visual = malloc(nv * sizeof(float)), *audio = malloc(na * sizeof(float));
    fill(visual, nv, 1);
    fill(audio, na, 2);
    int nf[2] = {ls_avatar_num_frames(ls_model_avatar(m[0])), ls_avatar_num_frames(ls_model_avatar(m[1]))};
    int64_t next[2] = {0, 0};
    const int block = 10;
    double *same = calloc((size_t)blocks * block, sizeof(double)), *alt = calloc((size_t)blocks * block, sizeof(double));
    double *diff = calloc((size_t)blocks, sizeof(double));
    double tmp[10];
    for (int w = 0; w < 2 * block; w++) { /* warm both, every frame used later prepared on first use */
        ls_infer_req ir = {.visual = visual, .n_visual = nv, .audio = audio, .n_audio = na, .batch = batch,
                           .start_frame = 0, .png_level = level};
        ls_infer_result res;
        if (ls_model_infer(m[w % 2], &ir, &res, &err)) die("ls_model_infer", &err);
        ls_infer_result_free(&res);
    }
    for (int b = 0; b < blocks; b++) {
        double med[2];
        for (int half = 0; half < 2; half++) {
            int alternate = (b % 2) ^ half; /* order of the two patterns alternates per block */
            for (int i = 0; i < block; i++) {
                int k = alternate ? i % 2 : 0;
                ls_infer_req ir = {.visual = visual, .n_visual = nv, .audio = audio, .n_audio = na, .batch = batch,
                                   .start_frame = next[k] % nf[k], .png_level = level};
                next[k] += batch;
                ls_infer_result res;
                uint64_t t0 = ls_mono_ns();
                if (ls_model_infer(m[k], &ir, &res, &err)) die("ls_model_infer", &err);
                tmp[i] = ms_since(t0);
                ls_infer_result_free(&res);
                (alternate ? alt : same)[b * block + i] = tmp[i];
            }
            qsort(tmp, block, sizeof(double), cmp_double);
            med[alternate] = 0.5 * (tmp[block / 2 - 1] + tmp[block / 2]);
        }
        diff[b] = med[1] - med[0];
    }
    size_t n = (size_t)blocks * block;
    qsort(same, n, sizeof(double), cmp_double);
    qsort(alt, n, sizeof(double), cmp_double);
    double ms = 0.5 * (same[n / 2 - 1] + same[n / 2]), ma = 0.5 * (alt[n / 2 - 1] + alt[n / 2]);
    double mean = 0, var = 0;
    for (int b = 0; b < blocks; b++) mean += diff[b] / blocks;
    for (int b = 0; b < blocks; b++) var += (diff[b] - mean) * (diff[b] - mean) / (blocks > 1 ? blocks - 1 : 1);
    double se = sqrt(var / blocks);
    printf("ls_model_infer, batch %d, %d blocks of %d: A,A,A,A median %.3f ms, A,B,A,B median %.3f ms, "
           "difference %+.3f ms; per-block difference %+.3f +- %.3f ms\n",
           batch, blocks, block, ms, ma, ma - ms, mean, se);
    printf("RESULT {\"batch\":%d,\"blocks\":%d,\"block\":%d,\"median_same_ms\":%.4f,\"median_alt_ms\":%.4f,"
           "\"diff_ms\":%.4f,\"block_diff_mean_ms\":%.4f,\"block_diff_se_ms\":%.4f,\"block_diffs_ms\":[",
           batch, blocks, block, ms, ma, ma - ms, mean, se);
    for (int b = 0; b < blocks; b++) printf("%s%.4f", b ? "," : "", diff[b]);
    printf("]}\n");
    free(same);
    free(alt);
    free(diff);
    free(visual);
    free(audio);
    ls_model_free(m[0]);
    ls_model_free(m[1]);
    ls_pool_stop();
    ls_engine_global_shutdown();
    ls_config_free(&cfg);
    return 0;
}

int main(int argc, char **argv) {
    const char *config = NULL, *id = NULL, *switch_id = NULL;
    int batch = 5, runs = 20, warmup = 2, intra = 0, inter = 1, level = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (!strcmp(a, name) && v && ++i)
        if (OPT("--config")) config = v;
        else if (OPT("--id")) id = v;
        else if (OPT("--batch")) batch = atoi(v);
        else if (OPT("--runs")) runs = atoi(v);
        else if (OPT("--warmup")) warmup = atoi(v);
        else if (OPT("--switch")) switch_id = v;
        else if (OPT("--intra")) intra = atoi(v);
        else if (OPT("--inter")) inter = atoi(v);
        else if (OPT("--png-level")) level = atoi(v);
        else {
            fprintf(stderr, "bench_engine: unknown or incomplete option %s\n", a);
            return 2;
        }
#undef OPT
    }
    if (switch_id) return switch_bench(config, id, switch_id, batch, runs, intra, inter, level);
    if (!config || !id || batch < 1 || runs < 1 || warmup < 0) {
        fprintf(stderr, "usage: bench_engine --config FILE.yaml --id MODEL [--batch N] [--runs R] "
                        "[--warmup W] [--intra T] [--inter T] [--png-level L]\n");
        return 2;
    }
    ls_err err;
    ls_config cfg;
    if (ls_config_load_file(config, &cfg, &err)) die(config, &err);
    const ls_model_config *mc = ls_config_find(&cfg, id);
    if (!mc) die(id, &(ls_err){.msg = "not in the config"});
    if (ls_engine_global_init(intra, inter, &err)) die("ls_engine_global_init", &err);
    if (ls_pool_start(0)) die("ls_pool_start", NULL);

    uint64_t t0 = ls_mono_ns();
    ls_model_spec spec = ls_service_model_spec(&cfg, mc);
    ls_engine_opts plain = spec.engine, bound = spec.engine;
    plain.io_binding = 0;
    bound.io_binding = 1;
    ls_engine *raw = ls_engine_open(mc->model_path, &plain, &err);
    if (!raw) die(mc->model_path, &err);
    ls_engine *raw_bound = ls_engine_open(mc->model_path, &bound, &err);
    if (!raw_bound) die(mc->model_path, &err);
    double open_ms = ms_since(t0);
    ls_mem mem = {0, 0};
    ls_model *m = ls_model_load(&spec, level, &mem, &err);
    if (!m) die("ls_model_load", &err);

    size_t vpf = ls_engine_visual_per_frame(raw), apf = ls_engine_audio_per_frame(raw);
    size_t opf = ls_engine_output_per_frame(raw);
    size_t nv = (size_t)batch * vpf, na = (size_t)batch * apf;
    float *visual = malloc(nv * sizeof(float)), *audio = malloc(na * sizeof(float));
    float *out = malloc((size_t)batch * opf * sizeof(float));
    if (!visual || !audio || !out) die("malloc", NULL);
    fill(visual, nv, 1);
    fill(audio, na, 2);

    /* The request as it travels: packed floats (the same bytes a client
     * declaring the fields `bytes` sends). */
    Multitenant__CompositeBatchRequest q = MULTITENANT__COMPOSITE_BATCH_REQUEST__INIT;
    q.model_id = (char *)id;
    q.visual_frames = visual;
    q.n_visual_frames = nv;
    q.audio_features = audio;
    q.n_audio_features = na;
    q.batch_size = batch;
    size_t req_len = multitenant__composite_batch_request__get_packed_size(&q);
    uint8_t *req = malloc(req_len);
    if (!req) die("malloc", NULL);
    multitenant__composite_batch_request__pack(&q, req);
    grpc_init();
    const size_t slice_bytes = 16 * 1024;
    size_t nslices = (req_len + slice_bytes - 1) / slice_bytes;
    grpc_slice *slices = malloc(nslices * sizeof *slices);
    for (size_t s = 0; s < nslices; s++) {
        size_t off = s * slice_bytes, n = req_len - off < slice_bytes ? req_len - off : slice_bytes;
        slices[s] = grpc_slice_from_copied_buffer((const char *)req + off, n);
    }
    uint8_t *copy = malloc(req_len);
#if HAVE_COMPACT
    size_t n16, n8;
    grpc_slice *sl16 = compact_slices(id, batch, visual, nv, audio, na, 0, &n16);
    grpc_slice *sl8 = compact_slices(id, batch, visual, nv, audio, na, 1, &n8);
#endif

    /* Prepare every frame once (first use decodes it), as a warm server has;
     * then `warmup` untimed passes of the loop below. */
    ls_avatar *av = (ls_avatar *)ls_model_avatar(m);
    int nframes = ls_avatar_num_frames(av);
    for (int f = 0; f < nframes; f++) {
        ls_frame_view view;
        if (ls_avatar_frame_view(av, f, &view, &err)) die("ls_avatar_frame_view", &err);
    }

    uint64_t av_used = ls_avatar_memory_used(av), av_bound = ls_avatar_memory(av);

    double *q_ms[NQ];
    for (int k = 0; k < NQ; k++) q_ms[k] = calloc((size_t)(runs + warmup), sizeof(double));
    size_t resp_len = 0;
    for (int r = 0; r < runs + warmup; r++) {
        t0 = ls_mono_ns();
        if (ls_engine_run(raw, visual, audio, 0, batch, out, &err)) die("ls_engine_run", &err);
        q_ms[Q_RAW][r] = ms_since(t0);
        t0 = ls_mono_ns();
        if (ls_engine_run(raw_bound, visual, audio, 0, batch, out, &err)) die("ls_engine_run (IoBinding)", &err);
        q_ms[Q_RAW_BOUND][r] = ms_since(t0);

        ls_infer_req ir = {.visual = visual, .n_visual = nv, .audio = audio, .n_audio = na, .batch = batch,
                           .start_frame = ((int64_t)r * batch) % nframes, .png_level = level};
        ls_infer_result res;
        t0 = ls_mono_ns();
        if (ls_model_infer(m, &ir, &res, &err)) die("ls_model_infer", &err);
        q_ms[Q_INFER][r] = ms_since(t0);
        q_ms[Q_INFER_INF][r] = res.inference_ms;
        q_ms[Q_INFER_COMP][r] = res.composite_ms;
        q_ms[Q_INFER_REST][r] = q_ms[Q_INFER][r] - res.inference_ms - res.composite_ms;

        /* response packing with these PNGs */
        Multitenant__CompositeBatchResponse rp = MULTITENANT__COMPOSITE_BATCH_RESPONSE__INIT;
        ProtobufCBinaryData *fr = calloc((size_t)res.n_frames, sizeof *fr);
        for (int i = 0; i < res.n_frames; i++) fr[i] = (ProtobufCBinaryData){res.frames[i].len, res.frames[i].data};
        rp.n_composited_frames = (size_t)res.n_frames;
        rp.composited_frames = fr;
        rp.success = 1;
        rp.error = "";
        t0 = ls_mono_ns();
        size_t n = protobuf_c_message_get_packed_size(&rp.base);
        ls_buf pb = {0};
        if (ls_buf_reserve(&pb, n)) die("ls_buf_reserve", NULL);
        pb.len = protobuf_c_message_pack(&rp.base, pb.data);
        q_ms[Q_PACK][r] = ms_since(t0);
        resp_len = pb.len;
        ls_buf_free(&pb);
        free(fr);
        ls_infer_result_free(&res);

        grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(slices, nslices);
        t0 = ls_mono_ns();
        grpc_byte_buffer_reader rd;
        if (!grpc_byte_buffer_reader_init(&rd, bb)) die("grpc_byte_buffer_reader_init", NULL);
        grpc_slice flat = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
        q_ms[Q_FLATTEN][r] = ms_since(t0);
        grpc_byte_buffer_destroy(bb);

        t0 = ls_mono_ns();
        Multitenant__CompositeBatchRequest *u =
            multitenant__composite_batch_request__unpack(NULL, GRPC_SLICE_LENGTH(flat), GRPC_SLICE_START_PTR(flat));
        if (!u || u->n_visual_frames != nv) die("unpack", NULL);
        multitenant__composite_batch_request__free_unpacked(u, NULL);
        q_ms[Q_UNPACK][r] = ms_since(t0);
        grpc_slice_unref(flat);

        t0 = ls_mono_ns();
        memcpy(copy, req, req_len);
        q_ms[Q_MEMCPY][r] = ms_since(t0);
#if HAVE_WIRE
        {
            ls_span *spans = malloc(nslices * sizeof *spans);
            for (size_t k = 0; k < nslices; k++)
                spans[k] = (ls_span){GRPC_SLICE_START_PTR(slices[k]), GRPC_SLICE_LENGTH(slices[k])};
            ls_infer_request wr;
            t0 = ls_mono_ns();
            if (ls_infer_request_decode(spans, nslices, &wr, &err)) die("ls_infer_request_decode", &err);
            q_ms[Q_DECODE][r] = ms_since(t0);
            if (wr.n_visual != nv || wr.visual_bad >= 0) die("wire decode", NULL);
            ls_infer_request_free(&wr);
            free(spans);
            t0 = ls_mono_ns();
            ptrdiff_t bad = ls_first_non_finite(visual, nv);
            if (bad < 0) bad = ls_first_non_finite(audio, na);
            q_ms[Q_SCAN][r] = ms_since(t0);
            if (bad >= 0) die("nan scan", NULL);
        }
#endif
#if HAVE_COMPACT
        q_ms[Q_DECODE_F16][r] = decode_ms(sl16, n16, nv);
        q_ms[Q_DECODE_U8][r] = decode_ms(sl8, n8, nv);
#endif
        if (copy[req_len / 2] != req[req_len / 2]) die("memcpy", NULL);
    }

    /* drop the warm-up passes */
    for (int k = 0; k < NQ; k++) memmove(q_ms[k], q_ms[k] + warmup, (size_t)runs * sizeof(double));
    printf("model %s (%s), batch %d, %d runs; session open %.0f ms; request %zu bytes, response %zu bytes\n", id,
           mc->model_path, batch, runs, open_ms, req_len, resp_len);
    printf("avatar: %d frames prepared hold %.1f MiB (ls_avatar_memory_used); upper bound charged %.1f MiB "
           "(ls_avatar_memory, raw RGB)\n",
           nframes, (double)av_used / 1048576.0, (double)av_bound / 1048576.0);
    printf("RESULT {\"model\":\"%s\",\"batch\":%d,\"runs\":%d,\"open_ms\":%.1f,\"request_bytes\":%zu,"
           "\"response_bytes\":%zu,\"frames\":%d,\"avatar_memory_used\":%llu,\"avatar_memory_bound\":%llu",
           id, batch, runs, open_ms, req_len, resp_len, nframes, (unsigned long long)av_used,
           (unsigned long long)av_bound);
    char line[4096];
    size_t ll = 0;
    for (int k = 0; k < NQ; k++) {
        if (!HAVE_WIRE && (k == Q_DECODE || k == Q_SCAN)) continue;
        if (!HAVE_COMPACT && (k == Q_DECODE_F16 || k == Q_DECODE_U8)) continue;
        double sum = 0;
        for (int r = 0; r < runs; r++) sum += q_ms[k][r];
        qsort(q_ms[k], (size_t)runs, sizeof(double), cmp_double);
        double p50 = runs % 2 ? q_ms[k][runs / 2] : 0.5 * (q_ms[k][runs / 2 - 1] + q_ms[k][runs / 2]);
        fprintf(stderr, "  %-24s p50 %9.3f ms  mean %9.3f ms  min %9.3f ms\n", qname[k], p50, sum / runs,
                q_ms[k][0]);
        ll += (size_t)snprintf(line + ll, sizeof line - ll, ",\"%s\":{\"p50\":%.4f,\"mean\":%.4f,\"min\":%.4f}",
                               qname[k], p50, sum / runs, q_ms[k][0]);
    }
    printf("%s}\n", line);
    fflush(stdout);

    for (int k = 0; k < NQ; k++) free(q_ms[k]);
    for (size_t s = 0; s < nslices; s++) grpc_slice_unref(slices[s]);
    free(slices);
#if HAVE_COMPACT
    for (size_t s = 0; s < n16; s++) grpc_slice_unref(sl16[s]);
    for (size_t s = 0; s < n8; s++) grpc_slice_unref(sl8[s]);
    free(sl16);
    free(sl8);
    ls_tensor_cache_flush();
#endif
    free(copy);
    free(req);
    grpc_shutdown();
    ls_model_free(m);
    ls_engine_close(raw);
    ls_engine_close(raw_bound);
    ls_pool_stop();
    ls_engine_global_shutdown();
    ls_config_free(&cfg);
    free(visual);
    free(audio);
    free(out);
    return 0;
}
