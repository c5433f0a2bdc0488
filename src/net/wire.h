/* wire.h - the request path's zero-copy protobuf pieces.
 *
 * A batch-5 request is 12.5 MB of float32. Decoding it with protobuf-c
 * after flattening gRPC's slices copies the tensors twice before ONNX
 * Runtime sees them, and the NaN/Inf check reads them a third time. Here
 * the request is read straight from gRPC's slices (ls_span list): each
 * tensor is copied exactly once, into its own aligned buffer, and checked
 * for NaN/Inf while the bytes are still in cache. The compact encodings
 * (uint8 and binary16, fields 8-10) are converted to float32 during that
 * same single copy, so a 3 MB uint8 upload still reaches ONNX Runtime with
 * one pass over the data.
 *
 * Those buffers come from the worker's cache (tensorbuf.h): a request's
 * 12 MB of fresh pages cost ~1500 page faults, while the worker that
 * decoded the previous request still holds pages of the right size.
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
#include "tensorbuf.h"

/* How a tensor arrived: proto fields 2/3 (float32), 9/10 (IEEE binary16,
 * little-endian) or 8 (uint8, value/255). */
typedef enum { LS_ENC_F32 = 0, LS_ENC_F16 = 1, LS_ENC_U8 = 2 } ls_tensor_enc;

/* Proto field name of the visual (visual != 0) or audio tensor in an
 * encoding, e.g. "visual_frames_u8"; and its bytes per value on the wire. */
const char *ls_tensor_field(int visual, ls_tensor_enc enc);
size_t ls_tensor_enc_size(ls_tensor_enc enc);

typedef struct {
    char model_id[129];     /* NUL-terminated; see model_id_len */
    size_t model_id_len;    /* as sent (may exceed 128: then model_id is truncated) */
    int model_id_has_nul;
    float *visual;          /* owned (ls_tensor_alloc); NULL when absent */
    size_t n_visual;        /* values (elements), whatever the encoding */
    size_t visual_cap;      /* bytes allocated, for ls_tensor_release */
    float *audio;           /* owned (ls_tensor_alloc); NULL when absent */
    size_t n_audio;
    size_t audio_cap;
    ls_tensor_enc visual_enc, audio_enc; /* the field each arrived in */
    int visual_seen, audio_seen;         /* any occurrence of a field of the tensor */
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
 * unpacked floats; repeated occurrences concatenate as protobuf says. The
 * compact `bytes` fields visual_frames_u8 / visual_frames_f16 /
 * audio_features_f16 are singular: a later occurrence replaces an earlier
 * one. A binary16 NaN or Inf is reported like a float32 one (visual_bad /
 * audio_bad, an index into the tensor). Unknown fields are skipped.
 * Malformed input, or two encodings of one tensor: -1 with
 * INVALID_ARGUMENT saying what was wrong (and at which byte offset). */
int ls_infer_request_decode(const ls_span *spans, size_t n_spans, ls_infer_request *out, ls_err *err);
void ls_infer_request_free(ls_infer_request *r);

/* Conversions of the compact encodings (exact; see the proto). f16 returns
 * the index of the first NaN/Inf half (exponent all ones), or -1; all n
 * values are written either way (Inf as Inf, NaN as a quiet NaN with the
 * half's payload, bit for bit what x86's VCVTPH2PS gives).
 * ls_f16_to_f32 uses the CPU's conversion instruction where there is one
 * (x86 F16C); the _portable variant never does (tests compare the two). */
ptrdiff_t ls_f16_to_f32(float *dst, const uint8_t *src_le, size_t n);
ptrdiff_t ls_f16_to_f32_portable(float *dst, const uint8_t *src_le, size_t n);
void ls_u8_to_f32(float *dst, const uint8_t *src, size_t n);

/* Append the field header of a length-delimited field (tag + length) to a
 * reply (ls_reply: common.h). */
int ls_reply_field_header(ls_reply *r, unsigned field, size_t len);

#endif
