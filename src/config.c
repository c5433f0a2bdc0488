/* config.c - the YAML configuration: its tables (the format is in config.h,
 * whose comment is what ls_config_doc writes from them).
 *
 * The text is loaded with libyaml's document API into a node tree, which is
 * then walked section by section (config_walk.c). A tree rather than the
 * event stream because the messages need random access: a bad value names
 * the line of its key, a duplicate names both lines, a model lacking a
 * required key names the model's line. Config files are tiny.
 *
 * Everything is strict: unknown keys, duplicate keys, numbers out of range and
 * values of the wrong shape are all errors. A misspelt "pined: true" that
 * silently falls back to the default is a bug found weeks later in
 * production; refusing to start finds it now. The first error aborts the
 * parse and the half-filled config is freed, so callers never see one.
 *
 * Each section is one table of rows (config_walk.h); what a row cannot say
 * (lists, model ids, required keys, rules between keys) is a function beside
 * its table. */
#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_walk.h"

#define MODEL_ID_MAX 128
/* A config file bigger than this is a mistake (a wrong path to some data
 * file), not a config; refuse it rather than read it all. */
#define CONFIG_MAX_BYTES (16u * 1024u * 1024u)
/* The demo page's files; the build passes the source tree's web/ so a
 * server run from the build directory finds them without configuration. */
#ifndef LS_WEB_ROOT
#define LS_WEB_ROOT "web"
#endif
/* A CORS list longer than this is a generated mistake, not a policy. */
#define MAX_CORS_ORIGINS 64

/* CFG_WORD rows store an index through an int. */
_Static_assert(sizeof(ls_policy) == sizeof(int) && sizeof(ls_format) == sizeof(int) &&
                   sizeof(ls_interp) == sizeof(int) && sizeof(ls_frame_order) == sizeof(int) &&
                   sizeof(ls_cache_mode) == sizeof(int),
               "enums read by CFG_WORD rows are int-sized");

/* Word lists in the order of their enums. */
static const char *const POLICY_WORDS[] = {"lru", "lfu", "lfu_count", NULL};
static const char *const ORDER_WORDS[] = {"loop", "pingpong", NULL};
static const char *const CHANNEL_WORDS[] = {"bgr", "rgb", NULL};
static const char *const FORMAT_WORDS[] = {"png", "jpeg", "raw", NULL};
static const char *const INTERP_WORDS[] = {"cubic", "linear", NULL};
static const char *const CACHE_WORDS[] = {"auto", "on", "off", NULL};
static const char *const ENCODER_KINDS[] = {"ave", NULL};

/* Upper bounds for the time settings. Consumers turn seconds into nanosecond
 * deadlines in a uint64_t; 1e9 s (about 31 years) keeps that far from
 * overflow while being longer than any interval anyone means. gRPC keeps
 * message limits in an int (2047 MiB fits); 1 PiB of memory is beyond any
 * machine and GiB * 2^30 still fits; 16 TiB per model. */
#define MAX_SECONDS 1e9
#define MAX_MINUTES 1e7

#define C(field) offsetof(ls_config, field)
#define M(field) offsetof(ls_model_config, field)
#define A(field) offsetof(ls_auth_key, field)
#define INT(name, off, lo, hi, def, doc) {name, CFG_INT, off, lo, hi, 0, NULL, def, doc, NULL, NULL, NULL}
#define INTF(name, off, lo, hi, fl, def, doc) {name, CFG_INT, off, lo, hi, fl, NULL, def, doc, NULL, NULL, NULL}
#define NUM(name, off, lo, hi, fl, def, doc) {name, CFG_NUMBER, off, lo, hi, fl, NULL, def, doc, NULL, NULL, NULL}
#define BOOL(name, off, def, doc) {name, CFG_BOOL, off, 0, 0, 0, NULL, def, doc, NULL, NULL, NULL}
#define WORD(name, off, w, fl, def, doc) {name, CFG_WORD, off, 0, 0, fl, w, def, doc, NULL, NULL, NULL}
#define PATH(name, off, def, doc) {name, CFG_PATH, off, 0, 0, 0, NULL, def, doc, NULL, NULL, NULL}
#define LISTEN(name, off, def, doc) {name, CFG_LISTEN, off, 0, 0, 0, NULL, def, doc, NULL, NULL, NULL}
#define CUSTOM(name, fn, def, doc, sub, item) {name, CFG_CUSTOM, 0, 0, 0, 0, NULL, def, doc, fn, sub, item}
#define SECTION(name, sub, doc) {name, CFG_SECTION, 0, 0, 0, 0, NULL, NULL, doc, NULL, sub, NULL}
#define END {NULL, CFG_INT, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL}

/* ---- server, capacity, audio, sessions ---- */

static const cfg_key SERVER_KEYS[] = {
    LISTEN("listen", C(listen), "0.0.0.0:50053", "gRPC address"),
    INTF("max_message_mb", C(max_message_bytes), 1, 2047, CFG_MIB, "128", "gRPC send/receive limit"),
    INTF("worker_threads", C(worker_threads), 0, 256, CFG_CPUS, "4", "request workers (0 = number of cores)"),
    INT("ort_intra_threads", C(ort_intra_threads), 0, 256, "0", "ONNX Runtime intra-op threads (0 = its default)"),
    INT("ort_inter_threads", C(ort_inter_threads), 0, 256, "1", "ONNX Runtime inter-op threads"),
    INT("max_batch", C(max_batch), 1, 1024, "32", "largest accepted batch_size"),
    INT("png_level", C(png_level), 0, 3, "1", "ISA-L deflate level for flat rows"),
    INT("max_queue", C(max_queue), 1, 1000000, "256", "requests waiting for a worker; more: RESOURCE_EXHAUSTED"),
    NUM("drain_seconds", C(drain_seconds), 0, 3600, 0, "10", "on SIGTERM, how long in-flight requests may finish"),
    NUM("unready_grace_seconds", C(unready_grace_seconds), 0, 3600, 0, "0",
        "on SIGTERM, /readyz 503 while still serving this long first"),
    END};

static const cfg_key CAPACITY_KEYS[] = {
    INT("max_models", C(max_models), 1, INT_MAX, "4", "models loaded at once"),
    NUM("max_memory_gb", C(max_memory_bytes), 0, 1048576, CFG_MIN_EXCLUSIVE | CFG_GIB, "8",
        "memory for loaded models; may be fractional"),
    WORD("eviction_policy", C(policy), POLICY_WORDS, 0, "lru", "victim choice (evict.h)"),
    NUM("idle_unload_minutes", C(idle_unload_seconds), 0, MAX_MINUTES, CFG_MINUTES, "30",
        "unload a model unused this long; 0 = never"),
    NUM("idle_check_seconds", C(idle_check_seconds), 0, MAX_SECONDS, CFG_MIN_EXCLUSIVE, "60", "idle sweep period"),
    NUM("stats_report_seconds", C(stats_report_seconds), 0, MAX_SECONDS, CFG_MIN_EXCLUSIVE, "300",
        "statistics log period"),
    NUM("load_retry_seconds", C(load_retry_seconds), 0, MAX_SECONDS, 0, "10",
        "backoff before retrying a failed load; 0 = the next request retries"),
    NUM("lfu_half_life_minutes", C(lfu_half_life_seconds), 0, MAX_MINUTES, CFG_MIN_EXCLUSIVE | CFG_MINUTES, "10",
        "lfu: the frequency score halves this often"),
    NUM("lfu_initial", C(lfu_initial), 0, 64, 0, "5", "lfu: score of a model just loaded (log2(1 + uses) scale)"),
    NUM("min_residency_seconds", C(min_residency_seconds), 0, MAX_SECONDS, 0, "30",
        "churn guard: a model loaded more recently is no victim; 0 = off"),
    END};

static const cfg_key AUDIO_KEYS[] = {
    NUM("max_seconds", C(audio_max_seconds), 0, 36000, CFG_MIN_EXCLUSIVE, "600",
        "longer audio is INVALID_ARGUMENT; also the longest session"),
    END};

static const cfg_key SESSIONS_KEYS[] = {
    INT("max", C(sessions_max), 1, 100000, "64", "live StreamSession calls at once; more: RESOURCE_EXHAUSTED"),
    NUM("stall_timeout_s", C(sessions_stall_seconds), 0, 3600, CFG_MIN_EXCLUSIVE, "30",
        "a client that takes no frame this long: DEADLINE_EXCEEDED"),
    END};

/* ---- models ---- */

/* visual_input.mask: [x, y, w, h] for a 320 x 320 input, as OpenCV's
 * rectangle takes it; inside the image. */
static int read_mask(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val, const char *path, void *obj) {
    static const char expect[] = "a list of 4 integers [x, y, w, h] inside 320x320 (x + w <= 320, y + h <= 320)";
    int *mask = ((ls_model_config *)obj)->visual.mask, v[4];
    if (!val) return sscanf("5, 5, 310, 305", "%d, %d, %d, %d", &mask[0], &mask[1], &mask[2], &mask[3]) == 4 ? 0 : -1;
    size_t n = val->type == YAML_SEQUENCE_NODE ? (size_t)(val->data.sequence.items.top - val->data.sequence.items.start) : 0;
    if (val->type != YAML_SEQUENCE_NODE || n != 4)
        return cfg_fail(p, key, "%s: expected %s, got %s", path, expect,
                        val->type == YAML_SEQUENCE_NODE ? "a list of another length" : cfg_kind(val));
    for (size_t i = 0; i < 4; i++) {
        yaml_node_t *item = cfg_node(p, val->data.sequence.items.start[i]);
        if (cfg_get_int(p, item, item, path, 0, 320, &v[i]) != 0) return -1;
    }
    if (v[0] + v[2] > 320 || v[1] + v[3] > 320)
        return cfg_fail(p, key, "%s: expected %s, got [%d, %d, %d, %d]", path, expect, v[0], v[1], v[2], v[3]);
    memcpy(mask, v, sizeof v);
    return 0;
}

static const cfg_key VISUAL_KEYS[] = {
    INT("margin", M(visual.margin), 0, 64, NULL, "canvas margin; absent = paste_margin (they must agree)"),
    CUSTOM("mask", read_mask, "[5, 5, 310, 305]", "blacked-out part of the masked copy, OpenCV x, y, w, h for a "
                                                  "320 input (scaled by S/320)", NULL, NULL),
    WORD("interpolation", M(visual.interp), INTERP_WORDS, 0, "cubic", "crop -> (S+2m)^2 resize"),
    WORD("cache", M(visual.cache), CACHE_WORDS, 0, "auto",
         "keep each frame's 8-bit input; auto = while it adds <= 25% to the frames' memory"),
    END};

static int check_encoder(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map, const char *path, void *obj) {
    (void)map;
    if (!((ls_model_config *)obj)->encoder_path) return cfg_fail(p, key, "%s: missing required key 'model_path'", path);
    return 0;
}

static const cfg_key ENCODER_KEYS[] = {
    PATH("model_path", M(encoder_path), NULL, "[B,1,80,16] or [B,80,16] mel window -> [B,512] (required)"),
    WORD("kind", 0, ENCODER_KINDS, CFG_NO_FIELD, "ave", "SyncTalk_2D's \"ave\" features, the only kind"),
    END};
static const cfg_section ENCODER_SECTION = {ENCODER_KEYS, check_encoder, 1};
static const cfg_section VISUAL_SECTION = {VISUAL_KEYS, NULL, 0};

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
        return 0;
    }
    if (paste_key && m->visual.margin != m->paste_margin)
        return cfg_fail(p, visual_key, "%s.visual_input.margin: expected the same value as paste_margin (%d, line %zu), got %d",
                        path, m->paste_margin, cfg_line(paste_key), m->visual.margin);
    m->paste_margin = m->visual.margin;
    return 0;
}

static const cfg_key MODEL_KEYS[] = {
    PATH("model_path", M(model_path), NULL, "the lip-sync ONNX model (required; relative to the config file)"),
    PATH("background_dir", M(background_dir), NULL, "the avatar's frames, PNG/JPEG in name order (required)"),
    PATH("crop_rects_path", M(crop_rects_path), NULL, "crop rectangles JSON (required)"),
    INT("num_frames", M(num_frames), 0, INT_MAX, "0", "frames used; 0 = all found"),
    BOOL("preload", M(preload), "false", "load at start"),
    BOOL("pinned", M(pinned), "false", "never evicted or idle-unloaded"),
    INTF("memory_estimate_mb", M(memory_estimate_bytes), 0, 16777216, CFG_MIB, "512", "charged until measured"),
    WORD("frame_order", M(frame_order), ORDER_WORDS, 0, "loop", "frame i of a request is background i"),
    WORD("channel_order", M(channel_bgr), CHANNEL_WORDS, CFG_NEGATE, "bgr", "the model's output planes"),
    INT("paste_margin", M(paste_margin), 0, 64, "4", "canvas margin of 328; 0 = stretch"),
    INT("max_concurrent_requests", M(max_concurrent_requests), 0, 100000, "0", "more at once: RESOURCE_EXHAUSTED; 0 = no limit"),
    WORD("output_format", M(output_format), FORMAT_WORDS, 0, "png", "a request may ask for another"),
    INT("jpeg_quality", M(jpeg_quality), 1, 100, "90", "JPEG output quality"),
    WORD("paste_interpolation", M(paste_interp), INTERP_WORDS, 0, "cubic", "canvas resizes of the paste-back"),
    SECTION("visual_input", &VISUAL_SECTION, "the server-built visual input (requests without one)"),
    SECTION("audio_encoder", &ENCODER_SECTION, "optional: speech in for this model"),
    END};
static const cfg_section MODEL_SECTION = {MODEL_KEYS, check_model, 1};

/* Ids travel in requests, logs and metrics labels, so they are kept to a
 * small alphabet that needs no escaping anywhere. */
static int valid_model_id(const char *id, size_t len) {
    if (len < 1 || len > MODEL_ID_MAX) return 0;
    return strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == len;
}

static int read_models(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map, const char *path, void *obj) {
    ls_config *cfg = obj;
    int r = cfg_expect_mapping(p, key, map, path);
    if (r <= 0) return r;
    if (cfg_check_keys(p, map, "in models", "model id") != 0) return -1;
    size_t n = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
    if (n == 0) return 0;
    /* The section appears once (duplicate keys are refused): sized once. */
    if (!(cfg->models = calloc(n, sizeof *cfg->models))) return cfg_oom(p);
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = cfg_node(p, pair->key);
        const char *id = cfg_text(k);
        if (!valid_model_id(id, k->data.scalar.length))
            return cfg_fail(p, k, "models: invalid model id '%.64s' (expected 1..%d characters of A-Z a-z 0-9 _ . -)",
                            id, MODEL_ID_MAX);
        /* Counted before it is filled, so a failure leaves it to ls_config_free. */
        ls_model_config *m = &cfg->models[cfg->n_models++];
        if (cfg_defaults(&MODEL_SECTION, m) != 0 || !(m->id = strdup(id))) return cfg_oom(p);
        char mpath[16 + MODEL_ID_MAX];
        snprintf(mpath, sizeof mpath, "models.%s", id);
        if (cfg_walk(p, k, cfg_node(p, pair->value), mpath, &MODEL_SECTION, m) != 0) return -1;
    }
    return 0;
}

/* ---- http ---- */

/* An origin as browsers send it in the Origin header: scheme://host[:port],
 * no path, no trailing slash. They are compared as exact strings, so a
 * value that can never match ("example.com", "http://a/") would silently
 * allow nothing; refusing it says so now. "*" allows every origin. */
static int valid_origin(const char *s) {
    if (!strcmp(s, "*")) return 1;
    const char *host = !strncmp(s, "http://", 7) ? s + 7 : !strncmp(s, "https://", 8) ? s + 8 : NULL;
    if (!host || !*host) return 0;
    for (const char *c = host; *c; c++) {
        unsigned char u = (unsigned char)*c;
        if (u <= ' ' || u >= 0x7f || u == '/' || u == '?' || u == '#' || u == '"' || u == '\\') return 0;
    }
    return 1;
}

static int read_origins(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val, const char *path, void *obj) {
    static const char expect[] = "a list of origins like \"https://host:port\" (scheme://host[:port], no path) or \"*\"";
    ls_config *cfg = obj;
    if (cfg_is_null(val)) return 0; /* "cors_origins:" alone: the default, none */
    if (val->type != YAML_SEQUENCE_NODE) return cfg_fail(p, key, "%s: expected %s, got %s", path, expect, cfg_kind(val));
    size_t n = (size_t)(val->data.sequence.items.top - val->data.sequence.items.start);
    if (n > MAX_CORS_ORIGINS)
        return cfg_fail(p, key, "%s: expected at most %d origins, got %zu", path, MAX_CORS_ORIGINS, n);
    if (n == 0) return 0;
    if (!(cfg->cors_origins = calloc(n, sizeof *cfg->cors_origins))) return cfg_oom(p);
    for (yaml_node_item_t *it = val->data.sequence.items.start; it < val->data.sequence.items.top; it++) {
        yaml_node_t *item = cfg_node(p, *it);
        const char *s = cfg_scalar(p, item, item, path, expect);
        if (!s) return -1;
        if (!valid_origin(s)) return cfg_bad_value(p, item, path, expect, s);
        /* Counted once allocated, so ls_config_free frees exactly what is there. */
        if (!(cfg->cors_origins[cfg->n_cors_origins] = strdup(s))) return cfg_oom(p);
        cfg->n_cors_origins++;
    }
    return 0;
}

static const cfg_key HTTP_KEYS[] = {
    BOOL("enabled", C(http_enabled), "true", "HTTP/1.1: /metrics, /healthz, /readyz, gRPC-Web, demo page, /session"),
    LISTEN("listen", C(http_listen), "0.0.0.0:8053", "HTTP address"),
    CUSTOM("cors_origins", read_origins, NULL, "origins allowed cross-origin (\"*\" = any); [] = same-origin only",
           NULL, NULL),
    PATH("web_root", C(web_root), NULL, "static files of the demo page (default: the source tree's web/)"),
    PATH("speech_wav", C(speech_wav), NULL, "optional: served at GET /speech.wav (the demo page's speech)"),
    NUM("websocket_ping_seconds", C(http_ws_ping_seconds), 0.1, 3600, 0, "20",
        "WebSocket /session keepalive: ping after this much silence; silent for three: gone"),
    END};

/* ---- auth and tls ---- */

/* Read a key from a file (first line, trailing whitespace dropped) and hash it. */
static int hash_key_file(cfg_parser *p, const yaml_node_t *key, const char *path, uint8_t out[32]) {
    FILE *f = fopen(path, "r");
    if (!f) return cfg_fail(p, key, "auth key_file %s: cannot open: %s", path, strerror(errno));
    char line[1024];
    char *got = fgets(line, sizeof line, f);
    fclose(f);
    if (!got) return cfg_fail(p, key, "auth key_file %s: empty", path);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t')) n--;
    if (n < 16) return cfg_fail(p, key, "auth key_file %s: expected a key of at least 16 characters", path);
    ls_auth_hash(line, n, out);
    return 0;
}

static int read_key_name(cfg_parser *p, const yaml_node_t *k, const yaml_node_t *v, const char *path, void *obj) {
    ls_auth_key *ak = obj;
    const char *s = cfg_scalar(p, k, v, path, "a name");
    if (!s) return -1;
    free(ak->name);
    return (ak->name = strdup(s)) ? 0 : cfg_oom(p);
}

static int read_key_sha256(cfg_parser *p, const yaml_node_t *k, const yaml_node_t *v, const char *path, void *obj) {
    static const char expect[] = "64 hex characters (SHA-256 of the key)";
    const char *s = cfg_scalar(p, k, v, path, expect);
    if (!s) return -1;
    return ls_auth_parse_hex(s, ((ls_auth_key *)obj)->sha256) ? cfg_bad_value(p, k, path, expect, s) : 0;
}

static int read_key_file(cfg_parser *p, const yaml_node_t *k, const yaml_node_t *v, const char *path, void *obj) {
    char *file = NULL;
    int r = cfg_get_path(p, k, v, path, &file);
    if (!r) r = hash_key_file(p, k, file, ((ls_auth_key *)obj)->sha256);
    free(file);
    return r ? -1 : 0;
}

static int read_key_env(cfg_parser *p, const yaml_node_t *k, const yaml_node_t *v, const char *path, void *obj) {
    const char *s = cfg_scalar(p, k, v, path, "an environment variable name");
    if (!s) return -1;
    const char *key = getenv(s);
    if (!key || strlen(key) < 16)
        return cfg_fail(p, k, "%s: environment variable %.64s %s", path, s,
                        key ? "must hold a key of at least 16 characters" : "is not set");
    ls_auth_hash(key, strlen(key), ((ls_auth_key *)obj)->sha256);
    return 0;
}

static int read_key_models(cfg_parser *p, const yaml_node_t *k, const yaml_node_t *v, const char *path, void *obj) {
    static const char expect[] = "a list of model ids or glob patterns";
    ls_auth_key *ak = obj;
    if (v->type != YAML_SEQUENCE_NODE) return cfg_fail(p, k, "%s: expected %s, got %s", path, expect, cfg_kind(v));
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (n && !(ak->models = calloc(n, sizeof *ak->models))) return cfg_oom(p);
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
        yaml_node_t *m = cfg_node(p, *it);
        const char *s = cfg_scalar(p, m, m, path, expect);
        if (!s) return -1;
        if (!*s) return cfg_bad_value(p, m, path, expect, s);
        if (!(ak->models[ak->n_models] = strdup(s))) return cfg_oom(p);
        ak->n_models++;
    }
    return 0;
}

static int check_key(cfg_parser *p, const yaml_node_t *item, const yaml_node_t *map, const char *path, void *obj) {
    ls_auth_key *ak = obj;
    int secrets = !!cfg_find(p, map, "sha256", NULL) + !!cfg_find(p, map, "key_file", NULL) +
                  !!cfg_find(p, map, "key_env", NULL);
    if (secrets != 1)
        return cfg_fail(p, item, "%s: expected exactly one of sha256, key_file, key_env, got %d", path, secrets);
    if (!ak->name && !(ak->name = strdup("unnamed"))) return cfg_oom(p);
    return 0;
}

static const cfg_key AUTH_KEY_KEYS[] = {
    CUSTOM("name", read_key_name, NULL, "in logs and metrics (default \"unnamed\")", NULL, NULL),
    CUSTOM("sha256", read_key_sha256, NULL, "64 hex: SHA-256 of the key; exactly one of sha256 | key_file | key_env",
           NULL, NULL),
    CUSTOM("key_file", read_key_file, NULL, "a file whose first line is the key (at least 16 characters)", NULL, NULL),
    CUSTOM("key_env", read_key_env, NULL, "an environment variable holding the key", NULL, NULL),
    CUSTOM("models", read_key_models, NULL, "ids or glob patterns this key may use, e.g. [demo, \"bob*\"]", NULL, NULL),
    BOOL("admin", A(admin), NULL, "every model, plus Load/Unload"),
    END};
static const cfg_section AUTH_KEY_SECTION = {AUTH_KEY_KEYS, check_key, 1};

static int read_keys(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *v, const char *path, void *obj) {
    ls_auth *auth = &((ls_config *)obj)->auth;
    if (v->type != YAML_SEQUENCE_NODE) return cfg_fail(p, key, "%s: expected a list of keys, got %s", path, cfg_kind(v));
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (n && !(auth->keys = calloc(n, sizeof *auth->keys))) return cfg_oom(p);
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
        yaml_node_t *item = cfg_node(p, *it);
        /* Counted before parsing so a failure frees what it filled. */
        ls_auth_key *ak = &auth->keys[auth->n_keys++];
        if (item->type != YAML_MAPPING_NODE)
            return cfg_fail(p, item, "%s: expected a mapping per key (name, sha256|key_file|key_env, models, admin), got %s",
                            path, cfg_kind(item));
        if (cfg_walk(p, item, item, path, &AUTH_KEY_SECTION, ak) != 0) return -1;
    }
    return 0;
}

/* A present auth section means auth, unless it says enabled: false. */
static int check_auth(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map, const char *path, void *obj) {
    ls_auth *auth = &((ls_config *)obj)->auth;
    if (!cfg_find(p, map, "enabled", NULL)) auth->enabled = 1;
    if (auth->enabled && auth->n_keys == 0)
        return cfg_fail(p, key, "%s: enabled but no keys (expected auth.keys: a list of keys)", path);
    return 0;
}

static int check_tls(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map, const char *path, void *obj) {
    (void)map;
    const ls_config *cfg = obj;
    if (!cfg->tls_cert_file || !cfg->tls_key_file) return cfg_fail(p, key, "%s: expected both cert_file and key_file", path);
    return 0;
}

static const cfg_key AUTH_KEYS[] = {
    BOOL("enabled", C(auth.enabled), NULL, "a present section means true"),
    CUSTOM("keys", read_keys, NULL, "the keys, a list", &AUTH_KEY_SECTION, "-"),
    END};

static const cfg_key TLS_KEYS[] = {
    PATH("cert_file", C(tls_cert_file), NULL, "server certificate chain (PEM)"),
    PATH("key_file", C(tls_key_file), NULL, "its private key"),
    PATH("client_ca_file", C(tls_client_ca_file), NULL, "optional: require client certificates it signed"),
    END};

/* ---- the top level ---- */

static const cfg_section SERVER = {SERVER_KEYS, NULL, 0}, CAPACITY = {CAPACITY_KEYS, NULL, 0},
                         AUDIO = {AUDIO_KEYS, NULL, 0}, SESSIONS = {SESSIONS_KEYS, NULL, 0},
                         HTTP = {HTTP_KEYS, NULL, 0}, AUTH = {AUTH_KEYS, check_auth, 0}, TLS = {TLS_KEYS, check_tls, 0};

static const cfg_key ROOT_KEYS[] = {
    SECTION("server", &SERVER, "the gRPC listener and request handling"),
    SECTION("capacity", &CAPACITY, "which models stay loaded"),
    CUSTOM("models", read_models, NULL, "the avatars, by id (1..128 of A-Z a-z 0-9 _ . -)", &MODEL_SECTION, "<id>:"),
    SECTION("audio", &AUDIO, "speech in (ExtractAudioFeatures, RenderSpeech, sessions)"),
    SECTION("sessions", &SESSIONS, "live StreamSession and WebSocket sessions"),
    SECTION("http", &HTTP, "the HTTP listener"),
    SECTION("auth", &AUTH, "optional tenant keys; absent = no keys needed"),
    SECTION("tls", &TLS, "optional; absent = plaintext"),
    END};
static const cfg_section ROOT = {ROOT_KEYS, NULL, 0};

/* The strings are heap copies so that ls_config_free can treat every config
 * alike. If strdup fails they stay NULL; ls_config_parse checks for that, and
 * a caller using the defaults alone gets a config that frees cleanly. */
void ls_config_defaults(ls_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->source = strdup("<defaults>");
    cfg->web_root = strdup(LS_WEB_ROOT); /* compiled in, so not a table default */
    (void)cfg_defaults(&ROOT, cfg);
}

/* Frees whatever is there (a config may be half filled when a parse fails)
 * and zeroes the struct, so a second call is harmless. */
void ls_config_free(ls_config *cfg) {
    if (!cfg) return;
    for (size_t i = 0; i < cfg->n_models; i++) {
        cfg_free_strings(&MODEL_SECTION, &cfg->models[i]);
        free(cfg->models[i].id);
    }
    free(cfg->models);
    free(cfg->source);
    cfg_free_strings(&ROOT, cfg);
    for (size_t i = 0; i < cfg->n_cors_origins; i++) free(cfg->cors_origins[i]);
    free(cfg->cors_origins);
    ls_auth_free(&cfg->auth);
    memset(cfg, 0, sizeof *cfg);
}

const ls_model_config *ls_config_find(const ls_config *cfg, const char *id) {
    if (!cfg || !id) return NULL;
    for (size_t i = 0; i < cfg->n_models; i++)
        if (cfg->models[i].id && strcmp(cfg->models[i].id, id) == 0) return &cfg->models[i];
    return NULL;
}

void ls_config_doc(FILE *out) { cfg_write_doc(out, &ROOT, 2); }

static int parse_root(cfg_parser *p, const yaml_node_t *root, ls_config *cfg) {
    /* A file holding only "~" or "null" is as empty as an empty file. */
    if (cfg_is_null(root)) return 0;
    if (root->type != YAML_MAPPING_NODE)
        return cfg_fail(p, root, "expected a mapping of sections (server, capacity, models, http), got %s",
                        cfg_kind(root));
    return cfg_walk(p, root, root, "", &ROOT, cfg);
}

/* ---- entry points ---- */

static int yaml_syntax_error(const yaml_parser_t *yp, const char *source, ls_err *err) {
    if (yp->error == YAML_MEMORY_ERROR)
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "%s: out of memory", source);
    const char *problem = yp->problem ? yp->problem : "unknown error";
    /* Reader errors (bad encoding) carry a byte offset, not a line. */
    if (yp->error == YAML_READER_ERROR)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "%s: invalid YAML at byte %zu: %s", source,
                          yp->problem_offset, problem);
    if (yp->context)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "%s:%zu:%zu: invalid YAML: %s (%s at line %zu)",
                          source, yp->problem_mark.line + 1, yp->problem_mark.column + 1, problem,
                          yp->context, yp->context_mark.line + 1);
    return ls_err_set(err, LS_INVALID_ARGUMENT, "%s:%zu:%zu: invalid YAML: %s", source,
                      yp->problem_mark.line + 1, yp->problem_mark.column + 1, problem);
}

/* The config is one document. A second one is almost certainly two files
 * pasted together, and which of them to believe is not ours to guess. */
static int expect_single_document(yaml_parser_t *yp, const char *source, ls_err *err) {
    yaml_document_t next;
    if (!yaml_parser_load(yp, &next)) return yaml_syntax_error(yp, source, err);
    yaml_node_t *root = yaml_document_get_root_node(&next);
    int rc = 0;
    if (root)
        rc = ls_err_set(err, LS_INVALID_ARGUMENT,
                        "%s:%zu: a second YAML document; the config must be a single document",
                        source, next.start_mark.line + 1);
    yaml_document_delete(&next);
    return rc;
}

int ls_config_parse(const char *yaml, size_t len, const char *source, const char *base_dir,
                    ls_config *cfg, ls_err *err) {
    if (!source) source = "<string>";
    ls_config_defaults(cfg);
    free(cfg->source);
    cfg->source = strdup(source);
    if (!cfg->source || !cfg->listen || !cfg->http_listen || !cfg->web_root) {
        ls_config_free(cfg);
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "%s: out of memory", source);
    }

    yaml_parser_t yp;
    if (!yaml_parser_initialize(&yp)) {
        ls_config_free(cfg);
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "%s: out of memory", source);
    }
    yaml_parser_set_input_string(&yp, (const unsigned char *)(yaml ? yaml : ""), yaml ? len : 0);

    yaml_document_t doc;
    int rc;
    if (!yaml_parser_load(&yp, &doc)) {
        rc = yaml_syntax_error(&yp, source, err);
    } else {
        cfg_parser p = {
            .doc = &doc,
            .source = source,
            .base_dir = base_dir && *base_dir ? base_dir : NULL,
            .cwd = NULL,
            .err = err,
        };
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        rc = root ? parse_root(&p, root, cfg) : 0; /* no root: empty text, all defaults */
        if (rc == 0) rc = expect_single_document(&yp, source, err);
        free(p.cwd);
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&yp);
    if (rc != 0) ls_config_free(cfg);
    return rc;
}


int ls_config_load_file(const char *path, ls_config *cfg, ls_err *err) {
    memset(cfg, 0, sizeof *cfg);
    ls_buf buf = {0};
    int e = ls_read_file(path, &buf, CONFIG_MAX_BYTES);
    if (e != 0) {
        ls_buf_free(&buf);
        return ls_err_set(err, LS_INVALID_ARGUMENT, "%s: cannot read config: %s", path,
                          strerror(e));
    }

    /* Relative paths in the file are relative to the file. A bare file name
     * lives in the current directory, which NULL asks for. */
    char *dir = NULL;
    const char *slash = strrchr(path, '/');
    if (slash) {
        size_t n = slash == path ? 1 : (size_t)(slash - path); /* "/x.yaml" -> "/" */
        dir = malloc(n + 1);
        if (!dir) {
            ls_buf_free(&buf);
            return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "%s: out of memory", path);
        }
        memcpy(dir, path, n);
        dir[n] = '\0';
    }

    int rc = ls_config_parse((const char *)buf.data, buf.len, path, dir, cfg, err);
    free(dir);
    ls_buf_free(&buf);
    return rc;
}
