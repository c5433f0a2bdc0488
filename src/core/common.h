/* common.h - small types shared by every subsystem of lipsyncd.
 *
 * No subsystem below the service layer knows about gRPC, so errors travel as
 * an ls_err: a code plus a human message. The numeric codes are chosen equal
 * to gRPC's status codes so the service layer maps them without a table, but
 * nothing here depends on gRPC headers. */
#ifndef LS_COMMON_H
#define LS_COMMON_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    LS_OK = 0,
    LS_CANCELLED = 1,
    LS_INVALID_ARGUMENT = 3,
    LS_DEADLINE_EXCEEDED = 4,
    LS_NOT_FOUND = 5,
    LS_PERMISSION_DENIED = 7,
    LS_RESOURCE_EXHAUSTED = 8,
    LS_FAILED_PRECONDITION = 9,
    LS_UNIMPLEMENTED = 12,
    LS_INTERNAL = 13,
    LS_UNAVAILABLE = 14,
    LS_UNAUTHENTICATED = 16,
} ls_code;

#define LS_ERR_MSG_MAX 1024

typedef struct {
    ls_code code;
    char msg[LS_ERR_MSG_MAX];
} ls_err;

/* Set *err (if non-NULL) to code + printf-style message. Returns -1 so error
 * paths can `return ls_err_set(...)`. */
int ls_err_set(ls_err *err, ls_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix an existing message: "<prefix>: <old message>". Keeps the code. */
int ls_err_prefix(ls_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The gRPC name of a status code ("INVALID_ARGUMENT"), "UNKNOWN" for a
 * number gRPC does not define: any of gRPC's 17 (the client reports the
 * server's). ls_code_name names only the ls_code values, "UNKNOWN" for any
 * other number (metrics labels rely on that). */
const char *ls_status_name(int code);
const char *ls_code_name(ls_code code);

/* Crop rectangle in a background frame: end-exclusive [x1, x2) x [y1, y2). */
typedef struct {
    int x1, y1, x2, y2;
} ls_rect;

/* Eviction policies (evict.h): lfu is the decaying frequency score,
 * lfu_count the lifetime usage count (the described system's LFU). */
typedef enum { LS_POLICY_LRU = 0, LS_POLICY_LFU = 1, LS_POLICY_LFU_COUNT = 2 } ls_policy;

/* 8-bit resampling kernel of a resize (resize.h): OpenCV's INTER_CUBIC
 * (a = -0.75) or INTER_LINEAR. */
typedef enum { LS_INTERP_CUBIC = 0, LS_INTERP_LINEAR = 1 } ls_interp;

/* Encoding of the returned frames. H264 is a stream's (video.h), never a
 * model's configured format. */
typedef enum { LS_FORMAT_PNG = 0, LS_FORMAT_JPEG = 1, LS_FORMAT_RAW = 2, LS_FORMAT_H264 = 3 } ls_format;

/* Which avatar frame serves stream position k (avatar.h): k mod n, or
 * there and back (0,1,..,n-1,n-2,..,1,0,..). */
typedef enum { LS_ORDER_LOOP = 0, LS_ORDER_PINGPONG = 1 } ls_frame_order;

/* Whether a model keeps each frame's server-built visual input (model.h):
 * auto decides by the memory it takes against the frames' own. */
typedef enum { LS_CACHE_AUTO = 0, LS_CACHE_ON = 1, LS_CACHE_OFF = 2 } ls_cache_mode;

/* Where ONNX Runtime runs a model (engine.h), and how cuDNN picks its
 * convolution algorithms there (ORT's cudnn_conv_algo_search). */
typedef enum { LS_EP_CPU = 0, LS_EP_CUDA = 1 } ls_exec_provider;
typedef enum { LS_CUDNN_EXHAUSTIVE = 0, LS_CUDNN_HEURISTIC = 1, LS_CUDNN_DEFAULT = 2 } ls_cudnn_search;

/* Memory a loaded model holds, in the two budgets capacity keeps: host
 * (capacity.max_memory_gb) and GPU (capacity.max_gpu_memory_gb; 0 for a
 * model on the CPU). */
typedef struct {
    uint64_t host, gpu;
} ls_mem;

/* Growable byte buffer; owner frees data with free(). */
typedef struct {
    uint8_t *data;
    size_t len, cap;
} ls_buf;

int ls_buf_reserve(ls_buf *b, size_t extra); /* 0 ok, -1 out of memory */
int ls_buf_append(ls_buf *b, const void *p, size_t n);
void ls_buf_free(ls_buf *b);

/* Messages as the transports carry them, whatever their format (wire.h
 * reads and writes the protobuf inside). */

/* A message as a list of byte ranges (gRPC's slices), in order. */
typedef struct {
    const uint8_t *p;
    size_t n;
} ls_span;

/* A reply assembled from owned pieces, sent back to back. */
typedef struct {
    ls_buf *pieces;
    size_t n, cap;
} ls_reply;

/* Append a piece; takes ownership of b's buffer (b is left empty). */
int ls_reply_take(ls_reply *r, ls_buf *b);
size_t ls_reply_len(const ls_reply *r);
void ls_reply_free(ls_reply *r);

/* Float tensors handed to ONNX Runtime start at a multiple of this (engine.h
 * says why: results must not depend on where a tensor lies). */
#define LS_TENSOR_ALIGN 64
/* `bytes` (rounded up to LS_TENSOR_ALIGN) at an LS_TENSOR_ALIGN-aligned
 * address; free() it. NULL on out of memory. */
void *ls_alloc_aligned(size_t bytes);
/* The size ls_alloc_aligned gives for `bytes` (0 on overflow). */
size_t ls_aligned_size(size_t bytes);

/* Append a whole file to buf. Returns 0, or an errno value (EFBIG when it
 * is longer than limit bytes). */
int ls_read_file(const char *path, ls_buf *buf, size_t limit);

/* Clocks: monotonic nanoseconds for intervals, wall milliseconds for display. */
uint64_t ls_mono_ns(void);
int64_t ls_wall_ms(void);

#endif
