"""The compact tensor encodings of CompositeBatchRequest (fields 8-10):
visual_frames_u8 (value/255), visual_frames_f16 and audio_features_f16
(IEEE binary16, little-endian).

A request in a compact encoding must produce exactly the frames of the
float32 request holding the values the server is documented to feed the
model: k/255 in float32 for uint8, the exact binary16 value for f16. The
float32 request itself is checked against the independent numpy model
(test_core's InferCheckMixin), so "identical" means "right". Mixing two
encodings of one tensor, wrong sizes and binary16 NaN/Inf are refused
with INVALID_ARGUMENT messages that name the field.
"""

import os
import subprocess
import tempfile
import unittest

import grpc
import numpy as np

import lstest
from lstest import RPC_TIMEOUT_S, SERVICE, demo_model_config
from test_core import InferCheckMixin

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def f16_bytes(x):
    return np.asarray(x, "<f2").tobytes()


class TestTensorEncodings(InferCheckMixin, lstest.ServerTestCase):
    MODELS = {"demo": demo_model_config("demo", preload=True)}

    def call(self, batch, start=0, **fields):
        """InferBatchComposite with the given tensor fields as bytes."""
        bpb2 = lstest.bytes_variant_pb2()
        req = bpb2.CompositeBatchRequest(model_id="demo", batch_size=batch, start_frame_idx=start, **fields)
        rpc = self.server.channel.unary_unary(
            "/%s/InferBatchComposite" % SERVICE,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=self.pb2.CompositeBatchResponse.FromString)
        return rpc(req, timeout=RPC_TIMEOUT_S)

    def assertSameFrames(self, resp, want_frames, label):
        self.assertTrue(resp.success, resp.error)
        self.assertEqual(len(resp.composited_frames), len(want_frames))
        for i, png in enumerate(resp.composited_frames):
            np.testing.assert_array_equal(lstest.decode_frame(png), want_frames[i],
                                          "%s: frame %d differs from the float32 request's" % (label, i))

    def test_u8_visual_equals_float32_of_k_over_255(self):
        v8 = np.rint(lstest.make_visual(3, phase=1.0) * 255).astype(np.uint8)
        v32 = v8.astype(np.float32) / np.float32(255)
        a = lstest.make_audio([0.8, -0.3, 0.4])
        ref = self.infer_bytes("demo", v32, a, 3, start=7)
        frames = self.check_response(ref, v32, a, 7)
        got = self.call(3, start=7, visual_frames_u8=v8.tobytes(), audio_features=a.astype("<f4").tobytes())
        self.assertSameFrames(got, frames, "u8 visual")
        # u8 visual with binary16 audio (what `lipsync --tensor-dtype u8` sends).
        a16 = a.astype(np.float16)
        ref = self.infer_bytes("demo", v32, a16.astype(np.float32), 3, start=7)
        got = self.call(3, start=7, visual_frames_u8=v8.tobytes(), audio_features_f16=f16_bytes(a16))
        self.assertSameFrames(got, [lstest.decode_frame(p) for p in ref.composited_frames], "u8 + f16 audio")

    def test_f16_equals_float32_of_the_same_values(self):
        # Values exactly representable in binary16, plus a few subnormals and
        # negative zero in the audio, which must survive exactly.
        v16 = lstest.make_visual(2, phase=2.0).astype(np.float16)
        a16 = lstest.make_audio([1.0, -0.6]).astype(np.float16)
        a16.reshape(-1)[:4] = np.array([2 ** -24, -(2 ** -20), 6.1e-5, -0.0], np.float16)
        v32, a32 = v16.astype(np.float32), a16.astype(np.float32)
        ref = self.infer_bytes("demo", v32, a32, 2, start=20)
        frames = self.check_response(ref, v32, a32, 20)
        got = self.call(2, start=20, visual_frames_f16=f16_bytes(v16), audio_features_f16=f16_bytes(a16))
        self.assertSameFrames(got, frames, "f16 visual + audio")
        # One shared audio window, binary16.
        ref1 = self.infer_bytes("demo", v32, a32[0], 2, start=20)
        got1 = self.call(2, start=20, visual_frames_f16=f16_bytes(v16), audio_features_f16=f16_bytes(a16[0]))
        self.assertSameFrames(got1, [lstest.decode_frame(p) for p in ref1.composited_frames], "f16, one window")

    def test_two_encodings_of_one_tensor_refused(self):
        v = lstest.make_visual(1)
        a = lstest.make_audio([0.5])
        v8 = np.rint(v * 255).astype(np.uint8).tobytes()
        cases = [
            ("visual_frames", "visual_frames_u8",
             dict(visual_frames=v.astype("<f4").tobytes(), visual_frames_u8=v8, audio_features=a.tobytes())),
            ("visual_frames_u8", "visual_frames_f16",
             dict(visual_frames_u8=v8, visual_frames_f16=f16_bytes(v), audio_features=a.tobytes())),
            ("audio_features", "audio_features_f16",
             dict(visual_frames_u8=v8, audio_features=a.astype("<f4").tobytes(), audio_features_f16=f16_bytes(a))),
        ]
        for f1, f2, fields in cases:
            with self.subTest(f1 + "+" + f2):
                e = self.assertRpcError(INVALID, self.call, 1, **fields)
                self.assertIn(f1, e.details())
                self.assertIn(f2, e.details())
                self.assertIn("at most one", e.details())

    def test_sizes_named_in_bytes(self):
        v8 = np.zeros(2 * lstest.VISUAL_PER_FRAME - 1, np.uint8)
        a = lstest.make_audio([0.1, 0.2])
        e = self.assertRpcError(INVALID, self.call, 2, visual_frames_u8=v8.tobytes(), audio_features=a.tobytes())
        self.assertIn("visual_frames_u8: expected batch_size 2 x 6x320x320 = 1228800 bytes, got 1228799",
                      e.details())
        v16 = np.zeros(lstest.VISUAL_PER_FRAME, np.float16)
        e = self.assertRpcError(INVALID, self.call, 2, visual_frames_f16=f16_bytes(v16),
                                audio_features=a.tobytes())
        self.assertIn("visual_frames_f16: expected batch_size 2 x 6x320x320 = 2457600 bytes, got 1228800",
                      e.details())
        v8 = np.zeros(2 * lstest.VISUAL_PER_FRAME, np.uint8)
        a16 = np.zeros(3 * lstest.AUDIO_PER_FRAME, np.float16)
        e = self.assertRpcError(INVALID, self.call, 2, visual_frames_u8=v8.tobytes(), audio_features_f16=f16_bytes(a16))
        self.assertIn("audio_features_f16: expected batch_size 2 x 8192 = 32768 bytes", e.details())
        self.assertIn("got 49152", e.details())
        e = self.assertRpcError(INVALID, self.call, 2, visual_frames_u8=v8.tobytes(),
                                audio_features_f16=f16_bytes(a16)[:-1])
        self.assertIn("audio_features_f16: expected IEEE binary16 data (a multiple of 2 bytes)", e.details())

    def test_f16_nan_and_inf_refused(self):
        v16 = lstest.make_visual(2).astype(np.float16)
        a16 = lstest.make_audio([0, 0]).astype(np.float16)
        bad_v = v16.copy()
        bad_v.reshape(-1)[123457] = np.inf
        e = self.assertRpcError(INVALID, self.call, 2, visual_frames_f16=f16_bytes(bad_v),
                                audio_features_f16=f16_bytes(a16))
        self.assertIn("visual_frames_f16[123457] is not finite", e.details())
        bad_a = a16.copy()
        bad_a.reshape(-1)[9000] = np.nan
        e = self.assertRpcError(INVALID, self.call, 2, visual_frames_f16=f16_bytes(v16),
                                audio_features_f16=f16_bytes(bad_a))
        self.assertIn("audio_features_f16[9000] is not finite", e.details())
        # The largest finite half is accepted.
        big = v16.copy()
        big.reshape(-1)[5] = np.float16(65504)
        r = self.call(2, visual_frames_f16=f16_bytes(big), audio_features_f16=f16_bytes(a16))
        self.assertTrue(r.success, r.error)

    def test_cli_tensor_dtype(self):
        """`lipsync infer --tensor-dtype` sends each encoding; the synthetic
        input (in [0, 1]) then gives frames within a few levels of f32's."""
        frames = {}
        for dtype in ("f32", "f16", "u8"):
            out = tempfile.mkdtemp(prefix="cli-%s-" % dtype, dir=self.server.dir)
            p = subprocess.run([lstest.LIPSYNC_CLI, "--server", self.server.addr, "infer", "demo", "--batch", "2",
                                "--start", "3", "--out", out, "--tensor-dtype", dtype],
                               capture_output=True, text=True, timeout=RPC_TIMEOUT_S)
            self.assertEqual(p.returncode, 0, p.stderr)
            frames[dtype] = []
            for k in (3, 4):
                with open(os.path.join(out, "frame_%06d.png" % k), "rb") as f:
                    frames[dtype].append(lstest.decode_frame(f.read()))
        for dtype in ("f16", "u8"):
            for k in range(2):
                diff = np.abs(frames[dtype][k].astype(int) - frames["f32"][k].astype(int)).max()
                self.assertLessEqual(diff, 8, "%s frame %d differs from f32 by %d levels" % (dtype, k, diff))
        p = subprocess.run([lstest.LIPSYNC_CLI, "--server", self.server.addr, "infer", "demo",
                            "--tensor-dtype", "f64"], capture_output=True, text=True, timeout=RPC_TIMEOUT_S)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--tensor-dtype: expected f32, f16 or u8", p.stderr)


if __name__ == "__main__":
    unittest.main()
