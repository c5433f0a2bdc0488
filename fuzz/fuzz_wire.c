/* fuzz_wire.c - libFuzzer target: the zero-copy CompositeBatchRequest
 * decoder (wire.h), differentially against protobuf-c.
 *
 * Input: byte 0 = number of extra split points k (mod 8), then k bytes
 * choosing where the message is cut into spans (empty spans included, as
 * gRPC may hand them over), then the message. Invariants:
 *  - decoding is independent of how the bytes are split (same result, same
 *    fields, same error message as one span);
 *  - whatever protobuf-c accepts, the decoder accepts with the same fields
 *    (except field number 0, two encodings of one tensor and odd-length
 *    binary16 fields, which only protobuf-c lets through); the compact
 *    fields (uint8, binary16) are compared as floats converted here by an
 *    independent route (ldexp):
 *    model id (when it has no NUL and at most 128 bytes), bit-identical
 *    float arrays, batch_size, start_frame_idx, and the index of the first
 *    NaN/Inf of each tensor;
 *  - failures are INVALID_ARGUMENT (or RESOURCE_EXHAUSTED) with a message,
 *    and leave nothing allocated. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "multitenant.pb-c.h"
#include "wire.h"

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_wire: invariant broken: %s\n", what);
        abort();
    }
}

static int same_floats(const float *a, size_t na, const float *b, size_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof(float)) == 0);
}

static ptrdiff_t first_bad(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return (ptrdiff_t)i;
    return -1;
}

/* The tensor protobuf-c read, in the encoding the decoder reports, as
 * floats; *bad = first NaN/Inf (binary16: exponent all ones). NULL when
 * empty or out of memory (then *n = 0). */
static float *reference(const Multitenant__CompositeBatchRequest *q, int visual, ls_tensor_enc enc, size_t *n,
                        ptrdiff_t *bad) {
    *bad = -1;
    *n = 0;
    if (enc == LS_ENC_F32) {
        size_t c = visual ? q->n_visual_frames : q->n_audio_features;
        const float *v = visual ? q->visual_frames : q->audio_features;
        float *out = c ? malloc(c * sizeof(float)) : NULL;
        if (!out) return NULL;
        memcpy(out, v, c * sizeof(float));
        *n = c;
        *bad = first_bad(out, c);
        return out;
    }
    ProtobufCBinaryData d = !visual ? q->audio_features_f16 : enc == LS_ENC_U8 ? q->visual_frames_u8 : q->visual_frames_f16;
    size_t c = enc == LS_ENC_U8 ? d.len : d.len / 2;
    float *out = c ? malloc(c * sizeof(float)) : NULL;
    if (!out) return NULL;
    for (size_t i = 0; i < c; i++) {
        if (enc == LS_ENC_U8) {
            out[i] = (float)d.data[i] / 255.0f;
            continue;
        }
        unsigned h = d.data[2 * i] | (unsigned)d.data[2 * i + 1] << 8;
        int e = (h >> 10) & 31, m = h & 1023;
        if (e == 31 && *bad < 0) *bad = (ptrdiff_t)i;
        float v = e == 0 ? ldexpf((float)m, -24) : ldexpf((float)(1024 + m), e - 25);
        out[i] = (h & 0x8000) ? -v : v;
    }
    *n = c;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t k = data[0] % 8;
    if (size < 1 + k) return 0;
    const uint8_t *msg = data + 1 + k;
    size_t len = size - 1 - k;
    /* Cut points, sorted (insertion sort of at most 7). */
    size_t cuts[9];
    for (size_t i = 0; i < k; i++) cuts[i] = len ? data[1 + i] % (len + 1) : 0;
    for (size_t i = 1; i < k; i++)
        for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
            size_t t = cuts[j];
            cuts[j] = cuts[j - 1];
            cuts[j - 1] = t;
        }
    /* Copy each span into its own allocation so ASan sees reads past it. */
    ls_span spans[9];
    uint8_t *owned[9];
    size_t prev = 0;
    for (size_t i = 0; i <= k; i++) {
        size_t end = i < k ? cuts[i] : len;
        size_t n = end - prev;
        owned[i] = malloc(n ? n : 1);
        if (!owned[i]) abort();
        if (n) memcpy(owned[i], msg + prev, n);
        spans[i].p = owned[i];
        spans[i].n = n;
        prev = end;
    }

    ls_infer_request split, whole;
    ls_err e1 = {.code = LS_OK, .msg = ""}, e2 = {.code = LS_OK, .msg = ""};
    ls_span one = {msg, len};
    int r1 = ls_infer_request_decode(spans, k + 1, &split, &e1);
    int r2 = ls_infer_request_decode(&one, 1, &whole, &e2);
    check(r1 == r2, "the same outcome however the message is split");
    if (r1 != 0) {
        check(e1.code == e2.code && !strcmp(e1.msg, e2.msg), "the same error however the message is split");
        check(e1.code == LS_INVALID_ARGUMENT || e1.code == LS_RESOURCE_EXHAUSTED, "INVALID_ARGUMENT on failure");
        check(e1.msg[0] != 0, "a message on failure");
        check(!split.visual && !split.audio, "nothing left allocated on failure");
    } else {
        check(split.model_id_len == whole.model_id_len && !strcmp(split.model_id, whole.model_id) &&
                  split.model_id_has_nul == whole.model_id_has_nul,
              "the same model id however the message is split");
        check(same_floats(split.visual, split.n_visual, whole.visual, whole.n_visual) &&
                  same_floats(split.audio, split.n_audio, whole.audio, whole.n_audio),
              "the same tensors however the message is split");
        check(split.batch_size == whole.batch_size && split.start_frame_idx == whole.start_frame_idx &&
                  split.visual_bad == whole.visual_bad && split.audio_bad == whole.audio_bad,
              "the same scalars however the message is split");
        if (split.visual_enc == LS_ENC_F32 && split.audio_enc == LS_ENC_F32)
            check(split.visual_bad == first_bad(split.visual, split.n_visual) &&
                      split.audio_bad == first_bad(split.audio, split.n_audio),
                  "the first NaN/Inf found");
        check(split.model_id_len > 128 || strlen(split.model_id) == split.model_id_len || split.model_id_has_nul,
              "model id length");
    }

    Multitenant__CompositeBatchRequest *q = multitenant__composite_batch_request__unpack(NULL, len, msg);
    /* protobuf-c (1.4) is more lenient in one way: it takes field number 0,
     * which the protobuf spec forbids and the decoder rejects. */
    if (q && r1 != 0 &&
        (strstr(e1.msg, "field number 0") || strstr(e1.msg, "at most one") || strstr(e1.msg, "multiple of 2 bytes"))) {
        multitenant__composite_batch_request__free_unpacked(q, NULL);
        q = NULL;
    }
    if (q) {
        check(r1 == 0, "what protobuf-c accepts is accepted");
        if (!split.model_id_has_nul && split.model_id_len <= 128)
            check(!strcmp(q->model_id, split.model_id), "model id as protobuf-c reads it");
        for (int visual = 1; visual >= 0; visual--) {
            size_t n;
            ptrdiff_t bad;
            float *want = reference(q, visual, visual ? split.visual_enc : split.audio_enc, &n, &bad);
            check(bad == (visual ? split.visual_bad : split.audio_bad), "the first NaN/Inf as protobuf-c's bytes say");
            /* Values of a rejected binary16 tensor are unspecified. */
            if (bad < 0)
                check(same_floats(want, n, visual ? split.visual : split.audio, visual ? split.n_visual : split.n_audio),
                      "tensor as protobuf-c reads it");
            free(want);
        }
        check(q->batch_size == split.batch_size && q->start_frame_idx == split.start_frame_idx,
              "batch_size and start_frame_idx as protobuf-c reads them");
        multitenant__composite_batch_request__free_unpacked(q, NULL);
    }
    if (r1 == 0) ls_infer_request_free(&split);
    if (r2 == 0) ls_infer_request_free(&whole);
    for (size_t i = 0; i <= k; i++) free(owned[i]);
    return 0;
}
