/* tensorbuf.c - float tensor buffers: the per-thread cache and the NaN/Inf
 * scan (see tensorbuf.h).
 *
 * Why: a batch-5 request needs ~18 MB of float buffers (12.3 MB visual in,
 * 6.1 MB predictions out). glibc hands the top of a thread's heap back to
 * the kernel when they are freed (main.c leaves the trim threshold at
 * 128 KiB), so every request faulted them in again. Measured on the demo
 * model, batch 5, `lipsync bench`, 100 requests, the same tree without and
 * with this cache: 4100-4300 -> 1950-2050 minor faults per f32 request and
 * overhead (latency - inference - composite) 14.0-14.6 -> 9.8-10.5 ms; u8
 * 2850-3250 -> 820-900 faults, 8.0-8.1 -> 4.3-4.4 ms. (The faults left are
 * in gRPC's receive buffers and the PNG encoder.) Three slots: visual,
 * audio and the model output of one request; 64 MiB bounds what an idle
 * worker holds (a batch-10 f32 request is 25 MB in, 12 MB out).
 *
 * The cache is plain thread-local data, never shared, so it needs no lock;
 * a pthread key's destructor frees it when the thread exits (the key's
 * value is only a marker: the buffers live in the TLS struct itself). */
#define _POSIX_C_SOURCE 200112L /* posix_memalign */
#include "tensorbuf.h"
#include "common.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- finiteness ---------------------------------------------------------
 * Native 16-byte vectors (SSE2 compares); wider GCC vector types were
 * lowered to scalar code and ran 3x slower. The lane masks of a block are
 * OR-ed and tested once; only a block with a bad value is searched one by
 * one. */
typedef uint32_t v4u32 __attribute__((vector_size(16)));

ptrdiff_t ls_first_non_finite(const float *v, size_t n) {
    const v4u32 exp_mask = {0x7f800000u, 0x7f800000u, 0x7f800000u, 0x7f800000u};
    const size_t block = 1024;
    size_t i = 0;
    while (i + block <= n) {
        v4u32 acc = {0, 0, 0, 0};
        for (size_t j = i; j < i + block; j += 4) {
            v4u32 x;
            memcpy(&x, v + j, sizeof x);
            acc |= (v4u32)((x & exp_mask) == exp_mask);
        }
        if (acc[0] | acc[1] | acc[2] | acc[3]) break;
        i += block;
    }
    for (; i < n; i++)
        if (!isfinite(v[i])) return (ptrdiff_t)i;
    return -1;
}

typedef struct {
    void *p[LS_TENSOR_CACHE_MAX];
    size_t cap[LS_TENSOR_CACHE_MAX];
    size_t n, bytes;
    int registered; /* the exit destructor is armed for this thread */
} tensor_cache;

static _Thread_local tensor_cache t_cache;
static atomic_size_t g_held; /* bytes in all threads' caches */
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static int cache_key_ok;

/* Smaller buffers come cheaply from malloc's arenas; not worth a slot. */
#define TENSOR_CACHE_MIN ((size_t)64 << 10)

static void cache_free_all(tensor_cache *c) {
    for (size_t i = 0; i < c->n; i++) free(c->p[i]);
    atomic_fetch_sub(&g_held, c->bytes);
    c->n = 0;
    c->bytes = 0;
}

static void cache_at_exit(void *marker) {
    (void)marker;
    cache_free_all(&t_cache);
    t_cache.registered = 0;
}

static void cache_key_create(void) { cache_key_ok = pthread_key_create(&cache_key, cache_at_exit) == 0; }

void *ls_tensor_alloc(size_t bytes, size_t *cap) {
    tensor_cache *c = &t_cache;
    /* The smallest cached buffer that fits, unless it is more than 4x the
     * request: a batch-1 call must not pin a batch-10 buffer. */
    size_t best = c->n;
    for (size_t i = 0; i < c->n; i++)
        if (c->cap[i] >= bytes && c->cap[i] / 4 <= bytes && (best == c->n || c->cap[i] < c->cap[best])) best = i;
    if (best < c->n) {
        void *p = c->p[best];
        *cap = c->cap[best];
        c->bytes -= c->cap[best];
        atomic_fetch_sub(&g_held, c->cap[best]);
        c->n--;
        c->p[best] = c->p[c->n];
        c->cap[best] = c->cap[c->n];
        return p;
    }
    /* Aligned: ORT's own allocations are, vector loads of every row then
     * stay within cache lines, and the engine need not copy (engine.h). */
    void *p = ls_alloc_aligned(bytes);
    if (p) *cap = ls_aligned_size(bytes);
    return p;
}

void ls_tensor_release(void *p, size_t cap) {
    if (!p) return;
    tensor_cache *c = &t_cache;
    if (cap < TENSOR_CACHE_MIN || cap > LS_TENSOR_CACHE_BYTES) {
        free(p);
        return;
    }
    if (!c->registered) {
        pthread_once(&cache_once, cache_key_create);
        /* Without the exit hook a cache would leak with its thread. */
        if (!cache_key_ok || pthread_setspecific(cache_key, c) != 0) {
            free(p);
            return;
        }
        c->registered = 1;
    }
    /* Make room: drop the smallest buffers, which are the cheapest to
     * allocate again. */
    while (c->n && (c->n == LS_TENSOR_CACHE_MAX || c->bytes + cap > LS_TENSOR_CACHE_BYTES)) {
        size_t small = 0;
        for (size_t i = 1; i < c->n; i++)
            if (c->cap[i] < c->cap[small]) small = i;
        if (c->cap[small] > cap) break; /* everything held is bigger: keep it, drop this one */
        free(c->p[small]);
        c->bytes -= c->cap[small];
        atomic_fetch_sub(&g_held, c->cap[small]);
        c->n--;
        c->p[small] = c->p[c->n];
        c->cap[small] = c->cap[c->n];
    }
    if (c->n == LS_TENSOR_CACHE_MAX || c->bytes + cap > LS_TENSOR_CACHE_BYTES) {
        free(p);
        return;
    }
    c->p[c->n] = p;
    c->cap[c->n] = cap;
    c->n++;
    c->bytes += cap;
    atomic_fetch_add(&g_held, cap);
}

size_t ls_tensor_cache_total_bytes(void) { return atomic_load(&g_held); }

void ls_tensor_cache_flush(void) { cache_free_all(&t_cache); }

size_t ls_tensor_cache_held(size_t *bytes) {
    if (bytes) *bytes = t_cache.bytes;
    return t_cache.n;
}
