#!/bin/bash
# mlfs benchmark: one command, as root, writes bench/RESULTS.md.
#
#   bench/run.sh
#
# Builds mlfs (ninja -C build), downloads a set of Debian .debs once
# (/var/cache/mlfs-bench-debs), builds the large image once (bench/mkimage.py,
# cached in the work dir), starts its own docker-registry on a free loopback
# port with storage and access log under the work dir, pushes the demo image
# (contrib/demo-image.sh) and the large image in gzip and zstd (skipped when
# the registry already has them), converts the gzip one to eStargz and
# zstd:chunked (bench/convert.py: ctr-remote in a private containerd, and
# skopeo; done once), runs bench/bench.py, and stops the registry.
# With `cache` in MLFS_BENCH_ONLY it also runs bench/cache.py (the cache's
# size, `mlfs cache gc` time, the cap; its own small images) and puts its
# section into RESULTS.md; otherwise the section of its last run (in the work
# dir) is carried into the new RESULTS.md.
#
# Environment:
#   MLFS_BENCH_DIR    work dir (default /var/tmp/mlfs-bench)
#   MLFS_BENCH_RUNS   runs per figure (default 3, at least 3 for the report)
#   MLFS_BENCH_DEBS   .deb cache (default /var/cache/mlfs-bench-debs)
#   MLFS_BENCH_ONLY   comma-separated workloads (debugging): demo,big-gzip,big-zstd,
#                     big-estargz,big-zstdchunked,big-cszstd (any big-* brings big-gzip,
#                     whose unpacked tree and pull are the references), cache
#                     (bench/cache.py; only when named; "cache" alone runs nothing else)
#   MLFS_BENCH_MLFS   a prebuilt mlfs to measure (default: build/fs/mlfs, built first);
#                     MLFS_BENCH_MLFS_REV says what it was built from (cache.py's report)
#
# Needs (Debian 12): docker-registry skopeo umoci jq curl libarchive-tools (bsdtar)
# zstd gzip tar fuse3 python3 (stdlib only); for the seekable images
# stargz-snapshotter (ctr-remote) and containerd; overlayfs in the kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${MLFS_BENCH_DIR:-/var/tmp/mlfs-bench}
RUNS=${MLFS_BENCH_RUNS:-3}
DEBS=${MLFS_BENCH_DEBS:-/var/cache/mlfs-bench-debs}
PY=/usr/bin/python3
MLFS=${MLFS_BENCH_MLFS:-$ROOT/build/fs/mlfs}
ONLY=${MLFS_BENCH_ONLY:-}
# bench.py's workloads; "cache" is bench/cache.py's
CACHE=
ONLY_BENCH=
IFS=, read -ra only_words <<<"$ONLY"
for w in "${only_words[@]}"; do
	if [ "$w" = cache ]; then CACHE=1; else ONLY_BENCH="$ONLY_BENCH${ONLY_BENCH:+,}$w"; fi
done
BENCH=1
[ -n "$ONLY" ] && [ -z "$ONLY_BENCH" ] && BENCH=

say() { echo "bench: $*" >&2; }

[ "$(id -u)" = 0 ] || { say "run as root (drop_caches, FUSE)"; exit 1; }
for t in docker-registry skopeo umoci jq curl bsdtar zstd gzip tar fusermount3 dpkg-deb apt-get; do
	command -v "$t" >/dev/null || { say "$t not found (see contrib/install-deps.sh)"; exit 1; }
done

if [ -z "${MLFS_BENCH_MLFS:-}" ]; then
	[ -f build/build.ninja ] || meson setup build >/dev/null
	ninja -C build >/dev/null
fi
[ -x "$MLFS" ] || { say "$MLFS: no such program"; exit 1; }

mkdir -p "$WORK" "$DEBS"

# --- the .debs of the large image (one apt-get download, cached) ---
if [ -n "$BENCH" ]; then
PKGS=$($PY bench/mkimage.py --debs "$DEBS" --out "$WORK/big-oci" --print-packages)
missing=
for p in $PKGS; do
	ls "$DEBS/${p}_"*.deb >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
	say "downloading:$missing"
	apt-get -q update >/dev/null 2>&1 || say "apt-get update reported errors (continuing)"
	# shellcheck disable=SC2086
	(cd "$DEBS" && apt-get -q download $missing) >/dev/null
fi
$PY bench/mkimage.py --debs "$DEBS" --out "$WORK/big-oci"
fi

# --- the registry ---
# shellcheck source=bench/registry.sh
. bench/registry.sh
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
bench_registry_start
say "docker-registry on $REG (pid $REGPID, storage $REGDIR/storage)"

# --- the images (pushed once; the storage survives between runs) ---
has_manifest() { # REPO TAG [DIGEST]
	local d
	d=$(curl -fsS -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json' \
		"http://$REG/v2/$1/manifests/$2" 2>/dev/null | sha256sum | cut -d' ' -f1) || return 1
	[ -z "${3:-}" ] || [ "sha256:$d" = "$3" ]
}
if [ -n "$BENCH" ] && ! has_manifest demo latest; then
	say "pushing the demo image (contrib/demo-image.sh)"
	MLFS_DEMO_REPO=demo contrib/demo-image.sh "$REG" >/dev/null
fi
for tag in ${BENCH:+gzip zstd}; do
	want=$(jq -r --arg t "$tag" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
		"$WORK/big-oci/index.json")
	if ! has_manifest big "$tag" "$want"; then
		say "pushing big:$tag"
		skopeo --insecure-policy copy -q --preserve-digests --dest-tls-verify=false \
			"oci:$WORK/big-oci:$tag" "docker://$REG/big:$tag"
		has_manifest big "$tag" "$want" || { say "big:$tag: the registry has another manifest"; exit 1; }
	fi
done

# --- the seekable copies of big:gzip (bench/convert.py; made once, cached) ---
want_seekable=
for t in ${BENCH:+estargz zstdchunked cszstd}; do
	case ",${ONLY_BENCH:-big-$t}," in *",big-$t,"*) want_seekable="$want_seekable${want_seekable:+,}$t" ;; esac
done
if [ -n "$want_seekable" ]; then
	case $want_seekable in *estargz*|*zstdchunked*)
		for t in ctr-remote containerd; do
			command -v "$t" >/dev/null || { say "$t not found (Debian: stargz-snapshotter, containerd)"; exit 1; }
		done ;;
	esac
	$PY bench/convert.py --registry "$REG" --work "$WORK" --repo big --src gzip \
		--oci "$WORK/big-oci" --tags "$want_seekable"
fi

# --- measure ---
if [ -n "$BENCH" ]; then
	say "measuring ($RUNS runs per figure, the demo 10)"
	$PY bench/bench.py --mlfs "$MLFS" --registry "$REG" --log "$REGDIR/access.log" --work "$WORK" \
		--big-meta "$WORK/big-oci/meta.json" --out "$ROOT/bench/RESULTS.md" --runs "$RUNS" \
		${ONLY_BENCH:+--only "$ONLY_BENCH"}
fi
# --- the cache (bench/cache.py): its section of RESULTS.md ---
if [ -n "$CACHE" ]; then
	say "measuring the cache (bench/cache.py)"
	$PY bench/cache.py --work "$WORK" --mlfs "$MLFS" --runs "$RUNS" --debs "$DEBS" \
		--registry "$REG" --log "$REGDIR/access.log" --into "$ROOT/bench/RESULTS.md" \
		${MLFS_BENCH_MLFS_REV:+--mlfs-rev "$MLFS_BENCH_MLFS_REV"} >/dev/null
elif [ -f "$WORK/cache-results.md" ]; then
	$PY bench/cache.py --work "$WORK" --put-section "$ROOT/bench/RESULTS.md"
fi
# --- memory on a small board (bench/memory.py, run on its own): its section is kept ---
if [ -f "$WORK/memory/memory-results.json" ]; then
	$PY bench/memory.py --work "$WORK/memory" --report-only --into "$ROOT/bench/RESULTS.md" >/dev/null
fi
say "done: bench/RESULTS.md"
