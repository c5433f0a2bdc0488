/* pngenc.h - fast lossless PNG encoder for RGB24 frames.
 *
 * Speed matters more than the last percent of size: a composited 1280x720
 * frame must be encoded in a few milliseconds. The encoder uses one fixed
 * row filter (AVG) rather than libpng's adaptive filtering, and deflates
 * photographic rows with a Huffman-only coder (huffman.h) and flat ones with
 * ISA-L (see pngenc.c). Output is a standard PNG (IHDR 8-bit RGB, IDAT,
 * IEND) that any decoder accepts. */
#ifndef LS_PNGENC_H
#define LS_PNGENC_H

#include "common.h"

/* Encode w x h RGB24 pixels (row stride `stride` bytes, >= w*3) as PNG,
 * appending to *out (out->len grows; existing content kept).
 * level: ISA-L compression level 0..3 for rows of flat, low-entropy
 * content (1 is the default); photographic rows do not use it.
 * Returns 0, or -1 with err set (INVALID_ARGUMENT for bad sizes, stride or
 * level; RESOURCE_EXHAUSTED on OOM; INTERNAL if deflate fails). */
int ls_png_encode_rgb(const uint8_t *rgb, int w, int h, size_t stride, int level, ls_buf *out,
                      ls_err *err);

/* Spliced encoding. A composited frame differs from its background only in
 * the rows that cross the crop rectangle, so the rows above and below can be
 * compressed once per background frame and reused by every request:
 *
 *   PNG = signature, IHDR, IDAT(zlib header), top segment, IDAT(band rows
 *         compressed now), bottom segment, IDAT(final empty block + Adler-32),
 *         IEND
 *
 * Each segment is a raw deflate stream of filtered rows ending byte-aligned
 * and non-final, with no back-references across segments; its first row is
 * SUB-filtered (SUB reads only the row itself, the row above may be in
 * another segment), so segments concatenate into one valid zlib stream.
 * The Adler-32 of the whole is joined from the segments' with
 * adler32_combine. PNG allows the zlib stream to be split over any number
 * of IDAT chunks, so each segment is stored as a finished chunk (CRC
 * included) and copied as is. */
typedef struct {
    uint8_t *chunk;     /* a complete IDAT chunk (length, type, data, CRC); NULL if no rows */
    size_t chunk_len;
    uint32_t adler;     /* Adler-32 of the filtered bytes */
    uint64_t raw_len;   /* filtered bytes: rows * (3w + 1) */
} ls_png_segment;

/* Compress `rows` rows (rows may be 0: an empty segment). Built once per
 * background frame, so each chunk is deflated both ways (Huffman-only and
 * ISA-L) and the smaller kept. */
int ls_png_segment_build(const uint8_t *rgb, int w, int rows, size_t stride, int level,
                         ls_png_segment *seg, ls_err *err);
void ls_png_segment_free(ls_png_segment *seg);

/* Append a w x h PNG made of top rows, band_rows rows of `band` (row stride
 * `stride`) compressed now, and bottom rows. The row counts must add up to h. */
int ls_png_encode_spliced(int w, int h, const ls_png_segment *top, const uint8_t *band, int band_rows,
                          size_t stride, const ls_png_segment *bottom, int level, ls_buf *out,
                          ls_err *err);

#endif
