"""`mlfs mount` / `mount.mlfs`: the FUSE filesystem against a real registry.

The mounted tree must equal, entry by entry, what umoci unpacks from the
same image (treediff.py); layer blobs are fetched lazily (nothing before
the first access that needs data or a listing, then everything); offline
mounts work from the cache alone; many readers get the right bytes; a
registry that fails or goes silent gives EIO within `timeout=` and a logged
reason, and a later access recovers; every error leaves no mount behind;
everything is read-only; umount, fusermount3 -u and SIGTERM unmount.

Foreign platforms run their busybox under qemu-user through binfmt_misc
(contrib/binfmt.sh); only where that script exits 77 are they skipped.
Mounts go through mounts.Mount: bounded waits, always unmounted, and a
watchdog that kills a daemon that would hang the test.
"""

import errno
import re
import os
import random
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import HOST_PLATFORM, REPO_ROOT, Images
from faultproxy import FaultProxy
from helpers import assert_mlfs_error, sha256_file, wait_for
from mounts import (
    assert_not_mounted, force_unmount, is_mounted, mlfs_pids, mounts_at, proc_mounts, read_in_child,
    real_path,
)
from reference import push_rich_image, unpack_reference
import treediff

BINFMT_SCRIPT = os.path.join(REPO_ROOT, "contrib", "binfmt.sh")
# platform asked -> (platform in the index, `uname -m` under qemu)
FOREIGN = [
    ("linux/arm64", "linux/arm64/v8", "aarch64"),
    ("linux/arm/v7", "linux/arm/v7", "armv7l"),
    ("linux/s390x", "linux/s390x", "s390x"),
    ("linux/ppc64le", "linux/ppc64le", "ppc64le"),
]
ALL_PLATFORMS = ["linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/s390x", "linux/ppc64le"]


# -- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def binfmt():
    """Runs contrib/binfmt.sh once; (status, reason)."""
    r = subprocess.run([BINFMT_SCRIPT], capture_output=True, text=True, timeout=60)
    return r.returncode, (r.stderr or r.stdout).strip()


def need_binfmt(binfmt):
    rc, reason = binfmt
    if rc == 77:
        pytest.skip("foreign binaries cannot run here: %s" % reason)
    assert rc == 0, "contrib/binfmt.sh failed (%d): %s" % (rc, reason)


@pytest.fixture(scope="session")
def reference_dir(session_dir):
    return os.path.join(session_dir, "reference")


def demo_reference(demo, platform, reference_dir):
    info = Images.by_platform(demo.index, platform)
    return unpack_reference(demo.host, "demo", info["digest"], reference_dir)


@pytest.fixture(scope="session")
def rich(demo, reference_dir):
    """The corner-case image (reference.py) in the plain registry, its
    description and its umoci-unpacked reference tree."""
    desc = push_rich_image(demo.client, "rich", "v1")
    rootfs = unpack_reference(demo.host, "rich", desc["digest"], reference_dir)
    return Images(demo.registry, desc=desc, rootfs=rootfs, tree=treediff.walk(rootfs))


@pytest.fixture
def proxy(demo):
    p = StallProxy(("127.0.0.1", demo.registry.port))
    yield p
    p.close()


class StallProxy(FaultProxy):
    """A FaultProxy that can also go silent: requests matching a stall
    pattern get no answer until release() (then the connection is closed
    without a response, as if the registry had died), bounded at 120 s."""

    def __init__(self, *a, **kw):
        self._stall = None
        self._released = threading.Event()
        super().__init__(*a, **kw)

    def stall(self, pattern):
        self._released.clear()
        self._stall = re.compile(pattern)

    def release(self):
        self._stall = None
        self._released.set()

    def clear(self):
        """Remove every fault: the registry is healthy again."""
        with self._lock:
            self._faults.clear()
            self._cuts.clear()
        self.release()

    def handle(self, h):
        st = self._stall
        if st is not None and st.search(h.path):
            self._released.wait(timeout=120)
            h.close_connection = True
            return True
        return super().handle(h)

    def close(self):
        self.release()
        super().close()

    def layer_gets(self, layers):
        """{digest: number of GET requests seen} for the given layer descriptors."""
        return {l["digest"]: sum(1 for r in self.seen if r["method"] == "GET"
                                 and r["path"].split("?", 1)[0].endswith("/blobs/" + l["digest"]))
                for l in layers}


def read(path):
    with open(path, "rb") as f:
        return f.read()


def platform_of(m):
    return read(m.path("etc", "mlfs-platform")).decode().strip()


def file_hashes(tree):
    return {p: m["sha256"] for p, m in tree.items() if m["type"] == "file"}


# -- platforms ----------------------------------------------------------------------------

def test_default_mount_is_host_platform(mounter, demo):
    m = mounter.mount(demo.ref("demo:latest"))
    assert platform_of(m) == HOST_PLATFORM


def test_docker_list_mounts_too(mounter, demo):
    m = mounter.mount(demo.ref("demo:list"), "platform=linux/s390x")
    assert platform_of(m) == "linux/s390x"


@pytest.mark.parametrize("asked,indexed,machine", FOREIGN, ids=[f[0] for f in FOREIGN])
def test_foreign_platform_runs_in_chroot(mounter, demo, binfmt, asked, indexed, machine):
    m = mounter.mount(demo.ref("demo:latest"), "platform=" + asked)
    assert platform_of(m) == indexed
    need_binfmt(binfmt)
    r = subprocess.run(["chroot", m.mountpoint, "/bin/busybox", "uname", "-m"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == machine
    # /bin/sh is a symlink to busybox inside the image: resolved in the chroot.
    r = subprocess.run(["chroot", m.mountpoint, "/bin/sh", "-c", "cat /etc/mlfs-platform"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == indexed


# -- the tree equals the reference -----------------------------------------------------------

@pytest.mark.parametrize("platform", ALL_PLATFORMS)
def test_tree_matches_umoci(mounter, demo, reference_dir, platform):
    ref_root = demo_reference(demo, platform, reference_dir)
    m = mounter.mount(demo.ref("demo:latest"), "platform=" + platform)
    treediff.assert_same_tree(ref_root, m.mountpoint, what="mount of %s" % platform)


def test_rich_tree_matches_umoci(mounter, rich):
    """Hardlinks, devices, fifo, xattrs, whiteouts, opaque dirs, type changes,
    odd modes and owners, long and non-ASCII names, multi-megabyte files."""
    m = mounter.mount(rich.ref("rich:v1"))
    treediff.assert_same_tree(rich.tree, m.mountpoint, what="mount of rich:v1")


def test_rich_tree_by_digest(mounter, rich):
    m = mounter.mount(rich.ref("rich@" + rich.desc["digest"]))
    treediff.assert_same_tree(rich.tree, m.mountpoint, what="mount of rich@digest")


def test_treediff_reports_differences(tmp_path):
    """The checker itself: it sees every kind of difference it claims to."""
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (d / "sub").mkdir(parents=True)
        (d / "f").write_bytes(b"same")
        (d / "g").write_bytes(b"x")
        os.link(d / "g", d / "sub" / "g2")
        os.symlink("f", d / "l")
    (b / "f").write_bytes(b"diff")
    os.chmod(b / "sub", 0o700)
    os.unlink(b / "sub" / "g2")
    (b / "sub" / "g2").write_bytes(b"x")
    os.unlink(b / "l")
    os.symlink("g", b / "l")
    os.setxattr(b / "g", "user.t", b"v")
    (b / "extra").write_bytes(b"")
    d = treediff.diff(treediff.walk(str(a)), treediff.walk(str(b)))
    text = "\n".join(d)
    for needle in ("f: sha256", "sub: mode", "g: links", "sub/g2: links", "l: target",
                   "g: xattrs", "extra: unexpected", "g: nlink"):
        assert needle in text, text
    assert treediff.diff(treediff.walk(str(a)), treediff.walk(str(a))) == []


# -- lazy fetching ----------------------------------------------------------------------------

def test_no_layer_fetched_before_first_access(mounter, demo, proxy):
    info = Images.by_platform(demo.index, "linux/amd64")
    m = mounter.mount(proxy.host + "/demo:latest", "platform=linux/amd64")
    os.stat(m.mountpoint)
    os.stat(m.mountpoint + "/")
    os.lstat(m.mountpoint)
    time.sleep(0.5)  # give a wrongly eager daemon time to show itself
    assert proxy.layer_gets(info["layers"]) == {l["digest"]: 0 for l in info["layers"]}, (
        "layer blobs fetched before any access: %r" % proxy.requests("/blobs/"))
    assert read(m.path("etc", "mlfs-platform")) == b"linux/amd64\n"
    # Then every layer is fetched (in parallel), not only the one needed.
    assert wait_for(lambda: all(proxy.layer_gets(info["layers"]).values()), timeout=30), (
        proxy.layer_gets(info["layers"]))


def test_listing_root_fetches(mounter, demo, proxy, reference_dir):
    info = Images.by_platform(demo.index, "linux/s390x")
    m = mounter.mount(proxy.host + "/demo:latest", "platform=linux/s390x")
    assert not any(proxy.layer_gets(info["layers"]).values())
    expected = sorted(os.listdir(demo_reference(demo, "linux/s390x", reference_dir)))
    assert sorted(os.listdir(m.mountpoint)) == expected
    assert any(proxy.layer_gets(info["layers"]).values())


def test_prefetch_fetches_without_access(mounter, demo, proxy):
    info = Images.by_platform(demo.index, "linux/ppc64le")
    mounter.mount(proxy.host + "/demo:latest", "platform=linux/ppc64le", "prefetch")
    assert wait_for(lambda: all(proxy.layer_gets(info["layers"]).values()), timeout=30), (
        proxy.layer_gets(info["layers"]))


def test_each_layer_fetched_once(mounter, rich, proxy):
    """Many readers at once, one fetch per layer blob: exactly one GET that
    starts at offset 0 (no Range, or bytes=0-...) per layer; ranged GETs for
    later chunks are allowed."""
    m = mounter.mount(proxy.host + "/rich:v1")
    files = [m.path(p) for p, e in rich.tree.items() if e["type"] == "file"][:16]
    threads = [threading.Thread(target=lambda p=p: sha256_file(p), daemon=True) for p in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "readers did not finish"
    starts = {}
    for l in rich.desc["layers"]:
        starts[l["digest"]] = sum(
            1 for r in proxy.seen
            if r["method"] == "GET" and r["path"].split("?", 1)[0].endswith("/blobs/" + l["digest"])
            and r["headers"].get("range", "bytes=0-").startswith("bytes=0-"))
    assert starts == {l["digest"]: 1 for l in rich.desc["layers"]}, starts


# -- offline, cache --------------------------------------------------------------------------

def test_offline_second_mount_same_bytes(mounter, mlfs_env, demo, proxy, tmp_path):
    """First mount online with cache=DIR (MLFS_CACHE elsewhere), read all;
    then with the registry unreachable, `offline` from the same cache."""
    cache = str(tmp_path / "explicit-cache")
    ref = proxy.host + "/demo:latest"
    m = mounter.mount(ref, "cache=" + cache, "platform=linux/arm/v7")
    first = treediff.walk(m.mountpoint)
    m.unmount("fusermount3")
    assert os.listdir(cache), "cache= was not used"
    assert not os.path.exists(mlfs_env["MLFS_CACHE"]) or not any(
        files for _, _, files in os.walk(mlfs_env["MLFS_CACHE"])), "MLFS_CACHE used despite cache="
    proxy.close()  # no registry at all now: any request would be refused
    m2 = mounter.mount(ref, "offline", "cache=" + cache, "platform=linux/arm/v7")
    second = treediff.walk(m2.mountpoint)
    assert file_hashes(second) == file_hashes(first)
    assert treediff.diff(first, second) == []


def test_offline_via_mlfs_cache(mounter, demo, proxy):
    ref = proxy.host + "/demo:latest"
    m = mounter.mount(ref)
    data = read(m.path("bin", "busybox"))
    m.unmount("umount")
    proxy.close()
    m2 = mounter.mount(ref, "offline")
    assert read(m2.path("bin", "busybox")) == data


def test_offline_empty_cache_fails_cleanly(mounter, demo):
    m = mounter.mount(demo.ref("demo:latest"), "offline", check=False)
    assert_mlfs_error(m.result)
    assert_not_mounted(m.mountpoint)
    assert not mlfs_pids(m.mountpoint)


# -- many readers ------------------------------------------------------------------------------

def test_sixteen_concurrent_readers(mounter, rich):
    """16 processes sha256sum every file of a cold mount at once."""
    m = mounter.mount(rich.ref("rich:v1"))
    expected = file_hashes(rich.tree)
    paths = sorted(expected)
    procs = []
    for i in range(16):
        k = i * len(paths) // 16
        order = paths[k:] + paths[:k]  # each starts somewhere else
        procs.append((order, subprocess.Popen(
            ["sha256sum", "--zero", "--"] + [m.path(p) for p in order],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)))
    failures = []
    deadline = time.monotonic() + 180
    for order, p in procs:
        try:
            out, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate(timeout=10)
            failures.append("a reader timed out")
            continue
        if p.returncode != 0:
            failures.append("sha256sum failed: %s" % err.decode("utf-8", "replace")[:500])
            continue
        records = [r for r in out.split(b"\0") if r]
        got = [r.split(b" ", 1)[0].decode() for r in records]
        for path, h in zip(order, got):
            if h != expected[path]:
                failures.append("%s: wrong bytes" % path)
        if len(got) != len(order):
            failures.append("a reader hashed %d of %d files" % (len(got), len(order)))
    assert not failures, "\n".join(failures[:40])


def test_random_reads_match(mounter, rich):
    """pread at seeded random offsets and lengths (chunk and page edges
    included), in a gzip layer and a plain tar layer, equals the reference."""
    m = mounter.mount(rich.ref("rich:v1"))
    rng = random.Random(4)
    for rel in ("data/random-3m", "data/zeros-1m", "data/size-131073", "data/size-4097",
                "many/f1499-" + "x" * (1499 % 40)):
        with open(os.path.join(rich.rootfs, rel), "rb") as f:
            want = f.read()
        fd = os.open(m.path(rel), os.O_RDONLY)
        try:
            assert os.fstat(fd).st_size == len(want)
            offsets = [0, len(want) - 1, len(want), len(want) + 4096, 4095, 4096, 65535, 65536,
                       131072, 1 << 20] + [rng.randrange(0, len(want) + 1) for _ in range(40)]
            for off in offsets:
                n = rng.choice([1, 7, 4096, 4097, 65536, 300000])
                assert os.pread(fd, n, off) == want[off:off + n], "%s: pread(%d, %d)" % (rel, n, off)
        finally:
            os.close(fd)


def test_two_mounts_share_a_cold_cache(mounter, rich):
    """Two mounts of one image, one cache, both cold, read at once."""
    m1 = mounter.mount(rich.ref("rich:v1"))
    m2 = mounter.mount(rich.ref("rich@" + rich.desc["digest"]))
    trees = {}
    threads = [threading.Thread(target=lambda m=m: trees.__setitem__(m.mountpoint, treediff.walk(m.mountpoint)),
                                daemon=True) for m in (m1, m2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "walks did not finish"
    for m in (m1, m2):
        treediff.assert_same_tree(rich.tree, trees[m.mountpoint], what=m.ref)


# -- a registry that fails or goes silent -----------------------------------------------------

def test_cut_download_resumes_inside_mount(mounter, demo, proxy, reference_dir):
    """Every layer GET cut once in the middle: the mount resumes and reads right."""
    info = Images.by_platform(demo.index, "linux/arm64/v8")
    for l in info["layers"]:
        proxy.cut("/blobs/" + l["digest"], max(1, l["size"] // 2))
    m = mounter.mount(proxy.host + "/demo:latest", "platform=linux/arm64", "timeout=60")
    assert platform_of(m) == "linux/arm64/v8"
    want = os.path.join(demo_reference(demo, "linux/arm64/v8", reference_dir), "bin", "busybox")
    assert sha256_file(m.path("bin", "busybox")) == sha256_file(want)
    gets = proxy.layer_gets(info["layers"])
    assert all(n >= 2 for n in gets.values()), "the cuts did not happen? %r" % gets


@pytest.mark.parametrize("fault", ["503", "stall"])
def test_registry_gone_gives_eio_then_recovers(mounter, demo, proxy, fault):
    info = Images.by_platform(demo.index, "linux/amd64")
    pattern = "/blobs/(%s)" % "|".join(l["digest"] for l in info["layers"])
    m = mounter.mount(proxy.host + "/demo:latest", "platform=linux/amd64", "timeout=5",
                      foreground=True)
    if fault == "503":
        proxy.fail(pattern, 503, times=10 ** 6)
        needles = ("503", "unavailable", "injected fault")
    else:
        proxy.stall(pattern)
        needles = ("timed out", "timeout", "time out")
    target = m.path("etc", "mlfs-platform")
    started = time.monotonic()
    [(data, err)] = read_in_child([target], timeout=60)
    elapsed = time.monotonic() - started
    assert data is None and err == errno.EIO, "expected EIO, got %r (errno %r)" % (data, err)
    assert m.proc.poll() is None, "the daemon died:\n" + m.stderr()
    assert is_mounted(m.mountpoint)
    assert wait_for(lambda: any(n in m.stderr().lower() for n in needles), timeout=10), (
        "the daemon did not log a reason (%s) after %.1fs; stderr:\n%s" % (needles, elapsed, m.stderr()))

    proxy.clear()
    # A later access retries the fetch.  A reader racing with the end of the
    # failed fetch may still see EIO once; a few bounded tries are allowed.
    # Both files: the second is in another layer, whose load may end (or
    # hit timeout=5 on a loaded machine) after the first file's.
    busybox = m.path("bin", "busybox")
    results = []
    for _ in range(4):
        [(data, err), (elf, err2)] = read_in_child([target, busybox], timeout=60)
        results.append((err, err2))
        if data is not None and elf is not None:
            break
        time.sleep(1)
    assert data == b"linux/amd64\n" and elf is not None and elf[:4] == b"\x7fELF", (
        "still failing after the fault was removed: %r\n%s" % (results, m.stderr()))


def test_corrupt_layer_gives_eio(mounter, broken):
    """A layer whose digest does not match is never served."""
    m = mounter.mount(broken.ref("broken/layer-digest:v1"), "timeout=10", foreground=True)
    [(data, err)] = read_in_child([m.path("etc", "mlfs-layer-digest")], timeout=60)
    assert data is None and err == errno.EIO, (data, err)
    assert wait_for(lambda: "digest" in m.stderr().lower(), timeout=10), m.stderr()


# -- failures leave nothing behind --------------------------------------------------------------

def check_failed_cleanly(m, *needles):
    line = assert_mlfs_error(m.result, *needles)
    assert_not_mounted(m.mountpoint)
    assert wait_for(lambda: not mlfs_pids(m.mountpoint), timeout=5), "a daemon was left running"
    return line


@pytest.mark.parametrize("helper", [False, True], ids=["mlfs-mount", "mount.mlfs"])
def test_not_found(mounter, demo, helper):
    m = mounter.mount(demo.ref("demo:no-such-tag"), check=False, use_helper=helper)
    check_failed_cleanly(m, "not found")


@pytest.mark.bearer
def test_unauthorized(mounter, bearer):
    m = mounter.mount(bearer.ref("private/demo:latest"), check=False)
    check_failed_cleanly(m, "unauthorized", "denied")


def test_no_matching_platform(mounter, demo):
    m = mounter.mount(demo.ref("demo:latest"), "platform=linux/riscv64", check=False)
    line = check_failed_cleanly(m, "no matching platform")
    assert "linux/s390x" in line


@pytest.mark.parametrize("opt", ["bogus", "jobs=zero", "timeout=-1", "platform=linux/"])
def test_bad_option(mounter, demo, opt):
    m = mounter.mount(demo.ref("demo:latest"), opt, check=False)
    line = check_failed_cleanly(m)
    assert opt.split("=")[0] in line, "the message should name the option: " + line


def test_mountpoint_missing(mounter, demo):
    mp = mounter.new_mountpoint(create=False)
    m = mounter.mount(demo.ref("demo:latest"), mountpoint=mp, check=False)
    check_failed_cleanly(m)
    assert not os.path.exists(mp), "the mountpoint must not be created"


def test_mountpoint_is_a_file(mounter, demo, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("not a directory\n")
    m = mounter.mount(demo.ref("demo:latest"), mountpoint=str(f), check=False)
    check_failed_cleanly(m)
    assert f.read_text() == "not a directory\n"


def test_error_in_foreground_mode(mounter, demo):
    m = mounter.mount(demo.ref("demo:no-such-tag"), foreground=True, check=False)
    assert m.result is not None, "a failing foreground mount must exit"
    check_failed_cleanly(m, "not found")


# -- read-only ------------------------------------------------------------------------------------

def _erofs_ops(root):
    f = os.path.join(root, "etc", "mlfs-platform")
    d = os.path.join(root, "etc")
    return {
        "create": lambda: os.close(os.open(os.path.join(d, "new"), os.O_CREAT | os.O_WRONLY, 0o644)),
        "mkdir": lambda: os.mkdir(os.path.join(d, "newdir")),
        "unlink": lambda: os.unlink(f),
        "rmdir": lambda: os.rmdir(d),
        "rename": lambda: os.rename(f, os.path.join(d, "renamed")),
        "chmod": lambda: os.chmod(f, 0o600),
        "chown": lambda: os.chown(f, 1, 1),
        "utime": lambda: os.utime(f, (0, 0)),
        "truncate": lambda: os.truncate(f, 0),
        "write-existing": lambda: os.close(os.open(f, os.O_WRONLY)),
        "append-existing": lambda: os.close(os.open(f, os.O_WRONLY | os.O_APPEND)),
        "symlink": lambda: os.symlink("x", os.path.join(d, "newlink")),
        "link": lambda: os.link(f, os.path.join(d, "newhard")),
        "mknod": lambda: os.mkfifo(os.path.join(d, "newfifo")),
        "setxattr": lambda: os.setxattr(f, "user.x", b"1"),
    }


def test_writes_fail_with_erofs(mounter, demo):
    m = mounter.mount(demo.ref("demo:latest"), "platform=linux/amd64")
    before = read(m.path("etc", "mlfs-platform"))
    wrong = []
    for name, op in _erofs_ops(m.mountpoint).items():
        try:
            op()
            wrong.append("%s succeeded" % name)
        except OSError as e:
            if e.errno != errno.EROFS:
                wrong.append("%s: %s, not EROFS" % (name, errno.errorcode.get(e.errno, e.errno)))
    assert not wrong, "\n".join(wrong)
    assert read(m.path("etc", "mlfs-platform")) == before
    assert sorted(os.listdir(m.path("etc"))) == ["mlfs-platform"]


def test_ro_option_accepted(mounter, demo):
    m = mounter.mount(demo.ref("demo:latest"), "ro")
    with pytest.raises(OSError) as e:
        os.mkdir(m.path("x"))
    assert e.value.errno == errno.EROFS


# -- unmounting ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["umount", "fusermount3", "sigterm"])
@pytest.mark.parametrize("foreground", [False, True], ids=["daemon", "foreground"])
def test_unmount(mounter, demo, how, foreground):
    m = mounter.mount(demo.ref("demo:latest"), foreground=foreground)
    assert platform_of(m) == HOST_PLATFORM
    pids = m.pids()
    assert pids, "no mlfs process found serving %s" % m.mountpoint
    rc = m.unmount(how)
    assert_not_mounted(m.mountpoint)
    assert not mlfs_pids(m.mountpoint)
    if foreground:
        assert rc == 0, "foreground mlfs exited %r after %s\n%s" % (rc, how, m.stderr())


def test_daemonised_mount_returns_when_up(mounter, demo):
    m = mounter.mount(demo.ref("demo:latest"))
    assert m.result.rc == 0
    assert m.result.stdout == ""
    # Up as soon as the command returned, no polling.
    assert is_mounted(m.mountpoint)
    assert m.proc.poll() == 0
    assert m.pids(), "the daemon is not running"


def test_debug_implies_foreground(mounter, demo):
    m = mounter.mount(demo.ref("demo:latest"), debug=True)
    assert m.proc.poll() is None, "-d must stay in the foreground"
    platform_of(m)
    assert wait_for(lambda: m.stderr().strip() != "", timeout=5), "-d logged nothing"
    assert m.unmount("fusermount3") == 0


# -- /proc/mounts and mount options ----------------------------------------------------------------

@pytest.mark.parametrize("helper", [False, True], ids=["mlfs-mount", "mount.mlfs"])
def test_proc_mounts_source_and_type(mounter, demo, helper):
    ref = demo.ref("demo:list")
    m = mounter.mount(ref, "platform=linux/arm64", use_helper=helper)
    real = real_path(m.mountpoint)
    entries = [e for e in proc_mounts() if e[1] == real]
    assert len(entries) == 1, entries
    source, _, fstype, _ = entries[0]
    assert (source, fstype) == (ref, "fuse.mlfs")
    assert platform_of(m) == "linux/arm64/v8"


def test_nosuid_nodev_by_default(mounter, demo):
    m = mounter.mount(demo.ref("demo:latest"))
    [e] = mounts_at(m.mountpoint)
    assert "nosuid" in e["options"] and "nodev" in e["options"], e
    assert "allow_other" not in e["super_options"], e


def test_suid_dev_allow_other(mounter, demo):
    # A mountpoint other users can reach (pytest's tmp dirs are 0700).
    base = tempfile.mkdtemp(prefix="mlfs-test-mnt-", dir="/tmp")
    try:
        os.chmod(base, 0o755)
        m = mounter.mount(demo.ref("demo:latest"), "suid", "dev", "allow_other", mountpoint=base)
        [e] = mounts_at(base)
        assert "nosuid" not in e["options"] and "nodev" not in e["options"], e
        assert "allow_other" in e["super_options"], e
        r = subprocess.run(["cat", os.path.join(base, "etc", "mlfs-platform")], capture_output=True,
                           user=65534, group=65534, extra_groups=[], timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == HOST_PLATFORM.encode(), r
        m.unmount("fusermount3")
    finally:
        for m in mounter.mounts:
            if m.mountpoint == base:
                m.cleanup()
        if not is_mounted(base):
            os.rmdir(base)


def test_other_users_kept_out_without_allow_other(mounter, demo):
    base = tempfile.mkdtemp(prefix="mlfs-test-mnt-", dir="/tmp")
    try:
        os.chmod(base, 0o755)
        m = mounter.mount(demo.ref("demo:latest"), mountpoint=base)
        r = subprocess.run(["cat", os.path.join(base, "etc", "mlfs-platform")], capture_output=True,
                           user=65534, group=65534, extra_groups=[], timeout=60)
        assert r.returncode != 0, "another user could read the mount without allow_other"
        m.unmount("fusermount3")
    finally:
        for m in mounter.mounts:
            if m.mountpoint == base:
                m.cleanup()
        if not is_mounted(base):
            os.rmdir(base)


@pytest.mark.parametrize("opts", [["jobs=1"], ["jobs=8"], ["insecure"], ["timeout=30"],
                                  ["ro", "jobs=2", "insecure", "timeout=300"]],
                         ids=lambda o: ",".join(o))
def test_options_accepted(mounter, demo, opts):
    m = mounter.mount(demo.ref("demo:latest"), "platform=linux/s390x", *opts)
    assert platform_of(m) == "linux/s390x"


def test_helper_mount_with_options(mounter, demo):
    m = mounter.mount(demo.ref("demo:latest"), "platform=linux/arm64", "ro", use_helper=True)
    assert platform_of(m) == "linux/arm64/v8"


def test_file_in_top_layer_readable_while_a_lower_layer_is_unavailable(mounter, demo, proxy):
    """A lookup is answered once the layers above its match are indexed: with
    the bottom layer (busybox) unavailable, the top layer's file still reads;
    what needs the bottom layer (a listing, /bin/busybox) fails with EIO."""
    info = Images.by_platform(demo.index, "linux/amd64")
    bottom, top = info["layers"][0]["digest"], info["layers"][-1]["digest"]
    proxy.fail("/blobs/" + bottom, 503, times=10 ** 6)
    m = mounter.mount(proxy.host + "/demo:latest", "platform=linux/amd64", "timeout=5", foreground=True)
    [(data, err)] = read_in_child([m.path("etc", "mlfs-platform")], timeout=60)
    assert data == b"linux/amd64\n", "top-layer file not served early (errno %r)\n%s" % (err, m.stderr())
    assert proxy.requests("/blobs/" + top), "the top layer was never fetched"
    [(data, err)] = read_in_child([m.path("bin", "busybox")], timeout=60)
    assert data is None and err == errno.EIO, (data, err)
    # Once the bottom layer is back, everything is there, under the same inodes.
    early_ino = os.stat(m.path("etc", "mlfs-platform")).st_ino
    proxy.clear()
    results = []
    for _ in range(3):
        [(data, err)] = read_in_child([m.path("bin", "busybox")], timeout=60)
        results.append(err)
        if data is not None:
            break
        time.sleep(1)
    assert data is not None and data[:4] == b"\x7fELF", results
    assert sorted(os.listdir(m.mountpoint)) == ["bin", "etc"]
    assert os.stat(m.path("etc", "mlfs-platform")).st_ino == early_ino


def test_tar_of_a_fresh_mount_sees_nothing_change(mounter, demo):
    """The root's placeholder attributes (before the layers are in) and its
    real ones agree on ctime, so `tar` does not warn that "." changed while
    it was read (and exit 1, which breaks scripts)."""
    m = mounter.mount(demo.ref("demo:latest"), "platform=linux/amd64")
    r = subprocess.run(["tar", "-cf", "/dev/null", "-C", m.mountpoint, "."], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    created = demo.index["platforms"][[p for p, _ in demo.index["platforms"]].index("linux/amd64")][1]
    assert created["config"].get("created"), "the demo image has a created time"


@pytest.fixture
def sbin_helper(mlfs_bin):
    """/sbin/mount.mlfs -> the mlfs under test, for mount(8); removed after
    unless it was there already."""
    path = "/sbin/mount.mlfs"
    if os.path.lexists(path):
        if os.path.realpath(path) != os.path.realpath(mlfs_bin):
            pytest.skip("%s exists and is not the mlfs under test" % path)
        yield path
        return
    os.symlink(os.path.realpath(mlfs_bin), path)
    try:
        yield path
    finally:
        os.unlink(path)


def test_mount_t_mlfs_and_an_fstab_line(sbin_helper, demo, tmp_path):
    """mount(8) runs /sbin/mount.mlfs for -t mlfs and for an fstab line
    (adding its own rw/noauto/...); both mount, both unmount with umount."""
    cache = tmp_path / "cache"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    ref = demo.ref("demo:latest")
    try:
        r = subprocess.run(["mount", "-t", "mlfs", "-o", "platform=linux/arm64,cache=%s" % cache, ref, str(mnt)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert read(os.path.join(mnt, "etc", "mlfs-platform")) == b"linux/arm64/v8\n"
        assert subprocess.run(["umount", str(mnt)], timeout=60).returncode == 0
        assert not is_mounted(str(mnt))

        fstab = tmp_path / "fstab"
        fstab.write_text("%s %s mlfs ro,noauto,nofail,_netdev,x-systemd.automount,"
                         "x-systemd.requires=network-online.target,platform=linux/s390x,cache=%s 0 0\n"
                         % (ref, mnt, cache))
        r = subprocess.run(["mount", "-T", str(fstab), str(mnt)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert read(os.path.join(mnt, "etc", "mlfs-platform")) == b"linux/s390x\n"
        assert subprocess.run(["umount", str(mnt)], timeout=60).returncode == 0
    finally:
        if is_mounted(str(mnt)):
            force_unmount(str(mnt))


@pytest.mark.parametrize("how", ["fusermount3", "sigterm"])
def test_unmount_while_a_layer_is_still_loading(mounter, demo, proxy, how):
    """Unmounted while the bottom layer is still being fetched (its blob
    keeps answering 503): the daemon exits cleanly and at once, without
    tearing the image down under the download."""
    info = Images.by_platform(demo.index, "linux/amd64")
    proxy.fail("/blobs/" + info["layers"][0]["digest"], 503, times=10 ** 6)
    m = mounter.mount(proxy.host + "/demo:latest", "platform=linux/amd64", foreground=True)
    assert read(m.path("etc", "mlfs-platform")) == b"linux/amd64\n"  # answered early: the load goes on
    started = time.monotonic()
    rc = m.unmount(how)
    assert_not_mounted(m.mountpoint)
    assert rc == 0, "mlfs exited %r\n%s" % (rc, m.stderr())
    assert time.monotonic() - started < 30
