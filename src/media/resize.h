/* resize.h - 8-bit RGB24 resize with OpenCV's kernels and arithmetic.
 *
 * The reference pipeline resizes the face crop with cv2.resize(INTER_CUBIC)
 * on 8-bit images, both when it builds the model's visual input and when it
 * pastes the prediction back. A lip-sync model was trained on exactly those
 * pixels, so this resize reproduces OpenCV's, not just "a bicubic": no
 * Debian library does (libyuv and pixman scale with box/bilinear filters and
 * other rounding), and the loop is small and hot, so it is written here.
 *
 * Geometry (both kernels): destination index d of a resize from S to D
 * samples reads around fx = (float)((d + 0.5) * (S / D) - 0.5), sx =
 * floor(fx), t = fx - sx, in float as OpenCV computes it. Borders replicate
 * (indices clamped to [0, S-1]).
 *   cubic:  taps sx-1..sx+2, weights of Keys' kernel with a = -0.75:
 *           w0 = ((a(t+1) - 5a)(t+1) + 8a)(t+1) - 4a, w1 = ((a+2)t - (a+3))t^2 + 1,
 *           w2 = ((a+2)(1-t) - (a+3))(1-t)^2 + 1, w3 = 1 - w0 - w1 - w2.
 *   linear: taps sx, sx+1, weights 1-t, t.
 * Arithmetic (OpenCV's fixed point for 8-bit): each weight is rounded to
 * 11 bits (round half to even, no renormalisation, so cubic weights may sum
 * to 2047..2049), a horizontal pass keeps exact int32 sums, and the vertical
 * pass rounds (sum + 2^21) >> 22 and saturates to 0..255. This is OpenCV's
 * scalar path; its SIMD path rounds the vertical sum in float and can differ
 * by one level at exact halves. */
#ifndef LS_RESIZE_H
#define LS_RESIZE_H

#include "common.h"

/* Largest side accepted (far beyond a face crop; keeps sizes from
 * overflowing). */
#define LS_RESIZE_MAX_SIDE 16384

/* Resize src (sw x sh RGB24, row stride sstride bytes) to a dw x dh image at
 * dst (row stride dstride), writing only the destination pixels inside
 * `region` (end-exclusive, in destination coordinates; NULL = all), so a
 * caller can fill part of a canvas. scratch: working memory, grown as needed
 * and reusable across calls (owner frees). Errors: INVALID_ARGUMENT for sizes
 * outside 1..LS_RESIZE_MAX_SIDE or a region outside the destination,
 * RESOURCE_EXHAUSTED when scratch cannot grow. An empty region is a no-op. */
int ls_resize_rgb8(const uint8_t *src, int sw, int sh, size_t sstride, uint8_t *dst, int dw, int dh,
                   size_t dstride, ls_interp interp, const ls_rect *region, ls_buf *scratch, ls_err *err);

#endif
