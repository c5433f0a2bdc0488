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
 *                                   (what src/media/pngenc.c does, levels 0..3)
 *   isal-l0-custom                  ISA-L level 0 with Huffman tables built
 *                                   from a histogram of the same bytes
 *                                   (isal_update_histogram + isal_create_hufftables;
 *                                   histogram time included)
 *   zlib-l1, zlib-l1-rle, zlib-huff zlib level 1: default, Z_RLE (what OpenCV's
 *                                   PNG writer uses), Z_HUFFMAN_ONLY
 *   ls-huffman                      src/media/huffman.c, the server's Huffman-only
 *                                   coder (a dynamic block per 128 KiB chunk,
 *                                   no LZ77)
 * Every output is inflated again with zlib and compared with its input.
 * Output: a table and "RESULT {json}". */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/igzip_lib.h>
#include <zlib.h>

#include "common.h"
#include "huffman.h"
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


/* src/media/huffman.c's coder as the server uses it: one unit per 128 KiB chunk
 * (pngenc.c's chunk size), wrapped into a zlib stream here. */
static size_t huff_zlib(const uint8_t *in, size_t n, uint8_t *out) {
    const size_t chunk = 128 * 1024;
    uint8_t *o = out;
    *o++ = 0x78;
    *o++ = 0x01;
    for (size_t at = 0; at < n; at += chunk) {
        size_t k = n - at < chunk ? n - at : chunk;
        ls_huff_plan plan;
        ls_huff_plan_build(&plan, in + at, k);
        o += ls_huff_emit(&plan, in + at, k, o);
    }
    static const uint8_t last[5] = {0x01, 0x00, 0x00, 0xff, 0xff};
    memcpy(o, last, 5);
    o += 5;
    uint32_t ad = isal_adler32(1, in, n);
    o[0] = (uint8_t)(ad >> 24);
    o[1] = (uint8_t)(ad >> 16);
    o[2] = (uint8_t)(ad >> 8);
    o[3] = (uint8_t)ad;
    return (size_t)(o + 4 - out);
}

/* Inflate and compare (every output must be valid deflate of its input). */
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
        {"ls-huffman", 2, 0, 0},
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
                    got = huff_zlib(filt, n, out);
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
