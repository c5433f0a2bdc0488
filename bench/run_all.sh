#!/usr/bin/env bash
# Run every lipsyncd benchmark (docs/PERFORMANCE.md) and print each ratio.
#
#   bench/run_all.sh                 build in build/, run all
#   LS_BUILD_DIR=/abs/dir bench/run_all.sh      another build folder
#   bench/run_all.sh composite request          only some (composite request
#                                    concurrency coldload unet)
#   LS_BENCH_WAIT_IDLE=600 bench/run_all.sh     wait (up to 600 s) for an idle
#                                    machine before each bench
#
# Steps: installs what the benchmarks need (Debian packages: the project's via
# scripts/setup.sh, plus python3-opencv for the reference pipeline and
# mate-backgrounds for the photographs), builds the project (CMake) and the
# bench programs (bench/Makefile), checks that the machine is idle, then runs
# each bench. Generated data (scaled photos, the 100-frame avatar, the U-Net)
# lives in $LS_BUILD_DIR/bench/work and results in $LS_BUILD_DIR/bench/results
# (JSON per bench, run_all.log, summary.md). Takes about 3 minutes on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${LS_BUILD_DIR:-$here/build}
export LS_BUILD_DIR=$build
py=/usr/bin/python3
results=$build/bench/results

# ---- install
"$here/scripts/setup.sh"
need=()
for p in python3-opencv mate-backgrounds python3-grpc-tools python3-grpcio python3-numpy python3-onnx \
         python3-protobuf util-linux time; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "run_all: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# ---- build
cmake -S "$here" -B "$build" >/dev/null
cmake --build "$build" -j"$(nproc)" --target lipsyncd lipsync demo
make -s -C "$here/bench" BUILD="$build"
mkdir -p "$results"

# ---- the machine
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "machine: $(nproc) cores, $cpu, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
if git -C "$here" rev-parse --git-dir >/dev/null 2>&1; then
  commit=$(git -C "$here" rev-parse --short HEAD)
  git -C "$here" diff --quiet HEAD -- src || commit="$commit (src modified)"
else
  commit=${LS_BENCH_COMMIT:-"? (not a git checkout)"}
fi
echo "commit: $commit"
# Idle check: other work on these 2 cores skews every number (wall-clock
# ones most; target 1 counts CPU time and is the least affected).
busy_pct() {
  local a b
  a=$(awk '/^cpu /{print $5+$6, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  sleep "${1:-2}"
  b=$(awk '/^cpu /{print $5+$6, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  printf '%s\n%s\n' "$a" "$b" | awk 'NR==1{i0=$1;t0=$2} NR==2{printf "%.0f", 100*(1-($1-i0)/($2-t0))}'
}
nonidle_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
# LS_BENCH_WAIT_IDLE=S: before each bench wait (up to S seconds) until the
# other processes leave the machine idle for 3 s.
wait_idle() {
  local limit=${LS_BENCH_WAIT_IDLE:-0} waited=0
  while [ "$waited" -lt "$limit" ] && [ "$(busy_pct 3)" -gt 5 ]; do waited=$((waited + 3)); done
  [ "$waited" -gt 0 ] && echo "(waited ${waited} s for the machine to be idle)"
  return 0
}
check_idle() {
  local busy
  busy=$(busy_pct "${1:-2}")
  echo "cpu busy (other processes) before this bench: ${busy}% (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  if [ "$busy" -gt 10 ]; then
    echo "run_all: WARNING: the machine is not idle; the numbers below will be low and noisy. Busiest:"
    ps -eo pid,pcpu,comm --sort=-pcpu | head -4
  fi
}

# ---- benches
all=(composite request concurrency coldload unet)
sel=("$@")
[ ${#sel[@]} -eq 0 ] && sel=("${all[@]}")
declare -A cmd=(
  [composite]="$py $here/bench/bench_composite.py --extra-photos"
  [request]="$py $here/bench/bench_request.py"
  [concurrency]="$py $here/bench/bench_concurrency.py"
  [coldload]="$py $here/bench/bench_coldload.py"
  [unet]="$py $here/bench/bench_unet.py"
)
log=$results/run_all.log
: >"$log"
failed=0
for b in "${sel[@]}"; do
  [ -n "${cmd[$b]:-}" ] || { echo "run_all: unknown bench $b (one of ${all[*]})"; exit 2; }
  echo
  echo "==== $b: ${cmd[$b]}" | tee -a "$log"
  wait_idle | tee -a "$log"
  check_idle 1 | tee -a "$log"
  start=$(date +%s.%N)
  j0=$(nonidle_jiffies)
  if ! /usr/bin/time -f "%U %S" -o "$results/.cpu" ${cmd[$b]} 2>&1 | tee -a "$log"; then
    echo "run_all: $b FAILED" | tee -a "$log"
    failed=1
  fi
  j1=$(nonidle_jiffies)
  # CPU the other processes used while this bench ran, as a share of the machine
  others=$(awk -v j0="$j0" -v j1="$j1" -v hz="$(getconf CLK_TCK)" -v s="$start" -v e="$(date +%s.%N)" \
               -v n="$(nproc)" '{own=$1+$2} END{o=(j1-j0)/hz-own; if(o<0)o=0; printf "%.0f", 100*o/((e-s)*n)}' \
               "$results/.cpu")
  echo "($b took $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.0f", e-s}') s; other processes used" \
       "${others}% of the machine meanwhile$([ "$others" -gt 5 ] && echo ' - NOISY, rerun this bench'))" | tee -a "$log"
done

echo
echo "==== ratios"
grep '^RATIO ' "$log" | sed 's/^RATIO /  /' || true
grep 'NOISY' "$log" || true
$py "$here/bench/summarize.py" "$results" >"$results/summary.md" && echo "(tables: $results/summary.md)"
exit $failed
