/* ws.h - WebSocket (RFC 6455) for the HTTP port: the handshake key, the
 * frame decoder, and an ls_stream (stream.h) over an upgraded connection.
 *
 * Why hand-written: libmicrohttpd already owns the HTTP port (the demo
 * page, gRPC-Web, metrics), and its upgrade support hands over the socket of
 * a request it has parsed, so a browser's session comes in on the same
 * origin, port, connection limits and logs as everything else. What is left
 * is the framing: a 2-14 byte header, the client's XOR mask, fragments and
 * three control frames. libwebsockets would bring a second event loop and a
 * second port for that. Like transport.h and http.h this knows bytes,
 * sockets and threads, nothing of models: the session it carries is the
 * same StreamSession handler the gRPC port runs.
 *
 * The decoder is a pure state machine over a byte buffer (fuzzed by
 * fuzz/fuzz_ws.c). It enforces what a server must (RFC 6455 section 5):
 * client frames masked, no reserved bits (no extensions are negotiated),
 * control frames unfragmented and at most 125 bytes, continuations only
 * inside a message, a message at most max_message bytes (checked from the
 * header, before the payload is read). A violation yields the close code
 * to send: 1002 protocol error, 1003 a text message (the protocol is
 * binary: one serialized message per WebSocket message), 1009 too big. */
#ifndef LS_WS_H
#define LS_WS_H

#include <stdatomic.h>
#include <stdint.h>

#include "common.h"
#include "stream.h"

#define LS_WS_CLOSE_NORMAL 1000
#define LS_WS_CLOSE_GOING_AWAY 1001
#define LS_WS_CLOSE_PROTOCOL 1002
#define LS_WS_CLOSE_UNSUPPORTED 1003
#define LS_WS_CLOSE_INVALID_DATA 1007
#define LS_WS_CLOSE_POLICY 1008
#define LS_WS_CLOSE_TOO_BIG 1009
#define LS_WS_CLOSE_INTERNAL 1011
#define LS_WS_CLOSE_TRY_LATER 1013

/* Sec-WebSocket-Accept for a client's Sec-WebSocket-Key: base64(SHA-1(key +
 * the RFC's GUID)), 28 characters and a NUL. Returns 0, or -1 if the key is
 * not the base64 of 16 bytes (24 characters ending in "=="). */
int ls_ws_accept_key(const char *key, char out[29]);

typedef enum {
    LS_WS_MORE = 0,    /* need more bytes */
    LS_WS_MESSAGE,     /* d->msg holds one whole binary message */
    LS_WS_PING,        /* d->ctrl holds its payload: answer with a pong */
    LS_WS_PONG,
    LS_WS_CLOSE,       /* the peer closes: d->close_code (1005 if none given) */
    LS_WS_ERROR        /* d->close_code and d->reason: close the connection with them */
} ls_ws_event;

typedef struct {
    uint64_t max_message;  /* bytes; set before use */
    ls_buf in;             /* bytes read and not decoded yet: append here */
    size_t in_off;         /* decoded up to here */
    ls_buf msg;            /* the message being assembled (LS_WS_MESSAGE: whole) */
    int in_message;        /* a fragmented message has started */
    int msg_done;          /* msg was handed out: cleared on the next call */
    uint8_t ctrl[125];     /* the last control frame's payload */
    size_t ctrl_len;
    int close_code;
    char reason[124];
} ls_ws_decoder;

/* The next event from the bytes in d->in. Free with ls_ws_decoder_free. */
ls_ws_event ls_ws_next(ls_ws_decoder *d);
void ls_ws_decoder_free(ls_ws_decoder *d);

/* A server frame's header (unmasked, FIN set): writes 2, 4 or 10 bytes. */
size_t ls_ws_frame_header(uint8_t out[10], int opcode, uint64_t len);

/* ---- an ls_stream over an upgraded socket ---- */

typedef struct ls_ws_conn ls_ws_conn;

/* Takes fd (not closed here: the caller closes it through libmicrohttpd)
 * and the bytes already read past the handshake. ping_ms: idle time before
 * a ping; a peer silent for three of those is gone. stopping: set when the
 * server stops. */
ls_ws_conn *ls_ws_conn_new(int fd, const uint8_t *extra, size_t n_extra, uint64_t max_message, int ping_ms,
                           const atomic_int *stopping);
ls_stream *ls_ws_conn_stream(ls_ws_conn *c);

/* The close code and reason to end with: a protocol failure the decoder
 * found wins; else the handler's status (code, msg). 1000 for LS_OK,
 * 1007 INVALID_ARGUMENT, 1008 UNAUTHENTICATED / PERMISSION_DENIED, 1013
 * RESOURCE_EXHAUSTED, 1001 UNAVAILABLE (stopping), 4000 + the gRPC code
 * otherwise; the reason is "<CODE>: <message>", cut to 123 bytes. Sends it
 * (unless the connection is broken) and waits up to a second for the
 * peer's close. Returns the code sent. */
int ls_ws_conn_close(ls_ws_conn *c, ls_code code, const char *msg);
void ls_ws_conn_free(ls_ws_conn *c);

#endif
