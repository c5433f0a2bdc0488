"""Several lipsyncd instances behind a real load balancer, for the scale-out
tests and benchmark (docs/SCALING.md).

Every process binds 127.0.0.1 on free ports: the balancer's config is
rendered from the committed template (deploy/haproxy.cfg or
deploy/nginx.conf) by tools/render_lb.py, exactly as scripts/run-cluster.sh
does for its fixed ports.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

import lstest

sys.path.insert(0, os.path.join(lstest.SOURCE_DIR, "tools"))
import render_lb  # noqa: E402

AUDIO_PER_FRAME = lstest.AUDIO_PER_FRAME


def balancer_binary(kind):
    path = shutil.which(kind) or ("/usr/sbin/" + kind if os.access("/usr/sbin/" + kind, os.X_OK) else None)
    if not path:
        raise unittest.SkipTest("%s not installed (scripts/setup.sh installs it)" % kind)
    return path


def avatar_models(n, num_frames=5, prefix="av"):
    """n avatars served from the demo files (few frames: cheap to load)."""
    enc = {"model_path": os.path.join(lstest.DEMO_DIR, "models", "demo_encoder.onnx")}
    return {"%s%02d" % (prefix, i): lstest.demo_model_config("demo", num_frames=num_frames, audio_encoder=enc)
            for i in range(n)}


class Balancer:
    """haproxy or nginx in the foreground, with a rendered config."""

    def __init__(self, kind, instances, template=None, edit=None):
        self.kind = kind
        self.dir = tempfile.mkdtemp(prefix="lb-", dir=lstest._tmp_root)
        self.grpc_port = lstest.free_port()
        self.http_port = lstest.free_port()
        self.addr = "127.0.0.1:%d" % self.grpc_port
        self.http_url = "http://127.0.0.1:%d" % self.http_port
        tpl = template or os.path.join(lstest.SOURCE_DIR, "deploy", "haproxy.cfg" if kind == "haproxy" else
                                       "nginx.conf")
        with open(tpl) as f:
            text = render_lb.render(f.read(), self.grpc_port, self.http_port,
                                    [("127.0.0.1", s.port, s.http_port) for s in instances])
        if edit:
            text = edit(text)
        self.config = os.path.join(self.dir, os.path.basename(tpl))
        with open(self.config, "w") as f:
            f.write(text)
        self.log_path = os.path.join(self.dir, "lb.log")
        self.proc = None

    def start(self):
        exe = balancer_binary(self.kind)
        if self.kind == "haproxy":
            cmd = [exe, "-db", "-f", self.config]
        else:
            cmd = [exe, "-p", self.dir, "-c", self.config, "-e", "stderr", "-g", "daemon off;"]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %d\n%s" % (self.kind, self.proc.returncode, self.log_tail()))
            try:
                socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1).close()
                socket.create_connection(("127.0.0.1", self.http_port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("%s not listening after 10 s\n%s" % (self.kind, self.log_tail()))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            # haproxy: SIGUSR1 is its soft stop, SIGTERM the hard one; nginx: SIGTERM is fast shutdown.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._log.close()
        self.proc = None

    def log_tail(self, n=30):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace").splitlines()[-n:]
        except OSError:
            return []


class Cluster:
    """n instances (one config, as run-cluster.sh) plus a balancer."""

    def __init__(self, n, models, kind="haproxy", server=None, capacity=None, edit=None):
        server = dict({"worker_threads": 2, "unready_grace_seconds": 2.5, "drain_seconds": 2}, **(server or {}))
        self.models = models
        self.instances = [lstest.LsServer(models, server=server, capacity=capacity) for _ in range(n)]
        self.kind = kind
        self.edit = edit
        self.lb = None
        self.channel = None
        self.stub = None

    def start(self):
        balancer_binary(self.kind)
        for s in self.instances:
            s.start()
        self.lb = Balancer(self.kind, self.instances, edit=self.edit).start()
        import grpc
        pb2, pb2_grpc = lstest.stubs()
        self.channel = grpc.insecure_channel(self.lb.addr, options=lstest.CHANNEL_OPTIONS)
        self.stub = pb2_grpc.MultiTenantLipSyncStub(self.channel)
        # Health checks must have seen every instance up before a test can
        # expect the hash to use all of them.
        time.sleep(1.2 if self.kind == "haproxy" else 0.1)
        return self

    def stop(self):
        if self.channel:
            self.channel.close()
            self.channel = None
        if self.lb:
            self.lb.stop()
        for s in self.instances:
            if s.proc is not None and s.proc.poll() is None:
                s.stop(check=False)
            elif s.proc is not None:
                s._log.close()
                s.proc = None
                if s.channel:
                    s.channel.close()
                    s.channel = None

    def infer(self, model_id, batch=1, start=0, stub=None, timeout=30, metadata=True):
        pb2, _ = lstest.stubs()
        audio = np.zeros(batch * AUDIO_PER_FRAME, np.float32)
        req = pb2.CompositeBatchRequest(model_id=model_id, batch_size=batch, start_frame_idx=start,
                                        audio_features=audio)
        md = [("x-model-id", model_id)] if metadata else None
        return (stub or self.stub).InferBatchComposite(req, metadata=md, timeout=timeout)

    def stats(self, inst):
        """{model_id: (loaded, load_count, usage_count, eviction_count)} of one instance, asked directly."""
        pb2, _ = lstest.stubs()
        r = inst.stub.GetModelStats(pb2.GetModelStatsRequest(model_id=""), timeout=10)
        return {m.model_id: (m.loaded, m.stats.load_count, m.stats.usage_count, m.stats.eviction_count)
                for m in r.models}

    def placement(self, alive=None):
        """{model_id: [instance indexes where it is loaded]} over the instances still running."""
        out = {m: [] for m in self.models}
        for k, inst in enumerate(self.instances):
            if alive is not None and k not in alive:
                continue
            for mid, (loaded, _, _, _) in self.stats(inst).items():
                if loaded:
                    out[mid].append(k)
        return out

    def log_tails(self):
        parts = ["---- %s log ----\n%s" % (self.kind, "\n".join(self.lb.log_tail() if self.lb else []))]
        for k, s in enumerate(self.instances):
            if s.proc is not None:
                parts.append("instance %d: %s" % (k, s.log_tail(15)))
        return "\n".join(parts)


class Load:
    """Background clients sending requests through the balancer until stopped;
    counts successes and failures (with the first errors kept)."""

    def __init__(self, cluster, ids, threads=1, batch=1, client_retries=0):
        """client_retries: UNAVAILABLE (or, from nginx, CANCELLED) answers
        re-sent by the client (what a gRPC retry policy does), counted in
        .retried."""
        self.cluster, self.ids, self.batch = cluster, list(ids), batch
        self.client_retries = client_retries
        self.ok = 0
        self.retried = 0
        self.failed = 0
        self.errors = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)]

    def _run(self, t):
        import grpc
        i = t
        while not self.stop_flag.is_set():
            mid = self.ids[i % len(self.ids)]
            i += 1
            try:
                for attempt in range(self.client_retries + 1):
                    try:
                        self.cluster.infer(mid, batch=self.batch, timeout=20)
                        break
                    except grpc.RpcError as e:
                        # UNAVAILABLE from the instance or the balancer; CANCELLED is how
                        # nginx reports a stream its upstream connection lost mid-call.
                        retryable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
                        if e.code() not in retryable or attempt == self.client_retries:
                            raise
                        with self.lock:
                            self.retried += 1
                with self.lock:
                    self.ok += 1
            except grpc.RpcError as e:
                with self.lock:
                    self.failed += 1
                    if len(self.errors) < 5:
                        self.errors.append("%s %s: %s" % (mid, e.code(), e.details()))

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=30)
