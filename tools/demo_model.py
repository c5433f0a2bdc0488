"""The demo lip-sync model: its function, defined once, as an ONNX graph and
as numpy.

tools/gen_demo.py writes the ONNX files; tests/python import this module to
recompute, in numpy, what the server's ONNX Runtime session must produce.

Like a real model of the family, it changes only the mouth of the face crop
it is given and returns the rest of the crop as it came, so a composited
frame shows no box around the face. Per frame n (planes B, G, R, like models
trained on OpenCV images):

    m        = mean(audio[n])                                # 32x16x16 values
    open     = sigmoid(AUDIO_GAIN * (m - AUDIO_BIAS))        # 0 closed .. 1 open
    ry       = MOUTH_RY_MIN + MOUTH_RY_RANGE * open          # mouth half-height, px
    term     = ((x - MOUTH_CX) / MOUTH_RX)^2 + ((y - MOUTH_CY) / ry)^2
    mask     = sigmoid(MOUTH_SHARPNESS * (1 - term))         # soft ellipse
    real     = visual[n, 0:3]                                # the real face crop
    out[n]   = clip(real + mask * (MOUTH_BGR - real), 0, 1)

The masked copy (channels 3..5) is not read. The mouth's edge is a sigmoid a
few pixels wide, so the picture stays smooth under resampling.

The graph and `predict` perform the same float32 operations in the same
order, so they agree to a few float32 ulps.
"""


import numpy as np

P = 320                      # prediction side
VISUAL_CHANNELS = 6
AUDIO_SHAPE = (32, 16, 16)   # one audio window per frame

AUDIO_GAIN = 3.0
AUDIO_BIAS = 1.0             # a window mean of 0 (silence through the demo encoder, or the zero rows
                             # past the ends of speech) keeps the mouth closed
MOUTH_CX, MOUTH_CY = 160.0, 245.0
MOUTH_RX = 42.0
MOUTH_RY_MIN, MOUTH_RY_RANGE = 3.0, 33.0
MOUTH_SHARPNESS = 4.0
# Dark red of an open mouth, as B, G, R.
MOUTH_BGR = (0.08, 0.05, 0.28)


def _soft_ellipse(xx, yy, cx, cy, rx, ry, width=1.5):
    """1 inside the ellipse, 0 outside, with a sigmoid edge about `width`
    pixels wide.

    The signed distance to the rim is approximated by -f / |grad f| with
    f = (dx/rx)^2 + (dy/ry)^2 - 1: right near the rim, even for thin
    ellipses (a radial approximation would smear them along their long axis).
    Away from the rim that first-order estimate can fall far short for a thin
    ellipse (just above its long axis it sees only the short radius), so it is
    also bounded by the distance to the bounding box, which never exceeds
    the true distance: no faint streak runs along a thin ellipse's axis."""
    ux, uy = (xx - cx) / rx, (yy - cy) / ry
    f = ux * ux + uy * uy - 1.0
    grad = 2.0 * np.sqrt((ux / rx) ** 2 + (uy / ry) ** 2) + 1e-9
    d = -f / grad
    box_out = np.maximum(np.abs(xx - cx) - rx, np.abs(yy - cy) - ry)  # > 0 outside the box
    d = np.where(box_out > 0, np.minimum(d, -box_out), d)
    return 1.0 / (1.0 + np.exp(-np.clip(d / width, -60, 60)))


def _blend(img, mask, rgb):
    """Paint colour `rgb` over img (H x W x 3) with coverage mask (H x W)."""
    m = mask[:, :, None]
    return img * (1.0 - m) + np.asarray(rgb, dtype=np.float64) * m


def _mouth_grids():
    """The per-row and per-column constants of the mouth ellipse, shaped to
    broadcast: dy [1,1,P,1] = y - cy, dx2 [1,1,1,P] = ((x - cx) / rx)^2."""
    y = np.arange(P, dtype=np.float32)
    x = np.arange(P, dtype=np.float32)
    dy = (y - np.float32(MOUTH_CY)).reshape(1, 1, P, 1)
    dxn = (x - np.float32(MOUTH_CX)) / np.float32(MOUTH_RX)
    dx2 = (dxn * dxn).reshape(1, 1, 1, P)
    return dy.astype(np.float32), dx2.astype(np.float32)


def _sigmoid32(x):
    # Far from the mouth the logit is hugely negative: exp overflows to inf
    # and 1/(1+inf) = 0 is the right answer, so silence the warning.
    one = np.float32(1.0)
    with np.errstate(over="ignore"):
        return (one / (one + np.exp(-x))).astype(np.float32)


def mouth_openness(audio):
    """sigmoid(AUDIO_GAIN * (mean of each frame's window - AUDIO_BIAS)),
    float32 [N]."""
    a = np.asarray(audio, dtype=np.float32)
    a = a.reshape(a.shape[0], -1)
    m = a.mean(axis=1, dtype=np.float32)
    return _sigmoid32((m - np.float32(AUDIO_BIAS)) * np.float32(AUDIO_GAIN))


def predict(visual, audio):
    """The model's output for visual [N,6,320,320] and audio [N,32,16,16]
    (float32), as float32 [N,3,320,320] in [0,1], planes B, G, R."""
    visual = np.asarray(visual, dtype=np.float32)
    audio = np.asarray(audio, dtype=np.float32)
    n = visual.shape[0]
    if visual.shape[1:] != (VISUAL_CHANNELS, P, P):
        raise ValueError("visual must be [N,6,320,320], got %r" % (visual.shape,))
    if audio.shape != (n,) + AUDIO_SHAPE:
        raise ValueError("audio must be [%d,32,16,16], got %r" % (n, audio.shape))
    f32 = np.float32
    openness = mouth_openness(audio).reshape(n, 1, 1, 1)
    ry = openness * f32(MOUTH_RY_RANGE) + f32(MOUTH_RY_MIN)
    dy, dx2 = _mouth_grids()
    q = dy / ry
    term = dx2 + q * q
    mask = _sigmoid32((f32(1.0) - term) * f32(MOUTH_SHARPNESS))
    real = visual[:, 0:3]
    mouth = np.asarray(MOUTH_BGR, dtype=np.float32).reshape(1, 3, 1, 1)
    painted = real + mask * (mouth - real)
    return np.clip(painted, f32(0.0), f32(1.0)).astype(np.float32)


def build_model(batch=None, visual_name="visual_input", audio_name="audio_input",
                output_name="output", opset=17, ir_version=8):
    """The ONNX graph of `predict`.

    batch None declares a dynamic batch dimension named "batch"; an integer
    fixes it (real opset-11 exports are fixed at 1 and the server must split
    larger requests into chunks)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    bdim = "batch" if batch is None else int(batch)
    inputs = [
        helper.make_tensor_value_info(visual_name, TensorProto.FLOAT,
                                      [bdim, VISUAL_CHANNELS, P, P]),
        helper.make_tensor_value_info(audio_name, TensorProto.FLOAT, [bdim] + list(AUDIO_SHAPE)),
    ]
    outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [bdim, 3, P, P])]

    dy, dx2 = _mouth_grids()

    def scalar(name, value):
        return numpy_helper.from_array(np.array(value, dtype=np.float32), name)

    inits = [
        numpy_helper.from_array(np.asarray(MOUTH_BGR, dtype=np.float32).reshape(1, 3, 1, 1),
                                "mouth_bgr"),
        numpy_helper.from_array(dy, "mouth_dy"),
        numpy_helper.from_array(dx2, "mouth_dx2"),
        scalar("audio_gain", AUDIO_GAIN),
        scalar("audio_bias", AUDIO_BIAS),
        scalar("ry_range", MOUTH_RY_RANGE),
        scalar("ry_min", MOUTH_RY_MIN),
        scalar("sharpness", MOUTH_SHARPNESS),
        scalar("one", 1.0),
        scalar("zero", 0.0),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "slice_start"),
        numpy_helper.from_array(np.array([3], dtype=np.int64), "slice_end"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "slice_axis"),
    ]
    N = helper.make_node
    nodes = [
        # Mouth openness from the audio window: [N,1,1,1].
        N("ReduceMean", [audio_name], ["audio_mean"], axes=[1, 2, 3], keepdims=1),
        N("Sub", ["audio_mean", "audio_bias"], ["audio_centred"]),
        N("Mul", ["audio_centred", "audio_gain"], ["audio_logit"]),
        N("Sigmoid", ["audio_logit"], ["openness"]),
        N("Mul", ["openness", "ry_range"], ["ry_span"]),
        N("Add", ["ry_span", "ry_min"], ["ry"]),
        # Soft mouth ellipse: [N,1,P,1] rows broadcast against [1,1,1,P] columns.
        N("Div", ["mouth_dy", "ry"], ["q"]),
        N("Mul", ["q", "q"], ["q2"]),
        N("Add", ["mouth_dx2", "q2"], ["term"]),
        N("Sub", ["one", "term"], ["inside"]),
        N("Mul", ["inside", "sharpness"], ["mask_logit"]),
        N("Sigmoid", ["mask_logit"], ["mask"]),
        # The real crop (channels 0..2), the mouth painted over it.
        N("Slice", [visual_name, "slice_start", "slice_end", "slice_axis"], ["real"]),
        N("Sub", ["mouth_bgr", "real"], ["mouth_minus_real"]),
        N("Mul", ["mask", "mouth_minus_real"], ["mouth_delta"]),
        N("Add", ["real", "mouth_delta"], ["painted"]),
        N("Clip", ["painted", "zero", "one"], [output_name]),
    ]
    graph = helper.make_graph(nodes, "lipsyncd_demo", inputs, outputs, inits)
    model = helper.make_model(graph, producer_name="lipsyncd tools/gen_demo.py",
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    model.doc_string = ("lipsyncd demo lip-sync model: the input face crop with a mouth "
                        "that opens with the mean of the audio window (see tools/demo_model.py)")
    onnx.checker.check_model(model, full_check=True)
    return model


# ---------------------------------------------------------------- audio encoder

MEL_SHAPE = (1, 80, 16)      # one mel window: [1, 80 bins, 16 frames]
FEAT_DIM = 512
ENCODER_OFFSET = 4.0         # window mean of speech is about -1.9 .. -0.9, of silence -4 (the floor)
ENCODER_GAIN = 0.6


def encoder_weights():
    """[1, 512] float32 with mean exactly 1: a feature vector that varies
    along its 512 values but whose mean is the loudness term alone."""
    p = np.sin(np.arange(FEAT_DIM, dtype=np.float64) * 0.37)
    w = 1.0 + 0.5 * (p - p.mean())
    return w.astype(np.float32).reshape(1, FEAT_DIM)


def encode(mel_windows):
    """The demo audio encoder: mel windows [N, 1, 80, 16] (or [N, 80, 16])
    -> [N, 512] = ENCODER_GAIN * (mean(window) + ENCODER_OFFSET) * weights.
    Louder speech has a higher mel mean, so a higher feature mean, so
    (through the demo U-Net's mean of its window) a wider mouth; silence
    gives 0, like the zero rows past the ends of the speech: a closed
    mouth."""
    m = np.asarray(mel_windows, np.float32)
    m = m.reshape(m.shape[0], -1).mean(axis=1, dtype=np.float32)
    level = (m + np.float32(ENCODER_OFFSET)) * np.float32(ENCODER_GAIN)
    return (level[:, None] * encoder_weights()).astype(np.float32)


def build_encoder(opset=17, ir_version=8):
    """The ONNX graph of `encode`, input `mel` [batch, 1, 80, 16], output
    `audio_feature` [batch, 512] (the shape of the reference's ave encoder)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    N = helper.make_node
    inits = [
        numpy_helper.from_array(np.array(ENCODER_OFFSET, dtype=np.float32), "offset"),
        numpy_helper.from_array(np.array(ENCODER_GAIN, dtype=np.float32), "gain"),
        numpy_helper.from_array(encoder_weights(), "weights"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    nodes = [
        N("ReduceMean", ["mel"], ["mean"], axes=[1, 2, 3], keepdims=0),
        N("Add", ["mean", "offset"], ["shifted"]),
        N("Mul", ["shifted", "gain"], ["level"]),
        N("Unsqueeze", ["level", "axis1"], ["level2"]),
        N("Mul", ["level2", "weights"], ["audio_feature"]),
    ]
    graph = helper.make_graph(
        nodes, "lipsyncd_demo_encoder",
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch"] + list(MEL_SHAPE))],
        [helper.make_tensor_value_info("audio_feature", TensorProto.FLOAT, ["batch", FEAT_DIM])], inits)
    model = helper.make_model(graph, producer_name="lipsyncd tools/gen_demo.py",
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    model.doc_string = "lipsyncd demo audio encoder: loudness of the mel window (see tools/demo_model.py)"
    onnx.checker.check_model(model, full_check=True)
    return model
