/* config_walk.c - see config_walk.h: YAML nodes and value forms, no keys
 * (those are config.c's tables). */
#define _GNU_SOURCE /* asprintf */
#include "config_walk.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define GIB (1024.0 * 1024.0 * 1024.0)
#define MIB (1024ull * 1024ull)
#define PATH_MAX_LEN 256 /* "models.<id>.visual_input.interpolation" */

size_t cfg_line(const yaml_node_t *n) { return n->start_mark.line + 1; }
const char *cfg_text(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }
yaml_node_t *cfg_node(cfg_parser *p, int index) { return yaml_document_get_node(p->doc, index); }

const char *cfg_kind(const yaml_node_t *n) {
    return n->type == YAML_MAPPING_NODE ? "a mapping" : n->type == YAML_SEQUENCE_NODE ? "a list" : "a single value";
}

int cfg_fail(cfg_parser *p, const yaml_node_t *at, const char *fmt, ...) {
    char msg[LS_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ls_err_set(p->err, LS_INVALID_ARGUMENT, "%s:%zu: %s", p->source, cfg_line(at), msg);
}

int cfg_oom(cfg_parser *p) { return ls_err_set(p->err, LS_RESOURCE_EXHAUSTED, "%s: out of memory", p->source); }

int cfg_is_null(const yaml_node_t *n) {
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    const char *s = cfg_text(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

#define FOR_EACH_PAIR(map, pair) \
    for (yaml_node_pair_t *pair = (map)->data.mapping.pairs.start; pair < (map)->data.mapping.pairs.top; pair++)

const yaml_node_t *cfg_find(cfg_parser *p, const yaml_node_t *map, const char *name, const yaml_node_t **val) {
    if (!map || map->type != YAML_MAPPING_NODE) return NULL;
    FOR_EACH_PAIR(map, pair) {
        yaml_node_t *k = cfg_node(p, pair->key);
        if (k->type != YAML_SCALAR_NODE || strcmp(cfg_text(k), name)) continue;
        if (val) *val = cfg_node(p, pair->value);
        return k;
    }
    return NULL;
}

int cfg_expect_mapping(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val, const char *path) {
    if (val->type == YAML_MAPPING_NODE) return 1;
    if (cfg_is_null(val)) return 0;
    return cfg_fail(p, key, "%s: expected a mapping, got %s", path, cfg_kind(val));
}

int cfg_check_keys(cfg_parser *p, const yaml_node_t *map, const char *where, const char *noun) {
    yaml_node_pair_t *start = map->data.mapping.pairs.start;
    for (yaml_node_pair_t *a = start; a < map->data.mapping.pairs.top; a++) {
        yaml_node_t *k = cfg_node(p, a->key);
        if (k->type != YAML_SCALAR_NODE)
            return cfg_fail(p, k, "keys must be plain strings, got %s as a key %s", cfg_kind(k), where);
        if (strlen(cfg_text(k)) != k->data.scalar.length)
            return cfg_fail(p, k, "a key %s contains a NUL byte", where);
        for (yaml_node_pair_t *b = start; b < a; b++) {
            yaml_node_t *first = cfg_node(p, b->key);
            if (!strcmp(cfg_text(first), cfg_text(k)))
                return cfg_fail(p, k, "duplicate %s '%.64s' %s (first at line %zu)", noun, cfg_text(k), where, cfg_line(first));
        }
    }
    return 0;
}

static int unknown_key(cfg_parser *p, const yaml_node_t *key, const char *where, const cfg_key *rows) {
    char list[512] = "";
    size_t off = 0;
    for (size_t i = 0; rows[i].name && off < sizeof list; i++)
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "", rows[i].name);
    return cfg_fail(p, key, "unknown key '%.64s' %s (expected one of: %s)", cfg_text(key), where, list);
}

const char *cfg_scalar(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val, const char *path,
                       const char *expect) {
    if (val->type != YAML_SCALAR_NODE)
        cfg_fail(p, key, "%s: expected %s, got %s", path, expect, cfg_kind(val));
    else if (strlen(cfg_text(val)) != val->data.scalar.length)
        cfg_fail(p, key, "%s: expected %s, got a value containing a NUL byte", path, expect);
    else
        return cfg_text(val);
    return NULL;
}

int cfg_bad_value(cfg_parser *p, const yaml_node_t *key, const char *path, const char *expect, const char *s) {
    return *s ? cfg_fail(p, key, "%s: expected %s, got '%.64s'", path, expect, s)
              : cfg_fail(p, key, "%s: expected %s, got nothing", path, expect);
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* A decimal integer with an optional sign and nothing else: strtoll alone
 * would also take leading blanks and stop quietly at "4.5" or "0x10". */
static int parse_integer(const char *s, long long *out) {
    const char *d = s + (*s == '+' || *s == '-');
    if (!is_digit(*d)) return -1;
    char *end;
    errno = 0;
    *out = strtoll(s, &end, 10);
    return errno != 0 || *end != '\0' ? -1 : 0;
}

/* [sign] digits [. digits] [e [sign] digits], checked by hand first because
 * strtod also takes "inf", "nan" and hex floats, none of which belong in a
 * config. (strtod follows LC_NUMERIC; the server never calls setlocale.) */
static int parse_number(const char *s, double *out) {
    const char *c = s + (*s == '+' || *s == '-');
    size_t digits = strspn(c, "0123456789");
    c += digits;
    if (*c == '.') digits += strspn(++c, "0123456789"), c += strspn(c, "0123456789");
    if (digits == 0) return -1;
    if (*c == 'e' || *c == 'E') {
        c += 1 + (c[1] == '+' || c[1] == '-');
        if (!is_digit(*c)) return -1;
        c += strspn(c, "0123456789");
    }
    double v = strtod(s, NULL);
    if (*c != '\0' || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

/* host:port, or [v6-address]:port, with port 1..65535. A bare IPv6 address
 * is refused because "::1:50053" is ambiguous. The host itself is only
 * checked for emptiness and stray characters; gRPC resolves it at bind. */
static int valid_listen(const char *s) {
    int v6 = s[0] == '[';
    const char *host = s + v6, *end = v6 ? strchr(host, ']') : strrchr(s, ':');
    if (!end || end == host || (v6 && end[1] != ':')) return 0;
    for (const char *c = host; c < end; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f || strchr("/[]", *c) || (*c == ':' && !v6)) return 0;
    const char *port = end + 1 + v6;
    size_t n = strlen(port);
    if (n == 0 || n > 5 || strspn(port, "0123456789") != n) return 0;
    long v = strtol(port, NULL, 10);
    return v >= 1 && v <= 65535;
}

static int online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n; /* worker_threads' maximum */
}

/* The expected form of a row's value, as messages and the reference say it. */
static void expected_form(const cfg_key *k, char *buf, size_t cap) {
    size_t off = 0;
    switch (k->type) {
    case CFG_INT:
        snprintf(buf, cap, k->max >= INT_MAX ? "an integer >= %d" : "an integer %d..%d", (int)k->min, (int)k->max);
        return;
    case CFG_NUMBER:
        snprintf(buf, cap, "a number %s %.15g and <= %.15g", k->flags & CFG_MIN_EXCLUSIVE ? ">" : ">=", k->min, k->max);
        return;
    case CFG_BOOL: snprintf(buf, cap, "true, false, yes or no"); return;
    case CFG_WORD:
        buf[0] = '\0';
        for (size_t i = 0; k->words[i] && off < cap; i++) {
            const char *sep = i == 0 ? "" : k->words[i + 1] ? ", " : " or ";
            off += (size_t)snprintf(buf + off, cap - off, "%s%s", sep, k->words[i]);
        }
        return;
    case CFG_LISTEN: snprintf(buf, cap, "host:port (or [ipv6]:port) with port 1..65535"); return;
    default: buf[0] = '\0'; return;
    }
}

static int set_string(char **field, char *s) { /* keys are unique, but never leak one set twice */
    if (s) free(*field), *field = s;
    return s ? 0 : -1;
}

/* Stores text s as row k's value in obj: 0, -1 = not of the expected form,
 * -2 = out of memory. Paths are stored as written (cfg_read resolves them). */
static int store(const cfg_key *k, const char *s, void *obj) {
    void *field = (char *)obj + k->off;
    long long i = 0;
    double d = 0;
    int w = -1;
    switch (k->type) {
    case CFG_INT:
        if (parse_integer(s, &i) != 0 || i < (long long)k->min || i > (long long)k->max) return -1;
        if (k->flags & CFG_MIB) *(uint64_t *)field = (uint64_t)i * MIB;
        else *(int *)field = i == 0 && (k->flags & CFG_CPUS) ? online_cpus() : (int)i;
        return 0;
    case CFG_NUMBER:
        if (parse_number(s, &d) != 0 || d < k->min || ((k->flags & CFG_MIN_EXCLUSIVE) && d == k->min) || d > k->max)
            return -1;
        /* GiB rounded to whole bytes; a tiny positive value still means a budget, never "nothing fits"
         * (0 stays 0: "no limit" where the row allows it). */
        if (k->flags & CFG_GIB) {
            long long b = llround(d * GIB);
            *(uint64_t *)field = d > 0 && b == 0 ? 1 : (uint64_t)b;
        } else {
            *(double *)field = k->flags & CFG_MINUTES ? d * 60.0 : d;
        }
        return 0;
    case CFG_BOOL:
        w = !strcasecmp(s, "true") || !strcasecmp(s, "yes") ? 1 : !strcasecmp(s, "false") || !strcasecmp(s, "no") ? 0 : -1;
        return w < 0 ? -1 : (*(int *)field = w, 0);
    case CFG_WORD:
        for (int j = 0; k->words[j]; j++)
            if (!strcasecmp(s, k->words[j])) w = j;
        if (w < 0) return -1;
        if (!(k->flags & CFG_NO_FIELD)) *(int *)field = k->flags & CFG_NEGATE ? !w : w;
        return 0;
    case CFG_LISTEN:
        if (!valid_listen(s)) return -1;
        return set_string(field, strdup(s)) ? -2 : 0;
    case CFG_PATH: return set_string(field, strdup(s)) ? -2 : 0;
    default: return -1;
    }
}

/* The directory relative paths hang off: the caller's, or the current one,
 * looked up only when a relative path needs it (glibc's getcwd allocates). */
static const char *base_dir(cfg_parser *p) {
    if (!p->base_dir && (p->cwd = getcwd(NULL, 0))) p->base_dir = p->cwd;
    return p->base_dir;
}

/* Textual resolution: absolute paths are kept, relative ones are joined to
 * the base with '/'. Leading "./" components are dropped so messages show
 * "conf/models/a.onnx" rather than "conf/./models/a.onnx". Nothing is
 * looked up on disk: the files are opened later, when a model loads. */
static char *resolve_path(const char *base, const char *path) {
    if (path[0] == '/') return strdup(path);
    while (path[0] == '.' && path[1] == '/') {
        path += 2;
        while (*path == '/') path++;
    }
    if (*path == '\0') return strdup(base);
    size_t blen = strlen(base);
    char *out;
    return asprintf(&out, "%s%s%s", base, blen && base[blen - 1] == '/' ? "" : "/", path) < 0 ? NULL : out;
}

int cfg_get_path(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val, const char *path, char **out) {
    const char *s = cfg_scalar(p, key, val, path, "a path");
    if (!s) return -1;
    if (cfg_is_null(val)) return cfg_fail(p, key, "%s: expected a path, got nothing", path);
    const char *base = "";
    if (s[0] != '/' && !(base = base_dir(p)))
        return cfg_fail(p, key, "%s: cannot resolve relative path '%.64s': current directory: %s", path, s,
                        strerror(errno));
    return set_string(out, resolve_path(base, s)) ? cfg_oom(p) : 0;
}

int cfg_get_int(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val, const char *path, int min, int max,
                int *out) {
    cfg_key k = {.type = CFG_INT, .min = min, .max = max};
    char expect[128];
    expected_form(&k, expect, sizeof expect);
    const char *s = cfg_scalar(p, key, val, path, expect);
    if (!s) return -1;
    return store(&k, s, out) ? cfg_bad_value(p, key, path, expect, s) : 0;
}

static int cfg_read(cfg_parser *p, const cfg_key *k, const yaml_node_t *key, const yaml_node_t *val,
                    const char *path, void *obj) {
    if (k->type == CFG_CUSTOM) return k->read(p, key, val, path, obj);
    if (k->type == CFG_SECTION) return cfg_walk(p, key, val, path, k->sub, obj);
    if (k->type == CFG_PATH) return cfg_get_path(p, key, val, path, (char **)((char *)obj + k->off));
    char expect[256];
    expected_form(k, expect, sizeof expect);
    const char *s = cfg_scalar(p, key, val, path, expect);
    if (!s) return -1;
    int r = store(k, s, obj);
    return r == -2 ? cfg_oom(p) : r ? cfg_bad_value(p, key, path, expect, s) : 0;
}

int cfg_walk(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map, const char *path, const cfg_section *s,
             void *obj) {
    int r = cfg_expect_mapping(p, key, map, path);
    if (r < 0) return -1;
    char where[PATH_MAX_LEN + 8];
    snprintf(where, sizeof where, *path ? "in %s" : "at top level", path);
    if (r > 0) {
        if (cfg_check_keys(p, map, where, "key") != 0) return -1;
        FOR_EACH_PAIR(map, pair) {
            yaml_node_t *k = cfg_node(p, pair->key), *v = cfg_node(p, pair->value);
            const cfg_key *row = s->keys;
            while (row->name && strcmp(row->name, cfg_text(k))) row++;
            if (!row->name) return unknown_key(p, k, where, s->keys);
            char child[PATH_MAX_LEN];
            snprintf(child, sizeof child, "%s%s%s", path, *path ? "." : "", row->name);
            if (cfg_read(p, row, k, v, child, obj) != 0) return -1;
        }
    }
    if (s->check) return s->check(p, key, r > 0 ? map : NULL, path, obj);
    return 0;
}

int cfg_defaults(const cfg_section *s, void *obj) {
    for (const cfg_key *k = s->keys; k->name; k++) {
        int r = k->type == CFG_SECTION ? cfg_defaults(k->sub, obj)
                : !k->def              ? 0
                : k->type == CFG_CUSTOM ? k->read(NULL, NULL, NULL, NULL, obj)
                                        : store(k, k->def, obj);
        assert(r != -1 && "a table default that its own row refuses");
        if (r) return -2;
    }
    return 0;
}

void cfg_free_strings(const cfg_section *s, void *obj) {
    for (const cfg_key *k = s->keys; k->name; k++) {
        if (k->type == CFG_SECTION) cfg_free_strings(k->sub, obj);
        char **field = (char **)((char *)obj + k->off);
        if (k->type == CFG_PATH || k->type == CFG_LISTEN) free(*field), *field = NULL;
    }
}

void cfg_write_doc(FILE *out, const char *prefix, const cfg_section *s, int indent) {
    for (const cfg_key *k = s->keys; k->name; k++) {
        char line[160], expect[256];
        snprintf(line, sizeof line, "%*s%s:%s%s", indent, "", k->name, k->def ? " " : "", k->def ? k->def : "");
        expect[0] = '\0';
        if (k->type != CFG_PATH && k->type != CFG_BOOL) expected_form(k, expect, sizeof expect);
        fprintf(out, "%s%-34s # %s%s%s%s\n", prefix, line, k->doc, *expect ? " (" : "", expect, *expect ? ")" : "");
        if (k->sub && k->item) fprintf(out, "%s%*s%s\n", prefix, indent + 2, "", k->item);
        if (k->sub) cfg_write_doc(out, prefix, k->sub, indent + (k->item ? 4 : 2));
    }
}

static int syntax_error(const yaml_parser_t *yp, const char *source, ls_err *err) {
    if (yp->error == YAML_MEMORY_ERROR) return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "%s: out of memory", source);
    const char *problem = yp->problem ? yp->problem : "unknown error";
    if (yp->error == YAML_READER_ERROR) /* bad encoding: a byte offset, not a line */
        return ls_err_set(err, LS_INVALID_ARGUMENT, "%s: invalid YAML at byte %zu: %s", source, yp->problem_offset, problem);
    if (yp->context)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "%s:%zu:%zu: invalid YAML: %s (%s at line %zu)", source,
                          yp->problem_mark.line + 1, yp->problem_mark.column + 1, problem, yp->context,
                          yp->context_mark.line + 1);
    return ls_err_set(err, LS_INVALID_ARGUMENT, "%s:%zu:%zu: invalid YAML: %s", source, yp->problem_mark.line + 1,
                      yp->problem_mark.column + 1, problem);
}

/* The config is one document. A second one is almost certainly two files
 * pasted together, and which of them to believe is not ours to guess. */
static int single_document(yaml_parser_t *yp, const char *source, ls_err *err) {
    yaml_document_t next;
    if (!yaml_parser_load(yp, &next)) return syntax_error(yp, source, err);
    int rc = !yaml_document_get_root_node(&next) ? 0
             : ls_err_set(err, LS_INVALID_ARGUMENT, "%s:%zu: a second YAML document; the config must be a single document",
                          source, next.start_mark.line + 1);
    yaml_document_delete(&next);
    return rc;
}

int cfg_parse_document(const char *yaml, size_t len, const char *source, const char *base_dir,
                       int (*root_fn)(cfg_parser *p, const yaml_node_t *root, void *obj), void *obj, ls_err *err) {
    yaml_parser_t yp;
    if (!yaml_parser_initialize(&yp)) return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "%s: out of memory", source);
    yaml_parser_set_input_string(&yp, (const unsigned char *)(yaml ? yaml : ""), yaml ? len : 0);
    yaml_document_t doc;
    int rc;
    if (!yaml_parser_load(&yp, &doc)) {
        rc = syntax_error(&yp, source, err);
    } else {
        cfg_parser p = {.doc = &doc, .source = source, .base_dir = base_dir && *base_dir ? base_dir : NULL, .err = err};
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        rc = root ? root_fn(&p, root, obj) : 0; /* no root: empty text, all defaults */
        if (rc == 0) rc = single_document(&yp, source, err);
        free(p.cwd);
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&yp);
    return rc;
}
