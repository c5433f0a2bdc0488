/* health.c - see health.h. */
#define _GNU_SOURCE
#include "health.h"

#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"

typedef Grpc__Health__V1__HealthCheckResponse__ServingStatus serving_status;

static ls_code bad_request(ls_err *err) {
    ls_err_set(err, LS_INVALID_ARGUMENT, "malformed message (not a grpc.health.v1.HealthCheckRequest)");
    return LS_INVALID_ARGUMENT;
}

static ls_code pack_status(serving_status st, ls_buf *out, ls_err *err) {
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = st;
    size_t n = protobuf_c_message_get_packed_size(&r.base);
    out->len = 0;
    if (ls_buf_reserve(out, n + 1) != 0) {
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory");
        return LS_RESOURCE_EXHAUSTED;
    }
    out->len = protobuf_c_message_pack(&r.base, out->data);
    return LS_OK;
}

ls_code ls_health_check(const ls_health_source *src, const ls_call_info *call, const uint8_t *req, size_t len,
                        ls_buf *resp, ls_err *err) {
    Grpc__Health__V1__HealthCheckRequest *q = grpc__health__v1__health_check_request__unpack(NULL, len, req);
    if (!q) return bad_request(err);
    int serving = src->serving(src->ctx, call, q->service, err);
    grpc__health__v1__health_check_request__free_unpacked(q, NULL);
    if (serving < 0) return err->code;
    return pack_status(serving ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                               : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING,
                       resp, err);
}

ls_code ls_health_watch(const ls_health_source *src, const ls_call_info *call, ls_stream *s, ls_err *err) {
    ls_buf msg = {0};
    int got = ls_stream_recv(s, &msg);
    if (got <= 0) {
        ls_buf_free(&msg);
        if (got == 0) return bad_request(err);
        ls_err_set(err, LS_CANCELLED, "cancelled before the request arrived");
        return LS_CANCELLED;
    }
    static const uint8_t empty[1];
    Grpc__Health__V1__HealthCheckRequest *q =
        grpc__health__v1__health_check_request__unpack(NULL, msg.len, msg.data ? msg.data : empty);
    if (!q) {
        ls_buf_free(&msg);
        return bad_request(err);
    }
    ls_code code = LS_OK;
    int last = -1;
    for (;;) {
        /* Read before the evaluation: the service stops serving before the
         * transport stops, so a status evaluated after this says so. */
        int stopping = ls_stream_stopping(s);
        ls_err e = {.code = LS_OK, .msg = ""};
        int serving = src->serving(src->ctx, call, q->service, &e);
        serving_status st;
        if (serving > 0) {
            st = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
        } else if (serving == 0) {
            st = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
        } else if (e.code == LS_NOT_FOUND) {
            st = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
        } else { /* PERMISSION_DENIED, or something broken: the watch ends with it */
            *err = e;
            code = e.code;
            break;
        }
        if ((int)st != last) {
            if ((code = pack_status(st, &msg, err)) != LS_OK) break;
            if (ls_stream_send(s, msg.data, msg.len) != 0) {
                code = ls_stream_stopping(s) ? LS_UNAVAILABLE : LS_CANCELLED;
                ls_err_set(err, code, "%s", code == LS_UNAVAILABLE ? "server shutting down" : "cancelled by the client");
                break;
            }
            last = (int)st;
        }
        if (stopping) { /* evaluated after the stop began: the final status */
            ls_err_set(err, LS_UNAVAILABLE, "server shutting down");
            code = LS_UNAVAILABLE;
            break;
        }
        /* Woken early: the server is stopping (evaluate once more, above),
         * or the client cancelled. */
        if (ls_stream_wait(s, HEALTH_WATCH_POLL_MS) && !ls_stream_stopping(s)) {
            ls_err_set(err, LS_CANCELLED, "cancelled by the client");
            code = LS_CANCELLED;
            break;
        }
    }
    grpc__health__v1__health_check_request__free_unpacked(q, NULL);
    ls_buf_free(&msg);
    return code;
}
