/* tensorbuf.h - float tensor buffers: a per-thread cache of large ones, and
 * the NaN/Inf scan every tensor gets before a model sees it.
 *
 * The tensors of a request (decoded input, model output) are megabytes each
 * and live for one request. Freed, glibc gives their pages back to the
 * kernel, and the next request faults them in again (see tensorbuf.c for
 * the measurement). The worker that served the previous request keeps a
 * few such buffers and hands them out again.
 *
 * ls_tensor_alloc returns at least `bytes` bytes (64-byte aligned) and sets
 * *cap to the usable size; give it back with ls_tensor_release(p, cap) on
 * the same or any other thread (it joins that thread's cache, which keeps
 * at most LS_TENSOR_CACHE_MAX buffers and LS_TENSOR_CACHE_BYTES bytes and
 * frees the rest). A thread's cache is freed when the thread exits;
 * ls_tensor_cache_flush frees the calling thread's now (tests, main).
 * Knows nothing of what the buffers hold. */
#ifndef LS_TENSORBUF_H
#define LS_TENSORBUF_H

#include <stddef.h>

/* Index of the first NaN/Inf among n floats, or -1. */
ptrdiff_t ls_first_non_finite(const float *v, size_t n);

#define LS_TENSOR_CACHE_MAX 3
#define LS_TENSOR_CACHE_BYTES ((size_t)64 << 20)
void *ls_tensor_alloc(size_t bytes, size_t *cap);
void ls_tensor_release(void *p, size_t cap);
void ls_tensor_cache_flush(void);
/* Buffers and bytes the calling thread's cache holds (tests). */
size_t ls_tensor_cache_held(size_t *bytes);
/* Bytes all threads' caches hold together (metrics). */
size_t ls_tensor_cache_total_bytes(void);

#endif
