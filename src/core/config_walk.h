/* config_walk.h - the machinery under config.c: a libyaml node tree walked
 * by tables of keys (private to config*.c).
 *
 * A section of the configuration is a table of cfg_key rows, as Redis's
 * standardConfig or nginx's ngx_command_t: name, type, where the value goes,
 * range, default, documentation. One walker reads every section from its
 * table, so a key is spelt once; its range is the error message's expected
 * form and the documentation's; its default is the same text the parser
 * would read. What no row can say (lists, a model's required keys, rules
 * between keys) is a read or check function beside the table in config.c. */
#ifndef LS_CONFIG_WALK_H
#define LS_CONFIG_WALK_H

#include <stddef.h>
#include <stdio.h>

#include <yaml.h>

#include "common.h"

typedef struct {
    yaml_document_t *doc;
    const char *source;   /* names the text in messages */
    const char *base_dir; /* caller's base, or NULL until cwd is needed */
    char *cwd;            /* owned: the current directory once looked up */
    ls_err *err;
} cfg_parser;

typedef enum {
    CFG_INT,     /* int in min..max ("an integer >= min" when max is INT_MAX) */
    CFG_NUMBER,  /* double in [min, max]; (min, max] with CFG_MIN_EXCLUSIVE */
    CFG_BOOL,    /* int 0 or 1: true, false, yes, no */
    CFG_WORD,    /* int (or an enum of int size): index into words, any case */
    CFG_PATH,    /* char *: resolved against the config file's directory */
    CFG_LISTEN,  /* char *: host:port or [ipv6]:port */
    CFG_CUSTOM,  /* read by the row's function */
    CFG_SECTION, /* a mapping walked with the row's table, into the same object */
} cfg_type;

/* Row flags: how a read value is stored. */
enum {
    CFG_MIN_EXCLUSIVE = 1 << 0,
    CFG_MIB = 1 << 1,      /* CFG_INT megabytes, stored as uint64_t bytes */
    CFG_GIB = 1 << 2,      /* CFG_NUMBER gigabytes, stored as uint64_t bytes (at least 1) */
    CFG_MINUTES = 1 << 3,  /* CFG_NUMBER minutes, stored as seconds */
    CFG_CPUS = 1 << 4,     /* CFG_INT: 0 stores the number of online cores */
    CFG_NEGATE = 1 << 5,   /* CFG_WORD of two words, stored as !index */
    CFG_NO_FIELD = 1 << 6, /* checked, not stored */
};

typedef struct cfg_section cfg_section;

/* Reads one value at key into obj; val NULL = apply the row's default. */
typedef int (*cfg_read_fn)(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val,
                           const char *path, void *obj);
/* Runs after a section's walk (map NULL when the section was empty). */
typedef int (*cfg_check_fn)(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map,
                            const char *path, void *obj);

typedef struct {
    const char *name;
    cfg_type type;
    size_t off;                /* offset of the field in the object */
    double min, max;           /* CFG_INT, CFG_NUMBER */
    int flags;
    const char *const *words;  /* CFG_WORD, NULL-terminated, in the enum's order */
    const char *def;           /* the default as it would be written; NULL = none */
    const char *doc;           /* one line for the reference */
    cfg_read_fn read;          /* CFG_CUSTOM */
    const cfg_section *sub;    /* CFG_SECTION; CFG_CUSTOM: the table of each item */
    const char *item;          /* CFG_CUSTOM with sub: how an item starts ("<id>:", "-") */
} cfg_key;

struct cfg_section {
    const cfg_key *keys;       /* ends with a row whose name is NULL */
    cfg_check_fn check;        /* also called for an empty section, with map NULL */
};

/* "<source>:<line of at>: <message>" as INVALID_ARGUMENT; returns -1. */
int cfg_fail(cfg_parser *p, const yaml_node_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int cfg_oom(cfg_parser *p);
yaml_node_t *cfg_node(cfg_parser *p, int index);
const char *cfg_text(const yaml_node_t *n);
size_t cfg_line(const yaml_node_t *n);
const char *cfg_kind(const yaml_node_t *n);
int cfg_is_null(const yaml_node_t *n);

/* The key node named name in a mapping (and its value in *val), or NULL. */
const yaml_node_t *cfg_find(cfg_parser *p, const yaml_node_t *map, const char *name, const yaml_node_t **val);

/* 1 = a mapping to walk, 0 = empty, -1 = error. A key with nothing under it
 * ("models:" alone) loads as a null scalar, which we take as an empty mapping
 * since that is plainly what was meant. YAML's spellings of nothing (cfg_is_null)
 * count only unquoted: a quoted "null" is a string. */
int cfg_expect_mapping(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val,
                       const char *path);
/* Keys are plain strings without NUL bytes, each once; noun "key"/"model id".
 * libyaml accepts duplicate keys, and with them the last one would silently
 * win; we refuse them, naming both lines. */
int cfg_check_keys(cfg_parser *p, const yaml_node_t *map, const char *where, const char *noun);
/* The text of a scalar, or NULL (err set) for a list, a mapping, a NUL byte. */
const char *cfg_scalar(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val,
                       const char *path, const char *expect);
int cfg_bad_value(cfg_parser *p, const yaml_node_t *key, const char *path, const char *expect,
                  const char *s);
int cfg_get_int(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val, const char *path,
                int min, int max, int *out);
int cfg_get_path(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *val, const char *path,
                 char **out);

/* Walks map (the value of key) with s into obj; path names it ("" = the
 * top level). */
int cfg_walk(cfg_parser *p, const yaml_node_t *key, const yaml_node_t *map, const char *path,
             const cfg_section *s, void *obj);

/* Every row's default into obj (a custom row with a default is called with
 * p and val NULL). 0, or -1 when a string could not be copied. */
int cfg_defaults(const cfg_section *s, void *obj);

/* Frees the strings the rows of s own in obj (CFG_PATH, CFG_LISTEN). */
void cfg_free_strings(const cfg_section *s, void *obj);

/* Loads yaml[0..len) as one YAML document and gives its root node to
 * root_fn: its result, or the syntax error ("<source>:<line>:<col>: invalid
 * YAML: ..."), or a second document's. */
int cfg_parse_document(const char *yaml, size_t len, const char *source, const char *base_dir,
                       int (*root_fn)(cfg_parser *p, const yaml_node_t *root, void *obj), void *obj, ls_err *err);

/* The reference: every row as "name: default  # doc [expected form]". */
void cfg_write_doc(FILE *out, const char *prefix, const cfg_section *s, int indent);

#endif
