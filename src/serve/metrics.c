/* metrics.c - see metrics.h. */
#define _GNU_SOURCE
#include "metrics.h"
#include "tensorbuf.h"

#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* gRPC status codes are 0..16; anything else is counted as UNKNOWN (2). */
#define N_CODES 17
#define CODE_UNKNOWN 2
#define MAX_BUCKETS 16

/* Fixed upper bounds (seconds). Inference and compositing of one request
 * range from a millisecond (batch 1, tiny model) to seconds (batch 32 on a
 * CPU); a load from tens of milliseconds (cached session, few frames) to
 * minutes (a large model on a slow disk). */
static const double REQ_BUCKETS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                     0.25,  0.5,    1,     2.5,  5,     10};
static const double LOAD_BUCKETS[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
/* A session frame leaves tens of ms after its audio when the server keeps
 * up (the latency budget defaults to 150 ms), seconds when it does not; the
 * first frame waits for ~450 ms of lookahead plus any model load. */
static const double FRAME_BUCKETS[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5, 5};
static const double FIRST_BUCKETS[] = {0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60};

typedef struct {
    const char *name, *help;
    const double *bounds;
    int n_bounds;
} hist_def;

static const hist_def HISTS[LS_HIST_COUNT_] = {
    {"lipsync_inference_duration_seconds",
     "Model run time of one successful InferBatchComposite request (whole batch).", REQ_BUCKETS,
     (int)(sizeof REQ_BUCKETS / sizeof REQ_BUCKETS[0])},
    {"lipsync_composite_duration_seconds",
     "Compositing and PNG encoding time of one successful InferBatchComposite request (whole batch).",
     REQ_BUCKETS, (int)(sizeof REQ_BUCKETS / sizeof REQ_BUCKETS[0])},
    {"lipsync_model_load_duration_seconds", "Duration of one successful model load.", LOAD_BUCKETS,
     (int)(sizeof LOAD_BUCKETS / sizeof LOAD_BUCKETS[0])},
    {"lipsync_audio_features_duration_seconds",
     "Mel features + audio encoder time of one speech input (ExtractAudioFeatures, RenderSpeech).", REQ_BUCKETS,
     (int)(sizeof REQ_BUCKETS / sizeof REQ_BUCKETS[0])},
    {"lipsync_frame_latency_seconds",
     "A live session's frame: sent minus the arrival of the last audio (or end) it depends on.", FRAME_BUCKETS,
     (int)(sizeof FRAME_BUCKETS / sizeof FRAME_BUCKETS[0])},
    {"lipsync_session_first_frame_seconds", "A live session: its start message to its first frame sent.",
     FIRST_BUCKETS, (int)(sizeof FIRST_BUCKETS / sizeof FIRST_BUCKETS[0])},
};

typedef struct {
    uint64_t buckets[MAX_BUCKETS + 1]; /* per bucket, not cumulative; last = above every bound */
    double sum;
} hist;

typedef struct {
    char *id;
    uint64_t requests[N_CODES];
    hist h[LS_HIST_COUNT_];
    double audio_seconds;
    uint64_t session_frames, session_late_frames;
} model_series;

struct ls_metrics {
    /* One lock for everything: a record is a few increments, requests take
     * milliseconds, so contention is nil, and a scrape copies a consistent
     * picture (a histogram's count equals its +Inf bucket). */
    pthread_mutex_t mu;
    model_series *models; /* ids given at creation, then the "(unknown)" slot */
    size_t n;
};

ls_metrics *ls_metrics_create(const char *const *ids, size_t n) {
    ls_metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->models = calloc(n + 1, sizeof *m->models);
    if (!m->models) {
        free(m);
        return NULL;
    }
    pthread_mutex_init(&m->mu, NULL);
    m->n = n;
    for (size_t i = 0; i <= n; i++) {
        m->models[i].id = strdup(i < n ? ids[i] : LS_METRICS_UNKNOWN_MODEL);
        if (!m->models[i].id) {
            ls_metrics_destroy(m);
            return NULL;
        }
    }
    return m;
}

void ls_metrics_destroy(ls_metrics *m) {
    if (!m) return;
    for (size_t i = 0; i <= m->n; i++) free(m->models[i].id);
    free(m->models);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

int ls_metrics_add_model(ls_metrics *m, const char *id) {
    char *copy = strdup(id);
    if (!copy) return -1;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n; i++)
        if (!strcmp(m->models[i].id, id)) {
            pthread_mutex_unlock(&m->mu);
            free(copy);
            return 0;
        }
    model_series *grown = realloc(m->models, (m->n + 2) * sizeof *grown);
    if (!grown) {
        pthread_mutex_unlock(&m->mu);
        free(copy);
        return -1;
    }
    /* The "(unknown)" slot stays last. */
    grown[m->n + 1] = grown[m->n];
    memset(&grown[m->n], 0, sizeof grown[m->n]);
    grown[m->n].id = copy;
    m->models = grown;
    m->n++;
    pthread_mutex_unlock(&m->mu);
    return 0;
}

/* Linear: a server has a handful to a few dozen models and the cost is a
 * few string compares per request that runs a neural network. */
static model_series *find(ls_metrics *m, const char *id) {
    if (id)
        for (size_t i = 0; i < m->n; i++)
            if (!strcmp(m->models[i].id, id)) return &m->models[i];
    return NULL;
}

void ls_metrics_request(ls_metrics *m, const char *model, ls_code code) {
    if (!m) return;
    int c = (int)code;
    /* Codes ls_code_name cannot name would render as a second "UNKNOWN" series. */
    if (c < 0 || c >= N_CODES || !strcmp(ls_code_name(code), "UNKNOWN")) c = CODE_UNKNOWN;
    pthread_mutex_lock(&m->mu);
    model_series *s = find(m, model);
    if (!s) s = &m->models[m->n];
    s->requests[c]++;
    pthread_mutex_unlock(&m->mu);
}

void ls_metrics_observe(ls_metrics *m, ls_hist which, const char *model, double seconds) {
    if (!m || which < 0 || which >= LS_HIST_COUNT_) return;
    if (!(seconds >= 0)) seconds = 0; /* NaN or a clock step backwards */
    const hist_def *d = &HISTS[which];
    int b = 0;
    while (b < d->n_bounds && seconds > d->bounds[b]) b++;
    pthread_mutex_lock(&m->mu);
    model_series *s = find(m, model);
    if (s) {
        s->h[which].buckets[b]++;
        s->h[which].sum += seconds;
    }
    pthread_mutex_unlock(&m->mu);
}

void ls_metrics_audio(ls_metrics *m, const char *model, double seconds) {
    if (!m || !(seconds >= 0)) return;
    pthread_mutex_lock(&m->mu);
    model_series *s = find(m, model);
    if (s) s->audio_seconds += seconds;
    pthread_mutex_unlock(&m->mu);
}

void ls_metrics_session_frames(ls_metrics *m, const char *model, size_t frames, size_t late) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    model_series *s = find(m, model);
    if (s) s->session_frames += frames, s->session_late_frames += late;
    pthread_mutex_unlock(&m->mu);
}

/* ---- rendering ---- */

typedef struct {
    ls_buf *out;
    int failed;
} writer;

static void put(writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(writer *w, const char *fmt, ...) {
    if (w->failed) return;
    for (;;) {
        size_t room = w->out->cap - w->out->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(room ? (char *)w->out->data + w->out->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            w->failed = 1;
            return;
        }
        if ((size_t)n < room) {
            w->out->len += (size_t)n;
            return;
        }
        if (ls_buf_reserve(w->out, (size_t)n + 1) != 0) {
            w->failed = 1;
            return;
        }
    }
}

/* A label value with the format's three escapes. Model ids are restricted
 * to [A-Za-z0-9_.-] by the config, but this function does not rely on it. */
static void put_label(writer *w, const char *v) {
    for (const char *c = v; *c; c++) {
        if (*c == '\\')
            put(w, "\\\\");
        else if (*c == '"')
            put(w, "\\\"");
        else if (*c == '\n')
            put(w, "\\n");
        else
            put(w, "%c", *c);
    }
}

static void family(writer *w, const char *name, const char *type, const char *help) {
    put(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{model="id"[,extra]} value */
static void sample(writer *w, const char *name, const char *model, const char *extra, double v) {
    put(w, "%s{model=\"", name);
    put_label(w, model);
    put(w, "\"%s%s} %.17g\n", extra ? "," : "", extra ? extra : "", v);
}

static void plain(writer *w, const char *name, const char *type, const char *help, double v) {
    family(w, name, type, help);
    put(w, "%s %.17g\n", name, v);
}

static int is_loaded(const ls_entry_stats *e) {
    return e->state == LS_STATE_LOADED || e->state == LS_STATE_DRAINING;
}

/* What the entry charges against max_memory_bytes (gpu: max_gpu_memory_bytes):
 * its measured size once loaded, its estimate while loading, nothing
 * otherwise. */
static uint64_t charged_bytes(const ls_entry_stats *e, int gpu) {
    if (is_loaded(e)) return gpu ? e->gpu_memory_measured_bytes : e->memory_measured_bytes;
    if (e->state == LS_STATE_LOADING) return gpu ? e->gpu_memory_estimate_bytes : e->memory_estimate_bytes;
    return 0;
}

int ls_metrics_render(ls_metrics *m, const ls_entry_stats *st, int n, const ls_registry_totals *tot,
                      const ls_metrics_extra *extra, ls_buf *out) {
    writer w = {out, 0};

    /* Copy the recorded numbers out first so the lock is not held while
     * formatting (and growing the buffer). The ids are copied too: a reload
     * may grow the table meanwhile. */
    pthread_mutex_lock(&m->mu);
    size_t ns = m->n + 1, nm = m->n;
    model_series *snap = malloc(ns * sizeof *snap);
    char **ids = calloc(ns, sizeof *ids);
    int ok = snap && ids;
    for (size_t i = 0; ok && i < ns; i++) {
        snap[i] = m->models[i];
        ok = (ids[i] = snap[i].id = strdup(m->models[i].id)) != NULL;
    }
    pthread_mutex_unlock(&m->mu);
    if (!ok) {
        for (size_t i = 0; ids && i < ns; i++) free(ids[i]);
        free(ids);
        free(snap);
        return -1;
    }

    family(&w, "lipsync_requests_total", "counter",
           "InferBatchComposite requests by model and outcome (gRPC status code name).");
    for (size_t i = 0; i < ns; i++) {
        int unknown = i == nm;
        for (int c = 0; c < N_CODES; c++) {
            /* OK always appears for configured models, so rates have a series
             * from the start; other outcomes once they happened. */
            if (!snap[i].requests[c] && (unknown || c != 0)) continue;
            char label[64];
            snprintf(label, sizeof label, "code=\"%s\"", ls_code_name((ls_code)c));
            sample(&w, "lipsync_requests_total", snap[i].id, label, (double)snap[i].requests[c]);
        }
    }

    family(&w, "lipsync_audio_seconds_total", "counter",
           "Seconds of speech (at 16 kHz, after resampling) whose features a model computed.");
    for (size_t i = 0; i < nm; i++) sample(&w, "lipsync_audio_seconds_total", snap[i].id, NULL, snap[i].audio_seconds);
    family(&w, "lipsync_session_frames_total", "counter", "Frames sent by live sessions (StreamSession).");
    for (size_t i = 0; i < nm; i++)
        sample(&w, "lipsync_session_frames_total", snap[i].id, NULL, (double)snap[i].session_frames);
    family(&w, "lipsync_session_late_frames_total", "counter",
           "Session frames sent later after their audio than sessions.latency_budget_ms.");
    for (size_t i = 0; i < nm; i++)
        sample(&w, "lipsync_session_late_frames_total", snap[i].id, NULL, (double)snap[i].session_late_frames);

    for (int k = 0; k < LS_HIST_COUNT_; k++) {
        const hist_def *d = &HISTS[k];
        family(&w, d->name, "histogram", d->help);
        char bname[96], label[48];
        for (size_t i = 0; i < nm; i++) {
            const hist *h = &snap[i].h[k];
            uint64_t cum = 0;
            snprintf(bname, sizeof bname, "%s_bucket", d->name);
            for (int b = 0; b < d->n_bounds; b++) {
                cum += h->buckets[b];
                snprintf(label, sizeof label, "le=\"%g\"", d->bounds[b]);
                sample(&w, bname, snap[i].id, label, (double)cum);
            }
            cum += h->buckets[d->n_bounds];
            sample(&w, bname, snap[i].id, "le=\"+Inf\"", (double)cum);
            snprintf(bname, sizeof bname, "%s_sum", d->name);
            sample(&w, bname, snap[i].id, NULL, h->sum);
            snprintf(bname, sizeof bname, "%s_count", d->name);
            sample(&w, bname, snap[i].id, NULL, (double)cum);
        }
    }
    for (size_t i = 0; i < ns; i++) free(ids[i]);
    free(ids);
    free(snap);

    family(&w, "lipsync_model_loaded", "gauge", "1 while the model is loaded (or draining), else 0.");
    for (int i = 0; i < n; i++) sample(&w, "lipsync_model_loaded", st[i].id, NULL, is_loaded(&st[i]));
    family(&w, "lipsync_model_memory_bytes", "gauge",
           "Memory the model is charged: measured once loaded, the estimate while loading, else 0.");
    for (int i = 0; i < n; i++)
        sample(&w, "lipsync_model_memory_bytes", st[i].id, NULL, (double)charged_bytes(&st[i], 0));
    family(&w, "lipsync_model_gpu_memory_bytes", "gauge",
           "GPU memory the model is charged (models on cuda): measured once loaded, the estimate while "
           "loading, else 0.");
    for (int i = 0; i < n; i++)
        sample(&w, "lipsync_model_gpu_memory_bytes", st[i].id, NULL, (double)charged_bytes(&st[i], 1));
    family(&w, "lipsync_model_in_flight", "gauge",
           "Requests holding the model or waiting for its load.");
    for (int i = 0; i < n; i++) sample(&w, "lipsync_model_in_flight", st[i].id, NULL, st[i].in_flight);
    family(&w, "lipsync_model_live_sessions", "gauge",
           "Live sessions holding the model (it is never evicted nor idle-unloaded while any are).");
    for (int i = 0; i < n; i++)
        sample(&w, "lipsync_model_live_sessions", st[i].id, NULL, st[i].live_sessions);
    family(&w, "lipsync_model_frequency", "gauge",
           "Frequency score the lfu policy evicts by: log2(1 + uses), halving every "
           "capacity.lfu_half_life_minutes; lfu_initial when loaded.");
    for (int i = 0; i < n; i++) sample(&w, "lipsync_model_frequency", st[i].id, NULL, st[i].frequency);
    family(&w, "lipsync_model_evictions_total", "counter",
           "Unloads not asked for: reason=evicted to make room for another model, reason=idle by the "
           "idle sweep.");
    for (int i = 0; i < n; i++) {
        sample(&w, "lipsync_model_evictions_total", st[i].id, "reason=\"evicted\"",
               (double)st[i].eviction_count);
        sample(&w, "lipsync_model_evictions_total", st[i].id, "reason=\"idle\"",
               (double)st[i].idle_unload_count);
    }

    plain(&w, "lipsync_models_loaded", "gauge", "Models loaded, loading or draining.", tot->loaded_models);
    plain(&w, "lipsync_models_max", "gauge", "Capacity in models (capacity.max_models).", tot->max_models);
    plain(&w, "lipsync_memory_bytes", "gauge", "Memory charged by loaded and loading models.",
          (double)tot->memory_bytes);
    plain(&w, "lipsync_memory_max_bytes", "gauge", "Capacity in memory (capacity.max_memory_gb).",
          (double)tot->max_memory_bytes);
    plain(&w, "lipsync_gpu_memory_bytes", "gauge", "GPU memory charged by loaded and loading models on cuda.",
          (double)tot->gpu_memory_bytes);
    plain(&w, "lipsync_gpu_memory_max_bytes", "gauge",
          "Capacity in GPU memory (capacity.max_gpu_memory_gb); 0 = no limit.", (double)tot->max_gpu_memory_bytes);
    plain(&w, "lipsync_queue_depth", "gauge", "Requests received and waiting for a worker thread.",
          extra ? extra->queue_depth : 0);
    plain(&w, "lipsync_model_load_failures_total", "counter", "Model loads that failed.",
          (double)tot->total_load_failures);
#ifdef __GLIBC__
    /* What the process has allocated and not freed, whatever RSS says: glibc
     * keeps freed pages it cannot return (fragmentation), so RSS alone cannot
     * tell a leak from a heap that is merely not compact. */
    struct mallinfo2 mi = mallinfo2();
    if (mi.arena || mi.hblkhd) { /* all zero: another allocator answers (a sanitizer's), not glibc's */
        plain(&w, "lipsync_heap_in_use_bytes", "gauge",
              "Bytes allocated with malloc and not yet freed (glibc mallinfo2 uordblks + hblkhd), all threads.",
              (double)(mi.uordblks + mi.hblkhd));
        plain(&w, "lipsync_heap_free_bytes", "gauge",
              "Bytes glibc holds free in its arenas, not returned to the system (mallinfo2 fordblks).",
              (double)mi.fordblks);
    }
#endif
    if (extra) {
        family(&w, "lipsync_renders_total", "counter",
               "Session and RenderSpeech batches rendered, by class: live (paced sessions) or offline "
               "(RenderSpeech, sessions over 1 s ahead of real time), which waits while live ones run.");
        put(&w, "lipsync_renders_total{class=\"live\"} %.17g\n", (double)extra->renders_live);
        put(&w, "lipsync_renders_total{class=\"offline\"} %.17g\n", (double)extra->renders_offline);
        plain(&w, "lipsync_render_gate_waits_total", "counter",
              "Offline batches that waited for live renders to end (sessions.prioritize_live).",
              (double)extra->gate_waits);
    }
    plain(&w, "lipsync_tensor_cache_bytes", "gauge",
          "Of the heap in use, tensor buffers the worker threads keep for their next requests.",
          (double)ls_tensor_cache_total_bytes());
    return w.failed ? -1 : 0;
}
