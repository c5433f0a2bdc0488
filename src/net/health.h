/* health.h - the standard gRPC health protocol (grpc.health.v1.Health) on the
 * gRPC port, for load balancers, Kubernetes gRPC probes and grpc_health_probe.
 *
 * Service names: "" and "multitenant.MultiTenantLipSync" are the server as a
 * whole, a configured model id is that model. Which name is serving is
 * not health's business: whoever wires the methods (service.c) hands in a
 * callback that says (ls_health_source). Check answers SERVING or NOT_SERVING, or the status NOT_FOUND for
 * an unknown name. Watch sends the current status at once, then a message
 * each time it changes, until the client cancels or the server stops; an
 * unknown name streams SERVICE_UNKNOWN (and the real status should the name
 * appear with a config reload). Watch polls every HEALTH_WATCH_POLL_MS on its
 * stream's own thread (transport.h): the states it follows (registry,
 * drain, config reload) change in several places that would otherwise each
 * need a notification hook, and a poll of one entry costs microseconds. When
 * the server stops, a watcher gets the final NOT_SERVING, then UNAVAILABLE.
 *
 * Speaks protobuf (grpc/health/v1/health.proto, generated at build time);
 * the transport hands it bytes and an ls_stream. */
#ifndef LS_HEALTH_H
#define LS_HEALTH_H

#include "transport.h"

#define HEALTH_WATCH_POLL_MS 200

/* Serving status of a service name for a call: 1 serving, 0 not serving,
 * or -1 with err (NOT_FOUND: unknown name; any other code ends a Watch with
 * it, e.g. PERMISSION_DENIED). */
typedef int (*ls_health_serving_fn)(void *ctx, const ls_call_info *call, const char *name, ls_err *err);

/* Where health learns the status: serving(ctx, ...). */
typedef struct {
    ls_health_serving_fn serving;
    void *ctx;
} ls_health_source;

/* Health/Check (unary). */
ls_code ls_health_check(const ls_health_source *src, const ls_call_info *call, const uint8_t *req, size_t len,
                        ls_buf *resp, ls_err *err);

/* Health/Watch (server streaming). */
ls_code ls_health_watch(const ls_health_source *src, const ls_call_info *call, ls_stream *s, ls_err *err);

#endif
