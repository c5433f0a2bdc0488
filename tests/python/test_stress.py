"""Concurrency stress: 16 client threads against 7 models in a capacity of 3.

For LS_STRESS_SECONDS (default 20) the client threads send a random mix of
valid requests (random model, batch 1..3, random start) and invalid ones
(unknown model, bad batch, negative start, tensors of the wrong length),
while an admin thread unloads and loads models and a monitor thread reads
Health / GetModelStats / ListModels and checks the registry's invariants in
every snapshot. Afterwards:

  - only documented statuses occurred, each where it is possible (OK,
    NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE);
  - no call hung: every call returned before its deadline, the server still
    answers, nothing is left in flight, loading or draining;
  - the statistics add up. usage_count is counted when a request's lease is
    released (src/serve/registry.c ls_registry_release), whether it succeeded or
    not, so per model usage_count == successful requests + requests that
    failed after acquiring the model (here: only wrong tensor lengths, which
    the model checks after the lease is taken); those are failed_requests.
    Requests refused before (bad batch, capacity, draining) count nowhere;
  - a sample of the successful responses has exactly the expected pixels
    (each model serves a different frame count, so a response from the
    wrong model would show the wrong background frame);
  - the server exits 0 on SIGTERM.
"""

import collections
import os
import random
import threading
import time
import unittest

import grpc
import numpy as np

import lstest
from lstest import demo_model_config

SECONDS = float(os.environ.get("LS_STRESS_SECONDS", "20"))
CLIENTS = 16
CALL_TIMEOUT_S = 120.0 if lstest.SLOW else 30.0
MAX_MODELS = 3
# Different frame counts (and orders): a model's answer identifies it.
MODEL_FRAMES = {"st5": (5, "loop", "demo"), "st6": (6, "pingpong", "demo"),
                "st7": (7, "loop", "demo_b1"), "st8": (8, "loop", "demo"),
                "st9": (9, "pingpong", "demo_b1"), "st10": (10, "loop", "demo"),
                "st11": (11, "loop", "demo")}
IDS = sorted(MODEL_FRAMES)
SC = grpc.StatusCode
# What each kind of call may be answered.
ALLOWED = {
    "valid": {SC.OK, SC.RESOURCE_EXHAUSTED, SC.UNAVAILABLE},
    "unknown_model": {SC.NOT_FOUND},
    "bad_batch": {SC.INVALID_ARGUMENT},
    "negative_start": {SC.INVALID_ARGUMENT},
    # Checked by the model once it is acquired; before that the registry may
    # refuse it like any request.
    "wrong_length": {SC.INVALID_ARGUMENT, SC.RESOURCE_EXHAUSTED, SC.UNAVAILABLE},
    "load": {SC.OK, SC.RESOURCE_EXHAUSTED, SC.UNAVAILABLE},
    "unload": {SC.OK},
}
SAMPLES_PER_THREAD = 1


class TestStress(lstest.ServerTestCase):
    MODELS = {mid: demo_model_config(onnx, num_frames=n, frame_order=order)
              for mid, (n, order, onnx) in MODEL_FRAMES.items()}
    CAPACITY = {"max_models": MAX_MODELS, "eviction_policy": "lru"}
    SERVER_OPTS = {"worker_threads": 4}

    def setUp(self):
        self.lock = threading.Lock()
        self.outcomes = collections.Counter()   # (kind, model or "", code name)
        self.problems = []                      # descriptions of failures seen by threads
        self.samples = []                       # (model, batch, start, response)
        self.max_call_s = 0.0
        self.snapshots = 0
        bpb2 = lstest.bytes_variant_pb2()
        self.bpb2 = bpb2
        self.payloads = {b: (lstest.make_visual(b, phase=0.7 * b).astype("<f4").tobytes(),
                             lstest.make_audio(np.linspace(-1, 1, b)).astype("<f4").tobytes())
                         for b in (1, 2, 3, 4)}

    # ---- threads

    def record(self, kind, mid, code, elapsed):
        with self.lock:
            self.outcomes[(kind, mid, code.name)] += 1
            self.max_call_s = max(self.max_call_s, elapsed)
            if code not in ALLOWED[kind]:
                self.problems.append("%s on %r answered %s" % (kind, mid, code.name))

    def client(self, seed, channel, deadline):
        rng = random.Random(seed)
        call = channel.unary_unary(
            "/%s/InferBatchComposite" % lstest.SERVICE,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=self.pb2.CompositeBatchResponse.FromString)
        kept = 0
        while time.monotonic() < deadline:
            x = rng.random()
            mid = rng.choice(IDS)
            batch = rng.randint(1, 3)
            start = rng.randint(0, 10 ** 6)
            visual, audio = self.payloads[batch]
            if x < 0.80:
                kind = "valid"
            elif x < 0.85:
                kind, mid = "unknown_model", "nope%d" % rng.randint(0, 9)
            elif x < 0.90:
                kind = "bad_batch"
                batch = rng.choice([0, -1, 33, 1000])
            elif x < 0.93:
                kind, start = "negative_start", -rng.randint(1, 100)
            else:
                kind = "wrong_length"
                visual = self.payloads[batch + 1][0]  # one frame too many
            req = self.bpb2.CompositeBatchRequest(model_id=mid, batch_size=batch,
                                                  start_frame_idx=start,
                                                  visual_frames=visual, audio_features=audio)
            t0 = time.monotonic()
            try:
                resp = call(req, timeout=CALL_TIMEOUT_S)
                code = SC.OK
            except grpc.RpcError as e:
                resp, code = None, e.code()
            except Exception as e:  # noqa: BLE001 - reported, not swallowed
                with self.lock:
                    self.problems.append("%s on %r raised %r" % (kind, mid, e))
                continue
            self.record(kind, mid if kind != "unknown_model" else "", code,
                        time.monotonic() - t0)
            if resp is not None:
                if not resp.success or len(resp.composited_frames) != batch or \
                        any(not f.startswith(b"\x89PNG\r\n\x1a\n") for f in resp.composited_frames):
                    with self.lock:
                        self.problems.append("%s batch %d: success=%s, %d frames" % (
                            mid, batch, resp.success, len(resp.composited_frames)))
                elif kept < SAMPLES_PER_THREAD and batch >= 2:
                    kept += 1
                    with self.lock:
                        self.samples.append((mid, batch, start, resp))

    def admin(self, channel, deadline):
        """Unload (draining models in use) and load models now and then."""
        rng = random.Random(99)
        stub = lstest.stubs()[1].MultiTenantLipSyncStub(channel)
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.2, 0.6))
            mid = rng.choice(IDS)
            t0 = time.monotonic()
            if rng.random() < 0.7:
                kind = "unload"
                fn = lambda: stub.UnloadModel(self.pb2.UnloadModelRequest(model_id=mid),  # noqa: E731
                                              timeout=CALL_TIMEOUT_S)
            else:
                kind = "load"
                fn = lambda: stub.LoadModel(self.pb2.LoadModelRequest(model_id=mid),  # noqa: E731
                                            timeout=CALL_TIMEOUT_S)
            try:
                fn()
                code = SC.OK
            except grpc.RpcError as e:
                code = e.code()
            self.record(kind, mid, code, time.monotonic() - t0)

    def monitor(self, channel, deadline):
        """Invariants of every snapshot while the load runs."""
        stub = lstest.stubs()[1].MultiTenantLipSyncStub(channel)
        while time.monotonic() < deadline:
            try:
                st = stub.GetModelStats(self.pb2.GetModelStatsRequest(), timeout=CALL_TIMEOUT_S)
                h = stub.Health(self.pb2.HealthRequest(), timeout=CALL_TIMEOUT_S)
                lm = stub.ListModels(self.pb2.ListModelsRequest(), timeout=CALL_TIMEOUT_S)
            except grpc.RpcError as e:
                with self.lock:
                    self.problems.append("monitor: %s %s" % (e.code().name, e.details()))
                time.sleep(0.2)
                continue
            charged = sum(1 for m in st.models if m.state in ("loaded", "loading", "draining"))
            bad = []
            if st.loaded_models != charged:
                bad.append("loaded_models %d but %d models loaded/loading/draining"
                           % (st.loaded_models, charged))
            if st.loaded_models > MAX_MODELS:
                bad.append("loaded_models %d > max_models %d" % (st.loaded_models, MAX_MODELS))
            if any(m.state == "failed" for m in st.models):
                bad.append("a model failed: %s" % [(m.model_id, m.error) for m in st.models
                                                   if m.state == "failed"])
            if any(m.stats.in_flight < 0 for m in st.models):
                bad.append("negative in_flight")
            if st.total_requests != sum(m.stats.usage_count for m in st.models):
                bad.append("total_requests %d != sum of usage_count %d"
                           % (st.total_requests, sum(m.stats.usage_count for m in st.models)))
            if h.status != "SERVING" or h.configured_models != len(IDS):
                bad.append("health %s configured %d" % (h.status, h.configured_models))
            if sorted(m.model_id for m in lm.models) != IDS:
                bad.append("ListModels ids %s" % [m.model_id for m in lm.models])
            with self.lock:
                self.snapshots += 1
                self.problems.extend("monitor: " + b for b in bad)
            time.sleep(0.1)

    # ---- the test

    def test_stress(self):
        deadline = time.monotonic() + SECONDS
        # A few connections, as several client processes would have.
        options = lstest.CHANNEL_OPTIONS + [("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.insecure_channel(self.server.addr, options=options) for _ in range(4)]
        threads = [threading.Thread(target=self.client, args=(1000 + i, channels[i % 4], deadline),
                                    name="client%d" % i, daemon=True) for i in range(CLIENTS)]
        threads.append(threading.Thread(target=self.admin, args=(channels[0], deadline),
                                        name="admin", daemon=True))
        threads.append(threading.Thread(target=self.monitor, args=(channels[1], deadline),
                                        name="monitor", daemon=True))
        for t in threads:
            t.start()
        # A thread ends at most one call after the deadline; a call ends by its
        # own deadline. Anything longer is a hang.
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + CALL_TIMEOUT_S + 10)
        hung = [t.name for t in threads if t.is_alive()]
        for ch in channels:
            ch.close()
        self.assertEqual(hung, [], "client threads still blocked in a call")
        self.assertEqual(self.problems[:20], [], "%d problems" % len(self.problems))

        out = self.outcomes
        by_code = collections.Counter()
        for (kind, mid, code), n in out.items():
            by_code[code] += n
        summary = "outcomes: %s" % dict(sorted(by_code.items()))
        self.assertNotIn("DEADLINE_EXCEEDED", by_code, summary)
        self.assertGreater(by_code["OK"], 50, summary)
        self.assertGreater(by_code["INVALID_ARGUMENT"], 10, summary)
        self.assertGreater(by_code["NOT_FOUND"], 0, summary)
        self.assertGreaterEqual(self.snapshots, 2)
        self.assertLess(self.max_call_s, CALL_TIMEOUT_S)
        sys_msg = "%s; %d snapshots; longest call %.2f s" % (summary, self.snapshots,
                                                              self.max_call_s)
        print("\nstress %.0f s: %s" % (SECONDS, sys_msg))

        # The server answers and is idle.
        h = self.stub.Health(self.pb2.HealthRequest(), timeout=10)
        self.assertEqual(h.status, "SERVING")
        st = self.stub.GetModelStats(self.pb2.GetModelStatsRequest(), timeout=10)
        by_id = {m.model_id: m for m in st.models}
        for m in st.models:
            self.assertIn(m.state, ("loaded", "unloaded"), m.model_id)
            self.assertEqual(m.stats.in_flight, 0, m.model_id)
        self.assertLessEqual(st.loaded_models, MAX_MODELS)
        self.assertEqual(st.loaded_models, sum(1 for m in st.models if m.state == "loaded"))

        # The statistics add up, per model.
        for mid in IDS:
            ok = out[("valid", mid, "OK")]
            after_acquire = out[("wrong_length", mid, "INVALID_ARGUMENT")]
            s = by_id[mid].stats
            self.assertEqual((s.usage_count, s.failed_requests), (ok + after_acquire, after_acquire),
                             "%s: %d OK, %d failed after acquiring" % (mid, ok, after_acquire))
        self.assertEqual(st.total_requests, sum(m.stats.usage_count for m in st.models))
        self.assertEqual(st.total_loads, sum(m.stats.load_count for m in st.models))
        self.assertEqual(st.total_evictions, sum(m.stats.eviction_count for m in st.models))
        self.assertEqual(st.total_load_failures, 0)
        self.assertGreater(st.total_evictions, 0, "the capacity never filled up")

        # Pixels of a sample of the answers: 8, as many models as possible.
        rects = lstest.demo_rects()
        seen, picked = set(), []
        for smp in self.samples:
            if smp[0] not in seen:
                seen.add(smp[0])
                picked.append(smp)
        picked += [smp for smp in self.samples if smp not in picked]
        self.assertGreater(len(picked), 0)
        for mid, batch, start, resp in picked[:8]:
            n, order, _ = MODEL_FRAMES[mid]
            v = lstest.make_visual(batch, phase=0.7 * batch)
            a = lstest.make_audio(np.linspace(-1, 1, batch))
            want = lstest.expected_frames(v, a, start, n, order)
            for i, png in enumerate(resp.composited_frames):
                fi, expected = want[i]
                problem = lstest.compare_frame(lstest.decode_frame(png), expected, rects[fi])
                self.assertIsNone(problem, "%s start %d item %d (frame %d): %s"
                                  % (mid, start, i, fi, problem))

        # And it stops cleanly.
        server, type(self).server = self.server, None
        self.assertEqual(server.stop(check=False), 0, server.log_tail())


if __name__ == "__main__":
    unittest.main()
