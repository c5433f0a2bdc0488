/* compositor.c - paste a predicted face crop back into its frame (see
 * compositor.h for the geometry and the resampling convention).
 *
 * Arithmetic, in two parts:
 *
 *  - The canvas ring (background crop -> C x C, only the `margin`-wide ring
 *    the prediction does not cover; a few thousand pixels) is computed in
 *    double, so each canvas byte is the formula's value correctly rounded
 *    (to double precision). This matters because a canvas byte off by one
 *    could, after the second resize's own rounding, put a final pixel two
 *    away from the formula.
 *
 *  - The canvas -> rectangle resize (every pixel of the rectangle, the hot
 *    loop) uses fixed point, as OpenCV's INTER_LINEAR does for 8-bit images:
 *    each axis weight is quantised to 11 bits (w0 + w1 = 2048) and a pixel is
 *        ((a*wx0 + b*wx1) * wy0 + (c*wx0 + d*wx1) * wy1 + 2^21) >> 22
 *    computed exactly in 32-bit integers (max 255 * 2^22 < 2^31). The only
 *    deviation from the real-valued formula is the weight quantisation, at
 *    most 255 * 2 * 2^-12 ~= 0.125 before rounding, so every output pixel
 *    equals the formula rounded to nearest or differs from it by 1.
 *
 * Prediction bytes are exact: a float times 255 is exact in double. */
#include "compositor.h"

#include <stdlib.h>
#include <string.h>

#include "resize.h"

#define WBITS 11
#define WONE (1 << WBITS)
#define ROUND_SHIFT (2 * WBITS)

/* Sides beyond this are not a face crop; bounding them keeps every size
 * computation far from overflow. */
#define MAX_SIDE 16384

/* Resampling table for one axis: destination index d reads source samples
 * i0[d] and i1[d] (already clamped) mixed by frac[d] (exact, for the ring)
 * or by the fixed-point weights WONE - w1[d] and w1[d] (for the hot loop). */
typedef struct {
    int32_t *i0, *i1, *w1;
    double *frac;
} axis;

/* Fill an axis table for a resize from S to D samples (both >= 1). */
static void axis_init(axis *a, int S, int D) {
    double scale = (double)S / (double)D;
    for (int d = 0; d < D; d++) {
        double src = ((double)d + 0.5) * scale - 0.5;
        if (src < 0) src = 0;
        int i = (int)src; /* src >= 0, so truncation is floor */
        double frac = src - (double)i;
        if (i >= S - 1) {
            /* Clamped to the last sample: both neighbours are S-1. */
            i = S - 1;
            frac = 0;
        }
        a->i0[d] = i;
        a->i1[d] = i + 1 < S ? i + 1 : S - 1;
        if (a->frac) a->frac[d] = frac;
        if (a->w1) a->w1[d] = (int32_t)(frac * WONE + 0.5);
    }
}

/* One bilinear output pixel (3 channels) from source rows r0/r1 (packed
 * RGB24) at destination column x, in double: the two samples of each row
 * are mixed by fx, the two rows by fy, and the result rounded half up. */
static inline void lerp_px_exact(uint8_t *dst, const uint8_t *r0, const uint8_t *r1,
                                 const axis *ax, int x, double fy) {
    const uint8_t *a = r0 + (size_t)ax->i0[x] * 3, *b = r0 + (size_t)ax->i1[x] * 3;
    const uint8_t *c = r1 + (size_t)ax->i0[x] * 3, *d = r1 + (size_t)ax->i1[x] * 3;
    double fx = ax->frac[x];
    for (int k = 0; k < 3; k++) {
        double top = a[k] + (b[k] - a[k]) * fx;
        double bot = c[k] + (d[k] - c[k]) * fx;
        dst[k] = (uint8_t)(top + (bot - top) * fy + 0.5);
    }
}

/* The same in fixed point (see the top of the file). */
static inline void lerp_px(uint8_t *dst, const uint8_t *r0, const uint8_t *r1, const axis *ax,
                           int x, int32_t wy0, int32_t wy1) {
    const uint8_t *a = r0 + (size_t)ax->i0[x] * 3, *b = r0 + (size_t)ax->i1[x] * 3;
    const uint8_t *c = r1 + (size_t)ax->i0[x] * 3, *d = r1 + (size_t)ax->i1[x] * 3;
    int32_t wx1 = ax->w1[x], wx0 = WONE - wx1;
    for (int k = 0; k < 3; k++) {
        int32_t top = a[k] * wx0 + b[k] * wx1;
        int32_t bot = c[k] * wx0 + d[k] * wx1;
        /* Weights are non-negative and sum to WONE per axis, so the result
         * is already within 0..255: no saturation needed. */
        dst[k] = (uint8_t)((top * wy0 + bot * wy1 + (1 << (ROUND_SHIFT - 1))) >> ROUND_SHIFT);
    }
}

/* Prediction value -> byte: clamp to [0,1] (NaN counts as 0), scale, round. */
static inline uint8_t pred_byte(float v) {
    if (!(v > 0.0f)) return 0;
    if (v >= 1.0f) return 255;
    /* In double the product is exact, so x.5 cases round up reliably; in
     * float, 0.9f * 255 would round to 229.5 and then to 230, not 229. */
    return (uint8_t)((double)v * 255.0 + 0.5);
}

/* Prediction planes -> canvas centre (P x P at offset M), RGB interleaved. */
static void pred_to_canvas(uint8_t *canvas, int C, int M, int P, const float *pred, int bgr) {
    size_t plane = (size_t)P * P, cstride = (size_t)C * 3;
    const float *pr = pred + (bgr ? 2 * plane : 0);
    const float *pg = pred + plane;
    const float *pb = pred + (bgr ? 0 : 2 * plane);
    for (int y = 0; y < P; y++) {
        uint8_t *dst = canvas + (size_t)(y + M) * cstride + (size_t)M * 3;
        size_t o = (size_t)y * P;
        for (int x = 0; x < P; x++, o++) {
            dst[0] = pred_byte(pr[o]);
            dst[1] = pred_byte(pg[o]);
            dst[2] = pred_byte(pb[o]);
            dst += 3;
        }
    }
}

/* The reference's paste, both resizes OpenCV INTER_CUBIC (resize.h): the
 * canvas ring (top and bottom margin rows, then the side margins of the rows
 * between) from the background crop, the prediction in the centre, the whole
 * canvas back into the rectangle. */
static int composite_cubic(uint8_t *frame, int w, ls_rect rect, const float *pred, const ls_composite_opts *opt,
                           ls_buf *scratch, ls_err *err) {
    int P = opt->pred_size, M = opt->margin, C = P + 2 * M;
    int rw = rect.x2 - rect.x1, rh = rect.y2 - rect.y1;
    size_t fstride = (size_t)w * 3, cstride = (size_t)C * 3;
    scratch->len = 0;
    if (ls_buf_reserve(scratch, (size_t)C * cstride) != 0)
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "composite: out of memory (%zu bytes)", (size_t)C * cstride);
    uint8_t *canvas = scratch->data;
    uint8_t *crop = frame + (size_t)rect.y1 * fstride + (size_t)rect.x1 * 3;
    ls_buf work = {0};
    int rc = 0;
    if (M > 0) {
        const ls_rect ring[4] = {{0, 0, C, M}, {0, M + P, C, C}, {0, M, M, M + P}, {M + P, M, C, M + P}};
        for (int k = 0; k < 4 && !rc; k++)
            rc = ls_resize_rgb8(crop, rw, rh, fstride, canvas, C, C, cstride, LS_INTERP_CUBIC, &ring[k], &work, err);
    }
    if (!rc) {
        pred_to_canvas(canvas, C, M, P, pred, opt->bgr);
        rc = ls_resize_rgb8(canvas, C, C, cstride, crop, rw, rh, fstride, LS_INTERP_CUBIC, NULL, &work, err);
    }
    free(work.data);
    return rc;
}

int ls_composite(uint8_t *frame, int w, int h, ls_rect rect, const float *pred,
                 const ls_composite_opts *opt, ls_buf *scratch, ls_err *err) {
    if (!frame || !pred || !opt || !scratch)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "composite: NULL argument");
    if (w <= 0 || h <= 0)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "composite: bad frame size %dx%d", w, h);
    if (rect.x1 < 0 || rect.y1 < 0 || rect.x2 > w || rect.y2 > h || rect.x1 >= rect.x2 ||
        rect.y1 >= rect.y2)
        return ls_err_set(err, LS_INVALID_ARGUMENT,
                          "composite: rect [%d,%d)x[%d,%d) empty or outside %dx%d frame",
                          rect.x1, rect.x2, rect.y1, rect.y2, w, h);
    int P = opt->pred_size, M = opt->margin;
    if (P <= 0 || P > MAX_SIDE || M < 0 || M > MAX_SIDE)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "composite: bad pred_size %d / margin %d", P,
                          M);
    int C = P + 2 * M;
    int rw = rect.x2 - rect.x1, rh = rect.y2 - rect.y1;
    if (rw > MAX_SIDE || rh > MAX_SIDE)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "composite: rect %dx%d too large", rw, rh);

    if (opt->interp == LS_INTERP_CUBIC) return composite_cubic(frame, w, rect, pred, opt, scratch, err);

    /* Scratch layout: the canvas (C*C*3 bytes, padded to 8), the ring's
     * fractions (double, C for x then C for y), then the int32 index tables
     * (i0, i1 per ring axis; i0, i1, w1 per rectangle axis). */
    size_t canvas_bytes = ((size_t)C * C * 3 + 7) & ~(size_t)7;
    size_t frac_bytes = 2 * (size_t)C * sizeof(double);
    size_t int_bytes = (4 * (size_t)C + 3 * ((size_t)rw + (size_t)rh)) * sizeof(int32_t);
    size_t need = canvas_bytes + frac_bytes + int_bytes;
    /* The scratch holds nothing between calls: reuse it from offset 0. */
    scratch->len = 0;
    if (ls_buf_reserve(scratch, need) != 0)
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "composite: out of memory (%zu bytes)",
                          need);
    uint8_t *canvas = scratch->data;
    double *f = (double *)(void *)(scratch->data + canvas_bytes);
    int32_t *t = (int32_t *)(void *)(scratch->data + canvas_bytes + frac_bytes);
    axis up_x = {t, t + C, NULL, f};
    axis up_y = {t + 2 * C, t + 3 * C, NULL, f + C};
    t += 4 * C;
    axis down_x = {t, t + rw, t + 2 * rw, NULL};
    t += 3 * rw;
    axis down_y = {t, t + rh, t + 2 * rh, NULL};

    size_t fstride = (size_t)w * 3, cstride = (size_t)C * 3;
    const uint8_t *bg = frame + (size_t)rect.y1 * fstride + (size_t)rect.x1 * 3;

    /* 1. Background crop -> canvas, only where the prediction will not land:
     * full rows in the top and bottom margins, the side margins elsewhere. */
    if (M > 0) {
        axis_init(&up_x, rw, C);
        axis_init(&up_y, rh, C);
        for (int y = 0; y < C; y++) {
            const uint8_t *r0 = bg + (size_t)up_y.i0[y] * fstride;
            const uint8_t *r1 = bg + (size_t)up_y.i1[y] * fstride;
            double fy = up_y.frac[y];
            uint8_t *dst = canvas + (size_t)y * cstride;
            int full = y < M || y >= M + P;
            for (int x = 0; x < C; x++) {
                if (!full && x == M) x = M + P; /* skip the prediction's span */
                lerp_px_exact(dst + (size_t)x * 3, r0, r1, &up_x, x, fy);
            }
        }
    }

    /* 2. Prediction (planar CHW float) -> canvas centre, interleaving to RGB. */
    pred_to_canvas(canvas, C, M, P, pred, opt->bgr);

    /* 3. Canvas -> rectangle. Only the rectangle is written. */
    axis_init(&down_x, C, rw);
    axis_init(&down_y, C, rh);
    uint8_t *dst_rect = frame + (size_t)rect.y1 * fstride + (size_t)rect.x1 * 3;
    for (int y = 0; y < rh; y++) {
        const uint8_t *r0 = canvas + (size_t)down_y.i0[y] * cstride;
        const uint8_t *r1 = canvas + (size_t)down_y.i1[y] * cstride;
        int32_t wy1 = down_y.w1[y], wy0 = WONE - wy1;
        uint8_t *dst = dst_rect + (size_t)y * fstride;
        for (int x = 0; x < rw; x++) lerp_px(dst + (size_t)x * 3, r0, r1, &down_x, x, wy0, wy1);
    }
    return 0;
}
