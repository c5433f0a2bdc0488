"""Shared helpers of the lipsyncd benchmarks (bench/*.py).

- paths: the source tree, the CMake build (LS_BUILD_DIR, default build/), the
  bench binaries ($LS_BUILD_DIR/bench) and a work folder for generated data
  ($LS_BUILD_DIR/bench/work: photos scaled to 1280x720, the 100-frame avatar,
  the U-Net; reused between runs, never committed);
- gRPC stubs generated at run time from proto/multitenant.proto with the two
  tensor fields declared `bytes` (same wire format as packed floats, and
  filled from numpy without a per-float conversion); the compact encodings
  (visual_frames_u8, visual_frames_f16, audio_features_f16) are `bytes`
  already (tensor_fields builds any of the three);
- Server: runs build/lipsyncd on a free loopback port with a config written
  into the work folder, waits for SERVING, stops it with SIGTERM;
- raw unary calls (pre-serialized request bytes in, response bytes out) so
  that client-side protobuf work stays out of the timed part;
- the photo: a real photograph from a Debian package, scaled to 1280x720;
- results: every bench writes RESULTS_DIR/<name>.json and prints
  "RATIO <name> <value>" lines that run_all.sh collects.
"""

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

SOURCE_DIR = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BUILD_DIR = os.path.abspath(os.environ.get("LS_BUILD_DIR") or os.path.join(SOURCE_DIR, "build"))
BENCH_BIN = os.path.join(BUILD_DIR, "bench")
WORK_DIR = os.path.join(BENCH_BIN, "work")
RESULTS_DIR = os.environ.get("LS_BENCH_RESULTS") or os.path.join(BENCH_BIN, "results")
LIPSYNCD = os.path.join(BUILD_DIR, "lipsyncd")
LIPSYNC_CLI = os.path.join(BUILD_DIR, "lipsync")
DEMO_DIR = os.path.join(BUILD_DIR, "demo")
DEMO_MODEL = os.path.join(DEMO_DIR, "models", "demo.onnx")
DEMO_FRAMES = os.path.join(DEMO_DIR, "avatar", "frames")
DEMO_RECTS = os.path.join(DEMO_DIR, "avatar", "crop_rects.json")

# A photograph (Canon EOS 350D, 1920x1200) from Debian's mate-backgrounds.
PHOTO = os.environ.get("LS_BENCH_PHOTO") or "/usr/share/backgrounds/mate/nature/Blinds.jpg"
EXTRA_PHOTOS = ["/usr/share/backgrounds/mate/nature/Storm.jpg",
                "/usr/share/backgrounds/mate/nature/Wood.jpg"]
FRAME_W, FRAME_H = 1280, 720
P = 320
VISUAL_PER_FRAME = 6 * P * P
AUDIO_PER_FRAME = 32 * 16 * 16
SERVICE = "/multitenant.MultiTenantLipSync/"
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 512 << 20),
                   ("grpc.max_send_message_length", 512 << 20)]

os.makedirs(WORK_DIR, exist_ok=True)
os.makedirs(RESULTS_DIR, exist_ok=True)


# ---------------------------------------------------------------- results

def save_result(name, data):
    with open(os.path.join(RESULTS_DIR, name + ".json"), "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)


def ratio_line(name, value, target, met):
    """The line run_all.sh greps: name, value, target, verdict (met may also
    be a string such as "INCONCLUSIVE")."""
    verdict = met if isinstance(met, str) else ("MET" if met else "NOT MET")
    print(f"RATIO {name} {value:.3f} target {target} {verdict}", flush=True)


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p / 100.0
    lo, hi = int(np.floor(k)), int(np.ceil(k))
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def p50(values):
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------- pinning

def pin_to(cpus):
    os.sched_setaffinity(0, set(cpus))


def all_cpus():
    return set(range(os.cpu_count() or 1))


# ---------------------------------------------------------------- photo

def photo_frame(path=PHOTO):
    """The photo cropped to 16:9 around its centre and scaled to 1280x720
    (INTER_AREA), BGR uint8 as OpenCV holds it."""
    import cv2
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"cannot read photo {path} (bench/run_all.sh installs mate-backgrounds)")
    h, w = img.shape[:2]
    if w * 9 > h * 16:
        cw, ch = h * 16 // 9, h
    else:
        cw, ch = w, w * 9 // 16
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    img = img[y0:y0 + ch, x0:x0 + cw]
    return cv2.resize(img, (FRAME_W, FRAME_H), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------- stubs

_stubs = None


def stubs():
    """(pb2, pb2_grpc) of proto/multitenant.proto with visual_frames and
    audio_features declared `bytes`."""
    global _stubs
    if _stubs:
        return _stubs
    src = open(os.path.join(SOURCE_DIR, "proto", "multitenant.proto")).read()
    new = re.sub(r"repeated float (visual_frames|audio_features) = (\d+);", r"bytes \1 = \2;", src)
    if new.count("bytes visual_frames =") != 1 or new.count("bytes audio_features =") != 1:
        raise SystemExit("proto/multitenant.proto: tensor fields not found")
    d = tempfile.mkdtemp(prefix="lsbench-proto-")
    with open(os.path.join(d, "multitenant.proto"), "w") as f:
        f.write(new)
    from grpc_tools import protoc
    if protoc.main(["protoc", f"-I{d}", f"--python_out={d}", f"--grpc_python_out={d}",
                    os.path.join(d, "multitenant.proto")]) != 0:
        raise SystemExit("grpc_tools.protoc failed")
    sys.path.insert(0, d)
    import multitenant_pb2
    import multitenant_pb2_grpc
    _stubs = (multitenant_pb2, multitenant_pb2_grpc)
    return _stubs


def tensors(batch, seed=0):
    """Deterministic inputs in [0, 1): visual bytes, audio bytes."""
    rng = np.random.default_rng(seed)
    v = rng.random(batch * VISUAL_PER_FRAME, dtype=np.float32)
    a = rng.random(batch * AUDIO_PER_FRAME, dtype=np.float32)
    return v.tobytes(), a.tobytes()


def request_bytes(model_id, batch, start, visual, audio):
    pb2, _ = stubs()
    return pb2.CompositeBatchRequest(model_id=model_id, visual_frames=visual, audio_features=audio,
                                     batch_size=batch, start_frame_idx=start).SerializeToString()


DTYPES = ("f32", "f16", "u8")


def tensor_fields(batch, dtype, seed=0):
    """The tensors of tensors(batch, seed) as request fields in one wire
    encoding: f32 (fields 2, 3), f16 (9, 10: binary16, 1/2 the bytes) or u8
    (visual as uint8 = round(v * 255) in field 8, audio binary16 in 10; what
    `lipsync --tensor-dtype u8` sends)."""
    v, a = tensors(batch, seed)
    if dtype == "f32":
        return {"visual_frames": v, "audio_features": a}
    vf = np.frombuffer(v, np.float32)
    a16 = np.frombuffer(a, np.float32).astype("<f2").tobytes()
    if dtype == "f16":
        return {"visual_frames_f16": vf.astype("<f2").tobytes(), "audio_features_f16": a16}
    if dtype == "u8":
        return {"visual_frames_u8": np.rint(vf * 255).astype(np.uint8).tobytes(), "audio_features_f16": a16}
    raise ValueError(dtype)


def request_bytes_fields(model_id, batch, start, fields):
    pb2, _ = stubs()
    return pb2.CompositeBatchRequest(model_id=model_id, batch_size=batch, start_frame_idx=start,
                                     **fields).SerializeToString()


# ---------------------------------------------------------------- server

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def yaml_config(models, server=None, capacity=None):
    """A lipsyncd config; models: {id: {key: value}} (paths absolute)."""
    lines = ["server:"]
    for k, v in (server or {}).items():
        lines.append(f"  {k}: {v}")
    if len(lines) == 1:
        lines.append("  max_message_mb: 256")
    if capacity:
        lines.append("capacity:")
        for k, v in capacity.items():
            lines.append(f"  {k}: {v}")
    lines.append("models:")
    for mid, kv in models.items():
        lines.append(f"  {mid}:")
        for k, v in kv.items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, str):
                v = json.dumps(v)
            lines.append(f"    {k}: {v}")
    return "\n".join(lines) + "\n"


class Server:
    """build/lipsyncd on 127.0.0.1:<free port>."""

    def __init__(self, name, config_text, ready_timeout=120.0):
        import grpc
        self.dir = os.path.join(WORK_DIR, "srv-" + name)
        os.makedirs(self.dir, exist_ok=True)
        self.config = os.path.join(self.dir, "config.yaml")
        with open(self.config, "w") as f:
            f.write(config_text)
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.dir, "server.log")
        self.log = open(self.log_path, "w")
        # Its own HTTP port too: the listener is on by default (8053), and
        # another lipsyncd on the machine must not make the benchmark fail.
        http_port = free_port()
        self.http = f"http://127.0.0.1:{http_port}"
        self.proc = subprocess.Popen([LIPSYNCD, "--config", self.config, "--listen", self.addr,
                                      "--http-listen", f"127.0.0.1:{http_port}", "--log-level", "warn"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.channel = grpc.insecure_channel(self.addr, options=CHANNEL_OPTIONS)
        pb2, _ = stubs()
        self._raw = {}
        deadline = time.time() + ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"lipsyncd exited with {self.proc.returncode}; see {self.log_path}:\n"
                                 + open(self.log_path).read()[-3000:])
            try:
                h = self.call("Health", pb2.HealthRequest(), pb2.HealthResponse, timeout=2)
                if h.status == "SERVING":
                    break
            except Exception:
                pass
            if time.time() > deadline:
                self.stop()
                raise SystemExit(f"lipsyncd not SERVING after {ready_timeout} s")
            time.sleep(0.05)

    def raw(self, method):
        """Unary callable: request bytes -> response bytes."""
        if method not in self._raw:
            self._raw[method] = self.channel.unary_unary(SERVICE + method)
        return self._raw[method]

    def call(self, method, req, resp_type, timeout=300):
        return resp_type.FromString(self.raw(method)(req.SerializeToString(), timeout=timeout))

    def infer_raw(self, body, timeout=300):
        """(latency s, response message) for a pre-serialized request."""
        pb2, _ = stubs()
        f = self.raw("InferBatchComposite")
        t0 = time.perf_counter()
        out = f(body, timeout=timeout)
        dt = time.perf_counter() - t0
        return dt, pb2.CompositeBatchResponse.FromString(out)

    def stats(self, model_id=""):
        pb2, _ = stubs()
        return self.call("GetModelStats", pb2.GetModelStatsRequest(model_id=model_id), pb2.GetModelStatsResponse)

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def minor_faults(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[7])

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        try:
            self.channel.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------- CLI bench

def cli_bench(addr, model_id, batch, requests, concurrency, warmup=2, per_thread=True, dtype=None, visual="client",
              fmt=None):
    """Run `lipsync bench` and parse its report (dtype: --tensor-dtype;
    visual: "client" sends a visual tensor, "server" sends audio only)."""
    cmd = [LIPSYNC_CLI, "--server", addr, "bench", model_id, "--batch", str(batch), "--requests",
           str(requests), "--concurrency", str(concurrency), "--warmup", str(warmup), "--visual", visual]
    if dtype:
        cmd += ["--tensor-dtype", dtype]
    if fmt:
        cmd += ["--format", fmt]
    if per_thread:
        cmd.append("--channel-per-thread")
    import resource
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    text = out.stdout
    r = {"cmd": " ".join(cmd[1:]), "output": text,
         "client_cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)}
    m = re.search(r"throughput ([\d.]+) requests/s, ([\d.]+) frames/s", text)
    r["requests_per_s"], r["frames_per_s"] = float(m.group(1)), float(m.group(2))
    m = re.search(r"latency ms p50 ([\d.]+), p90 ([\d.]+), p99 ([\d.]+), max ([\d.]+) \(mean ([\d.]+)\)", text)
    r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"], r["mean_ms"] = map(float, m.groups())
    m = re.search(r"errors\s+(\d+)", text)
    r["errors"] = int(m.group(1))
    # per-request latency - inference - composite (clients that report it)
    m = re.search(r"overhead .*p50 ([\d.]+) ms, ([\d.]+)% of latency", text)
    if m:
        r["overhead_p50_ms"], r["overhead_share_p50"] = float(m.group(1)), float(m.group(2)) / 100
    m = re.search(r"request\s+(\d+) bytes", text)
    if m:
        r["request_bytes"] = int(m.group(1))
    m = re.search(r"^\s*input\s+server-built.*p50 ([\d.]+) ms", text, re.M)
    if m:
        r["input_p50_ms"] = float(m.group(1))
    return r


def run_c_bench(args, pin=None):
    """Run a bench binary; returns (stdout text, parsed RESULT json)."""
    cmd = ([shutil.which("taskset"), "-c", pin] if pin is not None else []) + args
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    sys.stdout.write(out.stdout)
    sys.stdout.write(out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode})")
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return out.stdout, json.loads(line[7:])
    raise SystemExit(f"{' '.join(cmd)}: no RESULT line")


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model}
