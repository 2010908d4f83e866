#!/bin/bash
# The test command (README, .ci/run): installs, builds, runs every test and
# ends with one line "N passed, N failed, N skipped".
#   build/       -Werror build: unit tests, then the integration tests on it
#   build-asan/  ASan+UBSan build: unit tests
#   build-fuzz/  clang libFuzzer targets, each run for $MLFS_FUZZ_SECONDS (default 15: 13 targets; longer runs are recorded in tests/fuzz/README.md)
#   build-ARCH/  cross builds (contrib/cross.sh) for armhf, s390x, arm64: unit tests under qemu-user
#   build-tsan/  ThreadSanitizer build: unit tests, then the integration tests
#                of concurrent readers during a load (about a minute and a half)
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
  secs=${MLFS_FUZZ_SECONDS:-15}
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

# Other CPUs: armhf (32-bit), s390x (big-endian) and arm64, cross-built
# and unit-tested under qemu-user; the integration tests then run their
# export differential and the cross-architecture cache (test_cross.py).
for arch in armhf s390x arm64; do
  step "cross build and unit tests: $arch"
  if ! contrib/cross.sh "$arch"; then
    status=1
    [ -x "build-$arch/fs/mlfs" ] || build_failed "cross-$arch"
  fi
  [ -f "build-$arch/meson-logs/testlog.junit.xml" ] &&
    sed "s/testsuite name=\"/testsuite name=\"$arch-/; s/classname=\"/classname=\"$arch./g" \
      "build-$arch/meson-logs/testlog.junit.xml" > "$reports/unit-$arch.xml"
done
export MLFS_CROSS="armhf s390x arm64"

if [ -x build/fs/mlfs ]; then
  step "integration tests"
  MLFS_BIN=$top/build/fs/mlfs pytest-3 -q -p no:cacheprovider --junitxml="$reports/integration.xml" tests/integration
  rc=$?
  # 5: no tests collected; that is a failure of the suite, not a pass.
  [ $rc -eq 0 ] || status=1
fi

# ThreadSanitizer: the unit tests (test-loader drives fs/loader.c from 16
# threads, and parks a thousand requests) and the integration tests where
# many readers meet a load, parked requests included, or an unmount does, run
# against a TSan build of the daemon.  A race stops the daemon at once
# (halt_on_error: the mount dies and its test fails) and leaves a report
# under $reports/tsan-logs, which fails the stage by itself too.
# libfuse, libcurl and the other libraries are not instrumented; a
# suppression (tests/tsan.supp, if ever needed) may name only their
# internals, never mlfs code.
if meson_build_and_test build-tsan -Db_sanitize=thread -Db_lundef=false; then
  tsan_logs=$reports/tsan-logs
  mkdir -p "$tsan_logs"
  tsan_opts="halt_on_error=1:exitcode=66:second_deadlock_stack=1:log_path=$tsan_logs/tsan"
  [ -f tests/tsan.supp ] && tsan_opts="$tsan_opts:suppressions=$top/tests/tsan.supp"
  step "unit tests under TSan"
  TSAN_OPTIONS=$tsan_opts meson test -C build-tsan --print-errorlogs || status=1
  sed 's/testsuite name="/testsuite name="tsan-/; s/classname="/classname="tsan./g' \
    build-tsan/meson-logs/testlog.junit.xml > "$reports/unit-tsan.xml"
  # The integration tests give the daemon a clean environment: the options
  # travel in a wrapper that is MLFS_BIN.
  printf '#!/bin/sh\nTSAN_OPTIONS=%s exec %s "$@"\n' "'$tsan_opts'" "$top/build-tsan/fs/mlfs" > build-tsan/mlfs-tsan
  chmod +x build-tsan/mlfs-tsan
  step "integration tests under TSan: concurrent readers during a load"
  MLFS_BIN=$top/build-tsan/mlfs-tsan pytest-3 -q -p no:cacheprovider --junitxml="$reports/integration-tsan.xml" \
    tests/integration/test_mount.py tests/integration/test_seekable.py tests/integration/test_parking.py \
    -k 'test_sixteen_concurrent_readers or test_each_layer_fetched_once or test_two_mounts_share_the_cache or test_prioritised_files_prefetched_without_access or test_thousand_waiting_lookups_hold_no_threads or test_unmount_cancels_downloads'
  [ $? -eq 0 ] || status=1
  sed -i 's/testsuite name="/testsuite name="tsan-/; s/classname="/classname="tsan./g' "$reports/integration-tsan.xml"
  # Reports are written when a daemon exits: give unmounted daemons a moment.
  for _ in $(seq 50); do
    busy=
    for exe in /proc/[0-9]*/exe; do
      [ "$(readlink "$exe" 2>/dev/null)" = "$top/build-tsan/fs/mlfs" ] && busy=1 && break
    done
    [ -z "$busy" ] && break
    sleep 0.2
  done
  if compgen -G "$tsan_logs/tsan*" >/dev/null; then
    for f in "$tsan_logs"/tsan*; do echo "--- $f"; head -n 60 "$f"; done
    printf '<testsuite name="tsan"><testcase classname="tsan" name="no-reports"><failure/></testcase></testsuite>\n' \
      > "$reports/tsan-reports.xml"
    status=1
  else
    printf '<testsuite name="tsan"><testcase classname="tsan" name="no-reports"/></testsuite>\n' \
      > "$reports/tsan-reports.xml"
  fi
fi

step "summary"
/usr/bin/python3 contrib/junit-summary.py "$reports"/*.xml || status=1
exit $status
