/* huffman.h - Huffman-only deflate blocks for filtered image rows.
 *
 * Why not a general deflater: PNG-filtered rows of a photograph are
 * residuals of sensor noise. LZ77 finds almost nothing in them worth its
 * bits, and a search for matches costs time; the size is in the entropy
 * coding of single bytes. Measured on 400 rows of a 1280x720 photograph
 * (bench/bench_deflate.c): zlib's Z_HUFFMAN_ONLY is as small as its Z_RLE
 * (what OpenCV's PNG writer uses) and 11% smaller than ISA-L's fastest
 * LZ77 levels, and this encoder gives the same size as Z_HUFFMAN_ONLY in
 * a third of ISA-L's time. ISA-L stays for content where matches pay (flat
 * or synthetic frames): see ls_huff_plan.bits and pngenc.c.
 *
 * A unit made here is a piece of raw deflate (RFC 1951) that starts and
 * ends on a byte boundary and is never final: one dynamic-Huffman block of
 * literals followed by an empty stored block (the "sync flush" marker), or
 * stored blocks when those are smaller. Units concatenate with each other
 * and with ISA-L's FULL_FLUSH output into one valid stream. */
#ifndef LS_HUFFMAN_H
#define LS_HUFFMAN_H

#include <stddef.h>
#include <stdint.h>

/* A code built for one piece of input. Code lengths are limited to 15 bits
 * as deflate requires. */
typedef struct {
    uint32_t entry[257]; /* bit-reversed code | length << 16; [256] = end of block */
    uint8_t len[257];
    uint64_t bits;       /* exact size of the dynamic block for this input, header included */
    /* The block header's code-length code (RFC 1951 3.2.7). */
    uint8_t cl_len[19];
    uint16_t cl_code[19];
    int hclen;           /* code lengths sent, 4..19 */
} ls_huff_plan;

/* Build the code for n bytes (histogram, length-limited Huffman code). */
void ls_huff_plan_build(ls_huff_plan *p, const uint8_t *in, size_t n);

/* Estimate of the Huffman-only size in bits of n bytes from every step-th
 * byte (step >= 1): the code built for the sample, its cost scaled up.
 * For deciding which coder gets the bytes at a fraction of a full
 * histogram's cost. */
uint64_t ls_huff_estimate_bits(const uint8_t *in, size_t n, size_t step);

/* Largest unit ls_huff_emit writes for n input bytes. */
size_t ls_huff_bound(size_t n);

/* Write the unit for the n bytes the plan was built from to out, which
 * must have ls_huff_bound(n) bytes of room. Returns the bytes written. */
size_t ls_huff_emit(const ls_huff_plan *p, const uint8_t *in, size_t n, uint8_t *out);

#endif
