"""The standard gRPC health protocol (grpc.health.v1.Health) on the gRPC port.

The client stubs are generated at test time from Debian's grpc-proto
(lstest.grpc_proto_pb2) and called through plain channel methods, as a load
balancer or grpc_health_probe would. Service names: "" and
multitenant.MultiTenantLipSync are the server, a model id is that model
(NOT_SERVING once its load failed), anything else is NOT_FOUND (Check) or
SERVICE_UNKNOWN (Watch). Watch streams run on their own threads in the
server, at most sessions.max + 32 at once; a cancelled one frees its place; a server that
stops sends its watchers NOT_SERVING, then ends them with UNAVAILABLE, without
waiting for the drain grace period."""

import os
import queue
import shutil
import threading
import time
import unittest

import grpc

import lstest
from lstest import demo_model_config

SERVER_NAME = "multitenant.MultiTenantLipSync"
# The transport's stream places: sessions.max + 32 (main.c); the servers
# here set sessions.max to 1.
MAX_STREAMS = 33
SESSIONS_YAML = "sessions:\n  max: 1\n"


def health_pb2():
    return lstest.grpc_proto_pb2("grpc/health/v1/health.proto")


def check_fn(channel):
    pb = health_pb2()
    return channel.unary_unary("/grpc.health.v1.Health/Check",
                               request_serializer=pb.HealthCheckRequest.SerializeToString,
                               response_deserializer=pb.HealthCheckResponse.FromString)


def watch_fn(channel):
    pb = health_pb2()
    return channel.unary_stream("/grpc.health.v1.Health/Watch",
                                request_serializer=pb.HealthCheckRequest.SerializeToString,
                                response_deserializer=pb.HealthCheckResponse.FromString)


class Watcher:
    """A Watch call read by a thread into a queue, so a test can wait for the
    next status with a timeout. Items: a status name, or ("end", code)."""

    def __init__(self, channel, service):
        pb = health_pb2()
        self.names = pb.HealthCheckResponse.ServingStatus.Name
        self.call = watch_fn(channel)(pb.HealthCheckRequest(service=service),
                                      timeout=lstest.RPC_TIMEOUT_S * 2)
        self.items = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for msg in self.call:
                self.items.put(self.names(msg.status))
            self.items.put(("end", grpc.StatusCode.OK))
        except grpc.RpcError as e:
            self.items.put(("end", e.code()))

    def next(self, timeout=10.0):
        try:
            return self.items.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no Watch message within %.0f s" % timeout)

    def nothing_for(self, seconds):
        try:
            item = self.items.get(timeout=seconds)
        except queue.Empty:
            return True
        raise AssertionError("unexpected Watch message %r" % (item,))

    def cancel(self):
        self.call.cancel()
        self.thread.join(10)


class TestHealth(lstest.ServerTestCase):
    """Check and Watch against a server with a preloaded model, a lazy one, a
    broken one and one whose file a test removes and restores."""
    EXTRA_YAML = SESSIONS_YAML

    @classmethod
    def setUpClass(cls):
        d = os.path.join(lstest._tmp_root, "health_models")
        os.makedirs(d, exist_ok=True)
        cls.victim_path = os.path.join(d, "victim.onnx")
        cls.victim_backup = os.path.join(d, "victim.onnx.orig")
        shutil.copyfile(os.path.join(lstest.DEMO_DIR, "models", "demo.onnx"), cls.victim_path)
        shutil.copyfile(cls.victim_path, cls.victim_backup)
        broken = os.path.join(d, "broken.onnx")
        with open(broken, "wb") as f:
            f.write(b"this is not an ONNX model")
        cls.MODELS = {
            "demo": demo_model_config("demo", num_frames=5, preload=True),
            "lazy": demo_model_config("demo", num_frames=5),
            "broken": demo_model_config("demo", num_frames=5, model_path=broken),
            "victim": demo_model_config("demo", num_frames=5, model_path=cls.victim_path, preload=True),
        }
        super().setUpClass()
        cls.check_rpc = check_fn(cls.server.channel)
        cls.hpb = health_pb2()

    def check(self, service):
        resp = self.check_rpc(self.hpb.HealthCheckRequest(service=service), timeout=lstest.RPC_TIMEOUT_S)
        return self.hpb.HealthCheckResponse.ServingStatus.Name(resp.status)

    def load(self, model_id, force=False):
        return self.stub.LoadModel(self.pb2.LoadModelRequest(model_id=model_id, force_reload=force),
                                   timeout=lstest.RPC_TIMEOUT_S)

    # ---- Check

    def test_check_server(self):
        self.assertEqual(self.check(""), "SERVING")
        self.assertEqual(self.check(SERVER_NAME), "SERVING")

    def test_check_loaded_model(self):
        self.assertEqual(self.models_by_id()["demo"].state, "loaded")
        self.assertEqual(self.check("demo"), "SERVING")

    def test_check_unloaded_model_is_serving(self):
        # Not loaded yet, but the first request loads it.
        self.assertEqual(self.models_by_id()["lazy"].state, "unloaded")
        self.assertEqual(self.check("lazy"), "SERVING")

    def test_check_failed_model(self):
        self.assertRpcError(grpc.StatusCode.FAILED_PRECONDITION, self.load, "broken")
        self.assertEqual(self.models_by_id()["broken"].state, "failed")
        self.assertEqual(self.check("broken"), "NOT_SERVING")
        self.assertEqual(self.check(""), "SERVING")  # one broken model does not take the server down

    def test_check_unknown_name(self):
        for name in ("no_such_model", "grpc.health.v1.Nope", "bad name\n", "x" * 300):
            with self.subTest(name=name[:20]):
                e = self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.check, name)
                self.assertNotIn("\n", e.details())

    def test_check_malformed_request(self):
        raw = self.server.channel.unary_unary("/grpc.health.v1.Health/Check")
        self.assertRpcError(grpc.StatusCode.INVALID_ARGUMENT, raw, b"\xff\xff\xff", timeout=10)

    # ---- Watch

    def test_watch_server_and_model(self):
        for name in ("", SERVER_NAME, "demo"):
            with self.subTest(name=name):
                w = Watcher(self.server.channel, name)
                try:
                    self.assertEqual(w.next(), "SERVING")
                    w.nothing_for(0.6)  # no change, no message
                finally:
                    w.cancel()

    def test_watch_unknown_name_stays_open(self):
        w = Watcher(self.server.channel, "no_such_model")
        try:
            self.assertEqual(w.next(), "SERVICE_UNKNOWN")
            w.nothing_for(0.6)  # the call is not terminated
        finally:
            w.cancel()
        self.assertEqual(w.next(), ("end", grpc.StatusCode.CANCELLED))

    def test_watch_follows_a_model_that_fails_and_recovers(self):
        self.assertEqual(self.models_by_id()["victim"].state, "loaded")
        w = Watcher(self.server.channel, "victim")
        try:
            self.assertEqual(w.next(), "SERVING")
            # Its file disappears and a forced reload fails: NOT_SERVING.
            os.remove(self.victim_path)
            self.assertRpcError(grpc.StatusCode.FAILED_PRECONDITION, self.load, "victim", True)
            self.assertEqual(self.models_by_id()["victim"].state, "failed")
            self.assertEqual(w.next(), "NOT_SERVING")
            self.assertEqual(self.check("victim"), "NOT_SERVING")
            # The file comes back and a forced reload succeeds: SERVING again.
            shutil.copyfile(self.victim_backup, self.victim_path)
            self.load("victim", True)
            self.assertEqual(w.next(), "SERVING")
            self.assertEqual(self.check("victim"), "SERVING")
            w.nothing_for(0.5)
        finally:
            if not os.path.exists(self.victim_path):
                shutil.copyfile(self.victim_backup, self.victim_path)
            w.cancel()

    def test_watch_malformed_request(self):
        raw = self.server.channel.unary_stream("/grpc.health.v1.Health/Watch")
        with self.assertRaises(grpc.RpcError) as cm:
            list(raw(b"\xff\xff\xff", timeout=10))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_cancelled_watches_free_their_streams(self):
        """MAX_STREAMS watches fill the server's stream places; one more is
        RESOURCE_EXHAUSTED. Cancelled by the client, they free every place
        (new watches fit again) while Check and the unary API keep working."""
        channel = grpc.insecure_channel(self.server.addr)
        try:
            for round_ in range(2):
                watchers = self._open_all(channel)
                try:
                    extra = Watcher(channel, "")
                    item = extra.next()
                    self.assertEqual(item, ("end", grpc.StatusCode.RESOURCE_EXHAUSTED),
                                     "round %d: stream %d" % (round_, MAX_STREAMS + 1))
                    # Streams never occupy the unary workers.
                    self.assertEqual(self.check(""), "SERVING")
                    self.assertIn("demo", self.models_by_id())
                finally:
                    for w in watchers:
                        w.cancel()
                for w in watchers:
                    self.assertEqual(w.next(), ("end", grpc.StatusCode.CANCELLED))
        finally:
            channel.close()
        self.assertEqual(self.check(""), "SERVING")

    def _open_all(self, channel):
        """MAX_STREAMS watchers, each past its first message. The places of
        watches cancelled just before free up asynchronously: retry briefly."""
        deadline = time.monotonic() + 10
        watchers = []
        while len(watchers) < MAX_STREAMS:
            w = Watcher(channel, "demo")
            item = w.next()
            if item == "SERVING":
                watchers.append(w)
                continue
            self.assertEqual(item, ("end", grpc.StatusCode.RESOURCE_EXHAUSTED))
            if time.monotonic() > deadline:
                for x in watchers:
                    x.cancel()
                self.fail("only %d streams could be opened after the previous ones were cancelled"
                          % len(watchers))
            time.sleep(0.05)
        return watchers


class TestHealthWithAuth(lstest.ServerTestCase):
    """With tenant keys, the server's own status needs no key (probes carry
    none); a model's status is the model's business: its tenant's key."""

    KEY = "health-tenant-key-0123456789"

    @classmethod
    def setUpClass(cls):
        import hashlib
        cls.MODELS = {"mine": demo_model_config("demo", num_frames=5),
                      "theirs": demo_model_config("demo", num_frames=5)}
        extra = ("auth:\n  keys:\n    - name: t\n      sha256: \"%s\"\n      models: [mine]\n"
                 % hashlib.sha256(cls.KEY.encode()).hexdigest())
        cls.server = lstest.LsServer(cls.MODELS, extra_yaml=extra).start()
        cls.pb2, _ = lstest.stubs()
        cls.stub = cls.server.stub
        cls.hpb = health_pb2()
        cls.check_rpc = check_fn(cls.server.channel)

    def check(self, service, key=None):
        md = (("authorization", "Bearer " + key),) if key else None
        resp = self.check_rpc(self.hpb.HealthCheckRequest(service=service), timeout=30, metadata=md)
        return self.hpb.HealthCheckResponse.ServingStatus.Name(resp.status)

    def test_server_status_needs_no_key(self):
        self.assertEqual(self.check(""), "SERVING")
        self.assertEqual(self.check(SERVER_NAME), "SERVING")

    def test_model_status_needs_its_key(self):
        self.assertEqual(self.check("mine", self.KEY), "SERVING")
        self.assertRpcError(grpc.StatusCode.UNAUTHENTICATED, self.check, "mine")
        # Another tenant's model and a missing one read the same.
        a = self.assertRpcError(grpc.StatusCode.PERMISSION_DENIED, self.check, "theirs", self.KEY)
        b = self.assertRpcError(grpc.StatusCode.PERMISSION_DENIED, self.check, "absent", self.KEY)
        self.assertEqual(a.details().replace("theirs", "X"), b.details().replace("absent", "X"))


class TestWatchAtShutdown(unittest.TestCase):
    def test_stop_ends_watches_promptly(self):
        """SIGTERM: each watcher gets NOT_SERVING (the server is draining),
        then UNAVAILABLE; the server exits 0 long before its 30 s grace."""
        server = lstest.LsServer({"demo": demo_model_config("demo", num_frames=5, preload=True)},
                                 server={"drain_seconds": 30}).start()
        channel = grpc.insecure_channel(server.addr)  # server.stop closes its own channel
        try:
            watchers = [Watcher(channel, name) for name in ("", "demo", "unknown_model")]
            self.assertEqual([w.next() for w in watchers], ["SERVING", "SERVING", "SERVICE_UNKNOWN"])
            t0 = time.monotonic()
            rc = server.stop(check=False)
            took = time.monotonic() - t0
            self.assertEqual(rc, 0, server.log_tail())
            self.assertLess(took, 10 if lstest.SLOW else 5, "stop took %.1f s" % took)
            for w in watchers[:2]:
                self.assertEqual(w.next(), "NOT_SERVING", server.log_tail())
                self.assertEqual(w.next(), ("end", grpc.StatusCode.UNAVAILABLE), server.log_tail())
            self.assertEqual(watchers[2].next(), ("end", grpc.StatusCode.UNAVAILABLE), server.log_tail())
        finally:
            channel.close()
            server.stop(check=False)


if __name__ == "__main__":
    unittest.main()
