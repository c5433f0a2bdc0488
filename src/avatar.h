/* avatar.h - an avatar's background video: decoded frames + crop rectangles.
 *
 * Frames are the PNG/JPEG files of a directory in name order (frame_0000.png,
 * frame_000000.jpg, ...), decoded to RGB24 once at load time, in parallel.
 * Rectangles come from a crop-rects JSON file (see croprects.h). Which frame
 * serves batch item i of a request starting at k is decided here, so the
 * service and compositor never reason about frame order. */
#ifndef LS_AVATAR_H
#define LS_AVATAR_H

#include "config.h"
#include "image.h"

typedef struct ls_avatar ls_avatar;

/* Load frames and rectangles. num_frames 0 = every frame found. Errors
 * (FAILED_PRECONDITION) name the directory or file and the counts: no frames,
 * fewer frames or rectangles than num_frames, frames of different sizes, a
 * rectangle outside its frame, a frame that does not decode. */
ls_avatar *ls_avatar_load(const char *background_dir, const char *crop_rects_path, int num_frames,
                          ls_frame_order order, ls_err *err);
void ls_avatar_free(ls_avatar *a);

int ls_avatar_num_frames(const ls_avatar *a);
int ls_avatar_width(const ls_avatar *a);
int ls_avatar_height(const ls_avatar *a);

/* Frame index for position k of the stream (k >= 0): k mod n, or for
 * pingpong 0,1,..,n-1,n-2,..,1,0,1,.. (period 2(n-1)). */
int ls_avatar_frame_index(const ls_avatar *a, int64_t k);

const ls_image *ls_avatar_frame(const ls_avatar *a, int idx);
ls_rect ls_avatar_rect(const ls_avatar *a, int idx);

/* Bytes held (decoded frames + rectangles). */
uint64_t ls_avatar_memory(const ls_avatar *a);

#endif
