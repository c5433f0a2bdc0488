/* test_image.c - unit tests for the pixel layer: image decode, PNG encode,
 * compositor.
 *
 * Independent oracles wherever possible: libpng's simplified API decodes what
 * our encoder writes (it checks chunk CRCs and the zlib Adler-32), libpng and
 * TurboJPEG produce the inputs the decoder must read, a bitwise CRC-32 checks
 * the chunk CRCs, zlib's inflate checks the Huffman-only coder, and a naive double-precision compositor written here is the
 * reference for ls_composite.
 *
 * Prints one line per check and a summary; exits non-zero on any failure. */
#define _GNU_SOURCE
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <png.h>
#include <turbojpeg.h>

#include <zlib.h>

#include "common.h"
#include "compositor.h"
#include "huffman.h"
#include "image.h"
#include "pngenc.h"

static int g_pass, g_fail;

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s - ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (ok)
        g_pass++;
    else
        g_fail++;
}

/* Out of memory in the test itself is not a result worth reporting nicely. */
static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test_image: out of memory\n");
        exit(2);
    }
    return p;
}

static uint32_t g_rng = 0x12345678u;
static uint32_t rnd(void) {
    /* xorshift32: deterministic, so failures reproduce. */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 17;
    g_rng ^= g_rng << 5;
    return g_rng;
}

/* Something with the statistics of a photograph: smooth shading, edges of
 * several orientations, and a little sensor noise. */
static uint8_t *make_photo(int w, int h, size_t stride, double seed) {
    uint8_t *px = xmalloc(stride * (size_t)h);
    memset(px, 0xAB, stride * (size_t)h); /* padding bytes get a fixed junk value */
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            double base = 110 + 50 * sin(x * 0.011 + seed) * cos(y * 0.017 - seed) +
                          30 * sin((x + 2 * y) * 0.045) + ((x / 97 + y / 61) % 2 ? 25 : -25);
            for (int c = 0; c < 3; c++) {
                double v = base * (0.8 + 0.15 * c) + 20 * sin(y * 0.03 * (c + 1)) +
                           (double)(rnd() % 9) - 4;
                px[(size_t)y * stride + (size_t)x * 3 + c] =
                    (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
    return px;
}

static uint8_t *make_noise(size_t n) {
    uint8_t *px = xmalloc(n);
    for (size_t i = 0; i < n; i++) px[i] = (uint8_t)(rnd() >> 11);
    return px;
}

/* ---------------------------------------------------------------- CRC-32 */

/* Bit-at-a-time CRC-32 straight from the PNG specification's definition. */
static uint32_t crc32_bitwise(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return c ^ 0xffffffffu;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Walk a PNG's chunks: signature, IHDR first with the expected fields,
 * every CRC right, IEND last and nothing after it. Returns NULL or why not. */
static const char *png_structure_error(const uint8_t *p, size_t n, int w, int h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n < 8 || memcmp(p, sig, 8) != 0) return "bad signature";
    size_t off = 8;
    int idx = 0, seen_iend = 0;
    while (off < n) {
        if (seen_iend) return "data after IEND";
        if (n - off < 12) return "truncated chunk";
        uint32_t len = be32(p + off);
        if (len > n - off - 12) return "chunk length past end";
        const uint8_t *type = p + off + 4;
        if (crc32_bitwise(type, (size_t)len + 4) != be32(p + off + 8 + len)) return "bad CRC";
        if (idx == 0) {
            if (memcmp(type, "IHDR", 4) != 0 || len != 13) return "first chunk not IHDR";
            const uint8_t *d = type + 4;
            if (be32(d) != (uint32_t)w || be32(d + 4) != (uint32_t)h) return "IHDR size";
            if (d[8] != 8 || d[9] != 2 || d[10] || d[11] || d[12]) return "IHDR fields";
        }
        if (memcmp(type, "IEND", 4) == 0) seen_iend = 1;
        off += (size_t)len + 12;
        idx++;
    }
    return seen_iend ? NULL : "no IEND";
}

/* ---------------------------------------------------------------- libpng */

/* Decode with libpng's simplified API into packed RGB; NULL on failure. */
static uint8_t *libpng_decode(const uint8_t *buf, size_t len, int *w, int *h) {
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&im, buf, len)) return NULL;
    im.format = PNG_FORMAT_RGB;
    uint8_t *px = xmalloc(PNG_IMAGE_SIZE(im));
    if (!png_image_finish_read(&im, NULL, px, 0, NULL)) {
        free(px);
        png_image_free(&im);
        return NULL;
    }
    *w = (int)im.width;
    *h = (int)im.height;
    return px;
}

/* Encode with libpng's simplified API; returns malloc'd PNG bytes. */
static uint8_t *libpng_encode(uint32_t format, int w, int h, const void *px, const void *cmap,
                              int entries, size_t *len) {
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = (png_uint_32)w;
    im.height = (png_uint_32)h;
    im.format = format;
    im.colormap_entries = (png_uint_32)entries;
    png_alloc_size_t size = 0;
    if (!png_image_write_to_memory(&im, NULL, &size, 0, px, 0, cmap)) return NULL;
    uint8_t *out = xmalloc(size);
    if (!png_image_write_to_memory(&im, out, &size, 0, px, 0, cmap)) {
        free(out);
        return NULL;
    }
    *len = size;
    return out;
}

/* ---------------------------------------------------------------- PNG encode */

static int packed_equal(const uint8_t *a, const uint8_t *b, size_t stride_b, int w, int h) {
    for (int y = 0; y < h; y++)
        if (memcmp(a + (size_t)y * w * 3, b + (size_t)y * stride_b, (size_t)w * 3) != 0)
            return 0;
    return 1;
}

/* Encode, check structure, decode with both decoders, compare exactly. */
static void roundtrip(const char *what, const uint8_t *px, int w, int h, size_t stride,
                      int level) {
    ls_buf out = {0};
    ls_err err = {0};
    int rc = ls_png_encode_rgb(px, w, h, stride, level, &out, &err);
    check(rc == 0, "encode %s %dx%d level %d (%zu bytes)%s%s", what, w, h, level, out.len,
          rc ? ": " : "", rc ? err.msg : "");
    if (rc != 0) return;

    const char *why = png_structure_error(out.data, out.len, w, h);
    check(why == NULL, "  chunk structure and CRCs %s", why ? why : "valid");

    ls_image img;
    rc = ls_image_decode_mem(out.data, out.len, &img, &err);
    check(rc == 0 && img.w == w && img.h == h && packed_equal(img.rgb, px, stride, w, h),
          "  ls_image_decode_mem round trip pixel-exact%s%s", rc ? ": " : "",
          rc ? err.msg : "");
    ls_image_free(&img);

    int lw = 0, lh = 0;
    uint8_t *lp = libpng_decode(out.data, out.len, &lw, &lh);
    check(lp && lw == w && lh == h && packed_equal(lp, px, stride, w, h),
          "  libpng decode round trip pixel-exact");
    free(lp);
    ls_buf_free(&out);
}

static void test_crc(void) {
    /* The PNG CRC is the one ISA-L calls crc32_gzip_refl: confirm against the
     * specification's check value and a bitwise implementation. */
    uint32_t c = crc32_bitwise((const uint8_t *)"123456789", 9);
    check(c == 0xcbf43926u, "bitwise CRC-32 check value 0x%08x", c);
}

static void test_png_encode(void) {
    static const int sizes[][2] = {{1, 1}, {3, 2}, {2, 3}, {17, 5}, {1280, 720}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int w = sizes[s][0], h = sizes[s][1];
        uint8_t *px = make_photo(w, h, (size_t)w * 3, (double)s);
        for (int level = 0; level <= 3; level++) roundtrip("photo", px, w, h, (size_t)w * 3, level);
        free(px);
    }

    /* Rows with padding: the encoder must honour the stride, not assume w*3. */
    {
        int w = 13, h = 7;
        size_t stride = (size_t)w * 3 + 11;
        uint8_t *px = make_photo(w, h, stride, 0.3);
        roundtrip("strided", px, w, h, stride, 1);
        free(px);
    }

    /* Incompressible data: output exceeds the encoder's first size guess and
     * the deflate loop must grow the buffer. */
    {
        int w = 1024, h = 768;
        uint8_t *px = make_noise((size_t)w * h * 3);
        for (int level = 0; level <= 3; level++) roundtrip("noise", px, w, h, (size_t)w * 3, level);
        free(px);
    }

    /* Flat image: compresses to almost nothing. */
    {
        int w = 640, h = 360;
        uint8_t *px = xmalloc((size_t)w * h * 3);
        memset(px, 77, (size_t)w * h * 3);
        roundtrip("flat", px, w, h, (size_t)w * 3, 1);
        free(px);
    }

    /* Flat rows go to ISA-L (runs), not the Huffman-only coder, whose floor
     * is 1 bit per byte (1/8 of raw). Half flat, half photo: both coders
     * in one stream. */
    {
        int w = 1280, h = 720;
        size_t raw = (size_t)w * h * 3;
        uint8_t *px = make_photo(w, h, (size_t)w * 3, 2.0);
        memset(px, 77, raw / 2);
        roundtrip("half flat, half photo", px, w, h, (size_t)w * 3, 1);
        memset(px, 77, raw);
        ls_buf out = {0};
        ls_err err = {0};
        int rc = ls_png_encode_rgb(px, w, h, (size_t)w * 3, 1, &out, &err);
        check(rc == 0 && out.len < raw / 100, "flat 1280x720 compresses below 1%% of raw: %zu bytes", out.len);
        ls_buf_free(&out);
        free(px);
    }

    /* Photo-like 1280x720 compresses below its raw size at every level. */
    {
        int w = 1280, h = 720;
        uint8_t *px = make_photo(w, h, (size_t)w * 3, 1.0);
        for (int level = 0; level <= 3; level++) {
            ls_buf out = {0};
            ls_err err = {0};
            int rc = ls_png_encode_rgb(px, w, h, (size_t)w * 3, level, &out, &err);
            check(rc == 0 && out.len < (size_t)w * h * 3,
                  "photo 1280x720 level %d compresses: %zu < %zu bytes", level, out.len,
                  (size_t)w * h * 3);
            ls_buf_free(&out);
        }
        free(px);
    }

    /* Appending: existing buffer content is kept and the PNG follows it. */
    {
        ls_buf out = {0};
        ls_err err = {0};
        ls_buf_append(&out, "prefix", 6);
        uint8_t px[2 * 2 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
        int rc = ls_png_encode_rgb(px, 2, 2, 6, 1, &out, &err);
        ls_image img;
        int drc = rc == 0 ? ls_image_decode_mem(out.data + 6, out.len - 6, &img, &err) : -1;
        check(rc == 0 && memcmp(out.data, "prefix", 6) == 0 && drc == 0 &&
                  memcmp(img.rgb, px, sizeof px) == 0,
              "encode appends after existing content");
        if (drc == 0) ls_image_free(&img);
        ls_buf_free(&out);
    }

    /* Bad arguments: -1, INVALID_ARGUMENT, buffer untouched. */
    {
        uint8_t px[4 * 3] = {0};
        struct {
            int w, h, level;
            size_t stride;
            const char *what;
        } bad[] = {
            {0, 1, 1, 3, "zero width"},  {1, 0, 1, 3, "zero height"},
            {-4, 1, 1, 3, "negative width"}, {2, 2, 4, 6, "level 4"},
            {2, 2, -1, 6, "level -1"},   {2, 2, 1, 5, "stride < w*3"},
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            ls_buf out = {0};
            ls_err err = {0};
            int rc = ls_png_encode_rgb(px, bad[i].w, bad[i].h, bad[i].stride, bad[i].level, &out,
                                       &err);
            check(rc == -1 && err.code == LS_INVALID_ARGUMENT && out.len == 0,
                  "encode rejects %s: %s", bad[i].what, err.msg);
            ls_buf_free(&out);
        }
    }
}


/* ------------------------------------------------------ Huffman-only coder */

/* Inflate raw deflate units (closed here with an empty final stored block)
 * with zlib and compare with what went in. */
static int inflates_to(const uint8_t *units, size_t len, const uint8_t *want, size_t n) {
    uint8_t *in = xmalloc(len + 5);
    memcpy(in, units, len);
    static const uint8_t last[5] = {0x01, 0x00, 0x00, 0xff, 0xff};
    memcpy(in + len, last, 5);
    uint8_t *got = xmalloc(n + 16);
    z_stream z;
    memset(&z, 0, sizeof z);
    int ok = inflateInit2(&z, -15) == Z_OK;
    if (ok) {
        z.next_in = in;
        z.avail_in = (uInt)(len + 5);
        z.next_out = got;
        z.avail_out = (uInt)(n + 16);
        ok = inflate(&z, Z_FINISH) == Z_STREAM_END && z.total_out == n && z.avail_in == 0 &&
             memcmp(got, want, n) == 0;
        inflateEnd(&z);
    }
    free(in);
    free(got);
    return ok;
}

/* Code one buffer; check the plan's lengths (<= 15, a prefix code by
 * Kraft), the output size against the bound and the plan, and the inflate. */
static size_t huff_unit(const char *what, const uint8_t *in, size_t n, int expect_stored) {
    ls_huff_plan plan;
    ls_huff_plan_build(&plan, in, n);
    double kraft = 0;
    int maxlen = 0;
    for (int s = 0; s < 257; s++) {
        if (plan.len[s]) kraft += 1.0 / (double)(1u << plan.len[s]);
        if (plan.len[s] > maxlen) maxlen = plan.len[s];
    }
    size_t bound = ls_huff_bound(n);
    uint8_t *out = xmalloc(bound);
    size_t len = ls_huff_emit(&plan, in, n, out);
    size_t stored = n + 5 * ((n + 65534) / 65535);
    size_t dynamic = (size_t)((plan.bits + 3 + 7) / 8) + 4;
    int is_stored = n > 0 && len == stored;
    check(maxlen <= 15 && kraft <= 1.0 + 1e-12 && len + 8 <= bound && inflates_to(out, len, in, n) &&
              (n == 0 ? len == 0 : len == (stored <= dynamic ? stored : dynamic)) &&
              (expect_stored < 0 || is_stored == expect_stored),
          "huffman %s: %zu bytes -> %zu (%s), longest code %d, Kraft sum %.6f", what, n, len,
          is_stored ? "stored" : "dynamic", maxlen, kraft);
    free(out);
    return len;
}

static void test_huffman(void) {
    /* Tiny inputs: stored wins over a ~130-byte header; the 3-at-a-time loop's tail. */
    uint8_t small[4] = {9, 200, 9, 7};
    for (size_t n = 0; n <= 4; n++) huff_unit("tiny", small, n, n ? 1 : 0);

    /* Random bytes: a Huffman code cannot beat 8 bits, so stored blocks
     * (more than one: 65535 bytes each). */
    size_t n = 200000;
    uint8_t *noise = make_noise(n);
    huff_unit("random bytes", noise, n, 1);

    /* One value: a two-symbol code (the value and end-of-block). */
    uint8_t *buf = xmalloc(n);
    memset(buf, 42, n);
    size_t len = huff_unit("one value", buf, n, 0);
    check(len < n / 7, "huffman one value: about 1 bit per byte (%zu bytes for %zu)", len, n);

    /* Fibonacci counts make the optimal code ~24 levels deep: the 15-bit
     * limit must kick in and the code must still be a valid prefix code. */
    size_t k = 0;
    uint32_t f0 = 1, f1 = 1;
    for (int s = 0; s < 26 && k < n; s++) {
        for (uint32_t j = 0; j < f0 && k < n; j++) buf[k++] = (uint8_t)(s * 7);
        uint32_t t = f0 + f1;
        f0 = f1;
        f1 = t;
    }
    huff_unit("fibonacci counts (length limit)", buf, k, 0);

    /* Residual-like bytes (two-sided geometric around 0): well under 8 bits. */
    for (size_t i = 0; i < n; i++) {
        uint32_t r = rnd();
        int mag = 0;
        while (mag < 40 && (r & 1u) != 0) {
            mag++;
            r = (r >> 1) | (rnd() << 31);
        }
        buf[i] = (uint8_t)(rnd() & 1 ? mag : -mag);
    }
    len = huff_unit("residuals", buf, n, 0);
    check(len < n / 2, "huffman residuals: under 4 bits per byte (%zu for %zu)", len, n);
    /* The sampled estimate that picks the coder is close to the exact size. */
    {
        ls_huff_plan plan;
        ls_huff_plan_build(&plan, buf, n);
        uint64_t est = ls_huff_estimate_bits(buf, n, 7);
        check(est > plan.bits * 9 / 10 && est < plan.bits * 11 / 10,
              "huffman estimate from every 7th byte within 10%%: %llu vs exact %llu bits",
              (unsigned long long)est, (unsigned long long)plan.bits);
        memset(noise + n / 2, 0, n / 2); /* half noise, half one value: ~4.5 bits per byte */
        ls_huff_plan_build(&plan, noise, n);
        est = ls_huff_estimate_bits(noise, n, 7);
        check(est > plan.bits * 9 / 10 && est < plan.bits * 11 / 10,
              "huffman estimate, half noise: %llu vs exact %llu bits", (unsigned long long)est,
              (unsigned long long)plan.bits);
        check(ls_huff_estimate_bits(buf, 0, 7) == 0, "huffman estimate of nothing is 0");
    }

    /* Units concatenate: residuals then noise then residuals, one stream. */
    uint8_t *cat = xmalloc(3 * n), *all = xmalloc(3 * ls_huff_bound(n));
    size_t at = 0;
    const uint8_t *parts[3] = {buf, noise, buf};
    for (int p = 0; p < 3; p++) {
        ls_huff_plan plan;
        ls_huff_plan_build(&plan, parts[p], n);
        at += ls_huff_emit(&plan, parts[p], n, all + at);
        memcpy(cat + (size_t)p * n, parts[p], n);
    }
    check(inflates_to(all, at, cat, 3 * n), "huffman units concatenate into one stream (%zu bytes)", at);
    free(cat);
    free(all);
    free(buf);
    free(noise);
}

/* ---------------------------------------------------------------- decode */

static void test_png_decode_formats(void) {
    enum { W = 9, H = 4 };
    /* 8-bit gray. */
    {
        uint8_t g[W * H];
        for (int i = 0; i < W * H; i++) g[i] = (uint8_t)(i * 7);
        size_t len;
        uint8_t *png = libpng_encode(PNG_FORMAT_GRAY, W, H, g, NULL, 0, &len);
        ls_image img;
        ls_err err = {0};
        int rc = png ? ls_image_decode_mem(png, len, &img, &err) : -1;
        int ok = rc == 0 && img.w == W && img.h == H;
        for (int i = 0; ok && i < W * H; i++)
            ok = img.rgb[i * 3] == g[i] && img.rgb[i * 3 + 1] == g[i] && img.rgb[i * 3 + 2] == g[i];
        check(ok, "gray8 PNG decodes to R=G=B=gray");
        if (rc == 0) ls_image_free(&img);
        free(png);
    }
    /* 8-bit gray + alpha: alpha dropped, not composited. */
    {
        uint8_t ga[W * H * 2];
        for (int i = 0; i < W * H; i++) ga[i * 2] = (uint8_t)(200 - i), ga[i * 2 + 1] = (uint8_t)(i * 5);
        size_t len;
        uint8_t *png = libpng_encode(PNG_FORMAT_GA, W, H, ga, NULL, 0, &len);
        ls_image img;
        ls_err err = {0};
        int rc = png ? ls_image_decode_mem(png, len, &img, &err) : -1;
        int ok = rc == 0 && img.w == W && img.h == H;
        for (int i = 0; ok && i < W * H; i++)
            ok = img.rgb[i * 3] == ga[i * 2] && img.rgb[i * 3 + 1] == ga[i * 2] &&
                 img.rgb[i * 3 + 2] == ga[i * 2];
        check(ok, "gray+alpha PNG decodes to gray, alpha dropped");
        if (rc == 0) ls_image_free(&img);
        free(png);
    }
    /* RGBA: alpha dropped. */
    {
        uint8_t rgba[W * H * 4];
        for (int i = 0; i < W * H * 4; i++) rgba[i] = (uint8_t)(i * 13 + 1);
        size_t len;
        uint8_t *png = libpng_encode(PNG_FORMAT_RGBA, W, H, rgba, NULL, 0, &len);
        ls_image img;
        ls_err err = {0};
        int rc = png ? ls_image_decode_mem(png, len, &img, &err) : -1;
        int ok = rc == 0 && img.w == W && img.h == H;
        for (int i = 0; ok && i < W * H; i++) ok = memcmp(img.rgb + i * 3, rgba + i * 4, 3) == 0;
        check(ok, "RGBA PNG decodes to RGB, alpha dropped");
        if (rc == 0) ls_image_free(&img);
        free(png);
    }
    /* Palette, 256 entries (8-bit indices) and 4 entries (libpng packs those
     * into 2-bit indices). */
    for (int entries = 4; entries <= 256; entries += 252) {
        uint8_t cmap[256 * 3], idx[W * H];
        for (int i = 0; i < entries * 3; i++) cmap[i] = (uint8_t)(rnd() >> 7);
        for (int i = 0; i < W * H; i++) idx[i] = (uint8_t)(rnd() % (uint32_t)entries);
        size_t len;
        uint8_t *png = libpng_encode(PNG_FORMAT_RGB_COLORMAP, W, H, idx, cmap, entries, &len);
        ls_image img;
        ls_err err = {0};
        int rc = png ? ls_image_decode_mem(png, len, &img, &err) : -1;
        int ok = rc == 0 && img.w == W && img.h == H;
        for (int i = 0; ok && i < W * H; i++) ok = memcmp(img.rgb + i * 3, cmap + idx[i] * 3, 3) == 0;
        check(ok, "palette PNG (%d entries) decodes to palette colours%s%s", entries,
              rc ? ": " : "", rc ? err.msg : "");
        if (rc == 0) ls_image_free(&img);
        free(png);
    }
    /* 16-bit RGB and 16-bit gray. Samples are v*257 so that both ways of
     * reducing to 8 bits (v16 >> 8, or round(v16 / 257)) give exactly v. */
    {
        uint16_t rgb16[W * H * 3], y16[W * H];
        uint8_t want[W * H * 3], wanty[W * H];
        for (int i = 0; i < W * H * 3; i++) want[i] = (uint8_t)(rnd() >> 9), rgb16[i] = (uint16_t)(want[i] * 257);
        for (int i = 0; i < W * H; i++) wanty[i] = (uint8_t)(rnd() >> 9), y16[i] = (uint16_t)(wanty[i] * 257);
        size_t len;
        uint8_t *png = libpng_encode(PNG_FORMAT_LINEAR_RGB, W, H, rgb16, NULL, 0, &len);
        ls_image img;
        ls_err err = {0};
        int rc = png ? ls_image_decode_mem(png, len, &img, &err) : -1;
        check(rc == 0 && img.w == W && img.h == H && memcmp(img.rgb, want, sizeof want) == 0,
              "16-bit RGB PNG decodes to the high bytes");
        if (rc == 0) ls_image_free(&img);
        free(png);

        png = libpng_encode(PNG_FORMAT_LINEAR_Y, W, H, y16, NULL, 0, &len);
        rc = png ? ls_image_decode_mem(png, len, &img, &err) : -1;
        int ok = rc == 0 && img.w == W && img.h == H;
        for (int i = 0; ok && i < W * H; i++)
            ok = img.rgb[i * 3] == wanty[i] && img.rgb[i * 3 + 1] == wanty[i] &&
                 img.rgb[i * 3 + 2] == wanty[i];
        check(ok, "16-bit gray PNG decodes to R=G=B=high byte");
        if (rc == 0) ls_image_free(&img);
        free(png);
    }
    /* A PNG written by libpng (adaptive filters, zlib) decodes exactly. */
    {
        int w = 301, h = 77;
        uint8_t *px = make_photo(w, h, (size_t)w * 3, 2.0);
        size_t len;
        uint8_t *png = libpng_encode(PNG_FORMAT_RGB, w, h, px, NULL, 0, &len);
        ls_image img;
        ls_err err = {0};
        int rc = png ? ls_image_decode_mem(png, len, &img, &err) : -1;
        check(rc == 0 && img.w == w && img.h == h &&
                  memcmp(img.rgb, px, (size_t)w * h * 3) == 0,
              "libpng-written RGB PNG decodes pixel-exact");
        if (rc == 0) ls_image_free(&img);
        free(png);
        free(px);
    }
}

static uint8_t *jpeg_encode(const uint8_t *px, int w, int h, int pf, int samp, int q,
                            size_t *len) {
    tjhandle tj = tjInitCompress();
    if (!tj) return NULL;
    unsigned char *jb = NULL;
    unsigned long jl = 0;
    uint8_t *copy = NULL;
    if (tjCompress2(tj, px, w, 0, h, pf, &jb, &jl, samp, q, 0) == 0) {
        copy = xmalloc(jl);
        memcpy(copy, jb, jl);
        *len = jl;
    }
    tjFree(jb);
    tjDestroy(tj);
    return copy;
}

static void test_jpeg_decode(void) {
    int w = 96, h = 64;
    uint8_t *px = make_photo(w, h, (size_t)w * 3, 0.7);
    size_t len = 0;
    uint8_t *jpg = jpeg_encode(px, w, h, TJPF_RGB, TJSAMP_444, 95, &len);
    check(jpg != NULL, "make JPEG with tjCompress2 (%zu bytes)", len);
    if (!jpg) {
        free(px);
        return;
    }
    ls_image img;
    ls_err err = {0};
    int rc = ls_image_decode_mem(jpg, len, &img, &err);
    double sum = 0;
    int maxd = 0;
    if (rc == 0 && img.w == w && img.h == h) {
        for (size_t i = 0; i < (size_t)w * h * 3; i++) {
            int d = abs((int)img.rgb[i] - (int)px[i]);
            sum += d;
            if (d > maxd) maxd = d;
        }
    }
    double mean = sum / ((double)w * h * 3);
    check(rc == 0 && img.w == w && img.h == h && mean < 3.0 && maxd < 40,
          "JPEG q95 4:4:4 decodes close to source (mean |d| %.2f, max %d)%s%s", mean, maxd,
          rc ? ": " : "", rc ? err.msg : "");
    if (rc == 0) ls_image_free(&img);

    /* Truncated JPEG: libjpeg only warns ("premature end"), we must fail. */
    rc = ls_image_decode_mem(jpg, len / 2, &img, &err);
    check(rc == -1 && err.code == LS_FAILED_PRECONDITION && img.rgb == NULL,
          "truncated JPEG -> FAILED_PRECONDITION: %s", err.msg);

    /* Absurd dimensions in the SOF header are refused before allocating. */
    uint8_t *big = xmalloc(len);
    memcpy(big, jpg, len);
    int patched = 0;
    for (size_t i = 2; i + 9 < len;) {
        if (big[i] != 0xff) break;
        uint8_t m = big[i + 1];
        size_t seglen = (size_t)big[i + 2] << 8 | big[i + 3];
        if (m == 0xc0 || m == 0xc1 || m == 0xc2) {
            big[i + 5] = 20000 >> 8, big[i + 6] = 20000 & 0xff; /* height */
            big[i + 7] = 20000 >> 8, big[i + 8] = 20000 & 0xff; /* width */
            patched = 1;
            break;
        }
        i += 2 + seglen;
    }
    rc = patched ? ls_image_decode_mem(big, len, &img, &err) : 0;
    check(patched && rc == -1 && err.code == LS_FAILED_PRECONDITION &&
              strstr(err.msg, "dimensions") != NULL,
          "JPEG claiming 20000x20000 refused: %s", err.msg);
    free(big);
    free(jpg);

    /* Grayscale JPEG decodes to R=G=B. */
    uint8_t *gray = xmalloc((size_t)w * h);
    for (int i = 0; i < w * h; i++) gray[i] = px[i * 3 + 1];
    jpg = jpeg_encode(gray, w, h, TJPF_GRAY, TJSAMP_GRAY, 95, &len);
    rc = jpg ? ls_image_decode_mem(jpg, len, &img, &err) : -1;
    int ok = rc == 0 && img.w == w && img.h == h;
    int gmax = 0;
    for (int i = 0; ok && i < w * h; i++) {
        ok = img.rgb[i * 3] == img.rgb[i * 3 + 1] && img.rgb[i * 3] == img.rgb[i * 3 + 2];
        int d = abs((int)img.rgb[i * 3] - (int)gray[i]);
        if (d > gmax) gmax = d;
    }
    check(ok && gmax < 40, "grayscale JPEG decodes to R=G=B (max |d| %d)", gmax);
    if (rc == 0) ls_image_free(&img);
    free(jpg);
    free(gray);

    /* 4:2:0 subsampling, the common case for camera JPEGs. */
    jpg = jpeg_encode(px, w, h, TJPF_RGB, TJSAMP_420, 90, &len);
    rc = jpg ? ls_image_decode_mem(jpg, len, &img, &err) : -1;
    sum = 0;
    if (rc == 0)
        for (size_t i = 0; i < (size_t)w * h * 3; i++) sum += abs((int)img.rgb[i] - (int)px[i]);
    mean = sum / ((double)w * h * 3);
    check(rc == 0 && img.w == w && img.h == h && mean < 6.0,
          "JPEG q90 4:2:0 decodes close to source (mean |d| %.2f)", mean);
    if (rc == 0) ls_image_free(&img);
    free(jpg);
    free(px);
}

static void expect_fail(const char *what, const uint8_t *data, size_t len) {
    ls_image img = {7, 7, (uint8_t *)&img}; /* junk: must be reset */
    ls_err err = {0};
    int rc = ls_image_decode_mem(data, len, &img, &err);
    check(rc == -1 && err.code == LS_FAILED_PRECONDITION && img.rgb == NULL && img.w == 0,
          "%s -> FAILED_PRECONDITION: %s", what, err.msg);
    if (rc == 0) ls_image_free(&img);
}

static void test_corrupt(void) {
    int w = 64, h = 48;
    uint8_t *px = make_photo(w, h, (size_t)w * 3, 0.1);
    ls_buf png = {0};
    ls_err err = {0};
    if (ls_png_encode_rgb(px, w, h, (size_t)w * 3, 1, &png, &err) != 0) {
        check(0, "encode for corruption tests: %s", err.msg);
        free(px);
        return;
    }
    expect_fail("empty input", png.data, 0);
    expect_fail("NULL input", NULL, 10);
    expect_fail("PNG signature only", png.data, 8);
    expect_fail("PNG cut inside IHDR", png.data, 20);
    expect_fail("PNG cut in the middle of IDAT", png.data, png.len / 2);
    expect_fail("PNG missing its last IDAT bytes", png.data, png.len - 40);

    uint8_t *bad = xmalloc(png.len);
    /* Flip a byte inside the IDAT payload: the chunk CRC no longer matches. */
    memcpy(bad, png.data, png.len);
    bad[33 + 8 + 50] ^= 0x55;
    expect_fail("PNG with corrupted IDAT byte", bad, png.len);

    /* Same corruption with the CRC recomputed: now zlib itself must object
     * (or the data is wrong but still decodes; either way no crash). */
    uint32_t idat_len = be32(bad + 33);
    put_be32(bad + 33 + 8 + idat_len, crc32_bitwise(bad + 33 + 4, (size_t)idat_len + 4));
    {
        ls_image img;
        int rc = ls_image_decode_mem(bad, png.len, &img, &err);
        check(rc == 0 || (rc == -1 && err.code == LS_FAILED_PRECONDITION && img.rgb == NULL),
              "PNG with corrupted deflate data, valid CRC: no crash (%s)",
              rc ? err.msg : "decoded");
        if (rc == 0) ls_image_free(&img);
    }

    /* IHDR claiming 100000 x 4 (CRC fixed up so only the size is wrong). */
    memcpy(bad, png.data, png.len);
    put_be32(bad + 16, 100000);
    put_be32(bad + 29, crc32_bitwise(bad + 12, 17));
    expect_fail("PNG claiming width 100000", bad, png.len);

    /* Random garbage behind a valid signature, and with no signature. */
    for (size_t i = 8; i < png.len; i++) bad[i] = (uint8_t)rnd();
    expect_fail("PNG signature + garbage", bad, png.len);
    expect_fail("garbage, no magic", bad + 8, png.len - 8);
    static const uint8_t jpeg_junk[] = {0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0, 1};
    expect_fail("JPEG magic + junk", jpeg_junk, sizeof jpeg_junk);
    static const uint8_t gif[] = "GIF89a\x01\x00\x01\x00";
    expect_fail("GIF (unsupported format)", gif, sizeof gif - 1);

    free(bad);
    ls_buf_free(&png);
    free(px);
}

static int write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t n = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && n == len) ? 0 : -1;
}

static void test_decode_file(void) {
    char dir[] = "/tmp/test_image.XXXXXX";
    if (!mkdtemp(dir)) {
        check(0, "mkdtemp");
        return;
    }
    char good[256], corrupt[256], missing[256];
    snprintf(good, sizeof good, "%s/frame_0001.png", dir);
    snprintf(corrupt, sizeof corrupt, "%s/frame_0003.png", dir);
    snprintf(missing, sizeof missing, "%s/frame_9999.png", dir);

    int w = 40, h = 30;
    uint8_t *px = make_photo(w, h, (size_t)w * 3, 4.0);
    ls_buf png = {0};
    ls_err err = {0};
    int rc = ls_png_encode_rgb(px, w, h, (size_t)w * 3, 2, &png, &err);
    if (rc == 0) rc = write_file(good, png.data, png.len);
    if (rc == 0) rc = write_file(corrupt, png.data, png.len / 2);
    check(rc == 0, "write test frames under %s", dir);

    ls_image img;
    rc = ls_image_decode_file(good, &img, &err);
    check(rc == 0 && img.w == w && img.h == h && memcmp(img.rgb, px, (size_t)w * h * 3) == 0,
          "decode_file reads a PNG pixel-exact");
    if (rc == 0) ls_image_free(&img);

    /* A JPEG saved as .png is still decoded: format comes from magic bytes. */
    size_t jlen = 0;
    uint8_t *jpg = jpeg_encode(px, w, h, TJPF_RGB, TJSAMP_444, 90, &jlen);
    char misnamed[256];
    snprintf(misnamed, sizeof misnamed, "%s/actually_jpeg.png", dir);
    rc = jpg ? write_file(misnamed, jpg, jlen) : -1;
    if (rc == 0) rc = ls_image_decode_file(misnamed, &img, &err);
    check(rc == 0 && img.w == w && img.h == h, "JPEG content in a .png file decodes by magic");
    if (rc == 0) ls_image_free(&img);
    free(jpg);

    rc = ls_image_decode_file(missing, &img, &err);
    check(rc == -1 && err.code == LS_FAILED_PRECONDITION && strstr(err.msg, missing) &&
              img.rgb == NULL,
          "missing file names the path: %s", err.msg);

    rc = ls_image_decode_file(corrupt, &img, &err);
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s: PNG decode failed: ", corrupt);
    check(rc == -1 && err.code == LS_FAILED_PRECONDITION &&
              strncmp(err.msg, prefix, strlen(prefix)) == 0,
          "truncated file: message is \"<path>: PNG decode failed: <cause>\": %s", err.msg);

    rc = ls_image_decode_file(dir, &img, &err);
    check(rc == -1 && err.code == LS_FAILED_PRECONDITION && strstr(err.msg, dir),
          "directory instead of file: %s", err.msg);

    char empty[256];
    snprintf(empty, sizeof empty, "%s/empty.png", dir);
    rc = write_file(empty, "", 0);
    if (rc == 0) rc = ls_image_decode_file(empty, &img, &err);
    check(rc == -1 && err.code == LS_FAILED_PRECONDITION && strstr(err.msg, empty),
          "empty file: %s", err.msg);

    unlink(good);
    unlink(corrupt);
    unlink(misnamed);
    unlink(empty);
    rmdir(dir);
    ls_buf_free(&png);
    free(px);
}

/* ---------------------------------------------------------------- compositor */

/* Reference: the compositor.h formula written per pixel, in double. */
static void ref_axis(int d, int S, int D, int *i0, int *i1, double *f) {
    double src = (d + 0.5) * S / D - 0.5;
    if (src < 0) src = 0;
    if (src > S - 1) src = S - 1;
    *i0 = (int)floor(src);
    *i1 = *i0 + 1 < S ? *i0 + 1 : S - 1;
    *f = src - *i0;
}

static double ref_bilinear(const uint8_t *img, size_t stride, int sw, int sh, int dw, int dh,
                           int dx, int dy, int c) {
    int x0, x1, y0, y1;
    double fx, fy;
    ref_axis(dx, sw, dw, &x0, &x1, &fx);
    ref_axis(dy, sh, dh, &y0, &y1, &fy);
#define PX(x, y) ((double)img[(size_t)(y) * stride + (size_t)(x) * 3 + c])
    return (1 - fy) * ((1 - fx) * PX(x0, y0) + fx * PX(x1, y0)) +
           fy * ((1 - fx) * PX(x0, y1) + fx * PX(x1, y1));
#undef PX
}

static uint8_t ref_round(double v) {
    v = floor(v + 0.5);
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Composite into out (a copy of frame) the slow, obvious way. */
static void ref_composite(uint8_t *out, const uint8_t *frame, int w, int h, ls_rect r,
                          const float *pred, const ls_composite_opts *o) {
    int P = o->pred_size, M = o->margin, C = P + 2 * M;
    int rw = r.x2 - r.x1, rh = r.y2 - r.y1;
    size_t fs = (size_t)w * 3, cs = (size_t)C * 3;
    memcpy(out, frame, fs * (size_t)h);
    const uint8_t *crop = frame + (size_t)r.y1 * fs + (size_t)r.x1 * 3;
    uint8_t *canvas = xmalloc(cs * (size_t)C);
    for (int y = 0; y < C; y++)
        for (int x = 0; x < C; x++)
            for (int c = 0; c < 3; c++) {
                double v;
                if (x >= M && x < M + P && y >= M && y < M + P) {
                    int plane = o->bgr ? 2 - c : c;
                    double p = pred[(size_t)plane * P * P + (size_t)(y - M) * P + (x - M)];
                    p = p < 0 ? 0 : p > 1 ? 1 : p;
                    v = p * 255;
                } else {
                    v = ref_bilinear(crop, fs, rw, rh, C, C, x, y, c);
                }
                canvas[(size_t)y * cs + (size_t)x * 3 + c] = ref_round(v);
            }
    for (int y = 0; y < rh; y++)
        for (int x = 0; x < rw; x++)
            for (int c = 0; c < 3; c++)
                out[(size_t)(r.y1 + y) * fs + (size_t)(r.x1 + x) * 3 + c] =
                    ref_round(ref_bilinear(canvas, cs, C, C, rw, rh, x, y, c));
    free(canvas);
}

/* Bytes outside r identical between a and b? */
static int outside_equal(const uint8_t *a, const uint8_t *b, int w, int h, ls_rect r) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            if (x >= r.x1 && x < r.x2 && y >= r.y1 && y < r.y2) continue;
            size_t o = ((size_t)y * w + x) * 3;
            if (memcmp(a + o, b + o, 3) != 0) return 0;
        }
    return 1;
}

static int max_diff_in(const uint8_t *a, const uint8_t *b, int w, ls_rect r) {
    int m = 0;
    for (int y = r.y1; y < r.y2; y++)
        for (int x = r.x1; x < r.x2; x++)
            for (int c = 0; c < 3; c++) {
                size_t o = ((size_t)y * w + x) * 3 + c;
                int d = abs((int)a[o] - (int)b[o]);
                if (d > m) m = d;
            }
    return m;
}

static float *make_pred(int P, int smooth) {
    float *p = xmalloc(sizeof(float) * 3 * (size_t)P * P);
    for (size_t i = 0; i < 3 * (size_t)P * P; i++) {
        if (smooth) {
            size_t c = i / ((size_t)P * P), y = (i / (size_t)P) % (size_t)P, x = i % (size_t)P;
            p[i] = (float)(0.5 + 0.45 * sin(0.2 * (double)x + (double)c) * cos(0.13 * (double)y));
        } else {
            /* Mostly in range, some outside it to exercise the clamp. */
            p[i] = (float)((double)(rnd() % 1200) / 1000.0 - 0.1);
        }
    }
    return p;
}

static void test_composite_reference(void) {
    struct {
        int w, h;
        ls_rect r;
        int P, M, bgr, smooth;
    } cases[] = {
        {97, 83, {10, 7, 60, 70}, 16, 2, 0, 1},      /* upscale canvas, shrink back */
        {97, 83, {10, 7, 60, 70}, 16, 2, 1, 0},      /* same, BGR, noisy, clamping */
        {64, 64, {0, 0, 64, 64}, 24, 4, 0, 0},       /* rect = whole frame */
        {50, 40, {33, 21, 50, 40}, 32, 5, 1, 1},     /* rect in the corner, C > rect */
        {400, 380, {30, 20, 358, 348}, 320, 4, 1, 1}, /* 328x328 rect: 1:1 scale */
        {700, 600, {100, 50, 612, 570}, 320, 4, 0, 0}, /* larger rect: upscale back */
        {60, 60, {20, 20, 21, 21}, 8, 2, 0, 1},      /* 1x1 rect */
        {60, 60, {5, 9, 6, 50}, 8, 1, 0, 0},         /* 1-pixel-wide rect */
        {80, 70, {3, 4, 70, 66}, 12, 0, 0, 0},       /* margin 0: pure stretch */
        {80, 70, {3, 4, 70, 66}, 12, 9, 1, 0},       /* margin wider than P/2 */
    };
    ls_buf scratch = {0}; /* shared across cases: reuse must be safe */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int w = cases[i].w, h = cases[i].h;
        ls_rect r = cases[i].r;
        ls_composite_opts o = {cases[i].P, cases[i].M, cases[i].bgr, LS_INTERP_LINEAR};
        uint8_t *bg = (i % 2) ? make_noise((size_t)w * h * 3) : make_photo(w, h, (size_t)w * 3, (double)i);
        float *pred = make_pred(o.pred_size, cases[i].smooth);
        uint8_t *got = xmalloc((size_t)w * h * 3), *want = xmalloc((size_t)w * h * 3);
        memcpy(got, bg, (size_t)w * h * 3);
        ls_err err = {0};
        int rc = ls_composite(got, w, h, r, pred, &o, &scratch, &err);
        ref_composite(want, bg, w, h, r, pred, &o);
        int md = max_diff_in(got, want, w, r);
        check(rc == 0 && md <= 1,
              "composite %dx%d rect [%d,%d)x[%d,%d) P=%d margin=%d %s vs double reference: "
              "max |d| %d%s%s",
              w, h, r.x1, r.x2, r.y1, r.y2, o.pred_size, o.margin, o.bgr ? "BGR" : "RGB", md,
              rc ? ": " : "", rc ? err.msg : "");
        check(rc == 0 && outside_equal(got, bg, w, h, r), "  pixels outside rect untouched");
        free(bg);
        free(pred);
        free(got);
        free(want);
    }
    ls_buf_free(&scratch);
}

static void fill_const_pred(float *p, int P, float a, float b, float c) {
    size_t n = (size_t)P * P;
    for (size_t i = 0; i < n; i++) p[i] = a, p[n + i] = b, p[2 * n + i] = c;
}

static int rect_all(const uint8_t *f, int w, ls_rect r, const uint8_t want[3]) {
    for (int y = r.y1; y < r.y2; y++)
        for (int x = r.x1; x < r.x2; x++)
            if (memcmp(f + ((size_t)y * w + x) * 3, want, 3) != 0) return 0;
    return 1;
}

static void test_composite_exact(void) {
    int w = 120, h = 90, P = 32;
    ls_rect r = {17, 11, 101, 80};
    uint8_t *bg = make_photo(w, h, (size_t)w * 3, 5.0);
    uint8_t *f = xmalloc((size_t)w * h * 3);
    float *pred = xmalloc(sizeof(float) * 3 * (size_t)P * P);
    ls_buf scratch = {0};
    ls_err err = {0};

    /* margin 0 + constant prediction: every rect pixel is that constant. */
    ls_composite_opts rgb = {P, 0, 0, LS_INTERP_LINEAR}, bgr = {P, 0, 1, LS_INTERP_LINEAR};
    fill_const_pred(pred, P, 0.2f, 0.5f, 0.9f);
    /* round(0.2f*255) = 51, round(0.5*255 = 127.5) = 128, and 0.9f is just
     * below 0.9, so 0.9f*255 = 229.49999... rounds to 229. */
    uint8_t want_rgb[3] = {51, 128, 229}, want_bgr[3] = {229, 128, 51};
    memcpy(f, bg, (size_t)w * h * 3);
    int rc = ls_composite(f, w, h, r, pred, &rgb, &scratch, &err);
    check(rc == 0 && rect_all(f, w, r, want_rgb) && outside_equal(f, bg, w, h, r),
          "margin 0, constant RGB prediction -> rect exactly (51,128,229), outside untouched");

    memcpy(f, bg, (size_t)w * h * 3);
    rc = ls_composite(f, w, h, r, pred, &bgr, &scratch, &err);
    check(rc == 0 && rect_all(f, w, r, want_bgr),
          "bgr=1: planes read as B,G,R -> rect exactly (229,128,51)");

    /* Out-of-range values clamp, NaN counts as 0. */
    fill_const_pred(pred, P, -3.0f, 7.5f, NAN);
    uint8_t want_clamp[3] = {0, 255, 0};
    memcpy(f, bg, (size_t)w * h * 3);
    rc = ls_composite(f, w, h, r, pred, &rgb, &scratch, &err);
    check(rc == 0 && rect_all(f, w, r, want_clamp),
          "prediction -3 / 7.5 / NaN clamps to 0 / 255 / 0");
    fill_const_pred(pred, P, 1.0f, 0.0f, 1.0000001f);
    uint8_t want_edge[3] = {255, 0, 255};
    memcpy(f, bg, (size_t)w * h * 3);
    rc = ls_composite(f, w, h, r, pred, &rgb, &scratch, &err);
    check(rc == 0 && rect_all(f, w, r, want_edge), "prediction 1.0 / 0.0 / 1.0000001 -> 255/0/255");

    /* Margin > 0 and a constant prediction: the centre of the rect, far from
     * the margin ring, is still exactly the constant. */
    ls_composite_opts m4 = {P, 4, 0, LS_INTERP_LINEAR};
    fill_const_pred(pred, P, 0.2f, 0.5f, 0.9f);
    memcpy(f, bg, (size_t)w * h * 3);
    rc = ls_composite(f, w, h, r, pred, &m4, &scratch, &err);
    int rw = r.x2 - r.x1, rh = r.y2 - r.y1;
    ls_rect inner = {r.x1 + rw / 4, r.y1 + rh / 4, r.x2 - rw / 4, r.y2 - rh / 4};
    check(rc == 0 && rect_all(f, w, inner, want_rgb) && outside_equal(f, bg, w, h, r),
          "margin 4, constant prediction -> rect centre exact, outside untouched");

    ls_buf_free(&scratch);
    free(pred);
    free(f);
    free(bg);
}

/* If the prediction is exactly what the background looks like on the canvas,
 * compositing must give the background back, up to resampling blur. */
static void test_composite_identity(void) {
    int w = 200, h = 160, P = 64, M = 6, C = P + 2 * M;
    ls_rect r = {40, 30, 160, 130};
    int rw = r.x2 - r.x1, rh = r.y2 - r.y1;
    /* Smooth background: resampling it twice loses almost nothing. */
    uint8_t *bg = xmalloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                bg[((size_t)y * w + x) * 3 + c] =
                    (uint8_t)(128 + 100 * sin(x * 0.03 + c) * cos(y * 0.025 - c));
    for (int bgr = 0; bgr <= 1; bgr++) {
        float *pred = xmalloc(sizeof(float) * 3 * (size_t)P * P);
        const uint8_t *crop = bg + ((size_t)r.y1 * w + r.x1) * 3;
        for (int y = 0; y < P; y++)
            for (int x = 0; x < P; x++)
                for (int c = 0; c < 3; c++) {
                    double v = ref_bilinear(crop, (size_t)w * 3, rw, rh, C, C, x + M, y + M, c);
                    int plane = bgr ? 2 - c : c;
                    pred[(size_t)plane * P * P + (size_t)y * P + x] = (float)(v / 255.0);
                }
        uint8_t *f = xmalloc((size_t)w * h * 3);
        memcpy(f, bg, (size_t)w * h * 3);
        ls_buf scratch = {0};
        ls_err err = {0};
        ls_composite_opts o = {P, M, bgr, LS_INTERP_LINEAR};
        int rc = ls_composite(f, w, h, r, pred, &o, &scratch, &err);
        double sum = 0;
        int maxd = 0;
        for (int y = r.y1; y < r.y2; y++)
            for (int x = r.x1; x < r.x2; x++)
                for (int c = 0; c < 3; c++) {
                    size_t off = ((size_t)y * w + x) * 3 + c;
                    int d = abs((int)f[off] - (int)bg[off]);
                    sum += d;
                    if (d > maxd) maxd = d;
                }
        double mean = sum / ((double)rw * rh * 3);
        check(rc == 0 && mean < 1.0 && maxd <= 4,
              "prediction = resampled background (%s) reproduces it: mean |d| %.3f, max %d",
              bgr ? "BGR" : "RGB", mean, maxd);
        ls_buf_free(&scratch);
        free(f);
        free(pred);
    }
    free(bg);
}

static void test_composite_invalid(void) {
    int w = 50, h = 40, P = 8;
    uint8_t *bg = make_photo(w, h, (size_t)w * 3, 6.0);
    uint8_t *f = xmalloc((size_t)w * h * 3);
    memcpy(f, bg, (size_t)w * h * 3);
    float *pred = make_pred(P, 1);
    ls_buf scratch = {0};
    ls_composite_opts ok = {P, 2, 0, LS_INTERP_LINEAR};
    struct {
        ls_rect r;
        ls_composite_opts o;
        const char *what;
    } bad[] = {
        {{-1, 0, 10, 10}, ok, "x1 < 0"},
        {{0, -3, 10, 10}, ok, "y1 < 0"},
        {{40, 0, 51, 10}, ok, "x2 > w"},
        {{0, 30, 10, 41}, ok, "y2 > h"},
        {{10, 10, 10, 20}, ok, "empty width"},
        {{10, 10, 20, 10}, ok, "empty height"},
        {{20, 10, 10, 20}, ok, "x2 < x1"},
        {{60, 50, 70, 60}, ok, "entirely outside"},
        {{0, 0, 10, 10}, {0, 2, 0, LS_INTERP_LINEAR}, "pred_size 0"},
        {{0, 0, 10, 10}, {-320, 2, 0, LS_INTERP_LINEAR}, "pred_size < 0"},
        {{0, 0, 10, 10}, {P, -1, 0, LS_INTERP_LINEAR}, "margin < 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ls_err err = {0};
        int rc = ls_composite(f, w, h, bad[i].r, pred, &bad[i].o, &scratch, &err);
        check(rc == -1 && err.code == LS_INVALID_ARGUMENT &&
                  memcmp(f, bg, (size_t)w * h * 3) == 0,
              "composite rejects %s, frame untouched: %s", bad[i].what, err.msg);
    }
    ls_buf_free(&scratch);
    free(pred);
    free(f);
    free(bg);
}

/* Spliced PNG: rows above and below a band compressed once, the band now.
 * The result must decode (through libpng, which checks every CRC and the
 * joined Adler-32) to exactly the whole image, wherever the band sits. */
static void test_png_spliced(void) {
    const int w = 1280, h = 720;
    size_t stride = (size_t)w * 3;
    uint8_t *img = make_photo(w, h, stride, 0.7);
    struct {
        int y1, y2;
    } bands[] = {{200, 390}, {0, 180}, {540, 720}, {0, 720}, {359, 360}};
    for (size_t i = 0; i < sizeof bands / sizeof bands[0]; i++) {
        for (int level = 0; level <= 3; level += 3) {
            int y1 = bands[i].y1, y2 = bands[i].y2;
            ls_png_segment top, bottom;
            ls_err err = {0};
            int rc = ls_png_segment_build(img, w, y1, stride, level, &top, &err);
            rc |= ls_png_segment_build(img + (size_t)y2 * stride, w, h - y2, stride, level, &bottom, &err);
            ls_buf out = {0};
            if (!rc)
                rc = ls_png_encode_spliced(w, h, &top, img + (size_t)y1 * stride, y2 - y1, stride, &bottom, level,
                                           &out, &err);
            int dw = 0, dh = 0;
            uint8_t *dec = rc ? NULL : libpng_decode(out.data, out.len, &dw, &dh);
            const char *serr = rc ? "encode failed" : png_structure_error(out.data, out.len, w, h);
            check(!rc && dec && dw == w && dh == h && !serr && packed_equal(dec, img, stride, w, h),
                  "spliced PNG rows [%d,%d) level %d decodes pixel-exact (%zu bytes) %s %s", y1, y2, level,
                  out.len, serr ? serr : "", err.msg);
            free(dec);
            ls_buf_free(&out);
            ls_png_segment_free(&top);
            ls_png_segment_free(&bottom);
        }
    }
    /* Row counts that do not add up are refused. */
    ls_png_segment top, bottom;
    ls_err err = {0};
    ls_png_segment_build(img, w, 100, stride, 1, &top, &err);
    ls_png_segment_build(img, w, 100, stride, 1, &bottom, &err);
    ls_buf out = {0};
    int rc = ls_png_encode_spliced(w, h, &top, img, 100, stride, &bottom, 1, &out, &err);
    check(rc == -1 && err.code == LS_INVALID_ARGUMENT && out.len == 0,
          "spliced PNG with 300 of 720 rows refused: %s", err.msg);
    ls_png_segment_free(&top);
    ls_png_segment_free(&bottom);
    free(img);
}

int main(void) {
    test_crc();
    test_huffman();
    test_png_spliced();
    test_png_encode();
    test_png_decode_formats();
    test_jpeg_decode();
    test_corrupt();
    test_decode_file();
    test_composite_reference();
    test_composite_exact();
    test_composite_identity();
    test_composite_invalid();
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
