#!/bin/bash
# Installs everything mlfs needs to build, test and run its demo on Debian 12.
# Idempotent: apt is only asked when a package is missing.
set -euo pipefail

packages=(
  # build
  meson ninja-build pkg-config gcc clang libclang-rt-14-dev scdoc   # scdoc: the man pages
  libfuse3-dev libcurl4-openssl-dev libjansson-dev libzstd-dev libarchive-dev libssl-dev
  libyaml-dev libgpgme-dev         # registries.d(5) YAML; GPG signatures (signedBy policies)
  # run
  fuse3 ca-certificates bash-completion gpg   # bash-completion: where completions install; gpgme runs gpg
  # tests and demo: a real registry, real image tools, real foreign binaries
  docker-registry umoci skopeo busybox-static qemu-user-static
  stargz-snapshotter containerd   # ctr-remote: eStargz and zstd:chunked test images
  golang-go golang-github-containers-image-dev   # tests/reference/cimage-verify: containers/image's sigstore check
  python3 python3-pytest python3-jwt python3-cryptography
  python3-nacl                     # test_sigstore: a key in cosign's encrypted format (NaCl secretbox)
  debhelper dpkg-dev lintian       # test_deb: the .deb of contrib/debian, and lintian's check of it
  apache2-utils curl openssl libarchive-tools zstd jq util-linux
  strace gdb binutils              # crash tests: a kill at an exact syscall or function
  gcc-i686-linux-gnu libc6-dev-i386-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
                                   # 32-bit programs without large-file support (test_inode32)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's docker-registry package starts a system registry on :5000 where an
# init system runs; mlfs's scripts start their own, so that one is not needed.
