"""`mlfs stat DIR [--json]`: a live mount's statistics, from the virtual
xattr user.mlfs.stats its daemon answers on the root (fs/stats.c): the
reference and platform, layers loaded, bytes fetched and served, cache
hits, chunks of seekable layers, the last error."""

import ctypes
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import HOST_PLATFORM, Images
from helpers import assert_mlfs_error, assert_ok, wait_for

STATS = "user.mlfs.stats"


def stat_json(mlfs, m):
    r = mlfs("stat", m.mountpoint, "--json")
    assert_ok(r)
    return json.loads(r.stdout)


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


def test_stat_grows_as_files_are_read(mlfs, mounter, demo):
    ref = demo.ref("demo:latest")
    info = Images.by_platform(demo.index, HOST_PLATFORM)
    m = mounter.mount(ref)
    s = stat_json(mlfs, m)
    assert s["version"] == 1
    assert s["reference"] == ref
    assert s["platform"] == HOST_PLATFORM
    assert s["manifest"] == info["digest"]
    assert s["layers_total"] == len(info["layers"])
    # Asking loads nothing: a fresh mount has fetched no layer byte.
    assert (s["layers_loaded"], s["bytes_fetched"], s["bytes_served"], s["reads"]) == (0, 0, 0, 0), s
    assert s["last_error"] is None and s["last_error_time"] is None
    with open("/proc/%d/cmdline" % s["pid"], "rb") as f:  # the daemon serving it
        assert m.mountpoint.encode() in f.read().split(b"\0")

    first = read_all(m.path("etc", "mlfs-platform"))
    # A read is answered as soon as the layers above the file are in: the
    # others follow.
    assert wait_for(lambda: stat_json(mlfs, m)["ready"], timeout=60), stat_json(mlfs, m)
    s1 = stat_json(mlfs, m)
    assert s1["layers_loaded"] == len(info["layers"]), s1
    assert s1["bytes_fetched"] == sum(l["size"] for l in info["layers"]), s1
    assert s1["layers_from_cache"] == 0
    assert s1["bytes_served"] >= len(first) and s1["reads"] >= 1, s1

    busybox = read_all(m.path("bin", "busybox"))
    s2 = stat_json(mlfs, m)
    assert s2["bytes_served"] >= s1["bytes_served"] + len(busybox), (s1, s2)
    assert s2["reads"] > s1["reads"]
    assert s2["bytes_fetched"] == s1["bytes_fetched"]  # nothing more to fetch

    # The human table says the same.
    r = mlfs("stat", m.mountpoint)
    assert_ok(r)
    assert "reference    %s\n" % ref in r.stdout
    assert "layers       %d of %d loaded (0 from the cache), tree ready\n" % (
        len(info["layers"]), len(info["layers"])) in r.stdout, r.stdout
    assert "last error   none\n" in r.stdout, r.stdout


def test_a_second_mount_counts_cache_hits(mlfs, mounter, demo):
    ref = demo.ref("demo:latest")
    n = len(Images.by_platform(demo.index, HOST_PLATFORM)["layers"])
    first = mounter.mount(ref)
    read_all(first.path("etc", "mlfs-platform"))
    assert wait_for(lambda: stat_json(mlfs, first)["ready"], timeout=60), stat_json(mlfs, first)
    m = mounter.mount(ref)
    read_all(m.path("etc", "mlfs-platform"))
    assert wait_for(lambda: stat_json(mlfs, m)["ready"], timeout=60), stat_json(mlfs, m)
    s = stat_json(mlfs, m)
    assert (s["layers_loaded"], s["layers_from_cache"], s["bytes_fetched"]) == (n, n, 0), s


def test_the_attribute_is_not_listed(mounter, demo, tmp_path):
    """tar --xattrs, cp -a and getfattr -d copy what listxattr lists: the
    root lists the image's own attributes only (none here), and a copy of
    the root carries no user.mlfs.stats."""
    m = mounter.mount(demo.ref("demo:latest"))
    assert os.getxattr(m.mountpoint, STATS)  # there when asked by name
    assert os.listxattr(m.mountpoint) == []
    read_all(m.path("etc", "mlfs-platform"))  # and once the tree is up
    assert os.listxattr(m.mountpoint) == []
    out = tmp_path / "root.tar"
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--no-recursion", "-C", m.mountpoint, "-cf",
                    str(out), "."], check=True, timeout=60)
    listing = subprocess.run(["tar", "--xattrs", "-tvvf", str(out)], capture_output=True, text=True,
                             check=True, timeout=60).stdout
    assert "mlfs" not in listing, listing
    # getfattr's way, the size first and then the value: it fits even when
    # the counters grew in between (here: a read).
    libc = ctypes.CDLL(None, use_errno=True)
    libc.getxattr.restype = ctypes.c_ssize_t
    libc.getxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    path, name = m.mountpoint.encode(), STATS.encode()
    size = libc.getxattr(path, name, None, 0)
    assert size > 0, ctypes.get_errno()
    read_all(m.path("bin", "busybox"))
    buf = ctypes.create_string_buffer(size)
    got = libc.getxattr(path, name, buf, size)
    assert got > 0, os.strerror(ctypes.get_errno())
    assert json.loads(buf.raw[:got])["reads"] > 0
    # Only the root answers it.
    with pytest.raises(OSError):
        os.getxattr(m.path("etc"), STATS)


def test_the_image_root_attributes_stay_exact(mounter, demo, tmp_path):
    """An image whose root carries attributes of its own: the mount's root
    lists exactly those, and a tar --xattrs of it carries those and only
    those."""
    from test_conformance import _header, _pad, _pax, _push
    layer = (_pax([(b"SCHILY.xattr.user.rootnote", b"the image's own")]) +
             _header(b"./", typ=b"5", mode=b"0000755\0") +
             _header(b"f", size=1) + _pad(b"x") + b"\0" * 1024)
    digest = _push(demo.client, "rootxattr", "v1", [layer])
    m = mounter.mount("%s/rootxattr@%s" % (demo.registry.host, digest))
    read_all(m.path("f"))
    assert os.listxattr(m.mountpoint) == ["user.rootnote"]
    assert os.getxattr(m.mountpoint, "user.rootnote") == b"the image's own"
    assert json.loads(os.getxattr(m.mountpoint, STATS))["version"] == 1
    out = tmp_path / "root.tar"
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--no-recursion", "-C", m.mountpoint, "-cf",
                    str(out), "."], check=True, timeout=60)
    import tarfile
    with tarfile.open(str(out)) as t:
        keys = sorted(k for k in t.getmembers()[0].pax_headers if k.startswith("SCHILY.xattr."))
    assert keys == ["SCHILY.xattr.user.rootnote"], keys


@pytest.fixture
def open_dir():
    """A directory any user may traverse (pytest's tmp_path is root's alone)."""
    d = tempfile.mkdtemp(prefix="mlfs-stat-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_any_user_of_an_allow_other_mount_reads_it(mlfs_bin, mounter, demo, open_dir):
    """No privilege needed: nobody reads the statistics of a mount it may
    read (allow_other), as it would read the mount's root."""
    exe = os.path.join(open_dir, "mlfs")
    shutil.copy(mlfs_bin, exe)
    os.chmod(exe, 0o755)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if subprocess.run(as_nobody + [exe, "--help"], capture_output=True, timeout=60).returncode != 0:
        pytest.skip("%s does not run as nobody (a wrapper script?)" % mlfs_bin)
    mnt = os.path.join(open_dir, "mnt")
    os.mkdir(mnt)
    m = mounter.mount(demo.ref("demo:latest"), "allow_other", mountpoint=mnt)
    r = subprocess.run(as_nobody + [exe, "stat", m.mountpoint, "--json"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stderr == "", r
    assert json.loads(r.stdout)["reference"] == demo.ref("demo:latest")


def test_not_an_mlfs_mount(mlfs, mounter, demo, tmp_path):
    assert_mlfs_error(mlfs("stat", str(tmp_path)), "not the root of an mlfs mount")
    assert_mlfs_error(mlfs("stat", str(tmp_path), "--json"), "not the root of an mlfs mount")
    m = mounter.mount(demo.ref("demo:latest"))
    assert_mlfs_error(mlfs("stat", m.path("etc")), "not the root of an mlfs mount")
    assert_mlfs_error(mlfs("stat", str(tmp_path / "missing")), "no such file")
    # Something else answering the attribute is not taken for statistics.
    os.setxattr(str(tmp_path), STATS, b'{"version": 1}')
    assert_mlfs_error(mlfs("stat", str(tmp_path)), "not mlfs statistics")
    os.setxattr(str(tmp_path), STATS, b'{"version": 7}')
    assert_mlfs_error(mlfs("stat", str(tmp_path)), "another version of mlfs")
    assert mlfs("stat").rc == 2
    assert mlfs("stat", str(tmp_path), "--bogus").rc == 2


def test_last_error(mlfs, mounter, demo):
    """A load that fails (the registry has stopped answering: an offline
    mount of an image whose layers are not cached) is the last error."""
    ref = demo.ref("demo:latest")
    assert_ok(mlfs("inspect", ref))  # manifest and config cached: an offline mount starts
    m = mounter.mount(ref, "offline")
    with pytest.raises(OSError):
        read_all(m.path("etc", "mlfs-platform"))
    s = stat_json(mlfs, m)
    assert s["last_error"] and "not in the cache" in s["last_error"], s
    assert isinstance(s["last_error_time"], int) and s["last_error_time"] > 0
    r = mlfs("stat", m.mountpoint)
    assert_ok(r)
    assert "last error   " in r.stdout and "not in the cache" in r.stdout, r.stdout


def test_seekable_chunks(mlfs, mounter, seekable):
    m = mounter.mount(seekable["ref"]("estargz"))
    s0 = stat_json(mlfs, m)
    assert s0["chunks_total"] > 0 and s0["layers_loaded"] == s0["layers_total"], s0
    # The TOCs were fetched by range at mount time, and nothing else.
    assert s0["bytes_fetched"] > 0 and s0["chunks_fetched"] == 0, s0
    biggest, size = None, -1
    for root, _, files in os.walk(m.mountpoint):
        for f in files:
            p = os.path.join(root, f)
            if os.path.isfile(p) and not os.path.islink(p) and 0 < os.path.getsize(p) > size:
                biggest, size = p, os.path.getsize(p)
    data = read_all(biggest)
    s1 = stat_json(mlfs, m)
    assert s1["chunks_fetched"] > 0 and s1["chunk_requests"] > 0, s1
    assert s1["bytes_fetched"] > s0["bytes_fetched"]
    assert s1["bytes_served"] >= len(data)
    assert s1["chunks_present"] >= s1["chunks_fetched"]


def test_root_attributes_asked_first_thing(mounter, demo):
    """The root's attributes asked before anything else touched the mount
    (the merged tree not built yet): the image's own, not the empty list of
    the placeholder that answers `stat DIR` without fetching."""
    from test_conformance import _header, _pad, _pax, _push
    layer = (_pax([(b"SCHILY.xattr.user.rootnote", b"asked first")]) +
             _header(b"./", typ=b"5", mode=b"0000755\0") +
             _header(b"f", size=1) + _pad(b"x") + b"\0" * 1024)
    digest = _push(demo.client, "rootxattr1", "v1", [layer])
    m = mounter.mount("%s/rootxattr1@%s" % (demo.registry.host, digest))
    assert os.listxattr(m.mountpoint) == ["user.rootnote"]
    m2 = mounter.mount("%s/rootxattr1@%s" % (demo.registry.host, digest))
    assert os.getxattr(m2.mountpoint, "user.rootnote") == b"asked first"
