#!/usr/bin/env bash
# Build the libFuzzer targets (clang, ASan+UBSan, in build-fuzz/) and run
# each for a bounded time, starting from its committed seeds.
#   fuzz/smoke.sh                   every target, FUZZ_SECONDS (default 20) each
#   fuzz/smoke.sh config image      only these targets
#   FUZZ_SECONDS=300 fuzz/smoke.sh  longer runs
# Fails if any target reports a crash, a sanitizer error, a leak, a timeout
# (FUZZ_TIMEOUT seconds for one input, default 25) or running out of memory;
# the reproducer is left in build-fuzz/artifacts/<target>/ and the log tail
# printed. Reproduce with: build-fuzz/fuzz/fuzz_<target> <reproducer>.
# New inputs go to build-fuzz/corpus/<target>/ (kept between runs); the seeds
# in fuzz/corpus/<target>/ are only read.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
all=(config croprects image pngenc wire service infer wav ws session)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
secs=${FUZZ_SECONDS:-20}
per_input=${FUZZ_TIMEOUT:-25}
dir="$here/build-fuzz"

"$here/scripts/setup.sh"
command -v clang >/dev/null || { echo "fuzz: clang not found (scripts/setup.sh installs it)"; exit 1; }
cmake -S "$here" -B "$dir" -DCMAKE_C_COMPILER=clang -DLS_FUZZ=ON >/dev/null
cmake --build "$dir" -j"$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}") >/dev/null

failed=()
for t in "${targets[@]}"; do
  bin="$dir/fuzz/fuzz_$t"
  corpus="$dir/corpus/$t"
  artifacts="$dir/artifacts/$t"
  log="$dir/fuzz-$t.log"
  mkdir -p "$corpus" "$artifacts"
  opts=(-max_total_time="$secs" -timeout="$per_input" -rss_limit_mb=4096 -print_final_stats=1
        -artifact_prefix="$artifacts/")
  [ -f "$here/fuzz/$t.dict" ] && opts+=(-dict="$here/fuzz/$t.dict")
  seeds=()
  [ -d "$here/fuzz/corpus/$t" ] && seeds=("$here/fuzz/corpus/$t")
  if "$bin" "${opts[@]}" "$corpus" "${seeds[@]}" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 || true)
    echo "fuzz: $t: ok, ${secs}s, ${runs:-?} inputs, ${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l) files"
  else
    echo "fuzz: $t: FAILED (log $log, reproducer in $artifacts/)"
    tail -n 60 "$log"
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failures in: ${failed[*]}"
  exit 1
fi
