/* croprects.h - crop-rectangle JSON files (via jansson).
 *
 * Three forms occur in real avatar data; all give end-exclusive integer
 * [x1, y1, x2, y2] per frame:
 *   1. object keyed by frame-index strings, each value an object holding
 *      "rect": [x1, y1, x2, y2] (other keys ignored):
 *        {"0": {"rect": [..], "original_path": ".."}, "1": {..}}
 *      Keys must be exactly 0..n-1; a missing index is an error naming it.
 *   2. a plain list of [x1, y1, x2, y2] lists;
 *   3. a list of {"x1":..,"y1":..,"x2":..,"y2":..} objects.
 * Numbers must be integers (a float with zero fraction, e.g. 12.0, is
 * accepted); x2 > x1, y2 > y1, all >= 0. Checking against frame size is the
 * caller's job (the avatar knows the frames). */
#ifndef LS_CROPRECTS_H
#define LS_CROPRECTS_H

#include "common.h"

/* Parse `len` bytes of JSON. On success *out is a malloc'd array of *n rects
 * (caller frees). On failure returns -1, err = FAILED_PRECONDITION with a
 * message naming the index/key and what was expected (and jansson's line and
 * column for syntax errors). */
int ls_croprects_parse(const char *json, size_t len, ls_rect **out, size_t *n, ls_err *err);

/* Same for a file; the message is prefixed with the path. */
int ls_croprects_load_file(const char *path, ls_rect **out, size_t *n, ls_err *err);

#endif
