/* test_wire.c - the zero-copy request decoder and reply pieces (wire.h).
 *
 * The oracle is protobuf-c: requests packed by the generated code must
 * decode to the same fields, however the bytes are split into spans (every
 * split point of a small message is tried), and malformed input must fail
 * with INVALID_ARGUMENT rather than crash. Prints one line per check. */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "multitenant.pb-c.h"
#include "wire.h"

static int g_pass, g_fail;

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s - ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (ok)
        g_pass++;
    else
        g_fail++;
}

static uint8_t *pack_request(const char *id, const float *v, size_t nv, const float *a, size_t na, int batch,
                             int start, size_t *len) {
    Multitenant__CompositeBatchRequest q = MULTITENANT__COMPOSITE_BATCH_REQUEST__INIT;
    q.model_id = (char *)id;
    q.visual_frames = (float *)v;
    q.n_visual_frames = nv;
    q.audio_features = (float *)a;
    q.n_audio_features = na;
    q.batch_size = batch;
    q.start_frame_idx = start;
    *len = multitenant__composite_batch_request__get_packed_size(&q);
    uint8_t *buf = malloc(*len + 1);
    multitenant__composite_batch_request__pack(&q, buf);
    return buf;
}

static int same_floats(const float *a, const float *b, size_t n) { return n == 0 || !memcmp(a, b, n * 4); }

static void test_roundtrip_all_splits(void) {
    float v[37], a[5];
    for (int i = 0; i < 37; i++) v[i] = (float)i * 0.25f - 3.0f;
    for (int i = 0; i < 5; i++) a[i] = (float)i;
    size_t len;
    uint8_t *buf = pack_request("demo_b1", v, 37, a, 5, 3, 7, &len);
    int all_ok = 1;
    for (size_t cut1 = 0; cut1 <= len; cut1++) {
        for (size_t cut2 = cut1; cut2 <= len; cut2 += 7) {
            ls_span sp[3] = {{buf, cut1}, {buf + cut1, cut2 - cut1}, {buf + cut2, len - cut2}};
            ls_infer_request r;
            ls_err err = {0};
            int rc = ls_infer_request_decode(sp, 3, &r, &err);
            int ok = rc == 0 && !strcmp(r.model_id, "demo_b1") && r.model_id_len == 7 && r.batch_size == 3 &&
                     r.start_frame_idx == 7 && r.n_visual == 37 && r.n_audio == 5 && same_floats(r.visual, v, 37) &&
                     same_floats(r.audio, a, 5) && r.visual_bad == -1 && r.audio_bad == -1;
            if (!ok) {
                printf("     split %zu/%zu: rc %d %s\n", cut1, cut2, rc, err.msg);
                all_ok = 0;
            }
            if (rc == 0) ls_infer_request_free(&r);
            if (!all_ok) break;
        }
        if (!all_ok) break;
    }
    check(all_ok, "decode of a packed request equals protobuf-c's fields at every split into spans (%zu bytes)",
          len);
    free(buf);
}

static void test_values(void) {
    size_t len;
    float v[2048];
    for (int i = 0; i < 2048; i++) v[i] = 0.5f;
    v[1500] = NAN;
    float a[3] = {1, INFINITY, 2};
    uint8_t *buf = pack_request("x", v, 2048, a, 3, -4, -1, &len);
    ls_span sp = {buf, len};
    ls_infer_request r;
    ls_err err = {0};
    int rc = ls_infer_request_decode(&sp, 1, &r, &err);
    check(rc == 0 && r.visual_bad == 1500 && r.audio_bad == 1, "first NaN/Inf indices found (%td, %td)",
          rc ? -9 : r.visual_bad, rc ? -9 : r.audio_bad);
    check(rc == 0 && r.batch_size == -4 && r.start_frame_idx == -1, "negative int32 fields decode (%d, %d)",
          r.batch_size, r.start_frame_idx);
    if (!rc) ls_infer_request_free(&r);
    free(buf);

    /* Unpacked floats (wire type 5) and a repeated packed field concatenate. */
    uint8_t msg[64];
    size_t n = 0;
    float f1 = 1.5f, f2 = -2.0f, f3 = 3.0f;
    msg[n++] = 0x15; /* field 2, fixed32 */
    memcpy(msg + n, &f1, 4);
    n += 4;
    msg[n++] = 0x12; /* field 2, packed */
    msg[n++] = 8;
    memcpy(msg + n, &f2, 4);
    memcpy(msg + n + 4, &f3, 4);
    n += 8;
    msg[n++] = 0xa0; /* unknown varint field 20 */
    msg[n++] = 0x01;
    msg[n++] = 0x96;
    msg[n++] = 0x01;
    ls_span s2 = {msg, n};
    rc = ls_infer_request_decode(&s2, 1, &r, &err);
    check(rc == 0 && r.n_visual == 3 && r.visual[0] == 1.5f && r.visual[1] == -2.0f && r.visual[2] == 3.0f,
          "unpacked + packed occurrences concatenate; unknown fields skipped");
    if (!rc) ls_infer_request_free(&r);

    /* A 200-byte model id is reported by length, truncated in the buffer. */
    char longid[201];
    memset(longid, 'a', 200);
    longid[200] = 0;
    buf = pack_request(longid, NULL, 0, NULL, 0, 1, 0, &len);
    sp = (ls_span){buf, len};
    rc = ls_infer_request_decode(&sp, 1, &r, &err);
    check(rc == 0 && r.model_id_len == 200 && strlen(r.model_id) == 128, "overlong model_id measured, truncated");
    if (!rc) ls_infer_request_free(&r);
    free(buf);
}

static void expect_bad(const char *what, const uint8_t *p, size_t n) {
    ls_span sp = {p, n};
    ls_infer_request r;
    ls_err err = {0};
    int rc = ls_infer_request_decode(&sp, 1, &r, &err);
    check(rc == -1 && err.code == LS_INVALID_ARGUMENT && r.visual == NULL && r.audio == NULL,
          "malformed: %s -> INVALID_ARGUMENT: %s", what, err.msg);
}

static void test_malformed(void) {
    const uint8_t trunc_key[] = {0x80};
    expect_bad("truncated key", trunc_key, sizeof trunc_key);
    const uint8_t len_past[] = {0x12, 0x10, 0, 0, 0, 0};
    expect_bad("length past the end", len_past, sizeof len_past);
    const uint8_t not_floats[] = {0x12, 0x03, 1, 2, 3};
    expect_bad("tensor not a multiple of 4 bytes", not_floats, sizeof not_floats);
    const uint8_t group[] = {0x13};
    expect_bad("group wire type", group, sizeof group);
    const uint8_t field0[] = {0x00, 0x01};
    expect_bad("field number 0", field0, sizeof field0);
    const uint8_t long_varint[] = {0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    expect_bad("varint over 10 bytes", long_varint, sizeof long_varint);
    const uint8_t trunc_fixed[] = {0x15, 1, 2};
    expect_bad("truncated fixed32 float", trunc_fixed, sizeof trunc_fixed);
    ls_infer_request r;
    ls_err err = {0};
    check(ls_infer_request_decode(NULL, 0, &r, &err) == 0 && r.n_visual == 0 && r.model_id[0] == 0,
          "empty message decodes to defaults");
}


/* ---- compact encodings (fields 8, 9, 10) ---- */

static uint8_t *pack_compact(const uint8_t *u8, size_t nu8, const uint8_t *vf16, size_t nvf16, const uint8_t *af16,
                             size_t naf16, size_t *len) {
    Multitenant__CompositeBatchRequest q = MULTITENANT__COMPOSITE_BATCH_REQUEST__INIT;
    q.model_id = "demo";
    q.batch_size = 2;
    q.visual_frames_u8 = (ProtobufCBinaryData){.len = nu8, .data = (uint8_t *)u8};
    q.visual_frames_f16 = (ProtobufCBinaryData){.len = nvf16, .data = (uint8_t *)vf16};
    q.audio_features_f16 = (ProtobufCBinaryData){.len = naf16, .data = (uint8_t *)af16};
    *len = multitenant__composite_batch_request__get_packed_size(&q);
    uint8_t *buf = malloc(*len + 1);
    multitenant__composite_batch_request__pack(&q, buf);
    return buf;
}

/* The value of a binary16 bit pattern by another route than the decoder's:
 * ldexp of the integer significand. */
static float half_ref(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0 ? ldexpf((float)m, -24) : ldexpf((float)(1024 + m), e - 25);
    return (h & 0x8000) ? -v : v;
}

static void test_compact_all_splits(void) {
    /* 37 uint8 visual values (every split point lands inside or between
     * them) and 5 binary16 audio values, each split between its two bytes
     * at some cut: 1.0, -2.5, the smallest subnormal, the largest
     * subnormal, 65504. */
    uint8_t u8[37];
    for (int i = 0; i < 37; i++) u8[i] = (uint8_t)(i * 7);
    const uint16_t halves[5] = {0x3c00, 0xc100, 0x0001, 0x03ff, 0x7bff};
    uint8_t f16[10];
    for (int i = 0; i < 5; i++) {
        f16[2 * i] = (uint8_t)(halves[i] & 0xff);
        f16[2 * i + 1] = (uint8_t)(halves[i] >> 8);
    }
    float want_v[37], want_a[5];
    for (int i = 0; i < 37; i++) want_v[i] = (float)u8[i] / 255.0f;
    for (int i = 0; i < 5; i++) want_a[i] = half_ref(halves[i]);
    size_t len;
    uint8_t *buf = pack_compact(u8, 37, NULL, 0, f16, 10, &len);
    int all_ok = 1;
    for (size_t cut1 = 0; cut1 <= len && all_ok; cut1++) {
        for (size_t cut2 = cut1; cut2 <= len; cut2 += 3) {
            ls_span sp[3] = {{buf, cut1}, {buf + cut1, cut2 - cut1}, {buf + cut2, len - cut2}};
            ls_infer_request r;
            ls_err err = {0};
            int rc = ls_infer_request_decode(sp, 3, &r, &err);
            int ok = rc == 0 && r.n_visual == 37 && r.n_audio == 5 && r.visual_enc == LS_ENC_U8 &&
                     r.audio_enc == LS_ENC_F16 && same_floats(r.visual, want_v, 37) &&
                     same_floats(r.audio, want_a, 5) && r.visual_bad == -1 && r.audio_bad == -1;
            if (!ok) {
                printf("     split %zu/%zu: rc %d %s\n", cut1, cut2, rc, err.msg);
                all_ok = 0;
            }
            if (rc == 0) ls_infer_request_free(&r);
            if (!all_ok) break;
        }
    }
    check(all_ok, "u8 visual + f16 audio decode to value/255 and exact halves at every split (%zu bytes)", len);
    free(buf);
    ls_tensor_cache_flush();
}

static void test_f16_exact(void) {
    /* Every finite binary16 value, in one call (vector path) and one at a
     * time (scalar tail path); subnormals (exponent 0) included. */
    uint8_t *src = malloc(2 * 65536);
    float *dst = malloc(65536 * sizeof(float));
    size_t n = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        src[2 * n] = (uint8_t)(h & 0xff);
        src[2 * n + 1] = (uint8_t)(h >> 8);
        n++;
    }
    float *port = malloc(65536 * sizeof(float));
    ptrdiff_t bad = ls_f16_to_f32(dst, src, n), bad_port = ls_f16_to_f32_portable(port, src, n);
    size_t wrong = 0, subnormals = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
        float want = half_ref(h);
        if (memcmp(&dst[i], &want, 4)) wrong++; /* bitwise: -0.0 must stay -0.0 */
        if (memcmp(&port[i], &want, 4)) wrong++;
        if ((h & 0x7c00) == 0 && (h & 0x3ff)) subnormals++;
        float one;
        ls_f16_to_f32(&one, src + 2 * i, 1);
        if (memcmp(&one, &want, 4)) wrong++;
    }
    check(bad == -1 && bad_port == -1 && wrong == 0 && n == 63488 && subnormals == 2046,
          "all %zu finite halves (%zu subnormals) convert exactly: CPU, portable and scalar paths (%zu wrong)", n,
          subnormals, wrong);

    /* Exponent 31 found at the same index by both paths, wherever it is. */
    int found_all = 1;
    for (size_t at = 0; at < 40; at++) {
        for (int k = 0; k < 2; k++) {
            uint16_t h = k ? 0x7c00 : 0xfe01; /* +Inf, a negative NaN */
            uint8_t save0 = src[2 * at], save1 = src[2 * at + 1];
            src[2 * at] = (uint8_t)(h & 0xff);
            src[2 * at + 1] = (uint8_t)(h >> 8);
            size_t len = 40 - (at % 3); /* tails of every length */
            ptrdiff_t b1 = ls_f16_to_f32(dst, src, len), b2 = ls_f16_to_f32_portable(port, src, len);
            ptrdiff_t want = at < len ? (ptrdiff_t)at : -1;
            if (b1 != want || b2 != want) found_all = 0;
            src[2 * at] = save0;
            src[2 * at + 1] = save1;
        }
    }
    check(found_all, "f16 NaN/Inf index found at every position, CPU and portable paths");

    /* The 2048 Inf/NaN halves: the same bits on every path (vector CPU,
     * vector portable, scalar tail), Inf as Inf, NaN as a quiet NaN with the
     * half's payload. Equal bits make a request decode alike however its
     * bytes are split (fuzz_wire found a split NaN that did not). */
    {
        size_t m = 0;
        for (uint32_t h = 0; h < 65536; h++) {
            if ((h & 0x7c00) != 0x7c00) continue;
            src[2 * m] = (uint8_t)(h & 0xff);
            src[2 * m + 1] = (uint8_t)(h >> 8);
            m++;
        }
        ls_f16_to_f32(dst, src, m);
        ls_f16_to_f32_portable(port, src, m);
        size_t differ = 0;
        for (size_t i = 0; i < m; i++) {
            uint32_t h = (uint32_t)(src[2 * i] | src[2 * i + 1] << 8), mant = h & 0x3ff;
            uint32_t want = (h & 0x8000u) << 16 | 0x7f800000u | mant << 13 | (mant ? 0x00400000u : 0);
            float one;
            ls_f16_to_f32(&one, src + 2 * i, 1);
            uint32_t a, b, c;
            memcpy(&a, &dst[i], 4);
            memcpy(&b, &port[i], 4);
            memcpy(&c, &one, 4);
            differ += (a != want) + (b != want) + (c != want);
        }
        check(m == 2048 && differ == 0, "all %zu Inf/NaN halves give the same bits on every path (%zu differ)", m,
              differ);
    }
    free(src);
    free(dst);
    free(port);

    uint8_t u8[256];
    float f[256];
    for (int i = 0; i < 256; i++) u8[i] = (uint8_t)i;
    ls_u8_to_f32(f, u8, 256);
    int exact = 1;
    for (int i = 0; i < 256; i++) exact &= f[i] == (float)i / 255.0f;
    check(exact && f[255] == 1.0f && f[0] == 0.0f, "uint8 k converts to k/255.0f (division, not 1/255 products)");
}

static void test_compact_bad_values(void) {
    /* Inf and NaN halves, placed in the vector body and in the tail. */
    uint16_t v[21];
    for (int i = 0; i < 21; i++) v[i] = 0x3800; /* 0.5 */
    v[9] = 0xfc00;                              /* -Inf */
    v[14] = 0x7e00;                             /* NaN */
    uint16_t a[3] = {0x3c00, 0x3c00, 0x7c01};   /* a signalling NaN in the scalar tail */
    uint8_t vb[42], ab[6];
    for (int i = 0; i < 21; i++) vb[2 * i] = (uint8_t)(v[i] & 0xff), vb[2 * i + 1] = (uint8_t)(v[i] >> 8);
    for (int i = 0; i < 3; i++) ab[2 * i] = (uint8_t)(a[i] & 0xff), ab[2 * i + 1] = (uint8_t)(a[i] >> 8);
    size_t len;
    uint8_t *buf = pack_compact(NULL, 0, vb, 42, ab, 6, &len);
    /* Split inside value 9's bytes: the split-value path must flag it too. */
    size_t cut = len - 6 - 2 - 42 + 2 * 9 + 1;
    ls_span sp[2] = {{buf, cut}, {buf + cut, len - cut}};
    ls_infer_request r;
    ls_err err = {0};
    int rc = ls_infer_request_decode(sp, 2, &r, &err);
    check(rc == 0 && r.visual_enc == LS_ENC_F16 && r.visual_bad == 9 && r.audio_bad == 2,
          "f16 NaN/Inf found at their indices (visual %td, audio %td), also when split across spans",
          rc ? -9 : r.visual_bad, rc ? -9 : r.audio_bad);
    if (!rc) ls_infer_request_free(&r);
    free(buf);

    const uint8_t odd[] = {0x4a, 0x03, 0x00, 0x3c, 0x00}; /* field 9, 3 bytes */
    ls_span s1 = {odd, sizeof odd};
    rc = ls_infer_request_decode(&s1, 1, &r, &err);
    check(rc == -1 && err.code == LS_INVALID_ARGUMENT && strstr(err.msg, "visual_frames_f16") &&
              strstr(err.msg, "multiple of 2 bytes), got 3 bytes"),
          "odd-length f16 field -> INVALID_ARGUMENT: %s", err.msg);
    ls_tensor_cache_flush();
}

static void expect_mixed(const char *what, const uint8_t *p, size_t n, const char *f1, const char *f2) {
    ls_span sp = {p, n};
    ls_infer_request r;
    ls_err err = {0};
    int rc = ls_infer_request_decode(&sp, 1, &r, &err);
    check(rc == -1 && err.code == LS_INVALID_ARGUMENT && strstr(err.msg, f1) && strstr(err.msg, f2) &&
              r.visual == NULL && r.audio == NULL,
          "%s -> INVALID_ARGUMENT naming both: %s", what, err.msg);
}

static void test_compact_mixing(void) {
    /* f32 visual (field 2) then u8 visual (field 8). */
    const uint8_t v32_u8[] = {0x12, 0x04, 0, 0, 0x80, 0x3f, 0x42, 0x02, 1, 2};
    expect_mixed("visual_frames + visual_frames_u8", v32_u8, sizeof v32_u8, "visual_frames and visual_frames_u8",
                 "visual");
    const uint8_t u8_f16[] = {0x42, 0x01, 7, 0x4a, 0x02, 0x00, 0x3c};
    expect_mixed("visual_frames_u8 + visual_frames_f16", u8_f16, sizeof u8_f16, "visual_frames_u8",
                 "visual_frames_f16");
    const uint8_t a16_a32[] = {0x52, 0x02, 0x00, 0x3c, 0x1d, 0, 0, 0x80, 0x3f}; /* field 10, then unpacked field 3 */
    expect_mixed("audio_features_f16 + audio_features", a16_a32, sizeof a16_a32, "audio_features_f16",
                 "audio_features");

    /* One encoding each for visual and audio is fine, and a repeated
     * compact field is singular: the last occurrence wins. */
    const uint8_t twice[] = {0x42, 0x02, 255, 0, 0x52, 0x02, 0x00, 0xc0, 0x42, 0x03, 0, 51, 255};
    ls_span sp = {twice, sizeof twice};
    ls_infer_request r;
    ls_err err = {0};
    int rc = ls_infer_request_decode(&sp, 1, &r, &err);
    check(rc == 0 && r.n_visual == 3 && r.visual[0] == 0.0f && r.visual[1] == 0.2f && r.visual[2] == 1.0f &&
              r.n_audio == 1 && r.audio[0] == -2.0f,
          "u8 visual + f16 audio together; a repeated u8 field replaces the earlier one");
    if (!rc) ls_infer_request_free(&r);
    ls_tensor_cache_flush();
}

static void test_tensor_cache(void) {
    ls_tensor_cache_flush();
    size_t cap1, cap2, cap3, bytes;
    void *a = ls_tensor_alloc(1 << 20, &cap1);
    check(a && cap1 >= (1u << 20) && ((uintptr_t)a & 63) == 0, "tensor buffer: at least the size, 64-byte aligned");
    memset(a, 1, 1 << 20);
    ls_tensor_release(a, cap1);
    check(ls_tensor_cache_held(&bytes) == 1 && bytes == cap1, "released buffer is cached (%zu bytes)", bytes);
    void *b = ls_tensor_alloc(900 << 10, &cap2);
    check(b == a && cap2 == cap1 && ls_tensor_cache_held(NULL) == 0, "the next request of a similar size reuses it");
    void *c = ls_tensor_alloc(100 << 10, &cap3);
    check(c != b, "a buffer over 4x the request is not handed out");
    ls_tensor_release(b, cap2);
    ls_tensor_release(c, cap3);
    void *small = ls_tensor_alloc(1000, &cap3);
    ls_tensor_release(small, cap3);
    check(ls_tensor_cache_held(NULL) == 2, "tiny buffers go back to malloc, not the cache");

    /* Bounds: at most LS_TENSOR_CACHE_MAX buffers, LS_TENSOR_CACHE_BYTES in all. */
    void *p[5];
    size_t caps[5];
    for (int i = 0; i < 5; i++) p[i] = ls_tensor_alloc((size_t)(i + 2) << 20, &caps[i]);
    for (int i = 0; i < 5; i++) ls_tensor_release(p[i], caps[i]);
    size_t held = ls_tensor_cache_held(&bytes);
    check(held == LS_TENSOR_CACHE_MAX && bytes <= LS_TENSOR_CACHE_BYTES && bytes >= ((size_t)(4 + 5 + 6) << 20),
          "cache keeps the %d largest buffers (%zu, %zu bytes)", LS_TENSOR_CACHE_MAX, held, bytes);
    check(ls_tensor_cache_total_bytes() == bytes, "the process-wide count is this thread's %zu bytes (got %zu)", bytes,
          ls_tensor_cache_total_bytes());
    void *huge = ls_tensor_alloc(LS_TENSOR_CACHE_BYTES + 1, &cap1);
    ls_tensor_release(huge, cap1);
    check(ls_tensor_cache_held(&bytes) == LS_TENSOR_CACHE_MAX && bytes <= LS_TENSOR_CACHE_BYTES,
          "a buffer over the byte bound is freed, not cached");
    ls_tensor_cache_flush();
    check(ls_tensor_cache_held(&bytes) == 0 && bytes == 0, "flush empties the calling thread's cache");
    check(ls_tensor_cache_total_bytes() == 0, "flushed: the process-wide count is 0 (got %zu)",
          ls_tensor_cache_total_bytes());
}

/* A worker thread fills its cache and exits: the exit hook must free what
 * it held (LeakSanitizer reports it otherwise), and a buffer allocated on
 * one thread may be released on another (it joins that thread's cache). */
static void *cache_reuse_worker(void *arg) {
    size_t cap;
    void **handoff = arg;
    void *mine = ls_tensor_alloc(3u << 20, &cap);
    memset(mine, 2, 3u << 20);
    ls_tensor_release(mine, cap);
    *handoff = ls_tensor_alloc(2u << 20, &cap); /* served by the cached 3 MiB buffer */
    return (void *)(uintptr_t)(ls_tensor_cache_held(NULL) == 0 && cap == (3u << 20) && *handoff == mine);
}

static void *cache_exit_worker(void *arg) {
    (void)arg;
    size_t cap;
    void *a = ls_tensor_alloc(3u << 20, &cap);
    ls_tensor_release(a, cap);
    void *b = ls_tensor_alloc(5u << 20, &cap);
    ls_tensor_release(b, cap);
    return (void *)(uintptr_t)(ls_tensor_cache_held(NULL) == 2); /* 3 MiB could not serve 5 MiB: both kept */
}

static void test_tensor_cache_threads(void) {
    ls_tensor_cache_flush();
    void *handoff = NULL, *ok = NULL;
    pthread_t t;
    int rc = pthread_create(&t, NULL, cache_reuse_worker, &handoff);
    if (!rc) rc = pthread_join(t, &ok);
    check(rc == 0 && ok && handoff, "a worker thread reuses its own cached buffer");
    ls_tensor_release(handoff, 3u << 20);
    check(ls_tensor_cache_held(NULL) == 1, "a buffer from another thread joins the releasing thread's cache");
    size_t before = ls_tensor_cache_total_bytes();
    ok = NULL;
    rc = pthread_create(&t, NULL, cache_exit_worker, NULL);
    if (!rc) rc = pthread_join(t, &ok);
    check(rc == 0 && ok, "a worker thread exits holding cached buffers (its exit hook frees them; LeakSanitizer "
                         "checks under ASan)");
    check(ls_tensor_cache_total_bytes() == before, "the exited thread's bytes left the process-wide count (%zu, %zu)",
          before, ls_tensor_cache_total_bytes());
    ls_tensor_cache_flush();
}

static void test_reply(void) {
    ls_reply rep = {0};
    ls_buf png = {0};
    ls_buf_append(&png, "\x89PNG", 4);
    int rc = ls_reply_field_header(&rep, 1, 300) | ls_reply_take(&rep, &png);
    check(rc == 0 && rep.n == 2 && png.data == NULL && rep.pieces[0].len == 3 && rep.pieces[0].data[0] == 0x0a &&
              rep.pieces[0].data[1] == 0xac && rep.pieces[0].data[2] == 0x02 && ls_reply_len(&rep) == 7,
          "reply: field header (tag 0x0a, varint 300) and a piece taken over");
    ls_reply_free(&rep);
    check(rep.n == 0 && rep.pieces == NULL, "reply: freed");
}

int main(void) {
    test_roundtrip_all_splits();
    test_values();
    test_malformed();
    test_compact_all_splits();
    test_f16_exact();
    test_compact_bad_values();
    test_compact_mixing();
    test_tensor_cache();
    test_tensor_cache_threads();
    test_reply();
    ls_tensor_cache_flush();
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
