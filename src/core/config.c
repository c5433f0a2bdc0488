/* config.c - the YAML configuration as tables, one per section (config.h's
 * comment is what ls_config_doc writes from them).
 *
 * Everything is strict: unknown keys, duplicate keys, numbers out of range and
 * values of the wrong shape are all errors. A misspelt "pined: true" that
 * silently falls back to the default is a bug found weeks later in
 * production; refusing to start finds it now. The first error aborts the
 * parse and the half-filled config is freed, so callers never see one. What
 * a row cannot say (lists, model ids, required keys, rules between keys) is a
 * function beside its table; the walk itself is config_walk.c. */
#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "config_walk.h"

#define MODEL_ID_MAX 128
#define CONFIG_MAX_BYTES (16u * 1024u * 1024u) /* bigger is a wrong path, not a config */
#define MAX_CORS_ORIGINS 64                    /* longer is a generated mistake, not a policy */
/* Seconds become nanosecond deadlines in a uint64_t: 1e9 s (31 years) keeps
 * far from overflow. gRPC keeps message limits in an int (2047 MiB fits). */
#define MAX_SECONDS 1e9
#define MAX_MINUTES 1e7
/* The demo page's files: the build passes the source tree's web/. */
#ifndef LS_WEB_ROOT
#define LS_WEB_ROOT "web"
#endif

_Static_assert(sizeof(ls_policy) == sizeof(int) && sizeof(ls_format) == sizeof(int) && sizeof(ls_interp) == sizeof(int) &&
                   sizeof(ls_frame_order) == sizeof(int) && sizeof(ls_cache_mode) == sizeof(int) &&
                   sizeof(ls_exec_provider) == sizeof(int) && sizeof(ls_cudnn_search) == sizeof(int),
               "CFG_WORD rows store an index through an int");

#define C(f) offsetof(ls_config, f)
#define M(f) offsetof(ls_model_config, f)
#define INT(n, o, lo, hi, fl, d, doc_) {.name = n, .type = CFG_INT, .off = o, .min = lo, .max = hi, .flags = fl, .def = d, .doc = doc_}
#define NUM(n, o, lo, hi, fl, d, doc_) {.name = n, .type = CFG_NUMBER, .off = o, .min = lo, .max = hi, .flags = fl, .def = d, .doc = doc_}
#define BOOL(n, o, d, doc_) {.name = n, .type = CFG_BOOL, .off = o, .def = d, .doc = doc_}
#define WORD(n, o, w, fl, d, doc_) {.name = n, .type = CFG_WORD, .off = o, .words = w, .flags = fl, .def = d, .doc = doc_}
#define PATH(n, o, doc_) {.name = n, .type = CFG_PATH, .off = o, .doc = doc_}
#define LISTEN(n, o, d, doc_) {.name = n, .type = CFG_LISTEN, .off = o, .def = d, .doc = doc_}
#define CUSTOM(n, fn, d, doc_) {.name = n, .type = CFG_CUSTOM, .read = fn, .def = d, .doc = doc_}
#define SECTION(n, keys, check, doc_) {.name = n, .type = CFG_SECTION, .sub = &(const cfg_section){keys, check}, .doc = doc_}
#define END {.name = NULL}
#define W(...) ((const char *const[]){__VA_ARGS__, NULL}) /* words, in the order of their enum */
#define EXCL CFG_MIN_EXCLUSIVE

static const cfg_key SERVER_KEYS[] = {
    LISTEN("listen", C(listen), "0.0.0.0:50053", "gRPC address"),
    INT("max_message_mb", C(max_message_bytes), 1, 2047, CFG_MIB, "128", "gRPC send/receive limit"),
    INT("worker_threads", C(worker_threads), 0, 256, CFG_CPUS, "4", "request workers (0 = number of cores)"),
    INT("ort_intra_threads", C(ort_intra_threads), 0, 256, 0, "0", "ONNX Runtime intra-op threads (0 = its default)"),
    INT("ort_inter_threads", C(ort_inter_threads), 0, 256, 0, "1", "ONNX Runtime inter-op threads"),
    INT("max_batch", C(max_batch), 1, 1024, 0, "32", "largest accepted batch_size"),
    INT("png_level", C(png_level), 0, 3, 0, "1", "ISA-L deflate level for flat rows"),
    INT("max_queue", C(max_queue), 1, 1000000, 0, "256", "requests waiting for a worker; more: RESOURCE_EXHAUSTED"),
    NUM("drain_seconds", C(drain_seconds), 0, 3600, 0, "10", "on SIGTERM, how long in-flight requests may finish"),
    NUM("unready_grace_seconds", C(unready_grace_seconds), 0, 3600, 0, "0", "on SIGTERM, /readyz 503 but serving this long"),
    NUM("keepalive_seconds", C(keepalive_seconds), 0, 86400, 0, "60", "PING a connection with calls silent this long; 0 = off"),
    NUM("keepalive_timeout_seconds", C(keepalive_timeout_seconds), 0.1, 3600, 0, "20", "no PING ACK this long: closed"),
    NUM("max_connection_idle_seconds", C(max_connection_idle_seconds), 0, 86400, 0, "300", "no call this long: GOAWAY; 0 = never"),
    END};

static const cfg_key CAPACITY_KEYS[] = {
    INT("max_models", C(max_models), 1, INT_MAX, 0, "4", "models loaded at once"),
    NUM("max_memory_gb", C(max_memory_bytes), 0, 1048576, EXCL | CFG_GIB, "8", "for loaded models; may be fractional"),
    WORD("eviction_policy", C(policy), W("lru", "lfu", "lfu_count"), 0, "lru", "victim choice (evict.h)"),
    NUM("idle_unload_minutes", C(idle_unload_seconds), 0, MAX_MINUTES, CFG_MINUTES, "30", "unused this long: unloaded; 0 = never"),
    NUM("idle_check_seconds", C(idle_check_seconds), 0, MAX_SECONDS, EXCL, "60", "idle sweep period"),
    NUM("stats_report_seconds", C(stats_report_seconds), 0, MAX_SECONDS, EXCL, "300", "statistics log period"),
    NUM("load_retry_seconds", C(load_retry_seconds), 0, MAX_SECONDS, 0, "10", "backoff after a failed load; 0 = next request"),
    NUM("lfu_half_life_minutes", C(lfu_half_life_seconds), 0, MAX_MINUTES, EXCL | CFG_MINUTES, "10", "lfu: score halves this often"),
    NUM("lfu_initial", C(lfu_initial), 0, 64, 0, "5", "lfu: score of a model just loaded (log2(1 + uses))"),
    NUM("min_residency_seconds", C(min_residency_seconds), 0, MAX_SECONDS, 0, "30", "loaded more recently: no victim; 0 = off"),
    NUM("max_gpu_memory_gb", C(max_gpu_memory_bytes), 0, 1048576, CFG_GIB, "0", "GPU memory of models on cuda; 0 = no limit"),
    END};

static const cfg_key ENGINE_KEYS[] = {
    WORD("execution_provider", C(execution_provider), W("cpu", "cuda"), 0, "cpu", "ONNX Runtime provider for every model"),
    INT("device_id", C(cuda_device_id), 0, 255, 0, "0", "cuda: the GPU"),
    INT("gpu_mem_limit_mb", C(gpu_mem_limit_bytes), 0, 16777216, CFG_MIB, "0", "cuda: arena cap per session; 0 = none"),
    WORD("cudnn_conv_algo_search", C(cudnn_conv_algo_search), W("exhaustive", "heuristic", "default"), 0, "heuristic",
         "cuda: how cuDNN picks convolutions"),
    BOOL("io_binding", C(io_binding), "true", "runs bind inputs and outputs to the caller's buffers (ORT IoBinding)"),
    END};

static const cfg_key AUDIO_KEYS[] = {
    NUM("max_seconds", C(audio_max_seconds), 0, 36000, EXCL, "600", "longer audio: INVALID_ARGUMENT; the longest session"),
    END};

static const cfg_key SESSIONS_KEYS[] = {
    INT("max", C(sessions_max), 1, 100000, 0, "64", "live sessions at once; more: RESOURCE_EXHAUSTED"),
    NUM("stall_timeout_s", C(sessions_stall_seconds), 0, 3600, EXCL, "30", "a client taking no frame this long: DEADLINE_EXCEEDED"),
    INT("latency_budget_ms", C(sessions_latency_budget_ms), 1, 60000, 0, "150", "a frame sent later than this after its audio is late (metrics)"),
    BOOL("prioritize_live", C(sessions_prioritize_live), "true", "offline work (RenderSpeech, sessions > 1 s ahead of real time) waits for live renders (read at start)"),
    END};

/* visual_input.mask: [x, y, w, h] for a 320 x 320 input, as OpenCV's
 * rectangle takes it; inside the image. */
static int read_mask(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val, const char *path, void *obj) {
    static const char expect[] = "a list of 4 integers [x, y, w, h] inside 320x320 (x + w <= 320, y + h <= 320)";
    int *mask = ((ls_model_config *)obj)->visual.mask, v[4] = {5, 5, 310, 305}; /* the reference's */
    if (val && (val->type != YAML_SEQUENCE_NODE || val->data.sequence.items.top - val->data.sequence.items.start != 4))
        return cfg_fail(p, key, "%s: expected %s, got %s", path, expect,
                        val->type == YAML_SEQUENCE_NODE ? "a list of another length" : cfg_kind(val));
    for (int i = 0; val && i < 4; i++) {
        yaml_node_t *item = cfg_node(p, val->data.sequence.items.start[i]);
        if (cfg_get_int(p, item, item, path, 0, 320, &v[i]) != 0) return -1;
    }
    if (v[0] + v[2] > 320 || v[1] + v[3] > 320)
        return cfg_fail(p, key, "%s: expected %s, got [%d, %d, %d, %d]", path, expect, v[0], v[1], v[2], v[3]);
    memcpy(mask, v, sizeof v);
    return 0;
}

static const cfg_key VISUAL_KEYS[] = {
    INT("margin", M(visual.margin), 0, 64, 0, NULL, "canvas margin; absent = paste_margin (they must agree)"),
    CUSTOM("mask", read_mask, "[5, 5, 310, 305]", "blacked out in the masked copy: x, y, w, h for S = 320, scaled"),
    WORD("interpolation", M(visual.interp), W("cubic", "linear"), 0, "cubic", "crop -> (S+2m)^2 resize"),
    WORD("cache", M(visual.cache), W("auto", "on", "off"), 0, "auto", "keep 8-bit inputs; auto = if <= 25% of the frames' memory"),
    END};

static int check_encoder(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map, const char *path, void *obj) {
    (void)map;
    if (((ls_model_config *)obj)->encoder_path) return 0;
    return cfg_fail(p, key, "%s: missing required key 'model_path'", path);
}

static const cfg_key ENCODER_KEYS[] = {
    PATH("model_path", M(encoder_path), "required: [B,1,80,16] or [B,80,16] mel window -> [B,512]"),
    WORD("kind", 0, W("ave"), CFG_NO_FIELD, "ave", "SyncTalk_2D's \"ave\" features, the only kind"),
    END};

/* Required keys, reported at the model's own line (where they are missing),
 * and one canvas margin: the input is cut from it and the prediction pasted
 * back into it, so a margin given once applies to both. */
static int check_model(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map, const char *path, void *obj) {
    ls_model_config *m = obj;
    const char *missing = !m->model_path ? "model_path" : !m->background_dir ? "background_dir"
                          : !m->crop_rects_path ? "crop_rects_path" : NULL;
    if (missing) return cfg_fail(p, key, "%s: missing required key '%s'", path, missing);
    const yaml_node_t *visual = NULL, *paste_key = cfg_find(p, map, "paste_margin", NULL);
    const yaml_node_t *visual_key = cfg_find(p, map, "visual_input", &visual);
    if (!visual_key || !cfg_find(p, visual, "margin", NULL)) {
        m->visual.margin = m->paste_margin;
    } else if (!paste_key || m->visual.margin == m->paste_margin) {
        m->paste_margin = m->visual.margin;
    } else {
        return cfg_fail(p, visual_key, "%s.visual_input.margin: expected the same value as paste_margin (%d, line %zu), got %d",
                        path, m->paste_margin, cfg_line(paste_key), m->visual.margin);
    }
    return 0;
}

static const cfg_key MODEL_KEYS[] = {
    PATH("model_path", M(model_path), "required: the lip-sync ONNX model (relative to this file)"),
    PATH("background_dir", M(background_dir), "required: the avatar's frames, PNG/JPEG in name order"),
    PATH("crop_rects_path", M(crop_rects_path), "required: crop rectangles (JSON)"),
    INT("num_frames", M(num_frames), 0, INT_MAX, 0, "0", "frames used; 0 = all found"),
    BOOL("preload", M(preload), "false", "load at start"),
    BOOL("pinned", M(pinned), "false", "never evicted or idle-unloaded"),
    INT("memory_estimate_mb", M(memory_estimate_bytes), 0, 16777216, CFG_MIB, "512", "charged until measured"),
    WORD("frame_order", M(frame_order), W("loop", "pingpong"), 0, "loop", "which background frame i is"),
    WORD("channel_order", M(channel_bgr), W("bgr", "rgb"), CFG_NEGATE, "bgr", "the model's output planes"),
    INT("paste_margin", M(paste_margin), 0, 64, 0, "4", "canvas margin of 328; 0 = stretch"),
    INT("max_concurrent_requests", M(max_concurrent_requests), 0, 100000, 0, "0", "more at once: RESOURCE_EXHAUSTED; 0 = no limit"),
    INT("max_sessions", M(max_sessions), 0, 100000, 0, "0", "live sessions on it; more: RESOURCE_EXHAUSTED; 0 = no limit"),
    WORD("output_format", M(output_format), W("png", "jpeg", "raw"), 0, "png", "a request may ask for another"),
    INT("jpeg_quality", M(jpeg_quality), 1, 100, 0, "90", "JPEG output quality"),
    WORD("paste_interpolation", M(paste_interp), W("cubic", "linear"), 0, "cubic", "canvas resizes of the paste-back"),
    SECTION("visual_input", VISUAL_KEYS, NULL, "the server-built visual input (requests without one)"),
    SECTION("audio_encoder", ENCODER_KEYS, check_encoder, "optional: speech in for this model"),
    WORD("execution_provider", M(execution_provider), W("inherit", "cpu", "cuda"), 0, "inherit", "inherit = engine.execution_provider"),
    INT("gpu_memory_estimate_mb", M(gpu_memory_estimate_bytes), 0, 16777216, CFG_MIB, "512", "cuda: charged until measured"),
    END};
static const cfg_section MODEL = {MODEL_KEYS, check_model};

/* Ids travel in requests, logs and metrics labels: an alphabet that needs no
 * escaping anywhere. */
static int valid_model_id(const char *id, size_t len) {
    return len >= 1 && len <= MODEL_ID_MAX &&
           strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == len;
}

static int read_models(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map, const char *path, void *obj) {
    ls_config *cfg = obj;
    int r = cfg_expect_mapping(p, key, map, path);
    if (r <= 0) return r;
    if (cfg_check_keys(p, map, "in models", "model id") != 0) return -1;
    size_t n = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
    /* The section appears once (duplicate keys are refused): sized once. */
    if (n && !(cfg->models = calloc(n, sizeof *cfg->models))) return cfg_oom(p);
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = cfg_node(p, pair->key);
        const char *id = cfg_text(k);
        if (!valid_model_id(id, k->data.scalar.length))
            return cfg_fail(p, k, "models: invalid model id '%.64s' (expected 1..%d characters of A-Z a-z 0-9 _ . -)", id,
                            MODEL_ID_MAX);
        ls_model_config *m = &cfg->models[cfg->n_models++]; /* counted first: a failure leaves it to ls_config_free */
        if (cfg_defaults(&MODEL, m) != 0 || !(m->id = strdup(id))) return cfg_oom(p);
        char mpath[16 + MODEL_ID_MAX];
        snprintf(mpath, sizeof mpath, "models.%s", id);
        if (cfg_walk(p, k, cfg_node(p, pair->value), mpath, &MODEL, m) != 0) return -1;
    }
    return 0;
}

/* An origin as browsers send it: scheme://host[:port], no path, no trailing
 * slash. They are compared as exact strings, so a value that can never match
 * ("example.com", "http://a/") would silently allow nothing. "*" = any. */
static int valid_origin(const char *s) {
    if (!strcmp(s, "*")) return 1;
    const char *host = !strncmp(s, "http://", 7) ? s + 7 : !strncmp(s, "https://", 8) ? s + 8 : NULL;
    if (!host || !*host) return 0;
    for (const char *c = host; *c; c++)
        if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f || strchr("/?#\"\\", *c)) return 0;
    return 1;
}

static int nonempty(const char *s) { return *s != '\0'; }

/* A list of strings, each passing valid, into *out (counted as copied, so
 * ls_config_free frees exactly what is there). */
static int read_strings(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val, const char *path,
                        const char *expect, int (*valid)(const char *), char ***out, size_t *n_out) {
    if (val->type != YAML_SEQUENCE_NODE) return cfg_fail(p, key, "%s: expected %s, got %s", path, expect, cfg_kind(val));
    size_t n = (size_t)(val->data.sequence.items.top - val->data.sequence.items.start);
    if (n && !(*out = calloc(n, sizeof **out))) return cfg_oom(p);
    for (yaml_node_item_t *it = val->data.sequence.items.start; it < val->data.sequence.items.top; it++) {
        yaml_node_t *item = cfg_node(p, *it);
        const char *s = cfg_scalar(p, item, item, path, expect);
        if (!s) return -1;
        if (!valid(s)) return cfg_bad_value(p, item, path, expect, s);
        if (!((*out)[*n_out] = strdup(s))) return cfg_oom(p);
        ++*n_out;
    }
    return 0;
}

static int read_origins(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val, const char *path, void *obj) {
    static const char expect[] = "a list of origins like \"https://host:port\" (scheme://host[:port], no path) or \"*\"";
    ls_config *cfg = obj;
    if (cfg_is_null(val)) return 0; /* "cors_origins:" alone: the default, none */
    if (val->type == YAML_SEQUENCE_NODE && val->data.sequence.items.top - val->data.sequence.items.start > MAX_CORS_ORIGINS)
        return cfg_fail(p, key, "%s: expected at most %d origins, got %td", path, MAX_CORS_ORIGINS,
                        val->data.sequence.items.top - val->data.sequence.items.start);
    return read_strings(p, key, val, path, expect, valid_origin, &cfg->cors_origins, &cfg->n_cors_origins);
}

static const cfg_key HTTP_KEYS[] = {
    BOOL("enabled", C(http_enabled), "true", "HTTP/1.1: /metrics, /healthz, /readyz, gRPC-Web, demo page, /session"),
    LISTEN("listen", C(http_listen), "0.0.0.0:8053", "HTTP address"),
    CUSTOM("cors_origins", read_origins, NULL, "origins allowed cross-origin (\"*\" = any); none = same-origin only"),
    PATH("web_root", C(web_root), "the demo page's files (default: the source tree's web/)"),
    PATH("speech_wav", C(speech_wav), "optional: served at GET /speech.wav (the demo page's speech)"),
    NUM("websocket_ping_seconds", C(http_ws_ping_seconds), 0.1, 3600, 0, "20", "WebSocket keepalive; silent for 3: gone"),
    END};

/* sha256, key_file or key_env (the row's name ends path): the key's SHA-256,
 * however it is given. */
static int read_secret(cfg_parser *p, const yaml_node_t *k, const yaml_node_t *v, const char *path, void *obj) {
    static const char hex_form[] = "64 hex characters (SHA-256 of the key)";
    uint8_t *out = ((ls_auth_key *)obj)->sha256;
    const char *which = strrchr(path, '.') + 1, *s;
    if (!strcmp(which, "key_file")) {
        char *file = NULL, msg[160];
        int r = cfg_get_path(p, k, v, path, &file);
        if (!r && ls_auth_hash_file(file, out, msg, sizeof msg)) r = cfg_fail(p, k, "auth key_file %s: %s", file, msg);
        free(file);
        return r ? -1 : 0;
    }
    int env = !strcmp(which, "key_env");
    if (!(s = cfg_scalar(p, k, v, path, env ? "an environment variable name" : hex_form))) return -1;
    if (!env) return ls_auth_parse_hex(s, out) ? cfg_bad_value(p, k, path, hex_form, s) : 0;
    const char *key = getenv(s);
    if (!key || strlen(key) < 16)
        return cfg_fail(p, k, "%s: environment variable %.64s %s", path, s,
                        key ? "must hold a key of at least 16 characters" : "is not set");
    ls_auth_hash(key, strlen(key), out);
    return 0;
}

static int read_key_name(cfg_parser *p, const yaml_node_t *k, const yaml_node_t *v, const char *path, void *obj) {
    ls_auth_key *ak = obj;
    const char *s = cfg_scalar(p, k, v, path, "a name");
    if (!s) return -1;
    free(ak->name);
    return (ak->name = strdup(s)) ? 0 : cfg_oom(p);
}

static int read_key_models(cfg_parser *p, const yaml_node_t *k, const yaml_node_t *v, const char *path, void *obj) {
    ls_auth_key *ak = obj;
    return read_strings(p, k, v, path, "a list of model ids or glob patterns", nonempty, &ak->models, &ak->n_models);
}

static int check_key(cfg_parser *p, const yaml_node_t *item, const yaml_node_t *map, const char *path, void *obj) {
    ls_auth_key *ak = obj;
    int secrets = !!cfg_find(p, map, "sha256", NULL) + !!cfg_find(p, map, "key_file", NULL) +
                  !!cfg_find(p, map, "key_env", NULL);
    if (secrets != 1)
        return cfg_fail(p, item, "%s: expected exactly one of sha256, key_file, key_env, got %d", path, secrets);
    return ak->name || (ak->name = strdup("unnamed")) ? 0 : cfg_oom(p);
}

static const cfg_key AUTH_KEY_KEYS[] = {
    CUSTOM("name", read_key_name, NULL, "in logs and metrics (default \"unnamed\")"),
    CUSTOM("sha256", read_secret, NULL, "64 hex: SHA-256 of the key; exactly one of sha256 | key_file | key_env"),
    CUSTOM("key_file", read_secret, NULL, "a file whose first line is the key (at least 16 characters)"),
    CUSTOM("key_env", read_secret, NULL, "an environment variable holding the key"),
    CUSTOM("models", read_key_models, NULL, "ids or glob patterns this key may use, e.g. [demo, \"bob*\"]"),
    BOOL("admin", offsetof(ls_auth_key, admin), NULL, "every model, plus Load/Unload"),
    END};
static const cfg_section AUTH_KEY = {AUTH_KEY_KEYS, check_key};

static int read_keys(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *v, const char *path, void *obj) {
    ls_auth *auth = &((ls_config *)obj)->auth;
    if (v->type != YAML_SEQUENCE_NODE) return cfg_fail(p, key, "%s: expected a list of keys, got %s", path, cfg_kind(v));
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (n && !(auth->keys = calloc(n, sizeof *auth->keys))) return cfg_oom(p);
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
        yaml_node_t *item = cfg_node(p, *it);
        ls_auth_key *ak = &auth->keys[auth->n_keys++]; /* counted first: a failure frees what it filled */
        if (item->type != YAML_MAPPING_NODE)
            return cfg_fail(p, item, "%s: expected a mapping per key (name, sha256|key_file|key_env, models, admin), got %s",
                            path, cfg_kind(item));
        if (cfg_walk(p, item, item, path, &AUTH_KEY, ak) != 0) return -1;
    }
    return 0;
}

/* A present auth section means auth, unless it says enabled: false. */
static int check_auth(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map, const char *path, void *obj) {
    ls_auth *auth = &((ls_config *)obj)->auth;
    if (!map) return 0; /* "auth:" alone: no keys needed */
    if (!cfg_find(p, map, "enabled", NULL)) auth->enabled = 1;
    if (!auth->enabled || auth->n_keys) return 0;
    return cfg_fail(p, key, "%s: enabled but no keys (expected auth.keys: a list of keys)", path);
}

static int check_tls(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map, const char *path, void *obj) {
    const ls_config *cfg = obj;
    if (!map || (cfg->tls_cert_file && cfg->tls_key_file)) return 0; /* "tls:" alone: plaintext */
    return cfg_fail(p, key, "%s: expected both cert_file and key_file", path);
}

static const cfg_key AUTH_KEYS[] = {
    BOOL("enabled", C(auth.enabled), NULL, "a present section means true"),
    {.name = "keys", .type = CFG_CUSTOM, .read = read_keys, .doc = "a list", .sub = &AUTH_KEY, .item = "-"},
    END};

static const cfg_key TLS_KEYS[] = {
    PATH("cert_file", C(tls_cert_file), "server certificate chain (PEM)"),
    PATH("key_file", C(tls_key_file), "its private key"),
    PATH("client_ca_file", C(tls_client_ca_file), "optional: require client certificates it signed"),
    END};

static const cfg_key ROOT_KEYS[] = {
    SECTION("server", SERVER_KEYS, NULL, "the gRPC listener and request handling"),
    SECTION("capacity", CAPACITY_KEYS, NULL, "which models stay loaded"),
    {.name = "models", .type = CFG_CUSTOM, .read = read_models, .sub = &MODEL, .item = "<id>:",
     .doc = "by id: 1..128 of A-Z a-z 0-9 _ . -"},
    SECTION("engine", ENGINE_KEYS, NULL, "ONNX Runtime (models.<id>.execution_provider overrides)"),
    SECTION("audio", AUDIO_KEYS, NULL, "speech in (ExtractAudioFeatures, RenderSpeech, sessions)"),
    SECTION("sessions", SESSIONS_KEYS, NULL, "live StreamSession and WebSocket sessions"),
    SECTION("http", HTTP_KEYS, NULL, "the HTTP listener"),
    SECTION("auth", AUTH_KEYS, check_auth, "optional tenant keys; absent = no keys needed"),
    SECTION("tls", TLS_KEYS, check_tls, "optional; absent = plaintext"),
    END};
static const cfg_section ROOT = {ROOT_KEYS, NULL};

/* If a strdup fails its string stays NULL; ls_config_parse checks for that. */
void ls_config_defaults(ls_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->source = strdup("<defaults>");
    cfg->web_root = strdup(LS_WEB_ROOT); /* compiled in, so not a table default */
    (void)cfg_defaults(&ROOT, cfg);
}

void ls_config_free(ls_config *cfg) {
    if (!cfg) return;
    for (size_t i = 0; i < cfg->n_models; i++) cfg_free_strings(&MODEL, &cfg->models[i]), free(cfg->models[i].id);
    free(cfg->models);
    free(cfg->source);
    cfg_free_strings(&ROOT, cfg);
    for (size_t i = 0; i < cfg->n_cors_origins; i++) free(cfg->cors_origins[i]);
    free(cfg->cors_origins);
    ls_auth_free(&cfg->auth);
    memset(cfg, 0, sizeof *cfg);
}

const ls_model_config *ls_config_find(const ls_config *cfg, const char *id) {
    for (size_t i = 0; cfg && id && i < cfg->n_models; i++)
        if (cfg->models[i].id && strcmp(cfg->models[i].id, id) == 0) return &cfg->models[i];
    return NULL;
}

void ls_config_doc(FILE *out, const char *prefix) { cfg_write_doc(out, prefix, &ROOT, 2); }

static int parse_root(cfg_parser *p, const yaml_node_t *root, void *cfg) {
    if (cfg_is_null(root)) return 0; /* a file holding only "~" is as empty as an empty file */
    if (root->type != YAML_MAPPING_NODE)
        return cfg_fail(p, root, "expected a mapping of sections (server, capacity, models, http), got %s", cfg_kind(root));
    return cfg_walk(p, root, root, "", &ROOT, cfg);
}

int ls_config_parse(const char *yaml, size_t len, const char *source, const char *base_dir, ls_config *cfg, ls_err *err) {
    if (!source) source = "<string>";
    ls_config_defaults(cfg);
    free(cfg->source);
    cfg->source = strdup(source);
    int rc = !cfg->source || !cfg->listen || !cfg->http_listen || !cfg->web_root
                 ? ls_err_set(err, LS_RESOURCE_EXHAUSTED, "%s: out of memory", source)
                 : cfg_parse_document(yaml, len, source, base_dir, parse_root, cfg, err);
    if (rc != 0) ls_config_free(cfg);
    return rc;
}

int ls_config_load_file(const char *path, ls_config *cfg, ls_err *err) {
    memset(cfg, 0, sizeof *cfg);
    ls_buf buf = {0};
    int e = ls_read_file(path, &buf, CONFIG_MAX_BYTES);
    if (e != 0) {
        ls_buf_free(&buf);
        return ls_err_set(err, LS_INVALID_ARGUMENT, "%s: cannot read config: %s", path, strerror(e));
    }
    /* Relative paths in the file are relative to the file; a bare file name
     * lives in the current directory, which NULL asks for. */
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : NULL; /* "/x.yaml" -> "/" */
    int rc = slash && !dir ? ls_err_set(err, LS_RESOURCE_EXHAUSTED, "%s: out of memory", path)
                           : ls_config_parse((const char *)buf.data, buf.len, path, dir, cfg, err);
    free(dir);
    ls_buf_free(&buf);
    return rc;
}
