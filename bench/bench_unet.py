#!/usr/bin/python3
"""Target 7: a realistic model end to end. bench/gen_unet.py builds a
12 M-parameter, ~10 GFLOP/frame U-Net (random weights) at benchmark time;
the real server serves it with the 100-frame photo avatar; a Python client
sends batch-5 requests one at a time (concurrency 1).

Reports end-to-end frames/s, the share of the client-observed time that is
inference (the response's inference_time_ms) and compositing, and, in the
same run, the raw ONNX Runtime Run of the same model and batch
(build/bench/bench_engine: ls_engine_run on its own session).
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_avatar  # noqa: E402
import lsbench as L  # noqa: E402

BATCH = 5


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=8)
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    model = os.path.join(L.WORK_DIR, "unet.onnx")
    gen = os.path.join(here, "gen_unet.py")
    # regenerate when the generator changed
    if not os.path.exists(model) or os.path.getmtime(model) < os.path.getmtime(gen):
        subprocess.run([sys.executable, gen, "--out", model], check=True)
    info = json.load(open(model + ".json"))
    avatar = os.path.join(L.WORK_DIR, "avatar100")
    gen_avatar.generate(avatar, 100, L.PHOTO)
    text = L.yaml_config({"unet": {"model_path": model, "background_dir": os.path.join(avatar, "frames"),
                                   "crop_rects_path": os.path.join(avatar, "crop_rects.json"),
                                   "preload": True}},
                         server={"max_message_mb": 256})
    v, a = L.tensors(BATCH)
    n = args.requests
    bodies = [L.request_bytes("unet", BATCH, s * BATCH, v, a) for s in range(n)]
    lat, inf, comp, tot = [], [], [], []
    with L.Server("unet", text) as srv:
        for b in bodies:  # warm-up: prepares the frames used, ORT arena
            srv.infer_raw(b)
        wall0 = time.perf_counter()
        for b in bodies:
            dt, r = srv.infer_raw(b)
            if not r.success:
                raise SystemExit(r.error)
            lat.append(dt * 1000)
            inf.append(r.inference_time_ms)
            comp.append(r.composite_time_ms)
            tot.append(r.total_time_ms)
        wall = time.perf_counter() - wall0
        cfg = srv.config
    exe = os.path.join(L.BENCH_BIN, "bench_engine")
    _, eng = L.run_c_bench([exe, "--config", cfg, "--id", "unet", "--batch", str(BATCH), "--runs", "3",
                            "--warmup", "1"])
    out = {"machine": L.machine(), "model": info, "batch": BATCH, "requests": n,
           "fps": n * BATCH / wall, "latency_p50_ms": L.p50(lat), "inference_p50_ms": L.p50(inf),
           "composite_p50_ms": L.p50(comp), "server_total_p50_ms": L.p50(tot),
           "inference_share": sum(inf) / sum(lat), "composite_share": sum(comp) / sum(lat),
           "other_share": 1 - (sum(inf) + sum(comp)) / sum(lat),
           "raw_ort_p50_ms": eng["raw_run"]["p50"], "in_process": eng}
    out["raw_ort_fps"] = BATCH * 1000 / out["raw_ort_p50_ms"]
    out["gflops_per_s"] = info["gflop_per_frame"] * BATCH * 1000 / out["inference_p50_ms"]
    print(f"unet ({info['params'] / 1e6:.1f} M parameters, {info['gflop_per_frame']:.1f} GFLOP/frame), batch "
          f"{BATCH}, {n} requests, concurrency 1:")
    print(f"  end to end {out['fps']:.2f} frames/s; latency p50 {out['latency_p50_ms']:.0f} ms = inference "
          f"{out['inference_p50_ms']:.0f} + composite {out['composite_p50_ms']:.1f} + rest")
    print(f"  shares of client time: inference {100 * out['inference_share']:.1f}%, composite "
          f"{100 * out['composite_share']:.1f}%, other {100 * out['other_share']:.1f}%")
    print(f"  raw ONNX Runtime Run, same model and batch: p50 {out['raw_ort_p50_ms']:.0f} ms "
          f"({out['raw_ort_fps']:.2f} frames/s); server inference {out['gflops_per_s']:.0f} GFLOP/s", flush=True)
    L.ratio_line("t7_unet_e2e_fps", out["fps"], "(report)", True)
    L.ratio_line("t7_unet_inference_share", out["inference_share"], "(report)", True)
    L.ratio_line("t7_unet_e2e_vs_raw_ort_fps", out["fps"] / out["raw_ort_fps"], "(report)", True)
    L.save_result("unet", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
