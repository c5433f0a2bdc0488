"""Smoke tests of the `lipsync` command-line client ($LIPSYNC_CLI) against a
real server. The CLI's exit status contract: 0 ok, 1 RPC or I/O error,
2 usage error."""

import os
import subprocess
import tempfile
import unittest


import lstest
from lstest import LIPSYNC_CLI, demo_model_config

CLI_TIMEOUT_S = 300 if lstest.SLOW else 60


class TestCli(lstest.ServerTestCase):
    MODELS = {
        "demo": demo_model_config("demo", preload=True),
        "demo_b1": demo_model_config("demo_b1"),
    }

    @classmethod
    def setUpClass(cls):
        if not os.access(LIPSYNC_CLI, os.X_OK):
            raise unittest.SkipTest("client binary not built: %s" % LIPSYNC_CLI)
        super().setUpClass()

    def cli(self, *args, server=None):
        """Run the CLI against this class's server; returns CompletedProcess."""
        cmd = [LIPSYNC_CLI, "--server", server or self.server.addr] + list(args)
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=CLI_TIMEOUT_S, universal_newlines=True)

    def assertExit(self, proc, code):
        self.assertEqual(proc.returncode, code, "stdout:\n%s\nstderr:\n%s" %
                         (proc.stdout, proc.stderr))

    def test_list(self):
        p = self.cli("list")
        self.assertExit(p, 0)
        self.assertIn("demo", p.stdout)
        self.assertIn("demo_b1", p.stdout)

    def test_health(self):
        self.assertExit(self.cli("health"), 0)

    def test_stats(self):
        p = self.cli("stats", "demo")
        self.assertExit(p, 0)
        self.assertIn("demo", p.stdout)

    def test_infer_writes_pngs(self):
        with tempfile.TemporaryDirectory() as d:
            p = self.cli("infer", "demo", "--batch", "2", "--out", d)
            self.assertExit(p, 0)
            pngs = sorted(f for f in os.listdir(d) if f.endswith(".png"))
            self.assertEqual(len(pngs), 2, pngs)
            for name in pngs:
                with open(os.path.join(d, name), "rb") as f:
                    lstest.decode_frame(f.read())  # 1280x720 RGB, valid chunks

    def test_infer_with_input_files(self):
        # Raw little-endian float32 inputs: the frames must be the model's
        # answer to exactly those inputs.
        v = lstest.make_visual(2, phase=0.7)
        a = lstest.make_audio([1.5, -1.5])
        with tempfile.TemporaryDirectory() as d:
            vp, ap = os.path.join(d, "v.f32"), os.path.join(d, "a.f32")
            v.astype("<f4").tofile(vp)
            a.astype("<f4").tofile(ap)
            out = os.path.join(d, "out")
            os.mkdir(out)
            p = self.cli("infer", "demo", "--batch", "2", "--start", "12", "--out", out,
                         "--visual", vp, "--audio", ap)
            self.assertExit(p, 0)
            pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
            self.assertEqual(len(pngs), 2, pngs)
            want = lstest.expected_frames(v, a, 12, 50)
            rects = lstest.demo_rects()
            for name, (fi, expected) in zip(pngs, want):
                with open(os.path.join(out, name), "rb") as f:
                    got = lstest.decode_frame(f.read())
                problem = lstest.compare_frame(got, expected, rects[fi])
                self.assertIsNone(problem, name)

    def test_load_unload(self):
        self.assertExit(self.cli("load", "demo_b1"), 0)
        self.assertEqual(self.models_by_id()["demo_b1"].state, "loaded")
        p = self.cli("unload", "demo_b1")
        self.assertExit(p, 0)
        self.assertIn("unloaded", p.stdout)
        self.assertEqual(self.models_by_id()["demo_b1"].state, "unloaded")

    def test_bench(self):
        p = self.cli("bench", "demo", "--batch", "1", "--requests", "4", "--concurrency", "2")
        self.assertExit(p, 0)

    def test_errors(self):
        p = self.cli("infer", "nope", "--batch", "1", "--out", tempfile.gettempdir())
        self.assertExit(p, 1)
        self.assertIn("NOT_FOUND", p.stdout + p.stderr)
        self.assertExit(self.cli("no-such-command"), 2)
        self.assertExit(self.cli("infer", "demo", "--batch", "x"), 2)

    def test_unreachable_server(self):
        p = subprocess.run([LIPSYNC_CLI, "--server", "127.0.0.1:%d" % lstest.free_port(),
                            "--timeout", "2", "list"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=CLI_TIMEOUT_S, universal_newlines=True)
        self.assertExit(p, 1)


if __name__ == "__main__":
    unittest.main()
