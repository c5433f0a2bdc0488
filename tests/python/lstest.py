"""Shared helpers of lipsyncd's Python interop tests.

The tests talk to the real server binary through the real Python gRPC client:
  - stubs are generated at test time from proto/multitenant.proto into a
    temporary directory (nothing generated is committed);
  - LsServer writes a config into a temporary directory, starts $LIPSYNCD on
    a free port and stops it with SIGTERM, expecting exit code 0;
  - the expected output of every request is computed independently here:
    tools/demo_model.py gives the model's output in numpy, `composite` below
    pastes as the reference pipeline does (OpenCV's cv2.resize INTER_CUBIC,
    or a numpy bilinear for paste_interpolation: linear), and `server_visual`
    builds the visual input from an avatar frame with OpenCV, from the
    recipe in shared/DESIGN.md.

Environment (set by ctest, see CMakeLists.txt): LIPSYNCD, LIPSYNC_CLI,
LS_BUILD_DIR, LS_DEMO_DIR, LS_SOURCE_DIR. Outside ctest the binaries default
to build/ of the source tree.
"""

import atexit
import functools
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

SOURCE_DIR = os.environ.get("LS_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BUILD_DIR = os.environ.get("LS_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
DEMO_DIR = os.environ.get("LS_DEMO_DIR") or os.path.join(BUILD_DIR, "demo")
LIPSYNCD = os.environ.get("LIPSYNCD") or os.path.join(BUILD_DIR, "lipsyncd")
LIPSYNC_CLI = os.environ.get("LIPSYNC_CLI") or os.path.join(BUILD_DIR, "lipsync")

sys.path.insert(0, os.path.join(SOURCE_DIR, "tools"))
import demo_model  # noqa: E402  (the model's function, shared with gen_demo.py)
import pngio  # noqa: E402

P = demo_model.P
VISUAL_PER_FRAME = demo_model.VISUAL_CHANNELS * P * P
AUDIO_PER_FRAME = int(np.prod(demo_model.AUDIO_SHAPE))
FRAME_W, FRAME_H = 1280, 720
SERVICE = "multitenant.MultiTenantLipSync"
# A batch of 10 is 25 MB; the client must not be the one refusing it.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 256 << 20),
                   ("grpc.max_send_message_length", 256 << 20)]
# Sanitizer builds start and run several times slower.
SLOW = bool(os.environ.get("LS_SANITIZE"))
READY_TIMEOUT_S = 90.0 if SLOW else 20.0
RPC_TIMEOUT_S = 300.0 if SLOW else 60.0

_tmp_root = tempfile.mkdtemp(prefix="lstest-")
atexit.register(shutil.rmtree, _tmp_root, ignore_errors=True)


# ---------------------------------------------------------------- stubs

def _protoc(proto_dir, proto_name, out_dir, grpc_too):
    from grpc_tools import protoc
    args = ["grpc_tools.protoc", "-I" + proto_dir, "--python_out=" + out_dir]
    if grpc_too:
        args.append("--grpc_python_out=" + out_dir)
    args.append(proto_name)
    if protoc.main(args) != 0:
        raise RuntimeError("grpc_tools.protoc failed on %s" % os.path.join(proto_dir, proto_name))


@functools.lru_cache(maxsize=1)
def stubs():
    """(multitenant_pb2, multitenant_pb2_grpc), generated from the proto."""
    out = os.path.join(_tmp_root, "stubs")
    os.makedirs(out, exist_ok=True)
    _protoc(os.path.join(SOURCE_DIR, "proto"), "multitenant.proto", out, True)
    sys.path.insert(0, out)
    import multitenant_pb2
    import multitenant_pb2_grpc
    return multitenant_pb2, multitenant_pb2_grpc


@functools.lru_cache(maxsize=1)
def bytes_variant_pb2():
    """A variant of the proto declaring fields 2 and 3 as `bytes` (the
    client-side choice the API allows: same wire encoding as packed floats).

    It is generated under another file and package name: the wire format
    carries neither, and two files defining multitenant.CompositeBatchRequest
    cannot live in one protobuf descriptor pool. The method path stays
    /multitenant.MultiTenantLipSync/InferBatchComposite (see infer_bytes)."""
    with open(os.path.join(SOURCE_DIR, "proto", "multitenant.proto")) as f:
        text = f.read()
    for field, num in (("visual_frames", 2), ("audio_features", 3)):
        old = "repeated float %s = %d;" % (field, num)
        if old not in text:
            raise RuntimeError("proto no longer declares %r" % old)
        text = text.replace(old, "bytes %s = %d;" % (field, num))
    text = text.replace("package multitenant;", "package multitenant_bytes;")
    d = os.path.join(_tmp_root, "stubs_bytes")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "multitenant_bytes.proto"), "w") as f:
        f.write(text)
    _protoc(d, "multitenant_bytes.proto", d, False)
    sys.path.insert(0, d)
    import multitenant_bytes_pb2
    return multitenant_bytes_pb2


GRPC_PROTO_DIR = "/usr/share/grpc-proto"  # Debian's grpc-proto package


@functools.lru_cache(maxsize=None)
def grpc_proto_pb2(rel_path):
    """The _pb2 module of one of grpc-proto's files, e.g.
    "grpc/health/v1/health.proto", generated at test time. It is loaded from
    its file under a flat name: imported as a package, its "grpc" would
    shadow grpcio's."""
    out = os.path.join(_tmp_root, "grpc_proto")
    os.makedirs(out, exist_ok=True)
    _protoc(GRPC_PROTO_DIR, rel_path, out, False)
    stem = rel_path[:-len(".proto")]
    spec = importlib.util.spec_from_file_location(stem.replace("/", "_") + "_pb2",
                                                  os.path.join(out, stem + "_pb2.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- server

def free_port():
    """A port nobody listens on right now (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _yaml_value(v):
    if isinstance(v, (dict, list)):
        return json.dumps(v)  # JSON is YAML's flow style
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid YAML double-quoted scalar


def config_yaml(listen, server=None, capacity=None, models=None, extra_yaml=""):
    lines = ["server:", "  listen: %s" % _yaml_value(listen)]
    for k, v in (server or {}).items():
        lines.append("  %s: %s" % (k, _yaml_value(v)))
    if capacity:
        lines.append("capacity:")
        for k, v in capacity.items():
            lines.append("  %s: %s" % (k, _yaml_value(v)))
    lines.append("models:")
    for mid, opts in (models or {}).items():
        lines.append("  %s:" % mid)
        for k, v in opts.items():
            lines.append("    %s: %s" % (k, _yaml_value(v)))
    return "\n".join(lines) + "\n" + extra_yaml


def demo_model_config(which="demo", **overrides):
    """Config entry of a model served from the generated demo files."""
    onnx_name = {"demo": "demo.onnx", "demo_b1": "demo_b1.onnx"}[which]
    cfg = {
        "model_path": os.path.join(DEMO_DIR, "models", onnx_name),
        "background_dir": os.path.join(DEMO_DIR, "avatar", "frames"),
        "crop_rects_path": os.path.join(DEMO_DIR, "avatar", "crop_rects.json"),
    }
    cfg.update(overrides)
    return cfg


class LsServer:
    """One lipsyncd process with its own config, log and port."""

    def __init__(self, models, server=None, capacity=None, extra_yaml="", credentials=None,
                 metadata=None, args=(), http=None):
        """extra_yaml: sections appended verbatim (auth, tls, ...);
        credentials: grpc channel credentials for a TLS server (None = plaintext);
        metadata: sent with the start-up Health polls (e.g. an API key);
        http: keys of the http section besides listen."""
        self.dir = tempfile.mkdtemp(prefix="server-", dir=_tmp_root)
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        # The HTTP listener is on by default (port 8053): every server gets a
        # port of its own, so servers of concurrent test runs never collide.
        self.http_port = free_port()
        self.http_url = "http://127.0.0.1:%d" % self.http_port
        http_lines = ["http:", "  listen: %s" % _yaml_value("127.0.0.1:%d" % self.http_port)]
        for k, v in (http or {}).items():
            http_lines.append("  %s: %s" % (k, json.dumps(v) if isinstance(v, list) else _yaml_value(v)))
        extra_yaml = "\n".join(http_lines) + "\n" + extra_yaml
        self.credentials = credentials
        self.metadata = metadata
        self.args = list(args)  # extra lipsyncd command-line arguments
        self.config_path = os.path.join(self.dir, "config.yaml")
        # The tests switch models within milliseconds on purpose; the churn
        # guard (30 s by default) would refuse that. Tests of the guard set
        # min_residency_seconds themselves.
        capacity = dict(capacity or {})
        capacity.setdefault("min_residency_seconds", 0)
        with open(self.config_path, "w") as f:
            f.write(config_yaml(self.addr, server, capacity, models, extra_yaml))
        self.log_path = os.path.join(self.dir, "server.log")
        self.proc = None
        self.channel = None
        self.stub = None

    def start(self):
        if not os.access(LIPSYNCD, os.X_OK):
            raise unittest.SkipTest("server binary not built: %s" % LIPSYNCD)
        pb2, pb2_grpc = stubs()
        import grpc
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([LIPSYNCD, "--config", self.config_path] + self.args,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = None
        # Wait for the port to accept connections before making the channel:
        # a gRPC channel that failed to connect backs off for seconds.
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                break
            except OSError as e:
                last = "connect: %s" % e
                time.sleep(0.05)
        options = CHANNEL_OPTIONS + [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000)]
        if self.credentials is not None:
            options.append(("grpc.ssl_target_name_override", "localhost"))
            self.channel = grpc.secure_channel(self.addr, self.credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(self.addr, options=options)
        self.stub = pb2_grpc.MultiTenantLipSyncStub(self.channel)
        # Then poll Health until it says SERVING (preloads done), bounded.
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("lipsyncd exited with %d during start-up\n%s" %
                                     (self.proc.returncode, self.log_tail()))
            try:
                h = self.stub.Health(pb2.HealthRequest(), timeout=1.0, metadata=self.metadata)
                last = "%s healthy=%s" % (h.status, h.healthy)
                if h.status == "SERVING":
                    return self
            except grpc.RpcError as e:
                last = "%s: %s" % (e.code(), e.details())
            time.sleep(0.1)
        self.stop(check=False)
        raise AssertionError("lipsyncd not SERVING after %.0f s (last: %s)\n%s" %
                             (READY_TIMEOUT_S, last, self.log_tail()))

    def stop(self, check=True):
        """SIGTERM, wait; returns the exit code (asserted 0 when check)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=60 if SLOW else 20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._log.close()
                raise AssertionError("lipsyncd did not exit within 20 s of SIGTERM\n%s" %
                                     self.log_tail())
        self._log.close()
        self.proc = None
        if check and rc != 0:
            raise AssertionError("lipsyncd exited with %d after SIGTERM (expected 0)\n%s" %
                                 (rc, self.log_tail()))
        return rc

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no server log)"
        return "---- server log (last %d lines) ----\n%s\n----" % (
            n, "\n".join(lines[-n:]))


class ServerTestCase(unittest.TestCase):
    """One server per TestCase class: subclasses set MODELS (and optionally
    SERVER_OPTS / CAPACITY / HTTP_OPTS). A failing test prints the server's log tail."""

    MODELS = {}
    SERVER_OPTS = None
    CAPACITY = None
    HTTP_OPTS = None
    EXTRA_YAML = ""
    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = LsServer(cls.MODELS, cls.SERVER_OPTS, cls.CAPACITY, http=cls.HTTP_OPTS,
                              extra_yaml=cls.EXTRA_YAML).start()
        cls.pb2, _ = stubs()
        cls.stub = cls.server.stub

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            server, cls.server = cls.server, None
            server.stop(check=True)

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result else 0
        out = super().run(result)
        if result and self.server and len(result.failures) + len(result.errors) > before:
            sys.stderr.write("\n%s: %s\n" % (self.id(), self.server.log_tail()))
        return out

    # ---- RPC helpers

    def infer(self, model_id, visual, audio, batch, start=0, timeout=RPC_TIMEOUT_S):
        """InferBatchComposite with the proto's packed repeated floats."""
        req = self.pb2.CompositeBatchRequest(model_id=model_id, batch_size=batch,
                                             start_frame_idx=start)
        if visual is not None:
            req.visual_frames.extend(np.asarray(visual, np.float32).ravel().tolist())
        if audio is not None:
            req.audio_features.extend(np.asarray(audio, np.float32).ravel().tolist())
        return self.stub.InferBatchComposite(req, timeout=timeout)

    def infer_bytes(self, model_id, visual, audio, batch, start=0, timeout=RPC_TIMEOUT_S):
        """The same RPC with fields 2 and 3 sent as little-endian float32 bytes."""
        bpb2 = bytes_variant_pb2()
        req = bpb2.CompositeBatchRequest(
            model_id=model_id, batch_size=batch, start_frame_idx=start,
            visual_frames=np.asarray(visual, "<f4").tobytes(),
            audio_features=np.asarray(audio, "<f4").tobytes())
        call = self.server.channel.unary_unary(
            "/%s/InferBatchComposite" % SERVICE,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=self.pb2.CompositeBatchResponse.FromString)
        return call(req, timeout=timeout)

    def assertRpcError(self, code, fn, *args, **kwargs):
        """Call fn, expect a grpc.RpcError with `code`; return the error."""
        import grpc
        try:
            fn(*args, **kwargs)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), code, "details: %r" % e.details())
            return e
        self.fail("expected %s, the call succeeded" % code)

    def models_by_id(self):
        resp = self.stub.ListModels(self.pb2.ListModelsRequest(), timeout=RPC_TIMEOUT_S)
        return {m.model_id: m for m in resp.models}


# ---------------------------------------------------------------- demo avatar

@functools.lru_cache(maxsize=None)
def load_rects(path):
    """Crop rectangles of a crop-rects JSON (keyed or list form)."""
    with open(path) as f:
        obj = json.load(f)
    if isinstance(obj, dict):
        return [tuple(obj[str(i)]["rect"]) for i in range(len(obj))]
    return [tuple(r) for r in obj]


def demo_rects():
    return load_rects(os.path.join(DEMO_DIR, "avatar", "crop_rects.json"))


@functools.lru_cache(maxsize=None)
def demo_frame(idx):
    """Background frame idx of the demo avatar, decoded (H x W x 3 uint8)."""
    img = pngio.read_png(os.path.join(DEMO_DIR, "avatar", "frames", "frame_%04d.png" % idx))
    img.setflags(write=False)
    return img


def frame_index(k, n, order="loop"):
    """Background frame serving stream position k (>= 0)."""
    if order == "loop" or n == 1:
        return k % n
    period = 2 * (n - 1)
    i = k % period
    return period - i if i >= n else i


# ---------------------------------------------------------------- inputs

def make_visual(batch, phase=0.0):
    """Smooth synthetic visual input [N,6,320,320] in [0.15, 0.85]: gradients
    and slow waves that differ per frame and channel."""
    y = np.linspace(0.0, 1.0, P, dtype=np.float32).reshape(1, 1, P, 1)
    x = np.linspace(0.0, 1.0, P, dtype=np.float32).reshape(1, 1, 1, P)
    n = np.arange(batch, dtype=np.float32).reshape(batch, 1, 1, 1)
    c = np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1)
    v = (0.5 + 0.2 * np.sin(2 * np.pi * (x * (1 + c % 3) + 0.3 * n) + phase)
         * np.cos(np.pi * y * (1 + n % 2)) + 0.15 * (x - y))
    return v.astype(np.float32)


def make_audio(levels):
    """Audio windows [len(levels),32,16,16]: level + a zero-mean-ish ripple,
    so mean(window) ~ level drives the mouth openness."""
    levels = np.asarray(levels, dtype=np.float32).reshape(-1, 1, 1, 1)
    k = np.arange(AUDIO_PER_FRAME, dtype=np.float32).reshape(demo_model.AUDIO_SHAPE)
    ripple = 0.3 * np.sin(k * 0.37) * np.cos(k * 0.011)
    return (levels + ripple[None]).astype(np.float32)


# ---------------------------------------------------------------- compositing

def _axis(src_n, dst_n):
    """OpenCV INTER_LINEAR sampling along one axis: for each destination index
    the two source neighbours and the weight of the second."""
    d = np.arange(dst_n, dtype=np.float64)
    s = np.clip((d + 0.5) * src_n / dst_n - 0.5, 0.0, src_n - 1)
    i0 = np.floor(s).astype(np.int64)
    i1 = np.minimum(i0 + 1, src_n - 1)
    return i0, i1, s - i0


def resize_bilinear(img, out_h, out_w):
    """Bilinear resize of an H x W x C uint8 image, rounded to nearest."""
    h, w = img.shape[:2]
    y0, y1, fy = _axis(h, out_h)
    x0, x1, fx = _axis(w, out_w)
    a = img.astype(np.float64)
    fy = fy[:, None, None]
    rows = a[y0] * (1.0 - fy) + a[y1] * fy
    fx = fx[None, :, None]
    out = rows[:, x0] * (1.0 - fx) + rows[:, x1] * fx
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def resize(img, out_h, out_w, interp="cubic"):
    """The reference's resize: OpenCV INTER_CUBIC on 8-bit pixels, or the
    numpy bilinear above for interp "linear"."""
    if interp == "linear":
        return resize_bilinear(img, out_h, out_w)
    import cv2
    return cv2.resize(np.ascontiguousarray(img), (out_w, out_h), interpolation=cv2.INTER_CUBIC)


def server_visual(frame, rect, margin=4, mask=(5, 5, 310, 305), bgr=True, interp="cubic"):
    """The visual input the reference builds from an avatar frame (RGB
    H x W x 3 uint8) and its rectangle: crop, resize to (P+2m)^2, centre P^2
    = real crop, a copy with cv2.rectangle(mask) black = masked crop, planes
    in the model's channel order, /255. float32 [6, P, P]."""
    import cv2
    x1, y1, x2, y2 = rect
    crop = np.ascontiguousarray(frame[y1:y2, x1:x2])
    if bgr:
        crop = np.ascontiguousarray(crop[:, :, ::-1])
    c = P + 2 * margin
    big = cv2.resize(crop, (c, c), interpolation=cv2.INTER_CUBIC if interp == "cubic" else cv2.INTER_LINEAR)
    real = np.ascontiguousarray(big[margin:margin + P, margin:margin + P])
    masked = real.copy()
    cv2.rectangle(masked, tuple(int(v) for v in mask), (0, 0, 0), -1)
    planes = np.concatenate([real.transpose(2, 0, 1), masked.transpose(2, 0, 1)])
    return (planes.astype(np.float32) / np.float32(255.0)).astype(np.float32)


def pred_to_rgb8(pred, bgr=True):
    """Prediction planes [3,P,P] float -> P x P x 3 uint8 RGB, as the
    compositor converts it (clamp to [0,1], x255, round)."""
    v = np.floor(np.clip(pred, 0.0, 1.0).astype(np.float64) * 255.0 + 0.5).astype(np.uint8)
    v = v.transpose(1, 2, 0)
    return np.ascontiguousarray(v[:, :, ::-1] if bgr else v)


def composite(frame, rect, pred, margin=4, bgr=True, interp="cubic"):
    """The reference's paste: the crop rectangle as a (P+2m)^2 canvas of the
    resized background crop, the prediction over its centre, resized back
    into the rectangle. Returns a new frame."""
    x1, y1, x2, y2 = rect
    w, h = x2 - x1, y2 - y1
    c = P + 2 * margin
    canvas = resize(frame[y1:y2, x1:x2], c, c, interp)
    canvas[margin:margin + P, margin:margin + P] = pred_to_rgb8(pred, bgr)
    out = frame.copy()
    out[y1:y2, x1:x2] = resize(canvas, h, w, interp)
    return out


def expected_frames(visual, audio, start, n_frames, order="loop", rects=None, margin=4):
    """What a demo-model request must return: one RGB frame per batch item.
    audio may hold one window for all frames."""
    audio = np.asarray(audio, np.float32).reshape((-1,) + demo_model.AUDIO_SHAPE)
    batch = visual.shape[0] if visual is not None else audio.shape[0]
    if audio.shape[0] == 1 and batch > 1:
        audio = np.repeat(audio, batch, axis=0)
    rects = rects or demo_rects()
    if visual is None:  # the server builds it from the avatar's frames
        visual = np.stack([server_visual(demo_frame(frame_index(start + i, n_frames, order)),
                                         rects[frame_index(start + i, n_frames, order)], margin)
                           for i in range(audio.shape[0])])
        batch = visual.shape[0]
    preds = demo_model.predict(visual, audio)
    out = []
    for i in range(batch):
        fi = frame_index(start + i, n_frames, order)
        out.append((fi, composite(demo_frame(fi), rects[fi], preds[i], margin)))
    return out


def rect_mask(rect, h=FRAME_H, w=FRAME_W):
    m = np.zeros((h, w), dtype=bool)
    x1, y1, x2, y2 = rect
    m[y1:y2, x1:x2] = True
    return m


def decode_frame(png):
    """Decode one returned PNG and check it is 1280x720 8-bit RGB."""
    img, info = pngio.decode_png(png)
    if (info["width"], info["height"], info["color_type"]) != (FRAME_W, FRAME_H, 2):
        raise AssertionError("returned PNG is %dx%d colour type %d, expected 1280x720 RGB (2)"
                             % (info["width"], info["height"], info["color_type"]))
    return img


def compare_frame(got, want, rect, tol=2):
    """None if `got` matches `want`: bit-exact outside the rectangle, within
    +-tol inside; otherwise a description of the first differences."""
    if got.shape != want.shape:
        return "shape %r, expected %r" % (got.shape, want.shape)
    inside = rect_mask(rect, *got.shape[:2])
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16)).max(axis=2)
    problems = []
    bad_out = np.argwhere((diff > 0) & ~inside)
    if len(bad_out):
        y, x = bad_out[0]
        problems.append("%d pixels outside rect %r differ from the background, first at "
                        "(x=%d,y=%d): got %r want %r" % (len(bad_out), rect, x, y,
                                                         tuple(got[y, x]), tuple(want[y, x])))
    bad_in = np.argwhere((diff > tol) & inside)
    if len(bad_in):
        y, x = bad_in[np.argmax(diff[tuple(bad_in.T)])]
        problems.append("%d pixels inside rect %r differ by more than %d (max %d at "
                        "(x=%d,y=%d): got %r want %r)" % (len(bad_in), rect, tol, diff[y, x], x, y,
                                                         tuple(got[y, x]), tuple(want[y, x])))
    return "; ".join(problems) or None


def mouth_pixels(img, rect):
    """Number of open-mouth (dark red) pixels inside the rectangle: red well
    above green, green low. Skin, lips, hair and the sweater do not pass."""
    x1, y1, x2, y2 = rect
    c = img[y1:y2, x1:x2].astype(np.int32)
    r, g = c[:, :, 0], c[:, :, 1]
    return int(np.count_nonzero((r > 40) & (g < 50) & (r > 2.5 * g)))
