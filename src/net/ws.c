/* ws.c - see ws.h. */
#define _GNU_SOURCE
#include "ws.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>

#define OP_CONT 0x0
#define OP_TEXT 0x1
#define OP_BINARY 0x2
#define OP_CLOSE 0x8
#define OP_PING 0x9
#define OP_PONG 0xA

#define POLL_SLICE_MS 100 /* how often a blocked call looks at the stopping flag */

/* ---- handshake ----------------------------------------------------------- */

int ls_ws_accept_key(const char *key, char out[29]) {
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    if (!key || strlen(key) != 24 || strcmp(key + 22, "==") != 0) return -1;
    unsigned char raw[18];
    if (EVP_DecodeBlock(raw, (const unsigned char *)key, 24) != 18) return -1; /* 16 bytes + 2 of padding */
    char cat[24 + sizeof guid];
    memcpy(cat, key, 24);
    memcpy(cat + 24, guid, sizeof guid);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(cat, 24 + sizeof guid - 1, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20) return -1;
    return EVP_EncodeBlock((unsigned char *)out, md, 20) == 28 ? 0 : -1;
}

/* ---- decoder -------------------------------------------------------------- */

static ls_ws_event fail(ls_ws_decoder *d, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static ls_ws_event fail(ls_ws_decoder *d, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->reason, sizeof d->reason, fmt, ap);
    va_end(ap);
    d->close_code = code;
    return LS_WS_ERROR;
}

/* Drop the decoded bytes from the front of d->in. */
static ls_ws_event more(ls_ws_decoder *d) {
    if (d->in_off) { /* in_off > 0: in.data is set */
        memmove(d->in.data, d->in.data + d->in_off, d->in.len - d->in_off);
        d->in.len -= d->in_off;
        d->in_off = 0;
    }
    return LS_WS_MORE;
}

static int valid_close_code(int c) {
    return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1011) || (c >= 3000 && c <= 4999);
}

/* A frame's header, as far as read_header got. */
typedef struct {
    int fin, op;
    uint64_t len;   /* payload bytes */
    size_t h;       /* header bytes before the masking key */
} frame_hdr;

/* Each step below returns 0 to go on, or stop(ev, e): 1, and ls_ws_next
 * returns e (MORE: the frame is not all there yet; ERROR: fail() says why). */
static int stop(ls_ws_event *ev, ls_ws_event e) {
    *ev = e;
    return 1;
}

/* The first byte's flags and opcode, the mask bit and the payload length in
 * its shortest form (RFC 6455 5.2). */
static int read_header(ls_ws_decoder *d, const uint8_t *p, size_t n, frame_hdr *f, ls_ws_event *ev) {
    f->fin = p[0] & 0x80;
    f->op = p[0] & 0x0f;
    if (p[0] & 0x70)
        return stop(ev, fail(d, LS_WS_CLOSE_PROTOCOL, "reserved bits set (no extension was negotiated)"));
    if (!(p[1] & 0x80)) return stop(ev, fail(d, LS_WS_CLOSE_PROTOCOL, "client frames must be masked"));
    f->len = p[1] & 0x7f;
    f->h = 2;
    if (f->len == 126) {
        if (n < 4) return stop(ev, more(d));
        f->len = (uint64_t)p[2] << 8 | p[3];
        f->h = 4;
        if (f->len < 126) return stop(ev, fail(d, LS_WS_CLOSE_PROTOCOL, "a 16-bit length under 126"));
    } else if (f->len == 127) {
        if (n < 10) return stop(ev, more(d));
        f->len = 0;
        for (int i = 0; i < 8; i++) f->len = f->len << 8 | p[2 + i];
        f->h = 10;
        if (f->len >> 63) return stop(ev, fail(d, LS_WS_CLOSE_PROTOCOL, "a 64-bit length with its top bit set"));
        if (f->len < 65536) return stop(ev, fail(d, LS_WS_CLOSE_PROTOCOL, "a 64-bit length under 65536"));
    }
    return 0;
}

/* What the opcode allows: control frames whole and small (5.5), data
 * frames in order (5.4), binary only, within max_message. Checked before
 * the payload has arrived, so an oversized message is refused at once. */
static int check_frame(ls_ws_decoder *d, const frame_hdr *f, ls_ws_event *ev) {
    int op = f->op;
    if (op & 0x8) {
        if (op != OP_CLOSE && op != OP_PING && op != OP_PONG)
            return stop(ev, fail(d, LS_WS_CLOSE_PROTOCOL, "unknown control opcode 0x%x", op));
        if (!f->fin) return stop(ev, fail(d, LS_WS_CLOSE_PROTOCOL, "a control frame must not be fragmented"));
        if (f->len > 125) return stop(ev, fail(d, LS_WS_CLOSE_PROTOCOL, "a control frame over 125 bytes"));
        return 0;
    }
    if (op != OP_CONT && op != OP_TEXT && op != OP_BINARY)
        return stop(ev, fail(d, LS_WS_CLOSE_PROTOCOL, "unknown data opcode 0x%x", op));
    if (op == OP_CONT && !d->in_message)
        return stop(ev, fail(d, LS_WS_CLOSE_PROTOCOL, "a continuation frame outside a message"));
    if (op != OP_CONT && d->in_message)
        return stop(ev, fail(d, LS_WS_CLOSE_PROTOCOL, "a new message before the last one's final fragment"));
    if (op == OP_TEXT)
        return stop(ev, fail(d, LS_WS_CLOSE_UNSUPPORTED,
                             "text messages are not accepted: send each SessionRequest as one binary message"));
    if (f->len > d->max_message - d->msg.len)
        return stop(ev, fail(d, LS_WS_CLOSE_TOO_BIG, "a message of %llu bytes or more, over the limit of %llu",
                             (unsigned long long)(d->msg.len + f->len), (unsigned long long)d->max_message));
    return 0;
}

/* Once the masking key and the whole payload are there: unmask it into
 * d->ctrl (control) or onto the end of d->msg, and consume the frame. */
static int take_payload(ls_ws_decoder *d, const uint8_t *p, size_t n, frame_hdr *f, ls_ws_event *ev) {
    if (n < f->h + 4) return stop(ev, more(d));
    const uint8_t *mask = p + f->h;
    f->h += 4;
    if (n - f->h < f->len) return stop(ev, more(d));
    const uint8_t *payload = p + f->h;
    uint8_t *dst = d->ctrl;
    if (f->op & 0x8) {
        d->ctrl_len = (size_t)f->len;
    } else if (f->len) {
        if (ls_buf_reserve(&d->msg, (size_t)f->len) != 0)
            return stop(ev, fail(d, LS_WS_CLOSE_INTERNAL, "out of memory for a %llu-byte frame",
                                 (unsigned long long)f->len));
        dst = d->msg.data + d->msg.len;
        d->msg.len += (size_t)f->len;
    }
    for (size_t i = 0; i < (size_t)f->len; i++) dst[i] = payload[i] ^ mask[i & 3];
    d->in_off += f->h + (size_t)f->len;
    return 0;
}

/* What a consumed frame means: a control event, a whole message, or (a
 * fragment that is not the last) nothing yet. */
static int frame_event(ls_ws_decoder *d, const frame_hdr *f, ls_ws_event *ev) {
    if (f->op == OP_PING) return stop(ev, LS_WS_PING);
    if (f->op == OP_PONG) return stop(ev, LS_WS_PONG);
    if (f->op == OP_CLOSE) {
        if (d->ctrl_len == 1) return stop(ev, fail(d, LS_WS_CLOSE_PROTOCOL, "a close frame of 1 byte"));
        d->close_code = d->ctrl_len >= 2 ? d->ctrl[0] << 8 | d->ctrl[1] : 1005;
        if (d->ctrl_len >= 2 && !valid_close_code(d->close_code))
            return stop(ev,
                        fail(d, LS_WS_CLOSE_PROTOCOL, "close code %d is not one a peer may send", d->close_code));
        return stop(ev, LS_WS_CLOSE);
    }
    if (f->fin) {
        d->in_message = 0;
        d->msg_done = 1;
        return stop(ev, LS_WS_MESSAGE);
    }
    d->in_message = 1;
    return 0;
}

/* Frame by frame: header -> check -> payload -> event. */
ls_ws_event ls_ws_next(ls_ws_decoder *d) {
    assert(d->in_off <= d->in.len);
    if (d->msg_done) {
        d->msg.len = 0;
        d->msg_done = 0;
    }
    for (;;) {
        size_t n = d->in.len - d->in_off;
        if (n < 2) return more(d);
        const uint8_t *p = d->in.data + d->in_off;
        frame_hdr f;
        ls_ws_event ev;
        if (read_header(d, p, n, &f, &ev) || check_frame(d, &f, &ev) || take_payload(d, p, n, &f, &ev) ||
            frame_event(d, &f, &ev))
            return ev;
    }
}

void ls_ws_decoder_free(ls_ws_decoder *d) {
    ls_buf_free(&d->in);
    ls_buf_free(&d->msg);
}

size_t ls_ws_frame_header(uint8_t out[10], int opcode, uint64_t len) {
    out[0] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len < 65536) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++) out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

/* ---- the stream ----------------------------------------------------------- */

struct ls_ws_conn {
    ls_stream base; /* first: handlers see this */
    int fd;
    ls_ws_decoder d;
    int ping_ms;
    const atomic_int *stopping;
    pthread_mutex_t wmu;       /* one writer at a time */
    atomic_int broken;         /* the socket failed or the peer went away */
    atomic_int peer_closed;    /* the peer sent a close frame */
    int proto_code;            /* the decoder's verdict, 0 = none */
    char proto_reason[124];
    uint64_t last_rx_ns, last_ping_ns;
};

static int stopping_now(const ls_ws_conn *c) { return c->stopping && atomic_load(c->stopping); }

/* Write all of p within timeout_ms (0 = no bound): 0, -1 broken or
 * stopping, -2 the peer took nothing for that long. more: bytes follow at
 * once (a frame's header), so the kernel holds them for the payload rather
 * than sending a small segment on its own. */
static int write_all(ls_ws_conn *c, const uint8_t *p, size_t n, int timeout_ms, int more) {
    uint64_t deadline = timeout_ms > 0 ? ls_mono_ns() + (uint64_t)timeout_ms * 1000000u : 0;
    while (n) {
        if (atomic_load(&c->broken)) return -1;
        struct pollfd pf = {.fd = c->fd, .events = POLLOUT};
        int r = poll(&pf, 1, POLL_SLICE_MS);
        if (r < 0 && errno != EINTR) {
            atomic_store(&c->broken, 1);
            return -1;
        }
        if (r <= 0) {
            if (stopping_now(c)) return -1;
            if (deadline && ls_mono_ns() > deadline) return -2;
            continue;
        }
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
        if (w < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (w <= 0) {
            atomic_store(&c->broken, 1);
            return -1;
        }
        p += w;
        n -= (size_t)w;
        if (deadline) deadline = ls_mono_ns() + (uint64_t)timeout_ms * 1000000u; /* progress resets the stall clock */
    }
    return 0;
}

static int send_frame(ls_ws_conn *c, int op, const uint8_t *data, size_t len, int timeout_ms) {
    uint8_t hdr[10];
    size_t h = ls_ws_frame_header(hdr, op, len);
    pthread_mutex_lock(&c->wmu);
    int rc = write_all(c, hdr, h, timeout_ms, len > 0);
    if (!rc && len) rc = write_all(c, data, len, timeout_ms, 0);
    pthread_mutex_unlock(&c->wmu);
    return rc;
}

/* Read what the socket has into the decoder, waiting at most POLL_SLICE_MS.
 * Pings a peer idle for ping_ms; one silent for three of those is gone.
 * 0 = read something or nothing yet, -1 broken or stopping. */
static int fill(ls_ws_conn *c) {
    struct pollfd pf = {.fd = c->fd, .events = POLLIN};
    int r = poll(&pf, 1, POLL_SLICE_MS);
    if (stopping_now(c)) return -1;
    uint64_t now = ls_mono_ns(), idle_ms = (now - c->last_rx_ns) / 1000000u;
    if (r == 0 || (r < 0 && errno == EINTR)) {
        if (idle_ms >= 3 * (uint64_t)c->ping_ms) {
            atomic_store(&c->broken, 1);
            return -1;
        }
        if (idle_ms >= (uint64_t)c->ping_ms && (now - c->last_ping_ns) / 1000000u >= (uint64_t)c->ping_ms) {
            c->last_ping_ns = now;
            if (send_frame(c, OP_PING, (const uint8_t *)"lipsyncd", 8, c->ping_ms) != 0) return -1;
        }
        return 0;
    }
    if (r < 0 || ls_buf_reserve(&c->d.in, 65536) != 0) {
        atomic_store(&c->broken, 1);
        return -1;
    }
    ssize_t got = recv(c->fd, c->d.in.data + c->d.in.len, 65536, 0);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) return 0;
    if (got <= 0) {
        atomic_store(&c->broken, 1);
        return -1;
    }
    c->d.in.len += (size_t)got;
    c->last_rx_ns = now;
    return 0;
}

static int ws_recv(ls_stream *bs, ls_buf *msg) {
    ls_ws_conn *c = (ls_ws_conn *)bs;
    msg->len = 0;
    for (;;) {
        if (atomic_load(&c->broken) || atomic_load(&c->peer_closed) || c->proto_code) return -1;
        switch (ls_ws_next(&c->d)) {
        case LS_WS_MESSAGE: {
            ls_buf t = *msg; /* hand the message over without a copy */
            *msg = c->d.msg;
            c->d.msg = t;
            c->d.msg.len = 0;
            c->d.msg_done = 0;
            return 1;
        }
        case LS_WS_PING:
            if (send_frame(c, OP_PONG, c->d.ctrl, c->d.ctrl_len, c->ping_ms) != 0) return -1;
            break;
        case LS_WS_PONG:
            break;
        case LS_WS_CLOSE:
            /* No half-close in WebSocket: a session ends with SessionEnd;
             * a close before it is the client leaving. */
            atomic_store(&c->peer_closed, 1);
            return -1;
        case LS_WS_ERROR:
            c->proto_code = c->d.close_code;
            snprintf(c->proto_reason, sizeof c->proto_reason, "%s", c->d.reason);
            return -1;
        case LS_WS_MORE:
            if (fill(c) != 0) return -1;
            break;
        }
    }
}

static int ws_send_timeout(ls_stream *bs, const uint8_t *data, size_t len, int timeout_ms) {
    ls_ws_conn *c = (ls_ws_conn *)bs;
    if (atomic_load(&c->broken) || atomic_load(&c->peer_closed)) return -1;
    int rc = send_frame(c, OP_BINARY, data, len, timeout_ms);
    if (rc == -2) atomic_store(&c->broken, 1); /* a frame half written: nothing more can follow */
    return rc;
}

static int ws_cancelled(ls_stream *bs) {
    ls_ws_conn *c = (ls_ws_conn *)bs;
    return atomic_load(&c->broken) || atomic_load(&c->peer_closed) || c->proto_code;
}

static int ws_stopping(ls_stream *bs) { return stopping_now((ls_ws_conn *)bs); }

static int ws_wait(ls_stream *bs, int timeout_ms) {
    ls_ws_conn *c = (ls_ws_conn *)bs;
    uint64_t until = ls_mono_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000u;
    while (ls_mono_ns() < until) {
        if (ws_cancelled(bs) || stopping_now(c)) return 1;
        usleep(POLL_SLICE_MS * 1000 / 2);
    }
    return ws_cancelled(bs) || stopping_now(c);
}

static const ls_stream_ops ws_ops = {ws_recv, ws_send_timeout, ws_cancelled, ws_stopping, ws_wait};

ls_ws_conn *ls_ws_conn_new(int fd, const uint8_t *extra, size_t n_extra, uint64_t max_message, int ping_ms,
                           const atomic_int *stopping) {
    ls_ws_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->base.ops = &ws_ops;
    c->fd = fd;
    c->d.max_message = max_message;
    c->ping_ms = ping_ms > 0 ? ping_ms : 20000;
    c->stopping = stopping;
    pthread_mutex_init(&c->wmu, NULL);
    atomic_init(&c->broken, 0);
    atomic_init(&c->peer_closed, 0);
    c->last_rx_ns = c->last_ping_ns = ls_mono_ns();
    if (n_extra && ls_buf_append(&c->d.in, extra, n_extra) != 0) {
        ls_ws_conn_free(c);
        return NULL;
    }
    return c;
}

ls_stream *ls_ws_conn_stream(ls_ws_conn *c) { return &c->base; }

static int close_code_for(ls_code code) {
    switch (code) {
    case LS_OK: return LS_WS_CLOSE_NORMAL;
    case LS_INVALID_ARGUMENT: return LS_WS_CLOSE_INVALID_DATA;
    case LS_UNAUTHENTICATED:
    case LS_PERMISSION_DENIED: return LS_WS_CLOSE_POLICY;
    case LS_RESOURCE_EXHAUSTED: return LS_WS_CLOSE_TRY_LATER;
    case LS_UNAVAILABLE: return LS_WS_CLOSE_GOING_AWAY;
    default: return 4000 + (int)code;
    }
}

int ls_ws_conn_close(ls_ws_conn *c, ls_code code, const char *msg) {
    int cc = c->proto_code ? c->proto_code : close_code_for(code);
    char reason[124];
    if (c->proto_code)
        snprintf(reason, sizeof reason, "%s", c->proto_reason);
    else if (code == LS_OK)
        reason[0] = '\0';
    else
        snprintf(reason, sizeof reason, "%s: %s", ls_code_name(code), msg ? msg : "");
    /* snprintf may have cut a UTF-8 sequence at the end: drop its start. */
    size_t rl = strlen(reason), k = rl;
    while (k > 0 && ((unsigned char)reason[k - 1] & 0xC0) == 0x80) k--;
    if (k > 0 && (unsigned char)reason[k - 1] >= 0xC0) {
        unsigned char lead = (unsigned char)reason[k - 1];
        size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
        if (rl - (k - 1) < need) rl = k - 1;
    }
    uint8_t body[2 + sizeof reason];
    body[0] = (uint8_t)(cc >> 8);
    body[1] = (uint8_t)cc;
    memcpy(body + 2, reason, rl);
    if (atomic_load(&c->broken) || send_frame(c, OP_CLOSE, body, 2 + rl, 1000) != 0) return cc;
    /* The peer answers with its close; give it a second. */
    uint64_t until = ls_mono_ns() + 1000000000u;
    while (!atomic_load(&c->peer_closed) && ls_mono_ns() < until) {
        ls_ws_event ev = c->proto_code ? LS_WS_ERROR : ls_ws_next(&c->d);
        if (ev == LS_WS_CLOSE || ev == LS_WS_ERROR) break;
        if (ev == LS_WS_MORE && fill(c) != 0) break;
    }
    return cc;
}

void ls_ws_conn_free(ls_ws_conn *c) {
    if (!c) return;
    ls_ws_decoder_free(&c->d);
    pthread_mutex_destroy(&c->wmu);
    free(c);
}
