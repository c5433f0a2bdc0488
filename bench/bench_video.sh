#!/usr/bin/env bash
# Video out per frame (bench_video.c): a raw StreamSession of the demo avatar
# (the bundled speech) is recorded once, then each encoder gets the same
# frames in the same run.
#   bench/bench_video.sh [BUILD_DIR] [KBPS]
# Needs libx264-dev (apt-get install libx264-dev): the bench measures x264
# beside OpenH264; lipsyncd itself never links x264.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
kbps=${2:-2000}
make -s -C "$here/bench" BUILD="$build" "$build/bench/bench_video"
work=$(mktemp -d)
trap 'kill $srv 2>/dev/null || true; rm -rf "$work" "$build/demo/bench_video.yaml"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed "s/0.0.0.0:50053/127.0.0.1:$port/" "$build/demo/demo.yaml" > "$build/demo/bench_video.yaml"
"$build/lipsyncd" --config "$build/demo/bench_video.yaml" > "$work/server.log" 2>&1 &
srv=$!
for _ in $(seq 100); do "$build/lipsync" --server "127.0.0.1:$port" health >/dev/null 2>&1 && break; sleep 0.2; done
"$build/lipsync" --server "127.0.0.1:$port" session demo --wav "$build/demo/speech.wav" --format raw --out "$work/raw" >/dev/null
n=$(ls "$work/raw" | wc -l)
cat $(ls "$work"/raw/*.rgb | sort) > "$work/frames.rgb"
# The rows the demo's face rectangles cover.
read -r y1 y2 < <(python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
print(min(v['rect'][1] for v in r.values()), max(v['rect'][3] for v in r.values()))" "$build/demo/avatar/crop_rects.json")
echo "frames $n, face rows $y1..$y2, target $kbps kbit/s; name ms_per_frame kbit_per_s"
taskset -c 0 "$build/bench/bench_video" "$work/frames.rgb" 1280 720 "$n" "$y1" "$y2" "$kbps" 2>/dev/null
