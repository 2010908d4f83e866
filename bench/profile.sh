#!/bin/bash
# Where the cold time goes (the evidence behind the unmet targets in
# bench/RESULTS.md).  Run bench/run.sh once first: this reuses its work dir,
# registry storage and large image.  As root; needs perf.
#
#   bench/profile.sh            # writes $WORK/profile.txt and prints it
#
# For big:gzip and big:zstd:
#  1. a cold load (empty cache, caches dropped) with mlfs's debug log
#     timestamped: when each layer finished downloading and indexing;
#  2. perf (cpu-clock, the only event in this VM) on the daemon during that
#     load: CPU seconds by library and by thread;
#  3. the first tar pass once the layers are loaded: FUSE requests by opcode
#     (tracepoint fuse:fuse_request_send), and the same pass with tar and the
#     daemon pinned to one CPU (cross-CPU wakeups cost).
# Then for big:estargz, big:zstdchunked and big:cszstd (when run.sh made them):
#  4. cold `chroot gcc-12 --version`, cold tar, cold tar with -o prefetch:
#     the timestamped debug log (TOCs indexed, fills) and registry requests
#     and bytes per layer (bench/timeline.py, the access log).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${MLFS_BENCH_DIR:-/var/tmp/mlfs-bench}
PY=/usr/bin/python3
MLFS=$ROOT/build/fs/mlfs
say() { echo "profile: $*" >&2; }

[ "$(id -u)" = 0 ] || { say "run as root"; exit 1; }
command -v perf >/dev/null || { say "perf not found (linux-perf)"; exit 1; }
[ -f "$WORK/big-oci/meta.json" ] && [ -d "$WORK/registry/storage/docker" ] ||
	{ say "run bench/run.sh first"; exit 1; }
ninja -C build >/dev/null
DEEP=$(jq -r .deep_file "$WORK/big-oci/meta.json")
P=$WORK/profile
rm -rf "$P"
mkdir -p "$P/mnt"
MNT=$P/mnt

# shellcheck source=bench/registry.sh
. bench/registry.sh
cleanup_all() {
	[ -n "${TSPID:-}" ] && kill "$TSPID" 2>/dev/null
	bench_cleanup
}
trap cleanup_all EXIT
trap 'exit 130' INT TERM
bench_registry_start

now() { date +%s.%N; }
elapsed() { $PY -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$2"; }
daemon_pid() { pgrep -f -x "$MLFS mount $1 $MNT -o .*" | head -n 1; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
umnt() {
	local pid
	pid=$(daemon_pid "$1" || true)
	fusermount3 -u "$MNT" || fusermount3 -uz "$MNT"
	for _ in $(seq 100); do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
}
wait_mounted() {
	for _ in $(seq 100); do mountpoint -q "$MNT" && return 0; sleep 0.05; done
	say "$MNT did not come up"; exit 1
}

out() { echo "$*" | tee -a "$P/profile.txt"; }
: >"$P/profile.txt"
out "mlfs profile, $(date -u '+%Y-%m-%d %H:%M UTC'), git $(git rev-parse --short HEAD), $(nproc) CPUs"

for tag in gzip zstd; do
	REF=$REG/big:$tag
	out ""
	out "=== big:$tag ==="
	# 1 + 2: cold load, timestamped debug log, perf on the daemon.
	cache=$P/cache-$tag
	drop
	$PY -c '
import subprocess, sys, time
t0 = time.monotonic()
p = subprocess.Popen(sys.argv[2:], stderr=subprocess.PIPE, text=True)
with open(sys.argv[1], "w") as f:
    for line in p.stderr:
        f.write("%8.3f %s" % (time.monotonic() - t0, line)); f.flush()
' "$P/load-$tag.log" "$MLFS" mount "$REF" "$MNT" -o "cache=$cache,debug" -f &
	TSPID=$!
	wait_mounted
	pid=$(daemon_pid "$REF")
	perf record -q -e cpu-clock -F 2000 -g -p "$pid" -o "$P/load-$tag.perf" 2>/dev/null &
	perfpid=$!
	sleep 0.3
	t0=$(now)
	head -c1 "$MNT/$DEEP" >/dev/null
	t1=$(now)
	kill -INT "$perfpid"; wait "$perfpid" || true
	out "cold load (first byte of /$DEEP after the mount): $(elapsed "$t0" "$t1") s"
	out "timeline (s since mlfs started; the first byte was asked at about $(awk '/indexing layer/{print $1; exit}' "$P/load-$tag.log")):"
	grep -E "indexing layer|debug: cached|of [0-9]+ ready|layers ready" "$P/load-$tag.log" |
		sed -E 's/\(sha256:([0-9a-f]{12})[0-9a-f]*\)/(\1)/; s/sha256:([0-9a-f]{12})[0-9a-f]*/\1/; s/mlfs: (debug|info): //' |
		tee -a "$P/profile.txt"
	samples=$(perf report -i "$P/load-$tag.perf" --stdio -F overhead --sort dso -g none 2>/dev/null |
		awk '/^# Samples:/{print $3}')
	out "daemon CPU during the load: $samples samples at 2 kHz (cpu-clock), by library:"
	perf report -i "$P/load-$tag.perf" --stdio --no-children --sort dso -g none 2>/dev/null |
		grep '%' | head -n 8 | tee -a "$P/profile.txt"
	out "by thread (samples, CPU s):"
	perf script -i "$P/load-$tag.perf" -F tid 2>/dev/null | sort | uniq -c | sort -rn | head -n 6 |
		awk '{printf "  tid %s: %d samples = %.2f CPU s\n", $2, $1, $1 / 2000}' | tee -a "$P/profile.txt"
	out "memory after the load: $(grep -E '^(VmHWM|VmRSS|RssAnon|RssFile)' /proc/"$pid"/status | tr -s ' \t' ' ' | tr '\n' ' ')"

	# 3: the first tar pass, data files in memory: FUSE requests by opcode.
	cat "$cache"/data/sha256/* >/dev/null
	t0=$(now)
	perf record -q -e fuse:fuse_request_send -a -o "$P/fuse-$tag.perf" -- \
		bash -c "tar -cf - -C '$MNT' . | wc -c >/dev/null" 2>/dev/null
	t1=$(now)
	out "first tar pass after the load: $(elapsed "$t0" "$t1") s (perf tracing on); FUSE requests:"
	perf script -i "$P/fuse-$tag.perf" 2>/dev/null | grep -o '([A-Z_]*)' | sort | uniq -c | sort -rn |
		tee -a "$P/profile.txt"
	t0=$(now); tar -cf - -C "$MNT" . | wc -c >/dev/null; t1=$(now)
	out "second (warm) tar pass: $(elapsed "$t0" "$t1") s"
	umnt "$REF"
	wait "$TSPID" 2>/dev/null || true
	TSPID=

	for pin in no yes; do
		"$MLFS" mount "$REF" "$MNT" -o "cache=$cache"
		head -c1 "$MNT/$DEEP" >/dev/null
		cat "$cache"/data/sha256/* >/dev/null
		pid=$(daemon_pid "$REF")
		T=
		if [ "$pin" = yes ]; then taskset -a -p -c 0 "$pid" >/dev/null; T="taskset -c 0"; fi
		t0=$(now); $T tar -cf - -C "$MNT" . | $T wc -c >/dev/null; t1=$(now)
		[ "$pin" = yes ] && out "first tar pass, cached layers, tar and daemon on one CPU: $(elapsed "$t0" "$t1") s" ||
			out "first tar pass, cached layers, unpinned: $(elapsed "$t0" "$t1") s"
		[ "$pin" = no ] && out "memory after a cached remount and a tar pass: $(grep -E '^(VmHWM|VmRSS|RssAnon|RssFile)' /proc/"$pid"/status | tr -s ' \t' ' ' | tr '\n' ' ')"
		umnt "$REF"
	done
	rm -rf "$cache"
done
# 4: the seekable copies (bench/convert.py), each step cold (empty cache,
# caches dropped): a program start in a chroot, a whole-tree tar, and the
# tar with -o prefetch.  For each: the timestamped debug log (when each TOC
# was indexed, when fills started and ended, the mount's chunk summary) and,
# from the registry's access log, requests and bytes per layer.
ALOG=$REGDIR/access.log
per_layer() { # TAG MARK: requests and bytes per layer since MARK
	local m i d
	m=$(curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/big/manifests/$1")
	tail -c +$(($2 + 1)) "$ALOG" >"$P/alog.part"
	i=0
	for d in $(echo "$m" | jq -r '.layers[].digest'); do
		i=$((i + 1))
		awk -v d="$d" -v i="$i" -v size="$(echo "$m" | jq -r --arg d "$d" '.layers[] | select(.digest == $d) | .size')" '
			index($7, d) { n++; b += $10; if ($9 == 200) full++; else if ($9 == 206) rng++ }
			END { printf "  layer %d (%s): %d requests (%d whole, %d Range), %d bytes = %.2fx its %d\n",
				i, substr(d, 8, 12), n, full, rng, b, b / size, size }' "$P/alog.part"
	done | tee -a "$P/profile.txt"
}
seek_step() { # TAG NAME MOUNT-OPTS CMD...
	local tag=$1 name=$2 mo=$3 mark
	shift 3
	local cache=$P/cache-$tag
	rm -rf "$cache"
	drop
	mark=$(stat -c %s "$ALOG")
	$PY bench/timeline.py "$P/$name-$tag.log" "$MNT" "$@" -- \
		"$MLFS" mount "$REG/big:$tag" "$MNT" -o "cache=$cache${mo:+,$mo},debug=fs:layers:fetch" -f || true
	sleep 0.3
	out "$name, big:$tag (s since the mount command started):"
	grep -E "\[bench\]|indexed from its TOC|layers ready|filling|filled|prefetch done|chunks cached" "$P/$name-$tag.log" |
		sed -E 's/sha256:([0-9a-f]{12})[0-9a-f]*/\1/g; s/mlfs: (debug|info): //' | tee -a "$P/profile.txt"
	out "  blob GETs after the last layer was indexed: $(awk '/layers ready/{f=1} f && /debug: GET .*blobs/{n++} END{print n+0}' "$P/$name-$tag.log")"
	per_layer "$tag" "$mark"
	rm -rf "$cache"
}
for tag in estargz zstdchunked cszstd; do
	curl -fsS -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/big/manifests/$tag" ||
		continue
	out ""
	out "=== big:$tag (seekable) ==="
	seek_step "$tag" "chroot-gcc" "" env -i PATH=/usr/bin:/bin /usr/sbin/chroot "$MNT" /usr/bin/gcc-12 --version
	seek_step "$tag" "tar" "" bash -c "tar -cf - -C '$MNT' . | wc -c"
	seek_step "$tag" "tar-prefetch" "prefetch" bash -c "tar -cf - -C '$MNT' . | wc -c"
done
say "wrote $P/profile.txt"
