#!/bin/bash
# contrib/deb.sh [OUTDIR]: builds the mlfs .deb (contrib/debian/) with
# dpkg-buildpackage -us -uc -b, into OUTDIR (default build-deb/).
#
# It builds a copy of the tree as it is now (tracked and new files, not
# build dirs or .git) with contrib/debian as its debian/, so the source
# tree gets no debian/ dir or build products, and the package is what a
# release tarball would make: its version is meson.build's.  By hand,
# the same is: cp -r contrib/debian debian && dpkg-buildpackage -us -uc -b
# The unit tests are skipped (nocheck): contrib/test.sh runs them; so is
# the -dbgsym package (noddebs).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-build-deb}")
work=$(mktemp -d "${TMPDIR:-/tmp}/mlfs-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/mlfs
mkdir -p "$src" "$out"
if [ -e .git ]; then
  # (a tracked file deleted in the work tree is left out, as the next commit would)
  git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null |
    tar -C "$src" -xf -
else
  tar --exclude='./build*' --exclude=./debian -cf - . | tar -C "$src" -xf -
fi
rm -rf "$src/debian"
cp -r contrib/debian "$src/debian"
(cd "$src" && DEB_BUILD_OPTIONS="nocheck noddebs parallel=$(nproc) ${DEB_BUILD_OPTIONS:-}" \
   dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; exit 1; }
cp "$work"/*.deb "$out/"
ls "$out"/*.deb
