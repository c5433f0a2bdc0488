/* fuzz_ws.c - libFuzzer target: the WebSocket frame decoder (ws.h).
 *
 * The first byte picks a chunk size (1..256); the rest are bytes from a
 * client, fed to ls_ws_next whole and again chunk by chunk, as reads from
 * a socket would deliver them. Invariants:
 *  - both feedings give the same events, messages and close codes (the
 *    decoder does not depend on how the bytes arrive);
 *  - a message is at most max_message (4096) bytes, a control payload at
 *    most 125;
 *  - an error is one of the close codes a server sends for bad input
 *    (1002, 1003, 1009) with a non-empty reason; a peer's close code is one
 *    a peer may send, or 1005 (none given);
 *  - nothing is read outside the buffers (ASan). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

#define MAX_MESSAGE 4096
#define MAX_EVENTS 512

typedef struct {
    int ev;
    size_t len;
    uint64_t sum; /* FNV-1a of the payload */
    int code;
} event;

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_ws: invariant broken: %s\n", what);
        abort();
    }
}

static uint64_t fnv(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Events until an error, a close or the end of the bytes. */
static size_t run(const uint8_t *data, size_t size, size_t chunk, event *out) {
    ls_ws_decoder d = {.max_message = MAX_MESSAGE};
    size_t n = 0, fed = 0;
    for (;;) {
        ls_ws_event ev = ls_ws_next(&d);
        if (ev == LS_WS_MORE) {
            if (fed == size) break;
            size_t k = size - fed < chunk ? size - fed : chunk;
            check(ls_buf_append(&d.in, data + fed, k) == 0, "append");
            fed += k;
            continue;
        }
        check(n < MAX_EVENTS, "bounded events");
        event e = {.ev = (int)ev};
        if (ev == LS_WS_MESSAGE) {
            check(d.msg.len <= MAX_MESSAGE, "message within the limit");
            e.len = d.msg.len;
            e.sum = fnv(d.msg.data, d.msg.len);
        } else if (ev == LS_WS_PING || ev == LS_WS_PONG) {
            check(d.ctrl_len <= 125, "control payload <= 125");
            e.len = d.ctrl_len;
            e.sum = fnv(d.ctrl, d.ctrl_len);
        } else if (ev == LS_WS_CLOSE) {
            int c = d.close_code;
            check(c == 1005 || (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1011) || (c >= 3000 && c <= 4999),
                  "a close code a peer may send");
            e.code = c;
        } else {
            check(ev == LS_WS_ERROR, "a known event");
            check(d.close_code == 1002 || d.close_code == 1003 || d.close_code == 1009, "an input error's close code");
            check(d.reason[0] != 0, "a reason");
            e.code = d.close_code;
        }
        out[n++] = e;
        if (ev == LS_WS_CLOSE || ev == LS_WS_ERROR || n == MAX_EVENTS) break;
    }
    ls_ws_decoder_free(&d);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t chunk = (size_t)data[0] + 1;
    static event a[MAX_EVENTS], b[MAX_EVENTS];
    size_t na = run(data + 1, size - 1, size, a);
    size_t nb = run(data + 1, size - 1, chunk, b);
    check(na == nb, "the same number of events whole and in chunks");
    for (size_t i = 0; i < na; i++)
        check(a[i].ev == b[i].ev && a[i].len == b[i].len && a[i].sum == b[i].sum && a[i].code == b[i].code,
              "the same events whole and in chunks");
    return 0;
}
