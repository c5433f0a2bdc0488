/* avatar.c - see avatar.h. */
#define _GNU_SOURCE
#include "avatar.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "croprects.h"

typedef enum { SLOT_EMPTY = 0, SLOT_PREPARING, SLOT_READY, SLOT_FAILED } slot_state;

typedef struct {
    slot_state state;   /* guarded by the avatar's lock */
    ls_png_segment top, bottom;
    uint8_t *band;
    ls_err err;         /* SLOT_FAILED: why */
    /* The whole decoded frame, only for JPEG/raw output (made on first such
     * request; PNG output never needs it). */
    slot_state full_state;
    uint8_t *full;
    ls_err full_err;
} frame_slot;

struct ls_avatar {
    int n;              /* frames served */
    int w, h;
    int png_level;
    ls_frame_order order;
    char *dir;
    char **names;       /* n file names, sorted */
    ls_rect *rects;     /* n rectangles */
    frame_slot *slots;  /* n */
    pthread_mutex_t lock;
    pthread_cond_t prepared; /* some slot left SLOT_PREPARING */
    uint64_t used;      /* bytes of prepared slots */
};

static int is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || name[0] == '.') return 0;
    return !strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg");
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n) {
    if (!names) return;
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Sorted image file names of dir (malloc'd array of malloc'd names). */
static int list_frames(const char *dir, char ***out, size_t *n_out, ls_err *err) {
    DIR *d = opendir(dir);
    if (!d) return ls_err_set(err, LS_FAILED_PRECONDITION, "background_dir %s: cannot open: %m", dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)) != NULL) {
        if (!is_image_name(de->d_name)) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 128;
            char **p = realloc(names, nc * sizeof *p);
            if (!p) {
                rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory listing %s", dir);
                break;
            }
            names = p;
            cap = nc;
        }
        if (!(names[n] = strdup(de->d_name))) {
            rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory listing %s", dir);
            break;
        }
        n++;
    }
    closedir(d);
    if (rc) {
        free_names(names, n);
        return -1;
    }
    if (n) qsort(names, n, sizeof *names, cmp_str);
    *out = names;
    *n_out = n;
    return 0;
}

ls_avatar *ls_avatar_load(const char *background_dir, const char *crop_rects_path, int num_frames,
                          ls_frame_order order, int png_level, ls_err *err) {
    char **names = NULL;
    size_t n_names = 0, n_rects = 0;
    ls_rect *rects = NULL;
    ls_avatar *a = NULL;
    char path[4096];

    if (num_frames < 0) {
        ls_err_set(err, LS_FAILED_PRECONDITION, "num_frames must be >= 0, got %d", num_frames);
        return NULL;
    }
    if (list_frames(background_dir, &names, &n_names, err) != 0) return NULL;
    if (n_names == 0) {
        ls_err_set(err, LS_FAILED_PRECONDITION, "background_dir %s: no frames (expected .png/.jpg files)",
                   background_dir);
        goto fail;
    }
    if (ls_croprects_load_file(crop_rects_path, &rects, &n_rects, err) != 0) goto fail;
    int n = num_frames ? num_frames : (int)n_names;
    if ((size_t)n > n_names || (size_t)n > n_rects) {
        ls_err_set(err, LS_FAILED_PRECONDITION,
                   "num_frames %d exceeds what the avatar has: %zu frames in %s, %zu rectangles in %s", n,
                   n_names, background_dir, n_rects, crop_rects_path);
        goto fail;
    }

    /* Every frame must have the first one's size, and every rectangle must lie
     * inside its frame: the compositor and the spliced encoder rely on both.
     * Only headers are read here; pixels are decoded on first use. */
    int w = 0, h = 0;
    for (int i = 0; i < n; i++) {
        int fw, fh;
        snprintf(path, sizeof path, "%s/%s", background_dir, names[i]);
        if (ls_image_probe_file(path, &fw, &fh, err) != 0) goto fail;
        if (i == 0) {
            w = fw;
            h = fh;
        } else if (fw != w || fh != h) {
            ls_err_set(err, LS_FAILED_PRECONDITION, "%s is %dx%d, expected %dx%d like %s", path, fw, fh, w, h,
                       names[0]);
            goto fail;
        }
        ls_rect r = rects[i];
        if (r.x1 < 0 || r.y1 < 0 || r.x2 > w || r.y2 > h || r.x2 <= r.x1 || r.y2 <= r.y1) {
            ls_err_set(err, LS_FAILED_PRECONDITION,
                       "%s: rectangle %d [%d, %d, %d, %d] is outside its %dx%d frame", crop_rects_path, i,
                       r.x1, r.y1, r.x2, r.y2, w, h);
            goto fail;
        }
    }

    a = calloc(1, sizeof *a);
    if (!a || !(a->slots = calloc((size_t)n, sizeof *a->slots)) || !(a->dir = strdup(background_dir))) {
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for %d frames", n);
        goto fail;
    }
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->prepared, NULL);
    a->n = n;
    a->w = w;
    a->h = h;
    a->png_level = png_level;
    a->order = order;
    a->names = names;
    a->rects = rects;
    /* Names past n are never served. */
    for (size_t i = (size_t)n; i < n_names; i++) {
        free(names[i]);
        names[i] = NULL;
    }
    return a;

fail:
    free(rects);
    free_names(names, n_names);
    if (a) {
        free(a->slots);
        free(a->dir);
        free(a);
    }
    return NULL;
}

static void slot_clear(frame_slot *s) {
    ls_png_segment_free(&s->top);
    ls_png_segment_free(&s->bottom);
    free(s->band);
    s->band = NULL;
}

static void full_clear(frame_slot *s) {
    free(s->full);
    s->full = NULL;
}

void ls_avatar_free(ls_avatar *a) {
    if (!a) return;
    for (int i = 0; i < a->n; i++) {
        slot_clear(&a->slots[i]);
        full_clear(&a->slots[i]);
    }
    free(a->slots);
    free(a->rects);
    free_names(a->names, (size_t)a->n);
    free(a->dir);
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->prepared);
    free(a);
}

int ls_avatar_num_frames(const ls_avatar *a) { return a->n; }
int ls_avatar_width(const ls_avatar *a) { return a->w; }
int ls_avatar_height(const ls_avatar *a) { return a->h; }

int ls_avatar_frame_index(const ls_avatar *a, int64_t k) {
    if (a->order == LS_ORDER_PINGPONG && a->n > 1) {
        int64_t period = 2 * (int64_t)(a->n - 1);
        int64_t i = k % period;
        return (int)(i < a->n ? i : period - i);
    }
    return (int)(k % a->n);
}

ls_rect ls_avatar_rect(const ls_avatar *a, int idx) { return a->rects[idx]; }

/* Decode frame idx and turn it into segments + band. Runs without the lock;
 * only this thread touches the slot while it is SLOT_PREPARING. */
static int prepare(ls_avatar *a, int idx, frame_slot *s, ls_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", a->dir, a->names[idx]);
    ls_image img;
    if (ls_image_decode_file(path, &img, err) != 0) return -1;
    int rc = 0;
    if (img.w != a->w || img.h != a->h) {
        rc = ls_err_set(err, LS_FAILED_PRECONDITION, "%s decodes to %dx%d, expected %dx%d", path, img.w, img.h,
                        a->w, a->h);
        goto out;
    }
    ls_rect r = a->rects[idx];
    size_t stride = (size_t)a->w * 3;
    size_t band_bytes = stride * (size_t)(r.y2 - r.y1);
    s->band = malloc(band_bytes);
    if (!s->band) {
        rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory preparing %s", path);
        goto out;
    }
    memcpy(s->band, img.rgb + stride * (size_t)r.y1, band_bytes);
    rc = ls_png_segment_build(img.rgb, a->w, r.y1, stride, a->png_level, &s->top, err);
    if (!rc)
        rc = ls_png_segment_build(img.rgb + stride * (size_t)r.y2, a->w, a->h - r.y2, stride, a->png_level,
                                  &s->bottom, err);
    if (rc) ls_err_prefix(err, "%s", path);
out:
    ls_image_free(&img);
    if (rc) slot_clear(s);
    return rc;
}

int ls_avatar_frame_view(ls_avatar *a, int idx, ls_frame_view *view, ls_err *err) {
    if (idx < 0 || idx >= a->n)
        return ls_err_set(err, LS_INTERNAL, "frame %d outside 0..%d", idx, a->n - 1);
    frame_slot *s = &a->slots[idx];
    pthread_mutex_lock(&a->lock);
    while (s->state == SLOT_PREPARING) pthread_cond_wait(&a->prepared, &a->lock);
    if (s->state == SLOT_EMPTY) {
        s->state = SLOT_PREPARING;
        pthread_mutex_unlock(&a->lock);
        ls_err perr = {.code = LS_OK, .msg = ""};
        int rc = prepare(a, idx, s, &perr);
        pthread_mutex_lock(&a->lock);
        if (rc == 0) {
            s->state = SLOT_READY;
            a->used += s->top.chunk_len + s->bottom.chunk_len +
                       (uint64_t)a->w * 3 * (uint64_t)(a->rects[idx].y2 - a->rects[idx].y1);
        } else {
            s->state = SLOT_FAILED;
            s->err = perr;
        }
        pthread_cond_broadcast(&a->prepared);
    }
    int rc = 0;
    if (s->state == SLOT_FAILED) {
        if (err) *err = s->err;
        rc = -1;
    } else {
        view->top = &s->top;
        view->bottom = &s->bottom;
        view->band = s->band;
        view->rect = a->rects[idx];
    }
    pthread_mutex_unlock(&a->lock);
    return rc;
}

/* Decode frame idx whole and check its size. */
static int decode_full(ls_avatar *a, int idx, uint8_t **out, ls_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", a->dir, a->names[idx]);
    ls_image img;
    if (ls_image_decode_file(path, &img, err) != 0) return -1;
    if (img.w != a->w || img.h != a->h) {
        ls_err_set(err, LS_FAILED_PRECONDITION, "%s decodes to %dx%d, expected %dx%d", path, img.w, img.h, a->w,
                   a->h);
        ls_image_free(&img);
        return -1;
    }
    *out = img.rgb; /* packed RGB24, stride w*3: taken over */
    return 0;
}

int ls_avatar_frame_full(ls_avatar *a, int idx, const uint8_t **rgb, ls_err *err) {
    if (idx < 0 || idx >= a->n) return ls_err_set(err, LS_INTERNAL, "frame %d outside 0..%d", idx, a->n - 1);
    frame_slot *s = &a->slots[idx];
    pthread_mutex_lock(&a->lock);
    while (s->full_state == SLOT_PREPARING) pthread_cond_wait(&a->prepared, &a->lock);
    if (s->full_state == SLOT_EMPTY) {
        s->full_state = SLOT_PREPARING;
        pthread_mutex_unlock(&a->lock);
        ls_err perr = {.code = LS_OK, .msg = ""};
        uint8_t *full = NULL;
        int rc = decode_full(a, idx, &full, &perr);
        pthread_mutex_lock(&a->lock);
        if (rc == 0) {
            s->full = full;
            s->full_state = SLOT_READY;
            a->used += (uint64_t)a->w * (uint64_t)a->h * 3;
        } else {
            s->full_state = SLOT_FAILED;
            s->full_err = perr;
        }
        pthread_cond_broadcast(&a->prepared);
    }
    int rc = 0;
    if (s->full_state == SLOT_FAILED) {
        if (err) *err = s->full_err;
        rc = -1;
    } else {
        *rgb = s->full;
    }
    pthread_mutex_unlock(&a->lock);
    return rc;
}

uint64_t ls_avatar_memory(const ls_avatar *a) { return (uint64_t)a->n * (uint64_t)a->w * (uint64_t)a->h * 3; }

uint64_t ls_avatar_memory_used(ls_avatar *a) {
    pthread_mutex_lock(&a->lock);
    uint64_t u = a->used + (uint64_t)a->n * (sizeof(ls_rect) + sizeof(frame_slot));
    pthread_mutex_unlock(&a->lock);
    return u;
}
