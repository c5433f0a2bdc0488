/* huffman.c - Huffman-only deflate blocks (see huffman.h).
 *
 * The block layout follows RFC 1951 section 3.2.7: HLIT = 257 literal /
 * length codes (the 256 byte values and end-of-block; no lengths are ever
 * used), HDIST = one distance code (never used; a single code of length 1,
 * which inflaters accept as the one allowed incomplete code), and the 258
 * code lengths sent through the code-length code without run-length
 * symbols: at ~130 bytes per block of 128 KiB that costs 0.1%, so the
 * simpler header wins.
 *
 * Speed: the data loop is one table lookup per byte and a 64-bit bit
 * buffer that is stored 8 bytes at a time, three codes (at most 45 bits)
 * per store, so no branch depends on the code lengths. */
#include "huffman.h"

#include <stdlib.h>
#include <string.h>

#define MAX_BITS 15     /* literal/length code limit (RFC 1951) */
#define MAX_CL_BITS 7   /* code-length code limit */
#define STORED_MAX 65535u

/* ---- length-limited Huffman code lengths -------------------------------- */

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Code lengths for n <= 257 symbols from their counts (0 = unused).
 * Classic two-queue construction over the leaves sorted by weight; the
 * merged nodes come out in nondecreasing weight, so the smallest two are
 * always at the front of one queue or the other. If the tree is deeper
 * than maxlen the counts are flattened (halved, kept nonzero) and the code
 * rebuilt: rare (it needs Fibonacci-like skew) and it converges, since
 * equal counts give a balanced tree of depth ceil(log2 n) <= 9. */
static void build_lengths(const uint32_t *count_in, int n, int maxlen, uint8_t *len) {
    uint64_t count[257];
    for (int i = 0; i < n; i++) count[i] = count_in[i];
    memset(len, 0, (size_t)n);
    for (;;) {
        uint64_t key[257];
        int m = 0;
        for (int i = 0; i < n; i++)
            if (count[i]) key[m++] = count[i] << 9 | (uint64_t)i; /* weight, then symbol: a stable order */
        if (m == 0) return;
        if (m == 1) {
            len[key[0] & 511] = 1;
            return;
        }
        qsort(key, (size_t)m, sizeof key[0], cmp_u64);
        /* nodes 0..m-1 are the sorted leaves, m..2m-2 the merged nodes */
        uint64_t w[2 * 257];
        int parent[2 * 257];
        uint8_t depth[2 * 257];
        for (int i = 0; i < m; i++) w[i] = key[i] >> 9;
        int leaf = 0, inner = m, next = m;
        while (next < 2 * m - 1) {
            int pick[2];
            for (int k = 0; k < 2; k++) {
                if (leaf < m && (inner >= next || w[leaf] <= w[inner]))
                    pick[k] = leaf++;
                else
                    pick[k] = inner++;
            }
            w[next] = w[pick[0]] + w[pick[1]];
            parent[pick[0]] = parent[pick[1]] = next;
            next++;
        }
        /* Parents are made after their children: walk down from the root. */
        depth[2 * m - 2] = 0;
        int deepest = 0;
        for (int k = 2 * m - 3; k >= 0; k--) {
            depth[k] = (uint8_t)(depth[parent[k]] + 1);
            if (k < m && depth[k] > deepest) deepest = depth[k];
        }
        if (deepest <= maxlen) {
            for (int i = 0; i < m; i++) len[key[i] & 511] = depth[i];
            return;
        }
        for (int i = 0; i < n; i++)
            if (count[i]) count[i] = (count[i] >> 1) | 1;
    }
}

/* Canonical codes (RFC 1951 3.2.2), bit-reversed because deflate sends
 * Huffman codes most significant bit first into an LSB-first stream. */
static void build_codes(const uint8_t *len, int n, uint16_t *code) {
    int bl_count[MAX_BITS + 1] = {0};
    uint32_t next[MAX_BITS + 1] = {0};
    for (int i = 0; i < n; i++) bl_count[len[i]]++;
    bl_count[0] = 0;
    uint32_t c = 0;
    for (int b = 1; b <= MAX_BITS; b++) {
        c = (c + (uint32_t)bl_count[b - 1]) << 1;
        next[b] = c;
    }
    for (int i = 0; i < n; i++) {
        code[i] = 0;
        if (!len[i]) continue;
        uint32_t v = next[len[i]]++, r = 0;
        for (int k = 0; k < len[i]; k++) r |= ((v >> k) & 1u) << (len[i] - 1 - k);
        code[i] = (uint16_t)r;
    }
}

/* Order in which code-length code lengths are sent (RFC 1951 3.2.7). */
static const uint8_t cl_order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};

/* The 258 code lengths the header carries: 257 literal/length, 1 distance. */
static void header_lengths(const ls_huff_plan *p, uint8_t all[258]) {
    memcpy(all, p->len, 257);
    all[257] = 1;
}

/* The code-length code for a plan's header (p->cl_len, cl_code, hclen). */
static void header_code(ls_huff_plan *p) {
    uint8_t all[258];
    header_lengths(p, all);
    uint32_t clc[19] = {0};
    for (int k = 0; k < 258; k++) clc[all[k]]++;
    build_lengths(clc, 19, MAX_CL_BITS, p->cl_len);
    build_codes(p->cl_len, 19, p->cl_code);
    p->hclen = 19;
    while (p->hclen > 4 && p->cl_len[cl_order[p->hclen - 1]] == 0) p->hclen--;
}

void ls_huff_plan_build(ls_huff_plan *p, const uint8_t *in, size_t n) {
    /* Four histograms, summed at the end: runs of one byte value would
     * otherwise make each increment wait for the previous one's store. */
    uint32_t cnt[4][256];
    memset(cnt, 0, sizeof cnt);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        cnt[0][in[i]]++;
        cnt[1][in[i + 1]]++;
        cnt[2][in[i + 2]]++;
        cnt[3][in[i + 3]]++;
    }
    for (; i < n; i++) cnt[0][in[i]]++;
    uint32_t lit[257];
    for (int s = 0; s < 256; s++) lit[s] = cnt[0][s] + cnt[1][s] + cnt[2][s] + cnt[3][s];
    lit[256] = 1;
    build_lengths(lit, 257, MAX_BITS, p->len);
    uint16_t code[257];
    build_codes(p->len, 257, code);
    uint64_t bits = 0;
    for (int s = 0; s < 257; s++) {
        p->entry[s] = (uint32_t)code[s] | (uint32_t)p->len[s] << 16;
        bits += (uint64_t)lit[s] * p->len[s];
    }
    uint8_t all[258];
    header_code(p);
    header_lengths(p, all);
    bits += 3 + 5 + 5 + 4 + 3 * (uint64_t)p->hclen;
    for (int k = 0; k < 258; k++) bits += p->cl_len[all[k]];
    p->bits = bits;
}

uint64_t ls_huff_estimate_bits(const uint8_t *in, size_t n, size_t step) {
    if (step < 1) step = 1;
    uint32_t lit[257] = {0};
    size_t taken = 0;
    for (size_t i = 0; i < n; i += step, taken++) lit[in[i]]++;
    if (taken == 0) return 0;
    lit[256] = 1;
    uint8_t len[257];
    build_lengths(lit, 257, MAX_BITS, len);
    uint64_t bits = 0;
    for (int s = 0; s < 256; s++) bits += (uint64_t)lit[s] * len[s];
    return bits * n / taken;
}

static size_t stored_size(size_t n) {
    size_t blocks = (n + STORED_MAX - 1) / STORED_MAX;
    return n + 5 * blocks;
}

/* Bytes of the dynamic unit: the block, the 3 bits of the empty stored
 * block's header, padding to a byte, and its LEN/NLEN. */
static size_t dynamic_size(const ls_huff_plan *p) {
    return (size_t)((p->bits + 3 + 7) / 8) + 4;
}

/* 8 bytes of slack: the data loop stores whole 64-bit words. */
size_t ls_huff_bound(size_t n) {
    return stored_size(n) + 8;
}

typedef struct {
    uint8_t *p;
    uint64_t acc; /* pending bits, LSB first */
    unsigned n;   /* how many; < 8 between calls of put_word */
} bitw;

static inline void put_word(bitw *w) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(w->p, &w->acc, 8);
#else
    for (int k = 0; k < 8; k++) w->p[k] = (uint8_t)(w->acc >> (8 * k));
#endif
    w->p += w->n >> 3;
    w->acc >>= w->n & ~7u; /* n < 64: put_bits adds at most 56 to at most 7 */
    w->n &= 7;
}

/* Up to 56 bits at once. */
static inline void put_bits(bitw *w, uint64_t v, unsigned len) {
    w->acc |= v << w->n;
    w->n += len;
    put_word(w);
}

static size_t emit_stored(const uint8_t *in, size_t n, uint8_t *out) {
    uint8_t *o = out;
    do {
        size_t k = n < STORED_MAX ? n : STORED_MAX;
        o[0] = 0; /* BFINAL 0, BTYPE 00, padding: we start on a byte boundary */
        o[1] = (uint8_t)k;
        o[2] = (uint8_t)(k >> 8);
        o[3] = (uint8_t)~k;
        o[4] = (uint8_t)(~k >> 8);
        memcpy(o + 5, in, k);
        o += 5 + k;
        in += k;
        n -= k;
    } while (n);
    return (size_t)(o - out);
}

size_t ls_huff_emit(const ls_huff_plan *p, const uint8_t *in, size_t n, uint8_t *out) {
    if (n == 0) return 0;
    if (stored_size(n) <= dynamic_size(p)) return emit_stored(in, n, out);

    uint8_t all[258];
    header_lengths(p, all);
    bitw w = {out, 0, 0};
    put_bits(&w, 0 | 2u << 1, 3); /* BFINAL 0, BTYPE 10 (dynamic) */
    put_bits(&w, 257 - 257, 5);  /* HLIT */
    put_bits(&w, 1 - 1, 5);      /* HDIST */
    put_bits(&w, (uint64_t)(p->hclen - 4), 4);
    for (int k = 0; k < p->hclen; k++) put_bits(&w, p->cl_len[cl_order[k]], 3);
    for (int k = 0; k < 258; k++) put_bits(&w, p->cl_code[all[k]], p->cl_len[all[k]]);

    const uint32_t *e = p->entry;
    uint64_t acc = w.acc;
    unsigned nb = w.n;
    uint8_t *o = w.p;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t e0 = e[in[i]], e1 = e[in[i + 1]], e2 = e[in[i + 2]];
        acc |= (uint64_t)(e0 & 0xffff) << nb;
        nb += e0 >> 16;
        acc |= (uint64_t)(e1 & 0xffff) << nb;
        nb += e1 >> 16;
        acc |= (uint64_t)(e2 & 0xffff) << nb;
        nb += e2 >> 16; /* <= 7 + 45 */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(o, &acc, 8);
#else
        for (int k = 0; k < 8; k++) o[k] = (uint8_t)(acc >> (8 * k));
#endif
        o += nb >> 3;
        acc >>= nb & ~7u;
        nb &= 7;
    }
    w.acc = acc;
    w.n = nb;
    w.p = o;
    for (; i < n; i++) put_bits(&w, e[in[i]] & 0xffff, e[in[i]] >> 16);
    put_bits(&w, e[256] & 0xffff, e[256] >> 16);
    /* Empty stored block: header bits 000, pad to the byte, LEN 0, NLEN ~0. */
    put_bits(&w, 0, 3);
    put_bits(&w, 0, (8 - w.n) & 7);
    put_bits(&w, 0xffff0000u, 32);
    return (size_t)(w.p - out);
}
