"""32-bit programs without large-file support see every file of a mount.

Such a program (old binaries in armhf and i386 images; anything built
without _FILE_OFFSET_BITS=64) gets EOVERFLOW from stat() and readdir() for
an inode number above 2^32 - 1.  mlfs numbers an image's entries in a row
from 2, so they stay below that: checked with progs/stat32.c, built here
statically for i686 (runs natively) and for armhf (runs under qemu-user),
on a two-layer image with hardlinks and whiteouts, first through
stat() of single paths (answered from the layers before they are merged),
then by walking the whole tree.
"""

import os
import shutil
import subprocess

import pytest

from reference import push_rich_image

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
SOURCE = os.path.join(HERE, "progs", "stat32.c")

TARGETS = {
    "i686": ("i686-linux-gnu-gcc", []),
    "armhf": ("arm-linux-gnueabihf-gcc", ["qemu-arm-static"]),
}


@pytest.fixture(scope="module")
def stat32(tmp_path_factory):
    """{arch: argv prefix} of the 32-bit stat program, built statically."""
    out = tmp_path_factory.mktemp("stat32")
    progs = {}
    for arch, (cc, wrap) in TARGETS.items():
        assert shutil.which(cc), "%s is missing: contrib/install-deps.sh installs it" % cc
        exe = str(out / ("stat32-" + arch))
        subprocess.run([cc, "-static", "-O2", "-o", exe, SOURCE], check=True, timeout=120)
        progs[arch] = wrap + [exe]
    return progs


@pytest.fixture(scope="module")
def rich32(demo):
    return push_rich_image(demo.client, "rich32", "v1")


def run_stat32(argv, *paths):
    r = subprocess.run(argv + list(paths), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    words = lines[-1].split()
    return {"entries": int(words[1]), "errors": int(words[3]), "overflows": int(words[5]),
            "failures": lines[:-1]}


def walk_count(root):
    n = 0
    for _, dirs, files in os.walk(root):
        n += len(dirs) + len(files)
    return n


@pytest.mark.parametrize("arch", sorted(TARGETS))
def test_32bit_program_sees_every_file(mounter, demo, rich32, stat32, arch):
    m = mounter.mount(demo.registry.host + "/rich32:v1", foreground=True)
    # Single paths first: answered early, from the layers, before any listing.
    early = [m.path(p) for p in ("etc", "etc/passwd", "usr", "bin")]
    early = [p for p in early if os.path.lexists(p)] or [m.mountpoint]
    r = run_stat32(stat32[arch], *early)
    assert r["errors"] == 0, r["failures"][:20]
    r = run_stat32(stat32[arch], m.mountpoint)
    assert r["overflows"] == 0, r["failures"][:20]
    assert r["errors"] == 0, r["failures"][:20]
    assert r["entries"] == walk_count(m.mountpoint) > 0
    assert m.unmount() == 0


def test_inode_numbers_are_small_and_stable(mounter, demo, rich32):
    """Every number is below 2^32, hardlinks share theirs, and a file
    stat()ed before the merge has the number the merged tree gives it."""
    m = mounter.mount(demo.registry.host + "/rich32:v1", foreground=True)
    first = {}
    for dirpath, dirs, files in os.walk(m.mountpoint):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            first[os.path.relpath(p, m.mountpoint)] = os.lstat(p).st_ino
    assert m.unmount() == 0
    assert first and max(first.values()) < 2 ** 32, max(first.values())
    links = {}
    for rel, ino in first.items():
        links.setdefault(ino, []).append(rel)
    assert any(len(v) > 1 for v in links.values()), "the rich image has hardlinks: they share a number"
    # A new mount: stat the deepest paths before anything merges the layers.
    m = mounter.mount(demo.registry.host + "/rich32:v1", foreground=True)
    deep = sorted(first, key=lambda rel: -rel.count("/"))[:10]
    for rel in deep:
        assert os.lstat(m.path(rel)).st_ino == first[rel], rel
    os.listdir(m.mountpoint)  # the merged tree from here on
    for rel in deep:
        assert os.lstat(m.path(rel)).st_ino == first[rel], rel
    assert m.unmount() == 0


def test_armhf_daemon_under_qemu(mounter, demo, rich32, stat32, tmp_path):
    """The armhf build of mlfs itself serves the mount (under qemu-user:
    FUSE's messages are host-endian, so this works for little-endian
    guests only; s390x is covered by test_cross.py without FUSE), and
    both 32-bit programs walk it without EOVERFLOW."""
    binary = os.path.join(TOP, "build-armhf", "fs", "mlfs")
    if not os.access(binary, os.X_OK):
        if "armhf" in os.environ.get("MLFS_CROSS", "").split():
            pytest.fail("%s is missing: contrib/cross.sh armhf did not build it" % binary)
        pytest.skip("no armhf build (contrib/cross.sh armhf)")
    wrapper = tmp_path / "mlfs-armhf"
    wrapper.write_text("#!/bin/sh\nexec qemu-arm-static -L %s %s \"$@\"\n"
                       % (os.path.join(TOP, "build-armhf-sysroot"), binary))
    wrapper.chmod(0o755)
    mounter.binary = str(wrapper)
    m = mounter.mount(demo.registry.host + "/rich32:v1", foreground=True)
    for arch in sorted(TARGETS):
        r = run_stat32(stat32[arch], m.mountpoint)
        assert r["errors"] == 0, (arch, r["failures"][:20])
        assert r["entries"] == walk_count(m.mountpoint) > 0
    assert m.unmount() == 0
