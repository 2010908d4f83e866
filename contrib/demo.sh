#!/bin/bash
# The main job, on a fresh Debian 12 machine as root, with no internet:
# install, build, start a local registry (Debian's docker-registry on
# 127.0.0.1) seeded with a multi-platform demo image, inspect it, mount the
# host's platform (left mounted for you to explore), and run the arm64
# image's busybox in a chroot through qemu-user.
#   MLFS_DEMO_PORT   registry port (default 5000)
#   MLFS_DEMO_DIR    registry storage, cache, logs and mountpoints (default /var/tmp/mlfs-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
port=${MLFS_DEMO_PORT:-5000}
dir=${MLFS_DEMO_DIR:-/var/tmp/mlfs-demo}
reg=127.0.0.1:$port

contrib/install-deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null

mkdir -p "$dir"
if ! curl -fsS "http://$reg/v2/" >/dev/null 2>&1; then
  cat > "$dir/config.yml" <<CONF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: $reg
CONF
  nohup docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
  for _ in $(seq 50); do
    curl -fsS "http://$reg/v2/" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS "http://$reg/v2/" >/dev/null || { echo "demo: the registry did not start; see $dir/registry.log"; exit 1; }
  echo "demo: docker-registry listening on $reg (storage in $dir/storage)"
fi
if ! curl -fsS -o /dev/null "http://$reg/v2/demo/manifests/latest" \
     -H 'Accept: application/vnd.oci.image.index.v1+json'; then
  echo "demo: building and pushing the multi-platform demo image"
  contrib/demo-image.sh "$reg"
fi

export MLFS_CACHE=$dir/cache
mnt=$dir/mnt arm=$dir/mnt-arm64
mkdir -p "$mnt" "$arm"
for m in "$mnt" "$arm"; do mountpoint -q "$m" && umount "$m"; done
set -x
build/fs/mlfs inspect "$reg/demo:latest"
build/fs/mlfs mount "$reg/demo:latest" "$mnt"
ls -l "$mnt" "$mnt/bin"
cat "$mnt/etc/mlfs-platform"
{ set +x; } 2>/dev/null
if contrib/binfmt.sh >/dev/null; then
  set -x
  build/fs/mlfs mount -o platform=linux/arm64 "$reg/demo:latest" "$arm"
  chroot "$arm" /bin/busybox uname -m
  umount "$arm"
  { set +x; } 2>/dev/null
else
  echo "demo: binfmt_misc is not available here: skipping the arm64 chroot"
fi
echo
echo "demo: $reg/demo:latest is mounted on $mnt (umount $mnt when done)"
