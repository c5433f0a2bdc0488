"""Execution providers (engine.execution_provider, models.<id>.execution_provider)
and the GPU memory budget, as far as a CPU build can check them.

This ONNX Runtime (the CPU release scripts/setup.sh fetches) lists
CUDAExecutionProvider among its providers but ships no provider library, so:
  - engine.execution_provider: cuda is a start-up error: lipsyncd exits non-zero
    before listening, and its log names the config key, ONNX Runtime's reason,
    the providers this build lists and how to point ORT_ROOT at a GPU release;
  - a model whose own execution_provider is cuda fails to load with the same
    reason (FAILED_PRECONDITION to LoadModel and to its requests, state
    "failed"), while the other models of the server keep serving;
  - GetModelStats, ListModels and /metrics report the provider and GPU bytes:
    the cuda model's estimate (models.<id>.gpu_memory_estimate_mb) and
    capacity.max_gpu_memory_gb; a CPU model charges 0 GPU bytes.
On a build that has the CUDA provider the refusals cannot happen; the test
then skips with that reason (test_engine compares CUDA with the CPU there).
"""

import os
import subprocess
import time
import unittest
import urllib.request

import grpc
import numpy as np

import lstest
from lstest import demo_model_config

MIB = 1 << 20


def cuda_in_build():
    """Whether this ONNX Runtime can create a CUDA session: test_engine says."""
    exe = os.path.join(lstest.BUILD_DIR, "test_engine")
    out = subprocess.run([exe, lstest.DEMO_DIR], capture_output=True, text=True, timeout=300)
    return "CUDA available" in out.stdout


class TestStartupRefusal(unittest.TestCase):
    def test_cuda_engine_is_a_startup_error(self):
        if cuda_in_build():
            raise unittest.SkipTest("this ONNX Runtime has the CUDA provider: no refusal to test")
        srv = lstest.LsServer({"demo": demo_model_config("demo")},
                              extra_yaml="engine:\n  execution_provider: cuda\n  device_id: 0\n")
        with self.assertRaises(AssertionError) as ctx:
            srv.start()
        rc = srv.proc.wait(timeout=30) if srv.proc else None
        log = open(srv.log_path, encoding="utf-8", errors="replace").read()
        srv.stop(check=False)
        self.assertIn("exited", str(ctx.exception))
        self.assertNotEqual(rc, 0)
        for want in ("config.yaml: engine.execution_provider cuda:",
                     "CUDA execution provider unavailable in ONNX Runtime",
                     "CPUExecutionProvider", "ORT_ROOT", "onnxruntime-linux-x64-gpu"):
            self.assertIn(want, log)
        # Refused before listening: nothing took the port.
        with self.assertRaises(OSError):
            import socket
            socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()


class TestModelOnCuda(lstest.ServerTestCase):
    MODELS = {
        "demo": demo_model_config("demo"),
        "gpu1": demo_model_config("demo", execution_provider="cuda", gpu_memory_estimate_mb=300),
    }
    CAPACITY = {"max_gpu_memory_gb": 2}

    @classmethod
    def setUpClass(cls):
        if cuda_in_build():
            raise unittest.SkipTest("this ONNX Runtime has the CUDA provider: no refusal to test")
        super().setUpClass()

    def test_override_fails_that_model_only(self):
        pb2 = self.pb2
        with self.assertRaises(grpc.RpcError) as ctx:
            self.stub.LoadModel(pb2.LoadModelRequest(model_id="gpu1"), timeout=60)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        for want in ("model 'gpu1': cannot load model", "demo.onnx", "CUDA execution provider unavailable",
                     "CPUExecutionProvider", "ORT_ROOT", "or use execution_provider: cpu"):
            self.assertIn(want, ctx.exception.details())
        visual = lstest.make_visual(1)
        audio = lstest.make_audio([0.5])
        with self.assertRaises(grpc.RpcError) as ctx:
            self.infer("gpu1", visual, audio, 1)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("CUDA execution provider unavailable", ctx.exception.details())
        # The other model serves, with the frames the CPU gives.
        resp = self.infer("demo", visual, audio, 1)
        self.assertEqual(len(resp.composited_frames), 1)
        got = lstest.decode_frame(resp.composited_frames[0])
        n_frames = self.models_by_id()["demo"].num_frames
        fi, want = lstest.expected_frames(visual, audio, 0, n_frames)[0]
        self.assertIsNone(lstest.compare_frame(got, want, lstest.demo_rects()[fi]))
        info = self.models_by_id()
        self.assertEqual(info["gpu1"].state, "failed")
        self.assertIn("CUDA execution provider unavailable", info["gpu1"].error)
        self.assertEqual(info["gpu1"].execution_provider, "cuda")
        self.assertEqual(info["demo"].state, "loaded")
        self.assertEqual(info["demo"].execution_provider, "cpu")

    def test_gpu_bytes_reported(self):
        pb2 = self.pb2
        self.infer("demo", lstest.make_visual(1), lstest.make_audio([0.1]), 1)
        st = self.stub.GetModelStats(pb2.GetModelStatsRequest(), timeout=30)
        by_id = {m.model_id: m for m in st.models}
        self.assertEqual(st.max_gpu_memory_bytes, 2 << 30)
        self.assertEqual(by_id["gpu1"].stats.gpu_memory_estimate_bytes, 300 * MIB)
        self.assertEqual(by_id["gpu1"].stats.gpu_memory_bytes, 300 * MIB)  # not loaded: the estimate
        self.assertEqual(by_id["demo"].stats.gpu_memory_bytes, 0)
        self.assertEqual(by_id["demo"].stats.gpu_memory_estimate_bytes, 0)
        self.assertGreater(by_id["demo"].stats.memory_bytes, 0)
        self.assertEqual(st.total_gpu_memory_bytes, 0)  # nothing on a GPU is loaded
        text = urllib.request.urlopen(self.server.http_url + "/metrics", timeout=30).read().decode()
        self.assertIn('lipsync_model_gpu_memory_bytes{model="demo"} 0\n', text)
        self.assertIn('lipsync_model_gpu_memory_bytes{model="gpu1"} 0\n', text)
        self.assertIn("lipsync_gpu_memory_bytes 0\n", text)
        self.assertIn("lipsync_gpu_memory_max_bytes %d\n" % (2 << 30), text)


if __name__ == "__main__":
    unittest.main()
