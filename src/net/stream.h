/* stream.h - one streaming call as its handler sees it, whatever carries it.
 *
 * Why an interface: a live session is one handler (service.c's
 * StreamSession) that two transports run, the gRPC port (transport.c: an
 * HTTP/2 stream) and the HTTP port's WebSocket (ws.c: a browser's
 * connection). Each transport embeds an ls_stream as the first member of its
 * own stream object and fills in the operations; handlers only call the
 * ls_stream_* functions below, so they know neither gRPC nor WebSocket.
 *
 * The primitives block the calling thread. ls_stream_recv and ls_stream_send
 * may run at the same time in two threads, but each from one thread at a
 * time. */
#ifndef LS_STREAM_H
#define LS_STREAM_H

#include "common.h"

typedef struct ls_stream ls_stream;

typedef struct {
    int (*recv)(ls_stream *s, ls_buf *msg);
    int (*send_timeout)(ls_stream *s, const uint8_t *data, size_t len, int timeout_ms);
    int (*cancelled)(ls_stream *s);
    int (*stopping)(ls_stream *s);
    int (*wait)(ls_stream *s, int timeout_ms);
} ls_stream_ops;

struct ls_stream {
    const ls_stream_ops *ops;
};

/* Next message from the client into *msg (its previous contents replaced):
 * 1 = a message, 0 = the client has finished sending (half-close), -1 = the
 * call is cancelled or broken (or the server is stopping). */
static inline int ls_stream_recv(ls_stream *s, ls_buf *msg) { return s->ops->recv(s, msg); }

/* ls_stream_send with a stall bound: a client that does not take the message
 * within timeout_ms (> 0; 0 = wait forever) has the call ended with
 * DEADLINE_EXCEEDED saying so, and -2 is returned. Otherwise 0 once the
 * transport has taken the message (copied), -1 when the call is cancelled
 * or broken. */
static inline int ls_stream_send_timeout(ls_stream *s, const uint8_t *data, size_t len, int timeout_ms) {
    return s->ops->send_timeout(s, data, len, timeout_ms);
}

/* Send one message, waiting as long as it takes: 0 or -1 as above. */
static inline int ls_stream_send(ls_stream *s, const uint8_t *data, size_t len) {
    return s->ops->send_timeout(s, data, len, 0);
}

/* Non-zero once the client has cancelled the call or gone away. */
static inline int ls_stream_cancelled(ls_stream *s) { return s->ops->cancelled(s); }

/* Non-zero once the server is stopping: send what is worth sending and
 * return; the call is ended soon after. */
static inline int ls_stream_stopping(ls_stream *s) { return s->ops->stopping(s); }

/* Sleep up to timeout_ms, waking early when the client cancels or the
 * server stops. Returns 1 in those two cases, 0 when the time ran out. */
static inline int ls_stream_wait(ls_stream *s, int timeout_ms) { return s->ops->wait(s, timeout_ms); }

#endif
