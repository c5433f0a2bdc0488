/* transport.c - see transport.h. */
#define _GNU_SOURCE
#include "transport.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* How many grpc_server_request_call slots wait for new calls at once. More
 * than one lets a burst of new calls be accepted without a round trip
 * through the completion queue per call. */
#define PENDING_ACCEPTS 8

typedef enum { ST_REQUESTED, ST_RECEIVING, ST_SENDING } call_state;

struct call;
/* A completion-queue tag: which call, and which of its two concurrent
 * batches (the main sequence or the close watcher) completed. */
typedef struct {
    struct call *c;
    int is_close;
} call_tag;

typedef struct call {
    ls_transport *t;
    call_state state;
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
} call;

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
};

static void call_free(call *c) {
    if (c->recv) grpc_byte_buffer_destroy(c->recv);
    if (c->send) grpc_byte_buffer_destroy(c->send);
    if (c->has_status_details) grpc_slice_unref(c->status_details);
    grpc_metadata_array_destroy(&c->req_md);
    grpc_call_details_destroy(&c->details);
    if (c->call) grpc_call_unref(c->call);
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
    c->main_tag = (call_tag){c, 0};
    c->close_tag = (call_tag){c, 1};
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

/* Final batch: initial metadata, optional message, status, and close. */
static void finish(call *c, ls_code code, const char *msg, ls_buf *body) {
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    int n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (body && body->len) {
        /* Hand the buffer to gRPC without copying: the slice frees it. */
        grpc_slice s = grpc_slice_new(body->data, body->len, free);
        body->data = NULL;
        body->len = body->cap = 0;
        c->send = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->send;
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

static const ls_method *find_method(const ls_transport *t, grpc_slice path) {
    size_t len = GRPC_SLICE_LENGTH(path);
    const uint8_t *p = GRPC_SLICE_START_PTR(path);
    for (size_t i = 0; i < t->opts.n_methods; i++) {
        const char *m = t->opts.methods[i].path;
        if (strlen(m) == len && memcmp(m, p, len) == 0) return &t->opts.methods[i];
    }
    return NULL;
}

/* Worker: run the handler for one received call. */
static void handle(call *c) {
    ls_transport *t = c->t;
    char path[256];
    size_t plen = GRPC_SLICE_LENGTH(c->details.method);
    if (plen >= sizeof path) plen = sizeof path - 1;
    memcpy(path, GRPC_SLICE_START_PTR(c->details.method), plen);
    path[plen] = 0;

    const ls_method *m = find_method(t, c->details.method);
    if (!m) {
        char msg[320];
        snprintf(msg, sizeof msg, "unknown method %s", path);
        finish(c, (ls_code)GRPC_STATUS_UNIMPLEMENTED, msg, NULL);
        return;
    }
    /* A call the client gave up on while it waited is not worth running. */
    if (atomic_load(&c->closed_cancelled)) {
        finish(c, LS_CANCELLED, "cancelled by the client before it was run", NULL);
        return;
    }
    /* Nor is one whose deadline passed while it waited. */
    if (gpr_time_cmp(gpr_convert_clock_type(c->details.deadline, GPR_CLOCK_MONOTONIC),
                     gpr_now(GPR_CLOCK_MONOTONIC)) < 0) {
        finish(c, LS_DEADLINE_EXCEEDED, "deadline passed before the request was run", NULL);
        return;
    }
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, c->recv)) {
        finish(c, LS_INTERNAL, "cannot read request message", NULL);
        return;
    }
    grpc_slice req = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    grpc_byte_buffer_destroy(c->recv);
    c->recv = NULL;

    /* The one piece of metadata a handler may need; copied so it is a C string. */
    char auth[512];
    const char *authorization = NULL;
    for (size_t i = 0; i < c->req_md.count; i++) {
        const grpc_metadata *md = &c->req_md.metadata[i];
        if (grpc_slice_str_cmp(md->key, "authorization") == 0) {
            size_t n = GRPC_SLICE_LENGTH(md->value);
            if (n >= sizeof auth) n = sizeof auth - 1;
            memcpy(auth, GRPC_SLICE_START_PTR(md->value), n);
            auth[n] = 0;
            authorization = auth;
            break;
        }
    }
    ls_call_info info = {.method = path,
                         .received_mono_ns = c->received_ns,
                         .cancelled = &c->closed_cancelled,
                         .authorization = authorization,
                         .request_id = c->request_id};
    ls_buf resp = {0};
    ls_err err = {.code = LS_OK, .msg = ""};
    ls_log_set_request(c->request_id);
    ls_code code = m->fn(t->opts.ctx, &info, GRPC_SLICE_START_PTR(req), GRPC_SLICE_LENGTH(req), &resp, &err);
    grpc_slice_unref(req);
    if (code != LS_OK) LOG_WARN("%s -> %s: %s", path, ls_code_name(code), err.msg);
    ls_log_set_request(NULL);
    finish(c, code, code == LS_OK ? NULL : err.msg, &resp);
    ls_buf_free(&resp);
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

static void on_event(ls_transport *t, call_tag *tag, int ok) {
    call *c = tag->c;
    if (tag->is_close) {
        /* The call is over for gRPC: finished normally, or cancelled. */
        atomic_store(&c->closed_cancelled, c->cancelled || !ok);
        call_put(c);
        return;
    }
    switch (c->state) {
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
        grpc_op close_op;
        memset(&close_op, 0, sizeof close_op);
        close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        close_op.data.recv_close_on_server.cancelled = &c->cancelled;
        if (grpc_call_start_batch(c->call, &close_op, 1, &c->close_tag, NULL) != GRPC_CALL_OK) call_put(c);
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
        /* Unique within the process and unlikely to repeat across restarts:
         * the start time's low bits, then a counter. */
        snprintf(c->request_id, sizeof c->request_id, "%06x-%08llx", t->id_prefix & 0xffffff,
                 (unsigned long long)atomic_fetch_add(&t->next_id, 1));
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

ls_transport *ls_transport_start(const ls_transport_opts *opts, ls_err *err) {
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

    int limit = opts->max_message_bytes > (uint64_t)INT32_MAX ? INT32_MAX : (int)opts->max_message_bytes;
    grpc_arg args[2];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = limit;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = limit;
    grpc_channel_args cargs = {.num_args = 2, .args = args};

    t->server = grpc_server_create(&cargs, NULL);
    t->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(t->server, t->cq, NULL);
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
        ls_err_set(err, LS_UNAVAILABLE, "cannot listen on %s (address in use or invalid)", opts->listen);
        grpc_server_destroy(t->server);
        grpc_completion_queue_shutdown(t->cq);
        while (grpc_completion_queue_next(t->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(t->cq);
        pthread_mutex_destroy(&t->lock);
        pthread_cond_destroy(&t->work_cond);
        pthread_cond_destroy(&t->done_cond);
        free(t);
        return NULL;
    }
    grpc_server_start(t->server);
    for (int i = 0; i < PENDING_ACCEPTS; i++) accept_one(t);

    t->n_workers = opts->workers > 0 ? opts->workers : 1;
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
    return t;
}

int ls_transport_port(const ls_transport *t) { return t->port; }

void ls_transport_stop(ls_transport *t, double grace_s) {
    if (!t) return;
    pthread_mutex_lock(&t->lock);
    t->shutting_down = 1;
    pthread_mutex_unlock(&t->lock);
    grpc_server_shutdown_and_notify(t->server, t->cq, &t->shutdown_tag);

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

    grpc_server_destroy(t->server);
    grpc_completion_queue_shutdown(t->cq);
    pthread_join(t->cq_thread, NULL);
    grpc_completion_queue_destroy(t->cq);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->work_cond);
    pthread_cond_destroy(&t->done_cond);
    free(t);
}
