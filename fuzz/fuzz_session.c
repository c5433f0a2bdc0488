/* fuzz_session.c - libFuzzer target: the StreamSession handler (service.c)
 * driven through a scripted stream, as either transport would drive it.
 *
 * Input: records of [kind: 1 byte][length: 2 bytes LE][payload], each one
 * event of the client side:
 *   0  a raw SessionRequest (the payload as its bytes: decoding is fuzzed)
 *   1  a start built from the payload's first bytes (model, pcm_encoding,
 *      sample_rate, channels, output_format, batch_size, start_frame_idx
 *      chosen from small tables, so valid sessions are common)
 *   2  an audio chunk: payload [length: 2 bytes LE][pattern], the chunk that
 *      many bytes of the pattern repeated (zeros without one), so that a
 *      short input can carry the seconds of audio frames need; 3 the same
 *      with request_keyframe
 *   4  end          5  half-close (no more messages)
 *   6  the client cancels (recv fails, cancelled set)
 *   7  the client goes away at the next frame (send fails)
 * After the last record the stream half-closes. Audio is capped at 3 s of
 * 16-bit mono per input so that one input stays fast.
 *
 * Checked on every input: every message the server sends is a valid
 * SessionResponse; `started` comes first, then frames with index 0, 1, 2,
 * ... and pts_ms = 40 index, then at most one `ended`, whose frame count is
 * the frames sent, and nothing after it; the status is one the API
 * documents, OK only with `ended` sent, and an error has a one-line message.
 * ASan+UBSan and libFuzzer's leak check do the rest. The models: the demo
 * avatar with its audio encoder (speech in), the same without one
 * (FAILED_PRECONDITION), one whose files do not exist, and ids not
 * configured; capacity for two. */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "engine.h"
#include "log.h"
#include "mel.h"
#include "multitenant.pb-c.h"
#include "service.h"
#include "stream.h"

#ifndef LS_FUZZ_DEMO_DIR
#define LS_FUZZ_DEMO_DIR ""
#endif

#define MAX_PCM_BYTES (3 * 16000 * 2)

static ls_config cfg;
static ls_service *svc;
static const ls_stream_method *session_method;

static void check(int ok, const char *what, const char *detail) {
    if (!ok) {
        fprintf(stderr, "fuzz_session: invariant broken: %s (%s)\n", what, detail ? detail : "");
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    ls_log_set_level(LS_LOG_ERROR);
    ls_err err = {.code = LS_OK, .msg = ""};
    const char *demo = getenv("LS_DEMO_DIR");
    if (!demo || !*demo) demo = LS_FUZZ_DEMO_DIR;
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/models/demo_encoder.onnx", demo);
    if (access(probe, R_OK) != 0) {
        fprintf(stderr, "fuzz_session: no demo avatar at '%s' (set LS_DEMO_DIR)\n", demo);
        abort();
    }
    if (ls_engine_global_init(1, 1, &err) != 0 || ls_mel_init(&err) != 0) {
        fprintf(stderr, "fuzz_session: %s\n", err.msg);
        abort();
    }
    static char yaml[4096];
    int n = snprintf(yaml, sizeof yaml,
                     "server:\n  max_batch: 4\n"
                     "capacity:\n  max_models: 2\n  load_retry_seconds: 0\n  min_residency_seconds: 0\n"
                     "sessions:\n  max: 4\n  stall_timeout_s: 5\n"
                     "audio:\n  max_seconds: 2\n"
                     "models:\n"
                     "  talk:\n"
                     "    model_path: %1$s/models/demo.onnx\n"
                     "    background_dir: %1$s/avatar/frames\n"
                     "    crop_rects_path: %1$s/avatar/crop_rects.json\n"
                     "    num_frames: 3\n"
                     "    audio_encoder:\n      model_path: %1$s/models/demo_encoder.onnx\n"
                     "  mute:\n"
                     "    model_path: %1$s/models/demo.onnx\n"
                     "    background_dir: %1$s/avatar/frames\n"
                     "    crop_rects_path: %1$s/avatar/crop_rects.json\n"
                     "    num_frames: 2\n"
                     "  missing:\n"
                     "    model_path: /nonexistent-lipsyncd-fuzz/m.onnx\n"
                     "    background_dir: /nonexistent-lipsyncd-fuzz/frames\n"
                     "    crop_rects_path: /nonexistent-lipsyncd-fuzz/rects.json\n"
                     "    audio_encoder:\n      model_path: /nonexistent-lipsyncd-fuzz/e.onnx\n",
                     demo);
    if (n <= 0 || (size_t)n >= sizeof yaml || ls_config_parse(yaml, (size_t)n, "<fuzz>", "/", &cfg, &err) != 0 ||
        !(svc = ls_service_create(&cfg, &err))) {
        fprintf(stderr, "fuzz_session: %s\n", n > 0 && (size_t)n < sizeof yaml ? err.msg : "config too long");
        abort();
    }
    session_method = ls_service_session_method();
    return 0;
}

/* The client's side, scripted from the input; and what the server sent. */
typedef struct {
    ls_stream base;
    const uint8_t *p, *end; /* records still to play */
    size_t pcm_bytes;       /* audio sent so far (capped) */
    int cancelled, fail_send, half_closed;
    /* what the server sent */
    int sent, started, ended;
    int64_t frames, ended_frames;
} script;

static void put_varint(ls_buf *b, uint64_t v) {
    do {
        uint8_t c = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) c |= 0x80;
        ls_buf_append(b, &c, 1);
    } while (v);
}

static void pack_request(const Multitenant__SessionRequest *q, ls_buf *out) {
    size_t len = multitenant__session_request__get_packed_size(q);
    check(ls_buf_reserve(out, len) == 0, "memory", NULL);
    out->len = multitenant__session_request__pack(q, out->data);
}

/* A start from the payload's bytes: each field from a small table. */
static void build_start(const uint8_t *p, size_t n, ls_buf *out) {
    static const char *const models[] = {"talk", "mute", "missing", "nope", "", "bad id"};
    static const char *const encodings[] = {"s16le", "f32le", "s16le", "u8"};
    static const int rates[] = {16000, 16000, 8000, 0};
    static const char *const formats[] = {"", "jpeg", "raw", "png", "h264", "gif"};
    uint8_t b[8] = {0};
    memcpy(b, p, n < sizeof b ? n : sizeof b);
    Multitenant__SessionStart st = MULTITENANT__SESSION_START__INIT;
    st.model_id = (char *)models[b[0] % 6];
    st.pcm_encoding = (char *)encodings[b[1] % 4];
    st.sample_rate = rates[b[2] % 4];
    st.channels = b[3] % 4;        /* 0 is refused */
    st.output_format = (char *)formats[b[4] % 6];
    st.batch_size = b[5] % 6;      /* 0 = 5; 5 is above max_batch 4 */
    st.start_frame_idx = (int)(b[6] % 8) - 1; /* -1 is refused */
    st.jpeg_quality = b[7] % 3 == 0 ? 0 : b[7] % 3 == 1 ? 75 : 101; /* 101 is refused */
    Multitenant__SessionRequest q = MULTITENANT__SESSION_REQUEST__INIT;
    q.kind_case = MULTITENANT__SESSION_REQUEST__KIND_START;
    q.start = &st;
    pack_request(&q, out);
}

static void build_audio(script *s, const uint8_t *p, size_t n, int keyframe, ls_buf *out) {
    size_t len = n >= 2 ? (size_t)p[0] | (size_t)p[1] << 8 : 0;
    const uint8_t *pat = n > 2 ? p + 2 : NULL;
    size_t npat = n > 2 ? n - 2 : 0;
    if (s->pcm_bytes + len > MAX_PCM_BYTES) len = MAX_PCM_BYTES - s->pcm_bytes;
    s->pcm_bytes += len;
    uint8_t *pcm = calloc(len ? len : 1, 1);
    check(pcm != NULL, "memory", NULL);
    for (size_t i = 0; npat && i < len; i++) pcm[i] = pat[i % npat];
    Multitenant__AudioChunk a = MULTITENANT__AUDIO_CHUNK__INIT;
    a.pcm = (ProtobufCBinaryData){len, pcm};
    a.request_keyframe = keyframe;
    Multitenant__SessionRequest q = MULTITENANT__SESSION_REQUEST__INIT;
    q.kind_case = MULTITENANT__SESSION_REQUEST__KIND_AUDIO;
    q.audio = &a;
    pack_request(&q, out);
    free(pcm);
}

static int s_recv(ls_stream *bs, ls_buf *msg) {
    script *s = (script *)bs;
    msg->len = 0;
    for (;;) {
        if (s->cancelled) return -1;
        if (s->half_closed || s->end - s->p < 3) return 0;
        int kind = s->p[0] % 8;
        size_t n = (size_t)s->p[1] | (size_t)s->p[2] << 8;
        s->p += 3;
        if (n > (size_t)(s->end - s->p)) n = (size_t)(s->end - s->p);
        const uint8_t *pay = s->p;
        s->p += n;
        switch (kind) {
        case 0: ls_buf_append(msg, pay, n); return 1;
        case 1: build_start(pay, n, msg); return 1;
        case 2:
        case 3: build_audio(s, pay, n, kind == 3, msg); return 1;
        case 4: {
            /* SessionRequest{end: {}}: field 3, an empty message */
            put_varint(msg, 3 << 3 | 2);
            put_varint(msg, 0);
            return 1;
        }
        case 5: s->half_closed = 1; return 0;
        case 6: s->cancelled = 1; return -1;
        default: s->fail_send = 1; continue; /* not a message: play the next record */
        }
    }
}

static int s_send(ls_stream *bs, const uint8_t *data, size_t len, int timeout_ms) {
    script *s = (script *)bs;
    (void)timeout_ms;
    check(!s->ended, "nothing after ended", NULL);
    Multitenant__SessionResponse *r = multitenant__session_response__unpack(NULL, len, data);
    check(r != NULL, "every message a valid SessionResponse", NULL);
    char detail[96];
    snprintf(detail, sizeof detail, "message %d, kind %d, frames so far %lld", s->sent, (int)r->kind_case,
             (long long)s->frames);
    switch (r->kind_case) {
    case MULTITENANT__SESSION_RESPONSE__KIND_STARTED:
        check(s->sent == 0 && r->started->fps == 25 && r->started->frame_width > 0, "started first, once", detail);
        s->started = 1;
        break;
    case MULTITENANT__SESSION_RESPONSE__KIND_FRAME:
        check(s->started && r->frame->index == s->frames && r->frame->pts_ms == 40 * r->frame->index &&
                  r->frame->data.len > 0,
              "frames after started, index 0, 1, 2, ..., pts 40 ms apart, never empty", detail);
        s->frames++;
        break;
    case MULTITENANT__SESSION_RESPONSE__KIND_ENDED:
        check(s->started, "ended after started", detail);
        s->ended = 1;
        s->ended_frames = r->ended->frames;
        break;
    default: check(0, "a known kind", detail);
    }
    multitenant__session_response__free_unpacked(r, NULL);
    s->sent++;
    if (s->fail_send) {
        s->cancelled = 1; /* the client is gone */
        return -1;
    }
    return 0;
}

static int s_cancelled(ls_stream *bs) { return ((script *)bs)->cancelled; }
static int s_stopping(ls_stream *bs) {
    (void)bs;
    return 0;
}
static int s_wait(ls_stream *bs, int timeout_ms) {
    (void)timeout_ms;
    return ((script *)bs)->cancelled;
}

static const ls_stream_ops ops = {s_recv, s_send, s_cancelled, s_stopping, s_wait};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static atomic_int never;
    script s = {.base = {&ops}, .p = data, .end = data + size};
    ls_call_info call = {.method = session_method->path, .received_mono_ns = ls_mono_ns(), .cancelled = &never,
                         .request_id = "fuzz"};
    ls_err err = {.code = LS_OK, .msg = ""};
    ls_code code = session_method->fn(svc, &call, &s.base, &err);
    char detail[LS_ERR_MSG_MAX + 64];
    snprintf(detail, sizeof detail, "%s: %s", ls_code_name(code), err.msg);
    switch (code) {
    case LS_OK:
        check(s.ended && s.ended_frames == s.frames, "OK only after ended, counting every frame sent", detail);
        break;
    case LS_INVALID_ARGUMENT:
    case LS_NOT_FOUND:
    case LS_FAILED_PRECONDITION:
    case LS_RESOURCE_EXHAUSTED:
    case LS_UNAVAILABLE:
    case LS_CANCELLED:
    case LS_DEADLINE_EXCEEDED:
        check(err.msg[0] != 0, "a message with every error", detail);
        for (const char *c = err.msg; *c; c++)
            check((unsigned char)*c >= 0x20 && *c != 0x7f, "one printable line", detail);
        break;
    default: check(0, "a documented status", detail);
    }
    return 0;
}
