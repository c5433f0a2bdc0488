"""End-to-end test of the Talk page (web/talk.html) in headless Chromium.

talk.mjs (playwright-core driving Debian's /usr/bin/chromium) opens the page
on a lipsyncd with the demo model and talks: the bundled speech over the
WebSocket session, H.264 decoded by WebCodecs. Checked here: every frame of
the session is drawn, none dropped; the page's A/V log has |audio clock -
pts| <= 40 ms at draw for 95 % of the frames; canvas snapshots have PSNR >=
35 dB against the server's raw frame of the same index, made by replaying
the exact audio the page sent (RenderSpeech, output raw: the session's
frames by contract); the session closes with 1000. Then the microphone path
with Chromium's fake capture device playing the demo WAV yields frames.
"""

import json
import os
import subprocess
import sys
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import lstest  # noqa: E402
from test_browser_demo import CHROMIUM, ENCODER, NODE, ensure_playwright  # noqa: E402

W, H = 1280, 720
SNAPS = [10, 60, 110, 160, 210, 260]


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


class TestBrowserTalk(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        wav = os.path.join(lstest.DEMO_DIR, "speech.wav")
        cls.wav = wav
        cls.server = lstest.LsServer({"demo": lstest.demo_model_config("demo", preload=True, audio_encoder=ENCODER)},
                                     http={"speech_wav": wav}).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def talk(self, name, query, source, wav=None):
        if not os.access(CHROMIUM, os.X_OK):
            self.fail("%s not found: scripts/setup.sh installs Debian's chromium package" % CHROMIUM)
        ensure_playwright()
        out = os.path.join(lstest.BUILD_DIR, name)
        cmd = [NODE, os.path.join(HERE, "talk.mjs"), "--url", self.server.http_url + "/talk.html" + query,
               "--out", out, "--model", "demo", "--source", source, "--chromium", CHROMIUM]
        if wav:
            cmd += ["--wav", wav]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
        self.assertEqual(p.returncode, 0, "talk.mjs failed:\n%s%s\n%s" % (p.stdout, p.stderr, self.server.log_tail()))
        with open(os.path.join(out, "result.json")) as f:
            return out, json.load(f)

    def test_speech_in_sync_and_close_to_raw(self):
        out, r = self.talk("browser_talk", "?snap=" + ",".join(map(str, SNAPS)), "speech")
        self.assertEqual(r["codec"], "avc1.42E01F")
        n = r["ended"]["frames"]
        self.assertGreater(n, 200, r["status"])                 # ~11 s of speech
        self.assertEqual(r["framesReceived"], n)
        self.assertEqual(r["framesDecoded"], n)
        self.assertEqual(r["framesDrawn"], n, "every frame drawn")
        self.assertEqual(r["dropped"], 0)
        self.assertTrue(r["audioStarted"])
        self.assertEqual(r["closeCode"], 1000)
        errs = np.abs([a["err"] for a in r["av"]])
        self.assertEqual(len(errs), n)
        within = float(np.mean(errs <= 40.0))
        self.assertGreaterEqual(within, 0.95, "A/V: %.1f%% of frames within 40 ms (p95 %.1f ms)"
                                % (100 * within, np.percentile(errs, 95)))
        # The server's raw frames for the exact audio the page sent.
        with open(os.path.join(out, "sent.s16"), "rb") as f:
            pcm = f.read()
        pb2, _ = lstest.stubs()
        req = pb2.RenderSpeechRequest(model_id="demo", output_format="raw", audio=pb2.AudioInput(
            pcm=pcm, pcm_encoding="s16le", sample_rate=16000, channels=1))
        raw = [fr for resp in self.server.stub.RenderSpeech(req, timeout=lstest.RPC_TIMEOUT_S) for fr in resp.frames]
        self.assertEqual(len(raw), n)
        for i in SNAPS:
            with open(os.path.join(out, "snap_%d.rgba" % i), "rb") as f:
                canvas = np.frombuffer(f.read(), np.uint8).reshape(H, W, 4)[:, :, :3]
            want = np.frombuffer(raw[i], np.uint8).reshape(H, W, 3)
            self.assertGreaterEqual(psnr(canvas, want), 35.0, "frame %d" % i)

    def test_microphone_yields_frames(self):
        _, r = self.talk("browser_talk_mic", "?seconds=4", "mic", wav=self.wav)
        self.assertEqual(r["closeCode"], 1000, r["status"])
        self.assertGreater(r["framesReceived"], 40, r["status"])   # 4 s of audio, less the lookahead
        self.assertEqual(r["framesDrawn"], r["framesReceived"])
        self.assertEqual(r["ended"]["frames"], r["framesReceived"])


if __name__ == "__main__":
    unittest.main()
