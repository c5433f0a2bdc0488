#!/usr/bin/python3
"""Target 4: 4 concurrent clients on one model vs 1 client, same run.

The real server on the demo model; the C CLI (`lipsync bench`, one channel
per client thread, batch 5) runs 1 client and 4 clients alternately, `rounds`
times each (so drift hits both alike); throughput (frames/s) per round, the
ratio of the medians. Client and server share the machine's 2 cores.
"""

import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lsbench as L  # noqa: E402

MODEL = "demo"
BATCH = 5


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    cfg = os.path.join(L.DEMO_DIR, "demo.yaml")
    base = os.path.dirname(cfg)
    text = re.sub(r"(model_path|background_dir|crop_rects_path): (\S+)",
                  lambda m: f"{m.group(1)}: {os.path.join(base, m.group(2))}", open(cfg).read())
    text = text.replace('listen: "0.0.0.0:50053"', 'listen: "127.0.0.1:50999"\n  max_message_mb: 256')
    runs = {1: [], 4: []}
    with L.Server("concurrency", text) as srv:
        L.cli_bench(srv.addr, MODEL, BATCH, requests=10, concurrency=1, warmup=1)  # prepares frames 0..49
        for _ in range(args.rounds):
            for c in (1, 4):
                c0 = srv.cpu_seconds()
                try:
                    r = L.cli_bench(srv.addr, MODEL, BATCH, requests=args.requests, concurrency=c, warmup=2)
                except SystemExit as e:
                    # Say whether the server is still there: a client-side
                    # failure and a dead server read alike from the client.
                    rc = srv.proc.poll()
                    raise SystemExit(f"{e}\nserver: {'running' if rc is None else f'exited with {rc}'}; log tail:\n"
                                     + open(srv.log_path).read()[-2000:])
                total = args.requests + 2 * c  # timed + warm-up requests
                r["server_cpu_ms_per_request"] = (srv.cpu_seconds() - c0) / total * 1000
                r["client_cpu_ms_per_request"] = r["client_cpu_s"] / total * 1000
                if r["errors"]:
                    raise SystemExit(r["output"])
                runs[c].append(r)
                print(f"  concurrency {c}: {r['frames_per_s']:.1f} frames/s, latency p50 {r['p50_ms']:.1f} ms, "
                      f"CPU per request: server {r['server_cpu_ms_per_request']:.1f} ms, client "
                      f"{r['client_cpu_ms_per_request']:.1f} ms", flush=True)
        stats = srv.stats(MODEL)
    f1 = L.p50([r["frames_per_s"] for r in runs[1]])
    f4 = L.p50([r["frames_per_s"] for r in runs[4]])
    ratio = f4 / f1
    best1 = max(r["frames_per_s"] for r in runs[1])
    best4 = max(r["frames_per_s"] for r in runs[4])
    m = stats.models[0].stats
    out = {"machine": L.machine(), "model": MODEL, "batch": BATCH, "requests": args.requests,
           "rounds": args.rounds, "fps_1": f1, "fps_4": f4, "ratio": ratio,
           "best_fps_1": best1, "best_fps_4": best4, "ratio_best": best4 / best1,
           "p50_ms_1": L.p50([r["p50_ms"] for r in runs[1]]), "p50_ms_4": L.p50([r["p50_ms"] for r in runs[4]]),
           "server_avg_inference_ms": m.avg_inference_ms, "server_avg_composite_ms": m.avg_composite_ms,
           "cmd_example": runs[4][0]["cmd"],
           "server_cpu_ms_per_request_4": L.p50([r["server_cpu_ms_per_request"] for r in runs[4]]),
           "client_cpu_ms_per_request_4": L.p50([r["client_cpu_ms_per_request"] for r in runs[4]]),
           "server_cpu_ms_per_request_1": L.p50([r["server_cpu_ms_per_request"] for r in runs[1]]),
           "client_cpu_ms_per_request_1": L.p50([r["client_cpu_ms_per_request"] for r in runs[1]])}
    # CPU-bound ceiling: 2 cores / (server + client CPU per request)
    cpu_req = out["server_cpu_ms_per_request_4"] + out["client_cpu_ms_per_request_4"]
    out["cpu_bound_ceiling_fps"] = (os.cpu_count() or 1) * 1000.0 / cpu_req * BATCH
    print(f"demo batch {BATCH}: 1 client {f1:.1f} frames/s, 4 clients {f4:.1f} frames/s, ratio {ratio:.2f}; "
          f"CPU-bound ceiling with these per-request costs {out['cpu_bound_ceiling_fps']:.0f} frames/s")
    L.ratio_line("t4_throughput_4_clients_vs_1", ratio, ">=1.7", ratio >= 1.7)
    L.ratio_line("t4_throughput_best_rounds", best4 / best1, "(info: least disturbed)", True)
    L.save_result("concurrency", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
