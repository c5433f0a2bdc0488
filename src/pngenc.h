/* pngenc.h - fast lossless PNG encoder for RGB24 frames (deflate via ISA-L).
 *
 * Speed matters more than size here: a composited 1280x720 frame must be
 * encoded in a few milliseconds. The encoder uses ISA-L's fastest levels and
 * a fixed per-row filter rather than libpng's adaptive filtering. Output is
 * a standard PNG (IHDR 8-bit RGB, IDAT, IEND) that any decoder accepts. */
#ifndef LS_PNGENC_H
#define LS_PNGENC_H

#include "common.h"

/* Encode w x h RGB24 pixels (row stride `stride` bytes, >= w*3) as PNG,
 * appending to *out (out->len grows; existing content kept).
 * level: ISA-L compression level 0..3 (1 is the default trade-off).
 * Returns 0, or -1 with err set (INTERNAL / RESOURCE_EXHAUSTED on OOM). */
int ls_png_encode_rgb(const uint8_t *rgb, int w, int h, size_t stride, int level, ls_buf *out,
                      ls_err *err);

#endif
