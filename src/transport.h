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
 *   the close batch have completed. */
#ifndef LS_TRANSPORT_H
#define LS_TRANSPORT_H

#include <stdatomic.h>

#include "common.h"

/* Facts about the call a handler may use. */
typedef struct {
    const char *method;        /* full path, e.g. "/multitenant.MultiTenantLipSync/ListModels" */
    uint64_t received_mono_ns; /* when the request message had arrived */
    const atomic_int *cancelled; /* becomes non-zero if the client cancels or goes away */
    const char *authorization;   /* the "authorization" metadata value, or NULL */
    const char *request_id;      /* unique per call; in its log lines and x-request-id trailer */
} ls_call_info;

/* Fill *resp (may stay empty) and return LS_OK, or return an error code with
 * err->msg set; on error a non-empty *resp is still sent before the status
 * (clients of the described system read success/error from the body). */
typedef ls_code (*ls_handler_fn)(void *ctx, const ls_call_info *call, const uint8_t *req, size_t len,
                                 ls_buf *resp, ls_err *err);

typedef struct {
    const char *path;
    ls_handler_fn fn;
} ls_method;

typedef struct {
    const char *listen;          /* host:port */
    uint64_t max_message_bytes;  /* receive and send limit */
    int workers;                 /* >= 1 */
    int max_queue;               /* received calls waiting for a worker; beyond it a new
                                  * call gets RESOURCE_EXHAUSTED at once (0 = unbounded) */
    const ls_method *methods;    /* not copied: must outlive the transport */
    size_t n_methods;
    void *ctx;                   /* passed to handlers */
    /* TLS: PEM text; all NULL = plaintext. client_ca_pem set = clients must
     * present a certificate signed by it (mutual TLS). */
    const char *tls_cert_pem;
    const char *tls_key_pem;
    const char *tls_client_ca_pem;
} ls_transport_opts;

typedef struct ls_transport ls_transport;

/* Bind and start serving. Error: UNAVAILABLE if the address cannot be bound. */
ls_transport *ls_transport_start(const ls_transport_opts *opts, ls_err *err);

/* The bound port (useful with port 0). */
int ls_transport_port(const ls_transport *t);

/* Received calls waiting for a worker right now. */
int ls_transport_queue_depth(ls_transport *t);

/* Stop accepting calls, let in-flight calls finish for up to grace_s seconds,
 * cancel the rest, join all threads and free everything. */
void ls_transport_stop(ls_transport *t, double grace_s);

#endif
