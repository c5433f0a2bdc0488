/* fuzz_pngenc.c - libFuzzer target: the PNG encoder and its Huffman coder.
 *
 * The input picks a size (1..96 x 1..64), a deflate level, the band rows of
 * a spliced encoding and a pixel generator mode; the remaining bytes are the
 * pixels (repeated to fill the image, or run-length expanded so that flat
 * and noisy rows both occur and both coders run). Every PNG the encoder
 * makes, whole-frame and spliced, must decode (libspng) to exactly the
 * pixels that went in. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "pngenc.h"

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_pngenc: invariant broken: %s\n", what);
        abort();
    }
}

static void decodes_to(const ls_buf *png, const uint8_t *px, int w, int h, const char *what) {
    ls_image img;
    ls_err err = {0};
    int rc = ls_image_decode_mem(png->data, png->len, &img, &err);
    if (rc != 0) fprintf(stderr, "fuzz_pngenc: %s: %s\n", what, err.msg);
    check(rc == 0, "encoded PNG decodes");
    check(img.w == w && img.h == h, "decoded size matches");
    check(memcmp(img.rgb, px, (size_t)w * (size_t)h * 3) == 0, "decoded pixels match exactly");
    ls_image_free(&img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 6) return 0;
    int w = 1 + data[0] % 96, h = 1 + data[1] % 64, level = data[2] % 4;
    int y1 = data[3] % (h + 1), y2 = y1 + data[4] % (h - y1 + 1), runs = data[5] & 1;
    data += 6;
    size -= 6;
    size_t n = (size_t)w * (size_t)h * 3;
    uint8_t *px = malloc(n);
    check(px != NULL, "allocation");
    if (size == 0) {
        memset(px, 0, n);
    } else if (!runs) {
        for (size_t i = 0; i < n; i++) px[i] = data[i % size];
    } else {
        /* byte pairs (count, value): long runs of one value */
        size_t i = 0, k = 0;
        while (i < n) {
            size_t count = 1 + (size_t)data[k % size] * 4;
            uint8_t v = data[(k + 1) % size];
            for (size_t j = 0; j < count && i < n; j++) px[i++] = v;
            k += 2;
        }
    }
    ls_err err = {0};
    ls_buf png = {0};
    check(ls_png_encode_rgb(px, w, h, (size_t)w * 3, level, &png, &err) == 0, "whole-frame encode succeeds");
    decodes_to(&png, px, w, h, "whole");
    ls_buf_free(&png);

    if (y2 > y1) {
        ls_png_segment top, bottom;
        size_t stride = (size_t)w * 3;
        check(ls_png_segment_build(px, w, y1, stride, level, &top, &err) == 0, "top segment builds");
        check(ls_png_segment_build(px + stride * (size_t)y2, w, h - y2, stride, level, &bottom, &err) == 0,
              "bottom segment builds");
        check(ls_png_encode_spliced(w, h, &top, px + stride * (size_t)y1, y2 - y1, stride, &bottom, level, &png,
                                    &err) == 0,
              "spliced encode succeeds");
        decodes_to(&png, px, w, h, "spliced");
        ls_buf_free(&png);
        ls_png_segment_free(&top);
        ls_png_segment_free(&bottom);
    }
    free(px);
    return 0;
}
