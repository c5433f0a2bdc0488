/* fuzz_image.c - libFuzzer target: the background frame decoder.
 *
 * Any bytes go to ls_image_decode_mem (PNG via libspng, JPEG via
 * libjpeg-turbo, chosen by magic bytes). On success the image must be inside
 * the decoder's size limit and its whole RGB buffer readable (touched here so
 * ASan sees any short allocation); on failure the error is
 * FAILED_PRECONDITION with a message and no buffer. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "image.h"

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_image: invariant broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ls_image img;
    ls_err err = {.code = LS_OK, .msg = ""};
    if (ls_image_decode_mem(data, size, &img, &err) != 0) {
        check(err.code == LS_FAILED_PRECONDITION, "FAILED_PRECONDITION on failure");
        check(err.msg[0] != 0, "a message on failure");
        check(img.rgb == NULL, "no pixels on failure");
        return 0;
    }
    check(img.w > 0 && img.h > 0 && img.w <= 16384 && img.h <= 16384, "dimensions in 1..16384");
    check(img.rgb != NULL, "pixels on success");
    /* Read the first and last byte of every row. */
    size_t stride = (size_t)img.w * 3;
    volatile unsigned sum = 0;
    for (int y = 0; y < img.h; y++) sum += img.rgb[(size_t)y * stride] + img.rgb[(size_t)y * stride + stride - 1];
    (void)sum;
    ls_image_free(&img);
    return 0;
}
