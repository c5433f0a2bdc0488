/* croprects.c - crop-rectangle JSON files (the forms are listed in
 * croprects.h).
 *
 * The file is parsed whole with jansson, then the one shape it has decides
 * the form: an object is the keyed form, a list is one of the list forms
 * (each element being either a 4-list or an {"x1",..} object). Every rect is
 * checked before the array is returned, so later code can index frames with
 * these numbers without checking them again, apart from the frame size which
 * only the avatar knows. */

#define _POSIX_C_SOURCE 200809L
#include "croprects.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* Coordinates are pixel positions in a frame; no image we handle comes near
 * 65535, and the bound keeps every later sum and product well inside int. */
#define COORD_MAX 65535

/* A crop-rects file is a few MB at most (a few hundred bytes per frame);
 * anything far bigger is the wrong file. */
#define CROPRECTS_MAX_BYTES (256u * 1024u * 1024u)

static const char *const COORD_NAMES[4] = {"x1", "y1", "x2", "y2"};

static int fail(ls_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(ls_err *err, const char *fmt, ...) {
    char msg[LS_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ls_err_set(err, LS_FAILED_PRECONDITION, "crop rects: %s", msg);
}

static const char *json_kind(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "an unknown value";
}

/* One coordinate: an integer in 0..COORD_MAX. JSON has a single number type
 * and some writers (numpy floats through Python's json) emit 12.0 for 12, so
 * a real with no fractional part counts as an integer. */
static int coord(const json_t *j, size_t frame, const char *name, int *out, ls_err *err) {
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        if (v < 0 || v > COORD_MAX)
            return fail(err, "frame %zu: %s = %" JSON_INTEGER_FORMAT " is out of range 0..%d",
                        frame, name, v, COORD_MAX);
        *out = (int)v;
        return 0;
    }
    if (json_is_real(j)) {
        double v = json_real_value(j); /* jansson never yields inf or nan */
        if (v != floor(v)) return fail(err, "frame %zu: %s must be an integer, got %g", frame, name, v);
        if (v < 0 || v > COORD_MAX)
            return fail(err, "frame %zu: %s = %g is out of range 0..%d", frame, name, v, COORD_MAX);
        *out = (int)v;
        return 0;
    }
    return fail(err, "frame %zu: %s must be an integer, got %s", frame, name, json_kind(j));
}

/* Rects are end-exclusive, so an empty or inverted one has no pixels: the
 * compositor would divide by its width. */
static int check_rect(const ls_rect *r, size_t frame, ls_err *err) {
    if (r->x2 <= r->x1)
        return fail(err, "frame %zu: x2 (%d) must be greater than x1 (%d)", frame, r->x2, r->x1);
    if (r->y2 <= r->y1)
        return fail(err, "frame %zu: y2 (%d) must be greater than y1 (%d)", frame, r->y2, r->y1);
    return 0;
}

/* [x1, y1, x2, y2]. `what` names the value in messages ("rect" or "entry"). */
static int rect_from_list(const json_t *list, size_t frame, const char *what, ls_rect *r,
                          ls_err *err) {
    if (!json_is_array(list))
        return fail(err, "frame %zu: %s must be [x1, y1, x2, y2], got %s", frame, what,
                    json_kind(list));
    if (json_array_size(list) != 4)
        return fail(err, "frame %zu: %s must be [x1, y1, x2, y2], got a list of %zu", frame, what,
                    json_array_size(list));
    int v[4];
    for (size_t i = 0; i < 4; i++)
        if (coord(json_array_get(list, i), frame, COORD_NAMES[i], &v[i], err) != 0) return -1;
    *r = (ls_rect){.x1 = v[0], .y1 = v[1], .x2 = v[2], .y2 = v[3]};
    return check_rect(r, frame, err);
}

/* {"x1": .., "y1": .., "x2": .., "y2": ..}; other keys are ignored, as they
 * are in the keyed form. */
static int rect_from_fields(const json_t *obj, size_t frame, ls_rect *r, ls_err *err) {
    int v[4];
    for (size_t i = 0; i < 4; i++) {
        const json_t *c = json_object_get(obj, COORD_NAMES[i]);
        if (!c) return fail(err, "frame %zu: missing \"%s\"", frame, COORD_NAMES[i]);
        if (coord(c, frame, COORD_NAMES[i], &v[i], err) != 0) return -1;
    }
    *r = (ls_rect){.x1 = v[0], .y1 = v[1], .x2 = v[2], .y2 = v[3]};
    return check_rect(r, frame, err);
}

/* Forms 2 and 3: the list index is the frame index. */
static int parse_list(const json_t *list, ls_rect *rects, ls_err *err) {
    size_t i;
    const json_t *el;
    json_array_foreach(list, i, el) {
        int rc;
        if (json_is_array(el))
            rc = rect_from_list(el, i, "entry", &rects[i], err);
        else if (json_is_object(el))
            rc = rect_from_fields(el, i, &rects[i], err);
        else
            rc = fail(err, "frame %zu: expected [x1, y1, x2, y2] or {\"x1\": .., \"y1\": .., "
                           "\"x2\": .., \"y2\": ..}, got %s",
                      i, json_kind(el));
        if (rc != 0) return -1;
    }
    return 0;
}

/* A key of the keyed form: a canonical decimal integer ("0", "17"; not "07",
 * "+1" or " 1", which would let two keys name one frame). Values at or
 * above n are clamped to n: they can only mean a missing index, found later.
 * Returns 0 on success, -1 if the key is not a frame index at all. */
static int frame_index(const char *key, size_t n, size_t *out) {
    if (key[0] < '0' || key[0] > '9' || (key[0] == '0' && key[1] != '\0')) return -1;
    size_t v = 0;
    for (const char *c = key; *c; c++) {
        if (*c < '0' || *c > '9') return -1;
        if (v < n) v = v * 10 + (size_t)(*c - '0'); /* v <= n*10+9: no overflow */
    }
    *out = v < n ? v : n;
    return 0;
}

/* Form 1: {"0": {"rect": [..]}, "1": {..}}. The keys are checked first, as a
 * set, so that a gap is reported as the first missing index rather than as
 * whichever stray key happens to come first; then the frames are read in
 * index order, so the first bad frame reported is the lowest. */
static int parse_keyed(const json_t *obj, ls_rect *rects, size_t n, ls_err *err) {
    unsigned char *seen = calloc(n, 1);
    if (!seen) return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "crop rects: out of memory");
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)obj, key, val) {
        size_t idx;
        if (frame_index(key, n, &idx) != 0) {
            free(seen);
            return fail(err,
                        "key '%.64s' is not a frame index (keys must be decimal integers "
                        "0..%zu, without sign or leading zeros)",
                        key, n - 1);
        }
        if (idx < n) seen[idx] = 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!seen[i]) {
            free(seen);
            return fail(err, "missing frame index %zu (found %zu entries, keys must be 0..%zu)", i,
                        n, n - 1);
        }
    }
    free(seen);

    for (size_t i = 0; i < n; i++) {
        char k[32];
        snprintf(k, sizeof k, "%zu", i);
        /* NULL only for a key with an embedded NUL ("1\u0000x") that passed
         * as "1" above. */
        const json_t *entry = json_object_get(obj, k);
        if (!entry)
            return fail(err, "missing frame index %zu (found %zu entries, keys must be 0..%zu)", i,
                        n, n - 1);
        if (!json_is_object(entry))
            return fail(err, "frame %zu: expected an object with \"rect\": [x1, y1, x2, y2], got %s",
                        i, json_kind(entry));
        const json_t *rect = json_object_get(entry, "rect");
        if (!rect) return fail(err, "frame %zu: missing \"rect\"", i);
        if (rect_from_list(rect, i, "\"rect\"", &rects[i], err) != 0) return -1;
    }
    return 0;
}

int ls_croprects_parse(const char *json, size_t len, ls_rect **out, size_t *n, ls_err *err) {
    *out = NULL;
    *n = 0;
    json_error_t jerr;
    /* Duplicate keys would let one frame silently shadow another. */
    json_t *root = json_loadb(json ? json : "", json ? len : 0, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fail(err, "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
                    jerr.text);

    /* Without JSON_DECODE_ANY the root is always an array or an object. */
    size_t count = json_is_array(root) ? json_array_size(root) : json_object_size(root);
    if (count == 0) {
        json_decref(root);
        return fail(err, "no crop rectangles");
    }
    ls_rect *rects = calloc(count, sizeof *rects);
    if (!rects) {
        json_decref(root);
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "crop rects: out of memory");
    }
    int rc = json_is_array(root) ? parse_list(root, rects, err)
                                 : parse_keyed(root, rects, count, err);
    json_decref(root);
    if (rc != 0) {
        free(rects);
        return -1;
    }
    *out = rects;
    *n = count;
    return 0;
}


int ls_croprects_load_file(const char *path, ls_rect **out, size_t *n, ls_err *err) {
    *out = NULL;
    *n = 0;
    ls_buf buf = {0};
    int e = ls_read_file(path, &buf, CROPRECTS_MAX_BYTES);
    if (e != 0) {
        ls_buf_free(&buf);
        ls_err_set(err, LS_FAILED_PRECONDITION, "crop rects: cannot read: %s", strerror(e));
        return ls_err_prefix(err, "%s", path);
    }
    int rc = ls_croprects_parse((const char *)buf.data, buf.len, out, n, err);
    ls_buf_free(&buf);
    if (rc != 0) ls_err_prefix(err, "%s", path);
    return rc;
}
