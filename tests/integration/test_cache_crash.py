"""The cache under duress: processes killed with SIGKILL at random moments, a
disk that fills up, eviction racing with readers, and a size cap smaller
than the image.

What must hold whatever happens (issue 9): a name in the cache is always a
sound one (`mlfs cache verify` exits 0), a later mount serves exactly the
image (compared entry by entry with what umoci unpacks, treediff.py), a
reader never gets a wrong byte or an error because some other process
evicts, and `mlfs cache gc` leaves no leftovers (temp files, partial
downloads) of the runs that died.

The images are built here with Python's tarfile (seeded random contents, so
the layers are incompressible and the loads take a while) and pushed to the
session's plain registry; expected trees come from umoci
(reference.unpack_reference).  Every subprocess has a timeout, every loop
is bounded, every mount and tmpfs is taken down in `finally`.

The random kills land in the narrow windows that matter only now and then;
the last tests place a kill (or a concurrent command) in each such window
on purpose: with strace's fault injection (`-e inject=...:signal=KILL`) or
with gdb stopped at a function of the build.  They skip when strace or gdb
is not installed.  MLFS_CRASH_SEED replays another schedule of the random
loop.
"""

import contextlib
import gzip
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import tarfile
import threading
import time

import pytest

from helpers import MLFS_BIN, assert_mlfs_error, assert_no_crash, assert_ok, describe, run_mlfs
from mounts import Mount, force_unmount, is_mounted
from reference import unpack_reference
from registry import MT_OCI_CONFIG, MT_OCI_LAYER_GZIP, MT_OCI_MANIFEST, RegistryClient
import treediff

MTIME = 1700000000
SEED = int(os.environ.get("MLFS_CRASH_SEED", "20240909"))
ROUNDS = 30
CMD_TIMEOUT = 60


# -- building images ---------------------------------------------------------------

def _rand(seed, n):
    return random.Random(seed).randbytes(n)


def make_layer(entries):
    """A tar (bytes) of entries: ("dir", name), ("file", name, data[, mode]),
    ("symlink", name, target), ("hardlink", name, target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            ti = tarfile.TarInfo(e[1])
            ti.mtime = MTIME
            ti.uname = ti.gname = ""
            if e[0] == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(ti)
            elif e[0] == "file":
                ti.type, ti.mode, ti.size = tarfile.REGTYPE, (e[3] if len(e) > 3 else 0o644), len(e[2])
                tar.addfile(ti, io.BytesIO(e[2]))
            elif e[0] == "symlink":
                ti.type, ti.mode, ti.linkname = tarfile.SYMTYPE, 0o777, e[2]
                tar.addfile(ti)
            elif e[0] == "hardlink":
                ti.type, ti.mode, ti.linkname = tarfile.LNKTYPE, 0o644, e[2]
                tar.addfile(ti)
            else:
                raise ValueError(e[0])
    return buf.getvalue()


def push_image(client, repo, tag, tars):
    """Pushes a single-platform OCI image of gzip layers (real diff_ids);
    returns {ref path, digest, layers: [{digest, size, diff_id}], blobs}."""
    diff_ids = ["sha256:" + hashlib.sha256(t).hexdigest() for t in tars]
    blobs = [gzip.compress(t, compresslevel=1, mtime=0) for t in tars]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode()
    layers = []
    for blob, diff_id in zip(blobs, diff_ids):
        layers.append({"digest": client.push_blob(repo, blob), "size": len(blob), "diff_id": diff_id})
    cdigest = client.push_blob(repo, config)
    manifest = {
        "schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": cdigest, "size": len(config)},
        "layers": [{"mediaType": MT_OCI_LAYER_GZIP, "digest": l["digest"], "size": l["size"]} for l in layers],
    }
    body = json.dumps(manifest, indent=2).encode()
    digest = client.put_manifest(repo, tag, body, MT_OCI_MANIFEST)
    return {"repo": repo, "tag": tag, "digest": digest, "layers": layers,
            "blobs": {l["digest"]: b for l, b in zip(layers, blobs)}}


def _small_files(prefix, seed, n):
    out = []
    for i in range(n):
        out.append(("file", "%s/f%03d" % (prefix, i), (b"%d:%d small file\n" % (seed, i)) * (1 + i % 40)))
    return out


def multi_layers():
    """Four layers, about 14 MB of incompressible data: a load takes long
    enough for a kill to land in its fetch, index or merge; the top layer
    replaces a file, whites one out and adds a symlink and a hardlink."""
    l0 = [("dir", "usr"), ("dir", "usr/lib"), ("dir", "usr/share"), ("dir", "usr/share/doc")]
    l0 += [("file", "usr/lib/r%d" % i, _rand(100 + i, 2 << 20)) for i in range(3)]
    l0 += _small_files("usr/share/doc", 0, 150)
    l1 = [("dir", "etc"), ("dir", "etc/conf.d")]
    l1 += [("file", "etc/blob%d" % i, _rand(200 + i, (2 << 20) + 4097 * i)) for i in range(2)]
    l1 += [("file", "etc/to-remove", b"whited out above\n")]
    l1 += _small_files("etc/conf.d", 1, 100)
    l2 = [("dir", "opt"), ("file", "opt/big", _rand(300, 3 << 20), 0o755),
          ("symlink", "opt/link", "big"), ("hardlink", "opt/hard", "opt/big")]
    l2 += [("dir", "opt/many")] + _small_files("opt/many", 2, 120)
    l3 = [("dir", "usr"), ("dir", "usr/lib"), ("file", "usr/lib/r0", _rand(400, (1 << 20) + 3)),
          ("dir", "etc"), ("file", "etc/.wh.to-remove", b""), ("file", "etc/top", b"the top layer\n"),
          ("symlink", "etc/lib0", "../usr/lib/r0")]
    return [make_layer(l) for l in (l0, l1, l2, l3)]


def shared_layers():
    """(base, top of image a, top of image b): two images sharing a base."""
    base = [("dir", "base"), ("dir", "base/docs")]
    base += [("file", "base/b%d" % i, _rand(500 + i, (1 << 20) + 513 * i)) for i in range(3)]
    base += _small_files("base/docs", 5, 60)
    top_a = [("dir", "a"), ("file", "a/data", _rand(600, 1536 << 10)), ("dir", "base"),
             ("file", "base/b0", b"replaced in image a\n")] + _small_files("a", 6, 30)
    top_b = [("dir", "b"), ("file", "b/data", _rand(700, 1280 << 10))] + _small_files("b", 7, 30)
    return [make_layer(l) for l in (base, top_a, top_b)]


def incompressible_layer():
    """6 MiB of random bytes: the blob alone is bigger than the small disk."""
    return make_layer([("dir", "data"), ("file", "data/random", _rand(800, 6 << 20))]
                      + _small_files("data", 8, 20))


def compressible_layer():
    """12 MiB that gzip squeezes under 1 MiB: the blob fits on the small
    disk, the layer's data does not (ENOSPC while indexing, not fetching)."""
    text = b"".join(b"line %08d of a file that compresses well\n" % i for i in range(12 << 20 >> 6))
    return make_layer([("dir", "text"), ("file", "text/big", text)] + _small_files("text", 9, 20))


class Image:
    def __init__(self, registry, desc, rootfs):
        self.registry = registry
        self.desc = desc
        self.rootfs = rootfs
        self.tree = treediff.walk(rootfs)
        self.ref = "%s/%s:%s" % (registry.host, desc["repo"], desc["tag"])
        self.data_bytes = sum(m["size"] for m in self.tree.values() if m["type"] == "file")

    def file_hashes(self):
        return {p: m["sha256"] for p, m in self.tree.items() if m["type"] == "file"}


@pytest.fixture(scope="module")
def images(plain_registry, session_dir):
    client = RegistryClient(plain_registry.url)
    refdir = os.path.join(session_dir, "crash-reference")
    out = {}

    def add(name, repo, tag, tars):
        desc = push_image(client, repo, tag, tars)
        out[name] = Image(plain_registry, desc, unpack_reference(plain_registry.host, repo, desc["digest"], refdir))

    add("multi", "crash/multi", "v1", multi_layers())
    base, top_a, top_b = shared_layers()
    add("share_a", "crash/share-a", "v1", [base, top_a])
    add("share_b", "crash/share-b", "v1", [base, top_b])
    add("random", "crash/enospc-random", "v1", [incompressible_layer()])
    add("text", "crash/enospc-text", "v1", [compressible_layer()])
    return out


# -- looking at a cache -----------------------------------------------------------------

TEMP_RE = re.compile(r"\.tmp[-.]")


def cache_files(cache):
    out = []
    for root, _, files in os.walk(cache):
        out += [os.path.join(root, f) for f in files]
    return sorted(out)


def temp_files(cache):
    return [f for f in cache_files(cache) if TEMP_RE.search(os.path.basename(f))]


def partial_files(cache):
    return [f for f in cache_files(cache) if f.endswith(".partial")]


KEY_RE = re.compile(r"^[0-9a-f]{64}$")


def layer_state(cache):
    """{kind: sorted keys} under data/index/chunks/blobs (what a kill left;
    temp, partial and lock files not counted)."""
    out = {}
    for kind in ("data", "index", "chunks", "blobs"):
        d = os.path.join(cache, kind, "sha256")
        out[kind] = sorted(n for n in os.listdir(d) if KEY_RE.match(n)) if os.path.isdir(d) else []
    return out


def mlfs_run(env, *args, timeout=CMD_TIMEOUT):
    return run_mlfs(*args, env=env, timeout=timeout)


def cache_du(env):
    r = mlfs_run(env, "cache", "du", "--json")
    assert_ok(r)
    return json.loads(r.stdout)


def verify(env):
    r = mlfs_run(env, "cache", "verify")
    assert_no_crash(r)
    return r


def walk_mount(ref, mountpoint, env, options=()):
    """Mounts ref (daemonised), walks it (treediff.walk) in a thread bounded
    by a timeout, unmounts; returns (walk, mount stderr)."""
    m = Mount(ref, mountpoint, options=options, env=env, watchdog=120)
    try:
        m.start(check=True)
        box = {}
        t = threading.Thread(target=lambda: box.__setitem__("tree", treediff.walk(mountpoint)), daemon=True)
        t.start()
        t.join(timeout=90)
        assert not t.is_alive(), "walking the mount of %s did not finish" % ref
        m.unmount("fusermount3")
        return box["tree"], m.stderr()
    finally:
        m.cleanup()


def kill_group(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


# -- 1. SIGKILL at random moments ---------------------------------------------------------

def _kill_mount(image, env, mountpoint, delay):
    """A foreground mount, a reader walking it, SIGKILL to the daemon after
    delay.  With delay None nothing is killed: the reader's time to walk
    the tree is returned (the calibration of the kill moments)."""
    m = Mount(image.ref, mountpoint, env=env, foreground=True, watchdog=60)
    reader = None
    try:
        m.start(check=True)
        reader = subprocess.Popen(
            ["sh", "-c", 'ls -R "$1" >/dev/null 2>&1; find "$1" -type f -exec cat {} + >/dev/null 2>&1',
             "sh", mountpoint], stdin=subprocess.DEVNULL, start_new_session=True)
        if delay is None:
            t0 = time.monotonic()
            reader.wait(timeout=90)
            took = time.monotonic() - t0
            m.unmount("fusermount3")
            return took
        time.sleep(delay)
        pids = m.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        finished = reader.poll() is not None
        return "mount (reader %s)" % ("already done" if finished else "running")
    finally:
        m.cleanup()
        force_unmount(mountpoint)
        if reader is not None:
            kill_group(reader)


def _load_times(image, env, tmp_path):
    """How long a cold mount's reader and a cold `mlfs pull` take on this
    machine, so that the kills aim inside the loads whatever the machine's
    speed (a fixed 0.35 s window missed most loads on a fast machine)."""
    cache = env["MLFS_CACHE"]
    shutil.rmtree(cache, ignore_errors=True)
    mp = str(tmp_path / "calibrate")
    os.makedirs(mp)
    # The first load warms the registry and keeps the manifests, as most
    # rounds start: the second one is the time measured.
    _kill_mount(image, env, mp, None)
    assert_ok(mlfs_run(env, "cache", "gc", "--max", "0"), allow_warnings=True)
    mount = _kill_mount(image, env, mp, None)
    assert_ok(mlfs_run(env, "cache", "gc", "--max", "0"), allow_warnings=True)
    t0 = time.monotonic()
    assert_ok(mlfs_run(env, "pull", image.ref), allow_warnings=True)
    pull = time.monotonic() - t0
    return {"mount": mount, "pull": pull}


def _kill_command(env, args, delay):
    proc = subprocess.Popen([MLFS_BIN] + list(args), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(delay)
        done = proc.poll() is not None
        kill_group(proc)
        return "%s (%s)" % (" ".join(args[:3]), "had exited" if done else "killed")
    finally:
        kill_group(proc)


def test_sigkill_at_random_moments_leaves_a_sound_cache(images, mlfs_env, tmp_path):
    """30 rounds, each killing (SIGKILL) one process that works on the cache
    at a random moment: mostly a foreground mount whose tree a reader is
    walking (the kill lands in the fetch, the index build, the merge or
    after), sometimes `mlfs pull`, sometimes `mlfs cache gc --max 0` (in
    the middle of an eviction).  Each round starts from no cache at all, a
    cache whose layers were all evicted (manifests kept), about half
    evicted, or full, so kills meet every stage of a load.  After every kill `mlfs cache verify` must exit 0 (a crash
    never leaves a name that is not sound: files are written under temp
    names and renamed) and a new mount must serve exactly the image; at the
    end `mlfs cache gc` must leave no temp file or partial download.

    Why: SIGKILL runs no cleanup code, so this is what a power cut, an OOM
    kill or a `kill -9` of a stuck mount leaves, and the next mount (often
    at boot) must neither serve a wrong byte nor trip over the debris."""
    image = images["multi"]
    env = dict(mlfs_env)
    cache = env["MLFS_CACHE"]
    rng = random.Random(SEED)
    failures = []
    log = []
    interrupted = 0
    started = time.monotonic()
    load = _load_times(image, env, tmp_path)
    log.append("seed %d: a cold load takes %.3fs (mount's reader), %.3fs (pull)" % (
        SEED, load["mount"], load["pull"]))
    for rnd in range(ROUNDS):
        # Every random choice is made here, up front, so a seed always
        # gives the same schedule whatever the timings do.
        what = rng.choices(["mount", "pull", "gc"], weights=[6, 2, 2])[0]
        # How warm the cache is when the round starts (the check of the
        # round before left it full): no cache directory at all, layers all
        # evicted (manifests kept), about half of them, or all there.
        start = rng.choices(["none", "cold", "half", "warm"], weights=[2, 3, 3, 2])[0]
        # Most kills aim inside a load, a third anywhere up to four times
        # as long (after the load: the merge, the reads).  The draw is a
        # fraction of the load time measured on this machine.
        frac = rng.uniform(0, 1) if rng.random() < 2 / 3 else rng.uniform(0, 4)
        delay = frac * load["pull" if what == "pull" else "mount"]
        if what == "gc":
            delay = rng.uniform(0, 0.03)  # an eviction of four layers takes ~20 ms
            start = "full"  # gc rounds pull everything first: something to evict
        where = "seed %d round %d: %s" % (SEED, rnd, what)
        try:
            if start == "none" and os.path.isdir(cache):
                shutil.rmtree(cache)
            elif start in ("cold", "half") and os.path.isdir(cache):
                cap = 0 if start == "cold" else cache_du(env)["total"] // 2
                r = mlfs_run(env, "cache", "gc", "--max", str(cap))
                assert r.rc == 0, "gc --max %d failed\n%s" % (cap, describe(r))
            mp = str(tmp_path / ("mnt%d" % rnd))
            os.makedirs(mp)
            if what == "mount":
                how = _kill_mount(image, env, mp, delay)
            elif what == "pull":
                how = _kill_command(env, ["pull", image.ref], delay)
            else:
                assert_ok(mlfs_run(env, "pull", image.ref), allow_warnings=True)
                how = _kill_command(env, ["cache", "gc", "--max", "0"], delay)
            state = layer_state(cache) if os.path.isdir(cache) else {}
            left = temp_files(cache) + partial_files(cache) if os.path.isdir(cache) else []
            if left or (state and state["data"] != state["index"]):
                interrupted += 1
            where = "seed %d round %d: %s cache, %s killed after %.3fs; cache after the kill: %s, leftovers %s" % (
                SEED, rnd, start, how, delay, {k: len(v) for k, v in state.items()},
                [os.path.basename(f) for f in left])
            log.append(where)

            r = verify(env)
            if r.rc != 0:
                failures.append("%s\n  mlfs cache verify exited %d:\n    %s" % (
                    where, r.rc, (r.stdout + r.stderr).strip().replace("\n", "\n    ")))
            os.makedirs(mp + "-check")
            tree, err = walk_mount(image.ref, mp + "-check", env)
            d = treediff.diff(image.tree, tree)
            if d:
                failures.append("%s\n  the remount differs from umoci: %s\n  mount stderr: %s" % (
                    where, treediff.report(d, limit=10), err.strip()[:2000]))
        except (AssertionError, pytest.fail.Exception) as e:
            failures.append("%s\n  %s" % (where, str(e).strip()[:3000]))
        if len(failures) >= 8:
            log.append("stopped after %d failures" % len(failures))
            break

    r = mlfs_run(env, "cache", "gc")
    assert_no_crash(r)
    assert r.rc == 0, "seed %d: final gc failed\n%s" % (SEED, describe(r))
    du = cache_du(env)
    elapsed = time.monotonic() - started
    history = "\n".join(log)
    print("%d rounds in %.1fs, %d interrupted a load:\n%s" % (ROUNDS, elapsed, interrupted, history))
    assert not failures, "seed %d (MLFS_CRASH_SEED to replay), %d of %d rounds failed in %.1fs:\n%s\n\nall rounds:\n%s" % (
        SEED, len(failures), ROUNDS, elapsed, "\n".join(failures[:10]), history)
    assert du["temp"] == 0 and du["partial"] == 0, "seed %d: gc left leftovers: %r" % (SEED, du)
    assert temp_files(cache) == [] and partial_files(cache) == [], (
        "seed %d: gc left %r" % (SEED, temp_files(cache) + partial_files(cache)))
    # The loop must have hit loads in progress, or it tested nothing.
    assert interrupted >= 3, "seed %d: only %d kills interrupted a load:\n%s" % (SEED, interrupted, history)


# -- 2. a full disk -------------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(path, size):
    """A tmpfs of `size` at path (created), always unmounted on the way out."""
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", path],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, "cannot mount a tmpfs: %s" % r.stderr
    try:
        yield path
    finally:
        r = subprocess.run(["umount", path], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)
        assert not is_mounted(path), "the tmpfs at %s is still mounted" % path


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (grow it with remount_tmpfs) for a whole cache."""
    with tmpfs(str(tmp_path / "small-disk"), "4m") as path:
        yield path


@pytest.fixture
def small_blobs_dir(mlfs_env):
    """The test's cache with blobs/ alone on a 4 MiB tmpfs: downloading a
    6 MiB blob is what runs out of space, every time, not the layer data."""
    with tmpfs(os.path.join(mlfs_env["MLFS_CACHE"], "blobs"), "4m"):
        yield mlfs_env["MLFS_CACHE"]


@pytest.fixture
def small_data_dir(mlfs_env):
    """The test's cache with data/ alone on a 2 MiB tmpfs: writing the
    layer's data is what runs out of space (the download is cut short with
    it and leaves a partial), every time."""
    with tmpfs(os.path.join(mlfs_env["MLFS_CACHE"], "data"), "2m"):
        yield mlfs_env["MLFS_CACHE"]


def remount_tmpfs(path, size):
    r = subprocess.run(["mount", "-o", "remount,size=%s" % size, path], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, "cannot resize the tmpfs: %s" % r.stderr


def extract_tar(tar_path, dest):
    os.makedirs(dest)
    r = subprocess.run(["tar", "-xpf", tar_path, "-C", dest, "--numeric-owner"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, "tar -x of the export failed: %s" % r.stderr
    return dest


def assert_partials_are_prefixes(cache, image):
    """A partial download left behind is a true prefix of its blob: resumable, not corrupt."""
    for p in partial_files(cache):
        digest = "sha256:" + os.path.basename(p)[:-len(".partial")]
        blob = image.desc["blobs"].get(digest)
        assert blob is not None, "a partial of an unknown blob: %s" % p
        with open(p, "rb") as f:
            got = f.read()
        assert len(got) <= len(blob) and blob.startswith(got), (
            "%s (%d bytes) is not a prefix of its blob" % (p, len(got)))


def run_enospc_command(env, command, image, out):
    if command == "pull":
        return mlfs_run(env, "pull", image.ref)
    return mlfs_run(env, "export", image.ref, "-o", out)


ENOSPC_NEEDLES = ("no space", "enospc", "disk full", "disk is full")


@pytest.mark.parametrize("command", ["pull", "export"])
@pytest.mark.parametrize("kind", ["random", "text"], ids=["incompressible", "compressible"])
def test_enospc_fails_cleanly_then_succeeds(images, mlfs_env, small_disk, tmp_path, command, kind):
    """The cache on a 4 MiB tmpfs, an image whose data is bigger than that:
    `random` is 6 MiB of incompressible bytes (the download itself runs out
    of space), `text` is 12 MiB that gzips under 1 MiB (the blob fits; the
    layer's decompressed data does not).  `mlfs pull` / `mlfs export` must
    fail with exit status 1 and one `mlfs: ` line that says the disk is
    full (no crash, no traceback), leave nothing half-written under a real
    name (`mlfs cache verify` exits 0, no temp file, a partial download at
    most, and that a true prefix of its blob; export writes no output
    file), and once the tmpfs is bigger the same command must succeed and
    yield exactly the image (umoci's tree).

    Why: a full disk is the commonest I/O error a cache meets; a half-written
    layer under its real name would be served (wrongly) forever after."""
    image = images[kind]
    env = dict(mlfs_env, MLFS_CACHE=os.path.join(small_disk, "cache"))
    cache = env["MLFS_CACHE"]
    out = str(tmp_path / "export.tar")

    r = run_enospc_command(env, command, image, out)
    assert_mlfs_error(r, *ENOSPC_NEEDLES)
    assert not os.path.exists(out), "a failed export left its output file behind"
    v = verify(env)
    assert v.rc == 0, "cache verify after ENOSPC\n" + describe(v)
    assert temp_files(cache) == [], "temp files after ENOSPC: %r" % temp_files(cache)
    assert_partials_are_prefixes(cache, image)
    du = cache_du(env)
    assert du["data"] == 0 and du["index"] == 0, "a layer was stored though it did not fit: %r" % du

    remount_tmpfs(small_disk, "64m")
    r = run_enospc_command(env, command, image, out)
    assert_ok(r, allow_warnings=True)
    if command == "pull":
        assert_ok(mlfs_run(env, "export", "--offline", image.ref, "-o", out))
    tree = treediff.walk(extract_tar(out, str(tmp_path / "unpacked")))
    treediff.assert_same_tree(image.tree, tree, what="export after the disk grew")
    v = verify(env)
    assert v.rc == 0, describe(v)
    assert temp_files(cache) == [] and partial_files(cache) == []


def _stutter(line):
    """The first context repeated right after itself ("a: b: a: b: ..."), or None."""
    parts = line.split(": ")
    for n in (1, 2, 3):
        for i in range(len(parts) - 2 * n + 1):
            if parts[i:i + n] == parts[i + n:i + 2 * n]:
                return ": ".join(parts[i:i + n])
    return None


@pytest.mark.parametrize("command", ["pull", "export"])
def test_enospc_message_says_each_thing_once(images, mlfs_env, small_blobs_dir, tmp_path, command):
    """The download runs out of space (blobs/ is a 4 MiB tmpfs, the blob
    6 MiB): the one-line error names the layer and image once, as in
    `layer 1 of REF: cannot download sha256:...: ... (No space left on
    device) ...`, not `layer 1 of REF: layer 1 of REF: ...` (two callers
    adding the same context).

    Why: that line is all a person sees of a failed pull in a boot log."""
    image = images["random"]
    r = run_enospc_command(dict(mlfs_env), command, image, str(tmp_path / "export.tar"))
    line = assert_mlfs_error(r, *ENOSPC_NEEDLES)
    assert "download" in line, "expected the download to run out of space: " + line
    assert _stutter(line) is None, "the error says %r twice: %s" % (_stutter(line), line)


@pytest.mark.parametrize("command", ["pull", "export"])
def test_enospc_again_on_a_still_full_disk(images, mlfs_env, small_data_dir, tmp_path, command):
    """data/ is a 2 MiB tmpfs: the first pull runs out of space writing the
    layer's data and leaves a partial download (a true prefix of the blob,
    checked here).  A second try while the disk is still full must fail as
    the first did, with one line saying there is no space: it is writing
    the data again that fails, not the partial, so mlfs must not call the
    partial "not usable", drop it and download again from byte 0.

    Why: a wrong diagnosis sends the user after a corrupt download that
    does not exist, and throws away bytes already fetched."""
    image = images["random"]
    env = dict(mlfs_env)
    cache = env["MLFS_CACHE"]
    assert_mlfs_error(mlfs_run(env, "pull", image.ref), *ENOSPC_NEEDLES)
    assert partial_files(cache), "the first try left no partial download (nothing to test)"
    assert_partials_are_prefixes(cache, image)
    r = run_enospc_command(env, command, image, str(tmp_path / "export.tar"))
    assert_no_crash(r)
    assert "not usable" not in r.stderr, "a sound partial download was blamed for ENOSPC\n" + describe(r)
    assert_mlfs_error(r, *ENOSPC_NEEDLES)
    assert verify(env).rc == 0
    assert temp_files(cache) == []


# -- 3. eviction racing with readers -----------------------------------------------------

READER = r"""
import hashlib, json, os, sys, time
with open(sys.argv[1]) as f:
    spec = json.load(f)
deadline = time.monotonic() + spec["seconds"]
reads, passes, errors, wrong = 0, 0, [], []
while time.monotonic() < deadline or passes < 2:
    for path, want in spec["files"].items():
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                # Drop the page cache: the daemon, not the kernel, answers.
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                h = hashlib.sha256()
                while True:
                    b = os.read(fd, 1 << 20)
                    if not b:
                        break
                    h.update(b)
            finally:
                os.close(fd)
            reads += 1
            if h.hexdigest() != want:
                wrong.append(path)
        except OSError as e:
            errors.append("%s: %s" % (path, e))
    passes += 1
    if passes >= 200:
        break
print(json.dumps({"reads": reads, "passes": passes, "errors": errors[:20], "n_errors": len(errors),
                  "wrong": wrong[:20], "n_wrong": len(wrong)}))
"""


def start_reader(mountpoint, image, seconds):
    files = {os.path.join(mountpoint, p): h for p, h in image.file_hashes().items()}
    spec = mountpoint.rstrip("/") + ".reader.json"
    with open(spec, "w") as f:
        json.dump({"files": files, "seconds": seconds}, f)
    return subprocess.Popen(["/usr/bin/python3", "-c", READER, spec], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def reader_result(proc, timeout=120):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        pytest.fail("a reader did not finish within %ss" % timeout)
    assert proc.returncode == 0, "reader failed (%d): %s" % (proc.returncode, err.decode("utf-8", "replace"))
    return json.loads(out)


def test_gc_max_0_while_two_mounts_read_a_shared_layer(images, mlfs_env, tmp_path):
    """Two images share their base layer; both are mounted on one cold
    cache and read continuously (every file, page cache dropped, checksum
    compared with umoci's) by two processes while `mlfs cache gc --max 0`
    runs again and again for 4 s in a third.  Every read must return the
    right bytes and none may fail; every gc must succeed (keeping what the
    mounts use).  After both unmount, the cache must verify and
    `gc --max 0` must then empty it of layer data.

    Why: eviction is the only thing that deletes layers under live
    readers; its shared/exclusive locks must hold on a layer that two
    mounts (two processes) use, including while they are still building it."""
    a, b = images["share_a"], images["share_b"]
    env = dict(mlfs_env)
    seconds = 4.0
    mounts, readers = [], []
    gc_runs = []
    try:
        for img, name in ((a, "mnt-a"), (b, "mnt-b")):
            mp = str(tmp_path / name)
            os.makedirs(mp)
            m = Mount(img.ref, mp, env=env, foreground=True, watchdog=120)
            mounts.append(m)
            m.start(check=True)
        for m, img in zip(mounts, (a, b)):
            readers.append(start_reader(m.mountpoint, img, seconds))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(gc_runs) < 400:
            gc_runs.append(mlfs_run(env, "cache", "gc", "--max", "0", timeout=30))
        results = [reader_result(p) for p in readers]
        for m in mounts:
            assert m.proc.poll() is None, "a mount died:\n" + m.stderr()
        for r in gc_runs:
            assert_no_crash(r)
            assert r.rc == 0, "cache gc --max 0 failed\n" + describe(r)
        assert len(gc_runs) >= 3, "gc ran only %d times" % len(gc_runs)
        # gc met the shared layer in use (and kept it), or the test tested nothing.
        kept = sum(1 for r in gc_runs if "in use" in r.stdout)
        assert kept, "no gc run found a layer in use:\n" + gc_runs[-1].stdout
        print("%d gc runs (%d kept layers in use), reads: %r" % (
            len(gc_runs), kept, [(r["reads"], r["passes"]) for r in results]))
        for img, res in zip((a, b), results):
            assert res["n_errors"] == 0 and res["n_wrong"] == 0, "reads of %s went wrong: %r\nmount logs:\n%s" % (
                img.ref, res, "\n".join(m.stderr() for m in mounts))
            assert res["passes"] >= 2, res
        logs = [m.stderr() for m in mounts]
        for m in mounts:
            assert m.unmount("fusermount3") == 0, m.stderr()
    finally:
        for p in readers:
            kill_group(p)
        for m in mounts:
            m.cleanup()
    v = verify(env)
    assert_ok(mlfs_run(env, "cache", "gc", "--max", "0"))
    du = cache_du(env)
    assert v.rc == 0, "cache verify after the mounts ended\n%s\nmount logs:\n%s" % (describe(v), "\n".join(logs))
    assert all(du[k] == 0 for k in ("data", "index", "chunks", "blobs", "partial", "temp")), (
        "gc --max 0 left bytes once nothing was in use: %r" % du)


# -- 4. a cap smaller than the image --------------------------------------------------

def test_mount_with_cache_max_smaller_than_the_image(images, mlfs_env, tmp_path):
    """`-o cache-max=8M` on a 14 MiB image: the mount still serves exactly
    the image (every layer it uses stays: a layer in use is never evicted,
    so the cache goes over the cap while mounted), and once it is unmounted
    the cache is back under the cap (`cache du` total).  A second mount
    under the same cap fetches what was evicted and is right again.

    Why: the cap bounds the disk a cache takes between uses; it must never
    cost a mounted image its bytes, nor be ignored once the mount ends."""
    image = images["multi"]
    cap = 8 << 20
    assert image.data_bytes > cap
    env = dict(mlfs_env)
    logs = []
    for attempt in range(2):
        mp = str(tmp_path / ("mnt%d" % attempt))
        os.makedirs(mp)
        m = Mount(image.ref, mp, options=["cache-max=8M"], env=env, foreground=True, watchdog=120)
        try:
            m.start(check=True)
            box = {}
            t = threading.Thread(target=lambda: box.__setitem__("tree", treediff.walk(mp)), daemon=True)
            t.start()
            t.join(timeout=90)
            assert not t.is_alive(), "walking the mount did not finish"
            treediff.assert_same_tree(image.tree, box["tree"], what="mount %d under cache-max" % attempt)
            during = cache_du(env)
            assert during["total"] > cap, (
                "the layers in use (%d bytes of files) cannot fit under the cap, yet du says %r"
                % (image.data_bytes, during))
            assert m.unmount("fusermount3") == 0, m.stderr()
            logs.append(m.stderr())
        finally:
            m.cleanup()
        after = cache_du(env)
        assert after["total"] <= cap, "after unmount %d the cache holds %d bytes > cap %d: %r\nlog:\n%s" % (
            attempt, after["total"], cap, after, m.stderr())
        assert temp_files(env["MLFS_CACHE"]) == []


def test_cache_max_never_evicts_an_index_being_written(images, mlfs_env, tmp_path):
    """Three cold mounts under `-o cache-max=8M` (the 14 MiB image): while
    the mount builds its four layers in parallel, enforcing the cap must
    not take another layer's index temp file for a dead run's leftover
    (mlfs logs "evicted leftover .../index/sha256/K.tmp-XXXXXX" and then
    "layer K: index not saved: No such file or directory").  The writer of
    an index temp file must hold it locked, as every other temp writer does.

    Why: the lost index makes the next mount download and index the layer
    again, and leaves a data file without an index, which `mlfs cache
    verify` then calls broken."""
    image = images["multi"]
    env = dict(mlfs_env)
    bad = []
    for attempt in range(3):
        mp = str(tmp_path / ("mnt%d" % attempt))
        os.makedirs(mp)
        m = Mount(image.ref, mp, options=["cache-max=8M"], env=env, foreground=True, watchdog=120)
        try:
            m.start(check=True)
            [tree] = [treediff.walk(mp)]
            treediff.assert_same_tree(image.tree, tree, what="mount %d under cache-max" % attempt)
            assert m.unmount("fusermount3") == 0, m.stderr()
        finally:
            m.cleanup()
        log = m.stderr()
        lines = [l for l in log.splitlines() if "index not saved" in l
                 or re.search(r"evicted leftover \S*/index/sha256/\S*\.tmp-", l)]
        if lines:
            bad.append("mount %d:\n  %s" % (attempt, "\n  ".join(lines)))
        assert_ok(mlfs_run(env, "cache", "gc", "--max", "0"))
    assert not bad, "a cap-enforcing mount deleted index files it was writing:\n" + "\n".join(bad)


# -- the moments the random kills hit by chance, hit on purpose -------------------------

def _need(tool):
    path = shutil.which(tool)
    if not path:
        pytest.skip("%s is not installed (it places a kill at an exact moment)" % tool)
    return path


def _need_symbol(name):
    _need("nm")
    r = subprocess.run(["nm", MLFS_BIN], capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or not re.search(r" [Tt] %s$" % re.escape(name), r.stdout, re.M):
        pytest.skip("%s has no symbol %s to stop at" % (MLFS_BIN, name))


def layer_key(image):
    """The cache key of a layer streamed whole: its diff_id's hex."""
    return image.desc["layers"][0]["diff_id"].split(":", 1)[1]


def assert_export_right(env, image, tmp_path, name):
    out = str(tmp_path / (name + ".tar"))
    assert_ok(mlfs_run(env, "export", image.ref, "-o", out), allow_warnings=True)
    tree = treediff.walk(extract_tar(out, str(tmp_path / name)))
    treediff.assert_same_tree(image.tree, tree, what="export after the kill")


def test_kill_inside_an_eviction_then_verify(images, mlfs_env, tmp_path):
    """`mlfs cache gc --max 0` killed (SIGKILL, strace fault injection) as it
    unlinks a layer's data file, after it unlinked the layer's index (the
    order layers/cache.c evicts in): the state an eviction cut short leaves.  `mlfs cache verify` must
    exit 0 (this is a crash's leftover, which gc removes as "incomplete",
    not a broken layer) and the image must export right.

    Why: the random kills of test_sigkill_at_random_moments_leaves_a_sound_cache
    land here now and then; this lands here every time."""
    strace = _need("strace")
    image = images["random"]
    env = dict(mlfs_env)
    cache = env["MLFS_CACHE"]
    assert_ok(mlfs_run(env, "pull", image.ref))
    key = layer_key(image)
    data = os.path.join(cache, "data", "sha256", key)
    assert os.path.exists(data)
    # The kill lands on the first unlink of the data file, by path or by
    # name relative to a descriptor of data/sha256 (the only file there).
    proc = subprocess.run([strace, "-f", "-o", str(tmp_path / "strace.log"), "-P", data, "-P", os.path.dirname(data),
                           "-e", "trace=unlink,unlinkat", "-e", "inject=unlink,unlinkat:signal=KILL",
                           MLFS_BIN, "cache", "gc", "--max", "0"],
                          env=env, capture_output=True, text=True, timeout=CMD_TIMEOUT)
    assert proc.returncode in (-9, 137), "gc was not killed (rc %d): %s" % (proc.returncode, proc.stderr)
    state = layer_state(cache)
    assert key in state["data"] and key not in state["index"], "not the state aimed at: %r" % state
    v = verify(env)
    assert v.rc == 0, "verify after a kill inside an eviction\n" + describe(v)
    assert_export_right(env, image, tmp_path, "after")


def test_kill_between_a_layers_data_and_its_index_then_verify(images, mlfs_env, tmp_path):
    """`mlfs pull` killed (under gdb) as it starts saving a layer's index:
    the data file is already renamed into place, the index is not (the
    order layers/layer.c builds in).  `mlfs cache verify` must exit 0 and
    the image must export right.

    Why: every build passes through this moment, so every kill -9, OOM
    kill or power cut during a load can land in it."""
    gdb = _need("gdb")
    _need_symbol("mlfs_indexfile_save")
    image = images["random"]
    env = dict(mlfs_env)
    cache = env["MLFS_CACHE"]
    r = subprocess.run([gdb, "-q", "-batch", "-ex", "set pagination off", "-ex", "break mlfs_indexfile_save",
                        "-ex", "run", "-ex", "kill", "--args", MLFS_BIN, "pull", image.ref],
                       env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CMD_TIMEOUT)
    assert "hit Breakpoint 1" in r.stdout, "gdb never stopped in the index save:\n%s\n%s" % (r.stdout, r.stderr)
    key = layer_key(image)
    state = layer_state(cache)
    assert key in state["data"] and key not in state["index"], "not the state aimed at: %r" % state
    v = verify(env)
    assert v.rc == 0, "verify after a kill between data and index\n" + describe(v)
    assert_export_right(env, image, tmp_path, "after")


def test_a_command_started_meanwhile_keeps_the_index_being_written(images, mlfs_env, tmp_path):
    """`mlfs pull` stopped (gdb) just after it created its index temp file
    `index/sha256/K.tmp-XXXXXX`; meanwhile `mlfs inspect` starts, and every
    command's start removes the temp files of dead runs.  The pull is not
    dead: its temp file must stay (its writer holds it locked, as the data,
    partial and meta temp writers do), the pull must save its index, and the
    cache must verify.

    Why: mounts, pulls and exports start at any time next to a mount that
    is indexing; losing the index costs a re-download and leaves a data
    file without an index that `mlfs cache verify` calls broken."""
    gdb = _need("gdb")
    _need_symbol("mlfs_indexfile_save")
    image = images["random"]
    env = dict(mlfs_env)
    cache = env["MLFS_CACHE"]
    key = layer_key(image)
    seen = str(tmp_path / "seen")
    index_dir = os.path.join(cache, "index", "sha256")
    script = "ls %s > %s; %s inspect %s > /dev/null 2>&1; ls %s >> %s" % (
        index_dir, seen, MLFS_BIN, image.ref, index_dir, seen)
    r = subprocess.run([gdb, "-q", "-batch", "-ex", "set pagination off", "-ex", "break mlfs_indexfile_save",
                        "-ex", "run", "-ex", 'eval "break fdopen thread %d", $_thread', "-ex", "continue",
                        "-ex", "shell " + script, "-ex", "delete", "-ex", "continue",
                        "--args", MLFS_BIN, "pull", image.ref],
                       env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CMD_TIMEOUT)
    assert "hit Breakpoint 2" in r.stdout, "gdb never stopped after the temp was made:\n%s\n%s" % (
        r.stdout, r.stderr)
    with open(seen) as f:
        listing = f.read()
    assert "%s.tmp-" % key in listing, "no index temp file while stopped: %s" % listing
    assert "exited normally" in r.stdout, "the pull failed:\n%s\n%s" % (r.stdout, r.stderr)
    assert "index not saved" not in r.stderr, (
        "a command started meanwhile deleted the live index temp file\nls before/after inspect:\n%s\n%s" % (
            listing, r.stderr))
    assert key in layer_state(cache)["index"]
    v = verify(env)
    assert v.rc == 0, describe(v)
