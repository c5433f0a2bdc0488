/* test_config.c - unit tests for config.c and croprects.c.
 *
 * Plain C, no framework: each check prints one line ("ok" or "FAIL" and what
 * was checked), the last line is "N passed, M failed", and the exit status is
 * non-zero if anything failed. Files go to a mkdtemp directory that is
 * removed at the end. */

#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include "config.h"
#include "croprects.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef LS_WEB_ROOT
#error "the build passes LS_WEB_ROOT (the source tree's web/) to config.c and this test"
#endif

static int passed, failed;
static char tmpdir[PATH_MAX];

static void check(const char *what, int ok) {
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    if (ok)
        passed++;
    else
        failed++;
}

/* Writes `text` to tmpdir/name and returns the full path (static buffer). */
static const char *write_file(const char *name, const char *text) {
    static char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
    return path;
}

static void remove_file(const char *name) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    unlink(path);
}

static int is_zeroed(const ls_config *cfg) {
    static const ls_config zero;
    return memcmp(cfg, &zero, sizeof zero) == 0;
}

/* Parses `yaml` (source "t.yaml") expecting failure: INVALID_ARGUMENT, a
 * message holding every non-NULL needle, and a config left freed (zeroed,
 * and safe to free again). */
static void expect_error(const char *what, const char *yaml, const char *n1, const char *n2,
                         const char *n3) {
    ls_config cfg;
    ls_err err = {0};
    int rc = ls_config_parse(yaml, strlen(yaml), "t.yaml", "/base", &cfg, &err);
    int ok = rc == -1 && err.code == LS_INVALID_ARGUMENT && (!n1 || strstr(err.msg, n1)) &&
             (!n2 || strstr(err.msg, n2)) && (!n3 || strstr(err.msg, n3)) && is_zeroed(&cfg);
    check(what, ok);
    if (!ok) printf("     rc=%d code=%s msg: %s\n", rc, ls_code_name(err.code), err.msg);
    ls_config_free(&cfg); /* must be harmless after a failed parse */
}

static int parse_ok(const char *yaml, const char *base, ls_config *cfg) {
    ls_err err = {0};
    int rc = ls_config_parse(yaml, strlen(yaml), "t.yaml", base, cfg, &err);
    if (rc != 0) printf("     unexpected error: %s\n", err.msg);
    return rc == 0;
}

/* ------------------------------------------------------------------------ */

static const char FULL[] =
    "# the example from config.h, with every value changed from its default\n"
    "server:\n"
    "  listen: \"127.0.0.1:6000\"\n"
    "  max_message_mb: 64\n"
    "  worker_threads: 8\n"
    "  ort_intra_threads: 2\n"
    "  ort_inter_threads: 3\n"
    "  max_batch: 16\n"
    "  png_level: 3\n"
    "capacity:\n"
    "  max_models: 7\n"
    "  max_memory_gb: 1.5\n"
    "  eviction_policy: lfu\n"
    "  idle_unload_minutes: 2.5\n"
    "  idle_check_seconds: 5\n"
    "  stats_report_seconds: 0.5\n"
    "  load_retry_seconds: 0\n"
    "  lfu_half_life_minutes: 0.05\n"
    "  lfu_initial: 2.5\n"
    "  min_residency_seconds: 0\n"
    "models:\n"
    "  alice:\n"
    "    model_path: models/a.onnx\n"
    "    background_dir: avatars/a/frames\n"
    "    crop_rects_path: avatars/a/crop_rects.json\n"
    "    num_frames: 100\n"
    "    preload: true\n"
    "    pinned: yes\n"
    "    memory_estimate_mb: 500\n"
    "    frame_order: pingpong\n"
    "    channel_order: rgb\n"
    "    paste_margin: 0\n"
    "  bob.v2-x_1:\n"
    "    model_path: /abs/b.onnx\n"
    "    background_dir: ./avatars/b\n"
    "    crop_rects_path: b.json\n";

static void test_full(void) {
    ls_config c;
    int ok = parse_ok(FULL, "/etc/ls", &c);
    check("full config parses", ok);
    if (!ok) return;
    check("source", !strcmp(c.source, "t.yaml"));
    check("server.listen", !strcmp(c.listen, "127.0.0.1:6000"));
    check("server.max_message_mb -> bytes", c.max_message_bytes == 64ull << 20);
    check("server.worker_threads", c.worker_threads == 8);
    check("server.ort_intra_threads", c.ort_intra_threads == 2);
    check("server.ort_inter_threads", c.ort_inter_threads == 3);
    check("server.max_batch", c.max_batch == 16);
    check("server.png_level", c.png_level == 3);
    check("capacity.max_models", c.max_models == 7);
    check("capacity.max_memory_gb 1.5 -> bytes", c.max_memory_bytes == 3ull << 29);
    check("capacity.eviction_policy lfu", c.policy == LS_POLICY_LFU);
    check("capacity.idle_unload_minutes 2.5 -> 150 s", c.idle_unload_seconds == 150.0);
    check("capacity.idle_check_seconds", c.idle_check_seconds == 5.0);
    check("capacity.stats_report_seconds", c.stats_report_seconds == 0.5);
    check("capacity.lfu_half_life_minutes 0.05 -> 3 s", c.lfu_half_life_seconds == 0.05 * 60.0);
    check("capacity.lfu_initial", c.lfu_initial == 2.5);
    check("capacity.min_residency_seconds 0", c.min_residency_seconds == 0.0);
    check("capacity.load_retry_seconds 0", c.load_retry_seconds == 0.0);
    check("two models in file order", c.n_models == 2 && !strcmp(c.models[0].id, "alice") &&
                                          !strcmp(c.models[1].id, "bob.v2-x_1"));
    if (c.n_models == 2) {
        const ls_model_config *a = &c.models[0], *b = &c.models[1];
        check("alice.model_path resolved", !strcmp(a->model_path, "/etc/ls/models/a.onnx"));
        check("alice.background_dir resolved",
              !strcmp(a->background_dir, "/etc/ls/avatars/a/frames"));
        check("alice.crop_rects_path resolved",
              !strcmp(a->crop_rects_path, "/etc/ls/avatars/a/crop_rects.json"));
        check("alice.num_frames", a->num_frames == 100);
        check("alice.preload true", a->preload == 1);
        check("alice.pinned yes", a->pinned == 1);
        check("alice.memory_estimate_mb", a->memory_estimate_bytes == 500ull << 20);
        check("alice.frame_order pingpong", a->frame_order == LS_ORDER_PINGPONG);
        check("alice.channel_order rgb", a->channel_bgr == 0);
        check("alice.paste_margin 0", a->paste_margin == 0);
        check("bob absolute path kept", !strcmp(b->model_path, "/abs/b.onnx"));
        check("bob ./ dropped when joining", !strcmp(b->background_dir, "/etc/ls/avatars/b"));
        check("bob model defaults",
              b->num_frames == 0 && !b->preload && !b->pinned &&
                  b->memory_estimate_bytes == 512ull << 20 && b->frame_order == LS_ORDER_LOOP &&
                  b->channel_bgr == 1 && b->paste_margin == 4);
        check("ls_config_find finds bob", ls_config_find(&c, "bob.v2-x_1") == b);
        check("ls_config_find unknown -> NULL", ls_config_find(&c, "carol") == NULL);
    }
    ls_config_free(&c);
    check("free zeroes the config", is_zeroed(&c));
    ls_config_free(&c);
    check("second free is harmless", is_zeroed(&c));
}

static int has_defaults(const ls_config *c) {
    return c->listen && !strcmp(c->listen, "0.0.0.0:50053") &&
           c->max_message_bytes == 128ull << 20 && c->worker_threads == 4 &&
           c->ort_intra_threads == 0 && c->ort_inter_threads == 1 && c->max_batch == 32 &&
           c->png_level == 1 && c->max_models == 4 && c->max_memory_bytes == 8ull << 30 &&
           c->policy == LS_POLICY_LRU && c->idle_unload_seconds == 1800.0 &&
           c->idle_check_seconds == 60.0 && c->stats_report_seconds == 300.0 &&
           c->load_retry_seconds == 10.0 && c->lfu_half_life_seconds == 600.0 &&
           c->lfu_initial == 5.0 && c->min_residency_seconds == 30.0 && c->n_models == 0 &&
           c->models == NULL &&
           c->http_enabled == 1 && c->http_listen && !strcmp(c->http_listen, "0.0.0.0:8053") &&
           c->n_cors_origins == 0 && c->cors_origins == NULL && c->web_root &&
           !strcmp(c->web_root, LS_WEB_ROOT);
}

static void test_defaults(void) {
    ls_config c;
    ls_config_defaults(&c);
    check("ls_config_defaults values", has_defaults(&c));
    ls_config_free(&c);

    check("empty text -> defaults", parse_ok("", NULL, &c) && has_defaults(&c));
    check("empty text -> source \"t.yaml\"", c.source && !strcmp(c.source, "t.yaml"));
    ls_config_free(&c);

    ls_err err = {0};
    check("NULL source -> \"<string>\"",
          ls_config_parse("", 0, NULL, NULL, &c, &err) == 0 && !strcmp(c.source, "<string>"));
    ls_config_free(&c);

    check("comments only -> defaults", parse_ok("# nothing\n\n# here\n", NULL, &c) &&
                                           has_defaults(&c));
    ls_config_free(&c);
    check("empty sections -> defaults",
          parse_ok("server:\ncapacity: ~\nmodels: {}\n", NULL, &c) && has_defaults(&c));
    ls_config_free(&c);
    check("\"---\" document marker accepted", parse_ok("---\nserver:\n  max_batch: 8\n...\n",
                                                       NULL, &c) && c.max_batch == 8);
    ls_config_free(&c);

    check("worker_threads 0 -> online CPUs",
          parse_ok("server:\n  worker_threads: 0\n", NULL, &c) &&
              c.worker_threads == (int)sysconf(_SC_NPROCESSORS_ONLN));
    ls_config_free(&c);
    check("idle_unload_minutes 0 disables", parse_ok("capacity:\n  idle_unload_minutes: 0\n",
                                                     NULL, &c) && c.idle_unload_seconds == 0.0);
    ls_config_free(&c);
    check("quoted numbers, upper-case words",
          parse_ok("server:\n  max_batch: '64'\ncapacity:\n  eviction_policy: LFU\n", NULL, &c) &&
              c.max_batch == 64 && c.policy == LS_POLICY_LFU);
    ls_config_free(&c);
    check("eviction_policy lfu_count", parse_ok("capacity:\n  eviction_policy: lfu_count\n", NULL, &c) &&
                                           c.policy == LS_POLICY_LFU_COUNT);
    ls_config_free(&c);
    check("listen [::1]:50053", parse_ok("server: {listen: '[::1]:50053'}\n", NULL, &c) &&
                                    !strcmp(c.listen, "[::1]:50053"));
    ls_config_free(&c);
    check("listen localhost:65535", parse_ok("server: {listen: 'localhost:65535'}\n", NULL, &c));
    ls_config_free(&c);

    char id128[129];
    memset(id128, 'a', 128);
    id128[128] = '\0';
    char yaml[512];
    snprintf(yaml, sizeof yaml,
             "models:\n  %s:\n    model_path: m\n    background_dir: b\n    crop_rects_path: c\n",
             id128);
    check("128-char model id accepted", parse_ok(yaml, "/x", &c) && c.n_models == 1);
    ls_config_free(&c);

    ls_config zero;
    memset(&zero, 0, sizeof zero);
    ls_config_free(&zero);
    check("free of a zeroed config", is_zeroed(&zero));
    ls_config_free(NULL);
    check("free(NULL) is harmless", 1);
}

static void test_paths(void) {
    static const char yaml[] = "models:\n"
                               "  m:\n"
                               "    model_path: a/b.onnx\n"
                               "    background_dir: /abs/frames\n"
                               "    crop_rects_path: ././c.json\n";
    ls_config c;
    check("base dir joined", parse_ok(yaml, "/srv/ls", &c) &&
                                 !strcmp(c.models[0].model_path, "/srv/ls/a/b.onnx"));
    check("absolute path kept", !strcmp(c.models[0].background_dir, "/abs/frames"));
    check("leading ./ dropped", !strcmp(c.models[0].crop_rects_path, "/srv/ls/c.json"));
    ls_config_free(&c);

    check("base dir with trailing slash", parse_ok(yaml, "/srv/ls/", &c) &&
                                              !strcmp(c.models[0].model_path, "/srv/ls/a/b.onnx"));
    ls_config_free(&c);
    check("relative base dir stays relative", parse_ok(yaml, "conf", &c) &&
                                                  !strcmp(c.models[0].model_path, "conf/a/b.onnx"));
    ls_config_free(&c);

    char cwd[PATH_MAX], want[PATH_MAX + 32];
    if (!getcwd(cwd, sizeof cwd)) cwd[0] = '\0';
    snprintf(want, sizeof want, "%s/a/b.onnx", cwd);
    check("NULL base dir -> cwd", parse_ok(yaml, NULL, &c) && !strcmp(c.models[0].model_path, want));
    ls_config_free(&c);

    /* ls_config_load_file: relative to the file's directory. */
    const char *path = write_file("cfg.yaml", yaml);
    ls_err err = {0};
    snprintf(want, sizeof want, "%s/a/b.onnx", tmpdir);
    int rc = ls_config_load_file(path, &c, &err);
    check("load_file parses", rc == 0);
    if (rc != 0) printf("     %s\n", err.msg);
    check("load_file: paths relative to the file",
          rc == 0 && !strcmp(c.models[0].model_path, want));
    check("load_file: source is the path", rc == 0 && !strcmp(c.source, path));
    ls_config_free(&c);

    snprintf(want, sizeof want, "%s/no-such.yaml", tmpdir);
    rc = ls_config_load_file(want, &c, &err);
    check("load_file of a missing file names the path",
          rc == -1 && strstr(err.msg, want) && strstr(err.msg, "No such file") && is_zeroed(&c));
    ls_config_free(&c);

    rc = ls_config_load_file(tmpdir, &c, &err);
    check("load_file of a directory fails", rc == -1 && strstr(err.msg, tmpdir));
    ls_config_free(&c);

    path = write_file("bad.yaml", "server:\n  max_batch: 0\n");
    rc = ls_config_load_file(path, &c, &err);
    check("load_file errors name the file and line",
          rc == -1 && strstr(err.msg, path) && strstr(err.msg, "bad.yaml:2:"));
    ls_config_free(&c);
    remove_file("cfg.yaml");
    remove_file("bad.yaml");
}

#define MODEL_OK "    model_path: m\n    background_dir: b\n    crop_rects_path: c\n"

static void test_errors(void) {
    /* Unknown keys at every level. */
    expect_error("unknown top-level key", "server: {}\nservers: {}\n", "t.yaml:2:",
                 "unknown key 'servers' at top level", "expected one of: server, capacity, models");
    expect_error("unknown key in server", "server:\n  max_batch: 4\n  port: 80\n", "t.yaml:3:",
                 "unknown key 'port' in server", "listen");
    expect_error("unknown key in capacity", "capacity:\n  max_model: 4\n", "t.yaml:2:",
                 "unknown key 'max_model' in capacity", "max_models");
    expect_error("unknown key in models.bob",
                 "models:\n  bob:\n" MODEL_OK "    pined: true\n", "t.yaml:6:",
                 "unknown key 'pined' in models.bob",
                 "(expected one of: model_path, background_dir, crop_rects_path");

    /* Bad values. */
    expect_error("eviction_policy fifo", "capacity:\n  eviction_policy: fifo\n",
                 "t.yaml:2: capacity.eviction_policy: expected lru, lfu or lfu_count, got 'fifo'",
                 NULL, NULL);
    expect_error("eviction_policy lfu_counts", "capacity:\n  eviction_policy: lfu_counts\n",
                 "t.yaml:2:", "capacity.eviction_policy", "'lfu_counts'");
    expect_error("lfu_half_life_minutes -1", "capacity:\n  lfu_half_life_minutes: -1\n",
                 "t.yaml:2:", "capacity.lfu_half_life_minutes", "> 0");
    expect_error("lfu_half_life_minutes 0", "capacity:\n\n  lfu_half_life_minutes: 0\n",
                 "t.yaml:3:", "capacity.lfu_half_life_minutes", "> 0");
    expect_error("lfu_half_life_minutes nan", "capacity:\n  lfu_half_life_minutes: .nan\n",
                 "t.yaml:2:", "capacity.lfu_half_life_minutes", "got '.nan'");
    expect_error("lfu_half_life_minutes ten", "capacity:\n  lfu_half_life_minutes: ten\n",
                 "t.yaml:2:", "capacity.lfu_half_life_minutes", "got 'ten'");
    expect_error("lfu_initial -0.5", "capacity:\n  lfu_initial: -0.5\n", "t.yaml:2:",
                 "capacity.lfu_initial", ">= 0 and <= 64");
    expect_error("lfu_initial 65", "capacity:\n  lfu_initial: 65\n", "t.yaml:2:",
                 "capacity.lfu_initial", "got '65'");
    expect_error("min_residency_seconds -1", "capacity:\n  min_residency_seconds: -1\n",
                 "t.yaml:2:", "capacity.min_residency_seconds", ">= 0");
    expect_error("min_residency_seconds a list", "capacity:\n  min_residency_seconds: [30]\n",
                 "t.yaml:2:", "capacity.min_residency_seconds", NULL);
    expect_error("unknown capacity key lists the new ones", "capacity:\n  lfu_halflife: 3\n",
                 "t.yaml:2:", "lfu_half_life_minutes", NULL);
    expect_error("max_models 0", "capacity:\n  max_models: 0\n", "t.yaml:2:",
                 "capacity.max_models", "got '0'");
    expect_error("max_batch 0", "server:\n  max_batch: 0\n", "t.yaml:2:", "server.max_batch",
                 "1..1024");
    expect_error("max_batch 1025", "server:\n\n  max_batch: 1025\n", "t.yaml:3:",
                 "server.max_batch", "got '1025'");
    expect_error("max_batch 4.5 is not an integer", "server:\n  max_batch: 4.5\n", "t.yaml:2:",
                 "server.max_batch: expected an integer", "'4.5'");
    expect_error("max_batch 0x10 is not decimal", "server:\n  max_batch: 0x10\n", "t.yaml:2:",
                 "server.max_batch", NULL);
    expect_error("png_level 4", "server:\n  png_level: 4\n", "t.yaml:2:", "server.png_level",
                 "0..3");
    expect_error("worker_threads 257", "server:\n  worker_threads: 257\n", "t.yaml:2:",
                 "server.worker_threads", "0..256");
    expect_error("worker_threads -1", "server:\n  worker_threads: -1\n", "t.yaml:2:",
                 "server.worker_threads", NULL);
    expect_error("empty value", "server:\n  max_batch:\n", "t.yaml:2:",
                 "server.max_batch: expected an integer 1..1024, got nothing", NULL);
    expect_error("huge integer", "server:\n  max_batch: 99999999999999999999999\n", "t.yaml:2:",
                 "server.max_batch", NULL);
    expect_error("max_memory_gb 0", "capacity:\n  max_memory_gb: 0\n", "t.yaml:2:",
                 "capacity.max_memory_gb", "> 0");
    expect_error("max_memory_gb nan", "capacity:\n  max_memory_gb: .nan\n", "t.yaml:2:",
                 "capacity.max_memory_gb", NULL);
    expect_error("idle_unload_minutes -1", "capacity:\n  idle_unload_minutes: -1\n", "t.yaml:2:",
                 "capacity.idle_unload_minutes", ">= 0");
    expect_error("idle_check_seconds 0", "capacity:\n  idle_check_seconds: 0\n", "t.yaml:2:",
                 "capacity.idle_check_seconds", NULL);
    expect_error("paste_margin 65", "models:\n  m:\n" MODEL_OK "    paste_margin: 65\n",
                 "t.yaml:6:", "models.m.paste_margin", "0..64");
    expect_error("preload maybe", "models:\n  m:\n" MODEL_OK "    preload: maybe\n", "t.yaml:6:",
                 "models.m.preload", "got 'maybe'");
    expect_error("frame_order reverse", "models:\n  m:\n" MODEL_OK "    frame_order: reverse\n",
                 "t.yaml:6:", "models.m.frame_order: expected loop or pingpong", NULL);
    expect_error("channel_order bgra", "models:\n  m:\n" MODEL_OK "    channel_order: bgra\n",
                 "t.yaml:6:", "models.m.channel_order: expected bgr or rgb", NULL);
    expect_error("empty model_path", "models:\n  m:\n    model_path:\n", "t.yaml:3:",
                 "models.m.model_path", "path");
    expect_error("listen without port", "server:\n  listen: localhost\n", "t.yaml:2:",
                 "server.listen", "host:port");
    expect_error("listen port 0", "server:\n  listen: '0.0.0.0:0'\n", "t.yaml:2:",
                 "server.listen", NULL);
    expect_error("listen port 65536", "server:\n  listen: 'h:65536'\n", "t.yaml:2:",
                 "server.listen", NULL);
    expect_error("listen bare IPv6", "server:\n  listen: '::1:50053'\n", "t.yaml:2:",
                 "server.listen", NULL);
    expect_error("listen empty host", "server:\n  listen: ':50053'\n", "t.yaml:2:",
                 "server.listen", NULL);

    /* Wrong node types. */
    expect_error("server is a list", "server:\n  - a\n  - b\n", "t.yaml:1:",
                 "server: expected a mapping, got a list", NULL);
    expect_error("models is a scalar", "models: lots\n", "t.yaml:1:",
                 "models: expected a mapping", NULL);
    expect_error("model body is a list", "models:\n  m: [1, 2]\n", "t.yaml:2:",
                 "models.m: expected a mapping, got a list", NULL);
    expect_error("max_batch is a mapping", "server:\n  max_batch: {a: 1}\n", "t.yaml:2:",
                 "server.max_batch: expected an integer 1..1024, got a mapping", NULL);
    expect_error("model_path is a list", "models:\n  m:\n    model_path: [a]\n", "t.yaml:3:",
                 "models.m.model_path", "got a list");
    expect_error("top level is a list", "- server\n", "t.yaml:1:", "expected a mapping", NULL);
    expect_error("non-scalar key", "server:\n  [a]: 1\n", "t.yaml:2:", "keys must be", NULL);

    /* Model ids and required keys. */
    expect_error("duplicate model id",
                 "models:\n  bob:\n" MODEL_OK "  alice:\n" MODEL_OK "  bob:\n" MODEL_OK,
                 "t.yaml:10:", "duplicate model id 'bob'", "first at line 2");
    expect_error("duplicate key in server", "server:\n  max_batch: 1\n  max_batch: 2\n",
                 "t.yaml:3:", "duplicate key 'max_batch' in server", "first at line 2");
    expect_error("duplicate section", "server: {}\nmodels: {}\nserver: {}\n", "t.yaml:3:",
                 "duplicate key 'server'", "line 1");
    expect_error("missing model_path",
                 "models:\n  ok:\n" MODEL_OK "  m:\n    background_dir: b\n    crop_rects_path: c\n",
                 "t.yaml:6:", "models.m: missing required key 'model_path'", NULL);
    expect_error("missing crop_rects_path",
                 "models:\n  m:\n    model_path: a\n    background_dir: b\n", "t.yaml:2:",
                 "models.m: missing required key 'crop_rects_path'", NULL);
    expect_error("model with no body", "models:\n  m:\n", "t.yaml:2:",
                 "missing required key 'model_path'", NULL);
    expect_error("model id with a space", "models:\n  'a b':\n" MODEL_OK, "t.yaml:2:",
                 "invalid model id 'a b'", NULL);
    expect_error("model id with a slash", "models:\n  a/b:\n" MODEL_OK, "t.yaml:2:",
                 "invalid model id", NULL);
    expect_error("empty model id", "models:\n  '':\n" MODEL_OK, "t.yaml:2:", "invalid model id",
                 NULL);
    char yaml[512], id129[130];
    memset(id129, 'a', 129);
    id129[129] = '\0';
    snprintf(yaml, sizeof yaml, "models:\n  %s:\n" MODEL_OK, id129);
    expect_error("129-char model id", yaml, "t.yaml:2:", "invalid model id", "1..128");

    /* YAML itself. */
    expect_error("YAML syntax error", "server:\n  max_batch: 4\n  listen: [unclosed\n", "t.yaml:",
                 "invalid YAML", NULL);
    expect_error("bad indentation", "server:\n  max_batch: 4\n bad: 1\n", "t.yaml:3:",
                 "invalid YAML", NULL);
    expect_error("two documents", "server: {}\n---\nmodels: {}\n", "t.yaml:2:",
                 "second YAML document", NULL);
    expect_error("error after a model was filled",
                 "models:\n  a:\n" MODEL_OK "  b:\n" MODEL_OK "capacity: {max_models: 0}\n",
                 "t.yaml:10:", "capacity.max_models", NULL);
}

/* ------------------------------------------------------------------------ */

static int parse_rects(const char *json, ls_rect **r, size_t *n, ls_err *err) {
    return ls_croprects_parse(json, strlen(json), r, n, err);
}

static void expect_rects_error(const char *what, const char *json, const char *n1,
                               const char *n2) {
    ls_rect *r = (ls_rect *)&r; /* must come back NULL */
    size_t n = 99;
    ls_err err = {0};
    int rc = parse_rects(json, &r, &n, &err);
    int ok = rc == -1 && err.code == LS_FAILED_PRECONDITION && r == NULL && n == 0 &&
             (!n1 || strstr(err.msg, n1)) && (!n2 || strstr(err.msg, n2));
    check(what, ok);
    if (!ok) printf("     rc=%d code=%s msg: %s\n", rc, ls_code_name(err.code), err.msg);
    if (rc == 0) free(r);
}

static void test_croprects(void) {
    static const ls_rect want[3] = {{10, 20, 110, 120}, {11, 21, 111, 121}, {0, 0, 1, 1}};
    static const char keyed[] =
        "{\"0\": {\"rect\": [10, 20, 110, 120], \"original_path\": \"f0.png\"},\n"
        " \"1\": {\"rect\": [11, 21, 111, 121]},\n"
        " \"2\": {\"rect\": [0, 0, 1, 1]}}";
    static const char lists[] = "[[10, 20, 110, 120], [11, 21, 111, 121], [0, 0, 1, 1]]";
    static const char objects[] =
        "[{\"x1\": 10, \"y1\": 20, \"x2\": 110, \"y2\": 120},"
        " {\"y2\": 121, \"x2\": 111, \"y1\": 21, \"x1\": 11, \"frame\": 1},"
        " {\"x1\": 0, \"y1\": 0, \"x2\": 1, \"y2\": 1}]";
    /* keyed form out of order, reals with zero fraction */
    static const char unordered[] =
        "{\"2\": {\"rect\": [0, 0, 1.0, 1]}, \"0\": {\"rect\": [10.0, 20, 110, 120]},"
        " \"1\": {\"rect\": [11, 21, 111, 121]}}";
    static const char *const forms[] = {keyed, lists, objects, unordered};
    static const char *const names[] = {"croprects keyed form", "croprects list of lists",
                                        "croprects list of objects",
                                        "croprects keyed, unordered, 12.0 accepted"};
    for (size_t f = 0; f < 4; f++) {
        ls_rect *r = NULL;
        size_t n = 0;
        ls_err err = {0};
        int rc = parse_rects(forms[f], &r, &n, &err);
        check(names[f], rc == 0 && n == 3 && !memcmp(r, want, sizeof want));
        if (rc != 0) printf("     %s\n", err.msg);
        free(r);
    }

    char big[4096];
    size_t off = (size_t)snprintf(big, sizeof big, "{");
    for (int i = 0; i < 12; i++)
        if (i != 7)
            off += (size_t)snprintf(big + off, sizeof big - off, "%s\"%d\": {\"rect\": [0,0,1,1]}",
                                    off > 1 ? ", " : "", i == 11 ? 12 : i);
    snprintf(big + off, sizeof big - off, ", \"13\": {\"rect\": [0,0,1,1]}}");
    /* keys 0..6, 8..10, 12, 13: 12 entries, first missing index 7 */
    expect_rects_error("missing frame index named", big,
                       "crop rects: missing frame index 7 (found 12 entries, keys must be 0..11)",
                       NULL);
    expect_rects_error("non-numeric key named", "{\"0\": {\"rect\": [0,0,1,1]}, \"one\": {}}",
                       "key 'one'", "not a frame index");
    expect_rects_error("leading-zero key refused", "{\"0\": {\"rect\": [0,0,1,1]}, \"01\": {}}",
                       "key '01'", NULL);
    expect_rects_error("negative key refused", "{\"0\": {\"rect\": [0,0,1,1]}, \"-1\": {}}",
                       "key '-1'", NULL);
    expect_rects_error("non-integer coordinate", "[[0, 0, 10.5, 10]]", "frame 0",
                       "x2 must be an integer");
    expect_rects_error("string coordinate", "[[0, 0, 10, 10], [0, \"1\", 10, 10]]", "frame 1",
                       "y1 must be an integer, got a string");
    expect_rects_error("x2 <= x1", "[[0,0,5,5], [0,0,5,5], [7, 0, 7, 10]]", "frame 2",
                       "x2 (7) must be greater than x1 (7)");
    expect_rects_error("y2 <= y1", "{\"0\": {\"rect\": [0, 9, 10, 3]}}", "frame 0",
                       "y2 (3) must be greater than y1 (9)");
    expect_rects_error("negative coordinate", "[[-1, 0, 10, 10]]", "frame 0", "x1 = -1");
    expect_rects_error("coordinate over 65535", "[[0, 0, 65536, 10]]", "frame 0", "0..65535");
    expect_rects_error("rect of 3 numbers", "{\"0\": {\"rect\": [0, 0, 10]}}", "frame 0",
                       "a list of 3");
    expect_rects_error("missing rect", "{\"0\": {\"box\": [0, 0, 10, 10]}}", "frame 0",
                       "missing \"rect\"");
    expect_rects_error("keyed value not an object", "{\"0\": [0, 0, 10, 10]}", "frame 0",
                       "expected an object");
    expect_rects_error("object form missing y2", "[{\"x1\": 0, \"y1\": 0, \"x2\": 1}]",
                       "frame 0", "missing \"y2\"");
    expect_rects_error("list element a number", "[[0,0,1,1], 5]", "frame 1", "got an integer");
    expect_rects_error("garbage JSON gives line and column", "[[0, 0, 1, 1],\n [0, 0, 1 1]]",
                       "line 2", "column");
    expect_rects_error("duplicate key refused",
                       "{\"0\": {\"rect\": [0,0,1,1]}, \"0\": {\"rect\": [0,0,1,1]}}",
                       "duplicate", NULL);
    expect_rects_error("scalar root refused", "42", "invalid JSON", NULL);
    expect_rects_error("empty list", "[]", "no crop rectangles", NULL);
    expect_rects_error("empty object", " { } ", "no crop rectangles", NULL);
    expect_rects_error("empty input", "", "invalid JSON", NULL);

    /* Files. */
    const char *path = write_file("rects.json", forms[1]);
    ls_rect *r = NULL;
    size_t n = 0;
    ls_err err = {0};
    int rc = ls_croprects_load_file(path, &r, &n, &err);
    check("croprects load_file", rc == 0 && n == 3 && !memcmp(r, want, sizeof want));
    free(r);

    path = write_file("bad.json", "[[0, 0, 1, 1], [5, 5, 1, 9]]");
    rc = ls_croprects_load_file(path, &r, &n, &err);
    check("croprects load_file error prefixed with path",
          rc == -1 && !strncmp(err.msg, path, strlen(path)) && strstr(err.msg, "frame 1") &&
              err.code == LS_FAILED_PRECONDITION && r == NULL);

    char missing[PATH_MAX + 32];
    snprintf(missing, sizeof missing, "%s/nope.json", tmpdir);
    rc = ls_croprects_load_file(missing, &r, &n, &err);
    check("croprects load_file of a missing file names the path",
          rc == -1 && strstr(err.msg, missing) && strstr(err.msg, "No such file") &&
              err.code == LS_FAILED_PRECONDITION && r == NULL && n == 0);
    remove_file("rects.json");
    remove_file("bad.json");
}

static void test_http(void) {
    ls_config c;
    check("http section parses",
          parse_ok("http:\n"
                   "  enabled: false\n"
                   "  listen: '127.0.0.1:9000'\n"
                   "  cors_origins: ['http://localhost:3000', \"https://a.example\", '*']\n"
                   "  web_root: site\n",
                   "/srv/ls", &c));
    check("http.enabled false", c.http_enabled == 0);
    check("http.listen", c.http_listen && !strcmp(c.http_listen, "127.0.0.1:9000"));
    check("http.cors_origins in order",
          c.n_cors_origins == 3 && !strcmp(c.cors_origins[0], "http://localhost:3000") &&
              !strcmp(c.cors_origins[1], "https://a.example") && !strcmp(c.cors_origins[2], "*"));
    check("http.web_root resolved against the config's directory",
          c.web_root && !strcmp(c.web_root, "/srv/ls/site"));
    ls_config_free(&c);
    check("free zeroes an http config", is_zeroed(&c));

    check("block-style origin list",
          parse_ok("http:\n  cors_origins:\n    - http://h:1\n    - http://[::1]:8\n", NULL, &c) &&
              c.n_cors_origins == 2 && !strcmp(c.cors_origins[1], "http://[::1]:8"));
    ls_config_free(&c);
    check("empty origin list = same-origin only",
          parse_ok("http:\n  cors_origins: []\n", NULL, &c) && c.n_cors_origins == 0 &&
              c.cors_origins == NULL);
    ls_config_free(&c);
    check("cors_origins with no value = default",
          parse_ok("http:\n  cors_origins:\n", NULL, &c) && c.n_cors_origins == 0);
    ls_config_free(&c);
    check("empty http section = defaults", parse_ok("http:\n", NULL, &c) && has_defaults(&c));
    ls_config_free(&c);

    expect_error("unknown key in http", "server: {}\nhttp:\n  port: 80\n", "t.yaml:3:",
                 "unknown key 'port' in http",
                 "expected one of: enabled, listen, cors_origins, web_root");
    expect_error("http.enabled maybe", "http:\n  enabled: maybe\n", "t.yaml:2:",
                 "http.enabled", "got 'maybe'");
    expect_error("http.listen without port", "http:\n  listen: localhost\n", "t.yaml:2:",
                 "http.listen: expected host:port", NULL);
    expect_error("http.listen port 0", "http:\n  listen: '0.0.0.0:0'\n", "t.yaml:2:",
                 "http.listen", NULL);
    expect_error("cors_origins a string", "http:\n  cors_origins: http://a\n", "t.yaml:2:",
                 "http.cors_origins: expected a list of origins", "got a single value");
    expect_error("cors origin without scheme", "http:\n  cors_origins:\n    - http://ok\n    - a.example\n",
                 "t.yaml:4:", "http.cors_origins", "got 'a.example'");
    expect_error("cors origin with a path", "http:\n  cors_origins: ['https://a.example/']\n",
                 "t.yaml:2:", "http.cors_origins", "no path");
    expect_error("cors origin a mapping", "http:\n  cors_origins: [{a: 1}]\n", "t.yaml:2:",
                 "http.cors_origins", "got a mapping");
    expect_error("empty web_root", "http:\n  web_root:\n", "t.yaml:2:", "http.web_root",
                 "expected a path");
    expect_error("http is a list", "http: [1]\n", "t.yaml:1:", "http: expected a mapping", NULL);
    expect_error("duplicate key in http", "http:\n  enabled: true\n  enabled: false\n",
                 "t.yaml:3:", "duplicate key 'enabled' in http", "first at line 2");
}

static void test_auth_tls(void) {
    ls_config c;
    setenv("LS_TEST_KEY_ENV", "env-key-0123456789", 1);
    check("auth and tls sections parse",
          parse_ok("auth:\n"
                   "  keys:\n"
                   "    - name: a\n"
                   "      sha256: \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n"
                   "      models: [demo, 'bob*']\n"
                   "    - name: ops\n"
                   "      key_env: LS_TEST_KEY_ENV\n"
                   "      admin: yes\n"
                   "tls:\n  cert_file: s.crt\n  key_file: /k/s.key\n",
                   "/etc/ls", &c));
    check("auth enabled with 2 keys", c.auth.enabled == 1 && c.auth.n_keys == 2);
    uint8_t want[32];
    ls_auth_hash("test", 4, want);
    check("sha256 parsed", c.auth.n_keys == 2 && !memcmp(c.auth.keys[0].sha256, want, 32));
    ls_auth_hash("env-key-0123456789", 18, want);
    check("key_env hashed at parse time", c.auth.n_keys == 2 && !memcmp(c.auth.keys[1].sha256, want, 32));
    check("patterns and admin", c.auth.n_keys == 2 && c.auth.keys[0].n_models == 2 && c.auth.keys[1].admin &&
                                    ls_auth_allows(&c.auth.keys[0], "bobcat") &&
                                    !ls_auth_allows(&c.auth.keys[0], "alice") &&
                                    ls_auth_allows(&c.auth.keys[1], "alice"));
    ls_err e = {0};
    check("identify: right key", c.auth.n_keys == 2 &&
                                     ls_auth_identify(&c.auth, "Bearer env-key-0123456789", &e) == &c.auth.keys[1]);
    check("identify: wrong key", !ls_auth_identify(&c.auth, "Bearer nope", &e) && e.code == LS_UNAUTHENTICATED);
    check("identify: missing", !ls_auth_identify(&c.auth, NULL, &e) && e.code == LS_UNAUTHENTICATED);
    check("tls paths resolved", c.tls_cert_file && !strcmp(c.tls_cert_file, "/etc/ls/s.crt") && c.tls_key_file &&
                                    !strcmp(c.tls_key_file, "/k/s.key") && !c.tls_client_ca_file);
    ls_config_free(&c);
    check("free zeroes an auth/tls config", is_zeroed(&c));

    expect_error("auth key without a secret", "auth:\n  keys:\n    - name: a\n      models: [x]\n", "t.yaml:3:",
                 "exactly one of sha256, key_file, key_env", NULL);
    expect_error("auth key with a bad hash", "auth:\n  keys:\n    - sha256: abc\n", "t.yaml:3:",
                 "auth.keys.sha256", "64 hex");
    expect_error("auth key_env unset", "auth:\n  keys:\n    - key_env: LS_TEST_NOT_SET_XYZ\n", "t.yaml:3:",
                 "is not set", NULL);
    expect_error("auth enabled without keys", "auth:\n  enabled: true\n", "t.yaml:1:", "no keys", NULL);
    expect_error("unknown key in auth.keys",
                 "auth:\n  keys:\n    - sha256: \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n"
                 "      modles: [x]\n",
                 "t.yaml:4:", "modles", NULL);
    expect_error("tls without key_file", "tls:\n  cert_file: a.crt\n", "t.yaml:1:", "cert_file and key_file", NULL);
    expect_error("unknown key in tls", "tls:\n  cert: a\n", "t.yaml:2:", "unknown key 'cert'", NULL);
}

/* config.h's reference comment is ls_config_doc's output, byte for byte:
 * the tables that parse the keys are what documents them. */
/* engine: the provider, its CUDA settings, a model's override; the GPU
 * budget in capacity. */
static void test_engine(void) {
    ls_config c;
    int ok = parse_ok("engine: {}\nmodels:\n  a:\n" MODEL_OK, "/b", &c);
    check("engine: defaults", ok && c.execution_provider == LS_EP_CPU && c.cuda_device_id == 0 &&
                                  c.gpu_mem_limit_bytes == 0 && c.cudnn_conv_algo_search == LS_CUDNN_HEURISTIC &&
                                  c.io_binding == 1 && c.max_gpu_memory_bytes == 0 &&
                                  c.models[0].execution_provider == 0 &&
                                  c.models[0].gpu_memory_estimate_bytes == 512ull << 20);
    if (ok) ls_config_free(&c);
    ok = parse_ok("engine:\n  execution_provider: cuda\n  device_id: 3\n  gpu_mem_limit_mb: 2048\n"
                  "  cudnn_conv_algo_search: exhaustive\n  io_binding: false\n"
                  "capacity:\n  max_gpu_memory_gb: 0.5\n"
                  "models:\n  a:\n" MODEL_OK "    execution_provider: cpu\n    gpu_memory_estimate_mb: 700\n"
                  "  b:\n" MODEL_OK "    execution_provider: cuda\n  c:\n" MODEL_OK,
                  "/b", &c);
    check("engine: every key", ok && c.execution_provider == LS_EP_CUDA && c.cuda_device_id == 3 &&
                                   c.gpu_mem_limit_bytes == 2048ull << 20 &&
                                   c.cudnn_conv_algo_search == LS_CUDNN_EXHAUSTIVE && c.io_binding == 0 &&
                                   c.max_gpu_memory_bytes == 1ull << 29);
    check("engine: model overrides (1 + provider; 0 = inherit)",
          ok && c.models[0].execution_provider == 1 + LS_EP_CPU && c.models[1].execution_provider == 1 + LS_EP_CUDA &&
              c.models[2].execution_provider == 0 && c.models[0].gpu_memory_estimate_bytes == 700ull << 20);
    if (ok) ls_config_free(&c);
    expect_error("engine: unknown provider", "engine:\n  execution_provider: tpu\n", "t.yaml:2:",
                 "engine.execution_provider", "cpu or cuda");
    expect_error("engine: device_id range", "engine:\n  device_id: 256\n", "t.yaml:2:", "engine.device_id",
                 "0..255");
    expect_error("engine: negative gpu_mem_limit_mb", "engine:\n  gpu_mem_limit_mb: -1\n", "t.yaml:2:",
                 "engine.gpu_mem_limit_mb", "0..16777216");
    expect_error("engine: cudnn word", "engine:\n  cudnn_conv_algo_search: fast\n", "t.yaml:2:",
                 "engine.cudnn_conv_algo_search", "exhaustive, heuristic or default");
    expect_error("engine: io_binding boolean", "engine:\n  io_binding: maybe\n", "t.yaml:2:", "engine.io_binding",
                 NULL);
    expect_error("engine: unknown key", "engine:\n  provider: cuda\n", "t.yaml:2:", "unknown key 'provider' in engine",
                 "execution_provider");
    expect_error("capacity: negative max_gpu_memory_gb", "capacity:\n  max_gpu_memory_gb: -1\n", "t.yaml:2:",
                 "capacity.max_gpu_memory_gb", ">= 0");
    expect_error("model: unknown provider", "models:\n  a:\n" MODEL_OK "    execution_provider: gpu\n", "t.yaml:6:",
                 "models.a.execution_provider", "inherit, cpu or cuda");
    expect_error("model: gpu_memory_estimate_mb range", "models:\n  a:\n" MODEL_OK "    gpu_memory_estimate_mb: 1e9\n",
                 "t.yaml:6:", "models.a.gpu_memory_estimate_mb", NULL);
}

/* Session limits: a model's max_sessions, the latency budget. */
static void test_session_keys(void) {
    ls_config c;
    int ok = parse_ok("sessions:\n  latency_budget_ms: 90\nmodels:\n  a:\n" MODEL_OK "    max_sessions: 3\n"
                      "  b:\n" MODEL_OK, "/b", &c);
    check("sessions: latency_budget_ms and max_sessions",
          ok && c.sessions_latency_budget_ms == 90 && c.models[0].max_sessions == 3 && c.models[1].max_sessions == 0);
    if (ok) ls_config_free(&c);
    ok = parse_ok("", "/b", &c);
    check("sessions: latency_budget_ms default 150", ok && c.sessions_latency_budget_ms == 150);
    if (ok) ls_config_free(&c);
    expect_error("sessions: latency_budget_ms 0", "sessions:\n  latency_budget_ms: 0\n", "t.yaml:2:",
                 "sessions.latency_budget_ms", "1..60000");
    expect_error("model: negative max_sessions", "models:\n  a:\n" MODEL_OK "    max_sessions: -1\n", "t.yaml:6:",
                 "models.a.max_sessions", "0..100000");
}

static void test_reference(void) {
    const char *header = getenv("LS_CONFIG_H");
    check("LS_CONFIG_H names config.h (the build sets it)", header != NULL);
    if (!header) return;
    ls_buf text = {0};
    int e = ls_read_file(header, &text, 1 << 20);
    check("config.h readable", e == 0);
    char *doc = NULL;
    size_t doc_len = 0;
    FILE *f = open_memstream(&doc, &doc_len);
    ls_config_doc(f, " * ");
    fclose(f);
    const char *begin = e ? NULL : strstr((const char *)text.data, " * --- reference ---\n");
    const char *end = begin ? strstr(begin, " * --- end of reference ---\n") : NULL;
    begin = begin ? begin + strlen(" * --- reference ---\n") : NULL;
    int same = begin && end && (size_t)(end - begin) == doc_len && !memcmp(begin, doc, doc_len);
    check("config.h's reference == ls_config_doc()", same);
    if (!same) fprintf(stderr, "ls_config_doc() writes:\n%s", doc);
    check("the reference names every section and a nested key",
          strstr(doc, "  server:") && strstr(doc, "  tls:") && strstr(doc, "        cache: auto") &&
              strstr(doc, "max_batch: 32") && strstr(doc, "(an integer 1..1024)"));
    free(doc);
    ls_buf_free(&text);
    ls_config c;
    check("\"tls:\" alone = plaintext", parse_ok("tls:\n", "/x", &c) && !c.tls_cert_file);
    ls_config_free(&c);
    check("\"auth:\" alone = no keys needed", parse_ok("auth:\n", "/x", &c) && !c.auth.enabled);
    ls_config_free(&c);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s/test_config.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    test_full();
    test_defaults();
    test_paths();
    test_http();
    test_auth_tls();
    test_errors();
    test_croprects();
    test_engine();
    test_session_keys();
    test_reference();
    if (rmdir(tmpdir) != 0) perror(tmpdir);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
