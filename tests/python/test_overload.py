"""Overload and shutdown behaviour: a bounded queue answers RESOURCE_EXHAUSTED
at once; a per-model concurrency limit; a request whose deadline passed while
queued is not run; SIGTERM lets accepted requests finish, then exits 0."""

import re
import signal
import threading
import time
import unittest
import urllib.request

import grpc

import lstest
from lstest import demo_model_config

SLOW_BATCH = 32  # a request that keeps the single worker busy for a while
_slow = None


def slow_request():
    """A batch-32 request serialized once (bytes form): building it per call in
    Python would spread the calls out so much that they never overlap."""
    global _slow
    if _slow is None:
        _slow = lstest.bytes_variant_pb2().CompositeBatchRequest(
            model_id="MODEL", batch_size=SLOW_BATCH,
            visual_frames=lstest.make_visual(SLOW_BATCH).astype("<f4").tobytes(),
            audio_features=lstest.make_audio([0.5] * SLOW_BATCH).astype("<f4").tobytes()).SerializeToString()
    return _slow


def slow_caller(server, model):
    """A function sending the slow request for `model` (model ids of equal
    length keep the pre-serialized message valid: the id is patched in)."""
    pb2, _ = lstest.stubs()
    data = slow_request().replace(b"MODEL", model.encode()[:5].ljust(5, b"_"), 1)
    call = server.channel.unary_unary("/multitenant.MultiTenantLipSync/InferBatchComposite",
                                      request_serializer=lambda b: b,
                                      response_deserializer=pb2.CompositeBatchResponse.FromString)
    return lambda: call(data, timeout=120)


class Parallel:
    """Run calls on threads; collect (code, details, response)."""

    def __init__(self):
        self.results, self.threads = [], []
        self.lock = threading.Lock()

    def start(self, fn, *args):
        def run():
            try:
                r = (grpc.StatusCode.OK, "", fn(*args))
            except grpc.RpcError as e:
                r = (e.code(), e.details(), None)
            with self.lock:
                self.results.append(r)
        t = threading.Thread(target=run)
        t.start()
        self.threads.append(t)

    def join(self):
        for t in self.threads:
            t.join(120)
        return self.results


class TestQueueAndLimits(lstest.ServerTestCase):
    MODELS = {"slow1": demo_model_config("demo", num_frames=5, preload=True)}
    SERVER_OPTS = {"worker_threads": 1, "max_queue": 1, "max_batch": SLOW_BATCH}

    def usage(self, model):
        return self.stub.GetModelStats(self.pb2.GetModelStatsRequest(model_id=model), timeout=10).models[0] \
            .stats.usage_count

    def test_full_queue_rejected_at_once(self):
        p = Parallel()
        call = slow_caller(self.server, "slow1")
        for _ in range(6):
            p.start(call)
        res = p.join()
        codes = [r[0] for r in res]
        self.assertIn(grpc.StatusCode.OK, codes)
        busy = [r for r in res if r[0] == grpc.StatusCode.RESOURCE_EXHAUSTED]
        self.assertTrue(busy, "6 concurrent slow requests, 1 worker and a queue of 1: some must be refused")
        self.assertIn("max_queue", busy[0][1])
        self.assertEqual(set(codes), {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED})

    def test_expired_request_is_not_run(self):
        before = self.usage("slow1")
        p = Parallel()
        p.start(slow_caller(self.server, "slow1"))
        # Wait until the slow request holds the only worker. Asked over HTTP
        # (/metrics), which no gRPC worker serves: a gRPC call would queue
        # behind the very request it asks about.
        deadline = time.monotonic() + 30
        busy = False
        while time.monotonic() < deadline and not busy:
            text = urllib.request.urlopen(self.server.http_url + "/metrics", timeout=10).read().decode()
            busy = re.search(r'^lipsync_model_in_flight\{model="slow1"\} 1$', text, re.M) is not None
            time.sleep(0.002)
        self.assertTrue(busy, "the slow request never showed as in flight")
        v, a = lstest.make_visual(1), lstest.make_audio([0.5])
        with self.assertRaises(grpc.RpcError) as cm:
            self.infer_bytes("slow1", v, a, 1, timeout=0.05)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertEqual(p.join()[0][0], grpc.StatusCode.OK)
        time.sleep(0.3)  # let the worker reach (and skip) the expired call
        self.assertEqual(self.usage("slow1"), before + 1, "the expired request must not have run")


class TestModelLimit(lstest.ServerTestCase):
    MODELS = {"limit": demo_model_config("demo", num_frames=5, preload=True, max_concurrent_requests=1)}
    SERVER_OPTS = {"worker_threads": 4, "max_batch": SLOW_BATCH}

    def test_second_concurrent_request_refused(self):
        p = Parallel()
        call = slow_caller(self.server, "limit")
        for _ in range(4):
            p.start(call)
        res = p.join()
        limited = [r for r in res if r[0] == grpc.StatusCode.RESOURCE_EXHAUSTED]
        self.assertTrue(any(r[0] == grpc.StatusCode.OK for r in res))
        self.assertTrue(limited, [r[:2] for r in res])
        self.assertIn("max_concurrent_requests", limited[0][1])


class TestDrain(unittest.TestCase):
    def test_sigterm_finishes_accepted_requests(self):
        server = lstest.LsServer({"drain": demo_model_config("demo", num_frames=5, preload=True)},
                                 server={"max_batch": SLOW_BATCH, "worker_threads": 4}).start()
        pb2, _ = lstest.stubs()
        call = slow_caller(server, "drain")
        p = Parallel()
        for _ in range(3):
            p.start(call)
        # SIGTERM once the server is running at least one of them (under a
        # sanitizer the three may not overlap). Requests being served must
        # complete; a call gRPC had not handed to the server yet is refused
        # by gRPC's own shutdown (UNAVAILABLE, or CANCELLED for a stream that
        # was still arriving).
        deadline = time.monotonic() + 30
        running = 0
        while time.monotonic() < deadline and running == 0:
            st = server.stub.GetModelStats(pb2.GetModelStatsRequest(model_id="drain"), timeout=10).models[0]
            running = st.stats.in_flight
            time.sleep(0.002)
        self.assertGreaterEqual(running, 1)
        server.proc.send_signal(signal.SIGTERM)
        res = p.join()
        codes = [r[0] for r in res]
        self.assertGreaterEqual(codes.count(grpc.StatusCode.OK), running, [r[:2] for r in res])
        self.assertTrue(set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED},
                        [r[:2] for r in res])
        for r in res:
            if r[0] == grpc.StatusCode.OK:
                self.assertEqual(len(r[2].composited_frames), SLOW_BATCH)
        rc = server.proc.wait(30)
        server.proc = None
        server._log.close()
        self.assertEqual(rc, 0)


if __name__ == "__main__":
    unittest.main()
