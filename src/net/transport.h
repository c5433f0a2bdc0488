/* transport.h - the gRPC server plumbing (gRPC C core).
 *
 * Knows HTTP/2, method paths, byte buffers, deadlines and threads; knows
 * nothing of models. A method is a path plus a handler that turns request
 * bytes into response bytes (or an error). One completion-queue thread
 * accepts calls and receives their messages; a pool of worker threads runs
 * the handlers, so a slow inference never stalls the acceptance of other
 * calls, and several requests are in flight at once.
 *
 * Lifecycle of a call (nginx-style phases):
 *   REQUESTED  (waiting in grpc_server_request_call)
 *   RECEIVING  (RECV_MESSAGE batch, and a RECV_CLOSE_ON_SERVER batch that
 *               completes only when the call ends, which is how a client's
 *               cancellation becomes visible)      -- cq thread
 *   queued (bounded: overflow is RESOURCE_EXHAUSTED at once)
 *   -> a worker skips calls already cancelled or past their deadline,
 *      else runs the handler                       -- worker thread
 *   SENDING    (initial metadata + message + status) -- any thread
 *   done: everything the call took is freed when both the send batch and
 *   the close batch have completed.
 *
 * Streaming methods (client-, server- or bidirectional streaming) are a
 * second table: such a call gets its own thread as soon as it arrives (no
 * message is received for it first) and keeps it until its handler returns,
 * so long-lived streams never occupy the worker pool. The handler receives
 * and sends with blocking primitives; each starts one gRPC batch with a
 * per-call tag and sleeps until the completion-queue thread signals that
 * tag's completion. At most max_streams streams run at once; a stream beyond
 * that gets RESOURCE_EXHAUSTED at once. ls_transport_stop wakes every stream
 * (ls_stream_stopping), lets them end for up to a second, cancels the rest
 * (UNAVAILABLE) and joins their threads. */
#ifndef LS_TRANSPORT_H
#define LS_TRANSPORT_H

#include <stdatomic.h>

#include "common.h"
#include "stream.h"

/* Facts about the call a handler may use. */
typedef struct {
    const char *method;        /* full path, e.g. "/multitenant.MultiTenantLipSync/ListModels" */
    uint64_t received_mono_ns; /* when the request message had arrived */
    const atomic_int *cancelled; /* becomes non-zero if the client cancels or goes away */
    const char *authorization;   /* the "authorization" metadata value, or NULL */
    const char *routing_model;   /* the "x-model-id" metadata value, or NULL: the key a load
                                  * balancer routes by (the service checks it against the body) */
    const char *request_id;      /* unique per call; in its log lines and x-request-id trailer */
} ls_call_info;

/* Fill *resp (may stay empty) and return LS_OK, or return an error code with
 * err->msg set; on error a non-empty *resp is still sent before the status
 * (clients of the described system read success/error from the body). */
typedef ls_code (*ls_handler_fn)(void *ctx, const ls_call_info *call, const uint8_t *req, size_t len,
                                 ls_buf *resp, ls_err *err);

/* The same for large messages, without copies: the request arrives as the
 * list of gRPC's slices and the reply leaves as a list of owned pieces (each
 * becomes one slice, freed by gRPC once sent). */
typedef ls_code (*ls_span_handler_fn)(void *ctx, const ls_call_info *call, const ls_span *req, size_t n_spans,
                                      ls_reply *resp, ls_err *err);

/* A server-streaming method: one request, a sequence of responses. The
 * handler hands each response to emit, which returns 0 once the transport
 * has taken it, or -1 when the client has gone (the handler then stops and
 * returns), and returns the final status. */
typedef int (*ls_emit_fn)(void *emit_ctx, const uint8_t *msg, size_t len);
typedef ls_code (*ls_server_stream_fn)(void *ctx, const ls_call_info *call, const uint8_t *req, size_t len,
                                       ls_emit_fn emit, void *emit_ctx, ls_err *err);

typedef struct {
    const char *path;
    ls_handler_fn fn;          /* unary: always set (other transports call it with flat bytes) */
    ls_span_handler_fn fn_spans; /* optional: preferred by the gRPC transport */
    /* Server streaming instead (fn NULL): gRPC-Web runs it on the connection's
     * thread; on the gRPC port the same path is a streaming method (the
     * service lists an ls_stream_method that reads the one request and calls
     * this). */
    ls_server_stream_fn fn_server_stream;
} ls_method;

/* One streaming call, seen from its handler's thread (stream.h: the same
 * contract the WebSocket transport implements). */

/* Handler of a streaming method: runs on the call's own thread. Receive and
 * send with stream.h's primitives, then return the status (err->msg set for
 * an error); the transport sends it. call->received_mono_ns is the time the
 * call arrived. Return promptly once ls_stream_stopping says so. */
typedef ls_code (*ls_stream_fn)(void *ctx, const ls_call_info *call, ls_stream *s, ls_err *err);

typedef struct {
    const char *path;
    ls_stream_fn fn;
} ls_stream_method;

/* The entry of table (n methods) whose path is the len bytes at path, or
 * NULL. Both transports look methods up with it. */
const ls_method *ls_method_find(const ls_method *table, size_t n, const char *path, size_t len);

typedef struct {
    const char *listen;          /* host:port */
    uint64_t max_message_bytes;  /* receive and send limit */
    int workers;                 /* >= 1 */
    int max_queue;               /* received calls waiting for a worker; beyond it a new
                                  * call gets RESOURCE_EXHAUSTED at once (0 = unbounded) */
    const ls_method *methods;    /* not copied: must outlive the transport */
    size_t n_methods;
    const ls_stream_method *streams; /* streaming methods; not copied either */
    size_t n_streams;
    int max_streams;             /* streams running at once (0 = 32); beyond it
                                  * a new stream gets RESOURCE_EXHAUSTED */
    void *ctx;                   /* passed to handlers */
    /* TLS: PEM text; all NULL = plaintext. client_ca_pem set = clients must
     * present a certificate signed by it (mutual TLS). */
    const char *tls_cert_pem;
    const char *tls_key_pem;
    const char *tls_client_ca_pem;
    /* Connection hygiene (milliseconds; 0 = gRPC's default). keepalive: a
     * PING after this much silence on a connection with a call in progress,
     * and the connection closed when its ACK does not come within
     * keepalive_timeout (dead peers of long sessions are found);
     * max_connection_idle: a connection without a call for this long gets
     * GOAWAY (one that never sends a request is not kept forever). */
    int keepalive_ms, keepalive_timeout_ms, max_connection_idle_ms;
} ls_transport_opts;

typedef struct ls_transport ls_transport;

/* Bind and start serving. Error: UNAVAILABLE if the address cannot be bound. */
ls_transport *ls_transport_start(const ls_transport_opts *opts, ls_err *err);

/* The bound port (useful with port 0). */
int ls_transport_port(const ls_transport *t);

/* Received calls waiting for a worker right now. */
int ls_transport_queue_depth(ls_transport *t);

/* Stop accepting calls, let in-flight calls finish for up to grace_s seconds,
 * cancel the rest, join all threads and free everything. Streams are woken
 * at once and cancelled after at most a second (or at once when grace_s is
 * 0): a Watch never ends by itself. */
void ls_transport_stop(ls_transport *t, double grace_s);

#endif
