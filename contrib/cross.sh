#!/bin/bash
# contrib/cross.sh ARCH: builds mlfs for a Debian architecture (armhf,
# arm64, s390x) with Debian's cross toolchain into build-ARCH/ and runs its
# unit tests under qemu-user; the last line is "N passed, N failed".
#
# The ARCH libraries are not installed as multiarch -dev packages: those
# must have exactly the host's versions, and a mirror that carries security
# updates for amd64 but not for ARCH (s390x is missing from some) makes
# them uninstallable.  Instead the -dev packages and everything they need
# at run time are downloaded (apt-get download, no dpkg state touched) and
# unpacked into build-ARCH-sysroot/: headers and libraries for the link,
# and the root qemu-user loads the binaries' libraries from.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
arch=${1:?usage: contrib/cross.sh armhf|arm64|s390x}
case $arch in
  armhf) triplet=arm-linux-gnueabihf qemu=arm ;;
  arm64) triplet=aarch64-linux-gnu qemu=aarch64 ;;
  s390x) triplet=s390x-linux-gnu qemu=s390x ;;
  *) echo "mlfs: cross.sh: unknown architecture $arch (armhf, arm64, s390x)" >&2; exit 2 ;;
esac
build=$top/build-$arch
sysroot=$top/build-$arch-sysroot
# No libgpgme-dev: meson's gpgme feature (auto) finds none in the sysroot,
# and these builds refuse signedBy policies (fetch/gpg.c says so).
dev=(libfuse3-dev libcurl4-openssl-dev libjansson-dev libzstd-dev libarchive-dev libssl-dev libyaml-dev)
# The toolchain's libc6-dev-ARCH-cross is what programs link with: the
# sysroot's libc linker scripts name absolute paths (/lib/TRIPLET/libc.so.6)
# that exist only where libc6:ARCH is installed.
libc_dev="libc6-dev|libc-dev-bin|linux-libc-dev|libcrypt-dev|libnsl-dev|libtirpc-dev|rpcsvc-proto"

# The toolchain and qemu: host packages, installed once.
need=()
for p in gcc-$triplet libc6-dev-$arch-cross qemu-user-static meson ninja-build pkg-config; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
  dpkg --add-architecture "$arch"
  apt-get update -qq
fi
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The sysroot: made once per architecture and list of packages, kept between runs.
if [ "$(cat "$sysroot/.complete" 2>/dev/null)" != "${dev[*]}" ]; then
  echo "making $sysroot from Debian's $arch packages"
  rm -rf "$sysroot" "$sysroot.debs"
  mkdir -p "$sysroot" "$sysroot.debs"
  if ! apt-cache show "libc6:$arch" >/dev/null 2>&1; then apt-get update -qq; fi
  mapfile -t pkgs < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
      --no-replaces --no-enhances "${dev[@]/%/:$arch}" "libc6:$arch" 2>/dev/null | grep -E "^[a-z0-9].*:$arch\$" |
      grep -vE "^($libc_dev):" | sort -u)
  # Downloaded as _apt where it can write, and quietly.
  chmod 777 "$sysroot.debs"
  (cd "$sysroot.debs" && apt-get download -qq "${pkgs[@]}")
  for deb in "$sysroot.debs"/*.deb; do dpkg-deb -x "$deb" "$sysroot"; done
  # Merged /usr, as Debian 12 is: /lib is /usr/lib.
  if [ -d "$sysroot/lib" ] && [ ! -L "$sysroot/lib" ]; then
    cp -a "$sysroot/lib/." "$sysroot/usr/lib/"
    rm -rf "$sysroot/lib"
  fi
  ln -sfn usr/lib "$sysroot/lib"
  # Absolute symlinks (libfoo.so -> /lib/...) must point into the sysroot.
  find "$sysroot" -type l -lname '/*' | while read -r link; do
    ln -sfn "$sysroot$(readlink "$link")" "$link"
  done
  rm -rf "$sysroot.debs"
  echo "${dev[*]}" > "$sysroot/.complete"
fi

# The build: a generated file gives the cross file its sysroot.
mkdir -p "$build"
printf "[constants]\nsysroot = '%s'\n" "$sysroot" > "$sysroot/cross.ini"
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --cross-file "$sysroot/cross.ini" --cross-file "contrib/cross/$arch.ini" -Dwerror=true
fi
ninja -C "$build"

# The unit tests under qemu-$qemu (meson's exe_wrapper).
meson test -C "$build" --print-errorlogs --timeout-multiplier 10 || true
python3 - "$build/meson-logs/testlog.json" "$arch" <<'EOF'
import json, sys
passed = failed = 0
with open(sys.argv[1]) as f:
    for line in f:
        t = json.loads(line)
        if t.get("result") in ("OK", "EXPECTEDFAIL", "SKIP"):
            passed += 1
        else:
            failed += 1
print("%s: %d passed, %d failed" % (sys.argv[2], passed, failed))
sys.exit(1 if failed or not passed else 0)
EOF
