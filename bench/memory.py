#!/usr/bin/python3
"""mlfs memory benchmark (issue 11 §4): the daemon's peak RSS for a ~100k-entry
image, amd64 natively and armhf under qemu-user.  Stdlib only; as root.

    memory.py --work DIR [--mlfs BIN] [--mlfs-armhf BIN --sysroot DIR]
              [--qemu qemu-arm-static] [--runs N] [--into RESULTS.md]
              [--registry HOST:PORT]
    memory.py --work DIR --report-only [--into RESULTS.md]

The image (built once with Python's tarfile + `gzip -n -6`, cached in
DIR/memory-image/oci; pushed when the registry lacks it): the usual shape of
a real image, a Debian-like base layer of ~20k entries (merged-usr symlinks,
/etc, binaries and libraries with their .so symlinks, docs, man pages,
zoneinfo, locales, dpkg's info files, apt lists) under one application layer
of ~80k entries (node_modules, Python dist-packages with __pycache__,
headers, libraries, usr/share/doc/pkg-N/...; a few whiteouts, an opaque
directory and files of the base replaced), small files, some symlinks and
hardlinks, realistic path lengths.  An OCI index for linux/amd64 and
linux/arm/v7 (the same layers), so each build picks its own platform.

Each run, for each build: a new empty cache, `mlfs mount REF DIR -f -o
cache=CACHE` in the foreground (the armhf build as `qemu-arm-static -L
SYSROOT mlfs ...`: the measured PID is the qemu process), os.walk + lstat of
every entry, a read of ~100 files spread over both layers, then the daemon's
VmHWM, VmRSS and Threads from /proc/PID/status and its mappings from
/proc/PID/smaps, then unmount.  While the walk runs a thread samples VmRSS and
Threads every 50 ms (and, under qemu, the guest's part of smaps every 200 ms).

qemu's own memory, two ways:
- baseline: VmHWM of a static armhf program that only pause()s, under the
  same qemu; guest ~= qemu process VmHWM - that baseline;
- split: a 32-bit guest lives in the 4 GiB region qemu reserves for it
  (guest_base .. +4 GiB, one run of adjacent mappings around the guest
  binary); the Rss of the mappings inside it is the guest's memory (its heap,
  stacks, mmaps, binary and libraries), the rest is qemu's (its binary,
  heap, translated-code buffer).  That is an instant's value, not a
  high-water mark, so the sampler notes when VmHWM last rose and qemu's own
  part in the smaps sample nearest that moment: guest peak ~= VmHWM - that.

Output: the section "## Memory on a small board (issue 11)" on stdout, in
DIR/memory-results.md and (with --into) in RESULTS.md; raw figures in
DIR/memory-results.json.
"""

import argparse
import datetime
import hashlib
import io
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cache    # noqa: E402  (start_registry, stop_registry, put_section)

SECTION = "## Memory on a small board (issue 11)"
RECIPE_VERSION = "1"
BASE_ENTRIES = 20000
TOP_ENTRIES = 80000
SIZE_SCALE = 0.3            # the files' sizes: the memory follows the entries, the time the bytes
REPO, TAG = "mlfs-mem", "100k"
MTIME = 1700000000
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
PLATFORMS = [{"architecture": "amd64", "os": "linux"},
             {"architecture": "arm", "os": "linux", "variant": "v7"}]
TARGET_FIXED = 20e6         # bytes (decimal MB, as bench.py)
TARGET_PER_ENTRY = 200
MOUNT_WAIT = 180.0
READS = 100                 # files read after the walk (plus the 4 largest)
IDLE_C = "#include <unistd.h>\nint main(void) { pause(); return 0; }\n"


def log(msg):
    print("memory: " + msg, file=sys.stderr, flush=True)


def now():
    return time.perf_counter()


# -- the image ------------------------------------------------------------------

SYL = ["ba", "co", "da", "fe", "gi", "ha", "jo", "ka", "li", "mo", "nu", "pa", "qi", "ro", "sa",
       "te", "vi", "wo", "xe", "yu", "zo", "ar", "el", "in", "or", "ux", "st", "tr", "pl", "gn"]
WORDS = ("the of and to in is for that on with as by this be are from or it an at not which "
         "file function return value error data config default path module package version "
         "license copyright software permission notice include define static const struct "
         "int char void if else while for switch case break self import def class from none "
         "true false string list dict object type name size buffer index layer cache image").split()


class Layer:
    """Entries of one layer: path -> (kind, arg, mode); kind: d, f (arg: size,
    content class), l (symlink, arg: target), h (hardlink, arg: target path)."""

    def __init__(self, name, below=None):
        self.name = name
        self.e = {}
        self.hard = []          # hardlink paths, emitted after every other entry
        self.below = below or {}  # the layer underneath: a non-directory never replaces its directory

    def _free(self, path, kind):
        """May path be added?  Made-up names collide now and then: the first one wins."""
        if path in self.e:
            return kind == "d" and self.e[path][0] == "d"
        if kind != "d" and self.below.get(path, ("x",))[0] == "d":
            return False
        parts = path.split("/")
        for i in range(1, len(parts)):
            if self.e.get("/".join(parts[:i]), ("d",))[0] != "d":
                return False
        return True

    def _add(self, path, kind, arg, mode):
        if not self._free(path, kind):
            return False
        parts = path.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in self.e:
                self.e[d] = ("d", None, 0o755)
        self.e[path] = (kind, arg, mode)
        return True

    def dir(self, path, mode=0o755):
        self._add(path, "d", None, mode)

    def file(self, path, size, cls="t", mode=0o644):
        self._add(path, "f", (size, cls), mode)

    def symlink(self, path, target):
        self._add(path, "l", target, 0o777)

    def hardlink(self, path, target):
        if self.e.get(target, ("x",))[0] == "f" and self._add(path, "h", target, 0o755):
            self.hard.append(path)

    def whiteout(self, path):
        d, _, b = path.rpartition("/")
        self.file((d + "/" if d else "") + ".wh." + b, 0)

    def opaque(self, d):
        self.dir(d)
        self.file(d + "/.wh..wh..opq", 0)

    def __len__(self):
        return len(self.e)

    def order(self):
        hard = set(self.hard)
        rest = sorted((p for p in self.e if p not in hard), key=lambda p: p.split("/"))
        return rest + self.hard


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)
        self.used = set()

    def name(self, lo=2, hi=4, unique=False):
        """A made-up name; unique=True for package names (never the same twice)."""
        while True:
            k = self.r.randint(lo, hi) + (self.r.random() < 0.6) + (self.r.random() < 0.3)
            n = "".join(self.r.choice(SYL) + (self.r.choice("-_") if i + 1 < k and self.r.random() < 0.15 else "")
                        for i in range(k))
            if not unique or n not in self.used:
                self.used.add(n)
                return n

    def size(self, median, sigma=1.2, cap=1 << 20):
        return max(0, min(cap, int(self.r.lognormvariate(0, sigma) * median * SIZE_SCALE)))

    def ver(self):
        return "%d.%d.%d" % (self.r.randint(0, 12), self.r.randint(0, 30), self.r.randint(0, 20))


def make_base(g):
    L = Layer("base")
    for d in ("bin", "sbin", "lib", "lib64"):
        L.symlink(d, "usr/" + d)
    for d in ("boot", "dev", "home", "media", "mnt", "opt", "proc", "root", "run", "srv", "sys",
              "usr/local/bin", "usr/local/lib", "usr/local/share", "var/local", "var/log", "var/mail",
              "var/spool", "var/opt", "var/backups"):
        L.dir(d)
    L.dir("tmp", 0o1777)
    L.dir("var/tmp", 0o1777)
    pkgs = [g.name(unique=True) for _ in range(250)]
    for i in range(60):
        L.file("etc/%s%s" % (g.name(2, 3), g.r.choice(["", ".conf", ".cfg", "rc"])), g.size(400))
    for i in range(40):
        d = "etc/%s%s" % (g.name(2, 3), g.r.choice([".d", ".d", "", "/conf.d"]))
        for _ in range(g.r.randint(2, 8)):
            L.file("%s/%s" % (d, g.name(1, 3)), g.size(500))
    bins = []
    for i in range(450):
        p = "usr/bin/" + g.name(1, 3)
        L.file(p, g.size(30000, 1.0), "b", 0o755)
        bins.append(p)
    for i in range(120):
        L.file("usr/sbin/" + g.name(1, 3), g.size(25000, 1.0), "b", 0o755)
    for i in range(80):
        L.symlink("etc/alternatives/" + g.name(1, 3), "/" + g.r.choice(bins))
    for i in range(60):
        L.symlink("usr/bin/" + g.name(1, 3), g.r.choice(bins).rsplit("/", 1)[1])
    for t in g.r.sample(bins, 15):
        L.hardlink(t + "%d" % g.r.randint(2, 5), t)
    for i in range(300):
        n, v = g.name(1, 3), g.r.randint(0, 9)
        real = "usr/lib/x86_64-linux-gnu/lib%s.so.%d.%d.%d" % (n, v, g.r.randint(0, 40), g.r.randint(0, 9))
        L.file(real, g.size(60000, 1.1), "b")
        L.symlink("usr/lib/x86_64-linux-gnu/lib%s.so.%d" % (n, v), real.rsplit("/", 1)[1])
    for i in range(600):
        depth = g.r.randint(0, 3)
        d = "/".join(g.name(1, 2).capitalize() for _ in range(depth))
        L.file("usr/lib/x86_64-linux-gnu/perl-base/%s%s.pm" % (d + "/" if d else "", g.name(1, 3).capitalize()),
               g.size(3000))
    for p in pkgs:
        L.file("usr/share/doc/%s/copyright" % p, g.size(1500, 0.8))
        L.file("usr/share/doc/%s/changelog.Debian.gz" % p, g.size(2500), "b")
        L.file("var/lib/dpkg/info/%s.list" % p, g.size(1200))
        L.file("var/lib/dpkg/info/%s.md5sums" % p, g.size(1500))
        if g.r.random() < 0.4:
            L.file("var/lib/dpkg/info/%s.postinst" % p, g.size(800), mode=0o755)
    for i in range(1200):
        L.file("usr/share/man/man%s/%s.%s.gz" % ((s := g.r.choice("1111588")), g.name(1, 3), s),
               g.size(2500), "b")
    for lang in ("de", "fr", "es", "it", "ja", "pl", "ru", "sv"):
        for i in range(40):
            L.file("usr/share/man/%s/man1/%s.1.gz" % (lang, g.name(1, 3)), g.size(2500), "b")
    zones = []
    for region in ("Africa", "America", "Antarctica", "Asia", "Atlantic", "Australia", "Europe",
                   "Indian", "Pacific", "Etc"):
        for i in range(60):
            z = "usr/share/zoneinfo/%s/%s" % (region, g.name(2, 4).capitalize())
            L.file(z, g.size(1200, 0.5), "b")
            L.file(z.replace("zoneinfo/", "zoneinfo/right/"), g.size(1700, 0.5), "b")
            zones.append(z)
    L.symlink("usr/share/zoneinfo/posix", ".")
    for z in g.r.sample(zones, 100):
        L.symlink("usr/share/zoneinfo/%s" % g.name(2, 3).capitalize(), z.split("zoneinfo/", 1)[1])
    L.symlink("etc/localtime", "/usr/share/zoneinfo/Etc/" + "UTC")
    L.file("usr/share/zoneinfo/Etc/UTC", 114, "b")
    for f in ("status", "available", "diversions", "statoverride", "cmethopt"):
        L.file("var/lib/dpkg/" + f, g.size(20000, 0.5))
    for i in range(8):
        L.file("var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_%s" % g.name(2, 3), g.size(40000, 0.8))
    L.file("var/lib/apt/lists/lock", 0)
    for i in range(6):
        L.file("var/cache/apt/%s.bin" % g.name(2, 3), g.size(30000), "b")
    codes = [a + b for a in "abcdefghijklmnopqrstuvwxyz" for b in "abcdefghijklmnopqrstuvwxyz"]
    langs = [c + g.r.choice(["", "", "_" + g.r.choice(codes).upper(), "@latin"]) for c in g.r.sample(codes, 120)]
    domains = g.r.sample(pkgs, 150)
    k = 0
    while len(L) < BASE_ENTRIES and k < 10 * BASE_ENTRIES:
        L.file("usr/share/locale/%s/LC_MESSAGES/%s.mo" % (langs[k % len(langs)], domains[k // len(langs) % len(domains)]),
               g.size(2500), "b")
        k += 1
    return L


def make_top(g, base):
    L = Layer("app", base.e)
    # what an `apt-get install ... && rm -rf /var/lib/apt/lists/*` leaves
    for p in sorted(base.e):
        if p.startswith("var/lib/apt/lists/") and base.e[p][0] == "f":
            L.whiteout(p)
    L.opaque("var/cache/apt")
    L.file("var/cache/apt/pkgcache.bin", g.size(30000), "b")
    for f in ("status", "available"):
        L.file("var/lib/dpkg/" + f, g.size(60000, 0.5))
    replaced = g.r.sample(sorted(p for p, v in base.e.items() if v[0] == "f"), 40)
    for p in replaced:
        L.file(p, base.e[p][1][0] + g.r.randint(0, 500), base.e[p][1][1], base.e[p][2])
    # node_modules
    nm = "usr/lib/node_modules"
    bins = []

    def node_pkg(root, name, nested):
        L.file("%s/%s/package.json" % (root, name), g.size(1200, 0.6))
        for f in g.r.sample(["README.md", "LICENSE", "CHANGELOG.md", "index.js", "index.d.ts"], g.r.randint(2, 5)):
            L.file("%s/%s/%s" % (root, name, f), g.size(2000))
        for d in g.r.sample(["lib", "dist", "src", "types", "build/Release", "dist/esm", "dist/cjs"], g.r.randint(1, 3)):
            for _ in range(g.r.randint(2, 12)):
                stem = g.name(1, 3)
                ext = {"types": ".d.ts"}.get(d, ".js")
                L.file("%s/%s/%s/%s%s" % (root, name, d, stem, ext), g.size(2500))
                if d.startswith("dist") and g.r.random() < 0.5:
                    L.file("%s/%s/%s/%s%s.map" % (root, name, d, stem, ext), g.size(4000))
        if g.r.random() < 0.3:
            b = "%s/%s/bin/%s" % (root, name, g.name(1, 2))
            L.file(b, g.size(800), mode=0o755)
            bins.append(b)
        if nested:
            for _ in range(g.r.randint(1, 3)):
                node_pkg("%s/%s/node_modules" % (root, name), g.name(2, 4), False)

    for i in range(1100):
        name = g.name(2, 4, unique=True)
        if g.r.random() < 0.15:
            name = "@%s/%s" % (g.name(1, 2), name)
        node_pkg(nm, name, g.r.random() < 0.2)
    for b in bins:
        L.symlink("%s/.bin/%s" % (nm, b.rsplit("/", 1)[1]), "../" + b[len(nm) + 1:])
    for b in g.r.sample(bins, 60):
        L.symlink("usr/bin/" + b.rsplit("/", 1)[1] + "-js", "../lib/node_modules/" + b[len(nm) + 1:])
    # Python
    sp = "usr/local/lib/python3.11/dist-packages"
    for i in range(240):
        pkg, v = g.name(2, 4, unique=True), g.ver()
        mods = []
        for d in [""] + ["%s/" % g.name(1, 2) for _ in range(g.r.randint(0, 4))]:
            for m in ["__init__"] + [g.name(1, 3) for _ in range(g.r.randint(2, 14))]:
                mods.append((d, m))
        for d, m in mods:
            L.file("%s/%s/%s%s.py" % (sp, pkg, d, m), g.size(4000))
            L.file("%s/%s/%s__pycache__/%s.cpython-311.pyc" % (sp, pkg, d, m), g.size(3500), "b")
        di = "%s/%s-%s.dist-info" % (sp, pkg, v)
        for f in ("METADATA", "RECORD", "WHEEL", "INSTALLER", "top_level.txt", "LICENSE"):
            L.file("%s/%s" % (di, f), g.size(900))
    # headers and libraries
    for i in range(45):
        lib = g.name(1, 3)
        for d in ["", "internal/", "%s/" % g.name(1, 2)][:g.r.randint(1, 3)]:
            for _ in range(g.r.randint(5, 40)):
                L.file("usr/include/%s/%s%s.h" % (lib, d, g.name(1, 3)), g.size(5000))
    libs = []
    for i in range(450):
        n, v = g.name(1, 3), g.r.randint(0, 9)
        real = "usr/lib/x86_64-linux-gnu/lib%s.so.%d.%d.%d" % (n, v, g.r.randint(0, 40), g.r.randint(0, 9))
        L.file(real, g.size(50000, 1.1), "b")
        L.symlink("usr/lib/x86_64-linux-gnu/lib%s.so.%d" % (n, v), real.rsplit("/", 1)[1])
        if g.r.random() < 0.3:
            L.symlink("usr/lib/x86_64-linux-gnu/lib%s.so" % n, real.rsplit("/", 1)[1])
            L.file("usr/lib/x86_64-linux-gnu/lib%s.a" % n, g.size(40000), "b")
        libs.append(real)
    ubins = []
    for i in range(700):
        p = "usr/bin/" + g.name(1, 3)
        L.file(p, g.size(25000, 1.1), "b", 0o755)
        ubins.append(p)
    for i in range(150):
        L.symlink("usr/bin/" + g.name(1, 3), g.r.choice(ubins).rsplit("/", 1)[1])
    for t in g.r.sample(ubins, 40):
        L.hardlink(t + "-%s" % g.ver(), t)
    for t in g.r.sample(libs, 40):
        L.hardlink(t + ".dbg", t)
    for i in range(2500):
        L.file("usr/share/man/man%s/%s.%s.gz" % ((s := g.r.choice("1111358")), g.name(1, 3), s), g.size(2500), "b")
    # usr/share/doc/pkg-N and dpkg's info files: up to the layer's size
    n = 0
    while len(L) < TOP_ENTRIES:
        p = "pkg-%d" % n
        n += 1
        doc = "usr/share/doc/" + p
        steps = [(doc + "/copyright", 1500, "t"), (doc + "/changelog.Debian.gz", 2500, "b"),
                 ("var/lib/dpkg/info/%s.list" % p, 1500, "t"), ("var/lib/dpkg/info/%s.md5sums" % p, 1800, "t")]
        if n % 3 == 0:
            steps.append((doc + "/NEWS.Debian.gz", 1200, "b"))
        if n % 5 == 0:
            steps += [(doc + "/examples/%s.%s" % (g.name(1, 3), g.r.choice(["conf", "sh", "txt"])), 900, "t")
                      for _ in range(3)]
        for path, med, cls in steps:
            if len(L) >= TOP_ENTRIES:
                break
            L.file(path, g.size(med), cls)
    return L


def merged_tree(layers):
    """Paths of the merged tree (root excluded), applying whiteouts and opaque dirs."""
    tree = {}
    for L in layers:
        for p, (kind, _, _) in L.e.items():
            d, _, b = p.rpartition("/")
            if b == ".wh..wh..opq":
                pre = d + "/"
                for q in [q for q in tree if q.startswith(pre)]:
                    del tree[q]
            elif b.startswith(".wh."):
                gone = (d + "/" if d else "") + b[4:]
                for q in [q for q in tree if q == gone or q.startswith(gone + "/")]:
                    del tree[q]
        for p, (kind, _, _) in L.e.items():
            b = p.rpartition("/")[2]
            if not b.startswith(".wh."):
                tree[p] = kind
    return tree


class HashWriter(io.RawIOBase):
    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)


def corpora(seed):
    r = random.Random(seed)
    text = " ".join(r.choice(WORDS) + ("\n" if r.random() < 0.1 else "") for _ in range(500000)).encode()
    return {"t": text, "b": r.randbytes(1 << 21)}


def write_layer(L, tar_path, corp, r):
    st = {"entries": 0, "dirs": 0, "files": 0, "symlinks": 0, "hardlinks": 0, "whiteouts": 0,
          "file_bytes": 0, "path_chars": 0}
    with open(tar_path, "wb") as raw:
        hw = HashWriter(raw)
        with tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for p in L.order():
                kind, arg, mode = L.e[p]
                ti = tarfile.TarInfo(p)
                ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = MTIME, mode, 0, 0, "root", "root"
                st["entries"] += 1
                st["path_chars"] += len(p)
                data = None
                if kind == "d":
                    ti.type = tarfile.DIRTYPE
                    st["dirs"] += 1
                elif kind == "l":
                    ti.type, ti.linkname = tarfile.SYMTYPE, arg
                    st["symlinks"] += 1
                elif kind == "h":
                    ti.type, ti.linkname = tarfile.LNKTYPE, arg
                    st["hardlinks"] += 1
                else:
                    size, cls = arg
                    src = corp[cls]
                    off = r.randrange(0, len(src) - size) if size < len(src) else 0
                    data = src[off:off + size]
                    ti.size = len(data)
                    st["files"] += 1
                    st["file_bytes"] += len(data)
                    if p.rpartition("/")[2].startswith(".wh."):
                        st["whiteouts"] += 1
                tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    st["tar_bytes"], st["diff_id"] = hw.n, "sha256:" + hw.h.hexdigest()
    return st


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def put_blob(blobs, data):
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, hexd), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + hexd, "size": len(data)}


def put_json(blobs, obj):
    return put_blob(blobs, json.dumps(obj, separators=(",", ":"), sort_keys=True).encode())


def build_image(out):
    key = hashlib.sha256(("%s %d %d %s" % (RECIPE_VERSION, BASE_ENTRIES, TOP_ENTRIES, SIZE_SCALE)).encode()).hexdigest()[:16]
    try:
        with open(os.path.join(out, "meta.json")) as f:
            meta = json.load(f)
        if meta.get("recipe") == key:
            return meta, 0.0
    except (OSError, ValueError):
        pass
    t0 = now()
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    blobs = os.path.join(tmp, "blobs", "sha256")
    os.makedirs(blobs)
    g = Gen(11)
    base = make_base(g)
    top = make_top(g, base)
    tree = merged_tree([base, top])
    corp = corpora(12)
    r = random.Random(13)
    meta = {"recipe": key, "layers": [], "merged": {
        "entries": len(tree), "dirs": sum(1 for k in tree.values() if k == "d"),
        "files": sum(1 for k in tree.values() if k in "fh"),
        "symlinks": sum(1 for k in tree.values() if k == "l"),
        "path_chars": sum(len(p) for p in tree)}}
    for L in (base, top):
        tar_path = os.path.join(tmp, L.name + ".tar")
        st = write_layer(L, tar_path, corp, r)
        gz = tar_path + ".gz"
        with open(tar_path, "rb") as src, open(gz, "wb") as dst:
            subprocess.run(["gzip", "-n", "-6", "-c"], stdin=src, stdout=dst, check=True)
        hexd = sha256_file(gz)
        st["gzip_bytes"] = os.path.getsize(gz)
        st["digest"] = "sha256:" + hexd
        st["name"] = L.name
        os.rename(gz, os.path.join(blobs, hexd))
        os.unlink(tar_path)
        meta["layers"].append(st)
        log("layer %s: %d entries, %.1f MB tar, %.1f MB gzip" % (L.name, st["entries"], st["tar_bytes"] / 1e6,
                                                                 st["gzip_bytes"] / 1e6))
    manifests = []
    for plat in PLATFORMS:
        config = dict(plat, config={"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                                    "Cmd": ["/bin/sh"]},
                      rootfs={"type": "layers", "diff_ids": [l["diff_id"] for l in meta["layers"]]},
                      history=[{"created_by": "mlfs memory bench: " + l["name"]} for l in meta["layers"]])
        cdesc = put_json(blobs, config)
        man = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": dict(cdesc, mediaType=MT_CONFIG),
               "layers": [{"mediaType": MT_LAYER, "digest": l["digest"], "size": l["gzip_bytes"]}
                          for l in meta["layers"]]}
        mdesc = put_json(blobs, man)
        manifests.append(dict(mdesc, mediaType=MT_MANIFEST, platform=plat))
    idesc = put_json(blobs, {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests})
    meta["digest"] = idesc["digest"]
    with open(os.path.join(tmp, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [
            dict(idesc, mediaType=MT_INDEX, annotations={"org.opencontainers.image.ref.name": TAG})]}, f)
    with open(os.path.join(tmp, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    return meta, now() - t0


def has_index(reg, digest):
    import urllib.request
    req = urllib.request.Request("http://%s/v2/%s/manifests/%s" % (reg, REPO, TAG), headers={"Accept": MT_INDEX})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return "sha256:" + hashlib.sha256(r.read()).hexdigest() == digest
    except Exception:
        return False


def push_image(reg, layout, meta):
    if has_index(reg, meta["digest"]):
        return 0.0
    t0 = now()
    log("pushing %s/%s:%s" % (reg, REPO, TAG))
    subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--all", "--preserve-digests",
                    "--dest-tls-verify=false", "oci:%s:%s" % (layout, TAG),
                    "docker://%s/%s:%s" % (reg, REPO, TAG)], check=True)
    if not has_index(reg, meta["digest"]):
        raise RuntimeError("%s/%s:%s: the registry has another index" % (reg, REPO, TAG))
    return now() - t0


# -- /proc -------------------------------------------------------------------------

def status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem", "VmPeak", "VmSize"):
                out[k] = int(v.split()[0]) * 1024
            elif k == "Threads":
                out[k] = int(v)
    return out


MAP_RE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")


def smaps(pid):
    maps, cur = [], None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            m = MAP_RE.match(line)
            if m:
                cur = {"start": int(m[1], 16), "end": int(m[2], 16), "perm": m[3], "path": m[4], "rss": 0}
                maps.append(cur)
            elif line.startswith("Rss:"):
                cur["rss"] = int(line.split()[1]) * 1024
    return maps


def guest_range(maps, exe):
    """[lo, hi) of qemu's guest region: the run of adjacent mappings around the
    guest binary's first mapping (the reserved 4 GiB, split by the guest's maps)."""
    idx = next(i for i, m in enumerate(maps) if m["path"] == exe)
    lo = hi = idx
    while lo > 0 and maps[lo - 1]["end"] == maps[lo]["start"]:
        lo -= 1
    while hi + 1 < len(maps) and maps[hi + 1]["start"] == maps[hi]["end"]:
        hi += 1
    return maps[lo]["start"], maps[hi]["end"]


def classify(maps, exe, cache_dir, guest=None):
    """Rss by where it goes.  guest: (lo, hi) of qemu's guest region or None."""
    out = {}

    def add(k, v):
        out[k] = out.get(k, 0) + v
    for m in maps:
        inside = guest is None or (guest[0] <= m["start"] < guest[1])
        p = m["path"]
        if not inside:
            if "qemu" in os.path.basename(p):
                add("qemu: binary", m["rss"])
            elif "x" in m["perm"] and "w" in m["perm"]:
                add("qemu: translated code", m["rss"])
            else:
                add("qemu: heap and other", m["rss"])
            continue
        if p == exe:
            add("mlfs binary", m["rss"])
        elif cache_dir and p.startswith(cache_dir):
            add("cache files mapped", m["rss"])
        elif p.startswith("/") and ".so" in p:
            add("shared libraries", m["rss"])
        elif p == "[heap]" or (guest is not None and not p):
            add("anonymous (heap, arenas, stacks)", m["rss"])
        elif not p:
            add("anonymous (heap, arenas, stacks)", m["rss"])
        elif p == "[stack]":
            add("anonymous (heap, arenas, stacks)", m["rss"])
        else:
            add("other (%s)" % ("file" if p.startswith("/") else p), m["rss"])
    return out


class Sampler:
    """VmRSS/VmHWM/Threads every ~5 ms; under qemu also the guest/qemu split of
    smaps every ~50 ms and when VmHWM rises (at most every 20 ms).  When VmHWM
    last rose, and qemu's own part then, give the guest's peak: VmHWM - qemu's
    part at that moment."""

    def __init__(self, pid, exe, qemu):
        self.pid, self.exe, self.qemu = pid, exe, qemu
        self.max_rss = self.max_threads = self.max_guest = 0
        self.hwm, self.t_hwm = 0, None
        self.split = []         # (t, guest, host)
        self.samples = 0
        self.t0 = now()
        self.ev = threading.Event()
        self.th = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        k = 0
        while not self.ev.is_set():
            try:
                st = status(self.pid)
                t = now() - self.t0
                self.max_rss = max(self.max_rss, st["VmRSS"])
                self.max_threads = max(self.max_threads, st["Threads"])
                if st["VmHWM"] > self.hwm:
                    self.hwm, self.t_hwm = st["VmHWM"], t
                self.samples += 1
                if self.qemu and (k % 10 == 0 or (self.t_hwm == t and (not self.split or t - self.split[-1][0] > 0.02))):
                    maps = smaps(self.pid)
                    lo, hi = guest_range(maps, self.exe)
                    g = sum(m["rss"] for m in maps if lo <= m["start"] < hi)
                    self.split.append((now() - self.t0, g, sum(m["rss"] for m in maps) - g))
                    self.max_guest = max(self.max_guest, g)
            except (OSError, StopIteration):
                pass
            k += 1
            self.ev.wait(0.005)

    def host_at_peak(self):
        """qemu's own Rss in the split sample nearest to the moment VmHWM last rose."""
        if not self.split or self.t_hwm is None:
            return None
        return min(self.split, key=lambda x: abs(x[0] - self.t_hwm))[2]

    def __enter__(self):
        self.th.start()
        return self

    def __exit__(self, *exc):
        self.ev.set()
        self.th.join()


# -- measuring ------------------------------------------------------------------------

def walk(mnt):
    """os.walk + lstat of every entry; (entries, kinds, regular files [(size, path)])."""
    entries, kinds, files = 0, {"d": 0, "f": 0, "l": 0, "o": 0}, []
    for dirpath, dirnames, filenames in os.walk(mnt):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            entries += 1
            fmt = st.st_mode & 0o170000
            k = {0o040000: "d", 0o100000: "f", 0o120000: "l"}.get(fmt, "o")
            kinds[k] += 1
            if k == "f":
                files.append((st.st_size, p))
    return entries, kinds, files


def read_some(files):
    files = sorted(files, key=lambda x: x[1])
    step = max(1, len(files) // READS)
    pick = files[::step][:READS] + sorted(files)[-4:]
    n = 0
    for _, p in pick:
        with open(p, "rb") as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                n += len(b)
    return len(pick), n


def wait_mount(p, mnt, logf):
    deadline = now() + MOUNT_WAIT
    while now() < deadline:
        if p.poll() is not None:
            raise RuntimeError("the daemon exited (%d) before the mount was up: %s" % (p.returncode, tail(logf)))
        if os.path.ismount(mnt):
            return
        time.sleep(0.02)
    raise RuntimeError("no mount after %.0f s: %s" % (MOUNT_WAIT, tail(logf)))


def tail(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-1500:].strip()
    except OSError:
        return ""


def unmount(p, mnt):
    r = subprocess.run(["fusermount3", "-u", mnt], capture_output=True, text=True)
    if r.returncode != 0:
        log("fusermount3 -u %s: %s; lazy unmount" % (mnt, r.stderr.strip()))
        subprocess.run(["fusermount3", "-uz", mnt])
    try:
        return p.wait(60)
    except subprocess.TimeoutExpired:
        log("the daemon (pid %d) did not exit after the unmount; killing it" % p.pid)
        p.kill()
        return p.wait()


def one_run(build, argv, exe, ref, work, qemu):
    mnt = os.path.join(work, "mnt-" + build)
    cache_dir = os.path.join(work, "cache-" + build)
    logf = os.path.join(work, "daemon-%s.log" % build)
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-uz", mnt])
    shutil.rmtree(cache_dir, ignore_errors=True)
    os.makedirs(mnt, exist_ok=True)
    res = {}
    with open(logf, "w") as lf:
        t0 = now()
        p = subprocess.Popen(argv + ["mount", ref, mnt, "-f", "-o", "cache=" + cache_dir],
                             stdin=subprocess.DEVNULL, stdout=lf, stderr=lf)
    try:
        wait_mount(p, mnt, logf)
        res["mount_s"] = now() - t0
        res["idle"] = status(p.pid)
        with Sampler(p.pid, exe, qemu) as smp:
            t1 = now()
            res["entries"], res["kinds"], files = walk(mnt)
            res["walk_s"] = now() - t1
            t2 = now()
            res["reads"], res["read_bytes"] = read_some(files)
            res["read_s"] = now() - t2
        res["end"] = status(p.pid)
        maps = smaps(p.pid)
        guest = guest_range(maps, exe) if qemu else None
        res["where"] = classify(maps, exe, cache_dir, guest)
        if qemu:
            res["guest_rss_end"] = sum(m["rss"] for m in maps if guest[0] <= m["start"] < guest[1])
            res["host_rss_end"] = sum(m["rss"] for m in maps) - res["guest_rss_end"]
            res["guest_span"] = guest[1] - guest[0]
            res["guest_rss_max_sampled"] = max(smp.max_guest, res["guest_rss_end"])
            res["guest_samples"] = len(smp.split)
            hp = smp.host_at_peak()
            res["host_rss_at_peak"] = hp if hp is not None else res["host_rss_end"]
            res["guest_peak_split"] = res["end"]["VmHWM"] - res["host_rss_at_peak"]
        res["rss_max_sampled"] = smp.max_rss
        res["t_peak"] = smp.t_hwm     # s after the walk started when VmHWM last rose (None: before it)
        res["hwm_at_walk_start"] = res["idle"]["VmHWM"]
        res["threads_max_sampled"] = max(smp.max_threads, res["end"]["Threads"])
        res["samples"] = smp.samples
        res["index_bytes"] = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in
                                 os.walk(os.path.join(cache_dir, "index")) for f in fs)
        res["cache_du"] = int(subprocess.run(["du", "-s", "-B1", cache_dir], capture_output=True,
                                             text=True).stdout.split()[0])
    finally:
        if p.poll() is None:
            res["exit"] = unmount(p, mnt)
        else:
            res["exit"] = p.returncode
        shutil.rmtree(cache_dir, ignore_errors=True)
    if res["exit"] != 0:
        raise RuntimeError("%s daemon exited %d: %s" % (build, res["exit"], tail(logf)))
    return res


def qemu_baseline(qemu, work, runs):
    exe = os.path.join(work, "qemu-idle-armhf")
    src = exe + ".c"
    if not os.path.exists(exe):
        with open(src, "w") as f:
            f.write(IDLE_C)
        subprocess.run(["arm-linux-gnueabihf-gcc", "-static", "-O2", "-o", exe, src], check=True)
    out = []
    for _ in range(runs):
        p = subprocess.Popen([qemu, exe])
        try:
            time.sleep(0.5)
            st = status(p.pid)
            maps = smaps(p.pid)
            lo, hi = guest_range(maps, exe)
            g = sum(m["rss"] for m in maps if lo <= m["start"] < hi)
            out.append({"status": st, "guest_rss": g, "host_rss": sum(m["rss"] for m in maps) - g})
        finally:
            p.kill()
            p.wait()
    return out


def tool_version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0].strip()
    except (OSError, IndexError):
        return "?"


def binary_facts(path):
    st = os.stat(path)
    return {"path": path, "mtime": datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc)
            .strftime("%Y-%m-%d %H:%M UTC"), "sha256": sha256_file(path)[:12],
            "file": subprocess.run(["file", "-b", path], capture_output=True, text=True).stdout.split(",")[0:2]}


# -- report ---------------------------------------------------------------------------------

def fmt_b(v):
    return "%.1f MB" % (v / 1e6)


def med(xs):
    return statistics.median(xs)


def summarize(res):
    """Rows of the main table: (label, entries, peak judged, raw VmHWM, what is
    subtracted) with the derived figures; and the baseline's VmHWM."""
    base_hwm = med([b["status"]["VmHWM"] for b in res["baseline"]]) if res.get("baseline") else 0
    rows = []
    for build, runs in res["builds"].items():
        ents = med([r["entries"] for r in runs])
        hwm = med([r["end"]["VmHWM"] for r in runs])
        if build == "amd64":
            variants = [("amd64, native", hwm, "–")]
        else:
            variants = [("armhf under qemu, raw (qemu included)", hwm, "–"),
                        ("armhf under qemu, guest = VmHWM − idle-program baseline",
                         med([r["end"]["VmHWM"] - base_hwm for r in runs]), "baseline %s" % fmt_b(base_hwm)),
                        ("armhf under qemu, guest = VmHWM − qemu's own part at the peak (smaps split)",
                         med([r["guest_peak_split"] for r in runs]),
                         "qemu's part %s" % fmt_b(med([r["host_rss_at_peak"] for r in runs])))]
        for label, peak, sub in variants:
            target = TARGET_FIXED + TARGET_PER_ENTRY * ents
            rows.append({"build": build, "label": label, "entries": ents, "raw": hwm, "peak": peak, "sub": sub,
                         "per_entry_above": (peak - TARGET_FIXED) / ents, "target": target,
                         "met": peak <= target})
    return rows, base_hwm


NAMES = {"amd64": "amd64, native", "armhf": "armhf under qemu"}


def report(res):
    meta = res["image"]
    rows, base_hwm = summarize(res)
    builds = list(res["builds"])
    B = res["builds"]

    def m(build, f):
        return med([f(r) for r in B[build]])
    L = [SECTION, ""]
    L.append("Generated by `bench/memory.py` (`bench/memory.py --work DIR --mlfs-armhf BIN --into bench/RESULTS.md`); "
             "%s, %s, %d cores, kernel %s; %d runs of each build, **median**; whole run %.0f s; load average %s at "
             "the start, %s at the end (two fuzzers ran at nice 19: it shows in the times, hardly in the memory)." % (
                 res["date"], res["cpu"], os.cpu_count() or 0, res["kernel"], res["runs"], res["elapsed"],
                 " ".join(res["load"][0]), " ".join(res["load"][1])))
    L.append("")
    lay = meta["layers"]
    mt = meta["merged"]
    L.append("**The image** (`%s:%s`, made by the script with Python `tarfile` + `gzip -n -6`; an OCI index for "
             "linux/amd64 and linux/arm/v7 over the same two layers, pushed with skopeo to docker-registry on "
             "loopback): a Debian-like base layer under one big application layer, the shape of most real images; "
             "small files (lognormal sizes), paths like `usr/share/doc/pkg-N/…`, `usr/lib/node_modules/@x/y/dist/"
             "esm/z.js.map`, `…/dist-packages/p/__pycache__/m.cpython-311.pyc`, `usr/share/locale/xx/LC_MESSAGES/"
             "d.mo`; the top layer whites out `var/lib/apt/lists/*`, has an opaque `var/cache/apt` and replaces "
             "40 files of the base." % (REPO, TAG))
    L.append("")
    L.append("| layer | entries | dirs | files | symlinks | hardlinks | whiteouts | mean path | files' bytes | gzip |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for l in lay:
        L.append("| %s | %d | %d | %d | %d | %d | %d | %.0f chars | %s | %s |" % (
            l["name"], l["entries"], l["dirs"], l["files"], l["symlinks"], l["hardlinks"], l["whiteouts"],
            l["path_chars"] / l["entries"], fmt_b(l["file_bytes"]), fmt_b(l["gzip_bytes"])))
    L.append("| merged tree | %d | %d | %d (hardlinks incl.) | %d | | | %.0f chars | | |" % (
        mt["entries"], mt["dirs"], mt["files"], mt["symlinks"], mt["path_chars"] / mt["entries"]))
    L.append("")
    L.append("**Method.** Each run, each build: a new empty cache; `mlfs mount REG/%s:%s DIR -f -o cache=CACHE` in "
             "the foreground (the armhf build as `qemu-arm-static -L SYSROOT mlfs mount …`; it resolves linux/arm/v7 "
             "from the index); once DIR is a mountpoint, `os.walk` of the whole tree with an `lstat` of every entry "
             "(which makes the daemon fetch, decompress and index both layers, then merge them), a full read of "
             "%d files spread over the tree plus the 4 largest; then VmHWM, VmRSS and Threads from "
             "`/proc/PID/status` and the mappings from `/proc/PID/smaps` of the daemon (under qemu: the "
             "qemu-arm-static process, which is the guest process), and `fusermount3 -u`. A thread reads the status "
             "every ~5 ms meanwhile (thread counts, when the peak happens). Entries = what the walk saw (root "
             "excluded; equal to the image's merged tree in every run: %s). Target = 20 MB + 200 B × entries "
             "(MB = 10⁶ B, as in the Targets section); bytes/entry above 20 MB = (peak − 20 MB) / entries, "
             "≤ 200 B meets it." % (REPO, TAG, READS, "yes" if all(r["entries"] == mt["entries"] for b in builds
                                                                    for r in B[b]) else "**no**"))
    L.append("")
    if "armhf" in B:
        bl = res["baseline"]
        L.append("**qemu's own memory**, two ways. (1) Baseline, as issue 11 asks: a static armhf program that only "
                 "`pause()`s (`arm-linux-gnueabihf-gcc -static`) under the same qemu-arm-static has VmHWM %s (%s of "
                 "it in the guest's address space); guest ≈ VmHWM − %s. (2) Split: a 32-bit guest lives in the 4 GiB "
                 "region qemu reserves for it (guest_base … +4 GiB: one run of adjacent mappings around the guest "
                 "binary); the Rss of the mappings inside it is the guest's (heap, stacks, mmaps, binary, libraries), "
                 "the rest is qemu's (its binary, heap, translated code). That is an instant's value, so the sampler "
                 "reads smaps every ~50 ms and whenever VmHWM rises (≤ every 20 ms) and takes qemu's part in the "
                 "sample nearest the moment VmHWM last rose: guest ≈ VmHWM − that. (1) undercounts qemu for a real "
                 "program: its own part grows with the code translated and the threads — %s at the daemon's peak "
                 "and %s at the end, against %s for the idle program — so (2) is the better estimate of what the "
                 "daemon would use on a real armhf board." % (
                     fmt_b(base_hwm), fmt_b(med([x["guest_rss"] for x in bl])), fmt_b(base_hwm),
                     fmt_b(m("armhf", lambda r: r["host_rss_at_peak"])), fmt_b(m("armhf", lambda r: r["host_rss_end"])),
                     fmt_b(med([x["host_rss"] for x in bl]))))
        L.append("")
    L.append("| build | entries | peak RSS (VmHWM) | subtracted | daemon's peak | bytes/entry above 20 MB | target | met? |")
    L.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        L.append("| %s | %d | %s | %s | %s | %.0f B | %s | %s |" % (
            r["label"], r["entries"], fmt_b(r["raw"]), r["sub"], fmt_b(r["peak"]), r["per_entry_above"],
            fmt_b(r["target"]), "**met**" if r["met"] else "**unmet**"))
    L.append("")
    L.append("| build | VmHWM right after mount | VmRSS at the end | VmHWM reached (s after the walk started) | "
             "largest VmRSS sampled | threads at the end / most | mount | walk | reads |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for b in builds:
        q = b == "armhf"
        L.append("| %s | %s | %s | %s | %s | %d / %d%s | %.2f s | %.1f s | %.2f s |" % (
            NAMES[b], fmt_b(m(b, lambda r: r["idle"]["VmHWM"])) +
            (" (guest ≈ %s)" % fmt_b(m(b, lambda r: r["idle"]["VmHWM"]) - base_hwm) if q else ""),
            fmt_b(m(b, lambda r: r["end"]["VmRSS"])) +
            (" (guest %s + qemu %s)" % (fmt_b(m(b, lambda r: r["guest_rss_end"])),
                                        fmt_b(m(b, lambda r: r["host_rss_end"]))) if q else ""),
            "%.2f" % m(b, lambda r: r["t_peak"] or 0), fmt_b(m(b, lambda r: r["rss_max_sampled"])),
            m(b, lambda r: r["end"]["Threads"]), m(b, lambda r: r["threads_max_sampled"]),
            " (incl. qemu's RCU thread)" if q else "",
            m(b, lambda r: r["mount_s"]), m(b, lambda r: r["walk_s"]), m(b, lambda r: r["read_s"])))
    L.append("")
    L.append("Runs, VmHWM: " + "; ".join("%s %s" % (NAMES[b], ", ".join(fmt_b(r["end"]["VmHWM"]) for r in B[b]))
                                         for b in builds) +
             ("; armhf guest by the split: %s" % ", ".join(fmt_b(r["guest_peak_split"]) for r in B["armhf"])
              if "armhf" in B else "") + ".")
    L.append("")
    if "amd64" in B:
        a = "amd64"
        idle = m(a, lambda r: r["idle"]["VmHWM"])
        idle_file = m(a, lambda r: r["idle"]["RssFile"])
        hwm = m(a, lambda r: r["end"]["VmHWM"])
        rss_end = m(a, lambda r: r["end"]["VmRSS"])
        ents = m(a, lambda r: r["entries"])
        L.append("**Where the peak comes from** (amd64; armhf alike). Right after the mount the daemon has %s, %s of "
                 "it file-backed (the pages of the binary and its shared libraries, shared with any other process "
                 "using them), %s anonymous. Loading the layers adds %.0f B/entry up to VmRSS %s at the end; the "
                 "high-water mark, %s, is reached %.2f s into the walk (median) and lasts a moment: the largest "
                 "VmRSS the ~5 ms sampler saw was %s. That spike, %s over what stays and ~0.1 s long (a few "
                 "hundred ms under qemu), comes at the end of the loading, when the layers are merged (by its "
                 "timing and size: `layers/merge.c` holds the builder's arrays and the published tree together "
                 "before it frees the builder)." % (
                     fmt_b(idle), fmt_b(idle_file), fmt_b(m(a, lambda r: r["idle"]["RssAnon"])),
                     (rss_end - idle) / ents, fmt_b(rss_end), fmt_b(hwm), m(a, lambda r: r["t_peak"] or 0),
                     fmt_b(m(a, lambda r: r["rss_max_sampled"])), fmt_b(hwm - rss_end)))
        L.append("")
    L.append("**Where the memory is** at the end of a run (Rss by mapping from smaps, median run; this is VmRSS, "
             "after the peak):")
    L.append("")
    keys = []
    for b in builds:
        for r in B[b]:
            for k, v in r["where"].items():
                if k not in keys and v >= 50000:
                    keys.append(k)
    keys.sort(key=lambda k: (k.startswith("qemu"), k))
    L.append("| | " + " | ".join(NAMES[b] for b in builds) + " |")
    L.append("|---|" + "---|" * len(builds))
    for k in keys:
        L.append("| %s | %s |" % (k, " | ".join(fmt_b(m(b, lambda r: r["where"].get(k, 0))) for b in builds)))
    L.append("| *the layers' index files in the cache (what the in-memory indexes hold)* | %s |" % " | ".join(
        fmt_b(m(b, lambda r: r["index_bytes"])) for b in builds))
    L.append("| *cache on disk after the run (`du`)* | %s |" % " | ".join(
        fmt_b(m(b, lambda r: r["cache_du"])) for b in builds))
    L.append("")
    bins = "; ".join("%s `%s` (%s, built %s, sha256 %s…)" % (b, f["path"], ", ".join(x.strip() for x in f["file"]),
                                                            f["mtime"], f["sha256"])
                     for b, f in res["binaries"].items())
    L.append("Binaries: %s%s. Checkout: git %s%s. Raw figures: `memory-results.json` in the work dir (%s)." % (
        bins, "; " + res["qemu_version"] if res.get("qemu_version") else "", res["git"],
        (", modified: " + " ".join(res["git_modified"])) if res["git_modified"] else "", res["work"]))
    L.append("")
    return "\n".join(L)


def main():
    root = os.path.dirname(HERE)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=os.environ.get("MLFS_BENCH_DIR", "/var/tmp/mlfs-bench"))
    ap.add_argument("--mlfs", default=os.path.join(root, "build", "fs", "mlfs"),
                    help="the amd64 build ('' to skip it)")
    ap.add_argument("--mlfs-armhf", default="", help="the armhf build, run under qemu (default: not measured)")
    ap.add_argument("--sysroot", default=os.path.join(root, "build-armhf-sysroot"), help="qemu's -L for it")
    ap.add_argument("--qemu", default="qemu-arm-static")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--registry", help="HOST:PORT of a running registry (default: start one with registry.sh)")
    ap.add_argument("--into", metavar="RESULTS_MD", help="put the section into RESULTS_MD too")
    ap.add_argument("--report-only", action="store_true", help="measure nothing: the report from the JSON")
    a = ap.parse_args()
    a.work = os.path.abspath(a.work)
    md_path = os.path.join(a.work, "memory-results.md")
    json_path = os.path.join(a.work, "memory-results.json")
    if a.report_only:
        with open(json_path) as f:
            res = json.load(f)
        md = report(res)
        with open(md_path, "w") as f:
            f.write(md)
        print(md)
        if a.into:
            put_section(md, a.into)
        return
    if os.getuid() != 0:
        sys.exit("memory: run as root (FUSE mounts)")
    builds = {}
    if a.mlfs:
        builds["amd64"] = os.path.abspath(a.mlfs)
    if a.mlfs_armhf:
        builds["armhf"] = os.path.abspath(a.mlfs_armhf)
    if not builds:
        sys.exit("memory: nothing to measure")
    os.makedirs(a.work, exist_ok=True)
    mwork = os.path.join(a.work, "memory")
    os.makedirs(mwork, exist_ok=True)
    t_start = now()
    load_start = open("/proc/loadavg").read().split()[:3]
    regpid = None
    res = {"builds": {b: [] for b in builds}, "runs": a.runs, "work": a.work}
    try:
        layout = os.path.join(a.work, "memory-image", "oci")
        os.makedirs(os.path.dirname(layout), exist_ok=True)
        meta, t_build = build_image(layout)
        if t_build:
            log("built the image in %.0f s" % t_build)
        if a.registry:
            reg = a.registry
        else:
            reg, regpid, _ = cache.start_registry(a.work)
            log("docker-registry on %s (pid %d)" % (reg, regpid))
        t_push = push_image(reg, layout, meta)
        ref = "%s/%s:%s" % (reg, REPO, TAG)
        if "armhf" in builds:
            res["baseline"] = qemu_baseline(a.qemu, mwork, max(a.runs, 3))
            log("qemu baseline VmHWM: %s" % ", ".join(fmt_b(x["status"]["VmHWM"]) for x in res["baseline"]))
            res["qemu_version"] = tool_version([a.qemu, "--version"])
        for i in range(a.runs):
            for build, binary in builds.items():
                if build == "armhf":
                    argv = [a.qemu, "-L", os.path.abspath(a.sysroot), binary]
                else:
                    argv = [binary]
                r = one_run(build, argv, os.path.realpath(binary), ref, mwork, build == "armhf")
                if r["entries"] != meta["merged"]["entries"]:
                    log("%s run %d: the walk saw %d entries, the image has %d" % (
                        build, i + 1, r["entries"], meta["merged"]["entries"]))
                res["builds"][build].append(r)
                log("%s run %d: VmHWM %s, VmRSS %s, %d threads, %d entries, walk %.1f s" % (
                    build, i + 1, fmt_b(r["end"]["VmHWM"]), fmt_b(r["end"]["VmRSS"]), r["end"]["Threads"],
                    r["entries"], r["walk_s"]))
        res["image"] = meta
        res["build_seconds"], res["push_seconds"] = t_build, t_push
        res["binaries"] = {b: binary_facts(p) for b, p in builds.items()}
        res["elapsed"] = now() - t_start
        res["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        res["cpu"] = subprocess.run("lscpu | sed -n 's/^Model name: *//p' | head -1", shell=True,
                                    capture_output=True, text=True).stdout.strip()
        res["kernel"] = os.uname().release
        res["git"] = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip()
        res["git_modified"] = subprocess.run(["git", "-C", root, "diff", "--name-only", "HEAD"],
                                             capture_output=True, text=True).stdout.split()
        res["load"] = [load_start, open("/proc/loadavg").read().split()[:3]]
        with open(json_path, "w") as f:
            json.dump(res, f, indent=1)
        md = report(res)
        with open(md_path, "w") as f:
            f.write(md)
        print(md)
        if a.into:
            put_section(md, a.into)
            log("section put into %s" % a.into)
        log("done in %.0f s" % (now() - t_start))
    finally:
        if regpid:
            cache.stop_registry(regpid)


def put_section(md, target):
    """Replace the section in target (up to the next '## ' heading) or append it."""
    text = open(target).read() if os.path.exists(target) else ""
    start = text.find("\n" + SECTION + "\n")
    if start >= 0:
        start += 1
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + md.rstrip("\n") + "\n" + (text[nxt:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + md.rstrip("\n") + "\n"
    with open(target, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
