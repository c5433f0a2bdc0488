#!/usr/bin/env bash
# Set up, build, and run lipsyncd on the built-in demo avatar (gRPC port 50053;
# demo page, gRPC-Web and /metrics on http://localhost:8053/).
# Extra arguments go to lipsyncd (e.g. --listen 127.0.0.1:6000).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup.sh"
cmake -S "$here" -B "$here/build" >/dev/null
cmake --build "$here/build" -j"$(nproc)"
exec "$here/build/lipsyncd" "$@"
