#!/usr/bin/python3
"""Regenerates the seekable-layer unit-test fixtures in this directory.

Not run by the test suite: the blobs are checked in, so the unit tests need
no registry, containerd or network.  As root, with the integration suite's
packages (docker-registry, stargz-snapshotter, containerd, skopeo):

    /usr/bin/python3 tests/unit/data/seekable/make-fixtures.py

One small gzip layer, written with Python's tarfile (whole-second mtimes:
eStargz TOCs keep seconds only), is pushed to a private registry and
converted by the real tools: ctr-remote --estargz, ctr-remote --zstdchunked
and skopeo's zstd:chunked.  For each, NAME.blob is the converted layer and
NAME.json its descriptor (digest, size, media type, annotations); the
unit test opens each blob both ways, from its TOC and as a stream, and
compares.  A file of 9 MiB of zeros spans three 4 MiB eStargz chunks while
compressing to almost nothing; etc/doc.gz starts with the gzip magic, as
man pages and changelogs do.
"""
import gzip, hashlib, io, json, os, subprocess, sys, tarfile, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "integration"))
from registry import MT_OCI_CONFIG, MT_OCI_MANIFEST, Registry, RegistryClient, skopeo  # noqa: E402
from seekable_images import Containerd  # noqa: E402

MTIME = 1700000000


def layer_tar():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        def add(name, kind=tarfile.REGTYPE, data=b"", mode=0o644, **kw):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime, ti.size = kind, mode, MTIME, len(data)
            for k, v in kw.items():
                setattr(ti, k, v)
            t.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        add("etc", tarfile.DIRTYPE, mode=0o755)
        add("etc/hostname", data=b"mlfs-unit\n")
        add("etc/owned", data=b"owned\n", mode=0o640, uid=1234, gid=5678)
        add("etc/xattr", data=b"x\n", pax_headers={"SCHILY.xattr.user.mlfs": "value"})
        add("etc/hard", tarfile.LNKTYPE, linkname="etc/hostname")
        add("etc/link", tarfile.SYMTYPE, linkname="hostname", mode=0o777)
        add("etc/.wh.gone")
        add("bin", tarfile.DIRTYPE, mode=0o755)
        add("bin/setuid", data=b"#!/bin/sh\n", mode=0o4755)
        add("big", tarfile.DIRTYPE, mode=0o755)
        add("big/zeros", data=bytes(9 << 20))
        add("big/text", data=b"".join(b"line %06d\n" % i for i in range(5000)))
        # A file that is itself gzip'ed: its chunk must be unpacked once only.
        add("etc/doc.gz", data=gzip.compress(b"manual page\n" * 200, mtime=0))
        add("empty", data=b"")
        add("fifo", tarfile.FIFOTYPE)
    return buf.getvalue()


def main():
    work = tempfile.mkdtemp(prefix="mlfs-fixtures-")
    reg = Registry(os.path.join(work, "reg"))
    reg.start()
    try:
        client = RegistryClient(reg.url)
        tar = layer_tar()
        gz = gzip.compress(tar, mtime=0)
        cfg = json.dumps({"architecture": "amd64", "os": "linux",
                          "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]}}).encode()
        client.push_blob("src", gz)
        client.push_blob("src", cfg)
        man = json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                          "config": {"mediaType": MT_OCI_CONFIG, "digest": "sha256:" + hashlib.sha256(cfg).hexdigest(), "size": len(cfg)},
                          "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                      "digest": "sha256:" + hashlib.sha256(gz).hexdigest(), "size": len(gz)}]}).encode()
        client.put_manifest("src", "latest", man, MT_OCI_MANIFEST)
        src = "%s/src:latest" % reg.host
        with Containerd(os.path.join(work, "containerd.log")) as ctd:
            ctd.ctr("content", "fetch", "--plain-http", src)
            for name, flag in (("estargz", "--estargz"), ("zstdchunked", "--zstdchunked")):
                dst = "%s/%s:latest" % (reg.host, name)
                ctd.ctr("image", "convert", flag, "--oci", src, dst)
                ctd.ctr("image", "push", "--plain-http", dst)
        layout = os.path.join(work, "oci")
        skopeo("copy", "-q", "--src-tls-verify=false", "docker://" + src, "oci:%s:src" % layout)
        skopeo("copy", "-q", "--dest-compress-format", "zstd:chunked", "oci:%s:src" % layout, "oci:%s-cs:cszstd" % layout)
        skopeo("copy", "-q", "--dest-tls-verify=false", "--preserve-digests", "oci:%s-cs:cszstd" % layout,
               "docker://%s/cszstd:latest" % reg.host)
        for name in ("estargz", "zstdchunked", "cszstd"):
            m = json.loads(client.get_manifest(name, "latest")[0])
            d = m["layers"][0]
            with open(os.path.join(HERE, name + ".blob"), "wb") as f:
                f.write(client.get_blob(name, d["digest"]))
            with open(os.path.join(HERE, name + ".json"), "w") as f:
                json.dump(d, f, indent=1, sort_keys=True)
                f.write("\n")
            print(name, d["size"], "bytes")
    finally:
        reg.stop()


if __name__ == "__main__":
    main()
