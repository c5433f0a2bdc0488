"""Connection hygiene of the gRPC port (server.keepalive_seconds,
keepalive_timeout_seconds, max_connection_idle_seconds), seen from a raw
HTTP/2 peer so that nothing in a client library answers for the test:

  - keepalive: a peer that opens a call (a StreamSession's HEADERS, then
    nothing) gets a PING after keepalive_seconds; a peer that never answers it
    (a dead peer behind a NAT that dropped the connection) is disconnected
    keepalive_timeout_seconds later, and its call ends;
  - idle: a connection that never starts a call gets GOAWAY after
    max_connection_idle_seconds, with keepalive off, and is then closed;
  - a real gRPC client is served as before with these settings: a session
    longer than several keepalive periods completes, and a call after the
    client's connection sat idle works (connections without calls are not
    pinged: an idle client library may not be reading its socket).
"""

import os
import socket
import struct
import time
import unittest

import numpy as np

import lstest
from lstest import demo_model_config

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, SETTINGS, PING, GOAWAY = 0x1, 0x4, 0x6, 0x7
ACK, END_HEADERS = 0x1, 0x4


def frame(ftype, flags=0, stream=0, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def hpack_literal(name, value):
    """One header as an HPACK literal without indexing, new name, no Huffman
    (RFC 7541 6.2.2); names and values here are shorter than 127 bytes."""
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


class Peer:
    """A raw HTTP/2 client connection that answers SETTINGS and nothing else."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(PREFACE + frame(SETTINGS))
        self.buf = b""

    def _read(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("closed by the server")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def next_frame(self, deadline):
        """(type, flags, payload) of the next frame; the server's SETTINGS is
        acknowledged on the way, as any HTTP/2 peer must."""
        while True:
            head = self._read(9, deadline)
            length = int.from_bytes(head[:3], "big")
            ftype, flags = head[3], head[4]
            payload = self._read(length, deadline)
            if ftype == SETTINGS and not flags & ACK:
                self.sock.sendall(frame(SETTINGS, ACK))
                continue
            return ftype, flags, payload

    def wait_for(self, ftype, seconds):
        """Seconds until a frame of ftype arrives (other frames skipped)."""
        t0 = time.monotonic()
        deadline = t0 + seconds
        while True:
            got, flags, _ = self.next_frame(deadline)
            if got == ftype and not (ftype == PING and flags & ACK):
                return time.monotonic() - t0

    def open_call(self, method):
        """HEADERS of a gRPC call on stream 1, no message yet: the call is in
        progress for the server."""
        block = b"".join(hpack_literal(k, v) for k, v in [
            (":method", "POST"), (":scheme", "http"), (":path", "/%s/%s" % (lstest.SERVICE, method)),
            (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers")])
        self.sock.sendall(frame(HEADERS, END_HEADERS, 1, block))

    def close(self):
        self.sock.close()


class TestKeepalive(lstest.ServerTestCase):
    MODELS = {"demo": demo_model_config("demo", audio_encoder={
        "model_path": os.path.join(lstest.DEMO_DIR, "models", "demo_encoder.onnx")})}
    SERVER_OPTS = {"keepalive_seconds": 1, "keepalive_timeout_seconds": 1, "max_connection_idle_seconds": 0}

    def test_silent_peer_is_pinged_then_dropped(self):
        p = Peer(self.server.port)
        try:
            p.open_call("StreamSession")
            waited = p.wait_for(PING, 10)
            self.assertLess(waited, 5, "first PING after %.1f s (keepalive_seconds 1)" % waited)
            # Not answered: the server must give the connection up.
            t0 = time.monotonic()
            with self.assertRaises((ConnectionResetError, ConnectionError, OSError)) as cm:
                while time.monotonic() - t0 < 15:
                    ftype, _, _ = p.next_frame(t0 + 15)
                    if ftype == GOAWAY:
                        raise ConnectionResetError("GOAWAY")
            self.assertNotIsInstance(cm.exception, TimeoutError, "the unanswering peer was never dropped")
            self.assertLess(time.monotonic() - t0, 10)
            # Its call ended on the server: the session handler, waiting for
            # the first message, returned (as cancelled, or as a stream that
            # ended without one, depending on which of gRPC's two completions
            # it saw first).
            end = time.monotonic() + 10
            while "StreamSession model '(not started)'" not in self.server.log_tail(200):
                self.assertLess(time.monotonic(), end, "the dropped peer's call did not end")
                time.sleep(0.1)
        finally:
            p.close()

    def test_clients_still_served(self):
        pb2 = self.pb2
        # A session paced over ~3.5 s (several keepalive periods): the client
        # library answers the PINGs while its call runs.
        pcm = (np.sin(np.arange(16000 * 3) * 0.05) * 8000).astype("<i2").tobytes()

        def msgs():
            yield pb2.SessionRequest(start=pb2.SessionStart(model_id="demo", pcm_encoding="s16le",
                                                            sample_rate=16000, channels=1, output_format="jpeg"))
            for i in range(0, len(pcm), 6400):  # 200 ms of audio every 200 ms
                yield pb2.SessionRequest(audio=pb2.AudioChunk(pcm=pcm[i:i + 6400]))
                time.sleep(0.2)
            yield pb2.SessionRequest(end=pb2.SessionEnd())

        t0 = time.monotonic()
        resps = list(self.stub.StreamSession(msgs(), timeout=60))
        self.assertGreater(time.monotonic() - t0, 3.0)
        self.assertEqual(resps[-1].WhichOneof("kind"), "ended")
        frames = [r.frame.index for r in resps if r.WhichOneof("kind") == "frame"]
        want = sum(len(r.frames) for r in self.stub.RenderSpeech(pb2.RenderSpeechRequest(
            model_id="demo", output_format="jpeg",
            audio=pb2.AudioInput(pcm=pcm, pcm_encoding="s16le", sample_rate=16000, channels=1)), timeout=60))
        self.assertEqual(frames, list(range(want)), "every frame, in order")
        self.assertEqual(resps[-1].ended.frames, want)
        time.sleep(2.5)  # the connection idle past keepalive_seconds: not pinged, not dropped
        resp = self.infer("demo", lstest.make_visual(1), lstest.make_audio([0.3]), 1)
        self.assertEqual(len(resp.composited_frames), 1)


class TestIdleConnection(lstest.ServerTestCase):
    MODELS = {"demo": demo_model_config("demo")}
    SERVER_OPTS = {"keepalive_seconds": 0, "max_connection_idle_seconds": 1}

    def test_connection_without_calls_gets_goaway(self):
        p = Peer(self.server.port)
        try:
            waited = p.wait_for(GOAWAY, 15)
            self.assertLess(waited, 8, "GOAWAY after %.1f s (max_connection_idle_seconds 1)" % waited)
            # No call to finish: the server then closes the connection.
            t0 = time.monotonic()
            with self.assertRaises(ConnectionResetError):
                while True:
                    p.next_frame(t0 + 30)
            self.assertLess(time.monotonic() - t0, 30)
        finally:
            p.close()


if __name__ == "__main__":
    unittest.main()
