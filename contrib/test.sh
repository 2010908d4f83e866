#!/bin/bash
# The test command (README, .ci/run): installs, builds, runs every test and
# ends with one line "N passed, N failed, N skipped".
#   build/       -Werror build: unit tests, then the integration tests on it
#   build-asan/  ASan+UBSan build: unit tests
#   build-fuzz/  clang libFuzzer targets, each run for $MLFS_FUZZ_SECONDS (default 60)
set -uo pipefail
cd "$(dirname "$0")/.."
top=$PWD
reports=$top/build-reports
rm -rf "$reports"; mkdir -p "$reports"
status=0
step() { printf '\n=== %s\n' "$*"; }

step "install dependencies"
contrib/install-deps.sh || { echo "mlfs: dependency install failed"; exit 1; }

# A build that does not compile is one failed test, not a silent stop.
build_failed() {
  local name=$1
  printf '<testsuite name="build"><testcase classname="build" name="%s"><failure/></testcase></testsuite>\n' \
    "$name" > "$reports/build-$name.xml"
  status=1
}

meson_build_and_test() {
  local dir=$1; shift
  step "build $dir"
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >"$reports/$dir-setup.log" 2>&1 || { cat "$reports/$dir-setup.log"; build_failed "$dir"; return 1; }
  fi
  ninja -C "$dir" || { build_failed "$dir"; return 1; }
}

if meson_build_and_test build -Dwerror=true; then
  step "unit tests"
  meson test -C build --print-errorlogs || status=1
  cp build/meson-logs/testlog.junit.xml "$reports/unit.xml"
fi

if meson_build_and_test build-asan -Db_sanitize=address,undefined -Db_lundef=false; then
  step "unit tests under ASan+UBSan"
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
    meson test -C build-asan --print-errorlogs || status=1
  sed 's/testsuite name="/testsuite name="asan-/; s/classname="/classname="asan./g' \
    build-asan/meson-logs/testlog.junit.xml > "$reports/unit-asan.xml"
fi

if CC=clang meson_build_and_test build-fuzz -Dfuzz=true; then
  secs=${MLFS_FUZZ_SECONDS:-60}
  for fuzzer in build-fuzz/tests/fuzz/fuzz-*; do
    [ -f "$fuzzer" ] && [ -x "$fuzzer" ] || continue
    name=$(basename "$fuzzer")
    step "fuzz $name for ${secs}s"
    corpus="$top/build-fuzz/corpus-$name"; mkdir -p "$corpus"
    seeds="$top/tests/fuzz/seeds-${name#fuzz-}"
    [ -d "$seeds" ] || seeds=
    if "$fuzzer" -max_total_time="$secs" -max_len=65536 -print_final_stats=1 "$corpus" $seeds >"$reports/$name.log" 2>&1; then
      tail -n 3 "$reports/$name.log"
      printf '<testsuite name="fuzz"><testcase classname="fuzz" name="%s"/></testsuite>\n' "$name" > "$reports/$name.xml"
    else
      tail -n 40 "$reports/$name.log"
      printf '<testsuite name="fuzz"><testcase classname="fuzz" name="%s"><failure/></testcase></testsuite>\n' "$name" > "$reports/$name.xml"
      status=1
    fi
  done
fi

if [ -x build/fs/mlfs ]; then
  step "integration tests"
  MLFS_BIN=$top/build/fs/mlfs pytest-3 -q -p no:cacheprovider --junitxml="$reports/integration.xml" tests/integration
  rc=$?
  # 5: no tests collected; that is a failure of the suite, not a pass.
  [ $rc -eq 0 ] || status=1
fi

step "summary"
/usr/bin/python3 contrib/junit-summary.py "$reports"/*.xml || status=1
exit $status
