/* common.c - error helpers, byte buffer, clocks. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int ls_err_set(ls_err *err, ls_code code, const char *fmt, ...) {
    if (!err) return -1;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int ls_err_prefix(ls_err *err, const char *fmt, ...) {
    if (!err) return -1;
    /* Build "<prefix>: <old>" in a scratch buffer; truncation is fine (and
     * done explicitly, which keeps gcc's -Wformat-truncation quiet). */
    char out[LS_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, sizeof out, fmt, ap);
    va_end(ap);
    size_t used = n < 0 ? 0 : (size_t)n;
    if (used > sizeof out - 1) used = sizeof out - 1;
    const char sep[] = ": ";
    for (size_t i = 0; sep[i] && used < sizeof out - 1; i++) out[used++] = sep[i];
    size_t old_len = strnlen(err->msg, sizeof err->msg);
    size_t room = sizeof out - 1 - used;
    if (old_len > room) old_len = room;
    memcpy(out + used, err->msg, old_len);
    out[used + old_len] = 0;
    memcpy(err->msg, out, used + old_len + 1);
    return -1;
}

const char *ls_status_name(int code) {
    /* Indexed by gRPC status code; the values are fixed by the gRPC spec. */
    static const char *const names[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
        "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
    };
    if (code < 0 || (size_t)code >= sizeof names / sizeof names[0]) return "UNKNOWN";
    return names[code];
}

/* Only the codes the server uses have a name here: any other number, e.g.
 * a metrics label's, stays "UNKNOWN". */
const char *ls_code_name(ls_code code) {
    switch (code) {
    case LS_OK:
    case LS_CANCELLED:
    case LS_INVALID_ARGUMENT:
    case LS_DEADLINE_EXCEEDED:
    case LS_NOT_FOUND:
    case LS_PERMISSION_DENIED:
    case LS_RESOURCE_EXHAUSTED:
    case LS_FAILED_PRECONDITION:
    case LS_UNIMPLEMENTED:
    case LS_INTERNAL:
    case LS_UNAVAILABLE:
    case LS_UNAUTHENTICATED: return ls_status_name((int)code);
    }
    return "UNKNOWN";
}

int ls_buf_reserve(ls_buf *b, size_t extra) {
    if (b->cap - b->len >= extra) return 0;
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < need) cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int ls_buf_append(ls_buf *b, const void *p, size_t n) {
    if (ls_buf_reserve(b, n) != 0) return -1;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void ls_buf_free(ls_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

uint64_t ls_mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int64_t ls_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ls_read_file(const char *path, ls_buf *buf, size_t limit) {
    FILE *f = fopen(path, "rb");
    if (!f) return errno;
    int rc = 0;
    for (;;) {
        if (ls_buf_reserve(buf, 64 * 1024) != 0) {
            rc = ENOMEM;
            break;
        }
        size_t got = fread(buf->data + buf->len, 1, buf->cap - buf->len, f);
        buf->len += got;
        if (buf->len > limit) {
            rc = EFBIG;
            break;
        }
        if (got == 0) {
            if (ferror(f)) rc = errno ? errno : EIO;
            break;
        }
    }
    fclose(f);
    return rc;
}

size_t ls_aligned_size(size_t bytes) {
    size_t size = bytes ? (bytes + LS_TENSOR_ALIGN - 1) & ~(size_t)(LS_TENSOR_ALIGN - 1) : LS_TENSOR_ALIGN;
    return size < bytes ? 0 : size;
}

void *ls_alloc_aligned(size_t bytes) {
    size_t size = ls_aligned_size(bytes);
    if (!size) return NULL;
    void *p = NULL;
    return posix_memalign(&p, LS_TENSOR_ALIGN, size) == 0 ? p : NULL;
}

/* ---- reply pieces ------------------------------------------------------- */

int ls_reply_take(ls_reply *r, ls_buf *b) {
    if (r->n == r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 16;
        ls_buf *p = realloc(r->pieces, nc * sizeof *p);
        if (!p) return -1;
        r->pieces = p;
        r->cap = nc;
    }
    r->pieces[r->n++] = *b;
    b->data = NULL;
    b->len = b->cap = 0;
    return 0;
}

size_t ls_reply_len(const ls_reply *r) {
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++) n += r->pieces[i].len;
    return n;
}

void ls_reply_free(ls_reply *r) {
    for (size_t i = 0; i < r->n; i++) ls_buf_free(&r->pieces[i]);
    free(r->pieces);
    memset(r, 0, sizeof *r);
}
