"""Faults in a model's files and in ONNX Runtime, through the real server.

Every fault must give the request that meets it a clear gRPC status whose
message names the model and the file at fault, leave a line saying so in
the server log, and leave every other model (and every other frame of the
same avatar) serving. The faults:

  - a model file deleted after start-up, then the model unloaded: the next
    request reloads it and fails; LoadModel(force_reload) likewise;
  - a model file overwritten with garbage, then LoadModel(force_reload);
  - a background frame that is truncated (its header is intact, so the load
    succeeds: frames are decoded on first use) and one deleted after the
    load: only requests using that frame fail;
  - a background frame of another size (seen in its header at load);
  - a crop rectangle outside its frame;
  - NaN / Inf in the inputs;
  - an ONNX graph that fails inside ONNX Runtime for some inputs (a Reshape
    to a shape computed from the input that cannot hold it): INTERNAL for
    those, OK for the others;
  - a model whose memory estimate exceeds capacity.max_memory_gb.

docs/RELIABILITY.md lists them with the statuses observed.
"""

import json
import os
import shutil
import time
import unittest

import grpc
import numpy as np

import lstest
from lstest import DEMO_DIR, demo_model_config

FP = grpc.StatusCode.FAILED_PRECONDITION
FRAMES = os.path.join(DEMO_DIR, "avatar", "frames")
DEMO_ONNX = os.path.join(DEMO_DIR, "models", "demo.onnx")
AUDIO_TRIGGER = 150.0  # an audio value above 100 makes the runtime-failing model fail


def build_runtime_failing_model(path):
    """An ONNX model with the demo's inputs and output whose output is the
    first three visual planes, reshaped to [-1, 3, 320, 320 + k] where
    k = (max(audio) > 100). For k = 0 that is the identity; for k = 1 the
    element count cannot be divided into that shape, which ONNX Runtime only
    finds out while running (the shape is computed from the input)."""
    import onnx
    from onnx import TensorProto, helper

    def const(name, values, dtype=TensorProto.INT64):
        return helper.make_tensor(name, dtype, [len(values)], values)

    nodes = [
        helper.make_node("Slice", ["visual_input", "starts", "ends", "axes"], ["vis3"]),
        helper.make_node("ReduceMax", ["audio_input"], ["amax"], keepdims=0),
        helper.make_node("Greater", ["amax", "threshold"], ["flag"]),
        helper.make_node("Cast", ["flag"], ["k"], to=TensorProto.INT64),
        helper.make_node("Add", ["k", "side"], ["last"]),
        helper.make_node("Unsqueeze", ["last", "zero_axis"], ["last1"]),
        helper.make_node("Concat", ["head", "last1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["vis3", "shape"], ["output"]),
    ]
    inits = [
        const("starts", [0]), const("ends", [3]), const("axes", [1]),
        helper.make_tensor("threshold", TensorProto.FLOAT, [], [100.0]),
        helper.make_tensor("side", TensorProto.INT64, [], [320]),
        const("zero_axis", [0]), const("head", [-1, 3, 320]),
    ]
    graph = helper.make_graph(
        nodes, "runtime_fail",
        [helper.make_tensor_value_info("visual_input", TensorProto.FLOAT, ["N", 6, 320, 320]),
         helper.make_tensor_value_info("audio_input", TensorProto.FLOAT, ["N", 32, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, 320, 320])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def copy_frames(dst, n):
    os.makedirs(dst, exist_ok=True)
    names = sorted(f for f in os.listdir(FRAMES) if f.endswith(".png"))[:n]
    for name in names:
        shutil.copy(os.path.join(FRAMES, name), os.path.join(dst, name))
    return [os.path.join(dst, name) for name in names]


class TestFaults(lstest.ServerTestCase):
    CAPACITY = {"max_models": 16, "max_memory_gb": 2, "load_retry_seconds": 0}

    @classmethod
    def setUpClass(cls):
        d = cls.work = os.path.join(lstest._tmp_root, "faults")
        os.makedirs(d, exist_ok=True)
        rects = [list(r) for r in lstest.demo_rects()]
        # Model files each model owns alone (avatars on one file share its
        # ONNX Runtime session, which would hide a deleted file).
        cls.deleted_onnx = os.path.join(d, "deleted.onnx")
        cls.corrupt_onnx = os.path.join(d, "corrupt.onnx")
        for p in (cls.deleted_onnx, cls.corrupt_onnx):
            shutil.copy(DEMO_ONNX, p)
        cls.runtime_onnx = os.path.join(d, "runtime_fail.onnx")
        build_runtime_failing_model(cls.runtime_onnx)

        # Six frames: frame 3 truncated inside its image data (the header
        # the load reads is intact), frame 4 deleted once loaded.
        bad = copy_frames(os.path.join(d, "bad_frames"), 6)
        with open(bad[3], "rb") as f:
            data = f.read()
        with open(bad[3], "wb") as f:
            f.write(data[:len(data) // 3])
        cls.truncated_frame, cls.deleted_frame = bad[3], bad[4]
        # Frame 2 of another size.
        sized = copy_frames(os.path.join(d, "sized_frames"), 4)
        import pngio
        with open(sized[2], "wb") as f:
            f.write(pngio.encode_png(np.full((360, 640, 3), 90, np.uint8)))
        cls.small_frame = sized[2]
        # Rectangle 1 reaching past the right edge.
        outside = [list(r) for r in rects[:4]]
        outside[1] = [1200, 100, 1290, 190]
        cls.outside_rects = os.path.join(d, "rects_outside.json")
        with open(cls.outside_rects, "w") as f:
            json.dump(outside, f)

        cls.MODELS = {
            "demo": demo_model_config("demo", num_frames=10, preload=True),
            "deleted_model": demo_model_config("demo", model_path=cls.deleted_onnx, num_frames=4,
                                               preload=True),
            "corrupt_model": demo_model_config("demo", model_path=cls.corrupt_onnx, num_frames=4,
                                               preload=True),
            "bad_frames": demo_model_config("demo", background_dir=os.path.join(d, "bad_frames"),
                                            num_frames=6, preload=True),
            "sized_frames": demo_model_config("demo", background_dir=os.path.join(d, "sized_frames"),
                                              num_frames=4),
            "rect_outside": demo_model_config("demo", crop_rects_path=cls.outside_rects, num_frames=4),
            "runtime_fail": demo_model_config("demo", model_path=cls.runtime_onnx, num_frames=4),
            "too_big": demo_model_config("demo", num_frames=4, memory_estimate_mb=4096),
        }
        super().setUpClass()

    # ---- helpers

    def request(self, mid, batch=1, start=0, audio_level=0.3):
        v = lstest.make_visual(batch)
        a = lstest.make_audio([audio_level] * batch)
        return self.infer_bytes(mid, v, a, batch, start=start)

    def expect_error(self, code, mid, **kw):
        e = self.assertRpcError(code, self.request, mid, **kw)
        self.assertTrue(e.details(), "empty status message")
        return e.details()

    def assert_names(self, text, *words):
        for w in words:
            self.assertIn(w, text)

    def assert_logged(self, *words, timeout=5.0):
        """Some line of the server log holds every word."""
        deadline = time.monotonic() + timeout
        while True:
            with open(self.server.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            for line in lines:
                if all(w in line for w in words):
                    return line
            if time.monotonic() > deadline:
                self.fail("no server log line holds all of %r\n%s" % (words, self.server.log_tail()))
            time.sleep(0.05)

    def assert_demo_serves(self):
        resp = self.request("demo", batch=2, start=1)
        self.assertTrue(resp.success)
        self.assertEqual(len(resp.composited_frames), 2)

    def load(self, mid, force=False):
        return self.stub.LoadModel(self.pb2.LoadModelRequest(model_id=mid, force_reload=force),
                                   timeout=lstest.RPC_TIMEOUT_S)

    # ---- model files

    def test_model_file_deleted_after_start(self):
        self.assertTrue(self.request("deleted_model").success)
        os.remove(self.deleted_onnx)
        # Loaded: the session is in memory, the file is not read again.
        self.assertTrue(self.request("deleted_model").success)
        u = self.stub.UnloadModel(self.pb2.UnloadModelRequest(model_id="deleted_model"), timeout=60)
        self.assertTrue(u.success, u.error)
        msg = self.expect_error(FP, "deleted_model")
        self.assert_names(msg, "deleted_model", self.deleted_onnx)
        self.assert_logged("deleted_model", "FAILED_PRECONDITION", self.deleted_onnx)
        e = self.assertRpcError(FP, self.load, "deleted_model", force=True)
        self.assert_names(e.details(), "deleted_model", self.deleted_onnx)
        self.assert_logged("LoadModel", "FAILED_PRECONDITION", self.deleted_onnx)
        m = self.models_by_id()["deleted_model"]
        self.assertEqual(m.state, "failed")
        self.assertIn(self.deleted_onnx, m.error)
        self.assert_demo_serves()

    def test_model_file_corrupted_then_reloaded(self):
        self.assertTrue(self.request("corrupt_model").success)
        with open(self.corrupt_onnx, "wb") as f:
            f.write(np.random.default_rng(1).integers(0, 256, 50000, dtype=np.uint8).tobytes())
        e = self.assertRpcError(FP, self.load, "corrupt_model", force=True)
        self.assert_names(e.details(), "corrupt_model", self.corrupt_onnx)
        self.assert_logged("LoadModel", "FAILED_PRECONDITION", self.corrupt_onnx)
        msg = self.expect_error(FP, "corrupt_model")
        self.assert_names(msg, "corrupt_model", self.corrupt_onnx)
        self.assertEqual(self.models_by_id()["corrupt_model"].state, "failed")
        self.assert_demo_serves()

    # ---- background frames and rectangles

    def test_truncated_frame_fails_only_its_requests(self):
        # Frames 0..2 serve; frame 3 was loaded by header only and fails
        # when first decoded, then every time after.
        self.assertEqual(len(self.request("bad_frames", batch=3, start=0).composited_frames), 3)
        for _ in range(2):
            msg = self.expect_error(FP, "bad_frames", start=3)
            self.assert_names(msg, "bad_frames", self.truncated_frame)
        self.assert_logged("bad_frames", "FAILED_PRECONDITION", self.truncated_frame)
        # A batch that includes it fails as a whole; frame 9 = 3 (mod 6) too.
        self.expect_error(FP, "bad_frames", batch=2, start=2)
        self.expect_error(FP, "bad_frames", start=9)
        self.assertTrue(self.request("bad_frames", start=5).success)
        self.assertEqual(self.models_by_id()["bad_frames"].state, "loaded")
        self.assert_demo_serves()

    def test_frame_deleted_after_load(self):
        self.assertTrue(self.request("bad_frames", start=0).success)
        os.remove(self.deleted_frame)
        msg = self.expect_error(FP, "bad_frames", start=4)
        self.assert_names(msg, "bad_frames", self.deleted_frame)
        self.assert_logged("bad_frames", "FAILED_PRECONDITION", self.deleted_frame)
        self.assertTrue(self.request("bad_frames", batch=2, start=0).success)
        self.assert_demo_serves()

    def test_frame_of_another_size(self):
        msg = self.expect_error(FP, "sized_frames")
        self.assert_names(msg, "sized_frames", self.small_frame, "640x360", "1280x720")
        self.assert_logged("sized_frames", "FAILED_PRECONDITION", self.small_frame)
        m = self.models_by_id()["sized_frames"]
        self.assertEqual(m.state, "failed")
        self.assertIn(self.small_frame, m.error)
        self.assert_demo_serves()

    def test_rect_outside_frame(self):
        msg = self.expect_error(FP, "rect_outside")
        self.assert_names(msg, "rect_outside", self.outside_rects, "1290")
        self.assert_logged("rect_outside", "FAILED_PRECONDITION", self.outside_rects)
        self.assert_demo_serves()

    # ---- inputs, ONNX Runtime, capacity

    def test_nan_inf_inputs(self):
        v, a = lstest.make_visual(1), lstest.make_audio([0.1])
        for name, vv, aa in (("nan", np.where(v > 0.8, np.nan, v).astype(np.float32), a),
                             ("inf", v, np.where(a > 0.3, np.inf, a).astype(np.float32))):
            with self.subTest(name):
                e = self.assertRpcError(grpc.StatusCode.INVALID_ARGUMENT, self.infer_bytes,
                                        "demo", vv, aa, 1)
                self.assertIn("not finite", e.details())
        self.assert_logged("'demo'", "INVALID_ARGUMENT", "not finite")
        self.assert_demo_serves()

    def test_onnx_runtime_failure_is_internal(self):
        self.assertTrue(self.request("runtime_fail").success)
        msg = self.expect_error(grpc.StatusCode.INTERNAL, "runtime_fail", audio_level=AUDIO_TRIGGER)
        self.assert_names(msg, "runtime_fail", self.runtime_onnx, "Reshape")
        self.assertNotIn("\n", msg)  # ONNX Runtime ends its messages with one
        self.assert_logged("runtime_fail", "INTERNAL", self.runtime_onnx)
        # Same session, good input: serves again; so do the others.
        self.assertTrue(self.request("runtime_fail", batch=2, start=1).success)
        self.assertEqual(self.models_by_id()["runtime_fail"].state, "loaded")
        h = self.stub.Health(self.pb2.HealthRequest(), timeout=10)
        self.assertEqual(h.status, "SERVING")
        self.assert_demo_serves()

    def test_estimate_above_memory_limit(self):
        msg = self.expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "too_big")
        self.assert_names(msg, "too_big", str(4096 << 20))
        self.assert_logged("too_big", "RESOURCE_EXHAUSTED")
        e = self.assertRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, self.load, "too_big")
        self.assertIn("too_big", e.details())
        self.assertNotEqual(self.models_by_id()["too_big"].state, "loaded")
        self.assert_demo_serves()


if __name__ == "__main__":
    unittest.main()
