"""mlfs built for other CPUs (contrib/cross.sh), run under qemu-user.

armhf is 32-bit (32-bit size_t, off_t through _FILE_OFFSET_BITS, 32-bit
time_t on Debian 12) and s390x big-endian: between them they exercise
every size, offset and byte-order assumption of the whole path, reference
-> manifest -> platform -> layers -> index -> merged tree -> export, against
the real registry.  And the cache is the same on every architecture: what
one build wrote, another reads, offline, in both directions.

The cross builds are made by contrib/test.sh (MLFS_CROSS lists them and
makes their absence a failure); run alone, the tests of an architecture
that was not built are skipped.
"""

import os

import pytest

from helpers import assert_ok, run_mlfs
from test_export import assert_same_tree, crafted, tree_of_tar, umoci_rootfs, tree_of_rootfs  # noqa: F401

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QEMU = {"armhf": "qemu-arm-static", "arm64": "qemu-aarch64-static", "s390x": "qemu-s390x-static"}
REQUIRED = os.environ.get("MLFS_CROSS", "").split()


@pytest.fixture(params=["armhf", "s390x", "arm64"])
def cross(request):
    """(wrap, binary) running mlfs built for that architecture."""
    arch = request.param
    binary = os.path.join(TOP, "build-" + arch, "fs", "mlfs")
    sysroot = os.path.join(TOP, "build-%s-sysroot" % arch)
    if not os.access(binary, os.X_OK):
        if arch in REQUIRED:
            pytest.fail("%s is missing: contrib/cross.sh %s did not build it" % (binary, arch))
        pytest.skip("no %s build (contrib/cross.sh %s)" % (arch, arch))
    return [QEMU[arch], "-L", sysroot], binary


def export_with(env, tmp_path, ref, *args, wrap=(), binary=None, name="out.tar"):
    out = str(tmp_path / name)
    r = run_mlfs("export", ref, "-o", out, *args, env=env, wrap=wrap, binary=binary, timeout=600)
    assert_ok(r, allow_warnings=True)
    with open(out, "rb") as f:
        return f.read()


def test_export_under_qemu_matches_umoci(cross, mlfs_env, crafted, tmp_path):  # noqa: F811
    wrap, binary = cross
    got = tree_of_tar(export_with(mlfs_env, tmp_path, crafted.ref("crafted:gzip"), wrap=wrap, binary=binary))
    assert_same_tree(got, tree_of_rootfs(umoci_rootfs(tmp_path, crafted.registry, "crafted:gzip")))


def test_export_zstd_under_qemu_is_the_same_bytes(cross, mlfs_env, crafted, tmp_path):  # noqa: F811
    wrap, binary = cross
    native = export_with(mlfs_env, tmp_path, crafted.ref("crafted:zstd"), name="native.tar")
    other = dict(mlfs_env, MLFS_CACHE=str(tmp_path / "cache-cross"))
    assert export_with(other, tmp_path, crafted.ref("crafted:zstd"), wrap=wrap, binary=binary,
                       name="cross.tar") == native


def test_cache_moves_between_architectures(cross, mlfs_env, crafted, tmp_path):  # noqa: F811
    """amd64 pulls, the other architecture exports offline from that cache,
    and the other way round: the same bytes every time, nothing fetched."""
    wrap, binary = cross
    ref = crafted.ref("crafted:gzip")
    want = export_with(dict(mlfs_env, MLFS_CACHE=str(tmp_path / "ref-cache")), tmp_path, ref, name="want.tar")

    there = dict(mlfs_env, MLFS_CACHE=str(tmp_path / "from-amd64"))
    assert_ok(run_mlfs("pull", ref, env=there), allow_warnings=True)
    assert export_with(there, tmp_path, ref, "--offline", wrap=wrap, binary=binary, name="a.tar") == want

    back = dict(mlfs_env, MLFS_CACHE=str(tmp_path / "to-amd64"))
    assert_ok(run_mlfs("pull", ref, env=back, wrap=wrap, binary=binary, timeout=600), allow_warnings=True)
    assert export_with(back, tmp_path, ref, "--offline", name="b.tar") == want
    r = run_mlfs("cache", "verify", env=back)
    assert r.rc == 0, r.stderr
