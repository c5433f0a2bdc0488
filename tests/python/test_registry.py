"""The model registry seen through the real server and the Python gRPC client.

Capacity, eviction policies (LRU, lfu_count; lfu's frequency score), idle unload, config pins, capacity
exhaustion, draining, the memory limit and shared ONNX Runtime sessions. The
policy tests replay a request sequence against a small Python model of the
policy (PolicyModel below, written from src/serve/registry.h) and check after every
step that ListModels and GetModelStats report exactly what it predicts.

Facts of src/serve/registry.c the model relies on:
  - usage_count is counted when a request's lease is released, for failed
    requests too (post-acquire failures), and never reset: it survives
    evictions and reloads (LFU keeps its history).
  - A model's "last activity" is max(last use, last load), so a model loaded
    by LoadModel and not used yet is as recent as its load.
  - LRU evicts the oldest activity; lfu_count (the described system's LFU)
    the lowest usage_count, ties by oldest activity. Config-pinned models are
    never victims. (lfu's decaying score depends on the clock, so it is
    tested in tests/test_registry.c with an injected one; here only its
    reporting.) The servers run with the churn guard off (lstest).
  - An explicit UnloadModel is not an eviction.
"""

import random
import re
import threading
import time
import unittest
import urllib.request

import grpc
import numpy as np

import lstest
from lstest import demo_model_config

# What the registry charges per frame: the raw RGB frame, plus its 8-bit
# server-built visual input (6 x 320 x 320), which visual_input.cache: auto
# keeps for 1280x720 frames.
FRAME_BYTES = lstest.FRAME_W * lstest.FRAME_H * 3 + 6 * lstest.P * lstest.P
RE = grpc.StatusCode.RESOURCE_EXHAUSTED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
TIMEOUT = lstest.RPC_TIMEOUT_S


# ---------------------------------------------------------------- inputs

_inputs = {}


def inputs(batch):
    """(visual, audio) of a batch, computed once per batch size."""
    if batch not in _inputs:
        _inputs[batch] = (lstest.make_visual(batch, phase=0.1 * batch),
                          lstest.make_audio(np.linspace(-1.0, 1.0, batch)))
    return _inputs[batch]


# ---------------------------------------------------------------- policy model

class PolicyModel:
    """What the registry must do for a sequence of one-at-a-time calls.

    Only the count limit is modelled (the tests' memory limit is far above
    what their models use). A logical clock orders loads and uses the way the
    registry's monotonic clock does for sequential calls."""

    def __init__(self, ids, max_models, policy, pinned=(), preloaded=()):
        assert policy in ("lru", "lfu_count")
        self.ids = list(ids)
        self.max_models = max_models
        self.policy = policy
        self.pinned = set(pinned)
        self.loaded = set()
        self.usage = dict.fromkeys(self.ids, 0)
        self.loads = dict.fromkeys(self.ids, 0)
        self.evictions = dict.fromkeys(self.ids, 0)
        self.last_used = dict.fromkeys(self.ids, 0)
        self.loaded_at = dict.fromkeys(self.ids, 0)
        self.total_loads = 0
        self.total_evictions = 0
        self.clock = 0
        for m in preloaded:
            self.load(m)

    def _tick(self):
        self.clock += 1
        return self.clock

    def activity(self, m):
        return max(self.last_used[m], self.loaded_at[m])

    def victim(self):
        cands = [m for m in self.loaded if m not in self.pinned]
        if not cands:
            raise AssertionError("the model has no victim: the test sequence is wrong")
        if self.policy == "lru":
            return min(cands, key=self.activity)
        return min(cands, key=lambda m: (self.usage[m], self.activity(m)))

    def _load(self, m):
        while len(self.loaded) >= self.max_models:
            v = self.victim()
            self.loaded.remove(v)
            self.evictions[v] += 1
            self.total_evictions += 1
        self.loaded.add(m)
        self.loads[m] += 1
        self.total_loads += 1
        self.loaded_at[m] = self._tick()

    def request(self, m):
        """An InferBatchComposite; returns whether it loaded the model."""
        loaded_now = m not in self.loaded
        if loaded_now:
            self._load(m)
        self.usage[m] += 1
        self.last_used[m] = self._tick()
        return loaded_now

    def load(self, m):
        """LoadModel; returns already_loaded."""
        if m in self.loaded:
            return True
        self._load(m)
        return False

    def unload(self, m):
        self.loaded.discard(m)

    def expected(self):
        per_model = {m: {"state": "loaded" if m in self.loaded else "unloaded",
                         "loaded": m in self.loaded,
                         "usage_count": self.usage[m],
                         "load_count": self.loads[m],
                         "eviction_count": self.evictions[m],
                         "in_flight": 0,
                         "pinned": m in self.pinned}
                     for m in self.ids}
        totals = {"loaded_models": len(self.loaded),
                  "max_models": self.max_models,
                  "eviction_policy": self.policy,
                  "total_requests": sum(self.usage.values()),
                  "total_loads": self.total_loads,
                  "total_evictions": self.total_evictions,
                  "total_idle_unloads": 0,
                  "total_load_failures": 0}
        return per_model, totals


def model_view(info):
    return {"state": info.state,
            "loaded": info.loaded,
            "usage_count": info.stats.usage_count,
            "load_count": info.stats.load_count,
            "eviction_count": info.stats.eviction_count,
            "in_flight": info.stats.in_flight,
            "pinned": info.pinned}


def totals_view(st):
    return {"loaded_models": st.loaded_models,
            "max_models": st.max_models,
            "eviction_policy": st.eviction_policy,
            "total_requests": st.total_requests,
            "total_loads": st.total_loads,
            "total_evictions": st.total_evictions,
            "total_idle_unloads": st.total_idle_unloads,
            "total_load_failures": st.total_load_failures}


class RegistryCase(lstest.ServerTestCase):
    """ServerTestCase plus the registry's views."""

    def stats(self, model_id=""):
        return self.stub.GetModelStats(self.pb2.GetModelStatsRequest(model_id=model_id),
                                       timeout=TIMEOUT)

    def stats_by_id(self):
        st = self.stats()
        return st, {m.model_id: m for m in st.models}

    def state_of(self, model_id):
        return self.stats(model_id).models[0].state

    def load(self, model_id, force=False):
        return self.stub.LoadModel(self.pb2.LoadModelRequest(model_id=model_id,
                                                             force_reload=force), timeout=TIMEOUT)

    def unload(self, model_id):
        return self.stub.UnloadModel(self.pb2.UnloadModelRequest(model_id=model_id),
                                     timeout=TIMEOUT)

    def request(self, model_id, batch=1, start=0, timeout=TIMEOUT):
        v, a = inputs(batch)
        resp = self.infer_bytes(model_id, v, a, batch, start, timeout=timeout)
        self.assertTrue(resp.success, resp.error)
        self.assertEqual(len(resp.composited_frames), batch)
        return resp

    def check_frames(self, resp, batch, start, n_frames):
        """Every returned frame is what the demo model must produce."""
        v, a = inputs(batch)
        want = lstest.expected_frames(v, a, start, n_frames)
        rects = lstest.demo_rects()
        self.assertEqual(len(resp.composited_frames), batch)
        for i, png in enumerate(resp.composited_frames):
            fi, expected = want[i]
            problem = lstest.compare_frame(lstest.decode_frame(png), expected, rects[fi])
            if problem:
                self.fail("batch item %d (start %d -> frame %d of %d): %s"
                          % (i, start, fi, n_frames, problem))

    def wait_state(self, model_id, states, timeout_s):
        """Poll until model_id is in one of states; returns the elapsed time."""
        t0 = time.monotonic()
        while True:
            s = self.state_of(model_id)
            if s in states:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                self.fail("%s still %s after %.1f s (waiting for %s)"
                          % (model_id, s, timeout_s, "/".join(states)))
            time.sleep(0.05)

    def assert_matches(self, model, where):
        """ListModels and GetModelStats agree with the policy model exactly."""
        want_models, want_totals = model.expected()
        st, by_id = self.stats_by_id()
        got_models = {m: model_view(info) for m, info in by_id.items()}
        self.assertEqual(got_models, want_models, "GetModelStats after %s" % where)
        self.assertEqual(totals_view(st), want_totals, "GetModelStats totals after %s" % where)
        # The charged memory is the sum of the loaded models' measured sizes.
        self.assertEqual(st.total_memory_bytes,
                         sum(i.stats.memory_bytes for i in st.models if i.loaded), where)
        listed = {m: model_view(info) for m, info in self.models_by_id().items()}
        self.assertEqual(listed, want_models, "ListModels after %s" % where)

    def replay(self, model, steps):
        """Run steps ("req", id[, batch, start]) / ("load", id) / ("unload", id),
        checking the server against the model after each; returns the list of
        request steps that loaded."""
        loaded_on = []
        for n, step in enumerate(steps):
            op, mid = step[0], step[1]
            where = "step %d %r" % (n, step)
            if op == "req":
                batch = step[2] if len(step) > 2 else 1
                start = step[3] if len(step) > 3 else n
                want_loaded = model.request(mid)
                resp = self.request(mid, batch, start)
                self.assertEqual(resp.model_loaded, want_loaded, where)
                if want_loaded:
                    self.assertGreater(resp.model_load_time_ms, 0.0, where)
                    loaded_on.append(n)
                else:
                    self.assertEqual(resp.model_load_time_ms, 0.0, where)
            elif op == "load":
                want_already = model.load(mid)
                r = self.load(mid)
                self.assertTrue(r.success, r.error)
                self.assertEqual(r.already_loaded, want_already, where)
            elif op == "unload":
                model.unload(mid)
                r = self.unload(mid)
                self.assertTrue(r.success, r.error)
                self.assertEqual(r.state, "unloaded", where)
            else:
                raise ValueError(op)
            self.assert_matches(model, where)
        return loaded_on


# ---------------------------------------------------------------- policies

IDS = ["a", "b", "c", "d", "e", "f"]


def policy_steps():
    """The request sequence both policy classes replay.

    The first part separates LFU with persistent usage counts from LFU with
    counts reset on reload (see the comments), and contains LFU ties; the
    rest is cycling plus a seeded random mix with explicit loads/unloads."""
    s = [("req", "a"), ("req", "a"), ("req", "a"),   # a:3
         ("req", "b"),                               # b:1
         ("req", "c"),                               # full: LFU evicts b (1 < 3), LRU evicts a
         ("unload", "a"),
         ("req", "d"),                               # c:1, d:1 loaded
         ("req", "a", 2, 7),                         # LFU tie c/d -> older c; a back at 4
         ("req", "d"), ("req", "d"),                 # d:3
         ("req", "e"),                               # LFU: persistent a:4 > d:3 -> evicts d
                                                     # (with counts reset, a:1 would go)
         ("load", "f"), ("load", "f"),               # LoadModel: no use counted
         ("req", "b", 3, 48)]                        # wraps past the last frame
    for _ in range(2):
        s += [("req", m) for m in IDS]               # plain cycling
    rng = random.Random(1234)
    for _ in range(24):
        x = rng.random()
        mid = rng.choice(IDS[:3]) if rng.random() < 0.5 else rng.choice(IDS)  # skewed
        if x < 0.08:
            s.append(("unload", mid))
        elif x < 0.16:
            s.append(("load", mid))
        else:
            s.append(("req", mid, rng.randint(1, 3), rng.randint(0, 100)))
    return s


class PolicyMixin:
    POLICY = None
    MAX = 2

    @classmethod
    def models_cfg(cls):
        return {m: demo_model_config("demo", num_frames=5) for m in IDS}

    def test_sequence_matches_policy_model(self):
        steps = policy_steps()
        model = PolicyModel(IDS, self.MAX, self.POLICY)
        self.assert_matches(model, "start")
        loaded_on = self.replay(model, steps)
        # The sequence must exercise eviction and reloads, and tell the two
        # policies apart (otherwise this test could not catch a swapped one).
        self.assertGreater(model.total_evictions, 10)
        self.assertTrue(any(n > 1 for n in model.loads.values()))
        other = PolicyModel(IDS, self.MAX, "lfu_count" if self.POLICY == "lru" else "lru")
        other_loaded_on = []
        for n, (op, mid, *_) in enumerate(steps):
            if op == "req":
                if other.request(mid):
                    other_loaded_on.append(n)
            elif op == "load":
                other.load(mid)
            else:
                other.unload(mid)
        self.assertNotEqual(loaded_on, other_loaded_on)


class TestLRU(PolicyMixin, RegistryCase):
    POLICY = "lru"
    MODELS = PolicyMixin.models_cfg()
    CAPACITY = {"max_models": 2, "eviction_policy": "lru"}


class TestLFUCount(PolicyMixin, RegistryCase):
    POLICY = "lfu_count"
    MODELS = PolicyMixin.models_cfg()
    CAPACITY = {"max_models": 2, "eviction_policy": "lfu_count"}


class TestPinnedNeverEvicted(RegistryCase):
    MODELS = {"pin": demo_model_config("demo", num_frames=5, pinned=True, preload=True),
              "x": demo_model_config("demo", num_frames=5),
              "y": demo_model_config("demo_b1", num_frames=5),
              "z": demo_model_config("demo", num_frames=5)}
    CAPACITY = {"max_models": 2, "eviction_policy": "lfu_count"}

    def test_pinned_kept_while_others_cycle(self):
        model = PolicyModel(list(self.MODELS), 2, "lfu_count", pinned={"pin"}, preloaded=["pin"])
        self.assert_matches(model, "start")
        # The pinned model is the least used of all (never requested), so LFU
        # would pick it first if pins were ignored.
        steps = [("req", m) for m in ["x", "y", "z", "x", "x", "y", "z", "y"]]
        self.replay(model, steps)
        _, by_id = self.stats_by_id()
        self.assertEqual(by_id["pin"].state, "loaded")
        self.assertEqual(by_id["pin"].stats.eviction_count, 0)
        self.assertEqual(by_id["pin"].stats.load_count, 1)
        self.assertEqual(model.total_evictions, 6)


# ---------------------------------------------------------------- idle unload

class TestIdleUnload(RegistryCase):
    # Idle after 1.2 s, checked every 0.2 s.
    MODELS = {"pin": demo_model_config("demo", num_frames=5, pinned=True, preload=True),
              "idle": demo_model_config("demo", num_frames=5)}
    CAPACITY = {"max_models": 2, "idle_unload_minutes": 0.02, "idle_check_seconds": 0.2}
    IDLE_S = 1.2

    def test_idle_model_unloaded_pinned_kept(self):
        r = self.request("idle")
        self.assertTrue(r.model_loaded)
        self.assertEqual(self.state_of("idle"), "loaded")
        # Kept while used more often than the idle time.
        t_end = time.monotonic() + 1.6 * self.IDLE_S
        while time.monotonic() < t_end:
            time.sleep(0.3)
            r = self.request("idle")
            self.assertFalse(r.model_loaded, "unloaded although used every 0.3 s")
        used = time.monotonic()
        elapsed = self.wait_state("idle", ("unloaded",), 8.0)
        # Not before it has been idle for idle_unload_minutes (the response
        # arrives a little after the use is recorded: allow 0.2 s).
        self.assertGreaterEqual(time.monotonic() - used, self.IDLE_S - 0.2, elapsed)
        st, by_id = self.stats_by_id()
        self.assertEqual(st.total_idle_unloads, 1)
        self.assertEqual(st.total_evictions, 0)
        self.assertEqual(st.loaded_models, 1)
        idle = by_id["idle"]
        self.assertEqual((idle.state, idle.loaded, idle.stats.load_count,
                          idle.stats.eviction_count, idle.stats.in_flight),
                         ("unloaded", False, 1, 0, 0))
        # The pinned model, loaded at start and never used (so idle the longest),
        # stays.
        pin = by_id["pin"]
        self.assertEqual((pin.state, pin.stats.load_count, pin.stats.usage_count),
                         ("loaded", 1, 0))
        # The next request loads it again.
        r = self.request("idle")
        self.assertTrue(r.model_loaded)
        st, by_id = self.stats_by_id()
        self.assertEqual(by_id["idle"].stats.load_count, 2)
        self.assertEqual(st.total_idle_unloads, 1)


# ---------------------------------------------------------------- capacity exhausted

class TestCapacityHeldByPinned(RegistryCase):
    MODELS = {"holder": demo_model_config("demo", num_frames=5, pinned=True, preload=True),
              "other": demo_model_config("demo", num_frames=5)}
    CAPACITY = {"max_models": 1}

    def test_resource_exhausted_names_pinned_model(self):
        v, a = inputs(1)
        e = self.assertRpcError(RE, self.infer_bytes, "other", v, a, 1)
        self.assertIn("capacity full and eviction failed", e.details())
        self.assertIn("'other'", e.details())
        self.assertIn("holder", e.details())
        self.assertIn("pinned by config", e.details())
        e = self.assertRpcError(RE, self.load, "other")
        self.assertIn("capacity full and eviction failed", e.details())
        st, by_id = self.stats_by_id()
        self.assertEqual(model_view(by_id["other"]),
                         {"state": "unloaded", "loaded": False, "usage_count": 0,
                          "load_count": 0, "eviction_count": 0, "in_flight": 0,
                          "pinned": False})
        self.assertEqual((st.loaded_models, st.total_loads, st.total_evictions,
                          st.total_load_failures), (1, 1, 0, 0))
        # The pinned model still serves.
        self.assertFalse(self.request("holder").model_loaded)
        # An explicit unload of a pinned model is allowed; then the slot is free,
        # and the pinned model, when asked for, evicts the unpinned one.
        self.assertEqual(self.unload("holder").state, "unloaded")
        self.assertTrue(self.request("other").model_loaded)
        self.assertTrue(self.request("holder").model_loaded)
        st, by_id = self.stats_by_id()
        self.assertEqual((by_id["other"].state, by_id["other"].stats.eviction_count), ("unloaded", 1))
        self.assertEqual((by_id["holder"].state, by_id["holder"].stats.load_count), ("loaded", 2))


class Holder:
    """Keeps model_id busy with `n` concurrent big-batch requests from threads;
    results[i] is the response or the grpc.RpcError."""

    def __init__(self, case, model_id, n=4, batch=32):
        self.case, self.model_id, self.batch = case, model_id, batch
        self.results = [None] * n
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(n)]
        # A connection of their own: on the test's connection the big messages
        # would delay its small control calls by hundreds of ms.
        self.channel = grpc.insecure_channel(
            case.server.addr,
            options=lstest.CHANNEL_OPTIONS + [("grpc.use_local_subchannel_pool", 1)])
        pb2 = lstest.bytes_variant_pb2()
        self.call = self.channel.unary_unary(
            "/%s/InferBatchComposite" % lstest.SERVICE,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=case.pb2.CompositeBatchResponse.FromString)
        v, a = big_inputs(batch)
        self.req = pb2.CompositeBatchRequest(
            model_id=model_id, batch_size=batch, start_frame_idx=0,
            visual_frames=v.astype("<f4").tobytes(), audio_features=a.astype("<f4").tobytes())

    def _run(self, i):
        try:
            self.results[i] = self.call(self.req, timeout=TIMEOUT)
        except grpc.RpcError as e:
            self.results[i] = e

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def wait_in_flight(self, timeout_s=20.0):
        """True once the model has a request in flight, False if they all ended first."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.case.stats(self.model_id).models[0].stats.in_flight >= 1:
                return True
            if not any(t.is_alive() for t in self.threads):
                return False
            time.sleep(0.01)
        return False

    def join(self):
        for t in self.threads:
            t.join(TIMEOUT)
            self.case.assertFalse(t.is_alive(), "a held request did not return")
        self.channel.close()
        return self.results


_big = {}


def big_inputs(batch):
    """A big batch with one shared audio window (the visual input is what is
    big; it is made once)."""
    if batch not in _big:
        _big[batch] = (lstest.make_visual(batch), lstest.make_audio([0.5])[0])
    return _big[batch]


class TestCapacityHeldInFlight(RegistryCase):
    MODELS = {"a": demo_model_config("demo", num_frames=5),
              "b": demo_model_config("demo", num_frames=5)}
    CAPACITY = {"max_models": 1}
    SERVER_OPTS = {"worker_threads": 4}

    def test_resource_exhausted_while_the_only_slot_is_in_flight(self):
        held, other = "a", "b"
        self.assertTrue(self.load(held).success)
        for attempt in range(5):
            h = Holder(self, held).start()
            try:
                if not h.wait_in_flight():
                    continue
                try:
                    r = self.request(other, timeout=TIMEOUT)
                except grpc.RpcError as e:
                    self.assertEqual(e.code(), RE, e.details())
                    self.assertIn("capacity full and eviction failed", e.details())
                    self.assertIn("cannot load model '%s'" % other, e.details())
                    self.assertIn("%s (loaded, " % held, e.details())
                    self.assertIn("in flight", e.details())
                    break
                # The held requests all ended before ours arrived: it loaded
                # (evicting the other). Swap roles and try again.
                self.assertTrue(r.model_loaded)
                held, other = other, held
            finally:
                results = h.join()
        else:
            self.fail("could not get a request in while the slot was held (5 attempts)")
        # The held requests were not disturbed by the refused one.
        for res in results:
            self.assertNotIsInstance(res, grpc.RpcError, res)
            self.assertEqual(len(res.composited_frames), 32)
        # Afterwards the other model loads, evicting the now idle one.
        self.assertTrue(self.request(other).model_loaded)
        st, by_id = self.stats_by_id()
        self.assertEqual((by_id[held].state, by_id[other].state), ("unloaded", "loaded"))
        self.assertEqual((by_id[held].stats.in_flight, by_id[other].stats.in_flight), (0, 0))
        self.assertEqual(st.loaded_models, 1)


# ---------------------------------------------------------------- draining

class TestUnloadWhileInFlight(RegistryCase):
    MODELS = {"slow": demo_model_config("demo", num_frames=5),
              "other": demo_model_config("demo", num_frames=5)}
    CAPACITY = {"max_models": 4}
    SERVER_OPTS = {"worker_threads": 4}

    def test_draining_then_unloaded(self):
        for attempt in range(5):
            self.assertTrue(self.load("slow").success)
            h = Holder(self, "slow").start()
            saw = None
            try:
                if not h.wait_in_flight():
                    continue
                r = self.unload("slow")
                self.assertTrue(r.success, r.error)
                if r.state != "draining":
                    self.assertEqual(r.state, "unloaded")
                    continue  # everything finished first: try again
                try:
                    self.request("slow")
                    # Only possible if the drain completed in between.
                    continue
                except grpc.RpcError as e:
                    self.assertEqual(e.code(), UNAVAILABLE, e.details())
                    self.assertIn("being unloaded", e.details())
                saw = self.stats("slow").models[0]
                try:
                    self.load("slow")
                    continue  # the drain completed in between
                except grpc.RpcError as e:
                    self.assertEqual(e.code(), UNAVAILABLE, e.details())
            finally:
                results = h.join()
            break
        else:
            self.fail("never caught the model with a request in flight (5 attempts)")
        # Requests that got their lease before the unload finish normally;
        # those that arrived after it are refused.
        self.assertIn(saw.state, ("draining", "unloaded"))
        ok = [r for r in results if not isinstance(r, grpc.RpcError)]
        self.assertGreaterEqual(len(ok), 1)
        for r in results:
            if isinstance(r, grpc.RpcError):
                self.assertEqual(r.code(), UNAVAILABLE, r.details())
            else:
                self.assertTrue(r.success)
                self.assertEqual(len(r.composited_frames), 32)
        # The last lease's release unloaded it. A held request that reached
        # the server only after that loaded it again (model_loaded): then it
        # must be loaded once more, and idle.
        # Held requests that arrived together wait on one single-flight load
        # and all say model_loaded: that is one reload, however many say so.
        reloads = 1 if any(r.model_loaded for r in ok) else 0
        slow = self.stats("slow").models[0]
        loads_before = slow.stats.load_count - reloads
        self.assertEqual((slow.state, slow.stats.in_flight, slow.stats.eviction_count),
                         ("loaded" if reloads else "unloaded", 0, 0))
        if reloads:
            self.assertEqual(self.unload("slow").state, "unloaded")
        st, by_id = self.stats_by_id()
        slow = by_id["slow"]
        self.assertEqual((slow.state, slow.loaded, slow.stats.load_count),
                         ("unloaded", False, loads_before + reloads))
        self.assertEqual(st.loaded_models, 0)
        self.assertEqual(st.engine_sessions, 0)
        # Served again on the next request.
        self.assertTrue(self.request("slow").model_loaded)


# ---------------------------------------------------------------- memory capacity

class TestMemoryCapacity(RegistryCase):
    # 40 frames are charged 40 * (1280 * 720 * 3 + 6 * 320 * 320) = 135.2 MB
    # (the avatar's upper bound and its input cache); the first avatar of an
    # ONNX file is also charged the session (~20 MB). 0.16 GiB (171.8 MB)
    # holds one such avatar, not two.
    N = 40
    MODELS = {"big1": demo_model_config("demo", num_frames=N, memory_estimate_mb=16),
              "big2": demo_model_config("demo", num_frames=N, memory_estimate_mb=16)}
    CAPACITY = {"max_models": 4, "max_memory_gb": 0.16}

    def test_second_model_evicts_first_by_memory(self):
        frames = self.N * FRAME_BYTES
        r = self.request("big1")
        self.assertTrue(r.model_loaded)
        st, by_id = self.stats_by_id()
        limit = st.max_memory_bytes
        self.assertEqual(limit, round(0.16 * (1 << 30)))
        m1 = by_id["big1"].stats.memory_bytes
        self.assertGreaterEqual(m1, frames)  # engine + frames (the session was opened for it)
        self.assertLessEqual(m1, limit, "test premise: one avatar must fit")
        self.assertGreater(m1 + frames, limit, "test premise: two avatars must not fit")
        self.assertEqual(st.total_memory_bytes, m1)
        self.assertEqual(by_id["big2"].stats.memory_bytes, 16 << 20)  # its estimate
        evicted = {"big1": 0, "big2": 0}
        for step, (mid, gone) in enumerate([("big2", "big1"), ("big1", "big2"),
                                            ("big2", "big1")], 1):
            evicted[gone] += 1
            if step == 2:
                self.assertFalse(self.load(mid).already_loaded)
            else:
                self.assertTrue(self.request(mid, 2, 39).model_loaded)
            st, by_id = self.stats_by_id()
            where = "step %d: %s loaded" % (step, mid)
            self.assertEqual((by_id[mid].state, by_id[gone].state), ("loaded", "unloaded"), where)
            # Loaded while the other avatar holds the session: charged its frames only.
            self.assertEqual(by_id[mid].stats.memory_bytes, frames, where)
            self.assertEqual(st.total_memory_bytes, frames, where)
            self.assertLessEqual(st.total_memory_bytes, limit, where)
            self.assertEqual((st.loaded_models, st.total_evictions), (1, step), where)
            self.assertEqual({m: by_id[m].stats.eviction_count for m in evicted}, evicted, where)
            self.assertEqual(st.engine_sessions, 1, where)


# ---------------------------------------------------------------- shared sessions

class TestSharedEngine(RegistryCase):
    MODELS = {"s1": demo_model_config("demo", num_frames=10),
              "s2": demo_model_config("demo", num_frames=7),
              "s3": demo_model_config("demo_b1", num_frames=10)}
    CAPACITY = {"max_models": 4}

    def sessions(self):
        return self.stats().engine_sessions

    def test_two_avatars_one_session(self):
        self.assertEqual(self.sessions(), 0)
        r1 = self.request("s1", 3, 8)
        self.assertEqual(self.sessions(), 1)
        r2 = self.request("s2", 3, 5)
        self.assertTrue(r1.model_loaded and r2.model_loaded)
        st, by_id = self.stats_by_id()
        self.assertEqual((by_id["s1"].state, by_id["s2"].state), ("loaded", "loaded"))
        self.assertEqual(st.engine_sessions, 1)
        # The second avatar is charged its frames only: the session is shared.
        self.assertEqual(by_id["s2"].stats.memory_bytes, 7 * FRAME_BYTES)
        self.assertGreater(by_id["s1"].stats.memory_bytes, 10 * FRAME_BYTES)
        # Each avatar serves its own frames (s1: 8,9,0; s2: 5,6,0).
        self.check_frames(r1, 3, 8, 10)
        self.check_frames(r2, 3, 5, 7)
        # Another ONNX file is another session.
        self.assertTrue(self.request("s3").model_loaded)
        self.assertEqual(self.sessions(), 2)
        self.assertEqual(self.unload("s3").state, "unloaded")
        self.assertEqual(self.sessions(), 1)
        # Unloading the avatar that opened the session keeps it for the other.
        self.assertEqual(self.unload("s1").state, "unloaded")
        self.assertEqual(self.sessions(), 1)
        r = self.request("s2", 2, 13)  # frames 6, 0
        self.assertFalse(r.model_loaded)
        self.check_frames(r, 2, 13, 7)
        self.assertEqual(self.sessions(), 1)
        # Last user gone: session closed.
        self.assertEqual(self.unload("s2").state, "unloaded")
        self.assertEqual(self.sessions(), 0)
        st = self.stats()
        self.assertEqual((st.loaded_models, st.total_memory_bytes), (0, 0))
        # And reopened on demand.
        r = self.request("s1", 1, 4)
        self.assertTrue(r.model_loaded)
        self.check_frames(r, 1, 4, 10)
        self.assertEqual(self.sessions(), 1)


# ---------------------------------------------------------------- lfu score, churn guard

class TestFrequencyReported(RegistryCase):
    """GetModelStats, ListModels and /metrics report lfu's frequency score and
    live sessions. Half-life 0.25 min = 15 s: the score visibly decays during
    the test but not while 20 requests run."""
    HALF_LIFE_S = 15.0
    MODELS = {"f": demo_model_config("demo", num_frames=5),
              "g": demo_model_config("demo", num_frames=5)}
    CAPACITY = {"max_models": 2, "eviction_policy": "lfu", "lfu_half_life_minutes": 0.25,
                "lfu_initial": 5}

    def scrape(self):
        with urllib.request.urlopen(self.server.http_url + "/metrics", timeout=TIMEOUT) as r:
            return r.read().decode()

    def freq(self, model_id):
        return self.stats(model_id).models[0].stats.frequency

    def test_frequency_rises_with_use_and_decays(self):
        st, by_id = self.stats_by_id()
        self.assertEqual(st.eviction_policy, "lfu")
        self.assertEqual(by_id["f"].stats.frequency, 0.0)
        self.assertEqual(by_id["f"].stats.live_sessions, 0)
        self.request("f")
        f1 = self.freq("f")
        # lfu_initial at the load, a little decay since, a use on top.
        self.assertGreater(f1, 4.5, "a loaded model starts at lfu_initial")
        for _ in range(20):
            self.request("f")
        f2 = self.freq("f")
        t2 = time.monotonic()
        self.assertGreater(f2, f1, "the score rises with use")
        listed = {m.model_id: m for m in
                  self.stub.ListModels(self.pb2.ListModelsRequest(), timeout=TIMEOUT).models}
        self.assertGreater(listed["f"].stats.frequency, 0.0)
        self.assertEqual(listed["f"].stats.in_flight, 0)
        self.assertEqual(listed["f"].stats.live_sessions, 0)
        text = self.scrape()
        self.assertIn("# TYPE lipsync_model_frequency gauge", text)
        self.assertIn("# TYPE lipsync_model_live_sessions gauge", text)
        m = re.search(r'^lipsync_model_frequency\{model="f"\} (\S+)$', text, re.M)
        self.assertIsNotNone(m, text)
        self.assertGreater(float(m.group(1)), 4.5)
        self.assertIn('lipsync_model_frequency{model="g"} 0\n', text)
        self.assertIn('lipsync_model_live_sessions{model="f"} 0\n', text)
        # Unused for a while: it decays as 2^(-t / half-life).
        time.sleep(3.0)
        t3 = time.monotonic()
        f3 = self.freq("f")
        want = f2 * 2 ** (-(t3 - t2) / self.HALF_LIFE_S)
        self.assertLess(f3, f2)
        self.assertAlmostEqual(f3, want, delta=0.03 * f2)


class TestChurnGuard(RegistryCase):
    """A model loaded less than min_residency_seconds ago is not evicted: the
    request that would need its slot gets RESOURCE_EXHAUSTED saying why."""
    MODELS = {"a": demo_model_config("demo", num_frames=5),
              "b": demo_model_config("demo", num_frames=5)}
    CAPACITY = {"max_models": 1, "min_residency_seconds": 300}

    def test_recent_load_not_evicted(self):
        self.request("a")
        e = self.assertRpcError(RE, self.infer_bytes, "b", *inputs(1), 1)
        self.assertIn("capacity full and eviction failed", e.details())
        self.assertIn("a (loaded, 0 in flight", e.details())
        self.assertIn("min_residency_seconds", e.details())
        _, by_id = self.stats_by_id()
        self.assertEqual((by_id["a"].state, by_id["b"].state), ("loaded", "unloaded"))
        self.assertEqual(by_id["a"].stats.eviction_count, 0)


if __name__ == "__main__":
    unittest.main()
