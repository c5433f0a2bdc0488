/* fuzz_svc.h - the service the two service fuzz targets drive (included by
 * fuzz_service.c and fuzz_infer.c only; everything here is static).
 *
 * One ls_service per process, built in LLVMFuzzerInitialize from a config
 * written here: models whose files do not exist (loads fail at once with
 * FAILED_PRECONDITION), one whose estimate exceeds the memory limit
 * (RESOURCE_EXHAUSTED), and, when the demo avatar exists (LS_DEMO_DIR or the
 * build tree's demo/), three demo models sharing one ONNX file plus one whose
 * crop rects are missing, with room for only two loaded at once so loads,
 * evictions and the shared engine cache are exercised too. Handlers are
 * called exactly as the transport calls them, through ls_service_methods(). */
#ifndef LS_FUZZ_SVC_H
#define LS_FUZZ_SVC_H

#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "engine.h"
#include "log.h"
#include "multitenant.pb-c.h"
#include "service.h"
#include "wire.h"

#ifndef LS_FUZZ_DEMO_DIR
#define LS_FUZZ_DEMO_DIR ""
#endif

enum { M_INFER = 0, M_LIST, M_STATS, M_LOAD, M_UNLOAD, M_HEALTH, M_COUNT };

static ls_config fz_cfg;
static ls_service *fz_svc;
static const ls_method *fz_methods[M_COUNT];
static int fz_have_demo;
static atomic_int fz_cancelled;

static void fz_check(int ok, const char *what, ls_code code, const char *msg) {
    if (!ok) {
        fprintf(stderr, "fuzz: invariant broken: %s (code %s, message \"%s\")\n", what, ls_code_name(code),
                msg ? msg : "");
        abort();
    }
}

static const char *fz_demo_dir(void) {
    const char *d = getenv("LS_DEMO_DIR");
    if (!d || !*d) d = LS_FUZZ_DEMO_DIR;
    static char probe[4096];
    snprintf(probe, sizeof probe, "%s/demo.yaml", d);
    return *d && access(probe, R_OK) == 0 ? d : NULL;
}

static void fz_setup(void) {
    /* Every failed request logs a warning; thousands a second drown the
     * fuzzer's own output. */
    ls_log_set_level(LS_LOG_ERROR);
    ls_err err = {.code = LS_OK, .msg = ""};
    if (ls_engine_global_init(1, 1, &err) != 0) {
        fprintf(stderr, "fuzz: %s\n", err.msg);
        abort();
    }
    const char *demo = fz_demo_dir();
    fz_have_demo = demo != NULL;
    static char yaml[8192];
    int n = snprintf(yaml, sizeof yaml,
                     "server:\n"
                     "  max_batch: 4\n"
                     "  png_level: 1\n"
                     "capacity:\n"
                     "  max_models: 2\n"
                     "  max_memory_gb: 1\n"
                     "  load_retry_seconds: 0\n"
                     /* Requests switch models every call: no churn guard, or a
                      * full capacity of just-loaded models would refuse them. */
                     "  min_residency_seconds: 0\n"
                     "models:\n"
                     "  missing:\n"
                     "    model_path: /nonexistent-lipsyncd-fuzz/m.onnx\n"
                     "    background_dir: /nonexistent-lipsyncd-fuzz/frames\n"
                     "    crop_rects_path: /nonexistent-lipsyncd-fuzz/rects.json\n"
                     "  huge:\n"
                     "    model_path: /nonexistent-lipsyncd-fuzz/h.onnx\n"
                     "    background_dir: /nonexistent-lipsyncd-fuzz/frames\n"
                     "    crop_rects_path: /nonexistent-lipsyncd-fuzz/rects.json\n"
                     "    memory_estimate_mb: 100000\n");
    if (demo)
        n += snprintf(yaml + n, sizeof yaml - (size_t)n,
                      "  demo:\n"
                      "    model_path: %1$s/models/demo.onnx\n"
                      "    background_dir: %1$s/avatar/frames\n"
                      "    crop_rects_path: %1$s/avatar/crop_rects.json\n"
                      "    num_frames: 3\n"
                      "    memory_estimate_mb: 64\n"
                      "  demo_pp:\n"
                      "    model_path: %1$s/models/demo.onnx\n"
                      "    background_dir: %1$s/avatar/frames\n"
                      "    crop_rects_path: %1$s/avatar/crop_rects_list.json\n"
                      "    num_frames: 4\n"
                      "    frame_order: pingpong\n"
                      "    channel_order: rgb\n"
                      "    paste_margin: 0\n"
                      "    memory_estimate_mb: 64\n"
                      "  demo_b1:\n"
                      "    model_path: %1$s/models/demo_b1.onnx\n"
                      "    background_dir: %1$s/avatar/frames\n"
                      "    crop_rects_path: %1$s/avatar/crop_rects.json\n"
                      "    num_frames: 2\n"
                      "    memory_estimate_mb: 64\n"
                      "  no_rects:\n"
                      "    model_path: %1$s/models/demo.onnx\n"
                      "    background_dir: %1$s/avatar/frames\n"
                      "    crop_rects_path: /nonexistent-lipsyncd-fuzz/rects.json\n",
                      demo);
    if (n <= 0 || (size_t)n >= sizeof yaml) {
        fprintf(stderr, "fuzz: config text too long\n");
        abort();
    }
    if (ls_config_parse(yaml, (size_t)n, "<fuzz>", "/", &fz_cfg, &err) != 0 ||
        !(fz_svc = ls_service_create(&fz_cfg, &err))) {
        fprintf(stderr, "fuzz: %s\n", err.msg);
        abort();
    }
    size_t nm = 0;
    const ls_method *all = ls_service_methods(&nm);
    static const char *const names[M_COUNT] = {"InferBatchComposite", "ListModels", "GetModelStats",
                                               "LoadModel",           "UnloadModel", "Health"};
    for (int i = 0; i < M_COUNT; i++)
        for (size_t k = 0; k < nm; k++) {
            const char *slash = strrchr(all[k].path, '/');
            if (slash && !strcmp(slash + 1, names[i])) fz_methods[i] = &all[k];
        }
    for (int i = 0; i < M_COUNT; i++)
        if (!fz_methods[i]) {
            fprintf(stderr, "fuzz: the service has no method %s\n", names[i]);
            abort();
        }
    fprintf(stderr, "fuzz: service with %zu models (demo avatar: %s)\n", fz_cfg.n_models,
            demo ? demo : "not found, set LS_DEMO_DIR");
}

/* FNV-1a of the fuzzer's input: where to cut requests into spans. */
static unsigned fz_hash(const uint8_t *d, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ d[i]) * 16777619u;
    return h;
}

/* Call method m with the request bytes; check what every handler promises:
 * a status the API documents, a message with every error, a response body
 * that is valid protobuf. A method with a span handler (the gRPC
 * transport's zero-copy path) is called through it, the request cut into
 * three spans at places split_seed picks, and its reply pieces joined.
 * Returns the code; *resp is the caller's to free. */
static ls_code fz_call(int m, const uint8_t *req, size_t len, unsigned split_seed, ls_buf *resp) {
    ls_call_info info = {.method = fz_methods[m]->path, .received_mono_ns = ls_mono_ns(),
                         .cancelled = &fz_cancelled};
    ls_err err = {.code = LS_OK, .msg = ""};
    ls_code code;
    if (fz_methods[m]->fn_spans) {
        size_t a = (size_t)((uint64_t)len * (split_seed & 0xffff) / 0xffff);
        size_t b = (size_t)((uint64_t)len * (split_seed >> 16) / 0xffff);
        if (a > b) {
            size_t t = a;
            a = b;
            b = t;
        }
        ls_span spans[3] = {{req, a}, {req + a, b - a}, {req + b, len - b}};
        ls_reply reply = {0};
        code = fz_methods[m]->fn_spans(fz_svc, &info, spans, 3, &reply, &err);
        fz_check(ls_buf_reserve(resp, ls_reply_len(&reply) + 1) == 0, "memory", code, err.msg);
        for (size_t i = 0; i < reply.n; i++) ls_buf_append(resp, reply.pieces[i].data, reply.pieces[i].len);
        ls_reply_free(&reply);
    } else {
        code = fz_methods[m]->fn(fz_svc, &info, req, len, resp, &err);
    }
    switch (code) {
    case LS_OK:
    case LS_INVALID_ARGUMENT:
    case LS_NOT_FOUND:
    case LS_FAILED_PRECONDITION:
    case LS_RESOURCE_EXHAUSTED:
    case LS_UNAVAILABLE:
        break;
    default:
        fz_check(0, "a documented status", code, err.msg);
    }
    if (code != LS_OK) {
        fz_check(err.msg[0] != 0, "a message with every error", code, err.msg);
        /* Messages go into the log and the gRPC status: no line breaks or
         * other control characters, whatever the client sent. */
        for (const char *c = err.msg; *c; c++)
            fz_check((unsigned char)*c >= 0x20 && *c != 0x7f, "no control characters in the message", code,
                     err.msg);
    }
    fz_check(resp->len == 0 || resp->data != NULL, "response bytes", code, err.msg);
    /* Every method's response is a message with at least one field of its
     * own; protobuf-c must read back what the service packed. */
    ProtobufCMessage *back = NULL;
    const ProtobufCMessageDescriptor *d[M_COUNT] = {
        &multitenant__composite_batch_response__descriptor, &multitenant__list_models_response__descriptor,
        &multitenant__get_model_stats_response__descriptor, &multitenant__load_model_response__descriptor,
        &multitenant__unload_model_response__descriptor,    &multitenant__health_response__descriptor};
    back = protobuf_c_message_unpack(d[m], NULL, resp->len, resp->data);
    fz_check(back != NULL, "a response body that is valid protobuf", code, err.msg);
    protobuf_c_message_free_unpacked(back, NULL);
    return code;
}

#endif
