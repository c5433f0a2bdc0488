/* pngenc.c - fast lossless PNG encoder for RGB24 (see pngenc.h).
 *
 * Layout of the output: signature, IHDR (8-bit truecolour, no interlace),
 * IDAT chunks holding one zlib stream, IEND. Chunk CRCs use ISA-L's
 * crc32_gzip_refl, which is the reflected CRC-32 (poly 0xEDB88320, init and
 * final xor 0xFFFFFFFF) that PNG and zlib's crc32() both specify.
 *
 * Filtering: AVG (type 3) on every row but the first of a segment, which
 * gets SUB (type 1) because the row above it may belong to another segment
 * (spliced encoding). One fixed filter instead of libpng's per-row
 * heuristic. Measured on 400 rows of a 1280x720 photograph with the
 * Huffman-only coder (bench/bench_deflate.c): SUB 714 531 bytes, UP 759 589,
 * AVG 657 592, Paeth 689 791. AVG predicts from the raw left and upper
 * bytes only, so its encoder has no serial dependency and runs 16 bytes at
 * a time like SUB.
 *
 * Deflate: rows are filtered a chunk (~128 KiB) at a time into a small
 * buffer, and each chunk becomes a byte-aligned, non-final piece of raw
 * deflate, made by one of two coders:
 *   - huffman.c's Huffman-only block, for photographic rows: same size as
 *     zlib's Z_HUFFMAN_ONLY (and OpenCV's Z_RLE) in a third of ISA-L's time;
 *   - ISA-L's isal_deflate at `level` with FULL_FLUSH, for rows where
 *     matches pay (flat or synthetic content): the chunk's Huffman code
 *     says how predictable the bytes are, and below LOW_ENTROPY_BITS per
 *     byte, runs are what LZ77 compresses far better than any per-byte code.
 * Segments built once per background frame (ls_png_segment_build) run both
 * coders and keep the smaller piece, since their cost is paid once.
 * Because every piece ends on a byte boundary without history, pieces
 * concatenate into one valid stream; the stream is closed with an empty
 * final stored block and the Adler-32 of the filtered bytes. */
#include "pngenc.h"

#include <stdlib.h>
#include <string.h>

#include <isa-l/crc.h>
#include <zlib.h>
#include <isa-l/igzip_lib.h>

#include "huffman.h"

/* Rows are filtered in chunks of about this many bytes; each chunk is one
 * deflate block with its own code. Measured on the photograph's 400 band
 * rows, the code per 16 KiB (zlib's block size) or per 1.5 MB gave the same
 * bytes (657 545 vs 657 592), so the size bounds the buffer and keeps the
 * chunk in L2 between the filter, histogram and coding passes. */
#define BAND_BYTES (128 * 1024)

/* A chunk whose Huffman code needs fewer bits per byte than this goes to
 * ISA-L instead. Photographic residuals cost 3-4 bits per byte; flat
 * backgrounds and synthetic frames cost 1-1.5, and there LZ77 wins by
 * multiples because their bytes come in runs. */
#define LOW_ENTROPY_BITS 2

/* PNG caps a chunk length at 2^31-1. Refusing raw images over 1 GiB keeps
 * each IDAT within that bound (no piece is larger than its input plus a
 * few bytes per 64 KiB, or ISA-L's measured worst case of +23% on random
 * bytes). The length is still checked when the chunk is closed. */
#define MAX_RAW_BYTES ((size_t)1 << 30)

/* `level` is passed to ISA-L unchanged (0..3). Its level buffer size is the
 * library's recommended default for that level. */
static const uint32_t level_buf_size[4] = {
    ISAL_DEF_LVL0_DEFAULT,
    ISAL_DEF_LVL1_DEFAULT,
    ISAL_DEF_LVL2_DEFAULT,
    ISAL_DEF_LVL3_DEFAULT,
};

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Append a complete chunk (length, type, data, CRC). Space must be reserved. */
static void put_chunk(ls_buf *out, const char type[4], const uint8_t *data, uint32_t len) {
    uint8_t *p = out->data + out->len;
    put_be32(p, len);
    memcpy(p + 4, type, 4);
    if (len) memcpy(p + 8, data, len);
    put_be32(p + 8 + len, crc32_gzip_refl(0, p + 4, (uint64_t)len + 4));
    out->len += (size_t)len + 12;
}

/* Row filters, 16 bytes at a time with GCC/Clang vector types (SSE2 on
 * x86-64): gcc -O2 leaves the plain byte loops scalar, 0.65 ms per
 * 1280x720 frame for SUB against 0.1 ms here. Bytes wrap modulo 256 as PNG
 * wants. */
typedef uint8_t v16u8 __attribute__((vector_size(16)));

/* SUB: each byte minus the byte one pixel (3 bytes) to its left. */
static void filter_sub_row(uint8_t *dst, const uint8_t *cur, size_t n) {
    size_t i = n < 3 ? n : 3;
    memcpy(dst, cur, i);
    for (; i + 16 <= n; i += 16) {
        v16u8 a, b;
        memcpy(&a, cur + i, 16);
        memcpy(&b, cur + i - 3, 16);
        a -= b;
        memcpy(dst + i, &a, 16);
    }
    for (; i < n; i++) dst[i] = (uint8_t)(cur[i] - cur[i - 3]);
}

/* AVG: each byte minus floor((left + up) / 2), left = 0 on the first
 * pixel. (l & u) + ((l ^ u) >> 1) is that floor without a 9th bit. */
static void filter_avg_row(uint8_t *dst, const uint8_t *cur, const uint8_t *up, size_t n) {
    size_t i = 0;
    for (; i < 3 && i < n; i++) dst[i] = (uint8_t)(cur[i] - (up[i] >> 1));
    for (; i + 16 <= n; i += 16) {
        v16u8 a, l, u;
        memcpy(&a, cur + i, 16);
        memcpy(&l, cur + i - 3, 16);
        memcpy(&u, up + i, 16);
        a -= (l & u) + ((l ^ u) >> 1);
        memcpy(dst + i, &a, 16);
    }
    for (; i < n; i++) dst[i] = (uint8_t)(cur[i] - ((cur[i - 3] + up[i]) >> 1));
}

/* Filter rows [y0, y1) of a segment into dst: per row a filter-type byte,
 * then 3w bytes. Row 0 of the segment is SUB, the rest AVG. */
static void filter_band(const uint8_t *rgb, size_t stride, size_t rowlen, int y0, int y1,
                        uint8_t *dst) {
    for (int y = y0; y < y1; y++) {
        const uint8_t *cur = rgb + (size_t)y * stride;
        if (y == 0) {
            *dst++ = 1;
            filter_sub_row(dst, cur, rowlen);
        } else {
            *dst++ = 3;
            filter_avg_row(dst, cur, cur - stride, rowlen);
        }
        dst += rowlen;
    }
}

typedef enum {
    CODER_CHOOSE, /* per request: Huffman-only unless the chunk is low-entropy */
    CODER_BEST,   /* built once: run both, keep the smaller */
} coder_mode;

/* Per-call working memory: the filter chunk, and ISA-L's state and level
 * buffer, made only when a chunk needs them. The whole fixed cost of a call
 * (allocation and setup, i.e. encoding a 1x1 image) was measured at 1-2 us
 * against ~3-5 ms for a 1280x720 frame, so nothing outlives the call. */
typedef struct {
    uint8_t *chunk;
    struct isal_zstream *zs;
    uint8_t *lvl_buf;
    int level;
} enc_work;

/* Deflate n filtered bytes with ISA-L into out (appending): a raw,
 * non-final piece that ends with a full flush (byte-aligned, no history). */
static int isal_piece(enc_work *w, uint8_t *in, size_t n, ls_buf *out, ls_err *err) {
    if (!w->zs) {
        uint32_t lvl_size = level_buf_size[w->level];
        w->zs = malloc(sizeof *w->zs + lvl_size);
        if (!w->zs) return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "png encode: out of memory");
        w->lvl_buf = (uint8_t *)(w->zs + 1);
    }
    struct isal_zstream *zs = w->zs;
    isal_deflate_init(zs);
    zs->level = (uint32_t)w->level;
    zs->level_buf_size = level_buf_size[w->level];
    zs->level_buf = zs->level_buf_size ? w->lvl_buf : NULL;
    zs->gzip_flag = IGZIP_DEFLATE;
    zs->flush = FULL_FLUSH;
    zs->next_in = in;
    zs->avail_in = (uint32_t)n;
    /* isal_deflate returns when the input is consumed or the output is
     * full; keep offering room until a call leaves some unused. */
    do {
        if (ls_buf_reserve(out, n + n / 4 + 1024) != 0)
            return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "png encode: out of memory");
        size_t room = out->cap - out->len;
        if (room > UINT32_MAX) room = UINT32_MAX;
        zs->next_out = out->data + out->len;
        zs->avail_out = (uint32_t)room;
        int rc = isal_deflate(zs);
        out->len += room - zs->avail_out;
        if (rc != COMP_OK) return ls_err_set(err, LS_INTERNAL, "png encode: isal_deflate failed (%d)", rc);
    } while (zs->avail_out == 0);
    if (zs->avail_in != 0)
        return ls_err_set(err, LS_INTERNAL, "png encode: deflate left %u bytes unconsumed", zs->avail_in);
    return 0;
}

/* Filter rows [0, rows) of rgb and append them to *out as a raw deflate
 * segment that starts and ends on a byte boundary, is not final and
 * carries no history, so it can be spliced between other such segments.
 * *adler gets the Adler-32 of the filtered bytes, for adler32_combine. */
static int deflate_rows(const uint8_t *rgb, size_t stride, size_t rowlen, int rows, int level,
                        coder_mode mode, ls_buf *out, uint32_t *adler, ls_err *err) {
    size_t filtered_row = rowlen + 1;
    int band_rows = (int)(BAND_BYTES / filtered_row);
    if (band_rows < 1) band_rows = 1;
    if (band_rows > rows) band_rows = rows;
    enc_work w = {.level = level};
    w.chunk = malloc((size_t)band_rows * filtered_row);
    if (!w.chunk) return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "png encode: out of memory");
    ls_huff_plan plan;
    uint32_t a = 1;
    int rc = 0;
    for (int y = 0; y < rows && rc == 0; y += band_rows) {
        int y1 = y + band_rows < rows ? y + band_rows : rows;
        filter_band(rgb, stride, rowlen, y, y1, w.chunk);
        size_t n = (size_t)(y1 - y) * filtered_row;
        a = isal_adler32(a, w.chunk, n);
        /* Per request, the coder is chosen from a sample (every 7th byte:
         * coprime with the 3 bytes of a pixel), so chunks that go to ISA-L
         * do not pay for a full histogram. */
        if (mode == CODER_CHOOSE && ls_huff_estimate_bits(w.chunk, n, 7) < (uint64_t)n * LOW_ENTROPY_BITS) {
            rc = isal_piece(&w, w.chunk, n, out, err);
            continue;
        }
        ls_huff_plan_build(&plan, w.chunk, n);
        if (ls_buf_reserve(out, ls_huff_bound(n)) != 0) {
            rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "png encode: out of memory");
            break;
        }
        size_t at = out->len;
        out->len += ls_huff_emit(&plan, w.chunk, n, out->data + at);
        if (mode == CODER_BEST) {
            /* ISA-L's piece right behind the Huffman one; keep the smaller. */
            size_t huff_len = out->len - at;
            rc = isal_piece(&w, w.chunk, n, out, err);
            if (rc == 0) {
                size_t isal_len = out->len - at - huff_len;
                if (isal_len < huff_len) memmove(out->data + at, out->data + at + huff_len, isal_len);
                out->len = at + (isal_len < huff_len ? isal_len : huff_len);
            }
        }
    }
    free(w.chunk);
    free(w.zs);
    if (rc == 0) *adler = a;
    return rc;
}

static int check_args(const uint8_t *rgb, int w, int h, size_t stride, int level, ls_err *err) {
    if (!rgb || w <= 0 || h <= 0)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "png encode: bad image %dx%d", w, h);
    if (level < 0 || level > ISAL_DEF_MAX_LEVEL)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "png encode: level %d not in 0..%d", level,
                          ISAL_DEF_MAX_LEVEL);
    if (stride < (size_t)w * 3)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "png encode: stride %zu < %zu", stride,
                          (size_t)w * 3);
    if ((size_t)w * 3 + 1 > MAX_RAW_BYTES / (size_t)h)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "png encode: image %dx%d too large", w, h);
    return 0;
}

/* Signature and IHDR. Space must be reserved (8 + 25 bytes). */
static void put_header(ls_buf *out, int w, int h) {
    static const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(out->data + out->len, signature, 8);
    out->len += 8;
    uint8_t ihdr[13];
    put_be32(ihdr, (uint32_t)w);
    put_be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8;  /* bit depth */
    ihdr[9] = 2;  /* colour type: truecolour */
    ihdr[10] = 0; /* deflate */
    ihdr[11] = 0; /* adaptive filtering, per-row filter byte */
    ihdr[12] = 0; /* no interlace */
    put_chunk(out, "IHDR", ihdr, sizeof ihdr);
}

/* Turn out->data[hdr .. out->len) (8 header bytes reserved at hdr, then the
 * payload) into a finished IDAT chunk with length and CRC. */
static int close_idat(ls_buf *out, size_t hdr, ls_err *err) {
    size_t len = out->len - hdr - 8;
    if (len > 0x7fffffffu)
        return ls_err_set(err, LS_INTERNAL, "png encode: IDAT too large (%zu bytes)", len);
    put_be32(out->data + hdr, (uint32_t)len);
    memcpy(out->data + hdr + 4, "IDAT", 4);
    if (ls_buf_reserve(out, 4) != 0)
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "png encode: out of memory");
    put_be32(out->data + out->len, crc32_gzip_refl(0, out->data + hdr + 4, (uint64_t)len + 4));
    out->len += 4;
    return 0;
}

/* The end of a zlib stream whose pieces all ended byte-aligned and
 * non-final: an empty final stored block (BFINAL=1, BTYPE=00, then LEN=0,
 * NLEN=0xffff) and the Adler-32 of the uncompressed bytes. 9 bytes. */
static void put_stream_end(uint8_t *p, uint32_t adler) {
    static const uint8_t last[5] = {0x01, 0x00, 0x00, 0xff, 0xff};
    memcpy(p, last, 5);
    put_be32(p + 5, adler);
}

int ls_png_encode_rgb(const uint8_t *rgb, int w, int h, size_t stride, int level, ls_buf *out,
                      ls_err *err) {
    if (!out) return ls_err_set(err, LS_INVALID_ARGUMENT, "png encode: no output buffer");
    if (check_args(rgb, w, h, stride, level, err) != 0) return -1;
    size_t start = out->len;
    size_t raw = ((size_t)w * 3 + 1) * (size_t)h;
    /* First guess for the output: photographs measured 55-75% of raw at
     * level 1; the deflate loop grows the buffer if it needs more. */
    if (ls_buf_reserve(out, 8 + 25 + 8 + raw / 4 * 3 + 1024 + 4 + 12) != 0) goto oom;
    put_header(out, w, h);
    /* One IDAT: zlib header, the rows as one segment, the stream's end. */
    size_t idat = out->len;
    out->len += 8;
    out->data[out->len++] = 0x78; /* zlib header; see ls_png_encode_spliced */
    out->data[out->len++] = 0x01;
    uint32_t adler = 1;
    if (deflate_rows(rgb, stride, (size_t)w * 3, h, level, CODER_CHOOSE, out, &adler, err) != 0) goto fail;
    if (ls_buf_reserve(out, 9 + 4 + 12) != 0) goto oom;
    put_stream_end(out->data + out->len, adler);
    out->len += 9;
    if (close_idat(out, idat, err) != 0) goto fail;
    if (ls_buf_reserve(out, 12) != 0) goto oom;
    put_chunk(out, "IEND", NULL, 0);
    return 0;
oom:
    ls_err_set(err, LS_RESOURCE_EXHAUSTED, "png encode: out of memory");
fail:
    /* Drop anything partial; bytes the caller had before stay untouched. */
    out->len = start;
    return -1;
}

/* ---- spliced encoding ---------------------------------------------------- */

int ls_png_segment_build(const uint8_t *rgb, int w, int rows, size_t stride, int level,
                         ls_png_segment *seg, ls_err *err) {
    memset(seg, 0, sizeof *seg);
    if (rows == 0) return 0; /* an empty segment: nothing to splice */
    if (check_args(rgb, w, rows, stride, level, err) != 0) return -1;
    ls_buf b = {0};
    if (ls_buf_reserve(&b, 8) != 0)
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "png encode: out of memory");
    b.len = 8;
    uint32_t adler = 1;
    if (deflate_rows(rgb, stride, (size_t)w * 3, rows, level, CODER_BEST, &b, &adler, err) != 0 ||
        close_idat(&b, 0, err) != 0) {
        ls_buf_free(&b);
        return -1;
    }
    /* Shrink to fit: segments live as long as the avatar. */
    uint8_t *p = realloc(b.data, b.len);
    seg->chunk = p ? p : b.data;
    seg->chunk_len = b.len;
    seg->adler = adler;
    seg->raw_len = (uint64_t)rows * ((uint64_t)w * 3 + 1);
    return 0;
}

void ls_png_segment_free(ls_png_segment *seg) {
    free(seg->chunk);
    memset(seg, 0, sizeof *seg);
}

int ls_png_encode_spliced(int w, int h, const ls_png_segment *top, const uint8_t *band, int band_rows,
                          size_t stride, const ls_png_segment *bottom, int level, ls_buf *out,
                          ls_err *err) {
    if (!out || !top || !bottom) return ls_err_set(err, LS_INVALID_ARGUMENT, "png encode: missing argument");
    uint64_t rowraw = (uint64_t)w * 3 + 1;
    if (w <= 0 || h <= 0 || band_rows <= 0 || top->raw_len % rowraw || bottom->raw_len % rowraw ||
        top->raw_len / rowraw + (uint64_t)band_rows + bottom->raw_len / rowraw != (uint64_t)h)
        return ls_err_set(err, LS_INVALID_ARGUMENT,
                          "png encode: segments (%llu + %d + %llu rows) do not make a %dx%d image",
                          (unsigned long long)(top->raw_len / rowraw), band_rows,
                          (unsigned long long)(bottom->raw_len / rowraw), w, h);
    if (check_args(band, w, band_rows, stride, level, err) != 0) return -1;
    size_t start = out->len;
    size_t band_raw = (size_t)rowraw * (size_t)band_rows;
    if (ls_buf_reserve(out, 8 + 25 + 14 + top->chunk_len + band_raw + 1024 + bottom->chunk_len + 21 + 12) != 0)
        goto oom;
    put_header(out, w, h);

    /* zlib header: deflate, 32 KiB window, no dictionary, "fastest" level
     * hint; 0x7801 is a multiple of 31 as the format requires. */
    static const uint8_t zhdr[2] = {0x78, 0x01};
    put_chunk(out, "IDAT", zhdr, 2);
    if (top->chunk_len) memcpy(out->data + out->len, top->chunk, top->chunk_len);
    out->len += top->chunk_len;

    size_t idat = out->len;
    out->len += 8;
    uint32_t band_adler = 1;
    if (deflate_rows(band, stride, (size_t)w * 3, band_rows, level, CODER_CHOOSE, out, &band_adler, err) != 0) goto fail;
    if (close_idat(out, idat, err) != 0) goto fail;

    if (ls_buf_reserve(out, bottom->chunk_len + 21 + 12) != 0) goto oom;
    if (bottom->chunk_len) memcpy(out->data + out->len, bottom->chunk, bottom->chunk_len);
    out->len += bottom->chunk_len;

    /* Join the segments' checksums and close the stream in its own IDAT. */
    uint32_t adler = top->raw_len ? top->adler : 1;
    adler = (uint32_t)adler32_combine(adler, band_adler, (z_off_t)band_raw);
    if (bottom->raw_len) adler = (uint32_t)adler32_combine(adler, bottom->adler, (z_off_t)bottom->raw_len);
    uint8_t tail[9];
    put_stream_end(tail, adler);
    put_chunk(out, "IDAT", tail, sizeof tail);
    put_chunk(out, "IEND", NULL, 0);
    return 0;
oom:
    ls_err_set(err, LS_RESOURCE_EXHAUSTED, "png encode: out of memory");
fail:
    out->len = start;
    return -1;
}
