"""WebSocket sessions (GET /session on the HTTP port), through a client
written here from RFC 6455 (socket, hashlib, base64): the handshake answers
with the key's SHA-1 accept value; a session of binary SessionRequest
messages gets the same SessionResponse sequence as StreamSession, frames
with RenderSpeech's pixels; fragments and pings from the client are taken,
idle clients are pinged; hostile input gets a precise HTTP status before
the upgrade or a close code after it (1002 protocol, 1003 text, 1007 bad
data, 1009 too big, 1008 auth, 4000 + gRPC code otherwise), and the server
stays up; a `token` query parameter is the API key.
"""

import base64
import hashlib
import os
import socket
import struct
import unittest

import cv2
import numpy as np

import lstest
from test_session import ENCODER, _speech_s16

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = "wsTenantKey-0123456789"


class WsClient:
    """A minimal RFC 6455 client: masked frames out, frames in."""

    def __init__(self, port, path="/session", origin=None, headers=None, key=None, version="13"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port, "Upgrade: websocket",
                 "Connection: keep-alive, Upgrade", "Sec-WebSocket-Version: %s" % version,
                 "Sec-WebSocket-Key: %s" % self.key]
        if origin:
            lines.append("Origin: %s" % origin)
        lines += headers or []
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}

    def expected_accept(self):
        return base64.b64encode(hashlib.sha1((self.key + GUID).encode()).digest()).decode()

    def send_frame(self, opcode, payload, fin=True, mask=True):
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        m = 0x80 if mask else 0
        if n < 126:
            hdr = struct.pack("!BB", b0, m | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, m | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, m | 127, n)
        if mask:
            k = os.urandom(4)
            arr = np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(k, np.uint8), n)
            self.sock.sendall(hdr + k + arr.tobytes())
        else:
            self.sock.sendall(hdr + payload)

    def send(self, msg):
        self.send_frame(0x2, msg.SerializeToString())

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self):
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        assert not b1 & 0x80, "server frames are not masked"
        return b0 & 0x0F, bool(b0 & 0x80), self._read(n)

    def messages(self, pb2):
        """SessionResponses until the close; returns (responses, close code, reason, pings)."""
        out, pings = [], 0
        while True:
            op, fin, data = self.recv_frame()
            if op == 0x2:
                assert fin
                out.append(pb2.SessionResponse.FromString(data))
            elif op == 0x9:
                pings += 1
                self.send_frame(0xA, data)
            elif op == 0x8:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                self.send_frame(0x8, data[:2])
                return out, code, data[2:].decode(), pings
            elif op == 0xA:
                out.append(("pong", data))

    def close(self):
        self.sock.close()


class TestWebSocket(lstest.ServerTestCase):
    MODELS = {}
    SERVER_OPTS = {"worker_threads": 2, "max_message_mb": 4}
    HTTP_OPTS = {"cors_origins": ["http://allowed.example"], "websocket_ping_seconds": 0.5}

    @classmethod
    def setUpClass(cls):
        cls.MODELS = {"demo": lstest.demo_model_config("demo", audio_encoder=ENCODER)}
        cls.pcm = _speech_s16("Browsers talk through a web socket.", seconds=2.0)
        super().setUpClass()
        cls.port = cls.server.http_port

    def start(self, **kw):
        opts = dict(model_id="demo", pcm_encoding="s16le", sample_rate=16000, channels=1, output_format="png")
        opts.update(kw)
        return self.pb2.SessionRequest(start=self.pb2.SessionStart(**opts))

    def audio(self, b):
        return self.pb2.SessionRequest(audio=self.pb2.AudioChunk(pcm=b))

    def end(self):
        return self.pb2.SessionRequest(end=self.pb2.SessionEnd())

    def connect(self, **kw):
        c = WsClient(self.port, **kw)
        self.addCleanup(c.close)
        return c

    def assertServing(self):
        self.assertEqual(self.stub.Health(self.pb2.HealthRequest(), timeout=10).status, "SERVING")

    def test_session_matches_render_speech(self):
        c = self.connect(origin="http://127.0.0.1:%d" % self.port)   # same origin
        self.assertEqual(c.status, 101)
        self.assertEqual(c.headers.get("sec-websocket-accept"), c.expected_accept())
        self.assertEqual(c.headers.get("upgrade", "").lower(), "websocket")
        # The start in three fragments with a ping between them.
        start = self.start(start_frame_idx=2).SerializeToString()
        c.send_frame(0x2, start[:5], fin=False)
        c.send_frame(0x9, b"are you there")
        c.send_frame(0x0, start[5:9], fin=False)
        c.send_frame(0x0, start[9:], fin=True)
        for i in range(0, len(self.pcm), 640):
            c.send(self.audio(self.pcm[i:i + 640]))
        c.send(self.end())
        resps, code, reason, _ = c.messages(self.pb2)
        self.assertEqual(code, 1000, reason)
        self.assertIn(("pong", b"are you there"), resps)
        resps = [r for r in resps if not isinstance(r, tuple)]
        self.assertEqual(resps[0].WhichOneof("kind"), "started")
        self.assertEqual(resps[0].started.lookahead_ms, 453)
        self.assertEqual(resps[-1].WhichOneof("kind"), "ended")
        frames = [r.frame for r in resps[1:-1]]
        self.assertEqual([f.index for f in frames], list(range(len(frames))))
        self.assertEqual(resps[-1].ended.frames, len(frames))
        req = self.pb2.RenderSpeechRequest(model_id="demo", start_frame_idx=2, output_format="png",
                                           audio=self.pb2.AudioInput(pcm=self.pcm, pcm_encoding="s16le",
                                                                     sample_rate=16000, channels=1))
        want = [f for r in self.stub.RenderSpeech(req, timeout=lstest.RPC_TIMEOUT_S) for f in r.frames]
        self.assertEqual(len(frames), len(want))
        for i, (f, w) in enumerate(zip(frames, want)):
            a = cv2.imdecode(np.frombuffer(f.data, np.uint8), cv2.IMREAD_UNCHANGED)
            b = cv2.imdecode(np.frombuffer(w, np.uint8), cv2.IMREAD_UNCHANGED)
            self.assertTrue(np.array_equal(a, b), "frame %d" % i)

    def test_idle_client_is_pinged(self):
        c = self.connect()
        c.send(self.start())
        op, _, data = c.recv_frame()          # started
        self.assertEqual(op, 0x2)
        # Silent for over the 0.5 s ping interval: the server pings; we
        # answer, end the session, and it closes normally.
        op, _, data = c.recv_frame()
        self.assertEqual(op, 0x9)
        c.send_frame(0xA, data)
        c.send(self.audio(self.pcm))
        c.send(self.end())
        resps, code, reason, _ = c.messages(self.pb2)
        self.assertEqual(code, 1000, reason)
        self.assertEqual(resps[-1].WhichOneof("kind"), "ended")

    def test_handshake_refusals(self):
        for kw, status in ((dict(origin="http://evil.example"), 403),
                           (dict(version="8"), 426),
                           (dict(key="tooshort"), 400)):
            with self.subTest(**kw):
                c = self.connect(**kw)
                self.assertEqual(c.status, status)
        self.assertEqual(self.connect(origin="http://allowed.example").status, 101)
        # A plain GET is no upgrade.
        import urllib.error
        import urllib.request
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen("http://127.0.0.1:%d/session" % self.port, timeout=10)
        self.assertEqual(cm.exception.code, 426)
        self.assertServing()

    def close_of(self, send):
        c = self.connect()
        self.assertEqual(c.status, 101)
        send(c)
        _, code, reason, _ = c.messages(self.pb2)
        return code, reason

    def test_hostile_messages(self):
        cases = [
            ("text frame", lambda c: c.send_frame(0x1, b"{}"), 1003, "binary"),
            ("unmasked", lambda c: c.send_frame(0x2, self.start().SerializeToString(), mask=False), 1002, "masked"),
            ("truncated protobuf", lambda c: c.send_frame(0x2, b"\x0a\xff\x01"), 1007, "INVALID_ARGUMENT"),
            ("no start", lambda c: c.send(self.audio(b"\x00\x00")), 1007, "first message"),
            ("unknown model", lambda c: c.send(self.start(model_id="nosuch")), 4005, "NOT_FOUND"),
            # Only the header of a 5 MiB message: refused from its length alone.
            ("oversize", lambda c: c.sock.sendall(struct.pack("!BBQ", 0x82, 0x80 | 127, 5 << 20) + b"mask"),
             1009, "limit"),
            ("bad rate", lambda c: c.send(self.start(sample_rate=200000)), 1007, "sample_rate"),
            ("continuation first", lambda c: c.send_frame(0x0, b"x"), 1002, "continuation"),
        ]
        for name, send, want, text in cases:
            with self.subTest(name):
                code, reason = self.close_of(send)
                self.assertEqual(code, want, reason)
                self.assertIn(text, reason)
        self.assertServing()


class TestWebSocketAuth(lstest.ServerTestCase):
    MODELS = {}

    @classmethod
    def setUpClass(cls):
        cls.MODELS = {"demo": lstest.demo_model_config("demo", audio_encoder=ENCODER)}
        cls.EXTRA_YAML = ("auth:\n  keys:\n    - name: t\n      sha256: \"%s\"\n      models: [demo]\n"
                          % hashlib.sha256(KEY.encode()).hexdigest())
        super().setUpClass()

    def session_close(self, path):
        c = WsClient(self.server.http_port, path=path)
        self.addCleanup(c.close)
        self.assertEqual(c.status, 101)
        start = self.pb2.SessionRequest(start=self.pb2.SessionStart(
            model_id="demo", pcm_encoding="s16le", sample_rate=16000, channels=1))
        c.send(start)
        c.send(self.pb2.SessionRequest(audio=self.pb2.AudioChunk(pcm=b"\x00\x00" * 16000)))
        c.send(self.pb2.SessionRequest(end=self.pb2.SessionEnd()))
        resps, code, reason, _ = c.messages(self.pb2)
        return resps, code, reason

    def test_token(self):
        _, code, reason = self.session_close("/session")
        self.assertEqual(code, 1008)
        self.assertIn("UNAUTHENTICATED", reason)
        _, code, reason = self.session_close("/session?token=wrong")
        self.assertEqual(code, 1008, reason)
        resps, code, reason = self.session_close("/session?token=" + KEY)
        self.assertEqual(code, 1000, reason)
        self.assertEqual(resps[-1].WhichOneof("kind"), "ended")


if __name__ == "__main__":
    unittest.main()
