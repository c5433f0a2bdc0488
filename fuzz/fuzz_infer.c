/* fuzz_infer.c - libFuzzer target: InferBatchComposite end to end on the
 * demo models (ONNX Runtime run, compositing, PNG encoding), through the
 * service's handler.
 *
 * A request that can succeed carries 6x320x320 floats per frame, far more
 * than a fuzzer input, so the input describes a request instead:
 *   byte 0     model: demo, demo_pp, demo_b1, missing, huge, no_rects, an
 *              unknown id, an empty id, a 129-character id (fuzz_svc.h)
 *   byte 1     batch_size: mod 7, 0..6 -> -1..5 (the config's max is 4);
 *              divided by 7, mod 5: output_format "", png, jpeg, raw or an
 *              unknown name
 *   bytes 2-5  start_frame_idx (int32 LE), used raw when flags bit 0 is set,
 *              else byte 2 mod 64, and byte 5 as a signed jpeg_quality
 *   byte 6     flags: bits 1-3 visual length (exact, one float short, one
 *              too many, empty, one frame), bits 4-6 audio length (per frame,
 *              one window, one short, empty, one window too many), bit 7
 *              sends the visual field as two packed records (valid protobuf
 *              that protobuf-c must concatenate)
 *   the rest   float32 LE values repeated over the tensors (visual from the
 *              first, audio from the second): finite, huge, NaN, Inf, ...
 * The request is packed with protobuf-c and handed to the handler. The
 * expected status is computed independently from the description, in the
 * order the service validates, and must match exactly; a success must
 * return batch_size frames of 1280x720 in the format asked for (the first
 * is decoded, or its length checked for raw). */
#include "fuzz_svc.h"

#include <math.h>

#include "image.h"

#define VPF (6u * 320u * 320u)
#define APF (32u * 16u * 16u)

static char long_id[130]; /* 129 characters: one more than an id may have */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    memset(long_id, 'x', 129);
    fz_setup();
    if (!fz_have_demo) {
        fprintf(stderr, "fuzz_infer: needs the demo avatar (build the `demo` target or set LS_DEMO_DIR)\n");
        abort();
    }
    return 0;
}

static int has_non_finite(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 7) return 0;
    static const char *const ids[] = {"demo", "demo_pp", "demo_b1", "missing", "huge", "no_rects", "nope", "",
                                      long_id};
    const size_t n_ids = sizeof ids / sizeof ids[0];
    const char *id = ids[data[0] % n_ids];
    int batch = (int)(data[1] % 7) - 1;
    uint8_t flags = data[6];
    static const char *const formats[] = {"", "png", "jpeg", "raw", "gif"};
    const char *format = formats[(data[1] / 7) % 5];
    int32_t start, quality = 0;
    if (flags & 1) {
        uint32_t u = (uint32_t)data[2] | (uint32_t)data[3] << 8 | (uint32_t)data[4] << 16 | (uint32_t)data[5] << 24;
        memcpy(&start, &u, sizeof start);
    } else {
        start = data[2] % 64;
        quality = (int8_t)data[5];
    }
    size_t b = batch >= 1 ? (size_t)batch : 1; /* tensors are sized for at least one frame */
    size_t nv, na;
    switch ((flags >> 1) & 7) {
    case 4: nv = b * VPF - 1; break;
    case 5: nv = b * VPF + 1; break;
    case 6: nv = 0; break;
    case 7: nv = VPF; break;
    default: nv = b * VPF;
    }
    switch ((flags >> 4) & 7) {
    case 3: case 4: na = APF; break;
    case 5: na = b * APF - 1; break;
    case 6: na = 0; break;
    case 7: na = (b + 1) * APF; break;
    default: na = b * APF;
    }
    const uint8_t *pat = data + 7;
    size_t npat = (size - 7) / 4;
    float *visual = malloc((nv ? nv : 1) * sizeof(float));
    float *audio = malloc((na ? na : 1) * sizeof(float));
    if (!visual || !audio) abort();
    for (size_t i = 0; i < nv; i++) {
        if (npat) memcpy(&visual[i], pat + 4 * (i % npat), 4);
        else visual[i] = 0.5f;
    }
    for (size_t i = 0; i < na; i++) {
        if (npat) memcpy(&audio[i], pat + 4 * ((i + 1) % npat), 4);
        else audio[i] = 0.25f;
    }

    /* Pack: one message, or the same with the visual floats in two records. */
    Multitenant__CompositeBatchRequest q = MULTITENANT__COMPOSITE_BATCH_REQUEST__INIT;
    q.model_id = (char *)id;
    q.batch_size = batch;
    q.start_frame_idx = start;
    q.output_format = (char *)format;
    q.jpeg_quality = quality;
    q.audio_features = audio;
    q.n_audio_features = na;
    q.visual_frames = visual;
    size_t split = (flags & 0x80) ? nv / 3 : nv;
    q.n_visual_frames = split;
    Multitenant__CompositeBatchRequest q2 = MULTITENANT__COMPOSITE_BATCH_REQUEST__INIT;
    q2.visual_frames = visual + split;
    q2.n_visual_frames = nv - split;
    size_t l1 = multitenant__composite_batch_request__get_packed_size(&q);
    size_t l2 = multitenant__composite_batch_request__get_packed_size(&q2);
    uint8_t *wire = malloc(l1 + l2 + 1);
    if (!wire) abort();
    multitenant__composite_batch_request__pack(&q, wire);
    multitenant__composite_batch_request__pack(&q2, wire + l1);

    /* What the service must answer, in its order of validation. */
    ls_code want;
    int known = !strcmp(id, "demo") || !strcmp(id, "demo_pp") || !strcmp(id, "demo_b1");
    if (!*id || strlen(id) > 128 || batch < 1 || batch > 4 || start < 0 || !strcmp(format, "gif") ||
        quality < 0 || quality > 100)
        want = LS_INVALID_ARGUMENT;
    else if (!strcmp(id, "nope"))
        want = LS_NOT_FOUND;
    else if (!strcmp(id, "huge"))
        want = LS_RESOURCE_EXHAUSTED;
    else if (!known)
        want = LS_FAILED_PRECONDITION;
    /* No visual tensor at all is an audio-only request: the server builds the input. */
    else if ((nv != b * VPF && nv != 0) || (na != b * APF && na != APF) || has_non_finite(visual, nv) ||
             has_non_finite(audio, na))
        want = LS_INVALID_ARGUMENT;
    else
        want = LS_OK;

    ls_buf resp = {0};
    ls_code code = fz_call(M_INFER, wire, l1 + l2, fz_hash(data, size), &resp);
    if (code != want) {
        fprintf(stderr, "fuzz_infer: model '%s' batch %d start %d visual %zu audio %zu: got %s, expected %s\n", id,
                batch, (int)start, nv, na, ls_code_name(code), ls_code_name(want));
        abort();
    }
    if (code == LS_OK) {
        Multitenant__CompositeBatchResponse *r =
            multitenant__composite_batch_response__unpack(NULL, resp.len, resp.data);
        fz_check(r && r->success && r->n_composited_frames == (size_t)batch, "one PNG per batch item", code, "");
        const ProtobufCBinaryData *f0 = &r->composited_frames[0];
        if (!strcmp(format, "raw")) {
            fz_check(f0->len == 1280u * 720u * 3u, "a raw frame of 1280x720x3 bytes", code, "");
        } else {
            ls_image img;
            ls_err err = {.code = LS_OK, .msg = ""};
            fz_check(ls_image_decode_mem(f0->data, f0->len, &img, &err) == 0, "the first frame decodes", code,
                     err.msg);
            fz_check(img.w == 1280 && img.h == 720, "frames of 1280x720", code, "");
            fz_check(!strcmp(format, "jpeg") == (f0->data[0] == 0xff), "the format asked for", code, format);
            ls_image_free(&img);
        }
        multitenant__composite_batch_response__free_unpacked(r, NULL);
    }
    ls_buf_free(&resp);
    free(wire);
    free(visual);
    free(audio);
    return 0;
}
