#!/usr/bin/env bash
# Build lipsyncd and run the whole test suite (ctest).
#   scripts/test.sh            normal build in build/, all tests
#   LS_SANITIZE=address scripts/test.sh   ASan+UBSan build in build-asan/
#   LS_SANITIZE=thread  scripts/test.sh   TSan build in build-tsan/ (unit tests)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup.sh"
san=${LS_SANITIZE:-}
dir="$here/build${san:+-$( [ "$san" = address ] && echo asan || echo tsan )}"
cmake -S "$here" -B "$dir" -DLS_SANITIZE="$san" >/dev/null
cmake --build "$dir" -j"$(nproc)"
cd "$dir"
filter=()
if [ "$san" = thread ]; then filter=(-R '^unit_'); fi
# The soak test (label soak, LS_SOAK_SECONDS long) runs only with LS_SOAK=1.
if [ "${LS_SOAK:-0}" != 1 ]; then filter+=(-LE soak); fi
ctest --output-on-failure "${filter[@]}" "$@"
