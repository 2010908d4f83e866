"""The cache as a thing of its own (issue 9): each layer stored once, blobs
dropped once indexed (unless kept), shared flocks against eviction, last use
as the data file's mtime, LRU eviction under a cap, and `mlfs cache
ls|du|gc|rm|verify`.

Everything runs against the real registries of conftest (`demo`, `single`)
and the real binary.  What mlfs holds is read straight from $MLFS_CACHE:

    index/sha256/K  data/sha256/K  [chunks/sha256/K]   a layer (K = diff_id here)
    blobs/sha256/<hex>[.partial]                       kept / downloading blobs
    meta/sha256/<hex>                                  manifests, indexes, configs
    refs/<domain>/<path>/<tag or digest>               what a reference resolved to

Sizes are what files occupy (st_blocks * 512), as `cache du` counts them.
Last use is a data file's mtime in whole seconds, so the LRU tests sleep a
second between uses (or set mtimes with os.utime to fake age).  A "user" of
a layer is simulated by a child process holding flock(LOCK_SH) on its data
file; a live writer of a temp file by one holding LOCK_EX.  Mounts always go
through mounts.Mounter (bounded, always unmounted); reads through a mount go
through a child process (`read_fresh`) that drops the page cache first, so
the daemon itself answers and a stuck request cannot hang pytest.

Tests whose docstring says "mlfs bug (found by this test)" fail on purpose
until mlfs is fixed; each docstring says what goes wrong.
"""

import errno
import fcntl
import gzip
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import tarfile
import threading
import time

import pytest

from conftest import Images
from helpers import assert_mlfs_error, assert_ok, describe, sha256_file, wait_for
from mounts import Mounter
from registry import MT_OCI_CONFIG, MT_OCI_LAYER_GZIP, MT_OCI_MANIFEST, sha256_digest

MiB = 1024 * 1024


# -- fixtures ----------------------------------------------------------------------------

@pytest.fixture
def mounter(mlfs_bin, mlfs_env, tmp_path):
    """mounter.mount(ref, *options, foreground=, check=, env_extra=) -> started Mount;
    every mount unmounted (forcibly if need be) at teardown."""
    m = Mounter(tmp_path / "mnt", mlfs_env, binary=mlfs_bin)
    os.makedirs(m.basedir, exist_ok=True)
    yield m
    leftovers = m.cleanup_all()
    assert not leftovers, "could not unmount %r" % leftovers


@pytest.fixture
def cache(mlfs_env):
    return mlfs_env["MLFS_CACHE"]


# -- what the registry holds -----------------------------------------------------------------

def plat(demo, platform):
    """demo:latest's manifest for `platform` (linux/s390x, ...), described."""
    return Images.by_platform(demo.index, platform)


def diff_ids(info):
    return info["config"]["rootfs"]["diff_ids"]


_LAYER_FILES = {}


def tar_name(name):
    """A tar member's path as the image has it: no leading "./" or "/"."""
    while name.startswith(("./", "/")):
        name = name[2:] if name.startswith("./") else name[1:]
    return name


def layer_files(demo, repo, digest):
    """{path: bytes} of the regular files of a gzip layer, from the registry."""
    if digest not in _LAYER_FILES:
        raw = gzip.decompress(demo.client.get_blob(repo, digest))
        files = {}
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            for m in tar.getmembers():
                if m.isfile():
                    files[tar_name(m.name)] = tar.extractfile(m).read()
        _LAYER_FILES[digest] = files
    return _LAYER_FILES[digest]


def expected_file(demo, info, path, repo="demo"):
    """The bytes of `path` in the image (top layer first)."""
    for l in reversed(info["layers"]):
        files = layer_files(demo, repo, l["digest"])
        if path in files:
            return files[path]
    raise KeyError(path)


# -- what the cache holds ------------------------------------------------------------------

def cpath(cache, kind, digest, suffix=""):
    return os.path.join(cache, kind, "sha256", digest.split(":", 1)[1] + suffix)


def has_layer(cache, key):
    """A whole layer is there: its index and its data file."""
    return os.path.isfile(cpath(cache, "index", key)) and os.path.isfile(cpath(cache, "data", key))


def no_layer(cache, key):
    return not os.path.exists(cpath(cache, "index", key)) and not os.path.exists(cpath(cache, "data", key))


def blocks(path):
    return os.lstat(path).st_blocks * 512


def walk_files(root):
    for d, _, files in os.walk(root):
        for f in files:
            yield os.path.join(d, f)


def walk_usage(cache):
    """Our own `du`: every regular file under the cache, classified by name."""
    use = dict.fromkeys(("data", "index", "chunks", "blobs", "partial", "temp", "meta", "other", "total"), 0)
    for p in walk_files(cache):
        st = os.lstat(p)
        if not os.path.isfile(p) or os.path.islink(p):
            continue
        b = st.st_blocks * 512
        rel = os.path.relpath(p, cache).split(os.sep)
        name = rel[-1]
        if ".tmp-" in name or ".tmp." in name:
            kind = "temp"
        elif rel[0] in ("meta", "refs"):
            kind = "meta"
        elif name.endswith(".partial"):
            kind = "partial"
        elif name.endswith(".lock"):
            kind = "other"
        elif rel[0] in ("data", "index", "chunks", "blobs") and re.fullmatch(r"[0-9a-f]{64}", name):
            kind = rel[0]
        else:
            kind = "other"
        use[kind] += b
        use["total"] += b
    return use


def cache_ls(mlfs):
    r = mlfs("cache", "ls", "--json")
    assert_ok(r)
    return json.loads(r.stdout)


def cache_du(mlfs):
    r = mlfs("cache", "du", "--json")
    assert_ok(r)
    return json.loads(r.stdout)


def ls_entry(entries, reference, platform=None):
    found = [e for e in entries if e["reference"] == reference and (platform is None or e["platform"] == platform)]
    assert len(found) == 1, "%s %s: %r" % (reference, platform, [(e["reference"], e["platform"]) for e in entries])
    return found[0]


def flip_byte(path, offset=None):
    size = os.path.getsize(path)
    offset = size // 2 if offset is None else offset
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def set_mtime(path, t):
    os.utime(path, (t, t))


def last_line(text):
    return text.rstrip("\n").split("\n")[-1]


def blob_gets(registry, digest):
    time.sleep(0.3)  # let the access log catch up
    return registry.blob_gets(digest)


# -- other processes: lock holders and readers ------------------------------------------------

HOLD_SCRIPT = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX if sys.argv[2] == "ex" else fcntl.LOCK_SH)
sys.stdout.write("locked\n")
sys.stdout.flush()
sys.stdin.read()
"""


class Holder:
    """A live process holding flock(LOCK_EX or LOCK_SH) on `path` until
    release() (or the end of the with block)."""

    def __init__(self, path, mode="ex"):
        self.path, self.mode = path, mode
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, self.path, self.mode],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"locked":
            self.release()
            pytest.fail("could not flock %s: %s" % (self.path, self.proc.stderr.read().decode()))
        return self

    def release(self):
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None

    def __exit__(self, *exc):
        self.release()
        return False


READ_SCRIPT = r"""
import json, os, sys
out = []
for p in sys.argv[1:]:
    try:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            chunks = []
            while True:
                b = os.read(fd, 1 << 20)
                if not b:
                    break
                chunks.append(b)
        finally:
            os.close(fd)
        out.append({"ok": True, "data": b"".join(chunks).hex()})
    except OSError as e:
        out.append({"ok": False, "errno": e.errno})
print(json.dumps(out))
"""


def read_fresh(paths, timeout=30):
    """Read files in a child, page cache dropped first (so the daemon
    answers).  [(bytes or None, errno or None)], and the seconds it took;
    a hang fails the test after `timeout`."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", READ_SCRIPT] + list(paths), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        pytest.fail("reading %r did not return within %ss" % (list(paths), timeout))
    assert proc.returncode == 0, err.decode()
    res = [(bytes.fromhex(r["data"]), None) if r["ok"] else (None, r["errno"]) for r in json.loads(out)]
    return res, time.monotonic() - start


def assert_reads(demo, info, m, *paths):
    """Each path reads, through the daemon, exactly the image's bytes."""
    res, _ = read_fresh([m.path(p) for p in paths])
    for p, (data, err) in zip(paths, res):
        assert err is None, "%s: errno %s\n%s" % (p, err, m.stderr())
        assert data == expected_file(demo, info, p), "%s: wrong bytes" % p


def pull(mlfs, ref, *args, allow_warnings=False, **kw):
    r = mlfs("pull", ref, *args, **kw)
    assert_ok(r, allow_warnings=allow_warnings)
    return r


# -- help ----------------------------------------------------------------------------------------

def test_help_documents_cache_commands(mlfs):
    """`mlfs --help` names every cache command and the cap / keep-blobs knobs,
    so a user can find them without the README."""
    r = mlfs("--help")
    text = r.stdout + r.stderr
    assert r.rc == 0, describe(r)
    for needle in ("cache ls", "cache du", "cache gc", "--max SIZE", "--older-than DURATION",
                   "cache rm REF", "cache verify", "--cache-max SIZE", "--keep-blobs", "cache-max=SIZE",
                   "keep-blobs", "$MLFS_CACHE_MAX", "--json"):
        assert needle in text, "%r missing from --help:\n%s" % (needle, text)


# -- blobs dropped once indexed ------------------------------------------------------------------

def test_pull_drops_blobs_keep_blobs_keeps_them(mlfs, cache, demo):
    """A pull leaves each layer indexed under its diff_id (index + data) and
    its compressed blob gone; with --keep-blobs the verified blob stays too.
    Manifests/index/config land in meta/, the tag record in refs/."""
    amd = plat(demo, "linux/amd64")
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/amd64")
    for l, d in zip(amd["layers"], diff_ids(amd)):
        assert has_layer(cache, d), d
        assert not os.path.exists(cpath(cache, "blobs", l["digest"])), l["digest"]
        assert not os.path.exists(cpath(cache, "blobs", l["digest"], ".partial"))
        assert not os.path.exists(cpath(cache, "data", l["digest"])), "layer keyed by blob digest"
    for d in (demo.index["digest"], amd["digest"], amd["config_digest"]):
        assert os.path.isfile(cpath(cache, "meta", d)), d
    ref_file = os.path.join(cache, "refs", demo.host, "demo", "latest")
    assert open(ref_file).read().split()[0] == demo.index["digest"]

    s390 = plat(demo, "linux/s390x")
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/s390x", "--keep-blobs")
    for l, d in zip(s390["layers"], diff_ids(s390)):
        assert has_layer(cache, d)
        blob = cpath(cache, "blobs", l["digest"])
        assert os.path.getsize(blob) == l["size"] and sha256_file(blob) == l["digest"]
    # Either way the layers are "indexed" for cache ls.
    entries = cache_ls(mlfs)
    for p in ("linux/amd64", "linux/s390x"):
        e = ls_entry(entries, demo.ref("demo:latest"), p)
        assert [l["state"] for l in e["layers"]] == ["indexed", "indexed"]


def test_mount_keep_blobs_option(mounter, mlfs, cache, demo):
    """A mount drops the blobs of the layers it indexed; -o keep-blobs keeps them."""
    arm = plat(demo, "linux/arm/v7")
    m = mounter.mount(demo.ref("demo:latest"), "platform=linux/arm/v7")
    assert_reads(demo, arm, m, "bin/busybox")
    m.unmount()
    for l, d in zip(arm["layers"], diff_ids(arm)):
        assert has_layer(cache, d)
        assert not os.path.exists(cpath(cache, "blobs", l["digest"]))

    ppc = plat(demo, "linux/ppc64le")
    m = mounter.mount(demo.ref("demo:latest"), "platform=linux/ppc64le", "keep-blobs")
    assert_reads(demo, ppc, m, "bin/busybox")
    m.unmount()
    for l, d in zip(ppc["layers"], diff_ids(ppc)):
        assert has_layer(cache, d)
        assert sha256_file(cpath(cache, "blobs", l["digest"])) == l["digest"]


# -- cache ls ------------------------------------------------------------------------------------

def test_ls_text_and_json(mlfs, cache, demo, single):
    """`cache ls --json` describes each cached image (reference by tag or
    digest, platform, manifest/index/config digests, bytes on disk, last
    use, in use) and each layer's state: indexed, blob (only the kept blob
    is left) or absent.  The text table says the same."""
    r = mlfs("cache", "ls")
    assert_ok(r)
    assert r.stdout.strip() == "no images in %s" % cache

    s390 = plat(demo, "linux/s390x")
    arm64 = plat(demo, "linux/arm64/v8")
    pull(mlfs, single.ref("single:oci"), "--keep-blobs")
    pull(mlfs, demo.ref("demo@" + s390["digest"]), allow_warnings=True)  # "single-platform image for"
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/arm64")
    entries = cache_ls(mlfs)
    # An index's reference lists every platform whose manifest the cache
    # holds: demo:latest also has amd64 (single:oci is that very manifest)
    # and s390x (pulled by digest).
    assert sorted((e["reference"], e["platform"]) for e in entries) == sorted([
        (single.ref("single:oci"), "linux/amd64"),
        ("%s/demo@%s" % (demo.host, s390["digest"]), "linux/s390x"),
        (demo.ref("demo:latest"), "linux/amd64"),
        (demo.ref("demo:latest"), "linux/s390x"),
        (demo.ref("demo:latest"), "linux/arm64"),  # containerd's normal form of arm64/v8
    ]), json.dumps(entries, indent=1)

    oci = ls_entry(entries, single.ref("single:oci"))
    assert oci["platform"] == "linux/amd64"
    assert oci["digest"] == single.oci["digest"]
    assert oci["index_digest"] == ""
    assert oci["config_digest"] == single.oci["config_digest"]
    assert oci["in_use"] is False
    total, newest = 0, os.path.getmtime(os.path.join(cache, "refs", demo.host, "single", "oci"))
    for got, want, d in zip(oci["layers"], single.oci["layers"], single.oci["config"]["rootfs"]["diff_ids"]):
        assert got["digest"] == want["digest"] and got["size"] == want["size"]
        assert got["diff_id"] == d
        assert got["state"] == "indexed" and got["seekable"] is False
        on_disk = blocks(cpath(cache, "index", d)) + blocks(cpath(cache, "data", d)) + \
            blocks(cpath(cache, "blobs", want["digest"]))
        assert got["bytes_on_disk"] == on_disk
        total += on_disk
        newest = max(newest, os.path.getmtime(cpath(cache, "data", d)))
    assert oci["bytes_on_disk"] == total
    assert oci["last_use"] == int(newest)
    assert abs(oci["last_use"] - time.time()) < 120

    by_digest = ls_entry(entries, "%s/demo@%s" % (demo.host, s390["digest"]))
    assert by_digest["platform"] == "linux/s390x" and by_digest["digest"] == s390["digest"]
    assert by_digest["index_digest"] == ""
    assert [l["diff_id"] for l in by_digest["layers"]] == diff_ids(s390)

    tagged = ls_entry(entries, demo.ref("demo:latest"), "linux/arm64")
    assert tagged["digest"] == arm64["digest"]
    assert tagged["index_digest"] == demo.index["digest"]
    assert tagged["config_digest"] == arm64["config_digest"]

    # Layer states: drop single:oci's first layer (its blob stays) and its
    # second layer altogether.
    l1, l2 = single.oci["layers"]
    d1, d2 = single.oci["config"]["rootfs"]["diff_ids"]
    for kind in ("index", "data"):
        os.unlink(cpath(cache, kind, d1))
        os.unlink(cpath(cache, kind, d2))
    os.unlink(cpath(cache, "blobs", l2["digest"]))
    oci = ls_entry(cache_ls(mlfs), single.ref("single:oci"))
    assert [l["state"] for l in oci["layers"]] == ["blob", "absent"]
    assert oci["layers"][0]["bytes_on_disk"] == blocks(cpath(cache, "blobs", l1["digest"]))
    assert oci["layers"][1]["bytes_on_disk"] == 0

    r = mlfs("cache", "ls")
    assert_ok(r)
    lines = r.stdout.rstrip("\n").split("\n")
    assert re.match(r"REFERENCE\s+PLATFORM\s+MANIFEST\s+SIZE\s+LAST USE\s+IN USE$", lines[0]), lines[0]
    rows = {}
    for i, line in enumerate(lines[1:], 1):
        if not line.startswith("  layer "):
            rows[tuple(line.split()[:2])] = (line, lines[i + 1:i + 3])
    assert sorted(rows) == sorted((e["reference"], e["platform"]) for e in entries), r.stdout
    line, layer_lines = rows[(single.ref("single:oci"), "linux/amd64")]
    assert single.oci["digest"][:19] in line and line.rstrip().endswith(" no")
    assert layer_lines[0].split()[1] == l1["digest"] and layer_lines[0].rstrip().endswith(" blob")
    assert layer_lines[1].split()[1] == l2["digest"] and layer_lines[1].rstrip().endswith(" absent")
    line, layer_lines = rows[(demo.ref("demo:latest"), "linux/arm64")]
    assert arm64["digest"][:19] in line
    assert all(l.rstrip().endswith(" indexed") for l in layer_lines)


def test_ls_in_use_during_mount(mounter, mlfs, cache, demo):
    """While a mount of an image is live and a reader has one of its files
    open, `cache ls` says in use (JSON true, text "yes"); an image nobody
    uses says no; after unmount the image is no longer in use."""
    amd = plat(demo, "linux/amd64")
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/s390x")
    m = mounter.mount(demo.ref("demo:latest"), "platform=linux/amd64")
    reader = subprocess.Popen([sys.executable, "-c", "import sys; f = open(sys.argv[1], 'rb'); f.read(4096); "
                               "print('open', flush=True); sys.stdin.read()", m.path("bin", "busybox")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    try:
        ready, _, _ = select.select([reader.stdout], [], [], 30)
        assert ready and reader.stdout.readline().strip() == b"open"
        entries = cache_ls(mlfs)
        assert ls_entry(entries, demo.ref("demo:latest"), "linux/amd64")["in_use"] is True
        assert ls_entry(entries, demo.ref("demo:latest"), "linux/s390x")["in_use"] is False
        r = mlfs("cache", "ls")
        assert_ok(r)
        rows = {l.split()[1]: l for l in r.stdout.split("\n") if l.startswith(demo.ref("demo:latest"))}
        assert rows["linux/amd64"].rstrip().endswith(" yes"), r.stdout
        assert rows["linux/s390x"].rstrip().endswith(" no"), r.stdout
    finally:
        reader.stdin.close()
        reader.wait(timeout=10)
    assert_reads(demo, amd, m, "etc/mlfs-platform")
    m.unmount()
    entries = cache_ls(mlfs)
    assert ls_entry(entries, demo.ref("demo:latest"), "linux/amd64")["in_use"] is False
    for d in diff_ids(amd):
        assert has_layer(cache, d)


def can_lock_ex(path):
    """Whether LOCK_EX|LOCK_NB on path succeeds now (nobody holds it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_mount_holds_and_touches_its_layers(mounter, mlfs, cache, demo):
    """A mount holds flock(LOCK_SH) on each of its layers' data files from
    their first use until unmount, and marks them used (data file mtime)
    when it opens them and again when it closes them at unmount."""
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/arm/v7")
    arm = plat(demo, "linux/arm/v7")
    data = [cpath(cache, "data", d) for d in diff_ids(arm)]
    old = time.time() - 7 * 86400
    for p in data:
        set_mtime(p, old)
        assert can_lock_ex(p)
    m = mounter.mount(demo.ref("demo:latest"), "platform=linux/arm/v7")
    assert_reads(demo, arm, m, "bin/busybox")
    for p in data:
        assert not can_lock_ex(p), "%s not held by the mount" % p
        assert os.path.getmtime(p) > time.time() - 60, "not marked used when opened"
        set_mtime(p, old)
    # Old, but in use: gc --older-than keeps them, and says so.
    r = mlfs("cache", "gc", "--older-than", "1d")
    assert_ok(r)
    for d in diff_ids(arm):
        assert "kept layer %s: in use by a live mount or command" % d in r.stdout, r.stdout
        assert has_layer(cache, d)
    for p in data:
        set_mtime(p, old)
    m.unmount()
    for p in data:
        assert can_lock_ex(p), "%s still held after unmount" % p
        assert os.path.getmtime(p) > time.time() - 60, "not marked used at unmount"


# -- cache du ------------------------------------------------------------------------------------

def test_du_kinds_add_up(mlfs, cache, demo):
    """`cache du --json`: every kind is what its files occupy (st_blocks),
    the kinds add up to the total, and the total is every file in the
    cache; the text form lists the same rows."""
    amd = plat(demo, "linux/amd64")
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/amd64", "--keep-blobs")
    fake = "ab" * 32
    with open(os.path.join(cache, "blobs", "sha256", fake + ".partial"), "wb") as f:
        f.write(os.urandom(10000))
    with open(os.path.join(cache, "data", "sha256", fake + ".tmp-Xy12Zq"), "wb") as f:
        f.write(os.urandom(5000))
    with open(os.path.join(cache, "data", "sha256", "README"), "wb") as f:
        f.write(b"not mlfs's\n" * 500)
    du = cache_du(mlfs)
    want = walk_usage(cache)
    assert du == want, (du, want)
    assert sum(v for k, v in du.items() if k != "total") == du["total"]
    assert du["data"] > 0 and du["index"] > 0 and du["blobs"] > 0 and du["partial"] > 0
    assert du["temp"] > 0 and du["meta"] > 0 and du["other"] > 0 and du["chunks"] == 0
    assert du["blobs"] == sum(blocks(cpath(cache, "blobs", l["digest"])) for l in amd["layers"])
    assert du["data"] == sum(blocks(cpath(cache, "data", d)) for d in diff_ids(amd))

    r = mlfs("cache", "du")
    assert_ok(r)
    names = [l.split()[0] for l in r.stdout.strip().split("\n")]
    assert names == ["data", "index", "chunks", "blobs", "partial", "temp", "meta", "other", "total"], r.stdout


# -- cache rm ------------------------------------------------------------------------------------

def test_rm_removes_unshared_layers_and_the_ref(mlfs, cache, demo, single):
    """`cache rm REF`: the image's layers go unless another cached image has
    them (single:v2s2 and single:oci share theirs), then its ref record and
    the metadata no other image needs; an image nobody else shares goes
    entirely."""
    s390 = plat(demo, "linux/s390x")
    amd_ids = single.oci["config"]["rootfs"]["diff_ids"]
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/s390x", "--keep-blobs")
    pull(mlfs, single.ref("single:oci"))
    pull(mlfs, single.ref("single:v2s2"))
    assert single.v2s2["layers"][0]["digest"] == single.oci["layers"][0]["digest"]

    r = mlfs("cache", "rm", demo.ref("demo:latest"))
    assert_ok(r)
    for l, d in zip(s390["layers"], diff_ids(s390)):
        assert no_layer(cache, d), d
        assert not os.path.exists(cpath(cache, "blobs", l["digest"]))
        assert "removed layer %s" % d in r.stdout, r.stdout
        assert "removed blob %s" % l["digest"] in r.stdout, r.stdout
    assert "removed reference %s" % demo.ref("demo:latest") in r.stdout, r.stdout
    assert not os.path.exists(os.path.join(cache, "refs", demo.host, "demo", "latest"))
    for d in (s390["digest"], s390["config_digest"], demo.index["digest"]):
        assert not os.path.exists(cpath(cache, "meta", d)), d
    for d in amd_ids:   # single's layers were never demo:latest's to remove
        assert has_layer(cache, d)
    assert sorted((e["reference"], e["platform"]) for e in cache_ls(mlfs)) == [
        (single.ref("single:oci"), "linux/amd64"), (single.ref("single:v2s2"), "linux/amd64")]

    r = mlfs("cache", "rm", single.ref("single:v2s2"))
    assert_ok(r)
    assert "removed layer" not in r.stdout, r.stdout
    for d in amd_ids:
        assert has_layer(cache, d), "a layer single:oci still has was removed"
    assert not os.path.exists(os.path.join(cache, "refs", demo.host, "single", "v2s2"))
    assert os.path.isfile(cpath(cache, "meta", single.oci["digest"]))
    entries = cache_ls(mlfs)
    assert [e["reference"] for e in entries] == [single.ref("single:oci")]
    assert [l["state"] for l in entries[0]["layers"]] == ["indexed", "indexed"]

    r = mlfs("cache", "rm", single.ref("single:oci"))
    assert_ok(r)
    for d in amd_ids:
        assert no_layer(cache, d)
    assert cache_ls(mlfs) == []
    du = cache_du(mlfs)
    assert du["data"] == 0 and du["index"] == 0 and du["blobs"] == 0


def test_rm_unknown_ref(mlfs, demo, single):
    """Removing what the cache does not hold is an error naming it."""
    pull(mlfs, single.ref("single:oci"))
    r = mlfs("cache", "rm", demo.ref("nothing/here:v1"))
    line = assert_mlfs_error(r, "is not in the cache")
    assert "nothing/here:v1" in line
    assert r.stdout == ""
    assert [e["reference"] for e in cache_ls(mlfs)] == [single.ref("single:oci")]


def test_rm_image_in_use_by_a_mount(mounter, mlfs, cache, demo, single):
    """`cache rm` of an image a live mount reads: its layers are kept with a
    "kept ... in use" line and exit status 1, and the mount goes on reading
    the right bytes (a file it had not read yet included)."""
    info = dict(single.oci, layers=single.oci["layers"])
    m = mounter.mount(single.ref("single:oci"))
    assert_reads(demo, info, m, "etc/mlfs-platform")
    ids = single.oci["config"]["rootfs"]["diff_ids"]
    assert wait_for(lambda: all(has_layer(cache, d) for d in ids), timeout=30)   # all layers built
    r = mlfs("cache", "rm", single.ref("single:oci"))
    assert r.rc == 1, describe(r)
    for d in single.oci["config"]["rootfs"]["diff_ids"]:
        assert "kept layer %s: in use by a live mount or command" % d in r.stdout, r.stdout
        assert has_layer(cache, d)
    assert "removed layer" not in r.stdout
    assert_reads(demo, info, m, "bin/busybox", "etc/mlfs-platform")
    m.unmount()
    # Nobody uses them now: gone at the next try.
    r = mlfs("cache", "gc", "--max", "0")
    assert_ok(r)
    for d in single.oci["config"]["rootfs"]["diff_ids"]:
        assert no_layer(cache, d)


def test_rm_in_use_can_be_finished_after_unmount(mounter, mlfs, cache, demo, single):
    """`cache rm` that had to keep an image's layers (in use, exit 1) can be
    run again once the mount is gone, and then removes them: the image must
    stay known to the cache until its layers are really gone.

    mlfs bug (found by this test): the first rm forgets the image anyway
    (its reference, manifest and config), so after unmount the retry fails
    with "... is not in the cache", `cache ls` shows nothing, and the
    layers (1.9 MiB here) stay on disk as orphans no image names; only
    `gc --max` / `--older-than` can still reclaim them."""
    ids = single.oci["config"]["rootfs"]["diff_ids"]
    m = mounter.mount(single.ref("single:oci"))
    assert_reads(demo, single.oci, m, "bin/busybox")
    r = mlfs("cache", "rm", single.ref("single:oci"))
    assert r.rc == 1 and "kept layer" in r.stdout, describe(r)
    m.unmount()
    listed = [e["reference"] for e in cache_ls(mlfs)]
    r = mlfs("cache", "rm", single.ref("single:oci"))
    problems = []
    if single.ref("single:oci") not in listed:
        problems.append("after the partial rm, `cache ls` no longer lists the image whose layers are still "
                        "cached: %r" % listed)
    if r.rc != 0:
        problems.append("the retry failed: %s" % describe(r))
    left = [d for d in ids if not no_layer(cache, d)]
    if left:
        problems.append("layers left on disk after the retry: %r (%d bytes of data)" % (
            left, cache_du(mlfs)["data"]))
    assert not problems, "mlfs bug:\n" + "\n".join(problems)


# -- cache gc ------------------------------------------------------------------------------------

def test_gc_max_zero_with_a_live_mount(mounter, mlfs, cache, demo):
    """`cache gc --max 0` while a mount reads one image: every other layer
    is removed (least recently used), the mounted image's layers are kept,
    and the mount still reads the right bytes; after unmount the same gc
    leaves no layer data at all."""
    amd, s390, arm = plat(demo, "linux/amd64"), plat(demo, "linux/s390x"), plat(demo, "linux/arm/v7")
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/s390x")
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/arm/v7", "--keep-blobs")
    m = mounter.mount(demo.ref("demo:latest"), "platform=linux/amd64")
    assert_reads(demo, amd, m, "etc/mlfs-platform")
    # The mount fetches every layer once one is needed; let it finish (a
    # gc racing a layer's build is test_index_temp_is_held_by_its_writer).
    assert wait_for(lambda: all(has_layer(cache, d) for d in diff_ids(amd)), timeout=30)
    r = mlfs("cache", "gc", "--max", "0")
    assert_ok(r)
    for d in diff_ids(s390) + diff_ids(arm):
        assert no_layer(cache, d), d
        assert re.search(r"^removed layer %s \(.*, last used .*\): least recently used$" % d, r.stdout, re.M), r.stdout
    for l in arm["layers"]:
        assert "removed blob %s" % l["digest"] in r.stdout
        assert not os.path.exists(cpath(cache, "blobs", l["digest"]))
    for d in diff_ids(amd):
        assert has_layer(cache, d), "a layer in use was evicted"
        assert d not in r.stdout.replace("kept layer " + d, ""), r.stdout
    assert "in use" in r.stdout
    assert last_line(r.stdout).startswith("cache %s: " % cache), r.stdout
    assert_reads(demo, amd, m, "bin/busybox", "etc/mlfs-platform")
    m.unmount()

    r = mlfs("cache", "gc", "--max", "0")
    assert_ok(r)
    for d in diff_ids(amd):
        assert "removed layer %s" % d in r.stdout
    assert [f for f in os.listdir(os.path.join(cache, "data", "sha256"))] == []
    assert [f for f in os.listdir(os.path.join(cache, "index", "sha256")) if not f.endswith(".lock")] == []
    du = cache_du(mlfs)
    assert du["data"] == du["index"] == du["blobs"] == 0, du


def test_gc_older_than(mlfs, cache, demo, single):
    """`cache gc --older-than D` removes layers and blobs whose last use
    (data/blob mtime, faked here with os.utime) is older than D and keeps
    the rest; an image whose layers are all gone keeps its metadata until
    its record is older than 30 days (or than --older-than)."""
    s390 = plat(demo, "linux/s390x")
    pull(mlfs, single.ref("single:oci"), "--keep-blobs")
    pull(mlfs, demo.ref("demo@" + s390["digest"]), "--keep-blobs", allow_warnings=True)
    s390_ref = "%s/demo@%s" % (demo.host, s390["digest"])
    ref_file = os.path.join(cache, "refs", demo.host, "demo", s390["digest"])
    assert os.path.isfile(ref_file)
    now = time.time()
    for l, d in zip(s390["layers"], diff_ids(s390)):
        set_mtime(cpath(cache, "data", d), now - 3 * 86400)
        set_mtime(cpath(cache, "blobs", l["digest"]), now - 3 * 86400)
    # One of single:oci's blobs is old too; its layers are fresh.
    old_blob = single.oci["layers"][1]["digest"]
    set_mtime(cpath(cache, "blobs", old_blob), now - 5 * 86400)

    r = mlfs("cache", "gc", "--older-than", "2d")
    assert_ok(r)
    for l, d in zip(s390["layers"], diff_ids(s390)):
        assert no_layer(cache, d)
        assert not os.path.exists(cpath(cache, "blobs", l["digest"]))
        assert re.search(r"^removed layer %s .*: unused for longer than --older-than$" % d, r.stdout, re.M), r.stdout
        assert "removed blob %s" % l["digest"] in r.stdout
    assert "removed blob %s" % old_blob in r.stdout
    for l, d in zip(single.oci["layers"], single.oci["config"]["rootfs"]["diff_ids"]):
        assert has_layer(cache, d)
        assert os.path.exists(cpath(cache, "blobs", l["digest"])) == (l["digest"] != old_blob)
    # The s390x image has nothing left, but was resolved just now: listed still.
    e = ls_entry(cache_ls(mlfs), s390_ref)
    assert [l["state"] for l in e["layers"]] == ["absent", "absent"]

    # Resolved 10 days ago: younger than the default 30 days, kept.
    set_mtime(ref_file, now - 10 * 86400)
    r = mlfs("cache", "gc")
    assert_ok(r)
    assert "removed" not in r.stdout.replace("removed lock file", ""), r.stdout
    ls_entry(cache_ls(mlfs), s390_ref)
    # Older than --older-than 1w: its record and metadata go.
    r = mlfs("cache", "gc", "--older-than", "1w")
    assert_ok(r)
    assert "removed reference %s" % s390_ref in r.stdout, r.stdout
    assert not os.path.exists(ref_file)
    assert not os.path.exists(cpath(cache, "meta", s390["digest"]))
    assert not os.path.exists(cpath(cache, "meta", s390["config_digest"]))
    assert [e["reference"] for e in cache_ls(mlfs)] == [single.ref("single:oci")]
    # Without --older-than the default is 30 days: a record 40 days old
    # whose layers were evicted (removed by hand here) goes.  (demo:list:
    # demo:latest's index would also name single:oci's manifest, which
    # still has its layers.)
    s390_list = Images.by_platform(demo.list, "linux/s390x")
    pull(mlfs, demo.ref("demo:list"), "--platform", "linux/s390x")
    assert ls_entry(cache_ls(mlfs), demo.ref("demo:list"))["digest"] == s390_list["digest"]
    for d in s390_list["config"]["rootfs"]["diff_ids"]:
        os.unlink(cpath(cache, "index", d))
        os.unlink(cpath(cache, "data", d))
    ref_file = os.path.join(cache, "refs", demo.host, "demo", "list")
    set_mtime(ref_file, now - 40 * 86400)
    r = mlfs("cache", "gc")
    assert_ok(r)
    assert "removed reference %s" % demo.ref("demo:list") in r.stdout, r.stdout
    assert not os.path.exists(ref_file)
    for d in (demo.list["digest"], s390_list["digest"], s390_list["config_digest"]):
        assert not os.path.exists(cpath(cache, "meta", d)), d
    assert [e["reference"] for e in cache_ls(mlfs)] == [single.ref("single:oci")]
    for d in single.oci["config"]["rootfs"]["diff_ids"]:
        assert has_layer(cache, d)


def test_gc_removes_leftovers_not_held(mlfs, cache, demo, single):
    """`cache gc` removes temp files, partial downloads and lock files no
    live process holds and incomplete layers (index without data, data
    without index), one line each; a temp file or partial download a live
    process holds with LOCK_EX is left alone, and so are whole layers."""
    s390 = plat(demo, "linux/s390x")
    pull(mlfs, single.ref("single:oci"))
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/s390x")
    d_sha = lambda kind: os.path.join(cache, kind, "sha256")
    loose = {
        "temp": os.path.join(d_sha("data"), "ab" * 32 + ".tmp-Aa11Bb"),
        "itemp": os.path.join(d_sha("index"), "ab" * 32 + ".tmp-Cc22Dd"),
        "mtemp": os.path.join(d_sha("meta"), "cd" * 32 + ".tmp.Ee33Ff"),
        "partial": os.path.join(d_sha("blobs"), "ef" * 32 + ".partial"),
        "lock": os.path.join(d_sha("index"), "56" * 32 + ".lock"),   # a crashed builder's
    }
    held = {
        "temp": os.path.join(d_sha("data"), "12" * 32 + ".tmp-Gg44Hh"),
        "partial": os.path.join(d_sha("blobs"), "34" * 32 + ".partial"),
        "lock": os.path.join(d_sha("index"), "78" * 32 + ".lock"),   # a live builder's
    }
    os.makedirs(d_sha("blobs"), exist_ok=True)
    for p in list(loose.values()) + list(held.values()):
        with open(p, "wb") as f:
            f.write(b"" if p.endswith(".lock") else b"x" * 3000)
    # Incomplete layers: one index without data, one data without index.
    no_data, no_index = diff_ids(s390)
    os.unlink(cpath(cache, "data", no_data))
    os.unlink(cpath(cache, "index", no_index))

    with Holder(held["temp"], "ex"), Holder(held["partial"], "ex"), Holder(held["lock"], "ex"):
        r = mlfs("cache", "gc")
        assert_ok(r)
        for p in held.values():
            assert os.path.exists(p), "gc removed %s, held by a live process" % p
            assert p not in r.stdout
    for name, p in loose.items():
        assert not os.path.exists(p), name
    assert "removed temporary file %s (" % loose["temp"] in r.stdout, r.stdout
    assert "removed temporary file %s (" % loose["mtemp"] in r.stdout, r.stdout
    assert "removed partial download %s (" % loose["partial"] in r.stdout, r.stdout
    assert "removed lock file %s (" % loose["lock"] in r.stdout, r.stdout
    for d in (no_data, no_index):
        assert re.search(r"^removed layer %s .*: incomplete$" % d, r.stdout, re.M), r.stdout
        assert no_layer(cache, d)
    for d in single.oci["config"]["rootfs"]["diff_ids"]:
        assert has_layer(cache, d)
        assert d not in r.stdout
    assert last_line(r.stdout) == "cache %s: %s" % (cache, last_line(r.stdout).split(": ", 1)[1])
    # Once their holders are gone, they are leftovers like any other.
    r = mlfs("cache", "gc")
    assert_ok(r)
    for p in held.values():
        assert not os.path.exists(p)


# -- cache verify --------------------------------------------------------------------------------

def test_verify_clean_cache(mlfs, cache, demo):
    """A sound cache: every layer and kept blob counted sound, exit 0,
    nothing removed."""
    r = mlfs("cache", "verify")
    assert_ok(r)
    assert r.stdout == "verified 0 layers and blobs in %s: 0 sound, 0 broken\n" % cache
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/amd64", "--keep-blobs")
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/s390x")
    before = sorted(walk_files(cache))
    r = mlfs("cache", "verify")
    assert_ok(r)
    assert r.stdout == "verified 6 layers and blobs in %s: 6 sound, 0 broken\n" % cache, r.stdout
    assert sorted(walk_files(cache)) == before


def test_verify_removes_broken_layers_and_blobs(mounter, mlfs, cache, demo):
    """`cache verify` finds a layer whose index has a flipped byte, one whose
    data file was truncated and a kept blob whose bytes changed: each is
    removed with its reason, exit 1; a broken layer a live process holds is
    reported ("in use") and left.  The next mount rebuilds the removed
    layer and reads the right bytes; then the cache verifies clean."""
    amd, s390 = plat(demo, "linux/amd64"), plat(demo, "linux/s390x")
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/amd64", "--keep-blobs")
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/s390x")
    a1, a2 = diff_ids(amd)
    s1, s2 = diff_ids(s390)
    flip_byte(cpath(cache, "index", a1))
    with open(cpath(cache, "data", s1), "r+b") as f:
        f.truncate(os.path.getsize(cpath(cache, "data", s1)) // 2)
    bad_blob = amd["layers"][1]["digest"]
    flip_byte(cpath(cache, "blobs", bad_blob))
    flip_byte(cpath(cache, "index", s2))
    with Holder(cpath(cache, "data", s2), "sh"):
        r = mlfs("cache", "verify")
        assert r.rc == 1, describe(r)
        assert r.stderr == ""
        out = r.stdout
        assert re.search(r"^removed layer %s \(.*\): index checksum" % a1, out, re.M), out
        assert re.search(r"^removed layer %s \(.*\): data file of the wrong size" % s1, out, re.M), out
        assert re.search(r"^removed blob %s \(.*\): its bytes do not hash" % bad_blob, out, re.M), out
        assert re.search(r"^broken layer %s: .*in use" % s2, out, re.M), out
        assert last_line(out) == "verified 6 layers and blobs in %s: 2 sound, 4 broken" % cache, out
        assert no_layer(cache, a1) and no_layer(cache, s1)
        assert not os.path.exists(cpath(cache, "blobs", bad_blob))
        assert has_layer(cache, s2), "a layer in use was removed"
        assert has_layer(cache, a2)
        assert sha256_file(cpath(cache, "blobs", amd["layers"][0]["digest"])) == amd["layers"][0]["digest"]
    # Its user gone, the broken layer goes too.
    r = mlfs("cache", "verify")
    assert r.rc == 1, describe(r)
    assert re.search(r"^removed layer %s \(.*\): index checksum" % s2, r.stdout, re.M), r.stdout
    assert last_line(r.stdout) == "verified 3 layers and blobs in %s: 2 sound, 1 broken" % cache

    m = mounter.mount(demo.ref("demo:latest"), "platform=linux/amd64")
    assert_reads(demo, amd, m, "bin/busybox", "etc/mlfs-platform")
    m.unmount()
    assert has_layer(cache, a1), "the mount did not rebuild the removed layer"
    m = mounter.mount(demo.ref("demo:latest"), "platform=linux/s390x")
    assert_reads(demo, s390, m, "bin/busybox", "etc/mlfs-platform")
    m.unmount()
    r = mlfs("cache", "verify")
    assert_ok(r)
    assert r.stdout.endswith(" broken\n") and ", 0 broken" in r.stdout, r.stdout


# -- the cap -------------------------------------------------------------------------------------

LOOP = ["linux/amd64", "linux/s390x", "linux/arm64/v8", "linux/arm/v7", "linux/ppc64le"]


def measure(mlfs, cache, demo, platforms):
    """Pull each platform once (no cap), note what it occupies, then empty
    the cache of layers again (`gc --max 0`); the metadata stays, so it is
    constant from here on.  {platform: (image bytes, largest layer bytes)},
    and the metadata's bytes."""
    for p in platforms:
        pull(mlfs, demo.ref("demo:latest"), "--platform", p)
    sizes = {}
    for p in platforms:
        ids = diff_ids(plat(demo, p))
        per_layer = [blocks(cpath(cache, "index", d)) + blocks(cpath(cache, "data", d)) for d in ids]
        sizes[p] = (sum(per_layer), max(per_layer))
    assert_ok(mlfs("cache", "gc", "--max", "0"))
    du = cache_du(mlfs)
    assert du["data"] == du["index"] == 0, du
    return sizes, du["total"]


def cap_for_two(sizes, order, meta):
    """A cap that holds any two consecutive images of `order` (and the
    metadata), never three."""
    pairs = [sizes[a][0] + sizes[b][0] for a, b in zip(order, order[1:])]
    triples = [sizes[a][0] + sizes[b][0] + sizes[c][0] for a, b, c in zip(order, order[1:], order[2:])]
    cap = meta + max(pairs) + 16 * 1024
    cap = (cap + 1023) // 1024 * 1024
    assert cap < meta + min(triples) - 64 * 1024, (sizes, meta)
    return cap


def sample_total(cache, run, *args, **kw):
    """Runs run(*args, **kw) while sampling the cache's total size; returns
    (its result, the largest total seen)."""
    out, peak = {}, [0]

    def target():
        out["r"] = run(*args, **kw)
    t = threading.Thread(target=target, daemon=True)
    t.start()
    while t.is_alive():
        peak[0] = max(peak[0], quiet_total(cache))
        time.sleep(0.005)
    t.join()
    peak[0] = max(peak[0], quiet_total(cache))
    return out["r"], peak[0]


def quiet_total(cache):
    """Total st_blocks under the cache, ignoring files that vanish meanwhile."""
    total = 0
    for d, _, files in os.walk(cache):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def image_state(cache, demo, p):
    """For platform p of demo:latest: 'whole', 'none' or 'part' (some layers)."""
    have = [has_layer(cache, d) for d in diff_ids(plat(demo, p))]
    return "whole" if all(have) else "none" if not any(have) else "part"


def test_cap_pull_loop(mlfs, cache, demo):
    """Pulling five images in turn with --cache-max (room for two): after
    every pull the cache is within the cap, it never grew past the cap plus
    the largest layer while the pull ran, the two latest images are whole,
    the least recently used one lost its layers (the big one at least),
    and everything older is gone."""
    sizes, meta = measure(mlfs, cache, demo, LOOP)
    cap = cap_for_two(sizes, LOOP, meta)
    largest = max(s[1] for s in sizes.values())
    for i, p in enumerate(LOOP):
        if i:
            time.sleep(1.05)  # last use has whole-second resolution
        r, peak = sample_total(cache, mlfs, "pull", demo.ref("demo:latest"), "--platform", p,
                               "--cache-max", "%dK" % (cap // 1024))
        assert_ok(r)
        total = cache_du(mlfs)["total"]
        assert total <= cap, "step %d (%s): %d bytes over a cap of %d" % (i, p, total, cap)
        assert peak <= cap + largest, "step %d (%s): peaked at %d, cap %d + layer %d" % (i, p, peak, cap, largest)
        states = {q: image_state(cache, demo, q) for q in LOOP[:i + 1]}
        assert states[p] == "whole", states
        if i >= 1:
            assert states[LOOP[i - 1]] == "whole", (i, states)
        if i >= 2:
            lru = diff_ids(plat(demo, LOOP[i - 2]))[0]
            assert no_layer(cache, lru), ("the least recently used image kept its big layer", i, states)
        for q in LOOP[:max(0, i - 2)]:
            assert states[q] == "none", (i, states)


def test_cap_mounts_evict_least_recently_used(mounter, mlfs, cache, demo):
    """Mounts under $MLFS_CACHE_MAX (room for two images): A, B, then A
    again (a remount from the cache is a use), then C: B is the least
    recently used and is evicted, A stays; after every unmount the cache is
    within the cap.  `cache gc` obeys $MLFS_CACHE_MAX too."""
    A, B, C = "linux/amd64", "linux/s390x", "linux/ppc64le"
    sizes, meta = measure(mlfs, cache, demo, [A, B, C])
    # The cap is on the disk: a layer's compressed download, kept while
    # its data file is built, counts while it is there.  A mount's other
    # layer finishing meanwhile evicts down to the cap with that download
    # counted, so "room for two" includes one layer in flight (without it,
    # A lost its big layer whenever C's small one finished first).
    in_flight = max(l["size"] for q in (A, B, C) for l in plat(demo, q)["layers"])
    cap = cap_for_two(sizes, [A, B, C, A, B, C], meta) + (in_flight + 1023) // 1024 * 1024
    assert cap < meta + sizes[A][0] + sizes[B][0] + sizes[C][0] - 64 * 1024, (cap, sizes, meta)
    env = {"MLFS_CACHE_MAX": str(cap)}
    for i, p in enumerate([A, B, A, C]):
        if i:
            time.sleep(1.05)  # last use has whole-second resolution
        m = mounter.mount(demo.ref("demo:latest"), "platform=" + p, env_extra=env)
        assert_reads(demo, plat(demo, p), m, "bin/busybox")
        if i == 3:
            assert image_state(cache, demo, A) == "whole"
            assert no_layer(cache, diff_ids(plat(demo, B))[0]), "B, the least recently used, was not evicted"
        m.unmount()
        assert image_state(cache, demo, p) == "whole"
        total = cache_du(mlfs)["total"]
        assert total <= cap, "after unmount %d (%s): %d bytes over a cap of %d" % (i, p, total, cap)
    assert image_state(cache, demo, A) == "whole" and image_state(cache, demo, C) == "whole"
    assert image_state(cache, demo, B) in ("none", "part")

    # gc without --max takes $MLFS_CACHE_MAX: room for one image now.
    one = meta + max(sizes[A][0], sizes[C][0]) + 16 * 1024
    r = mlfs("cache", "gc", env_extra={"MLFS_CACHE_MAX": str(one)})
    assert_ok(r)
    assert cache_du(mlfs)["total"] <= one
    assert image_state(cache, demo, A) != "whole", "A was used before C: it goes first"
    assert image_state(cache, demo, C) == "whole"


def test_mount_over_its_cap_warns_once(mounter, mlfs, cache, demo):
    """A mount whose own image is larger than -o cache-max: other layers
    are evicted, its own (in use) are not, reads are right, the warning
    "exceed cache-max" is logged exactly once; after unmount the cache is
    back under the cap."""
    amd, s390 = plat(demo, "linux/amd64"), plat(demo, "linux/s390x")
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/s390x")
    cap = 1 * MiB
    m = mounter.mount(demo.ref("demo:latest"), "platform=linux/amd64", "cache-max=1M", foreground=True)
    assert_reads(demo, amd, m, "bin/busybox", "etc/mlfs-platform")
    for d in diff_ids(s390):
        assert no_layer(cache, d), "a layer nobody uses was kept over the cap"
    for d in diff_ids(amd):
        assert has_layer(cache, d), "a layer in use was evicted"
    assert cache_du(mlfs)["total"] > cap
    rc = m.unmount()
    assert rc == 0, m.stderr()
    warnings = [l for l in m.stderr().split("\n") if "exceed cache-max" in l]
    assert len(warnings) == 1, m.stderr()
    total = cache_du(mlfs)["total"]
    assert total <= cap, "after unmount: %d bytes, cap %d" % (total, cap)


@pytest.mark.parametrize("command", ["pull", "export"])
def test_command_over_its_cap_warns_once(mlfs, cache, demo, tmp_path, command):
    """A pull or export of an image larger than --cache-max still succeeds
    (its layers are in use until it is done), warns once, and leaves the
    cache within the cap; a malformed SIZE is refused."""
    args = [command, demo.ref("demo:latest"), "--platform", "linux/arm/v7", "--cache-max", "0.5MiB"]
    if command == "export":
        args += ["-o", str(tmp_path / "x.tar")]
    r = mlfs(*args)
    assert_ok(r, allow_warnings=True)
    assert len([l for l in r.stderr.split("\n") if "exceed cache-max" in l]) == 1, r.stderr
    assert cache_du(mlfs)["total"] <= MiB // 2
    if command == "export":
        arm = plat(demo, "linux/arm/v7")
        assert tar_files(str(tmp_path / "x.tar"))["bin/busybox"] == expected_file(demo, arm, "bin/busybox")
    r = mlfs(*(args[:-1] if command == "pull" else args[:-3]), "lots")
    assert r.rc != 0 and "give a size such as" in r.stderr, describe(r)


def test_over_cap_warning_states_true_numbers(mlfs, cache, demo):
    """The over-cap warning's numbers are true: what it says is in use,
    kept as metadata and being added adds up to more than the cap.  Here
    nothing is in use: the blob about to be downloaded is what does not
    fit, and the warning says so (an earlier version reported the cache's
    16 KiB of metadata as "in use by live mounts" exceeding a 512 KiB cap)."""
    r = mlfs("pull", demo.ref("demo:latest"), "--platform", "linux/arm/v7", "--cache-max", "0.5MiB")
    assert_ok(r, allow_warnings=True)
    assert r.stderr.count("exceed cache-max") == 1, r.stderr
    m = re.search(r"(\d+) bytes being added \(and (\d+) of manifests and such\) exceed cache-max \((\d+)\)",
                  r.stderr)
    assert m, r.stderr
    added, meta, cap = (int(g) for g in m.groups())
    assert added + meta > cap, r.stderr.strip()
    assert "in use by live mounts" not in r.stderr, r.stderr


def test_eviction_takes_leftovers_first(mlfs, cache, demo):
    """Before a download the cap makes room from what interrupted runs left
    (a partial download nobody holds) before any layer, even a layer used
    long ago."""
    amd = plat(demo, "linux/amd64")
    sizes, meta = measure(mlfs, cache, demo, ["linux/amd64", "linux/s390x"])
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/amd64")
    for d in diff_ids(amd):
        set_mtime(cpath(cache, "data", d), time.time() - 30 * 86400)
    junk = os.path.join(cache, "blobs", "sha256", "9f" * 32 + ".partial")
    os.makedirs(os.path.dirname(junk), exist_ok=True)
    with open(junk, "wb") as f:
        f.write(os.urandom(MiB))
    cap = meta + sizes["linux/amd64"][0] + sizes["linux/s390x"][0] + 64 * 1024
    r = mlfs("pull", demo.ref("demo:latest"), "--platform", "linux/s390x", "--cache-max", str(cap))
    assert_ok(r)
    assert not os.path.exists(junk), "the leftover was kept"
    assert image_state(cache, demo, "linux/amd64") == "whole", "a layer went before the leftover"
    assert image_state(cache, demo, "linux/s390x") == "whole"
    assert cache_du(mlfs)["total"] <= cap


def test_sizes_and_durations(mlfs, cache, demo):
    """SIZE and DURATION as people type them: powers of 1024 (K, M, MiB,
    1.5GiB, plain bytes, 0) and 90m/12h/30d/2w; anything else is refused
    with a hint and changes nothing."""
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/amd64")
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/s390x")
    total = cache_du(mlfs)["total"]
    for size in ("1.5GiB", "16G", "500M", "%d" % total, "%dK" % ((total + 1023) // 1024)):
        r = mlfs("cache", "gc", "--max", size)
        assert_ok(r)
        assert "removed layer" not in r.stdout, (size, r.stdout)
    for age in ("90m", "12h", "30d", "2w"):
        r = mlfs("cache", "gc", "--older-than", age)
        assert_ok(r)
        assert "removed layer" not in r.stdout, (age, r.stdout)
    for args, hint in ((["--max", "12Q"], "give a size"), (["--max", "-1M"], "give a size"),
                       (["--older-than", "5y"], "give a duration"), (["--older-than", "soon"], "give a duration")):
        r = mlfs("cache", "gc", *args)
        assert r.rc != 0 and hint in r.stderr, describe(r)
    assert cache_du(mlfs)["total"] == total
    # (ceil(total / 1024)K above kept everything: K is 1024, not 1000.)
    r = mlfs("cache", "gc", "--max", "3MiB")
    assert_ok(r)
    assert "removed layer" in r.stdout, r.stdout
    assert cache_du(mlfs)["total"] <= 3 * MiB


def test_cache_max_zero_means_one_thing(mlfs, cache, demo):
    """$MLFS_CACHE_MAX sets the cap "for every command", so 0 must mean the
    same to all of them: either no cap (what pull, export and mounts do,
    and what the README says of cache-max=0) or an empty cache.

    mlfs bug (found by this test): with MLFS_CACHE_MAX=0 in the
    environment, `mlfs pull` keeps every layer (0 = no cap), but a plain
    `mlfs cache gc` (run, say, to clear leftovers) takes 0 as --max 0 and
    evicts every layer in the cache."""
    env = {"MLFS_CACHE_MAX": "0"}
    amd = plat(demo, "linux/amd64")
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/amd64", env_extra=env)
    kept_by_pull = all(has_layer(cache, d) for d in diff_ids(amd))
    r = mlfs("cache", "gc", env_extra=env)
    assert_ok(r)
    kept_by_gc = all(has_layer(cache, d) for d in diff_ids(amd))
    assert kept_by_pull == kept_by_gc, (
        "mlfs bug: MLFS_CACHE_MAX=0 is no cap for pull (layers kept: %s) but a cap of 0 for `cache gc` "
        "(layers kept: %s):\n%s" % (kept_by_pull, kept_by_gc, r.stdout))


def test_gc_does_not_blame_live_users_for_metadata(mlfs, cache, demo):
    """`cache gc --max 0` with no mount or command running: it removes every
    layer; what is left is metadata (which only ages out), so it must not
    say that the rest is in use by live mounts or commands.

    mlfs bug (found by this test): it prints "cache still holds 24.0 KiB:
    the rest is in use by live mounts or commands" (the 24 KiB being
    meta/ and refs/, which eviction never touches)."""
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/amd64")
    r = mlfs("cache", "gc", "--max", "0")
    assert_ok(r)
    du = cache_du(mlfs)
    assert du["data"] == du["index"] == 0 and du["total"] == du["meta"], du
    assert "in use" not in r.stdout, "mlfs bug: nothing is in use, yet gc says:\n" + r.stdout


def test_one_builder_per_layer(mounter, mlfs, cache, demo):
    """Three processes want the same uncached image at once (two pulls and
    a mount): each layer is built once, by one of them, and its blob
    fetched from the registry once; all three get the right bytes."""
    ppc = plat(demo, "linux/ppc64le")
    expected_file(demo, ppc, "bin/busybox")   # our own GETs, before counting mlfs's
    before = {l["digest"]: blob_gets(demo.registry, l["digest"]) for l in ppc["layers"]}
    results = []
    pulls = [threading.Thread(target=lambda: results.append(
        mlfs("pull", demo.ref("demo:latest"), "--platform", "linux/ppc64le")), daemon=True) for _ in range(2)]
    m = mounter.mount(demo.ref("demo:latest"), "platform=linux/ppc64le")
    for t in pulls:
        t.start()
    assert_reads(demo, ppc, m, "bin/busybox", "etc/mlfs-platform")
    for t in pulls:
        t.join(timeout=60)
    assert len(results) == 2
    for r in results:
        assert_ok(r)
    m.unmount()
    after = {l["digest"]: blob_gets(demo.registry, l["digest"]) for l in ppc["layers"]}
    assert {d: after[d] - before[d] for d in after} == {l["digest"]: 1 for l in ppc["layers"]}
    for d in diff_ids(ppc):
        assert has_layer(cache, d)
    assert not [p for p in walk_files(cache) if ".tmp" in p or p.endswith((".partial", ".lock"))]


# -- faults --------------------------------------------------------------------------------------

def tar_files(path):
    with tarfile.open(path) as tar:
        return {tar_name(m.name): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def junk_for(demo, layer, kind):
    """What a bad earlier run may have left in <hex>.partial: zeros, or the
    blob's first half with one byte flipped (gzip that inflates a while
    before it goes wrong)."""
    if kind == "zeros":
        return b"\0" * 100
    data = bytearray(demo.client.get_blob("demo", layer["digest"])[:layer["size"] // 2])
    data[len(data) // 3] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("how", ["export", "mount"])
@pytest.mark.parametrize("junk", ["zeros", "bad-prefix"])
def test_junk_partial_is_dropped_in_the_same_run(mounter, mlfs, cache, demo, tmp_path, how, junk):
    """A leftover <hex>.partial that is not a prefix of the blob, where the
    indexer reads it first (export, mount): the run drops it, downloads
    from byte 0 and succeeds with the right bytes; no partial is left."""
    amd = plat(demo, "linux/amd64")
    layer = amd["layers"][0]
    partial = cpath(cache, "blobs", layer["digest"], ".partial")
    os.makedirs(os.path.dirname(partial))
    with open(partial, "wb") as f:
        f.write(junk_for(demo, layer, junk))
    expected_file(demo, amd, "bin/busybox")   # our own GETs, before counting mlfs's
    before = blob_gets(demo.registry, layer["digest"])
    if how == "export":
        out = str(tmp_path / "rootfs.tar")
        r = mlfs("export", demo.ref("demo:latest"), "--platform", "linux/amd64", "-o", out)
        assert_ok(r, allow_warnings=True)
        assert "not usable" in r.stderr, describe(r)
        files = tar_files(out)
        for p in ("bin/busybox", "etc/mlfs-platform"):
            assert files[p] == expected_file(demo, amd, p), p
    else:
        m = mounter.mount(demo.ref("demo:latest"), "platform=linux/amd64")
        assert_reads(demo, amd, m, "bin/busybox", "etc/mlfs-platform")
        m.unmount()
    assert not os.path.exists(partial)
    assert has_layer(cache, diff_ids(amd)[0])
    assert 1 <= blob_gets(demo.registry, layer["digest"]) - before <= 2   # [a resume,] then from byte 0
    r = mlfs("cache", "verify")
    assert_ok(r)


@pytest.mark.parametrize("how", ["pull", "export"])
def test_corrupt_kept_blob_is_refetched(mlfs, cache, demo, tmp_path, how):
    """A kept blob (--keep-blobs) whose bytes changed on disk, same size:
    the next use re-hashes it, drops it and fetches it again.  pull
    --keep-blobs uses the blob itself; export uses it to rebuild a layer
    that was evicted."""
    amd = plat(demo, "linux/amd64")
    layer = amd["layers"][0]
    blob = cpath(cache, "blobs", layer["digest"])
    pull(mlfs, demo.ref("demo:latest"), "--platform", "linux/amd64", "--keep-blobs")
    flip_byte(blob)
    assert os.path.getsize(blob) == layer["size"] and sha256_file(blob) != layer["digest"]
    expected_file(demo, amd, "bin/busybox")   # our own GETs, before counting mlfs's
    before = blob_gets(demo.registry, layer["digest"])
    if how == "pull":
        r = mlfs("pull", demo.ref("demo:latest"), "--platform", "linux/amd64", "--keep-blobs")
        assert_ok(r, allow_warnings=True)
    else:
        d = diff_ids(amd)[0]
        os.unlink(cpath(cache, "index", d))   # as if evicted, blob kept
        os.unlink(cpath(cache, "data", d))
        out = str(tmp_path / "rootfs.tar")
        r = mlfs("export", demo.ref("demo:latest"), "--platform", "linux/amd64", "-o", out, "--keep-blobs")
        assert_ok(r, allow_warnings=True)
        assert tar_files(out)["bin/busybox"] == expected_file(demo, amd, "bin/busybox")
        assert has_layer(cache, d)
    assert "corrupt" in r.stderr, describe(r)
    assert blob_gets(demo.registry, layer["digest"]) == before + 1
    assert sha256_file(blob) == layer["digest"]
    assert_ok(mlfs("cache", "verify"))


def make_temps(cache, demo):
    """Temp files of dead writers in every directory that has them, and one
    a live writer holds (returned separately)."""
    dead = []
    for kind, name in (("data", "ab" * 32 + ".tmp-Qq11Ww"), ("index", "ab" * 32 + ".tmp-Ee22Rr"),
                       ("meta", "cd" * 32 + ".tmp.Tt33Yy"), ("chunks", "ef" * 32 + ".tmp-Uu44Ii")):
        d = os.path.join(cache, kind, "sha256")
        os.makedirs(d, exist_ok=True)
        dead.append(os.path.join(d, name))
    refdir = os.path.join(cache, "refs", demo.host, "demo")
    os.makedirs(refdir, exist_ok=True)
    dead.append(os.path.join(refdir, "latest.tmp.Oo55Pp"))
    for p in dead:
        with open(p, "wb") as f:
            f.write(b"half-written " * 100)
    live = os.path.join(cache, "data", "sha256", "12" * 32 + ".tmp-Aa66Ss")
    with open(live, "wb") as f:
        f.write(b"being written " * 100)
    return dead, live


@pytest.mark.parametrize("command", ["inspect", "pull", "export", "mount"])
def test_dead_temps_removed_at_startup(mounter, mlfs, cache, demo, tmp_path, command):
    """Any command that uses the cache first removes temp files whose
    writer died (nobody holds their lock), but leaves one a live process
    holds with LOCK_EX."""
    dead, live = make_temps(cache, demo)
    with Holder(live, "ex"):
        ref = demo.ref("demo:latest")
        if command == "inspect":
            assert_ok(mlfs("inspect", ref))
        elif command == "pull":
            pull(mlfs, ref, "--platform", "linux/amd64")
        elif command == "export":
            assert_ok(mlfs("export", ref, "--platform", "linux/amd64", "-o", str(tmp_path / "x.tar")))
        else:
            m = mounter.mount(ref, "platform=linux/amd64")
            m.unmount()
        for p in dead:
            assert not os.path.exists(p), "%s left by %s" % (p, command)
        assert os.path.exists(live), "%s removed a temp file held by a live writer" % command
    assert_ok(mlfs("inspect", demo.ref("demo:latest")))
    assert not os.path.exists(live)


def index_digests(cache, keys):
    return {k: sha256_file(cpath(cache, "index", k)) for k in keys}


def test_emfile_keeps_the_index(mlfs, cache, demo, single, tmp_path):
    """Under `prlimit --nofile=N:N` an offline export of a cached image
    runs out of descriptors while opening its cached layers (EMFILE): an
    error, but the valid index and data stay, byte for byte, at every N;
    a later normal export uses them without downloading anything."""
    ids = single.oci["config"]["rootfs"]["diff_ids"]
    busybox = expected_file(demo, single.oci, "bin/busybox")   # our own GETs, before counting mlfs's
    pull(mlfs, single.ref("single:oci"))
    sums = index_digests(cache, ids)
    out = str(tmp_path / "x.tar")
    emfile = []
    for n in range(4, 12):
        r = mlfs("export", "--offline", single.ref("single:oci"), "-o", out,
                 wrap=["prlimit", "--nofile=%d:%d" % (n, n)])
        assert 0 <= r.rc < 128, describe(r)
        if r.rc == 0:
            break
        line = assert_mlfs_error(r)
        if "Too many open files" in line and ("cached data" in line or "cached index" in line):
            emfile.append(n)
        for k in ids:
            assert has_layer(cache, k), "n=%d: %s\n%s" % (n, k, describe(r))
        assert index_digests(cache, ids) == sums
    assert emfile, "no limit made opening a cached layer fail with EMFILE"
    assert r.rc == 0, "export failed even at n=%d\n%s" % (n, describe(r))
    before = {l["digest"]: blob_gets(demo.registry, l["digest"]) for l in single.oci["layers"]}
    r = mlfs("export", single.ref("single:oci"), "-o", out)
    assert_ok(r)
    assert tar_files(out)["bin/busybox"] == busybox
    assert {l["digest"]: blob_gets(demo.registry, l["digest"]) for l in single.oci["layers"]} == before


def test_data_open_error_keeps_the_index(mlfs, cache, demo, single, tmp_path):
    """Deterministically the case EMFILE hits only by a race (the index's
    descriptor is closed just before the data file is opened): opening the
    cached data file fails with an error other than ENOENT (ELOOP: the name
    is a symlink to itself).  The run fails naming the data file, the index
    stays; once the data file is back, an online export downloads nothing."""
    ids = single.oci["config"]["rootfs"]["diff_ids"]
    busybox = expected_file(demo, single.oci, "bin/busybox")   # our own GETs, before counting mlfs's
    pull(mlfs, single.ref("single:oci"))
    sums = index_digests(cache, ids)
    data = cpath(cache, "data", ids[0])
    os.rename(data, data + ".aside")
    os.symlink(os.path.basename(data), data)
    out = str(tmp_path / "x.tar")
    before = {l["digest"]: blob_gets(demo.registry, l["digest"]) for l in single.oci["layers"]}
    try:
        r = mlfs("export", single.ref("single:oci"), "-o", out)
        line = assert_mlfs_error(r, "symbolic links")
        assert "cached data" in line and ids[0].split(":")[1] in line, line
        assert index_digests(cache, ids) == sums
    finally:
        os.unlink(data)
        os.rename(data + ".aside", data)
    r = mlfs("export", single.ref("single:oci"), "-o", out)
    assert_ok(r)
    assert tar_files(out)["bin/busybox"] == busybox
    assert {l["digest"]: blob_gets(demo.registry, l["digest"]) for l in single.oci["layers"]} == before


@pytest.mark.parametrize("lock", ["build", "partial"])
def test_held_lock_gives_eio_within_timeout(mounter, mlfs, cache, demo, lock):
    """Another live process holds the layer's build lock
    (index/sha256/<diff_id>.lock) or its blob's download lock
    (blobs/sha256/<hex>.partial) and never lets go: a mount with
    -o timeout=3 answers a read that needs the layer with EIO within a
    bounded time instead of hanging; once the lock is gone the mount
    recovers and reads the right bytes."""
    s390 = plat(demo, "linux/s390x")
    layer, d = s390["layers"][0], diff_ids(s390)[0]
    if lock == "build":
        path = cpath(cache, "index", d, ".lock")
    else:
        path = cpath(cache, "blobs", layer["digest"], ".partial")
    os.makedirs(os.path.dirname(path))
    open(path, "wb").close()
    m = mounter.mount(demo.ref("demo:latest"), "platform=linux/s390x", "timeout=3")
    with Holder(path, "ex"):
        (res,), took = read_fresh([m.path("bin", "busybox")], timeout=40)
        assert res == (None, errno.EIO), res
        assert took < 15, "EIO took %.1f s with timeout=3" % took
        assert m.ok, "the mount died"
        assert not has_layer(cache, d)
    expected = expected_file(demo, s390, "bin/busybox")
    deadline = time.monotonic() + 20
    while True:
        (res,), _ = read_fresh([m.path("bin", "busybox")], timeout=40)
        if res[0] == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert res == (expected, None), "the mount did not recover after the lock was released: %r" % (res[1],)
    m.unmount()
    assert has_layer(cache, d)


def push_one_layer_image(client, repo, tag, text):
    """An OCI image of one small gzip layer of its own, with a true diff_id."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(200):   # an index of some size
            data = ("%s %d\n" % (text, i)).encode() * 20
            info = tarfile.TarInfo("etc/%s/file-%03d" % (tag, i))
            info.size, info.mtime = len(data), 1700000000
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    layer = gzip.compress(raw, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [sha256_digest(raw)]}}).encode()
    cdigest, ldigest = client.push_blob(repo, config), client.push_blob(repo, layer)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": cdigest, "size": len(config)},
        "layers": [{"mediaType": MT_OCI_LAYER_GZIP, "digest": ldigest, "size": len(layer)}],
    }).encode()
    client.put_manifest(repo, tag, manifest, MT_OCI_MANIFEST)
    return sha256_digest(raw)


def test_index_temp_is_held_by_its_writer(mlfs_bin, mlfs_env, mlfs, cache, demo, tmp_path):
    """The rule every cleaner relies on: a temp file is held with LOCK_EX by
    its live writer, so only a dead writer's temps are removed.  Here the
    index of a layer being built is caught while it is written (strace
    delays each fdatasync by 1 s): it must be held, a concurrent `cache gc`
    must leave it, and the pull must end with the layer's index saved.

    A regression test for an mlfs bug it found (fixed in 282bfab):
    mlfs_indexfile_save() created index/sha256/K.tmp-XXXXXX without
    flocking it, so any concurrent startup cleanup, `cache gc` or eviction
    deleted it; the writer's rename then failed ("index not saved") and the
    layer was left as data without an index."""
    key = push_one_layer_image(demo.client, "cachetest/index-temp", "v1", "index temp")
    ref = demo.ref("cachetest/index-temp:v1")
    log = tmp_path / "pull.stderr"
    with open(log, "wb") as err:
        proc = subprocess.Popen(["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync",
                                 "-e", "inject=fdatasync:delay_enter=1000000", mlfs_bin, "pull", ref],
                                env=mlfs_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
    try:
        index_dir = os.path.join(cache, "index", "sha256")
        temps = lambda: [os.path.join(index_dir, f) for f in (os.listdir(index_dir) if os.path.isdir(index_dir)
                                                              else []) if ".tmp-" in f]
        assert wait_for(temps, timeout=20), "never saw the index being written"
        temp = temps()[0]
        held = not can_lock_ex(temp)
        gc = mlfs("cache", "gc")
        still_there = os.path.exists(temp)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    stderr = log.read_text()
    assert rc == 0, stderr
    problems = []
    if not held:
        problems.append("the index temp %s being written is not flock'ed by its writer" % temp)
    if not still_there and not has_layer(cache, key):
        # Gone and no index: gc took it.  (Gone with the index saved: the
        # writer renamed it before a slow gc ended, which is fine.)
        problems.append("`cache gc` removed it while it was being written:\n" + gc.stdout)
    if not has_layer(cache, key):
        problems.append("the pull ended without the layer's index (stderr: %s)" % stderr.strip())
    assert not problems, "mlfs bug:\n" + "\n".join(problems)


