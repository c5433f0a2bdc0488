#!/usr/bin/python3
"""Turn the benchmarks' JSON results into the Markdown tables of
docs/PERFORMANCE.md.

    /usr/bin/python3 bench/summarize.py [RESULTS_DIR]   (default build/bench/results)
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def load(d, name):
    p = os.path.join(d, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None


def yes(b):
    return "**met**" if b else "**not met**"


def table(rows):
    out = ["| measure | lipsyncd | peer | ratio | target | verdict |", "|---|---|---|---|---|---|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.environ.get("LS_BUILD_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build"),
        "bench", "results")
    c = load(d, "composite")
    if c:
        p = c["primary"]
        m4, m0, ref = p["margin4"], p["margin0"], p["reference"]
        print("### 1. Composite + PNG encode, per core\n")
        print(table([
            ("frames/s, server path (spliced, margin 4)", f"{m4['spliced']['fps']:.1f}", f"{ref['fps']:.1f}",
             f"{p['fps_ratio_spliced']:.2f}x", ">= 5x", yes(p["fps_ratio_spliced"] >= 5)),
            ("frames/s, spliced, margin 0 (reference geometry)", f"{m0['spliced']['fps']:.1f}", f"{ref['fps']:.1f}",
             f"{p['fps_ratio_spliced_m0']:.2f}x", ">= 5x", yes(p["fps_ratio_spliced_m0"] >= 5)),
            ("frames/s, whole-frame ls_png_encode_rgb", f"{m4['whole']['fps']:.1f}", f"{ref['fps']:.1f}",
             f"{p['fps_ratio_whole']:.2f}x", "(info)", ""),
            ("bytes per frame, spliced", f"{m4['spliced']['bytes']:.0f}", f"{ref['bytes']:.0f}",
             f"{p['bytes_ratio_spliced']:.3f}", "<= 1.10", yes(p["bytes_ratio_spliced"] <= 1.10)),
            ("bytes per frame, whole-frame", f"{m4['whole']['bytes']:.0f}", f"{ref['bytes']:.0f}",
             f"{p['bytes_ratio_whole']:.3f}", "<= 1.10", yes(p["bytes_ratio_whole"] <= 1.10)),
            ("PNG decodes to the composited pixels", "exact" if p["decode_exact"] else "MISMATCH", "", "", "exact",
             yes(p["decode_exact"])),
        ]))
        print(f"\nms per frame: spliced {m4['spliced']['ms']:.2f} (band copy + composite {m4['composite_ms']:.2f}, "
              f"encode {m4['spliced']['ms'] - m4['composite_ms']:.2f}), whole {m4['whole']['ms']:.2f}, reference "
              f"{1000 / ref['fps']:.2f}; segments built once per background frame {m4['segment_build_ms']:.2f} ms. "
              f"Margin-0 pixels vs OpenCV: max difference {p['checks'].get('m0_vs_opencv_max_diff')}.")
        for e in c.get("extra", []):
            print(f"- {os.path.basename(e['photo'])}: spliced {e['margin4']['spliced']['fps']:.1f} vs reference "
                  f"{e['reference']['fps']:.1f} frames/s = {e['fps_ratio_spliced']:.2f}x; bytes "
                  f"{e['bytes_ratio_spliced']:.3f}x; decode exact: {e['decode_exact']}")
        if c.get("deflate"):
            rd = c["deflate"]
            print(f"\nThe 400 band rows ({rd['rows'][0]}..{rd['rows'][1]}) of the primary photo through other deflaters "
                  "(bench_deflate, one core):\n")
            print("| deflate | filter | bytes | ms |\n|---|---|---|---|")
            for x in rd["runs"]:
                print(f"| {x['deflate']} | {x['filter']} | {x['bytes']} | {x['ms']:.2f} |")
        if "jpeg" in m4:
            print("\nOutput formats (issue target 3), same frames, same core, against the reference PNG pipeline:\n")
            print("| format | frames/s per core | ms/frame | bytes/frame | vs OpenCV PNG frames/s | vs its bytes |\n"
                  "|---|---|---|---|---|---|")
            for name, key in (("png (spliced, server path)", "spliced"), ("jpeg, quality 90", "jpeg"),
                              ("raw RGB24", "raw")):
                x = m4[key]
                print(f"| {name} | {x['fps']:.1f} | {x['ms']:.2f} | {x['bytes']:.0f} | {x['fps'] / ref['fps']:.2f}x | "
                      f"{x['bytes'] / ref['bytes']:.3f} |")
        b = c["batch"]
        print("\n### 2. Batch of 10 over both cores\n")
        print(table([("wall ms, batch of 10 (ls_parallel_for vs one by one)", f"{b['parallel_ms']:.2f}",
                      f"{b['sequential_ms']:.2f}", f"{b['ratio']:.3f}", "<= 0.6", yes(b["ratio"] <= 0.6))] +
                    ([("same, fastest of the rounds (least disturbed)", f"{b['parallel_min_ms']:.2f}",
                       f"{b['sequential_min_ms']:.2f}", f"{b['ratio_min']:.3f}", "(info)", "")]
                     if "ratio_min" in b else [])))
    r = load(d, "request")
    if r:
        e = r["in_process"]
        print("\n### 3. Request path (demo model, batch 5, concurrency 1)\n")
        print(table([
            ("server overhead p50 (latency - inference - composite), ms", f"{r['overhead_p50_ms']:.2f}",
             f"latency {r['latency_p50_ms']:.2f}", f"{100 * r['overhead_share_p50']:.0f}%", "<= 3 ms and <= 10%",
             yes(r["overhead_p50_ms"] <= 3 and r["overhead_share_p50"] <= 0.10)),
            ("same, C client (lipsync bench, per request: latency - inference - composite), ms",
             f"{r.get('cli_overhead_p50_ms', float('nan')):.2f}", f"latency {r['cli']['p50_ms']:.2f}",
             f"{100 * r.get('cli_overhead_share', float('nan')):.0f}%", "<= 3 ms and <= 10%",
             yes(r.get("cli_overhead_p50_ms", 99) <= 3 and r.get("cli_overhead_share", 1) <= 0.10)),
        ] + [row for enc in ("f16", "u8") if enc in r.get("dtypes", {}) for row in (
            (f"same, tensors as {enc} ({r['dtypes'][enc]['request_bytes'] / 1e6:.2f} MB), ms",
             f"{r['dtypes'][enc]['overhead_p50_ms']:.2f}", f"latency {r['dtypes'][enc]['latency_p50_ms']:.2f}",
             f"{100 * r['dtypes'][enc]['overhead_share_p50']:.0f}%", "<= 3 ms and <= 10%",
             yes(r["dtypes"][enc]["target_met"])),
            (f"same, {enc}, C client, ms", f"{r['dtypes'][enc]['cli_overhead_p50_ms']:.2f}",
             f"latency {r['dtypes'][enc]['cli']['p50_ms']:.2f}", f"{100 * r['dtypes'][enc]['cli_overhead_share']:.0f}%",
             "<= 3 ms and <= 10%", yes(r["dtypes"][enc]["target_met_c_client"])),
        )] + [
            ("server inference p50 vs raw ORT Run, ms", f"{r['inference_p50_ms']:.2f}", f"{e['raw_run']['p50']:.2f}",
             f"{r['inference_p50_ms'] / e['raw_run']['p50']:.2f}", "(info)", ""),
        ]))
        dec = (f"zero-copy decode incl. NaN scan {e['wire_decode']['p50']:.2f} (NaN scan alone {e['nan_scan']['p50']:.2f})"
               if "wire_decode" in e else
               f"validation incl. NaN scan {e['infer_validation_setup']['p50']:.2f}")
        print(f"\nBreakdown (p50, ms): latency {r['latency_p50_ms']:.2f} = inference {r['inference_p50_ms']:.2f} + "
              f"composite {r['composite_p50_ms']:.2f} + inside the server {r['inside_server_p50_ms']:.2f} + outside "
              f"(transfer, gRPC) {r['outside_server_p50_ms']:.2f}. In-process: {dec}; for comparison the "
              f"protobuf-c path: flatten {e['flatten']['p50']:.2f} + unpack {e['unpack']['p50']:.2f}; memcpy of the "
              f"request {e['memcpy']['p50']:.2f}; response pack {e['pack_response']['p50']:.2f}. Transfer estimate: "
              f"upload {r.get('upload_estimate_ms', float('nan')):.2f}, response + rest "
              f"{r.get('download_and_rest_estimate_ms', float('nan')):.2f}. Probes: Health {r['health_p50_ms']:.2f}, "
              f"rejected-after-decode {r['reject_after_unpack_p50_ms']:.2f}. C CLI latency p50 "
              f"{r['cli']['p50_ms']:.2f}. Server CPU per request {r['server_cpu_ms_per_request']:.1f} ms, "
              f"{r['server_minor_faults_per_request']:.0f} page faults.")
        for enc in ("f16", "u8"):
            x = r.get("dtypes", {}).get(enc)
            if x:
                print(f"\n{enc}: latency {x['latency_p50_ms']:.2f} = inference {x['inference_p50_ms']:.2f} + composite "
                      f"{x['composite_p50_ms']:.2f} + inside the server {x['inside_server_p50_ms']:.2f} + outside "
                      f"{x['outside_server_p50_ms']:.2f}; in-process decode (convert to float32) "
                      f"{x.get('decode_in_process_ms', float('nan')):.2f}; upload estimate "
                      f"{x.get('upload_estimate_ms', float('nan')):.2f}; server CPU per request "
                      f"{x['server_cpu_ms_per_request']:.1f} ms, {x['server_minor_faults_per_request']:.0f} page faults.")
    q = load(d, "concurrency")
    if q:
        print("\n### 4. Concurrency (demo model, batch 5)\n")
        print(table([("frames/s, 4 clients vs 1", f"{q['fps_4']:.1f}", f"{q['fps_1']:.1f}", f"{q['ratio']:.2f}x",
                      ">= 1.7x", yes(q["ratio"] >= 1.7))] +
                    ([("same, best round of each (least disturbed)", f"{q['best_fps_4']:.1f}", f"{q['best_fps_1']:.1f}",
                       f"{q['ratio_best']:.2f}x", "(info)", "")] if "ratio_best" in q else [])))
        print(f"\nCPU per request at 4 clients: server {q['server_cpu_ms_per_request_4']:.1f} ms, client "
              f"{q['client_cpu_ms_per_request_4']:.1f} ms -> CPU-bound ceiling {q['cpu_bound_ceiling_fps']:.0f} "
              f"frames/s; latency p50 1 client {q['p50_ms_1']:.1f} ms, 4 clients {q['p50_ms_4']:.1f} ms.")
    k = load(d, "coldload")
    if k:
        s, mem = k["switching"], k["memory"]
        mib = 1 << 20
        print("\n### 5. Cold load and model switching\n")
        print(table([
            ("cold request -> first response (100 frames, batch 5), s", f"{k['cold_first_ms'] / 1000:.3f}",
             f"warm {k['warm_same_request_ms'] / 1000:.3f}", "", "<= 1.0 s", yes(k["cold_first_ms"] <= 1000)),
            ("A,B,A,B vs A,A,A,A, client median ms (gRPC)", f"{s['median_ABAB_ms']:.2f}", f"{s['median_AAAA_ms']:.2f}",
             f"{s['client_diff_ms']:+.3f} ms", "(info: jitter)", ""),
            ("A,B,A,B vs A,A,A,A, server total_time median ms", f"{s['server_total_median_ABAB_ms']:.2f}",
             f"{s['server_total_median_AAAA_ms']:.2f}", f"{s['server_diff_ms']:+.3f} ms", "(info: jitter)", ""),
        ] + ([(f"A,B,A,B vs A,A,A,A, in-process ls_model_infer batch {s['in_process']['batch']}, median ms",
                f"{s['in_process']['median_alt_ms']:.3f}", f"{s['in_process']['median_same_ms']:.3f}",
                f"{s['in_process']['trimmed_mean_ms']:+.4f} ms (95% {s['in_process']['ci95_ms'][0]:+.3f}.."
                f"{s['in_process']['ci95_ms'][1]:+.3f})", "< 0.1 ms",
                f"**{s.get('verdict', '?')}**")]
              if s.get("in_process") else [])))
        print("\nCold loads: " + "; ".join(f"{c['latency_ms']:.0f} ms (load {c['model_load_time_ms']:.0f}, "
                                            f"inference {c['inference_ms']:.1f}, composite {c['composite_ms']:.1f})"
                                            for c in k["cold"]) +
              f". Switching per-round difference: client {s['client_round_diff_mean_ms']:+.3f} +- "
              f"{s['client_round_diff_se_ms']:.3f} ms, server {s['server_round_diff_mean_ms']:+.3f} +- "
              f"{s['server_round_diff_se_ms']:.3f} ms (mean +- standard error over {s['rounds']} rounds).")
        print("\n### 6. Memory per avatar (100 frames 1280x720 + demo model)\n")
        print(table([
            ("process RSS growth after touching all frames, MiB", f"{mem['rss_growth_bytes'] / mib:.0f}",
             f"{mem['raw_plus_model_bytes'] / mib:.0f}", f"{mem['rss_growth_bytes'] / mem['raw_plus_model_bytes']:.2f}",
             "(report)", ""),
            ("process RSS growth from a trimmed baseline (after UnloadModel), MiB",
             f"{mem.get('rss_growth_trimmed_bytes', 0) / mib:.0f}", f"{mem['raw_plus_model_bytes'] / mib:.0f}",
             f"{mem.get('rss_growth_trimmed_bytes', 0) / mem['raw_plus_model_bytes']:.2f}", "(report)", ""),
            ("avatar's prepared frames (ls_avatar_memory_used), MiB", f"{mem.get('avatar_memory_used_bytes', 0) / mib:.0f}",
             f"{mem['raw_plus_model_bytes'] / mib:.0f}",
             f"{mem.get('avatar_memory_used_bytes', 0) / mem['raw_plus_model_bytes']:.2f}", "(report)", ""),
            ("GetModelStats memory_bytes, MiB", f"{mem['getmodelstats_memory_bytes'] / mib:.0f}",
             f"{mem['raw_plus_model_bytes'] / mib:.0f}",
             f"{mem['getmodelstats_memory_bytes'] / mem['raw_plus_model_bytes']:.2f}", "(report)", ""),
        ]))
        print(f"\nPeer = raw RGB of the frames ({mem['raw_rgb_bytes'] / mib:.0f} MiB) + model file "
              f"({mem['model_file_bytes'] / mib:.1f} MiB). PNG files on disk {mem['png_files_bytes'] / mib:.0f} MiB. "
              f"RSS after UnloadModel vs before the load: {(mem['rss_after_unload_bytes'] - mem['rss_before_bytes']) / mib:+.0f} MiB.")
    u = load(d, "unet")
    if u:
        print("\n### 7. Realistic model (U-Net, batch 5, concurrency 1)\n")
        print(table([
            ("end-to-end frames/s through the server", f"{u['fps']:.2f}", f"raw ORT {u['raw_ort_fps']:.2f}",
             f"{u['fps'] / u['raw_ort_fps']:.2f}", "(report)", ""),
            ("share of client time that is inference", f"{100 * u['inference_share']:.1f}%", "", "", "(report)", ""),
        ]))
        print(f"\nModel: {u['model']['params'] / 1e6:.2f} M parameters, {u['model']['gflop_per_frame']:.2f} GFLOP "
              f"per frame. Latency p50 {u['latency_p50_ms']:.0f} ms = inference {u['inference_p50_ms']:.0f} + "
              f"composite {u['composite_p50_ms']:.1f} + other; shares: composite {100 * u['composite_share']:.1f}%, "
              f"other {100 * u['other_share']:.1f}%. Raw ORT Run p50 {u['raw_ort_p50_ms']:.0f} ms.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
