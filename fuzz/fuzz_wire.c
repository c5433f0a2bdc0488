/* fuzz_wire.c - libFuzzer target: the zero-copy CompositeBatchRequest
 * decoder (wire.h), differentially against protobuf-c.
 *
 * Input: byte 0 = number of extra split points k (mod 8), then k bytes
 * choosing where the message is cut into spans (empty spans included, as
 * gRPC may hand them over), then the message. Invariants:
 *  - decoding is independent of how the bytes are split (same result, same
 *    fields, same error message as one span);
 *  - whatever protobuf-c accepts, the decoder accepts with the same fields
 *    (except field number 0, which only protobuf-c lets through):
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
        check(split.visual_bad == first_bad(split.visual, split.n_visual) &&
                  split.audio_bad == first_bad(split.audio, split.n_audio),
              "the first NaN/Inf found");
        check(split.model_id_len > 128 || strlen(split.model_id) == split.model_id_len || split.model_id_has_nul,
              "model id length");
    }

    Multitenant__CompositeBatchRequest *q = multitenant__composite_batch_request__unpack(NULL, len, msg);
    /* protobuf-c (1.4) is more lenient in one way: it takes field number 0,
     * which the protobuf spec forbids and the decoder rejects. */
    if (q && r1 != 0 && strstr(e1.msg, "field number 0")) {
        multitenant__composite_batch_request__free_unpacked(q, NULL);
        q = NULL;
    }
    if (q) {
        check(r1 == 0, "what protobuf-c accepts is accepted");
        if (!split.model_id_has_nul && split.model_id_len <= 128)
            check(!strcmp(q->model_id, split.model_id), "model id as protobuf-c reads it");
        check(same_floats(q->visual_frames, q->n_visual_frames, split.visual, split.n_visual),
              "visual_frames as protobuf-c reads them");
        check(same_floats(q->audio_features, q->n_audio_features, split.audio, split.n_audio),
              "audio_features as protobuf-c reads them");
        check(q->batch_size == split.batch_size && q->start_frame_idx == split.start_frame_idx,
              "batch_size and start_frame_idx as protobuf-c reads them");
        multitenant__composite_batch_request__free_unpacked(q, NULL);
    }
    if (r1 == 0) ls_infer_request_free(&split);
    if (r2 == 0) ls_infer_request_free(&whole);
    for (size_t i = 0; i <= k; i++) free(owned[i]);
    return 0;
}
