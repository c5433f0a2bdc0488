/* fuzz_config.c - libFuzzer target: the YAML configuration parser.
 *
 * Any bytes go to ls_config_parse. Invariants checked beyond "no crash, no
 * leak, no undefined behaviour" (the sanitizers' job):
 *  - failure sets INVALID_ARGUMENT with a non-empty message naming the
 *    source, and leaves nothing allocated;
 *  - success yields values inside the documented ranges and models with
 *    non-empty ids and resolved (absolute) paths. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define SOURCE "fuzz.yaml"

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_config: invariant broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ls_config cfg;
    ls_err err = {.code = LS_OK, .msg = ""};
    int rc = ls_config_parse((const char *)data, size, SOURCE, "/fuzz-base", &cfg, &err);
    if (rc != 0) {
        check(rc == -1, "return value -1 on failure");
        check(err.code != LS_OK, "an error code on failure");
        check(err.msg[0] != 0, "a message on failure");
        return 0;
    }
    check(cfg.max_batch >= 1 && cfg.max_batch <= 1024, "max_batch in 1..1024");
    check(cfg.png_level >= 0 && cfg.png_level <= 3, "png_level in 0..3");
    check(cfg.max_models >= 1, "max_models >= 1");
    check(cfg.worker_threads >= 0, "worker_threads >= 0");
    check(cfg.listen && cfg.listen[0], "a listen address");
    for (size_t i = 0; i < cfg.n_models; i++) {
        const ls_model_config *m = &cfg.models[i];
        check(m->id && m->id[0] && strlen(m->id) <= 128, "model id of 1..128 characters");
        check(m->paste_margin >= 0 && m->paste_margin <= 64, "paste_margin in 0..64");
        check(m->num_frames >= 0, "num_frames >= 0");
        const char *paths[3] = {m->model_path, m->background_dir, m->crop_rects_path};
        for (int k = 0; k < 3; k++)
            check(!paths[k] || paths[k][0] == '/', "paths resolved against the base directory");
        check(ls_config_find(&cfg, m->id) != NULL, "every model found by its id");
    }
    ls_config_free(&cfg);
    return 0;
}
