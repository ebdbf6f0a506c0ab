#!/usr/bin/env bash
# The test command (README): installs dependencies, builds, and runs every
# test with ctest, twice: a normal build and an ASan+UBSan build. Then every
# decoder's fuzz target runs briefly (scripts/fuzz.sh; their corpora are
# also replayed by ctest).
#
#   bash scripts/test.sh            everything
#   SKIP_ASAN=1 bash scripts/test.sh   normal build only
#   FUZZ_SECONDS=N ...              fuzz each target N s (default 10; 0: none)
#   TEST_JOBS=N ...                 tests at once (default: cores + 1)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/deps.sh

jobs=$(nproc)
# One test more than there are cores: the integration tests wait on their
# daemons, timers and disks for part of their time (on a 2-core machine,
# 10-16% of the CPU sat idle at -j2; the normal suite took 464 s at -j3,
# every test passing, against about 525 s at -j2).
test_jobs=${TEST_JOBS:-$((jobs + 1))}
passed=0
failed=0
logs=
run_suite() {  # dir, extra cmake args...
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  local log="$dir/ctest.log" rc
  logs="$logs $log"
  set +e
  (cd "$dir" && ctest --output-on-failure -j "$test_jobs" --timeout 600) 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  # "100% tests passed, 0 tests failed out of 18"
  local line total bad
  line=$(grep -E "tests passed, [0-9]+ tests? failed out of [0-9]+" "$log" | tail -1)
  total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
  bad=$(sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/' <<<"$line")
  if [ -z "$line" ]; then total=0; bad=1; fi
  passed=$((passed + total - bad))
  failed=$((failed + bad))
  return "$rc"
}
summary() {
  # A CI log may be cut in the middle: what failed is repeated last.
  local log
  for log in $logs; do
    if grep -qE "^\s+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess aborted|Exception)" "$log"; then
      echo "== what failed in $log =="
      grep -E "\[  (ERROR|FAILED) +\]|\[   LINE   \]|ERROR: AddressSanitizer|runtime error:|\*\*\*(Failed|Timeout|Exception)" \
        "$log" | tail -40
    fi
  done
  echo "tests: $passed passed, $failed failed"
}
trap summary EXIT

echo "== build and test (RelWithDebInfo) =="
run_suite build/test

if [ "${SKIP_ASAN:-0}" != 1 ]; then
  echo "== build and test (ASan + UBSan) =="
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  run_suite build/asan -DARBOR_SANITIZE=ON
fi

fuzz_s=${FUZZ_SECONDS:-10}
if [ "$fuzz_s" -gt 0 ] && [ -x scripts/fuzz.sh ]; then
  echo "== fuzz every decoder for ${fuzz_s}s each =="
  bash scripts/fuzz.sh "$fuzz_s"
fi
