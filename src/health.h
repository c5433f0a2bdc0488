/* health.h - the standard gRPC health protocol (grpc.health.v1.Health) on the
 * gRPC port, for load balancers, Kubernetes gRPC probes and grpc_health_probe.
 *
 * Service names: "" and "multitenant.MultiTenantLipSync" are the server as a
 * whole, a configured model id is that model (ls_service_serving says what
 * each is). Check answers SERVING or NOT_SERVING, or the status NOT_FOUND for
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

/* Health/Check (unary); ctx = the ls_service. */
ls_code ls_health_check(void *ctx, const ls_call_info *call, const uint8_t *req, size_t len, ls_buf *resp,
                        ls_err *err);

/* Health/Watch (server streaming); ctx = the ls_service. */
ls_code ls_health_watch(void *ctx, const ls_call_info *call, ls_stream *s, ls_err *err);

#endif
