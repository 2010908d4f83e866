"""Seekable-layer test images (eStargz, zstd:chunked), built by the real tools.

Debian 12 packages this needs (beyond the suite's docker-registry umoci
skopeo python3-pytest python3-cryptography):

    stargz-snapshotter   /usr/bin/ctr-remote (image convert --estargz / --zstdchunked)
    containerd           /usr/bin/containerd (ctr-remote needs a content store)
    zstd                 /usr/bin/zstd (zstd:chunked TOCs and chunks, here and in the tests)
    dpkg (dpkg-deb), apt (busybox-static:amd64 / :arm64 .debs, cached like
                         contrib/demo-image.sh does in MLFS_DEB_CACHE)

Python: standard library only (runs under Debian's /usr/bin/python3).

`build_seekable_images(registry, workdir)` builds, against a running harness
`Registry`, and returns a description (see its docstring) of:

    src:latest             plain gzip, 2 layers (umoci repack + a tarfile layer
                           added with `umoci raw add-layer`)
    estargz:latest         ctr-remote image convert --estargz --oci
    estargz-prefetch:latest  the same with --estargz-record-in (prioritised files
                           first, then .prefetch.landmark)
    zstdchunked:latest     ctr-remote image convert --zstdchunked --oci
    cszstd:latest          skopeo copy --dest-compress-format zstd:chunked
                           (containers/storage's zstd:chunked; via an oci: layout)
    src-multi:latest       OCI index, linux/amd64 + linux/arm64 (busybox-static
                           of each architecture), gzip layers
    multi-estargz:latest   ctr-remote convert --estargz --oci --all-platforms of it
    mixed:latest           bottom layer = src's gzip blob, top layer = estargz's
                           eStargz blob (assembled here with RegistryClient)

The source tree (see SOURCE_TREE_NOTES) uses WHOLE-SECOND mtimes everywhere:
eStargz and ctr-remote zstd:chunked TOCs store `modtime` as RFC 3339 with
seconds only (the tar headers inside the blob keep sub-second PAX mtimes), so
a TOC-only reader and a tar reader agree only on whole seconds.

Facts about the blobs these tools write (checked on this machine; see
/tmp/seekable-facts.md when it exists):
  * eStargz: blob ends in a 51-byte empty gzip member whose FEXTRA subfield
    'SG' holds "%016x" of the TOC offset + "STARGZ"; the TOC is a gzip member
    from there to size-51 holding a tar with one entry `stargz.index.json`;
    `containerd.io/snapshot/stargz/toc.digest` = sha256 of that JSON.
  * zstd:chunked (both tools): blob ends in a 48-byte skippable frame (magic
    0x184D2A50, data size 40): LE u64 offset, length, uncompressed length,
    type (1), then b"GnUlInUx". The TOC is raw JSON in one zstd frame at
    `offset` (itself wrapped in a skippable frame whose 8-byte header is at
    offset-8). `io.containers.zstd-chunked.manifest-checksum` = sha256 of the
    COMPRESSED TOC bytes blob[offset:offset+length]; `...manifest-position` =
    "offset:length:uncompressedLength:type". ctr-remote's zstd layers also
    carry `toc.digest` (sha256 of the uncompressed JSON).
  * skopeo 1.9.3 keeps the source config, so its zstd:chunked diff_ids are
    stale for any layer whose tar Go does not re-serialise byte for byte
    (here: the tarfile layer).
  * A plain (non-lazy) unpack of an eStargz/ctr-zstd layer also yields the
    files `.no.prefetch.landmark` / `.prefetch.landmark` and (eStargz only)
    `stargz.index.json`; stargz-snapshotter hides them. TOOL_FILES lists them.
"""

import glob
import hashlib
import io
import json
import os
import random
import shutil
import stat
import struct
import subprocess
import tarfile
import tempfile
import time
import zlib

from registry import (
    MT_OCI_CONFIG, MT_OCI_INDEX, MT_OCI_MANIFEST, RegistryClient, sha256_digest, skopeo,
)

MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

A_TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest"
A_UNCOMPRESSED_SIZE = "io.containers.estargz.uncompressed-size"
A_ZSTD_CHECKSUM = "io.containers.zstd-chunked.manifest-checksum"
A_ZSTD_POSITION = "io.containers.zstd-chunked.manifest-position"
# Newer containers/storage (not Debian 12's skopeo) writes these names instead.
A_ZSTD_CHECKSUM_GH = "io.github.containers.zstd-chunked.manifest-checksum"
A_ZSTD_POSITION_GH = "io.github.containers.zstd-chunked.manifest-position"

ESTARGZ_FOOTER_SIZE = 51
ZSTD_SKIPPABLE_MAGIC = 0x184D2A50
ZSTD_FRAME_MAGIC = 0xFD2FB528
ZSTD_CHUNKED_MAGIC = b"GnUlInUx"

# Files the conversion tools add to the tar stream (not part of the image's tree).
TOOL_FILES = (".no.prefetch.landmark", ".prefetch.landmark", "stargz.index.json")

MTIME = 1700000000          # whole seconds only (see the module docstring)
CHUNK = 4 << 20             # ctr-remote's default eStargz chunk size
BIG_LOWER = 12 * (1 << 20) + 4567   # > 2 chunks, not a multiple of the chunk size
BIG_UPPER = 6 * (1 << 20) + 123
SMALL_FILES = 200

PLATFORMS = (("linux/amd64", "amd64"), ("linux/arm64", "arm64"))   # (platform, Debian arch)
DEB_CACHE = os.environ.get("MLFS_DEB_CACHE", "/var/cache/mlfs-test-debs")

CMD_TIMEOUT = 120           # any one tool invocation
SOCKET_TIMEOUT = 20.0       # containerd's socket answering

SOURCE_TREE_NOTES = """
lower layer (umoci repack of a real directory tree):
  etc/hostname, etc/passwd          small files (hostname replaced in the upper layer)
  deep/a/b/c/d/e/f/g/leaf.txt       nested dirs
  many/f000..f199                   many small files (varied sizes)
  big/random-12m                    12 MiB + 4567 B of seeded random bytes (3+ eStargz chunks)
  empty/empty-file, empty/dir/      empty file, empty directory
  links/abs -> /etc/hostname, links/rel -> ../etc/hostname,
  links/dangling -> ../nowhere, links/dir -> ../deep/a
  hard/original, hard/link          a hardlink pair (xattr on it too)
  xattr/file                        user.mlfs.text=hello, user.mlfs.bin=00 01 ff
  modes/setuid (04755), modes/setgid-dir (02755), modes/sticky-dir (01777),
  modes/owned (1234:5678, 0640)
  special/fifo, special/null (char 1:3)
  gone/whiteout-me                  hidden by the upper layer's .wh.
  gone-dir/inner/file               whole directory hidden by .wh.gone-dir
  opaque/old, opaque/sub/old2       hidden by opaque/.wh..wh..opq
upper layer (Python tarfile, PAX, `umoci raw add-layer`):
  etc/hostname (new content), gone/.wh.whiteout-me, .wh.gone-dir,
  opaque/.wh..wh..opq, opaque/new, upper/random-6m (6 MiB + 123 B random),
  upper/small, upper/hl (hardlink to upper/small)
"""


# -- small utilities ------------------------------------------------------------

def _run(cmd, timeout=CMD_TIMEOUT, env=None, cwd=None):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s\n%s" % (" ".join(cmd), r.returncode,
                                                        r.stdout.strip(), r.stderr.strip()))
    return r.stdout


def _rand(seed, n):
    return random.Random(seed).randbytes(n)


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def zstd_decompress(data, timeout=60):
    """Decompress zstd frames with the zstd CLI (skippable frames yield nothing)."""
    r = subprocess.run(["zstd", "-d", "-c", "-q"], input=data, capture_output=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("zstd -d failed: %s" % r.stderr.decode(errors="replace").strip())
    return r.stdout


def zstd_decompress_many(frames, timeout=120):
    """Decompress each bytes object of `frames` on its own, in one zstd process."""
    with tempfile.TemporaryDirectory(prefix="mlfs-zstd-") as d:
        names = []
        for i, fr in enumerate(frames):
            name = os.path.join(d, "%06d.zst" % i)
            with open(name, "wb") as f:
                f.write(fr)
            names.append(name)
        if names:
            r = subprocess.run(["zstd", "-d", "-q", "-f"] + names, capture_output=True,
                               timeout=timeout, stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                raise RuntimeError("zstd -d failed: %s" % r.stderr.decode(errors="replace").strip())
        out = []
        for name in names:
            with open(name[:-4], "rb") as f:
                out.append(f.read())
        return out


def gunzip_all(data):
    """Decompress every concatenated gzip member."""
    out = []
    while data:
        d = zlib.decompressobj(31)
        out.append(d.decompress(data))
        if not d.eof:
            raise ValueError("truncated gzip member")
        data = d.unused_data
    return b"".join(out)


def gunzip_member(data, offset, want=None):
    """Decompress the one gzip member starting at `offset`; returns (bytes, member_end)."""
    d = zlib.decompressobj(31)
    view = memoryview(data)[offset:]           # no copy of the rest of the blob
    out = d.decompress(view) if want is None else d.decompress(view, want)
    if want is not None:
        return out, None
    if not d.eof:
        raise ValueError("gzip member at %d does not end" % offset)
    return out, len(data) - len(d.unused_data)


def zstd_frame_end(data, pos):
    """End offset of the zstd frame (or skippable frame) starting at `pos`."""
    magic = struct.unpack_from("<I", data, pos)[0]
    if magic & 0xFFFFFFF0 == ZSTD_SKIPPABLE_MAGIC:
        return pos + 8 + struct.unpack_from("<I", data, pos + 4)[0]
    if magic != ZSTD_FRAME_MAGIC:
        raise ValueError("no zstd frame at %d (magic %#x)" % (pos, magic))
    p = pos + 4
    fhd = data[p]
    p += 1
    fcs_flag, single, checksum, did = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1, fhd & 3
    if not single:
        p += 1                          # window descriptor
    p += (0, 1, 2, 4)[did]
    p += (1 if single else 0, 2, 4, 8)[fcs_flag]
    while True:
        h = data[p] | (data[p + 1] << 8) | (data[p + 2] << 16)
        p += 3
        last, btype, bsize = h & 1, (h >> 1) & 3, h >> 3
        if btype == 3:
            raise ValueError("reserved zstd block type at %d" % (p - 3))
        p += 1 if btype == 1 else bsize     # RLE blocks store one byte
        if last:
            break
    return p + (4 if checksum else 0)


# -- footers and TOCs ------------------------------------------------------------

def parse_estargz_footer(blob):
    """TOC offset from an eStargz blob's 51-byte footer (raises ValueError if absent)."""
    if len(blob) < ESTARGZ_FOOTER_SIZE:
        raise ValueError("blob shorter than an eStargz footer")
    f = blob[-ESTARGZ_FOOTER_SIZE:]
    if f[:4] != b"\x1f\x8b\x08\x04":
        raise ValueError("footer is not a gzip header with FEXTRA: %s" % f[:4].hex())
    xlen = struct.unpack_from("<H", f, 10)[0]
    if xlen != 26:
        raise ValueError("eStargz footer XLEN %d != 26" % xlen)
    extra = f[12:12 + xlen]
    if extra[:2] != b"SG" or struct.unpack_from("<H", extra, 2)[0] != 22 or extra[-6:] != b"STARGZ":
        raise ValueError("no SG subfield with STARGZ: %r" % extra)
    # The footer itself is a complete, empty gzip member.
    try:
        empty = zlib.decompress(f, 31)
    except zlib.error as e:
        raise ValueError("footer is not a valid gzip member: %s" % e) from None
    if empty != b"":
        raise ValueError("footer member is not empty")
    return int(extra[4:20], 16)


def parse_zstd_chunked_footer(blob):
    """The zstd:chunked footer: dict(offset, length, uncompressed_length, type, data_size)."""
    for size in (40, 64):               # 40: Debian 12's tools; 64: newer containers/storage
        if len(blob) < size + 8:
            continue
        head = blob[-(size + 8):]
        magic, dsize = struct.unpack_from("<II", head, 0)
        if magic == ZSTD_SKIPPABLE_MAGIC and dsize == size and blob[-8:] == ZSTD_CHUNKED_MAGIC:
            offset, length, ulen, typ = struct.unpack_from("<QQQQ", head, 8)
            out = {"offset": offset, "length": length, "uncompressed_length": ulen,
                   "type": typ, "data_size": size}
            if size == 64:
                out["tarsplit"] = struct.unpack_from("<QQQ", head, 40)
            return out
    raise ValueError("no zstd:chunked footer (last 64 bytes: %s)" % blob[-64:].hex())


def read_estargz_toc(blob):
    """(toc_offset, compressed TOC member bytes, TOC JSON bytes) of an eStargz blob."""
    off = parse_estargz_footer(blob)
    comp = blob[off:len(blob) - ESTARGZ_FOOTER_SIZE]
    raw, end = gunzip_member(blob, off)
    if end != len(blob) - ESTARGZ_FOOTER_SIZE:
        raise ValueError("TOC member ends at %d, footer starts at %d"
                         % (end, len(blob) - ESTARGZ_FOOTER_SIZE))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
        if [m.name for m in members] != ["stargz.index.json"]:
            raise ValueError("TOC tar holds %r" % [m.name for m in members])
        toc = tar.extractfile(members[0]).read()
    return off, comp, toc


def read_zstd_chunked_toc(blob):
    """(footer dict, compressed TOC frame bytes, TOC JSON bytes) of a zstd:chunked blob."""
    foot = parse_zstd_chunked_footer(blob)
    off, length = foot["offset"], foot["length"]
    comp = blob[off:off + length]
    skip_magic, skip_size = struct.unpack_from("<II", blob, off - 8)
    if skip_magic != ZSTD_SKIPPABLE_MAGIC or skip_size != length:
        raise ValueError("TOC frame is not wrapped in a skippable frame of its length")
    toc = zstd_decompress(comp)
    if len(toc) != foot["uncompressed_length"]:
        raise ValueError("TOC is %d bytes, footer says %d" % (len(toc), foot["uncompressed_length"]))
    return foot, comp, toc


def layer_format(desc):
    """'gzip', 'estargz', 'zstd-chunked' (TOC footer) or 'zstd' from a layer descriptor."""
    ann = desc.get("annotations") or {}
    mt = desc.get("media_type") or desc.get("mediaType")
    if mt.endswith("+zstd"):
        if A_ZSTD_CHECKSUM in ann or A_ZSTD_CHECKSUM_GH in ann:
            return "zstd-chunked"
        return "zstd"
    if A_TOC_DIGEST in ann:
        return "estargz"
    return "gzip"


def chunks_of(toc):
    """{file name: [chunk dicts with offset, chunk_offset, chunk_size, digest, entry]} in order."""
    entries = toc["entries"]
    sizes = {e["name"]: e.get("size", 0) for e in entries if e["type"] == "reg"}
    files = {}
    for e in entries:
        if e["type"] == "reg" and "offset" in e and e.get("size", 0) > 0:
            files.setdefault(e["name"], []).append(e)
        elif e["type"] == "chunk":
            files.setdefault(e["name"], []).append(e)
    out = {}
    for name, es in files.items():
        lst = []
        for i, e in enumerate(es):
            co = e.get("chunkOffset", 0)
            if e.get("chunkSize"):
                cs = e["chunkSize"]
            elif i + 1 < len(es):
                cs = es[i + 1].get("chunkOffset", 0) - co
            else:
                cs = sizes[name] - co          # the last chunk omits chunkSize
            lst.append({"offset": e["offset"], "chunk_offset": co, "chunk_size": cs,
                        "digest": e.get("chunkDigest"), "entry": e})
        out[name] = lst
    return out


def verify_chunks(blob, fmt, toc):
    """Decompress every chunk alone from its `offset`; returns a list of problems.

    gzip: a member starts at `offset`; its first chunk_size bytes are the chunk.
    zstd: one frame starts at `offset`; its first chunk_size bytes are the chunk.
    """
    problems = []
    todo = []
    for name, chunks in chunks_of(toc).items():
        for c in chunks:
            try:
                if fmt == "estargz":
                    data, _ = gunzip_member(blob, c["offset"], want=c["chunk_size"])
                else:
                    data = blob[c["offset"]:zstd_frame_end(blob, c["offset"])]
            except Exception as e:  # noqa: BLE001 - reported, not raised
                problems.append("%s@%d: %s" % (name, c["chunk_offset"], e))
                continue
            todo.append((name, c, data))
    if fmt != "estargz":
        # Each frame decompressed alone (one zstd process for all of them).
        outs = zstd_decompress_many([d for _, _, d in todo])
        todo = [(n, c, o) for (n, c, _), o in zip(todo, outs)]
    for name, c, data in todo:
        size = c["chunk_size"]
        data = data[:size]
        if len(data) != size:
            problems.append("%s@%d: %d bytes, want %d" % (name, c["chunk_offset"], len(data), size))
        elif c["digest"] and sha256_digest(data) != c["digest"]:
            problems.append("%s@%d: chunkDigest mismatch" % (name, c["chunk_offset"]))
    return problems


def check_layer_blob(blob, desc):
    """Parse a seekable blob's footer and TOC and verify the annotations' digests.

    Returns a dict with the footer, the TOC (parsed), the digests computed and
    `problems` (a list of strings; empty when everything verifies).
    """
    ann = desc.get("annotations") or {}
    fmt = layer_format(desc)
    out = {"format": fmt, "problems": []}
    p = out["problems"]
    if fmt == "estargz":
        off, comp, toc = read_estargz_toc(blob)
        out["footer"] = {"toc_offset": off}
    elif fmt == "zstd-chunked":
        foot, comp, toc = read_zstd_chunked_toc(blob)
        out["footer"] = foot
        pos = ann.get(A_ZSTD_POSITION) or ann.get(A_ZSTD_POSITION_GH)
        want = "%d:%d:%d:%d" % (foot["offset"], foot["length"], foot["uncompressed_length"], foot["type"])
        if pos is None:
            p.append("no manifest-position annotation")
        elif pos.split(":")[:4] != want.split(":"):
            p.append("manifest-position %s != footer %s" % (pos, want))
        cks = ann.get(A_ZSTD_CHECKSUM) or ann.get(A_ZSTD_CHECKSUM_GH)
        if cks != sha256_digest(comp):
            p.append("manifest-checksum %s != sha256(compressed TOC) %s" % (cks, sha256_digest(comp)))
    else:
        raise ValueError("not a seekable layer: %s" % fmt)
    out["toc_json"] = toc
    out["toc"] = json.loads(toc)
    out["toc_sha256"] = sha256_digest(toc)
    out["toc_compressed_sha256"] = sha256_digest(comp)
    if A_TOC_DIGEST in ann and ann[A_TOC_DIGEST] != out["toc_sha256"]:
        p.append("toc.digest %s != sha256(TOC JSON) %s" % (ann[A_TOC_DIGEST], out["toc_sha256"]))
    if fmt == "estargz" and A_TOC_DIGEST not in ann:
        p.append("eStargz layer without toc.digest")
    if out["toc"].get("version") != 1:
        p.append("TOC version %r" % out["toc"].get("version"))
    return out


def decompress_layer(blob, desc):
    """The layer's uncompressed tar stream."""
    if blob[:4] == b"\x28\xb5\x2f\xfd" or layer_format(desc).startswith("zstd"):
        return zstd_decompress(blob)
    return gunzip_all(blob)


# -- building the source trees ----------------------------------------------------

def _set_mtimes(root, base=MTIME):
    """Whole-second mtimes on everything, children before their directory.

    Each path gets base + (a small per-path offset) so a reader that mixes up
    entries shows; never a fractional second."""
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames + dirnames:
            p = os.path.join(dirpath, n)
            t = base + zlib.crc32(os.path.relpath(p, root).encode()) % 100000
            os.utime(p, (t, t), follow_symlinks=False)
    os.utime(root, (base, base))


def _make_lower_tree(root):
    def w(rel, data, mode=0o644):
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
        return p

    w("etc/hostname", b"mlfs-seekable-lower\n")
    w("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nalice:x:1234:5678::/home/alice:/bin/sh\n")
    w("deep/a/b/c/d/e/f/g/leaf.txt", b"deep leaf\n")
    for i in range(SMALL_FILES):
        w("many/f%03d" % i, (b"small file %d\n" % i) * (i % 13 + 1))
    w("big/random-12m", _rand("lower-12m", BIG_LOWER))
    w("empty/empty-file", b"")
    os.makedirs(os.path.join(root, "empty/dir"))
    os.makedirs(os.path.join(root, "links"))
    os.symlink("/etc/hostname", os.path.join(root, "links/abs"))
    os.symlink("../etc/hostname", os.path.join(root, "links/rel"))
    os.symlink("../nowhere", os.path.join(root, "links/dangling"))
    os.symlink("../deep/a", os.path.join(root, "links/dir"))
    orig = w("hard/original", b"hardlinked content\n" * 10)
    os.setxattr(orig, "user.mlfs.hard", b"on-the-inode")
    os.link(orig, os.path.join(root, "hard/link"))
    x = w("xattr/file", b"has xattrs\n")
    os.setxattr(x, "user.mlfs.text", b"hello")
    os.setxattr(x, "user.mlfs.bin", b"\x00\x01\xff")
    w("modes/setuid", b"#!/bin/sh\necho setuid\n", 0o4755)
    for d, m in (("modes/setgid-dir", 0o2755), ("modes/sticky-dir", 0o1777)):
        os.makedirs(os.path.join(root, d))
        os.chmod(os.path.join(root, d), m)
    w("modes/sticky-dir/inside", b"in sticky\n")
    owned = w("modes/owned", b"owned by 1234:5678\n", 0o640)
    os.chown(owned, 1234, 5678)
    os.makedirs(os.path.join(root, "special"))
    os.mkfifo(os.path.join(root, "special/fifo"), 0o644)
    os.mknod(os.path.join(root, "special/null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    w("gone/whiteout-me", b"hidden by the upper layer\n")
    w("gone/stays", b"not whited out\n")
    w("gone-dir/inner/file", b"whole dir hidden\n")
    w("opaque/old", b"hidden by the opaque marker\n")
    w("opaque/sub/old2", b"hidden too\n")
    _set_mtimes(root)


def _upper_layer_tar():
    """The upper layer, by hand: umoci never writes whiteouts or opaque markers."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, kind=tarfile.REGTYPE, data=b"", mode=0o644, mtime=MTIME + 7, **kw):
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.mode = mode
            ti.mtime = mtime        # an int: whole seconds (see the module docstring)
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            for k, v in kw.items():
                setattr(ti, k, v)
            if kind == tarfile.REGTYPE:
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
            else:
                tar.addfile(ti)

        add("etc", tarfile.DIRTYPE, mode=0o755)
        add("etc/hostname", data=b"mlfs-seekable-upper\n")
        add("gone", tarfile.DIRTYPE, mode=0o755)
        add("gone/.wh.whiteout-me")
        add(".wh.gone-dir")
        add("opaque", tarfile.DIRTYPE, mode=0o755)
        add("opaque/.wh..wh..opq")
        add("opaque/new", data=b"new in the opaque dir\n")
        add("upper", tarfile.DIRTYPE, mode=0o755)
        add("upper/random-6m", data=_rand("upper-6m", BIG_UPPER))
        add("upper/small", data=b"upper small file\n", mtime=MTIME + 11)
        add("upper/hl", tarfile.LNKTYPE, linkname="upper/small", mtime=MTIME + 11)
    return buf.getvalue()


# -- busybox .debs (as contrib/demo-image.sh caches them) -------------------------

def _deb_for(arch):
    found = sorted(glob.glob(os.path.join(DEB_CACHE, "busybox-static_*_%s.deb" % arch)))
    return found[-1] if found else None


def ensure_busybox_debs(arches):
    """Paths of busybox-static .debs for `arches`, downloading the missing ones once."""
    missing = [a for a in arches if _deb_for(a) is None]
    if missing:
        os.makedirs(DEB_CACHE, exist_ok=True)
        native = _run(["dpkg", "--print-architecture"]).strip()
        foreign = _run(["dpkg", "--print-foreign-architectures"]).split()
        for a in missing:
            if a != native and a not in foreign:
                _run(["dpkg", "--add-architecture", a])
        # A security-index error for a foreign arch does no harm (see FIELD-NOTES).
        subprocess.run(["apt-get", "-q", "update"], capture_output=True, timeout=600,
                       stdin=subprocess.DEVNULL)
        _run(["apt-get", "-q", "download"] + ["busybox-static:%s" % a for a in missing],
             timeout=600, cwd=DEB_CACHE)
    out = {}
    for a in arches:
        d = _deb_for(a)
        if d is None:
            raise RuntimeError("could not download busybox-static:%s into %s" % (a, DEB_CACHE))
        out[a] = d
    return out


# -- umoci ------------------------------------------------------------------------

def _umoci(*args):
    return _run(["umoci"] + list(args))


def _build_src_layout(layout, work):
    """src: two gzip layers (umoci repack of the lower tree, tarfile upper layer)."""
    tag = "src"
    bundle = os.path.join(work, "bundle-src")
    _umoci("new", "--image", "%s:%s" % (layout, tag))
    _umoci("unpack", "--image", "%s:%s" % (layout, tag), bundle)
    rootfs = os.path.join(bundle, "rootfs")
    _make_lower_tree(rootfs)
    _umoci("repack", "--refresh-bundle", "--image", "%s:%s" % (layout, tag), bundle)
    upper = os.path.join(work, "upper.tar")
    with open(upper, "wb") as f:
        f.write(_upper_layer_tar())
    _umoci("raw", "add-layer", "--image", "%s:%s" % (layout, tag), upper)
    _umoci("config", "--image", "%s:%s" % (layout, tag), "--os", "linux", "--architecture", "amd64",
           "--config.cmd", "sh", "--config.env", "PATH=/bin", "--config.env", "MLFS_SEEKABLE=src",
           "--created", "2023-11-14T22:13:20Z")
    shutil.rmtree(bundle)
    return tag


def _build_platform_layout(layout, work, platform, deb):
    os_, arch = platform.split("/")[:2]
    tag = "multi-" + arch
    bundle = os.path.join(work, "bundle-" + tag)
    extract = os.path.join(work, "deb-" + arch)
    _run(["dpkg-deb", "-x", deb, extract])
    _umoci("new", "--image", "%s:%s" % (layout, tag))
    _umoci("unpack", "--image", "%s:%s" % (layout, tag), bundle)
    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy2(os.path.join(extract, "bin", "busybox"), os.path.join(rootfs, "bin", "busybox"))
    os.symlink("busybox", os.path.join(rootfs, "bin", "sh"))
    _set_mtimes(rootfs)
    _umoci("repack", "--refresh-bundle", "--image", "%s:%s" % (layout, tag), bundle)
    os.makedirs(os.path.join(rootfs, "etc"))
    with open(os.path.join(rootfs, "etc", "mlfs-platform"), "w") as f:
        f.write(platform + "\n")
    with open(os.path.join(rootfs, "etc", "random-5m"), "wb") as f:
        f.write(_rand("multi-" + arch, 5 * (1 << 20) + 1))
    _set_mtimes(rootfs, MTIME + 1000)
    _umoci("repack", "--image", "%s:%s" % (layout, tag), bundle)
    _umoci("config", "--image", "%s:%s" % (layout, tag), "--os", os_, "--architecture", arch,
           "--config.entrypoint", "/bin/busybox", "--config.cmd", "sh",
           "--config.env", "PATH=/bin", "--config.env", "MLFS_PLATFORM=%s" % platform,
           "--created", "2023-11-14T22:13:20Z")
    shutil.rmtree(bundle)
    shutil.rmtree(extract)
    return tag


# -- containerd + ctr-remote ---------------------------------------------------------

class Containerd:
    """A private containerd (own root, state, socket; no CRI) for ctr-remote.

    Use as a context manager: the process is killed and its directory removed
    on exit, whatever happened."""

    DISABLED = (
        "io.containerd.grpc.v1.cri",
        "io.containerd.internal.v1.opt",            # would create /opt/containerd
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.zfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.aufs",
        "io.containerd.tracing.processor.v1.otlp",
        "io.containerd.internal.v1.tracing",
    )

    def __init__(self, log_path):
        self.log_path = log_path
        self.dir = None
        self.proc = None
        self._log = None

    @property
    def address(self):
        return os.path.join(self.dir, "c.sock")   # short: a unix socket path must fit 108 bytes

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="mlfs-ctd-", dir="/tmp")
        cfg = os.path.join(self.dir, "config.toml")
        with open(cfg, "w") as f:
            f.write('version = 2\nroot = "%s"\nstate = "%s"\ndisabled_plugins = [%s]\n'
                    '[grpc]\n  address = "%s"\n[ttrpc]\n  address = "%s.ttrpc"\n'
                    '[debug]\n  address = ""\n[metrics]\n  address = ""\n'
                    % (os.path.join(self.dir, "root"), os.path.join(self.dir, "state"),
                       ", ".join('"%s"' % p for p in self.DISABLED), self.address, self.address))
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["containerd", "--config", cfg], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + SOCKET_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("containerd exited (%d); log: %s" % (self.proc.returncode,
                                                                        self.log_path))
            if os.path.exists(self.address):
                r = subprocess.run(["ctr-remote", "--address", self.address, "version"],
                                   capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
                if r.returncode == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("containerd socket did not answer in %.0f s; log: %s"
                           % (SOCKET_TIMEOUT, self.log_path))

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()

    def ctr(self, *args, timeout=CMD_TIMEOUT):
        return _run(["ctr-remote", "--address", self.address, "--namespace", "mlfs-test"]
                    + list(args), timeout=timeout)


# -- describing what the registry holds ------------------------------------------

def describe_manifest(client, repo, ref):
    """A manifest as the registry serves it: digests, config, layers with annotations."""
    body, mtype, digest = client.get_manifest(repo, ref)
    m = json.loads(body)
    cfg = json.loads(client.get_blob(repo, m["config"]["digest"]))
    diff_ids = cfg.get("rootfs", {}).get("diff_ids", [])
    layers = []
    for i, l in enumerate(m["layers"]):
        d = {"digest": l["digest"], "size": l["size"], "media_type": l["mediaType"],
             "annotations": dict(l.get("annotations") or {}),
             "diff_id": diff_ids[i] if i < len(diff_ids) else None}
        d["format"] = layer_format(d)
        layers.append(d)
    return {"repo": repo, "digest": digest, "media_type": mtype, "manifest": m,
            "config_digest": m["config"]["digest"], "config": cfg, "layers": layers}


def describe(client, host, repo, tag="latest"):
    body, mtype, digest = client.get_manifest(repo, tag)
    out = {"ref": "%s/%s:%s" % (host, repo, tag), "repo": repo, "tag": tag}
    if mtype == MT_OCI_INDEX:
        idx = json.loads(body)
        platforms = {}
        for d in idx["manifests"]:
            p = d["platform"]
            plat = "%s/%s" % (p["os"], p["architecture"]) + ("/" + p["variant"] if p.get("variant") else "")
            platforms[plat] = describe_manifest(client, repo, d["digest"])
        out.update(digest=digest, media_type=mtype, index=idx, platforms=platforms)
    else:
        out.update(describe_manifest(client, repo, tag))
    return out


# -- the builder ------------------------------------------------------------------

def _push_layout(layout, tag, host, repo, reftag="latest", extra=()):
    skopeo("copy", "-q", "--dest-tls-verify=false", *extra,
           "oci:%s:%s" % (layout, tag), "docker://%s/%s:%s" % (host, repo, reftag))


def _copy_blob(client, src_repo, dst_repo, digest):
    return client.push_blob(dst_repo, client.get_blob(src_repo, digest))


def _push_mixed(client, src, esgz):
    """mixed:latest: layer 0 = src's gzip blob, layer 1 = estargz's eStargz blob."""
    layer0 = src["manifest"]["layers"][0]
    layer1 = esgz["manifest"]["layers"][1]
    _copy_blob(client, "src", "mixed", layer0["digest"])
    _copy_blob(client, "estargz", "mixed", layer1["digest"])
    cfg = json.loads(json.dumps(esgz["config"]))
    cfg["rootfs"]["diff_ids"] = [src["config"]["rootfs"]["diff_ids"][0],
                                 esgz["config"]["rootfs"]["diff_ids"][1]]
    cfg.setdefault("config", {})["Env"] = ["PATH=/bin", "MLFS_SEEKABLE=mixed"]
    raw = json.dumps(cfg, sort_keys=True).encode()
    cdigest = client.push_blob("mixed", raw)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": cdigest, "size": len(raw)},
        "layers": [json.loads(json.dumps(layer0)), json.loads(json.dumps(layer1))],
    }
    client.put_manifest("mixed", "latest", json.dumps(manifest, indent=2).encode(), MT_OCI_MANIFEST)


def _push_index(client, repo, tag, entries):
    manifests = []
    for plat, digest in entries:
        body, mtype, _ = client.get_manifest(repo, digest)
        os_, arch = plat.split("/")[:2]
        manifests.append({"mediaType": mtype, "digest": digest, "size": len(body),
                          "platform": {"os": os_, "architecture": arch}})
    idx = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": manifests}
    return client.put_manifest(repo, tag, json.dumps(idx, indent=2).encode(), MT_OCI_INDEX)


def build_seekable_images(registry, workdir, multi=True):
    """Build and push every seekable test image into `registry` (a started harness Registry).

    Returns a dict:
      "host":     "127.0.0.1:PORT"
      "images":   {name: description} for src, estargz, estargz-prefetch,
                  zstdchunked, cszstd, mixed (single manifests) and, when
                  `multi`, src-multi and multi-estargz (indexes).
        A manifest description: ref ("HOST/REPO:latest"), repo, tag, digest
        (manifest digest), media_type, manifest (parsed), config_digest,
        config (parsed), layers: [{digest, size, media_type, annotations,
        diff_id (the config's), format ('gzip'|'estargz'|'zstd-chunked')}].
        An index description: ref, repo, tag, digest, media_type, index
        (parsed), platforms: {"linux/amd64": manifest description, ...}.
      "prefetch_record": the paths given to --estargz-record-in
      "seconds":  wall time of the build
      "workdir":  where the OCI layouts and logs are
    Everything comes from the registry after the push, never from the build.
    containerd is started and stopped inside this call.
    """
    t0 = time.monotonic()
    os.makedirs(workdir, exist_ok=True)
    host = registry.host
    client = RegistryClient(registry.url)
    layout = os.path.join(workdir, "oci")
    if os.path.exists(layout):
        shutil.rmtree(layout)
    _umoci("init", "--layout", layout)

    # 1. the source images (gzip)
    src_tag = _build_src_layout(layout, workdir)
    _push_layout(layout, src_tag, host, "src")
    if multi:
        debs = ensure_busybox_debs([a for _, a in PLATFORMS])
        entries = []
        for plat, debarch in PLATFORMS:
            tag = _build_platform_layout(layout, workdir, plat, debs[debarch])
            _push_layout(layout, tag, host, "src-multi", reftag=tag)
            entries.append((plat, client.get_manifest("src-multi", tag)[2]))
        _push_index(client, "src-multi", "latest", entries)

    # 2. containers/storage's zstd:chunked, through a local oci: layout (pushing
    # straight would reuse the gzip blobs already in the registry).
    cs_layout = os.path.join(workdir, "oci-cszstd")
    if os.path.exists(cs_layout):
        shutil.rmtree(cs_layout)
    skopeo("copy", "-q", "--dest-compress-format", "zstd:chunked",
           "oci:%s:%s" % (layout, src_tag), "oci:%s:cszstd" % cs_layout)
    _push_layout(cs_layout, "cszstd", host, "cszstd", extra=("--preserve-digests",))

    # 3. ctr-remote conversions in a private containerd
    src_ref = "%s/src:latest" % host
    src_digest = client.get_manifest("src", "latest")[2]
    # hard/original is the hardlink entry (umoci writes hard/link first): ctr-remote
    # moves its target along with it.
    record = ["hard/original", "xattr/file", "big/random-12m", "deep/a/b/c/d/e/f/g/leaf.txt"]
    record_path = os.path.join(workdir, "prefetch-record.json")
    with open(record_path, "w") as f:
        for p in record:
            f.write(json.dumps({"path": p, "manifestDigest": src_digest, "layerIndex": 0}) + "\n")
    with Containerd(os.path.join(workdir, "containerd.log")) as ctd:
        ctd.ctr("content", "fetch", "--plain-http", src_ref)
        for repo, flags in (("estargz", ["--estargz"]),
                            ("estargz-prefetch", ["--estargz", "--estargz-record-in", record_path]),
                            ("zstdchunked", ["--zstdchunked"])):
            dst = "%s/%s:latest" % (host, repo)
            ctd.ctr("image", "convert", *flags, "--oci", src_ref, dst)
            ctd.ctr("image", "push", "--plain-http", dst)
        if multi:
            msrc = "%s/src-multi:latest" % host
            mdst = "%s/multi-estargz:latest" % host
            ctd.ctr("content", "fetch", "--plain-http", "--all-platforms", msrc)
            ctd.ctr("image", "convert", "--estargz", "--oci", "--all-platforms", msrc, mdst)
            ctd.ctr("image", "push", "--plain-http", mdst)

    # 4. mixed: gzip bottom + eStargz top
    _push_mixed(client, describe_manifest(client, "src", "latest"),
                describe_manifest(client, "estargz", "latest"))

    names = ["src", "estargz", "estargz-prefetch", "zstdchunked", "cszstd", "mixed"]
    if multi:
        names += ["src-multi", "multi-estargz"]
    images = {n: describe(client, host, n) for n in names}
    return {"host": host, "images": images, "prefetch_record": record,
            "seconds": time.monotonic() - t0, "workdir": workdir}


def reference_rootfs(images, workdir, name="src", platform=None):
    """umoci unpack of one of the built images (default src:latest, the gzip one).

    Reuses reference.unpack_reference (skopeo + umoci, cached per digest). umoci
    reads gzip only: use it for src, src-multi, estargz* and mixed (eStargz is
    gzip; their trees additionally hold TOOL_FILES), not for the zstd images.
    """
    from reference import unpack_reference
    desc = images["images"][name]
    if "platforms" in desc:
        desc = desc["platforms"][platform]
    return unpack_reference(images["host"], desc["repo"], desc["digest"], workdir)
