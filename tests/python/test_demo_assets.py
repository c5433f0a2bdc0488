"""Checks of the test machinery itself and of the generated demo assets; no
server needed.

  - the PNG reader/writer (tools/pngio.py) on every filter type;
  - the numpy compositing reference (lstest.composite) on cases whose answer
    is known without it, and against a direct per-pixel formula;
  - the generated ONNX models: declared names, shapes, opsets, and the graph
    evaluated op by op in numpy equals demo_model.predict (so the server's
    output can be checked against predict);
  - the generated avatar: 50 frames 1280x720, rectangles in both JSON forms,
    demo.yaml, and generation being deterministic.
"""

import os
import subprocess
import sys
import tempfile
import unittest
import zlib

import numpy as np

import lstest
from lstest import DEMO_DIR, FRAME_H, FRAME_W, P, demo_model, pngio


def _need_demo():
    if not os.path.exists(os.path.join(DEMO_DIR, "demo.yaml")):
        raise unittest.SkipTest("demo assets not generated: %s" % DEMO_DIR)


class TestPngCodec(unittest.TestCase):
    def test_roundtrip_every_filter(self):
        rng = np.random.default_rng(7)
        for shape in [(23, 37, 3), (9, 5, 4), (11, 13)]:
            img = rng.integers(0, 256, size=shape, dtype=np.uint8)
            for ftype in [0, 1, 2, 3, 4, "cycle"]:
                with self.subTest(shape=shape, filter=ftype):
                    got, info = pngio.decode_png(pngio.encode_png(img, filter_type=ftype))
                    self.assertEqual((info["width"], info["height"]), (shape[1], shape[0]))
                    np.testing.assert_array_equal(got.reshape(img.shape), img)

    def test_sub_filter_wraps_modulo_256(self):
        # A row whose running sum passes 255 several times.
        img = np.full((2, 40, 3), 250, dtype=np.uint8)
        img[:, ::3] = 7
        got, _ = pngio.decode_png(pngio.encode_png(img, filter_type=1))
        np.testing.assert_array_equal(got, img)

    def test_rejects_corruption(self):
        data = bytearray(pngio.encode_png(np.zeros((4, 4, 3), np.uint8)))
        bad_crc = bytearray(data)
        bad_crc[20] ^= 0xFF  # inside IHDR
        with self.assertRaises(pngio.PngError):
            pngio.decode_png(bytes(bad_crc))
        with self.assertRaises(pngio.PngError):
            pngio.decode_png(bytes(data[:-12]))  # no IEND
        with self.assertRaises(pngio.PngError):
            pngio.decode_png(b"GIF89a" + bytes(data[6:]))

    def test_rejects_short_image_data(self):
        # Valid chunks, but the pixel data lacks a row.
        good = pngio.encode_png(np.zeros((4, 4, 3), np.uint8))
        chunks = pngio.read_chunks(good)
        short = zlib.compress(b"\x00" + b"\x00" * 12)
        data = pngio.PNG_SIGNATURE + pngio._chunk(b"IHDR", chunks[0][1]) + \
            pngio._chunk(b"IDAT", short) + pngio._chunk(b"IEND", b"")
        with self.assertRaises(pngio.PngError):
            pngio.decode_png(data)


def _bilinear_pixel(img, out_h, out_w, dy, dx):
    """One destination pixel of an INTER_LINEAR resize, written out directly
    from the formula in src/media/compositor.h (no vectorisation, no sharing with
    lstest._axis)."""
    h, w = img.shape[:2]
    sy = min(max((dy + 0.5) * h / out_h - 0.5, 0.0), h - 1)
    sx = min(max((dx + 0.5) * w / out_w - 0.5, 0.0), w - 1)
    y0, x0 = int(sy), int(sx)
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    fy, fx = sy - y0, sx - x0
    top = img[y0, x0].astype(float) * (1 - fx) + img[y0, x1].astype(float) * fx
    bot = img[y1, x0].astype(float) * (1 - fx) + img[y1, x1].astype(float) * fx
    v = top * (1 - fy) + bot * fy
    return np.clip(np.floor(v + 0.5), 0, 255).astype(np.uint8)


class TestCompositorReference(unittest.TestCase):
    def test_resize_identity(self):
        img = np.random.default_rng(1).integers(0, 256, (17, 29, 3), dtype=np.uint8)
        np.testing.assert_array_equal(lstest.resize_bilinear(img, 17, 29), img)

    def test_resize_matches_formula(self):
        img = np.random.default_rng(2).integers(0, 256, (13, 11, 3), dtype=np.uint8)
        for oh, ow in [(31, 7), (5, 40), (13, 11), (2, 2)]:
            got = lstest.resize_bilinear(img, oh, ow)
            for dy in range(oh):
                for dx in range(ow):
                    np.testing.assert_array_equal(got[dy, dx],
                                                  _bilinear_pixel(img, oh, ow, dy, dx),
                                                  "size %dx%d at %d,%d" % (oh, ow, dy, dx))

    def test_margin0_constant_prediction_fills_rect(self):
        frame = np.random.default_rng(3).integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8)
        pred = np.empty((3, P, P), np.float32)
        pred[0], pred[1], pred[2] = 0.2, 0.4, 0.8  # B, G, R
        rect = (100, 50, 283, 229)
        out = lstest.composite(frame, rect, pred, margin=0)
        want_rgb = [round(0.8 * 255), round(0.4 * 255), round(0.2 * 255)]
        inside = lstest.rect_mask(rect)
        np.testing.assert_array_equal(out[inside], np.tile(want_rgb, (inside.sum(), 1)))
        np.testing.assert_array_equal(out[~inside], frame[~inside])

    def test_rgb_planes_option(self):
        pred = np.zeros((3, P, P), np.float32)
        pred[0] = 1.0
        frame = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
        rect = (0, 0, 10, 10)
        self.assertEqual(tuple(lstest.composite(frame, rect, pred, 0, bgr=True)[5, 5]), (0, 0, 255))
        self.assertEqual(tuple(lstest.composite(frame, rect, pred, 0, bgr=False)[5, 5]), (255, 0, 0))

    def test_margin4_keeps_background_at_the_border(self):
        # Background colour A, prediction colour B: the rectangle's outer
        # ring samples only the canvas margin (A); its centre only B.
        frame = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
        frame[:] = (10, 200, 30)
        pred = np.full((3, P, P), 1.0, np.float32)
        rect = (400, 300, 580, 480)  # 180 px: one output pixel spans ~1.8 canvas pixels
        out = lstest.composite(frame, rect, pred, margin=4)
        x1, y1, x2, y2 = rect
        self.assertEqual(tuple(out[y1, x1 + 90]), (10, 200, 30))
        self.assertEqual(tuple(out[y2 - 1, x1 + 90]), (10, 200, 30))
        self.assertEqual(tuple(out[y1 + 90, x1]), (10, 200, 30))
        np.testing.assert_array_equal(out[y1 + 4:y2 - 4, x1 + 4:x2 - 4], 255)
        # Between them, a blend of the two.
        edge = out[y1 + 2, x1 + 90].astype(int)
        self.assertTrue(np.all(edge >= (10, 200, 30)) and np.any(edge > (10, 200, 30)), edge)

    def test_frame_index(self):
        self.assertEqual([lstest.frame_index(k, 5, "pingpong") for k in range(10)],
                         [0, 1, 2, 3, 4, 3, 2, 1, 0, 1])
        self.assertEqual([lstest.frame_index(k, 50) for k in (0, 49, 50, 123)], [0, 49, 0, 23])
        self.assertEqual([lstest.frame_index(k, 1, "pingpong") for k in range(3)], [0, 0, 0])
        self.assertEqual([lstest.frame_index(k, 2, "pingpong") for k in range(4)], [0, 1, 0, 1])


def run_graph(model, feeds):
    """Evaluate an ONNX graph with numpy, op by op (onnx 1.12 has no reference
    evaluator and there is no onnxruntime Python package here). Only the ops
    the demo model uses; anything else fails the test, so a change to the
    graph cannot go unnoticed."""
    import onnx
    from onnx import helper, numpy_helper
    vals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    vals.update(feeds)
    for node in model.graph.node:
        x = [vals[n] for n in node.input]
        a = {at.name: helper.get_attribute_value(at) for at in node.attribute}
        op = node.op_type
        if op == "Cast":
            y = x[0].astype(onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[a["to"]])
        elif op == "ReduceMean":
            y = np.mean(x[0], axis=tuple(a["axes"]), keepdims=bool(a.get("keepdims", 1)),
                        dtype=np.float32)
        elif op in ("Add", "Sub", "Mul", "Div"):
            y = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                 "Div": np.divide}[op](x[0], x[1])
        elif op == "Sigmoid":
            with np.errstate(over="ignore"):
                y = (1.0 / (1.0 + np.exp(-x[0]))).astype(np.float32)
        elif op == "Slice":
            sl = [slice(None)] * x[0].ndim
            for s, e, ax in zip(x[1], x[2], x[3]):
                sl[int(ax)] = slice(int(s), int(e))
            y = x[0][tuple(sl)]
        elif op == "Clip":
            y = np.clip(x[0], x[1], x[2])
        else:
            raise AssertionError("run_graph: op %s not supported" % op)
        vals[node.output[0]] = y
    return [vals[o.name] for o in model.graph.output]


def _dims(value_info):
    return [d.dim_param if d.HasField("dim_param") else d.dim_value
            for d in value_info.type.tensor_type.shape.dim]


class TestDemoModels(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        _need_demo()
        import onnx
        cls.onnx = onnx
        cls.dyn = onnx.load(os.path.join(DEMO_DIR, "models", "demo.onnx"))
        cls.b1 = onnx.load(os.path.join(DEMO_DIR, "models", "demo_b1.onnx"))

    def test_checker(self):
        for m in (self.dyn, self.b1):
            self.onnx.checker.check_model(m, full_check=True)

    def test_declared_interface_dynamic(self):
        g = self.dyn.graph
        self.assertEqual(self.dyn.ir_version, 8)
        self.assertEqual([(o.domain, o.version) for o in self.dyn.opset_import], [("", 17)])
        self.assertEqual([(i.name, _dims(i)) for i in g.input],
                         [("visual_input", ["batch", 6, 320, 320]),
                          ("audio_input", ["batch", 32, 16, 16])])
        self.assertEqual([(o.name, _dims(o)) for o in g.output],
                         [("output", ["batch", 3, 320, 320])])
        for v in list(g.input) + list(g.output):
            self.assertEqual(v.type.tensor_type.elem_type, self.onnx.TensorProto.FLOAT)

    def test_declared_interface_fixed_batch(self):
        g = self.b1.graph
        self.assertEqual([(o.domain, o.version) for o in self.b1.opset_import], [("", 11)])
        self.assertEqual([(i.name, _dims(i)) for i in g.input],
                         [("input", [1, 6, 320, 320]), ("audio", [1, 32, 16, 16])])
        self.assertEqual([(o.name, _dims(o)) for o in g.output], [("output", [1, 3, 320, 320])])

    def test_shape_inference_agrees(self):
        inferred = self.onnx.shape_inference.infer_shapes(self.dyn, strict_mode=True)
        out = [v for v in inferred.graph.output][0]
        self.assertEqual(_dims(out), ["batch", 3, 320, 320])

    def test_small_files(self):
        for name in ("demo.onnx", "demo_b1.onnx"):
            size = os.path.getsize(os.path.join(DEMO_DIR, "models", name))
            self.assertLess(size, 3 << 20, name)

    def test_graph_equals_predict(self):
        visual = lstest.make_visual(3, phase=0.4)
        audio = lstest.make_audio([-2.0, 0.1, 1.7])
        want = demo_model.predict(visual, audio)
        (got,) = run_graph(self.dyn, {"visual_input": visual, "audio_input": audio})
        self.assertEqual(got.shape, (3, 3, P, P))
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
        for i in range(3):
            (got1,) = run_graph(self.b1, {"input": visual[i:i + 1], "audio": audio[i:i + 1]})
            np.testing.assert_allclose(got1[0], want[i], rtol=0, atol=2e-6)

    def test_function_depends_on_both_inputs(self):
        visual = lstest.make_visual(4)
        audio = lstest.make_audio([-1.5, -0.3, 0.4, 1.5])
        out = demo_model.predict(visual, audio)
        self.assertGreaterEqual(out.min(), 0.0)
        self.assertLessEqual(out.max(), 1.0)
        # Louder audio: a wider open mouth (more dark-red pixels).
        counts = [lstest.mouth_pixels(lstest.pred_to_rgb8(o), (0, 0, P, P)) for o in out]
        self.assertEqual(counts, sorted(counts))
        self.assertGreater(counts[-1], 3 * counts[0])
        # Away from the mouth the output is the real crop (channels 0..2) as
        # it came: the model changes the mouth only.
        np.testing.assert_array_equal(out[:, :, 0:150, :], visual[:, 0:3, 0:150, :])
        np.testing.assert_allclose(out[:, :, :, 0:80], visual[:, 0:3, :, 0:80], rtol=0, atol=1e-4)
        # Inside it, the mouth colour covers the crop.
        mouth = np.asarray(demo_model.MOUTH_BGR, np.float32)
        centre = out[-1, :, int(demo_model.MOUTH_CY), int(demo_model.MOUTH_CX)]
        np.testing.assert_allclose(centre, mouth, atol=0.02)
        # The other three channels (the masked crop) do not matter.
        v2 = visual.copy()
        v2[:, 3:] = 0.0
        np.testing.assert_array_equal(demo_model.predict(v2, audio), out)


class TestDemoAvatar(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        _need_demo()

    def test_frames(self):
        names = sorted(os.listdir(os.path.join(DEMO_DIR, "avatar", "frames")))
        self.assertEqual(names, ["frame_%04d.png" % i for i in range(50)])
        for i in range(50):
            img = lstest.demo_frame(i)
            self.assertEqual(img.shape, (FRAME_H, FRAME_W, 3))

    def test_rects(self):
        keyed = lstest.load_rects(os.path.join(DEMO_DIR, "avatar", "crop_rects.json"))
        plain = lstest.load_rects(os.path.join(DEMO_DIR, "avatar", "crop_rects_list.json"))
        self.assertEqual(keyed, plain)
        self.assertEqual(len(keyed), 50)
        for i, (x1, y1, x2, y2) in enumerate(keyed):
            self.assertEqual(x2 - x1, y2 - y1, "frame %d: square" % i)
            self.assertTrue(170 <= x2 - x1 <= 190, "frame %d side %d" % (i, x2 - x1))
            self.assertTrue(0 <= x1 and x2 <= FRAME_W and 0 <= y1 and y2 <= FRAME_H)
        moves = [max(abs(a - b) for a, b in zip(keyed[i], keyed[(i + 1) % 50])) for i in range(50)]
        self.assertTrue(all(0 < m <= 12 for m in moves), moves)

    def test_frames_differ_outside_rects(self):
        # The frame-order tests identify a frame by its pixels outside the
        # rectangle, so neighbouring frames must differ there.
        rects = lstest.demo_rects()
        for i in range(0, 49, 7):
            a, b = lstest.demo_frame(i), lstest.demo_frame(i + 1)
            outside = ~(lstest.rect_mask(rects[i]) | lstest.rect_mask(rects[i + 1]))
            self.assertGreater(np.count_nonzero((a != b).any(axis=2) & outside), 1000)

    def test_demo_yaml(self):
        path = os.path.join(DEMO_DIR, "demo.yaml")
        try:
            import yaml
        except ImportError:
            self.skipTest("python3-yaml not installed")
        with open(path) as f:
            cfg = yaml.safe_load(f)
        self.assertEqual(cfg["server"]["listen"], "0.0.0.0:50053")
        self.assertEqual(sorted(cfg["models"]), ["demo", "demo_b1"])
        self.assertTrue(cfg["models"]["demo"]["preload"])
        for mid, m in cfg["models"].items():
            for key in ("model_path", "background_dir", "crop_rects_path"):
                self.assertTrue(os.path.exists(os.path.join(DEMO_DIR, m[key])), (mid, key))
        self.assertTrue(cfg["models"]["demo_b1"]["model_path"].endswith("demo_b1.onnx"))

    def test_generation_is_deterministic(self):
        with tempfile.TemporaryDirectory() as d:
            subprocess.run([sys.executable, os.path.join(lstest.SOURCE_DIR, "tools", "gen_demo.py"),
                            "--out", d], check=True, stdout=subprocess.DEVNULL)
            for root, _, files in os.walk(d):
                for name in files:
                    rel = os.path.relpath(os.path.join(root, name), d)
                    with open(os.path.join(d, rel), "rb") as f1, \
                            open(os.path.join(DEMO_DIR, rel), "rb") as f2:
                        self.assertTrue(f1.read() == f2.read(),
                                        "%s differs from a fresh generation (stale build? "
                                        "rebuild the `demo` target)" % rel)


if __name__ == "__main__":
    unittest.main()
