"""End-to-end test of the demo page (web/) in headless Chromium.

lipsyncd is started with the demo model (tests/python/lstest.py); demo.mjs
(playwright-core driving Debian's /usr/bin/chromium) opens the page, picks
the model and plays. Then the exact gRPC-Web request of the batch whose frame
is on the canvas is replayed here over native gRPC, and the PNG the server
returns for that frame must equal the canvas pixels. The page's screenshot
is kept under <build>/browser_demo/.

playwright-core is installed from the npm registry into tests/browser/
node_modules (from package-lock.json, ignored by git) when missing or not
the locked version.
"""

import json
import os
import shutil
import subprocess
import sys
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import lstest  # noqa: E402

CHROMIUM = os.environ.get("LS_CHROMIUM", "/usr/bin/chromium")
NODE = shutil.which("node") or "/usr/bin/node"
FRAMES, BATCH = 12, 4


def ensure_playwright():
    """npm ci when node_modules lacks the locked playwright-core."""
    with open(os.path.join(HERE, "package-lock.json")) as f:
        want = json.load(f)["packages"]["node_modules/playwright-core"]["version"]
    have = None
    try:
        with open(os.path.join(HERE, "node_modules", "playwright-core", "package.json")) as f:
            have = json.load(f)["version"]
    except OSError:
        pass
    if have == want:
        return
    npm = shutil.which("npm")
    if not npm:
        raise AssertionError("npm is needed to install playwright-core (apt-get install nodejs npm)")
    p = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE,
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise AssertionError("npm ci in %s failed:\n%s%s" % (HERE, p.stdout, p.stderr))


ENCODER = {"model_path": os.path.join(lstest.DEMO_DIR, "models", "demo_encoder.onnx"), "kind": "ave"}


def canvas_vs(test, out, result, want, what):
    """The canvas (canvas.rgba) must equal the server's frame `want`."""
    with open(os.path.join(out, "canvas.rgba"), "rb") as f:
        canvas = np.frombuffer(f.read(), np.uint8).reshape(result["height"], result["width"], 4)
    test.assertTrue((canvas[:, :, 3] == 255).all(), "canvas has transparent pixels")
    diff = np.abs(canvas[:, :, :3].astype(np.int16) - want.astype(np.int16))
    bad = np.argwhere(diff.max(axis=2) > 0)
    if len(bad):
        y, x = bad[0]
        test.fail("%d canvas pixels differ from the server's PNG of %s, first at (x=%d,y=%d): canvas %r, png %r "
                  "(screenshot in %s)" % (len(bad), what, x, y, tuple(canvas[y, x, :3]), tuple(want[y, x]), out))


class TestBrowserDemo(unittest.TestCase):
    def run_page(self, server, out, source):
        if not os.access(CHROMIUM, os.X_OK):
            self.fail("%s not found: scripts/setup.sh installs Debian's chromium package" % CHROMIUM)
        ensure_playwright()
        shutil.rmtree(out, ignore_errors=True)
        p = subprocess.run([NODE, os.path.join(HERE, "demo.mjs"), "--url", server.http_url + "/",
                            "--out", out, "--model", "demo", "--frames", str(FRAMES),
                            "--batch", str(BATCH), "--source", source, "--chromium", CHROMIUM],
                           capture_output=True, text=True, timeout=400)
        self.assertEqual(p.returncode, 0, "demo.mjs failed:\n%s%s\n%s" % (p.stdout, p.stderr, server.log_tail()))
        with open(os.path.join(out, "result.json")) as f:
            result = json.load(f)
        with open(os.path.join(out, "request.bin"), "rb") as f:
            framed = f.read()
        self.assertEqual(framed[0], 0)
        self.assertEqual(int.from_bytes(framed[1:5], "big"), len(framed) - 5)
        self.assertTrue(os.path.getsize(os.path.join(out, "screenshot.png")) > 10000)
        return result, framed[5:]

    def test_speech_plays_render_speech_frames(self):
        out = os.path.join(lstest.BUILD_DIR, "browser_demo_speech")
        server = lstest.LsServer({"demo": lstest.demo_model_config("demo", preload=True, audio_encoder=ENCODER)},
                                 http={"speech_wav": os.path.join(lstest.DEMO_DIR, "speech.wav")}).start()
        try:
            result, body = self.run_page(server, out, "speech")
            self.assertEqual(result["source"], "speech", result)
            self.assertGreater(result["totalFrames"], 100, result)   # ~11 s of speech
            self.assertEqual(result["framesDrawn"], result["totalFrames"], result)
            self.assertEqual(result["lastDrawn"]["frame"], result["totalFrames"] - 1, result)
            self.assertTrue(result["audioStarted"], result)
            self.assertGreaterEqual(result["distinctCanvasSums"], 20, result)
            # The same RenderSpeech request over native gRPC: its last frame is the canvas.
            pb2, _ = lstest.stubs()
            req = pb2.RenderSpeechRequest.FromString(body)
            self.assertEqual((req.model_id, req.batch_size), ("demo", BATCH))
            rpc = server.channel.unary_stream("/%s/RenderSpeech" % lstest.SERVICE, request_serializer=None,
                                              response_deserializer=pb2.RenderSpeechResponse.FromString)
            last = list(rpc(body, timeout=lstest.RPC_TIMEOUT_S))[-1]
            canvas_vs(self, out, result, lstest.decode_frame(last.frames[-1]), "the speech's last frame")
        finally:
            server.stop()

    def test_play_draws_server_frames(self):
        out = os.path.join(lstest.BUILD_DIR, "browser_demo")
        server = lstest.LsServer({"demo": lstest.demo_model_config("demo", preload=True),
                                  "demo_b1": lstest.demo_model_config("demo_b1")}).start()
        try:
            result, body = self.run_page(server, out, "features")
            self.assertEqual(result["framesDrawn"], FRAMES, result)
            last = result["lastDrawn"]
            self.assertEqual(last["frame"], FRAMES - 1, result)
            # The canvas changed while playing (the mouth follows the audio).
            self.assertGreaterEqual(result["distinctCanvasSums"], 4, result)

            pb2, _ = lstest.stubs()
            req = lstest.bytes_variant_pb2().CompositeBatchRequest.FromString(body)
            self.assertEqual((req.model_id, req.start_frame_idx, req.batch_size),
                             ("demo", last["batchStart"], last["batchSize"]))

            # The same request bytes over native gRPC: the frame must be the canvas.
            rpc = server.channel.unary_unary("/%s/InferBatchComposite" % lstest.SERVICE,
                                             request_serializer=None,
                                             response_deserializer=pb2.CompositeBatchResponse.FromString)
            resp = rpc(body, timeout=lstest.RPC_TIMEOUT_S)
            self.assertTrue(resp.success, resp.error)
            want = lstest.decode_frame(resp.composited_frames[last["indexInBatch"]])
            canvas_vs(self, out, result, want, "frame %d" % last["frame"])
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main()
