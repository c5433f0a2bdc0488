#!/usr/bin/env bash
# One-time (idempotent) setup for lipsyncd on Debian 12:
#   1. installs the Debian packages the build, the tests and the benchmarks use
#      (prometheus for its promtool, which lints /metrics; chromium for the
#      demo page's browser test; on a systemd host the prometheus package
#      also enables a Prometheus server on :9090; fftw3 and soxr for the audio
#      front end, espeak-ng to synthesise the speech its tests use; haproxy
#      and nginx-light for scripts/run-cluster.sh and the scale-out tests,
#      which start their own instances on loopback ports, never the system
#      services);
#   2. fetches ONNX Runtime 1.21.0 into third_party/onnxruntime (ignored by git):
#      headers from Debian 13's libonnxruntime-dev (downloaded, never installed:
#      its library needs glibc 2.38), library from the npm package
#      onnxruntime-node@1.21.0 (CPU execution provider).
# Set ORT_ROOT to an existing ONNX Runtime tree (include/ + lib/) to skip step 2,
# e.g. a GPU release. Set LIPSYNC_SKIP_APT=1 to skip step 1.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

PKGS=(build-essential cmake pkg-config clang llvm libclang-rt-14-dev valgrind
      libgrpc-dev protobuf-c-compiler libprotobuf-c-dev grpc-proto
      libssl-dev libyaml-dev libjansson-dev libisal-dev libspng-dev libpng-dev zlib1g-dev libturbojpeg0-dev
      libmicrohttpd-dev libfftw3-dev libsoxr-dev espeak-ng libopenh264-dev libyuv-dev ffmpeg
      libavformat-dev libavcodec-dev libavutil-dev
      prometheus chromium
      python3 python3-numpy python3-grpcio python3-grpc-tools python3-onnx python3-protobuf python3-pil python3-opencv
      python3-h2
      haproxy nginx-light
      ca-certificates)

if [ "${LIPSYNC_SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

if [ -n "${ORT_ROOT:-}" ]; then
  echo "setup: using ONNX Runtime from ORT_ROOT=$ORT_ROOT"
  exit 0
fi

command -v npm >/dev/null || { echo "setup: npm is needed to fetch ONNX Runtime (apt-get install nodejs npm)"; exit 1; }
ORT_VERSION=1.21.0
dest="$here/third_party/onnxruntime"
if [ -f "$dest/.complete-$ORT_VERSION" ]; then
  exit 0
fi
echo "setup: fetching ONNX Runtime $ORT_VERSION into $dest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Headers: Debian 13 (trixie) package, through a private apt configuration so
# the system's /etc/apt is never touched.
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/etc/preferences.d" "$work/apt/etc/apt.conf.d"
echo "deb http://deb.debian.org/debian trixie main" > "$work/apt/sources.list"
touch "$work/apt/status"
aptopts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o "Dir::Etc::SourceParts=-"
         -o "Dir::Etc::Parts=$work/apt/etc/apt.conf.d" -o "Dir::Etc::PreferencesParts=$work/apt/etc/preferences.d"
         -o "Dir::State::Lists=$work/apt/lists" -o "Dir::State::Status=$work/apt/status"
         -o "Dir::Cache=$work/apt/cache" -o "APT::Architecture=amd64")
apt-get "${aptopts[@]}" -qq update
(cd "$work" && apt-get "${aptopts[@]}" -qq download "libonnxruntime-dev=$ORT_VERSION*" 2>/dev/null \
   || apt-get "${aptopts[@]}" -qq download libonnxruntime-dev)
dpkg-deb -x "$work"/libonnxruntime-dev_*.deb "$work/deb"

# Library: the npm package ships a glibc-2.28-compatible CPU build.
(cd "$work" && npm pack --silent "onnxruntime-node@$ORT_VERSION" >/dev/null)
tar -xzf "$work"/onnxruntime-node-*.tgz -C "$work"

rm -rf "$dest"
mkdir -p "$dest/include" "$dest/lib"
hdr=$(dirname "$(find "$work/deb" -name onnxruntime_c_api.h | head -n1)")
cp "$hdr"/*.h "$dest/include/"
so=libonnxruntime.so.$ORT_VERSION
cp -L "$work/package/bin/napi-v3/linux/x64/$so" "$dest/lib/$so"
ln -sf "$so" "$dest/lib/libonnxruntime.so"
ln -sf "$so" "$dest/lib/libonnxruntime.so.1"
touch "$dest/.complete-$ORT_VERSION"
echo "setup: ONNX Runtime ready in $dest"
