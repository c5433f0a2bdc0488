#!/usr/bin/python3
"""Generate a realistic lip-sync benchmark model: an ONNX U-Net the size of a
production 2D lip-sync generator, with random (numpy) weights.

    /usr/bin/python3 bench/gen_unet.py --out build/bench/work/unet.onnx

Shape contract (what lipsyncd serves):
    visual_input [N, 6, 320, 320]  (real face crop + masked crop, 3 channels each)
    audio_input  [N, 32, 16, 16]   (one audio feature window per frame)
    output       [N, 3, 320, 320]  sigmoid, in [0, 1]
    opset 17, IR version 8, dynamic batch N.

Architecture (written for this benchmark): a depthwise-separable U-Net.
Every block is an inverted residual unit - 1x1 expand, ReLU, 3x3 depthwise
(stride 1 or 2), ReLU, 1x1 project - with a skip connection when the shapes
allow. The encoder halves the resolution five times (320 -> 10) while the
width goes 32 -> 512; an audio branch turns the 32x16x16 window into a 512 x
10 x 10 map (a stride-2, pad-3 convolution maps 16 to 10), which is
concatenated with the bottleneck and fused; the decoder upsamples (bilinear
Resize) and concatenates the encoder's skip at each level; a 1x1 convolution
and a sigmoid give the 3 output planes.

Size: the default widths give ~12 M parameters and ~10 GFLOP per frame
(FLOP = 2 x multiply-accumulate; the script prints both), the scale of the
published SyncTalk_2D 328 generator. Weights are He-scaled normal draws so
activations stay O(1) through the network (no denormals, no saturation):
the timing of a random-weight network equals a trained one's, only the
pictures are meaningless. Nothing generated is committed; bench/run_all.sh
builds the file at benchmark time. Needs only numpy and onnx (Debian's
python3-numpy, python3-onnx).
"""

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

P = 320
AUDIO = (32, 16, 16)


class Net:
    """Accumulates nodes and initializers, and counts parameters and MACs."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.params = 0
        self.macs = 0  # per frame
        self.n = 0

    def name(self, prefix):
        self.n += 1
        return f"{prefix}_{self.n}"

    def weight(self, shape, gain):
        fan_in = int(np.prod(shape[1:]))
        w = (self.rng.standard_normal(shape) * (gain / np.sqrt(fan_in))).astype(np.float32)
        nm = self.name("w")
        self.inits.append(numpy_helper.from_array(w, nm))
        self.params += w.size
        return nm

    def bias(self, c):
        b = (self.rng.standard_normal(c) * 0.01).astype(np.float32)
        nm = self.name("b")
        self.inits.append(numpy_helper.from_array(b, nm))
        self.params += c
        return nm

    def conv(self, x, cin, cout, hw, k=1, stride=1, pad=None, groups=1, relu=True, gain=None):
        """Conv (+ ReLU). hw = input side; returns (output, output side)."""
        pad = k // 2 if pad is None else pad
        out_hw = (hw + 2 * pad - k) // stride + 1
        gain = gain if gain is not None else (np.sqrt(2.0) if relu else 1.0)
        w = self.weight((cout, cin // groups, k, k), gain)
        b = self.bias(cout)
        y = self.name("conv")
        self.nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k], strides=[stride, stride],
                                           pads=[pad] * 4, group=groups))
        self.macs += out_hw * out_hw * cout * (cin // groups) * k * k
        if relu:
            r = self.name("relu")
            self.nodes.append(helper.make_node("Relu", [y], [r]))
            y = r
        return y, out_hw

    def ir(self, x, cin, cout, hw, stride=1, expand=2):
        """Inverted residual unit; skip connection when stride 1 and cin == cout."""
        mid = cin * expand
        h, _ = self.conv(x, cin, mid, hw, k=1)
        h, ohw = self.conv(h, mid, mid, hw, k=3, stride=stride, groups=mid)
        residual = stride == 1 and cin == cout
        h, _ = self.conv(h, mid, cout, ohw, k=1, relu=False, gain=0.5 if residual else 1.0)
        if residual:
            y = self.name("add")
            self.nodes.append(helper.make_node("Add", [x, h], [y]))
            h = y
        return h, ohw

    def stage(self, x, cin, cout, hw, stride, expand=2):
        """Two units: the first changes width / resolution, the second refines."""
        h, ohw = self.ir(x, cin, cout, hw, stride, expand)
        h, ohw = self.ir(h, cout, cout, ohw, 1, expand)
        return h, ohw

    def concat(self, a, b):
        y = self.name("cat")
        self.nodes.append(helper.make_node("Concat", [a, b], [y], axis=1))
        return y

    def up2(self, x):
        scales = self.name("scales")
        self.inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), scales))
        y = self.name("up")
        self.nodes.append(helper.make_node("Resize", [x, "", scales], [y], mode="linear",
                                           coordinate_transformation_mode="align_corners"))
        return y


def build(widths, dec, expand, seed):
    c0, c1, c2, c3, c4 = widths
    net = Net(seed)
    # encoder
    x1, s1 = net.ir("visual_input", 6, c0, P, 1, expand)           # 320
    x2, s2 = net.stage(x1, c0, c0, s1, 2, expand)                  # 160
    x3, s3 = net.stage(x2, c0, c1, s2, 2, expand)                  # 80
    x4, s4 = net.stage(x3, c1, c2, s3, 2, expand)                  # 40
    x5, s5 = net.stage(x4, c2, c3, s4, 2, expand)                  # 20
    x6, s6 = net.stage(x5, c3, c4, s5, 2, expand)                  # 10
    # audio branch: 32 x 16 x 16 -> c4 x 10 x 10
    a, ah = net.conv("audio_input", AUDIO[0], c2, AUDIO[1], k=3)
    a, ah = net.ir(a, c2, c2, ah, 1, expand)
    a, ah = net.conv(a, c2, c3, ah, k=3)
    a, ah = net.ir(a, c3, c3, ah, 1, expand)
    a, ah = net.conv(a, c3, c4, ah, k=3, stride=2, pad=3)
    assert ah == s6, (ah, s6)
    a, ah = net.ir(a, c4, c4, ah, 1, expand)
    a, ah = net.ir(a, c4, c4, ah, 1, expand)
    # fuse
    f = net.concat(x6, a)
    f, fs = net.stage(f, 2 * c4, c4, s6, 1, expand)
    f, fs = net.stage(f, c4, c3, fs, 1, expand)
    # decoder
    d1, d2, d3, d4, d5 = dec
    u, us = net.stage(net.concat(net.up2(f), x5), c3 + c3, d1, s5, 1, expand)   # 20
    u, us = net.stage(net.concat(net.up2(u), x4), d1 + c2, d2, s4, 1, expand)   # 40
    u, us = net.stage(net.concat(net.up2(u), x3), d2 + c1, d3, s3, 1, expand)   # 80
    u, us = net.stage(net.concat(net.up2(u), x2), d3 + c0, d4, s2, 1, expand)   # 160
    u, us = net.stage(net.concat(net.up2(u), x1), d4 + c0, d5, s1, 1, expand)   # 320
    # upsampling is not counted in MACs (a few multiplies per output value)
    o, _ = net.conv(u, d5, 3, us, k=1, relu=False)
    net.nodes.append(helper.make_node("Sigmoid", [o], ["output"]))
    return net


def make_model(net):
    n = "N"
    graph = helper.make_graph(
        net.nodes, "lipsync_unet_bench",
        [helper.make_tensor_value_info("visual_input", TensorProto.FLOAT, [n, 6, P, P]),
         helper.make_tensor_value_info("audio_input", TensorProto.FLOAT, [n, *AUDIO])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [n, 3, P, P])],
        initializer=net.inits)
    model = helper.make_model(graph, producer_name="lipsyncd-bench",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


DEFAULT_WIDTHS = "32,64,128,256,512"
DEFAULT_DEC = "128,64,32,32,16"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--widths", default=DEFAULT_WIDTHS, help="encoder widths, 5 values")
    ap.add_argument("--dec", default=DEFAULT_DEC, help="decoder widths, 5 values")
    ap.add_argument("--expand", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count-only", action="store_true")
    args = ap.parse_args()
    widths = [int(v) for v in args.widths.split(",")]
    dec = [int(v) for v in args.dec.split(",")]
    net = build(widths, dec, args.expand, args.seed)
    info = {"params": net.params, "macs_per_frame": net.macs, "gflop_per_frame": 2 * net.macs / 1e9}
    print(f"unet: {net.params / 1e6:.2f} M parameters, {net.macs / 1e9:.2f} G multiply-adds "
          f"= {2 * net.macs / 1e9:.2f} GFLOP per frame, {len(net.nodes)} nodes")
    if args.count_only:
        return 0
    model = make_model(net)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, args.out)
    with open(args.out + ".json", "w") as f:
        import json
        json.dump(info, f)
    print(f"unet: wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
