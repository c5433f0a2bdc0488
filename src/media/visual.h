/* visual.h - the model's visual input, built from the avatar's own frame.
 *
 * A lip-sync model of the SyncTalk_2D family reads, per output frame, six
 * planes of S x S (S = the model's input side, 320): three of the face crop
 * and three of the same crop with the mouth half blacked out. Both are a pure
 * function of (avatar frame, crop rectangle), so the server builds them and a
 * client sends only audio. The recipe, exactly as the reference does it:
 *   1. take the crop rectangle [x1,x2) x [y1,y2) of the frame;
 *   2. resize it to (S + 2m) x (S + 2m), m = margin (4), with the chosen
 *      8-bit kernel (resize.h: OpenCV INTER_CUBIC by default);
 *   3. the centre S x S at offset (m, m) is the real crop;
 *   4. the masked copy is the real crop with the mask rectangle set to 0
 *      (cv2.rectangle(img, (x, y, w, h), 0, -1): x..x+w-1, y..y+h-1);
 *   5. planes: real crop's three channels, then the masked copy's, in the
 *      model's channel order (B,G,R for OpenCV-trained models), each byte v
 *      handed to the model as v / 255.0f.
 * The mask is configured for S = 320 (reference: x 5, y 5, w 310, h 305); for
 * another S each of x, y, w, h is scaled by S / 320 and rounded to nearest
 * (half up), then clipped to the S x S image.
 *
 * The 8-bit planes (6 S^2 bytes, 614 400 for S = 320) are what a cache
 * keeps; ls_visual_to_float turns them into the model's float32 input. */
#ifndef LS_VISUAL_H
#define LS_VISUAL_H

#include "common.h"

typedef struct {
    int size;       /* S */
    int margin;     /* m >= 0 */
    ls_rect mask;   /* in S x S coordinates, end-exclusive, already scaled */
    ls_interp interp;
    int bgr;        /* 1: planes B,G,R; 0: R,G,B */
} ls_visual_opts;

/* Scale a mask given as OpenCV (x, y, w, h) for S = 320 to side S (rule
 * above); the result is end-exclusive and inside [0, S). */
ls_rect ls_visual_mask_for(const int xywh[4], int S);

/* Bytes of one frame's 8-bit planes: 6 * S * S. */
size_t ls_visual_u8_bytes(const ls_visual_opts *o);

/* Build one frame's 8-bit planes into out (ls_visual_u8_bytes bytes) from the
 * crop `rect` of an RGB24 image whose row 0 is at `rows` (stride bytes per
 * row; rect is in those rows' coordinates). scratch: working memory,
 * reusable (owner frees). Errors: INVALID_ARGUMENT for an empty rectangle or
 * bad options, RESOURCE_EXHAUSTED when out of memory. */
int ls_visual_build_u8(const uint8_t *rows, size_t stride, ls_rect rect, const ls_visual_opts *o, uint8_t *out,
                       ls_buf *scratch, ls_err *err);

/* n bytes -> n floats, each v / 255.0f (float32 division, as a client
 * dividing an 8-bit image by 255 in float32 gets). */
void ls_visual_to_float(const uint8_t *u8, size_t n, float *out);

#endif
