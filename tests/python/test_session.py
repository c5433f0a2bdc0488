"""StreamSession, through the real gRPC client: the session's frames are
RenderSpeech's for the concatenated audio whatever the chunking (the
contract), they leave in order with no gap while audio is still arriving,
sessions run side by side, and bad streams get precise statuses.
"""

import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request
import wave

import cv2
import grpc
import numpy as np

import lstest

INVALID = grpc.StatusCode.INVALID_ARGUMENT
_root = tempfile.mkdtemp(prefix="session-", dir=lstest._tmp_root)
ENCODER = {"model_path": os.path.join(lstest.DEMO_DIR, "models", "demo_encoder.onnx")}


def _speech_s16(text, seconds=None):
    """espeak-ng speech resampled to 16 kHz in numpy, as s16le bytes."""
    path = os.path.join(_root, "s%d.wav" % abs(hash(text)))
    subprocess.run([shutil.which("espeak-ng"), "-w", path, text], check=True, timeout=60)
    with wave.open(path, "rb") as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)
    n = int(round(len(x) * 16000 / rate))
    y = np.fft.irfft(np.fft.rfft(x)[:n // 2 + 1], n) * (n / len(x))
    if seconds:
        y = y[:int(seconds * 16000)]
    return np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes()


class TestSession(lstest.ServerTestCase):
    MODELS = {}
    CAPACITY = {"max_models": 4}
    SERVER_OPTS = {"worker_threads": 2}

    @classmethod
    def setUpClass(cls):
        cls.MODELS = {"demo": lstest.demo_model_config("demo", audio_encoder=ENCODER),
                      "demo_b1": lstest.demo_model_config("demo_b1", audio_encoder=ENCODER),
                      "mute": lstest.demo_model_config("demo")}
        cls.pcm = _speech_s16("A live session streams speech in and frames out, one chunk at a time.")
        super().setUpClass()

    def start_msg(self, mid="demo", **kw):
        opts = dict(model_id=mid, pcm_encoding="s16le", sample_rate=16000, channels=1, output_format="png")
        opts.update(kw)
        return self.pb2.SessionRequest(start=self.pb2.SessionStart(**opts))

    def audio_msg(self, b):
        return self.pb2.SessionRequest(audio=self.pb2.AudioChunk(pcm=b))

    def end_msg(self):
        return self.pb2.SessionRequest(end=self.pb2.SessionEnd())

    def chunks(self, pcm, sizes_rng, frame_bytes=2):
        out, i = [], 0
        while i < len(pcm):
            n = frame_bytes * int(sizes_rng())
            out.append(pcm[i:i + n])
            i += n
        return out

    def session(self, msgs, **kw):
        return list(self.stub.StreamSession(iter(msgs), timeout=lstest.RPC_TIMEOUT_S, **kw))

    def render(self, pcm, mid="demo", start=0, encoding="s16le", rate=16000, channels=1):
        req = self.pb2.RenderSpeechRequest(
            model_id=mid, start_frame_idx=start, batch_size=5, output_format="png",
            audio=self.pb2.AudioInput(pcm=pcm, pcm_encoding=encoding, sample_rate=rate, channels=channels))
        frames = []
        for r in self.stub.RenderSpeech(req, timeout=lstest.RPC_TIMEOUT_S):
            frames.extend(r.frames)
        return frames

    def assertSamePictures(self, got, want, msg=""):
        """The frames (PNG bytes) decode to the same pixels, in the same order.
        Pixels, not bytes: ISA-L's level-1 deflate, which pngenc.c uses for
        low-entropy rows, does not always give the same stream for the same
        rows (docs/ARCHITECTURE.md, "PNG bytes")."""
        self.assertEqual(len(got), len(want), msg)
        for i, (g, w) in enumerate(zip(got, want)):
            if g == w:
                continue
            a = cv2.imdecode(np.frombuffer(g, np.uint8), cv2.IMREAD_UNCHANGED)
            b = cv2.imdecode(np.frombuffer(w, np.uint8), cv2.IMREAD_UNCHANGED)
            self.assertIsNotNone(a, "%s frame %d does not decode" % (msg, i))
            self.assertTrue(np.array_equal(a, b), "%s frame %d: other pixels" % (msg, i))

    def frames_of(self, resps):
        self.assertEqual(resps[0].WhichOneof("kind"), "started")
        self.assertEqual(resps[-1].WhichOneof("kind"), "ended")
        frames = [r.frame for r in resps[1:-1]]
        self.assertTrue(all(r.WhichOneof("kind") == "frame" for r in resps[1:-1]))
        self.assertEqual([f.index for f in frames], list(range(len(frames))), "indices in order, no gap")
        self.assertEqual([f.pts_ms for f in frames], [40 * i for i in range(len(frames))])
        self.assertEqual(resps[-1].ended.frames, len(frames))
        return frames

    def test_chunking_invariance(self):
        want = self.render(self.pcm, start=3)
        rng = np.random.default_rng(11)
        cuts = [lambda: rng.integers(1, 16001),       # 1 sample .. 1 s
                lambda: rng.integers(1, 40),          # tiny chunks
                lambda: 320]                          # 20 ms, as a live client sends
        for k, cut in enumerate(cuts):
            with self.subTest(cut=k):
                parts = self.chunks(self.pcm, cut)
                msgs = [self.start_msg(start_frame_idx=3)] + [self.audio_msg(p) for p in parts]
                msgs.insert(2, self.audio_msg(b""))   # an empty chunk is valid
                resps = self.session(msgs + [self.end_msg()])
                frames = self.frames_of(resps)
                self.assertSamePictures([f.data for f in frames], list(want))
                n = 50
                self.assertEqual([f.avatar_frame for f in frames], [(3 + i) % n for i in range(len(frames))])
                self.assertAlmostEqual(resps[-1].ended.audio_seconds, len(self.pcm) / 2 / 16000.0, places=6)
        # Half-closing without SessionEnd ends the session the same way.
        resps = self.session([self.start_msg(start_frame_idx=3), self.audio_msg(self.pcm)])
        self.assertSamePictures([f.data for f in self.frames_of(resps)], list(want), "half-closed")

    def test_other_sample_rates(self):
        """Audio at 48 kHz (stereo s16le) and 44.1 kHz (mono f32le), cut at
        random: the session resamples as it goes and its frames are those of
        RenderSpeech for the same bytes (resampled in one piece)."""
        x = np.frombuffer(self.pcm, "<i2").astype(np.float64) / 32768.0
        t16 = np.arange(len(x)) / 16000.0
        cases = []
        t48 = np.arange(int(len(x) * 3)) / 48000.0
        left = np.interp(t48, t16, x)
        right = 0.5 * left + 0.1 * np.sin(2 * np.pi * 220 * t48)  # a second channel unlike the first
        st = np.clip(np.round(np.stack([left, right], 1) * 32767), -32768, 32767).astype("<i2").tobytes()
        cases.append(("48 kHz stereo s16le", st, "s16le", 48000, 2, 4))
        t44 = np.arange(int(len(x) * 44100 / 16000)) / 44100.0
        cases.append(("44.1 kHz mono f32le", np.interp(t44, t16, x).astype("<f4").tobytes(), "f32le", 44100, 1, 4))
        rng = np.random.default_rng(5)
        for name, pcm, enc, rate, ch, fb in cases:
            with self.subTest(name):
                want = self.render(pcm, start=2, encoding=enc, rate=rate, channels=ch)
                parts = self.chunks(pcm, lambda: rng.integers(1, rate // 2), fb)
                msgs = [self.start_msg(start_frame_idx=2, pcm_encoding=enc, sample_rate=rate, channels=ch)]
                resps = self.session(msgs + [self.audio_msg(p) for p in parts] + [self.end_msg()])
                frames = self.frames_of(resps)
                self.assertGreater(len(frames), 50)
                self.assertSamePictures([f.data for f in frames], list(want), name)
                self.assertGreater(resps[0].started.lookahead_ms, 453, "the resampler's lag is in the lookahead")
                self.assertLess(resps[0].started.lookahead_ms, 553)
                self.assertAlmostEqual(resps[-1].ended.audio_seconds, len(pcm) / fb / rate, places=6)

    def test_frames_leave_while_audio_arrives(self):
        started = resps = None
        got = queue.Queue()
        gate = threading.Event()
        first, rest = self.pcm[:2 * 16000 * 2], self.pcm[2 * 16000 * 2:]

        def requests():
            yield self.start_msg(mid="demo_b1", batch_size=1)
            for i in range(0, len(first), 640):
                yield self.audio_msg(first[i:i + 640])
            gate.wait(30)          # no more audio until a frame has come back
            yield self.audio_msg(rest)
            yield self.end_msg()

        call = self.stub.StreamSession(requests(), timeout=lstest.RPC_TIMEOUT_S)
        resps = []
        for r in call:
            resps.append(r)
            if r.WhichOneof("kind") == "frame" and not gate.is_set():
                got.put(r.frame.index)
                gate.set()
        self.assertFalse(got.empty(), "no frame before the end of the audio")
        started = resps[0].started
        self.assertEqual((started.frame_width, started.frame_height, started.fps, started.lookahead_ms),
                         (1280, 720, 25.0, 453))
        frames = self.frames_of(resps)
        # 2 s of audio make frames up to about (2000 - 453) / 40 = 38 final.
        n_early = sum(1 for r in resps[1:] if r.WhichOneof("kind") == "frame")
        self.assertGreater(n_early, 30)
        self.assertEqual(len(frames), len(self.render(self.pcm, mid="demo_b1")))

    def renders(self):
        text = urllib.request.urlopen(self.server.http_url + "/metrics", timeout=30).read().decode()
        got = {}
        for line in text.splitlines():
            for c in ("live", "offline"):
                if line.startswith('lipsync_renders_total{class="%s"} ' % c):
                    got[c] = float(line.split()[1])
        self.assertEqual(set(got), {"live", "offline"}, "lipsync_renders_total by class")
        return got

    def test_live_and_offline_classes(self):
        """Audio sent at (or below) real time renders as live work; audio
        over 1 s ahead of the clock since the start as offline work, which
        waits while live renders run (src/serve/gate.h)."""
        pcm = self.pcm[:2 * 16000 * 3 // 2]  # 1.5 s

        def paced():
            yield self.start_msg(output_format="jpeg")
            for i in range(0, len(pcm), 640):
                time.sleep(0.02)
                yield self.audio_msg(pcm[i:i + 640])
            yield self.end_msg()

        before = self.renders()
        resps = list(self.stub.StreamSession(paced(), timeout=lstest.RPC_TIMEOUT_S))
        self.frames_of(resps)
        self.assertEqual(resps[-1].ended.offline_batches, 0, "a paced session is live work")
        mid = self.renders()
        self.assertGreater(mid["live"], before["live"])
        self.assertEqual(mid["offline"], before["offline"])
        resps = self.session([self.start_msg(output_format="jpeg"), self.audio_msg(self.pcm), self.end_msg()])
        n = len(self.frames_of(resps))
        self.assertGreater(resps[-1].ended.offline_batches, 0, "%.1f s of audio at once is offline work" % (
            len(self.pcm) / 32000))
        # Batches of 5, or of 1 within LS_GATE_RECENT_MS of a live render.
        self.assertLessEqual(resps[-1].ended.offline_batches, n)
        self.assertGreaterEqual(self.renders()["offline"], mid["offline"] + resps[-1].ended.offline_batches)

    def test_concurrent_sessions(self):
        results = {}
        pcm = self.pcm[:16000 * 2 * 2]
        want = self.render(pcm)

        def run(k):
            parts = self.chunks(pcm, lambda: 160 * (k + 1))
            try:
                resps = self.session([self.start_msg()] + [self.audio_msg(p) for p in parts] + [self.end_msg()])
                results[k] = [f.data for f in self.frames_of(resps)]
            except Exception as e:  # reported below
                results[k] = e
        threads = [threading.Thread(target=run, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(lstest.RPC_TIMEOUT_S)
        for k in range(6):
            self.assertIsInstance(results.get(k), list, "session %d: %r" % (k, results.get(k)))
            self.assertSamePictures(results[k], list(want), "session %d" % k)

    def test_live_session_pins_its_model(self):
        seen = {}
        gate = threading.Event()

        def requests():
            yield self.start_msg()
            yield self.audio_msg(self.pcm[:32000])
            gate.wait(30)
            yield self.end_msg()

        call = self.stub.StreamSession(requests(), timeout=lstest.RPC_TIMEOUT_S)
        it = iter(call)
        self.assertEqual(next(it).WhichOneof("kind"), "started")
        st = self.stub.GetModelStats(self.pb2.GetModelStatsRequest(model_id="demo"), timeout=10).models[0]
        seen["live"] = st.stats.live_sessions
        gate.set()
        rest = list(it)
        self.assertEqual(seen["live"], 1)
        self.assertEqual(rest[-1].WhichOneof("kind"), "ended")
        st = self.stub.GetModelStats(self.pb2.GetModelStatsRequest(model_id="demo"), timeout=10).models[0]
        self.assertEqual(st.stats.live_sessions, 0)

    def test_cli_session_and_speak(self):
        wav = os.path.join(lstest.DEMO_DIR, "speech.wav")
        with open(wav, "rb") as f:
            total = sum(len(r.frames) for r in self.stub.RenderSpeech(self.pb2.RenderSpeechRequest(
                model_id="demo", audio=self.pb2.AudioInput(wav=f.read())), timeout=lstest.RPC_TIMEOUT_S))
        out = os.path.join(_root, "cli-session")
        p = subprocess.run([lstest.LIPSYNC_CLI, "--server", self.server.addr, "session", "demo", "--wav", wav,
                            "--out", out, "--format", "jpeg"], capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("session demo: %d frames" % total, p.stdout)
        self.assertEqual(sorted(os.listdir(out)), ["frame_%06d.jpg" % i for i in range(total)])
        out2 = os.path.join(_root, "cli-speak")
        p = subprocess.run([lstest.LIPSYNC_CLI, "--server", self.server.addr, "speak", "demo", "--wav", wav,
                            "--out", out2], capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("wrote %d frames" % total, p.stdout)
        self.assertEqual(len(os.listdir(out2)), total)
        p = subprocess.run([lstest.LIPSYNC_CLI, "--server", self.server.addr, "session", "mute", "--wav", wav],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn("FAILED_PRECONDITION", p.stderr)

    def assertStatus(self, code, words, msgs):
        with self.assertRaises(grpc.RpcError) as cm:
            self.session(msgs)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        self.assertIn(words, cm.exception.details())

    def test_bad_streams(self):
        a = self.audio_msg(self.pcm[:3200])
        self.assertStatus(INVALID, "first message", [a, self.end_msg()])
        self.assertStatus(INVALID, "exactly one start", [self.start_msg(), a, self.start_msg()])
        self.assertStatus(grpc.StatusCode.NOT_FOUND, "nosuch", [self.start_msg(mid="nosuch")])
        self.assertStatus(INVALID, "pcm_encoding", [self.start_msg(pcm_encoding="u8")])
        self.assertStatus(INVALID, "8000..192000", [self.start_msg(sample_rate=7999)])
        self.assertStatus(INVALID, "8000..192000", [self.start_msg(sample_rate=0)])
        self.assertStatus(INVALID, "channels", [self.start_msg(channels=0)])
        self.assertStatus(INVALID, "whole sample frames", [self.start_msg(), self.audio_msg(b"\x00\x01\x02")])
        self.assertStatus(INVALID, "whole sample frames", [self.start_msg(channels=2), self.audio_msg(b"\x00" * 6)])
        self.assertStatus(INVALID, "too short", [self.start_msg(), self.audio_msg(b"\x00" * 200), self.end_msg()])
        self.assertStatus(grpc.StatusCode.FAILED_PRECONDITION, "audio_encoder", [self.start_msg(mid="mute")])
        # A message that is not a SessionRequest.
        raw = self.server.channel.stream_stream("/%s/StreamSession" % lstest.SERVICE, request_serializer=None,
                                                response_deserializer=self.pb2.SessionResponse.FromString)
        with self.assertRaises(grpc.RpcError) as cm:
            list(raw(iter([self.start_msg().SerializeToString(), b"\xff\xff\xff"]), timeout=30))
        self.assertEqual(cm.exception.code(), INVALID)
        self.assertIn("malformed SessionRequest", cm.exception.details())
        # A client that cancels mid-stream: the server carries on.
        call = self.stub.StreamSession(iter([self.start_msg(), self.audio_msg(self.pcm)]), timeout=30)
        next(iter(call))
        call.cancel()
        self.assertEqual(self.stub.Health(self.pb2.HealthRequest(), timeout=10).status, "SERVING")
        resps = self.session([self.start_msg(), self.audio_msg(self.pcm[:32000]), self.end_msg()])
        self.assertEqual(resps[-1].WhichOneof("kind"), "ended")





def _metric(text, name, model):
    """The value of name{model="model"} in a Prometheus exposition, or None."""
    prefix = '%s{model="%s"} ' % (name, model)
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return None


class TestSessionLimitsAndMetrics(lstest.ServerTestCase):
    """models.<id>.max_sessions refuses a session beyond it (RESOURCE_EXHAUSTED,
    naming the limit) while other models take theirs; a session's frames are
    observed in lipsync_frame_latency_seconds (one per frame sent), its first
    frame in lipsync_session_first_frame_seconds, frames later than
    sessions.latency_budget_ms in lipsync_session_late_frames_total, and
    GetModelStats counts sessions_total."""
    MODELS = {"one": lstest.demo_model_config("demo", audio_encoder=ENCODER, max_sessions=1),
              "any": lstest.demo_model_config("demo", audio_encoder=ENCODER)}
    # A budget no frame can meet: every frame sent is late, so the counter is
    # checked against the frame count exactly.
    EXTRA_YAML = "sessions:\n  latency_budget_ms: 1\n"

    def msgs(self, mid, pcm, gate=None):
        yield self.pb2.SessionRequest(start=self.pb2.SessionStart(
            model_id=mid, pcm_encoding="s16le", sample_rate=16000, channels=1, output_format="jpeg"))
        yield self.pb2.SessionRequest(audio=self.pb2.AudioChunk(pcm=pcm))
        if gate:
            gate.wait(60)
        yield self.pb2.SessionRequest(end=self.pb2.SessionEnd())

    def test_max_sessions_and_metrics(self):
        pcm = _speech_s16("Two sessions on one avatar.", seconds=1.5)
        gate = threading.Event()
        held = self.stub.StreamSession(self.msgs("one", pcm, gate), timeout=120)
        it = iter(held)
        self.assertEqual(next(it).WhichOneof("kind"), "started")
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.stub.StreamSession(self.msgs("one", pcm), timeout=60))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("1 live session", cm.exception.details())
        self.assertIn("max_sessions", cm.exception.details())
        other = list(self.stub.StreamSession(self.msgs("any", pcm), timeout=120))
        n_other = other[-1].ended.frames
        self.assertGreater(n_other, 0)
        gate.set()
        rest = list(it)
        self.assertEqual(rest[-1].WhichOneof("kind"), "ended")
        n_one = rest[-1].ended.frames
        # The limit is on live sessions: the first has ended, a new one fits.
        again = list(self.stub.StreamSession(self.msgs("one", pcm), timeout=120))
        self.assertEqual(again[-1].ended.frames, n_one)

        st = {m.model_id: m.stats for m in self.stub.GetModelStats(self.pb2.GetModelStatsRequest(),
                                                                   timeout=30).models}
        self.assertEqual((st["one"].sessions_total, st["one"].live_sessions), (2, 0))
        self.assertEqual((st["any"].sessions_total, st["any"].live_sessions), (1, 0))
        text = urllib.request.urlopen(self.server.http_url + "/metrics", timeout=30).read().decode()
        self.assertEqual(_metric(text, "lipsync_frame_latency_seconds_count", "one"), 2 * n_one)
        self.assertEqual(_metric(text, "lipsync_frame_latency_seconds_count", "any"), n_other)
        self.assertEqual(_metric(text, "lipsync_session_first_frame_seconds_count", "one"), 2)
        self.assertEqual(_metric(text, "lipsync_session_first_frame_seconds_count", "any"), 1)
        self.assertEqual(_metric(text, "lipsync_session_frames_total", "one"), 2 * n_one)
        self.assertEqual(_metric(text, "lipsync_session_late_frames_total", "one"), 2 * n_one)
        self.assertEqual(_metric(text, "lipsync_session_late_frames_total", "any"), n_other)
        # Every frame is late against a 1 ms budget, so each latency is above
        # 1 ms: the histogram's sum says so too.
        self.assertGreater(_metric(text, "lipsync_frame_latency_seconds_sum", "any"), 0.001 * n_other)


class TestSessionStall(lstest.ServerTestCase):
    """A client that stops reading: the session waits on one frame (bounded
    memory), then ends with DEADLINE_EXCEEDED after sessions.stall_timeout_s;
    another session on the same server is not affected."""
    MODELS = {"demo": lstest.demo_model_config("demo", audio_encoder=ENCODER)}
    EXTRA_YAML = "sessions:\n  stall_timeout_s: 2\n"

    def test_stalled_client_gets_deadline_exceeded(self):
        pcm = _speech_s16("A client that stops reading its frames.", seconds=3.0)

        def requests(p):
            yield self.pb2.SessionRequest(start=self.pb2.SessionStart(
                model_id="demo", pcm_encoding="s16le", sample_rate=16000, channels=1, output_format="raw"))
            yield self.pb2.SessionRequest(audio=self.pb2.AudioChunk(pcm=p))
            yield self.pb2.SessionRequest(end=self.pb2.SessionEnd())

        stalled = self.stub.StreamSession(requests(pcm), timeout=60)
        first = next(stalled)                       # started; then nothing is read
        self.assertEqual(first.WhichOneof("kind"), "started")
        t0 = time.monotonic()
        # Meanwhile another session completes normally.
        other = list(self.stub.StreamSession(requests(pcm[:32000]), timeout=60))
        self.assertEqual(other[-1].WhichOneof("kind"), "ended")
        rss0 = _rss_kib(self.server.proc.pid)
        time.sleep(4.0)                             # past the 2 s stall timeout
        self.assertLess(_rss_kib(self.server.proc.pid) - rss0, 64 * 1024, "memory grew while stalled")
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in stalled:
                pass
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED, cm.exception.details())
        self.assertIn("stall", cm.exception.details())
        self.assertLess(time.monotonic() - t0, 30)
        st = self.stub.GetModelStats(self.pb2.GetModelStatsRequest(model_id="demo"), timeout=10).models[0]
        self.assertEqual(st.stats.live_sessions, 0)


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


if __name__ == "__main__":
    unittest.main()
