#!/usr/bin/python3
"""Build the large benchmark image as a hand-made OCI layout (stdlib only).

    mkimage.py --debs DIR --out LAYOUT

Each layer is the union of a few Debian packages, unpacked with
`dpkg-deb -x` and written as a deterministic tar (sorted names, uid/gid 0,
the packages' mtimes) with Python's tarfile.  Every tar is compressed twice,
with `gzip -n -6` and `zstd -3`, and the layout gets two manifests that share
one config (same diff_ids): tags `gzip` and `zstd`.  The top layer is small,
like the last layer of most real images, and carries one whiteout.

Beside the layout, meta.json describes what was built (sizes, entry counts,
the deep file the benchmark reads).  The layout is rebuilt only when the
recipe (RECIPE_VERSION, LAYERS, the .deb files) changes: see recipe_key().
"""

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

# (layer name, Debian packages).  About 540 MB and 36k entries in total.
LAYERS = [
    ("base-libs", ["libc6", "libc6-dev", "linux-libc-dev", "libgcc-12-dev", "tzdata", "libicu72",
                   "libperl5.36", "perl-modules-5.36", "libpython3.11-stdlib"]),
    ("toolchain", ["gcc-12", "cpp-12", "g++-12", "binutils-x86-64-linux-gnu", "libstdc++-12-dev"]),
    ("boost", ["libboost1.74-dev"]),
    ("go-src", ["golang-1.19-src"]),
]
TOP_WHITEOUT = "usr/share/doc/.wh.gcc-12"   # hides a directory of the toolchain layer
RECIPE_VERSION = "4"

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
            "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}
COMPRESS = {"gzip": ["gzip", "-n", "-6", "-c"], "zstd": ["zstd", "-q", "-3", "-T0", "-c"]}


def deb_for(debs, pkg):
    hits = sorted(f for f in os.listdir(debs) if f.startswith(pkg + "_") and f.endswith(".deb"))
    if not hits:
        sys.exit("mkimage: no .deb for %s in %s" % (pkg, debs))
    return os.path.join(debs, hits[-1])


def recipe_key(debs):
    h = hashlib.sha256()
    h.update(RECIPE_VERSION.encode())
    h.update(repr(LAYERS).encode())
    h.update(TOP_WHITEOUT.encode())
    for _, pkgs in LAYERS:
        for p in pkgs:
            h.update(os.path.basename(deb_for(debs, p)).encode())
    return h.hexdigest()[:16]


def add_tree(tar, root):
    """Add root's contents (names relative to root), sorted, owned by root."""
    entries = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        names = sorted(dirnames + [f for f in filenames])
        # os.walk lists symlinks to directories in dirnames: they are added
        # as symlinks (gettarinfo does not follow) and not descended.
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        for name in names:
            path = os.path.join(dirpath, name)
            arc = name if rel == "." else os.path.join(rel, name)
            ti = tar.gettarinfo(path, arc)
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            if ti.isreg():
                with open(path, "rb") as f:
                    tar.addfile(ti, f)
            else:
                tar.addfile(ti)
            entries += 1
    return entries


class HashWriter(io.RawIOBase):
    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def put_json(blobs, obj):
    data = json.dumps(obj, indent=None, separators=(",", ":"), sort_keys=True).encode()
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, hexd), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + hexd, "size": len(data)}


def build(debs, out):
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    blobs = os.path.join(tmp, "blobs", "sha256")
    os.makedirs(blobs)
    work = os.path.join(tmp, "work")
    os.makedirs(work)
    layers = []
    deep = ("", -1)
    specs = list(LAYERS) + [("top", None)]
    for i, (name, pkgs) in enumerate(specs):
        t0 = time.monotonic()
        root = os.path.join(work, name)
        os.makedirs(root)
        if pkgs is None:
            os.makedirs(os.path.join(root, "etc"))
            with open(os.path.join(root, "etc", "mlfs-bench-release"), "w") as f:
                f.write("mlfs bench image, recipe %s\n" % RECIPE_VERSION)
            os.makedirs(os.path.join(root, os.path.dirname(TOP_WHITEOUT)))
            open(os.path.join(root, TOP_WHITEOUT), "w").close()
        else:
            for p in pkgs:
                subprocess.run(["dpkg-deb", "-x", deb_for(debs, p), root], check=True)
        files = content = 0
        for dirpath, _, filenames in os.walk(root):
            for fn in filenames:
                p = os.path.join(dirpath, fn)
                if os.path.isfile(p) and not os.path.islink(p):
                    files += 1
                    content += os.path.getsize(p)
                    rel = os.path.relpath(p, root)
                    depth = rel.count("/")
                    hidden = rel.startswith(os.path.dirname(TOP_WHITEOUT) + "/" + os.path.basename(TOP_WHITEOUT)[4:] + "/")
                    if pkgs is not None and not hidden and os.path.getsize(p) > 0 and depth > deep[1]:
                        deep = (rel, depth)
        tar_path = os.path.join(work, name + ".tar")
        with open(tar_path, "wb") as raw:
            hw = HashWriter(raw)
            with tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                entries = add_tree(tar, root)
        shutil.rmtree(root)
        layer = {"name": name, "packages": pkgs or [], "entries": entries, "files": files,
                 "content_bytes": content, "tar_size": hw.n, "diff_id": "sha256:" + hw.h.hexdigest()}
        for comp, cmd in COMPRESS.items():
            cpath = tar_path + "." + comp
            with open(tar_path, "rb") as src, open(cpath, "wb") as dst:
                subprocess.run(cmd, stdin=src, stdout=dst, check=True)
            hexd = sha256_file(cpath)
            os.rename(cpath, os.path.join(blobs, hexd))
            layer[comp] = {"digest": "sha256:" + hexd, "size": os.path.getsize(os.path.join(blobs, hexd))}
        os.unlink(tar_path)
        layers.append(layer)
        print("mkimage: layer %d %-10s %6d entries %7.1f MB tar, %6.1f MB gzip, %6.1f MB zstd (%.1fs)"
              % (i + 1, name, entries, hw.n / 1e6, layer["gzip"]["size"] / 1e6,
                 layer["zstd"]["size"] / 1e6, time.monotonic() - t0), flush=True)

    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [l["diff_id"] for l in layers]},
        "history": [{"created_by": "mlfs bench: " + l["name"]} for l in layers],
    }
    cdesc = put_json(blobs, config)
    index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": []}
    for comp in COMPRESS:
        manifest = {
            "schemaVersion": 2, "mediaType": MT_MANIFEST,
            "config": dict(cdesc, mediaType=MT_CONFIG),
            "layers": [dict(l[comp], mediaType=MT_LAYER[comp]) for l in layers],
        }
        mdesc = put_json(blobs, manifest)
        index["manifests"].append(dict(mdesc, mediaType=MT_MANIFEST,
                                       annotations={"org.opencontainers.image.ref.name": comp}))
    with open(os.path.join(tmp, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(tmp, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    shutil.rmtree(work)
    meta = {
        "recipe": recipe_key(debs), "layers": layers, "deep_file": deep[0],
        "entries": sum(l["entries"] for l in layers),
        "files": sum(l["files"] for l in layers),
        "tar_bytes": sum(l["tar_size"] for l in layers),
        "content_bytes": sum(l["content_bytes"] for l in layers),
        "gzip_bytes": sum(l["gzip"]["size"] for l in layers),
        "zstd_bytes": sum(l["zstd"]["size"] for l in layers),
    }
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    return meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--debs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--print-packages", action="store_true")
    ap.add_argument("--check", action="store_true", help="exit 0 if OUT is up to date")
    a = ap.parse_args()
    if a.print_packages:
        print(" ".join(p for _, pkgs in LAYERS for p in pkgs))
        return
    try:
        with open(os.path.join(a.out, "meta.json")) as f:
            current = json.load(f).get("recipe") == recipe_key(a.debs)
    except (OSError, ValueError):
        current = False
    if a.check:
        sys.exit(0 if current else 1)
    if current:
        print("mkimage: %s is up to date" % a.out)
        return
    meta = build(a.debs, a.out)
    print("mkimage: %d entries, %.1f MB uncompressed tar, %.1f MB gzip, %.1f MB zstd; deep file /%s"
          % (meta["entries"], meta["tar_bytes"] / 1e6, meta["gzip_bytes"] / 1e6,
             meta["zstd_bytes"] / 1e6, meta["deep_file"]))


if __name__ == "__main__":
    main()
