/* config.c - the YAML configuration (the format is documented in config.h).
 *
 * The text is loaded with libyaml's document API into a node tree, which is
 * then walked section by section. A tree rather than the event stream
 * because the messages need random access: a bad value names the line of its
 * key, a duplicate names both lines, a model lacking a required key names the
 * model's line. Config files are tiny, so the memory for the tree is nothing.
 *
 * Everything is strict: unknown keys, duplicate keys, numbers out of range and
 * values of the wrong shape are all errors. A misspelt "pined: true" that
 * silently falls back to the default is a bug found weeks later in
 * production; refusing to start finds it now. The first error aborts the
 * parse and the half-filled config is freed, so callers never see one. */

#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <yaml.h>

#define MIB (1024ull * 1024ull)
#define GIB (1024ull * MIB)

#define MODEL_ID_MAX 128
#define MAX_THREADS 256

/* A config file bigger than this is a mistake (a wrong path to some data
 * file), not a config; refuse it rather than read it all. */
#define CONFIG_MAX_BYTES (16u * 1024u * 1024u)

/* Upper bounds for the time settings. Consumers turn seconds into nanosecond
 * deadlines in a uint64_t; 1e9 s (about 31 years) keeps that far from
 * overflow while being longer than any interval anyone means. */
#define MAX_SECONDS 1e9
#define MAX_MINUTES 1e7
/* 1 PiB: far beyond any machine, small enough that GiB * 2^30 fits easily. */
#define MAX_MEMORY_GB 1048576.0
/* gRPC keeps message limits in an int: 2047 MiB is the most that fits. */
#define MAX_MESSAGE_MB 2047
/* 16 TiB per model. */
#define MAX_MODEL_MB 16777216

/* The demo page's files; the build passes the source tree's web/ so a
 * server run from the build directory finds them without configuration. */
#ifndef LS_WEB_ROOT
#define LS_WEB_ROOT "web"
#endif
/* A CORS list longer than this is a generated mistake, not a policy. */
#define MAX_CORS_ORIGINS 64

/* ------------------------------------------------------------------------ */
/* Defaults and teardown                                                     */
/* ------------------------------------------------------------------------ */

static void model_defaults(ls_model_config *m) {
    memset(m, 0, sizeof *m);
    m->num_frames = 0;
    m->preload = 0;
    m->pinned = 0;
    m->memory_estimate_bytes = 512 * MIB;
    m->frame_order = LS_ORDER_LOOP;
    m->channel_bgr = 1;
    m->paste_margin = 4;
    m->output_format = LS_FORMAT_PNG;
    m->jpeg_quality = 90;
    m->paste_interp = LS_INTERP_CUBIC;
    m->visual.margin = 4;
    static const int ref_mask[4] = {5, 5, 310, 305}; /* reference: black over x 5..314, y 5..309 */
    memcpy(m->visual.mask, ref_mask, sizeof ref_mask);
    m->visual.interp = LS_INTERP_CUBIC;
    m->visual.cache = LS_CACHE_AUTO;
}

/* The strings are heap copies so that ls_config_free can treat every config
 * alike. If strdup fails they stay NULL; ls_config_parse checks for that, and
 * a caller using the defaults alone gets a config that frees cleanly. */
void ls_config_defaults(ls_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->source = strdup("<defaults>");
    cfg->listen = strdup("0.0.0.0:50053");
    cfg->max_message_bytes = 128 * MIB;
    cfg->worker_threads = 4;
    cfg->ort_intra_threads = 0;
    cfg->ort_inter_threads = 1;
    cfg->max_batch = 32;
    cfg->png_level = 1;
    cfg->max_queue = 256;
    cfg->drain_seconds = 10;
    cfg->unready_grace_seconds = 0;
    cfg->max_models = 4;
    cfg->max_memory_bytes = 8 * GIB;
    cfg->policy = LS_POLICY_LRU;
    cfg->idle_unload_seconds = 1800;
    cfg->lfu_half_life_seconds = 600;
    cfg->lfu_initial = 5;
    cfg->min_residency_seconds = 30;
    cfg->idle_check_seconds = 60;
    cfg->stats_report_seconds = 300;
    cfg->load_retry_seconds = 10;
    cfg->audio_max_seconds = 600;
    cfg->sessions_max = 64;
    cfg->sessions_stall_seconds = 30;
    cfg->http_enabled = 1;
    cfg->http_listen = strdup("0.0.0.0:8053");
    cfg->http_ws_ping_seconds = 20;
    cfg->web_root = strdup(LS_WEB_ROOT);
    cfg->models = NULL;
    cfg->n_models = 0;
}

/* Frees whatever is there (a config may be half filled when a parse fails)
 * and zeroes the struct, so a second call, or a call on a config that was
 * only zeroed, is harmless. */
void ls_config_free(ls_config *cfg) {
    if (!cfg) return;
    for (size_t i = 0; i < cfg->n_models; i++) {
        ls_model_config *m = &cfg->models[i];
        free(m->id);
        free(m->model_path);
        free(m->background_dir);
        free(m->crop_rects_path);
        free(m->encoder_path);
    }
    free(cfg->models);
    free(cfg->source);
    free(cfg->listen);
    free(cfg->http_listen);
    free(cfg->speech_wav);
    for (size_t i = 0; i < cfg->n_cors_origins; i++) free(cfg->cors_origins[i]);
    free(cfg->cors_origins);
    free(cfg->web_root);
    ls_auth_free(&cfg->auth);
    free(cfg->tls_cert_file);
    free(cfg->tls_key_file);
    free(cfg->tls_client_ca_file);
    memset(cfg, 0, sizeof *cfg);
}

const ls_model_config *ls_config_find(const ls_config *cfg, const char *id) {
    if (!cfg || !id) return NULL;
    for (size_t i = 0; i < cfg->n_models; i++)
        if (cfg->models[i].id && strcmp(cfg->models[i].id, id) == 0) return &cfg->models[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* The walk: context, messages, node helpers                                 */
/* ------------------------------------------------------------------------ */

typedef struct {
    yaml_document_t *doc;
    const char *source;   /* names the text in messages */
    const char *base_dir; /* caller's base, or NULL until cwd is needed */
    char *cwd;            /* owned: the current directory once looked up */
    ls_config *cfg;
    ls_err *err;
} cfg_parser;

static size_t node_line(const yaml_node_t *n) { return n->start_mark.line + 1; }

static const char *text(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

static yaml_node_t *node_at(cfg_parser *p, int index) {
    return yaml_document_get_node(p->doc, index);
}

static const char *node_kind(const yaml_node_t *n) {
    switch (n->type) {
    case YAML_MAPPING_NODE: return "a mapping";
    case YAML_SEQUENCE_NODE: return "a list";
    default: return "a single value";
    }
}

/* Every parse error goes through here: "<source>:<line>: <message>". */
static int fail(cfg_parser *p, const yaml_node_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(cfg_parser *p, const yaml_node_t *at, const char *fmt, ...) {
    char msg[LS_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ls_err_set(p->err, LS_INVALID_ARGUMENT, "%s:%zu: %s", p->source, node_line(at), msg);
}

static int oom(cfg_parser *p) {
    return ls_err_set(p->err, LS_RESOURCE_EXHAUSTED, "%s: out of memory", p->source);
}

/* YAML's spellings of "nothing": what "key:" with no value loads as. Only a
 * plain scalar counts; a quoted "null" is a string. */
static int is_null(const yaml_node_t *n) {
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    const char *s = text(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
           !strcmp(s, "NULL");
}

/* Sections and model bodies must be mappings. A key with nothing under it
 * ("models:" alone) loads as a null scalar, which we take as an empty mapping
 * since that is plainly what was meant. Returns 1 for a mapping to walk, 0 for
 * an empty one, -1 (err set) for anything else. */
static int expect_mapping(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val,
                          const char *path) {
    if (val->type == YAML_MAPPING_NODE) return 1;
    if (is_null(val)) return 0;
    return fail(p, key, "%s: expected a mapping, got %s", path, node_kind(val));
}

/* Every key of a mapping must be a string without NUL bytes and appear once.
 * libyaml accepts duplicate keys, and with them the last one would silently
 * win; we refuse them, naming both lines. `where` is a phrase like
 * "in server"; `noun` is "key" or "model id". */
static int check_keys(cfg_parser *p, const yaml_node_t *map, const char *where,
                      const char *noun) {
    yaml_node_pair_t *start = map->data.mapping.pairs.start;
    for (yaml_node_pair_t *a = start; a < map->data.mapping.pairs.top; a++) {
        yaml_node_t *k = node_at(p, a->key);
        if (k->type != YAML_SCALAR_NODE)
            return fail(p, k, "keys must be plain strings, got %s as a key %s", node_kind(k),
                        where);
        if (strlen(text(k)) != k->data.scalar.length)
            return fail(p, k, "a key %s contains a NUL byte", where);
        for (yaml_node_pair_t *b = start; b < a; b++) {
            yaml_node_t *first = node_at(p, b->key);
            if (strcmp(text(first), text(k)) == 0)
                return fail(p, k, "duplicate %s '%.64s' %s (first at line %zu)", noun, text(k),
                            where, node_line(first));
        }
    }
    return 0;
}

static int unknown_key(cfg_parser *p, const yaml_node_t *key, const char *where,
                       const char *const *known) {
    char list[512];
    size_t off = 0;
    list[0] = '\0';
    for (size_t i = 0; known[i] && off < sizeof list; i++)
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "", known[i]);
    return fail(p, key, "unknown key '%.64s' %s (expected one of: %s)", text(key), where, list);
}

/* ------------------------------------------------------------------------ */
/* Values                                                                    */
/* ------------------------------------------------------------------------ */

/* Each getter validates one value completely before storing it, and reports
 * "<path>: expected <form>, got '<value>'" at the key's line: the key is what
 * the reader looks for, and for an empty value it is the only line there is.
 * Scalars are read by their text whatever their quoting, so "32" and 32 are
 * the same number; being strict about YAML's typing would only produce
 * errors nobody would understand. */

/* The text of a scalar setting, or NULL (err set) for a list or mapping. */
static const char *scalar_value(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val,
                                const char *path, const char *expect) {
    if (val->type != YAML_SCALAR_NODE) {
        fail(p, key, "%s: expected %s, got %s", path, expect, node_kind(val));
        return NULL;
    }
    if (strlen(text(val)) != val->data.scalar.length) {
        fail(p, key, "%s: expected %s, got a value containing a NUL byte", path, expect);
        return NULL;
    }
    return text(val);
}

/* "<path>: expected <form>, got '<text>'"; an empty value says so. */
static int bad_value(cfg_parser *p, const yaml_node_t *key, const char *path, const char *expect,
                     const char *s) {
    if (*s == '\0') return fail(p, key, "%s: expected %s, got nothing", path, expect);
    return fail(p, key, "%s: expected %s, got '%.64s'", path, expect, s);
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* A decimal integer with an optional sign and nothing else: strtoll alone
 * would also take leading blanks and stop quietly at "4.5" or "0x10". */
static int parse_integer(const char *s, long long *out) {
    const char *d = s + (*s == '+' || *s == '-');
    if (!is_digit(*d)) return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0') return -1;
    *out = v;
    return 0;
}

/* A decimal number: [sign] digits [. digits] [e [sign] digits]. Checked by
 * hand first because strtod also takes "inf", "nan" and hex floats, none of
 * which belong in a config. (strtod follows LC_NUMERIC; the server never
 * calls setlocale, so the point is '.'.) */
static int parse_number(const char *s, double *out) {
    const char *c = s;
    size_t digits = 0;
    if (*c == '+' || *c == '-') c++;
    while (is_digit(*c)) c++, digits++;
    if (*c == '.') {
        c++;
        while (is_digit(*c)) c++, digits++;
    }
    if (digits == 0) return -1;
    if (*c == 'e' || *c == 'E') {
        c++;
        if (*c == '+' || *c == '-') c++;
        if (!is_digit(*c)) return -1;
        while (is_digit(*c)) c++;
    }
    if (*c != '\0') return -1;
    double v = strtod(s, NULL);
    if (!isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int get_int(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val,
                   const char *path, int min, int max, int *out) {
    char expect[64];
    if (max == INT_MAX)
        snprintf(expect, sizeof expect, "an integer >= %d", min);
    else
        snprintf(expect, sizeof expect, "an integer %d..%d", min, max);
    const char *s = scalar_value(p, key, val, path, expect);
    if (!s) return -1;
    long long v;
    if (parse_integer(s, &v) != 0 || v < min || v > max)
        return bad_value(p, key, path, expect, s);
    *out = (int)v;
    return 0;
}

/* A number in (min, max] when min_exclusive, else [min, max]. */
static int get_number(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val,
                      const char *path, double min, int min_exclusive, double max, double *out) {
    char expect[96];
    snprintf(expect, sizeof expect, "a number %s %.15g and <= %.15g", min_exclusive ? ">" : ">=",
             min, max);
    const char *s = scalar_value(p, key, val, path, expect);
    if (!s) return -1;
    double v;
    if (parse_number(s, &v) != 0 || v < min || (min_exclusive && v == min) || v > max)
        return bad_value(p, key, path, expect, s);
    *out = v;
    return 0;
}

static int get_bool(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val,
                    const char *path, int *out) {
    static const char expect[] = "true, false, yes or no";
    const char *s = scalar_value(p, key, val, path, expect);
    if (!s) return -1;
    if (!strcasecmp(s, "true") || !strcasecmp(s, "yes")) {
        *out = 1;
    } else if (!strcasecmp(s, "false") || !strcasecmp(s, "no")) {
        *out = 0;
    } else {
        return bad_value(p, key, path, expect, s);
    }
    return 0;
}

/* One of a fixed set of words, case-insensitively; *out is its index. The
 * message lists them: "expected lru or lfu". */
static int get_choice(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val,
                      const char *path, const char *const *words, int *out) {
    char expect[128];
    size_t n = 0, off = 0;
    while (words[n]) n++;
    expect[0] = '\0';
    for (size_t i = 0; i < n && off < sizeof expect; i++) {
        const char *sep = i == 0 ? "" : i + 1 == n ? " or " : ", ";
        off += (size_t)snprintf(expect + off, sizeof expect - off, "%s%s", sep, words[i]);
    }
    const char *s = scalar_value(p, key, val, path, expect);
    if (!s) return -1;
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(s, words[i]) == 0) {
            *out = (int)i;
            return 0;
        }
    }
    return bad_value(p, key, path, expect, s);
}

/* The directory relative paths hang off: the caller's, or the current one,
 * looked up only when a relative path actually needs it. */
static const char *base_dir(cfg_parser *p) {
    if (p->base_dir) return p->base_dir;
    size_t cap = 256;
    for (;;) {
        char *buf = malloc(cap);
        if (!buf) {
            errno = ENOMEM;
            return NULL;
        }
        if (getcwd(buf, cap)) {
            p->cwd = buf;
            p->base_dir = buf;
            return buf;
        }
        free(buf);
        if (errno != ERANGE) return NULL;
        cap *= 2;
    }
}

/* Textual resolution: absolute paths are kept, relative ones are joined to
 * the base with '/'. Leading "./" components are dropped so messages show
 * "conf/models/a.onnx" rather than "conf/./models/a.onnx". Nothing is
 * looked up on disk: the files are opened later, when a model loads, and
 * may not exist yet. Returns a malloc'd string, or NULL with errno set. */
static char *resolve_path(const char *base, const char *path) {
    if (path[0] == '/') return strdup(path);
    while (path[0] == '.' && path[1] == '/') {
        path += 2;
        while (*path == '/') path++;
    }
    if (*path == '\0') return strdup(base);
    size_t blen = strlen(base), plen = strlen(path);
    int slash = blen > 0 && base[blen - 1] == '/';
    char *out = malloc(blen + !slash + plen + 1);
    if (!out) return NULL;
    memcpy(out, base, blen);
    if (!slash) out[blen++] = '/';
    memcpy(out + blen, path, plen + 1);
    return out;
}

static int get_path(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val,
                    const char *path, char **out) {
    const char *s = scalar_value(p, key, val, path, "a path");
    if (!s) return -1;
    if (is_null(val)) return fail(p, key, "%s: expected a path, got nothing", path);
    const char *base = "";
    if (s[0] != '/' && !(base = base_dir(p)))
        return fail(p, key, "%s: cannot resolve relative path '%.64s': current directory: %s",
                    path, s, strerror(errno));
    char *resolved = resolve_path(base, s);
    if (!resolved) return oom(p);
    free(*out); /* keys are unique, but never leak if one were set twice */
    *out = resolved;
    return 0;
}

/* host:port, or [v6-address]:port, with port 1..65535. A bare IPv6 address
 * is refused because "::1:50053" is ambiguous. The host itself is only
 * checked for emptiness and stray characters; gRPC resolves it at bind. */
static int valid_listen(const char *s) {
    const char *host = s, *host_end, *port;
    if (s[0] == '[') {
        host = s + 1;
        host_end = strchr(host, ']');
        if (!host_end || host_end[1] != ':') return 0;
        port = host_end + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon) return 0;
        host_end = colon;
        port = colon + 1;
    }
    if (host_end == host) return 0;
    for (const char *c = host; c < host_end; c++) {
        unsigned char u = (unsigned char)*c;
        if (u <= ' ' || u == 0x7f || u == '/' || u == '[' || u == ']') return 0;
        if (u == ':' && s[0] != '[') return 0;
    }
    size_t n = strlen(port);
    if (n == 0 || n > 5) return 0;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(port[i])) return 0;
        v = v * 10 + (port[i] - '0');
    }
    return v >= 1 && v <= 65535;
}

static int get_listen(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val,
                      const char *path, char **out) {
    static const char expect[] = "host:port (or [ipv6]:port) with port 1..65535";
    const char *s = scalar_value(p, key, val, path, expect);
    if (!s) return -1;
    if (!valid_listen(s))
        return bad_value(p, key, path, expect, s);
    char *copy = strdup(s);
    if (!copy) return oom(p);
    free(*out);
    *out = copy;
    return 0;
}

static int online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) return 1;
    return n > MAX_THREADS ? MAX_THREADS : (int)n;
}

/* ------------------------------------------------------------------------ */
/* Sections                                                                  */
/* ------------------------------------------------------------------------ */

static const char *const ROOT_KEYS[] = {"server", "capacity", "models", "audio", "sessions", "http", "auth", "tls",
                                        NULL};
static const char *const SESSIONS_KEYS[] = {"max", "stall_timeout_s", NULL};
static const char *const AUDIO_KEYS[] = {"max_seconds", NULL};
static const char *const ENCODER_KEYS[] = {"model_path", "kind", NULL};
static const char *const ENCODER_KINDS[] = {"ave", NULL};

static const char *const SERVER_KEYS[] = {
    "listen",    "max_message_mb", "worker_threads", "ort_intra_threads", "ort_inter_threads",
    "max_batch", "png_level", "max_queue", "drain_seconds", "unready_grace_seconds", NULL};

static const char *const CAPACITY_KEYS[] = {
    "max_models",         "max_memory_gb",        "eviction_policy",    "idle_unload_minutes",
    "idle_check_seconds", "stats_report_seconds", "load_retry_seconds", "lfu_half_life_minutes",
    "lfu_initial",        "min_residency_seconds", NULL};

static const char *const MODEL_KEYS[] = {
    "model_path", "background_dir", "crop_rects_path", "num_frames",    "preload",
    "pinned",     "memory_estimate_mb", "frame_order", "channel_order", "paste_margin",
    "max_concurrent_requests", "output_format", "jpeg_quality", "paste_interpolation", "visual_input", "audio_encoder", NULL};

static const char *const VISUAL_KEYS[] = {"margin", "mask", "interpolation", "cache", NULL};

static const char *const HTTP_KEYS[] = {"enabled",    "listen",          "cors_origins", "web_root",
                                        "speech_wav", "websocket_ping_seconds", NULL};

/* Word lists in the order of their enums. */
static const char *const POLICY_WORDS[] = {"lru", "lfu", "lfu_count", NULL};
static const char *const ORDER_WORDS[] = {"loop", "pingpong", NULL};
static const char *const CHANNEL_WORDS[] = {"bgr", "rgb", NULL};
static const char *const FORMAT_WORDS[] = {"png", "jpeg", "raw", NULL}; /* order of ls_format */
static const char *const INTERP_WORDS[] = {"cubic", "linear", NULL};     /* order of ls_interp */
static const char *const CACHE_WORDS[] = {"auto", "on", "off", NULL};    /* order of ls_cache_mode */

#define FOR_EACH_PAIR(map, pair)                                                    \
    for (yaml_node_pair_t *pair = (map)->data.mapping.pairs.start;                 \
         pair < (map)->data.mapping.pairs.top; pair++)

static int parse_server(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map) {
    ls_config *cfg = p->cfg;
    int r = expect_mapping(p, key, map, "server");
    if (r <= 0) return r;
    if (check_keys(p, map, "in server", "key") != 0) return -1;
    FOR_EACH_PAIR(map, pair) {
        yaml_node_t *k = node_at(p, pair->key), *v = node_at(p, pair->value);
        const char *name = text(k);
        int mb;
        if (!strcmp(name, "listen")) {
            r = get_listen(p, k, v, "server.listen", &cfg->listen);
        } else if (!strcmp(name, "max_message_mb")) {
            r = get_int(p, k, v, "server.max_message_mb", 1, MAX_MESSAGE_MB, &mb);
            cfg->max_message_bytes = (uint64_t)mb * MIB;
        } else if (!strcmp(name, "worker_threads")) {
            r = get_int(p, k, v, "server.worker_threads", 0, MAX_THREADS, &cfg->worker_threads);
            /* Resolved here so every consumer sees a real thread count. */
            if (r == 0 && cfg->worker_threads == 0) cfg->worker_threads = online_cpus();
        } else if (!strcmp(name, "ort_intra_threads")) {
            r = get_int(p, k, v, "server.ort_intra_threads", 0, MAX_THREADS,
                        &cfg->ort_intra_threads);
        } else if (!strcmp(name, "ort_inter_threads")) {
            r = get_int(p, k, v, "server.ort_inter_threads", 0, MAX_THREADS,
                        &cfg->ort_inter_threads);
        } else if (!strcmp(name, "max_batch")) {
            r = get_int(p, k, v, "server.max_batch", 1, 1024, &cfg->max_batch);
        } else if (!strcmp(name, "png_level")) {
            r = get_int(p, k, v, "server.png_level", 0, 3, &cfg->png_level);
        } else if (!strcmp(name, "max_queue")) {
            r = get_int(p, k, v, "server.max_queue", 1, 1000000, &cfg->max_queue);
        } else if (!strcmp(name, "drain_seconds")) {
            r = get_number(p, k, v, "server.drain_seconds", 0, 0, 3600, &cfg->drain_seconds);
        } else if (!strcmp(name, "unready_grace_seconds")) {
            r = get_number(p, k, v, "server.unready_grace_seconds", 0, 0, 3600, &cfg->unready_grace_seconds);
        } else {
            r = unknown_key(p, k, "in server", SERVER_KEYS);
        }
        if (r != 0) return -1;
    }
    return 0;
}

static int parse_capacity(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map) {
    ls_config *cfg = p->cfg;
    int r = expect_mapping(p, key, map, "capacity");
    if (r <= 0) return r;
    if (check_keys(p, map, "in capacity", "key") != 0) return -1;
    FOR_EACH_PAIR(map, pair) {
        yaml_node_t *k = node_at(p, pair->key), *v = node_at(p, pair->value);
        const char *name = text(k);
        double d = 0;
        int choice = 0;
        if (!strcmp(name, "max_models")) {
            r = get_int(p, k, v, "capacity.max_models", 1, INT_MAX, &cfg->max_models);
        } else if (!strcmp(name, "max_memory_gb")) {
            r = get_number(p, k, v, "capacity.max_memory_gb", 0, 1, MAX_MEMORY_GB, &d);
            /* Rounded to whole bytes; a tiny positive value still means a
             * budget, so it never rounds down to "nothing fits". */
            cfg->max_memory_bytes = (uint64_t)llround(d * (double)GIB);
            if (r == 0 && cfg->max_memory_bytes == 0) cfg->max_memory_bytes = 1;
        } else if (!strcmp(name, "eviction_policy")) {
            r = get_choice(p, k, v, "capacity.eviction_policy", POLICY_WORDS, &choice);
            cfg->policy = (ls_policy)choice;
        } else if (!strcmp(name, "idle_unload_minutes")) {
            r = get_number(p, k, v, "capacity.idle_unload_minutes", 0, 0, MAX_MINUTES, &d);
            cfg->idle_unload_seconds = d * 60.0;
        } else if (!strcmp(name, "idle_check_seconds")) {
            /* > 0: the idle checker sleeps this long between sweeps. */
            r = get_number(p, k, v, "capacity.idle_check_seconds", 0, 1, MAX_SECONDS,
                           &cfg->idle_check_seconds);
        } else if (!strcmp(name, "stats_report_seconds")) {
            r = get_number(p, k, v, "capacity.stats_report_seconds", 0, 1, MAX_SECONDS,
                           &cfg->stats_report_seconds);
        } else if (!strcmp(name, "load_retry_seconds")) {
            /* 0 is allowed: retry a failed load on the next request. */
            r = get_number(p, k, v, "capacity.load_retry_seconds", 0, 0, MAX_SECONDS,
                           &cfg->load_retry_seconds);
        } else if (!strcmp(name, "lfu_half_life_minutes")) {
            /* > 0: a score that never decays is lfu_count's flaw. */
            r = get_number(p, k, v, "capacity.lfu_half_life_minutes", 0, 1, MAX_MINUTES, &d);
            cfg->lfu_half_life_seconds = d * 60.0;
        } else if (!strcmp(name, "lfu_initial")) {
            /* The score is log2(1 + uses): 64 is more than 2^63 uses. */
            r = get_number(p, k, v, "capacity.lfu_initial", 0, 0, 64, &cfg->lfu_initial);
        } else if (!strcmp(name, "min_residency_seconds")) {
            /* 0 turns the churn guard off. */
            r = get_number(p, k, v, "capacity.min_residency_seconds", 0, 0, MAX_SECONDS,
                           &cfg->min_residency_seconds);
        } else {
            r = unknown_key(p, k, "in capacity", CAPACITY_KEYS);
        }
        if (r != 0) return -1;
    }
    return 0;
}

/* Ids travel in requests, logs and metrics labels, so they are kept to a
 * small alphabet that needs no escaping anywhere. */
static int valid_model_id(const char *id, size_t len) {
    if (len < 1 || len > MODEL_ID_MAX) return 0;
    for (size_t i = 0; i < len; i++) {
        char c = id[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '_' ||
              c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

/* visual_input.mask: [x, y, w, h] for a 320 x 320 input, as OpenCV's
 * rectangle takes it; inside the image. */
static int get_mask(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val, const char *path,
                    int mask[4]) {
    static const char expect[] = "a list of 4 integers [x, y, w, h] inside 320x320 (x + w <= 320, y + h <= 320)";
    size_t n = val->type == YAML_SEQUENCE_NODE
                   ? (size_t)(val->data.sequence.items.top - val->data.sequence.items.start)
                   : 0;
    if (val->type != YAML_SEQUENCE_NODE || n != 4)
        return fail(p, key, "%s: expected %s, got %s", path, expect,
                    val->type == YAML_SEQUENCE_NODE ? "a list of another length" : node_kind(val));
    int v[4];
    for (size_t i = 0; i < 4; i++) {
        yaml_node_t *item = node_at(p, val->data.sequence.items.start[i]);
        if (get_int(p, item, item, path, 0, 320, &v[i]) != 0) return -1;
    }
    if (v[0] + v[2] > 320 || v[1] + v[3] > 320)
        return fail(p, key, "%s: expected %s, got [%d, %d, %d, %d]", path, expect, v[0], v[1], v[2], v[3]);
    memcpy(mask, v, sizeof v);
    return 0;
}

/* models.<id>.audio_encoder: {model_path, kind: ave}; model_path required. */
static int parse_encoder(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map, const char *mpath,
                         ls_model_config *m) {
    char epath[64 + MODEL_ID_MAX], where[80 + MODEL_ID_MAX];
    snprintf(epath, sizeof epath, "%s.audio_encoder", mpath);
    snprintf(where, sizeof where, "in %s", epath);
    int r = expect_mapping(p, key, map, epath);
    if (r < 0) return -1;
    if (r > 0) {
        if (check_keys(p, map, where, "key") != 0) return -1;
        FOR_EACH_PAIR(map, pair) {
            yaml_node_t *k = node_at(p, pair->key), *v = node_at(p, pair->value);
            const char *name = text(k);
            char path[96 + MODEL_ID_MAX];
            snprintf(path, sizeof path, "%s.%.20s", epath, name);
            int kind = 0;
            if (!strcmp(name, "model_path"))
                r = get_path(p, k, v, path, &m->encoder_path);
            else if (!strcmp(name, "kind"))
                r = get_choice(p, k, v, path, ENCODER_KINDS, &kind);
            else
                r = unknown_key(p, k, where, ENCODER_KEYS);
            if (r != 0) return -1;
        }
    }
    if (!m->encoder_path) return fail(p, key, "%s: missing required key 'model_path'", epath);
    return 0;
}

/* models.<id>.visual_input. *margin_set: whether margin was given. */
static int parse_visual(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map, const char *mpath,
                        ls_visual_config *vc, int *margin_set) {
    char vpath[64 + MODEL_ID_MAX], where[80 + MODEL_ID_MAX];
    snprintf(vpath, sizeof vpath, "%s.visual_input", mpath);
    snprintf(where, sizeof where, "in %s", vpath);
    int r = expect_mapping(p, key, map, vpath);
    if (r <= 0) return r;
    if (check_keys(p, map, where, "key") != 0) return -1;
    FOR_EACH_PAIR(map, pair) {
        yaml_node_t *k = node_at(p, pair->key), *v = node_at(p, pair->value);
        const char *name = text(k);
        char path[96 + MODEL_ID_MAX];
        snprintf(path, sizeof path, "%s.%.20s", vpath, name);
        int choice = 0;
        if (!strcmp(name, "margin")) {
            r = get_int(p, k, v, path, 0, 64, &vc->margin);
            *margin_set = 1;
        } else if (!strcmp(name, "mask")) {
            r = get_mask(p, k, v, path, vc->mask);
        } else if (!strcmp(name, "interpolation")) {
            r = get_choice(p, k, v, path, INTERP_WORDS, &choice);
            vc->interp = (ls_interp)choice;
        } else if (!strcmp(name, "cache")) {
            r = get_choice(p, k, v, path, CACHE_WORDS, &choice);
            vc->cache = (ls_cache_mode)choice;
        } else {
            r = unknown_key(p, k, where, VISUAL_KEYS);
        }
        if (r != 0) return -1;
    }
    return 0;
}

static int parse_model(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *body) {
    ls_config *cfg = p->cfg;
    const char *id = text(key);
    if (!valid_model_id(id, key->data.scalar.length))
        return fail(p, key,
                    "models: invalid model id '%.64s' (expected 1..%d characters of "
                    "A-Z a-z 0-9 _ . -)",
                    id, MODEL_ID_MAX);

    /* Counted before it is filled, so a failure below leaves it to
     * ls_config_free like everything else. */
    ls_model_config *m = &cfg->models[cfg->n_models++];
    model_defaults(m);
    if (!(m->id = strdup(id))) return oom(p);

    char mpath[16 + MODEL_ID_MAX], where[16 + MODEL_ID_MAX];
    snprintf(mpath, sizeof mpath, "models.%s", id);
    snprintf(where, sizeof where, "in models.%s", id);

    int r = expect_mapping(p, key, body, mpath);
    if (r < 0) return -1;
    const yaml_node_t *paste_key = NULL, *visual_margin_key = NULL;
    if (r > 0) {
        if (check_keys(p, body, where, "key") != 0) return -1;
        FOR_EACH_PAIR(body, pair) {
            yaml_node_t *k = node_at(p, pair->key), *v = node_at(p, pair->value);
            const char *name = text(k);
            char path[64 + MODEL_ID_MAX];
            snprintf(path, sizeof path, "%s.%.40s", mpath, name);
            int mb = 0, choice = 0;
            if (!strcmp(name, "model_path")) {
                r = get_path(p, k, v, path, &m->model_path);
            } else if (!strcmp(name, "background_dir")) {
                r = get_path(p, k, v, path, &m->background_dir);
            } else if (!strcmp(name, "crop_rects_path")) {
                r = get_path(p, k, v, path, &m->crop_rects_path);
            } else if (!strcmp(name, "num_frames")) {
                r = get_int(p, k, v, path, 0, INT_MAX, &m->num_frames);
            } else if (!strcmp(name, "preload")) {
                r = get_bool(p, k, v, path, &m->preload);
            } else if (!strcmp(name, "pinned")) {
                r = get_bool(p, k, v, path, &m->pinned);
            } else if (!strcmp(name, "memory_estimate_mb")) {
                r = get_int(p, k, v, path, 0, MAX_MODEL_MB, &mb);
                m->memory_estimate_bytes = (uint64_t)mb * MIB;
            } else if (!strcmp(name, "frame_order")) {
                r = get_choice(p, k, v, path, ORDER_WORDS, &choice);
                m->frame_order = (ls_frame_order)choice;
            } else if (!strcmp(name, "channel_order")) {
                r = get_choice(p, k, v, path, CHANNEL_WORDS, &choice);
                m->channel_bgr = choice == 0;
            } else if (!strcmp(name, "paste_margin")) {
                r = get_int(p, k, v, path, 0, 64, &m->paste_margin);
                paste_key = k;
            } else if (!strcmp(name, "paste_interpolation")) {
                r = get_choice(p, k, v, path, INTERP_WORDS, &choice);
                m->paste_interp = (ls_interp)choice;
            } else if (!strcmp(name, "audio_encoder")) {
                r = parse_encoder(p, k, v, mpath, m);
            } else if (!strcmp(name, "visual_input")) {
                int margin_set = 0;
                r = parse_visual(p, k, v, mpath, &m->visual, &margin_set);
                if (margin_set) visual_margin_key = k;
            } else if (!strcmp(name, "max_concurrent_requests")) {
                r = get_int(p, k, v, path, 0, 100000, &m->max_concurrent_requests);
            } else if (!strcmp(name, "output_format")) {
                r = get_choice(p, k, v, path, FORMAT_WORDS, &choice);
                m->output_format = (ls_format)choice;
            } else if (!strcmp(name, "jpeg_quality")) {
                r = get_int(p, k, v, path, 1, 100, &m->jpeg_quality);
            } else {
                r = unknown_key(p, k, where, MODEL_KEYS);
            }
            if (r != 0) return -1;
        }
    }

    /* Reported at the model's own line: that is where the key is missing. */
    const char *missing = !m->model_path       ? "model_path"
                          : !m->background_dir ? "background_dir"
                          : !m->crop_rects_path ? "crop_rects_path"
                                                : NULL;
    if (missing) return fail(p, key, "%s: missing required key '%s'", mpath, missing);
    /* One canvas margin: the input is cut from it and the prediction pasted
     * back into it. A margin given once applies to both. */
    if (visual_margin_key && paste_key && m->visual.margin != m->paste_margin)
        return fail(p, visual_margin_key,
                    "%s.visual_input.margin: expected the same value as paste_margin (%d, line %zu), got %d", mpath,
                    m->paste_margin, node_line(paste_key), m->visual.margin);
    if (visual_margin_key)
        m->paste_margin = m->visual.margin;
    else
        m->visual.margin = m->paste_margin;
    return 0;
}

static int parse_models(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map) {
    int r = expect_mapping(p, key, map, "models");
    if (r <= 0) return r;
    if (check_keys(p, map, "in models", "model id") != 0) return -1;
    size_t n = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
    if (n == 0) return 0;
    /* The section appears once (duplicate keys are refused), so the array
     * is sized once, up front. */
    ls_config *cfg = p->cfg;
    cfg->models = calloc(n, sizeof *cfg->models);
    if (!cfg->models) return oom(p);
    FOR_EACH_PAIR(map, pair) {
        if (parse_model(p, node_at(p, pair->key), node_at(p, pair->value)) != 0) return -1;
    }
    return 0;
}

/* An origin as browsers send it in the Origin header: scheme://host[:port],
 * no path, no trailing slash. They are compared as exact strings, so a
 * value that can never match ("example.com", "http://a/") would silently
 * allow nothing; refusing it says so now. "*" allows every origin. */
static int valid_origin(const char *s) {
    if (!strcmp(s, "*")) return 1;
    const char *host;
    if (!strncmp(s, "http://", 7))
        host = s + 7;
    else if (!strncmp(s, "https://", 8))
        host = s + 8;
    else
        return 0;
    if (!*host) return 0;
    for (const char *c = host; *c; c++) {
        unsigned char u = (unsigned char)*c;
        if (u <= ' ' || u >= 0x7f || u == '/' || u == '?' || u == '#' || u == '"' || u == '\\')
            return 0;
    }
    return 1;
}

static int get_origins(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val) {
    static const char expect[] =
        "a list of origins like \"https://host:port\" (scheme://host[:port], no path) or \"*\"";
    ls_config *cfg = p->cfg;
    if (is_null(val)) return 0; /* "cors_origins:" alone: the default, none */
    if (val->type != YAML_SEQUENCE_NODE)
        return fail(p, key, "http.cors_origins: expected %s, got %s", expect, node_kind(val));
    size_t n = (size_t)(val->data.sequence.items.top - val->data.sequence.items.start);
    if (n > MAX_CORS_ORIGINS)
        return fail(p, key, "http.cors_origins: expected at most %d origins, got %zu",
                    MAX_CORS_ORIGINS, n);
    if (n == 0) return 0;
    cfg->cors_origins = calloc(n, sizeof *cfg->cors_origins);
    if (!cfg->cors_origins) return oom(p);
    for (yaml_node_item_t *it = val->data.sequence.items.start; it < val->data.sequence.items.top;
         it++) {
        yaml_node_t *item = node_at(p, *it);
        const char *s = scalar_value(p, item, item, "http.cors_origins", expect);
        if (!s) return -1;
        if (!valid_origin(s)) return bad_value(p, item, "http.cors_origins", expect, s);
        /* Counted once allocated, so ls_config_free frees exactly what is there. */
        if (!(cfg->cors_origins[cfg->n_cors_origins] = strdup(s))) return oom(p);
        cfg->n_cors_origins++;
    }
    return 0;
}

/* audio: the speech front end. */
static int parse_audio(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map) {
    int r = expect_mapping(p, key, map, "audio");
    if (r <= 0) return r;
    if (check_keys(p, map, "in audio", "key") != 0) return -1;
    FOR_EACH_PAIR(map, pair) {
        yaml_node_t *k = node_at(p, pair->key), *v = node_at(p, pair->value);
        if (!strcmp(text(k), "max_seconds"))
            r = get_number(p, k, v, "audio.max_seconds", 0, 1, 36000, &p->cfg->audio_max_seconds);
        else
            r = unknown_key(p, k, "in audio", AUDIO_KEYS);
        if (r != 0) return -1;
    }
    return 0;
}

/* sessions: live StreamSession calls. */
static int parse_sessions(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map) {
    int r = expect_mapping(p, key, map, "sessions");
    if (r <= 0) return r;
    if (check_keys(p, map, "in sessions", "key") != 0) return -1;
    FOR_EACH_PAIR(map, pair) {
        yaml_node_t *k = node_at(p, pair->key), *v = node_at(p, pair->value);
        if (!strcmp(text(k), "max"))
            r = get_int(p, k, v, "sessions.max", 1, 100000, &p->cfg->sessions_max);
        else if (!strcmp(text(k), "stall_timeout_s"))
            r = get_number(p, k, v, "sessions.stall_timeout_s", 0, 1, 3600, &p->cfg->sessions_stall_seconds);
        else
            r = unknown_key(p, k, "in sessions", SESSIONS_KEYS);
        if (r != 0) return -1;
    }
    return 0;
}

static int parse_http(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map) {
    ls_config *cfg = p->cfg;
    int r = expect_mapping(p, key, map, "http");
    if (r <= 0) return r;
    if (check_keys(p, map, "in http", "key") != 0) return -1;
    FOR_EACH_PAIR(map, pair) {
        yaml_node_t *k = node_at(p, pair->key), *v = node_at(p, pair->value);
        const char *name = text(k);
        if (!strcmp(name, "enabled"))
            r = get_bool(p, k, v, "http.enabled", &cfg->http_enabled);
        else if (!strcmp(name, "listen"))
            r = get_listen(p, k, v, "http.listen", &cfg->http_listen);
        else if (!strcmp(name, "cors_origins"))
            r = get_origins(p, k, v);
        else if (!strcmp(name, "web_root"))
            r = get_path(p, k, v, "http.web_root", &cfg->web_root);
        else if (!strcmp(name, "speech_wav"))
            r = get_path(p, k, v, "http.speech_wav", &cfg->speech_wav);
        else if (!strcmp(name, "websocket_ping_seconds"))
            r = get_number(p, k, v, "http.websocket_ping_seconds", 0.1, 0, 3600, &cfg->http_ws_ping_seconds);
        else
            r = unknown_key(p, k, "in http", HTTP_KEYS);
        if (r != 0) return -1;
    }
    return 0;
}

/* ---- auth and tls ---- */

static const char *const AUTH_KEYS[] = {"enabled", "keys", NULL};
static const char *const AUTH_KEY_KEYS[] = {"name", "sha256", "key_file", "key_env", "models", "admin", NULL};
static const char *const TLS_KEYS[] = {"cert_file", "key_file", "client_ca_file", NULL};

/* Read a key from a file (first line, trailing whitespace dropped) and hash it. */
static int hash_key_file(cfg_parser *p, const yaml_node_t *key, const char *path, uint8_t out[32]) {
    FILE *f = fopen(path, "r");
    if (!f) return fail(p, key, "auth key_file %s: cannot open: %s", path, strerror(errno));
    char line[1024];
    char *got = fgets(line, sizeof line, f);
    fclose(f);
    if (!got) return fail(p, key, "auth key_file %s: empty", path);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t')) n--;
    if (n < 16) return fail(p, key, "auth key_file %s: expected a key of at least 16 characters", path);
    ls_auth_hash(line, n, out);
    return 0;
}

static int parse_auth_key(cfg_parser *p, const yaml_node_t *item, ls_auth_key *ak) {
    if (item->type != YAML_MAPPING_NODE)
        return fail(p, item, "auth.keys: expected a mapping per key (name, sha256|key_file|key_env, models, admin), got %s",
                    node_kind(item));
    if (check_keys(p, item, "in auth.keys", "key") != 0) return -1;
    int have_secret = 0, r = 0;
    FOR_EACH_PAIR(item, pair) {
        yaml_node_t *k = node_at(p, pair->key), *v = node_at(p, pair->value);
        const char *name = text(k);
        if (!strcmp(name, "name")) {
            const char *sv = scalar_value(p, k, v, "auth.keys.name", "a name");
            if (!sv) return -1;
            free(ak->name);
            if (!(ak->name = strdup(sv))) return oom(p);
        } else if (!strcmp(name, "sha256")) {
            const char *sv = scalar_value(p, k, v, "auth.keys.sha256", "64 hex characters (SHA-256 of the key)");
            if (!sv) return -1;
            if (ls_auth_parse_hex(sv, ak->sha256) != 0)
                return bad_value(p, k, "auth.keys.sha256", "64 hex characters (SHA-256 of the key)", sv);
            have_secret++;
        } else if (!strcmp(name, "key_file")) {
            char *path = NULL;
            r = get_path(p, k, v, "auth.keys.key_file", &path);
            if (!r) r = hash_key_file(p, k, path, ak->sha256);
            free(path);
            if (r) return -1;
            have_secret++;
        } else if (!strcmp(name, "key_env")) {
            const char *sv = scalar_value(p, k, v, "auth.keys.key_env", "an environment variable name");
            if (!sv) return -1;
            const char *key = getenv(sv);
            if (!key || strlen(key) < 16)
                return fail(p, k, "auth.keys.key_env: environment variable %.64s %s", sv,
                            key ? "must hold a key of at least 16 characters" : "is not set");
            ls_auth_hash(key, strlen(key), ak->sha256);
            have_secret++;
        } else if (!strcmp(name, "models")) {
            static const char expect[] = "a list of model ids or glob patterns";
            if (v->type != YAML_SEQUENCE_NODE)
                return fail(p, k, "auth.keys.models: expected %s, got %s", expect, node_kind(v));
            size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
            if (n) {
                ak->models = calloc(n, sizeof *ak->models);
                if (!ak->models) return oom(p);
            }
            for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
                yaml_node_t *m = node_at(p, *it);
                const char *sv = scalar_value(p, m, m, "auth.keys.models", expect);
                if (!sv) return -1;
                if (!*sv) return bad_value(p, m, "auth.keys.models", expect, sv);
                if (!(ak->models[ak->n_models] = strdup(sv))) return oom(p);
                ak->n_models++;
            }
        } else if (!strcmp(name, "admin")) {
            if (get_bool(p, k, v, "auth.keys.admin", &ak->admin) != 0) return -1;
        } else {
            return unknown_key(p, k, "in auth.keys", AUTH_KEY_KEYS);
        }
    }
    if (have_secret != 1)
        return fail(p, item, "auth.keys: expected exactly one of sha256, key_file, key_env, got %d", have_secret);
    if (!ak->name && !(ak->name = strdup("unnamed"))) return oom(p);
    return 0;
}

static int parse_auth(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map) {
    ls_config *cfg = p->cfg;
    int r = expect_mapping(p, key, map, "auth");
    if (r <= 0) return r;
    if (check_keys(p, map, "in auth", "key") != 0) return -1;
    cfg->auth.enabled = 1; /* a present auth section means auth, unless enabled: false */
    FOR_EACH_PAIR(map, pair) {
        yaml_node_t *k = node_at(p, pair->key), *v = node_at(p, pair->value);
        const char *name = text(k);
        if (!strcmp(name, "enabled")) {
            r = get_bool(p, k, v, "auth.enabled", &cfg->auth.enabled);
        } else if (!strcmp(name, "keys")) {
            if (v->type != YAML_SEQUENCE_NODE)
                return fail(p, k, "auth.keys: expected a list of keys, got %s", node_kind(v));
            size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
            if (n) {
                cfg->auth.keys = calloc(n, sizeof *cfg->auth.keys);
                if (!cfg->auth.keys) return oom(p);
            }
            for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
                /* Counted before parsing so a failure frees what it filled. */
                ls_auth_key *ak = &cfg->auth.keys[cfg->auth.n_keys++];
                if (parse_auth_key(p, node_at(p, *it), ak) != 0) return -1;
            }
            r = 0;
        } else {
            r = unknown_key(p, k, "in auth", AUTH_KEYS);
        }
        if (r != 0) return -1;
    }
    if (cfg->auth.enabled && cfg->auth.n_keys == 0)
        return fail(p, key, "auth: enabled but no keys (expected auth.keys: a list of keys)");
    return 0;
}

static int parse_tls(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map) {
    ls_config *cfg = p->cfg;
    int r = expect_mapping(p, key, map, "tls");
    if (r <= 0) return r;
    if (check_keys(p, map, "in tls", "key") != 0) return -1;
    FOR_EACH_PAIR(map, pair) {
        yaml_node_t *k = node_at(p, pair->key), *v = node_at(p, pair->value);
        const char *name = text(k);
        if (!strcmp(name, "cert_file"))
            r = get_path(p, k, v, "tls.cert_file", &cfg->tls_cert_file);
        else if (!strcmp(name, "key_file"))
            r = get_path(p, k, v, "tls.key_file", &cfg->tls_key_file);
        else if (!strcmp(name, "client_ca_file"))
            r = get_path(p, k, v, "tls.client_ca_file", &cfg->tls_client_ca_file);
        else
            r = unknown_key(p, k, "in tls", TLS_KEYS);
        if (r != 0) return -1;
    }
    if (!cfg->tls_cert_file || !cfg->tls_key_file)
        return fail(p, key, "tls: expected both cert_file and key_file");
    return 0;
}

static int parse_root(cfg_parser *p, const yaml_node_t *root) {
    /* A file holding only "~" or "null" is as empty as an empty file. */
    if (is_null(root)) return 0;
    if (root->type != YAML_MAPPING_NODE)
        return fail(p, root, "expected a mapping of sections (server, capacity, models, http), got %s",
                    node_kind(root));
    if (check_keys(p, root, "at top level", "key") != 0) return -1;
    FOR_EACH_PAIR(root, pair) {
        yaml_node_t *k = node_at(p, pair->key), *v = node_at(p, pair->value);
        const char *name = text(k);
        int r;
        if (!strcmp(name, "server"))
            r = parse_server(p, k, v);
        else if (!strcmp(name, "capacity"))
            r = parse_capacity(p, k, v);
        else if (!strcmp(name, "models"))
            r = parse_models(p, k, v);
        else if (!strcmp(name, "http"))
            r = parse_http(p, k, v);
        else if (!strcmp(name, "audio"))
            r = parse_audio(p, k, v);
        else if (!strcmp(name, "sessions"))
            r = parse_sessions(p, k, v);
        else if (!strcmp(name, "auth"))
            r = parse_auth(p, k, v);
        else if (!strcmp(name, "tls"))
            r = parse_tls(p, k, v);
        else
            r = unknown_key(p, k, "at top level", ROOT_KEYS);
        if (r != 0) return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Entry points                                                              */
/* ------------------------------------------------------------------------ */

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
            .cfg = cfg,
            .err = err,
        };
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        rc = root ? parse_root(&p, root) : 0; /* no root: empty text, all defaults */
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
