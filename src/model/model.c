/* model.c - engine + avatar, the shared-engine cache, and the per-request
 * pipeline: run -> composite -> encode. See model.h. */
#define _GNU_SOURCE
#include "model.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compositor.h"
#include "image.h"
#include "log.h"
#include "mel.h"
#include "pngenc.h"
#include "pool.h"
#include "tensorbuf.h"
#include "video.h"
#include "visual.h"

#include <libyuv/convert.h>

/* ---- shared engine cache ----------------------------------------------
 * Keyed by model path and engine options. An entry being opened is marked
 * `opening`; others wanting the same one wait on `cond` instead of opening
 * it twice. The cache lock is never held while ONNX Runtime parses a model. */
typedef struct shared_engine {
    char *path;
    ls_engine_opts opts;
    ls_engine *engine;
    int refs;
    int opening;
    struct shared_engine *next;
} shared_engine;

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cache_cond = PTHREAD_COND_INITIALIZER;
static shared_engine *cache_head;

static uint64_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0;
        fclose(f);
    }
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* What a session's opening took: RSS, and NVML's device reading on CUDA. */
typedef struct {
    uint64_t rss;
    int64_t gpu; /* -1: not on a GPU, or no NVML */
} mem_mark;

/* Loads on a GPU are measured one at a time (mem_mark reads the device). */
static pthread_mutex_t gpu_measure_lock = PTHREAD_MUTEX_INITIALIZER;

static mem_mark mark(const ls_engine_opts *o) {
    return (mem_mark){rss_bytes(), o->provider == LS_EP_CUDA ? ls_engine_gpu_used_bytes(o->device_id) : -1};
}

/* Growth between two marks, each part at least the file's size (the weights
 * are somewhere); the GPU part only on CUDA. */
static ls_mem grown(const ls_engine_opts *o, mem_mark a, mem_mark b, const char *path) {
    struct stat st;
    uint64_t file = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    ls_mem m = {b.rss > a.rss && b.rss - a.rss > file ? b.rss - a.rss : file, 0};
    if (o->provider != LS_EP_CUDA) return m;
    if (a.gpu < 0 || b.gpu < 0)
        LOG_WARN("%s: GPU memory not measured (NVML, libnvidia-ml.so.1, not available): charged its file size", path);
    m.gpu = a.gpu >= 0 && b.gpu > a.gpu && (uint64_t)(b.gpu - a.gpu) > file ? (uint64_t)(b.gpu - a.gpu) : file;
    return m;
}

/* One run of zeros, so that ONNX Runtime's CUDA arena has grown to what a
 * batch needs before the device is read. */
static int warm_up(ls_engine *e, ls_err *err) {
    size_t v = ls_engine_visual_per_frame(e), a = ls_engine_audio_per_frame(e), o = ls_engine_output_per_frame(e);
    float *buf = ls_alloc_aligned((v + a + o) * sizeof(float));
    if (!buf) return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for a warm-up run");
    memset(buf, 0, (v + a + o) * sizeof(float));
    int rc = ls_engine_run(e, buf, buf + v, 1, 1, buf + v + a, err);
    free(buf);
    return rc;
}

/* ls_engine_open; on CUDA also warm_up, the device read around both. */
static ls_engine *open_measured(const char *path, const ls_engine_opts *opts, ls_mem *mem, ls_err *err) {
    int gpu = opts->provider == LS_EP_CUDA;
    if (gpu) pthread_mutex_lock(&gpu_measure_lock);
    mem_mark before = mark(opts);
    ls_engine *e = ls_engine_open(path, opts, err);
    if (e && gpu && warm_up(e, err) != 0) {
        ls_err_prefix(err, "%s: warm-up run", path);
        ls_engine_close(e);
        e = NULL;
    }
    mem_mark after = mark(opts);
    if (gpu) pthread_mutex_unlock(&gpu_measure_lock);
    if (e) *mem = grown(opts, before, after, path);
    return e;
}

static int same_opts(const ls_engine_opts *a, const ls_engine_opts *b) {
    return a->provider == b->provider && a->device_id == b->device_id && a->gpu_mem_limit == b->gpu_mem_limit &&
           a->cudnn_search == b->cudnn_search && a->io_binding == b->io_binding;
}

/* Take a reference on the engine for path and opts, opening it if needed.
 * *opened is set when this call opened it, else zero. */
static ls_engine *engine_acquire(const char *path, const ls_engine_opts *opts, ls_mem *opened, ls_err *err) {
    *opened = (ls_mem){0, 0};
    pthread_mutex_lock(&cache_lock);
    shared_engine *s;
    for (;;) {
        for (s = cache_head; s; s = s->next)
            if (!strcmp(s->path, path) && same_opts(&s->opts, opts)) break;
        if (!s || !s->opening) break;
        pthread_cond_wait(&cache_cond, &cache_lock);
    }
    if (s) {
        s->refs++;
        pthread_mutex_unlock(&cache_lock);
        return s->engine;
    }
    s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        pthread_mutex_unlock(&cache_lock);
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory opening %s", path);
        return NULL;
    }
    s->opts = *opts;
    s->opening = 1;
    s->refs = 1;
    s->next = cache_head;
    cache_head = s;
    pthread_mutex_unlock(&cache_lock);

    ls_engine *e = open_measured(path, opts, opened, err);

    pthread_mutex_lock(&cache_lock);
    s->opening = 0;
    if (e) {
        s->engine = e;
    } else {
        /* Unlink the failed entry; waiters retry the open themselves and get
         * their own error. */
        for (shared_engine **pp = &cache_head; *pp; pp = &(*pp)->next)
            if (*pp == s) {
                *pp = s->next;
                break;
            }
        free(s->path);
        free(s);
    }
    pthread_cond_broadcast(&cache_cond);
    pthread_mutex_unlock(&cache_lock);
    return e;
}

static void engine_release(ls_engine *e) {
    ls_engine *close_it = NULL;
    pthread_mutex_lock(&cache_lock);
    for (shared_engine **pp = &cache_head; *pp; pp = &(*pp)->next) {
        shared_engine *s = *pp;
        if (s->engine != e) continue;
        if (--s->refs == 0) {
            *pp = s->next;
            close_it = s->engine;
            free(s->path);
            free(s);
        }
        break;
    }
    pthread_mutex_unlock(&cache_lock);
    ls_engine_close(close_it); /* outside the lock: releasing a session takes time */
}

int ls_model_open_engines(void) {
    int n = 0;
    pthread_mutex_lock(&cache_lock);
    for (shared_engine *s = cache_head; s; s = s->next) n += !s->opening;
    pthread_mutex_unlock(&cache_lock);
    return n;
}

/* ---- model ---------------------------------------------------------------- */

/* visual_input.cache: auto keeps the 8-bit inputs when they add at most this
 * share to the frames' own memory (for 1280x720 frames and S = 320: 614 KB
 * against 2.76 MB, 22 %, so real avatars cache; measured in
 * docs/PERFORMANCE.md: a cached frame costs a fifth of a built one). */
#define VISUAL_CACHE_AUTO_SHARE 0.25

struct ls_model {
    ls_engine *engine;
    ls_avatar *avatar;
    ls_composite_opts opts;
    ls_visual_opts vopts;
    /* One slot per avatar frame when caching: NULL until a request first
     * builds that frame's input; set once (compare-and-swap), freed with the
     * model. NULL array = no cache. */
    uint8_t *_Atomic *vcache;
    int n_vcache;
    ls_encoder *encoder; /* audio_encoder, own session; NULL = no speech in */
    char *id;            /* for messages */
};

ls_model *ls_model_load(const ls_model_spec *spec, int png_level, ls_mem *mem, ls_err *err) {
    ls_model *m = calloc(1, sizeof *m);
    if (!m) {
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory loading model '%s'", spec->id);
        return NULL;
    }
    ls_mem engine_mem, encoder_mem = {0, 0};
    m->engine = engine_acquire(spec->model_path, &spec->engine, &engine_mem, err);
    if (!m->engine) goto fail;
    m->avatar = ls_avatar_load(spec->background_dir, spec->crop_rects_path, spec->num_frames, spec->frame_order,
                               png_level, err);
    if (!m->avatar) goto fail;
    if (!(m->id = strdup(spec->id))) {
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory loading model '%s'", spec->id);
        goto fail;
    }
    if (spec->encoder_path) {
        /* Its own session, not shared: encoders are small (the reference's is
         * a few MB) and a per-model one needs no second cache. Measured like
         * the engine, without a warm-up: its arena is small. */
        int gpu = spec->engine.provider == LS_EP_CUDA;
        if (gpu) pthread_mutex_lock(&gpu_measure_lock);
        mem_mark before = mark(&spec->engine);
        m->encoder = ls_encoder_open(spec->encoder_path, &spec->engine, err);
        mem_mark after = mark(&spec->engine);
        if (gpu) pthread_mutex_unlock(&gpu_measure_lock);
        if (!m->encoder) goto fail;
        encoder_mem = grown(&spec->engine, before, after, spec->encoder_path);
    }
    m->opts.pred_size = ls_engine_pred_size(m->engine);
    m->opts.margin = spec->paste_margin;
    m->opts.bgr = spec->channel_bgr;
    m->opts.interp = spec->paste_interp;
    int S = m->opts.pred_size;
    m->vopts = (ls_visual_opts){.size = S,
                                .margin = spec->visual.margin,
                                .mask = ls_visual_mask_for(spec->visual.mask, S),
                                .interp = spec->visual.interp,
                                .bgr = spec->channel_bgr};
    uint64_t frames_bytes = ls_avatar_memory(m->avatar);
    int n = ls_avatar_num_frames(m->avatar);
    uint64_t cache_bytes = (uint64_t)n * ls_visual_u8_bytes(&m->vopts);
    int cache = spec->visual.cache == LS_CACHE_ON ||
                (spec->visual.cache == LS_CACHE_AUTO && (double)cache_bytes <= VISUAL_CACHE_AUTO_SHARE * (double)frames_bytes);
    if (cache) {
        m->vcache = calloc((size_t)n, sizeof *m->vcache);
        if (!m->vcache) {
            ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for the visual input cache");
            goto fail;
        }
        m->n_vcache = n;
    }
    /* Charge the avatar's upper bound (its frames as raw RGB) and the full
     * input cache, not the little they hold right after loading: both fill
     * on first use and capacity must hold once they have. */
    mem->host = engine_mem.host + encoder_mem.host + frames_bytes + (cache ? cache_bytes : 0);
    mem->gpu = engine_mem.gpu + encoder_mem.gpu;
    return m;
fail:
    ls_err_prefix(err, "model '%s'", spec->id);
    ls_model_free(m);
    return NULL;
}

void ls_model_free(ls_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_vcache; i++) free(atomic_load(&m->vcache[i]));
    free((void *)m->vcache);
    ls_encoder_close(m->encoder);
    free(m->id);
    ls_avatar_free(m->avatar);
    if (m->engine) engine_release(m->engine);
    free(m);
}

const ls_engine *ls_model_engine(const ls_model *m) { return m->engine; }
const char *ls_model_id(const ls_model *m) { return m->id; }
int ls_model_visual_cached(const ls_model *m) { return m->vcache != NULL; }
uint64_t ls_model_visual_cache_bytes(const ls_model *m) {
    return (uint64_t)m->n_vcache * ls_visual_u8_bytes(&m->vopts);
}
const ls_avatar *ls_model_avatar(const ls_model *m) { return m->avatar; }

/* Sizes and finiteness of the request's tensors. A refusal is described in
 * *f (for the caller to word in its client's terms) and in err, in floats. */
static int check_request(const ls_model *m, const ls_infer_req *req, int *audio_shared, ls_input_fault *f,
                         ls_err *err) {
    size_t vpf = ls_engine_visual_per_frame(m->engine);
    size_t apf = ls_engine_audio_per_frame(m->engine);
    size_t b = (size_t)req->batch;
    *f = (ls_input_fault){.kind = LS_FAULT_NONE, .batch = req->batch, .index = -1};
    if (!req->server_visual && req->n_visual != b * vpf) {
        *f = (ls_input_fault){LS_FAULT_SIZE, LS_INPUT_VISUAL, req->batch, vpf, req->n_visual, -1};
        return ls_err_set(err, LS_INVALID_ARGUMENT, "visual input: expected batch %d x %zu = %zu floats, got %zu",
                          req->batch, vpf, b * vpf, req->n_visual);
    }
    if (req->n_audio == b * apf)
        *audio_shared = 0;
    else if (req->n_audio == apf)
        *audio_shared = 1;
    else {
        *f = (ls_input_fault){LS_FAULT_SIZE, LS_INPUT_AUDIO, req->batch, apf, req->n_audio, -1};
        return ls_err_set(err, LS_INVALID_ARGUMENT,
                          "audio input: expected batch %d x %zu = %zu floats (one window per frame) "
                          "or %zu (one window for all), got %zu",
                          req->batch, apf, b * apf, apf, req->n_audio);
    }
    ptrdiff_t bad = req->server_visual    ? -1
                    : req->finite_checked ? req->visual_bad
                                          : ls_first_non_finite(req->visual, req->n_visual);
    if (bad >= 0) {
        *f = (ls_input_fault){LS_FAULT_NON_FINITE, LS_INPUT_VISUAL, req->batch, 0, 0, bad};
        return ls_err_set(err, LS_INVALID_ARGUMENT, "visual input[%td] is not finite (NaN or Inf)", bad);
    }
    bad = req->finite_checked ? req->audio_bad : ls_first_non_finite(req->audio, req->n_audio);
    if (bad >= 0) {
        *f = (ls_input_fault){LS_FAULT_NON_FINITE, LS_INPUT_AUDIO, req->batch, 0, 0, bad};
        return ls_err_set(err, LS_INVALID_ARGUMENT, "audio input[%td] is not finite (NaN or Inf)", bad);
    }
    return 0;
}

void ls_infer_result_free(ls_infer_result *res) {
    free(res->keyframes);
    res->keyframes = NULL;
    if (!res->frames) return;
    for (int i = 0; i < res->n_frames; i++) ls_buf_free(&res->frames[i]);
    free(res->frames);
    res->frames = NULL;
    res->n_frames = 0;
}

/* One frame of a batch: copy the rows crossing the rectangle, paste the
 * prediction into them, and splice them between the frame's precompressed
 * rows. Runs on any pool thread; writes only its own result slot. */
typedef struct {
    ls_model *m;
    const ls_infer_req *req;
    const float *pred;
    size_t opf;
    ls_infer_result *res;
    ls_err *errs;  /* one per frame */
    int *rcs;
} frame_job;

/* PNG: copy the rows crossing the rectangle, paste the prediction into
 * them, and splice them between the frame's precompressed rows. */
static int frame_png(frame_job *j, int i, int idx, ls_err *err) {
    ls_model *m = j->m;
    int w = ls_avatar_width(m->avatar), h = ls_avatar_height(m->avatar);
    ls_frame_view v;
    if (ls_avatar_frame_view(m->avatar, idx, &v, err) != 0) return -1;
    int rows = v.rect.y2 - v.rect.y1;
    size_t stride = (size_t)w * 3;
    uint8_t *band = malloc(stride * (size_t)rows);
    if (!band) return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for frame %d", idx);
    memcpy(band, v.band, stride * (size_t)rows);
    ls_rect local = {v.rect.x1, 0, v.rect.x2, rows}; /* the rectangle in band coordinates */
    ls_buf scratch = {0};
    int rc = ls_composite(band, w, rows, local, j->pred + (size_t)i * j->opf, &m->opts, &scratch, err);
    if (!rc)
        rc = ls_png_encode_spliced(w, h, v.top, band, rows, stride, v.bottom, j->req->png_level, &j->res->frames[i],
                                   err);
    ls_buf_free(&scratch);
    free(band);
    return rc;
}

/* JPEG and raw: the whole frame is needed, so composite into a copy of the
 * decoded background; raw hands that copy over as the result. */
static int frame_whole(frame_job *j, int i, int idx, ls_err *err) {
    ls_model *m = j->m;
    int w = ls_avatar_width(m->avatar), h = ls_avatar_height(m->avatar);
    const uint8_t *bg;
    if (ls_avatar_frame_full(m->avatar, idx, &bg, err) != 0) return -1;
    size_t bytes = (size_t)w * (size_t)h * 3;
    ls_buf frame = {0};
    if (ls_buf_reserve(&frame, bytes) != 0) return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for frame %d", idx);
    memcpy(frame.data, bg, bytes);
    frame.len = bytes;
    ls_buf scratch = {0};
    int rc = ls_composite(frame.data, w, h, ls_avatar_rect(m->avatar, idx), j->pred + (size_t)i * j->opf, &m->opts,
                          &scratch, err);
    ls_buf_free(&scratch);
    if (!rc && j->req->format == LS_FORMAT_RAW) {
        j->res->frames[i] = frame; /* taken over */
        return 0;
    }
    if (!rc && j->req->format == LS_FORMAT_H264) {
        /* I420 here, in parallel; ls_model_infer encodes in order. */
        ls_buf *yuv = &j->res->frames[i];
        if (ls_buf_reserve(yuv, ls_i420_bytes(w, h)) != 0)
            rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for frame %d", idx);
        else {
            uint8_t *y = yuv->data, *u = y + (size_t)w * h, *v = u + (size_t)(w / 2) * (h / 2);
            RAWToI420(frame.data, w * 3, y, w, u, w / 2, v, w / 2, w, h); /* RAW = R,G,B bytes */
            yuv->len = ls_i420_bytes(w, h);
        }
        ls_buf_free(&frame);
        return rc;
    }
    if (!rc) rc = ls_jpeg_encode_rgb(frame.data, w, h, j->req->jpeg_quality, &j->res->frames[i], err);
    ls_buf_free(&frame);
    return rc;
}

static void frame_work(void *arg, int i) {
    frame_job *j = arg;
    int idx = ls_avatar_frame_index(j->m->avatar, j->req->start_frame + i);
    ls_err *err = &j->errs[i];
    j->rcs[i] = j->req->format == LS_FORMAT_PNG ? frame_png(j, i, idx, err) : frame_whole(j, i, idx, err);
}

/* H264: the batch's I420 pictures through the stream's encoder, in frame
 * order (the encoder carries state from frame to frame), each replaced by
 * its access unit. */
static int encode_video(ls_model *m, const ls_infer_req *req, ls_infer_result *res, ls_err *err) {
    if (req->format != LS_FORMAT_H264) return 0;
    assert(req->video);
    (void)m;
    for (int i = 0; i < res->n_frames; i++) {
        ls_buf au = {0};
        int key = 0;
        assert(res->frames[i].len == ls_i420_bytes(ls_avatar_width(m->avatar), ls_avatar_height(m->avatar)));
        if (ls_video_encode(req->video, res->frames[i].data, &au, &key, err) != 0) {
            ls_buf_free(&au);
            return -1;
        }
        ls_buf_free(&res->frames[i]);
        res->frames[i] = au;
        res->keyframes[i] = (unsigned char)key;
    }
    return 0;
}

/* ---- the server-built visual input ---------------------------------------- */

typedef struct {
    ls_model *m;
    const ls_infer_req *req;
    float *visual;  /* batch * 6*S*S, written frame by frame */
    ls_err *errs;
    int *rcs;
} input_job;

/* Build frame idx's 8-bit planes into out: from the crop rows of the frame
 * the request's encoder will read anyway (the PNG path's raw band, the whole
 * decoded frame for JPEG/raw), so no frame is prepared twice. */
static int build_frame_u8(ls_model *m, int idx, ls_format format, uint8_t *out, ls_err *err) {
    const uint8_t *rows;
    size_t stride = (size_t)ls_avatar_width(m->avatar) * 3;
    ls_rect rect;
    if (format == LS_FORMAT_PNG) {
        ls_frame_view v;
        if (ls_avatar_frame_view(m->avatar, idx, &v, err) != 0) return -1;
        rows = v.band;
        rect = (ls_rect){v.rect.x1, 0, v.rect.x2, v.rect.y2 - v.rect.y1};
    } else {
        if (ls_avatar_frame_full(m->avatar, idx, &rows, err) != 0) return -1;
        rect = ls_avatar_rect(m->avatar, idx);
    }
    ls_buf scratch = {0};
    int rc = ls_visual_build_u8(rows, stride, rect, &m->vopts, out, &scratch, err);
    ls_buf_free(&scratch);
    return rc;
}

/* The cached planes of frame idx, built on first use. Two requests racing
 * for one frame may both build it; the first to publish wins. */
static const uint8_t *cached_u8(ls_model *m, int idx, ls_format format, ls_err *err) {
    uint8_t *have = atomic_load_explicit(&m->vcache[idx], memory_order_acquire);
    if (have) return have;
    uint8_t *mine = malloc(ls_visual_u8_bytes(&m->vopts));
    if (!mine) {
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for frame %d's visual input", idx);
        return NULL;
    }
    if (build_frame_u8(m, idx, format, mine, err) != 0) {
        free(mine);
        return NULL;
    }
    if (atomic_compare_exchange_strong_explicit(&m->vcache[idx], &have, mine, memory_order_acq_rel,
                                                memory_order_acquire))
        return mine;
    free(mine); /* another request published first; `have` is its buffer */
    return have;
}

static void input_work(void *arg, int i) {
    input_job *j = arg;
    ls_model *m = j->m;
    int idx = ls_avatar_frame_index(m->avatar, j->req->start_frame + i);
    size_t n = ls_visual_u8_bytes(&m->vopts);
    float *dst = j->visual + (size_t)i * n;
    ls_err *err = &j->errs[i];
    if (m->vcache) {
        const uint8_t *u8 = cached_u8(m, idx, j->req->format, err);
        j->rcs[i] = u8 ? 0 : -1;
        if (u8) ls_visual_to_float(u8, n, dst);
        return;
    }
    uint8_t *u8 = malloc(n);
    if (!u8) {
        j->rcs[i] = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for frame %d's visual input", idx);
        return;
    }
    j->rcs[i] = build_frame_u8(m, idx, j->req->format, u8, err);
    if (!j->rcs[i]) ls_visual_to_float(u8, n, dst);
    free(u8);
}

/* The first failed frame's error, or 0. */
static int first_error(const int *rcs, const ls_err *errs, int n, ls_err *err) {
    for (int i = 0; i < n; i++)
        if (rcs[i]) {
            *err = errs[i];
            return -1;
        }
    return 0;
}

int ls_model_infer(ls_model *m, const ls_infer_req *req, ls_infer_result *res, ls_err *err) {
    memset(res, 0, sizeof *res);
    int audio_shared = 0;
    if (check_request(m, req, &audio_shared, &res->fault, err) != 0) return -1;

    size_t opf = ls_engine_output_per_frame(m->engine);
    size_t b = (size_t)req->batch;
    /* From the worker's tensor cache (tensorbuf.h): ~6 MB at batch 5 that would
     * otherwise be fresh pages every request. */
    size_t pred_cap = 0, visual_cap = 0;
    float *pred = ls_tensor_alloc(b * opf * sizeof(float), &pred_cap);
    float *built = NULL;
    if (req->server_visual)
        built = ls_tensor_alloc(b * ls_engine_visual_per_frame(m->engine) * sizeof(float), &visual_cap);
    ls_err *errs = calloc(b, sizeof *errs);
    int *rcs = calloc(b, sizeof *rcs);
    res->frames = calloc(b, sizeof *res->frames);
    res->keyframes = malloc(b);
    int rc = 0;
    if (!pred || !errs || !rcs || !res->frames || !res->keyframes || (req->server_visual && !built)) {
        rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for a batch of %d", req->batch);
        goto out;
    }
    res->n_frames = req->batch;
    memset(res->keyframes, 1, b);

    const float *visual = req->visual;
    if (req->server_visual) {
        assert(ls_visual_u8_bytes(&m->vopts) == ls_engine_visual_per_frame(m->engine));
        uint64_t ti = ls_mono_ns();
        input_job ij = {.m = m, .req = req, .visual = built, .errs = errs, .rcs = rcs};
        ls_parallel_for(req->batch, input_work, &ij);
        res->input_ms = (double)(ls_mono_ns() - ti) / 1e6;
        if ((rc = first_error(rcs, errs, req->batch, err)) != 0) goto out;
        visual = built;
    }

    uint64_t t0 = ls_mono_ns();
    rc = ls_engine_run(m->engine, visual, req->audio, audio_shared, req->batch, pred, err);
    uint64_t t1 = ls_mono_ns();
    res->inference_ms = (double)(t1 - t0) / 1e6;
    if (rc) goto out;

    frame_job job = {.m = m, .req = req, .pred = pred, .opf = opf, .res = res, .errs = errs, .rcs = rcs};
    ls_parallel_for(req->batch, frame_work, &job);
    rc = first_error(rcs, errs, req->batch, err);
    if (!rc) rc = encode_video(m, req, res, err);
    res->composite_ms = (double)(ls_mono_ns() - t1) / 1e6;
out:
    if (rc) ls_infer_result_free(res);
    free(rcs);
    free(errs);
    if (built) ls_tensor_release(built, visual_cap);
    ls_tensor_release(pred, pred_cap);
    return rc;
}

/* ---- speech in --------------------------------------------------------------- */

/* Encoder windows per ONNX Runtime call: bounds the input buffer (5 KB a
 * window) for long audio while keeping calls few. */
#define ENCODER_CHUNK 64

int ls_model_has_encoder(const ls_model *m) { return m->encoder != NULL; }

void ls_speech_free(ls_speech *s) {
    free(s->mel);
    free(s->feat);
    memset(s, 0, sizeof *s);
}

static int no_encoder(const ls_model *m, ls_err *err) {
    return ls_err_set(err, LS_FAILED_PRECONDITION, "model '%s' has no audio encoder", m->id);
}

int ls_model_encode(ls_model *m, const float *windows, size_t count, float *out, ls_err *err) {
    if (!m->encoder) return no_encoder(m, err);
    int rc = 0;
    for (size_t k = 0; !rc && k < count; k += ENCODER_CHUNK) {
        size_t c = count - k < ENCODER_CHUNK ? count - k : ENCODER_CHUNK;
        rc = ls_encoder_run(m->encoder, windows + k * LS_MEL_BINS * LS_MEL_WINDOW, (int)c, out + k * LS_FEAT_DIM, err);
    }
    return rc;
}

int ls_model_speech(ls_model *m, const float *samples, size_t n, int want_mel, ls_speech *out, ls_err *err) {
    memset(out, 0, sizeof *out);
    if (!m->encoder) return no_encoder(m, err);
    uint64_t t0 = ls_mono_ns();
    size_t T = ls_mel_frames(n), N = 0;
    float *mel = malloc(T * LS_MEL_BINS * sizeof(float));
    if (!mel) return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for %zu mel frames", T);
    int rc = ls_mel_compute(samples, n, mel, err);
    if (!rc) rc = ls_mel_window_count(T, &N, err);
    uint64_t t1 = ls_mono_ns();
    float *feat = NULL, *in = NULL;
    if (!rc) {
        feat = malloc(N * LS_FEAT_DIM * sizeof(float));
        in = ls_alloc_aligned((size_t)ENCODER_CHUNK * LS_MEL_BINS * LS_MEL_WINDOW * sizeof(float));
        if (!feat || !in) rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for %zu encoder windows", N);
    }
    for (size_t k = 0; !rc && k < N; k += ENCODER_CHUNK) {
        size_t c = N - k < ENCODER_CHUNK ? N - k : ENCODER_CHUNK;
        ls_mel_windows(mel, T, k, c, in);
        rc = ls_encoder_run(m->encoder, in, (int)c, feat + k * LS_FEAT_DIM, err);
    }
    free(in);
    if (rc) {
        free(mel);
        free(feat);
        return -1;
    }
    out->mel_frames = T;
    if (want_mel)
        out->mel = mel;
    else
        free(mel);
    out->feat = feat;
    out->n_feat = N;
    out->mel_ms = (double)(t1 - t0) / 1e6;
    out->encoder_ms = (double)(ls_mono_ns() - t1) / 1e6;
    return 0;
}

void ls_speech_windows(const ls_speech *s, size_t first, size_t count, float *out) {
    ls_feat_windows(s->feat, s->n_feat, first, count, out);
}
