/* metrics.h - the server's Prometheus metrics.
 *
 * Two kinds of numbers end up on /metrics:
 *  - events the service layer records as they happen (request outcomes,
 *    inference / composite / load durations), kept here as counters and
 *    fixed-bucket histograms;
 *  - state the registry already keeps (loaded, memory, in flight, eviction
 *    counts, capacity), which is not duplicated here: the caller passes a
 *    registry snapshot taken at scrape time and it is rendered as gauges and
 *    counters. Duplicating it would let the two disagree.
 *
 * Knows the Prometheus text exposition format (version 0.0.4) and the
 * registry's snapshot types; knows nothing of HTTP, gRPC or models.
 *
 * Thread safety: every function may be called from any thread. Recording
 * takes one mutex for a few increments; a scrape holds it while copying the
 * numbers out, so a histogram's buckets, sum and count always agree.
 *
 * Series: model="<id>" for each id given at creation, from the start (a
 * dashboard sees zeros, not missing series). Requests naming any other id
 * (unknown, empty, malformed) are counted under model="(unknown)", one
 * series whatever the client sent, so clients cannot grow the label set. */
#ifndef LS_METRICS_H
#define LS_METRICS_H

#include "common.h"
#include "registry.h"

typedef struct ls_metrics ls_metrics;

/* The label value of requests that name no configured model. */
#define LS_METRICS_UNKNOWN_MODEL "(unknown)"

typedef enum {
    LS_HIST_INFERENCE = 0, /* lipsync_inference_duration_seconds: model run of one request */
    LS_HIST_COMPOSITE,     /* lipsync_composite_duration_seconds: paste + encode of one request */
    LS_HIST_MODEL_LOAD,    /* lipsync_model_load_duration_seconds: one successful load */
    LS_HIST_FEATURES,      /* lipsync_audio_features_duration_seconds: mel + encoder of one speech input */
    LS_HIST_FRAME_LATENCY, /* lipsync_frame_latency_seconds: a session frame sent after the audio it needed */
    LS_HIST_FIRST_FRAME,   /* lipsync_session_first_frame_seconds: session start to its first frame sent */
    LS_HIST_COUNT_
} ls_hist;

/* ids are copied. NULL when out of memory. */
ls_metrics *ls_metrics_create(const char *const *ids, size_t n);
void ls_metrics_destroy(ls_metrics *m);

/* A model added later (config reload): its series start at zero. An id
 * already present is left as it is. Returns 0, or -1 when out of memory
 * (its requests are then counted under "(unknown)"). Series of removed
 * models stay: counters must not go backwards. */
int ls_metrics_add_model(ls_metrics *m, const char *id);

/* One InferBatchComposite request finished with code (model may be NULL). */
void ls_metrics_request(ls_metrics *m, const char *model, ls_code code);

/* One observation in seconds. Ignored for ids not given at creation. */
void ls_metrics_observe(ls_metrics *m, ls_hist h, const char *model, double seconds);

/* Seconds of speech whose features a model computed
 * (lipsync_audio_seconds_total{model}). */
void ls_metrics_audio(ls_metrics *m, const char *model, double seconds);

/* Frames a live session sent (lipsync_session_frames_total{model}), late of
 * them: sent later after their audio than sessions.latency_budget_ms
 * (lipsync_session_late_frames_total{model}). */
void ls_metrics_session_frames(ls_metrics *m, const char *model, size_t frames, size_t late);

/* What the scrape adds besides the registry snapshot. */
typedef struct {
    int queue_depth;   /* requests received and waiting for a worker */
    int64_t renders_live, renders_offline, gate_waits; /* the render gate (gate.h) */
} ls_metrics_extra;

/* Append the whole exposition to out: recorded families, then st[0..n) and
 * tot rendered as gauges/counters. Returns 0, or -1 when out of memory
 * (out then holds a partial text the caller discards). */
int ls_metrics_render(ls_metrics *m, const ls_entry_stats *st, int n, const ls_registry_totals *tot,
                      const ls_metrics_extra *extra, ls_buf *out);

/* The Content-Type of the text ls_metrics_render writes. */
#define LS_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
