/* avatar.c - see avatar.h. */
#define _GNU_SOURCE
#include "avatar.h"

#include <ctype.h>
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "croprects.h"

struct ls_avatar {
    int n;            /* frames served */
    ls_frame_order order;
    ls_image *frames; /* n decoded frames */
    ls_rect *rects;   /* n rectangles */
    uint64_t bytes;
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

/* Parallel decode: workers take the next index from a shared counter. The
 * first error wins and stops the others early. */
typedef struct {
    const char *dir;
    char **names;
    ls_image *frames;
    int n;
    atomic_int next;
    atomic_int failed;
    pthread_mutex_t err_lock;
    ls_err err;
} decode_job;

static void *decode_worker(void *arg) {
    decode_job *j = arg;
    char path[4096];
    for (;;) {
        int i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n || atomic_load(&j->failed)) break;
        snprintf(path, sizeof path, "%s/%s", j->dir, j->names[i]);
        ls_err e;
        if (ls_image_decode_file(path, &j->frames[i], &e) != 0) {
            pthread_mutex_lock(&j->err_lock);
            if (!atomic_exchange(&j->failed, 1)) j->err = e;
            pthread_mutex_unlock(&j->err_lock);
            break;
        }
    }
    return NULL;
}

static int decode_all(const char *dir, char **names, int n, ls_image *frames, ls_err *err) {
    decode_job j = {.dir = dir, .names = names, .frames = frames, .n = n};
    atomic_init(&j.next, 0);
    atomic_init(&j.failed, 0);
    pthread_mutex_init(&j.err_lock, NULL);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = cpus > 0 ? (int)cpus : 1;
    if (nt > 8) nt = 8;
    if (nt > n) nt = n;
    pthread_t th[8];
    int started = 0;
    for (int t = 1; t < nt; t++) {
        if (pthread_create(&th[started], NULL, decode_worker, &j) != 0) break;
        started++;
    }
    decode_worker(&j); /* the loading thread works too */
    for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
    pthread_mutex_destroy(&j.err_lock);
    if (atomic_load(&j.failed)) {
        if (err) *err = j.err;
        return -1;
    }
    return 0;
}

ls_avatar *ls_avatar_load(const char *background_dir, const char *crop_rects_path, int num_frames,
                          ls_frame_order order, ls_err *err) {
    char **names = NULL;
    size_t n_names = 0, n_rects = 0;
    ls_rect *rects = NULL;
    ls_avatar *a = NULL;

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
    a = calloc(1, sizeof *a);
    if (!a || !(a->frames = calloc((size_t)n, sizeof *a->frames))) {
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for %d frames", n);
        goto fail;
    }
    a->n = n;
    a->order = order;
    if (decode_all(background_dir, names, n, a->frames, err) != 0) goto fail;

    /* Every frame must have the first one's size, and every rectangle must lie
     * inside its frame: the compositor relies on both. */
    int w = a->frames[0].w, h = a->frames[0].h;
    for (int i = 0; i < n; i++) {
        const ls_image *f = &a->frames[i];
        if (f->w != w || f->h != h) {
            ls_err_set(err, LS_FAILED_PRECONDITION, "%s/%s is %dx%d, expected %dx%d like %s", background_dir,
                       names[i], f->w, f->h, w, h, names[0]);
            goto fail;
        }
        ls_rect r = rects[i];
        if (r.x1 < 0 || r.y1 < 0 || r.x2 > w || r.y2 > h || r.x2 <= r.x1 || r.y2 <= r.y1) {
            ls_err_set(err, LS_FAILED_PRECONDITION,
                       "%s: rectangle %d [%d, %d, %d, %d] is outside its %dx%d frame", crop_rects_path, i,
                       r.x1, r.y1, r.x2, r.y2, w, h);
            goto fail;
        }
        a->bytes += (uint64_t)f->w * (uint64_t)f->h * 3;
    }
    a->rects = rects;
    a->bytes += (uint64_t)n * sizeof *rects;
    free_names(names, n_names);
    return a;

fail:
    free(rects);
    free_names(names, n_names);
    ls_avatar_free(a);
    return NULL;
}

void ls_avatar_free(ls_avatar *a) {
    if (!a) return;
    if (a->frames)
        for (int i = 0; i < a->n; i++) ls_image_free(&a->frames[i]);
    free(a->frames);
    free(a->rects);
    free(a);
}

int ls_avatar_num_frames(const ls_avatar *a) { return a->n; }
int ls_avatar_width(const ls_avatar *a) { return a->frames[0].w; }
int ls_avatar_height(const ls_avatar *a) { return a->frames[0].h; }

int ls_avatar_frame_index(const ls_avatar *a, int64_t k) {
    if (a->order == LS_ORDER_PINGPONG && a->n > 1) {
        int64_t period = 2 * (int64_t)(a->n - 1);
        int64_t i = k % period;
        return (int)(i < a->n ? i : period - i);
    }
    return (int)(k % a->n);
}

const ls_image *ls_avatar_frame(const ls_avatar *a, int idx) { return &a->frames[idx]; }
ls_rect ls_avatar_rect(const ls_avatar *a, int idx) { return a->rects[idx]; }
uint64_t ls_avatar_memory(const ls_avatar *a) { return a->bytes; }
