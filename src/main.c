/* main.c - lipsyncd: parse arguments, load the config, start the service
 * and the transport, run housekeeping, and stop cleanly on SIGINT/SIGTERM.
 *
 * Threads: main (signals + housekeeping ticks), the transport's
 * completion-queue thread and workers, a preload thread at start-up, and
 * ONNX Runtime's global pools. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <grpc/grpc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "engine.h"
#include "evict.h"
#include "http.h"
#include "log.h"
#include "mel.h"
#include "metrics.h"
#include "model.h"
#include "pool.h"
#include "service.h"
#include "transport.h"

#ifndef LS_DEMO_CONFIG
#define LS_DEMO_CONFIG "demo/demo.yaml"
#endif

static void usage(FILE *f) {
    fprintf(f,
            "usage: lipsyncd [--config FILE] [--listen HOST:PORT] [--log-level debug|info|warn|error]\n"
            "                [--log-format text|json] [--grace SECONDS] [--http-listen HOST:PORT]\n"
            "                [--unready-grace SECONDS] [--config-doc]\n"
            "Serves ONNX lip-sync models over gRPC (service multitenant.MultiTenantLipSync), and over\n"
            "HTTP: gRPC-Web, /metrics, /healthz, /readyz and a demo page (--http-listen enables it).\n"
            "Without --config it serves the built-in demo avatar (%s).\n"
            "--config-doc prints every config key with its default and form, and exits.\n",
            LS_DEMO_CONFIG);
}

/* Whole file as a NUL-terminated string (PEM), or NULL with a message. */
static char *read_text(const char *path) {
    ls_buf b = {0};
    int rc = ls_read_file(path, &b, 16u << 20);
    if (rc == 0 && ls_buf_append(&b, "", 1) != 0) rc = ENOMEM;
    if (rc != 0) {
        LOG_ERROR("cannot read %s: %s", path, strerror(rc));
        ls_buf_free(&b);
        return NULL;
    }
    return (char *)b.data;
}

/* What the HTTP endpoints read. The transports are stopped while the HTTP
 * listener may still be answering, so their pointers are read and cleared
 * under the lock. */
typedef struct {
    ls_service *svc;
    pthread_mutex_t lock;
    ls_transport *tr;
    ls_http *http;
} endpoints_ctx;

/* GET /speech.wav: http.speech_wav (the demo page's speech), read per request
 * (a few hundred KB, fetched once per page load). ctx: the path. */
static int ep_speech(void *ctx, ls_buf *body, const char **ct) {
    FILE *f = fopen(ctx, "rb");
    if (!f) return 404;
    char chunk[65536];
    size_t n;
    int rc = 200;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (ls_buf_append(body, chunk, n) != 0) {
            rc = 500;
            break;
        }
    if (ferror(f)) rc = 500;
    fclose(f);
    *ct = "audio/wav";
    return rc;
}

static int ep_healthz(void *ctx, ls_buf *body, const char **ct) {
    (void)ctx;
    (void)ct;
    return ls_buf_append(body, "ok\n", 3) == 0 ? 200 : 500;
}

static int ep_readyz(void *ctx, ls_buf *body, const char **ct) {
    (void)ct;
    endpoints_ctx *e = ctx;
    int ready = ls_service_ready(e->svc);
    const char *text = ready ? "ready\n" : "not ready\n";
    if (ls_buf_append(body, text, strlen(text)) != 0) return 500;
    return ready ? 200 : 503;
}

static int ep_metrics(void *ctx, ls_buf *body, const char **ct) {
    endpoints_ctx *e = ctx;
    pthread_mutex_lock(&e->lock);
    int depth = (e->tr ? ls_transport_queue_depth(e->tr) : 0) + ls_http_queue_depth(e->http);
    pthread_mutex_unlock(&e->lock);
    ls_err err;
    if (ls_service_metrics(e->svc, depth, body, &err) != 0) {
        body->len = 0;
        ls_buf_append(body, err.msg, strlen(err.msg));
        return 500;
    }
    *ct = LS_METRICS_CONTENT_TYPE;
    return 200;
}

/* SIGTERM behind a load balancer: /readyz (and grpc.health.v1) already say
 * "not ready", but both ports keep serving for grace_s seconds, so that the
 * balancer's health checks (fall x inter) take this instance out of its pool
 * before it refuses anything; only then do new calls get refused and the
 * drain begins. A second SIGINT/SIGTERM cuts the wait short. */
static void unready_grace(const sigset_t *sigs, double grace_s) {
    if (grace_s <= 0) return;
    LOG_INFO("not ready; still serving for %.1f s (server.unready_grace_seconds) before draining", grace_s);
    uint64_t end = ls_mono_ns() + (uint64_t)(grace_s * 1e9);
    for (uint64_t now; (now = ls_mono_ns()) < end;) {
        uint64_t left = end - now;
        struct timespec ts = {.tv_sec = (time_t)(left / 1000000000u), .tv_nsec = (long)(left % 1000000000u)};
        int sig = sigtimedwait(sigs, NULL, &ts);
        if (sig == SIGINT || sig == SIGTERM) {
            LOG_INFO("received %s again, draining now", sig == SIGINT ? "SIGINT" : "SIGTERM");
            return;
        }
    }
}

static void *preload_main(void *arg) {
    ls_service_preload(arg);
    return NULL;
}

/* What main owns from start to stop. */
typedef struct {
    const char *config_path, *listen, *http_listen; /* the command line's */
    double grace;              /* --grace, else server.drain_seconds */
    double unready;            /* --unready-grace, or -1 */
    ls_config cfg;             /* the config at start-up (reloads go to the service) */
    sigset_t sigs;             /* taken by sigtimedwait in the main thread only */
    ls_service *svc;
    char *tls_cert, *tls_key, *tls_ca;
    ls_transport *tr;
    ls_http *http;
    endpoints_ctx ectx;
    /* Not copied by the listener: lives as long as the server. The last,
     * /speech.wav, only with http.speech_wav set. */
    ls_http_endpoint endpoints[4];
    pthread_t preload;
    int preload_started;
} server;

/* Command line into srv. -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, server *srv) {
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'}, {"listen", required_argument, 0, 'l'},
        {"log-level", required_argument, 0, 'v'}, {"grace", required_argument, 0, 'g'},
        {"log-format", required_argument, 0, 'f'},
        {"http-listen", required_argument, 0, 'H'},
        {"unready-grace", required_argument, 0, 'U'},
        {"config-doc", no_argument, 0, 'D'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "c:l:v:g:f:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'f':
            if (!strcmp(optarg, "json")) ls_log_set_json(1);
            else if (strcmp(optarg, "text") != 0) {
                fprintf(stderr, "lipsyncd: --log-format: expected text or json, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'c': srv->config_path = optarg; break;
        case 'l': srv->listen = optarg; break;
        case 'H': srv->http_listen = optarg; break;
        case 'g': srv->grace = atof(optarg); break;
        case 'U': srv->unready = atof(optarg); break;
        case 'v':
            if (!strcmp(optarg, "debug")) ls_log_set_level(LS_LOG_DEBUG);
            else if (!strcmp(optarg, "info")) ls_log_set_level(LS_LOG_INFO);
            else if (!strcmp(optarg, "warn")) ls_log_set_level(LS_LOG_WARN);
            else if (!strcmp(optarg, "error")) ls_log_set_level(LS_LOG_ERROR);
            else {
                fprintf(stderr, "lipsyncd: --log-level: expected debug, info, warn or error, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        case 'D': ls_config_doc(stdout, ""); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "lipsyncd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    return -1;
}

/* The config file (or the built-in demo's), with the command line's
 * overrides. 0, or the exit status. */
static int load_config(server *srv) {
    if (!srv->config_path) {
        srv->config_path = LS_DEMO_CONFIG;
        if (access(srv->config_path, R_OK) != 0) {
            fprintf(stderr, "lipsyncd: no --config given and the built-in demo config %s is missing (%s);\n"
                            "build the project first (cmake --build builds the demo avatar)\n",
                    srv->config_path, strerror(errno));
            return 1;
        }
    }
    ls_config *cfg = &srv->cfg;
    ls_err err;
    if (ls_config_load_file(srv->config_path, cfg, &err) != 0) {
        fprintf(stderr, "lipsyncd: %s\n", err.msg);
        return 1;
    }
    if (srv->grace < 0) srv->grace = cfg->drain_seconds;
    if (srv->unready >= 0) cfg->unready_grace_seconds = srv->unready; /* one shared config, set per deployment */
    if (srv->listen) {
        char *l = strdup(srv->listen);
        if (!l) return 1;
        free(cfg->listen);
        cfg->listen = l;
    }
    if (srv->http_listen) { /* overrides http.listen and turns the listener on */
        char *l = strdup(srv->http_listen);
        if (!l) return 1;
        free(cfg->http_listen);
        cfg->http_listen = l;
        cfg->http_enabled = 1;
    }
    return 0;
}

/* The gRPC port: the service's method tables, TLS when configured. */
static int start_transport(server *srv, ls_err *err) {
    const ls_config *cfg = &srv->cfg;
    size_t n_methods, n_streams;
    const ls_method *methods = ls_service_methods(&n_methods);
    const ls_stream_method *streams = ls_service_stream_methods(&n_streams);
    ls_transport_opts topts = {.listen = cfg->listen,
                               .max_message_bytes = cfg->max_message_bytes,
                               .workers = cfg->worker_threads,
                               .max_queue = cfg->max_queue,
                               .methods = methods,
                               .n_methods = n_methods,
                               .streams = streams,
                               .n_streams = n_streams,
                               /* Live sessions are streams; Watch and reflection get 32 beside them. */
                               .max_streams = cfg->sessions_max + 32,
                               .ctx = srv->svc,
                               .keepalive_ms = (int)(cfg->keepalive_seconds * 1000),
                               .keepalive_timeout_ms = (int)(cfg->keepalive_timeout_seconds * 1000),
                               .max_connection_idle_ms = (int)(cfg->max_connection_idle_seconds * 1000)};
    if (cfg->tls_cert_file) {
        srv->tls_cert = read_text(cfg->tls_cert_file);
        srv->tls_key = read_text(cfg->tls_key_file);
        srv->tls_ca = cfg->tls_client_ca_file ? read_text(cfg->tls_client_ca_file) : NULL;
        if (!srv->tls_cert || !srv->tls_key || (cfg->tls_client_ca_file && !srv->tls_ca)) return -1;
        topts.tls_cert_pem = srv->tls_cert;
        topts.tls_key_pem = srv->tls_key;
        topts.tls_client_ca_pem = srv->tls_ca;
    }
    srv->tr = ls_transport_start(&topts, err);
    if (!srv->tr) {
        LOG_ERROR("%s", err->msg);
        return -1;
    }
    LOG_INFO("lipsyncd listening on %s (port %d): %zu models configured, capacity %d models / %.1f GiB, "
             "policy %s, %d workers, max batch %d, max message %llu MiB, config %s",
             cfg->listen, ls_transport_port(srv->tr), cfg->n_models, cfg->max_models,
             (double)cfg->max_memory_bytes / (1024.0 * 1024 * 1024), ls_policy_name(cfg->policy),
             cfg->worker_threads, cfg->max_batch, (unsigned long long)(cfg->max_message_bytes >> 20),
             srv->config_path);
    return 0;
}

/* The HTTP port, when enabled: gRPC-Web on the same methods, the endpoints,
 * the demo page and the WebSocket session. */
static int start_http(server *srv, ls_err *err) {
    const ls_config *cfg = &srv->cfg;
    endpoints_ctx *e = &srv->ectx;
    srv->endpoints[0] = (ls_http_endpoint){"/healthz", ep_healthz, e};
    srv->endpoints[1] = (ls_http_endpoint){"/readyz", ep_readyz, e};
    srv->endpoints[2] = (ls_http_endpoint){"/metrics", ep_metrics, e};
    srv->endpoints[3] = (ls_http_endpoint){"/speech.wav", ep_speech, cfg->speech_wav};
    size_t n_endpoints = sizeof srv->endpoints / sizeof srv->endpoints[0] - (cfg->speech_wav ? 0 : 1);
    if (!cfg->http_enabled) return 0;
    e->svc = srv->svc;
    pthread_mutex_lock(&e->lock);
    e->tr = srv->tr;
    pthread_mutex_unlock(&e->lock);
    size_t n_methods;
    ls_http_opts hopts = {.listen = cfg->http_listen,
                          .max_message_bytes = cfg->max_message_bytes,
                          .max_concurrent_calls = cfg->worker_threads,
                          .methods = ls_service_methods(&n_methods),
                          .n_methods = n_methods,
                          .ctx = srv->svc,
                          .endpoints = srv->endpoints,
                          .n_endpoints = n_endpoints,
                          .cors_origins = (const char *const *)cfg->cors_origins,
                          .n_cors_origins = cfg->n_cors_origins,
                          .web_root = cfg->web_root,
                          /* The WebSocket carries the same StreamSession handler. */
                          .ws_session = ls_service_session_method(),
                          .ws_ping_ms = (int)(cfg->http_ws_ping_seconds * 1000)};
    ls_http *h = ls_http_start(&hopts, err);
    if (!h) {
        LOG_ERROR("%s", err->msg);
        return -1;
    }
    pthread_mutex_lock(&e->lock);
    e->http = srv->http = h;
    pthread_mutex_unlock(&e->lock);
    LOG_INFO("http listening on %s (port %d): demo page /, /metrics, /healthz, /readyz, gRPC-Web, "
             "WebSocket /session; "
             "CORS origins: %zu, web root %s",
             cfg->http_listen, ls_http_port(srv->http), cfg->n_cors_origins, cfg->web_root);
    return 0;
}

/* Runtimes (gRPC, ONNX Runtime, mel, frame pool) -> service -> gRPC port ->
 * HTTP port -> preloads (on their own thread). 0, or -1 with the reason
 * logged; server_stop undoes whatever was started either way. */
static int server_start(server *srv) {
    const ls_config *cfg = &srv->cfg;
    ls_err err;
    srv->ectx = (endpoints_ctx){.svc = NULL};
    pthread_mutex_init(&srv->ectx.lock, NULL);
    grpc_init();
    if (ls_engine_global_init(cfg->ort_intra_threads, cfg->ort_inter_threads, &err) != 0) {
        LOG_ERROR("%s", err.msg);
        return -1;
    }
    /* engine.execution_provider is every model's: a build that cannot give
     * it is a start-up error, not a server whose every model fails. (A
     * model's own override fails that model only, at its load.) */
    ls_engine_opts eo = ls_service_engine_opts(cfg, cfg->execution_provider);
    if (ls_engine_provider_check(&eo, &err) != 0) {
        LOG_ERROR("%s: engine.execution_provider %s: %s", cfg->source, ls_engine_provider_name(eo.provider), err.msg);
        return -1;
    }
    if (ls_mel_init(&err) != 0) {
        LOG_ERROR("%s", err.msg);
        return -1;
    }
    if (ls_pool_start(0) != 0) {
        LOG_ERROR("cannot start the frame thread pool");
        return -1;
    }
    srv->svc = ls_service_create(cfg, &err);
    if (!srv->svc) {
        LOG_ERROR("%s", err.msg);
        return -1;
    }
    if (start_transport(srv, &err) != 0 || start_http(srv, &err) != 0) return -1;
    srv->preload_started = pthread_create(&srv->preload, NULL, preload_main, srv->svc) == 0;
    if (!srv->preload_started) ls_service_preload(srv->svc);
    return 0;
}

/* SIGHUP: load the config file again and hand it to the service, which
 * takes ownership on success (ls_service_reload: it keeps every config it
 * was given until ls_service_destroy, since unchanged models' loader
 * contexts and requests in flight still point into older ones). On any
 * failure the new config is freed here and the old one stays. */
static void reload_config(server *srv) {
    ls_config *next = malloc(sizeof *next);
    ls_err rerr;
    if (!next) {
        LOG_ERROR("config reload: out of memory");
    } else if (ls_config_load_file(srv->config_path, next, &rerr) != 0) {
        LOG_ERROR("config reload failed, keeping the old config: %s", rerr.msg);
        free(next);
    } else if (srv->listen && (free(next->listen), !(next->listen = strdup(srv->listen)))) {
        LOG_ERROR("config reload: out of memory");
        ls_config_free(next);
        free(next);
    } else if (ls_service_reload(srv->svc, next, &rerr) != 0) {
        LOG_ERROR("config reload failed, keeping the old config: %s", rerr.msg);
        ls_config_free(next);
        free(next);
    }
}

/* Housekeeping until SIGINT/SIGTERM: wake at least once a second for idle
 * sweeps and reports; SIGHUP reloads the config. */
static void server_run(server *srv) {
    const ls_config *cfg = &srv->cfg;
    for (;;) {
        /* Every second, or as often as the shortest configured interval. */
        double tick = cfg->idle_check_seconds < 1.0 ? cfg->idle_check_seconds : 1.0;
        if (cfg->stats_report_seconds < tick) tick = cfg->stats_report_seconds;
        struct timespec ts = {.tv_sec = (time_t)tick, .tv_nsec = (long)((tick - (double)(time_t)tick) * 1e9)};
        int sig = sigtimedwait(&srv->sigs, NULL, &ts);
        if (sig == SIGHUP) {
            reload_config(srv);
            continue;
        }
        if (sig == SIGINT || sig == SIGTERM) {
            LOG_INFO("received %s, draining (grace %.0f s)", sig == SIGINT ? "SIGINT" : "SIGTERM", srv->grace);
            break;
        }
        ls_service_tick(srv->svc, ls_mono_ns());
    }
}

/* The orderly stop after a signal: /readyz says 503 and new gRPC-Web calls
 * are refused while the gRPC calls in flight finish; the HTTP listener
 * stops last. */
static void server_drain(server *srv) {
    if (srv->preload_started) pthread_join(srv->preload, NULL);
    ls_service_drain(srv->svc);
    unready_grace(&srv->sigs, srv->cfg.unready_grace_seconds);
    ls_http_drain(srv->http);
    pthread_mutex_lock(&srv->ectx.lock);
    srv->ectx.tr = NULL;
    pthread_mutex_unlock(&srv->ectx.lock);
    ls_transport_stop(srv->tr, srv->grace);
    srv->tr = NULL;
    ls_http_stop(srv->http);
    srv->http = NULL;
    ls_service_report(srv->svc);
}

/* Free whatever server_start started (after server_drain, or after a
 * failed start), in reverse order. */
static void server_stop(server *srv) {
    ls_http_stop(srv->http); /* before the transport: its /metrics reads the transport's queue */
    ls_transport_stop(srv->tr, 0);
    pthread_mutex_destroy(&srv->ectx.lock);
    ls_service_destroy(srv->svc);
    ls_pool_stop();
    ls_mel_cleanup();
    ls_engine_global_shutdown();
    grpc_shutdown();
    ls_config_free(&srv->cfg);
    free(srv->tls_cert);
    free(srv->tls_key);
    free(srv->tls_ca);
    LOG_INFO("lipsyncd stopped");
}

/* parse -> load config -> block signals -> start -> run -> drain -> stop. */
int main(int argc, char **argv) {
    server srv = {.grace = -1, .unready = -1};
    int rc = parse_args(argc, argv, &srv);
    if (rc >= 0) return rc;
    if ((rc = load_config(&srv)) != 0) return rc;

    /* Requests allocate tens of MB (tensors, predictions, PNGs) and free them
     * again. Served by mmap, every such buffer is faulted in page by page on
     * each request (measured: a third of a batch-32 request's CPU time); from
     * the heap they are reused. Big blocks stay on the heap up to the largest
     * threshold glibc allows. The trim threshold is left to glibc: raising it
     * kept the per-thread heaps from ever shrinking, and unloaded models'
     * memory did not come back (test_memory.py).
     *
     * Measured again with the compact tensor encodings (demo model, batch 5,
     * `lipsync bench`, 100 requests): M_TRIM_THRESHOLD 64 or 256 MiB takes the
     * remaining page faults (gRPC's receive buffers: 66-75% of them are in
     * the kernel's copy into those) from ~2000 to 0-11 per f32 request and
     * from ~850 to 0 per u8 request, overhead 9.7-10.5 -> 7.8-8.2 ms (f32)
     * and 4.3-4.4 -> 3.6-4.1 ms (u8). Still not kept: malloc_trim(0) does
     * not shrink the top of the per-thread arenas, so each keeps up to the
     * threshold after an unload, and test_memory.py failed 2 runs of 5. */
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);

    /* Signals are taken synchronously by the main thread; every other thread
     * inherits the blocked mask, so none of them is interrupted. */
    sigemptyset(&srv.sigs);
    sigaddset(&srv.sigs, SIGINT);
    sigaddset(&srv.sigs, SIGTERM);
    sigaddset(&srv.sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &srv.sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    rc = 1;
    if (server_start(&srv) == 0) {
        server_run(&srv);
        server_drain(&srv);
        rc = 0;
    }
    server_stop(&srv);
    return rc;
}
