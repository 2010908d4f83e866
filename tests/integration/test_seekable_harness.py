"""The seekable-layer fixtures themselves (seekable_images.py): what ctr-remote
and skopeo pushed, checked in Python.  No mlfs.

    pytest-3 -q -m harness tests/integration/test_seekable_harness.py

Packages: stargz-snapshotter containerd zstd (plus the suite's usual ones).
"""

import io
import os
import tarfile
import time

import pytest

import treediff
from registry import MT_OCI_INDEX, MT_OCI_MANIFEST, RegistryClient, sha256_digest
from seekable_images import (
    A_TOC_DIGEST, A_UNCOMPRESSED_SIZE, A_ZSTD_CHECKSUM, A_ZSTD_POSITION, BIG_LOWER, BIG_UPPER,
    CHUNK, MT_OCI_LAYER_GZIP, MT_OCI_LAYER_ZSTD, TOOL_FILES, build_seekable_images,
    check_layer_blob, chunks_of, decompress_layer, reference_rootfs, verify_chunks,
)

pytestmark = pytest.mark.harness

ESTARGZ_KEYS = {A_TOC_DIGEST, A_UNCOMPRESSED_SIZE}
CTR_ZSTD_KEYS = {A_TOC_DIGEST, A_UNCOMPRESSED_SIZE, A_ZSTD_CHECKSUM, A_ZSTD_POSITION}
CS_ZSTD_KEYS = {A_ZSTD_CHECKSUM, A_ZSTD_POSITION}


# A session fixture that can move to conftest.py as is (it only needs
# plain_registry and session_dir from there).
@pytest.fixture(scope="session")
def seekable(plain_registry, session_dir):
    """build_seekable_images() against the plain registry, once per session."""
    images = build_seekable_images(plain_registry, os.path.join(session_dir, "seekable-build"))
    images["registry"] = plain_registry
    images["client"] = RegistryClient(plain_registry.url)
    images["blobs"] = {}
    return images


def _blob(seekable, repo, digest):
    key = (repo, digest)
    if key not in seekable["blobs"]:
        data = seekable["client"].get_blob(repo, digest)
        assert sha256_digest(data) == digest
        seekable["blobs"][key] = data
    return seekable["blobs"][key]


def _manifests(seekable):
    """(image name, platform or None, manifest description) for every manifest."""
    for name, desc in seekable["images"].items():
        if "platforms" in desc:
            for plat, m in desc["platforms"].items():
                yield name, plat, m
        else:
            yield name, None, desc


def _tar_members(raw):
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        out = []
        for m in tar.getmembers():
            data = tar.extractfile(m).read() if m.isreg() else None
            out.append((m, data))
        return out


def _norm(name):
    name = name[2:] if name.startswith("./") else name
    return name.rstrip("/") or "."


# -- the build ------------------------------------------------------------------

def test_build_is_fast_and_leaves_nothing_running(seekable):
    assert seekable["seconds"] < 60, "build took %.1f s" % seekable["seconds"]
    leftovers = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"mlfs-ctd-" in cmd:
            leftovers.append((pid, cmd))
    assert not leftovers, "containerd still running: %r" % leftovers
    assert not [d for d in os.listdir("/tmp") if d.startswith("mlfs-ctd-")]


def test_every_image_pushed(seekable):
    imgs = seekable["images"]
    assert set(imgs) == {"src", "estargz", "estargz-prefetch", "zstdchunked", "cszstd", "mixed",
                         "src-multi", "multi-estargz"}
    host = seekable["host"]
    for name, desc in imgs.items():
        assert desc["ref"] == "%s/%s:latest" % (host, name)
        if name in ("src-multi", "multi-estargz"):
            assert desc["media_type"] == MT_OCI_INDEX
            assert sorted(desc["platforms"]) == ["linux/amd64", "linux/arm64"]
        else:
            assert desc["media_type"] == MT_OCI_MANIFEST
            assert len(desc["layers"]) == 2


# -- annotations per tool ----------------------------------------------------------

@pytest.mark.parametrize("name,formats,keys", [
    ("src", ["gzip", "gzip"], [set(), set()]),
    ("estargz", ["estargz"] * 2, [ESTARGZ_KEYS] * 2),
    ("estargz-prefetch", ["estargz"] * 2, [ESTARGZ_KEYS] * 2),
    ("zstdchunked", ["zstd-chunked"] * 2, [CTR_ZSTD_KEYS] * 2),
    ("cszstd", ["zstd-chunked"] * 2, [CS_ZSTD_KEYS] * 2),
    ("mixed", ["gzip", "estargz"], [set(), ESTARGZ_KEYS]),
    ("src-multi", ["gzip"] * 2, [set(), set()]),
    ("multi-estargz", ["estargz"] * 2, [ESTARGZ_KEYS] * 2),
])
def test_layer_annotations(seekable, name, formats, keys):
    desc = seekable["images"][name]
    manifests = desc["platforms"].values() if "platforms" in desc else [desc]
    for m in manifests:
        assert [l["format"] for l in m["layers"]] == formats
        assert [set(l["annotations"]) for l in m["layers"]] == keys
        for l in m["layers"]:
            want = MT_OCI_LAYER_ZSTD if l["format"].startswith("zstd") else MT_OCI_LAYER_GZIP
            assert l["media_type"] == want
            # The blob really is what the media type says.
            head = _blob(seekable, m["repo"], l["digest"])[:4]
            if want == MT_OCI_LAYER_GZIP:
                assert head[:2] == b"\x1f\x8b"
            else:
                assert head == b"\x28\xb5\x2f\xfd"


def test_mixed_is_made_of_src_and_estargz_blobs(seekable):
    imgs = seekable["images"]
    mixed, src, esgz = imgs["mixed"], imgs["src"], imgs["estargz"]
    assert mixed["layers"][0]["digest"] == src["layers"][0]["digest"]
    assert mixed["layers"][1]["digest"] == esgz["layers"][1]["digest"]
    assert mixed["layers"][1]["annotations"] == esgz["layers"][1]["annotations"]
    assert mixed["config"]["rootfs"]["diff_ids"] == [src["layers"][0]["diff_id"],
                                                     esgz["layers"][1]["diff_id"]]


# -- the blobs: footers, TOCs, chunks --------------------------------------------------

def _seekable_layers(seekable):
    for name, plat, m in _manifests(seekable):
        for i, l in enumerate(m["layers"]):
            if l["format"] in ("estargz", "zstd-chunked"):
                yield name, plat, i, m, l


def test_footers_and_toc_digests_verify(seekable):
    seen = 0
    for name, plat, i, m, l in _seekable_layers(seekable):
        blob = _blob(seekable, m["repo"], l["digest"])
        info = check_layer_blob(blob, l)
        assert not info["problems"], (name, plat, i, info["problems"])
        if l["format"] == "zstd-chunked":
            assert info["footer"]["data_size"] == 40 and info["footer"]["type"] == 1
            assert info["footer"]["offset"] + info["footer"]["length"] == len(blob) - 48
        ann = l["annotations"]
        # Which digest is which (see the module docstring of seekable_images).
        if A_TOC_DIGEST in ann:
            assert ann[A_TOC_DIGEST] == info["toc_sha256"]
        if A_ZSTD_CHECKSUM in ann:
            assert ann[A_ZSTD_CHECKSUM] == info["toc_compressed_sha256"]
        seen += 1
    assert seen == 13   # 2 each: estargz, estargz-prefetch, zstdchunked, cszstd; 1 mixed; 4 multi-estargz


def test_chunks_decompress_alone(seekable):
    for name, plat, i, m, l in _seekable_layers(seekable):
        blob = _blob(seekable, m["repo"], l["digest"])
        info = check_layer_blob(blob, l)
        fmt = "estargz" if l["format"] == "estargz" else "zstd"
        assert verify_chunks(blob, fmt, info["toc"]) == [], (name, plat, i)


def test_toc_matches_the_tar_stream(seekable):
    """Every tar entry (but the TOC itself) is in the TOC, in order, with the
    same type, size, mode, owner, link target, xattrs, whole-second mtime and digest."""
    types = {tarfile.DIRTYPE: "dir", tarfile.REGTYPE: "reg", tarfile.AREGTYPE: "reg",
             tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char",
             tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}
    for name, plat, i, m, l in _seekable_layers(seekable):
        blob = _blob(seekable, m["repo"], l["digest"])
        toc = check_layer_blob(blob, l)["toc"]
        raw = decompress_layer(blob, l)
        if A_UNCOMPRESSED_SIZE in l["annotations"]:
            assert int(l["annotations"][A_UNCOMPRESSED_SIZE]) == len(raw)
        members = [(t, d) for t, d in _tar_members(raw) if t.name != "stargz.index.json"]
        entries = [e for e in toc["entries"] if e["type"] != "chunk"]
        assert [_norm(t.name) for t, _ in members] == [_norm(e["name"]) for e in entries], (name, i)
        for (t, data), e in zip(members, entries):
            where = (name, plat, i, t.name)
            assert types[t.type] == e["type"], where
            if e["name"] in TOOL_FILES:
                continue
            assert e["mode"] == t.mode, where
            assert e.get("uid", 0) == t.uid and e.get("gid", 0) == t.gid, where
            assert e["modtime"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t.mtime)), where
            assert t.mtime == int(t.mtime), where     # the fixture's promise: whole seconds
            if t.issym() or t.islnk():
                assert e["linkName"] == t.linkname, where
            if t.ischr() or t.isblk():
                assert (e["devMajor"], e["devMinor"]) == (t.devmajor, t.devminor), where
            xattrs = {k[len("SCHILY.xattr."):] for k in t.pax_headers if k.startswith("SCHILY.xattr.")}
            assert set(e.get("xattrs", {})) == xattrs, where
            if t.isreg():
                assert e.get("size", 0) == t.size, where
                if t.size:
                    assert e["digest"] == sha256_digest(data), where


def test_chunk_layout(seekable):
    """eStargz/ctr-zstd cut big files in 4 MiB chunks (the last one without
    chunkSize); skopeo uses content-defined chunks that cover the file."""
    for name, plat, i, m, l in _seekable_layers(seekable):
        if name not in ("estargz", "zstdchunked", "cszstd"):
            continue
        blob = _blob(seekable, m["repo"], l["digest"])
        toc = check_layer_blob(blob, l)["toc"]
        big = "big/random-12m" if i == 0 else "upper/random-6m"
        size = BIG_LOWER if i == 0 else BIG_UPPER
        chunks = chunks_of(toc)[big]
        assert sum(c["chunk_size"] for c in chunks) == size
        assert [c["chunk_offset"] for c in chunks] == sorted(c["chunk_offset"] for c in chunks)
        if name == "cszstd":
            assert len(chunks) > 10
            assert all("chunkSize" in c["entry"] for c in chunks)
        else:
            assert [c["chunk_offset"] for c in chunks] == list(range(0, size, CHUNK))
            assert "chunkSize" not in chunks[-1]["entry"]


def test_landmarks(seekable):
    imgs = seekable["images"]
    for i in (0, 1):
        for name in ("estargz", "zstdchunked"):
            toc = check_layer_blob(_blob(seekable, name, imgs[name]["layers"][i]["digest"]),
                                   imgs[name]["layers"][i])["toc"]
            assert toc["entries"][0]["name"] == ".no.prefetch.landmark"
        toc = check_layer_blob(_blob(seekable, "cszstd", imgs["cszstd"]["layers"][i]["digest"]),
                               imgs["cszstd"]["layers"][i])["toc"]
        assert not [e for e in toc["entries"] if e["name"] in TOOL_FILES]
    # --estargz-record-in: the recorded files first, then .prefetch.landmark.
    l = imgs["estargz-prefetch"]["layers"][0]
    toc = check_layer_blob(_blob(seekable, "estargz-prefetch", l["digest"]), l)["toc"]
    names = [e["name"] for e in toc["entries"] if e["type"] != "chunk"]
    mark = names.index(".prefetch.landmark")
    assert ".no.prefetch.landmark" not in names
    for p in seekable["prefetch_record"] + ["hard/link"]:    # the hardlink's target moves too
        assert names.index(p) < mark, p
    assert names.index("hard/link") < names.index("hard/original")


def test_checks_catch_corruption(seekable):
    """The checkers above are not vacuous."""
    imgs = seekable["images"]
    for name in ("estargz", "zstdchunked", "cszstd"):
        l = imgs[name]["layers"][1]
        blob = _blob(seekable, name, l["digest"])
        bad = dict(l, annotations={k: ("sha256:" + "0" * 64 if "digest" in k or "checksum" in k else v)
                                   for k, v in l["annotations"].items()})
        assert check_layer_blob(blob, bad)["problems"], name
        with pytest.raises(ValueError):
            check_layer_blob(blob[:-1] + bytes([blob[-1] ^ 1]), l)
        toc = check_layer_blob(blob, l)["toc"]
        big = next(e for e in toc["entries"] if e["name"] == "upper/random-6m" and "offset" in e)
        pos = big["offset"] + 100
        flipped = blob[:pos] + bytes([blob[pos] ^ 0xFF]) + blob[pos + 1:]
        fmt = "estargz" if name == "estargz" else "zstd"
        try:
            assert verify_chunks(flipped, fmt, toc), name
        except RuntimeError:
            pass    # zstd may refuse the frame outright: caught too


def test_diff_ids(seekable):
    """ctr-remote writes true diff_ids; skopeo's zstd:chunked keeps the source
    config, stale for the tarfile-written upper layer."""
    for name, plat, m in _manifests(seekable):
        for i, l in enumerate(m["layers"]):
            raw = decompress_layer(_blob(seekable, m["repo"], l["digest"]), l)
            match = sha256_digest(raw) == l["diff_id"]
            if name == "cszstd" and i == 1:
                assert not match, "skopeo now rewrites diff_ids: update the notes"
            else:
                assert match, (name, plat, i)
    imgs = seekable["images"]
    assert imgs["cszstd"]["config_digest"] == imgs["src"]["config_digest"]


# -- the source trees ------------------------------------------------------------------

def test_source_layers_have_every_feature(seekable):
    src = seekable["images"]["src"]
    lower = {_norm(t.name): (t, d) for t, d in
             _tar_members(decompress_layer(_blob(seekable, "src", src["layers"][0]["digest"]),
                                           src["layers"][0]))}
    upper = {_norm(t.name): (t, d) for t, d in
             _tar_members(decompress_layer(_blob(seekable, "src", src["layers"][1]["digest"]),
                                           src["layers"][1]))}
    assert len([n for n in lower if n.startswith("many/")]) == 200
    assert lower["big/random-12m"][0].size == BIG_LOWER
    assert upper["upper/random-6m"][0].size == BIG_UPPER
    assert lower["empty/empty-file"][0].size == 0 and lower["empty/dir"][0].isdir()
    assert lower["links/abs"][0].linkname == "/etc/hostname"
    assert lower["links/rel"][0].linkname == "../etc/hostname"
    # umoci writes the pair in name order: hard/link is the file, hard/original the link.
    assert lower["hard/original"][0].islnk() and lower["hard/original"][0].linkname == "hard/link"
    assert lower["xattr/file"][0].pax_headers["SCHILY.xattr.user.mlfs.text"] == "hello"
    assert lower["modes/setuid"][0].mode == 0o4755
    assert lower["modes/owned"][0].uid == 1234 and lower["modes/owned"][0].gid == 5678
    assert lower["special/fifo"][0].isfifo() and lower["special/null"][0].ischr()
    assert {"gone/.wh.whiteout-me", ".wh.gone-dir", "opaque/.wh..wh..opq"} <= set(upper)
    for t, _ in list(lower.values()) + list(upper.values()):
        assert t.mtime == int(t.mtime), t.name


def test_reference_rootfs(seekable, session_dir):
    """umoci's unpack of src: whiteouts applied; estargz unpacks to the same
    tree plus the tool's own files."""
    work = os.path.join(session_dir, "seekable-ref")
    root = reference_rootfs(seekable, work)
    for gone in ("gone/whiteout-me", "gone-dir", "opaque/old", "opaque/sub"):
        assert not os.path.lexists(os.path.join(root, gone)), gone
    for there in ("gone/stays", "opaque/new", "upper/hl", "big/random-12m", "special/fifo"):
        assert os.path.lexists(os.path.join(root, there)), there
    with open(os.path.join(root, "etc/hostname")) as f:
        assert f.read() == "mlfs-seekable-upper\n"
    assert os.getxattr(os.path.join(root, "xattr/file"), "user.mlfs.bin") == b"\x00\x01\xff"

    esgz = reference_rootfs(seekable, work, name="estargz")
    expected = treediff.walk(root)
    actual = treediff.walk(esgz)
    extra = [p for p in TOOL_FILES if p in actual]
    assert ".no.prefetch.landmark" in extra and "stargz.index.json" in extra
    treediff.assert_same_tree(expected, actual, fields=treediff.ALL_FIELDS, ignore_paths=extra,
                              what="umoci unpack of estargz:latest")


def test_multi_platform_busybox(seekable):
    machine = {"amd64": 62, "arm64": 183}
    for name in ("src-multi", "multi-estargz"):
        for plat, m in seekable["images"][name]["platforms"].items():
            arch = plat.split("/")[1]
            assert m["config"]["architecture"] == arch
            bottom = {_norm(t.name): d for t, d in
                      _tar_members(decompress_layer(_blob(seekable, name, m["layers"][0]["digest"]),
                                                    m["layers"][0]))}
            elf = bottom["bin/busybox"]
            assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == machine[arch]
