/* avatar.h - an avatar's background video: frames + crop rectangles.
 *
 * Frames are the PNG/JPEG files of a directory in name order (frame_0000.png,
 * frame_000000.jpg, ...). Loading reads only each frame's size (to check it
 * against the others and against its rectangle) so a cold load takes
 * milliseconds, not seconds. A frame is prepared on first use: decoded once,
 * then kept as what serving needs, which is less than the decoded frame:
 *   - the rows above and below its crop rectangle, already PNG-compressed
 *     (they are the same in every response; see ls_png_encode_spliced), and
 *   - the raw RGB rows crossing the rectangle (the compositor's input).
 * Which frame serves batch item i of a request starting at k is decided
 * here, so the service and compositor never reason about frame order. */
#ifndef LS_AVATAR_H
#define LS_AVATAR_H

#include "common.h"
#include "image.h"
#include "pngenc.h"

typedef struct ls_avatar ls_avatar;

/* Check frames and rectangles. num_frames 0 = every frame found. Errors
 * (FAILED_PRECONDITION) name the directory or file and the counts: no frames,
 * fewer frames or rectangles than num_frames, frames of different sizes, a
 * rectangle outside its frame, a frame whose header cannot be read.
 * png_level is the ISA-L level for flat rows (see pngenc.h). */
ls_avatar *ls_avatar_load(const char *background_dir, const char *crop_rects_path, int num_frames,
                          ls_frame_order order, int png_level, ls_err *err);
void ls_avatar_free(ls_avatar *a);

int ls_avatar_num_frames(const ls_avatar *a);
int ls_avatar_width(const ls_avatar *a);
int ls_avatar_height(const ls_avatar *a);

/* Frame index for position k of the stream (k >= 0): k mod n, or for
 * pingpong 0,1,..,n-1,n-2,..,1,0,1,.. (period 2(n-1)). */
int ls_avatar_frame_index(const ls_avatar *a, int64_t k);

ls_rect ls_avatar_rect(const ls_avatar *a, int idx);

/* What serving frame idx needs. Valid while the avatar lives. */
typedef struct {
    const ls_png_segment *top;    /* rows [0, rect.y1), compressed */
    const ls_png_segment *bottom; /* rows [rect.y2, h), compressed */
    const uint8_t *band;          /* rows [rect.y1, rect.y2), RGB24, stride w*3 */
    ls_rect rect;
} ls_frame_view;

/* Prepare frame idx if needed (decode, compress; concurrent callers for one
 * frame wait for a single preparation) and describe it. A frame that fails
 * to decode or has the wrong size fails every time with the same error
 * (FAILED_PRECONDITION naming the file); other frames keep serving. */
int ls_avatar_frame_view(ls_avatar *a, int idx, ls_frame_view *view, ls_err *err);

/* The whole background frame idx as RGB24 (stride w*3), for JPEG and raw
 * output: decoded on the first such request and kept while the avatar
 * lives. Same failure rules as ls_avatar_frame_view. */
int ls_avatar_frame_full(ls_avatar *a, int idx, const uint8_t **rgb, ls_err *err);

/* Upper bound of the bytes the avatar holds once every frame is prepared:
 * the raw RGB size of its frames (prepared frames take less). */
uint64_t ls_avatar_memory(const ls_avatar *a);

/* Bytes held now (prepared frames + rectangles + names). */
uint64_t ls_avatar_memory_used(ls_avatar *a);

#endif
