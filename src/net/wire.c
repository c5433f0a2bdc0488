/* wire.c - see wire.h. */
#define _GNU_SOURCE
#include "wire.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

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

/* Room for `add` more floats after the first `count` of *arr (capacity
 * *cap bytes), keeping those. Growth of a non-empty tensor (unpacked or
 * repeated fields) at least doubles, so a float-per-field message stays
 * linear. -2 when out of memory. */
static int tensor_grow(float **arr, size_t *cap, size_t count, size_t add) {
    size_t need = (count + add) * sizeof(float);
    if (*arr && need <= *cap) return 0;
    size_t want = count && need < 2 * count * sizeof(float) ? 2 * count * sizeof(float) : need;
    size_t ncap;
    float *grown = ls_tensor_alloc(want, &ncap);
    if (!grown) return -2;
    if (count) memcpy(grown, *arr, count * sizeof(float));
    ls_tensor_release(*arr, *cap);
    *arr = grown;
    *cap = ncap;
    return 0;
}

/* Append n payload bytes (a multiple of 4) to a float array, checking each
 * chunk for NaN/Inf right after copying it, while it is in cache. */
static int rd_floats(reader *r, float **arr, size_t *cap, size_t *count, size_t n, ptrdiff_t *bad) {
    size_t add = n / 4;
    if (tensor_grow(arr, cap, *count, add)) return -2;
    uint8_t *dst = (uint8_t *)(*arr + *count);
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

/* ---- compact encodings ---------------------------------------------------
 * The conversions run at memory speed only with real SIMD: GCC's generic
 * vectors assemble the lanes byte by byte here (u8: 1.5 ms for a batch-5
 * visual tensor, f16: 1.7 ms), SSE2 for u8 takes 0.66 ms and the F16C
 * instruction for f16 0.67 ms, about the cost of writing the 12 MB of
 * floats at all (memset: 0.58 ms). x86 gets those; other hosts the
 * portable code. */
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define LS_X86 1
#else
#define LS_X86 0
#endif

/* binary16 -> float32, exact and branch-free (portable path): a normal
 * half is the same sign/exponent/mantissa with the exponent rebased
 * (+112); a subnormal half is mantissa x 2^-24, computed in float from the
 * integer (exact: both normal floats, so denormals-are-zero modes of the
 * calling thread cannot touch it). Exponent 31 is Inf or NaN, converted
 * as VCVTPH2PS does (a NaN keeps its payload and becomes quiet), so every
 * path gives the same bits for every input; it is also flagged, and the
 * caller rejects the request. */
typedef uint32_t v4u32 __attribute__((vector_size(16)));
typedef int32_t v4i32 __attribute__((vector_size(16)));
typedef float v4f32 __attribute__((vector_size(16)));

/* Half i of a little-endian binary16 array, whatever the host. */
static inline uint32_t half_at(const uint8_t *src, size_t i) {
    return (uint32_t)src[2 * i] | (uint32_t)src[2 * i + 1] << 8;
}

static inline uint32_t f16_bits(uint32_t h) {
    uint32_t em = h & 0x7fffu, sign = (h & 0x8000u) << 16;
    if (em >= 0x7c00u) {
        uint32_t mant = em & 0x3ffu;
        return sign | 0x7f800000u | mant << 13 | (mant ? 0x00400000u : 0);
    }
    if (em < 0x400u) {
        float f = (float)em * 0x1p-24f;
        uint32_t u;
        memcpy(&u, &f, 4);
        return u | sign;
    }
    return ((em << 13) + (112u << 23)) | sign;
}

/* Converts a multiple of 4 values; returns how many; *flagged when one of
 * them had exponent 31. */
static size_t f16_body_portable(float *dst, const uint8_t *src, size_t n, int *flagged) {
    const v4u32 m_em = {0x7fffu, 0x7fffu, 0x7fffu, 0x7fffu}, m_sign = {0x8000u, 0x8000u, 0x8000u, 0x8000u};
    const v4u32 sub_lim = {0x400u, 0x400u, 0x400u, 0x400u}, inf = {0x7c00u, 0x7c00u, 0x7c00u, 0x7c00u};
    const v4u32 rebase = {112u << 23, 112u << 23, 112u << 23, 112u << 23};
    const v4f32 scale = {0x1p-24f, 0x1p-24f, 0x1p-24f, 0x1p-24f};
    const v4u32 m_mant = {0x3ffu, 0x3ffu, 0x3ffu, 0x3ffu}, zero = {0, 0, 0, 0};
    const v4u32 f_inf = {0x7f800000u, 0x7f800000u, 0x7f800000u, 0x7f800000u};
    const v4u32 quiet = {0x00400000u, 0x00400000u, 0x00400000u, 0x00400000u};
    v4u32 acc = {0, 0, 0, 0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4u32 h = {half_at(src, i), half_at(src, i + 1), half_at(src, i + 2), half_at(src, i + 3)};
        v4u32 em = h & m_em, sign = (h & m_sign) << 16;
        v4u32 normal = (em << 13) + rebase;
        v4f32 subf = __builtin_convertvector((v4i32)em, v4f32) * scale;
        v4u32 is_sub = (v4u32)(em < sub_lim);
        v4u32 is_inf = (v4u32)(em >= inf), mant = em & m_mant;
        v4u32 special = f_inf | mant << 13 | (quiet & (v4u32)(mant != zero)); /* Inf, or NaN made quiet */
        v4u32 bits = ((normal & ~is_sub & ~is_inf) | ((v4u32)subf & is_sub) | (special & is_inf)) | sign;
        acc |= is_inf;
        memcpy(dst + i, &bits, sizeof bits);
    }
    *flagged = (acc[0] | acc[1] | acc[2] | acc[3]) != 0;
    return i;
}

#if LS_X86
/* VCVTPH2PS converts exactly, subnormals included; exponent 31 is flagged
 * with a 16-bit compare on the raw halves (x86 is little-endian). */
__attribute__((target("avx,f16c"))) static size_t f16_body_f16c(float *dst, const uint8_t *src, size_t n,
                                                                  int *flagged) {
    const __m128i expo = _mm_set1_epi16(0x7c00);
    __m128i acc = _mm_setzero_si128();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(src + 2 * i));
        acc = _mm_or_si128(acc, _mm_cmpeq_epi16(_mm_and_si128(h, expo), expo));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    *flagged = _mm_movemask_epi8(acc) != 0;
    return i;
}

static pthread_once_t f16c_once = PTHREAD_ONCE_INIT;
static int f16c_ok;
static void f16c_detect(void) {
    unsigned a, b, c, d;
    /* AVX as the OS reports it (saves ymm state) and the F16C cpuid bit. */
    __builtin_cpu_init();
    f16c_ok = __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#endif

static ptrdiff_t f16_convert(float *dst, const uint8_t *src, size_t n, int hardware) {
    int flagged = 0;
    size_t body;
#if LS_X86
    if (hardware) {
        pthread_once(&f16c_once, f16c_detect);
        hardware = f16c_ok;
    }
    body = hardware ? f16_body_f16c(dst, src, n, &flagged) : f16_body_portable(dst, src, n, &flagged);
#else
    (void)hardware;
    body = f16_body_portable(dst, src, n, &flagged);
#endif
    ptrdiff_t bad = -1;
    for (size_t i = body; i < n; i++) {
        uint32_t h = half_at(src, i);
        if ((h & 0x7c00u) == 0x7c00u && bad < 0) bad = (ptrdiff_t)i;
        uint32_t u = f16_bits(h);
        memcpy(dst + i, &u, 4);
    }
    /* Only a body that saw exponent 31 is searched value by value. */
    if (flagged)
        for (size_t j = 0; j < body; j++)
            if ((half_at(src, j) & 0x7c00u) == 0x7c00u) return (ptrdiff_t)j;
    return bad;
}

ptrdiff_t ls_f16_to_f32(float *dst, const uint8_t *src, size_t n) { return f16_convert(dst, src, n, 1); }
ptrdiff_t ls_f16_to_f32_portable(float *dst, const uint8_t *src, size_t n) { return f16_convert(dst, src, n, 0); }

/* value / 255 by IEEE division, not a multiply by 1/255 (which differs in
 * the last bit for 126 of the 256 values): the result must equal what a
 * client computes as uint8_image / 255.0 in float32. */
void ls_u8_to_f32(float *dst, const uint8_t *src, size_t n) {
    size_t i = 0;
#if defined(__SSE2__)
    const __m128 k255 = _mm_set1_ps(255.0f);
    const __m128i z = _mm_setzero_si128();
    for (; i + 16 <= n; i += 16) {
        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
        __m128i lo = _mm_unpacklo_epi8(b, z), hi = _mm_unpackhi_epi8(b, z);
        _mm_storeu_ps(dst + i, _mm_div_ps(_mm_cvtepi32_ps(_mm_unpacklo_epi16(lo, z)), k255));
        _mm_storeu_ps(dst + i + 4, _mm_div_ps(_mm_cvtepi32_ps(_mm_unpackhi_epi16(lo, z)), k255));
        _mm_storeu_ps(dst + i + 8, _mm_div_ps(_mm_cvtepi32_ps(_mm_unpacklo_epi16(hi, z)), k255));
        _mm_storeu_ps(dst + i + 12, _mm_div_ps(_mm_cvtepi32_ps(_mm_unpackhi_epi16(hi, z)), k255));
    }
#endif
    for (; i < n; i++) dst[i] = (float)src[i] / 255.0f;
}

const char *ls_tensor_field(int visual, ls_tensor_enc enc) {
    if (visual) return enc == LS_ENC_U8 ? "visual_frames_u8" : enc == LS_ENC_F16 ? "visual_frames_f16" : "visual_frames";
    return enc == LS_ENC_F16 ? "audio_features_f16" : "audio_features"; /* audio has no uint8 field */
}

size_t ls_tensor_enc_size(ls_tensor_enc enc) { return enc == LS_ENC_U8 ? 1 : enc == LS_ENC_F16 ? 2 : 4; }

/* A compact tensor field (n bytes): replaces the tensor (singular bytes
 * field: the last occurrence wins), converting span by span into the float
 * buffer. A binary16 value split across two spans is assembled from its
 * two bytes. */
static int rd_compact(reader *r, float **arr, size_t *cap, size_t *count, ls_tensor_enc enc, size_t n,
                      ptrdiff_t *bad) {
    size_t es = ls_tensor_enc_size(enc), total = n / es;
    *count = 0;
    *bad = -1;
    if (tensor_grow(arr, cap, 0, total)) return -2;
    float *dst = *arr;
    size_t done = 0;
    while (done < total) {
        while (r->span < r->n_spans && r->off == r->spans[r->span].n) {
            r->span++;
            r->off = 0;
        }
        if (r->span == r->n_spans) return -1;
        const ls_span *s = &r->spans[r->span];
        size_t avail = (s->n - r->off) / es;
        if (avail == 0) { /* the value's bytes continue in the next span */
            uint8_t two[2];
            if (rd_copy(r, two, 2)) return -1;
            ptrdiff_t b = ls_f16_to_f32(dst + done, two, 1);
            if (b >= 0 && *bad < 0) *bad = (ptrdiff_t)done;
            done++;
            continue;
        }
        size_t take = total - done < avail ? total - done : avail;
        const uint8_t *p = s->p + r->off;
        if (enc == LS_ENC_U8) {
            ls_u8_to_f32(dst + done, p, take);
        } else {
            ptrdiff_t b = ls_f16_to_f32(dst + done, p, take);
            if (b >= 0 && *bad < 0) *bad = (ptrdiff_t)done + b;
        }
        r->off += take * es;
        r->pos += take * es;
        done += take;
    }
    *count = total;
    return 0;
}

static int malformed(ls_err *err, const reader *r, const char *what) {
    return ls_err_set(err, LS_INVALID_ARGUMENT,
                      "malformed CompositeBatchRequest at byte %zu of %zu: %s", r->pos, r->total, what);
}

/* What a tensor reader's result means for the request: -2 out of memory,
 * any other failure a payload cut short. */
static int tensor_read_status(int fr, uint64_t bytes, const reader *r, ls_err *err) {
    if (fr == -2)
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for a %llu-byte tensor",
                          (unsigned long long)bytes);
    return fr ? malformed(err, r, "truncated tensor") : 0;
}

/* At most one encoding per tensor: a request carrying both visual_frames
 * and visual_frames_u8 is ambiguous, so it is refused naming both. */
static int one_encoding(ls_infer_request *out, int visual, ls_tensor_enc enc, ls_err *err) {
    int *seen = visual ? &out->visual_seen : &out->audio_seen;
    ls_tensor_enc *have = visual ? &out->visual_enc : &out->audio_enc;
    if (*seen && *have != enc)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "%s and %s: at most one %s encoding per request, got both",
                          ls_tensor_field(visual, *have), ls_tensor_field(visual, enc), visual ? "visual" : "audio");
    *seen = 1;
    *have = enc;
    return 0;
}

/* Wire type 0 (varint) of field: batch_size, start_frame_idx, jpeg_quality;
 * others are skipped. 0, or nonzero with err set. */
static int decode_varint(reader *r, unsigned field, ls_infer_request *out, ls_err *err) {
    uint64_t v;
    if (rd_varint(r, &v)) return malformed(err, r, "truncated varint");
    if (field == 4) {
        out->batch_size = (int32_t)(uint32_t)v; /* int32: negatives arrive sign-extended */
    } else if (field == 5) {
        out->start_frame_idx = (int32_t)(uint32_t)v;
    } else if (field == 7) {
        out->jpeg_quality = (int32_t)(uint32_t)v;
    }
    return 0;
}

/* A length-delimited tensor field of v bytes: visual_frames/audio_features
 * (2, 3: float32), visual_u8 (8), visual_f16 (9), audio_f16 (10). */
static int decode_tensor(reader *r, unsigned field, uint64_t v, ls_infer_request *out, ls_err *err) {
    int rc;
    if (field == 2 || field == 3) {
        if (v % 4)
            return ls_err_set(err, LS_INVALID_ARGUMENT,
                              "%s: expected float32 data (a multiple of 4 bytes), got %llu bytes",
                              field == 2 ? "visual_frames" : "audio_features", (unsigned long long)v);
        if ((rc = one_encoding(out, field == 2, LS_ENC_F32, err))) return rc;
        int fr = field == 2 ? rd_floats(r, &out->visual, &out->visual_cap, &out->n_visual, (size_t)v, &out->visual_bad)
                            : rd_floats(r, &out->audio, &out->audio_cap, &out->n_audio, (size_t)v, &out->audio_bad);
        return tensor_read_status(fr, v, r, err);
    }
    int visual = field != 10;
    ls_tensor_enc enc = field == 8 ? LS_ENC_U8 : LS_ENC_F16;
    if (v % ls_tensor_enc_size(enc))
        return ls_err_set(err, LS_INVALID_ARGUMENT,
                          "%s: expected IEEE binary16 data (a multiple of 2 bytes), got %llu bytes",
                          ls_tensor_field(visual, enc), (unsigned long long)v);
    if ((rc = one_encoding(out, visual, enc, err))) return rc;
    int fr = visual ? rd_compact(r, &out->visual, &out->visual_cap, &out->n_visual, enc, (size_t)v, &out->visual_bad)
                    : rd_compact(r, &out->audio, &out->audio_cap, &out->n_audio, enc, (size_t)v, &out->audio_bad);
    return tensor_read_status(fr, v, r, err);
}

/* Wire type 2 (length-delimited) of field: model_id and output_format (kept
 * up to their buffers' size, the length remembered), the tensors; others
 * are skipped. */
static int decode_bytes(reader *r, unsigned field, ls_infer_request *out, ls_err *err) {
    uint64_t v;
    if (rd_varint(r, &v) || v > r->total - r->pos) return malformed(err, r, "length past the end of the message");
    int rc;
    if (field == 1) {
        size_t keep = v < 128 ? (size_t)v : 128;
        rc = rd_copy(r, out->model_id, keep) || rd_copy(r, NULL, (size_t)v - keep);
        out->model_id[keep] = 0;
        out->model_id_len = (size_t)v;
        out->model_id_has_nul = memchr(out->model_id, 0, keep) != NULL;
    } else if (field == 6) {
        size_t keep = v < sizeof out->output_format - 1 ? (size_t)v : sizeof out->output_format - 1;
        rc = rd_copy(r, out->output_format, keep) || rd_copy(r, NULL, (size_t)v - keep);
        out->output_format[keep] = 0;
        out->output_format_len = (size_t)v;
    } else if (field == 2 || field == 3 || field == 8 || field == 9 || field == 10) {
        rc = decode_tensor(r, field, v, out, err);
    } else {
        rc = rd_copy(r, NULL, (size_t)v);
    }
    return rc;
}

/* Wire type 5 (fixed32) of field: one unpacked float of a float32 tensor,
 * or skipped. */
static int decode_fixed32(reader *r, unsigned field, ls_infer_request *out, ls_err *err) {
    if (field != 2 && field != 3) return rd_copy(r, NULL, 4) ? malformed(err, r, "truncated fixed32") : 0;
    int fr = one_encoding(out, field == 2, LS_ENC_F32, err);
    if (fr) return fr;
    fr = field == 2 ? rd_floats(r, &out->visual, &out->visual_cap, &out->n_visual, 4, &out->visual_bad)
                    : rd_floats(r, &out->audio, &out->audio_cap, &out->n_audio, 4, &out->audio_bad);
    if (fr) return fr == -2 ? ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory") : malformed(err, r, "truncated float");
    return 0;
}

/* Field by field: read the key, then the value by its wire type. */
int ls_infer_request_decode(const ls_span *spans, size_t n_spans, ls_infer_request *out, ls_err *err) {
    memset(out, 0, sizeof *out);
    out->visual_bad = out->audio_bad = -1;
    reader r = {.spans = spans, .n_spans = n_spans};
    for (size_t i = 0; i < n_spans; i++) r.total += spans[i].n;

    while (r.pos < r.total) {
        uint64_t key;
        int rc;
        if (rd_varint(&r, &key)) {
            rc = malformed(err, &r, "truncated field key");
        } else {
            unsigned field = (unsigned)(key >> 3), type = (unsigned)(key & 7);
            if (field == 0)
                rc = malformed(err, &r, "field number 0");
            else if (type == 0)
                rc = decode_varint(&r, field, out, err);
            else if (type == 2)
                rc = decode_bytes(&r, field, out, err);
            else if (type == 5)
                rc = decode_fixed32(&r, field, out, err);
            else if (type == 1) /* fixed64 */
                rc = rd_copy(&r, NULL, 8) ? malformed(err, &r, "truncated fixed64") : 0;
            else
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
    ls_tensor_release(req->visual, req->visual_cap);
    ls_tensor_release(req->audio, req->audio_cap);
    req->visual = req->audio = NULL;
    req->n_visual = req->n_audio = 0;
    req->visual_cap = req->audio_cap = 0;
}

/* ---- reply -------------------------------------------------------------- */

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
