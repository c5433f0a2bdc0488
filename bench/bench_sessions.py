#!/usr/bin/python3
"""Live sessions sustained at 25 fps: H.264 against JPEG (and PNG), same run.

N clients (`lipsync session demo --wav speech.wav --realtime`, each its own
process sending 20 ms of audio every 20 ms) run side by side against one
server on the demo model; N grows 1, 2, 3, 4, 6, 8 until a round fails. A
round sustains 25 fps when every session ends within 1 s of its audio
(nothing fell behind) and every session's frame latency (receipt minus
sending the last audio the frame depends on) has p99 <= 200 ms. Reported:
the most sessions sustained per format, the ratio h264 / jpeg, and the
bytes per stream (kbit/s at 25 fps) of each format from its one-session
round. The clients share the machine's cores with the server, as they
would not in production: the counts are a floor.

    LS_BUILD_DIR=$PWD/build /usr/bin/python3 bench/bench_sessions.py
"""

import os
import re
import subprocess
import sys
import time
import wave

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lsbench as L  # noqa: E402

COUNTS = (1, 2, 3, 4, 6, 8)
P99_LIMIT_MS = 200.0
LINE = re.compile(r"in ([\d.]+) s; first frame after (\d+) ms; frame latency .* p50 (\d+) ms, p90 (\d+) ms, "
                  r"p99 (\d+) ms, max (\d+) ms")
BYTES = re.compile(r"(\d+) bytes, (\d+) kbit/s")


def round_of(addr, wav, audio_s, fmt, n):
    cli = os.path.join(L.BUILD_DIR, "lipsync")
    procs = [subprocess.Popen([cli, "--server", addr, "--timeout", "120", "session", "demo", "--wav", wav,
                               "--realtime", "--format", fmt], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(n)]
    out = []
    for p in procs:
        so, se = p.communicate(timeout=300)
        m, b = LINE.search(so), BYTES.search(so)
        if p.returncode != 0 or not m:
            out.append({"ok": False, "error": (se or so)[-300:]})
            continue
        secs, first, p50, p90, p99, mx = float(m.group(1)), *map(int, m.group(2, 3, 4, 5, 6))
        out.append({"ok": True, "seconds": secs, "first_ms": first, "p50_ms": p50, "p99_ms": p99, "max_ms": mx,
                    "kbps": int(b.group(2)) if b else None})
    sustained = all(r["ok"] and r["seconds"] <= audio_s + 1.0 and r["p99_ms"] <= P99_LIMIT_MS for r in out)
    return sustained, out


def main():
    wav = os.path.join(L.DEMO_DIR, "speech.wav")
    with wave.open(wav, "rb") as w:
        audio_s = w.getnframes() / w.getframerate()
    cfg = os.path.join(L.DEMO_DIR, "demo.yaml")
    text = (open(cfg).read().replace("models/", os.path.join(L.DEMO_DIR, "models") + "/")
            .replace("avatar/", os.path.join(L.DEMO_DIR, "avatar") + "/")
            .replace("speech.wav", os.path.join(L.DEMO_DIR, "speech.wav")))
    results = {"machine": L.machine(), "audio_seconds": audio_s, "p99_limit_ms": P99_LIMIT_MS, "formats": {}}
    with L.Server("sessions", text) as srv:
        for fmt in ("h264", "jpeg", "png"):
            best, rounds = 0, []
            for n in COUNTS:
                t0 = time.time()
                ok, out = round_of(srv.addr, wav, audio_s, fmt, n)
                worst = max((r.get("p99_ms", 1e9) for r in out), default=0)
                print(f"{fmt} x{n}: {'sustained' if ok else 'NOT sustained'}, worst p99 {worst} ms "
                      f"({time.time() - t0:.1f} s)", flush=True)
                rounds.append({"sessions": n, "sustained": ok, "clients": out})
                if not ok:
                    break
                best = n
            kbps = rounds[0]["clients"][0].get("kbps") if rounds and rounds[0]["clients"] else None
            results["formats"][fmt] = {"max_sustained": best, "kbps_per_stream": kbps, "rounds": rounds}
            print(f"{fmt}: {best} sessions sustained at 25 fps; {kbps} kbit/s per stream", flush=True)
    L.save_result("bench_sessions", results)
    h, j = results["formats"]["h264"]["max_sustained"], results["formats"]["jpeg"]["max_sustained"]
    L.ratio_line("sessions_h264_vs_jpeg", h / j if j else float("nan"), "> 0 (reported)", "MET" if h else "NOT MET")
    kh, kj = results["formats"]["h264"]["kbps_per_stream"], results["formats"]["jpeg"]["kbps_per_stream"]
    if kh and kj:
        L.ratio_line("stream_bits_h264_vs_jpeg", kh / kj, "<= 0.25", kh / kj <= 0.25)


if __name__ == "__main__":
    main()
