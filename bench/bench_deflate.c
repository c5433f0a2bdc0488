/* bench_deflate.c - where PNG bytes and encode time go: the same filtered
 * rows of a photo frame through several deflate configurations (a finding
 * aid for target 1; not the server's code).
 *
 *   bench_deflate --bg BG.png [--rows y1,y2] [--reps 10]
 *
 * The rows (default: all) are SUB- or AVG-filtered the PNG way (this file's
 * own filter code), then compressed, one core, each configuration timed over
 * `reps` runs (median):
 *   isal-l0, isal-l1, isal-l3       ISA-L isal_deflate, default Huffman tables
 *                                   (what src/pngenc.c does, levels 0..3)
 *   isal-l0-custom                  ISA-L level 0 with Huffman tables built
 *                                   from a histogram of the same bytes
 *                                   (isal_update_histogram + isal_create_hufftables;
 *                                   histogram time included)
 *   zlib-l1, zlib-l1-rle, zlib-huff zlib level 1: default, Z_RLE (what OpenCV's
 *                                   PNG writer uses), Z_HUFFMAN_ONLY
 *   proto-huffonly                  a minimal Huffman-only deflate written here
 *                                   (one dynamic block, no LZ77), to show what
 *                                   an encoder without match search costs
 * Every output is inflated again with zlib and compared with its input.
 * Output: a table and "RESULT {json}". */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/igzip_lib.h>
#include <zlib.h>

#include "common.h"
#include "image.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* PNG filters on RGB24 rows (bpp 3). type 1 = SUB, 3 = AVG. */
static uint8_t *filter_rows(const uint8_t *rgb, int w, int y1, int y2, int type, size_t *len) {
    size_t rowlen = (size_t)w * 3, n = (size_t)(y2 - y1) * (rowlen + 1);
    uint8_t *out = malloc(n), *d = out;
    for (int y = y1; y < y2; y++) {
        const uint8_t *cur = rgb + (size_t)y * rowlen, *up = y > 0 ? cur - rowlen : NULL;
        *d++ = (uint8_t)type;
        for (size_t i = 0; i < rowlen; i++) {
            int left = i >= 3 ? cur[i - 3] : 0, above = up ? up[i] : 0;
            int pred = type == 1 ? left : (left + above) >> 1;
            *d++ = (uint8_t)(cur[i] - pred);
        }
    }
    *len = n;
    return out;
}

static size_t isal_once(uint8_t *in, size_t n, int level, int custom, uint8_t *out, size_t cap, uint8_t *lvl_buf,
                        uint32_t lvl_size) {
    struct isal_zstream zs;
    struct isal_hufftables ht;
    isal_deflate_init(&zs);
    if (custom) {
        struct isal_huff_histogram hist;
        memset(&hist, 0, sizeof hist);
        isal_update_histogram(in, (int)n, &hist);
        isal_create_hufftables(&ht, &hist);
        zs.hufftables = &ht;
    }
    zs.level = (uint32_t)level;
    zs.level_buf = lvl_size ? lvl_buf : NULL;
    zs.level_buf_size = lvl_size;
    zs.gzip_flag = IGZIP_ZLIB;
    zs.end_of_stream = 1;
    zs.flush = NO_FLUSH;
    zs.next_in = in;
    zs.avail_in = (uint32_t)n;
    zs.next_out = out;
    zs.avail_out = (uint32_t)cap;
    if (isal_deflate(&zs) != COMP_OK || zs.avail_in) return 0;
    return zs.total_out;
}

static size_t zlib_once(uint8_t *in, size_t n, int level, int strategy, uint8_t *out, size_t cap) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, level, Z_DEFLATED, 15, 8, strategy) != Z_OK) return 0;
    z.next_in = in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    size_t got = z.total_out;
    deflateEnd(&z);
    return rc == Z_STREAM_END ? got : 0;
}


/* ---- prototype: Huffman-only deflate (one dynamic block, no LZ77) --------
 * On photographs LZ77 finds almost nothing worth its cost (zlib's
 * Z_HUFFMAN_ONLY is as small as Z_RLE and smaller than level 1): the bytes
 * are in the entropy coding of the filtered residuals. This is a minimal
 * encoder written for this measurement: histogram, Huffman code lengths
 * (limited to 15 by flattening the counts), canonical codes, a dynamic block
 * header, then one table lookup and a 64-bit bit buffer per byte. The output
 * is a complete zlib stream (inflated again by the caller to check it). */

typedef struct {
    uint8_t *p;
    uint64_t acc;
    int n;
} bitw;

static inline void put_bits(bitw *w, uint64_t v, int len) {
    w->acc |= v << w->n;
    w->n += len;
    if (w->n >= 32) {
        memcpy(w->p, &w->acc, 4); /* little endian */
        w->p += 4;
        w->acc >>= 32;
        w->n -= 32;
    }
}

static void flush_bits(bitw *w) {
    while (w->n > 0) {
        *w->p++ = (uint8_t)w->acc;
        w->acc >>= 8;
        w->n -= 8;
    }
    w->n = 0;
    w->acc = 0;
}

/* Huffman code lengths for n symbols (counts may be 0), max length maxlen. */
static void huff_lengths(const uint64_t *count_in, int n, int maxlen, uint8_t *len) {
    uint64_t count[320];
    for (int i = 0; i < n; i++) count[i] = count_in[i];
    for (;;) {
        /* simple O(n^2) Huffman: fine for <= 288 symbols */
        int parent[640], nodes = 0, used = 0;
        uint64_t w[640];
        int alive[640], sym_node[320];
        for (int i = 0; i < n; i++) {
            sym_node[i] = -1;
            if (count[i]) {
                sym_node[i] = nodes;
                w[nodes] = count[i];
                alive[nodes] = 1;
                parent[nodes] = -1;
                nodes++;
                used++;
            }
        }
        memset(len, 0, (size_t)n);
        if (used == 0) return;
        if (used == 1) {
            for (int i = 0; i < n; i++)
                if (count[i]) len[i] = 1;
            return;
        }
        int live = used;
        while (live > 1) {
            int a = -1, b = -1;
            for (int k = 0; k < nodes; k++) {
                if (!alive[k]) continue;
                if (a < 0 || w[k] < w[a]) {
                    b = a;
                    a = k;
                } else if (b < 0 || w[k] < w[b]) {
                    b = k;
                }
            }
            alive[a] = alive[b] = 0;
            w[nodes] = w[a] + w[b];
            alive[nodes] = 1;
            parent[nodes] = -1;
            parent[a] = parent[b] = nodes;
            nodes++;
            live--;
        }
        int maxl = 0;
        for (int i = 0; i < n; i++) {
            if (sym_node[i] < 0) continue;
            int d = 0;
            for (int k = sym_node[i]; parent[k] >= 0; k = parent[k]) d++;
            len[i] = (uint8_t)d;
            if (d > maxl) maxl = d;
        }
        if (maxl <= maxlen) return;
        for (int i = 0; i < n; i++)
            if (count[i]) count[i] = (count[i] >> 1) | 1; /* flatten and retry */
    }
}

/* Canonical codes, bit-reversed for LSB-first output. */
static void huff_codes(const uint8_t *len, int n, uint32_t *code) {
    int bl_count[16] = {0}, next[16] = {0};
    for (int i = 0; i < n; i++) bl_count[len[i]]++;
    bl_count[0] = 0;
    int c = 0;
    for (int b = 1; b < 16; b++) {
        c = (c + bl_count[b - 1]) << 1;
        next[b] = c;
    }
    for (int i = 0; i < n; i++) {
        if (!len[i]) continue;
        uint32_t v = (uint32_t)next[len[i]]++, r = 0;
        for (int k = 0; k < len[i]; k++) r |= ((v >> k) & 1u) << (len[i] - 1 - k);
        code[i] = r;
    }
}

static size_t huffonly_zlib(const uint8_t *in, size_t n, uint8_t *out) {
    uint64_t cnt[4][257];
    memset(cnt, 0, sizeof cnt);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) { /* four tables: no store-to-load stalls on runs */
        cnt[0][in[i]]++;
        cnt[1][in[i + 1]]++;
        cnt[2][in[i + 2]]++;
        cnt[3][in[i + 3]]++;
    }
    for (; i < n; i++) cnt[0][in[i]]++;
    uint64_t lit[257];
    for (int s = 0; s < 256; s++) lit[s] = cnt[0][s] + cnt[1][s] + cnt[2][s] + cnt[3][s];
    lit[256] = 1; /* end of block */
    uint8_t len[257];
    uint32_t code[257];
    huff_lengths(lit, 257, 15, len);
    huff_codes(len, 257, code);

    /* code-length code over the 257 literal/length lengths + 1 distance length */
    uint8_t all[258];
    memcpy(all, len, 257);
    all[257] = 1; /* one distance code of length 1 (never used) */
    uint64_t clc[19] = {0};
    for (int k = 0; k < 258; k++) clc[all[k]]++;
    uint8_t cl_len[19];
    uint32_t cl_code[19];
    huff_lengths(clc, 19, 7, cl_len);
    huff_codes(cl_len, 19, cl_code);
    static const int order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    int hclen = 19;
    while (hclen > 4 && cl_len[order[hclen - 1]] == 0) hclen--;

    out[0] = 0x78;
    out[1] = 0x01;
    bitw w = {out + 2, 0, 0};
    put_bits(&w, 1, 1);           /* BFINAL */
    put_bits(&w, 2, 2);           /* BTYPE = dynamic */
    put_bits(&w, 257 - 257, 5);   /* HLIT */
    put_bits(&w, 1 - 1, 5);       /* HDIST */
    put_bits(&w, (uint64_t)(hclen - 4), 4);
    for (int k = 0; k < hclen; k++) put_bits(&w, cl_len[order[k]], 3);
    for (int k = 0; k < 258; k++) put_bits(&w, cl_code[all[k]], cl_len[all[k]]);
    /* the data: per byte one lookup; pairs of codes (<= 30 bits) per put */
    uint32_t pair_code[256];
    uint8_t pair_len[256];
    for (int s = 0; s < 256; s++) {
        pair_code[s] = code[s];
        pair_len[s] = len[s];
    }
    for (i = 0; i + 2 <= n; i += 2) {
        uint8_t a = in[i], b = in[i + 1];
        put_bits(&w, pair_code[a] | ((uint64_t)pair_code[b] << pair_len[a]), pair_len[a] + pair_len[b]);
    }
    for (; i < n; i++) put_bits(&w, pair_code[in[i]], pair_len[in[i]]);
    put_bits(&w, code[256], len[256]);
    flush_bits(&w);
    uint32_t ad = (uint32_t)adler32(1, in, (uInt)n);
    uint8_t *p = w.p;
    p[0] = (uint8_t)(ad >> 24);
    p[1] = (uint8_t)(ad >> 16);
    p[2] = (uint8_t)(ad >> 8);
    p[3] = (uint8_t)ad;
    return (size_t)(p + 4 - out);
}

/* Inflate and compare (the prototype's output must be valid deflate). */
static int check_zlib(const uint8_t *z, size_t zn, const uint8_t *expect, size_t n) {
    uint8_t *buf = malloc(n + 16);
    uLongf got = n + 16;
    int ok = uncompress(buf, &got, z, zn) == Z_OK && got == n && !memcmp(buf, expect, n);
    free(buf);
    return ok;
}

int main(int argc, char **argv) {
    const char *bg = NULL;
    int y1 = -1, y2 = -1, reps = 10;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--bg") && i + 1 < argc) bg = argv[++i];
        else if (!strcmp(argv[i], "--rows") && i + 1 < argc) sscanf(argv[++i], "%d,%d", &y1, &y2);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_deflate --bg BG.png [--rows y1,y2] [--reps N]\n");
            return 2;
        }
    }
    if (!bg || reps < 1) return 2;
    ls_image img;
    ls_err err;
    if (ls_image_decode_file(bg, &img, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    if (y1 < 0) y1 = 0, y2 = img.h;
    size_t cap = (size_t)img.w * 3 * (size_t)img.h * 2 + 65536;
    uint8_t *out = malloc(cap);
    uint32_t lvl_sizes[4] = {ISAL_DEF_LVL0_DEFAULT, ISAL_DEF_LVL1_DEFAULT, ISAL_DEF_LVL2_DEFAULT, ISAL_DEF_LVL3_DEFAULT};
    uint8_t *lvl_buf = malloc(ISAL_DEF_LVL3_DEFAULT > ISAL_DEF_LVL1_DEFAULT ? ISAL_DEF_LVL3_DEFAULT : ISAL_DEF_LVL1_DEFAULT);
    double *t = malloc((size_t)reps * sizeof *t);

    struct {
        const char *name;
        int kind, level, arg;
    } cfgs[] = {
        {"isal-l0", 0, 0, 0}, {"isal-l1", 0, 1, 0}, {"isal-l3", 0, 3, 0}, {"isal-l0-custom", 0, 0, 1},
        {"zlib-l1", 1, 1, Z_DEFAULT_STRATEGY}, {"zlib-l1-rle", 1, 1, Z_RLE}, {"zlib-huff", 1, 1, Z_HUFFMAN_ONLY},
        {"proto-huffonly", 2, 0, 0},
    };
    int ncfg = (int)(sizeof cfgs / sizeof cfgs[0]);
    printf("rows %d..%d of %s (%dx%d), one core, median of %d\n", y1, y2, bg, img.w, img.h, reps);
    printf("%-16s %-6s %12s %10s\n", "deflate", "filter", "bytes", "ms");
    char json[8192];
    size_t jl = (size_t)snprintf(json, sizeof json, "RESULT {\"rows\":[%d,%d],\"runs\":[", y1, y2);
    int first = 1;
    for (int f = 1; f <= 3; f += 2) {
        size_t n;
        uint8_t *filt = filter_rows(img.rgb, img.w, y1, y2, f, &n);
        for (int c = 0; c < ncfg; c++) {
            size_t got = 0;
            for (int r = 0; r < reps; r++) {
                uint64_t t0 = ls_mono_ns();
                if (cfgs[c].kind == 0)
                    got = isal_once(filt, n, cfgs[c].level, cfgs[c].arg, out, cap, lvl_buf, lvl_sizes[cfgs[c].level]);
                else if (cfgs[c].kind == 1)
                    got = zlib_once(filt, n, cfgs[c].level, cfgs[c].arg, out, cap);
                else
                    got = huffonly_zlib(filt, n, out);
                t[r] = (double)(ls_mono_ns() - t0) / 1e6;
            }
            qsort(t, (size_t)reps, sizeof *t, cmp_double);
            if (!check_zlib(out, got, filt, n)) {
                fprintf(stderr, "bench_deflate: %s output does not inflate to its input\n", cfgs[c].name);
                return 1;
            }
            printf("%-16s %-6s %12zu %10.2f\n", cfgs[c].name, f == 1 ? "SUB" : "AVG", got, t[reps / 2]);
            jl += (size_t)snprintf(json + jl, sizeof json - jl,
                                   "%s{\"deflate\":\"%s\",\"filter\":\"%s\",\"bytes\":%zu,\"ms\":%.3f}", first ? "" : ",",
                                   cfgs[c].name, f == 1 ? "SUB" : "AVG", got, t[reps / 2]);
            first = 0;
        }
        free(filt);
    }
    printf("%s]}\n", json);
    ls_image_free(&img);
    free(out);
    free(lvl_buf);
    free(t);
    return 0;
}
