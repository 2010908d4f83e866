#!/usr/bin/python3
"""Seekable copies of the large benchmark image, made once by the real tools.

    convert.py --registry HOST:PORT --work DIR [--repo big] [--src gzip]

From REPO:SRC (the gzip image, already in the registry) this makes
  REPO:estargz      ctr-remote image convert --estargz --oci       (eStargz)
  REPO:zstdchunked  ctr-remote image convert --zstdchunked --oci   (ctr-remote's zstd:chunked)
  REPO:cszstd       skopeo copy --dest-compress-format zstd:chunked via an
                    oci: layout, pushed with --preserve-digests
                    (containers/storage's zstd:chunked)
with the tools' default settings (eStargz: gzip level 9, 4 MiB chunks).
ctr-remote needs a content store: a private containerd is started for it
(own root, state and socket under /tmp, no CRI) and stopped afterwards.

Each conversion is done once: DIR/convert/TAG.json records the source
manifest digest and the pushed manifest digest, and the conversion is
skipped while the registry's TAG still has that digest and the source has
not changed.  Stdlib only (Debian's /usr/bin/python3).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
CMD_TIMEOUT = 1800          # one conversion of the large image takes a minute or two


def log(msg):
    print("convert: " + msg, file=sys.stderr, flush=True)


def run(cmd, timeout=CMD_TIMEOUT):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s\n%s" % (" ".join(cmd), r.returncode,
                                                        r.stdout.strip()[-2000:], r.stderr.strip()[-2000:]))
    return r.stdout


def manifest_digest(reg, repo, tag):
    """sha256 of the manifest the registry serves for repo:tag, or None."""
    req = urllib.request.Request("http://%s/v2/%s/manifests/%s" % (reg, repo, tag), headers={"Accept": ACCEPT})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return "sha256:" + hashlib.sha256(r.read()).hexdigest()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


# The private containerd of the test harness (stdlib only, like this script).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from seekable_images import Containerd  # noqa: E402


CTR_FLAGS = {"estargz": ["--estargz"], "zstdchunked": ["--zstdchunked"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--registry", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--repo", default="big")
    ap.add_argument("--src", default="gzip")
    ap.add_argument("--oci", help="the source's OCI layout (for skopeo's zstd:chunked); "
                                  "default: copied from the registry")
    ap.add_argument("--tags", default="estargz,zstdchunked,cszstd")
    a = ap.parse_args()
    reg, repo = a.registry, a.repo
    sdir = os.path.join(a.work, "convert")
    os.makedirs(sdir, exist_ok=True)
    src_digest = manifest_digest(reg, repo, a.src)
    if not src_digest:
        sys.exit("convert: %s/%s:%s is not in the registry" % (reg, repo, a.src))

    def stamp_path(tag):
        return os.path.join(sdir, tag + ".json")

    def current(tag):
        try:
            with open(stamp_path(tag)) as f:
                st = json.load(f)
        except (OSError, ValueError):
            return False
        return st.get("src") == src_digest and st.get("dst") == manifest_digest(reg, repo, tag)

    def record(tag, seconds):
        dst = manifest_digest(reg, repo, tag)
        if not dst:
            raise RuntimeError("%s:%s is not in the registry after the push" % (repo, tag))
        with open(stamp_path(tag), "w") as f:
            json.dump({"src": src_digest, "dst": dst, "seconds": round(seconds, 1)}, f)
        log("%s:%s done in %.0f s (%s)" % (repo, tag, seconds, dst[:19]))

    todo = [t for t in a.tags.split(",") if t and not current(t)]
    for t in a.tags.split(","):
        if t and t not in todo:
            log("%s:%s is up to date" % (repo, t))
    src_ref = "%s/%s:%s" % (reg, repo, a.src)

    ctr_todo = [t for t in todo if t in CTR_FLAGS]
    if ctr_todo:
        with Containerd(os.path.join(sdir, "containerd.log")) as ctd:
            ctd.ctr("content", "fetch", "--plain-http", src_ref)
            for t in ctr_todo:
                t0 = time.monotonic()
                dst = "%s/%s:%s" % (reg, repo, t)
                log("ctr-remote image convert %s --oci %s %s" % (" ".join(CTR_FLAGS[t]), src_ref, dst))
                ctd.ctr("image", "convert", *CTR_FLAGS[t], "--oci", src_ref, dst)
                ctd.ctr("image", "push", "--plain-http", dst)
                record(t, time.monotonic() - t0)

    if "cszstd" in todo:
        # Through a local oci: layout: pushing straight to the registry with
        # --dest-compress-format would reuse the gzip blobs it already has.
        t0 = time.monotonic()
        src_layout = a.oci
        tmp = os.path.join(sdir, "tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        if not src_layout:
            src_layout = os.path.join(tmp, "src")
            run(["skopeo", "--insecure-policy", "copy", "-q", "--preserve-digests", "--src-tls-verify=false",
                 "docker://" + src_ref, "oci:%s:%s" % (src_layout, a.src)])
        dst_layout = os.path.join(tmp, "cszstd")
        log("skopeo copy --dest-compress-format zstd:chunked oci:…:%s oci:…:cszstd" % a.src)
        run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-compress-format", "zstd:chunked",
             "oci:%s:%s" % (src_layout, a.src), "oci:%s:cszstd" % dst_layout])
        run(["skopeo", "--insecure-policy", "copy", "-q", "--preserve-digests", "--dest-tls-verify=false",
             "oci:%s:cszstd" % dst_layout, "docker://%s/%s:cszstd" % (reg, repo)])
        shutil.rmtree(tmp, ignore_errors=True)
        record("cszstd", time.monotonic() - t0)


if __name__ == "__main__":
    main()
