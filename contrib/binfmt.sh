#!/bin/sh
# Register qemu-user-static's binfmt_misc entries so that foreign binaries
# (the demo image's busybox for arm64, arm/v7, s390x, ppc64le) run on this
# host, also inside a chroot into a mounted image.
#
#   contrib/binfmt.sh [ARCH...]     default: aarch64 arm s390x ppc64le
#
# Where no binfmt service runs (containers, minimal VMs), binfmt_misc may not
# even be mounted: mount it at /proc/sys/fs/binfmt_misc, then write each
# line of /usr/lib/binfmt.d/qemu-ARCH.conf (package qemu-user-static) to
# `register` unless an entry of that name exists already.  Debian's lines
# carry the F flag: the kernel opens the interpreter at registration time,
# so it need not exist inside the chroot.
#
# Exit status: 0 all registered (or already were), 1 an error, 77 cannot be
# done on this machine (binfmt_misc cannot be mounted, not root, no
# qemu-user-static), with the reason on stderr; tests treat 77 as a skip.
set -eu

BINFMT=${MLFS_BINFMT_DIR:-/proc/sys/fs/binfmt_misc}
CONFDIR=${MLFS_BINFMT_CONFDIR:-/usr/lib/binfmt.d}
prog=$(basename "$0")

skip() { echo "$prog: skipped: $*" >&2; exit 77; }
die() { echo "$prog: $*" >&2; exit 1; }

[ $# -gt 0 ] || set -- aarch64 arm s390x ppc64le

if [ ! -e "$BINFMT/register" ]; then
	[ "$(id -u)" = 0 ] || skip "binfmt_misc is not mounted at $BINFMT and we are not root"
	mkdir -p "$BINFMT" 2>/dev/null || true
	mount -t binfmt_misc binfmt_misc "$BINFMT" 2>/dev/null ||
		skip "cannot mount binfmt_misc at $BINFMT (no privilege, or the kernel lacks CONFIG_BINFMT_MISC)"
	[ -e "$BINFMT/register" ] || skip "binfmt_misc mounted at $BINFMT but has no register file"
fi
[ -w "$BINFMT/register" ] || skip "$BINFMT/register is not writable (not root?)"

# The whole facility can be switched off; switch it on (we are root here).
if [ -f "$BINFMT/status" ] && [ "$(cat "$BINFMT/status")" != enabled ]; then
	echo 1 >"$BINFMT/status" 2>/dev/null || skip "binfmt_misc is disabled and cannot be enabled"
fi

for arch in "$@"; do
	conf=$CONFDIR/qemu-$arch.conf
	[ -f "$conf" ] || skip "$conf not found (install qemu-user-static)"
	# Lines look like :NAME:TYPE:OFFSET:MAGIC:MASK:INTERPRETER:FLAGS
	grep -v '^[[:space:]]*\(#\|$\)' "$conf" | while IFS= read -r line; do
		name=$(printf '%s\n' "$line" | cut -d: -f2)
		interp=$(printf '%s\n' "$line" | cut -d: -f7)
		[ -n "$name" ] || die "$conf: cannot parse: $line"
		if [ -e "$BINFMT/$name" ]; then
			# Already there (ours from an earlier run, or the system's).
			continue
		fi
		[ -x "$interp" ] || skip "interpreter $interp for $name is missing (install qemu-user-static)"
		# One write per entry: the kernel parses each write as one record.
		printf '%s' "$line" >"$BINFMT/register" ||
			die "registering $name failed (line from $conf)"
		[ -e "$BINFMT/$name" ] || die "registered $name but $BINFMT/$name did not appear"
	done
done
exit 0
