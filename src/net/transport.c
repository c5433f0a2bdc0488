/* transport.c - see transport.h. */
#define _GNU_SOURCE
#include "transport.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <assert.h>
#include <pthread.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* How many grpc_server_request_call slots wait for new calls at once. More
 * than one lets a burst of new calls be accepted without a round trip
 * through the completion queue per call. */
#define PENDING_ACCEPTS 8

/* Streams running at once unless opts.max_streams says otherwise, and how
 * long ls_transport_stop lets woken streams end by themselves. */
#define DEFAULT_MAX_STREAMS 32
#define STREAM_STOP_MS 1000

typedef enum { ST_REQUESTED, ST_RECEIVING, ST_SENDING } call_state;

struct call;
/* Which of a call's concurrent batches completed: the main sequence, the
 * close watcher, or (streaming calls) a stream's receive or send. */
typedef enum { TAG_MAIN, TAG_CLOSE, TAG_RECV, TAG_SEND } tag_kind;
/* A completion-queue tag: which call, and which of its batches. */
typedef struct {
    struct call *c;
    tag_kind kind;
} call_tag;

typedef struct call {
    ls_transport *t;
    _Atomic(call_state) state;  /* set by whichever thread starts a batch, read by the cq thread */
    call_tag main_tag, close_tag;
    int pending;                /* batches outstanding + 1 while a worker holds the call; under t->lock */
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array req_md;
    grpc_byte_buffer *recv;
    int cancelled;              /* written by gRPC when RECV_CLOSE_ON_SERVER completes */
    atomic_int closed_cancelled; /* published from the cq thread after that completion */
    uint64_t received_ns;
    grpc_slice status_details;
    int has_status_details;
    grpc_byte_buffer *send;
    char request_id[24];
    grpc_metadata trailer;      /* x-request-id */
    struct call *next;          /* worker queue */
    struct gstream *stream;     /* streaming calls only */
    int sent_initial_md;        /* a stream's first send carried the initial metadata */
} call;

/* A streaming call's rendezvous between its thread and the cq thread. */
typedef struct gstream {
    ls_stream base;             /* first: handlers see this */
    call *c;
    const ls_stream_method *m;
    call_tag recv_tag, send_tag;
    pthread_mutex_t mu;
    pthread_cond_t cond;        /* an op completed, the call closed, or the server is stopping */
    int recv_done, recv_ok;     /* under mu: the receive batch completed, and how */
    int send_done, send_ok;
    int in_recv;                /* under mu: a receive is outstanding */
    int closed;                 /* under mu: the close watcher completed (cancelled or broken) */
    int stopping;               /* under mu: ls_transport_stop has begun */
    grpc_byte_buffer *recv_buf; /* the stream thread's own, between batches */
    grpc_byte_buffer *send_buf;
} gstream;

/* One of max_streams places for a stream's thread. */
typedef struct {
    pthread_t thread;
    call *c;                    /* the stream's call while its thread runs; under t->lock */
    int busy;                   /* claimed, its thread not finished yet; under t->lock */
    int joinable;               /* a thread was started here and not joined yet; under t->lock */
} stream_slot;

struct ls_transport {
    ls_transport_opts opts;
    grpc_server *server;
    grpc_completion_queue *cq;
    int port;
    pthread_t cq_thread;
    pthread_t *workers;
    int n_workers;

    pthread_mutex_t lock;
    pthread_cond_t work_cond;   /* queue non-empty or stopping */
    pthread_cond_t done_cond;   /* shutdown notified */
    call *head, *tail;          /* FIFO of received calls */
    int queued;                 /* length of that FIFO */
    int stopping_workers;
    int shutting_down;          /* no new accepts */
    int shutdown_notified;
    int shutdown_tag;           /* its address is the shutdown tag */
    unsigned id_prefix;         /* request ids: prefix + counter */
    atomic_ullong next_id;
    stream_slot *slots;         /* max_streams of them */
    int max_streams;
    int n_streams;              /* busy slots; under lock */
};

static void stream_free(gstream *s) {
    if (!s) return;
    if (s->recv_buf) grpc_byte_buffer_destroy(s->recv_buf);
    if (s->send_buf) grpc_byte_buffer_destroy(s->send_buf);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
    free(s);
}

static void call_free(call *c) {
    if (c->recv) grpc_byte_buffer_destroy(c->recv);
    if (c->send) grpc_byte_buffer_destroy(c->send);
    if (c->has_status_details) grpc_slice_unref(c->status_details);
    grpc_metadata_array_destroy(&c->req_md);
    grpc_call_details_destroy(&c->details);
    if (c->call) grpc_call_unref(c->call);
    stream_free(c->stream);
    free(c);
}

/* Drop one of the call's references (an outstanding batch, or a worker's
 * hold); the last one frees it. */
static void call_put(call *c) {
    ls_transport *t = c->t;
    pthread_mutex_lock(&t->lock);
    int left = --c->pending;
    pthread_mutex_unlock(&t->lock);
    if (left == 0) call_free(c);
}

static void accept_one(ls_transport *t) {
    call *c = calloc(1, sizeof *c);
    if (!c) {
        LOG_ERROR("transport: out of memory accepting a call");
        return;
    }
    c->t = t;
    c->state = ST_REQUESTED;
    c->main_tag = (call_tag){c, TAG_MAIN};
    c->close_tag = (call_tag){c, TAG_CLOSE};
    c->pending = 1;
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->req_md);
    grpc_call_error e =
        grpc_server_request_call(t->server, &c->call, &c->details, &c->req_md, t->cq, t->cq, &c->main_tag);
    if (e != GRPC_CALL_OK) {
        LOG_ERROR("transport: grpc_server_request_call failed (%d)", (int)e);
        call_free(c);
    }
}

/* Final batch: initial metadata (unless a stream sent it already), optional
 * message (the reply's pieces back to back), status, and close. */
static void finish_reply(call *c, ls_code code, const char *msg, ls_reply *body) {
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    int n = 0;
    if (!c->sent_initial_md) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (body && ls_reply_len(body)) {
        /* Hand the buffers to gRPC without copying: each slice frees its own. */
        grpc_slice one, *slices = body->n > 1 ? malloc(body->n * sizeof *slices) : &one;
        size_t k = 0;
        if (slices) {
            for (size_t i = 0; i < body->n; i++) {
                ls_buf *b = &body->pieces[i];
                if (!b->len) continue;
                slices[k++] = grpc_slice_new(b->data, b->len, free);
                b->data = NULL;
                b->len = b->cap = 0;
            }
            c->send = grpc_raw_byte_buffer_create(slices, k);
            for (size_t i = 0; i < k; i++) grpc_slice_unref(slices[i]);
            if (slices != &one) free(slices);
            ops[n].op = GRPC_OP_SEND_MESSAGE;
            ops[n++].data.send_message.send_message = c->send;
        } else {
            code = LS_RESOURCE_EXHAUSTED;
            msg = "out of memory sending the response";
        }
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)code;
    if (c->request_id[0]) {
        c->trailer.key = grpc_slice_from_static_string("x-request-id");
        c->trailer.value = grpc_slice_from_static_string(c->request_id);
        ops[n].data.send_status_from_server.trailing_metadata_count = 1;
        ops[n].data.send_status_from_server.trailing_metadata = &c->trailer;
    }
    if (msg && *msg) {
        c->status_details = grpc_slice_from_copied_string(msg);
        c->has_status_details = 1;
        ops[n].data.send_status_from_server.status_details = &c->status_details;
    }
    n++;
    c->state = ST_SENDING;
    pthread_mutex_lock(&c->t->lock);
    c->pending++;
    pthread_mutex_unlock(&c->t->lock);
    grpc_call_error e = grpc_call_start_batch(c->call, ops, (size_t)n, &c->main_tag, NULL);
    if (e != GRPC_CALL_OK) {
        LOG_ERROR("transport: final batch failed (%d)", (int)e);
        call_put(c);
    }
}

static void finish(call *c, ls_code code, const char *msg, ls_buf *body) {
    ls_reply r = {0};
    if (body && body->len && ls_reply_take(&r, body) != 0) {
        code = LS_RESOURCE_EXHAUSTED;
        msg = "out of memory sending the response";
    }
    finish_reply(c, code, msg, &r);
    ls_reply_free(&r);
}

static int slice_is(grpc_slice s, const char *str) {
    size_t len = GRPC_SLICE_LENGTH(s);
    return strlen(str) == len && memcmp(str, GRPC_SLICE_START_PTR(s), len) == 0;
}

const ls_method *ls_method_find(const ls_method *table, size_t n, const char *path, size_t len) {
    for (size_t i = 0; i < n; i++)
        if (strlen(table[i].path) == len && memcmp(table[i].path, path, len) == 0) return &table[i];
    return NULL;
}

static const ls_method *find_method(const ls_transport *t, grpc_slice path) {
    return ls_method_find(t->opts.methods, t->opts.n_methods, (const char *)GRPC_SLICE_START_PTR(path),
                          GRPC_SLICE_LENGTH(path));
}

static const ls_stream_method *find_stream_method(const ls_transport *t, grpc_slice path) {
    for (size_t i = 0; i < t->opts.n_streams; i++)
        if (slice_is(path, t->opts.streams[i].path)) return &t->opts.streams[i];
    return NULL;
}

/* The call's method path as a C string (truncated to fit). */
static void call_path(const call *c, char *path, size_t size) {
    size_t plen = GRPC_SLICE_LENGTH(c->details.method);
    if (plen >= size) plen = size - 1;
    memcpy(path, GRPC_SLICE_START_PTR(c->details.method), plen);
    path[plen] = 0;
}

/* A piece of metadata a handler may need (ls_call_info), copied so it is a
 * C string (truncated to fit); NULL when absent. */
static const char *call_metadata(const call *c, const char *key, char *auth, size_t size) {
    for (size_t i = 0; i < c->req_md.count; i++) {
        const grpc_metadata *md = &c->req_md.metadata[i];
        if (grpc_slice_str_cmp(md->key, key) == 0) {
            size_t n = GRPC_SLICE_LENGTH(md->value);
            if (n >= size) n = size - 1;
            memcpy(auth, GRPC_SLICE_START_PTR(md->value), n);
            auth[n] = 0;
            return auth;
        }
    }
    return NULL;
}

/* What a handler learns of its call (ls_call_info), unary or streaming; the
 * metadata strings live in the caller's *st. */
typedef struct {
    char auth[512], model[160];
} call_strings;

static ls_call_info call_info(call *c, const char *path, call_strings *st) {
    return (ls_call_info){.method = path,
                          .received_mono_ns = c->received_ns,
                          .cancelled = &c->closed_cancelled,
                          .authorization = call_metadata(c, "authorization", st->auth, sizeof st->auth),
                          .routing_model = call_metadata(c, "x-model-id", st->model, sizeof st->model),
                          .request_id = c->request_id};
}

/* Unique within the process and unlikely to repeat across restarts: the
 * start time's low bits, then a counter. */
static void assign_request_id(ls_transport *t, call *c) {
    snprintf(c->request_id, sizeof c->request_id, "%06x-%08llx", t->id_prefix & 0xffffff,
             (unsigned long long)atomic_fetch_add(&t->next_id, 1));
}

/* The message's own slices as spans, no flattening: the handler copies
 * what it needs exactly once. They live until the byte buffer is freed.
 * *spans is spans_small or a malloc'ed list (the caller frees it when it is
 * not spans_small); -1 when out of memory. */
static int read_spans(grpc_byte_buffer_reader *reader, ls_span *spans_small, ls_span **spans, size_t *n_out) {
    size_t n = 0, cap = 16;
    grpc_slice *sl;
    *spans = spans_small;
    while (grpc_byte_buffer_reader_peek(reader, &sl)) {
        if (n == cap) {
            ls_span *p = malloc(cap * 2 * sizeof *p);
            if (!p) return -1;
            memcpy(p, *spans, n * sizeof *p);
            if (*spans != spans_small) free(*spans);
            *spans = p;
            cap *= 2;
        }
        (*spans)[n].p = GRPC_SLICE_START_PTR(*sl);
        (*spans)[n].n = GRPC_SLICE_LENGTH(*sl);
        n++;
    }
    *n_out = n;
    return 0;
}

/* Run m's handler on the received message: the span handler when there is
 * one, else the flat one (whose reply becomes the reply's only piece). */
static ls_code run_handler(call *c, const ls_method *m, const ls_call_info *info, grpc_byte_buffer_reader *reader,
                           ls_reply *reply, ls_err *err) {
    void *ctx = c->t->opts.ctx;
    ls_code code;
    if (m->fn_spans) {
        ls_span spans_small[16], *spans;
        size_t n = 0;
        if (read_spans(reader, spans_small, &spans, &n) != 0) {
            ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory reading the request");
            code = LS_RESOURCE_EXHAUSTED;
        } else {
            code = m->fn_spans(ctx, info, spans, n, reply, err);
        }
        if (spans != spans_small) free(spans);
    } else {
        grpc_slice req = grpc_byte_buffer_reader_readall(reader);
        ls_buf resp = {0};
        code = m->fn(ctx, info, GRPC_SLICE_START_PTR(req), GRPC_SLICE_LENGTH(req), &resp, err);
        grpc_slice_unref(req);
        if (resp.len && ls_reply_take(reply, &resp) != 0) ls_buf_free(&resp);
    }
    return code;
}

/* Whether a received call is still worth running: a unary method of the
 * table, not cancelled by the client and not past its deadline while it
 * waited. If not, it has been finished here with the reason. */
static const ls_method *admit(call *c, const char *path) {
    const ls_method *m = find_method(c->t, c->details.method);
    if (m && !m->fn) m = NULL; /* server streaming: served from the stream table, never here */
    if (!m) {
        char msg[320];
        snprintf(msg, sizeof msg, "unknown method %s", path);
        finish(c, (ls_code)GRPC_STATUS_UNIMPLEMENTED, msg, NULL);
        return NULL;
    }
    /* A call the client gave up on while it waited is not worth running. */
    if (atomic_load(&c->closed_cancelled)) {
        finish(c, LS_CANCELLED, "cancelled by the client before it was run", NULL);
        return NULL;
    }
    /* Nor is one whose deadline passed while it waited. */
    if (gpr_time_cmp(gpr_convert_clock_type(c->details.deadline, GPR_CLOCK_MONOTONIC),
                     gpr_now(GPR_CLOCK_MONOTONIC)) < 0) {
        finish(c, LS_DEADLINE_EXCEEDED, "deadline passed before the request was run", NULL);
        return NULL;
    }
    return m;
}

/* Worker: run the handler for one received call.
 * admit -> read (call info, message) -> run -> reply. */
static void handle(call *c) {
    char path[256];
    call_path(c, path, sizeof path);
    const ls_method *m = admit(c, path);
    if (!m) return;
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, c->recv)) {
        finish(c, LS_INTERNAL, "cannot read request message", NULL);
        return;
    }
    call_strings strings;
    ls_call_info info = call_info(c, path, &strings);
    ls_err err = {.code = LS_OK, .msg = ""};
    ls_reply reply = {0};
    ls_log_set_request(c->request_id);
    ls_code code = run_handler(c, m, &info, &reader, &reply, &err);
    grpc_byte_buffer_reader_destroy(&reader);
    grpc_byte_buffer_destroy(c->recv);
    c->recv = NULL;
    if (code != LS_OK) LOG_WARN("%s -> %s: %s", path, ls_code_name(code), err.msg);
    ls_log_set_request(NULL);
    finish_reply(c, code, code == LS_OK ? NULL : err.msg, &reply);
    ls_reply_free(&reply);
}

static void *worker_main(void *arg) {
    ls_transport *t = arg;
    pthread_mutex_lock(&t->lock);
    for (;;) {
        while (!t->head && !t->stopping_workers) pthread_cond_wait(&t->work_cond, &t->lock);
        if (!t->head) break;
        call *c = t->head;
        t->head = c->next;
        if (!t->head) t->tail = NULL;
        t->queued--;
        pthread_mutex_unlock(&t->lock);
        handle(c);
        call_put(c); /* the worker's hold */
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

/* Queue a received call for the workers; the queue holds a reference.
 * Returns 0, or -1 when the queue is full. */
static int enqueue(ls_transport *t, call *c) {
    pthread_mutex_lock(&t->lock);
    if (t->opts.max_queue > 0 && t->queued >= t->opts.max_queue) {
        pthread_mutex_unlock(&t->lock);
        return -1;
    }
    c->pending++;
    t->queued++;
    c->next = NULL;
    if (t->tail)
        t->tail->next = c;
    else
        t->head = c;
    t->tail = c;
    pthread_cond_signal(&t->work_cond);
    pthread_mutex_unlock(&t->lock);
    return 0;
}

int ls_transport_queue_depth(ls_transport *t) {
    pthread_mutex_lock(&t->lock);
    int n = t->queued;
    pthread_mutex_unlock(&t->lock);
    return n;
}

/* ---- streaming calls ----
 *
 * A stream's thread starts one batch at a time per direction, with the
 * stream's receive or send tag, and sleeps on the stream's condition until
 * the cq thread reports that tag's completion (stream_event). The thread
 * holds the call's reference that grpc_server_request_call held, so the
 * call outlives every batch it starts. */

static int g_recv(ls_stream *bs, ls_buf *msg);
static int g_send_timeout(ls_stream *bs, const uint8_t *data, size_t len, int timeout_ms);
static int g_cancelled(ls_stream *bs);
static int g_stopping(ls_stream *bs);
static int g_wait(ls_stream *bs, int timeout_ms);
static const ls_stream_ops gstream_ops = {g_recv, g_send_timeout, g_cancelled, g_stopping, g_wait};

static gstream *stream_new(call *c, const ls_stream_method *m) {
    gstream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->base.ops = &gstream_ops;
    s->c = c;
    s->m = m;
    s->recv_tag = (call_tag){c, TAG_RECV};
    s->send_tag = (call_tag){c, TAG_SEND};
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    return s;
}

/* cq thread: a stream's batch completed, or its call closed. */
static void stream_event(gstream *s, tag_kind kind, int ok) {
    pthread_mutex_lock(&s->mu);
    if (kind == TAG_RECV) {
        s->recv_done = 1;
        s->recv_ok = ok;
    } else if (kind == TAG_SEND) {
        s->send_done = 1;
        s->send_ok = ok;
    } else {
        s->closed = 1;
    }
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

/* Start ops with tag and wait for their completion: 0 ok, -1 failed.
 * *started says whether gRPC accepted the batch. */
/* Start a batch and wait for it. timeout_ms > 0: past it the call is
 * cancelled with DEADLINE_EXCEEDED and `stall_msg`, the batch then completes
 * unsuccessfully, and -2 is returned. */
static int stream_batch(gstream *s, const grpc_op *ops, size_t n, call_tag *tag, int *done, int *ok,
                        int *started, int timeout_ms, const char *stall_msg) {
    pthread_mutex_lock(&s->mu);
    *done = 0;
    pthread_mutex_unlock(&s->mu);
    *started = grpc_call_start_batch(s->c->call, ops, n, tag, NULL) == GRPC_CALL_OK;
    if (!*started) return -1;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    int stalled = 0;
    pthread_mutex_lock(&s->mu);
    while (!*done) {
        if (timeout_ms <= 0 || stalled) {
            pthread_cond_wait(&s->cond, &s->mu);
        } else if (pthread_cond_timedwait(&s->cond, &s->mu, &until) == ETIMEDOUT && !*done) {
            stalled = 1;
            pthread_mutex_unlock(&s->mu);
            grpc_call_cancel_with_status(s->c->call, GRPC_STATUS_DEADLINE_EXCEEDED, stall_msg, NULL);
            pthread_mutex_lock(&s->mu);
        }
    }
    int rc = stalled ? -2 : *ok ? 0 : -1;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int g_recv(ls_stream *bs, ls_buf *msg) {
    gstream *s = (gstream *)bs;
    msg->len = 0;
    pthread_mutex_lock(&s->mu);
    int stopping = s->stopping;
    if (!stopping) s->in_recv = 1; /* ls_transport_stop cancels a stream waiting here */
    pthread_mutex_unlock(&s->mu);
    if (stopping) return -1;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->recv_buf;
    int started;
    int rc = stream_batch(s, &op, 1, &s->recv_tag, &s->recv_done, &s->recv_ok, &started, 0, NULL);
    pthread_mutex_lock(&s->mu);
    s->in_recv = 0;
    pthread_mutex_unlock(&s->mu);
    if (rc != 0) return -1;
    /* No message: a half-close, or a call that failed (peer gone, cancelled),
     * which the close watcher reports, usually by now. */
    if (!s->recv_buf) return atomic_load(&s->c->closed_cancelled) ? -1 : 0;
    grpc_byte_buffer_reader reader;
    int got = grpc_byte_buffer_reader_init(&reader, s->recv_buf);
    if (got) {
        grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        got = ls_buf_append(msg, GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all)) == 0;
        grpc_slice_unref(all);
    }
    grpc_byte_buffer_destroy(s->recv_buf);
    s->recv_buf = NULL;
    return got ? 1 : -1;
}

static int g_send_timeout(ls_stream *bs, const uint8_t *data, size_t len, int timeout_ms) {
    gstream *s = (gstream *)bs;
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)data, len);
    s->send_buf = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!s->c->sent_initial_md) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = s->send_buf;
    int started;
    char msg[96];
    snprintf(msg, sizeof msg, "the client did not read the stream for %d ms (stall timeout)", timeout_ms);
    int rc = stream_batch(s, ops, n, &s->send_tag, &s->send_done, &s->send_ok, &started, timeout_ms, msg);
    if (started) s->c->sent_initial_md = 1;
    grpc_byte_buffer_destroy(s->send_buf);
    s->send_buf = NULL;
    return rc;
}

static int g_cancelled(ls_stream *bs) { return atomic_load(&((gstream *)bs)->c->closed_cancelled); }

static int g_stopping(ls_stream *bs) {
    gstream *s = (gstream *)bs;
    pthread_mutex_lock(&s->mu);
    int r = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return r;
}

static int g_wait(ls_stream *bs, int timeout_ms) {
    gstream *s = (gstream *)bs;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    if (timeout_ms < 0) timeout_ms = 0;
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    while (!s->stopping && !s->closed)
        if (pthread_cond_timedwait(&s->cond, &s->mu, &until) != 0) break;
    int woken = s->stopping || s->closed;
    pthread_mutex_unlock(&s->mu);
    return woken;
}

/* A stream's own thread: run the handler, send its status, free the slot. */
static void *stream_main(void *arg) {
    stream_slot *sl = arg;
    call *c = sl->c; /* set before this thread was created */
    ls_transport *t = c->t;
    gstream *s = c->stream;
    char path[256];
    call_path(c, path, sizeof path);
    call_strings strings;
    ls_call_info info = call_info(c, path, &strings);
    ls_err err = {.code = LS_OK, .msg = ""};
    ls_log_set_request(c->request_id);
    ls_code code = s->m->fn(t->opts.ctx, &info, &s->base, &err);
    if (code != LS_OK && !ls_stream_cancelled(&s->base) && !ls_stream_stopping(&s->base))
        LOG_WARN("%s -> %s: %s", path, ls_code_name(code), err.msg);
    ls_log_set_request(NULL);
    finish(c, code, code == LS_OK ? NULL : err.msg, NULL);
    pthread_mutex_lock(&t->lock);
    sl->c = NULL;
    sl->busy = 0;
    t->n_streams--;
    pthread_cond_broadcast(&t->done_cond);
    pthread_mutex_unlock(&t->lock);
    call_put(c); /* the thread's hold */
    return NULL;
}

/* cq thread: give a newly arrived streaming call a thread of its own. The
 * reference grpc_server_request_call held becomes the thread's hold. */
static void start_stream(ls_transport *t, call *c) {
    stream_slot *sl = NULL;
    int need_join = 0;
    pthread_mutex_lock(&t->lock);
    int stopping = t->shutting_down;
    for (int i = 0; !stopping && i < t->max_streams; i++)
        if (!t->slots[i].busy) {
            sl = &t->slots[i];
            break;
        }
    if (sl) {
        sl->busy = 1;
        sl->c = c;
        need_join = sl->joinable; /* its previous thread has finished: reap it */
        sl->joinable = 0;
        t->n_streams++;
    }
    pthread_mutex_unlock(&t->lock);
    if (!sl) {
        if (stopping) {
            finish(c, LS_UNAVAILABLE, "server shutting down", NULL);
        } else {
            char msg[160];
            snprintf(msg, sizeof msg, "server busy: %d streams already open", t->max_streams);
            LOG_WARN("rejecting a stream: %s", msg);
            finish(c, LS_RESOURCE_EXHAUSTED, msg, NULL);
        }
        call_put(c);
        return;
    }
    if (need_join) pthread_join(sl->thread, NULL);
    int started = pthread_create(&sl->thread, NULL, stream_main, sl) == 0;
    pthread_mutex_lock(&t->lock);
    if (started) {
        sl->joinable = 1;
    } else {
        sl->c = NULL;
        sl->busy = 0;
        t->n_streams--;
        pthread_cond_broadcast(&t->done_cond);
    }
    pthread_mutex_unlock(&t->lock);
    if (!started) {
        LOG_ERROR("transport: cannot start a thread for a stream");
        finish(c, LS_UNAVAILABLE, "cannot start a thread for the stream", NULL);
        call_put(c);
    }
}

/* Cancel the running streams (all, or only those waiting for a client
 * message) with UNAVAILABLE. Called with t->lock held; the calls are
 * referenced under it and cancelled after it is released. */
static void cancel_streams_locked(ls_transport *t, int only_receiving, grpc_call **calls) {
    int n = 0;
    for (int i = 0; i < t->max_streams; i++) {
        call *c = t->slots[i].busy ? t->slots[i].c : NULL;
        if (!c) continue;
        pthread_mutex_lock(&c->stream->mu);
        int receiving = c->stream->in_recv;
        pthread_mutex_unlock(&c->stream->mu);
        if (only_receiving && !receiving) continue;
        grpc_call_ref(c->call);
        calls[n++] = c->call;
    }
    pthread_mutex_unlock(&t->lock);
    for (int i = 0; i < n; i++) {
        grpc_call_cancel_with_status(calls[i], GRPC_STATUS_UNAVAILABLE, "server shutting down", NULL);
        grpc_call_unref(calls[i]);
    }
    pthread_mutex_lock(&t->lock);
}

/* First step of a stop: wake every stream, cancel those that cannot react
 * (waiting for a client message) and, after up to STREAM_STOP_MS (never more
 * than the grace period), the rest. New streams are refused already. */
static void stop_streams(ls_transport *t, double grace_s) {
    grpc_call **calls = calloc((size_t)t->max_streams, sizeof *calls);
    pthread_mutex_lock(&t->lock);
    for (int i = 0; i < t->max_streams; i++) {
        call *c = t->slots[i].busy ? t->slots[i].c : NULL;
        if (!c) continue;
        pthread_mutex_lock(&c->stream->mu);
        c->stream->stopping = 1;
        pthread_cond_broadcast(&c->stream->cond);
        pthread_mutex_unlock(&c->stream->mu);
    }
    if (t->n_streams > 0 && calls) {
        cancel_streams_locked(t, 1, calls);
        double wait_s = grace_s < STREAM_STOP_MS / 1000.0 ? grace_s : STREAM_STOP_MS / 1000.0;
        gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                          gpr_time_from_millis((int64_t)(wait_s * 1000), GPR_TIMESPAN));
        struct timespec ts = {.tv_sec = until.tv_sec, .tv_nsec = until.tv_nsec};
        while (t->n_streams > 0)
            if (pthread_cond_timedwait(&t->done_cond, &t->lock, &ts) != 0) break;
        if (t->n_streams > 0) {
            LOG_INFO("transport: cancelling %d open stream(s)", t->n_streams);
            cancel_streams_locked(t, 0, calls);
        }
    }
    pthread_mutex_unlock(&t->lock);
    free(calls);
}

/* Last step of a stop: every stream has ended; reap their threads. */
static void join_streams(ls_transport *t) {
    for (int i = 0; i < t->max_streams; i++) {
        pthread_mutex_lock(&t->lock);
        int joinable = t->slots[i].joinable;
        t->slots[i].joinable = 0;
        pthread_mutex_unlock(&t->lock);
        if (joinable) pthread_join(t->slots[i].thread, NULL);
    }
}

static void on_event(ls_transport *t, call_tag *tag, int ok) {
    call *c = tag->c;
    if (tag->kind == TAG_RECV || tag->kind == TAG_SEND) {
        stream_event(c->stream, tag->kind, ok); /* the stream's thread holds the call */
        return;
    }
    if (tag->kind == TAG_CLOSE) {
        /* The call is over for gRPC: finished normally, or cancelled. */
        atomic_store(&c->closed_cancelled, c->cancelled || !ok);
        if (c->stream) stream_event(c->stream, TAG_CLOSE, ok);
        call_put(c);
        return;
    }
    switch (atomic_load(&c->state)) {
    case ST_REQUESTED: {
        if (!ok) { /* server shutting down: the slot is returned unused */
            call_put(c);
            return;
        }
        pthread_mutex_lock(&t->lock);
        int accept_more = !t->shutting_down;
        c->pending++; /* the close watcher below */
        pthread_mutex_unlock(&t->lock);
        if (accept_more) accept_one(t);
        const ls_stream_method *sm = find_stream_method(t, c->details.method);
        if (sm) c->stream = stream_new(c, sm);
        grpc_op close_op;
        memset(&close_op, 0, sizeof close_op);
        close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        close_op.data.recv_close_on_server.cancelled = &c->cancelled;
        if (grpc_call_start_batch(c->call, &close_op, 1, &c->close_tag, NULL) != GRPC_CALL_OK) call_put(c);
        if (sm) {
            c->received_ns = ls_mono_ns();
            assign_request_id(t, c);
            if (c->stream) {
                start_stream(t, c);
            } else {
                finish(c, LS_RESOURCE_EXHAUSTED, "out of memory starting a stream", NULL);
                call_put(c);
            }
            return;
        }
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &c->recv;
        c->state = ST_RECEIVING;
        /* This batch reuses the reference request_call held. */
        if (grpc_call_start_batch(c->call, &op, 1, &c->main_tag, NULL) != GRPC_CALL_OK) call_put(c);
        return;
    }
    case ST_RECEIVING:
        if (!ok || !c->recv) {
            /* Client went away or half-closed without a message. */
            finish(c, LS_INVALID_ARGUMENT, "expected exactly one request message", NULL);
            call_put(c);
            return;
        }
        c->received_ns = ls_mono_ns();
        assign_request_id(t, c);
        if (enqueue(t, c) != 0) {
            char msg[160];
            snprintf(msg, sizeof msg, "server busy: %d requests already waiting (server.max_queue)",
                     t->opts.max_queue);
            LOG_WARN("rejecting a call: %s", msg);
            finish(c, LS_RESOURCE_EXHAUSTED, msg, NULL);
        }
        call_put(c); /* the receive batch's reference; the queue or the send batch holds its own */
        return;
    case ST_SENDING:
        call_put(c);
        return;
    }
}

static void *cq_main(void *arg) {
    ls_transport *t = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(t->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        if (ev.tag == &t->shutdown_tag) {
            pthread_mutex_lock(&t->lock);
            t->shutdown_notified = 1;
            pthread_cond_broadcast(&t->done_cond);
            pthread_mutex_unlock(&t->lock);
            continue;
        }
        on_event(t, ev.tag, ev.success);
    }
    return NULL;
}

/* Free a transport whose server never started (ls_transport_start failed). */
static void transport_free_unstarted(ls_transport *t) {
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->work_cond);
    pthread_cond_destroy(&t->done_cond);
    free(t->slots);
    free(t);
}

/* The transport's own state: locks, request ids, the stream slots. */
static ls_transport *transport_new(const ls_transport_opts *opts, ls_err *err) {
    ls_transport *t = calloc(1, sizeof *t);
    if (!t) {
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory starting the server");
        return NULL;
    }
    t->opts = *opts;
    t->id_prefix = (unsigned)(ls_wall_ms() ^ (int64_t)getpid() << 12);
    atomic_init(&t->next_id, 1);
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->work_cond, NULL);
    pthread_cond_init(&t->done_cond, NULL);
    t->max_streams = opts->max_streams > 0 ? opts->max_streams : DEFAULT_MAX_STREAMS;
    t->slots = calloc((size_t)t->max_streams, sizeof *t->slots);
    if (!t->slots) {
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory starting the server");
        transport_free_unstarted(t);
        return NULL;
    }
    return t;
}

/* The gRPC server (message limits, stream window) and its completion queue. */
static void create_server(ls_transport *t) {
    const ls_transport_opts *opts = &t->opts;
    int limit = opts->max_message_bytes > (uint64_t)INT32_MAX ? INT32_MAX : (int)opts->max_message_bytes;
    grpc_arg args[8];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = limit;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = limit;
    /* Requests are megabytes (12.5 MB at batch 5). With HTTP/2's default
     * 64 KiB stream window the client stalls for a window update every
     * 64 KiB until BDP probing has grown it; a large initial window lets a
     * whole request flow at once. */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES;
    args[2].value.integer = 64 * 1024 * 1024;
    /* Tried and left at gRPC's defaults (2026-11, loopback, batch-5 uint8
     * requests, `lipsync bench` overhead p50 over 3 interleaved rounds of
     * 100): GRPC_ARG_HTTP2_MAX_FRAME_SIZE 4 MiB on both ends 4.73/5.30/5.64
     * ms and GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE 256 KiB 4.86/6.09/4.59 ms vs
     * 4.65/4.63/5.88 ms without; no gain above the round-to-round noise. */
    size_t n = 3;
    const struct {
        const char *key;
        int value;
    } hygiene[] = {
        {GRPC_ARG_KEEPALIVE_TIME_MS, opts->keepalive_ms},
        {GRPC_ARG_KEEPALIVE_TIMEOUT_MS, opts->keepalive_timeout_ms},
        /* Pings only on connections with calls (gRPC's default): an idle
         * client's library may not be reading its socket (gRPC Python polls
         * only during calls, C-core's backup poller every 5 s) and would be
         * dropped for a late ACK; max_connection_idle takes care of
         * connections without calls. Clients may ping as often as the
         * server does without being told "too many pings". */
        {GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, opts->keepalive_ms},
        {GRPC_ARG_MAX_CONNECTION_IDLE_MS, opts->max_connection_idle_ms},
    };
    for (size_t i = 0; i < sizeof hygiene / sizeof hygiene[0]; i++) {
        if (!hygiene[i].value) continue;
        assert(n < sizeof args / sizeof args[0]);
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = (char *)hygiene[i].key;
        args[n].value.integer = hygiene[i].value;
        n++;
    }
    grpc_channel_args cargs = {.num_args = n, .args = args};

    t->server = grpc_server_create(&cargs, NULL);
    t->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(t->server, t->cq, NULL);
}

/* Bind opts.listen, plaintext or TLS (mutual with a client CA). 0 if it
 * cannot be bound; the server and queue are then destroyed. */
static int bind_port(ls_transport *t) {
    const ls_transport_opts *opts = &t->opts;
    grpc_server_credentials *creds;
    if (opts->tls_cert_pem && opts->tls_key_pem) {
        grpc_ssl_pem_key_cert_pair pair = {.private_key = opts->tls_key_pem, .cert_chain = opts->tls_cert_pem};
        creds = grpc_ssl_server_credentials_create_ex(
            opts->tls_client_ca_pem, &pair, 1,
            opts->tls_client_ca_pem ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                    : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            NULL);
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    t->port = grpc_server_add_http2_port(t->server, opts->listen, creds);
    grpc_server_credentials_release(creds);
    if (t->port == 0) {
        grpc_server_destroy(t->server);
        grpc_completion_queue_shutdown(t->cq);
        while (grpc_completion_queue_next(t->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(t->cq);
    }
    return t->port;
}

/* The workers and the completion-queue thread. */
static void start_threads(ls_transport *t, ls_err *err) {
    t->n_workers = t->opts.workers > 0 ? t->opts.workers : 1;
    t->workers = calloc((size_t)t->n_workers, sizeof *t->workers);
    int started = 0;
    for (int i = 0; t->workers && i < t->n_workers; i++)
        if (pthread_create(&t->workers[i], NULL, worker_main, t) == 0) started++;
    t->n_workers = started;
    if (pthread_create(&t->cq_thread, NULL, cq_main, t) != 0 || started == 0) {
        /* Not recoverable in a sane way; report and let the caller exit. */
        ls_err_set(err, LS_INTERNAL, "cannot start server threads");
        LOG_ERROR("transport: cannot start threads");
        abort();
    }
}

/* new -> create server -> bind -> start (accept slots, threads). */
ls_transport *ls_transport_start(const ls_transport_opts *opts, ls_err *err) {
    ls_transport *t = transport_new(opts, err);
    if (!t) return NULL;
    create_server(t);
    if (bind_port(t) == 0) {
        ls_err_set(err, LS_UNAVAILABLE, "cannot listen on %s (address in use or invalid)", opts->listen);
        transport_free_unstarted(t);
        return NULL;
    }
    grpc_server_start(t->server);
    for (int i = 0; i < PENDING_ACCEPTS; i++) accept_one(t);
    start_threads(t, err);
    return t;
}

int ls_transport_port(const ls_transport *t) { return t->port; }

void ls_transport_stop(ls_transport *t, double grace_s) {
    if (!t) return;
    pthread_mutex_lock(&t->lock);
    t->shutting_down = 1;
    pthread_mutex_unlock(&t->lock);
    grpc_server_shutdown_and_notify(t->server, t->cq, &t->shutdown_tag);
    stop_streams(t, grace_s);

    /* In-flight calls finish on their own; past the grace period, cancel. */
    gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                      gpr_time_from_millis((int64_t)(grace_s * 1000), GPR_TIMESPAN));
    struct timespec ts = {.tv_sec = until.tv_sec, .tv_nsec = until.tv_nsec};
    pthread_mutex_lock(&t->lock);
    while (!t->shutdown_notified)
        if (pthread_cond_timedwait(&t->done_cond, &t->lock, &ts) != 0) break;
    int done = t->shutdown_notified;
    pthread_mutex_unlock(&t->lock);
    if (!done) {
        LOG_WARN("transport: grace period over, cancelling remaining calls");
        grpc_server_cancel_all_calls(t->server);
        pthread_mutex_lock(&t->lock);
        while (!t->shutdown_notified) pthread_cond_wait(&t->done_cond, &t->lock);
        pthread_mutex_unlock(&t->lock);
    }

    pthread_mutex_lock(&t->lock);
    t->stopping_workers = 1;
    pthread_cond_broadcast(&t->work_cond);
    pthread_mutex_unlock(&t->lock);
    for (int i = 0; i < t->n_workers; i++) pthread_join(t->workers[i], NULL);
    free(t->workers);
    join_streams(t);
    free(t->slots);

    grpc_server_destroy(t->server);
    grpc_completion_queue_shutdown(t->cq);
    pthread_join(t->cq_thread, NULL);
    grpc_completion_queue_destroy(t->cq);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->work_cond);
    pthread_cond_destroy(&t->done_cond);
    free(t);
}
