#!/usr/bin/python3
"""Live sessions beside an offline one: the render gate on against off.

Each round runs LIVE paced sessions (`lipsync session demo --wav speech.wav
--realtime --format jpeg`, 20 ms every 20 ms, 10.95 s) and, started with
them, one offline session (the same CLI without --realtime: REPEAT copies of
the speech, sent as fast as gRPC takes it, so it runs ahead of real time).
The peer is the same server binary with `sessions.prioritize_live: false`;
the two servers alternate, ROUNDS rounds each, in one run. Reported per
variant: the live sessions' worst frame latency p99 (client receipt minus
the sending of the last audio each frame depends on), late frames (the
server's lipsync_session_late_frames_total, over sessions.latency_budget_ms
150), how long after their audio the live sessions ended, and the offline
session's frames per second. Ratio: live p99 with the gate / without.

    LS_BUILD_DIR=$PWD/build /usr/bin/python3 bench/bench_offline.py
"""

import os
import re
import subprocess
import sys
import urllib.request
import wave

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lsbench as L  # noqa: E402

LIVE, REPEAT, ROUNDS = 2, 6, 2
LINE = re.compile(r": (\d+) frames \(([\d.]+) s of audio.*\) in ([\d.]+) s; first frame after (\d+) ms; .* p99 (\d+) ms")


def late_frames(http):
    text = urllib.request.urlopen(http + "/metrics", timeout=30).read().decode()
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("lipsync_session_late_frames_total{"))


def run(srv, wav, long_wav):
    cli = os.path.join(L.BUILD_DIR, "lipsync")
    base = [cli, "--server", srv.addr, "--timeout", "600", "session", "demo", "--format", "jpeg", "--wav"]
    late0 = late_frames(srv.http)
    procs = [subprocess.Popen(base + [wav, "--realtime"], stdout=subprocess.PIPE, text=True) for _ in range(LIVE)]
    off = subprocess.Popen(base + [long_wav], stdout=subprocess.PIPE, text=True)
    live = []
    for p in procs:
        m = LINE.search(p.communicate(timeout=600)[0])
        if p.returncode or not m:
            raise SystemExit("a live session failed")
        live.append({"frames": int(m.group(1)), "audio_s": float(m.group(2)), "seconds": float(m.group(3)),
                     "p99_ms": int(m.group(5))})
    m = LINE.search(off.communicate(timeout=600)[0])
    if off.returncode or not m:
        raise SystemExit("the offline session failed")
    return {"live": live, "late_frames": late_frames(srv.http) - late0,
            "offline": {"frames": int(m.group(1)), "seconds": float(m.group(3)),
                        "fps": int(m.group(1)) / float(m.group(3))}}


def main():
    wav = os.path.join(L.DEMO_DIR, "speech.wav")
    long_wav = os.path.join(L.WORK_DIR, "speech_x%d.wav" % REPEAT)
    with wave.open(wav, "rb") as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    with wave.open(long_wav, "wb") as w:
        w.setparams(params)
        w.writeframes(frames * REPEAT)
    cfg = open(os.path.join(L.DEMO_DIR, "demo.yaml")).read()
    cfg = (cfg.replace("models/", os.path.join(L.DEMO_DIR, "models") + "/")
           .replace("avatar/", os.path.join(L.DEMO_DIR, "avatar") + "/")
           .replace("speech.wav", os.path.join(L.DEMO_DIR, "speech.wav")))
    variants = {"gate on": cfg + "sessions:\n  prioritize_live: true\n",
                "gate off": cfg + "sessions:\n  prioritize_live: false\n"}
    results = {"machine": L.machine(), "live_sessions": LIVE, "offline_audio_s": REPEAT * len(frames) / 2 / 16000,
               "rounds": {k: [] for k in variants}}
    for r in range(ROUNDS):
        for name, text in variants.items():
            with L.Server(name.replace(" ", "_"), text) as srv:
                out = run(srv, wav, long_wav)
            results["rounds"][name].append(out)
            print("%s round %d: live p99 %s ms, ended %s s after their audio, late frames %d; offline %.1f frames/s"
                  % (name, r + 1, [x["p99_ms"] for x in out["live"]],
                     [round(x["seconds"] - x["audio_s"], 2) for x in out["live"]], out["late_frames"],
                     out["offline"]["fps"]), flush=True)
    summary = {}
    for name, rounds in results["rounds"].items():
        summary[name] = {"worst_live_p99_ms": max(x["p99_ms"] for o in rounds for x in o["live"]),
                         "late_frames": sum(o["late_frames"] for o in rounds),
                         "offline_fps": sum(o["offline"]["fps"] for o in rounds) / len(rounds)}
        print(name, summary[name], flush=True)
    results["summary"] = summary
    L.save_result("bench_offline", results)
    on, off = summary["gate on"], summary["gate off"]
    L.ratio_line("live_p99_gate_on_vs_off", on["worst_live_p99_ms"] / off["worst_live_p99_ms"], "< 1",
                 on["worst_live_p99_ms"] < off["worst_live_p99_ms"])


if __name__ == "__main__":
    main()
