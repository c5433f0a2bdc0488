"""Interop tests of lipsyncd through the Python gRPC client.

Every InferBatchComposite result is decoded and compared with an expectation
computed here, independently of the server: demo_model.predict (numpy) for
the model, lstest.composite for the pasting (src/media/compositor.h). Pixels
outside the crop rectangle must equal the background frame bit for bit;
pixels inside may differ by 2 levels (float rounding, bilinear rounding).
"""

import json
import os
import unittest

import grpc
import numpy as np

import lstest
from lstest import AUDIO_PER_FRAME, DEMO_DIR, VISUAL_PER_FRAME, demo_model_config

LIST_RECTS = os.path.join(DEMO_DIR, "avatar", "crop_rects_list.json")
INVALID = grpc.StatusCode.INVALID_ARGUMENT


class InferCheckMixin:
    def check_response(self, resp, visual, audio, start, n_frames=50, order="loop",
                       rects=None):
        """Assert resp holds the frames the demo model must produce; returns
        the decoded frames."""
        batch = visual.shape[0]
        self.assertTrue(resp.success, resp.error)
        self.assertEqual(len(resp.composited_frames), batch)
        want = lstest.expected_frames(visual, audio, start, n_frames, order, rects)
        rects = rects or lstest.demo_rects()
        got = []
        for i, png in enumerate(resp.composited_frames):
            img = lstest.decode_frame(png)
            fi, expected = want[i]
            problem = lstest.compare_frame(img, expected, rects[fi])
            if problem:
                self.fail("batch item %d (start %d -> frame %d): %s" % (i, start, fi, problem))
            got.append(img)
        return got


class TestInference(InferCheckMixin, lstest.ServerTestCase):
    MODELS = {
        "demo": demo_model_config("demo", preload=True),
        "demo_b1": demo_model_config("demo_b1", crop_rects_path=LIST_RECTS),
        "demo_pp": demo_model_config("demo", num_frames=5, frame_order="pingpong"),
        "demo_stats": demo_model_config("demo", num_frames=5),
        "demo_lazy": demo_model_config("demo", num_frames=5),
    }
    # Room for every model at once: no eviction may disturb the tests.
    CAPACITY = {"max_models": 16}

    # ---- results

    def test_batch1(self):
        v = lstest.make_visual(1)
        a = lstest.make_audio([0.7])
        resp = self.infer("demo", v, a, 1, start=0)
        self.check_response(resp, v, a, 0)
        self.assertGreaterEqual(resp.inference_time_ms, 0.0)
        self.assertGreaterEqual(resp.total_time_ms, resp.inference_time_ms)

    def test_batch5_per_frame_audio(self):
        # Around the demo model's AUDIO_BIAS (1.0): from closed to wide open.
        levels = [-0.5, 0.5, 1.0, 1.5, 2.5]
        v = lstest.make_visual(5, phase=1.0)
        a = lstest.make_audio(levels)
        resp = self.infer("demo", v, a, 5, start=7)
        frames = self.check_response(resp, v, a, 7)
        # Each frame's mouth opens with its own window's level.
        rects = lstest.demo_rects()
        counts = [lstest.mouth_pixels(f, rects[7 + i]) for i, f in enumerate(frames)]
        self.assertEqual(counts, sorted(counts), counts)
        self.assertGreater(counts[-1], 3 * counts[0], counts)

    def test_batch10_wraps_past_last_frame(self):
        # 25 MB request: accepted with the server's default message limit.
        v = lstest.make_visual(10, phase=2.0)
        a = lstest.make_audio(np.linspace(-1, 1, 10))
        resp = self.infer("demo", v, a, 10, start=45)  # frames 45..49, 0..4
        self.check_response(resp, v, a, 45)

    def test_start_beyond_int32_positions(self):
        # Positions start..start+4 pass 2^31: the server must count in 64 bits.
        start = 2 ** 31 - 3
        v = lstest.make_visual(5)
        a = lstest.make_audio([0.2] * 5)
        self.check_response(self.infer("demo", v, a, 5, start=start), v, a, start)

    def test_single_audio_window_for_all_frames(self):
        # A uniform crop in every frame, so only the audio shapes the mouth.
        v = np.full((4, 6, lstest.P, lstest.P), 0.5, np.float32)
        a = lstest.make_audio([1.0])[0]  # 32x16x16, no batch dimension
        resp = self.infer("demo", v, a, 4, start=20)
        frames = self.check_response(resp, v, a, 20)
        rects = lstest.demo_rects()
        counts = [lstest.mouth_pixels(f, rects[20 + i]) for i, f in enumerate(frames)]
        self.assertLess(max(counts) - min(counts), 0.1 * max(counts), counts)

    def test_bytes_form_same_result(self):
        v = lstest.make_visual(3, phase=3.0)
        a = lstest.make_audio([-0.4, 0.3, 1.1])
        r1 = self.infer("demo", v, a, 3, start=11)
        r2 = self.infer_bytes("demo", v, a, 3, start=11)
        f1 = self.check_response(r1, v, a, 11)
        self.assertEqual(len(r2.composited_frames), 3)
        for i in range(3):
            np.testing.assert_array_equal(lstest.decode_frame(r2.composited_frames[i]), f1[i],
                                          "bytes-form frame %d differs" % i)
        # One shared window in bytes form.
        a1 = lstest.make_audio([0.9])[0]
        r3 = self.infer_bytes("demo", v, a1, 3, start=30)
        self.check_response(r3, v, a1, 30)

    def test_fixed_batch_model_serves_batch5(self):
        v = lstest.make_visual(5, phase=0.2)
        a = lstest.make_audio([1.2, -1.2, 0.6, -0.6, 0.0])
        resp = self.infer("demo_b1", v, a, 5, start=48)
        self.check_response(resp, v, a, 48)

    def test_pingpong_frame_order(self):
        v = lstest.make_visual(10)
        a = lstest.make_audio([0.0] * 10)
        resp = self.infer("demo_pp", v, a, 10, start=0)
        self.assertEqual(len(resp.composited_frames), 10)
        rects = lstest.demo_rects()
        want_idx = [0, 1, 2, 3, 4, 3, 2, 1, 0, 1]
        for i, png in enumerate(resp.composited_frames):
            img = lstest.decode_frame(png)
            # Identify the background frame by the pixels outside its rectangle.
            matches = [f for f in range(5)
                       if np.array_equal(img[~lstest.rect_mask(rects[f])],
                                         lstest.demo_frame(f)[~lstest.rect_mask(rects[f])])]
            self.assertEqual(matches, [want_idx[i]], "batch item %d" % i)
        self.check_response(resp, v, a, 0, n_frames=5, order="pingpong")
        # Starting mid-period: positions 6..8 -> frames 2, 1, 0.
        v3 = lstest.make_visual(3)
        a3 = lstest.make_audio([0.5] * 3)
        self.check_response(self.infer("demo_pp", v3, a3, 3, start=6), v3, a3, 6,
                            n_frames=5, order="pingpong")

    def test_concurrent_requests_two_models(self):
        # Requests of two tenants interleaved from several client threads:
        # every response must still be exactly its own request's answer.
        from concurrent.futures import ThreadPoolExecutor
        jobs = []
        for k in range(8):
            mid = "demo" if k % 2 == 0 else "demo_b1"
            v = lstest.make_visual(2, phase=0.3 * k)
            a = lstest.make_audio([-1.0 + 0.25 * k, 1.0 - 0.25 * k])
            jobs.append((mid, v, a, 5 * k))
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(self.infer, mid, v, a, 2, start) for mid, v, a, start in jobs]
            responses = [f.result() for f in futures]
        for (mid, v, a, start), resp in zip(jobs, responses):
            with self.subTest(model=mid, start=start):
                self.check_response(resp, v, a, start)

    # ---- invalid requests

    def test_unknown_model(self):
        v, a = lstest.make_visual(1), lstest.make_audio([0])
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.infer, "nope", v, a, 1)

    def test_empty_model_id(self):
        v, a = lstest.make_visual(1), lstest.make_audio([0])
        self.assertRpcError(INVALID, self.infer, "", v, a, 1)

    def test_wrong_visual_length(self):
        v = lstest.make_visual(2).ravel()[:-5]  # 5 floats short
        a = lstest.make_audio([0, 0])
        e = self.assertRpcError(INVALID, self.infer, "demo", v, a, 2)
        self.assertIn(str(2 * VISUAL_PER_FRAME), e.details())
        self.assertIn(str(2 * VISUAL_PER_FRAME - 5), e.details())

    def test_wrong_audio_length(self):
        # Two windows for three frames: neither one per frame nor one shared.
        v = lstest.make_visual(3)
        a = lstest.make_audio([0, 0])
        e = self.assertRpcError(INVALID, self.infer, "demo", v, a, 3)
        self.assertIn(str(3 * AUDIO_PER_FRAME), e.details())
        self.assertIn(str(2 * AUDIO_PER_FRAME), e.details())

    def test_visual_for_fewer_frames_than_batch(self):
        v = lstest.make_visual(1)
        a = lstest.make_audio([0, 0])
        e = self.assertRpcError(INVALID, self.infer, "demo", v, a, 2)
        self.assertIn(str(2 * VISUAL_PER_FRAME), e.details())
        self.assertIn(str(VISUAL_PER_FRAME), e.details())

    def test_batch_zero(self):
        self.assertRpcError(INVALID, self.infer, "demo", None, None, 0)

    def test_batch_negative(self):
        v, a = lstest.make_visual(1), lstest.make_audio([0])
        self.assertRpcError(INVALID, self.infer, "demo", v, a, -1)

    def test_batch_above_default_max(self):
        # Default server.max_batch is 32; the batch check needs no tensors.
        e = self.assertRpcError(INVALID, self.infer, "demo", None, None, 33)
        self.assertIn("33", e.details())
        self.assertIn("32", e.details())

    def test_negative_start(self):
        v, a = lstest.make_visual(1), lstest.make_audio([0])
        self.assertRpcError(INVALID, self.infer, "demo", v, a, 1, start=-1)

    def test_nan_and_inf_inputs(self):
        v, a = lstest.make_visual(2), lstest.make_audio([0, 0])
        cases = []
        bad = v.copy()
        bad[1, 4, 100, 7] = np.nan
        cases.append(("NaN visual", bad, a))
        bad = a.copy()
        bad[0, 3, 2, 1] = np.nan
        cases.append(("NaN audio", v, bad))
        bad = a.copy()
        bad[1, 0, 0, 0] = np.inf
        cases.append(("Inf audio", v, bad))
        bad = v.copy()
        bad[0, 0, 0, 0] = -np.inf
        cases.append(("-Inf visual", bad, a))
        for name, vv, aa in cases:
            with self.subTest(name):
                self.assertRpcError(INVALID, self.infer, "demo", vv, aa, 2)
                self.assertRpcError(INVALID, self.infer_bytes, "demo", vv, aa, 2)

    # ---- management

    def test_health(self):
        h = self.stub.Health(self.pb2.HealthRequest(), timeout=10)
        self.assertTrue(h.healthy)
        self.assertEqual(h.status, "SERVING")
        self.assertEqual(h.configured_models, len(self.MODELS))
        self.assertGreaterEqual(h.loaded_models, 1)  # demo is preloaded
        self.assertTrue(h.version)

    def test_list_models(self):
        models = self.models_by_id()
        self.assertEqual(sorted(models), sorted(self.MODELS))
        states = {"unloaded", "loading", "loaded", "draining", "failed"}
        for mid, m in models.items():
            self.assertIn(m.state, states, mid)
            self.assertNotEqual(m.state, "failed", "%s: %s" % (mid, m.error))
        demo = models["demo"]
        self.assertEqual(demo.state, "loaded")
        self.assertTrue(demo.loaded)
        self.assertTrue(demo.preload)
        self.assertTrue(demo.model_path.endswith("demo.onnx"), demo.model_path)
        self.assertEqual([(t.name, list(t.shape)) for t in demo.inputs],
                         [("visual_input", [-1, 6, 320, 320]), ("audio_input", [-1, 32, 16, 16])])
        self.assertEqual([(t.name, list(t.shape)) for t in demo.outputs],
                         [("output", [-1, 3, 320, 320])])
        self.assertEqual(models["demo_pp"].num_frames, 5)

    def test_stats_usage_count(self):
        n = 3
        v, a = lstest.make_visual(2), lstest.make_audio([0.1, 0.2])
        for k in range(n):
            self.assertTrue(self.infer("demo_stats", v, a, 2, start=k).success)
        resp = self.stub.GetModelStats(self.pb2.GetModelStatsRequest(model_id=""), timeout=10)
        by_id = {m.model_id: m for m in resp.models}
        self.assertEqual(sorted(by_id), sorted(self.MODELS))
        st = by_id["demo_stats"].stats
        self.assertEqual(st.usage_count, n)
        self.assertGreater(st.avg_inference_ms, 0.0)
        self.assertGreaterEqual(st.load_count, 1)
        self.assertGreaterEqual(resp.total_requests, n)
        self.assertGreaterEqual(resp.loaded_models, 2)
        self.assertEqual(resp.max_models, 16)
        one = self.stub.GetModelStats(self.pb2.GetModelStatsRequest(model_id="demo_stats"),
                                      timeout=10)
        self.assertEqual([m.model_id for m in one.models], ["demo_stats"])
        self.assertEqual(one.models[0].stats.usage_count, n)

    def test_stats_unknown_model(self):
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.stub.GetModelStats,
                            self.pb2.GetModelStatsRequest(model_id="nope"), timeout=10)

    def test_load_unload(self):
        pb2 = self.pb2
        r = self.stub.LoadModel(pb2.LoadModelRequest(model_id="demo_b1"), timeout=60)
        self.assertTrue(r.success, r.error)
        m = self.models_by_id()["demo_b1"]
        self.assertEqual((m.state, m.loaded), ("loaded", True))
        self.assertEqual([(t.name, list(t.shape)) for t in m.inputs],
                         [("input", [1, 6, 320, 320]), ("audio", [1, 32, 16, 16])])
        r = self.stub.LoadModel(pb2.LoadModelRequest(model_id="demo_b1"), timeout=60)
        self.assertTrue(r.success and r.already_loaded, r)

        u = self.stub.UnloadModel(pb2.UnloadModelRequest(model_id="demo_b1"), timeout=60)
        self.assertTrue(u.success, u.error)
        self.assertEqual(u.state, "unloaded")
        m = self.models_by_id()["demo_b1"]
        self.assertEqual((m.state, m.loaded), ("unloaded", False))

        r = self.stub.LoadModel(pb2.LoadModelRequest(model_id="demo_b1"), timeout=60)
        self.assertTrue(r.success and not r.already_loaded, r)
        self.assertEqual(self.models_by_id()["demo_b1"].state, "loaded")

    def test_load_unload_unknown(self):
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.stub.LoadModel,
                            self.pb2.LoadModelRequest(model_id="nope"), timeout=10)
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.stub.UnloadModel,
                            self.pb2.UnloadModelRequest(model_id="nope"), timeout=10)

    def test_model_loaded_flag(self):
        v, a = lstest.make_visual(1), lstest.make_audio([0.3])
        first = self.infer("demo_lazy", v, a, 1, start=2)
        self.assertTrue(first.success)
        self.assertTrue(first.model_loaded, "first request of a model not preloaded")
        self.assertGreater(first.model_load_time_ms, 0.0)
        second = self.infer("demo_lazy", v, a, 1, start=3)
        self.assertFalse(second.model_loaded, "second request found the model loaded")
        self.check_response(second, v, a, 3, n_frames=5)


class TestBrokenModels(InferCheckMixin, lstest.ServerTestCase):
    """Broken models configured next to a good one: each fails its own
    requests with FAILED_PRECONDITION and is listed as failed with the cause,
    while `demo` keeps serving."""

    SERVER_OPTS = {"max_batch": 8}
    CAPACITY = {"max_models": 16}

    @classmethod
    def setUpClass(cls):
        d = os.path.join(lstest._tmp_root, "broken")
        os.makedirs(os.path.join(d, "empty_frames"), exist_ok=True)
        with open(os.path.join(d, "broken.onnx"), "wb") as f:
            f.write(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        rects = [list(r) for r in lstest.demo_rects()]
        rects[3] = [1150, 200, 1300, 350]  # x2 past the 1280-pixel frame
        with open(os.path.join(d, "rects_outside.json"), "w") as f:
            json.dump(rects, f)
        cls.MODELS = {
            "demo": demo_model_config("demo", preload=True),
            "bad_onnx": demo_model_config("demo", model_path=os.path.join(d, "broken.onnx")),
            "no_frames": demo_model_config("demo",
                                           background_dir=os.path.join(d, "empty_frames")),
            "rect_outside": demo_model_config(
                "demo", crop_rects_path=os.path.join(d, "rects_outside.json")),
            "too_many_frames": demo_model_config("demo", num_frames=60),
        }
        # What each model's error must mention (any one of the words).
        cls.CAUSES = {
            "bad_onnx": ["broken.onnx"],
            "no_frames": ["empty_frames", "no frame"],
            "rect_outside": ["outside", "1300", "rects_outside.json"],
            "too_many_frames": ["60"],
        }
        super().setUpClass()

    def _request_broken(self, mid):
        v, a = lstest.make_visual(1), lstest.make_audio([0.0])
        return self.assertRpcError(grpc.StatusCode.FAILED_PRECONDITION, self.infer, mid, v, a, 1)

    def test_broken_models_fail_precondition(self):
        for mid in self.CAUSES:
            with self.subTest(mid):
                e = self._request_broken(mid)
                self.assertTrue(e.details(), "empty details")
                # Again: still failed (within the retry back-off or after a retry).
                self._request_broken(mid)

    def test_list_models_shows_failed_with_cause(self):
        for mid in self.CAUSES:
            try:
                self.infer(mid, lstest.make_visual(1), lstest.make_audio([0.0]), 1)
            except grpc.RpcError:
                pass
        models = self.models_by_id()
        self.assertEqual(sorted(models), sorted(self.MODELS))
        self.assertEqual(models["demo"].state, "loaded")
        for mid, words in self.CAUSES.items():
            with self.subTest(mid):
                m = models[mid]
                self.assertEqual(m.state, "failed", m.error)
                self.assertFalse(m.loaded)
                self.assertTrue(m.error, "no error text")
                low = m.error.lower()
                self.assertTrue(any(w.lower() in low for w in words),
                                "%r names none of %r" % (m.error, words))
        self.assertIn("50", models["too_many_frames"].error)

    def test_demo_keeps_serving(self):
        for mid in self.CAUSES:
            try:
                self.infer(mid, lstest.make_visual(1), lstest.make_audio([0.0]), 1)
            except grpc.RpcError:
                pass
        v, a = lstest.make_visual(2), lstest.make_audio([0.5, -0.5])
        self.check_response(self.infer("demo", v, a, 2, start=3), v, a, 3)
        h = self.stub.Health(self.pb2.HealthRequest(), timeout=10)
        self.assertEqual(h.status, "SERVING")

    def test_max_batch_from_config(self):
        v9 = lstest.make_visual(9)
        a9 = lstest.make_audio([0.0] * 9)
        e = self.assertRpcError(INVALID, self.infer, "demo", v9, a9, 9)
        self.assertIn("9", e.details())
        self.assertIn("8", e.details())
        resp = self.infer("demo", v9[:8], a9[:8], 8, start=0)
        self.assertEqual(len(resp.composited_frames), 8)


if __name__ == "__main__":
    unittest.main()
