/* wire.h - the request path's zero-copy protobuf pieces.
 *
 * A batch-5 request is 12.5 MB of float32. Decoding it with protobuf-c
 * after flattening gRPC's slices copies the tensors twice before ONNX
 * Runtime sees them, and the NaN/Inf check reads them a third time. Here
 * the request is read straight from gRPC's slices (ls_span list): each
 * tensor is copied exactly once, into its own aligned buffer, and checked
 * for NaN/Inf while the bytes are still in cache.
 *
 * The response goes the other way: each encoded PNG becomes its own piece
 * of the reply (a small protobuf field header, then the PNG buffer itself),
 * so the frames reach gRPC without being copied into one big message.
 *
 * Knows protobuf's wire format and the CompositeBatchRequest/Response field
 * numbers of proto/multitenant.proto; knows nothing of gRPC or models. */
#ifndef LS_WIRE_H
#define LS_WIRE_H

#include "common.h"

/* A message as a list of byte ranges (gRPC's slices), in order. */
typedef struct {
    const uint8_t *p;
    size_t n;
} ls_span;

typedef struct {
    char model_id[129];     /* NUL-terminated; see model_id_len */
    size_t model_id_len;    /* as sent (may exceed 128: then model_id is truncated) */
    int model_id_has_nul;
    float *visual;          /* owned; NULL when absent */
    size_t n_visual;
    float *audio;           /* owned; NULL when absent */
    size_t n_audio;
    int32_t batch_size;
    int32_t start_frame_idx;
    char output_format[16];  /* NUL-terminated, truncated; "" when absent */
    size_t output_format_len;
    int32_t jpeg_quality;
    ptrdiff_t visual_bad;   /* index of the first NaN/Inf, or -1 */
    ptrdiff_t audio_bad;
} ls_infer_request;

/* Decode a multitenant.CompositeBatchRequest. Tensors may be packed floats
 * (the proto's repeated float), `bytes` of float32 (same wire bytes), or
 * unpacked floats; repeated occurrences concatenate as protobuf says.
 * Unknown fields are skipped. Malformed input: -1 with INVALID_ARGUMENT
 * saying what was wrong at which byte offset. */
int ls_infer_request_decode(const ls_span *spans, size_t n_spans, ls_infer_request *out, ls_err *err);
void ls_infer_request_free(ls_infer_request *r);

/* Index of the first NaN/Inf among n floats, or -1. */
ptrdiff_t ls_first_non_finite(const float *v, size_t n);

/* A reply assembled from owned pieces, sent back to back. */
typedef struct {
    ls_buf *pieces;
    size_t n, cap;
} ls_reply;

/* Append a piece; takes ownership of b's buffer (b is left empty). */
int ls_reply_take(ls_reply *r, ls_buf *b);
/* Append the field header of a length-delimited field (tag + length). */
int ls_reply_field_header(ls_reply *r, unsigned field, size_t len);
size_t ls_reply_len(const ls_reply *r);
void ls_reply_free(ls_reply *r);

#endif
