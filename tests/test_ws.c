/* test_ws.c - the WebSocket pieces of ws.h on RFC 6455's own examples and on
 * the refusals a server owes: the accept key of section 1.3, the masked
 * frames of section 5.7 (a text "Hello" is refused with 1003, the same bytes
 * as a binary message pass), fragments with a ping between them, a 16-bit
 * length, the limit checked from the header alone (1009), an unmasked frame
 * (1002), a close code, and the server's frame headers. */
#include <stdio.h>
#include <string.h>

#include "ws.h"

static int failures;
#define CHECK(c, ...)                                                                                                  \
    do {                                                                                                               \
        if (!(c)) {                                                                                                    \
            failures++;                                                                                                \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                       \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fputc('\n', stderr);                                                                                       \
        }                                                                                                              \
    } while (0)

/* A masked client frame of payload p (n bytes) into out; returns its size. */
static size_t frame(uint8_t *out, int fin, int op, const void *p, size_t n, const uint8_t mask[4]) {
    size_t h = 0;
    out[h++] = (uint8_t)((fin ? 0x80 : 0) | op);
    if (n < 126) {
        out[h++] = (uint8_t)(0x80 | n);
    } else {
        out[h++] = 0x80 | 126;
        out[h++] = (uint8_t)(n >> 8);
        out[h++] = (uint8_t)n;
    }
    memcpy(out + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < n; i++) out[h + i] = ((const uint8_t *)p)[i] ^ mask[i & 3];
    return h + n;
}

static ls_ws_event feed(ls_ws_decoder *d, const uint8_t *p, size_t n) {
    ls_buf_append(&d->in, p, n);
    return ls_ws_next(d);
}

int main(void) {
    char acc[29];
    CHECK(ls_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", acc) == 0 && !strcmp(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
          "RFC 6455 1.3 accept key: %s", acc);
    CHECK(ls_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ", acc) != 0, "a short key is refused");
    CHECK(ls_ws_accept_key(NULL, acc) != 0, "no key is refused");

    /* RFC 6455 5.7: a masked text "Hello". */
    static const uint8_t hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    ls_ws_decoder d = {.max_message = 1000};
    CHECK(feed(&d, hello, sizeof hello) == LS_WS_ERROR && d.close_code == LS_WS_CLOSE_UNSUPPORTED,
          "a text message: 1003, got %d", d.close_code);
    ls_ws_decoder_free(&d);

    /* The same bytes as a binary message, delivered one byte at a time. */
    d = (ls_ws_decoder){.max_message = 1000};
    uint8_t bin[sizeof hello];
    memcpy(bin, hello, sizeof hello);
    bin[0] = 0x82;
    ls_ws_event ev = LS_WS_MORE;
    for (size_t i = 0; i < sizeof bin && ev == LS_WS_MORE; i++) ev = feed(&d, bin + i, 1);
    CHECK(ev == LS_WS_MESSAGE && d.msg.len == 5 && !memcmp(d.msg.data, "Hello", 5), "binary Hello (event %d)", ev);
    CHECK(ls_ws_next(&d) == LS_WS_MORE, "nothing more");

    /* Fragments "Hel" + ping "hi" + "lo", then a 300-byte message (16-bit length). */
    static const uint8_t m[4] = {1, 2, 3, 4};
    uint8_t buf[1024];
    size_t n = frame(buf, 0, 0x2, "Hel", 3, m);
    n += frame(buf + n, 1, 0x9, "hi", 2, m);
    n += frame(buf + n, 1, 0x0, "lo", 2, m);
    uint8_t big[300];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)i;
    n += frame(buf + n, 1, 0x2, big, sizeof big, m);
    ev = feed(&d, buf, n);
    CHECK(ev == LS_WS_PING && d.ctrl_len == 2 && !memcmp(d.ctrl, "hi", 2), "the ping between fragments (%d)", ev);
    ev = ls_ws_next(&d);
    CHECK(ev == LS_WS_MESSAGE && d.msg.len == 5 && !memcmp(d.msg.data, "Hello", 5), "the fragments joined (%d)", ev);
    ev = ls_ws_next(&d);
    CHECK(ev == LS_WS_MESSAGE && d.msg.len == 300 && !memcmp(d.msg.data, big, 300), "16-bit length (%d)", ev);

    /* A close with code 1000 and a reason. */
    uint8_t cl[] = {0x03, 0xe8, 'b', 'y', 'e'};
    n = frame(buf, 1, 0x8, cl, sizeof cl, m);
    CHECK(feed(&d, buf, n) == LS_WS_CLOSE && d.close_code == 1000, "close 1000, got %d", d.close_code);
    ls_ws_decoder_free(&d);

    /* Over the limit: refused from the header, before any payload. */
    d = (ls_ws_decoder){.max_message = 100};
    static const uint8_t hdr[] = {0x82, 0x80 | 126, 0x01, 0x00, 1, 2, 3, 4}; /* 256 bytes announced */
    CHECK(feed(&d, hdr, sizeof hdr) == LS_WS_ERROR && d.close_code == LS_WS_CLOSE_TOO_BIG, "1009, got %d",
          d.close_code);
    ls_ws_decoder_free(&d);

    /* Unmasked, and a continuation with no message: 1002. */
    d = (ls_ws_decoder){.max_message = 100};
    static const uint8_t unmasked[] = {0x82, 0x01, 'x'};
    CHECK(feed(&d, unmasked, sizeof unmasked) == LS_WS_ERROR && d.close_code == LS_WS_CLOSE_PROTOCOL,
          "unmasked: 1002, got %d", d.close_code);
    ls_ws_decoder_free(&d);
    d = (ls_ws_decoder){.max_message = 100};
    n = frame(buf, 1, 0x0, "x", 1, m);
    CHECK(feed(&d, buf, n) == LS_WS_ERROR && d.close_code == LS_WS_CLOSE_PROTOCOL, "stray continuation: 1002");
    ls_ws_decoder_free(&d);

    /* Server headers: unmasked, FIN, the shortest length form. */
    uint8_t h[10];
    CHECK(ls_ws_frame_header(h, 0x2, 5) == 2 && h[0] == 0x82 && h[1] == 5, "7-bit length");
    CHECK(ls_ws_frame_header(h, 0x2, 300) == 4 && h[1] == 126 && h[2] == 1 && h[3] == 44, "16-bit length");
    CHECK(ls_ws_frame_header(h, 0x2, 70000) == 10 && h[1] == 127 && h[7] == 1 && h[8] == 0x11 && h[9] == 0x70,
          "64-bit length");

    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("ws: ok\n");
    return 0;
}
