"""debmini: a tiny multi-platform Debian 12 image made from real Debian
packages, pushed to the session's plain registry, for `mlfs chroot` tests.

    debmini:latest    OCI image index: linux/arm64/v8, linux/arm/v7,
                      linux/s390x, linux/amd64 (amd64 deliberately last)
    debmini:riscv64   one OCI manifest whose config says linux/riscv64 (its
                      layers are the amd64 ones): an architecture this host
                      has no binfmt handler for, for the error path

Each platform has two gzip layers (real diff_ids), built from the .debs of
that Debian architecture, unpacked with `dpkg-deb -x` and merged-/usr the
way Debian 12 is (/bin -> usr/bin, /sbin -> usr/sbin, /lib -> usr/lib,
and /lib64 -> usr/lib64 on amd64, so every PT_INTERP path resolves):

  1. base: libc6, libc-bin (ldconfig), libgcc-s1, gcc-12-base,
     busybox-static with a symlink per usual applet (/bin/sh included);
     /etc/passwd and /etc/group with root, /root, /tmp (1777), /proc, /sys,
     /dev, /run, /var/tmp.
  2. dpkg: dpkg and its run-time closure (tar, libacl1, libselinux1,
     libpcre2-8-0, libbz2-1.0, liblzma5, libmd0, libzstd1, zlib1g), and a
     dpkg database that says every package of both layers is installed:
     /var/lib/dpkg/status (with Conffiles), available, info/ (each
     package's .list and control files; Multi-Arch: same ones as
     PKG:ARCH.*), updates/, triggers/, alternatives/, parts/, and
     docker-slim's path-excludes (docs, man pages, locales are left out).
     GNU tar replaces busybox's tar applet there (dpkg-deb runs `tar`).

Config: Env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin,
Cmd ["/bin/sh"], WorkingDir /root.  Every entry is root-owned with mtime
T0: the same .debs give the same blobs, so digests are stable.

The .debs come from `apt-get download PKG:ARCH` (the foreign dpkg
architecture is added and apt-get update run if apt does not know it yet)
and are kept in MLFS_DEB_CACHE (default /var/cache/mlfs-test-debs, shared
with contrib/demo-image.sh), so each is downloaded once per machine.  The
mirror has no s390x security updates: whatever version apt offers is used.

`build_hello_deb(dir)` makes hello-mlfs_1.0_all.deb (dpkg-deb --build):
/usr/bin/hello-mlfs, a #!/bin/sh script printing "hello from $(uname -m)".

Run as a script to build and check the root filesystems without mlfs:

    python3 tests/integration/debian_fixture.py WORKDIR [PLATFORM...]

unpacks each platform's layers into WORKDIR/rootfs-* and runs
`dpkg -i hello-mlfs.deb && hello-mlfs` there in a chroot (a private mount
namespace with /dev and /proc): natively or through qemu-user's binfmt.
"""

import collections
import concurrent.futures
import glob
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

import pytest

from registry import (
    MT_OCI_CONFIG, MT_OCI_INDEX, MT_OCI_LAYER_GZIP, MT_OCI_MANIFEST, RegistryClient, sha256_digest,
)

DEB_CACHE = os.environ.get("MLFS_DEB_CACHE", "/var/cache/mlfs-test-debs")
T0 = 1700000000
CREATED = "2023-11-14T22:13:20Z"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPO = "debmini"

# ask: the platform tests ask for; index: what the index says; deb: Debian's
# architecture; machine: `uname -m` in a chroot of it; qemu: binfmt entry.
Arch = collections.namedtuple("Arch", "ask os arch variant deb machine qemu")
ARCHES = [
    Arch("linux/arm64", "linux", "arm64", "v8", "arm64", "aarch64", "qemu-aarch64"),
    Arch("linux/arm/v7", "linux", "arm", "v7", "armhf", "armv7l", "qemu-arm"),
    Arch("linux/s390x", "linux", "s390x", "", "s390x", "s390x", "qemu-s390x"),
    Arch("linux/amd64", "linux", "amd64", "", "amd64", "x86_64", None),
]
BY_ASK = {a.ask: a for a in ARCHES}
# Not registered by contrib/binfmt.sh; tests check /proc before using it.
NO_BINFMT = Arch("linux/riscv64", "linux", "riscv64", "", None, "riscv64", "qemu-riscv64")

BASE_PKGS = ["libc6", "libc-bin", "libgcc-s1", "gcc-12-base", "busybox-static"]
DPKG_PKGS = ["dpkg", "tar", "libacl1", "libselinux1", "libpcre2-8-0", "libbz2-1.0", "liblzma5",
             "libmd0", "libzstd1", "zlib1g"]
APPLETS = [
    "sh", "ash", "[", "[[", "awk", "basename", "cat", "chgrp", "chmod", "chown", "cmp", "cp", "cut",
    "date", "dd", "df", "diff", "dirname", "du", "echo", "env", "expr", "false", "find", "grep",
    "gunzip", "gzip", "head", "hostname", "id", "kill", "ln", "ls", "md5sum", "mkdir", "mktemp",
    "mv", "od", "printf", "ps", "pwd", "readlink", "realpath", "rm", "rmdir", "sed", "seq",
    "sha256sum", "sleep", "sort", "stat", "sync", "tail", "tar", "tee", "test", "touch", "tr",
    "true", "uname", "uniq", "wc", "which", "xargs", "yes",
]
# docker's debian:*-slim /etc/dpkg/dpkg.cfg.d/docker (paths left out of the image)
EXCLUDES = ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/groff/*", "/usr/share/info/*",
            "/usr/share/lintian/*", "/usr/share/linda/*", "/usr/share/locale/*"]
INCLUDES = ["/usr/share/doc/*/copyright"]
PASSWD = "root:x:0:0:root:/root:/bin/sh\n"
GROUP = "root:x:0:\n"

SUBPROCESS_TIMEOUT = 600


class FixtureError(RuntimeError):
    pass


def _run(cmd, timeout=SUBPROCESS_TIMEOUT, **kw):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, start_new_session=True, **kw)
    except subprocess.TimeoutExpired:
        raise FixtureError("%s: timed out after %ss" % (" ".join(cmd), timeout))
    if r.returncode != 0:
        raise FixtureError("%s failed (%d):\n%s%s" % (" ".join(cmd), r.returncode, r.stdout, r.stderr))
    return r.stdout


# -- .debs ------------------------------------------------------------------------

def _deb_version(path):
    # NAME_VERSION_ARCH.deb, the epoch's colon spelt %3a
    return os.path.basename(path).split("_")[1].replace("%3a", ":")


def _newest(paths):
    best = None
    for p in paths:
        if best is None or subprocess.run(
                ["dpkg", "--compare-versions", _deb_version(p), "gt", _deb_version(best)],
                timeout=30).returncode == 0:
            best = p
    return best


def cached_deb(pkg, debarch, cache=DEB_CACHE):
    """The newest PKG_*_{DEBARCH,all}.deb in the cache, or None."""
    paths = []
    for a in (debarch, "all"):
        paths += glob.glob(os.path.join(glob.escape(cache), "%s_*_%s.deb" % (glob.escape(pkg), a)))
    return _newest(paths) if paths else None


def _apt_knows(debarch, pkg):
    return subprocess.run(["apt-cache", "show", "--no-all-versions", "%s:%s" % (pkg, debarch)],
                          capture_output=True, timeout=120).returncode == 0


def ensure_apt_arch(debarch, probe="libc6"):
    """apt can download DEBARCH packages: add the dpkg architecture and
    update the lists if it cannot yet (root)."""
    if _apt_knows(debarch, probe):
        return
    native = _run(["dpkg", "--print-architecture"]).strip()
    foreign = _run(["dpkg", "--print-foreign-architectures"]).split()
    if debarch != native and debarch not in foreign:
        _run(["dpkg", "--add-architecture", debarch])
    # A security index missing for an architecture (s390x on some mirrors)
    # makes apt-get update exit 100 and does no harm: judge by apt-cache.
    subprocess.run(["apt-get", "-q", "update"], capture_output=True, timeout=SUBPROCESS_TIMEOUT,
                   stdin=subprocess.DEVNULL)
    if not _apt_knows(debarch, probe):
        raise FixtureError("apt knows no %s:%s even after apt-get update" % (probe, debarch))


def fetch_debs(wanted, cache=DEB_CACHE, log=None):
    """wanted: {debarch: [pkg...]} -> {debarch: {pkg: path of its .deb}},
    downloading what the cache lacks with one apt-get download."""
    os.makedirs(cache, exist_ok=True)
    missing = ["%s:%s" % (p, a) for a, pkgs in sorted(wanted.items()) for p in pkgs
               if not cached_deb(p, a, cache)]
    if missing:
        for a in sorted({m.split(":")[1] for m in missing}):
            ensure_apt_arch(a)
        tmp = tempfile.mkdtemp(prefix=".download-", dir=cache)
        try:
            os.chmod(tmp, 0o755)
            _run(["apt-get", "-q", "download"] + missing, cwd=tmp)
            for name in os.listdir(tmp):
                if name.endswith(".deb"):
                    os.replace(os.path.join(tmp, name), os.path.join(cache, name))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if log is not None:
            log.append("downloaded %d .debs: %s" % (len(missing), " ".join(missing)))
    out = {}
    for a, pkgs in wanted.items():
        out[a] = {}
        for p in pkgs:
            out[a][p] = cached_deb(p, a, cache)
            if not out[a][p]:
                raise FixtureError("apt-get download %s:%s left no .deb in %s" % (p, a, cache))
    return out


# -- unpacking and merging /usr ----------------------------------------------------------

def _excluded(path):
    """Whether an absolute path is left out by EXCLUDES/INCLUDES (dpkg's fnmatch)."""
    import fnmatch
    if any(fnmatch.fnmatchcase(path, pat) for pat in INCLUDES):
        return False
    return any(fnmatch.fnmatchcase(path, pat) for pat in EXCLUDES)


def _prune_excluded(root):
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        rel = "/" + os.path.relpath(dirpath, root)
        for n in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            if _excluded(os.path.join(rel, n)):
                os.unlink(os.path.join(dirpath, n))
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if os.path.isdir(p) and not os.path.islink(p) and _excluded(os.path.join(rel, d)) \
                    and not os.listdir(p):
                os.rmdir(p)


def _move_merge(src, dst):
    """Move the tree src into dst, merging directories; a clash is an error."""
    if not os.path.lexists(dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.rename(src, dst)
        return
    if os.path.isdir(src) and not os.path.islink(src) and os.path.isdir(dst) and not os.path.islink(dst):
        for name in sorted(os.listdir(src)):
            _move_merge(os.path.join(src, name), os.path.join(dst, name))
        os.rmdir(src)
        return
    raise FixtureError("usr-merge: both %s and %s exist" % (src, dst))


def merge_usr(root):
    """Move /bin, /sbin, /lib* into /usr (the packages still ship them there)."""
    for d in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = os.path.join(root, d)
        if os.path.isdir(p) and not os.path.islink(p):
            _move_merge(p, os.path.join(root, "usr", d))


def unpack_debs(debs, root):
    """dpkg-deb -x each .deb into root (then merged-/usr, excludes pruned);
    returns [(.deb path, its info/*.list lines, its control files' dir)]."""
    os.makedirs(root, exist_ok=True)
    out = []
    for deb in debs:
        _run(["dpkg-deb", "-x", deb, root])
        ctl = tempfile.mkdtemp(prefix="ctl-", dir=os.path.dirname(root))
        _run(["dpkg-deb", "-e", deb, ctl])
        listing = []
        # The file list as dpkg records it: "/." first, then every entry.
        names = _tar_names_of_deb(deb)
        for n in names:
            n = n[2:] if n.startswith("./") else n
            path = "/" + n.rstrip("/") if n not in ("", ".") else "/."
            if path != "/." and _excluded(path):
                continue
            listing.append(path)
        out.append((deb, listing, ctl))
    merge_usr(root)
    _prune_excluded(root)
    return out


def _tar_names_of_deb(deb):
    p = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], capture_output=True, timeout=120)
    if p.returncode != 0:
        raise FixtureError("dpkg-deb --fsys-tarfile %s failed: %s" % (deb, p.stderr.decode()))
    with tarfile.open(fileobj=io.BytesIO(p.stdout)) as t:
        return [m.name if not m.isdir() else m.name.rstrip("/") + "/" for m in t.getmembers()]


# -- the dpkg database ---------------------------------------------------------------------

def _control(ctl):
    with open(os.path.join(ctl, "control")) as f:
        return f.read().rstrip("\n")


def _field(control, name):
    for line in control.split("\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return None


def write_dpkg_db(root, unpacked, rootfs_for_md5):
    """var/lib/dpkg for `unpacked` (from unpack_debs of every layer):
    status, available, info/, updates/, triggers/, alternatives/, parts/."""
    db = os.path.join(root, "var", "lib", "dpkg")
    for d in ("info", "updates", "triggers", "alternatives", "parts"):
        os.makedirs(os.path.join(db, d), exist_ok=True)
    paragraphs = []
    for deb, listing, ctl in unpacked:
        control = _control(ctl)
        pkg, arch = _field(control, "Package"), _field(control, "Architecture")
        name = "%s:%s" % (pkg, arch) if (_field(control, "Multi-Arch") or "") == "same" else pkg
        lines = control.split("\n")
        lines.insert(1, "Status: install ok installed")
        conffiles = []
        if os.path.exists(os.path.join(ctl, "conffiles")):
            with open(os.path.join(ctl, "conffiles")) as f:
                for cl in f:
                    if cl.strip():
                        path = cl.split()[-1]
                        with open(os.path.join(rootfs_for_md5, path.lstrip("/")), "rb") as cf:
                            conffiles.append(" %s %s" % (path, hashlib.md5(cf.read()).hexdigest()))
        if conffiles:
            at = next(i for i, l in enumerate(lines) if l.startswith("Description:"))
            lines[at:at] = ["Conffiles:"] + conffiles
        paragraphs.append((pkg, arch, "\n".join(lines)))
        with open(os.path.join(db, "info", name + ".list"), "w") as f:
            f.write("".join(p + "\n" for p in listing))
        for member in sorted(os.listdir(ctl)):
            if member != "control":
                shutil.copy2(os.path.join(ctl, member), os.path.join(db, "info", "%s.%s" % (name, member)))
        shutil.rmtree(ctl)
    paragraphs.sort()
    with open(os.path.join(db, "status"), "w") as f:
        f.write("".join(p[2] + "\n\n" for p in paragraphs))
    for empty in ("available", "diversions", "statoverride"):
        open(os.path.join(db, empty), "w").close()


# -- layers ------------------------------------------------------------------------------------

def tar_tree(root):
    """An uncompressed tar of root's contents, sorted, root-owned, mtime T0
    (hardlinks kept as such)."""
    buf = io.BytesIO()

    def norm(info):
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = T0
        return info

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = os.path.relpath(dirpath, root)
            for name in sorted(dirnames + filenames):
                arc = name if rel == "." else os.path.join(rel, name)
                tar.add(os.path.join(dirpath, name), arcname=arc, recursive=False, filter=norm)
    return buf.getvalue()


def _write(root, rel, data, mode=0o644):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w") as f:
        f.write(data)
    os.chmod(p, mode)


def _mkdir(root, rel, mode=0o755):
    p = os.path.join(root, rel)
    os.makedirs(p, exist_ok=True)
    os.chmod(p, mode)


def build_rootfs_layers(arch, workdir, cache=DEB_CACHE, log=None):
    """The two uncompressed layer tars of `arch` and the packages in them:
    ([base tar, dpkg tar], {"base": [deb names], "dpkg": [...]})."""
    debs = fetch_debs({arch.deb: BASE_PKGS + DPKG_PKGS}, cache, log)[arch.deb]
    top = os.path.join(workdir, arch.deb)
    shutil.rmtree(top, ignore_errors=True)
    os.makedirs(top)
    base, dpkgl, merged = (os.path.join(top, n) for n in ("base", "dpkg", "merged"))

    # 1. base
    unpacked_base = unpack_debs([debs[p] for p in BASE_PKGS], base)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):
        _mkdir(base, target)
        os.symlink(target, os.path.join(base, link))
    if os.path.isdir(os.path.join(base, "usr", "lib64")):
        os.symlink("usr/lib64", os.path.join(base, "lib64"))
    bb = os.path.join(base, "usr", "bin", "busybox")
    if not os.path.isfile(bb):
        raise FixtureError("busybox-static:%s has no /bin/busybox" % arch.deb)
    for applet in APPLETS:
        p = os.path.join(base, "usr", "bin", applet)
        if not os.path.lexists(p) and not os.path.lexists(os.path.join(base, "usr", "sbin", applet)):
            os.symlink("busybox", p)
    _write(base, "etc/passwd", PASSWD)
    _write(base, "etc/group", GROUP)
    for d, mode in (("root", 0o700), ("tmp", 0o1777), ("var/tmp", 0o1777), ("proc", 0o555),
                    ("sys", 0o555), ("dev", 0o755), ("run", 0o755), ("home", 0o755),
                    ("usr/local/bin", 0o755), ("usr/local/sbin", 0o755), ("var/log", 0o755)):
        _mkdir(base, d, mode)

    # 2. dpkg, its closure and a database of both layers
    unpacked_dpkg = unpack_debs([debs[p] for p in DPKG_PKGS], dpkgl)
    for d in ("var/log", "var/cache", "etc/dpkg/dpkg.cfg.d"):
        _mkdir(dpkgl, d)
    _write(dpkgl, "etc/dpkg/dpkg.cfg.d/excludes",
           "".join("path-exclude %s\n" % p for p in EXCLUDES) +
           "".join("path-include %s\n" % p for p in INCLUDES))
    # conffiles' md5sums: from a merged view of both layers
    shutil.copytree(base, merged, symlinks=True)
    for name in os.listdir(dpkgl):
        _copy_over(os.path.join(dpkgl, name), os.path.join(merged, name))
    write_dpkg_db(dpkgl, unpacked_base + unpacked_dpkg, merged)
    shutil.rmtree(merged)

    tars = [tar_tree(base), tar_tree(dpkgl)]
    packages = {
        "base": [os.path.basename(debs[p]) for p in BASE_PKGS],
        "dpkg": [os.path.basename(debs[p]) for p in DPKG_PKGS],
    }
    shutil.rmtree(top, ignore_errors=True)
    return tars, packages


def _copy_over(src, dst):
    if os.path.isdir(src) and not os.path.islink(src):
        os.makedirs(dst, exist_ok=True)
        for n in os.listdir(src):
            _copy_over(os.path.join(src, n), os.path.join(dst, n))
    else:
        if os.path.lexists(dst):
            os.unlink(dst)
        shutil.copy2(src, dst, follow_symlinks=False)


def image_config(arch, diff_ids):
    cfg = {
        "created": CREATED,
        "architecture": arch.arch,
        "os": arch.os,
        "config": {"Env": ["PATH=" + PATH], "Cmd": ["/bin/sh"], "WorkingDir": "/root"},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [
            {"created": CREATED, "created_by": "debmini base: " + " ".join(BASE_PKGS)},
            {"created": CREATED, "created_by": "debmini dpkg: " + " ".join(DPKG_PKGS)},
        ],
    }
    if arch.variant:
        cfg["variant"] = arch.variant
    return cfg


def tar_entry_names(raw):
    """Entry names of an uncompressed layer tar, normalised ("a/b", no slash)."""
    with tarfile.open(fileobj=io.BytesIO(raw)) as t:
        return [m.name.rstrip("/") for m in t.getmembers()]


# -- pushing ------------------------------------------------------------------------------------

class PlatformImage:
    """One platform's image: arch (Arch), digest, config (dict), layers
    [{digest, size, diff_id}], blobs [gzip bytes], paths (every path in
    the merged tree, "usr/bin/busybox" style), packages."""

    def __init__(self, arch, **kw):
        self.arch = arch
        self.__dict__.update(kw)


class DebMini:
    """What build_debmini pushed: .ref (REF of the index), .noarch_ref,
    .platforms {ask: PlatformImage}, .hello_deb (path), .hello_bytes,
    .registry, .client, .build_seconds, .log."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def image(self, ask):
        return self.platforms[ask]

    def unpack(self, ask, dest):
        """The platform's rootfs unpacked into dest (GNU tar, layer by layer)."""
        return unpack_layers(self.platforms[ask].blobs, dest)


def unpack_layers(blobs, dest):
    os.makedirs(dest, exist_ok=True)
    for blob in blobs:
        r = subprocess.run(["tar", "-xzpf", "-", "--numeric-owner", "-C", dest], input=blob,
                           capture_output=True, timeout=300)
        if r.returncode != 0:
            raise FixtureError("unpacking a layer into %s failed: %s" % (dest, r.stderr.decode()))
    return dest


def _push_manifest(client, repo, ref, config, blobs, diff_ids):
    """Push config, layers and manifest; tagged `ref`, or by its digest
    alone (as index members are) when ref is None."""
    cbytes = json.dumps(config, indent=2, sort_keys=True).encode()
    layers = [{"mediaType": MT_OCI_LAYER_GZIP, "digest": client.push_blob(repo, b), "size": len(b)}
              for b in blobs]
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": client.push_blob(repo, cbytes),
                   "size": len(cbytes)},
        "layers": layers,
    }
    body = json.dumps(manifest, indent=2).encode()
    digest = client.put_manifest(repo, ref or sha256_digest(body), body, MT_OCI_MANIFEST)
    return digest, len(body), [dict(l, diff_id=d) for l, d in zip(layers, diff_ids)]


def build_debmini(registry, workdir, cache=DEB_CACHE, arches=ARCHES):
    """Builds every platform's layers, pushes debmini:latest (index),
    debmini:riscv64 and returns a DebMini."""
    t_start = time.monotonic()
    os.makedirs(workdir, exist_ok=True)
    client = RegistryClient(registry.url)
    log = []
    # Downloads first, in one apt-get call; then the platforms two at a
    # time (dpkg-deb and zlib run outside the GIL).
    fetch_debs({a.deb: BASE_PKGS + DPKG_PKGS for a in arches}, cache, log)

    def build(arch):
        t0 = time.monotonic()
        tars, packages = build_rootfs_layers(arch, workdir, cache)
        blobs = [gzip.compress(t, compresslevel=6, mtime=0) for t in tars]
        return tars, blobs, packages, time.monotonic() - t0

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        built = list(pool.map(build, arches))

    platforms = {}
    index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": []}
    for arch, (tars, blobs, packages, seconds) in zip(arches, built):
        diff_ids = [sha256_digest(t) for t in tars]
        config = image_config(arch, diff_ids)
        mdigest, msize, layers = _push_manifest(client, REPO, None, config, blobs, diff_ids)
        paths = set()
        for t in tars:
            paths.update(tar_entry_names(t))
        platform = {"architecture": arch.arch, "os": arch.os}
        if arch.variant:
            platform["variant"] = arch.variant
        index["manifests"].append({"mediaType": MT_OCI_MANIFEST, "digest": mdigest, "size": msize,
                                   "platform": platform})
        platforms[arch.ask] = PlatformImage(arch, digest=mdigest, config=config, layers=layers,
                                            blobs=blobs, paths=paths, packages=packages,
                                            sizes=[len(t) for t in tars])
        log.append("%s: layers %s bytes (gzip %s), built in %.1fs" % (
            arch.ask, "+".join(str(len(t)) for t in tars), "+".join(str(len(b)) for b in blobs),
            seconds))
    body = json.dumps(index, indent=2).encode()
    index_digest = client.put_manifest(REPO, "latest", body, MT_OCI_INDEX)

    # riscv64: the amd64 layers under a config no binfmt handler here runs
    amd = platforms.get("linux/amd64") or next(iter(platforms.values()))
    rv_config = image_config(NO_BINFMT, [l["diff_id"] for l in amd.layers])
    rv_digest, _, _ = _push_manifest(client, REPO, "riscv64", rv_config, amd.blobs,
                                     [l["diff_id"] for l in amd.layers])

    hello = build_hello_deb(os.path.join(workdir, "hello"))
    with open(hello, "rb") as f:
        hello_bytes = f.read()
    return DebMini(registry=registry, client=client, host=registry.host, repo=REPO,
                   ref="%s/%s:latest" % (registry.host, REPO),
                   noarch_ref="%s/%s:riscv64" % (registry.host, REPO), noarch_digest=rv_digest,
                   index_digest=index_digest, platforms=platforms, hello_deb=hello,
                   hello_bytes=hello_bytes, build_seconds=time.monotonic() - t_start, log=log)


# -- the package the tests install -----------------------------------------------------------------

HELLO_SCRIPT = '#!/bin/sh\necho "hello from $(uname -m)"\n'
HELLO_CONTROL = """Package: hello-mlfs
Version: 1.0
Architecture: all
Maintainer: mlfs tests <mlfs-tests@localhost>
Section: misc
Priority: optional
Description: prints which machine it runs on
 A package for mlfs chroot's tests: /usr/bin/hello-mlfs says
 "hello from $(uname -m)".
"""


def build_hello_deb(workdir):
    """hello-mlfs_1.0_all.deb in workdir (dpkg-deb --build); its path."""
    root = os.path.join(workdir, "hello-mlfs")
    shutil.rmtree(root, ignore_errors=True)
    _write(root, "DEBIAN/control", HELLO_CONTROL)
    _write(root, "usr/bin/hello-mlfs", HELLO_SCRIPT, mode=0o755)
    for d in ("", "DEBIAN", "usr", "usr/bin"):
        os.chmod(os.path.join(root, d), 0o755)
    out = os.path.join(workdir, "hello-mlfs_1.0_all.deb")
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(T0))
    _run(["dpkg-deb", "--root-owner-group", "--build", root, out], env=env)
    return out


# -- the pytest fixture --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def debmini(plain_registry, session_dir):
    """build_debmini() into the plain registry (the one `demo` uses), once per session."""
    workdir = os.path.join(session_dir, "debmini-build")
    try:
        d = build_debmini(plain_registry, workdir)
    except FixtureError as e:
        pytest.fail("building debmini failed: %s" % e)
    with open(os.path.join(workdir, "build.log"), "w") as f:
        f.write("".join(l + "\n" for l in d.log))
        f.write("built and pushed in %.1fs\n" % d.build_seconds)
    return d


# -- checking a rootfs without mlfs --------------------------------------------------------------------

CHROOT_SCRIPT = r'''
set -e
root=$1; shift
mount --make-rprivate /
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
exec chroot "$root" /usr/bin/env -i PATH=''' + PATH + r''' HOME=/root /bin/sh -c "cd /root && $1"
'''


def chroot_rootfs(root, script, timeout=300):
    """Run `script` with /bin/sh in a chroot of root, in a private mount
    namespace (with /dev and /proc there, gone with it).  Returns CompletedProcess."""
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", CHROOT_SCRIPT,
                           "sh", root, script],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          start_new_session=True)


INSTALL_SCRIPT = "dpkg -i /tmp/hello.deb && hello-mlfs && dpkg-query -W hello-mlfs && uname -m"


def check_rootfs(image, hello_deb, dest):
    """Unpack image's layers into dest, copy hello.deb in, dpkg -i it and
    run it in a chroot.  Returns the CompletedProcess."""
    shutil.rmtree(dest, ignore_errors=True)
    unpack_layers(image.blobs, dest)
    shutil.copy(hello_deb, os.path.join(dest, "tmp", "hello.deb"))
    return chroot_rootfs(dest, INSTALL_SCRIPT)


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    workdir = os.path.abspath(argv[1])
    asks = argv[2:] or [a.ask for a in ARCHES]
    os.makedirs(workdir, exist_ok=True)
    hello = build_hello_deb(os.path.join(workdir, "hello"))
    status = 0
    for ask in asks:
        arch = BY_ASK[ask]
        t0 = time.monotonic()
        log = []
        tars, packages = build_rootfs_layers(arch, os.path.join(workdir, "build"), log=log)
        blobs = [gzip.compress(t, compresslevel=6, mtime=0) for t in tars]
        t1 = time.monotonic()
        image = PlatformImage(arch, blobs=blobs)
        r = check_rootfs(image, hello, os.path.join(workdir, "rootfs-" + arch.deb))
        t2 = time.monotonic()
        print("== %s: layers %s bytes (gzip %s), built in %.1fs, checked in %.1fs, rc=%d %s" % (
            ask, [len(t) for t in tars], [len(b) for b in blobs], t1 - t0, t2 - t1, r.returncode,
            "; ".join(log)))
        print(r.stdout + r.stderr)
        if r.returncode != 0 or ("hello from %s" % arch.machine) not in r.stdout:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
