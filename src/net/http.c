/* http.c - see http.h.
 *
 * libmicrohttpd calls on_request several times per request: once when the
 * headers are in (*req_cls still NULL: an rpc_req is made), once per piece
 * of body, and once more with nothing left to upload, when the request is
 * answered: a gRPC-Web call from its collected body, anything else (GET,
 * HEAD, OPTIONS, a POST that is not gRPC-Web) by dispatch_plain. */
#define _GNU_SOURCE
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "ws.h"

/* Each connection is a thread; a browser opens at most six per origin, so
 * this only bounds misbehaving clients. */
#define MAX_CONNECTIONS 128
/* Idle keep-alive connections (and stalled uploads) are closed after this. */
#define CONNECTION_TIMEOUT_S 120
#define FRAME_HDR 5
#define FLAG_COMPRESSED 0x01
#define FLAG_TRAILER 0x80
#define MAX_STATIC_PATH 512

static const char ALLOW_HEADERS[] =
    "x-grpc-web, content-type, x-user-agent, grpc-timeout, authorization, x-model-id";
static const char EXPOSE_HEADERS[] = "grpc-status, grpc-message, x-request-id";

struct ls_http {
    ls_http_opts opts;
    char **origins;           /* copies of opts.cors_origins */
    size_t n_origins;
    char *web_root;           /* realpath of opts.web_root, or NULL: no static files */
    size_t web_root_len;
    struct MHD_Daemon *d;
    int port;
    atomic_int draining;
    unsigned id_prefix;       /* request ids: "<prefix>-w<counter>" ('w': gRPC-Web) */
    atomic_ullong next_id;

    /* Handler slots: at most opts.max_concurrent_calls handlers at once. */
    pthread_mutex_t lock;
    pthread_cond_t slot_cond; /* CLOCK_MONOTONIC, so grpc-timeout deadlines apply */
    int running, waiting;
    int streams;              /* server-streaming calls whose thread still runs */
    int ws_threads;           /* WebSocket sessions whose thread still runs */
    atomic_int ws_stopping;   /* ls_http_stop has begun: sessions end */
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    LOG_WARN("http: %s", msg);
}

/* The request's Origin if it is one of the configured origins, else NULL
 * (no CORS headers: same-origin only). */
static const char *allowed_origin(const ls_http *h, struct MHD_Connection *c) {
    const char *o = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ORIGIN);
    if (!o) return NULL;
    for (size_t i = 0; i < h->n_origins; i++)
        if (!strcmp(h->origins[i], "*") || !strcmp(h->origins[i], o)) return o;
    return NULL;
}

static void add_cors(const ls_http *h, struct MHD_Connection *c, struct MHD_Response *r) {
    /* Vary always: the answer depends on Origin whether or not it matched. */
    if (h->n_origins) MHD_add_response_header(r, "Vary", "Origin");
    const char *o = allowed_origin(h, c);
    if (!o) return;
    MHD_add_response_header(r, "Access-Control-Allow-Origin", o);
    MHD_add_response_header(r, "Access-Control-Expose-Headers", EXPOSE_HEADERS);
}

/* Queue r (NULL: out of memory, the connection is dropped) and release it. */
static enum MHD_Result queue(const ls_http *h, struct MHD_Connection *c, unsigned status,
                             struct MHD_Response *r) {
    if (!r) return MHD_NO;
    add_cors(h, c, r);
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

/* A short plain-text answer; allow (may be NULL) fills the Allow header of a 405. */
static enum MHD_Result send_text(const ls_http *h, struct MHD_Connection *c, unsigned status,
                                 const char *text, const char *allow) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (r) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
        if (allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    }
    return queue(h, c, status, r);
}

static const ls_method *find_method(const ls_http *h, const char *path) {
    return ls_method_find(h->opts.methods, h->opts.n_methods, path, strlen(path));
}

/* ------------------------------------------------------------------------ */
/* gRPC-Web                                                                  */
/* ------------------------------------------------------------------------ */

/* Content type of a gRPC-Web call: 0 binary, 1 text (base64), -1 neither.
 * Parameters after ';' are ignored. */
static int grpcweb_kind(const char *ct) {
    if (!ct) return -1;
    size_t n = strcspn(ct, ";");
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) n--;
    static const char *const bin[] = {"application/grpc-web", "application/grpc-web+proto"};
    static const char *const txt[] = {"application/grpc-web-text", "application/grpc-web-text+proto"};
    for (int i = 0; i < 2; i++) {
        if (strlen(bin[i]) == n && !strncasecmp(ct, bin[i], n)) return 0;
        if (strlen(txt[i]) == n && !strncasecmp(ct, txt[i], n)) return 1;
    }
    return -1;
}

/* grpc-timeout: 1..8 digits and a unit (H M S m u n). Returns nanoseconds,
 * 0 when absent or malformed (no deadline, as gRPC servers treat it). */
static uint64_t parse_timeout(const char *v) {
    if (!v) return 0;
    size_t digits = strspn(v, "0123456789");
    if (digits < 1 || digits > 8 || strlen(v) != digits + 1) return 0;
    uint64_t n = strtoull(v, NULL, 10), mul;
    switch (v[digits]) {
    case 'H': mul = 3600000000000ull; break;
    case 'M': mul = 60000000000ull; break;
    case 'S': mul = 1000000000ull; break;
    case 'm': mul = 1000000ull; break;
    case 'u': mul = 1000ull; break;
    case 'n': mul = 1ull; break;
    default: return 0;
    }
    uint64_t ns = n * mul; /* at most 99999999 h = 3.6e20: clamp below */
    if (ns / mul != n) ns = UINT64_MAX / 2;
    return ns ? ns : 1;
}

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decode standard base64 in place. gRPC-Web clients may send several
 * separately padded chunks, so '=' may end any quad, not only the last.
 * Returns the decoded length, or -1 if the text is not base64. */
static long b64_decode_inplace(uint8_t *s, size_t n) {
    if (n % 4) return -1;
    size_t out = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && k >= 2) {
                pad++;
                v[k] = 0;
                continue;
            }
            if (pad) return -1; /* data after padding inside a quad */
            if ((v[k] = b64_value(s[i + k])) < 0) return -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        s[out++] = (uint8_t)(w >> 16);
        if (pad < 2) s[out++] = (uint8_t)(w >> 8);
        if (pad < 1) s[out++] = (uint8_t)w;
    }
    return (long)out;
}

static void b64_encode(const uint8_t *in, size_t n, char *out) {
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t w = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = A[w >> 18];
        out[o++] = A[(w >> 12) & 63];
        out[o++] = A[(w >> 6) & 63];
        out[o++] = A[w & 63];
    }
    if (i < n) {
        uint32_t w = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = A[w >> 18];
        out[o++] = A[(w >> 12) & 63];
        out[o++] = i + 1 < n ? A[(w >> 6) & 63] : '=';
        out[o++] = '=';
    }
}

static void frame_header(uint8_t hdr[FRAME_HDR], uint8_t flags, size_t len) {
    hdr[0] = flags;
    hdr[1] = (uint8_t)(len >> 24);
    hdr[2] = (uint8_t)(len >> 16);
    hdr[3] = (uint8_t)(len >> 8);
    hdr[4] = (uint8_t)len;
}

/* The trailer block "grpc-status:N\r\n[grpc-message:...\r\n]x-request-id:ID\r\n".
 * The message is percent-encoded as the gRPC protocol asks: everything
 * outside printable ASCII, and '%' itself. Returns a malloc'd string. */
static char *trailer_block(ls_code code, const char *msg, const char *request_id, size_t *len) {
    size_t mlen = msg ? strlen(msg) : 0;
    char *t = malloc(128 + 3 * mlen);
    if (!t) return NULL;
    int n = snprintf(t, 128, "grpc-status:%d\r\nx-request-id:%.40s\r\n", (int)code, request_id);
    size_t o = (size_t)n;
    if (mlen) {
        memcpy(t + o, "grpc-message:", 13);
        o += 13;
        for (size_t i = 0; i < mlen; i++) {
            unsigned char ch = (unsigned char)msg[i];
            if (ch < 0x20 || ch > 0x7e || ch == '%')
                o += (size_t)sprintf(t + o, "%%%02X", ch);
            else
                t[o++] = (char)ch;
        }
        t[o++] = '\r';
        t[o++] = '\n';
    }
    t[o] = '\0';
    *len = o;
    return t;
}

/* What a binary response points into, freed when libmicrohttpd is done. */
typedef struct {
    uint8_t data_hdr[FRAME_HDR], trailer_hdr[FRAME_HDR];
    ls_buf body;
    char *trailer;
} grpcweb_out;

static void grpcweb_out_free(void *cls) {
    grpcweb_out *o = cls;
    ls_buf_free(&o->body);
    free(o->trailer);
    free(o);
}

/* Answer a gRPC-Web call: the handler's message (if any) as a data frame,
 * then the status as a trailer frame. Takes body's buffer. */
static enum MHD_Result send_grpcweb(ls_http *h, struct MHD_Connection *c, int text, ls_code code,
                                    const char *msg, const char *request_id, ls_buf *body) {
    /* A message is sent when there is one, and always on success: an empty
     * message is a valid response (every field at its default). */
    int with_data = code == LS_OK || (body && body->len);
    grpcweb_out *o = calloc(1, sizeof *o);
    size_t tlen = 0;
    if (o) o->trailer = trailer_block(code, msg, request_id, &tlen);
    if (!o || !o->trailer) {
        free(o);
        ls_buf_free(body);
        return MHD_NO;
    }
    if (body) {
        o->body = *body;
        memset(body, 0, sizeof *body);
    }
    frame_header(o->data_hdr, 0, o->body.len);
    frame_header(o->trailer_hdr, FLAG_TRAILER, tlen);
    struct MHD_IoVec iov[4] = {
        {o->data_hdr, FRAME_HDR}, {o->body.data, o->body.len}, {o->trailer_hdr, FRAME_HDR}, {o->trailer, tlen}};
    struct MHD_IoVec *first = with_data ? iov : iov + 2;
    unsigned n = with_data ? 4 : 2;
    struct MHD_Response *r;
    if (!text) {
        r = MHD_create_response_from_iovec(first, n, grpcweb_out_free, o);
        if (!r) grpcweb_out_free(o);
    } else {
        /* base64 of the whole response stream, as one string. */
        size_t raw = 0;
        for (unsigned i = 0; i < n; i++) raw += first[i].iov_len;
        uint8_t *flat = malloc(raw ? raw : 1);
        char *b64 = malloc(4 * ((raw + 2) / 3) + 1);
        r = NULL;
        if (flat && b64) {
            size_t off = 0;
            for (unsigned i = 0; i < n; i++) {
                if (first[i].iov_len) memcpy(flat + off, first[i].iov_base, first[i].iov_len);
                off += first[i].iov_len;
            }
            b64_encode(flat, raw, b64);
            r = MHD_create_response_from_buffer(4 * ((raw + 2) / 3), b64, MHD_RESPMEM_MUST_FREE);
        }
        free(flat);
        if (!r) free(b64);
        grpcweb_out_free(o);
    }
    if (r)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                text ? "application/grpc-web-text+proto" : "application/grpc-web+proto");
    return queue(h, c, MHD_HTTP_OK, r);
}

/* State of one request between libmicrohttpd's calls. Every request is
 * answered on the last call, once the whole request is read: a response
 * queued earlier makes libmicrohttpd close the connection, and browsers
 * would open a new one per frame. */
typedef struct {
    int plain;             /* not a gRPC-Web call: any body is dropped, dispatch_plain answers */
    const ls_method *m;
    char path[256];
    int text;
    uint64_t deadline_ns;  /* monotonic; 0 = none */
    ls_buf body;
    size_t limit;          /* most body bytes accepted */
    int discard;           /* body not kept: answer with code + msg below */
    char request_id[24];
    ls_code code;
    char msg[320];
    struct ws_job *ws;     /* a WebSocket upgrade not taken over yet */
} rpc_req;

static void rpc_reject(rpc_req *q, ls_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void rpc_reject(rpc_req *q, ls_code code, const char *fmt, ...) {
    if (q->discard) return; /* the first reason stands */
    q->discard = 1;
    q->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q->msg, sizeof q->msg, fmt, ap);
    va_end(ap);
    ls_buf_free(&q->body);
}

/* Wait for a handler slot until deadline (0 = none). 0 ok, -1 timed out. */
static int acquire_slot(ls_http *h, uint64_t deadline_ns) {
    /* A request whose deadline passed (a slow upload) is not worth running. */
    if (deadline_ns && ls_mono_ns() >= deadline_ns) return -1;
    pthread_mutex_lock(&h->lock);
    h->waiting++;
    int rc = 0;
    while (h->running >= h->opts.max_concurrent_calls) {
        if (!deadline_ns) {
            pthread_cond_wait(&h->slot_cond, &h->lock);
            continue;
        }
        struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000ull),
                              .tv_nsec = (long)(deadline_ns % 1000000000ull)};
        if (pthread_cond_timedwait(&h->slot_cond, &h->lock, &ts) == ETIMEDOUT &&
            h->running >= h->opts.max_concurrent_calls) {
            rc = -1;
            break;
        }
    }
    h->waiting--;
    if (rc == 0) h->running++;
    pthread_mutex_unlock(&h->lock);
    return rc;
}

static void release_slot(ls_http *h) {
    pthread_mutex_lock(&h->lock);
    h->running--;
    pthread_cond_signal(&h->slot_cond);
    pthread_mutex_unlock(&h->lock);
}

/* ---- server streaming (RenderSpeech) ----
 * libmicrohttpd pulls a response body; the handler pushes messages. A pipe
 * joins them: the handler runs on a thread of its own and writes each
 * message as a gRPC-Web data frame (each frame base64 on its own, padded,
 * in text mode), then the trailer frame, into the pipe, which libmicrohttpd
 * streams to the client as it fills. A full pipe blocks the handler (a
 * client that stops reading holds one batch, not the whole speech); a
 * closed one (the client went away, the listener stopped) fails its next
 * write, and the handler stops. The thread holds the call's handler slot. */
typedef struct {
    ls_http *h;
    const ls_method *m;
    int fd;                 /* write end */
    int text;
    uint8_t *req;           /* the request message, owned */
    size_t len;
    char *authorization;    /* owned copy, or NULL */
    char path[256];
    char request_id[24];
    int failed;             /* a write failed: the client is gone */
    uint8_t carry[2];       /* text mode: bytes not yet base64-encoded (not a multiple of 3) */
    size_t n_carry;
} sstream_job;

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One frame into the pipe: header + payload. In text mode the whole stream
 * is one base64 string, as for unary calls: each frame is encoded in whole
 * 3-byte groups, the 0-2 bytes left over are carried into the next, and the
 * last frame (the trailer, last = 1) flushes them with padding. */
static int write_frame(sstream_job *j, uint8_t flags, const uint8_t *msg, size_t len, int last) {
    if (j->failed) return -1;
    uint8_t hdr[FRAME_HDR];
    frame_header(hdr, flags, len);
    int rc;
    if (!j->text) {
        rc = write_all(j->fd, hdr, FRAME_HDR);
        if (!rc && len) rc = write_all(j->fd, msg, len);
    } else {
        size_t raw = j->n_carry + FRAME_HDR + len;
        uint8_t *flat = malloc(raw);
        char *b64 = malloc(4 * ((raw + 2) / 3) + 1);
        rc = -1;
        if (flat && b64) {
            memcpy(flat, j->carry, j->n_carry);
            memcpy(flat + j->n_carry, hdr, FRAME_HDR);
            if (len) memcpy(flat + j->n_carry + FRAME_HDR, msg, len);
            size_t whole = last ? raw : raw / 3 * 3;
            j->n_carry = raw - whole;
            memcpy(j->carry, flat + whole, j->n_carry);
            b64_encode(flat, whole, b64);
            rc = write_all(j->fd, (const uint8_t *)b64, 4 * ((whole + 2) / 3));
        }
        free(flat);
        free(b64);
    }
    if (rc) j->failed = 1;
    return rc;
}

static int sstream_emit(void *ectx, const uint8_t *msg, size_t len) {
    sstream_job *j = ectx;
    if (len > j->h->opts.max_message_bytes) return -1;
    return write_frame(j, 0, msg, len, 0);
}

static void *sstream_thread(void *arg) {
    sstream_job *j = arg;
    ls_http *h = j->h;
    ls_log_set_request(j->request_id);
    static const atomic_int never_cancelled = 0;
    ls_call_info info = {.method = j->path,
                         .received_mono_ns = ls_mono_ns(),
                         .cancelled = &never_cancelled,
                         .authorization = j->authorization,
                         .request_id = j->request_id};
    ls_err err = {.code = LS_OK, .msg = ""};
    ls_code code = j->m->fn_server_stream(h->opts.ctx, &info, j->req, j->len, sstream_emit, j, &err);
    if (code != LS_OK) LOG_WARN("grpc-web %s -> %s: %s", j->path, ls_code_name(code), err.msg);
    size_t tlen = 0;
    char *t = trailer_block(code, code == LS_OK ? NULL : err.msg, j->request_id, &tlen);
    if (t) write_frame(j, FLAG_TRAILER, (const uint8_t *)t, tlen, 1);
    free(t);
    close(j->fd);
    ls_log_set_request(NULL);
    free(j->req);
    free(j->authorization);
    free(j);
    release_slot(h);
    /* Last touch of h: ls_http_stop waits for streams to reach 0. */
    pthread_mutex_lock(&h->lock);
    h->streams--;
    pthread_cond_broadcast(&h->slot_cond);
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

/* Start a server-streaming call (the handler slot is held): its thread and
 * the pipe response. On failure the slot is released and the call answered
 * with a status. */
static enum MHD_Result start_sstream(ls_http *h, struct MHD_Connection *c, rpc_req *q, const uint8_t *msg,
                                     size_t mlen) {
    int fds[2] = {-1, -1};
    sstream_job *j = calloc(1, sizeof *j);
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "authorization");
    int ok = j && pipe2(fds, O_CLOEXEC) == 0;
    if (ok) {
        j->h = h;
        j->m = q->m;
        j->fd = fds[1];
        j->text = q->text;
        j->len = mlen;
        j->req = malloc(mlen ? mlen : 1);
        j->authorization = auth ? strdup(auth) : NULL;
        snprintf(j->path, sizeof j->path, "%s", q->path);
        snprintf(j->request_id, sizeof j->request_id, "%s", q->request_id);
        ok = j->req && (!auth || j->authorization);
        if (ok && mlen) memcpy(j->req, msg, mlen);
    }
    struct MHD_Response *r = ok ? MHD_create_response_from_pipe(fds[0]) : NULL;
    pthread_t th;
    pthread_attr_t attr;
    if (r) {
        pthread_mutex_lock(&h->lock);
        h->streams++;
        pthread_mutex_unlock(&h->lock);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &attr, sstream_thread, j) != 0) {
            pthread_mutex_lock(&h->lock);
            h->streams--;
            pthread_mutex_unlock(&h->lock);
            MHD_destroy_response(r); /* closes fds[0] */
            fds[0] = -1;
            r = NULL;
        }
        pthread_attr_destroy(&attr);
    }
    ls_buf_free(&q->body);
    if (!r) {
        if (fds[0] >= 0) close(fds[0]);
        if (fds[1] >= 0) close(fds[1]);
        if (j) {
            free(j->req);
            free(j->authorization);
            free(j);
        }
        release_slot(h);
        return send_grpcweb(h, c, q->text, LS_RESOURCE_EXHAUSTED, "out of resources starting a stream",
                            q->request_id, NULL);
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            q->text ? "application/grpc-web-text+proto" : "application/grpc-web+proto");
    return queue(h, c, MHD_HTTP_OK, r);
}

/* The body is complete: unframe, run the handler, answer. */
static enum MHD_Result run_rpc(ls_http *h, struct MHD_Connection *c, rpc_req *q) {
    if (!q->discard && atomic_load(&h->draining))
        rpc_reject(q, LS_UNAVAILABLE, "server is shutting down");
    if (!q->discard && q->text) {
        long n = b64_decode_inplace(q->body.data, q->body.len);
        if (n < 0)
            rpc_reject(q, LS_INVALID_ARGUMENT, "grpc-web-text body is not valid base64");
        else
            q->body.len = (size_t)n;
    }
    const uint8_t *msg = NULL;
    size_t mlen = 0;
    if (!q->discard) {
        /* A unary call carries exactly one uncompressed data frame. */
        if (q->body.len < FRAME_HDR) {
            rpc_reject(q, LS_INVALID_ARGUMENT, "expected exactly one request message (body of %zu bytes)",
                       q->body.len);
        } else {
            const uint8_t *b = q->body.data;
            size_t len = (size_t)b[1] << 24 | (size_t)b[2] << 16 | (size_t)b[3] << 8 | b[4];
            if (b[0] & FLAG_TRAILER)
                rpc_reject(q, LS_INVALID_ARGUMENT, "expected a data frame, got a trailer frame");
            else if (b[0] & FLAG_COMPRESSED)
                rpc_reject(q, LS_INVALID_ARGUMENT, "compressed messages are not supported");
            else if (b[0])
                rpc_reject(q, LS_INVALID_ARGUMENT, "unknown frame flags 0x%02x", b[0]);
            else if (len > h->opts.max_message_bytes)
                rpc_reject(q, LS_RESOURCE_EXHAUSTED, "request message of %zu bytes exceeds the limit of %llu",
                           len, (unsigned long long)h->opts.max_message_bytes);
            else if (len != q->body.len - FRAME_HDR)
                rpc_reject(q, LS_INVALID_ARGUMENT,
                           "expected exactly one request message: frame of %zu bytes, body holds %zu", len,
                           q->body.len - FRAME_HDR);
            else {
                msg = b + FRAME_HDR;
                mlen = len;
            }
        }
    }
    if (!q->discard && !q->m) rpc_reject(q, LS_UNIMPLEMENTED, "unknown method %s", q->path);
    if (!q->discard && acquire_slot(h, q->deadline_ns) != 0)
        rpc_reject(q, LS_DEADLINE_EXCEEDED, "deadline passed before the request was run");
    if (q->discard) {
        LOG_WARN("grpc-web %s -> %s: %s", q->path, ls_code_name(q->code), q->msg);
        return send_grpcweb(h, c, q->text, q->code, q->msg, q->request_id, NULL);
    }

    if (q->m->fn_server_stream) return start_sstream(h, c, q, msg, mlen);

    /* With a thread per connection nothing watches the socket while the
     * handler runs, so a gRPC-Web call is never seen as cancelled. */
    static const atomic_int never_cancelled = 0;
    ls_call_info info = {
        .method = q->path,
        .received_mono_ns = ls_mono_ns(),
        .cancelled = &never_cancelled,
        .authorization = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "authorization"),
        .routing_model = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-model-id"),
        .request_id = q->request_id,
    };
    ls_buf resp = {0};
    ls_err err = {.code = LS_OK, .msg = ""};
    ls_code code = q->m->fn(h->opts.ctx, &info, msg, mlen, &resp, &err);
    release_slot(h);
    ls_buf_free(&q->body);
    if (resp.len > h->opts.max_message_bytes) {
        ls_err_set(&err, LS_RESOURCE_EXHAUSTED, "response message of %zu bytes exceeds the limit of %llu",
                   resp.len, (unsigned long long)h->opts.max_message_bytes);
        code = LS_RESOURCE_EXHAUSTED;
        ls_buf_free(&resp);
    }
    if (code != LS_OK) LOG_WARN("grpc-web %s -> %s: %s", q->path, ls_code_name(code), err.msg);
    return send_grpcweb(h, c, q->text, code, code == LS_OK ? NULL : err.msg, q->request_id, &resp);
}

/* run_rpc with a request id: every line the call logs carries it, as on
 * the gRPC port, and the trailers return it. */
static enum MHD_Result finish_rpc(ls_http *h, struct MHD_Connection *c, rpc_req *q) {
    snprintf(q->request_id, sizeof q->request_id, "%06x-w%07llx", h->id_prefix & 0xffffff,
             (unsigned long long)atomic_fetch_add(&h->next_id, 1));
    ls_log_set_request(q->request_id);
    enum MHD_Result r = run_rpc(h, c, q);
    ls_log_set_request(NULL);
    return r;
}

/* First call of a POST: decide what to do with the body. */
static enum MHD_Result start_rpc(ls_http *h, struct MHD_Connection *c, const char *url, rpc_req *q) {
    int text = grpcweb_kind(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE));
    if (text < 0) {
        q->plain = 1;
        return MHD_YES;
    }
    q->m = find_method(h, url);
    q->text = text;
    uint64_t timeout = parse_timeout(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "grpc-timeout"));
    if (timeout) q->deadline_ns = ls_mono_ns() + timeout;
    uint64_t raw = h->opts.max_message_bytes + FRAME_HDR;
    /* base64 is 4/3 larger; separately padded chunks add a little more. */
    if (text) raw = (raw + 2) / 3 * 4 + 65536;
    q->limit = raw > SIZE_MAX / 2 ? SIZE_MAX / 2 : (size_t)raw;

    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        unsigned long long n = strtoull(cl, NULL, 10);
        /* Refused, but still read (and dropped) before answering: a client
         * still sending when the connection closes would get a reset
         * instead of the status. */
        if (n > q->limit)
            rpc_reject(q, LS_RESOURCE_EXHAUSTED, "request body of %llu bytes exceeds the message limit of %llu",
                       n, (unsigned long long)h->opts.max_message_bytes);
        /* One allocation for the whole body rather than doublings of 25 MB. */
        else if (n && ls_buf_reserve(&q->body, (size_t)n) != 0)
            rpc_reject(q, LS_RESOURCE_EXHAUSTED, "out of memory receiving %llu bytes", n);
    }
    return MHD_YES;
}

/* ------------------------------------------------------------------------ */
/* WebSocket sessions (ws.h)                                                 */
/* ------------------------------------------------------------------------ */

typedef struct ws_job {
    ls_http *h;
    char *authorization;   /* owned, or NULL */
    char request_id[24];
    MHD_socket sock;
    struct MHD_UpgradeResponseHandle *urh;
    uint8_t *extra;        /* bytes read past the handshake, owned */
    size_t n_extra;
} ws_job;

static void ws_job_free(ws_job *j) {
    if (!j) return;
    free(j->authorization);
    free(j->extra);
    free(j);
}

/* A comma-separated header value containing `token` (case-insensitive). */
static int has_token(const char *v, const char *token) {
    size_t n = strlen(token);
    while (v && *v) {
        while (*v == ' ' || *v == '\t' || *v == ',') v++;
        const char *e = v;
        while (*e && *e != ',') e++;
        const char *t = e;
        while (t > v && (t[-1] == ' ' || t[-1] == '\t')) t--;
        if ((size_t)(t - v) == n && !strncasecmp(v, token, n)) return 1;
        v = e;
    }
    return 0;
}

/* Same origin (http(s)://<Host>) or one of the configured origins. */
static int ws_origin_ok(const ls_http *h, const char *origin, const char *host) {
    for (size_t i = 0; i < h->n_origins; i++)
        if (!strcmp(h->origins[i], "*") || !strcmp(h->origins[i], origin)) return 1;
    if (!host) return 0;
    const char *rest = !strncmp(origin, "http://", 7) ? origin + 7 : !strncmp(origin, "https://", 8) ? origin + 8 : NULL;
    return rest && !strcasecmp(rest, host);
}

/* A session thread has ended (or never started): ls_http_stop waits for 0. */
static void ws_thread_gone(ls_http *h) {
    pthread_mutex_lock(&h->lock);
    h->ws_threads--;
    pthread_cond_broadcast(&h->slot_cond);
    pthread_mutex_unlock(&h->lock);
}

static void *ws_thread(void *arg) {
    ws_job *j = arg;
    ls_http *h = j->h;
    const ls_stream_method *m = h->opts.ws_session;
    ls_log_set_request(j->request_id);
    ls_ws_conn *wc = ls_ws_conn_new((int)j->sock, j->extra, j->n_extra, h->opts.max_message_bytes,
                                    h->opts.ws_ping_ms, &h->ws_stopping);
    if (!wc) {
        LOG_WARN("websocket %s: out of memory", m->path);
    } else {
        static const atomic_int never_cancelled = 0;
        ls_call_info info = {.method = m->path,
                             .received_mono_ns = ls_mono_ns(),
                             .cancelled = &never_cancelled,
                             .authorization = j->authorization,
                             .request_id = j->request_id};
        ls_err err = {.code = LS_OK, .msg = ""};
        ls_code code = m->fn(h->opts.ctx, &info, ls_ws_conn_stream(wc), &err);
        int cc = ls_ws_conn_close(wc, code, err.msg);
        if (code != LS_OK || cc != LS_WS_CLOSE_NORMAL)
            LOG_WARN("websocket %s -> %s, close %d: %s", m->path, ls_code_name(code), cc, err.msg);
        ls_ws_conn_free(wc);
    }
    MHD_upgrade_action(j->urh, MHD_UPGRADE_ACTION_CLOSE);
    ls_log_set_request(NULL);
    ws_job_free(j);
    ws_thread_gone(h);
    return NULL;
}

/* libmicrohttpd has sent the 101: the socket is ours until
 * MHD_upgrade_action(CLOSE). The session runs on a thread of its own. */
static void ws_upgraded(void *cls, struct MHD_Connection *c, void *req_cls, const char *extra_in,
                        size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh) {
    (void)cls;
    (void)c;
    rpc_req *q = req_cls;
    ws_job *j = q->ws;
    q->ws = NULL; /* taken over */
    ls_http *h = j->h;
    j->sock = sock;
    j->urh = urh;
    if (extra_in_size && (j->extra = malloc(extra_in_size))) {
        memcpy(j->extra, extra_in, extra_in_size);
        j->n_extra = extra_in_size;
    }
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&h->lock);
    h->ws_threads++;
    pthread_mutex_unlock(&h->lock);
    pthread_t t;
    int ok = (!extra_in_size || j->extra) && pthread_create(&t, &at, ws_thread, j) == 0;
    pthread_attr_destroy(&at);
    if (!ok) {
        LOG_WARN("websocket: cannot start a session thread");
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        ws_job_free(j);
        ws_thread_gone(h);
    }
}

/* GET /session: check the handshake, then switch protocols. */
static enum MHD_Result ws_upgrade(ls_http *h, struct MHD_Connection *c, rpc_req *q) {
    const char *up = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_UPGRADE);
    const char *conn = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONNECTION);
    const char *ver = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-WebSocket-Version");
    const char *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-WebSocket-Key");
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ORIGIN);
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    if (!up || strcasecmp(up, "websocket") || !conn || !has_token(conn, "upgrade"))
        return send_text(h, c, MHD_HTTP_UPGRADE_REQUIRED,
                         "/session is a WebSocket: expected Upgrade: websocket and Connection: Upgrade\n", NULL);
    if (!ver || strcmp(ver, "13")) {
        struct MHD_Response *r = MHD_create_response_from_buffer(
            strlen("expected Sec-WebSocket-Version: 13\n"), (void *)"expected Sec-WebSocket-Version: 13\n",
            MHD_RESPMEM_PERSISTENT);
        if (r) MHD_add_response_header(r, "Sec-WebSocket-Version", "13");
        return queue(h, c, MHD_HTTP_UPGRADE_REQUIRED, r);
    }
    char accept[29];
    if (ls_ws_accept_key(key, accept) != 0)
        return send_text(h, c, MHD_HTTP_BAD_REQUEST, "Sec-WebSocket-Key: expected the base64 of 16 bytes\n", NULL);
    if (origin && !ws_origin_ok(h, origin, host))
        return send_text(h, c, MHD_HTTP_FORBIDDEN,
                         "origin not allowed: same origin or one of http.cors_origins\n", NULL);
    if (atomic_load(&h->draining) || atomic_load(&h->ws_stopping))
        return send_text(h, c, MHD_HTTP_SERVICE_UNAVAILABLE, "the server is stopping\n", NULL);
    ws_job *j = calloc(1, sizeof *j);
    if (!j) return MHD_NO;
    j->h = h;
    const char *token = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "token");
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "authorization");
    int has_token = token && *token;
    if (has_token || auth) {
        size_t n = (has_token ? strlen(token) + 7 : strlen(auth)) + 1;
        if (!(j->authorization = malloc(n))) {
            ws_job_free(j);
            return MHD_NO;
        }
        snprintf(j->authorization, n, has_token ? "Bearer %s" : "%s", has_token ? token : auth);
    }
    snprintf(j->request_id, sizeof j->request_id, "%06x-s%07llx", h->id_prefix & 0xffffff,
             (unsigned long long)atomic_fetch_add(&h->next_id, 1) + 1);
    struct MHD_Response *r = MHD_create_response_for_upgrade(ws_upgraded, NULL);
    if (!r) {
        ws_job_free(j);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_UPGRADE, "websocket");
    MHD_add_response_header(r, "Sec-WebSocket-Accept", accept);
    q->ws = j; /* ws_upgraded takes it, or on_completed frees it */
    enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_SWITCHING_PROTOCOLS, r);
    MHD_destroy_response(r);
    return ok;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    rpc_req *q = *req_cls;
    if (!q) return;
    ls_buf_free(&q->body);
    ws_job_free(q->ws); /* the upgrade never happened */
    free(q);
    *req_cls = NULL;
}

/* ------------------------------------------------------------------------ */
/* CORS preflight, endpoints, static files                                   */
/* ------------------------------------------------------------------------ */

static enum MHD_Result preflight(ls_http *h, struct MHD_Connection *c) {
    if (!allowed_origin(h, c)) return send_text(h, c, MHD_HTTP_FORBIDDEN, "origin not allowed\n", NULL);
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (r) {
        MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(r, "Access-Control-Allow-Headers", ALLOW_HEADERS);
        MHD_add_response_header(r, "Access-Control-Max-Age", "86400");
    }
    return queue(h, c, MHD_HTTP_NO_CONTENT, r);
}

static enum MHD_Result serve_endpoint(ls_http *h, struct MHD_Connection *c, const ls_http_endpoint *e) {
    ls_buf body = {0};
    const char *ct = "text/plain; charset=utf-8";
    int status = e->fn(e->ctx, &body, &ct);
    struct MHD_Response *r;
    if (body.len) {
        r = MHD_create_response_from_buffer(body.len, body.data, MHD_RESPMEM_MUST_FREE);
        if (!r) ls_buf_free(&body);
    } else {
        ls_buf_free(&body);
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    if (r) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ct);
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    }
    return queue(h, c, (unsigned)status, r);
}

/* "/a/b.js" -> "a/b.js" ("/" -> "index.html"). Every segment must be
 * non-empty, made of [A-Za-z0-9._-] and not start with '.': that refuses
 * "..", hidden files and anything percent-decoded into a separator or
 * control character. Returns 0, -1 forbidden, -2 not found (empty segment). */
static int static_rel_path(const char *url, char *out, size_t cap) {
    if (url[0] != '/') return -1;
    const char *p = url + 1;
    if (!*p) p = "index.html";
    size_t n = strlen(p);
    if (n + 1 > cap) return -1;
    int seg_start = 1;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '/') {
            if (seg_start) return -2;
            seg_start = 1;
            continue;
        }
        if (seg_start && ch == '.') return -1;
        seg_start = 0;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-'))
            return -1;
    }
    if (seg_start) return -2; /* trailing slash */
    memcpy(out, p, n + 1);
    return 0;
}

static const char *mime_type(const char *path) {
    static const char *const map[][2] = {
        {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
        {".json", "application/json"}, {".png", "image/png"}, {".svg", "image/svg+xml"},
        {".ico", "image/x-icon"}, {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(path, '.');
    if (dot)
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
            if (!strcmp(dot, map[i][0])) return map[i][1];
    return "application/octet-stream";
}

static enum MHD_Result serve_file(ls_http *h, struct MHD_Connection *c, const char *url) {
    char rel[MAX_STATIC_PATH];
    int v = static_rel_path(url, rel, sizeof rel);
    if (v == -1) return send_text(h, c, MHD_HTTP_FORBIDDEN, "forbidden path\n", NULL);
    if (v != 0 || !h->web_root) return send_text(h, c, MHD_HTTP_NOT_FOUND, "not found\n", NULL);
    char full[PATH_MAX + MAX_STATIC_PATH + 2];
    snprintf(full, sizeof full, "%s/%s", h->web_root, rel);
    /* The name is already confined; resolving it also refuses a symlink
     * inside web_root that points out of it. */
    char *real = realpath(full, NULL);
    if (!real) return send_text(h, c, MHD_HTTP_NOT_FOUND, "not found\n", NULL);
    int inside = !strncmp(real, h->web_root, h->web_root_len) && real[h->web_root_len] == '/';
    int fd = inside ? open(real, O_RDONLY | O_CLOEXEC) : -1;
    free(real);
    if (!inside) return send_text(h, c, MHD_HTTP_FORBIDDEN, "forbidden path\n", NULL);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0) close(fd);
        return send_text(h, c, MHD_HTTP_NOT_FOUND, "not found\n", NULL);
    }
    /* libmicrohttpd closes fd when the response is destroyed. */
    struct MHD_Response *r = MHD_create_response_from_fd((size_t)st.st_size, fd);
    if (!r) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, mime_type(rel));
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    return queue(h, c, MHD_HTTP_OK, r);
}

/* ------------------------------------------------------------------------ */
/* Dispatch                                                                  */
/* ------------------------------------------------------------------------ */

/* A request that is not a gRPC-Web call, answered once it is read. */
static enum MHD_Result dispatch_plain(ls_http *h, struct MHD_Connection *c, const char *url, const char *method,
                                     rpc_req *q) {
    if (!strcmp(method, MHD_HTTP_METHOD_POST)) {
        if (!find_method(h, url)) return send_text(h, c, MHD_HTTP_NOT_FOUND, "not found\n", NULL);
        return send_text(h, c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
                         "expected content-type application/grpc-web(+proto) or application/grpc-web-text\n", NULL);
    }
    if (!strcmp(method, MHD_HTTP_METHOD_OPTIONS)) return preflight(h, c);
    if (h->opts.ws_session && !strcmp(url, "/session") && !strcmp(method, MHD_HTTP_METHOD_GET))
        return ws_upgrade(h, c, q);
    if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
        return send_text(h, c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n", "GET, HEAD, POST, OPTIONS");
    for (size_t i = 0; i < h->opts.n_endpoints; i++)
        if (!strcmp(h->opts.endpoints[i].path, url)) return serve_endpoint(h, c, &h->opts.endpoints[i]);
    if (find_method(h, url))
        return send_text(h, c, MHD_HTTP_METHOD_NOT_ALLOWED, "gRPC-Web methods take POST only\n", "POST, OPTIONS");
    return serve_file(h, c, url);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **req_cls) {
    (void)version;
    ls_http *h = cls;
    rpc_req *q = *req_cls;
    if (!q) { /* headers are in */
        if (!(q = calloc(1, sizeof *q))) return MHD_NO;
        *req_cls = q; /* freed by on_completed */
        snprintf(q->path, sizeof q->path, "%s", url);
        if (!strcmp(method, MHD_HTTP_METHOD_POST)) return start_rpc(h, c, url, q);
        q->plain = 1;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!q->plain && !q->discard) {
            if (q->body.len + *upload_data_size > q->limit)
                rpc_reject(q, LS_RESOURCE_EXHAUSTED, "request body exceeds the message limit of %llu",
                           (unsigned long long)h->opts.max_message_bytes);
            else if (ls_buf_append(&q->body, upload_data, *upload_data_size) != 0)
                rpc_reject(q, LS_RESOURCE_EXHAUSTED, "out of memory receiving the request");
        }
        *upload_data_size = 0; /* consumed (or dropped) */
        return MHD_YES;
    }
    return q->plain ? dispatch_plain(h, c, url, method, q) : finish_rpc(h, c, q);
}

/* ------------------------------------------------------------------------ */
/* Start / stop                                                              */
/* ------------------------------------------------------------------------ */

/* Bind and listen on "host:port" or "[v6]:port". Returns the socket or -1. */
static int open_listener(const char *listen_addr, int *v6, ls_err *err) {
    char host[256], port[16];
    const char *colon;
    if (listen_addr[0] == '[') {
        const char *end = strchr(listen_addr, ']');
        if (!end || end[1] != ':' || (size_t)(end - listen_addr - 1) >= sizeof host) goto bad;
        memcpy(host, listen_addr + 1, (size_t)(end - listen_addr - 1));
        host[end - listen_addr - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(listen_addr, ':');
        if (!colon || (size_t)(colon - listen_addr) >= sizeof host) goto bad;
        memcpy(host, listen_addr, (size_t)(colon - listen_addr));
        host[colon - listen_addr] = '\0';
        if (strchr(host, ':')) goto bad;
    }
    if (!host[0] || strlen(colon + 1) < 1 || strlen(colon + 1) >= sizeof port ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1))
        goto bad;
    snprintf(port, sizeof port, "%s", colon + 1);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g != 0) {
        ls_err_set(err, LS_UNAVAILABLE, "http: cannot resolve %s: %s", listen_addr, gai_strerror(g));
        return -1;
    }
    int fd = -1, last_errno = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 128) == 0) {
            *v6 = a->ai_family == AF_INET6;
            break;
        }
        last_errno = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        ls_err_set(err, LS_UNAVAILABLE, "http: cannot listen on %s: %s", listen_addr, strerror(last_errno));
    return fd;
bad:
    ls_err_set(err, LS_INVALID_ARGUMENT, "http: listen address '%s': expected host:port or [ipv6]:port",
               listen_addr);
    return -1;
}

static void free_http(ls_http *h) {
    for (size_t i = 0; i < h->n_origins; i++) free(h->origins[i]);
    free(h->origins);
    free(h->web_root);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->slot_cond);
    free(h);
}

ls_http *ls_http_start(const ls_http_opts *opts, ls_err *err) {
    ls_http *h = calloc(1, sizeof *h);
    if (!h) {
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory starting the HTTP listener");
        return NULL;
    }
    h->opts = *opts;
    if (h->opts.max_concurrent_calls < 1) h->opts.max_concurrent_calls = 1;
    pthread_mutex_init(&h->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->slot_cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&h->draining, 0);
    atomic_init(&h->ws_stopping, 0);
    h->id_prefix = (unsigned)(ls_wall_ms() ^ (int64_t)getpid() << 12);
    atomic_init(&h->next_id, 0);

    if (opts->n_cors_origins) {
        h->origins = calloc(opts->n_cors_origins, sizeof *h->origins);
        for (size_t i = 0; h->origins && i < opts->n_cors_origins; i++, h->n_origins++)
            if (!(h->origins[i] = strdup(opts->cors_origins[i]))) break;
        if (!h->origins || h->n_origins != opts->n_cors_origins) {
            free_http(h);
            ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory starting the HTTP listener");
            return NULL;
        }
    }
    /* Static files are optional: a server without its web/ directory still
     * serves metrics and gRPC-Web. */
    if (opts->web_root) {
        h->web_root = realpath(opts->web_root, NULL);
        if (h->web_root)
            h->web_root_len = strlen(h->web_root);
        else
            LOG_WARN("http: web_root %s: %s; no static files will be served", opts->web_root, strerror(errno));
    }

    int v6 = 0;
    int fd = open_listener(opts->listen, &v6, err);
    if (fd < 0) {
        free_http(h);
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
                     MHD_USE_ERROR_LOG | MHD_ALLOW_UPGRADE | (v6 ? MHD_USE_IPv6 : 0);
    /* The logger first, or libmicrohttpd reports that on stderr itself. */
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
                            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)CONNECTION_TIMEOUT_S, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                            MHD_OPTION_END);
    if (!h->d) {
        close(fd);
        free_http(h);
        ls_err_set(err, LS_UNAVAILABLE, "http: cannot start the HTTP server on %s", opts->listen);
        return NULL;
    }
    return h;
}

int ls_http_port(const ls_http *h) { return h->port; }

int ls_http_queue_depth(ls_http *h) {
    if (!h) return 0;
    pthread_mutex_lock(&h->lock);
    int n = h->waiting;
    pthread_mutex_unlock(&h->lock);
    return n;
}

void ls_http_drain(ls_http *h) {
    if (h) atomic_store(&h->draining, 1);
}

void ls_http_stop(ls_http *h) {
    if (!h) return;
    /* WebSocket sessions first: their sockets are theirs until they hand
     * them back, and each notices the flag within a poll slice. */
    atomic_store(&h->ws_stopping, 1);
    pthread_mutex_lock(&h->lock);
    while (h->ws_threads > 0) pthread_cond_wait(&h->slot_cond, &h->lock);
    pthread_mutex_unlock(&h->lock);
    /* Joins the listening thread and every connection thread, so running
     * handlers finish first; closes the listening socket. */
    MHD_stop_daemon(h->d);
    /* Server-streaming threads outlive their connection by at most one
     * message: the closed pipe fails their next write. */
    pthread_mutex_lock(&h->lock);
    while (h->streams > 0) pthread_cond_wait(&h->slot_cond, &h->lock);
    pthread_mutex_unlock(&h->lock);
    free_http(h);
}
