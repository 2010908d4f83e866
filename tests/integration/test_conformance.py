"""Layers that libarchive reads differently from the runtimes (Go's
archive/tar: containerd, Docker, podman, umoci), built byte by byte here:
the mount and `mlfs export` must show what the runtimes extract.

- a symlink whose header has mode 0 (Linux: every symlink is 0777);
- a GNU header with NUL-filled uid/gid and junk in its "realsize" field
  (libarchive 3.6.2 reports 2176 bytes for the 14 the entry holds);
- a PAX extended header as the archive's last record (libarchive: "Damaged
  tar archive"; Go: the end of the archive), also one of 100 KiB with no
  end-of-archive blocks after it;
- a size field padded with leading NULs (Go trims them; libarchive reads a
  size of 0, then the file's data as a damaged header);
- foreign xattrs (security.selinux, trusted.overlay.*, user.overlay.*) that
  a mount must not present as its own;
- a sparse file, whose st_blocks must count its data, not its holes.
"""

import errno
import gzip
import json
import os
import stat
import subprocess
import tarfile

import pytest

from conftest import Images
from helpers import assert_ok
from mounts import read_in_child
from reference import unpack_reference
from registry import MT_OCI_CONFIG, MT_OCI_MANIFEST, sha256_digest

MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
HELLO = b"hello, world!\n"
SPARSE_SIZE = 8 << 20
FOREIGN = ("security.selinux", "trusted.overlay.opaque", "user.overlay.opaque")


# -- a layer written byte by byte ----------------------------------------------

def _header(name, typ=b"0", size=0, mode=b"0000644\0", link=b"", nul_ids=False, gnu=False,
            realsize=None, size_field=None):
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = mode
    if not nul_ids:
        h[108:116] = b"0000000\0"
        h[116:124] = b"0000000\0"
    h[124:136] = size_field if size_field is not None else b"%011o\0" % size
    h[136:148] = b"%011o\0" % 1700000000
    h[156:157] = typ
    h[157:157 + len(link)] = link
    h[257:265] = b"ustar  \0" if gnu else b"ustar\x0000"
    if realsize is not None:
        h[483:483 + len(realsize)] = realsize
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _pad(data):
    return data + b"\0" * (-len(data) % 512)


def _pax(records):
    body = b""
    for k, v in records:
        rec = b" %s=%s\n" % (k, v)
        n = len(rec) + 1
        while len(b"%d" % n) + len(rec) != n:
            n += 1
        body += b"%d" % n + rec
    return _header(b"PaxHeaders/x", typ=b"x", size=len(body)) + _pad(body)


def _file(name, data, **kw):
    return _header(name, size=len(data), **kw) + _pad(data)


def crafted_layer(trailing_pax=False, odd=False):
    out = _header(b"d/", typ=b"5", mode=b"0000755\0")
    out += _header(b"d/zero", typ=b"2", mode=b"0000000\0", link=b"target")
    out += _file(b"d/target", b"t")
    out += _file(b"hello.txt", HELLO, nul_ids=True, gnu=True, realsize=b"00000004200")
    out += _file(b"after.txt", b"abc")
    out += _pax([(b"SCHILY.xattr.security.selinux", b"system_u:object_r:container_file_t:s0")])
    out += _file(b"labelled", b"l")
    out += _pax([(b"SCHILY.xattr.trusted.overlay.opaque", b"y")])
    out += _header(b"opaque/", typ=b"5", mode=b"0000755\0")
    out += _pax([(b"SCHILY.xattr.user.overlay.opaque", b"y")])
    out += _header(b"uopaque/", typ=b"5", mode=b"0000755\0")
    out += _pax([(b"SCHILY.xattr.user.comment", b"kept")])
    out += _file(b"commented", b"c")
    if trailing_pax:
        # A PAX header with no entry after it, then the end-of-archive blocks.
        out += _pax([(b"path", b"nothing/follows")])
    if odd:
        # 14 bytes written "\0\0\0\0\0\0\0\0\0" "16\0"; then a PAX header of
        # 100 KiB, and the stream ends there (no end-of-archive blocks).
        out += _file(b"padded.txt", HELLO, size_field=b"\0" * 9 + b"16\0")
        out += _pax([(b"comment", b"v" * (100 << 10))])
        return out
    return out + b"\0" * 1024


def sparse_layer(workdir):
    src = os.path.join(workdir, "sparse-src")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "holes"), "wb") as f:
        f.truncate(SPARSE_SIZE)
        f.seek(4096)
        f.write(b"A")
        f.seek(SPARSE_SIZE - 1)
        f.write(b"C")
    return subprocess.run(["tar", "--sparse", "--format=posix", "-C", src, "-cf", "-", "holes"],
                          capture_output=True, check=True).stdout


def _push(client, repo, tag, raws):
    blobs = [gzip.compress(r, mtime=0) for r in raws]
    config = {"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"]},
              "rootfs": {"type": "layers", "diff_ids": [sha256_digest(r) for r in raws]}}
    cbytes = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": client.push_blob(repo, cbytes), "size": len(cbytes)},
        "layers": [{"mediaType": MT_OCI_LAYER_GZIP, "digest": client.push_blob(repo, b), "size": len(b)}
                   for b in blobs],
    }
    body = json.dumps(manifest).encode()
    return client.put_manifest(repo, tag, body, MT_OCI_MANIFEST)


@pytest.fixture(scope="module")
def conformance(demo, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("conformance"))
    sparse = sparse_layer(work)
    digest = _push(demo.client, "conformance", "v1", [crafted_layer(), sparse])
    pax_end = _push(demo.client, "conformance", "pax-end", [crafted_layer(trailing_pax=True), sparse])
    odd = _push(demo.client, "conformance", "odd", [crafted_layer(odd=True), sparse])
    return Images(demo.registry, digest=digest, pax_end=pax_end, odd=odd, work=work)


# -- what a runtime's unpack gives ----------------------------------------------

def _tree(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            e = {"mode": st.st_mode}
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    e["data"] = f.read()
            if stat.S_ISLNK(st.st_mode):
                e["link"] = os.readlink(p)
            out[os.path.relpath(p, root)] = e
    return out


# -- tests ------------------------------------------------------------------------

NAMES = ["after.txt", "commented", "d", "hello.txt", "holes", "labelled", "opaque", "uopaque"]


def test_trailing_pax_header_is_the_end(mounter, mlfs, conformance, tmp_path):
    m = mounter.mount(conformance.ref("conformance:pax-end"))
    assert sorted(os.listdir(m.mountpoint)) == NAMES
    out = str(tmp_path / "out.tar")
    assert_ok(mlfs("export", conformance.ref("conformance:pax-end"), "-o", out), allow_warnings=True)
    with tarfile.open(out) as t:
        assert "nothing/follows" not in [n.rstrip("/").lstrip("./") for n in t.getnames()]


def test_mount_shows_what_runtimes_extract(mounter, conformance):
    m = mounter.mount(conformance.ref("conformance:v1"))
    root = m.mountpoint
    assert sorted(os.listdir(root)) == NAMES
    st = os.lstat(os.path.join(root, "d/zero"))
    assert stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o777, oct(st.st_mode)
    got = read_in_child([os.path.join(root, p) for p in ("hello.txt", "after.txt")])
    assert got[0][0] == HELLO and got[1][0] == b"abc", got
    assert os.stat(os.path.join(root, "hello.txt")).st_size == len(HELLO)


def test_mount_hides_foreign_xattrs(mounter, conformance):
    m = mounter.mount(conformance.ref("conformance:v1"))
    root = m.mountpoint
    for path in ("labelled", "opaque", "uopaque"):
        p = os.path.join(root, path)
        names = os.listxattr(p, follow_symlinks=False)
        assert not set(names) & set(FOREIGN), (path, names)
        for name in FOREIGN:
            with pytest.raises(OSError) as e:
                os.getxattr(p, name, follow_symlinks=False)
            assert e.value.errno == errno.ENODATA, (path, name, e.value)
    assert os.getxattr(os.path.join(root, "commented"), "user.comment") == b"kept"


def test_sparse_file_blocks(mounter, conformance):
    m = mounter.mount(conformance.ref("conformance:v1"))
    p = os.path.join(m.mountpoint, "holes")
    st = os.stat(p)
    assert st.st_size == SPARSE_SIZE
    assert 0 < st.st_blocks * 512 <= 16384, st.st_blocks
    data = read_in_child([p])[0][0]
    assert data[4096:4097] == b"A" and data[-1:] == b"C" and data.count(0) == SPARSE_SIZE - 2


def test_export_matches(mlfs, conformance, tmp_path):
    out = str(tmp_path / "out.tar")
    assert_ok(mlfs("export", conformance.ref("conformance:v1"), "-o", out), allow_warnings=True)
    with tarfile.open(out) as t:
        members = {m.name.rstrip("/").lstrip("./"): m for m in t.getmembers()}
        zero = members["d/zero"]
        assert zero.issym() and zero.mode & 0o7777 == 0o777, oct(zero.mode)
        assert t.extractfile(members["hello.txt"]).read() == HELLO
        assert t.extractfile(members["after.txt"]).read() == b"abc"
        for name in ("labelled", "opaque", "uopaque"):
            keys = [k for k in members[name].pax_headers if k.startswith("SCHILY.xattr.")
                    or k.startswith("LIBARCHIVE.xattr.")]
            assert not any(x in k for k in keys for x in FOREIGN), (name, keys)
        holes = t.extractfile(members["holes"]).read()
        assert len(holes) == SPARSE_SIZE and holes[4096:4097] == b"A" and holes[-1:] == b"C"


def test_nul_padded_size_and_long_trailing_pax(mounter, mlfs, conformance, tmp_path):
    ref = conformance.ref("conformance:odd")
    m = mounter.mount(ref)
    assert sorted(os.listdir(m.mountpoint)) == sorted(NAMES + ["padded.txt"])
    p = os.path.join(m.mountpoint, "padded.txt")
    assert os.stat(p).st_size == len(HELLO)
    assert read_in_child([p])[0][0] == HELLO
    out = str(tmp_path / "out.tar")
    assert_ok(mlfs("export", ref, "-o", out), allow_warnings=True)
    with tarfile.open(out) as t:
        assert t.extractfile(t.getmember(next(n for n in t.getnames() if n.endswith("padded.txt")))).read() \
            == HELLO


@pytest.mark.parametrize("tag", ["v1", "pax-end", "odd"])
def test_mount_matches_umoci(mounter, conformance, tag):
    digest = {"v1": conformance.digest, "pax-end": conformance.pax_end, "odd": conformance.odd}[tag]
    want = _tree(unpack_reference(conformance.registry.host, "conformance", digest, conformance.work))
    m = mounter.mount(conformance.ref("conformance:" + tag))
    got = _tree(m.mountpoint)
    assert sorted(got) == sorted(want)
    for path, e in want.items():
        assert got[path] == e, path
