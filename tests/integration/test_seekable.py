"""Seekable layers (eStargz, zstd:chunked) mounted from a real registry.

The images come from seekable_images.build_seekable_images() (the `seekable`
session fixture: a registry of its own).  What is checked:

  * the mounted tree (and `mlfs export`) of every seekable variant equals
    `umoci unpack` of the plain gzip source, entry by entry, mtimes too,
    and the tools' own files (TOOL_FILES) never show;
  * what crosses the wire, from the registry's access log (bytes per GET)
    and the Range headers a pass-through FaultProxy saw: a listing costs
    the footer and the TOC of each layer and nothing else; a read costs
    that file's chunks and nothing else; a second read costs nothing;
  * faults: a corrupt chunk (EIO for that file only, never cached; a pull
    of it fails and keeps it absent), a TOC
    that does not match its annotation or a registry that ignores Range
    (both: fall back to the whole blob), a registry that goes away between
    the TOC and the first read (EIO, then recovery on the same port);
  * offline remounts, `mlfs pull`, prefetch (prioritised files with no
    access at all; every chunk with -o prefetch) and two mounts sharing a
    cache.

Every expected number is derived here from the TOCs and descriptors the
registry serves (seekable_images.check_layer_blob), never hard-coded.  The
chunk "present map" is $MLFS_CACHE/chunks/sha256/<blob hex>: an 80-byte
header, then one byte per chunk of the layer's chunk table (its regular
files' chunks in TOC order, the format's own files left out), 1 = present.
"""

import copy
import errno
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

import treediff
from faultproxy import FaultProxy
from helpers import assert_mlfs_error, assert_ok
from mounts import Mounter, is_mounted
from registry import MT_OCI_MANIFEST, sha256_digest
from seekable_images import (
    A_TOC_DIGEST, A_ZSTD_POSITION, A_ZSTD_POSITION_GH, ESTARGZ_FOOTER_SIZE, TOOL_FILES,
    check_layer_blob, reference_rootfs,
)
from test_export import assert_same_tree as assert_same_export, tree_of_rootfs, tree_of_tar

WATCHDOG = 120          # a mount still up after this is killed (the test then fails, not hangs)
READ_TIMEOUT = 60
MAP_HEADER = 80         # "MLFSMAP1" + the chunk table's digest (72 bytes)
SMALL = "etc/passwd"    # a one-chunk file of the lower layer
BIG = "big/random-12m"  # a multi-chunk file of the lower layer
BIG_UPPER = "upper/random-6m"


# -- fixtures ------------------------------------------------------------------

class _Mounter(Mounter):
    def mount(self, ref, *options, **kw):
        kw.setdefault("watchdog", WATCHDOG)
        return super().mount(ref, *options, **kw)


@pytest.fixture
def mounter(mlfs_bin, mlfs_env, tmp_path):
    m = _Mounter(tmp_path, mlfs_env, binary=mlfs_bin)
    yield m
    leftovers = m.cleanup_all()
    assert not leftovers, "could not unmount %r" % leftovers


@pytest.fixture
def proxies():
    """proxies(registry) -> a started pass-through FaultProxy in front of it."""
    made = []

    def make(registry):
        p = FaultProxy(("127.0.0.1", registry.port))
        made.append(p)
        return p
    yield make
    for p in made:
        try:
            p.close()
        except OSError:
            pass


# -- ground truth ------------------------------------------------------------------

_trees = {}


def reference(seekable, name="src", platform=None):
    """(rootfs, treediff.walk of it) of `umoci unpack` of a gzip image."""
    key = (name, platform)
    if key not in _trees:
        root = reference_rootfs(seekable, seekable["reference_dir"], name=name, platform=platform)
        _trees[key] = (root, treediff.walk(root))
    return _trees[key]


def reference_bytes(seekable, rel):
    with open(os.path.join(reference(seekable)[0], rel), "rb") as f:
        return f.read()


def manifest_of(seekable, name, platform=None):
    desc = seekable["images"][name]
    return desc["platforms"][platform] if platform else desc


def _norm(name):
    name = name[2:] if name.startswith("./") else name
    return name.rstrip("/") or "."


class Layer:
    """One seekable layer as its TOC describes it, and the chunk table mlfs
    builds from it: `chunks` in TOC order (one dict per chunk: file, start,
    end (the compressed range [start, end)), zeros), the same order as the
    present map's bytes."""

    def __init__(self, registry, desc):
        with open(registry.blob_data_path(desc["digest"]), "rb") as f:
            blob = f.read()
        assert sha256_digest(blob) == desc["digest"]
        info = check_layer_blob(blob, desc)
        assert not info["problems"], info["problems"]
        self.digest, self.size, self.format = desc["digest"], desc["size"], desc["format"]
        self.toc = info["toc"]
        if self.format == "estargz":
            self.toc_offset = info["footer"]["toc_offset"]
            # The footer, then the TOC's gzip member up to the footer.
            self.toc_ranges = {(self.size - ESTARGZ_FOOTER_SIZE, self.size - 1),
                               (self.toc_offset, self.size - ESTARGZ_FOOTER_SIZE - 1)}
            data_end = self.toc_offset
        else:
            ann = desc["annotations"]
            pos = ann.get(A_ZSTD_POSITION) or ann.get(A_ZSTD_POSITION_GH)
            off, length = (int(x) for x in pos.split(":")[:2])
            assert (off, length) == (info["footer"]["offset"], info["footer"]["length"])
            self.toc_offset = off
            self.toc_ranges = {(off, off + length - 1)}   # the position annotation: one request
            data_end = off - 8                            # the TOC's skippable-frame header
        self.toc_bytes = sum(b - a + 1 for a, b in self.toc_ranges)

        entries = self.toc["entries"]
        starts = sorted({e["offset"] for e in entries
                         if e["type"] in ("reg", "chunk") and e.get("offset")} | {data_end})
        per_file = {}
        order = []
        current = None
        for e in entries:
            name = _norm(e.get("name", ""))
            if e["type"] == "reg":
                current = None
                if name in TOOL_FILES or not e.get("size"):
                    continue
                current = name
                per_file[name] = {"end_offset": e.get("endOffset"), "chunks": []}
                order.append(name)
            elif e["type"] == "chunk":
                if name != current:
                    continue
            else:
                current = None
                continue
            per_file[name]["chunks"].append(
                {"file": name, "start": e["offset"], "zeros": e.get("chunkType") == "zeros"})
        self.chunks = []
        for name in order:
            f = per_file[name]
            cs = f["chunks"]
            for i, c in enumerate(cs):
                if f["end_offset"]:      # containers/storage: the next chunk, or the file's end
                    c["end"] = cs[i + 1]["start"] if i + 1 < len(cs) else f["end_offset"]
                else:                    # eStargz, ctr-remote zstd: the next chunk of any file, or the TOC
                    c["end"] = next(s for s in starts if s > c["start"])
                c["index"] = len(self.chunks)
                self.chunks.append(c)
        self.files = {name: [c for c in self.chunks if c["file"] == name] for name in order}
        self.entries = entries

    def data_chunks(self):
        return [c for c in self.chunks if not c["zeros"]]

    def file_ranges(self, name):
        return [(c["start"], c["end"]) for c in self.files[name] if not c["zeros"]]

    def file_bytes(self, name):
        return sum(b - a for a, b in self.file_ranges(name))


_layers = {}


def layers_of(seekable, name, platform=None):
    out = []
    for d in manifest_of(seekable, name, platform)["layers"]:
        if d["format"] not in ("estargz", "zstd-chunked"):
            out.append(None)
            continue
        if d["digest"] not in _layers:
            _layers[d["digest"]] = Layer(seekable["registry"], d)
        out.append(_layers[d["digest"]])
    return out


# -- what went over the wire ----------------------------------------------------------

_ACCESS = re.compile(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP/[0-9.]+" (\d{3}) (\d+|-)')
_BLOB = re.compile(r"/blobs/(sha256:[0-9a-f]{64})")


def access_log(registry):
    """Access-log entries: dicts method, path, status, bytes (the body bytes
    the registry wrote), digest (of a blob URL, else None)."""
    with open(registry.log_path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    out = []
    for m in _ACCESS.finditer(text):
        b = _BLOB.search(m.group(2).split("?", 1)[0])
        out.append({"method": m.group(1), "path": m.group(2), "status": int(m.group(3)),
                    "bytes": 0 if m.group(4) == "-" else int(m.group(4)),
                    "digest": b.group(1) if b else None})
    return out


def settled_log(registry, since=0, quiet=0.4, timeout=5.0):
    """The access log from entry `since` on, once it stopped growing for
    `quiet` seconds (a response is logged when it completes)."""
    deadline = time.monotonic() + timeout
    n = len(access_log(registry))
    while True:
        time.sleep(quiet)
        m = len(access_log(registry))
        if m == n or time.monotonic() > deadline:
            return access_log(registry)[since:]
        n = m


def blob_gets(entries, digest=None):
    return [e for e in entries if e["method"] == "GET" and e["digest"]
            and (digest is None or e["digest"] == digest)]


def proxy_ranges(proxy, since, digest):
    """(start, end) inclusive of every Range GET the proxy passed for `digest`."""
    out = []
    for r in proxy.seen[since:]:
        if r["method"] != "GET" or not r["path"].split("?", 1)[0].endswith("/blobs/" + digest):
            continue
        rng = r["headers"].get("range")
        assert rng, "a GET of %s without Range: %r" % (digest, r)
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", rng)
        assert m, "an open or odd Range %r for %s" % (rng, digest)
        out.append((int(m.group(1)), int(m.group(2))))
    return out


def assert_fetched_once(layer, entries, reads_before_fill=False):
    """The layer was indexed from its TOC (footer and TOC ranges first), and
    its bytes crossed the wire at most once: at most one whole-blob GET (a
    fill of a mostly absent layer streams the blob), else chunk ranges.
    reads_before_fill: cold reads (a walk) fetched chunks by Range before
    the background fill they triggered streamed the blob; those may come
    twice, but each chunk at most once by Range."""
    mine = blob_gets(entries, layer.digest)
    assert [e["bytes"] for e in mine[:len(layer.toc_ranges)]] and \
        sum(e["bytes"] for e in mine[:len(layer.toc_ranges)]) == layer.toc_bytes and \
        all(e["status"] == 206 for e in mine[:len(layer.toc_ranges)]), (
            "%s: not indexed from its footer and TOC first: %r" % (layer.digest, mine[:4]))
    whole = [e for e in mine if e["status"] != 206]
    assert all(e["status"] == 200 and e["bytes"] == layer.size for e in whole) and len(whole) <= 1, (
        "%s fetched whole %d times: %r" % (layer.digest, len(whole), whole))
    ranged = sum(e["bytes"] for e in mine if e["status"] == 206) - layer.toc_bytes
    limit = sum(c["end"] - c["start"] for c in layer.data_chunks())
    if whole and not reads_before_fill:
        limit = 0
    assert ranged <= limit, "%s: %d chunk bytes by Range besides %s" % (
        layer.digest, ranged, "a whole-blob GET" if whole else "its chunks (%d)" % limit)


def inside(rng, intervals):
    """rng (inclusive) lies within the union of half-open intervals."""
    merged = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return any(a <= rng[0] and rng[1] < b for a, b in merged)


# -- the cache's present maps ------------------------------------------------------------

def present_map(env, layer):
    """The layer's present map as a list of 0/1 (None while it does not exist)."""
    path = os.path.join(env["MLFS_CACHE"], "chunks", "sha256", layer.digest.split(":", 1)[1])
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    assert data[:8] == b"MLFSMAP1", "%s: bad header %r" % (path, data[:8])
    assert len(data) == MAP_HEADER + len(layer.chunks), (
        "%s: %d bytes, want %d + one per chunk of the TOC (%d)" % (
            path, len(data), MAP_HEADER, len(layer.chunks)))
    body = list(data[MAP_HEADER:])
    assert set(body) <= {0, 1}, "%s: bytes other than 0/1" % path
    return body


def present_files(env, layer):
    """{file: number of its data chunks present} (files with any)."""
    pm = present_map(env, layer) or [0] * len(layer.chunks)
    out = {}
    for c in layer.data_chunks():
        if pm[c["index"]]:
            out[c["file"]] = out.get(c["file"], 0) + 1
    return out


def all_present(env, layer):
    pm = present_map(env, layer)
    return pm is not None and all(pm[c["index"]] for c in layer.data_chunks())


def wait_until(pred, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


# -- reading through a mount, in a child (a stuck request hangs it, not pytest) -----

_READER = r"""
import json, os, sys
drop = sys.argv[1] == "1"
out = []
for p in sys.argv[2:]:
    try:
        fd = os.open(p, os.O_RDONLY)
        try:
            if drop:  # read from the daemon again, not from the page cache
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


def read_files(paths, drop_cache=False, timeout=READ_TIMEOUT):
    """[(bytes or None, errno or None)] for each path."""
    proc = subprocess.Popen(["/usr/bin/python3", "-c", _READER, "1" if drop_cache else "0"] + list(paths),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        pytest.fail("reading %r did not return within %ss" % (list(paths), timeout))
    assert proc.returncode == 0, err.decode("utf-8", "replace")
    return [(bytes.fromhex(r["data"]), None) if r["ok"] else (None, r["errno"]) for r in json.loads(out)]


def read_one(path, **kw):
    return read_files([path], **kw)[0]


def list_tree(root, timeout=READ_TIMEOUT):
    """`ls -laR` in a child: every entry looked up and lstat'ed, nothing read."""
    r = subprocess.run(["ls", "-laR", root], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return r.stdout


def assert_no_tool_files(tree, what):
    found = sorted(p for p in tree if os.path.basename(p) in TOOL_FILES)
    assert not found, "%s shows the format's own files: %r" % (what, found)


def assert_reference_tree(seekable, root, name="src", platform=None, fields=treediff.ALL_FIELDS, what=""):
    """The mount at `root` equals umoci's unpack of `name`, entry by entry.
    A listing first: until the view is in, the root has placeholder
    attributes (test_root_attributes_right_after_mount is about those)."""
    list_tree(root)
    tree = treediff.walk(root, hash_files="sha256" in fields)
    assert_no_tool_files(tree, what or root)
    for f in TOOL_FILES:
        assert not os.path.lexists(os.path.join(root, f)), "%s: %s exists" % (what or root, f)
    treediff.assert_same_tree(reference(seekable, name, platform)[1], tree, fields=fields,
                              what=what or root)
    return tree


# -- 1. the tree ------------------------------------------------------------------------------

DIFFERENTIAL = [
    ("estargz", None, "src", None),
    ("estargz-prefetch", None, "src", None),
    ("zstdchunked", None, "src", None),
    ("cszstd", None, "src", None),
    ("mixed", None, "src", None),
    ("multi-estargz", "linux/amd64", "src-multi", "linux/amd64"),
    ("multi-estargz", "linux/arm64", "src-multi", "linux/arm64"),
]


@pytest.mark.parametrize("name,platform,ref_name,ref_platform", DIFFERENTIAL,
                         ids=[d[0] + ("-" + d[1].split("/")[1] if d[1] else "") for d in DIFFERENTIAL])
def test_tree_matches_umoci(mounter, seekable, name, platform, ref_name, ref_platform):
    opts = ["platform=" + platform] if platform else []
    m = mounter.mount(seekable["ref"](name), *opts)
    assert_reference_tree(seekable, m.mountpoint, ref_name, ref_platform,
                          what="mount of %s%s" % (name, " " + platform if platform else ""))
    if platform:
        with open(m.path("etc", "mlfs-platform")) as f:
            assert f.read().strip() == platform


def test_root_attributes_right_after_mount(mounter, seekable, proxies):
    """The first stat of the root, before anything else (the TOCs held back
    a second, so it surely comes first): with every layer seekable the TOCs
    load at mount, so the root is the image's at once, not a placeholder
    that changes under the caller once they are in."""
    proxy = proxies(seekable["registry"])
    proxy.delay(r"/blobs/sha256:", 1.0, times=10 ** 6)
    m = mounter.mount("%s/estargz:latest" % proxy.host)
    st = os.stat(m.mountpoint)
    root = reference(seekable)[1]["."]
    got = {"mode": "%04o" % (st.st_mode & 0o7777), "uid": st.st_uid, "gid": st.st_gid,
           "mtime": int(st.st_mtime)}
    assert got == {k: root[k] for k in got}, "root right after mount: %r, image: %r" % (got, root)


@pytest.mark.parametrize("name", ["estargz", "cszstd"])
def test_export_matches_umoci(mlfs, seekable, tmp_path, name):
    out = str(tmp_path / "export.tar")
    assert_ok(mlfs("export", seekable["ref"](name), "-o", out), allow_warnings=True)
    with open(out, "rb") as f:
        got = tree_of_tar(f.read())
    assert_no_tool_files(got, "export of " + name)
    assert_same_export(got, tree_of_rootfs(reference(seekable)[0]))


# -- 2. bytes on the wire -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["estargz", "zstdchunked", "cszstd"])
def test_listing_and_reads_fetch_only_what_they_need(mounter, mlfs_env, seekable, proxies, name):
    reg = seekable["registry"]
    proxy = proxies(reg)
    layers = layers_of(seekable, name)
    desc = manifest_of(seekable, name)
    digests = {l.digest for l in layers}

    # A fresh cache, a listing: the footer and the TOC of each layer, by Range.
    log0, seen0 = len(access_log(reg)), len(proxy.seen)
    m = mounter.mount("%s/%s:latest" % (proxy.host, name))
    listing = list_tree(m.mountpoint)
    assert "random-12m" in listing
    entries = settled_log(reg, log0)
    gets = blob_gets(entries)
    assert {e["digest"] for e in gets} <= digests | {desc["config_digest"]}, gets
    total = 0
    for l in layers:
        mine = blob_gets(entries, l.digest)
        assert all(e["status"] == 206 for e in mine), "whole-blob GET of %s: %r" % (l.digest, mine)
        assert len(mine) == len(l.toc_ranges), (l.digest, mine)
        assert sum(e["bytes"] for e in mine) == l.toc_bytes, (l.digest, mine, l.toc_bytes)
        assert set(proxy_ranges(proxy, seen0, l.digest)) == l.toc_ranges
        total += l.toc_bytes
    compressed = sum(l.size for l in layers)
    assert total < 0.03 * compressed, (total, compressed)
    for l in layers:
        assert present_files(mlfs_env, l) == {}, "chunks fetched by a listing"

    lower = layers[0]
    want_present = {}
    for rel in (SMALL, BIG):
        log1, seen1 = len(access_log(reg)), len(proxy.seen)
        data, err = read_one(m.path(rel))
        assert err is None and data == reference_bytes(seekable, rel), (rel, err)
        entries = settled_log(reg, log1)
        assert not blob_gets(entries, layers[1].digest), "reading %s fetched from the other layer" % rel
        mine = blob_gets(entries, lower.digest)
        assert mine and all(e["status"] == 206 for e in mine), (rel, mine)
        got = sum(e["bytes"] for e in mine)
        ranges = lower.file_ranges(rel)
        first = ranges[0][1] - ranges[0][0]
        assert first <= got <= lower.file_bytes(rel), (
            "%s: %d blob bytes fetched; its chunks span %d (first %d)" % (rel, got, lower.file_bytes(rel), first))
        asked = proxy_ranges(proxy, seen1, lower.digest)
        assert sum(b - a + 1 for a, b in asked) == got
        stray = [r for r in asked if not inside(r, ranges)]
        assert not stray, "%s: ranges outside its own chunks %r (its chunks: %r...)" % (rel, stray, ranges[:4])
        # Exactly this file's chunks are present now (and the earlier ones).
        want_present[rel] = len(lower.file_ranges(rel))
        assert present_files(mlfs_env, lower) == want_present
        assert present_files(mlfs_env, layers[1]) == {}

    # Read again, past the page cache: from the cache, nothing fetched.
    log2 = len(access_log(reg))
    for rel, (data, err) in zip((SMALL, BIG), read_files([m.path(SMALL), m.path(BIG)], drop_cache=True)):
        assert err is None and data == reference_bytes(seekable, rel), (rel, err)
    assert blob_gets(settled_log(reg, log2)) == []


# -- 3. faults ---------------------------------------------------------------------------------------

def test_corrupt_chunk_gives_eio_for_that_file_only(mounter, mlfs_env, seekable, seekable_clone):
    reg = seekable_clone()
    lower, upper = layers_of(seekable, "estargz")
    bad = lower.files[BIG][1]                      # the big file's second chunk
    where = bad["start"] + (bad["end"] - bad["start"]) // 2
    reg.corrupt_blob(lower.digest, where)
    m = mounter.mount(reg.host + "/estargz:latest", "timeout=10", foreground=True)

    data, err = read_one(m.path(BIG))
    assert data is None and err == errno.EIO, "a corrupt chunk was served (errno %r)" % err
    assert present_map(mlfs_env, lower)[bad["index"]] == 0
    assert wait_until(lambda: "corrupt" in m.stderr(), 10), m.stderr()
    others = [SMALL, "many/f001", "deep/a/b/c/d/e/f/g/leaf.txt", BIG_UPPER, "upper/small"]
    for rel, (data, err) in zip(others, read_files([m.path(p) for p in others])):
        assert err is None and data == reference_bytes(seekable, rel), (rel, err)
    # Asked again: fetched again, refused again; never served from the cache.
    data, err = read_one(m.path(BIG), drop_cache=True)
    assert data is None and err == errno.EIO, err
    assert present_map(mlfs_env, lower)[bad["index"]] == 0
    assert m.proc.poll() is None and is_mounted(m.mountpoint), m.stderr()

    reg.corrupt_blob(lower.digest, where)          # flips the byte back
    data, err = read_one(m.path(BIG), drop_cache=True)
    assert err is None and data == reference_bytes(seekable, BIG), err
    assert present_map(mlfs_env, lower)[bad["index"]] == 1


def test_pull_of_a_corrupt_chunk_fails_and_keeps_it_absent(mlfs, mounter, mlfs_env, seekable, seekable_clone):
    """`mlfs pull` fills a fresh layer with one stream of its blob: a chunk
    that does not match its digest fails the pull (one error line, exit 1),
    is not marked present; the chunks verified before it are kept.  Once the
    registry serves the right bytes, a pull completes and an offline mount
    reads the file."""
    reg = seekable_clone()
    lower = layers_of(seekable, "estargz")[0]
    bad = lower.files[BIG][1]
    where = bad["start"] + (bad["end"] - bad["start"]) // 2
    reg.corrupt_blob(lower.digest, where)
    ref = reg.host + "/estargz:latest"
    assert_mlfs_error(mlfs("pull", ref), "corrupt")
    pm = present_map(mlfs_env, lower)
    assert pm[bad["index"]] == 0
    before = [c for c in lower.data_chunks() if c["start"] < bad["start"]]
    assert [c["file"] for c in before if not pm[c["index"]]] == [], "verified chunks before it were dropped"

    reg.corrupt_blob(lower.digest, where)          # flips the byte back
    assert_ok(mlfs("pull", ref))
    assert all(all_present(mlfs_env, l) for l in layers_of(seekable, "estargz"))
    m = mounter.mount(ref, "offline", "timeout=10")
    data, err = read_one(m.path(BIG))
    assert err is None and data == reference_bytes(seekable, BIG), err


def test_toc_digest_mismatch_falls_back_to_whole_blob(mounter, seekable):
    reg, client = seekable["registry"], seekable["client"]
    desc = manifest_of(seekable, "estargz")
    manifest = copy.deepcopy(desc["manifest"])
    top = manifest["layers"][1]
    top["annotations"][A_TOC_DIGEST] = sha256_digest(b"not the TOC")
    client.put_manifest("estargz", "bad-toc", json.dumps(manifest, indent=2).encode(), MT_OCI_MANIFEST)
    log0 = len(access_log(reg))
    m = mounter.mount(seekable["ref"]("estargz", "bad-toc"), foreground=True)
    assert_reference_tree(seekable, m.mountpoint, what="mount of estargz:bad-toc")
    assert wait_until(lambda: "fetching it whole instead" in m.stderr(), 10), m.stderr()
    line = next(l for l in m.stderr().splitlines() if "fetching it whole instead" in l)
    assert top["digest"] in line and "digest" in line.replace(top["digest"], ""), line
    entries = settled_log(reg, log0)
    whole = [e for e in blob_gets(entries, top["digest"]) if e["status"] == 200]
    assert [e["bytes"] for e in whole] == [top["size"]], blob_gets(entries, top["digest"])
    # The layer with a good TOC was indexed from it (a walk that reads every
    # file may then fill it with one whole-blob stream, but only once).
    assert_fetched_once(layers_of(seekable, "estargz")[0], entries, reads_before_fill=True)


def test_registry_ignoring_range_falls_back_to_whole_blobs(mounter, seekable, proxies):
    reg = seekable["registry"]
    proxy = proxies(reg)
    proxy.ignore_range()
    layers = manifest_of(seekable, "estargz")["layers"]
    m = mounter.mount("%s/estargz:latest" % proxy.host, foreground=True)
    assert_reference_tree(seekable, m.mountpoint, what="mount of estargz without Range support")
    assert wait_until(lambda: "fetching it whole instead" in m.stderr(), 10), m.stderr()
    ranged, whole = 0, {}
    for r in proxy.seen:
        d = next((l["digest"] for l in layers if r["path"].split("?", 1)[0].endswith("/blobs/" + l["digest"])), None)
        if r["method"] != "GET" or d is None:
            continue
        if "range" in r["headers"]:
            ranged += 1
        else:
            whole[d] = whole.get(d, 0) + 1
    assert whole == {l["digest"]: 1 for l in layers}, whole
    assert ranged <= len(layers), "%d Range attempts for %d layers" % (ranged, len(layers))


def test_registry_gone_between_toc_and_read(mounter, seekable, seekable_clone):
    timeout = 5
    reg = seekable_clone()
    lower = layers_of(seekable, "estargz")[0]
    m = mounter.mount(reg.host + "/estargz:latest", "timeout=%d" % timeout, foreground=True)
    list_tree(m.mountpoint)
    assert len(blob_gets(settled_log(reg), lower.digest)) == len(lower.toc_ranges)
    reg.stop()
    t0 = time.monotonic()
    data, err = read_one(m.path(SMALL))
    elapsed = time.monotonic() - t0
    assert data is None and err == errno.EIO, (data, err)
    # Connection refused, retried with backoff (0.25+0.5+1+2 s): done before the timeout.
    assert elapsed < timeout + 1, "EIO took %.1fs with -o timeout=%d\n%s" % (elapsed, timeout, m.stderr())
    assert wait_until(lambda: SMALL in m.stderr(), 5), m.stderr()
    assert m.proc.poll() is None and is_mounted(m.mountpoint), m.stderr()

    reg.restart()
    data, err = read_one(m.path(SMALL))
    assert err is None and data == reference_bytes(seekable, SMALL), (err, m.stderr())
    data, err = read_one(m.path(BIG))
    assert err is None and data == reference_bytes(seekable, BIG), (err, m.stderr())


# -- 4, 5. offline, pull ---------------------------------------------------------------------------

def test_offline_remount_serves_what_was_read(mounter, mlfs_env, seekable, proxies):
    reg = seekable["registry"]
    proxy = proxies(reg)
    ref = "%s/estargz:latest" % proxy.host
    read_before = [SMALL, BIG, "upper/small"]
    m = mounter.mount(ref)
    list_tree(m.mountpoint)
    for rel, (data, err) in zip(read_before, read_files([m.path(p) for p in read_before])):
        assert err is None and data == reference_bytes(seekable, rel), (rel, err)
    m.unmount()
    proxy.close()                       # no registry behind that name any more
    log0 = len(access_log(reg))
    m2 = mounter.mount(ref, "offline", "timeout=10")
    no_hash = tuple(f for f in treediff.ALL_FIELDS if f != "sha256")
    assert_reference_tree(seekable, m2.mountpoint, fields=no_hash, what="offline remount")
    for rel, (data, err) in zip(read_before, read_files([m2.path(p) for p in read_before])):
        assert err is None and data == reference_bytes(seekable, rel), (rel, err)
    for rel in ("many/f007", BIG_UPPER):
        data, err = read_one(m2.path(rel))
        assert data is None and err == errno.EIO, "%s never read, offline: %r" % (rel, err)
    assert settled_log(reg, log0) == [], "an offline mount reached the registry"


def test_pull_then_offline_mount(mlfs, mounter, mlfs_env, seekable):
    reg = seekable["registry"]
    layers = layers_of(seekable, "estargz")
    log0 = len(access_log(reg))
    assert_ok(mlfs("pull", seekable["ref"]("estargz")))
    entries = settled_log(reg, log0)
    for l in layers:
        assert all_present(mlfs_env, l), "pull left chunks of %s absent" % l.digest
        assert_fetched_once(l, entries)
    log1 = len(access_log(reg))
    m = mounter.mount(seekable["ref"]("estargz"), "offline", "timeout=10")
    assert_reference_tree(seekable, m.mountpoint, what="offline mount after pull")
    assert settled_log(reg, log1) == []


def test_seekable_layers_in_the_cache_commands(mlfs, mounter, mlfs_env, seekable):
    """Seekable layers are cache units like any other, keyed by blob digest:
    `cache ls` shows them (state "chunks"), `du` counts their present maps,
    `verify` checks the maps' layouts; a live mount holds them against
    `gc --max 0`, which removes index, map and data once it has ended; a
    remount then fetches again and reads the right bytes."""
    layers = layers_of(seekable, "estargz")
    assert_ok(mlfs("pull", seekable["ref"]("estargz")))
    r = mlfs("cache", "ls", "--json")
    assert_ok(r)
    image = [i for i in json.loads(r.stdout) if i["reference"] == seekable["ref"]("estargz")]
    assert len(image) == 1, r.stdout
    assert [(l["state"], l["seekable"]) for l in image[0]["layers"]] == [("chunks", True)] * len(layers), r.stdout
    du = json.loads(mlfs("cache", "du", "--json").stdout)
    assert du["chunks"] > 0 and du["blobs"] == 0, du
    r = mlfs("cache", "verify")
    assert r.rc == 0 and "0 broken" in r.stdout, r.stdout + r.stderr
    cache = mlfs_env["MLFS_CACHE"]

    def present(kind, l):
        return os.path.exists(os.path.join(cache, kind, "sha256", l.digest.split(":", 1)[1]))

    m = mounter.mount(seekable["ref"]("estargz"))
    data, err = read_one(m.path(SMALL))
    assert err is None and data == reference_bytes(seekable, SMALL)
    r = mlfs("cache", "gc", "--max", "0")
    assert_ok(r)
    assert "in use" in r.stdout, r.stdout
    assert all(present("data", l) and present("chunks", l) and present("index", l) for l in layers)
    data, err = read_one(m.path(BIG))
    assert err is None and data == reference_bytes(seekable, BIG)
    m.unmount()
    r = mlfs("cache", "gc", "--max", "0")
    assert_ok(r)
    assert not any(present(k, l) for l in layers for k in ("data", "chunks", "index")), r.stdout
    m = mounter.mount(seekable["ref"]("estargz"))
    assert_reference_tree(seekable, m.mountpoint, what="remount after eviction")


# -- 6. prefetch --------------------------------------------------------------------------------------

def test_prioritised_files_prefetched_without_access(mounter, mlfs_env, seekable):
    reg = seekable["registry"]
    layers = layers_of(seekable, "estargz-prefetch")
    # Per layer: the files before .prefetch.landmark in the TOC (none where it comes first).
    prioritised = []
    for l in layers:
        names = [_norm(e["name"]) for e in l.entries if e["type"] != "chunk"]
        cut = names.index(".prefetch.landmark") if ".prefetch.landmark" in names else 0
        prioritised.append({n for n in names[:cut] if n in l.files})
    assert prioritised[0] >= set(seekable["prefetch_record"]) - {"hard/original"} | {"hard/link"}
    log0 = len(access_log(reg))
    m = mounter.mount(seekable["ref"]("estargz-prefetch"))   # and nothing touches it
    want = [{f: len(l.file_ranges(f)) for f in p} for l, p in zip(layers, prioritised)]
    ok = wait_until(lambda: [present_files(mlfs_env, l) for l in layers] == want, 20)
    assert ok, "present after 20 s: %r, want %r" % ([present_files(mlfs_env, l) for l in layers], want)
    time.sleep(0.5)     # nothing more comes
    assert [present_files(mlfs_env, l) for l in layers] == want
    entries = settled_log(reg, log0)
    for l, p in zip(layers, prioritised):
        mine = blob_gets(entries, l.digest)
        assert all(e["status"] == 206 for e in mine), mine
        chunk_bytes = sum(e["bytes"] for e in mine) - l.toc_bytes
        need = sum(l.file_bytes(f) for f in p)
        rest = [c["start"] for c in l.data_chunks() if c["file"] not in p]
        firsts = [c["start"] for c in l.data_chunks() if c["file"] in p]
        most = (min(rest + [l.toc_offset]) - min(firsts)) if firsts else 0
        assert need <= chunk_bytes <= most, (l.digest, chunk_bytes, need, most)
    assert is_mounted(m.mountpoint)


def test_prefetch_option_fetches_everything(mounter, mlfs_env, seekable):
    reg = seekable["registry"]
    layers = layers_of(seekable, "estargz")
    ref = seekable["ref"]("estargz")
    m = mounter.mount(ref, "prefetch", foreground=True)
    assert wait_until(lambda: all(all_present(mlfs_env, l) for l in layers), 30), (
        [present_files(mlfs_env, l) for l in layers], m.stderr())
    assert wait_until(lambda: "prefetch done" in m.stderr(), 10), m.stderr()
    m.unmount()
    log0 = len(access_log(reg))
    m2 = mounter.mount(ref, "offline", "timeout=10")
    assert_reference_tree(seekable, m2.mountpoint, what="offline remount after -o prefetch")
    assert settled_log(reg, log0) == []


# -- 7. one cache, two mounts ----------------------------------------------------------------------------

def test_two_mounts_share_the_cache(mounter, mlfs_env, seekable):
    layers = layers_of(seekable, "estargz")
    ref = seekable["ref"]("estargz")
    mounts = [mounter.mount(ref), mounter.mount(ref)]
    results = {}

    def reader(i, m):
        results[i] = read_files([m.path(BIG), m.path(BIG_UPPER), m.path(SMALL)])
    threads = [threading.Thread(target=reader, args=(i, m), daemon=True) for i, m in enumerate(mounts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=2 * READ_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "readers did not finish"
    for i in range(len(mounts)):
        for rel, (data, err) in zip((BIG, BIG_UPPER, SMALL), results[i]):
            assert err is None and data == reference_bytes(seekable, rel), (i, rel, err)
    assert present_files(mlfs_env, layers[0]) == {BIG: len(layers[0].file_ranges(BIG)),
                                                   SMALL: len(layers[0].file_ranges(SMALL))}
    assert present_files(mlfs_env, layers[1]) == {BIG_UPPER: len(layers[1].file_ranges(BIG_UPPER))}
