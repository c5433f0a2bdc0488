/* lipsync.c - command-line client for lipsyncd.
 *
 *   lipsync [--server HOST:PORT] [--timeout SECONDS] COMMAND [ARGS]
 *
 * Speaks the MultiTenantLipSync gRPC API (proto/multitenant.proto) through
 * the gRPC C core and protobuf-c. Every RPC is unary, so one helper
 * (rpc_call) runs a call as a single batch of six ops on its own pluck
 * completion queue; the commands only build requests and print responses.
 *
 * Exit status: 0 ok, 1 RPC or local I/O error, 2 usage error. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "common.h"
#include "audio.h"
#include "mp4.h"
#include "multitenant.pb-c.h"

#define DEFAULT_SERVER "127.0.0.1:50053"
#define DEFAULT_TIMEOUT_S 60.0

/* Tensor geometry of the wire API: NCHW visual frames and one audio window
 * per frame. */
#define VISUAL_C 6
#define VISUAL_HW 320
#define VISUAL_PER_FRAME ((size_t)VISUAL_C * VISUAL_HW * VISUAL_HW)
#define AUDIO_C 32
#define AUDIO_H 16
#define AUDIO_W 16
#define AUDIO_PER_FRAME ((size_t)AUDIO_C * AUDIO_H * AUDIO_W)

#define SERVICE "/multitenant.MultiTenantLipSync/"

enum { EXIT_OK = 0, EXIT_RPC = 1, EXIT_USAGE = 2 };

/* ------------------------------------------------------------------------ */
/* gRPC plumbing                                                             */

/* Outcome of one call. Details are truncated into a fixed buffer so a status
 * can be stored and copied without owning memory. */
typedef struct {
    grpc_status_code code;
    char details[512];
} rpc_status;

#define N_STATUS_CODES 17 /* gRPC status codes 0..16 (ls_status_name) */

static void status_set(rpc_status *st, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void status_set(rpc_status *st, grpc_status_code code, const char *fmt, ...) {
    st->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->details, sizeof st->details, fmt, ap);
    va_end(ap);
}

/* Print the failed status the way scripts expect and return the exit code. */
static int report_status(const rpc_status *st) {
    fprintf(stderr, "error: %s: %s\n", ls_status_name(st->code), st->details);
    return EXIT_RPC;
}

/* Set by `bench` before its threads start: calls wait through a channel's
 * (re)connection instead of failing at once with UNAVAILABLE. Seen on
 * loopback: 1 run in ~15 of bench_concurrency.py had all four fresh
 * channels of a round fail their first connect ("failed to connect to all
 * addresses ... No such file or directory") while the server kept serving;
 * a benchmark should measure the server, not one lost connect. Reconnects
 * then start after 100 ms instead of gRPC's default 1 s. The other commands
 * keep failing fast. */
static bool g_wait_for_ready;

/* Message limits are lifted on the client (batch 10 requests are ~25 MB);
 * the server enforces its own. `private_connection` gives the channel its own
 * subchannel pool: without it, channels with equal target and arguments share
 * one TCP connection through gRPC's global pool, and "one channel per thread"
 * would measure nothing. */
static grpc_channel *channel_open(const char *target, bool private_connection) {
    grpc_arg args[5];
    size_t n = 0;
    args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                           .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                           .value.integer = -1};
    args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                           .key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
                           .value.integer = -1};
    if (private_connection)
        args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                               .key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
                               .value.integer = 1};
    if (g_wait_for_ready) {
        args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                               .key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                               .value.integer = 100};
        args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                               .key = GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
                               .value.integer = 100};
    }
    grpc_channel_args channel_args = {.num_args = n, .args = args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    /* Never NULL: a bad target yields a channel whose calls fail. */
    grpc_channel *ch = grpc_channel_create(target, creds, &channel_args);
    grpc_channel_credentials_release(creds);
    return ch;
}

/* Serialize a message straight into a refcounted gRPC slice: one allocation,
 * no intermediate buffer, and the slice can back any number of calls. */
static grpc_slice pack_to_slice(const ProtobufCMessage *msg) {
    size_t len = protobuf_c_message_get_packed_size(msg);
    grpc_slice s = grpc_slice_malloc(len);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    return s;
}

/* One unary call. The request is the concatenation of `req` slices (borrowed:
 * the byte buffer takes its own references). model_id (NULL or "" = none)
 * also travels as x-model-id metadata: a load balancer in front of several
 * servers routes by it, since it cannot read the body (docs/SCALING.md).
 * Returns 0 with *resp holding the serialized response (caller unrefs), or
 * -1 with *st describing the failure; st->code is set in both cases. */
static int rpc_call(grpc_channel *ch, const char *method, const char *model_id, grpc_slice *req,
                    size_t n_req, double timeout_s, grpc_slice *resp, rpc_status *st) {
    *resp = grpc_empty_slice();
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline = gpr_time_add(
        gpr_now(GPR_CLOCK_MONOTONIC),
        gpr_time_from_micros((int64_t)(timeout_s * 1e6), GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               grpc_slice_from_static_string(method),
                                               NULL, deadline, NULL);

    grpc_byte_buffer *send_bb = grpc_raw_byte_buffer_create(req, n_req);
    grpc_byte_buffer *recv_bb = NULL;
    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();

    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    grpc_metadata md = {.key = grpc_slice_from_static_string("x-model-id"),
                        .value = grpc_slice_from_static_string(model_id ? model_id : "")};
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = g_wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
    if (model_id && *model_id) {
        ops[0].data.send_initial_metadata.count = 1;
        ops[0].data.send_initial_metadata.metadata = &md;
    }
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[5].data.recv_status_on_client.status = &code;
    ops[5].data.recv_status_on_client.status_details = &details;

    int rc = -1;
    void *tag = ops; /* any unique address identifies the batch */
    grpc_call_error ce = grpc_call_start_batch(call, ops, 6, tag, NULL);
    if (ce != GRPC_CALL_OK) {
        status_set(st, GRPC_STATUS_INTERNAL, "grpc_call_start_batch: %s",
                   grpc_call_error_to_string(ce));
    } else {
        /* The call's own deadline bounds the wait; a batch holding
         * RECV_STATUS_ON_CLIENT always completes, successfully. */
        grpc_event ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type != GRPC_OP_COMPLETE || !ev.success) {
            status_set(st, GRPC_STATUS_INTERNAL, "call batch did not complete");
        } else if (code != GRPC_STATUS_OK) {
            status_set(st, code, "%.*s", (int)GRPC_SLICE_LENGTH(details),
                       (const char *)GRPC_SLICE_START_PTR(details));
        } else if (!recv_bb) {
            status_set(st, GRPC_STATUS_INTERNAL, "server sent OK without a response message");
        } else {
            grpc_byte_buffer_reader reader;
            if (!grpc_byte_buffer_reader_init(&reader, recv_bb)) {
                status_set(st, GRPC_STATUS_INTERNAL, "cannot read response (compressed?)");
            } else {
                /* Joins the received slices (a copy only when there are
                 * several) so protobuf-c can parse one contiguous span. */
                *resp = grpc_byte_buffer_reader_readall(&reader);
                grpc_byte_buffer_reader_destroy(&reader);
                st->code = GRPC_STATUS_OK;
                st->details[0] = '\0';
                rc = 0;
            }
        }
    }

    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    if (recv_bb) grpc_byte_buffer_destroy(recv_bb);
    grpc_byte_buffer_destroy(send_bb);
    grpc_call_unref(call);
    /* The only batch has been plucked, so the queue is empty: shut it down,
     * take its shutdown event, then destroy it. */
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    return rc;
}

/* Pack `req`, call, unpack the response as `resp_desc`. Returns the unpacked
 * message (free with protobuf_c_message_free_unpacked) or NULL with *st. */
static ProtobufCMessage *rpc_message(grpc_channel *ch, double timeout_s, const char *method,
                                     const char *model_id, const ProtobufCMessage *req,
                                     const ProtobufCMessageDescriptor *resp_desc, rpc_status *st) {
    grpc_slice body = pack_to_slice(req);
    grpc_slice resp;
    int rc = rpc_call(ch, method, model_id, &body, 1, timeout_s, &resp, st);
    grpc_slice_unref(body);
    if (rc != 0) return NULL;
    ProtobufCMessage *msg = protobuf_c_message_unpack(resp_desc, NULL, GRPC_SLICE_LENGTH(resp),
                                                      GRPC_SLICE_START_PTR(resp));
    grpc_slice_unref(resp);
    if (!msg) status_set(st, GRPC_STATUS_INTERNAL, "malformed %s from server", resp_desc->name);
    return msg;
}

/* ------------------------------------------------------------------------ */
/* Command-line arguments                                                    */

typedef struct {
    const char *server;
    double timeout_s;
    const char *id; /* positional model id, NULL if absent */
    bool force;
    int batch;
    int start;
    const char *out_dir;
    const char *visual_path; /* --visual FILE: float32 visual tensor */
    const char *wav_path;    /* speak/session --wav FILE */
    bool realtime;           /* session --realtime: pace the audio at real time */
    bool client_visual;      /* --visual client (or FILE): send a visual tensor */
    const char *audio_path;
    const char *format;     /* "", "png", "jpeg" or "raw" */
    const char *dtype;      /* tensor encoding on the wire: "f32", "f16" or "u8" */
    int requests;
    int concurrency;
    int warmup;
    bool channel_per_thread;
} cli_args;

typedef struct {
    grpc_channel *channel;
    const cli_args *args;
} client;

static const char USAGE[] =
    "usage: lipsync [--server HOST:PORT] [--timeout SECONDS] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  list                      models: id, state, loaded, frames, usage, memory, error\n"
    "  stats [ID]                per-model statistics and server totals\n"
    "  load ID [--force]         load a model (--force reloads a loaded one)\n"
    "  unload ID                 unload a model; prints the resulting state\n"
    "  health                    server health; exit 0 only if healthy\n"
    "  infer ID [--batch N] [--start K] [--out DIR] [--visual server|client|FILE.f32]\n"
    "           [--audio FILE.f32] [--format png|jpeg|raw] [--tensor-dtype f32|f16|u8]\n"
    "                            one InferBatchComposite call; writes DIR/frame_NNNNNN.png\n"
    "                            (.jpg for jpeg, .rgb for raw RGB24).\n"
    "                            --visual server (default): audio only, the server builds\n"
    "                            the visual input from the avatar's frames; client: send a\n"
    "                            synthetic visual tensor; FILE: send that one. Audio is\n"
    "                            synthetic unless given. Files are raw little-endian\n"
    "                            float32: visual N*6*320*320, audio N*32*16*16 or\n"
    "                            32*16*16 values (defaults: N=1, K=0, DIR=.)\n"
    "                            --tensor-dtype: how the tensors travel: f32 (default),\n"
    "                            f16 (both as IEEE binary16, 1/2 the bytes) or u8 (visual\n"
    "                            as uint8 = round(v*255), audio as binary16, ~1/4 the bytes)\n"
    "  speak ID --wav FILE.wav [--out DIR|FILE.mp4] [--batch N] [--start K] [--format F]\n"
    "                            RenderSpeech: the server turns the speech into frames\n"
    "                            (N+2 at 25 fps), streamed N per message (default 5);\n"
    "                            writes DIR/frame_NNNNNN.png ... and prints frames/s\n"
    "                            (F: png|jpeg|raw|h264). --out FILE.mp4: asks for h264 and\n"
    "                            writes one MP4 (H.264 + the speech as AAC)\n"
    "  session ID --wav FILE.wav [--realtime] [--out DIR] [--batch N] [--start K] [--format F]\n"
    "                            StreamSession: the WAV (decoded, 16 kHz) in 20 ms chunks\n"
    "                            (paced at real time with --realtime); prints frames, first\n"
    "                            frame latency and frame latency percentiles (receipt minus\n"
    "                            sending the last audio a frame depends on); --out writes them\n"
    "                            (F: png|jpeg|raw|h264; h264: --out names one Annex B file)\n"
    "  bench ID [--batch N] [--requests M] [--concurrency C] [--warmup W] [--format F]\n"
    "           [--tensor-dtype f32|f16|u8] [--visual server|client] [--channel-per-thread]\n"
    "                            M requests over C threads (defaults 5, 50, 1, 2); W warmup\n"
    "                            calls per thread first. Threads share one channel unless\n"
    "                            --channel-per-thread gives each its own connection.\n"
    "                            Its calls wait (up to --timeout) for a connection\n"
    "                            rather than failing at once while it is made.\n"
    "\n"
    "defaults: --server " DEFAULT_SERVER ", --timeout 60\n"
    "exit status: 0 ok, 1 RPC or I/O error, 2 usage error\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
    if (fmt) {
        fputs("lipsync: ", stderr);
        va_list ap;
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs("\n\n", stderr);
    }
    fputs(USAGE, stderr);
    return EXIT_USAGE;
}

/* Strict integer parse: the whole string, within [lo, hi]. */
static int parse_int(const char *opt, const char *s, long lo, long hi, int *out) {
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        usage_error("--%s: expected an integer in [%ld, %ld], got '%s'", opt, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

enum {
    OPT_SERVER = 256, OPT_TIMEOUT, OPT_HELP, OPT_FORCE, OPT_BATCH, OPT_START, OPT_OUT,
    OPT_VISUAL, OPT_AUDIO, OPT_REQUESTS, OPT_CONCURRENCY, OPT_WARMUP, OPT_PER_THREAD, OPT_FORMAT, OPT_DTYPE,
    OPT_WAV, OPT_REALTIME,
};

/* --server/--timeout are accepted after the command too. */
#define COMMON_OPTS                                                     \
    {"server", required_argument, NULL, OPT_SERVER},                    \
    {"timeout", required_argument, NULL, OPT_TIMEOUT},                  \
    {"help", no_argument, NULL, OPT_HELP}

static const struct option OPTS_PLAIN[] = {COMMON_OPTS, {0}};
static const struct option OPTS_LOAD[] = {COMMON_OPTS, {"force", no_argument, NULL, OPT_FORCE}, {0}};
static const struct option OPTS_INFER[] = {
    COMMON_OPTS,
    {"batch", required_argument, NULL, OPT_BATCH},
    {"start", required_argument, NULL, OPT_START},
    {"out", required_argument, NULL, OPT_OUT},
    {"visual", required_argument, NULL, OPT_VISUAL},
    {"audio", required_argument, NULL, OPT_AUDIO},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"tensor-dtype", required_argument, NULL, OPT_DTYPE},
    {0}};
static const struct option OPTS_SPEAK[] = {
    COMMON_OPTS,
    {"wav", required_argument, NULL, OPT_WAV},
    {"out", required_argument, NULL, OPT_OUT},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"start", required_argument, NULL, OPT_START},
    {"format", required_argument, NULL, OPT_FORMAT},
    {0}};
static const struct option OPTS_SESSION[] = {
    COMMON_OPTS,
    {"wav", required_argument, NULL, OPT_WAV},
    {"out", required_argument, NULL, OPT_OUT},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"start", required_argument, NULL, OPT_START},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"realtime", no_argument, NULL, OPT_REALTIME},
    {0}};
static const struct option OPTS_BENCH[] = {
    COMMON_OPTS,
    {"format", required_argument, NULL, OPT_FORMAT},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"requests", required_argument, NULL, OPT_REQUESTS},
    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"channel-per-thread", no_argument, NULL, OPT_PER_THREAD},
    {"tensor-dtype", required_argument, NULL, OPT_DTYPE},
    {"visual", required_argument, NULL, OPT_VISUAL},
    {0}};

/* Apply one option shared by the global and per-command parsers. Returns 0,
 * 1 when --help was asked, or -1 after reporting a usage error. */
static int apply_option(cli_args *a, int opt, const char *optname, const char *val) {
    switch (opt) {
    case OPT_SERVER:
        if (!*val) return usage_error("--server: empty address"), -1;
        a->server = val;
        return 0;
    case OPT_TIMEOUT: {
        char *end;
        errno = 0;
        double t = strtod(val, &end);
        /* Cap at a day so the microsecond deadline cannot overflow. */
        if (errno || end == val || *end || !(t > 0) || t > 86400)
            return usage_error("--timeout: expected seconds in (0, 86400], got '%s'", val), -1;
        a->timeout_s = t;
        return 0;
    }
    case OPT_HELP: fputs(USAGE, stdout); return 1;
    case OPT_FORCE: a->force = true; return 0;
    /* batch_size and start_frame_idx are int32 on the wire. */
    case OPT_BATCH: return parse_int(optname, val, 1, 4096, &a->batch);
    case OPT_START: return parse_int(optname, val, 0, INT32_MAX, &a->start);
    case OPT_OUT: a->out_dir = val; return 0;
    case OPT_VISUAL:
        a->client_visual = strcmp(val, "server") != 0;
        a->visual_path = a->client_visual && strcmp(val, "client") ? val : NULL;
        return 0;
    case OPT_AUDIO: a->audio_path = val; return 0;
    case OPT_WAV: a->wav_path = val; return 0;
    case OPT_REALTIME: a->realtime = true; return 0;
    case OPT_FORMAT:
        /* h264: session and speak; the server refuses it to unary calls. */
        if (strcmp(val, "png") && strcmp(val, "jpeg") && strcmp(val, "raw") && strcmp(val, "h264"))
            return usage_error("--format: expected png, jpeg, raw or h264, got '%s'", val), -1;
        a->format = val;
        return 0;
    case OPT_DTYPE:
        if (strcmp(val, "f32") && strcmp(val, "f16") && strcmp(val, "u8"))
            return usage_error("--tensor-dtype: expected f32, f16 or u8, got '%s'", val), -1;
        a->dtype = val;
        return 0;
    case OPT_REQUESTS: return parse_int(optname, val, 1, 10000000, &a->requests);
    case OPT_CONCURRENCY: return parse_int(optname, val, 1, 1024, &a->concurrency);
    case OPT_WARMUP: return parse_int(optname, val, 0, 1000000, &a->warmup);
    case OPT_PER_THREAD: a->channel_per_thread = true; return 0;
    }
    return usage_error(NULL), -1; /* getopt already named the bad option */
}

static const char *option_name(const struct option *opts, int code) {
    for (; opts->name; opts++)
        if (opts->val == code) return opts->name;
    return "?";
}

/* ------------------------------------------------------------------------ */
/* list, stats, load, unload, health                                         */

static double mib(int64_t bytes) { return (double)bytes / (1024.0 * 1024.0); }

static const char *yes_no(protobuf_c_boolean b) { return b ? "yes" : "no"; }

/* Stats may be absent from a ModelInfo; read through an all-zero default. */
static const Multitenant__ModelStats *stats_of(const Multitenant__ModelInfo *m) {
    static const Multitenant__ModelStats zero = MULTITENANT__MODEL_STATS__INIT;
    return m->stats ? m->stats : &zero;
}

static int cmd_list(const client *c) {
    Multitenant__ListModelsRequest req = MULTITENANT__LIST_MODELS_REQUEST__INIT;
    rpc_status st;
    Multitenant__ListModelsResponse *resp = (Multitenant__ListModelsResponse *)rpc_message(
        c->channel, c->args->timeout_s, SERVICE "ListModels", NULL, &req.base,
        &multitenant__list_models_response__descriptor, &st);
    if (!resp) return report_status(&st);

    /* Size the id column to the longest id so the table stays aligned. */
    int idw = 2;
    for (size_t i = 0; i < resp->n_models; i++) {
        int len = (int)strlen(resp->models[i]->model_id);
        if (len > idw) idw = len;
    }
    printf("%-*s  %-9s  %-6s  %6s  %8s  %10s  %s\n", idw, "ID", "STATE", "LOADED", "FRAMES",
           "USAGE", "MEMORY_MB", "ERROR");
    for (size_t i = 0; i < resp->n_models; i++) {
        const Multitenant__ModelInfo *m = resp->models[i];
        const Multitenant__ModelStats *s = stats_of(m);
        printf("%-*s  %-9s  %-6s  %6d  %8lld  %10.1f  %s\n", idw, m->model_id, m->state,
               yes_no(m->loaded), m->num_frames, (long long)s->usage_count,
               mib(s->memory_bytes), *m->error ? m->error : "-");
    }
    if (resp->n_models == 0) printf("(no models configured)\n");
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return EXIT_OK;
}

static void format_time_ms(int64_t unix_ms, char *buf, size_t size) {
    if (unix_ms <= 0) {
        snprintf(buf, size, "never");
        return;
    }
    time_t secs = (time_t)(unix_ms / 1000);
    struct tm tm;
    if (!localtime_r(&secs, &tm) || !strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm))
        snprintf(buf, size, "%lld ms", (long long)unix_ms);
}

static void print_tensors(const char *label, Multitenant__TensorInfo *const *t, size_t n) {
    if (n == 0) return;
    printf("  %-9s", label);
    for (size_t i = 0; i < n; i++) {
        printf("%s%s[", i ? ", " : " ", t[i]->name);
        for (size_t d = 0; d < t[i]->n_shape; d++) {
            if (t[i]->shape[d] < 0) printf("%s?", d ? "x" : "");
            else printf("%s%lld", d ? "x" : "", (long long)t[i]->shape[d]);
        }
        printf("]");
    }
    printf("\n");
}

static void print_model_stats(const Multitenant__ModelInfo *m) {
    const Multitenant__ModelStats *s = stats_of(m);
    char last_used[64], loaded_at[64];
    format_time_ms(s->last_used_unix_ms, last_used, sizeof last_used);
    format_time_ms(s->loaded_unix_ms, loaded_at, sizeof loaded_at);

    printf("model %s: %s%s%s\n", m->model_id, m->state, m->pinned ? ", pinned" : "",
           m->preload ? ", preload" : "");
    printf("  model     %s\n", m->model_path);
    printf("  frames    %d from %s\n", m->num_frames, m->background_dir);
    printf("  rects     %s\n", m->crop_rects_path);
    print_tensors("inputs", m->inputs, m->n_inputs);
    print_tensors("outputs", m->outputs, m->n_outputs);
    printf("  usage     %lld requests (%lld failed), %d in flight, last used %s\n",
           (long long)s->usage_count, (long long)s->failed_requests, s->in_flight, last_used);
    printf("  inference avg %.2f ms, p50 %.2f ms, p99 %.2f ms, total %.1f ms\n",
           s->avg_inference_ms, s->p50_inference_ms, s->p99_inference_ms, s->total_inference_ms);
    printf("  composite avg %.2f ms (composite + PNG encode)\n", s->avg_composite_ms);
    printf("  loads     %lld (last %.1f ms, total %.1f ms), loaded at %s, evicted %lld times\n",
           (long long)s->load_count, s->load_time_ms, s->total_load_time_ms, loaded_at,
           (long long)s->eviction_count);
    printf("  memory    %.1f MB (estimate %.1f MB)\n", mib(s->memory_bytes),
           mib(s->memory_estimate_bytes));
    if (*m->error) printf("  error     %s\n", m->error);
}

static int cmd_stats(const client *c) {
    Multitenant__GetModelStatsRequest req = MULTITENANT__GET_MODEL_STATS_REQUEST__INIT;
    /* protobuf-c wants char *; the request is only read. */
    req.model_id = c->args->id ? (char *)c->args->id : "";
    rpc_status st;
    Multitenant__GetModelStatsResponse *resp = (Multitenant__GetModelStatsResponse *)rpc_message(
        c->channel, c->args->timeout_s, SERVICE "GetModelStats", req.model_id, &req.base,
        &multitenant__get_model_stats_response__descriptor, &st);
    if (!resp) return report_status(&st);

    for (size_t i = 0; i < resp->n_models; i++) {
        print_model_stats(resp->models[i]);
        printf("\n");
    }
    printf("server: %d/%d models loaded, memory %.1f/%.1f MB, eviction policy %s\n",
           resp->loaded_models, resp->max_models, mib(resp->total_memory_bytes),
           mib(resp->max_memory_bytes), resp->eviction_policy);
    printf("  requests %lld, loads %lld, load failures %lld, evictions %lld, idle unloads %lld\n",
           (long long)resp->total_requests, (long long)resp->total_loads,
           (long long)resp->total_load_failures, (long long)resp->total_evictions,
           (long long)resp->total_idle_unloads);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return EXIT_OK;
}

static int cmd_load(const client *c) {
    Multitenant__LoadModelRequest req = MULTITENANT__LOAD_MODEL_REQUEST__INIT;
    req.model_id = (char *)c->args->id;
    req.force_reload = c->args->force;
    rpc_status st;
    Multitenant__LoadModelResponse *resp = (Multitenant__LoadModelResponse *)rpc_message(
        c->channel, c->args->timeout_s, SERVICE "LoadModel", req.model_id, &req.base,
        &multitenant__load_model_response__descriptor, &st);
    if (!resp) return report_status(&st);

    int rc = EXIT_OK;
    if (!resp->success) {
        /* The server should also fail the status; treat a soft failure alike. */
        fprintf(stderr, "error: load %s failed: %s\n", c->args->id, resp->error);
        rc = EXIT_RPC;
    } else if (resp->already_loaded) {
        printf("%s: already loaded\n", c->args->id);
    } else {
        printf("%s: loaded in %.1f ms\n", c->args->id, resp->load_time_ms);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

static int cmd_unload(const client *c) {
    Multitenant__UnloadModelRequest req = MULTITENANT__UNLOAD_MODEL_REQUEST__INIT;
    req.model_id = (char *)c->args->id;
    rpc_status st;
    Multitenant__UnloadModelResponse *resp = (Multitenant__UnloadModelResponse *)rpc_message(
        c->channel, c->args->timeout_s, SERVICE "UnloadModel", req.model_id, &req.base,
        &multitenant__unload_model_response__descriptor, &st);
    if (!resp) return report_status(&st);

    int rc = EXIT_OK;
    if (!resp->success) {
        fprintf(stderr, "error: unload %s failed: %s\n", c->args->id, resp->error);
        rc = EXIT_RPC;
    } else {
        printf("%s: %s\n", c->args->id, *resp->state ? resp->state : "unloaded");
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

static int cmd_health(const client *c) {
    Multitenant__HealthRequest req = MULTITENANT__HEALTH_REQUEST__INIT;
    rpc_status st;
    Multitenant__HealthResponse *resp = (Multitenant__HealthResponse *)rpc_message(
        c->channel, c->args->timeout_s, SERVICE "Health", NULL, &req.base,
        &multitenant__health_response__descriptor, &st);
    if (!resp) return report_status(&st);

    printf("%s (%s): %d/%d models loaded, version %s, uptime %.1f s\n",
           *resp->status ? resp->status : "?", resp->healthy ? "healthy" : "unhealthy",
           resp->loaded_models, resp->configured_models, *resp->version ? resp->version : "?",
           resp->uptime_s);
    int rc = resp->healthy ? EXIT_OK : EXIT_RPC;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Inference inputs                                                          */

/* Synthetic face crops: a smooth pattern in [0, 1] that drifts with the
 * absolute frame number, built from one row and one column table per channel
 * so a batch costs a few additions per value instead of a sin() each. */
static void synth_visual(float *dst, int batch, int start) {
    float row[VISUAL_HW], col[VISUAL_HW];
    for (int b = 0; b < batch; b++) {
        float t = 0.15f * (float)(start + b);
        for (int ch = 0; ch < VISUAL_C; ch++) {
            float phase = 0.9f * (float)ch + t;
            for (int i = 0; i < VISUAL_HW; i++) {
                float u = (float)i / VISUAL_HW;
                col[i] = 0.25f * sinf(2.0f * (float)M_PI * 1.5f * u + phase);
                row[i] = 0.25f * cosf(2.0f * (float)M_PI * 2.0f * u - phase);
            }
            float *plane = dst + ((size_t)b * VISUAL_C + (size_t)ch) * VISUAL_HW * VISUAL_HW;
            for (int y = 0; y < VISUAL_HW; y++)
                for (int x = 0; x < VISUAL_HW; x++)
                    plane[(size_t)y * VISUAL_HW + (size_t)x] = 0.5f + row[y] + col[x];
        }
    }
}

/* Synthetic audio windows: the overall level follows a sine over the frame
 * number (period 8 frames), so the predicted mouth opens and closes. */
static void synth_audio(float *dst, int batch, int start) {
    for (int b = 0; b < batch; b++) {
        float level = sinf(2.0f * (float)M_PI * (float)(start + b) / 8.0f);
        float *win = dst + (size_t)b * AUDIO_PER_FRAME;
        for (int c = 0; c < AUDIO_C; c++)
            for (int y = 0; y < AUDIO_H; y++)
                for (int x = 0; x < AUDIO_W; x++)
                    win[((size_t)c * AUDIO_H + (size_t)y) * AUDIO_W + (size_t)x] =
                        level * cosf(0.2f * (float)c + 0.4f * (float)y + 0.3f * (float)x);
    }
}

/* Read a raw little-endian float32 file whose size must be one of the
 * `n_ok` counts in `counts` (values, not bytes). Returns 0, EXIT_USAGE for a
 * size mismatch or EXIT_RPC for an I/O error (both reported). */
static int read_f32_file(const char *path, const size_t *counts, int n_ok, const char *what,
                         float **out, size_t *n_out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "error: %s: %s\n", path, strerror(errno));
        return EXIT_RPC;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        fprintf(stderr, "error: %s: %s\n", path, strerror(errno));
        fclose(f);
        return EXIT_RPC;
    }
    size_t n = 0;
    for (int i = 0; i < n_ok; i++)
        if ((uint64_t)sb.st_size == (uint64_t)counts[i] * sizeof(float)) n = counts[i];
    if (n == 0) {
        fprintf(stderr, "error: %s: %lld bytes, expected %zu", path, (long long)sb.st_size,
                counts[0] * sizeof(float));
        for (int i = 1; i < n_ok; i++) fprintf(stderr, " or %zu", counts[i] * sizeof(float));
        fprintf(stderr, " bytes (%s)\n", what);
        fclose(f);
        return EXIT_USAGE;
    }
    float *buf = malloc(n * sizeof(float));
    if (!buf) {
        fprintf(stderr, "error: %s: out of memory for %zu floats\n", path, n);
        fclose(f);
        return EXIT_RPC;
    }
    if (fread(buf, sizeof(float), n, f) != n) {
        fprintf(stderr, "error: %s: short read\n", path);
        free(buf);
        fclose(f);
        return EXIT_RPC;
    }
    fclose(f);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    /* Files are little-endian; protobuf-c packs host floats. */
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &buf[i], 4);
        u = __builtin_bswap32(u);
        memcpy(&buf[i], &u, 4);
    }
#endif
    *out = buf;
    *n_out = n;
    return 0;
}

/* float32 -> IEEE binary16 bits, round to nearest even (what numpy's
 * astype(float16) does), subnormals included; beyond 65504 rounds to Inf,
 * which the server refuses like any Inf. */
static uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);       /* NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);      /* Inf, or rounds to it */
    if (ax < 0x38800000u) {                                        /* below 2^-14: subnormal half */
        float v;
        memcpy(&v, &ax, 4);
        /* v * 2^24 is exact; lrintf rounds half to even. 0x400 = 2^-14 is the
         * smallest normal, encoded by the same bits. */
        return (uint16_t)(sign | (uint32_t)lrintf(v * 0x1p24f));
    }
    uint32_t h = (ax >> 13) - (112u << 10), rem = ax & 0x1fffu; /* rebias 127 -> 15 */
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;    /* a carry into the exponent is right */
    return (uint16_t)(sign | h);
}

/* Encode n floats as the wire field of `dtype` wants them: little-endian
 * binary16 (2 bytes each) or uint8 = round(clamp(v, 0, 1) * 255). */
static uint8_t *encode_tensor(const float *v, size_t n, bool u8, size_t *len) {
    *len = n * (u8 ? 1 : 2);
    uint8_t *out = malloc(*len ? *len : 1);
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (u8) {
            float c = v[i] < 0.0f ? 0.0f : v[i] > 1.0f ? 1.0f : v[i];
            out[i] = (uint8_t)lrintf(c * 255.0f);
        } else {
            uint16_t h = f32_to_f16(v[i]);
            out[2 * i] = (uint8_t)(h & 0xff);
            out[2 * i + 1] = (uint8_t)(h >> 8);
        }
    }
    return out;
}

/* Build the serialized CompositeBatchRequest for `batch` frames from `start`
 * (start 0 is omitted on the wire, as proto3 does for defaults). Tensors come
 * from files or the synthetic generators; they are freed once packed, so the
 * packed slice is the only copy held during the call. */
static int build_request(const cli_args *a, int batch, int start, grpc_slice *out) {
    float *visual = NULL, *audio = NULL;
    size_t n_visual = (size_t)batch * VISUAL_PER_FRAME, n_audio = (size_t)batch * AUDIO_PER_FRAME;
    int rc = 0;

    if (!a->client_visual) {
        n_visual = 0; /* the server builds it */
    } else if (a->visual_path) {
        rc = read_f32_file(a->visual_path, &n_visual, 1, "batch*6*320*320 float32", &visual,
                           &n_visual);
    } else if ((visual = malloc(n_visual * sizeof(float))) != NULL) {
        synth_visual(visual, batch, start);
    } else {
        fprintf(stderr, "error: out of memory for %zu visual floats\n", n_visual);
        rc = EXIT_RPC;
    }
    if (rc == 0 && a->audio_path) {
        /* One window per frame, or one window shared by every frame. */
        const size_t counts[2] = {n_audio, AUDIO_PER_FRAME};
        rc = read_f32_file(a->audio_path, counts, batch > 1 ? 2 : 1,
                           "batch*32*16*16 or 32*16*16 float32", &audio, &n_audio);
    } else if (rc == 0) {
        if ((audio = malloc(n_audio * sizeof(float))) != NULL) {
            synth_audio(audio, batch, start);
        } else {
            fprintf(stderr, "error: out of memory for %zu audio floats\n", n_audio);
            rc = EXIT_RPC;
        }
    }
    const char *dtype = a->dtype ? a->dtype : "f32";
    uint8_t *vbytes = NULL, *abytes = NULL;
    size_t vlen = 0, alen = 0;
    if (rc == 0 && strcmp(dtype, "f32")) {
        /* u8 exists for the visual input only (image data); audio goes as f16. */
        if (visual) vbytes = encode_tensor(visual, n_visual, !strcmp(dtype, "u8"), &vlen);
        abytes = encode_tensor(audio, n_audio, false, &alen);
        if ((visual && !vbytes) || !abytes) {
            fprintf(stderr, "error: out of memory encoding the tensors as %s\n", dtype);
            rc = EXIT_RPC;
        }
    }
    if (rc == 0) {
        Multitenant__CompositeBatchRequest req = MULTITENANT__COMPOSITE_BATCH_REQUEST__INIT;
        req.model_id = (char *)a->id;
        if (!strcmp(dtype, "f32")) {
            req.n_visual_frames = n_visual;
            req.visual_frames = visual;
            req.n_audio_features = n_audio;
            req.audio_features = audio;
        } else {
            ProtobufCBinaryData *vf = !strcmp(dtype, "u8") ? &req.visual_frames_u8 : &req.visual_frames_f16;
            if (vbytes) *vf = (ProtobufCBinaryData){.len = vlen, .data = vbytes};
            req.audio_features_f16 = (ProtobufCBinaryData){.len = alen, .data = abytes};
        }
        req.batch_size = batch;
        req.start_frame_idx = start;
        req.output_format = (char *)(a->format ? a->format : "");
        *out = pack_to_slice(&req.base);
    }
    free(vbytes);
    free(abytes);
    free(visual);
    free(audio);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* infer                                                                     */

/* mkdir -p: the output directory may be nested and new. */
/* A frame file's extension by output format (static strings; png when the
 * name is none of them). */
typedef struct {
    const char *format, *ext;
} frame_file;
static const frame_file FRAME_FILES[] = {{"png", "png"}, {"jpeg", "jpg"}, {"raw", "rgb"}, {"h264", "h264"}};

static const frame_file *frame_file_of(const char *format) {
    for (size_t i = 0; format && i < sizeof FRAME_FILES / sizeof *FRAME_FILES; i++)
        if (!strcmp(format, FRAME_FILES[i].format)) return &FRAME_FILES[i];
    return &FRAME_FILES[0];
}

static int make_dirs(const char *path) {
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
            *p = saved;
            if (saved == '\0') break;
        }
    }
    struct stat sb;
    if (stat(path, &sb) != 0) return -1;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

static int write_file(const char *path, const uint8_t *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t wrote = fwrite(data, 1, len, f);
    /* fclose reports delayed write errors too (e.g. disk full). */
    if (fclose(f) != 0 || wrote != len) return -1;
    return 0;
}

static int cmd_infer(const client *c) {
    const cli_args *a = c->args;
    if (make_dirs(a->out_dir) != 0) {
        fprintf(stderr, "error: %s: %s\n", a->out_dir, strerror(errno));
        return EXIT_RPC;
    }
    grpc_slice body;
    int rc = build_request(a, a->batch, a->start, &body);
    if (rc != 0) return rc;

    rpc_status st;
    grpc_slice raw;
    uint64_t t0 = ls_mono_ns();
    int call_rc =
        rpc_call(c->channel, SERVICE "InferBatchComposite", a->id, &body, 1, a->timeout_s, &raw, &st);
    double rpc_ms = (double)(ls_mono_ns() - t0) / 1e6;
    grpc_slice_unref(body);
    if (call_rc != 0) return report_status(&st);

    Multitenant__CompositeBatchResponse *resp = multitenant__composite_batch_response__unpack(
        NULL, GRPC_SLICE_LENGTH(raw), GRPC_SLICE_START_PTR(raw));
    grpc_slice_unref(raw);
    if (!resp) {
        status_set(&st, GRPC_STATUS_INTERNAL, "malformed CompositeBatchResponse from server");
        return report_status(&st);
    }

    if (!resp->success) {
        fprintf(stderr, "error: server reported failure: %s\n", resp->error);
        rc = EXIT_RPC;
    }
    for (size_t i = 0; rc == 0 && i < resp->n_composited_frames; i++) {
        char path[PATH_MAX];
        const char *ext = frame_file_of(resp->output_format)->ext;
        int n = snprintf(path, sizeof path, "%s/frame_%06lld.%s", a->out_dir,
                         (long long)a->start + (long long)i, ext);
        if (n < 0 || (size_t)n >= sizeof path) {
            fprintf(stderr, "error: output path too long under %s\n", a->out_dir);
            rc = EXIT_RPC;
        } else if (write_file(path, resp->composited_frames[i].data,
                              resp->composited_frames[i].len) != 0) {
            fprintf(stderr, "error: %s: %s\n", path, strerror(errno));
            rc = EXIT_RPC;
        }
    }
    if (rc == 0 && resp->n_composited_frames != (size_t)a->batch) {
        fprintf(stderr, "error: asked for %d frames, server returned %zu\n", a->batch,
                resp->n_composited_frames);
        rc = EXIT_RPC;
    }
    if (rc == 0) {
        const char *ext = frame_file_of(resp->output_format)->ext;
        printf("wrote %zu frames: %s/frame_%06d.%s .. frame_%06lld.%s (%s, %dx%d)\n",
               resp->n_composited_frames, a->out_dir, a->start, ext,
               (long long)a->start + (long long)resp->n_composited_frames - 1, ext,
               *resp->output_format ? resp->output_format : "png", resp->frame_width, resp->frame_height);
        printf("inference_time_ms: %.3f\n", resp->inference_time_ms);
        printf("composite_time_ms: %.3f\n", resp->composite_time_ms);
        printf("total_time_ms: %.3f\n", resp->total_time_ms);
        printf("model_loaded: %s\n", resp->model_loaded ? "true" : "false");
        if (resp->model_loaded) printf("model_load_time_ms: %.3f\n", resp->model_load_time_ms);
        printf("rpc_time_ms: %.3f (client round trip)\n", rpc_ms);
    }
    multitenant__composite_batch_response__free_unpacked(resp, NULL);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* speak                                                                     */

/* A server-streaming call: one request, then each response message to
 * on_msg (which returns 0, or -1 to stop: the call is then cancelled), then
 * the status. Returns 0 when the status is OK and every message was taken. */
typedef int (*stream_msg_fn)(void *ctx, grpc_slice msg);

/* The whole file into *out (errno set on failure). 0 or -1. */
static int read_whole_file(const char *path, ls_buf *out) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    char chunk[65536];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (ls_buf_append(out, chunk, n) != 0) {
            rc = -1;
            errno = ENOMEM;
            break;
        }
    if (ferror(f)) rc = -1;
    fclose(f);
    return rc;
}

static int rpc_server_stream(grpc_channel *ch, const char *method, const char *model_id, grpc_slice req,
                             double timeout_s, stream_msg_fn on_msg, void *ctx, rpc_status *st) {
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_micros((int64_t)(timeout_s * 1e6), GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               grpc_slice_from_static_string(method), NULL, deadline, NULL);
    grpc_byte_buffer *send_bb = grpc_raw_byte_buffer_create(&req, 1);
    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    int taken = 1; /* every message handed over so far was accepted */

    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    grpc_metadata md = {.key = grpc_slice_from_static_string("x-model-id"),
                        .value = grpc_slice_from_static_string(model_id)};
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = 1; /* the balancer's routing key (docs/SCALING.md) */
    ops[0].data.send_initial_metadata.metadata = &md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    int started = grpc_call_start_batch(call, ops, 4, ops, NULL) == GRPC_CALL_OK;
    if (started) grpc_completion_queue_pluck(cq, ops, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    while (started) {
        grpc_byte_buffer *bb = NULL;
        grpc_op rop;
        memset(&rop, 0, sizeof rop);
        rop.op = GRPC_OP_RECV_MESSAGE;
        rop.data.recv_message.recv_message = &bb;
        if (grpc_call_start_batch(call, &rop, 1, &rop, NULL) != GRPC_CALL_OK) break;
        grpc_event ev = grpc_completion_queue_pluck(cq, &rop, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type != GRPC_OP_COMPLETE || !ev.success || !bb) break; /* end of stream (or broken) */
        grpc_byte_buffer_reader reader;
        int ok = grpc_byte_buffer_reader_init(&reader, bb);
        grpc_slice msg = ok ? grpc_byte_buffer_reader_readall(&reader) : grpc_empty_slice();
        if (ok) grpc_byte_buffer_reader_destroy(&reader);
        grpc_byte_buffer_destroy(bb);
        int rc = ok ? on_msg(ctx, msg) : -1;
        grpc_slice_unref(msg);
        if (rc != 0) {
            taken = 0;
            grpc_call_cancel(call, NULL);
            break;
        }
    }
    grpc_op sop;
    memset(&sop, 0, sizeof sop);
    sop.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    sop.data.recv_status_on_client.trailing_metadata = &trailing_md;
    sop.data.recv_status_on_client.status = &code;
    sop.data.recv_status_on_client.status_details = &details;
    if (grpc_call_start_batch(call, &sop, 1, &sop, NULL) == GRPC_CALL_OK)
        grpc_completion_queue_pluck(cq, &sop, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    int rc = -1;
    if (!started)
        status_set(st, GRPC_STATUS_INTERNAL, "grpc_call_start_batch failed");
    else if (code != GRPC_STATUS_OK && taken)
        status_set(st, code, "%.*s", (int)GRPC_SLICE_LENGTH(details), (const char *)GRPC_SLICE_START_PTR(details));
    else if (taken) {
        st->code = GRPC_STATUS_OK;
        st->details[0] = '\0';
        rc = 0;
    }
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_byte_buffer_destroy(send_bb);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    return rc;
}

typedef struct {
    const cli_args *a;
    long frames, next;   /* written so far; index expected next */
    int total;
    uint64_t t0, first_ns;
    const char *format;  /* of the last message */
    int w, h;
    int mp4;             /* --out FILE.mp4: keep the access units here */
    ls_buf *au;          /* per frame (mp4) */
    int *key;
    size_t n_au, cap_au;
    size_t video_bytes;
    char codec[32];
} speak_ctx;

/* Keep one access unit of an MP4-bound speech (copied out of the message). */
static int keep_access_unit(speak_ctx *k, const ProtobufCBinaryData *d, int key) {
    if (k->n_au == k->cap_au) {
        size_t cap = k->cap_au ? 2 * k->cap_au : 256;
        ls_buf *au = realloc(k->au, cap * sizeof *au);
        if (!au) return -1;
        k->au = au;
        int *keys = realloc(k->key, cap * sizeof *keys);
        if (!keys) return -1;
        k->key = keys;
        k->cap_au = cap;
    }
    ls_buf b = {0};
    if (ls_buf_append(&b, d->data, d->len) != 0) return -1;
    k->au[k->n_au] = b;
    k->key[k->n_au++] = key;
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static int speak_msg(void *arg, grpc_slice msg) {
    speak_ctx *k = arg;
    Multitenant__RenderSpeechResponse *r = multitenant__render_speech_response__unpack(
        NULL, GRPC_SLICE_LENGTH(msg), GRPC_SLICE_START_PTR(msg));
    if (!r) {
        fprintf(stderr, "error: malformed RenderSpeechResponse\n");
        return -1;
    }
    int rc = 0;
    if (!k->first_ns) k->first_ns = ls_mono_ns();
    if (r->first_frame_index != k->next) {
        fprintf(stderr, "error: response starts at frame %d, expected %ld (frames lost or reordered)\n",
                r->first_frame_index, k->next);
        rc = -1;
    }
    const frame_file *ff = frame_file_of(r->output_format);
    const char *ext = ff->ext;
    k->format = ff->format;
    k->w = r->frame_width;
    k->h = r->frame_height;
    k->total = r->total_frames;
    if (r->codec && r->codec[0]) snprintf(k->codec, sizeof k->codec, "%s", r->codec);
    int video = !strcmp(k->format, "h264");
    if (rc == 0 && video && r->n_keyframes != r->n_frames) {
        fprintf(stderr, "error: %zu key frame flags for %zu frames\n", r->n_keyframes, r->n_frames);
        rc = -1;
    }
    if (rc == 0 && k->mp4 && !video) {
        fprintf(stderr, "error: the server sent %s frames; an MP4 needs h264\n", k->format);
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < r->n_frames; i++) {
        if (video) k->video_bytes += r->frames[i].len;
        if (k->mp4) {
            if (keep_access_unit(k, &r->frames[i], r->keyframes[i]) != 0) {
                fprintf(stderr, "error: out of memory keeping frame %ld\n", k->next + (long)i);
                rc = -1;
            }
            continue;
        }
        char path[PATH_MAX];
        int n = snprintf(path, sizeof path, "%s/frame_%06ld.%s", k->a->out_dir, k->next + (long)i, ext);
        if (n < 0 || (size_t)n >= sizeof path || write_file(path, r->frames[i].data, r->frames[i].len) != 0) {
            fprintf(stderr, "error: cannot write %s: %s\n", path, strerror(errno));
            rc = -1;
        }
    }
    if (rc == 0) {
        k->next += (long)r->n_frames;
        k->frames += (long)r->n_frames;
    }
    multitenant__render_speech_response__free_unpacked(r, NULL);
    return rc;
}

/* The speech's access units and its audio (as the server decodes it: 16 kHz
 * mono) into one MP4. */
static int speak_mp4(const speak_ctx *k, const ls_buf *wav) {
    ls_audio pcm = {0};
    ls_err err = {0};
    if (ls_audio_decode_wav(wav->data, wav->len, 36000, &pcm, &err) != 0) {
        fprintf(stderr, "error: %s: %s\n", k->a->wav_path, err.msg);
        return EXIT_RPC;
    }
    mp4_access_unit *au = calloc(k->n_au ? k->n_au : 1, sizeof *au);
    if (!au) {
        ls_audio_free(&pcm);
        fprintf(stderr, "error: out of memory\n");
        return EXIT_RPC;
    }
    for (size_t i = 0; i < k->n_au; i++) au[i] = (mp4_access_unit){k->au[i].data, k->au[i].len, k->key[i]};
    char msg[256];
    int rc = mp4_write(k->a->out_dir, k->w, k->h, au, k->n_au, pcm.samples, pcm.n, LS_AUDIO_RATE, msg, sizeof msg);
    free(au);
    ls_audio_free(&pcm);
    if (rc != 0) {
        fprintf(stderr, "error: %s: %s\n", k->a->out_dir, msg);
        return EXIT_RPC;
    }
    return EXIT_OK;
}

static void speak_ctx_free(speak_ctx *k) {
    for (size_t i = 0; i < k->n_au; i++) ls_buf_free(&k->au[i]);
    free(k->au);
    free(k->key);
}

static int cmd_speak(const client *c) {
    const cli_args *a = c->args;
    if (!a->wav_path) return usage_error("speak: --wav FILE is required"), EXIT_USAGE;
    int mp4 = ends_with(a->out_dir, ".mp4");
    if (mp4 && a->format && strcmp(a->format, "h264"))
        return usage_error("speak: --out %s is an MP4 file: it takes h264 frames, not --format %s", a->out_dir,
                           a->format),
               EXIT_USAGE;
    if (!mp4 && make_dirs(a->out_dir) != 0) {
        fprintf(stderr, "error: %s: %s\n", a->out_dir, strerror(errno));
        return EXIT_RPC;
    }
    ls_buf wav = {0};
    int rc = read_whole_file(a->wav_path, &wav);
    if (rc != 0) {
        fprintf(stderr, "error: cannot read %s: %s\n", a->wav_path, strerror(errno));
        ls_buf_free(&wav);
        return EXIT_RPC;
    }
    Multitenant__AudioInput audio = MULTITENANT__AUDIO_INPUT__INIT;
    audio.wav = (ProtobufCBinaryData){wav.len, wav.data};
    Multitenant__RenderSpeechRequest req = MULTITENANT__RENDER_SPEECH_REQUEST__INIT;
    req.model_id = (char *)a->id;
    req.audio = &audio;
    req.output_format = (char *)(mp4 ? "h264" : a->format ? a->format : "");
    req.batch_size = a->batch;
    req.start_frame_idx = a->start;
    grpc_slice body = pack_to_slice(&req.base);
    speak_ctx k = {.a = a, .t0 = ls_mono_ns(), .format = "png", .mp4 = mp4};
    rpc_status st;
    rc = rpc_server_stream(c->channel, SERVICE "RenderSpeech", a->id, body, a->timeout_s, speak_msg, &k, &st);
    grpc_slice_unref(body);
    double s = (double)(ls_mono_ns() - k.t0) / 1e9;
    int code = EXIT_OK;
    if (rc != 0) {
        if (k.frames) fprintf(stderr, "(%ld frames %s before the error)\n", k.frames, mp4 ? "received" : "written");
        code = st.code == GRPC_STATUS_OK ? EXIT_RPC : report_status(&st);
    } else if (k.frames != k.total) {
        fprintf(stderr, "error: %ld frames received, the speech has %d\n", k.frames, k.total);
        code = EXIT_RPC;
    } else if (mp4) {
        code = speak_mp4(&k, &wav);
    }
    if (code == EXIT_OK) {
        printf("wrote %ld frames (%s, %dx%d) to %s in %.2f s: %.1f frames/s (%.1f s of video at 25 fps); "
               "first frames after %.0f ms\n",
               k.frames, k.format, k.w, k.h, a->out_dir, s, (double)k.frames / s, (double)k.frames / 25.0,
               k.first_ns ? (double)(k.first_ns - k.t0) / 1e6 : 0.0);
        if (!strcmp(k.format, "h264"))
            printf("video: %s, %zu bytes, %.0f kbit/s%s\n", k.codec[0] ? k.codec : "h264", k.video_bytes,
                   k.frames ? (double)k.video_bytes * 8 / ((double)k.frames / 25.0) / 1000 : 0.0,
                   mp4 ? "; audio: AAC, 16 kHz mono (the speech the server heard)" : "");
    }
    speak_ctx_free(&k);
    ls_buf_free(&wav);
    return code;
}

static int cmp_double(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

/* Nearest-rank percentile of a sorted array. */
static double percentile(const double *sorted, size_t n, double p) {
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    if (rank < 1) rank = 1;
    return sorted[rank - 1];
}

/* ------------------------------------------------------------------------ */
/* session                                                                   */

#define CHUNK_SAMPLES 320 /* 20 ms at 16 kHz */

typedef struct {
    grpc_call *call;
    grpc_completion_queue *cq;
    const float *x;
    size_t n;
    bool realtime;
    int64_t *sent_ns;     /* per chunk: when it was handed to gRPC */
    size_t n_chunks;
    int64_t end_ns;
    int failed;
} session_sender;

static int send_msg(session_sender *s, const ProtobufCMessage *m, int close) {
    grpc_slice b = pack_to_slice(m);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&b, 1);
    grpc_slice_unref(b);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_MESSAGE;
    ops[0].data.send_message.send_message = bb;
    ops[1].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    int ok = grpc_call_start_batch(s->call, ops, close ? 2 : 1, s, NULL) == GRPC_CALL_OK;
    if (ok) {
        grpc_event ev = grpc_completion_queue_pluck(s->cq, s, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        ok = ev.type == GRPC_OP_COMPLETE && ev.success;
    }
    grpc_byte_buffer_destroy(bb);
    return ok ? 0 : -1;
}

/* The audio, 20 ms a message (paced when realtime), then SessionEnd. */
static void *session_send(void *arg) {
    session_sender *s = arg;
    int64_t t0 = (int64_t)ls_mono_ns();
    for (size_t k = 0; k < s->n_chunks && !s->failed; k++) {
        if (s->realtime) {
            int64_t due = t0 + (int64_t)k * 20000000, now = (int64_t)ls_mono_ns();
            if (due > now) {
                struct timespec ts = {(time_t)((due - now) / 1000000000), (long)((due - now) % 1000000000)};
                nanosleep(&ts, NULL);
            }
        }
        size_t a = k * CHUNK_SAMPLES, len = s->n - a < CHUNK_SAMPLES ? s->n - a : CHUNK_SAMPLES;
        Multitenant__AudioChunk c = MULTITENANT__AUDIO_CHUNK__INIT;
        c.pcm = (ProtobufCBinaryData){len * 4, (uint8_t *)(uintptr_t)(s->x + a)};
        Multitenant__SessionRequest r = MULTITENANT__SESSION_REQUEST__INIT;
        r.kind_case = MULTITENANT__SESSION_REQUEST__KIND_AUDIO;
        r.audio = &c;
        s->sent_ns[k] = (int64_t)ls_mono_ns();
        if (send_msg(s, &r.base, 0) != 0) s->failed = 1;
    }
    Multitenant__SessionEnd e = MULTITENANT__SESSION_END__INIT;
    Multitenant__SessionRequest r = MULTITENANT__SESSION_REQUEST__INIT;
    r.kind_case = MULTITENANT__SESSION_REQUEST__KIND_END;
    r.end = &e;
    s->end_ns = (int64_t)ls_mono_ns();
    if (!s->failed && send_msg(s, &r.base, 1) != 0) s->failed = 1;
    return NULL;
}

/* The chunk holding the last sample frame i depends on (speech.h), or -1
 * when it is past the audio (the frame waited for SessionEnd). */
static long dependency_chunk(long i, size_t n) {
    long mel = (80 * (i + 6)) / 25 + 15;     /* last mel frame of encoder window i + 6 */
    long sample = mel * 200 + 400 - 1;
    return (size_t)sample < n ? sample / CHUNK_SAMPLES : -1;
}

static int cmd_session(const client *c) {
    const cli_args *a = c->args;
    if (!a->wav_path) return usage_error("session: --wav FILE is required"), EXIT_USAGE;
    /* h264: --out names one Annex B file (every access unit in order). */
    int video = a->format && !strcmp(a->format, "h264");
    FILE *h264 = NULL;
    if (video && a->out_dir && strcmp(a->out_dir, ".") && !(h264 = fopen(a->out_dir, "wb"))) {
        fprintf(stderr, "error: %s: %s\n", a->out_dir, strerror(errno));
        return EXIT_RPC;
    }
    if (!video && a->out_dir && strcmp(a->out_dir, ".") && make_dirs(a->out_dir) != 0) {
        fprintf(stderr, "error: %s: %s\n", a->out_dir, strerror(errno));
        return EXIT_RPC;
    }
    ls_buf wav = {0};
    int ok = read_whole_file(a->wav_path, &wav) == 0;
    ls_audio pcm = {0};
    ls_err err = {0};
    if (!ok || ls_audio_decode_wav(wav.data, wav.len, 36000, &pcm, &err) != 0) {
        fprintf(stderr, "error: %s: %s\n", a->wav_path, ok ? err.msg : strerror(errno));
        ls_buf_free(&wav);
        return EXIT_RPC;
    }
    ls_buf_free(&wav);

    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_micros((int64_t)(a->timeout_s * 1e6), GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               grpc_slice_from_static_string(SERVICE "StreamSession"), NULL,
                                               deadline, NULL);
    session_sender snd = {.call = call, .cq = cq, .x = pcm.samples, .n = pcm.n, .realtime = a->realtime};
    snd.n_chunks = (pcm.n + CHUNK_SAMPLES - 1) / CHUNK_SAMPLES;
    snd.sent_ns = calloc(snd.n_chunks ? snd.n_chunks : 1, sizeof *snd.sent_ns);
    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_op op0[2];
    memset(op0, 0, sizeof op0);
    grpc_metadata md = {.key = grpc_slice_from_static_string("x-model-id"),
                        .value = grpc_slice_from_static_string(a->id)};
    op0[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    op0[0].data.send_initial_metadata.count = 1; /* the balancer's routing key */
    op0[0].data.send_initial_metadata.metadata = &md;
    op0[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    op0[1].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    int rc = snd.sent_ns && grpc_call_start_batch(call, op0, 2, op0, NULL) == GRPC_CALL_OK ? 0 : -1;
    /* The start message, then audio from a thread of its own while this one
     * reads frames. */
    Multitenant__SessionStart st = MULTITENANT__SESSION_START__INIT;
    st.model_id = (char *)a->id;
    st.output_format = (char *)(a->format ? a->format : "");
    st.start_frame_idx = a->start;
    st.pcm_encoding = "f32le";
    st.sample_rate = 16000;
    st.channels = 1;
    st.batch_size = a->batch;
    Multitenant__SessionRequest sr = MULTITENANT__SESSION_REQUEST__INIT;
    sr.kind_case = MULTITENANT__SESSION_REQUEST__KIND_START;
    sr.start = &st;
    int64_t t0 = (int64_t)ls_mono_ns();
    if (!rc) rc = send_msg(&snd, &sr.base, 0);
    pthread_t th;
    int started = !rc && pthread_create(&th, NULL, session_send, &snd) == 0;
    long frames = 0, next = 0, keyframes = 0;
    size_t bytes = 0;
    char codec[32] = "";
    double *lat = calloc(snd.n_chunks + 64, sizeof *lat);
    size_t n_lat = 0, cap_lat = snd.n_chunks + 64;
    int64_t first_ns = 0;
    int ended = 0;
    while (started && lat) {
        grpc_byte_buffer *bb = NULL;
        grpc_op rop;
        memset(&rop, 0, sizeof rop);
        rop.op = GRPC_OP_RECV_MESSAGE;
        rop.data.recv_message.recv_message = &bb;
        if (grpc_call_start_batch(call, &rop, 1, &rop, NULL) != GRPC_CALL_OK) break;
        grpc_event ev = grpc_completion_queue_pluck(cq, &rop, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type != GRPC_OP_COMPLETE || !ev.success || !bb) break;
        int64_t now = (int64_t)ls_mono_ns();
        grpc_byte_buffer_reader reader;
        grpc_slice msg = grpc_byte_buffer_reader_init(&reader, bb) ? grpc_byte_buffer_reader_readall(&reader)
                                                                   : grpc_empty_slice();
        grpc_byte_buffer_reader_destroy(&reader);
        grpc_byte_buffer_destroy(bb);
        Multitenant__SessionResponse *r = multitenant__session_response__unpack(NULL, GRPC_SLICE_LENGTH(msg),
                                                                                 GRPC_SLICE_START_PTR(msg));
        grpc_slice_unref(msg);
        if (!r) {
            fprintf(stderr, "error: malformed SessionResponse\n");
            rc = -1;
            break;
        }
        if (r->kind_case == MULTITENANT__SESSION_RESPONSE__KIND_FRAME) {
            const Multitenant__Frame *fr = r->frame;
            if (fr->index != next) {
                fprintf(stderr, "error: frame %lld arrived, expected %ld\n", (long long)fr->index, next);
                rc = -1;
            }
            if (!first_ns) first_ns = now;
            long dep = dependency_chunk(next, pcm.n);
            int64_t dep_ns = dep >= 0 ? snd.sent_ns[dep] : snd.end_ns;
            if (n_lat < cap_lat && dep_ns) lat[n_lat++] = (double)(now - dep_ns) / 1e6;
            bytes += fr->data.len;
            keyframes += fr->keyframe;
            if (h264 && fwrite(fr->data.data, 1, fr->data.len, h264) != fr->data.len) {
                fprintf(stderr, "error: %s: %s\n", a->out_dir, strerror(errno));
                rc = -1;
            } else if (!video && a->out_dir && strcmp(a->out_dir, ".")) {
                char path[PATH_MAX];
                snprintf(path, sizeof path, "%s/frame_%06ld.%s", a->out_dir, next,
                         frame_file_of(a->format)->ext);
                if (write_file(path, fr->data.data, fr->data.len) != 0) rc = -1;
            }
            next++;
            frames++;
        } else if (r->kind_case == MULTITENANT__SESSION_RESPONSE__KIND_ENDED) {
            ended = 1;
        } else if (r->kind_case == MULTITENANT__SESSION_RESPONSE__KIND_STARTED && r->started->codec &&
                   r->started->codec[0]) {
            snprintf(codec, sizeof codec, "%s", r->started->codec);
        }
        multitenant__session_response__free_unpacked(r, NULL);
        if (rc) {
            grpc_call_cancel(call, NULL);
            break;
        }
    }
    if (started) {
        if (rc) snd.failed = 1;
        pthread_join(th, NULL);
    }
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op sop;
    memset(&sop, 0, sizeof sop);
    sop.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    sop.data.recv_status_on_client.trailing_metadata = &trailing_md;
    sop.data.recv_status_on_client.status = &code;
    sop.data.recv_status_on_client.status_details = &details;
    if (grpc_call_start_batch(call, &sop, 1, &sop, NULL) == GRPC_CALL_OK)
        grpc_completion_queue_pluck(cq, &sop, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    double secs = (double)((int64_t)ls_mono_ns() - t0) / 1e9;
    int exit_code = EXIT_OK;
    if (code != GRPC_STATUS_OK) {
        fprintf(stderr, "error: %s: %.*s (after %ld frames)\n", ls_status_name(code),
                (int)GRPC_SLICE_LENGTH(details), (const char *)GRPC_SLICE_START_PTR(details), frames);
        exit_code = EXIT_RPC;
    } else if (rc || !ended) {
        exit_code = EXIT_RPC;
    } else {
        qsort(lat, n_lat, sizeof *lat, cmp_double);
        printf("session %s: %ld frames (%.2f s of audio%s) in %.2f s; first frame after %.0f ms; frame latency "
               "(receipt - its last audio sent) p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max %.0f ms\n",
               a->id, frames, (double)pcm.n / 16000, a->realtime ? ", paced at real time" : "", secs,
               first_ns ? (double)(first_ns - t0) / 1e6 : 0.0, n_lat ? percentile(lat, n_lat, 50) : 0.0,
               n_lat ? percentile(lat, n_lat, 90) : 0.0, n_lat ? percentile(lat, n_lat, 99) : 0.0,
               n_lat ? lat[n_lat - 1] : 0.0);
        if (frames)
            printf("session %s: %zu bytes, %.0f kbit/s at 25 fps, %ld key frames%s%s\n", a->id, bytes,
                   (double)bytes * 8 / ((double)frames / 25) / 1000, keyframes, codec[0] ? ", codec " : "", codec);
    }
    if (h264 && fclose(h264) != 0 && exit_code == EXIT_OK) {
        fprintf(stderr, "error: %s: %s\n", a->out_dir, strerror(errno));
        exit_code = EXIT_RPC;
    }
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    free(lat);
    free(snd.sent_ns);
    ls_audio_free(&pcm);
    return exit_code;
}

/* ------------------------------------------------------------------------ */
/* bench                                                                     */

/* Responses that arrive with OK status but are not usable (success=false or a
 * wrong frame count) are counted in one extra bucket after the status codes. */
#define BAD_RESPONSE N_STATUS_CODES

typedef struct {
    const cli_args *args;
    grpc_channel *shared; /* NULL when each worker has its own channel */
    grpc_slice body;      /* packed request without start_frame_idx; shared, read-only */

    pthread_mutex_t mu;   /* guards everything below */
    pthread_cond_t cv;
    int ready;            /* workers done with warmup */
    bool go;              /* timed phase may start */
    bool abort;           /* setup failed: workers leave without timing */
    int next;             /* next request index to claim */
    long errors[N_STATUS_CODES + 1];
    rpc_status first_error[N_STATUS_CODES + 1];

    double *latency_ms;   /* per request index; NAN for a failed request */
    double *server_ms;    /* input + inference + composite time the response reported */
    double *input_ms;     /* input_time_ms: the server building the visual input */
} bench_ctx;

typedef struct {
    bench_ctx *ctx;
    grpc_channel *channel;
    pthread_t thread;
} bench_worker;

/* One request. The shared body is sent with a second, tiny slice holding
 * start_frame_idx: protobuf merges concatenated messages, so every request
 * composites different background frames without repacking 25 MB. Returns
 * the bucket (GRPC_STATUS_OK on success). */
static int bench_one(bench_ctx *ctx, grpc_channel *ch, int64_t start, rpc_status *st, double *server_ms,
                     double *input_ms) {
    Multitenant__CompositeBatchRequest tail = MULTITENANT__COMPOSITE_BATCH_REQUEST__INIT;
    tail.start_frame_idx = (int32_t)(start % INT32_MAX);
    uint8_t tail_buf[16]; /* tag + varint: at most 11 bytes */
    size_t tail_len = multitenant__composite_batch_request__pack(&tail, tail_buf);
    grpc_slice slices[2] = {ctx->body, grpc_slice_from_copied_buffer((const char *)tail_buf, tail_len)};

    grpc_slice raw;
    int rc = rpc_call(ch, SERVICE "InferBatchComposite", ctx->args->id, slices, 2, ctx->args->timeout_s, &raw,
                      st);
    grpc_slice_unref(slices[1]);
    if (rc != 0) return st->code;

    Multitenant__CompositeBatchResponse *resp = multitenant__composite_batch_response__unpack(
        NULL, GRPC_SLICE_LENGTH(raw), GRPC_SLICE_START_PTR(raw));
    grpc_slice_unref(raw);
    int bucket = GRPC_STATUS_OK;
    if (!resp) {
        status_set(st, GRPC_STATUS_INTERNAL, "malformed CompositeBatchResponse");
        bucket = GRPC_STATUS_INTERNAL;
    } else if (!resp->success || resp->n_composited_frames != (size_t)ctx->args->batch) {
        status_set(st, GRPC_STATUS_OK, "success=%d, %zu frames for batch %d: %s", resp->success,
                   resp->n_composited_frames, ctx->args->batch, resp->error);
        bucket = BAD_RESPONSE;
    } else {
        *server_ms = resp->input_time_ms + resp->inference_time_ms + resp->composite_time_ms;
        *input_ms = resp->input_time_ms;
    }
    if (resp) multitenant__composite_batch_response__free_unpacked(resp, NULL);
    return bucket;
}

static void bench_record_error(bench_ctx *ctx, int bucket, const rpc_status *st) {
    if (bucket < 0 || bucket > BAD_RESPONSE) bucket = GRPC_STATUS_UNKNOWN;
    pthread_mutex_lock(&ctx->mu);
    if (ctx->errors[bucket]++ == 0) ctx->first_error[bucket] = *st;
    pthread_mutex_unlock(&ctx->mu);
}

static void *bench_thread(void *arg) {
    bench_worker *w = arg;
    bench_ctx *ctx = w->ctx;
    rpc_status st;

    /* Warmup opens the connection and lets the server reach steady state
     * (model load, allocator); its results are not counted. */
    double server_ms, input_ms;
    for (int i = 0; i < ctx->args->warmup; i++) bench_one(ctx, w->channel, 0, &st, &server_ms, &input_ms);

    pthread_mutex_lock(&ctx->mu);
    ctx->ready++;
    pthread_cond_broadcast(&ctx->cv);
    while (!ctx->go) pthread_cond_wait(&ctx->cv, &ctx->mu);
    pthread_mutex_unlock(&ctx->mu);

    for (;;) {
        pthread_mutex_lock(&ctx->mu);
        int i = ctx->abort || ctx->next >= ctx->args->requests ? -1 : ctx->next++;
        pthread_mutex_unlock(&ctx->mu);
        if (i < 0) break;
        uint64_t t0 = ls_mono_ns();
        int bucket = bench_one(ctx, w->channel, (int64_t)i * ctx->args->batch, &st, &server_ms, &input_ms);
        double ms = (double)(ls_mono_ns() - t0) / 1e6;
        /* Each index is written by exactly one thread; join publishes it. */
        ctx->latency_ms[i] = bucket == GRPC_STATUS_OK ? ms : NAN;
        ctx->server_ms[i] = bucket == GRPC_STATUS_OK ? server_ms : NAN;
        ctx->input_ms[i] = bucket == GRPC_STATUS_OK ? input_ms : NAN;
        if (bucket != GRPC_STATUS_OK) bench_record_error(ctx, bucket, &st);
    }
    return NULL;
}

static void bench_report(const bench_ctx *ctx, double wall_s) {
    const cli_args *a = ctx->args;
    size_t n = (size_t)a->requests, ok = 0;
    double *sorted = malloc(n * sizeof *sorted);
    /* Per request: latency minus the input, inference and composite times
     * the server reported = what the transport and request handling cost. */
    double *over = malloc(n * sizeof *over), *share = malloc(n * sizeof *share);
    double *input = malloc(n * sizeof *input);
    if (sorted && over && share && input)
        for (size_t i = 0; i < n; i++)
            if (!isnan(ctx->latency_ms[i])) {
                over[ok] = ctx->latency_ms[i] - ctx->server_ms[i];
                share[ok] = over[ok] / ctx->latency_ms[i];
                input[ok] = ctx->input_ms[i];
                sorted[ok++] = ctx->latency_ms[i];
            }

    printf("bench %s: batch %d, %d requests, concurrency %d, warmup %d/thread, %s, tensors %s, visual %s\n",
           a->id, a->batch, a->requests, a->concurrency, a->warmup,
           a->channel_per_thread ? "one channel per thread" : "one shared channel", a->dtype ? a->dtype : "f32",
           a->client_visual ? "client" : "server");
    printf("  request    %zu bytes\n", GRPC_SLICE_LENGTH(ctx->body) + 6);
    printf("  wall       %.3f s, %zu ok\n", wall_s, ok);
    printf("  throughput %.2f requests/s, %.2f frames/s\n", (double)ok / wall_s,
           (double)ok * a->batch / wall_s);
    if (sorted && ok > 0) {
        qsort(sorted, ok, sizeof *sorted, cmp_double);
        double sum = 0;
        for (size_t i = 0; i < ok; i++) sum += sorted[i];
        printf("  latency ms p50 %.1f, p90 %.1f, p99 %.1f, max %.1f (mean %.1f)\n",
               percentile(sorted, ok, 50), percentile(sorted, ok, 90),
               percentile(sorted, ok, 99), sorted[ok - 1], sum / (double)ok);
        qsort(over, ok, sizeof *over, cmp_double);
        qsort(share, ok, sizeof *share, cmp_double);
        printf("  overhead   latency - input - inference - composite: p50 %.2f ms, %.1f%% of latency\n",
               percentile(over, ok, 50), 100.0 * percentile(share, ok, 50));
        qsort(input, ok, sizeof *input, cmp_double);
        printf("  input      server-built visual input: p50 %.2f ms\n", percentile(input, ok, 50));
    }
    free(input);
    free(sorted);
    free(over);
    free(share);

    long total = 0;
    for (int b = 0; b <= BAD_RESPONSE; b++) total += ctx->errors[b];
    printf("  errors     %ld", total);
    for (int b = 0; b <= BAD_RESPONSE; b++)
        if (ctx->errors[b])
            printf(" %s=%ld", b == BAD_RESPONSE ? "BAD_RESPONSE" : ls_status_name(b), ctx->errors[b]);
    printf("\n");
    for (int b = 0; b <= BAD_RESPONSE; b++)
        if (ctx->errors[b])
            fprintf(stderr, "error: %s: %s\n", b == BAD_RESPONSE ? "BAD_RESPONSE" : ls_status_name(b),
                    ctx->first_error[b].details);
}

static int cmd_bench(const client *c) {
    const cli_args *a = c->args;
    bench_ctx ctx = {.args = a, .shared = a->channel_per_thread ? NULL : c->channel};
    /* The body carries no start frame (0 is omitted); bench_one appends it. */
    int rc = build_request(a, a->batch, 0, &ctx.body);
    if (rc != 0) return rc;

    ctx.latency_ms = calloc((size_t)a->requests, sizeof *ctx.latency_ms);
    ctx.server_ms = calloc((size_t)a->requests, sizeof *ctx.server_ms);
    ctx.input_ms = calloc((size_t)a->requests, sizeof *ctx.input_ms);
    bench_worker *workers = calloc((size_t)a->concurrency, sizeof *workers);
    if (!ctx.latency_ms || !ctx.server_ms || !ctx.input_ms || !workers) {
        fprintf(stderr, "error: out of memory\n");
        free(ctx.latency_ms);
        free(ctx.server_ms);
        free(ctx.input_ms);
        free(workers);
        grpc_slice_unref(ctx.body);
        return EXIT_RPC;
    }
    pthread_mutex_init(&ctx.mu, NULL);
    pthread_cond_init(&ctx.cv, NULL);

    int started = 0;
    for (; started < a->concurrency; started++) {
        bench_worker *w = &workers[started];
        w->ctx = &ctx;
        w->channel = ctx.shared ? ctx.shared : channel_open(a->server, true);
        int err = pthread_create(&w->thread, NULL, bench_thread, w);
        if (err != 0) {
            fprintf(stderr, "error: pthread_create: %s\n", strerror(err));
            if (!ctx.shared) grpc_channel_destroy(w->channel);
            rc = EXIT_RPC;
            break;
        }
    }

    /* Start the clock once every worker has warmed up, so connection setup
     * and first-request costs stay out of the measurement. */
    pthread_mutex_lock(&ctx.mu);
    if (rc != 0) ctx.abort = true;
    while (!ctx.abort && ctx.ready < started) pthread_cond_wait(&ctx.cv, &ctx.mu);
    ctx.go = true;
    pthread_cond_broadcast(&ctx.cv);
    pthread_mutex_unlock(&ctx.mu);
    uint64_t t0 = ls_mono_ns();

    for (int i = 0; i < started; i++) {
        pthread_join(workers[i].thread, NULL);
        if (!ctx.shared) grpc_channel_destroy(workers[i].channel);
    }
    double wall_s = (double)(ls_mono_ns() - t0) / 1e9;

    if (rc == 0) {
        bench_report(&ctx, wall_s);
        for (int b = 0; b <= BAD_RESPONSE; b++)
            if (ctx.errors[b]) rc = EXIT_RPC;
    }
    pthread_cond_destroy(&ctx.cv);
    pthread_mutex_destroy(&ctx.mu);
    free(workers);
    free(ctx.latency_ms);
    free(ctx.server_ms);
    free(ctx.input_ms);
    grpc_slice_unref(ctx.body);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* main                                                                      */

typedef struct {
    const char *name;
    const struct option *opts;
    int min_pos, max_pos; /* positional arguments after the command (the id) */
    int default_batch;
    int (*run)(const client *);
} command;

static const command COMMANDS[] = {
    {"list", OPTS_PLAIN, 0, 0, 0, cmd_list},
    {"stats", OPTS_PLAIN, 0, 1, 0, cmd_stats},
    {"load", OPTS_LOAD, 1, 1, 0, cmd_load},
    {"unload", OPTS_PLAIN, 1, 1, 0, cmd_unload},
    {"health", OPTS_PLAIN, 0, 0, 0, cmd_health},
    {"infer", OPTS_INFER, 1, 1, 1, cmd_infer},
    {"bench", OPTS_BENCH, 1, 1, 5, cmd_bench},
    {"speak", OPTS_SPEAK, 1, 1, 5, cmd_speak},
    {"session", OPTS_SESSION, 1, 1, 5, cmd_session},
};

/* Parse the command's own arguments (argv[0] is the command name). Returns 0,
 * or the exit code to leave with (help or usage error). */
static int parse_command(const command *cmd, int argc, char **argv, cli_args *a) {
    a->batch = cmd->default_batch;
    /* glibc: optind = 0 reinitializes getopt for a new argument vector.
     * The default (permuting) mode lets options follow the model id. */
    optind = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "", cmd->opts, NULL)) != -1) {
        if (opt == '?') return usage_error(NULL);
        int rc = apply_option(a, opt, option_name(cmd->opts, opt), optarg);
        if (rc > 0) return EXIT_OK;
        if (rc < 0) return EXIT_USAGE;
    }
    int n_pos = argc - optind;
    if (n_pos < cmd->min_pos || n_pos > cmd->max_pos)
        return usage_error("%s: expected %s", cmd->name,
                           cmd->max_pos == 0 ? "no arguments"
                           : cmd->min_pos ? "a model ID" : "at most one model ID");
    if (n_pos > 0) {
        a->id = argv[optind];
        if (!*a->id) return usage_error("%s: empty model ID", cmd->name);
    }
    return -1; /* continue */
}

int main(int argc, char **argv) {
    cli_args args = {
        .server = DEFAULT_SERVER, .timeout_s = DEFAULT_TIMEOUT_S, .out_dir = ".",
        .requests = 50, .concurrency = 1, .warmup = 2,
    };

    /* Global options stop at the command name ("+"). */
    int opt;
    while ((opt = getopt_long(argc, argv, "+h", OPTS_PLAIN, NULL)) != -1) {
        if (opt == 'h') opt = OPT_HELP;
        if (opt == '?') return usage_error(NULL);
        int rc = apply_option(&args, opt, option_name(OPTS_PLAIN, opt), optarg);
        if (rc > 0) return EXIT_OK;
        if (rc < 0) return EXIT_USAGE;
    }
    if (optind >= argc) return usage_error("missing COMMAND");

    const command *cmd = NULL;
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (strcmp(argv[optind], COMMANDS[i].name) == 0) cmd = &COMMANDS[i];
    if (!cmd) return usage_error("unknown command '%s'", argv[optind]);

    int rc = parse_command(cmd, argc - optind, argv + optind, &args);
    if (rc >= 0) return rc;

    grpc_init();
    g_wait_for_ready = cmd->run == cmd_bench;
    client c = {.channel = channel_open(args.server, false), .args = &args};
    rc = cmd->run(&c);
    grpc_channel_destroy(c.channel);
    grpc_shutdown();
    return rc;
}
