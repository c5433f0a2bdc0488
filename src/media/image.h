/* image.h - decoding background frames (PNG via libspng, JPEG via
 * libjpeg-turbo) into packed RGB24. Pure functions; no global state. */
#ifndef LS_IMAGE_H
#define LS_IMAGE_H

#include "common.h"

typedef struct {
    int w, h;     /* pixels */
    uint8_t *rgb; /* w*h*3 bytes, rows packed (stride w*3), R,G,B order; owned, free with ls_image_free */
} ls_image;

/* Decode a PNG or JPEG (chosen by magic bytes, not by file name) into RGB24.
 * Gray, palette, alpha and 16-bit inputs are converted (alpha dropped).
 * On failure returns -1 with err = FAILED_PRECONDITION naming the cause. */
int ls_image_decode_mem(const uint8_t *data, size_t len, ls_image *out, ls_err *err);

/* Same, reading a file; error messages name the path. */
int ls_image_decode_file(const char *path, ls_image *out, ls_err *err);

/* Read only the dimensions (PNG: the IHDR at the start of the file; JPEG:
 * the frame header). Cheap enough to check every frame of an avatar at load
 * time without decoding any. */
int ls_image_probe_file(const char *path, int *w, int *h, ls_err *err);

void ls_image_free(ls_image *img);

/* Encode w x h RGB24 (stride w*3) as baseline JPEG, 4:2:0, quality 1..100
 * (libjpeg-turbo), appending to *out. */
int ls_jpeg_encode_rgb(const uint8_t *rgb, int w, int h, int quality, ls_buf *out, ls_err *err);

#endif
