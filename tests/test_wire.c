/* test_wire.c - the zero-copy request decoder and reply pieces (wire.h).
 *
 * The oracle is protobuf-c: requests packed by the generated code must
 * decode to the same fields, however the bytes are split into spans (every
 * split point of a small message is tried), and malformed input must fail
 * with INVALID_ARGUMENT rather than crash. Prints one line per check. */
#define _GNU_SOURCE
#include <math.h>
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
    msg[n++] = 0x48; /* unknown varint field 9 */
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
    test_reply();
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
