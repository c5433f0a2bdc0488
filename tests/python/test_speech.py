"""Speech in, through the real gRPC client (and gRPC-Web): ExtractAudioFeatures
and RenderSpeech against independent numpy computations of the reference
recipe (test_mel.py's mel_ref / enc_windows_ref / feat_windows_ref, written
from shared/DESIGN.md), a linear test encoder whose output numpy can compute
(MatMul with fixed weights), and InferBatchComposite on the same windows.
"""

import os
import shutil
import struct
import subprocess
import tempfile
import unittest
import wave

import grpc
import numpy as np

import lstest
from test_http import grpcweb, http_request, metric, parse_metrics
from test_mel import enc_windows_ref, feat_windows_ref, mel_ref

INVALID = grpc.StatusCode.INVALID_ARGUMENT
_root = tempfile.mkdtemp(prefix="speech-", dir=lstest._tmp_root)
LINEAR_W = np.random.default_rng(5).standard_normal((80 * 16, 512)).astype(np.float32) * np.float32(0.05)


def _linear_encoder(path):
    """[B,1,80,16] -> reshape [B,1280] -> MatMul W [1280,512]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["mel", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "W"], ["feat"])],
        "linear_encoder",
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch", 1, 80, 16])],
        [helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["batch", 512])],
        [numpy_helper.from_array(np.array([-1, 1280], dtype=np.int64), "shape"),
         numpy_helper.from_array(LINEAR_W, "W")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)


def _speech_16k():
    """espeak-ng speech resampled to 16 kHz in numpy (band-limited FFT
    resampling), float32 in [-1, 1]: the server and numpy get the same
    samples, so the mel comparison is about the features alone."""
    exe = shutil.which("espeak-ng")
    if not exe:
        raise AssertionError("espeak-ng not found (scripts/setup.sh installs it)")
    path = os.path.join(_root, "speech.wav")
    subprocess.run([exe, "-w", path, "Speech in, frames out: the avatar says this sentence."], check=True,
                   timeout=60)
    with wave.open(path, "rb") as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32768.0
    n = int(round(len(x) * 16000 / rate))
    spec = np.fft.rfft(x)
    y = np.fft.irfft(spec[:n // 2 + 1], n) * (n / len(x))
    return np.clip(y, -1, 1).astype(np.float32), path


def _wav_bytes(samples, rate=16000, channels=1):
    """A PCM16 WAV of float samples (interleaved for channels > 1)."""
    pcm = np.clip(np.round(np.asarray(samples) * 32767), -32768, 32767).astype("<i2").tobytes()
    hdr = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE"
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
    return hdr + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm


class TestSpeech(lstest.ServerTestCase):
    MODELS = {}
    CAPACITY = {"max_models": 8}

    @classmethod
    def setUpClass(cls):
        enc = os.path.join(_root, "linear_encoder.onnx")
        _linear_encoder(enc)
        cls.MODELS = {
            "demo": lstest.demo_model_config("demo", audio_encoder={
                "model_path": os.path.join(lstest.DEMO_DIR, "models", "demo_encoder.onnx"), "kind": "ave"}),
            "linear": lstest.demo_model_config("demo", audio_encoder={"model_path": enc}),
            "mute": lstest.demo_model_config("demo"),
        }
        cls.samples, cls.wav_path = _speech_16k()
        super().setUpClass()

    def pcm(self, x):
        return self.pb2.AudioInput(pcm=np.asarray(x, "<f4").tobytes(), pcm_encoding="f32le", sample_rate=16000,
                                   channels=1)

    def features(self, mid, audio, **kw):
        return self.stub.ExtractAudioFeatures(self.pb2.AudioFeaturesRequest(model_id=mid, audio=audio, **kw),
                                              timeout=lstest.RPC_TIMEOUT_S)

    def test_features_match_numpy(self):
        r = self.features("linear", self.pcm(self.samples), include_mel=True, include_windows=True)
        mel = np.frombuffer(r.mel, "<f4").reshape(-1, 80)
        want_mel = mel_ref(self.samples)
        self.assertEqual(mel.shape, want_mel.shape)
        self.assertLessEqual(float(np.abs(mel - want_mel).max()), 1e-3)
        # Encoder input windows and the linear encoder, in numpy from numpy's mel.
        enc_in = enc_windows_ref(want_mel)
        want_feat = enc_in.reshape(len(enc_in), -1) @ LINEAR_W.astype(np.float64)
        feat = np.frombuffer(r.encoder_outputs, "<f4").reshape(-1, 512)
        self.assertEqual(feat.shape, want_feat.shape)
        self.assertEqual(r.num_frames, len(feat) + 2)
        self.assertEqual(r.mel_frames, len(mel))
        self.assertEqual(r.fps, 25.0)
        scale = float(np.abs(want_feat).max())
        self.assertLessEqual(float(np.abs(feat - want_feat).max()), 2e-3 * scale)
        # U-Net windows: N+2 frames, rows [i-8, i+8) of the padded outputs,
        # zero rows past the ends; from the server's own outputs (exact).
        win = np.frombuffer(r.windows, "<f4").reshape(-1, 16, 512)
        np.testing.assert_array_equal(win, feat_windows_ref(feat.astype(np.float64)).astype(np.float32))
        self.assertEqual(len(win), r.num_frames)
        np.testing.assert_array_equal(win[0, :8], 0)          # before the first row: zeros
        np.testing.assert_array_equal(win[0, 8], feat[0])      # padded row 0 = first output repeated
        np.testing.assert_array_equal(win[0, 9], feat[0])
        np.testing.assert_array_equal(win[-1, 8], feat[-1])   # padded last row = last output repeated
        np.testing.assert_array_equal(win[-1, 9:], 0)
        self.assertGreater(r.audio_seconds, 1.0)
        self.assertFalse(self.features("linear", self.pcm(self.samples)).windows)

    def test_wav_input_resampled(self):
        with open(self.wav_path, "rb") as f:
            r = self.features("demo", self.pb2.AudioInput(wav=f.read()))
        n = len(np.frombuffer(r.encoder_outputs, "<f4")) // 512
        self.assertEqual(r.num_frames, n + 2)
        self.assertAlmostEqual(r.audio_seconds, len(self.samples) / 16000.0, delta=0.01)
        # Stereo of the same speech mixes to the same mono.
        st = np.stack([self.samples, self.samples], axis=1).ravel()
        r2 = self.features("demo", self.pb2.AudioInput(wav=_wav_bytes(st, 16000, 2)))
        r1 = self.features("demo", self.pb2.AudioInput(wav=_wav_bytes(self.samples, 16000, 1)))
        self.assertEqual(r1.encoder_outputs, r2.encoder_outputs)

    def render(self, mid, audio, **kw):
        req = self.pb2.RenderSpeechRequest(model_id=mid, audio=audio, **kw)
        return list(self.stub.RenderSpeech(req, timeout=lstest.RPC_TIMEOUT_S))

    def test_render_equals_infer_on_the_same_windows(self):
        x = self.samples[:16000]  # 1 s: 81 mel frames, 22 encoder outputs, 24 frames
        feats = self.features("demo", self.pcm(x), include_windows=True)
        win = np.frombuffer(feats.windows, "<f4").reshape(-1, 32, 16, 16)
        total = feats.num_frames
        out = self.render("demo", self.pcm(x), batch_size=5, start_frame_idx=7, output_format="png")
        self.assertEqual([r.first_frame_index for r in out], list(range(0, total, 5)))
        self.assertEqual(sum(len(r.frames) for r in out), total)
        self.assertTrue(all(r.total_frames == total for r in out))
        self.assertGreater(out[0].feature_time_ms, 0)
        for r in out:
            first, n = r.first_frame_index, len(r.frames)
            req = self.pb2.CompositeBatchRequest(model_id="demo", batch_size=n, start_frame_idx=7 + first,
                                                 output_format="png")
            req.audio_features.extend(win[first:first + n].ravel().tolist())
            ref = self.stub.InferBatchComposite(req, timeout=lstest.RPC_TIMEOUT_S)
            for i in range(n):
                np.testing.assert_array_equal(lstest.decode_frame(r.frames[i]),
                                              lstest.decode_frame(ref.composited_frames[i]),
                                              "frame %d" % (first + i))

    def test_render_over_grpc_web_streams_every_frame(self):
        x = self.samples[:12000]
        req = self.pb2.RenderSpeechRequest(model_id="demo", audio=self.pcm(x), batch_size=4, output_format="jpeg")
        for text in (False, True):
            r = grpcweb(self.server.http_url, "RenderSpeech", req.SerializeToString(), text=text)
            self.assertEqual(r.code, 0, r.message)
            msgs = [self.pb2.RenderSpeechResponse.FromString(m) for m in r.messages]
            total = msgs[0].total_frames
            self.assertEqual([m.first_frame_index for m in msgs], list(range(0, total, 4)))
            self.assertEqual(sum(len(m.frames) for m in msgs), total)
            self.assertTrue(all(f[:2] == b"\xff\xd8" for m in msgs for f in m.frames))

    def test_louder_speech_opens_the_demo_mouth(self):
        quiet = np.zeros(16000, np.float32)
        rects = lstest.demo_rects()

        def mouth(audio):
            frames = []
            for r in self.render("demo", self.pcm(audio), batch_size=8, output_format="raw"):
                for f in r.frames:
                    frames.append(np.frombuffer(f, np.uint8).reshape(r.frame_height, r.frame_width, 3))
            return [lstest.mouth_pixels(f, rects[i % 50]) for i, f in enumerate(frames)]

        # Silence: the mouth stays closed (what counts there is the avatar's
        # own lip line and the thin closed mouth); speech opens it.
        silent, speaking = mouth(quiet), mouth(self.samples[:16000] * np.float32(2.0))
        self.assertLess(max(silent), 250, silent)
        self.assertGreater(max(speaking), 2 * max(silent), (silent, speaking))

    def assertBad(self, code, words, fn, *a, **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*a, **kw)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        self.assertIn(words, cm.exception.details())

    def test_bad_audio(self):
        A = self.pb2.AudioInput
        good = _wav_bytes(self.samples[:8000])
        cases = [
            (A(wav=good[:30]), "wav"),                                           # truncated header
            (A(wav=b"RIFF\x00\x00\x00\x00WAVEjunk"), "wav"),                      # no fmt chunk
            (A(wav=good, pcm=b"\x00\x00"), "exactly one of wav and pcm"),
            (A(), "got neither"),
            (A(pcm=b"\x00\x00\x00", pcm_encoding="s16le", sample_rate=16000, channels=1), "pcm"),  # odd bytes
            (A(pcm=b"\x00\x00", pcm_encoding="u8", sample_rate=16000, channels=1), "pcm"),
            (A(pcm=b"\x00\x00", pcm_encoding="s16le", sample_rate=0, channels=1), "pcm"),
            (A(pcm=np.zeros(800, "<f4").tobytes(), pcm_encoding="f32le", sample_rate=16000, channels=1), "too short"),
        ]
        for audio, words in cases:
            with self.subTest(words=words):
                self.assertBad(INVALID, words, self.features, "demo", audio)
                self.assertBad(INVALID, words, self.render, "demo", audio)
        # Longer than audio.max_seconds (600 by default): 601 s of silence at 8 kHz.
        long = A(pcm=bytes(2 * 8000 * 601), pcm_encoding="s16le", sample_rate=8000, channels=1)
        self.assertBad(INVALID, "600", self.features, "demo", long)
        self.assertBad(grpc.StatusCode.FAILED_PRECONDITION, "audio_encoder", self.features, "mute",
                       self.pcm(self.samples[:8000]))
        self.assertBad(INVALID, "batch_size", self.render, "demo", self.pcm(self.samples[:8000]), batch_size=-1)
        self.assertBad(grpc.StatusCode.NOT_FOUND, "nosuch", self.render, "nosuch", self.pcm(self.samples[:8000]))
        # The server is alive and well afterwards.
        self.assertEqual(self.stub.Health(self.pb2.HealthRequest(), timeout=10).status, "SERVING")

    def test_metrics_count_audio(self):
        def audio_seconds():
            status, _, body = http_request(self.server.http_url + "/metrics")
            self.assertEqual(status, 200)
            return metric(parse_metrics(body.decode()), "lipsync_audio_seconds_total", model="linear") or 0.0
        before = audio_seconds()
        self.features("linear", self.pcm(self.samples[:16000]))
        self.assertAlmostEqual(audio_seconds() - before, 1.0, places=6)


if __name__ == "__main__":
    unittest.main()
