/* service.h - the MultiTenantLipSync service: request decoding, validation,
 * and the calls into registry and model. Speaks protobuf (the wire format)
 * but not gRPC: the transport hands it bytes and takes bytes back. Both
 * transports (gRPC in transport.c, gRPC-Web in http.c) call the same method
 * table. The service records the request metrics (metrics.h).
 *
 * Request flow for InferBatchComposite:
 *   decode -> validate (model id, batch, start) -> registry acquire (may load)
 *   -> model infer (validate tensors, run, composite, encode) -> release
 *   (records usage) -> encode response. */
#ifndef LS_SERVICE_H
#define LS_SERVICE_H

#include "config.h"
#include "model.h"
#include "registry.h"
#include "transport.h"

typedef struct ls_service ls_service;

/* The model layer's description of a configured model mc of cfg (model.h):
 * its strings are mc's; its engine options cfg's engine section with mc's
 * execution_provider over it. What the registry's loader passes to
 * ls_model_load. */
ls_model_spec ls_service_model_spec(const ls_config *cfg, const ls_model_config *mc);

/* The provider mc runs on: its own execution_provider, else cfg's. */
ls_exec_provider ls_service_model_provider(const ls_config *cfg, const ls_model_config *mc);

/* cfg's engine section as engine options, on provider p. */
ls_engine_opts ls_service_engine_opts(const ls_config *cfg, ls_exec_provider p);

/* Build the registry for cfg's models (cfg must outlive the service). */
ls_service *ls_service_create(const ls_config *cfg, ls_err *err);
void ls_service_destroy(ls_service *s);

/* The gRPC service this module implements. */
#define LS_SERVICE_NAME "multitenant.MultiTenantLipSync"

/* The method table to give the transport (ctx = the service): the
 * MultiTenantLipSync methods and grpc.health.v1 Health/Check. */
const ls_method *ls_service_methods(size_t *n);

/* The streaming methods (ctx = the service): grpc.health.v1 Health/Watch
 * (health.h) and ServerReflectionInfo, v1alpha and v1 (reflection.h). */
const ls_stream_method *ls_service_stream_methods(size_t *n);

/* StreamSession's entry of that table: what the HTTP port's WebSocket runs. */
const ls_stream_method *ls_service_session_method(void);

/* Serving status of a grpc.health.v1 service name: "" or LS_SERVICE_NAME =
 * the server (1 once ls_service_ready, 0 while starting or draining); a
 * model id = 0 when its last load failed (state failed: until a load
 * succeeds or it is unloaded) or the server is draining, else 1 (loaded, or
 * loadable on first use). -1 with err: NOT_FOUND (unknown name),
 * PERMISSION_DENIED (auth on and call's key may not use that model; the
 * server's own name needs no key). */
int ls_service_serving(ls_service *s, const ls_call_info *call, const char *name, ls_err *err);

/* Load every `preload: true` model, in order; failures are logged and
 * recorded in the model's state. Marks the service ready when done. */
void ls_service_preload(ls_service *s);

/* Periodic work, called by the server's housekeeping thread: idle unload
 * sweep and the statistics report, each at its configured interval. */
void ls_service_tick(ls_service *s, uint64_t now_mono_ns);

/* Log the statistics report now. */
void ls_service_report(ls_service *s);

/* Apply a new config (SIGHUP): models added, removed (unloaded once their
 * requests end) or changed (unloaded, reloaded on next use); auth, max_batch
 * and png_level take effect for new requests. Settings fixed at start-up
 * (listen, tls, http, workers, capacity) only log a warning. Takes ownership
 * of next (heap-allocated) on success. */
int ls_service_reload(ls_service *s, ls_config *next, ls_err *err);

/* 1 once the preloads are done and until ls_service_drain (what /readyz
 * reports), else 0. */
int ls_service_ready(ls_service *s);

/* The server is stopping: not ready any more (Health says NOT_SERVING). */
void ls_service_drain(ls_service *s);

/* Append the Prometheus exposition (metrics.h: the service's recorded
 * counters and histograms plus a registry snapshot) to out. queue_depth is
 * the transports' count of requests waiting for a worker, which only they
 * know. Returns 0, or -1 with err set. */
int ls_service_metrics(ls_service *s, int queue_depth, ls_buf *out, ls_err *err);

#endif
