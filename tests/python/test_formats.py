"""Output formats: png (default), jpeg and raw RGB24, chosen per request
(output_format) or per model (output_format in the config).

raw must hold exactly the pixels the PNG holds; JPEG (lossy) must decode to
the right size and stay close to them; bad format names and qualities are
INVALID_ARGUMENT."""

import io
import unittest

import grpc
import numpy as np
from PIL import Image

import lstest
from lstest import demo_model_config


class TestFormats(lstest.ServerTestCase):
    MODELS = {
        "demo": demo_model_config("demo", num_frames=10, preload=True),
        "demo_jpeg": demo_model_config("demo", num_frames=10, output_format="jpeg", jpeg_quality=80),
    }

    def call(self, model, fmt="", quality=0, batch=2, start=3):
        bpb2 = lstest.bytes_variant_pb2()
        req = bpb2.CompositeBatchRequest(
            model_id=model, batch_size=batch, start_frame_idx=start, output_format=fmt, jpeg_quality=quality,
            visual_frames=lstest.make_visual(batch).astype("<f4").tobytes(),
            audio_features=lstest.make_audio([0.2, 0.9][:batch]).astype("<f4").tobytes())
        call = self.server.channel.unary_unary(
            "/multitenant.MultiTenantLipSync/InferBatchComposite",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=self.pb2.CompositeBatchResponse.FromString)
        return call(req, timeout=60)

    def test_raw_equals_png_pixels(self):
        png = self.call("demo", "png")
        raw = self.call("demo", "raw")
        self.assertEqual((raw.output_format, raw.frame_width, raw.frame_height), ("raw", 1280, 720))
        self.assertEqual(png.output_format, "png")
        for p, r in zip(png.composited_frames, raw.composited_frames):
            self.assertEqual(len(r), 1280 * 720 * 3)
            got = np.frombuffer(r, np.uint8).reshape(720, 1280, 3)
            np.testing.assert_array_equal(got, lstest.decode_frame(p))

    def test_jpeg_close_to_png_and_smaller(self):
        png = self.call("demo", "png")
        jpg = self.call("demo", "jpeg", quality=90)
        self.assertEqual(jpg.output_format, "jpeg")
        for p, j in zip(png.composited_frames, jpg.composited_frames):
            self.assertEqual(j[:2], b"\xff\xd8")
            img = np.asarray(Image.open(io.BytesIO(j)).convert("RGB"))
            self.assertEqual(img.shape, (720, 1280, 3))
            ref = lstest.decode_frame(p).astype(int)
            self.assertLess(np.abs(img.astype(int) - ref).mean(), 3.0)
            self.assertLess(len(j), len(p) / 2)

    def test_model_default_format_and_quality(self):
        r = self.call("demo_jpeg")
        self.assertEqual(r.output_format, "jpeg")
        q80 = sum(len(f) for f in r.composited_frames)
        q30 = sum(len(f) for f in self.call("demo_jpeg", quality=30).composited_frames)
        self.assertLess(q30, q80, "a request's jpeg_quality overrides the model's")
        self.assertEqual(self.call("demo_jpeg", "png").output_format, "png")

    def test_bad_format_and_quality(self):
        for fmt, q, needle in (("gif", 0, "output_format"), ("PNG", 0, "output_format"), ("jpeg", 101, "jpeg_quality"),
                               ("jpeg", -5, "jpeg_quality")):
            with self.assertRaises(grpc.RpcError) as cm:
                self.call("demo", fmt, q)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn(needle, cm.exception.details())


if __name__ == "__main__":
    unittest.main()
