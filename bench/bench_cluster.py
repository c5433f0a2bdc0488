#!/usr/bin/env python3
"""Scale-out benchmark (docs/PERFORMANCE.md, "Scale-out"): a mixed workload of
24 avatars with Zipf popularity, sent through HAProxy to
  - 1 instance,
  - 3 instances, consistent hash of x-model-id (deploy/haproxy.cfg) at several
    hash-balance-factor values,
  - 3 instances, round-robin (every avatar ends up loaded everywhere).
Each instance holds at most --max-models avatars (default 8: 3 instances hold
all 24 between them, 1 instance or round-robin cannot). Requests are audio-only
batches of --batch frames of small avatars (the demo files, num_frames 5, each
avatar with its own copy of the ONNX file, so a load is a real session). Reports
loads, evictions, frames/s and p50/p99 latency. Loopback only.

  /usr/bin/python3 bench/bench_cluster.py [--requests 600] [--clients 6]
"""
import argparse
import os
import random
import re
import shutil
import sys
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "python"))
import cluster  # noqa: E402
import lstest  # noqa: E402


def models(n, tmp):
    out = {}
    src = os.path.join(lstest.DEMO_DIR, "models", "demo.onnx")
    for i in range(n):
        path = os.path.join(tmp, "av%02d.onnx" % i)
        shutil.copy(src, path)
        out["av%02d" % i] = lstest.demo_model_config("demo", num_frames=5, model_path=path)
    return out


def zipf_ids(ids, n, s, seed):
    rnd = random.Random(seed)
    w = [1.0 / (k + 1) ** s for k in range(len(ids))]
    return rnd.choices(ids, weights=w, k=n)


def run(name, n_inst, mods, seq, clients, batch, max_models, edit=None):
    cl = cluster.Cluster(n_inst, mods, kind="haproxy", capacity={"max_models": max_models},
                         server={"worker_threads": 2}, edit=edit).start()
    lat = []
    lock = threading.Lock()
    it = iter(enumerate(seq))
    errors = []

    def worker():
        import grpc
        while True:
            with lock:
                nxt = next(it, None)
            if nxt is None:
                return
            i, mid = nxt
            t0 = time.perf_counter()
            try:
                cl.infer(mid, batch=batch, start=i, timeout=60)
            except grpc.RpcError as e:
                errors.append(str(e.code()))
                continue
            with lock:
                lat.append(time.perf_counter() - t0)

    try:
        t0 = time.perf_counter()
        ths = [threading.Thread(target=worker) for _ in range(clients)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        wall = time.perf_counter() - t0
        pb2, _ = lstest.stubs()
        loads = evictions = 0
        copies = {}
        for s in cl.instances:
            r = s.stub.GetModelStats(pb2.GetModelStatsRequest(model_id=""), timeout=10)
            loads += r.total_loads
            evictions += r.total_evictions
            for m in r.models:
                if m.stats.load_count:
                    copies[m.model_id] = copies.get(m.model_id, 0) + 1
    finally:
        cl.stop()
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3 if lat else float("nan")  # noqa: E731
    row = {"name": name, "loads": loads, "evictions": evictions, "fps": len(lat) * batch / wall,
           "p50": pct(0.50), "p99": pct(0.99), "errors": len(errors),
           "multi": sum(1 for v in copies.values() if v > 1)}
    print("%-34s loads %4d  evictions %4d  avatars on >1 instance %2d  %7.1f frames/s  p50 %6.1f ms  "
          "p99 %6.1f ms  errors %d" % (name, row["loads"], row["evictions"], row["multi"], row["fps"], row["p50"],
                                        row["p99"], row["errors"]), flush=True)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--batch", type=int, default=5)
    ap.add_argument("--avatars", type=int, default=24)
    ap.add_argument("--max-models", type=int, default=8)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--factors", default="150,200,300", help="hash-balance-factor values to try")
    a = ap.parse_args()
    tmp = os.path.join(lstest._tmp_root, "bench-models")
    os.makedirs(tmp, exist_ok=True)
    mods = models(a.avatars, tmp)
    seq = zipf_ids(sorted(mods), a.requests, a.zipf, 1)
    print("%d requests of %d frames, %d clients, %d avatars (Zipf s=%.1f), max_models %d per instance, "
          "%d cores" % (a.requests, a.batch, a.clients, a.avatars, a.zipf, a.max_models, os.cpu_count()))
    factor = lambda f: (lambda t: re.sub(r"hash-balance-factor \d+", "hash-balance-factor %d" % f, t))  # noqa
    rr = lambda t: t.replace("balance hdr(x-model-id)", "balance roundrobin")  # noqa: E731
    run("1 instance", 1, mods, seq, a.clients, a.batch, a.max_models)
    for f in [int(x) for x in a.factors.split(",") if x]:
        run("3 instances, hash, factor %d" % f, 3, mods, seq, a.clients, a.batch, a.max_models, edit=factor(f))
    run("3 instances, hash, no bound", 3, mods, seq, a.clients, a.batch, a.max_models,
        edit=lambda t: re.sub(r"\n\s*hash-balance-factor \d+", "", t))
    run("3 instances, round-robin", 3, mods, seq, a.clients, a.batch, a.max_models, edit=rr)


if __name__ == "__main__":
    main()
