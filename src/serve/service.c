/* service.c - see service.h. */
#define _GNU_SOURCE
#include "service.h"

#include <assert.h>
#include <malloc.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evict.h"
#include "gate.h"
#include "audio.h"
#include "health.h"
#include "log.h"
#include "mel.h"
#include "metrics.h"
#include "model.h"
#include "multitenant.pb-c.h"
#include "reflection.h"
#include "speech.h"
#include "video.h"
#include "wire.h"

#define LS_VERSION "0.1.0"

struct ls_service {
    /* The config in force. Replaced as a whole by a reload (SIGHUP); every
     * read of the pointer is an atomic load, and configs are never freed
     * before the service, because a model's loader context and in-flight
     * handlers may still point into an older one. */
    const ls_config *_Atomic cfg;
    const ls_config *start_cfg; /* the engine section's, which a reload does not change */
    ls_config **retired;        /* owned: configs replaced by reloads */
    size_t n_retired;
    ls_registry *reg;
    uint64_t start_ns;
    atomic_int ready;
    atomic_int draining;
    atomic_int sessions;        /* live StreamSession calls */
    ls_metrics *metrics;
    ls_gate *gate;              /* live renders before offline ones */
    uint64_t next_idle_ns, next_report_ns;
};

/* ---- registry loader: ls_model behind the registry's opaque handle ---- */

ls_exec_provider ls_service_model_provider(const ls_config *cfg, const ls_model_config *mc) {
    return mc->execution_provider ? (ls_exec_provider)(mc->execution_provider - 1) : cfg->execution_provider;
}

ls_engine_opts ls_service_engine_opts(const ls_config *cfg, ls_exec_provider p) {
    return (ls_engine_opts){.provider = p,
                            .device_id = cfg->cuda_device_id,
                            .gpu_mem_limit = cfg->gpu_mem_limit_bytes,
                            .cudnn_search = cfg->cudnn_conv_algo_search,
                            .io_binding = cfg->io_binding};
}

ls_model_spec ls_service_model_spec(const ls_config *cfg, const ls_model_config *mc) {
    ls_model_spec spec = {.id = mc->id,
                          .model_path = mc->model_path,
                          .background_dir = mc->background_dir,
                          .crop_rects_path = mc->crop_rects_path,
                          .num_frames = mc->num_frames,
                          .frame_order = mc->frame_order,
                          .channel_bgr = mc->channel_bgr,
                          .paste_margin = mc->paste_margin,
                          .paste_interp = mc->paste_interp,
                          .visual = {.margin = mc->visual.margin,
                                     .interp = mc->visual.interp,
                                     .cache = mc->visual.cache},
                          .encoder_path = mc->encoder_path,
                          .engine = ls_service_engine_opts(cfg, ls_service_model_provider(cfg, mc))};
    memcpy(spec.visual.mask, mc->visual.mask, sizeof spec.visual.mask);
    return spec;
}

/* model_ctx: the model's ls_model_config, in a config that outlives the
 * service's loads. */
static void *loader_load(void *ctx, const char *id, void *model_ctx, ls_mem *mem, ls_err *err) {
    ls_service *s = ctx;
    /* Timed here, where each load happens exactly once, rather than from the
     * leases of the requests that waited for it (several per load). The
     * engine section is the start-up config's: changing it needs a restart. */
    uint64_t t0 = ls_mono_ns();
    ls_model_spec spec = ls_service_model_spec(s->start_cfg, model_ctx);
    void *m = ls_model_load(&spec, s->cfg->png_level, mem, err);
    if (m) ls_metrics_observe(s->metrics, LS_HIST_MODEL_LOAD, id, (double)(ls_mono_ns() - t0) / 1e9);
    return m;
}

/* The registry's declaration of model m: GPU bytes are estimated only for a
 * model that runs on CUDA. */
static ls_model_decl model_decl(const ls_config *cfg, const ls_model_config *m) {
    int gpu = ls_service_model_provider(cfg, m) == LS_EP_CUDA;
    return (ls_model_decl){.id = m->id,
                           .memory_estimate_bytes = m->memory_estimate_bytes,
                           .gpu_memory_estimate_bytes = gpu ? m->gpu_memory_estimate_bytes : 0,
                           .pinned = m->pinned,
                           .model_ctx = (void *)m,
                           .max_in_flight = m->max_concurrent_requests,
                           .max_sessions = m->max_sessions};
}

static void loader_unload(void *ctx, const char *id, void *handle) {
    (void)ctx;
    (void)id;
    ls_model_free(handle);
    /* glibc keeps freed memory in its arenas; a model's frames are hundreds
     * of MB, so give them back to the system now rather than never. */
    malloc_trim(0);
}

ls_service *ls_service_create(const ls_config *cfg, ls_err *err) {
    ls_service *s = calloc(1, sizeof *s);
    if (!s) {
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    s->cfg = cfg;
    s->start_cfg = cfg;
    s->start_ns = ls_mono_ns();
    atomic_init(&s->ready, 0);
    atomic_init(&s->draining, 0);
    const char **ids = calloc(cfg->n_models + 1, sizeof *ids);
    if (ids) {
        for (size_t i = 0; i < cfg->n_models; i++) ids[i] = cfg->models[i].id;
        s->metrics = ls_metrics_create(ids, cfg->n_models);
        free(ids);
    }
    s->gate = ls_gate_new(cfg->sessions_prioritize_live);
    if (!s->metrics || !s->gate) {
        ls_metrics_destroy(s->metrics);
        ls_gate_free(s->gate);
        free(s);
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory creating the metrics");
        return NULL;
    }
    ls_registry_limits lim = {
        .max_models = cfg->max_models,
        .max_memory_bytes = cfg->max_memory_bytes,
        .max_gpu_memory_bytes = cfg->max_gpu_memory_bytes,
        .policy = cfg->policy,
        .idle_unload_ns = (uint64_t)(cfg->idle_unload_seconds * 1e9),
        .load_retry_ns = (uint64_t)(cfg->load_retry_seconds * 1e9),
        .lfu_half_life_ns = (uint64_t)(cfg->lfu_half_life_seconds * 1e9),
        .lfu_initial = cfg->lfu_initial,
        .min_residency_ns = (uint64_t)(cfg->min_residency_seconds * 1e9),
    };
    ls_loader loader = {.load = loader_load, .unload = loader_unload, .ctx = s};
    s->reg = ls_registry_create(&lim, &loader, NULL);
    if (!s->reg) {
        ls_metrics_destroy(s->metrics);
        ls_gate_free(s->gate);
        free(s);
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory creating the registry");
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_models; i++) {
        const ls_model_config *m = &cfg->models[i];
        ls_model_decl d = model_decl(cfg, m);
        if (ls_registry_add(s->reg, &d, err) != 0) {
            ls_service_destroy(s);
            return NULL;
        }
    }
    s->next_idle_ns = s->start_ns + (uint64_t)(cfg->idle_check_seconds * 1e9);
    s->next_report_ns = s->start_ns + (uint64_t)(cfg->stats_report_seconds * 1e9);
    return s;
}

void ls_service_destroy(ls_service *s) {
    if (!s) return;
    ls_registry_destroy(s->reg);
    ls_metrics_destroy(s->metrics);
    ls_gate_free(s->gate);
    for (size_t i = 0; i < s->n_retired; i++) {
        ls_config_free(s->retired[i]);
        free(s->retired[i]);
    }
    free(s->retired);
    free(s);
}

static int same_str(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

static int model_changed(const ls_model_config *a, const ls_model_config *b) {
    return !same_str(a->model_path, b->model_path) || !same_str(a->background_dir, b->background_dir) ||
           !same_str(a->crop_rects_path, b->crop_rects_path) || a->num_frames != b->num_frames ||
           a->pinned != b->pinned || a->memory_estimate_bytes != b->memory_estimate_bytes ||
           a->frame_order != b->frame_order || a->channel_bgr != b->channel_bgr ||
           a->paste_margin != b->paste_margin || a->max_concurrent_requests != b->max_concurrent_requests ||
           a->paste_interp != b->paste_interp || memcmp(&a->visual, &b->visual, sizeof a->visual) != 0 ||
           !same_str(a->encoder_path, b->encoder_path) || a->execution_provider != b->execution_provider ||
           a->gpu_memory_estimate_bytes != b->gpu_memory_estimate_bytes || a->max_sessions != b->max_sessions;
}

int ls_service_reload(ls_service *s, ls_config *next, ls_err *err) {
    const ls_config *cur = s->cfg;
    ls_config **grown = realloc(s->retired, (s->n_retired + 1) * sizeof *grown);
    if (!grown) return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory reloading the config");
    s->retired = grown;
    /* Settings read once at start-up cannot change under a running server. */
    if (!same_str(cur->listen, next->listen) || cur->max_message_bytes != next->max_message_bytes ||
        cur->worker_threads != next->worker_threads || cur->max_queue != next->max_queue ||
        cur->keepalive_seconds != next->keepalive_seconds ||
        cur->keepalive_timeout_seconds != next->keepalive_timeout_seconds ||
        cur->max_connection_idle_seconds != next->max_connection_idle_seconds ||
        cur->ort_intra_threads != next->ort_intra_threads || cur->ort_inter_threads != next->ort_inter_threads ||
        !same_str(cur->tls_cert_file, next->tls_cert_file) || !same_str(cur->tls_key_file, next->tls_key_file) ||
        !same_str(cur->tls_client_ca_file, next->tls_client_ca_file) ||
        !same_str(cur->http_listen, next->http_listen) || cur->http_enabled != next->http_enabled ||
        cur->max_models != next->max_models || cur->max_memory_bytes != next->max_memory_bytes ||
        cur->policy != next->policy || cur->idle_unload_seconds != next->idle_unload_seconds ||
        cur->lfu_half_life_seconds != next->lfu_half_life_seconds || cur->lfu_initial != next->lfu_initial ||
        cur->min_residency_seconds != next->min_residency_seconds ||
        cur->max_gpu_memory_bytes != next->max_gpu_memory_bytes || cur->execution_provider != next->execution_provider ||
        cur->cuda_device_id != next->cuda_device_id || cur->gpu_mem_limit_bytes != next->gpu_mem_limit_bytes ||
        cur->cudnn_conv_algo_search != next->cudnn_conv_algo_search || cur->io_binding != next->io_binding)
        LOG_WARN("config reload: server, tls, http, capacity and engine settings need a restart; only models, auth, "
                 "max_batch and png_level change now");
    int added = 0, removed = 0, changed = 0;
    for (size_t i = 0; i < next->n_models; i++) {
        const ls_model_config *m = &next->models[i];
        const ls_model_config *old = ls_config_find(cur, m->id);
        ls_model_decl d = model_decl(s->start_cfg, m);
        ls_err e;
        if (!old) {
            if (ls_registry_add(s->reg, &d, &e) != 0) {
                LOG_ERROR("config reload: cannot add model '%s': %s", m->id, e.msg);
            } else {
                added++;
                if (ls_metrics_add_model(s->metrics, m->id) != 0)
                    LOG_WARN("config reload: out of memory adding metrics of model '%s'", m->id);
            }
        } else if (model_changed(old, m)) {
            ls_registry_update(s->reg, &d, &e);
            changed++;
        }
        /* Unchanged models keep their context in the old config, which stays alive. */
    }
    for (size_t i = 0; i < cur->n_models; i++)
        if (!ls_config_find(next, cur->models[i].id)) {
            ls_err e;
            ls_registry_remove(s->reg, cur->models[i].id, &e);
            removed++;
        }
    s->retired[s->n_retired++] = next;
    s->cfg = next;
    LOG_INFO("config reloaded from %s: %d models added, %d removed, %d changed (changed ones reload on next use)",
             next->source ? next->source : "?", added, removed, changed);
    return 0;
}

int ls_service_ready(ls_service *s) { return atomic_load(&s->ready) && !atomic_load(&s->draining); }

void ls_service_drain(ls_service *s) { atomic_store(&s->draining, 1); }

int ls_service_metrics(ls_service *s, int queue_depth, ls_buf *out, ls_err *err) {
    ls_entry_stats *st = NULL;
    ls_registry_totals tot;
    int n = ls_registry_snapshot(s->reg, NULL, &st, &tot, err);
    if (n < 0) return -1;
    ls_gate_stats g;
    ls_gate_stats_get(s->gate, &g);
    ls_metrics_extra extra = {.queue_depth = queue_depth,
                              .renders_live = g.renders[LS_GATE_LIVE],
                              .renders_offline = g.renders[LS_GATE_OFFLINE],
                              .gate_waits = g.waits};
    int rc = ls_metrics_render(s->metrics, st, n, &tot, &extra, out);
    free(st);
    if (rc != 0) return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory rendering metrics");
    return 0;
}

void ls_service_preload(ls_service *s) {
    for (size_t i = 0; i < s->cfg->n_models; i++) {
        const ls_model_config *m = &s->cfg->models[i];
        if (!m->preload) continue;
        int already = 0;
        double ms = 0;
        ls_err err;
        if (ls_registry_load(s->reg, m->id, 0, &already, &ms, &err) == 0)
            LOG_INFO("preloaded model '%s' in %.0f ms", m->id, ms);
        else
            LOG_ERROR("preload of model '%s' failed: %s", m->id, err.msg);
    }
    atomic_store(&s->ready, 1);
}

void ls_service_report(ls_service *s) {
    ls_entry_stats *st = NULL;
    ls_registry_totals tot;
    int n = ls_registry_snapshot(s->reg, NULL, &st, &tot, NULL);
    if (n < 0) return;
    LOG_INFO("stats: %d/%d models loaded, %.1f/%.1f MiB, requests %lld, loads %lld (failed %lld), evictions %lld, "
             "idle unloads %lld",
             tot.loaded_models, tot.max_models, (double)tot.memory_bytes / 1048576.0,
             (double)tot.max_memory_bytes / 1048576.0, (long long)tot.total_requests, (long long)tot.total_loads,
             (long long)tot.total_load_failures, (long long)tot.total_evictions, (long long)tot.total_idle_unloads);
    for (int i = 0; i < n; i++)
        if (st[i].usage_count || st[i].state != LS_STATE_UNLOADED)
            LOG_INFO("stats:   %s %s uses %lld avg infer %.1f ms p99 %.1f ms avg composite %.1f ms", st[i].id,
                     ls_state_name(st[i].state), (long long)st[i].usage_count, st[i].avg_inference_ms,
                     st[i].p99_inference_ms, st[i].avg_composite_ms);
    free(st);
}

void ls_service_tick(ls_service *s, uint64_t now) {
    if (now >= s->next_idle_ns) {
        ls_registry_sweep_idle(s->reg);
        s->next_idle_ns = now + (uint64_t)(s->cfg->idle_check_seconds * 1e9);
    }
    if (now >= s->next_report_ns) {
        ls_service_report(s);
        s->next_report_ns = now + (uint64_t)(s->cfg->stats_report_seconds * 1e9);
    }
}

/* ---- helpers ---- */

static double ms_since(uint64_t t0) { return (double)(ls_mono_ns() - t0) / 1e6; }

/* Pack any message into resp. */
static ls_code pack(const ProtobufCMessage *msg, ls_buf *resp, ls_err *err) {
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (ls_buf_reserve(resp, n) != 0) {
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory packing a %zu-byte response", n);
        return LS_RESOURCE_EXHAUSTED;
    }
    resp->len = protobuf_c_message_pack(msg, resp->data);
    return LS_OK;
}

static ls_code bad_message(const char *what, ls_err *err) {
    ls_err_set(err, LS_INVALID_ARGUMENT, "malformed %s message (not valid protobuf for multitenant.%s)", what, what);
    return LS_INVALID_ARGUMENT;
}

/* Model ids are checked here so that a bad id gets INVALID_ARGUMENT, not
 * NOT_FOUND, and so ids that could never be configured are not looked up. */
static int check_model_id(const char *id, ls_err *err) {
    if (!id || !*id) return ls_err_set(err, LS_INVALID_ARGUMENT, "model_id: expected a non-empty model id");
    if (strlen(id) > 128)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "model_id: expected at most 128 characters, got %zu",
                          strlen(id));
    /* The alphabet config ids are restricted to. The id itself is not echoed:
     * it goes into logs and statuses, and a newline in it would forge lines. */
    for (const char *c = id; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
              *c == '.' || *c == '-'))
            return ls_err_set(err, LS_INVALID_ARGUMENT,
                              "model_id: expected characters of [A-Za-z0-9_.-], got byte 0x%02x at position %td",
                              (unsigned char)*c, c - id);
    return 0;
}

/* A load balancer cannot read the protobuf body, so clients also send the
 * model id as x-model-id metadata and the balancer routes by that
 * (docs/SCALING.md). If the two disagree, the call may have reached an
 * instance that does not hold the model, and one of them is a client bug:
 * refuse it rather than quietly load the avatar on the wrong instance.
 * Either may be absent (older clients send no metadata; GetModelStats of
 * everything names no model). The metadata is not echoed (log lines). */
static int check_routing(const ls_call_info *call, const char *id, ls_err *err) {
    if (!call || !call->routing_model || !id || !*id || !strcmp(call->routing_model, id)) return 0;
    return ls_err_set(err, LS_INVALID_ARGUMENT,
                      "x-model-id metadata (%zu bytes) does not match model_id '%s': a load balancer routes "
                      "by the metadata, so both must name the same model",
                      strlen(call->routing_model), id);
}

/* Tenant keys (auth.h). With auth off, everyone may do everything. A key
 * that may not use a model is told PERMISSION_DENIED with the same words
 * whether or not the model exists, so keys cannot probe other tenants' ids.
 * *who is the caller's key (NULL with auth off). */
static int authorize(ls_service *s, const ls_call_info *call, const char *model_id, int need_admin,
                     const ls_auth_key **who, ls_err *err) {
    if (who) *who = NULL;
    const ls_auth *a = &s->cfg->auth;
    if (!a->enabled) return 0;
    const ls_auth_key *k = ls_auth_identify(a, call ? call->authorization : NULL, err);
    if (!k) return -1;
    if (need_admin && !k->admin)
        return ls_err_set(err, LS_PERMISSION_DENIED, "key '%s' may not load or unload models (admin keys only)",
                          k->name);
    if (model_id && !ls_auth_allows(k, model_id))
        return ls_err_set(err, LS_PERMISSION_DENIED, "model '%s' is not available to key '%s'", model_id, k->name);
    if (who) *who = k;
    return 0;
}

/* Output format of a request: its own (name of len bytes, "" = none), else
 * the model's configured one; jpeg_quality 0 = the model's. */
static const char *const FORMAT_NAMES[] = {"png", "jpeg", "raw", "h264"}; /* order of ls_format */

static int resolve_format(const ls_config *cfg, const char *id, const char *name, size_t len, int jpeg_quality,
                          int video, ls_format *format, int *quality, ls_err *err) {
    const ls_model_config *mc = ls_config_find(cfg, id);
    *format = mc ? mc->output_format : LS_FORMAT_PNG;
    *quality = mc ? mc->jpeg_quality : 90;
    if (len) {
        int found = -1;
        for (int k = 0; k < (int)(sizeof FORMAT_NAMES / sizeof *FORMAT_NAMES); k++)
            if (len == strlen(FORMAT_NAMES[k]) && !strcmp(name, FORMAT_NAMES[k])) found = k;
        if (found == LS_FORMAT_H264 && !video)
            return ls_err_set(err, LS_INVALID_ARGUMENT,
                              "output_format: h264 is a stream's format (StreamSession or RenderSpeech: one encoder "
                              "per stream); expected png, jpeg or raw here");
        if (found < 0)
            return ls_err_set(err, LS_INVALID_ARGUMENT, "output_format: expected png, jpeg or raw%s, got %zu bytes '%.8s'",
                              video ? " or h264" : "", len, check_model_id(name, NULL) == 0 ? name : "?");
        *format = (ls_format)found;
    }
    if (jpeg_quality) {
        if (jpeg_quality < 1 || jpeg_quality > 100)
            return ls_err_set(err, LS_INVALID_ARGUMENT,
                              "jpeg_quality: expected 1..100 (0 = the model's default), got %d", jpeg_quality);
        *quality = jpeg_quality;
    }
    return 0;
}

static const char *format_name(ls_format f) {
    return FORMAT_NAMES[f];
}

/* ---- the model's input refusals, in the client's terms ---- */

/* How a request's client sent its two tensors (ls_input order: visual,
 * audio): the field and its bytes per value (0 = float32, counted in
 * floats). Server-built inputs are named as the float32 fields. */
typedef struct {
    const char *field[2];
    size_t value_bytes[2];
} tensor_fields;

static const tensor_fields FLOAT_FIELDS = {{"visual_frames", "audio_features"}, {0, 0}};

/* ls_model_infer, with a refused input (res->fault) reworded to name the
 * client's field and count in its units: floats for the float32 fields,
 * bytes for the compact ones (what the client counts). */
static int model_infer(ls_model *m, const ls_infer_req *ir, const tensor_fields *tf, ls_infer_result *res,
                       ls_err *err) {
    if (ls_model_infer(m, ir, res, err) == 0) return 0;
    const ls_input_fault *f = &res->fault;
    if (f->kind == LS_FAULT_NONE) return -1;
    const char *name = tf->field[f->input];
    size_t es = tf->value_bytes[f->input] ? tf->value_bytes[f->input] : 1;
    const char *unit = tf->value_bytes[f->input] ? "bytes" : "floats";
    size_t b = (size_t)f->batch;
    if (f->kind == LS_FAULT_NON_FINITE)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "%s[%td] is not finite (NaN or Inf)", name, f->index);
    if (f->input == LS_INPUT_VISUAL) {
        int P = ls_engine_pred_size(ls_model_engine(m));
        return ls_err_set(err, LS_INVALID_ARGUMENT, "%s: expected batch_size %d x 6x%dx%d = %zu %s, got %zu", name,
                          f->batch, P, P, b * f->per_frame * es, unit, f->got * es);
    }
    return ls_err_set(err, LS_INVALID_ARGUMENT,
                      "%s: expected batch_size %d x %zu = %zu %s (one window per frame) "
                      "or %zu (one window for all), got %zu",
                      name, f->batch, f->per_frame, b * f->per_frame * es, unit, f->per_frame * es, f->got * es);
}

/* ---- InferBatchComposite ---- */

static ls_code infer_fail(ls_err *err, ls_reply *reply, double total_ms) {
    Multitenant__CompositeBatchResponse r = MULTITENANT__COMPOSITE_BATCH_RESPONSE__INIT;
    r.success = 0;
    r.error = err->msg;
    r.total_time_ms = total_ms;
    ls_err dummy;
    ls_buf b = {0};
    if (pack(&r.base, &b, &dummy) == LS_OK && ls_reply_take(reply, &b) != 0) ls_buf_free(&b);
    return err->code;
}

/* The request arrives as gRPC's slices and is decoded without flattening
 * (wire.h): each tensor is copied once, into the buffer ONNX Runtime reads,
 * and checked for NaN/Inf on the way. The reply is the PNGs themselves,
 * each behind its protobuf field header, plus the scalar fields. */
static ls_code h_infer_spans(void *ctx, const ls_call_info *call, const ls_span *spans, size_t n_spans,
                             ls_reply *reply, ls_err *err) {
    ls_service *s = ctx;
    const ls_config *cfg = s->cfg;
    uint64_t t0 = call && call->received_mono_ns ? call->received_mono_ns : ls_mono_ns();
    ls_infer_request q;
    if (ls_infer_request_decode(spans, n_spans, &q, err) != 0) {
        ls_metrics_request(s->metrics, NULL, err->code);
        LOG_WARN("InferBatchComposite: %s: %s", ls_code_name(err->code), err->msg);
        return infer_fail(err, reply, ms_since(t0));
    }

    ls_lease lease = {0};
    int leased = 0;
    ls_infer_result res = {0};
    ls_code code = LS_OK;
    const char *id = q.model_id;
    if (q.model_id_has_nul || q.model_id_len > 128) {
        ls_err_set(err, LS_INVALID_ARGUMENT,
                   "model_id: expected at most 128 characters of [A-Za-z0-9_.-], got %zu bytes", q.model_id_len);
        goto fail;
    }
    if (check_model_id(id, err) != 0) goto fail;
    if (check_routing(call, id, err) != 0) goto fail;
    if (authorize(s, call, id, 0, NULL, err) != 0) goto fail;
    if (q.batch_size < 1 || q.batch_size > cfg->max_batch) {
        ls_err_set(err, LS_INVALID_ARGUMENT, "batch_size: expected 1..%d, got %d", cfg->max_batch, q.batch_size);
        goto fail;
    }
    if (q.start_frame_idx < 0) {
        ls_err_set(err, LS_INVALID_ARGUMENT, "start_frame_idx: expected >= 0, got %d", q.start_frame_idx);
        goto fail;
    }
    ls_format format;
    int quality;
    if (resolve_format(cfg, id, q.output_format, q.output_format_len, q.jpeg_quality, 0, &format, &quality, err) != 0)
        goto fail;
    if (!q.visual_seen && !q.audio_seen) {
        ls_err_set(err, LS_INVALID_ARGUMENT,
                   "request carries no tensors: expected audio_features (or audio_features_f16); visual_frames "
                   "may be left out for the server to build it from the avatar's frames");
        goto fail;
    }
    if (ls_registry_acquire(s->reg, id, &lease, err) != 0) goto fail;
    leased = 1;
    const ls_avatar *av = ls_model_avatar(lease.handle);
    int frame_w = ls_avatar_width(av), frame_h = ls_avatar_height(av);

    ls_infer_req ir = {.server_visual = !q.visual_seen,
                       .visual = q.visual,
                       .n_visual = q.n_visual,
                       .audio = q.audio,
                       .n_audio = q.n_audio,
                       .batch = q.batch_size,
                       .start_frame = q.start_frame_idx,
                       .png_level = cfg->png_level,
                       .format = format,
                       .jpeg_quality = quality,
                       .finite_checked = 1,
                       .visual_bad = q.visual_bad,
                       .audio_bad = q.audio_bad};
    tensor_fields tf = {{ls_tensor_field(1, q.visual_enc), ls_tensor_field(0, q.audio_enc)},
                        {q.visual_enc == LS_ENC_F32 ? 0 : ls_tensor_enc_size(q.visual_enc),
                         q.audio_enc == LS_ENC_F32 ? 0 : ls_tensor_enc_size(q.audio_enc)}};
    int rc = model_infer(lease.handle, &ir, &tf, &res, err);
    int loaded_now = lease.loaded_now; /* release clears the lease */
    double load_ms = lease.load_ms;
    ls_registry_release(s->reg, &lease, rc == 0, res.inference_ms, res.composite_ms);
    leased = 0;
    if (rc != 0) {
        /* Faults of the model itself (a frame file, ONNX Runtime) name it;
         * the request's own mistakes (INVALID_ARGUMENT) are about the request. */
        if (err->code != LS_INVALID_ARGUMENT) ls_err_prefix(err, "model '%s'", id);
        goto fail;
    }

    /* composited_frames (field 1): header + the PNG buffer, handed over. */
    for (int i = 0; i < res.n_frames; i++) {
        if (ls_reply_field_header(reply, 1, res.frames[i].len) != 0 || ls_reply_take(reply, &res.frames[i]) != 0) {
            ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory building the response");
            goto fail;
        }
    }
    Multitenant__CompositeBatchResponse r = MULTITENANT__COMPOSITE_BATCH_RESPONSE__INIT;
    r.inference_time_ms = res.inference_ms;
    r.composite_time_ms = res.composite_ms;
    r.input_time_ms = res.input_ms;
    r.model_loaded = loaded_now;
    r.model_load_time_ms = load_ms;
    r.success = 1;
    r.error = "";
    r.output_format = (char *)format_name(format);
    r.frame_width = frame_w;
    r.frame_height = frame_h;
    r.total_time_ms = ms_since(t0);
    ls_buf tail = {0};
    code = pack(&r.base, &tail, err);
    if (code == LS_OK && ls_reply_take(reply, &tail) != 0) {
        ls_buf_free(&tail);
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory building the response");
        goto fail;
    }
    ls_metrics_request(s->metrics, id, code);
    if (code == LS_OK) {
        ls_metrics_observe(s->metrics, LS_HIST_INFERENCE, id, res.inference_ms / 1e3);
        ls_metrics_observe(s->metrics, LS_HIST_COMPOSITE, id, res.composite_ms / 1e3);
    }
    ls_infer_result_free(&res);
    ls_infer_request_free(&q);
    return code;

fail:
    if (leased) ls_registry_release(s->reg, &lease, 0, 0, 0);
    ls_infer_result_free(&res);
    ls_reply_free(reply);
    if (err->code == LS_OK) err->code = LS_INTERNAL;
    LOG_WARN("InferBatchComposite model '%s' batch %d: %s: %s", check_model_id(id, NULL) == 0 ? id : "(invalid id)",
             q.batch_size, ls_code_name(err->code), err->msg);
    ls_metrics_request(s->metrics, check_model_id(id, NULL) == 0 ? id : NULL, err->code);
    ls_infer_request_free(&q);
    return infer_fail(err, reply, ms_since(t0));
}

/* Flat-bytes form (gRPC-Web): one span in, the reply's pieces joined. */
static ls_code h_infer(void *ctx, const ls_call_info *call, const uint8_t *req, size_t len, ls_buf *resp,
                       ls_err *err) {
    ls_span one = {req, len};
    ls_reply reply = {0};
    ls_code code = h_infer_spans(ctx, call, &one, 1, &reply, err);
    if (ls_buf_reserve(resp, ls_reply_len(&reply)) == 0)
        for (size_t i = 0; i < reply.n; i++) ls_buf_append(resp, reply.pieces[i].data, reply.pieces[i].len);
    ls_reply_free(&reply);
    return code;
}

/* ---- speech in: ExtractAudioFeatures, RenderSpeech ---- */

/* AudioInput -> 16 kHz mono samples (audio.h). Exactly one of wav / pcm. */
static int decode_speech(const ls_config *cfg, const Multitenant__AudioInput *a, ls_audio *out, ls_err *err) {
    memset(out, 0, sizeof *out);
    if (!a)
        return ls_err_set(err, LS_INVALID_ARGUMENT,
                          "audio: expected an AudioInput with wav (RIFF WAVE bytes) or pcm (raw samples)");
    int wav = a->wav.len > 0, pcm = a->pcm.len > 0;
    if (wav && pcm) return ls_err_set(err, LS_INVALID_ARGUMENT, "audio: expected exactly one of wav and pcm, got both");
    if (!wav && !pcm)
        return ls_err_set(err, LS_INVALID_ARGUMENT,
                          "audio: expected wav (RIFF WAVE bytes) or pcm (raw samples), got neither");
    int rc = wav ? ls_audio_decode_wav(a->wav.data, a->wav.len, cfg->audio_max_seconds, out, err)
                 : ls_audio_decode_pcm(a->pcm.data, a->pcm.len, a->pcm_encoding ? a->pcm_encoding : "",
                                       a->sample_rate, a->channels, cfg->audio_max_seconds, out, err);
    if (rc) ls_err_prefix(err, "audio.%s", wav ? "wav" : "pcm");
    return rc;
}

/* floats as little-endian float32 bytes, appended to b. */
static int put_f32le(ls_buf *b, const float *v, size_t n) {
    if (ls_buf_reserve(b, n * 4) != 0) return -1;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(b->data + b->len, v, n * 4);
#else
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        for (int k = 0; k < 4; k++) b->data[b->len + i * 4 + k] = (uint8_t)(u >> (8 * k));
    }
#endif
    b->len += n * 4;
    return 0;
}

#define WINDOW_FLOATS (LS_FEAT_WINDOW * LS_FEAT_DIM) /* one frame's U-Net window: 32 x 16 x 16 */

/* 0 when the held model takes speech, else FAILED_PRECONDITION naming the
 * setting it lacks. */
static int check_speech(const ls_model *m, ls_err *err) {
    if (ls_model_has_encoder(m)) return 0;
    const char *id = ls_model_id(m);
    return ls_err_set(err, LS_FAILED_PRECONDITION,
                      "model '%s' has no audio encoder: speech needs models.%s.audio_encoder.model_path", id, id);
}

/* Speech phases shared by both RPCs: check the id and the key, decode the
 * audio, lease the model (loading it if needed), compute the features. On
 * success the caller owns *lease (release it) and *sp. */
static int speech_features(ls_service *s, const ls_call_info *call, const char *id,
                           const Multitenant__AudioInput *audio, int want_mel, ls_lease *lease, ls_speech *sp,
                           double *audio_seconds, ls_err *err) {
    const ls_config *cfg = s->cfg;
    if (check_model_id(id, err) != 0 || check_routing(call, id, err) != 0 || authorize(s, call, id, 0, NULL, err) != 0)
        return -1;
    ls_audio pcm;
    if (decode_speech(cfg, audio, &pcm, err) != 0) return -1;
    *audio_seconds = (double)pcm.n / LS_MEL_RATE;
    if (ls_registry_acquire(s->reg, id, lease, err) != 0) {
        ls_audio_free(&pcm);
        return -1;
    }
    int rc = check_speech(lease->handle, err);
    if (!rc) rc = ls_model_speech(lease->handle, pcm.samples, pcm.n, want_mel, sp, err);
    ls_audio_free(&pcm);
    if (rc) {
        ls_registry_release(s->reg, lease, 0, 0, 0);
        return -1;
    }
    ls_metrics_audio(s->metrics, id, *audio_seconds);
    ls_metrics_observe(s->metrics, LS_HIST_FEATURES, id, (sp->mel_ms + sp->encoder_ms) / 1e3);
    return 0;
}

static ls_code h_features(void *ctx, const ls_call_info *call, const uint8_t *req, size_t len, ls_buf *resp,
                          ls_err *err) {
    ls_service *s = ctx;
    Multitenant__AudioFeaturesRequest *q = multitenant__audio_features_request__unpack(NULL, len, req);
    if (!q) return bad_message("AudioFeaturesRequest", err);
    ls_lease lease = {0};
    ls_speech sp = {0};
    double secs = 0;
    ls_buf mel = {0}, feat = {0}, win = {0};
    float *w = NULL;
    int rc = speech_features(s, call, q->model_id, q->audio, q->include_mel, &lease, &sp, &secs, err);
    if (rc == 0) {
        ls_registry_release(s->reg, &lease, 1, 0, 0);
        size_t frames = sp.n_feat + 2;
        uint64_t win_bytes = (uint64_t)frames * WINDOW_FLOATS * 4;
        if (q->include_windows && win_bytes > s->cfg->max_message_bytes)
            rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED,
                            "include_windows: %zu frames of windows are %llu bytes, over max_message_mb; ask for "
                            "encoder_outputs alone (windows are rows [i-8, i+8) of them, padded)",
                            frames, (unsigned long long)win_bytes);
        if (!rc && (put_f32le(&feat, sp.feat, sp.n_feat * LS_FEAT_DIM) != 0 ||
                    (sp.mel && put_f32le(&mel, sp.mel, sp.mel_frames * LS_MEL_BINS) != 0)))
            rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory building the response");
        if (!rc && q->include_windows) {
            if (!(w = malloc(frames * WINDOW_FLOATS * sizeof(float))))
                rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for %zu windows", frames);
            else {
                ls_speech_windows(&sp, 0, frames, w);
                if (put_f32le(&win, w, frames * WINDOW_FLOATS) != 0)
                    rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory building the response");
            }
        }
    }
    ls_code code = rc ? err->code : LS_OK;
    if (!rc) {
        Multitenant__AudioFeaturesResponse r = MULTITENANT__AUDIO_FEATURES_RESPONSE__INIT;
        r.num_frames = (int32_t)(sp.n_feat + 2);
        r.mel_frames = (int32_t)sp.mel_frames;
        r.mel = (ProtobufCBinaryData){mel.len, mel.data};
        r.encoder_outputs = (ProtobufCBinaryData){feat.len, feat.data};
        r.windows = (ProtobufCBinaryData){win.len, win.data};
        r.fps = LS_VIDEO_FPS;
        r.audio_seconds = secs;
        r.feature_time_ms = sp.mel_ms + sp.encoder_ms;
        code = pack(&r.base, resp, err);
    } else {
        LOG_WARN("ExtractAudioFeatures model '%s': %s: %s",
                 check_model_id(q->model_id, NULL) == 0 ? q->model_id : "(invalid id)", ls_code_name(code), err->msg);
    }
    free(w);
    ls_buf_free(&mel);
    ls_buf_free(&feat);
    ls_buf_free(&win);
    ls_speech_free(&sp);
    multitenant__audio_features_request__free_unpacked(q, NULL);
    return code;
}

/* The model request for count frames of speech windows (finite: they come
 * from the encoder) at avatar position start, visual input server-built. */
static ls_infer_req speech_req(const ls_service *s, const float *windows, size_t count, int64_t start,
                               ls_format format, int quality) {
    return (ls_infer_req){.server_visual = 1,
                          .audio = windows,
                          .n_audio = count * WINDOW_FLOATS,
                          .batch = (int)count,
                          .start_frame = start,
                          .png_level = s->cfg->png_level,
                          .format = format,
                          .jpeg_quality = quality,
                          .finite_checked = 1,
                          .visual_bad = -1,
                          .audio_bad = -1};
}

/* H.264 options of a stream from its request's two fields (0 = default);
 * width and height are the avatar's, filled in once the model is held. */
static ls_video_opts video_opts(int32_t kbps, int32_t keyint) {
    return (ls_video_opts){.fps = LS_VIDEO_FPS,
                           .bitrate_kbps = kbps ? kbps : LS_VIDEO_DEFAULT_KBPS,
                           .keyframe_interval = keyint ? keyint : LS_VIDEO_DEFAULT_KEYINT};
}

/* The two options in range, the message naming the request's field as
 * `where` + its name. Checked before anything is committed (ls_video_open
 * checks again, in its own terms). */
static int check_video_opts(const ls_video_opts *o, const char *where, ls_err *err) {
    if (o->bitrate_kbps < LS_VIDEO_MIN_KBPS || o->bitrate_kbps > LS_VIDEO_MAX_KBPS)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "%svideo_bitrate_kbps: expected %d..%d (0 = %d), got %d", where,
                          LS_VIDEO_MIN_KBPS, LS_VIDEO_MAX_KBPS, LS_VIDEO_DEFAULT_KBPS, o->bitrate_kbps);
    if (o->keyframe_interval < 1 || o->keyframe_interval > LS_VIDEO_MAX_KEYINT)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "%skeyframe_interval_frames: expected 1..%d (0 = %d), got %d",
                          where, LS_VIDEO_MAX_KEYINT, LS_VIDEO_DEFAULT_KEYINT, o->keyframe_interval);
    return 0;
}

/* Open a stream's encoder for the held model's avatar. A size the encoder
 * refuses is the model's precondition, not the request's argument. */
static ls_video *open_video(ls_video_opts *vo, ls_model *m, ls_err *err) {
    const ls_avatar *av = ls_model_avatar(m);
    vo->width = ls_avatar_width(av);
    vo->height = ls_avatar_height(av);
    ls_video *v = ls_video_open(vo, err);
    if (!v && err->code == LS_INVALID_ARGUMENT) err->code = LS_FAILED_PRECONDITION;
    return v;
}

/* One RenderSpeech response: frames [first, first + count) of the speech,
 * packed and handed to emit. Returns 0, -1 with err set, or 1 when the
 * client has gone. */
static int render_batch(ls_service *s, ls_model *m, const ls_speech *sp, size_t first, size_t count, int64_t start,
                        ls_format format, int quality, ls_video *video, float *win, double feature_ms,
                        ls_emit_fn emit, void *ectx, double *inf_ms, double *comp_ms, ls_err *err) {
    ls_speech_windows(sp, first, count, win);
    ls_infer_req ir = speech_req(s, win, count, start + (int64_t)first, format, quality);
    ir.video = video;
    ls_infer_result res;
    /* A whole utterance at once: offline work, behind live sessions. */
    ls_gate_enter(s->gate, LS_GATE_OFFLINE, 1);
    int failed = model_infer(m, &ir, &FLOAT_FIELDS, &res, err) != 0;
    ls_gate_leave(s->gate, LS_GATE_OFFLINE);
    if (failed) return -1;
    *inf_ms += res.inference_ms;
    *comp_ms += res.composite_ms;
    ProtobufCBinaryData *frames = calloc(count, sizeof *frames);
    protobuf_c_boolean *keys = video ? calloc(count, sizeof *keys) : NULL;
    int rc = 0;
    if (!frames || (video && !keys)) {
        rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory building a response");
    } else {
        for (size_t i = 0; i < count; i++) frames[i] = (ProtobufCBinaryData){res.frames[i].len, res.frames[i].data};
        for (size_t i = 0; keys && i < count; i++) keys[i] = res.keyframes[i];
        const ls_avatar *av = ls_model_avatar(m);
        Multitenant__RenderSpeechResponse r = MULTITENANT__RENDER_SPEECH_RESPONSE__INIT;
        r.first_frame_index = (int32_t)first;
        r.n_frames = count;
        r.frames = frames;
        r.output_format = (char *)format_name(format);
        r.frame_width = ls_avatar_width(av);
        r.frame_height = ls_avatar_height(av);
        r.inference_time_ms = res.inference_ms;
        r.composite_time_ms = res.composite_ms;
        r.input_time_ms = res.input_ms;
        r.total_frames = (int32_t)(sp->n_feat + 2);
        r.feature_time_ms = first == 0 ? feature_ms : 0;
        r.n_keyframes = keys ? count : 0;
        r.keyframes = keys;
        r.codec = (char *)(video && first == 0 ? ls_video_codec(video) : "");
        ls_buf out = {0};
        if (pack(&r.base, &out, err) != LS_OK)
            rc = -1;
        else if (out.len > s->cfg->max_message_bytes)
            rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED,
                            "a response of %zu frames is %zu bytes, over max_message_mb: use a smaller batch_size",
                            count, out.len);
        else if (emit(ectx, out.data, out.len) != 0)
            rc = 1;
        ls_buf_free(&out);
    }
    free(frames);
    free(keys);
    ls_infer_result_free(&res);
    if (rc == 0) {
        ls_metrics_observe(s->metrics, LS_HIST_INFERENCE, ls_model_id(m), res.inference_ms / 1e3);
        ls_metrics_observe(s->metrics, LS_HIST_COMPOSITE, ls_model_id(m), res.composite_ms / 1e3);
    }
    return rc;
}

/* RenderSpeech, phases: parse -> features -> render batch by batch -> end.
 * Each batch leaves as soon as it is composited, so the first frames are on
 * their way while the rest are computed; a client that goes away stops it at
 * the next batch. */
static ls_code h_render(void *ctx, const ls_call_info *call, const uint8_t *req, size_t len, ls_emit_fn emit,
                        void *ectx, ls_err *err) {
    ls_service *s = ctx;
    const ls_config *cfg = s->cfg;
    Multitenant__RenderSpeechRequest *q = multitenant__render_speech_request__unpack(NULL, len, req);
    if (!q) return bad_message("RenderSpeechRequest", err);
    const char *id = q->model_id;
    int batch = q->batch_size ? q->batch_size : 5;
    ls_format format = LS_FORMAT_PNG;
    int quality = 90, rc = 0, leased = 0;
    ls_lease lease = {0};
    ls_speech sp = {0};
    double secs = 0, inf_ms = 0, comp_ms = 0;
    float *win = NULL;
    ls_video *video = NULL;
    ls_video_opts vo = video_opts(q->video_bitrate_kbps, q->keyframe_interval_frames);
    if (batch < 1 || batch > cfg->max_batch)
        rc = ls_err_set(err, LS_INVALID_ARGUMENT, "batch_size: expected 1..%d (0 = 5), got %d", cfg->max_batch, batch);
    else if (q->start_frame_idx < 0)
        rc = ls_err_set(err, LS_INVALID_ARGUMENT, "start_frame_idx: expected >= 0, got %d", q->start_frame_idx);
    else if (check_model_id(id, err) != 0)
        rc = -1;
    else
        rc = resolve_format(cfg, id, q->output_format, q->output_format ? strlen(q->output_format) : 0,
                            q->jpeg_quality, 1, &format, &quality, err);
    /* Before the model is leased: a bad option costs no load. */
    if (!rc && format == LS_FORMAT_H264) rc = check_video_opts(&vo, "", err);
    if (!rc) rc = speech_features(s, call, id, q->audio, 0, &lease, &sp, &secs, err);
    if (!rc) {
        leased = 1;
        size_t apf = ls_engine_audio_per_frame(ls_model_engine(lease.handle));
        if (apf != WINDOW_FLOATS)
            rc = ls_err_set(err, LS_FAILED_PRECONDITION,
                            "model '%s' takes %zu audio values per frame; speech windows are 32x16x16 = %d", id, apf,
                            WINDOW_FLOATS);
        else if (!(win = ls_alloc_aligned((size_t)batch * WINDOW_FLOATS * sizeof(float))))
            rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for a batch of %d windows", batch);
        else if (format == LS_FORMAT_H264 && !(video = open_video(&vo, lease.handle, err)))
            rc = -1;
    }
    size_t total = sp.n_feat + 2, sent = 0;
    for (size_t first = 0; !rc && first < total; first += (size_t)batch) {
        size_t count = total - first < (size_t)batch ? total - first : (size_t)batch;
        rc = render_batch(s, lease.handle, &sp, first, count, q->start_frame_idx, format, quality, video, win,
                          sp.mel_ms + sp.encoder_ms, emit, ectx, &inf_ms, &comp_ms, err);
        if (rc == 1) rc = ls_err_set(err, LS_CANCELLED, "client went away after %zu of %zu frames", sent, total);
        if (!rc) sent += count;
    }
    ls_video_close(video);
    if (leased) ls_registry_release(s->reg, &lease, rc == 0, inf_ms, comp_ms);
    ls_code code = rc ? err->code : LS_OK;
    if (rc && err->code != LS_INVALID_ARGUMENT && err->code != LS_CANCELLED && leased)
        ls_err_prefix(err, "model '%s'", id);
    ls_metrics_request(s->metrics, check_model_id(id, NULL) == 0 ? id : NULL, code);
    if (rc)
        LOG_WARN("RenderSpeech model '%s': %s after %zu of %zu frames: %s",
                 check_model_id(id, NULL) == 0 ? id : "(invalid id)", ls_code_name(code), sent, total, err->msg);
    else
        LOG_INFO("RenderSpeech model '%s': %.2f s of speech, %zu frames", id, secs, total);
    free(win);
    ls_speech_free(&sp);
    multitenant__render_speech_request__free_unpacked(q, NULL);
    return code;
}

/* RenderSpeech on the gRPC port: a streaming call whose one request is read
 * here, then the same handler, sending through the stream. */
static int stream_emit(void *ectx, const uint8_t *msg, size_t len) { return ls_stream_send(ectx, msg, len); }

static ls_code h_render_grpc(void *ctx, const ls_call_info *call, ls_stream *st, ls_err *err) {
    ls_buf msg = {0};
    int got = ls_stream_recv(st, &msg);
    if (got <= 0) {
        ls_buf_free(&msg);
        if (got < 0) ls_err_set(err, LS_CANCELLED, "cancelled before the request arrived");
        else ls_err_set(err, LS_INVALID_ARGUMENT, "expected one RenderSpeechRequest, got none");
        return err->code;
    }
    ls_code code = h_render(ctx, call, msg.data, msg.len, stream_emit, st, err);
    ls_buf_free(&msg);
    return code;
}

/* ---- StreamSession: a live session ---- */

/* Latency percentile of a session (nearest rank over the frames sent). */
static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    ls_service *s;
    ls_stream *st;
    const char *id;
    ls_session_hold hold;
    ls_speech_stream *sp;
    ls_resampler *rs;     /* start.sample_rate -> 16 kHz (a copy at 16 kHz) */
    int rate;
    size_t in_samples;    /* at start.sample_rate, for audio.max_seconds */
    ls_video *video;      /* h264: the session's encoder */
    ls_format format;
    int quality, batch, channels, f32;
    int64_t start;
    float *win;           /* batch windows */
    double *lat;          /* per frame sent: ms from its audio's arrival */
    size_t n_lat, cap_lat;
    uint64_t audio_ns;    /* arrival of the chunk (or end) that made frames ready */
    int64_t offline_batches; /* rendered as offline work (ls_gate_class_of) */
    uint64_t start_ns;    /* arrival of the start message */
} session;

/* One message to the client. A client that takes nothing for
 * sessions.stall_timeout_s has its call ended with DEADLINE_EXCEEDED (the
 * transport sends that status; nothing is queued meanwhile: the session
 * waits on this one message). */
static int send_session(ls_stream *st, const ls_config *cfg, const Multitenant__SessionResponse *r, ls_err *err) {
    ls_buf b = {0};
    if (pack(&r->base, &b, err) != LS_OK) return -1;
    int rc = ls_stream_send_timeout(st, b.data, b.len, (int)(cfg->sessions_stall_seconds * 1000));
    ls_buf_free(&b);
    if (rc == -2)
        ls_err_set(err, LS_DEADLINE_EXCEEDED, "the client read no frame for %.0f s (sessions.stall_timeout_s)",
                   cfg->sessions_stall_seconds);
    else if (rc)
        ls_err_set(err, LS_CANCELLED, "client went away");
    return rc ? -1 : 0;
}

/* Render and send every ready frame, batch by batch, in order. */
static int session_render(session *ss, ls_err *err) {
    const ls_avatar *av = ls_model_avatar(ss->hold.handle);
    size_t ready;
    while ((ready = ls_speech_stream_ready(ss->sp)) > 0) {
        ls_gate_class c = ls_gate_class_of((double)ss->in_samples / ss->rate, ms_since(ss->start_ns) / 1e3);
        size_t count = ready < (size_t)ss->batch ? ready : (size_t)ss->batch;
        if (c == LS_GATE_OFFLINE && ls_gate_live_recent(ss->s->gate)) count = 1; /* gate.h */
        size_t first = ls_speech_stream_taken(ss->sp);
        ls_speech_stream_take(ss->sp, count, ss->win);
        ss->offline_batches += c == LS_GATE_OFFLINE;
        ls_gate_enter(ss->s->gate, c, 1);
        ls_lease lease = {0};
        int rc = ls_registry_acquire(ss->s->reg, ss->id, &lease, err);
        ls_infer_result res;
        if (!rc) {
            ls_infer_req ir = speech_req(ss->s, ss->win, count, ss->start + (int64_t)first, ss->format, ss->quality);
            ir.video = ss->video;
            rc = model_infer(lease.handle, &ir, &FLOAT_FIELDS, &res, err);
            ls_registry_release(ss->s->reg, &lease, rc == 0, res.inference_ms, res.composite_ms);
        }
        ls_gate_leave(ss->s->gate, c);
        if (rc) return -1;
        if (ss->n_lat + count > ss->cap_lat) {
            size_t cap = (ss->cap_lat ? ss->cap_lat * 2 : 256) + count;
            double *l = realloc(ss->lat, cap * sizeof *l);
            if (!l) {
                ls_infer_result_free(&res);
                return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for session statistics");
            }
            ss->lat = l;
            ss->cap_lat = cap;
        }
        size_t late = 0;
        for (size_t i = 0; !rc && i < count; i++) {
            Multitenant__Frame f = MULTITENANT__FRAME__INIT;
            f.index = (int64_t)(first + i);
            f.pts_ms = f.index * 40;
            f.avatar_frame = ls_avatar_frame_index(av, ss->start + f.index);
            f.data = (ProtobufCBinaryData){res.frames[i].len, res.frames[i].data};
            f.keyframe = res.keyframes[i];
            Multitenant__SessionResponse r = MULTITENANT__SESSION_RESPONSE__INIT;
            r.kind_case = MULTITENANT__SESSION_RESPONSE__KIND_FRAME;
            r.frame = &f;
            rc = send_session(ss->st, ss->s->cfg, &r, err);
            if (rc) break;
            uint64_t now = ls_mono_ns();
            double ms = (double)(now - ss->audio_ns) / 1e6;
            if (ss->n_lat == 0)
                ls_metrics_observe(ss->s->metrics, LS_HIST_FIRST_FRAME, ss->id, (double)(now - ss->start_ns) / 1e9);
            ls_metrics_observe(ss->s->metrics, LS_HIST_FRAME_LATENCY, ss->id, ms / 1e3);
            late += ms > ss->s->cfg->sessions_latency_budget_ms;
            ss->lat[ss->n_lat++] = ms;
        }
        ls_infer_result_free(&res);
        if (rc) {
            ls_err_prefix(err, "after %zu frames sent", ss->n_lat);
            return -1;
        }
        ls_metrics_session_frames(ss->s->metrics, ss->id, count, late);
    }
    return 0;
}

/* Resampled audio (the resampler's output for a chunk, or its flush) into
 * the incremental front end. */
static int session_feed(session *ss, ls_audio *piece, ls_err *err) {
    int rc = piece->n ? ls_speech_stream_push(ss->sp, piece->samples, piece->n, err) : 0;
    ls_audio_free(piece);
    return rc;
}

/* One AudioChunk: whole sample frames of the session's encoding, mixed to
 * mono, resampled to 16 kHz, pushed into the incremental front end. */
static int session_audio(session *ss, const Multitenant__AudioChunk *a, ls_err *err) {
    size_t bps = ss->f32 ? 4 : 2, frame = bps * (size_t)ss->channels;
    size_t len = a ? a->pcm.len : 0;
    if (len % frame)
        return ls_err_set(err, LS_INVALID_ARGUMENT,
                          "audio.pcm: expected whole sample frames of %zu bytes (%s, %d channels), got %zu bytes",
                          frame, ss->f32 ? "f32le" : "s16le", ss->channels, len);
    size_t n = len / frame;
    if ((double)(ss->in_samples + n) / ss->rate > ss->s->cfg->audio_max_seconds)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "session audio: longer than audio.max_seconds (%.0f s)",
                          ss->s->cfg->audio_max_seconds);
    if (n == 0) return 0;
    float *mono;
    if (ls_audio_mix_pcm(a->pcm.data, n, ss->f32, ss->channels, &mono, err) != 0) {
        ls_err_prefix(err, "audio.pcm");
        return -1;
    }
    ss->in_samples += n;
    ls_audio piece;
    int rc = ls_resampler_push(ss->rs, mono, n, &piece, err);
    free(mono);
    if (rc) return rc;
    /* The features (mel, audio encoder) of audio ahead of real time are
     * offline work too. */
    ls_gate_class c = ls_gate_class_of((double)ss->in_samples / ss->rate, ms_since(ss->start_ns) / 1e3);
    ls_gate_enter(ss->s->gate, c, 0);
    rc = session_feed(ss, &piece, err);
    ls_gate_leave(ss->s->gate, c);
    return rc;
}

/* SessionStart: validate, pin the model, open the front end. */
static int session_start(session *ss, const ls_call_info *call, const Multitenant__SessionStart *q, ls_err *err) {
    ls_service *s = ss->s;
    const ls_config *cfg = s->cfg;
    ss->id = q->model_id;
    ss->batch = q->batch_size ? q->batch_size : 5;
    ss->channels = q->channels;
    ss->start = q->start_frame_idx;
    const char *enc = q->pcm_encoding ? q->pcm_encoding : "";
    if (check_model_id(ss->id, err) != 0 || check_routing(call, ss->id, err) != 0 ||
        authorize(s, call, ss->id, 0, NULL, err) != 0)
        return -1;
    if (strcmp(enc, "s16le") && strcmp(enc, "f32le"))
        return ls_err_set(err, LS_INVALID_ARGUMENT, "start.pcm_encoding: expected s16le or f32le, got '%.16s'",
                          check_model_id(enc, NULL) == 0 ? enc : "?");
    ss->f32 = !strcmp(enc, "f32le");
    ss->rate = q->sample_rate;
    if (ss->rate < LS_AUDIO_MIN_RATE || ss->rate > LS_AUDIO_MAX_RATE)
        return ls_err_set(err, LS_INVALID_ARGUMENT,
                          "start.sample_rate: expected %d..%d Hz (resampled to 16 kHz as it arrives), got %d",
                          LS_AUDIO_MIN_RATE, LS_AUDIO_MAX_RATE, ss->rate);
    if (ss->channels < 1 || ss->channels > 32)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "start.channels: expected 1..32, got %d", ss->channels);
    if (ss->batch < 1 || ss->batch > cfg->max_batch)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "start.batch_size: expected 1..%d (0 = 5), got %d",
                          cfg->max_batch, ss->batch);
    if (ss->start < 0)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "start.start_frame_idx: expected >= 0, got %lld",
                          (long long)ss->start);
    if (resolve_format(cfg, ss->id, q->output_format, q->output_format ? strlen(q->output_format) : 0,
                       q->jpeg_quality, 1, &ss->format, &ss->quality, err) != 0)
        return -1;
    ls_video_opts vo = video_opts(q->video_bitrate_kbps, q->keyframe_interval_frames);
    /* Before the model is held: a bad option costs no load. */
    if (ss->format == LS_FORMAT_H264 && check_video_opts(&vo, "start.", err) != 0) return -1;
    if (ls_registry_session_hold(s->reg, ss->id, &ss->hold, err) != 0) return -1;
    if (check_speech(ss->hold.handle, err) != 0) return -1;
    if (!(ss->rs = ls_resampler_new(ss->rate, err))) return -1;
    ss->sp = ls_speech_stream_new(ss->hold.handle);
    ss->win = ls_alloc_aligned((size_t)ss->batch * WINDOW_FLOATS * sizeof(float));
    if (!ss->sp || !ss->win) return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory starting a session");
    const ls_avatar *av = ls_model_avatar(ss->hold.handle);
    if (ss->format == LS_FORMAT_H264 && !(ss->video = open_video(&vo, ss->hold.handle, err))) {
        ls_err_prefix(err, "model '%s'", ss->id);
        return -1;
    }
    Multitenant__SessionStarted started = MULTITENANT__SESSION_STARTED__INIT;
    started.session_id = (char *)(call && call->request_id ? call->request_id : "");
    started.model_loaded = ss->hold.loaded_now;
    started.frame_width = ls_avatar_width(av);
    started.frame_height = ls_avatar_height(av);
    started.fps = LS_VIDEO_FPS;
    /* Frame i waits for samples up to (floor(3.2 (i + 6)) + 15) * 200 + 400,
     * i.e. 452.5 ms past its own time (40 i ms) in the long run; at another
     * rate than 16 kHz, plus what the resampler holds back. */
    started.lookahead_ms = 453 + (int32_t)ceil(ls_resampler_latency_ms(ss->rate));
    started.output_format = (char *)format_name(ss->format);
    started.codec = (char *)(ss->video ? ls_video_codec(ss->video) : "");
    Multitenant__SessionResponse r = MULTITENANT__SESSION_RESPONSE__INIT;
    r.kind_case = MULTITENANT__SESSION_RESPONSE__KIND_STARTED;
    r.started = &started;
    return send_session(ss->st, s->cfg, &r, err);
}

/* Phases: start -> audio* -> end (flush) -> ended. The first message must be
 * a start; the session ends at SessionEnd or the client's half-close. */
/* The session's first message: it must be start, within sessions.max (the
 * count is taken even when over it: *counted says to give it back), and
 * session_start must accept it. id (129 bytes) keeps the model id once the
 * message is freed; *started says session_start succeeded. */
static int session_open(session *ss, const ls_call_info *call, ls_buf *msg, char *id, int *counted, int *started,
                        ls_err *err) {
    ls_service *s = ss->s;
    int rc = 0;
    Multitenant__SessionRequest *q = NULL;
    int got = ls_stream_recv(ss->st, msg);
    ss->start_ns = ls_mono_ns();
    if (got < 0) rc = ls_err_set(err, LS_CANCELLED, "cancelled before the session started");
    if (!rc && got == 0) rc = ls_err_set(err, LS_INVALID_ARGUMENT, "expected a SessionRequest with start, got none");
    if (!rc && !(q = multitenant__session_request__unpack(NULL, msg->len, msg->data))) {
        bad_message("SessionRequest", err);
        rc = -1;
    }
    if (!rc && q->kind_case != MULTITENANT__SESSION_REQUEST__KIND_START)
        rc = ls_err_set(err, LS_INVALID_ARGUMENT, "the first message of a session must be start");
    if (!rc) {
        if (atomic_fetch_add(&s->sessions, 1) >= s->cfg->sessions_max)
            rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "%d live sessions already (sessions.max)", s->cfg->sessions_max);
        *counted = 1;
    }
    if (!rc) {
        rc = session_start(ss, call, q->start, err);
        if (ss->id) snprintf(id, 129, "%s", ss->id);
        ss->id = id; /* the request message is freed below, the id must stay */
        *started = rc == 0;
    }
    if (q) multitenant__session_request__free_unpacked(q, NULL);
    return rc;
}

/* The messages after start: audio (rendered as it arrives) until end or the
 * client's half-close, which flush the speech; anything else is refused. */
static int session_loop(session *ss, ls_buf *msg, ls_err *err) {
    int rc = 0, ended = 0;
    while (!rc && !ended) {
        int got = ls_stream_recv(ss->st, msg);
        ss->audio_ns = ls_mono_ns();
        if (got < 0) return ls_err_set(err, LS_CANCELLED, "client cancelled the session after %zu frames", ss->n_lat);
        Multitenant__SessionRequest *q = NULL;
        if (got > 0 && !(q = multitenant__session_request__unpack(NULL, msg->len, msg->data))) {
            bad_message("SessionRequest", err);
            return -1;
        }
        int kind = got == 0 ? MULTITENANT__SESSION_REQUEST__KIND_END : (int)q->kind_case;
        if (kind == MULTITENANT__SESSION_REQUEST__KIND_AUDIO) {
            /* The next frame sent is a key frame, whichever batch it is in. */
            if (q->audio && q->audio->request_keyframe && ss->video) ls_video_request_keyframe(ss->video);
            rc = session_audio(ss, q->audio, err);
        } else if (kind == MULTITENANT__SESSION_REQUEST__KIND_END) {
            ls_audio rest;
            rc = ls_resampler_finish(ss->rs, &rest, err);
            if (!rc) rc = session_feed(ss, &rest, err);
            if (!rc) rc = ls_speech_stream_finish(ss->sp, err);
            ended = 1;
        } else {
            rc = ls_err_set(err, LS_INVALID_ARGUMENT, "a session takes exactly one start, as its first message");
        }
        if (q) multitenant__session_request__free_unpacked(q, NULL);
        if (!rc) rc = session_render(ss, err);
    }
    return rc;
}

/* The last message, SessionEnded with the latency percentiles; the avatar
 * is unpinned before it is sent. */
static int session_close(session *ss, const char *id, ls_err *err) {
    qsort(ss->lat, ss->n_lat, sizeof *ss->lat, cmp_dbl);
    Multitenant__SessionEnded e = MULTITENANT__SESSION_ENDED__INIT;
    e.frames = (int64_t)ss->n_lat;
    e.audio_seconds = ss->rate ? (double)ss->in_samples / ss->rate : 0;
    e.p50_latency_ms = ss->n_lat ? ss->lat[(ss->n_lat - 1) / 2] : 0;
    e.p99_latency_ms = ss->n_lat ? ss->lat[(size_t)((double)(ss->n_lat - 1) * 0.99)] : 0;
    e.offline_batches = ss->offline_batches;
    Multitenant__SessionResponse r = MULTITENANT__SESSION_RESPONSE__INIT;
    r.kind_case = MULTITENANT__SESSION_RESPONSE__KIND_ENDED;
    r.ended = &e;
    /* Unpinned before the last message and the status. */
    ls_registry_session_release(ss->s->reg, &ss->hold);
    int rc = send_session(ss->st, ss->s->cfg, &r, err);
    if (!rc)
        LOG_INFO("StreamSession model '%s': %lld frames, %.2f s of audio, latency p50 %.0f ms p99 %.0f ms", id,
                 (long long)e.frames, e.audio_seconds, e.p50_latency_ms, e.p99_latency_ms);
    return rc;
}

/* open (start) -> loop (audio in, frames out) -> close (SessionEnded). */
static ls_code h_session(void *ctx, const ls_call_info *call, ls_stream *st, ls_err *err) {
    ls_service *s = ctx;
    session ss = {.s = s, .st = st};
    ls_buf msg = {0};
    int counted = 0, started = 0;
    char id[129] = ""; /* ids are at most 128 characters (check_model_id) */
    int rc = session_open(&ss, call, &msg, id, &counted, &started, err);
    if (!rc) rc = session_loop(&ss, &msg, err);
    if (!rc) rc = session_close(&ss, id, err);
    ls_registry_session_release(s->reg, &ss.hold); /* no-op when released */
    if (rc) {
        if (err->code == LS_OK) err->code = LS_INTERNAL;
        LOG_WARN("StreamSession model '%s': %s after %zu frames: %s", started ? id : "(not started)",
                 ls_code_name(err->code), ss.n_lat, err->msg);
    }
    ls_speech_stream_free(ss.sp);
    ls_resampler_free(ss.rs);
    ls_video_close(ss.video);
    free(ss.win);
    free(ss.lat);
    ls_buf_free(&msg);
    if (counted) atomic_fetch_sub(&s->sessions, 1);
    return rc ? err->code : LS_OK;
}

/* ---- model info (ListModels / GetModelStats) ---- */

/* Everything one ModelInfo points to, allocated together and freed together. */
typedef struct {
    Multitenant__ModelInfo info;
    Multitenant__ModelStats stats;
    Multitenant__TensorInfo tin[2], tout[1];
    Multitenant__TensorInfo *pin[2], *pout[1];
    int64_t shapes[3][LS_MAX_DIMS];
    ls_entry_stats st;
} info_slot;

typedef struct {
    info_slot *slot;
} inspect_arg;

/* Called under the registry lock while the model is loaded: copy tensor info. */
static void copy_tensors(void *handle, void *arg) {
    info_slot *sl = ((inspect_arg *)arg)->slot;
    const ls_engine *e = ls_model_engine(handle);
    sl->info.num_frames = ls_avatar_num_frames(ls_model_avatar(handle)); /* frames served, not the 0 = all */
    int nin = 0, nout = 0;
    const ls_tensor_info *in = ls_engine_inputs(e, &nin), *out = ls_engine_outputs(e, &nout);
    for (int i = 0; i < 2 && i < nin; i++) {
        multitenant__tensor_info__init(&sl->tin[i]);
        sl->tin[i].name = strdup(in[i].name);
        memcpy(sl->shapes[i], in[i].dims, sizeof(int64_t) * (size_t)in[i].ndims);
        sl->tin[i].shape = sl->shapes[i];
        sl->tin[i].n_shape = (size_t)in[i].ndims;
        sl->pin[i] = &sl->tin[i];
    }
    sl->info.n_inputs = (size_t)(nin < 2 ? nin : 2);
    sl->info.inputs = sl->pin;
    if (nout >= 1) {
        multitenant__tensor_info__init(&sl->tout[0]);
        sl->tout[0].name = strdup(out[0].name);
        memcpy(sl->shapes[2], out[0].dims, sizeof(int64_t) * (size_t)out[0].ndims);
        sl->tout[0].shape = sl->shapes[2];
        sl->tout[0].n_shape = (size_t)out[0].ndims;
        sl->pout[0] = &sl->tout[0];
        sl->info.n_outputs = 1;
        sl->info.outputs = sl->pout;
    }
}

static void fill_slot(ls_service *s, info_slot *sl, const ls_entry_stats *st) {
    sl->st = *st;
    const ls_model_config *mc = ls_config_find(s->cfg, st->id);
    Multitenant__ModelInfo *mi = &sl->info;
    multitenant__model_info__init(mi);
    multitenant__model_stats__init(&sl->stats);
    mi->model_id = sl->st.id;
    mi->state = (char *)ls_state_name(st->state);
    mi->loaded = st->state == LS_STATE_LOADED || st->state == LS_STATE_DRAINING;
    mi->error = sl->st.error;
    mi->model_path = mc ? mc->model_path : "";
    mi->background_dir = mc ? mc->background_dir : "";
    mi->crop_rects_path = mc ? mc->crop_rects_path : "";
    mi->audio_encoder_path = mc && mc->encoder_path ? mc->encoder_path : "";
    mi->num_frames = mc ? mc->num_frames : 0; /* replaced by the real count once loaded */
    mi->pinned = st->pinned_config;
    mi->preload = mc ? mc->preload : 0;
    mi->execution_provider = mc ? (char *)ls_engine_provider_name(ls_service_model_provider(s->start_cfg, mc)) : "";
    if (mi->loaded) {
        inspect_arg a = {sl};
        ls_registry_inspect(s->reg, st->id, copy_tensors, &a);
    }
    Multitenant__ModelStats *ms = &sl->stats;
    ms->usage_count = st->usage_count;
    ms->last_used_unix_ms = st->last_used_wall_ms;
    ms->loaded_unix_ms = st->loaded_wall_ms;
    ms->load_time_ms = st->last_load_ms;
    ms->total_inference_ms = st->total_inference_ms;
    ms->avg_inference_ms = st->avg_inference_ms;
    ms->avg_composite_ms = st->avg_composite_ms;
    ms->memory_bytes = (int64_t)(st->memory_measured_bytes ? st->memory_measured_bytes : st->memory_estimate_bytes);
    ms->load_count = st->load_count;
    ms->eviction_count = st->eviction_count;
    ms->in_flight = st->in_flight;
    ms->memory_estimate_bytes = (int64_t)st->memory_estimate_bytes;
    ms->gpu_memory_bytes = (int64_t)(st->gpu_memory_measured_bytes ? st->gpu_memory_measured_bytes
                                                                    : st->gpu_memory_estimate_bytes);
    ms->gpu_memory_estimate_bytes = (int64_t)st->gpu_memory_estimate_bytes;
    ms->p50_inference_ms = st->p50_inference_ms;
    ms->p99_inference_ms = st->p99_inference_ms;
    ms->total_load_time_ms = st->total_load_ms;
    ms->failed_requests = st->failed_requests;
    ms->frequency = st->frequency;
    ms->live_sessions = st->live_sessions;
    ms->sessions_total = st->sessions_total;
    mi->stats = ms;
}

static void free_slots(info_slot *slots, int n) {
    for (int i = 0; i < n; i++) {
        for (size_t k = 0; k < slots[i].info.n_inputs; k++) free(slots[i].tin[k].name);
        for (size_t k = 0; k < slots[i].info.n_outputs; k++) free(slots[i].tout[k].name);
    }
    free(slots);
}

/* Snapshot id (NULL = all) into ModelInfo slots, keeping only the models
 * key may use (key NULL: all). Returns count or -1. */
static int collect(ls_service *s, const char *id, const ls_auth_key *key, info_slot **out,
                   Multitenant__ModelInfo ***ptrs, ls_registry_totals *tot, ls_err *err) {
    ls_entry_stats *st = NULL;
    int n = ls_registry_snapshot(s->reg, id, &st, tot, err);
    if (n < 0) return -1;
    if (key) {
        int kept = 0;
        for (int i = 0; i < n; i++)
            if (ls_auth_allows(key, st[i].id)) st[kept++] = st[i];
        n = kept;
    }
    info_slot *slots = calloc((size_t)n + 1, sizeof *slots);
    Multitenant__ModelInfo **p = calloc((size_t)n + 1, sizeof *p);
    if (!slots || !p) {
        free(slots);
        free(p);
        free(st);
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory listing models");
    }
    for (int i = 0; i < n; i++) {
        fill_slot(s, &slots[i], &st[i]);
        p[i] = &slots[i].info;
    }
    free(st);
    *out = slots;
    *ptrs = p;
    return n;
}

static ls_code h_list(void *ctx, const ls_call_info *call, const uint8_t *req, size_t len, ls_buf *resp,
                      ls_err *err) {
    Multitenant__ListModelsRequest *q = multitenant__list_models_request__unpack(NULL, len, req);
    if (!q) return bad_message("ListModelsRequest", err);
    multitenant__list_models_request__free_unpacked(q, NULL);
    const ls_auth_key *who;
    if (authorize(ctx, call, NULL, 0, &who, err) != 0) return err->code;
    info_slot *slots;
    Multitenant__ModelInfo **ptrs;
    int n = collect(ctx, NULL, who, &slots, &ptrs, NULL, err);
    if (n < 0) return err->code;
    Multitenant__ListModelsResponse r = MULTITENANT__LIST_MODELS_RESPONSE__INIT;
    r.n_models = (size_t)n;
    r.models = ptrs;
    ls_code code = pack(&r.base, resp, err);
    free_slots(slots, n);
    free(ptrs);
    return code;
}

static ls_code h_stats(void *ctx, const ls_call_info *call, const uint8_t *req, size_t len, ls_buf *resp,
                       ls_err *err) {
    ls_service *s = ctx;
    Multitenant__GetModelStatsRequest *q = multitenant__get_model_stats_request__unpack(NULL, len, req);
    if (!q) return bad_message("GetModelStatsRequest", err);
    const char *id = q->model_id && *q->model_id ? q->model_id : NULL;
    const ls_auth_key *who;
    if ((id && check_model_id(id, err) != 0) || check_routing(call, id, err) != 0 ||
        authorize(s, call, id, 0, &who, err) != 0) {
        multitenant__get_model_stats_request__free_unpacked(q, NULL);
        return err->code;
    }
    info_slot *slots;
    Multitenant__ModelInfo **ptrs;
    ls_registry_totals tot;
    int n = collect(s, id, who, &slots, &ptrs, &tot, err);
    multitenant__get_model_stats_request__free_unpacked(q, NULL);
    if (n < 0) return err->code;
    Multitenant__GetModelStatsResponse r = MULTITENANT__GET_MODEL_STATS_RESPONSE__INIT;
    r.n_models = (size_t)n;
    r.models = ptrs;
    r.loaded_models = tot.loaded_models;
    r.max_models = tot.max_models;
    r.total_memory_bytes = (int64_t)tot.memory_bytes;
    r.max_memory_bytes = (int64_t)tot.max_memory_bytes;
    r.total_gpu_memory_bytes = (int64_t)tot.gpu_memory_bytes;
    r.max_gpu_memory_bytes = (int64_t)tot.max_gpu_memory_bytes;
    r.eviction_policy = (char *)ls_policy_name(tot.policy);
    r.total_requests = tot.total_requests;
    r.total_loads = tot.total_loads;
    r.total_load_failures = tot.total_load_failures;
    r.total_evictions = tot.total_evictions;
    r.total_idle_unloads = tot.total_idle_unloads;
    r.engine_sessions = ls_model_open_engines();
    ls_code code = pack(&r.base, resp, err);
    free_slots(slots, n);
    free(ptrs);
    return code;
}

/* ---- Load / Unload / Health ---- */

static ls_code h_load(void *ctx, const ls_call_info *call, const uint8_t *req, size_t len, ls_buf *resp,
                      ls_err *err) {
    ls_service *s = ctx;
    Multitenant__LoadModelRequest *q = multitenant__load_model_request__unpack(NULL, len, req);
    if (!q) return bad_message("LoadModelRequest", err);
    Multitenant__LoadModelResponse r = MULTITENANT__LOAD_MODEL_RESPONSE__INIT;
    int already = 0;
    double ms = 0;
    int rc = check_model_id(q->model_id, err);
    if (!rc) rc = check_routing(call, q->model_id, err);
    if (!rc) rc = authorize(s, call, q->model_id, 1, NULL, err);
    if (!rc) rc = ls_registry_load(s->reg, q->model_id, q->force_reload, &already, &ms, err);
    if (!rc) LOG_INFO("LoadModel '%s': %s", q->model_id, already ? "already loaded" : "loaded");
    multitenant__load_model_request__free_unpacked(q, NULL);
    r.success = rc == 0;
    r.error = rc ? err->msg : "";
    r.load_time_ms = ms;
    r.already_loaded = already;
    ls_err perr;
    pack(&r.base, resp, &perr);
    return rc ? err->code : LS_OK;
}

static ls_code h_unload(void *ctx, const ls_call_info *call, const uint8_t *req, size_t len, ls_buf *resp,
                        ls_err *err) {
    ls_service *s = ctx;
    Multitenant__UnloadModelRequest *q = multitenant__unload_model_request__unpack(NULL, len, req);
    if (!q) return bad_message("UnloadModelRequest", err);
    Multitenant__UnloadModelResponse r = MULTITENANT__UNLOAD_MODEL_RESPONSE__INIT;
    ls_state st = LS_STATE_UNLOADED;
    int rc = check_model_id(q->model_id, err);
    if (!rc) rc = check_routing(call, q->model_id, err);
    if (!rc) rc = authorize(s, call, q->model_id, 1, NULL, err);
    if (!rc) rc = ls_registry_unload(s->reg, q->model_id, &st, err);
    if (!rc) LOG_INFO("UnloadModel '%s': %s", q->model_id, ls_state_name(st));
    multitenant__unload_model_request__free_unpacked(q, NULL);
    r.success = rc == 0;
    r.error = rc ? err->msg : "";
    r.state = rc ? "" : (char *)ls_state_name(st);
    ls_err perr;
    pack(&r.base, resp, &perr);
    return rc ? err->code : LS_OK;
}

static ls_code h_health(void *ctx, const ls_call_info *call, const uint8_t *req, size_t len, ls_buf *resp,
                        ls_err *err) {
    (void)call;
    ls_service *s = ctx;
    Multitenant__HealthRequest *q = multitenant__health_request__unpack(NULL, len, req);
    if (!q) return bad_message("HealthRequest", err);
    multitenant__health_request__free_unpacked(q, NULL);
    ls_registry_totals tot;
    ls_entry_stats *st = NULL;
    int n = ls_registry_snapshot(s->reg, NULL, &st, &tot, err);
    free(st);
    if (n < 0) return err->code;
    Multitenant__HealthResponse r = MULTITENANT__HEALTH_RESPONSE__INIT;
    int ready = atomic_load(&s->ready);
    r.healthy = 1;
    r.status = atomic_load(&s->draining) ? "NOT_SERVING" : ready ? "SERVING" : "STARTING";
    r.loaded_models = tot.loaded_models;
    r.configured_models = tot.configured_models;
    r.version = LS_VERSION;
    r.uptime_s = ms_since(s->start_ns) / 1000.0;
    return pack(&r.base, resp, err);
}

/* ---- grpc.health.v1 serving status (health.c speaks the protocol) ---- */

int ls_service_serving(ls_service *s, const ls_call_info *call, const char *name, ls_err *err) {
    if (!name || !*name || !strcmp(name, LS_SERVICE_NAME)) return ls_service_ready(s);
    /* The name is the client's text: not echoed (it would reach logs). */
    static const char unknown[] = "unknown service: expected \"\", " LS_SERVICE_NAME " or a configured model id";
    if (check_model_id(name, NULL) != 0) return ls_err_set(err, LS_NOT_FOUND, "%s", unknown);
    if (authorize(s, call, name, 0, NULL, err) != 0) return -1;
    ls_entry_stats *st = NULL;
    int n = ls_registry_snapshot(s->reg, name, &st, NULL, err);
    if (n < 0) return ls_err_set(err, LS_NOT_FOUND, "%s", unknown);
    int failed = n > 0 && st[0].state == LS_STATE_FAILED;
    free(st);
    return !failed && !atomic_load(&s->draining);
}

/* health.c asks ls_service_serving through this (it knows no service). */
static int health_serving(void *ctx, const ls_call_info *call, const char *name, ls_err *err) {
    return ls_service_serving(ctx, call, name, err);
}

static ls_code h_health_check(void *ctx, const ls_call_info *call, const uint8_t *req, size_t len, ls_buf *resp,
                              ls_err *err) {
    const ls_health_source src = {.serving = health_serving, .ctx = ctx};
    return ls_health_check(&src, call, req, len, resp, err);
}

static ls_code h_health_watch(void *ctx, const ls_call_info *call, ls_stream *st, ls_err *err) {
    const ls_health_source src = {.serving = health_serving, .ctx = ctx};
    return ls_health_watch(&src, call, st, err);
}

#define SVC "/" LS_SERVICE_NAME "/"
static const ls_method methods[] = {
    {SVC "InferBatchComposite", h_infer, h_infer_spans, NULL},
    {SVC "ListModels", h_list, NULL, NULL},
    {SVC "GetModelStats", h_stats, NULL, NULL},
    {SVC "LoadModel", h_load, NULL, NULL},
    {SVC "UnloadModel", h_unload, NULL, NULL},
    {SVC "Health", h_health, NULL, NULL},
    {SVC "ExtractAudioFeatures", h_features, NULL, NULL},
    {SVC "RenderSpeech", NULL, NULL, h_render},
    {"/grpc.health.v1.Health/Check", h_health_check, NULL, NULL},
};

const ls_method *ls_service_methods(size_t *n) {
    *n = sizeof methods / sizeof methods[0];
    return methods;
}

static const ls_stream_method stream_methods[] = {
    {SVC "StreamSession", h_session}, /* first: ls_service_session_method */
    {SVC "RenderSpeech", h_render_grpc},
    {"/grpc.health.v1.Health/Watch", h_health_watch},
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", ls_reflection_info},
    {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", ls_reflection_info},
};

const ls_stream_method *ls_service_stream_methods(size_t *n) {
    *n = sizeof stream_methods / sizeof stream_methods[0];
    return stream_methods;
}

const ls_stream_method *ls_service_session_method(void) {
    assert(stream_methods[0].fn == h_session);
    return &stream_methods[0];
}
