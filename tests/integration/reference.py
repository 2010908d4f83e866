"""Ground truth for what a mounted (or exported) image must contain, and an
image that exercises the corners of the layer format.

`unpack_reference(host, repo, digest, workdir)`: the rootfs as the
reference tools see it — `skopeo copy docker://… oci:LAYOUT:ref` (TLS
verification off), then `umoci unpack`; returns the rootfs path.  Results
are kept per (host, repo, digest) for the session.

`push_rich_image(client, repo, tag)`: a two-layer OCI image built here with
Python's tarfile, so every entry is under our control: hardlink groups,
symlinks (relative, absolute, dangling), char/block devices, a fifo, user
and trusted xattrs, setuid/setgid/sticky modes, odd owners, empty and
multi-megabyte files (seeded random), long and non-ASCII names, a directory
of 1500 entries, and in the
upper layer whiteouts, an opaque directory, a file replaced by a directory,
a directory replaced by a file and changed metadata.  The lower layer is
gzip, the upper plain tar.  Returns its description (manifest/config/layer
digests).
"""

import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import tarfile
import threading

from registry import MT_OCI_CONFIG, MT_OCI_MANIFEST, skopeo

MT_OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

_lock = threading.Lock()
_unpacked = {}


def unpack_reference(host, repo, digest, workdir):
    """Rootfs of HOST/REPO@DIGEST (a single-platform manifest) via skopeo + umoci."""
    key = (host, repo, digest)
    with _lock:
        if key in _unpacked:
            return _unpacked[key]
        name = "%s-%s" % (repo.replace("/", "_"), digest.split(":", 1)[1][:16])
        layout = os.path.join(workdir, "layout-" + name)
        bundle = os.path.join(workdir, "bundle-" + name)
        os.makedirs(workdir, exist_ok=True)
        skopeo("copy", "--src-tls-verify=false", "docker://%s/%s@%s" % (host, repo, digest),
               "oci:%s:ref" % layout)
        r = subprocess.run(["umoci", "unpack", "--image", "%s:ref" % layout, bundle],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError("umoci unpack failed (%d): %s" % (r.returncode, r.stderr.strip()))
        rootfs = os.path.join(bundle, "rootfs")
        _unpacked[key] = rootfs
        return rootfs


# -- the rich image -------------------------------------------------------------

MTIME = 1700000000


def _rand(seed, n):
    return random.Random(seed).randbytes(n)


class _Layer:
    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def _info(self, name, kind, mode, uid=0, gid=0, **kw):
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = ""
        ti.mtime = kw.pop("mtime", MTIME)
        xattrs = kw.pop("xattrs", None)
        if xattrs:
            ti.pax_headers = {"SCHILY.xattr." + k: v for k, v in xattrs.items()}
        for k, v in kw.items():
            setattr(ti, k, v)
        return ti

    def dir(self, name, mode=0o755, **kw):
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, **kw))

    def file(self, name, data, mode=0o644, **kw):
        ti = self._info(name, tarfile.REGTYPE, mode, **kw)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))

    def symlink(self, name, target, **kw):
        self.tar.addfile(self._info(name, tarfile.SYMTYPE, 0o777, linkname=target, **kw))

    def hardlink(self, name, target, **kw):
        self.tar.addfile(self._info(name, tarfile.LNKTYPE, 0o644, linkname=target, **kw))

    def device(self, name, kind, major, minor, mode=0o666, **kw):
        self.tar.addfile(self._info(name, kind, mode, devmajor=major, devminor=minor, **kw))

    def fifo(self, name, mode=0o644, **kw):
        self.tar.addfile(self._info(name, tarfile.FIFOTYPE, mode, **kw))

    def done(self):
        self.tar.close()
        return self.buf.getvalue()


def rich_layers():
    """(lower tar bytes, upper tar bytes): see the module docstring."""
    lo = _Layer()
    lo.dir("bin")
    lo.file("bin/tool", b"#!/bin/sh\necho tool\n", mode=0o755)
    lo.file("bin/setuid", b"\x7fELF-not-really\n", mode=0o4755)
    lo.file("bin/setgid", b"sgid\n", mode=0o2711, gid=50)
    lo.dir("etc")
    lo.file("etc/empty", b"")
    lo.file("etc/one", b"1")
    lo.file("etc/secret", b"top secret\n", mode=0o600, uid=1000, gid=1000)
    lo.file("etc/readonly", b"r\n", mode=0o444, uid=65534, gid=65534)
    lo.file("etc/replaced", b"old contents from the lower layer\n")
    lo.file("etc/owned", b"owner\n", uid=12345, gid=54321)
    lo.dir("data", mode=0o750, uid=1000, gid=100)
    for n in (4095, 4096, 4097, 65536, 131073):
        lo.file("data/size-%d" % n, _rand(n, n))
    lo.file("data/random-3m", _rand(3, 3 * 1024 * 1024 + 17))
    lo.file("data/zeros-1m", b"\0" * (1 << 20))
    lo.dir("hl")
    lo.file("hl/a", b"hardlinked twice\n", mode=0o640, uid=7, gid=8)
    lo.hardlink("hl/b", "hl/a")
    lo.file("hl/x", b"three names\n")
    lo.hardlink("hl/y", "hl/x")
    lo.dir("hl/sub")
    lo.hardlink("hl/sub/z", "hl/x")
    lo.dir("links")
    lo.symlink("links/rel", "../etc/one")
    lo.symlink("links/abs", "/etc/one")
    lo.symlink("links/dangling", "does/not/exist")
    lo.symlink("links/dir", "../data")
    lo.symlink("links/owned", "../etc/owned", uid=1000, gid=1000)
    lo.dir("dev")
    lo.device("dev/null", tarfile.CHRTYPE, 1, 3)
    lo.device("dev/fuse", tarfile.CHRTYPE, 10, 229, mode=0o600)
    lo.device("dev/sda", tarfile.BLKTYPE, 8, 0, mode=0o660, gid=6)
    lo.device("dev/big", tarfile.BLKTYPE, 259, 70000, mode=0o600)
    lo.fifo("dev/pipe", mode=0o620)
    lo.dir("x", xattrs={"user.dir": "on a directory"})
    lo.file("x/attrs", b"with xattrs\n",
            xattrs={"user.mlfs": "hello", "trusted.mlfs": "trusted value"})
    lo.symlink("x/attrlink", "attrs")
    lo.dir("tmp", mode=0o1777)
    lo.dir("names")
    lo.file("names/with space", b"space\n")
    lo.file("names/\u00fcn\u00efc\u00f8d\u00e9-\u65e5\u672c", b"unicode\n")
    lo.file("names/" + "L" * 200, b"long name\n")
    deep = "/".join("d%02d" % i for i in range(30))
    parts = deep.split("/")
    for i in range(1, len(parts) + 1):
        lo.dir("names/" + "/".join(parts[:i]))
    lo.file("names/%s/bottom" % deep, b"deep\n")
    lo.dir("wh")
    lo.file("wh/keep", b"keep\n")
    lo.file("wh/gone", b"gone\n")
    lo.dir("wh/gonedir")
    lo.file("wh/gonedir/inner", b"inner\n")
    lo.dir("opaque")
    lo.file("opaque/a", b"a\n")
    lo.dir("opaque/sub")
    lo.file("opaque/sub/b", b"b\n")
    lo.file("typechange-f2d", b"a file, then a directory\n")
    lo.dir("typechange-d2f")
    lo.file("typechange-d2f/child", b"child\n")
    lo.dir("meta", mode=0o700)
    # Enough entries that a directory listing takes many readdir calls.
    lo.dir("many")
    for i in range(1500):
        lo.file("many/f%04d-%s" % (i, "x" * (i % 40)), b"%d\n" % i)
    lower = lo.done()

    up = _Layer()
    up.dir("etc")
    up.file("etc/replaced", b"new contents from the upper layer, longer than before\n", mode=0o600)
    up.file("etc/added", b"added above\n")
    up.dir("wh")
    up.file("wh/.wh.gone", b"")
    up.file("wh/.wh.gonedir", b"")
    up.file("wh/.wh.never-existed", b"")
    up.dir("opaque")
    up.file("opaque/.wh..wh..opq", b"")
    up.file("opaque/c", b"c\n")
    up.dir("typechange-f2d")
    up.file("typechange-f2d/now", b"now a directory\n")
    up.file("typechange-d2f", b"now a file\n")
    up.dir("meta", mode=0o755, uid=3, gid=4)
    up.file("data/random-3m", _rand(33, 2 * 1024 * 1024 + 5))
    upper = up.done()
    return lower, upper


def push_rich_image(client, repo="rich", tag="v1"):
    lower, upper = rich_layers()
    lower_gz = gzip.compress(lower, mtime=0)
    diff_ids = ["sha256:" + hashlib.sha256(t).hexdigest() for t in (lower, upper)]
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/tool"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "mlfs tests: lower"}, {"created_by": "mlfs tests: upper"}],
    }
    config_bytes = json.dumps(config).encode()
    layers = []
    for blob, mtype in ((lower_gz, MT_OCI_LAYER_GZIP), (upper, MT_OCI_LAYER_TAR)):
        layers.append({"mediaType": mtype, "digest": client.push_blob(repo, blob), "size": len(blob)})
    cdigest = client.push_blob(repo, config_bytes)
    manifest = {
        "schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": cdigest, "size": len(config_bytes)},
        "layers": layers,
    }
    body = json.dumps(manifest, indent=2).encode()
    mdigest = client.put_manifest(repo, tag, body, MT_OCI_MANIFEST)
    return {"repo": repo, "tag": tag, "digest": mdigest, "config_digest": cdigest,
            "layers": [{"digest": l["digest"], "media_type": l["mediaType"], "size": l["size"]}
                       for l in layers]}
