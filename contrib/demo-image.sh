#!/bin/sh
# Build the multi-platform demo image with real tools and push it.
#
#   contrib/demo-image.sh REGISTRY_HOST:PORT
#
# Pushes to REGISTRY_HOST:PORT/demo (plain HTTP unless MLFS_DEMO_SCHEME=https):
#   demo:latest               OCI image index
#   demo:list                 Docker manifest list (v2s2 manifests)
#   demo:oci-linux-ARCH[-V]   each platform's OCI manifest
#   demo:v2s2-linux-ARCH[-V]  each platform's Docker v2s2 manifest
# Platforms: linux/arm/v7 linux/arm64/v8 linux/amd64 linux/s390x linux/ppc64le
# (amd64 deliberately not first in the index).  Each image has two layers:
#   1. /bin/busybox (from Debian's busybox-static for that architecture), /bin/sh -> busybox
#   2. /etc/mlfs-platform containing e.g. "linux/arm/v7"
# and a config with os/architecture/variant, Entrypoint ["/bin/busybox"],
# Cmd ["sh"], Env ["PATH=/bin", "MLFS_PLATFORM=linux/arm/v7"].
#
# Needs: umoci (0.4.7), skopeo, jq, curl, sha256sum, dpkg-deb, apt-get.
# The busybox-static .debs are cached in MLFS_DEB_CACHE (default
# /var/cache/mlfs-test-debs); the first run adds the foreign dpkg
# architectures and runs apt-get update + one apt-get download (root).
#
# Environment:
#   MLFS_DEMO_WORKDIR  where to build (default: a temp dir, removed at exit)
#   MLFS_DEMO_REPO     repository name (default: demo)
#   MLFS_DEMO_SCHEME   http (default) or https (certificate not checked)
#   MLFS_DEB_CACHE     .deb cache directory
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 REGISTRY_HOST:PORT" >&2
	exit 2
fi
REG=$1
REPO=${MLFS_DEMO_REPO:-demo}
SCHEME=${MLFS_DEMO_SCHEME:-http}
DEBS=${MLFS_DEB_CACHE:-/var/cache/mlfs-test-debs}
PLATFORMS="linux/arm/v7:armhf linux/arm64/v8:arm64 linux/amd64:amd64 linux/s390x:s390x linux/ppc64le:ppc64el"

for tool in umoci skopeo jq curl sha256sum dpkg-deb; do
	command -v "$tool" >/dev/null 2>&1 || { echo "$0: $tool not found" >&2; exit 1; }
done

if [ -n "${MLFS_DEMO_WORKDIR:-}" ]; then
	WORK=$MLFS_DEMO_WORKDIR
	mkdir -p "$WORK"
else
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/mlfs-demo.XXXXXX")
	trap 'rm -rf "$WORK"' EXIT
fi

SKOPEO="skopeo --insecure-policy"
CURL="curl -fsS --max-time 30 --retry 0 -k"

# The newest cached busybox-static .deb for a Debian architecture, or nothing.
deb_for() {
	ls "$DEBS"/busybox-static_*_"$1".deb 2>/dev/null | sort | tail -n 1
}

ensure_debs() {
	missing=
	for p in $PLATFORMS; do
		debarch=${p#*:}
		[ -n "$(deb_for "$debarch")" ] || missing="$missing $debarch"
	done
	[ -n "$missing" ] || return 0
	mkdir -p "$DEBS"
	native=$(dpkg --print-architecture)
	foreign=$(dpkg --print-foreign-architectures)
	pkgs=
	for a in $missing; do
		if [ "$a" != "$native" ] && ! echo "$foreign" | grep -qx "$a"; then
			dpkg --add-architecture "$a"
		fi
		pkgs="$pkgs busybox-static:$a"
	done
	# A security-index error for a foreign architecture ("mirror sync in
	# progress") makes apt-get update exit 100 but does no harm here.
	apt-get -q update >/dev/null 2>&1 || echo "$0: apt-get update reported errors (continuing)" >&2
	# shellcheck disable=SC2086
	(cd "$DEBS" && apt-get -q download $pkgs) >/dev/null
	for a in $missing; do
		[ -n "$(deb_for "$a")" ] || { echo "$0: could not download busybox-static:$a" >&2; exit 1; }
	done
}

# Write a blob into the layout from stdin; print its digest.
put_blob() {
	tmp=$LAYOUT/blobs/sha256/.tmp.$$
	cat >"$tmp"
	hex=$(sha256sum "$tmp" | cut -d' ' -f1)
	mv "$tmp" "$LAYOUT/blobs/sha256/$hex"
	echo "sha256:$hex"
}

blob_path() { echo "$LAYOUT/blobs/sha256/${1#sha256:}"; }
blob_size() { stat -c %s "$(blob_path "$1")"; }

# umoci 0.4.7 has no --variant: add it to the config ourselves, then rewrite
# the manifest and the layout's index entry for TAG.
set_variant() {
	tag=$1 variant=$2
	mdigest=$(jq -r --arg t "$tag" \
		'.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
		"$LAYOUT/index.json")
	cdigest=$(jq -r '.config.digest' "$(blob_path "$mdigest")")
	newc=$(jq -c --arg v "$variant" '.variant = $v' "$(blob_path "$cdigest")" | put_blob)
	newm=$(jq -c --arg d "$newc" --argjson s "$(blob_size "$newc")" \
		'.config.digest = $d | .config.size = $s' "$(blob_path "$mdigest")" | put_blob)
	jq -c --arg t "$tag" --arg d "$newm" --argjson s "$(blob_size "$newm")" \
		'.manifests |= map(if .annotations["org.opencontainers.image.ref.name"] == $t
			then .digest = $d | .size = $s else . end)' \
		"$LAYOUT/index.json" >"$LAYOUT/index.json.new"
	mv "$LAYOUT/index.json.new" "$LAYOUT/index.json"
}

build_platform() {
	platform=$1 debarch=$2
	tag=$(echo "$platform" | tr / -)
	os=$(echo "$platform" | cut -d/ -f1)
	arch=$(echo "$platform" | cut -d/ -f2)
	variant=$(echo "$platform" | cut -s -d/ -f3)
	bundle=$WORK/bundle-$tag
	extract=$WORK/deb-$debarch

	rm -rf "$bundle" "$extract"
	dpkg-deb -x "$(deb_for "$debarch")" "$extract"

	umoci new --image "$LAYOUT:$tag"
	umoci unpack --image "$LAYOUT:$tag" "$bundle"

	mkdir -p "$bundle/rootfs/bin"
	cp "$extract/bin/busybox" "$bundle/rootfs/bin/busybox"
	ln -s busybox "$bundle/rootfs/bin/sh"
	umoci repack --refresh-bundle --image "$LAYOUT:$tag" "$bundle"

	mkdir -p "$bundle/rootfs/etc"
	echo "$platform" >"$bundle/rootfs/etc/mlfs-platform"
	umoci repack --image "$LAYOUT:$tag" "$bundle"

	umoci config --image "$LAYOUT:$tag" --os "$os" --architecture "$arch" \
		--config.entrypoint /bin/busybox --config.cmd sh \
		--config.env PATH=/bin --config.env "MLFS_PLATFORM=$platform"
	[ -z "$variant" ] || set_variant "$tag" "$variant"
	rm -rf "$bundle" "$extract"
}

# Print one index/list entry (JSON) for a pushed manifest.
entry() {
	digest=$1 mtype=$2 platform=$3
	size=$($CURL -H "Accept: $mtype" "$SCHEME://$REG/v2/$REPO/manifests/$digest" | wc -c)
	jq -nc --arg m "$mtype" --arg d "$digest" --argjson s "$size" --arg p "$platform" '
		($p | split("/")) as $f
		| {mediaType: $m, digest: $d, size: $s,
		   platform: ({os: $f[0], architecture: $f[1]}
			+ (if ($f | length) > 2 then {variant: $f[2]} else {} end))}'
}

put_manifest() {
	file=$1 mtype=$2 ref=$3
	$CURL -X PUT -H "Content-Type: $mtype" --data-binary "@$file" \
		"$SCHEME://$REG/v2/$REPO/manifests/$ref" >/dev/null
}

ensure_debs

LAYOUT=$WORK/oci
rm -rf "$LAYOUT"
umoci init --layout "$LAYOUT"

: >"$WORK/oci-entries"
: >"$WORK/v2s2-entries"
for p in $PLATFORMS; do
	platform=${p%%:*}
	debarch=${p#*:}
	tag=$(echo "$platform" | tr / -)
	build_platform "$platform" "$debarch"

	$SKOPEO copy -q --dest-tls-verify=false --digestfile "$WORK/oci-$tag.digest" \
		"oci:$LAYOUT:$tag" "docker://$REG/$REPO:oci-$tag"
	$SKOPEO copy -q --dest-tls-verify=false --format v2s2 --digestfile "$WORK/v2s2-$tag.digest" \
		"oci:$LAYOUT:$tag" "docker://$REG/$REPO:v2s2-$tag"

	entry "$(cat "$WORK/oci-$tag.digest")" application/vnd.oci.image.manifest.v1+json \
		"$platform" >>"$WORK/oci-entries"
	entry "$(cat "$WORK/v2s2-$tag.digest")" application/vnd.docker.distribution.manifest.v2+json \
		"$platform" >>"$WORK/v2s2-entries"
done

jq -s '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: .}' \
	"$WORK/oci-entries" >"$WORK/index.json"
jq -s '{schemaVersion: 2, mediaType: "application/vnd.docker.distribution.manifest.list.v2+json", manifests: .}' \
	"$WORK/v2s2-entries" >"$WORK/list.json"

put_manifest "$WORK/index.json" application/vnd.oci.image.index.v1+json latest
put_manifest "$WORK/list.json" application/vnd.docker.distribution.manifest.list.v2+json list

echo "$REG/$REPO:latest sha256:$(sha256sum "$WORK/index.json" | cut -d' ' -f1) (OCI index)"
echo "$REG/$REPO:list sha256:$(sha256sum "$WORK/list.json" | cut -d' ' -f1) (Docker manifest list)"
