/* compositor.h - paste a predicted face crop back into its background frame.
 *
 * Pure function on pixel buffers. Placement follows the SyncTalk_2D reference:
 * the crop rectangle R (w = x2-x1, h = y2-y1) is seen as a C x C canvas,
 * C = P + 2*margin where P is the prediction's side (320). The canvas is
 *   - the background crop R resized to C x C (bilinear), then
 *   - the prediction written over the canvas centre at offset (margin, margin);
 * the canvas is then resized back to w x h (bilinear) and written into R.
 * margin = 0 stretches the prediction over the whole rectangle.
 *
 * Both resizes use opts.interp: cubic (the reference's cv2.resize
 * INTER_CUBIC, in resize.h's OpenCV fixed point) or linear, below.
 *
 * Bilinear = OpenCV INTER_LINEAR convention: for destination index d of a
 * resize from S to D samples, src = (d + 0.5) * S / D - 0.5, clamped to
 * [0, S-1]; the two neighbours floor(src) and min(floor(src)+1, S-1) are
 * mixed by the fraction. Results round to nearest and saturate to 0..255.
 *
 * Prediction values: planar CHW float, channel c at pred + c*P*P; clamped to
 * [0,1], times 255, rounded. With bgr = 1 the planes are B,G,R (models trained
 * on OpenCV images), else R,G,B.
 *
 * Pixels outside R are never written: they stay the background's bit for bit. */
#ifndef LS_COMPOSITOR_H
#define LS_COMPOSITOR_H

#include "common.h"

typedef struct {
    int pred_size;   /* P: prediction side in pixels (320) */
    int margin;      /* canvas margin (4 of 328 by default; 0 = stretch) */
    int bgr;         /* 1: prediction planes are B,G,R; 0: R,G,B */
    ls_interp interp; /* both canvas resizes: cubic (reference) or linear */
} ls_composite_opts;

/* Composite into `frame` (w x h RGB24, stride w*3), which the caller has
 * already filled with the background (the compositor reads the rectangle's
 * background pixels from it before overwriting them). `rect` must lie inside
 * the frame and be non-empty; returns -1 with INVALID_ARGUMENT otherwise.
 * Allocation-free except for a small per-call canvas (C*C*3 bytes), which is
 * taken from `scratch` (grown as needed, reusable across calls; owner frees);
 * the cubic path also takes the resize's working memory (~40 KB) per call. */
int ls_composite(uint8_t *frame, int w, int h, ls_rect rect, const float *pred,
                 const ls_composite_opts *opt, ls_buf *scratch, ls_err *err);

#endif
