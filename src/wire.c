/* wire.c - see wire.h. */
#define _GNU_SOURCE
#include "wire.h"

#include <math.h>
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

/* ---- reader over spans -------------------------------------------------- */

typedef struct {
    const ls_span *spans;
    size_t n_spans;
    size_t span, off; /* current position */
    size_t pos;       /* bytes consumed, for messages */
    size_t total;
} reader;

static int rd_byte(reader *r, uint8_t *b) {
    while (r->span < r->n_spans && r->off == r->spans[r->span].n) {
        r->span++;
        r->off = 0;
    }
    if (r->span == r->n_spans) return -1;
    *b = r->spans[r->span].p[r->off++];
    r->pos++;
    return 0;
}

static int rd_varint(reader *r, uint64_t *v) {
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        uint8_t b;
        if (rd_byte(r, &b)) return -1;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1; /* more than 10 bytes */
}

/* Copy n bytes to dst (NULL: skip them). */
static int rd_copy(reader *r, void *dst, size_t n) {
    if (r->total - r->pos < n) return -1;
    uint8_t *d = dst;
    while (n) {
        const ls_span *s = &r->spans[r->span];
        size_t take = s->n - r->off;
        if (take > n) take = n;
        if (d) {
            memcpy(d, s->p + r->off, take);
            d += take;
        }
        r->off += take;
        r->pos += take;
        n -= take;
        if (r->off == s->n && r->span + 1 < r->n_spans) {
            r->span++;
            r->off = 0;
        }
    }
    return 0;
}

/* Append n payload bytes (a multiple of 4) to a float array, checking each
 * chunk for NaN/Inf right after copying it, while it is in cache. */
static int rd_floats(reader *r, float **arr, size_t *count, size_t n, ptrdiff_t *bad) {
    size_t add = n / 4;
    float *grown = realloc(*arr, (*count + add) * sizeof(float) + 1);
    if (!grown) return -2;
    *arr = grown;
    uint8_t *dst = (uint8_t *)(grown + *count);
    const size_t chunk = 64 * 1024;
    size_t done = 0;
    while (done < n) {
        size_t take = n - done < chunk ? n - done : chunk;
        if (rd_copy(r, dst + done, take)) return -1;
        if (*bad < 0) {
            ptrdiff_t b = ls_first_non_finite((const float *)(dst + done), take / 4);
            if (b >= 0) *bad = (ptrdiff_t)(*count + done / 4) + b;
        }
        done += take;
    }
    *count += add;
    return 0;
}

static int malformed(ls_err *err, const reader *r, const char *what) {
    return ls_err_set(err, LS_INVALID_ARGUMENT,
                      "malformed CompositeBatchRequest at byte %zu of %zu: %s", r->pos, r->total, what);
}

int ls_infer_request_decode(const ls_span *spans, size_t n_spans, ls_infer_request *out, ls_err *err) {
    memset(out, 0, sizeof *out);
    out->visual_bad = out->audio_bad = -1;
    reader r = {.spans = spans, .n_spans = n_spans};
    for (size_t i = 0; i < n_spans; i++) r.total += spans[i].n;

    while (r.pos < r.total) {
        uint64_t key, v;
        if (rd_varint(&r, &key)) {
            malformed(err, &r, "truncated field key");
            ls_infer_request_free(out);
            return -1;
        }
        unsigned field = (unsigned)(key >> 3), type = (unsigned)(key & 7);
        int rc = 0;
        if (field == 0) {
            rc = malformed(err, &r, "field number 0");
        } else if (type == 0) { /* varint */
            if (rd_varint(&r, &v)) {
                rc = malformed(err, &r, "truncated varint");
            } else if (field == 4) {
                out->batch_size = (int32_t)(uint32_t)v; /* int32: negatives arrive sign-extended */
            } else if (field == 5) {
                out->start_frame_idx = (int32_t)(uint32_t)v;
            } else if (field == 7) {
                out->jpeg_quality = (int32_t)(uint32_t)v;
            }
        } else if (type == 2) { /* length-delimited */
            if (rd_varint(&r, &v) || v > r.total - r.pos) {
                rc = malformed(err, &r, "length past the end of the message");
            } else if (field == 1) {
                size_t keep = v < 128 ? (size_t)v : 128;
                rc = rd_copy(&r, out->model_id, keep) || rd_copy(&r, NULL, (size_t)v - keep);
                out->model_id[keep] = 0;
                out->model_id_len = (size_t)v;
                out->model_id_has_nul = memchr(out->model_id, 0, keep) != NULL;
            } else if (field == 6) {
                size_t keep = v < sizeof out->output_format - 1 ? (size_t)v : sizeof out->output_format - 1;
                rc = rd_copy(&r, out->output_format, keep) || rd_copy(&r, NULL, (size_t)v - keep);
                out->output_format[keep] = 0;
                out->output_format_len = (size_t)v;
            } else if (field == 2 || field == 3) {
                if (v % 4) {
                    rc = ls_err_set(err, LS_INVALID_ARGUMENT,
                                    "%s: expected float32 data (a multiple of 4 bytes), got %llu bytes",
                                    field == 2 ? "visual_frames" : "audio_features", (unsigned long long)v);
                } else {
                    int fr = field == 2 ? rd_floats(&r, &out->visual, &out->n_visual, (size_t)v, &out->visual_bad)
                                        : rd_floats(&r, &out->audio, &out->n_audio, (size_t)v, &out->audio_bad);
                    if (fr == -2)
                        rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for a %llu-byte tensor",
                                        (unsigned long long)v);
                    else if (fr)
                        rc = malformed(err, &r, "truncated tensor");
                }
            } else {
                rc = rd_copy(&r, NULL, (size_t)v);
            }
        } else if (type == 5) { /* fixed32: an unpacked float */
            if (field == 2 || field == 3) {
                int fr = field == 2 ? rd_floats(&r, &out->visual, &out->n_visual, 4, &out->visual_bad)
                                    : rd_floats(&r, &out->audio, &out->n_audio, 4, &out->audio_bad);
                if (fr) rc = fr == -2 ? ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory") : malformed(err, &r, "truncated float");
            } else if (rd_copy(&r, NULL, 4)) {
                rc = malformed(err, &r, "truncated fixed32");
            }
        } else if (type == 1) { /* fixed64 */
            if (rd_copy(&r, NULL, 8)) rc = malformed(err, &r, "truncated fixed64");
        } else {
            rc = malformed(err, &r, "unsupported wire type (groups or invalid)");
        }
        if (rc) {
            ls_infer_request_free(out);
            return -1;
        }
    }
    return 0;
}

void ls_infer_request_free(ls_infer_request *req) {
    free(req->visual);
    free(req->audio);
    req->visual = req->audio = NULL;
    req->n_visual = req->n_audio = 0;
}

/* ---- reply -------------------------------------------------------------- */

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

int ls_reply_field_header(ls_reply *r, unsigned field, size_t len) {
    ls_buf b = {0};
    uint8_t tmp[16];
    size_t n = 0;
    uint64_t key = (uint64_t)field << 3 | 2;
    do {
        tmp[n] = (uint8_t)(key & 0x7f);
        key >>= 7;
        if (key) tmp[n] |= 0x80;
        n++;
    } while (key);
    uint64_t l = len;
    do {
        tmp[n] = (uint8_t)(l & 0x7f);
        l >>= 7;
        if (l) tmp[n] |= 0x80;
        n++;
    } while (l);
    if (ls_buf_append(&b, tmp, n) != 0) return -1;
    if (ls_reply_take(r, &b) != 0) {
        ls_buf_free(&b);
        return -1;
    }
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
