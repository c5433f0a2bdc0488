"""Routing metadata and the SIGTERM grace a load balancer needs (docs/SCALING.md).

- x-model-id: clients send the model id as metadata so a balancer can route
  by it; the server refuses a call whose metadata and body disagree
  (INVALID_ARGUMENT), on the gRPC port and over gRPC-Web, and accepts either
  one alone.
- server.unready_grace_seconds: after SIGTERM /readyz answers 503 at once
  but requests are still served for that long, then the server drains and
  exits 0.
"""

import signal
import subprocess
import time
import unittest
import urllib.error
import urllib.request

import grpc
import numpy as np

import lstest

AUDIO = np.zeros((2,) + tuple(lstest.demo_model.AUDIO_SHAPE), np.float32).ravel()


def _infer_req(pb2, model_id):
    return pb2.CompositeBatchRequest(model_id=model_id, batch_size=2, start_frame_idx=0, audio_features=AUDIO)


class RoutingMetadataTest(lstest.ServerTestCase):
    MODELS = {"demo": lstest.demo_model_config("demo", num_frames=5),
              "other": lstest.demo_model_config("demo", num_frames=5)}

    def test_infer_metadata_agrees_or_absent(self):
        pb2, _ = lstest.stubs()
        r = self.server.stub.InferBatchComposite(_infer_req(pb2, "demo"), metadata=[("x-model-id", "demo")],
                                                 timeout=lstest.RPC_TIMEOUT_S)
        self.assertEqual(len(r.composited_frames), 2)
        r = self.server.stub.InferBatchComposite(_infer_req(pb2, "demo"), timeout=lstest.RPC_TIMEOUT_S)
        self.assertEqual(len(r.composited_frames), 2)

    def test_mismatch_is_invalid_argument(self):
        pb2, _ = lstest.stubs()
        stub = self.server.stub
        calls = [
            lambda md: stub.InferBatchComposite(_infer_req(pb2, "demo"), metadata=md, timeout=30),
            lambda md: stub.GetModelStats(pb2.GetModelStatsRequest(model_id="demo"), metadata=md, timeout=30),
            lambda md: stub.LoadModel(pb2.LoadModelRequest(model_id="demo"), metadata=md, timeout=30),
            lambda md: stub.UnloadModel(pb2.UnloadModelRequest(model_id="demo"), metadata=md, timeout=30),
        ]
        for call in calls:
            with self.assertRaises(grpc.RpcError) as cm:
                call([("x-model-id", "other")])
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("x-model-id", cm.exception.details())
        # GetModelStats of everything names no model: any metadata is fine.
        stub.GetModelStats(pb2.GetModelStatsRequest(model_id=""), metadata=[("x-model-id", "other")], timeout=30)

    def test_grpcweb_mismatch(self):
        pb2, _ = lstest.stubs()
        body = _infer_req(pb2, "demo").SerializeToString()
        frame = b"\x00" + len(body).to_bytes(4, "big") + body

        def post(model_header):
            req = urllib.request.Request(
                self.server.http_url + "/%s/InferBatchComposite" % lstest.SERVICE, data=frame, method="POST",
                headers={"content-type": "application/grpc-web+proto", "x-model-id": model_header})
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.read()

        self.assertIn(b"grpc-status:0", post("demo").replace(b" ", b""))
        self.assertIn(b"grpc-status:3", post("other").replace(b" ", b""))


class UnreadyGraceTest(unittest.TestCase):
    def test_serves_while_unready_then_drains(self):
        pb2, _ = lstest.stubs()
        srv = lstest.LsServer({"demo": lstest.demo_model_config("demo", num_frames=5, preload=True)},
                              server={"unready_grace_seconds": 2.0, "drain_seconds": 1})
        srv.start()
        try:
            srv.stub.InferBatchComposite(_infer_req(pb2, "demo"), timeout=30)
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            # /readyz goes 503 at once (well inside the grace period)...
            deadline = t0 + 1.0
            status = None
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(srv.http_url + "/readyz", timeout=1).read()
                    status = 200
                except urllib.error.HTTPError as e:
                    status = e.code
                    break
                time.sleep(0.05)
            self.assertEqual(status, 503)
            # ...while requests on both ports are still served.
            r = srv.stub.InferBatchComposite(_infer_req(pb2, "demo"), metadata=[("x-model-id", "demo")],
                                             timeout=30)
            self.assertEqual(len(r.composited_frames), 2)
            self.assertLess(time.monotonic() - t0, 2.0)
            rc = srv.proc.wait(timeout=20)
            self.assertEqual(rc, 0)
            self.assertGreaterEqual(time.monotonic() - t0, 1.9)
        finally:
            if srv.proc and srv.proc.poll() is None:
                srv.proc.kill()
                srv.proc.wait()
            srv.proc = None
            if srv.channel:
                srv.channel.close()
                srv.channel = None
        with open(srv.log_path) as f:
            self.assertIn("unready_grace_seconds", f.read())


if __name__ == "__main__":
    unittest.main()
