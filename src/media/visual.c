/* visual.c - the server-built visual input (see visual.h for the recipe). */
#include "visual.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "resize.h"

#define MASK_REF_SIDE 320

static int scale_round(int v, int S) {
    /* v * S / 320, rounded half up, in integers (v, S >= 0). */
    return (int)(((int64_t)v * S * 2 + MASK_REF_SIDE) / (2 * MASK_REF_SIDE));
}

static int clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

ls_rect ls_visual_mask_for(const int xywh[4], int S) {
    int x = scale_round(xywh[0], S), y = scale_round(xywh[1], S);
    int w = scale_round(xywh[2], S), h = scale_round(xywh[3], S);
    ls_rect r = {clamp(x, 0, S), clamp(y, 0, S), clamp(x + w, 0, S), clamp(y + h, 0, S)};
    return r;
}

size_t ls_visual_u8_bytes(const ls_visual_opts *o) { return 6 * (size_t)o->size * (size_t)o->size; }

int ls_visual_build_u8(const uint8_t *rows, size_t stride, ls_rect rect, const ls_visual_opts *o, uint8_t *out,
                       ls_buf *scratch, ls_err *err) {
    int S = o->size, m = o->margin, C = S + 2 * m;
    int rw = rect.x2 - rect.x1, rh = rect.y2 - rect.y1;
    if (S < 1 || m < 0 || C > LS_RESIZE_MAX_SIDE)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "visual input: bad size %d / margin %d", S, m);
    if (rw < 1 || rh < 1 || rect.x1 < 0 || rect.y1 < 0)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "visual input: empty crop rectangle [%d,%d)x[%d,%d)", rect.x1,
                          rect.x2, rect.y1, rect.y2);
    /* The caller's scratch holds the C x C canvas; the resize's tables and
     * row ring (~36 KB for C = 328) are a buffer of this call's own. */
    size_t canvas_bytes = (size_t)C * C * 3;
    scratch->len = 0;
    if (ls_buf_reserve(scratch, canvas_bytes) != 0)
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "visual input: out of memory");
    uint8_t *canvas = scratch->data;
    ls_buf work = {0};
    int rc = ls_resize_rgb8(rows + (size_t)rect.y1 * stride + (size_t)rect.x1 * 3, rw, rh, stride, canvas, C, C,
                            (size_t)C * 3, o->interp, NULL, &work, err);
    free(work.data);
    if (rc) return rc;

    /* Planes in model order: channel k of the plane set reads RGB byte
     * src_ch[k]. */
    static const int bgr_ch[3] = {2, 1, 0}, rgb_ch[3] = {0, 1, 2};
    const int *ch = o->bgr ? bgr_ch : rgb_ch;
    size_t plane = (size_t)S * S;
    for (int k = 0; k < 3; k++) {
        uint8_t *real = out + (size_t)k * plane, *masked = out + (size_t)(k + 3) * plane;
        for (int y = 0; y < S; y++) {
            const uint8_t *src = canvas + (size_t)(y + m) * C * 3 + (size_t)m * 3 + ch[k];
            uint8_t *dr = real + (size_t)y * S;
            for (int x = 0; x < S; x++) dr[x] = src[(size_t)x * 3];
            memcpy(masked + (size_t)y * S, dr, (size_t)S);
            if (y >= o->mask.y1 && y < o->mask.y2 && o->mask.x1 < o->mask.x2)
                memset(masked + (size_t)y * S + o->mask.x1, 0, (size_t)(o->mask.x2 - o->mask.x1));
        }
    }
    return 0;
}

/* The 256 possible quotients, each the correctly rounded float32 division:
 * a lookup is exact and faster than dividing. */
static float lut[256];
static pthread_once_t lut_once = PTHREAD_ONCE_INIT;

static void lut_init(void) {
    for (int v = 0; v < 256; v++) lut[v] = (float)v / 255.0f;
}

void ls_visual_to_float(const uint8_t *u8, size_t n, float *out) {
    pthread_once(&lut_once, lut_init);
    for (size_t i = 0; i < n; i++) out[i] = lut[u8[i]];
}
