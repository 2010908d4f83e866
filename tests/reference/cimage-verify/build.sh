#!/bin/bash
# Builds cimage-verify into OUT (a directory; reused between runs) against
# Debian's containers/image (golang-github-containers-image-dev) with the
# three sigstore functions Debian stubs out put back (README.md).  Offline:
# GOPATH mode over /usr/share/gocode, no module proxy.
#
#   build.sh OUT       -> OUT/cimage-verify   (Go's cache: $GOCACHE, else OUT/gocache)
set -euo pipefail

out=$(realpath -m "${1:?usage: build.sh OUT}")
here=$(dirname "$(realpath "$0")")
debian=/usr/share/gocode/src/github.com/containers/image
command -v go >/dev/null || { echo "build.sh: no go: apt-get install golang-go (contrib/install-deps.sh)" >&2; exit 1; }
[ -f "$debian/go.mod" ] || { echo "build.sh: no $debian: apt-get install golang-github-containers-image-dev (contrib/install-deps.sh)" >&2; exit 1; }

# A GOPATH whose containers/image is Debian's with the stubs replaced; it
# shadows /usr/share/gocode's for that one import path (a whole tree:
# Go refuses internal/ packages imported across GOPATH entries).
gopath=$out/gopath
tree=$gopath/src/github.com/containers/image
rm -rf "$gopath"
mkdir -p "$(dirname "$tree")" "$gopath/src/cimage-verify"
cp -r "$debian" "$tree"
chmod -R u+w "$tree"

# Removes func SIGNATURE (a line that starts with it, up to the first
# line that is "}") from FILE, after checking it is Debian's stub.
cut_stub() {
	local file=$1 signature=$2 body
	body=$(awk -v s="$signature" 'index($0, s) == 1 {p = 1} p {print} p && /^}$/ {exit}' "$file")
	if ! grep -q 'Debian-local change: sigstore disabled' <<<"$body"; then
		echo "build.sh: $file: \"$signature\" is not Debian's sigstore stub (any more?): look again" >&2
		exit 1
	fi
	awk -v s="$signature" 'index($0, s) == 1 {skip = 1} !skip {print} skip && /^}$/ {skip = 0}' "$file" >"$file.new"
	mv "$file.new" "$file"
}
cut_stub "$tree/signature/policy_eval_sigstore.go" 'func (pr *prSigstoreSigned) isSignatureAccepted('
cut_stub "$tree/signature/internal/sigstore_payload.go" 'func VerifySigstorePayload('
# sign.go is nothing but the stub (and its imports): replaced whole.
sign=$tree/signature/sigstore/sign.go
if ! grep -q 'Debian-local change: sigstore disabled' "$sign" ||
	[ "$(grep -c '^func ' "$sign")" != 1 ]; then
	echo "build.sh: $sign is not Debian's one-function sigstore stub (any more?): look again" >&2
	exit 1
fi
printf 'package sigstore\n\n// Debian'"'"'s stub removed by mlfs'"'"'s build.sh: see sign_reinstated.go.\n' >"$sign"
cp "$here/overlay/signature/sigstore_accept_reinstated.go" "$tree/signature/"
cp "$here/overlay/signature/internal/sigstore_verify_reinstated.go" "$tree/signature/internal/"
cp "$here/overlay/signature/sigstore/sign_reinstated.go" "$tree/signature/sigstore/"
cp "$here/main.go" "$here/sign.go" "$gopath/src/cimage-verify/"
# Go's minimal module compatibility reads ".../image/v5/..." as
# ".../image/..." only for an importer under a go.mod: this one's.
printf 'module cimage-verify\n' >"$gopath/src/cimage-verify/go.mod"

# containers_image_openpgp: GPG through Go's openpgp, no cgo (GPG is not
# what this reference is for).  -p 2: the machines are small.
cd "$gopath/src/cimage-verify"
GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="${GOCACHE:-$out/gocache}" GOFLAGS= GOPROXY=off \
	CGO_ENABLED=0 go build -p 2 -tags containers_image_openpgp -o "$out/cimage-verify.new" .
mv "$out/cimage-verify.new" "$out/cimage-verify"
