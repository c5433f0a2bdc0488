/* http.h - the HTTP/1.1 listener (libmicrohttpd).
 *
 * Serves, on one port:
 *  - gRPC-Web: POST <method path> with content-type application/grpc-web
 *    (+proto) or application/grpc-web-text (+proto; base64 both ways). The
 *    method paths and handlers are the same ls_method table the gRPC
 *    transport serves, so a browser reaches every RPC with the same
 *    validation, errors and metrics;
 *  - plain GET endpoints the caller lists (/metrics, /healthz, /readyz);
 *  - the static files under web_root (the demo page), "/" = index.html;
 *  - CORS for the configured origins (preflight and response headers);
 *  - GET /session upgraded to a WebSocket (ws.h): each binary message one
 *    serialized request in, one response out, the ws_session handler on a
 *    thread of its own. Refused before the upgrade: 426 without the upgrade
 *    headers or with a Sec-WebSocket-Version other than 13, 400 a malformed
 *    Sec-WebSocket-Key, 403 an Origin that is neither this host nor one of
 *    cors_origins, 503 while draining. A `token` query parameter becomes
 *    "authorization: Bearer <token>" (browsers cannot set headers on a
 *    WebSocket). The handler's status ends the connection as a close frame
 *    (ws.h: ls_ws_conn_close).
 * Like transport.h it knows HTTP, paths, bytes and threads, and nothing of
 * models.
 *
 * gRPC-Web outcomes (the HTTP status is 200 whenever a gRPC status is sent,
 * as gRPC-Web clients read the status from the trailer frame):
 *   handler result                   data frame (if the handler filled one) + trailer frame
 *                                    (grpc-status, grpc-message, x-request-id)
 *   body not one uncompressed frame  grpc-status 3 INVALID_ARGUMENT (bad base64, short or
 *                                    trailing bytes, compressed or trailer flags)
 *   message over max_message_bytes   grpc-status 8 RESOURCE_EXHAUSTED (either direction)
 *   unknown method                   grpc-status 12 UNIMPLEMENTED
 *   grpc-timeout passed while queued grpc-status 4 DEADLINE_EXCEEDED
 *   after ls_http_drain              grpc-status 14 UNAVAILABLE
 * Plain HTTP errors: 404 unknown path, 403 a static path outside the
 * allowed form (dot segments, odd characters: path traversal), 405 wrong
 * method, 415 POST to a method path without a gRPC-Web content type, 403 a
 * preflight from an origin not configured.
 *
 * Threads: libmicrohttpd's listening thread plus one thread per connection
 * (a handler may run an inference for seconds without stalling other
 * connections). At most max_concurrent_calls handlers run at once; further
 * calls wait (ls_http_queue_depth counts them), bounded by their grpc-timeout. */
#ifndef LS_HTTP_H
#define LS_HTTP_H

#include "common.h"
#include "transport.h" /* ls_method, ls_handler_fn, ls_call_info */

/* A GET (and HEAD) endpoint: append the body to *body, set *content_type
 * (a static string) and return the HTTP status. */
typedef int (*ls_http_get_fn)(void *ctx, ls_buf *body, const char **content_type);

typedef struct {
    const char *path;       /* exact, e.g. "/metrics" */
    ls_http_get_fn fn;
    void *ctx;
} ls_http_endpoint;

typedef struct {
    const char *listen;               /* host:port or [v6]:port; port 0 picks one */
    uint64_t max_message_bytes;       /* gRPC-Web message limit, both ways */
    int max_concurrent_calls;         /* gRPC-Web handlers running at once (>= 1) */
    const ls_method *methods;         /* not copied: must outlive the listener */
    size_t n_methods;
    void *ctx;                        /* passed to method handlers */
    const ls_http_endpoint *endpoints;/* not copied */
    size_t n_endpoints;
    const char *const *cors_origins;  /* exact Origin values, or "*"; copied */
    size_t n_cors_origins;
    const char *web_root;             /* static files; NULL or missing = none */
    /* GET /session with a WebSocket upgrade runs this streaming handler over
     * the connection (ws.h; NULL = no WebSocket endpoint). */
    const ls_stream_method *ws_session;
    int ws_ping_ms;                   /* keepalive ping after this much silence (0 = 20 s) */
} ls_http_opts;

typedef struct ls_http ls_http;

/* Bind and start serving. Error: UNAVAILABLE if the address cannot be bound
 * or resolved, INVALID_ARGUMENT for a malformed address. */
ls_http *ls_http_start(const ls_http_opts *opts, ls_err *err);

/* The bound port. */
int ls_http_port(const ls_http *h);

/* gRPC-Web calls received and waiting for a handler slot (0 for NULL). */
int ls_http_queue_depth(ls_http *h);

/* The server is stopping: new gRPC-Web calls get UNAVAILABLE; endpoints and
 * files are still served (a load balancer watching /readyz sees 503). */
void ls_http_drain(ls_http *h);

/* Close the listener, wait for running handlers, close connections and free
 * everything. NULL is a no-op. */
void ls_http_stop(ls_http *h);

#endif
