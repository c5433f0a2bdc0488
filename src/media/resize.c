/* resize.c - OpenCV-compatible 8-bit RGB24 resize (see resize.h for the
 * kernels and the fixed-point arithmetic this reproduces).
 *
 * Two passes, as OpenCV does them: every source row that some destination
 * row reads is resampled horizontally once into an int32 row (exact sums of
 * byte x 11-bit weight), kept in a ring of 4 rows (any destination row reads
 * at most 4 consecutive source rows, so row r lives in slot r & 3); each
 * destination row is then the weighted sum of its ring rows, rounded and
 * saturated. Only the destination region's columns and rows are computed.
 *
 * Range: a horizontal sum is at most 255 * 2048 * 1.1875 (the cubic weights'
 * largest positive sum), the vertical one that times 2048 * 1.1875 ~ 1.5e9:
 * int32 holds both. */
#include "resize.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#define COEF_BITS 11
#define COEF_ONE (1 << COEF_BITS)
#define SHIFT (2 * COEF_BITS)

/* One axis of a resize: for each destination index of the region, `taps`
 * clamped source indices and their fixed-point weights. */
typedef struct {
    int32_t *idx; /* n * taps */
    int32_t *w;   /* n * taps */
    int taps;
} axis_tab;

/* Keys' cubic with a = -0.75, in float, term for term as OpenCV's
 * interpolateCubic (the rounding of these floats decides the weights). */
static void cubic_weights(float x, float *c) {
    const float A = -0.75f;
    c[0] = ((A * (x + 1) - 5 * A) * (x + 1) + 8 * A) * (x + 1) - 4 * A;
    c[1] = ((A + 2) * x - (A + 3)) * x * x + 1;
    c[2] = ((A + 2) * (1 - x) - (A + 3)) * (1 - x) * (1 - x) + 1;
    c[3] = 1.f - c[0] - c[1] - c[2];
}

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Weight -> 11-bit fixed point: cvRound (half to even), saturated to int16. */
static inline int32_t fixw(float c) {
    long v = lrintf(c * (float)COEF_ONE);
    return (int32_t)(v < -32768 ? -32768 : v > 32767 ? 32767 : v);
}

/* Fill tab for destination indices [d0, d1) of a resize from S to D. */
static void axis_init(axis_tab *tab, int S, int D, int d0, int d1, ls_interp interp) {
    /* OpenCV derives the step as 1 / (D / S), which can differ from S / D in
     * the last bit; the float rounding of fx then follows it. */
    double inv = (double)D / (double)S, scale = 1.0 / inv;
    for (int d = d0; d < d1; d++) {
        float fx = (float)(((double)d + 0.5) * scale - 0.5);
        int sx = (int)floorf(fx);
        fx -= (float)sx;
        int32_t *ix = tab->idx + (size_t)(d - d0) * tab->taps, *w = tab->w + (size_t)(d - d0) * tab->taps;
        if (interp == LS_INTERP_CUBIC) {
            float c[4];
            cubic_weights(fx, c);
            for (int k = 0; k < 4; k++) {
                ix[k] = clampi(sx - 1 + k, 0, S - 1);
                w[k] = fixw(c[k]);
            }
        } else {
            if (sx < 0) fx = 0, sx = 0;
            if (sx >= S - 1) fx = 0, sx = S - 1;
            ix[0] = sx;
            ix[1] = clampi(sx + 1, 0, S - 1);
            w[0] = fixw(1.f - fx);
            w[1] = fixw(fx);
        }
    }
}

/* Horizontal pass of source row `row` (RGB24) over the region's columns. */
static void hpass(const uint8_t *row, const axis_tab *ax, int nx, int32_t *out) {
    int taps = ax->taps;
    for (int x = 0; x < nx; x++) {
        const int32_t *ix = ax->idx + (size_t)x * taps, *w = ax->w + (size_t)x * taps;
        int32_t s0 = 0, s1 = 0, s2 = 0;
        for (int k = 0; k < taps; k++) {
            const uint8_t *p = row + (size_t)ix[k] * 3;
            s0 += p[0] * w[k];
            s1 += p[1] * w[k];
            s2 += p[2] * w[k];
        }
        out[3 * x] = s0;
        out[3 * x + 1] = s1;
        out[3 * x + 2] = s2;
    }
}

static inline uint8_t cast_u8(int32_t sum) {
    int32_t v = sum + (1 << (SHIFT - 1));
    if (v <= 0) return 0;
    v >>= SHIFT;
    return (uint8_t)(v > 255 ? 255 : v);
}

int ls_resize_rgb8(const uint8_t *src, int sw, int sh, size_t sstride, uint8_t *dst, int dw, int dh,
                   size_t dstride, ls_interp interp, const ls_rect *region, ls_buf *scratch, ls_err *err) {
    if (!src || !dst || !scratch) return ls_err_set(err, LS_INVALID_ARGUMENT, "resize: NULL argument");
    if (sw < 1 || sh < 1 || dw < 1 || dh < 1 || sw > LS_RESIZE_MAX_SIDE || sh > LS_RESIZE_MAX_SIDE ||
        dw > LS_RESIZE_MAX_SIDE || dh > LS_RESIZE_MAX_SIDE)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "resize: sizes %dx%d -> %dx%d outside 1..%d", sw, sh, dw, dh,
                          LS_RESIZE_MAX_SIDE);
    if (interp != LS_INTERP_CUBIC && interp != LS_INTERP_LINEAR)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "resize: unknown interpolation %d", (int)interp);
    ls_rect r = region ? *region : (ls_rect){0, 0, dw, dh};
    if (r.x1 < 0 || r.y1 < 0 || r.x2 > dw || r.y2 > dh)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "resize: region [%d,%d)x[%d,%d) outside %dx%d", r.x1, r.x2, r.y1,
                          r.y2, dw, dh);
    if (r.x1 >= r.x2 || r.y1 >= r.y2) return 0;
    int nx = r.x2 - r.x1, ny = r.y2 - r.y1;
    int taps = interp == LS_INTERP_CUBIC ? 4 : 2;

    /* Scratch: x and y tables (index + weight), then the 4 ring rows. */
    size_t tab_ints = 2 * (size_t)taps * ((size_t)nx + (size_t)ny);
    size_t ring_ints = 4 * (size_t)nx * 3;
    scratch->len = 0;
    if (ls_buf_reserve(scratch, (tab_ints + ring_ints) * sizeof(int32_t)) != 0)
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "resize: out of memory");
    int32_t *t = (int32_t *)(void *)scratch->data;
    axis_tab ax = {t, t + (size_t)nx * taps, taps};
    t += 2 * (size_t)nx * taps;
    axis_tab ay = {t, t + (size_t)ny * taps, taps};
    t += 2 * (size_t)ny * taps;
    int32_t *ring[4];
    for (int k = 0; k < 4; k++) ring[k] = t + (size_t)k * nx * 3;
    int ring_row[4] = {-1, -1, -1, -1};

    axis_init(&ax, sw, dw, r.x1, r.x2, interp);
    axis_init(&ay, sh, dh, r.y1, r.y2, interp);

    const int32_t *rows[4];
    for (int y = 0; y < ny; y++) {
        const int32_t *iy = ay.idx + (size_t)y * taps, *wy = ay.w + (size_t)y * taps;
        for (int k = 0; k < taps; k++) {
            int sr = iy[k], slot = sr & 3;
            if (ring_row[slot] != sr) {
                hpass(src + (size_t)sr * sstride, &ax, nx, ring[slot]);
                ring_row[slot] = sr;
            }
            rows[k] = ring[slot];
        }
        uint8_t *out = dst + (size_t)(r.y1 + y) * dstride + (size_t)r.x1 * 3;
        int n = nx * 3;
        if (taps == 4) {
            const int32_t *a = rows[0], *b = rows[1], *c = rows[2], *d = rows[3];
            int32_t w0 = wy[0], w1 = wy[1], w2 = wy[2], w3 = wy[3];
            for (int i = 0; i < n; i++) out[i] = cast_u8(a[i] * w0 + b[i] * w1 + c[i] * w2 + d[i] * w3);
        } else {
            const int32_t *a = rows[0], *b = rows[1];
            int32_t w0 = wy[0], w1 = wy[1];
            for (int i = 0; i < n; i++) out[i] = cast_u8(a[i] * w0 + b[i] * w1);
        }
    }
    assert(ring_row[0] < sh && ring_row[1] < sh && ring_row[2] < sh && ring_row[3] < sh);
    return 0;
}
