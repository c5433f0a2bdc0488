#!/usr/bin/python3
"""Targets 1 and 2: composite + PNG-encode a 1280x720 frame with a 400x400
crop, lipsyncd vs the reference OpenCV pipeline, in the same run.

Inputs (same for both): a real photograph (Debian's mate-backgrounds) scaled
to 1280x720; a 320x320 "prediction" = the photo's own face rectangle scaled
to 320x320 with slight noise (what a lip-sync model returns: the same face,
redrawn); 4 rectangle positions of 400x400 around the centre, cycled.

Per core (this process and bench_pixels pinned to CPU 0; OpenCV limited to
one thread; frames/s per core = frames per CPU-second of the process, so
other work on the machine does not skew the ratio; wall-clock figures are
reported too; the reference runs before, between and after our two runs):
  ours      build/bench/bench_pixels --mode single: the server's per-frame
            path (band copy + ls_composite + ls_png_encode_spliced, top/bottom
            precompressed once) and the plain whole-frame ls_png_encode_rgb;
            margin 4 (the server default, 328 canvas) and margin 0 (the same
            geometry as the reference: the 320 crop stretched to 400x400).
  reference frame = background.copy(); cv2.resize(pred, (400, 400));
            frame[y1:y2, x1:x2] = crop; cv2.imencode('.png', frame) defaults.
Checks: our PNG decodes (libspng inside bench_pixels, and cv2.imdecode here)
to exactly the composited pixels; with margin 0 our pixels are within 1 of
OpenCV's INTER_LINEAR resize.

Finding aid: build/bench/bench_deflate compresses the band rows of the
photo (SUB / AVG filtered) with ISA-L levels, zlib level 1 (default, Z_RLE
as OpenCV, Huffman-only) and the server's own Huffman-only coder (src/media/huffman.c).

Target 2 (both cores): bench_pixels --mode batch: a batch of 10 frames with
ls_parallel_for (ls_pool_start(0)) vs one by one; ratio of wall times.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lsbench as L  # noqa: E402

RECTS = [(440, 160), (436, 156), (444, 164), (440, 168)]  # top-left corners of 400x400
SIDE = 400


def prepare(photo, tag):
    import cv2
    bg_bgr = L.photo_frame(photo)
    x1, y1 = RECTS[0]
    face = cv2.resize(bg_bgr[y1:y1 + SIDE, x1:x1 + SIDE], (L.P, L.P), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(7)
    noisy = np.clip(face.astype(np.int16) + rng.integers(-2, 3, face.shape), 0, 255).astype(np.uint8)
    pred_bgr = noisy  # uint8 HWC, BGR: the reference's input
    rgb_planes = pred_bgr[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0  # R,G,B planes
    d = os.path.join(L.WORK_DIR, "composite-" + tag)
    os.makedirs(d, exist_ok=True)
    bg_path = os.path.join(d, "bg.png")
    cv2.imwrite(bg_path, bg_bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    pred_path = os.path.join(d, "pred.f32")
    rgb_planes.tofile(pred_path)
    return d, bg_bgr, pred_bgr, bg_path, pred_path


def reference(bg_bgr, pred_bgr, seconds, trials):
    """Per trial: frames per CPU-second of this process (per core) and per
    wall second; mean PNG bytes; the first frame and PNG."""
    import cv2
    fps_cpu, fps_wall, sizes = [], [], []
    first = None
    for t in range(trials):
        n = 0
        t0, c0 = time.perf_counter(), time.process_time()
        end = t0 + seconds
        while True:
            x1, y1 = RECTS[n % len(RECTS)]
            frame = bg_bgr.copy()
            crop = cv2.resize(pred_bgr, (SIDE, SIDE))
            frame[y1:y1 + SIDE, x1:x1 + SIDE] = crop
            ok, buf = cv2.imencode(".png", frame)
            if not ok:
                raise SystemExit("cv2.imencode failed")
            if first is None:
                first = (frame.copy(), buf)
            sizes.append(len(buf))
            n += 1
            if time.perf_counter() >= end:
                break
        fps_wall.append(n / (time.perf_counter() - t0))
        fps_cpu.append(n / (time.process_time() - c0))
    return fps_cpu, fps_wall, float(np.mean(sizes)), first


def run_photo(photo, seconds, trials, primary):
    import cv2
    tag = os.path.splitext(os.path.basename(photo))[0]
    d, bg_bgr, pred_bgr, bg_path, pred_path = prepare(photo, tag)
    rects = ";".join(f"{x},{y},{x + SIDE},{y + SIDE}" for x, y in RECTS)
    exe = os.path.join(L.BENCH_BIN, "bench_pixels")
    common = [exe, "--bg", bg_path, "--pred", pred_path, "--rects", rects, "--mode", "single",
              "--seconds", str(seconds), "--trials", str(trials)]
    print(f"\n== photo {photo} ==", flush=True)
    # Interleaved on CPU 0: reference, ours (margin 4), reference, ours
    # (margin 0), reference; per core = frames per CPU-second of the process.
    L.pin_to({0})
    cv2.setNumThreads(1)
    out4 = os.path.join(d, "m4")
    out0 = os.path.join(d, "m0")
    os.makedirs(out4, exist_ok=True)
    os.makedirs(out0, exist_ok=True)
    ref_cpu, ref_wall = [], []

    def ref_round():
        c, w, nbytes, first = reference(bg_bgr, pred_bgr, seconds, trials)
        ref_cpu.extend(c)
        ref_wall.extend(w)
        return nbytes, first

    ref_bytes, (ref_frame, ref_png) = ref_round()
    _, r4 = L.run_c_bench(common + ["--margin", "4", "--outdir", out4], pin="0")
    ref_round()
    _, r0 = L.run_c_bench(common + ["--margin", "0", "--outdir", out0], pin="0")
    ref_round()
    L.pin_to(L.all_cpus())
    ref_fps_m = L.p50(ref_cpu)
    print(f"reference (OpenCV {cv2.__version__}): {ref_fps_m:.1f} frames/s per core ({L.p50(ref_wall):.1f} wall), "
          f"{1000 / ref_fps_m:.2f} ms/frame, {ref_bytes:.0f} bytes/frame", flush=True)
    ref_fps_all = ref_cpu

    # independent decode check (zlib via OpenCV) + pixel agreement with OpenCV
    checks = {}
    for name, outdir in (("m4", out4), ("m0", out0)):
        exp = np.fromfile(os.path.join(outdir, "expected.rgb"), np.uint8).reshape(L.FRAME_H, L.FRAME_W, 3)
        for path in ("spliced", "whole"):
            png = np.fromfile(os.path.join(outdir, f"ours_{path}.png"), np.uint8)
            dec = cv2.imdecode(png, cv2.IMREAD_UNCHANGED)
            checks[f"{name}_{path}_cv2_exact"] = bool(dec is not None and dec.shape == exp.shape and
                                                       np.array_equal(dec[:, :, ::-1], exp))
        if name == "m0":
            diff = np.abs(exp[:, :, ::-1].astype(int) - ref_frame.astype(int))
            checks["m0_vs_opencv_max_diff"] = int(diff.max())
    print("checks:", checks, flush=True)

    res = {"photo": photo, "reference": {"fps": ref_fps_m, "fps_runs": ref_fps_all, "fps_wall": L.p50(ref_wall),
                                         "bytes": ref_bytes,
                                         "opencv": cv2.__version__},
           "margin4": r4, "margin0": r0, "checks": checks}
    sp = r4["spliced"]
    res["fps_ratio_spliced"] = sp["fps"] / ref_fps_m
    res["fps_ratio_whole"] = r4["whole"]["fps"] / ref_fps_m
    res["bytes_ratio_spliced"] = sp["bytes"] / ref_bytes
    res["bytes_ratio_whole"] = r4["whole"]["bytes"] / ref_bytes
    res["fps_ratio_spliced_m0"] = r0["spliced"]["fps"] / ref_fps_m
    res["bytes_ratio_spliced_m0"] = r0["spliced"]["bytes"] / ref_bytes
    print(f"ratio frames/s per core, spliced (server path) / reference: {res['fps_ratio_spliced']:.2f}x "
          f"(margin 0: {res['fps_ratio_spliced_m0']:.2f}x); whole-frame / reference: {res['fps_ratio_whole']:.2f}x")
    print(f"ratio bytes, spliced / reference: {res['bytes_ratio_spliced']:.3f}; whole / reference: "
          f"{res['bytes_ratio_whole']:.3f}", flush=True)
    exact = all(v for k, v in checks.items() if k.endswith("_exact")) and \
        r4["spliced"]["mismatch"] == 0 and r4["whole"]["mismatch"] == 0 and r0["spliced"]["mismatch"] == 0 and \
        r4["raw"]["mismatch"] == 0
    res["decode_exact"] = exact
    for fmt in ("jpeg", "raw"):
        res[f"fps_ratio_{fmt}"] = r4[fmt]["fps"] / ref_fps_m
        res[f"bytes_ratio_{fmt}"] = r4[fmt]["bytes"] / ref_bytes
    print(f"other formats (issue target 3), per core vs the reference PNG pipeline: jpeg q90 "
          f"{r4['jpeg']['fps']:.1f} frames/s ({res['fps_ratio_jpeg']:.2f}x), {r4['jpeg']['bytes']:.0f} bytes "
          f"({res['bytes_ratio_jpeg']:.3f}x); raw {r4['raw']['fps']:.1f} frames/s ({res['fps_ratio_raw']:.2f}x), "
          f"{r4['raw']['bytes']:.0f} bytes", flush=True)
    if primary:
        L.ratio_line("formats_jpeg_fps_per_core_vs_opencv_png", res["fps_ratio_jpeg"], "(report)", True)
        L.ratio_line("formats_raw_fps_per_core_vs_opencv_png", res["fps_ratio_raw"], "(report)", True)
        L.ratio_line("t1_fps_per_core_spliced_vs_opencv", res["fps_ratio_spliced"], ">=5", res["fps_ratio_spliced"] >= 5)
        L.ratio_line("t1_fps_per_core_whole_vs_opencv", res["fps_ratio_whole"], "(info)", True)
        L.ratio_line("t1_bytes_spliced_vs_opencv", res["bytes_ratio_spliced"], "<=1.10",
                     res["bytes_ratio_spliced"] <= 1.10)
        L.ratio_line("t1_decode_exact", 1.0 if exact else 0.0, "==1", exact)
    return res, bg_path, pred_path, rects


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=0.6, help="per trial")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--extra-photos", action="store_true", help="also run two more photos")
    args = ap.parse_args()
    out = {"machine": L.machine()}
    res, bg_path, pred_path, rects = run_photo(L.PHOTO, args.seconds, args.trials, True)
    out["primary"] = res
    if args.extra_photos:
        out["extra"] = []
        for p in L.EXTRA_PHOTOS:
            if os.path.exists(p):
                out["extra"].append(run_photo(p, args.seconds, args.trials, False)[0])

    print("\n== where the PNG bytes and encode time go: the band rows of the primary photo ==", flush=True)
    _, rd = L.run_c_bench([os.path.join(L.BENCH_BIN, "bench_deflate"), "--bg", bg_path, "--rows",
                           f"{RECTS[0][1]},{RECTS[0][1] + SIDE}", "--reps", "7"], pin="0")
    out["deflate"] = rd

    print("\n== target 2: batch of 10 over both cores ==", flush=True)
    exe = os.path.join(L.BENCH_BIN, "bench_pixels")
    _, rb = L.run_c_bench([exe, "--bg", bg_path, "--pred", pred_path, "--rects", rects, "--mode", "batch",
                           "--batch", "10", "--rounds", "21", "--margin", "4"])
    out["batch"] = rb
    L.ratio_line("t2_parallel_batch10_wall_vs_sequential", rb["ratio"], "<=0.6", rb["ratio"] <= 0.6)
    L.ratio_line("t2_parallel_batch10_fastest_rounds", rb["ratio_min"], "(info: least disturbed)", True)
    L.save_result("composite", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
