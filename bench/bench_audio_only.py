#!/usr/bin/python3
"""Audio-only requests (the server builds the visual input): what they cost
and what they buy, each against its peer measured in the same run.

1. Build cost per frame, one core: bench_visual (C: crop -> 328^2 cubic ->
   6 planes -> float32, uncached and from the cache) against OpenCV doing the
   same steps in this process (cv2.resize INTER_CUBIC, cv2.rectangle,
   concatenate, / 255 in float32); the C planes are checked against OpenCV's.
   The paste-back's cost, cubic (the reference) against linear.
2. Request path, demo model, batch 5, concurrency 1, C client
   (`lipsync bench`): audio-only requests against the smallest client-built
   request (visual as uint8, audio as binary16), on one server in interleaved
   rounds: server overhead p50 (latency - input - inference - composite) and
   its share of latency, request bytes.
3. Concurrency, 4 clients: frames/s against the CPU-bound ceiling of this
   machine, 2 cores / (server + client CPU seconds per request) measured in
   the same run; server CPU per frame.

    LS_BUILD_DIR=$PWD/build /usr/bin/python3 bench/bench_audio_only.py
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lsbench as L  # noqa: E402

RECT = (550, 220, 730, 400)  # 180 px, the size of the demo's and the described data's rectangles


def opencv_build(frame_bgr, rect):
    import cv2
    x1, y1, x2, y2 = rect
    big = cv2.resize(frame_bgr[y1:y2, x1:x2], (328, 328), interpolation=cv2.INTER_CUBIC)
    real = big[4:324, 4:324]
    masked = real.copy()
    cv2.rectangle(masked, (5, 5, 310, 305), (0, 0, 0), -1)
    planes = np.concatenate([real.transpose(2, 0, 1), masked.transpose(2, 0, 1)])
    return planes, planes.astype(np.float32) / np.float32(255.0)


def bench_build(reps):
    try:
        frame = L.photo_frame()
    except SystemExit:
        rng = np.random.default_rng(3)
        import cv2
        frame = cv2.GaussianBlur(rng.integers(0, 256, (L.FRAME_H, L.FRAME_W, 3), dtype=np.uint8), (0, 0), 3)
    rgb = np.ascontiguousarray(frame[:, :, ::-1])
    path = os.path.join(L.WORK_DIR, "visual_frame.rgb")
    os.makedirs(L.WORK_DIR, exist_ok=True)
    rgb.tofile(path)
    out = subprocess.run([os.path.join(L.BENCH_BIN, "bench_visual"), path, str(L.FRAME_W), str(L.FRAME_H)]
                         + [str(v) for v in RECT] + [str(reps)], capture_output=True, text=True, check=True)
    ours = {k: float(v) for k, v in (line.split() for line in out.stdout.split("\n") if line)}
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        planes, _ = opencv_build(frame, RECT)
        times.append((time.perf_counter() - t0) * 1e3)
    cv_ms = float(np.median(times))
    got = np.fromfile(path + ".planes", np.uint8).reshape(6, 320, 320)
    diff = np.abs(got.astype(int) - planes.astype(int))
    return {"ours": ours, "opencv_ms": cv_ms, "max_diff": int(diff.max()), "share_diff": float((diff > 0).mean())}


def server_config():
    return L.yaml_config({"demo": {"model_path": os.path.join(L.DEMO_DIR, "models", "demo.onnx"),
                                   "background_dir": os.path.join(L.DEMO_DIR, "avatar", "frames"),
                                   "crop_rects_path": os.path.join(L.DEMO_DIR, "avatar", "crop_rects.json"),
                                   "preload": True}})


def bench_requests(srv, requests, rounds):
    res = {"server": [], "server_jpeg": [], "client_u8": []}
    for _ in range(rounds):
        res["server"].append(L.cli_bench(srv.addr, "demo", 5, requests, 1, warmup=12, visual="server",
                                         dtype="f16"))
        res["server_jpeg"].append(L.cli_bench(srv.addr, "demo", 5, requests, 1, warmup=12, visual="server",
                                              dtype="f16", fmt="jpeg"))
        res["client_u8"].append(L.cli_bench(srv.addr, "demo", 5, requests, 1, warmup=12, visual="client",
                                            dtype="u8"))
    return res


def bench_concurrency(srv, requests):
    out = {}
    for visual, dtype in (("server", "f16"), ("client", "u8")):
        cpu0 = srv.cpu_seconds()
        r = L.cli_bench(srv.addr, "demo", 5, requests, 4, warmup=3, visual=visual, dtype=dtype)
        server_cpu = srv.cpu_seconds() - cpu0
        # CPU was spent on the 4 x 3 warm-up requests too.
        ok = requests - r["errors"] + 4 * 3
        cpu_per_req = (server_cpu + r["client_cpu_s"]) / ok
        ceiling = (os.cpu_count() or 2) / cpu_per_req * 5
        out[visual] = {"frames_per_s": r["frames_per_s"], "ceiling_frames_per_s": ceiling,
                       "ratio": r["frames_per_s"] / ceiling, "server_cpu_ms_per_frame": server_cpu / ok / 5 * 1e3,
                       "client_cpu_ms_per_request": r["client_cpu_s"] / ok * 1e3, "p50_ms": r["p50_ms"]}
    return out


def med(rows, key):
    return float(np.median([r[key] for r in rows]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    b = bench_build(args.reps)
    o = b["ours"]
    print(f"build per frame: ours uncached {o['build_uncached']:.3f} ms, cached {o['build_cached']:.3f} ms; "
          f"OpenCV (same steps, numpy /255) {b['opencv_ms']:.3f} ms; planes vs OpenCV max |d| {b['max_diff']} "
          f"({100 * b['share_diff']:.4f} % differ)")
    L.ratio_line("visual_build_uncached_vs_opencv", o["build_uncached"] / b["opencv_ms"], "< 1", o["build_uncached"] < b["opencv_ms"])
    L.ratio_line("visual_build_cached_vs_opencv", o["build_cached"] / b["opencv_ms"], "< 1", o["build_cached"] < b["opencv_ms"])
    print(f"paste per frame: cubic {o['paste_cubic']:.3f} ms, linear {o['paste_linear']:.3f} ms")
    L.ratio_line("paste_cubic_vs_linear", o["paste_cubic"] / o["paste_linear"], "(info)", True)

    with L.Server("audio-only", server_config()) as srv:
        rq = bench_requests(srv, args.requests, args.rounds)
        s, c = rq["server"], rq["client_u8"]
        ov_s, sh_s = med(s, "overhead_p50_ms"), med(s, "overhead_share_p50")
        ov_c, sh_c = med(c, "overhead_p50_ms"), med(c, "overhead_share_p50")
        print(f"request path (batch 5, C client, median of {args.rounds} rounds): audio-only "
              f"{s[0]['request_bytes']} bytes, latency p50 {med(s, 'p50_ms'):.2f} ms, input {med(s, 'input_p50_ms'):.2f} ms, "
              f"overhead {ov_s:.2f} ms ({100 * sh_s:.1f} %); client-built u8 {c[0]['request_bytes']} bytes, latency p50 "
              f"{med(c, 'p50_ms'):.2f} ms, overhead {ov_c:.2f} ms ({100 * sh_c:.1f} %)")
        j = rq["server_jpeg"]
        ov_j, sh_j = med(j, "overhead_p50_ms"), med(j, "overhead_share_p50")
        print(f"  same, audio-only with jpeg frames (demo avatar: ~44 KB instead of ~272 KB per PNG): latency p50 "
              f"{med(j, 'p50_ms'):.2f} ms, overhead {ov_j:.2f} ms ({100 * sh_j:.1f} %)")
        L.ratio_line("audio_only_overhead_ms", ov_s, "<= 1 ms", ov_s <= 1.0)
        L.ratio_line("audio_only_overhead_share", sh_s, "<= 0.05", sh_s <= 0.05)
        L.ratio_line("audio_only_jpeg_overhead_ms", ov_j, "<= 1 ms", ov_j <= 1.0)
        L.ratio_line("audio_only_jpeg_overhead_share", sh_j, "<= 0.05", sh_j <= 0.05)
        L.ratio_line("audio_only_overhead_vs_u8", ov_s / ov_c, "(info)", True)
        L.ratio_line("audio_only_bytes_vs_u8", s[0]["request_bytes"] / c[0]["request_bytes"], "(info)", True)
        cc = bench_concurrency(srv, args.requests * 2)
        for k, v in cc.items():
            print(f"4 clients, visual {k}: {v['frames_per_s']:.1f} frames/s, ceiling {v['ceiling_frames_per_s']:.1f} "
                  f"(= {os.cpu_count()} cores / CPU per request), ratio {v['ratio']:.3f}; server CPU "
                  f"{v['server_cpu_ms_per_frame']:.2f} ms/frame, client CPU {v['client_cpu_ms_per_request']:.2f} ms/request")
        L.ratio_line("audio_only_4clients_vs_ceiling", cc["server"]["ratio"], ">= 0.95", cc["server"]["ratio"] >= 0.95)
    L.save_result("audio_only", {"machine": L.machine(), "build": b, "requests": rq, "concurrency": cc})


if __name__ == "__main__":
    main()
