"""H.264 streams (output_format h264, StreamSession and RenderSpeech): the
stream decodes, with Debian's ffmpeg (an independent decoder), to the raw
frames within 35 dB PSNR; key frames come at the interval and where a chunk
asks, each an IDR led by SPS and PPS; the SPS says constrained baseline at
the level the codec string names, and its VUI says BT.601 limited range; bad
video options get INVALID_ARGUMENT naming the field, and h264 outside a
stream is refused. `lipsync speak --out F.mp4` writes an MP4 that ffprobe
reads as h264 1280x720 25 fps + AAC lasting as long as the WAV, whose
pictures are the raw frames within 35 dB.
"""

import os
import shutil
import subprocess
import tempfile
import unittest
import wave

import grpc
import numpy as np

import lstest
from test_session import ENCODER, _speech_s16

INVALID = grpc.StatusCode.INVALID_ARGUMENT
FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
W, H = 1280, 720


def nal_units(au):
    """The NAL units of an Annex B access unit: [(type, payload bytes)]."""
    out, i, n = [], 0, len(au)
    starts = []
    while True:
        j = au.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        starts.append(j + 3)
        i = j + 3
    for k, s in enumerate(starts):
        e = starts[k + 1] - 3 if k + 1 < len(starts) else n
        body = au[s:e].rstrip(b"\x00") if k + 1 < len(starts) else au[s:e]
        out.append((body[0] & 0x1F, body))
    return out


def ready_after(samples):
    """Frames a session has sent once `samples` 16 kHz samples are in, from
    speech.h's rules: mel frame t is final at t*200 + 400 samples, encoder
    window k once its 16 rows floor(80k/25).. are, frame i once window i+6 is."""
    t = (samples - 400) // 200 + 1 if samples >= 400 else 0
    k = 0
    while (80 * k) // 25 + 16 <= t:
        k += 1
    return max(0, k - 7)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@unittest.skipUnless(FFMPEG and FFPROBE, "Debian's ffmpeg (scripts/setup.sh installs it)")
class TestVideo(lstest.ServerTestCase):
    MODELS = {}
    SERVER_OPTS = {"worker_threads": 2}

    @classmethod
    def setUpClass(cls):
        cls.MODELS = {"demo": lstest.demo_model_config("demo", audio_encoder=ENCODER)}
        cls.pcm = _speech_s16("Video out: one encoder per session, key frames on request.")
        cls.tmp = tempfile.mkdtemp(prefix="video-", dir=lstest._tmp_root)
        super().setUpClass()

    def msgs(self, fmt, chunk=640, key_at=None, **start):
        opts = dict(model_id="demo", pcm_encoding="s16le", sample_rate=16000, channels=1, output_format=fmt,
                    start_frame_idx=2)
        opts.update(start)
        out = [self.pb2.SessionRequest(start=self.pb2.SessionStart(**opts))]
        for i in range(0, len(self.pcm), chunk):
            a = self.pb2.AudioChunk(pcm=self.pcm[i:i + chunk], request_keyframe=(key_at == i))
            out.append(self.pb2.SessionRequest(audio=a))
        out.append(self.pb2.SessionRequest(end=self.pb2.SessionEnd()))
        return out

    def session(self, msgs):
        resps = list(self.stub.StreamSession(iter(msgs), timeout=lstest.RPC_TIMEOUT_S))
        self.assertEqual(resps[0].WhichOneof("kind"), "started")
        self.assertEqual(resps[-1].WhichOneof("kind"), "ended")
        frames = [r.frame for r in resps[1:-1]]
        self.assertEqual([f.index for f in frames], list(range(len(frames))))
        return resps[0].started, frames

    def decode(self, frames, name):
        path = os.path.join(self.tmp, name + ".h264")
        with open(path, "wb") as f:
            for fr in frames:
                f.write(fr.data)
        raw = subprocess.run([FFMPEG, "-v", "error", "-f", "h264", "-i", path, "-f", "rawvideo",
                              "-pix_fmt", "rgb24", "-"], check=True, capture_output=True, timeout=120).stdout
        return path, np.frombuffer(raw, np.uint8).reshape(-1, H, W, 3)

    def test_stream_decodes_to_the_raw_frames(self):
        started, frames = self.session(self.msgs("h264"))
        self.assertEqual(started.output_format, "h264")
        self.assertEqual(started.codec, "avc1.42E01F")
        _, raw = self.session(self.msgs("raw"))
        self.assertEqual(len(frames), len(raw))
        path, decoded = self.decode(frames, "default")
        self.assertEqual(len(decoded), len(frames), "one picture per Frame, none dropped")
        for i, fr in enumerate(raw):
            want = np.frombuffer(fr.data, np.uint8).reshape(H, W, 3)
            self.assertGreaterEqual(psnr(decoded[i], want), 35.0, "frame %d" % i)
        # The mouth moves, so the stream is not one picture repeated.
        self.assertGreater(len({bytes(f.data) for f in frames}), len(frames) // 2)

        # Key frames at the default interval of 50, each SPS, PPS, IDR.
        self.assertEqual([i for i, f in enumerate(frames) if f.keyframe],
                         [i for i in range(len(frames)) if i % 50 == 0])
        for i, f in enumerate(frames):
            types = [t for t, _ in nal_units(f.data)]
            if f.keyframe:
                self.assertEqual(types[:3], [7, 8, 5], "frame %d" % i)
            else:
                self.assertNotIn(5, types, "frame %d" % i)
                self.assertNotIn(7, types, "frame %d" % i)
                self.assertIn(1, types, "frame %d" % i)
        sps = nal_units(frames[0].data)[0][1]
        self.assertEqual(sps[1], 66, "profile_idc: baseline")
        self.assertEqual(sps[2] & 0xE0, 0xE0, "constraint_set0..2: constrained baseline")
        self.assertEqual(sps[3], 31, "level 3.1")
        self.assertEqual("avc1.%02X%02X%02X" % (sps[1], sps[2], sps[3]), started.codec)

        probe = subprocess.run([FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries",
                                "stream=codec_name,width,height,color_range,color_space,color_primaries,has_b_frames",
                                "-of", "default=noprint_wrappers=1", path],
                               check=True, capture_output=True, text=True, timeout=60).stdout
        info = dict(line.split("=", 1) for line in probe.split())
        self.assertEqual((info["codec_name"], info["width"], info["height"]), ("h264", "1280", "720"))
        self.assertEqual((info["color_range"], info["color_space"], info["color_primaries"]),
                         ("tv", "smpte170m", "smpte170m"))
        self.assertEqual(info["has_b_frames"], "0")

        # About the bitrate asked for (2000 kbit/s), far below PNG's.
        seconds = len(frames) / 25.0
        kbps = sum(len(f.data) for f in frames) * 8 / seconds / 1000
        self.assertLess(kbps, 2 * 2000, "%.0f kbit/s" % kbps)

    def test_keyframe_on_request(self):
        at = 640 * 50                           # the chunk that starts at 1.0 s asks
        _, frames = self.session(self.msgs("h264", key_at=at, keyframe_interval_frames=1000,
                                           video_bitrate_kbps=800))
        want = ready_after(at // 2)             # frames sent before that chunk arrived (2 bytes a sample)
        self.assertGreater(want, 0)
        self.assertEqual([i for i, f in enumerate(frames) if f.keyframe], [0, want])
        self.assertEqual([t for t, _ in nal_units(frames[want].data)][:3], [7, 8, 5])
        _, decoded = self.decode(frames, "requested")
        self.assertEqual(len(decoded), len(frames))

    def test_bad_video_options(self):
        def start(**kw):
            return self.msgs("h264", **kw)[:1]
        for kw, field in ((dict(video_bitrate_kbps=50), "start.video_bitrate_kbps"),
                          (dict(video_bitrate_kbps=60000), "start.video_bitrate_kbps"),
                          (dict(keyframe_interval_frames=5000), "start.keyframe_interval_frames"),
                          (dict(keyframe_interval_frames=-1), "start.keyframe_interval_frames")):
            with self.subTest(**kw):
                with self.assertRaises(grpc.RpcError) as cm:
                    list(self.stub.StreamSession(iter(start(**kw)), timeout=lstest.RPC_TIMEOUT_S))
                self.assertEqual(cm.exception.code(), INVALID)
                self.assertIn(field, cm.exception.details())
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.stub.StreamSession(iter(self.msgs("h265")[:1]), timeout=lstest.RPC_TIMEOUT_S))
        self.assertEqual(cm.exception.code(), INVALID)
        self.assertIn("png, jpeg or raw or h264", cm.exception.details())
        # RenderSpeech checks the same options, before any work.
        for kw, field in ((dict(video_bitrate_kbps=50), "video_bitrate_kbps"),
                          (dict(keyframe_interval_frames=-1), "keyframe_interval_frames")):
            with self.subTest(render=field):
                with self.assertRaises(grpc.RpcError) as cm:
                    list(self.stub.RenderSpeech(self.render_req("h264", **kw), timeout=lstest.RPC_TIMEOUT_S))
                self.assertEqual(cm.exception.code(), INVALID)
                self.assertIn(field, cm.exception.details())
        # A unary call has no stream to carry an encoder.
        req = self.pb2.CompositeBatchRequest(model_id="demo", batch_size=1, output_format="h264",
                                             audio_features=[0.0] * (32 * 16 * 16))
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.InferBatchComposite(req, timeout=lstest.RPC_TIMEOUT_S)
        self.assertEqual(cm.exception.code(), INVALID)
        self.assertIn("h264 is a stream's format", cm.exception.details())

    def render_req(self, fmt, **kw):
        return self.pb2.RenderSpeechRequest(model_id="demo", output_format=fmt, audio=self.pb2.AudioInput(
            pcm=self.pcm, pcm_encoding="s16le", sample_rate=16000, channels=1), **kw)

    def render(self, fmt, **kw):
        resps = list(self.stub.RenderSpeech(self.render_req(fmt, **kw), timeout=lstest.RPC_TIMEOUT_S))
        frames, keys = [], []
        for r in resps:
            self.assertEqual(r.first_frame_index, len(frames))
            frames.extend(r.frames)
            keys.extend(r.keyframes)
        return resps, frames, keys

    def test_render_speech_h264(self):
        resps, aus, keys = self.render("h264", batch_size=7, keyframe_interval_frames=30, video_bitrate_kbps=1500)
        self.assertEqual(resps[0].codec, "avc1.42E01F")
        self.assertEqual(resps[0].output_format, "h264")
        self.assertEqual(len(keys), len(aus), "one key frame flag per access unit")
        self.assertEqual([i for i, k in enumerate(keys) if k], [i for i in range(len(aus)) if i % 30 == 0])
        for i, (au, k) in enumerate(zip(aus, keys)):
            types = [t for t, _ in nal_units(au)]
            self.assertEqual(types[:3] == [7, 8, 5], bool(k), "frame %d: %s" % (i, types))
        _, raw, _ = self.render("raw")
        self.assertEqual(len(raw), len(aus))

        class F:  # decode() takes objects with .data
            def __init__(self, d):
                self.data = d
        _, decoded = self.decode([F(a) for a in aus], "render")
        self.assertEqual(len(decoded), len(aus))
        for i, fr in enumerate(raw):
            want = np.frombuffer(fr, np.uint8).reshape(H, W, 3)
            self.assertGreaterEqual(psnr(decoded[i], want), 35.0, "frame %d" % i)

    def test_cli_speak_mp4(self):
        wav = os.path.join(self.tmp, "speech.wav")
        with wave.open(wav, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(self.pcm)
        seconds = len(self.pcm) / 2 / 16000.0
        out = os.path.join(self.tmp, "talk.mp4")
        p = subprocess.run([lstest.LIPSYNC_CLI, "--server", self.server.addr, "speak", "demo", "--wav", wav,
                            "--out", out], capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("avc1.42E01F", p.stdout)
        probe = subprocess.run([FFPROBE, "-v", "error", "-show_entries",
                                "stream=codec_type,codec_name,width,height,r_frame_rate,sample_rate,channels:"
                                "format=duration", "-of", "json", out],
                               check=True, capture_output=True, text=True, timeout=60).stdout
        import json
        info = json.loads(probe)
        streams = {s["codec_type"]: s for s in info["streams"]}
        self.assertEqual(sorted(streams), ["audio", "video"])
        v, a = streams["video"], streams["audio"]
        self.assertEqual((v["codec_name"], v["width"], v["height"], v["r_frame_rate"]), ("h264", 1280, 720, "25/1"))
        self.assertEqual((a["codec_name"], a["sample_rate"], a["channels"]), ("aac", "16000", 1))
        self.assertLessEqual(abs(float(info["format"]["duration"]) - seconds), 0.080,
                             "MP4 %s s, WAV %.3f s" % (info["format"]["duration"], seconds))
        # Its pictures are RenderSpeech's raw frames (start 0), within 35 dB.
        raw = subprocess.run([FFMPEG, "-v", "error", "-i", out, "-map", "0:v", "-f", "rawvideo", "-pix_fmt",
                              "rgb24", "-"], check=True, capture_output=True, timeout=120).stdout
        decoded = np.frombuffer(raw, np.uint8).reshape(-1, H, W, 3)
        _, want, _ = self.render("raw")
        self.assertEqual(len(decoded), len(want))
        for i in range(0, len(want), 9):
            self.assertGreaterEqual(psnr(decoded[i], np.frombuffer(want[i], np.uint8).reshape(H, W, 3)), 35.0,
                                    "frame %d" % i)
        # An MP4 holds H.264: another format is a usage error, and no file.
        bad = os.path.join(self.tmp, "bad.mp4")
        p = subprocess.run([lstest.LIPSYNC_CLI, "--server", self.server.addr, "speak", "demo", "--wav", wav,
                            "--out", bad, "--format", "png"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("MP4", p.stderr)
        self.assertFalse(os.path.exists(bad))


if __name__ == "__main__":
    unittest.main()
