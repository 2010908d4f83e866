#!/usr/bin/python3
"""mlfs cache benchmark (issue 9): what the cache costs on disk, how fast
`mlfs cache gc` is, and whether a cap holds.  Stdlib only; as root.

    cache.py --work DIR [--mlfs BIN] [--runs N] [--debs DIR]
             [--registry HOST:PORT --log ACCESS_LOG]
    cache.py --work DIR --put-section RESULTS.md    (no measuring: the last
             section, $WORK/cache-results.md, into RESULTS.md)

Without --registry it starts its own docker-registry with bench/registry.sh
(storage and access log under DIR/registry, the same as run.sh's, so images
pushed once stay) and stops it at the end.

The images (built once from real Debian .debs, as bench/mkimage.py does, into
one OCI layout under DIR/cache-bench/oci, and pushed with skopeo when the
registry lacks them):

- cache-shape:{gzip,zstd}  the usual shape of an image: a base layer (libc6,
  coreutils, bash, tzdata, libssl3) and one big layer on top (gcc-12, cpp-12).
- cache-gc:iNN (50)  the same base plus two small layers of their own each
  (an "app" layer of 1-3 MB of files picked from the packages, a "config"
  layer of a few generated small files).
- cache-cap:iNN (24)  the same base plus one layer of its own of 8-30 MB
  (files picked from the packages).

Measurements:

1. cache bytes / tree bytes after a full read: a new cache, mount, `tar` of
   the whole tree, `mlfs cache du --json` total against the sum of the
   regular files' sizes in the mounted tree (hardlinks once); gzip and zstd,
   each also with `-o keep-blobs` (the behaviour before issue 9); and
   `mlfs export | tar -x` (gzip), whose unpacked tree also gives the
   tree's own `du` allocation.
2. `mlfs cache gc` on a cache holding the 50 cache-gc images (pulled once,
   then `cp -a` to a fresh copy before every timed command): `gc` (nothing
   to remove), `gc --max HALF` (half of the cache's total), `ls`; median of
   N runs, warm (the copy in the page cache) and cold (`drop_caches`).
3. A cap: CAP = 3x the largest layer's data; the 24 cache-cap images one
   after another on one cache, (a) mount `-o cache-max=CAP` + `tar` +
   unmount, (b) `mlfs pull` with `$MLFS_CACHE_MAX=CAP`; `mlfs cache du
   --json` sampled every ~50 ms during each step (and the same total by an
   in-process scan every ~5 ms, to catch short peaks) and once after it.

Output: the Markdown section "## Cache (issue 9)" on stdout and in
DIR/cache-results.md, the raw figures in DIR/cache-results.json.
"""

import argparse
import concurrent.futures
import datetime
import hashlib
import json
import os
import platform
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
import bench    # noqa: E402  (Mlfs, AccessLog, sh, drop_caches, fmt_value)
import mkimage  # noqa: E402  (add_tree, HashWriter, put_json, sha256_file, deb_for, media types)

RECIPE_VERSION = "1"
BASE = ("base", ["libc6", "coreutils", "bash", "tzdata", "libssl3"])
BIG = ("toolchain", ["gcc-12", "cpp-12"])
N_GC = 50
N_CAP = 24
CAP_FACTOR = 3
FIXED_MTIME = 1700000000          # generated files and staged directories
SECTION = "## Cache (issue 9)"
ACCEPT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MB = 1 << 20


def log(msg):
    print("cache: " + msg, file=sys.stderr, flush=True)


def now():
    return time.perf_counter()


def cap_target(i):
    """Bytes of files in cache-cap image i's own layer: 8..30 MiB."""
    return (8 + (i * 11) % 23) * MB


def gc_app_target(i):
    return int((1 + (i % 5) * 0.5) * MB)


def recipe_key(debs):
    h = hashlib.sha256()
    h.update(("%s %d %d %r %r" % (RECIPE_VERSION, N_GC, N_CAP, BASE, BIG)).encode())
    h.update(repr([cap_target(i) for i in range(N_CAP)] + [gc_app_target(i) for i in range(N_GC)]).encode())
    for _, pkgs in (BASE, BIG):
        for p in pkgs:
            h.update(os.path.basename(mkimage.deb_for(debs, p)).encode())
    return h.hexdigest()[:16]


# -- building the images ---------------------------------------------------------

class Builder:
    def __init__(self, debs, out):
        self.debs = debs
        self.out = out
        self.tmp = out + ".tmp"
        self.blobs = os.path.join(self.tmp, "blobs", "sha256")
        self.work = os.path.join(self.tmp, "work")
        self.pool = {}          # name -> unpacked root
        self.lock = threading.Lock()

    def unpack(self, name, pkgs):
        root = os.path.join(self.work, "pool", name)
        os.makedirs(root)
        for p in pkgs:
            subprocess.run(["dpkg-deb", "-x", mkimage.deb_for(self.debs, p), root], check=True)
        self.pool[name] = root
        return root

    def pool_files(self):
        """(root, relpath, size) of every regular file of the pool, one per path."""
        seen = {}
        for name in sorted(self.pool):
            root = self.pool[name]
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for fn in sorted(filenames):
                    p = os.path.join(dirpath, fn)
                    if os.path.islink(p) or not os.path.isfile(p):
                        continue
                    rel = os.path.relpath(p, root)
                    seen.setdefault(rel, (root, rel, os.path.getsize(p)))
        return [seen[k] for k in sorted(seen)]

    def layer(self, name, root=None, picks=(), extra=None, comps=("gzip",)):
        """One layer: the whole tree `root`, or the files `picks` ((root, rel))
        plus `extra` ({rel: bytes}) staged with hard links.  Its compressed
        blobs land in the layout; returns its description."""
        stage = None
        if root is None:
            stage = root = os.path.join(self.work, "stage-" + name)
            for src, rel in picks:
                dst = os.path.join(stage, rel)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                os.link(os.path.join(src, rel), dst)
            for rel, data in (extra or {}).items():
                dst = os.path.join(stage, rel)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                with open(dst, "wb") as f:
                    f.write(data)
                os.utime(dst, (FIXED_MTIME, FIXED_MTIME))
            for dirpath, _, _ in os.walk(stage):
                os.utime(dirpath, (FIXED_MTIME, FIXED_MTIME))
        files = content = 0
        for dirpath, _, filenames in os.walk(root):
            for fn in filenames:
                p = os.path.join(dirpath, fn)
                if os.path.isfile(p) and not os.path.islink(p):
                    files += 1
                    content += os.path.getsize(p)
        tar_path = os.path.join(self.work, name + ".tar")
        with open(tar_path, "wb") as raw:
            hw = mkimage.HashWriter(raw)
            with tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                entries = mkimage.add_tree(tar, root)
        if stage:
            shutil.rmtree(stage)
        desc = {"name": name, "entries": entries, "files": files, "content_bytes": content,
                "tar_size": hw.n, "diff_id": "sha256:" + hw.h.hexdigest()}
        for comp in comps:
            cpath = tar_path + "." + comp
            with open(tar_path, "rb") as src, open(cpath, "wb") as dst:
                subprocess.run(mkimage.COMPRESS[comp], stdin=src, stdout=dst, check=True)
            hexd = mkimage.sha256_file(cpath)
            os.rename(cpath, os.path.join(self.blobs, hexd))
            desc[comp] = {"digest": "sha256:" + hexd, "size": os.path.getsize(os.path.join(self.blobs, hexd))}
        os.unlink(tar_path)
        return desc

    def image(self, tag, layers, comp, index):
        config = {
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                       "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [l["diff_id"] for l in layers]},
            "history": [{"created_by": "mlfs cache bench: " + l["name"]} for l in layers],
        }
        with self.lock:
            cdesc = mkimage.put_json(self.blobs, config)
            manifest = {"schemaVersion": 2, "mediaType": mkimage.MT_MANIFEST,
                        "config": dict(cdesc, mediaType=mkimage.MT_CONFIG),
                        "layers": [dict(l[comp], mediaType=mkimage.MT_LAYER[comp]) for l in layers]}
            mdesc = mkimage.put_json(self.blobs, manifest)
            index["manifests"].append(dict(mdesc, mediaType=mkimage.MT_MANIFEST,
                                           annotations={"org.opencontainers.image.ref.name": tag}))
        return mdesc["digest"]

    def build(self):
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.makedirs(self.blobs)
        os.makedirs(self.work)
        t0 = now()
        base_root = self.unpack(*BASE)
        big_root = self.unpack(*BIG)
        pool = self.pool_files()
        index = {"schemaVersion": 2, "mediaType": mkimage.MT_INDEX, "manifests": []}
        meta = {"recipe": recipe_key(self.debs), "images": {}, "layers": {}}

        base = self.layer("base", root=base_root, comps=("gzip", "zstd"))
        big = self.layer("toolchain", root=big_root, comps=("gzip", "zstd"))
        meta["layers"]["base"] = base
        meta["layers"]["toolchain"] = big
        for comp in ("gzip", "zstd"):
            meta["images"]["shape-" + comp] = {
                "repo": "cache-shape", "tag": comp, "layers": ["base", "toolchain"], "comp": comp,
                "digest": self.image("shape-" + comp, [base, big], comp, index)}
        log("built base (%.1f MB of files) and toolchain (%.1f MB)" %
            (base["content_bytes"] / 1e6, big["content_bytes"] / 1e6))

        def pick(seed, target):
            rnd = random.Random(seed)
            order = list(range(len(pool)))
            rnd.shuffle(order)
            out, left = [], target
            for k in order:
                root, rel, size = pool[k]
                if 0 < size <= left:
                    out.append((root, rel))
                    left -= size
                if left < target * 0.02:
                    break
            return out

        def gc_image(i):
            app = self.layer("gc%02d-app" % i, picks=pick("gc-%d" % i, gc_app_target(i)),
                             extra={"opt/app-%02d/VERSION" % i: b"app %d\n" % i})
            conf = "# app %02d\nlisten = 127.0.0.1:%d\nworkers = %d\n" % (i, 8000 + i, 1 + i % 4)
            cfg = self.layer("gc%02d-config" % i, extra={
                "etc/app-%02d/app.conf" % i: (conf * 40).encode(),
                "etc/app-%02d/env" % i: b"APP_ID=%d\n" % i,
                "etc/app-%02d/motd" % i: b"mlfs cache benchmark image %d\n" % i})
            return "gc-%02d" % i, {"repo": "cache-gc", "tag": "i%02d" % i, "comp": "gzip",
                                   "layers": ["base", app["name"], cfg["name"]]}, [app, cfg]

        def cap_image(i):
            own = self.layer("cap%02d" % i, picks=pick("cap-%d" % i, cap_target(i)),
                             extra={"etc/mlfs-cap-image": b"cap image %d\n" % i})
            return "cap-%02d" % i, {"repo": "cache-cap", "tag": "i%02d" % i, "comp": "gzip",
                                    "layers": ["base", own["name"]]}, [own]

        jobs = [(gc_image, i) for i in range(N_GC)] + [(cap_image, i) for i in range(N_CAP)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
            for tag, im, layers in ex.map(lambda j: j[0](j[1]), jobs):
                for l in layers:
                    meta["layers"][l["name"]] = l
                im["digest"] = self.image(tag, [meta["layers"][n] for n in im["layers"]], "gzip", index)
                meta["images"][tag] = im
        index["manifests"].sort(key=lambda d: d["annotations"]["org.opencontainers.image.ref.name"])
        with open(os.path.join(self.tmp, "index.json"), "w") as f:
            json.dump(index, f)
        with open(os.path.join(self.tmp, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        with open(os.path.join(self.tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        shutil.rmtree(self.work)
        shutil.rmtree(self.out, ignore_errors=True)
        os.rename(self.tmp, self.out)
        log("built %d images in %.0f s (%s)" % (len(meta["images"]), now() - t0, self.out))
        return meta


def ensure_debs(debs):
    pkgs = BASE[1] + BIG[1]
    missing = [p for p in pkgs if not any(f.startswith(p + "_") and f.endswith(".deb") for f in os.listdir(debs))]
    if missing:
        log("downloading: " + " ".join(missing))
        r = subprocess.run(["apt-get", "-q", "download"] + missing, cwd=debs, capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["apt-get", "-q", "update"], capture_output=True)
            subprocess.run(["apt-get", "-q", "download"] + missing, cwd=debs, check=True, capture_output=True)


def ensure_images(debs, out):
    """(meta, seconds spent building: 0 when the layout was up to date)."""
    ensure_debs(debs)
    try:
        with open(os.path.join(out, "meta.json")) as f:
            meta = json.load(f)
        if meta.get("recipe") == recipe_key(debs):
            return meta, 0.0
    except (OSError, ValueError):
        pass
    t0 = now()
    meta = Builder(debs, out).build()
    return meta, now() - t0


def has_manifest(reg, repo, tag, digest):
    import urllib.request
    req = urllib.request.Request("http://%s/v2/%s/manifests/%s" % (reg, repo, tag),
                                 headers={"Accept": ACCEPT_MANIFEST})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return "sha256:" + hashlib.sha256(r.read()).hexdigest() == digest
    except Exception:
        return False


def push_images(reg, layout, meta):
    todo = [(k, im) for k, im in sorted(meta["images"].items())
            if not has_manifest(reg, im["repo"], im["tag"], im["digest"])]
    if not todo:
        return 0.0
    t0 = now()
    log("pushing %d images to %s" % (len(todo), reg))

    def push(item):
        k, im = item
        bench.sh("skopeo --insecure-policy copy -q --preserve-digests --dest-tls-verify=false "
                 "oci:%s:%s docker://%s/%s:%s" % (layout, k, reg, im["repo"], im["tag"]))
        if not has_manifest(reg, im["repo"], im["tag"], im["digest"]):
            raise RuntimeError("%s/%s:%s: the registry has another manifest" % (reg, im["repo"], im["tag"]))

    # The shared base first, alone: the others then find its blob there.
    first = [x for x in todo if x[0].startswith("shape-")][:1]
    for x in first:
        push(x)
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as ex:
        list(ex.map(push, [x for x in todo if x not in first]))
    return now() - t0


# -- the registry -------------------------------------------------------------------

def start_registry(work):
    """bench/registry.sh's bench_registry_start; (host:port, pid, access log)."""
    script = ('say() { echo "cache: $*" >&2; }; WORK=%s; PY=/usr/bin/python3; . %s/registry.sh; '
              'bench_registry_start; echo "$REG $REGPID"' % (sh_quote(work), sh_quote(HERE)))
    r = subprocess.run(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=60)
    if r.returncode != 0:
        raise RuntimeError("registry: " + r.stderr.strip())
    reg, pid = r.stdout.split()
    return reg, int(pid), os.path.join(work, "registry", "access.log")


def stop_registry(pid):
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def sh_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


# -- mlfs helpers --------------------------------------------------------------------

class Cache:
    def __init__(self, mlfs_bin, env):
        self.bin = mlfs_bin
        self.env = env

    def run(self, args, timeout=600, env=None):
        r = subprocess.run([self.bin] + args, capture_output=True, text=True, timeout=timeout,
                           env=env or self.env)
        if r.returncode != 0:
            raise RuntimeError("mlfs %s: exit %d: %s" % (" ".join(args), r.returncode, r.stderr.strip()[-2000:]))
        return r.stdout

    def du(self, cache):
        return json.loads(self.run(["cache", "du", "--json", "--cache", cache]))

    def ls(self, cache):
        return json.loads(self.run(["cache", "ls", "--json", "--cache", cache]))


def scan_total(c):
    """What `mlfs cache du` counts as total, in-process: allocated bytes of the
    regular files in {data,index,chunks,blobs,meta}/sha256/ and under refs/."""
    total = 0
    for kind in ("data", "index", "chunks", "blobs", "meta"):
        try:
            it = os.scandir(os.path.join(c, kind, "sha256"))
        except FileNotFoundError:
            continue
        with it:
            for de in it:
                if de.name.startswith("."):
                    continue
                try:
                    st = de.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if st.st_mode & 0o170000 == 0o100000:
                    total += st.st_blocks * 512
    for dirpath, _, filenames in os.walk(os.path.join(c, "refs")):
        for fn in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, fn))
            except FileNotFoundError:
                continue
            if st.st_mode & 0o170000 == 0o100000:
                total += st.st_blocks * 512
    return total


class Sampler:
    """The cache's total while a step runs, from two threads: `mlfs cache du
    --json` every ~50 ms (what the brief asks for), and scan_total() every
    ~5 ms (the same accounting, fine enough to catch a layer's peak: its
    download and its data file both on disk just before the blob goes)."""

    def __init__(self, cache, c, interval=0.05, fast_interval=0.005):
        self.cache, self.c = cache, c
        self.samples = []       # du --json totals
        self.fast = []          # scan_total() totals
        self.stop_ev = threading.Event()
        self.ths = [threading.Thread(target=self.loop, args=(interval,), daemon=True),
                    threading.Thread(target=self.fast_loop, args=(fast_interval,), daemon=True)]

    def loop(self, interval):
        while not self.stop_ev.is_set():
            try:
                self.samples.append(self.cache.du(self.c)["total"])
            except Exception:
                pass    # the cache directory may not exist yet
            self.stop_ev.wait(interval)

    def fast_loop(self, interval):
        while not self.stop_ev.is_set():
            self.fast.append(scan_total(self.c))
            self.stop_ev.wait(interval)

    def __enter__(self):
        for th in self.ths:
            th.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        for th in self.ths:
            th.join()


def tree_stats(root):
    """Regular files of a tree: (count, bytes with hardlinks once, allocated bytes)."""
    seen = set()
    n = size = alloc = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for fn in filenames:
            st = os.lstat(os.path.join(dirpath, fn))
            if not (st.st_mode & 0o170000 == 0o100000):
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            n += 1
            size += st.st_size
            alloc += st.st_blocks * 512
    return n, size, alloc


def tar_all(mnt):
    # Exit 1 is "file changed as we read it" (a fresh mount's root stat is a placeholder).
    t0 = now()
    r = subprocess.run(["bash", "-o", "pipefail", "-c",
                        "(tar --warning=no-file-changed -cf - -C %s . || [ $? = 1 ]) | wc -c" % sh_quote(mnt)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("tar of %s: %s" % (mnt, r.stderr.strip()[-2000:]))
    return now() - t0, int(r.stdout.strip())


def rmtree(p):
    if os.path.lexists(p):
        shutil.rmtree(p)


# -- the measurements -------------------------------------------------------------

class CacheBench:
    def __init__(self, a, reg, alog, meta):
        self.a = a
        self.reg = reg
        self.alog = alog
        self.meta = meta
        self.dir = os.path.join(a.work, "cache-bench")
        env = dict(os.environ)
        env.pop("MLFS_CACHE_MAX", None)
        env.pop("MLFS_CACHE", None)
        self.env = env
        self.c = Cache(a.mlfs, env)
        self.m = bench.Mlfs(a.mlfs, self.dir)
        self.res = {}

    def ref(self, key):
        im = self.meta["images"][key]
        return "%s/%s:%s" % (self.reg, im["repo"], im["tag"])

    def fresh(self, name):
        p = os.path.join(self.dir, name)
        rmtree(p)
        return p

    # 1. cache bytes / tree bytes
    def ratio(self):
        out = []
        mnt = os.path.join(self.dir, "mnt")
        for comp in ("gzip", "zstd"):
            for keep in (False, True):
                cache = self.fresh("c-ratio")
                t_m = self.m.mount(self.ref("shape-" + comp), mnt, cache, "keep-blobs" if keep else "")
                t_tar, stream = tar_all(mnt)
                du_mounted = self.c.du(cache)
                files, tbytes, _ = tree_stats(mnt)
                self.m.umount(mnt)
                du_after = self.c.du(cache)
                row = {"how": "mount + tar", "comp": comp, "keep_blobs": keep, "du": du_mounted,
                       "du_after_unmount": du_after, "tree_files": files, "tree_bytes": tbytes,
                       "ratio": du_mounted["total"] / tbytes, "seconds": t_m + t_tar, "tar_stream": stream}
                out.append(row)
                log("ratio %s%s: %d / %d = %.4f" % (comp, " keep-blobs" if keep else "", du_mounted["total"],
                                                    tbytes, row["ratio"]))
        # mlfs export, unpacked: the tree's own allocation on this disk
        cache = self.fresh("c-ratio")
        tree = self.fresh("tree")
        os.makedirs(tree)
        t0 = now()
        bench.sh("%s export --cache %s %s | tar -x -C %s" % (self.a.mlfs, cache, self.ref("shape-gzip"), tree))
        t = now() - t0
        du = self.c.du(cache)
        files, tbytes, alloc = tree_stats(tree)
        du_tree = int(bench.sh("du -s -B1 %s | cut -f1" % tree, capture=True))
        du_tree_apparent = int(bench.sh("du -sb %s | cut -f1" % tree, capture=True))
        out.append({"how": "`mlfs export` into `tar -x`", "comp": "gzip", "keep_blobs": False, "du": du,
                    "tree_files": files, "tree_bytes": tbytes, "tree_files_alloc": alloc,
                    "tree_du_B1": du_tree, "tree_du_apparent": du_tree_apparent,
                    "ratio": du["total"] / tbytes, "ratio_vs_tree_du": du["total"] / du_tree, "seconds": t})
        log("ratio export: %d / %d = %.4f (tree du %d)" % (du["total"], tbytes, du["total"] / tbytes, du_tree))
        rmtree(tree)
        rmtree(cache)
        self.res["ratio"] = out

    # 2. gc on 50 images
    def gc(self):
        master = self.fresh("c-gc-master")
        refs = [self.ref("gc-%02d" % i) for i in range(N_GC)]
        t0 = now()
        for ref in refs:
            self.c.run(["pull", "--cache", master, ref])
        t_pull = now() - t0
        du = self.c.du(master)
        ls = self.c.ls(master)
        layers = set()
        for im in ls:
            for l in im["layers"]:
                layers.add(l["diff_id"])
        files = int(bench.sh("find %s | wc -l" % master, capture=True))
        half = du["total"] // 2
        info = {"images": len(ls), "layers": len(layers), "du": du, "paths": files, "pull_seconds": t_pull,
                "half": half}
        log("gc: %d images, %d layers, %d bytes, %d paths in the cache (pulled in %.1f s)"
            % (len(ls), len(layers), du["total"], files, t_pull))
        ops = [("gc", ["cache", "gc"]), ("gc --max HALF", ["cache", "gc", "--max", str(half)]),
               ("ls", ["cache", "ls"]), ("ls --json", ["cache", "ls", "--json"]),
               ("du --json", ["cache", "du", "--json"])]
        times = {}
        effects = {}
        for r in range(self.a.runs):
            for cold in (False, True):
                for name, args in ops:
                    copy = self.fresh("c-gc")
                    bench.sh("cp -a %s %s" % (master, copy))
                    if cold:
                        bench.drop_caches()
                    t0 = now()
                    out = self.c.run(args + ["--cache", copy])
                    t = now() - t0
                    times.setdefault("%s %s" % (name, "cold" if cold else "warm"), []).append(t)
                    if not cold and r == 0 and name.startswith("gc"):
                        after = self.c.du(copy)
                        kinds = {}
                        for line in out.splitlines():
                            m = re.match(r"(removed|kept|could not remove) (layer|blob|partial download|"
                                         r"temporary file|lock file|config|manifest|reference)", line)
                            if m:
                                k = "%s %s" % m.groups()
                                kinds[k] = kinds.get(k, 0) + 1
                        effects[name] = {"du_after": after, "lines": kinds,
                                         "removed_layers": kinds.get("removed layer", 0),
                                         "images_after": len(self.c.ls(copy)),
                                         "last_line": out.strip().splitlines()[-1] if out.strip() else ""}
                    rmtree(copy)
        info["times"] = times
        info["effects"] = effects
        for k, v in times.items():
            log("gc: %s median %.1f ms (%s)" % (k, statistics.median(v) * 1e3,
                                                ", ".join("%.1f" % (x * 1e3) for x in v)))
        rmtree(master)
        self.res["gc"] = info

    # 3. the cap
    def cap(self):
        lay = self.meta["layers"]
        names = sorted(set(n for k, im in self.meta["images"].items() if k.startswith("cap-") for n in im["layers"]))
        largest_files = max(lay[n]["content_bytes"] for n in names)
        cap = CAP_FACTOR * largest_files
        base_digest = lay["base"]["gzip"]["digest"]
        info = {"cap": cap, "largest_layer_files": largest_files, "largest_name":
                max(names, key=lambda n: lay[n]["content_bytes"]), "loops": {}}
        log("cap: %d bytes (%dx %s's %d bytes of files)" % (cap, CAP_FACTOR, info["largest_name"], largest_files))
        mnt = os.path.join(self.dir, "mnt")
        for how in ("mount", "pull"):
            cache = self.fresh("c-cap")
            steps = []
            largest_seen = 0
            mark = self.alog.mark() if self.alog else None
            for i in range(N_CAP):
                ref = self.ref("cap-%02d" % i)
                t0 = now()
                with Sampler(self.c, cache) as s:
                    if how == "mount":
                        self.m.mount(ref, mnt, cache, "cache-max=%d" % cap)
                        tar_all(mnt)
                        s.samples.append(self.c.du(cache)["total"])    # mounted, every file read
                        self.m.umount(mnt)
                    else:
                        env = dict(self.env, MLFS_CACHE_MAX=str(cap))
                        self.c.run(["pull", "--cache", cache, ref], env=env)
                after = self.c.du(cache)["total"]
                after_scan = scan_total(cache)
                ls = self.c.ls(cache)
                held = {}
                for im in ls:
                    for l in im["layers"]:
                        if l["state"] in ("indexed", "chunks"):
                            held[l["diff_id"]] = l["bytes_on_disk"]
                largest_seen = max([largest_seen] + list(held.values()))
                own = lay["cap%02d" % i]
                mx_du = max(s.samples) if s.samples else None
                mx_fast = max(s.fast) if s.fast else None
                peak = max(x for x in (mx_du, mx_fast, after) if x is not None)
                steps.append({"i": i, "own_files": own["content_bytes"],
                              "own_on_disk": held.get(own["diff_id"]), "samples": len(s.samples),
                              "fast_samples": len(s.fast), "max_during": mx_du, "max_during_fast": mx_fast,
                              "peak": peak, "over": peak - cap, "after": after, "after_scan": after_scan,
                              "layers_cached": len(held), "images_listed": len(ls), "seconds": now() - t0})
            base_gets = None
            if self.alog:
                reqs = self.alog.since(mark)
                base_gets = reqs["per_blob"].get(base_digest, [0, 0])[0]
            mx = max(st["peak"] for st in steps)
            loop = {"steps": steps, "max_total": mx, "over": mx - cap,
                    "max_total_du": max([st["max_during"] or 0 for st in steps] + [st["after"] for st in steps]),
                    "largest_layer_on_disk": largest_seen,
                    "after_max": max(st["after"] for st in steps),
                    "after_over_cap": sum(1 for st in steps if st["after"] > cap),
                    # a step over the cap by more than the layer it added (data + index on disk)
                    "steps_over_own_layer": sum(1 for st in steps
                                                if st["over"] > (st["own_on_disk"] or st["own_files"])),
                    "scan_mismatch": sum(1 for st in steps if st["after"] != st["after_scan"]),
                    "samples": sum(st["samples"] for st in steps),
                    "fast_samples": sum(st["fast_samples"] for st in steps), "base_blob_gets": base_gets,
                    "seconds": sum(st["seconds"] for st in steps)}
            info["loops"][how] = loop
            log("cap %s: max %d (cap %+d; du --json samples alone %+d), largest layer on disk %d, "
                "after-step max %d, %d steps over the cap after, %d over by more than their own layer; "
                "base fetched %s times" % (how, mx, mx - cap, loop["max_total_du"] - cap, largest_seen,
                                           loop["after_max"], loop["after_over_cap"],
                                           loop["steps_over_own_layer"], base_gets))
            rmtree(cache)
        self.res["cap"] = info


# -- the report -----------------------------------------------------------------------

def fmt_b(v):
    return bench.fmt_value(v, "B")


def fmt_mib(v):
    return "%.1f MiB" % (v / MB)


def fmt_t(v):
    return bench.fmt_value(v, "s")


def layout_lines(meta):
    lay = meta["layers"]
    L = []
    b, t = lay["base"], lay["toolchain"]
    L.append("| image | layers | files (per layer) | gzip | zstd |")
    L.append("|---|---|---|---|---|")
    L.append("| `cache-shape:gzip`, `:zstd` | base (%s) + toolchain (%s) | %s + %s (%d + %d files) | %s + %s | %s + %s |" % (
        ", ".join(BASE[1]), ", ".join(BIG[1]), fmt_b(b["content_bytes"]), fmt_b(t["content_bytes"]),
        b["files"], t["files"], fmt_b(b["gzip"]["size"]), fmt_b(t["gzip"]["size"]),
        fmt_b(b["zstd"]["size"]), fmt_b(t["zstd"]["size"])))
    gcl = [lay["gc%02d-app" % i] for i in range(N_GC)] + [lay["gc%02d-config" % i] for i in range(N_GC)]
    app = [lay["gc%02d-app" % i] for i in range(N_GC)]
    cfg = [lay["gc%02d-config" % i] for i in range(N_GC)]
    L.append("| `cache-gc:i00`…`i%02d` (%d) | base + app (files picked from the packages) + config (3 small "
             "generated files) | base + app %s–%s + config %s | base + %s of own layers in all | – |" % (
                 N_GC - 1, N_GC, fmt_b(min(l["content_bytes"] for l in app)),
                 fmt_b(max(l["content_bytes"] for l in app)), fmt_b(max(l["content_bytes"] for l in cfg)),
                 fmt_b(sum(l["gzip"]["size"] for l in gcl))))
    cap = [lay["cap%02d" % i] for i in range(N_CAP)]
    L.append("| `cache-cap:i00`…`i%02d` (%d) | base + one own layer (files picked from the packages) | base + "
             "%s–%s (%s in all) | base + %s–%s | – |" % (
                 N_CAP - 1, N_CAP, fmt_b(min(l["content_bytes"] for l in cap)),
                 fmt_b(max(l["content_bytes"] for l in cap)), fmt_b(sum(l["content_bytes"] for l in cap)),
                 fmt_b(min(l["gzip"]["size"] for l in cap)), fmt_b(max(l["gzip"]["size"] for l in cap))))
    return L


def report(res, meta):
    L = [SECTION, ""]
    L.append("Generated by `bench/cache.py` (`MLFS_BENCH_ONLY=cache bench/run.sh`, or standalone); %s, "
             "%s, %d cores, kernel %s; mlfs `%s` (%s); %d runs for timings (median); whole run "
             "%.0f s (%s); load average %s at the start, %s at "
             "the end (timings include whatever else ran)." % (
                 res["date"], res["cpu"], os.cpu_count(), platform.release(), res["mlfs"],
                 res["mlfs_rev"] or "checkout at git %s%s" % (res["git"], ", tracked files modified: " +
                                                              " ".join(res["git_modified"])
                                                              if res["git_modified"] else ""),
                 res["runs"], res["elapsed"],
                 "building the images %.0f s, pushing them %.0f s" % (res["build_seconds"], res["push_seconds"])
                 if res["build_seconds"] or res["push_seconds"] else
                 "the images were built and pushed by an earlier run", " ".join(res["load"][0]),
                 " ".join(res["load"][1])))
    L.append("")
    L.append("Images (Debian bookworm .debs unpacked as `bench/mkimage.py` does; one OCI layout, pushed with "
             "skopeo to docker-registry on loopback). The base + one big layer shape of most real images, "
             "smaller than mkimage's 560 MB image (%s of files instead of 558 MB):" %
             fmt_b(meta["layers"]["base"]["content_bytes"] + meta["layers"]["toolchain"]["content_bytes"]))
    L.append("")
    L.extend(layout_lines(meta))
    L.append("")
    rows = []
    # 1
    for r in res["ratio"]:
        label = "cache / tree bytes after a full read, %s, %s%s" % (
            r["comp"], r["how"], ", `keep-blobs` (old behaviour)" if r["keep_blobs"] else "")
        val = "%.4f (%s / %s)" % (r["ratio"], fmt_b(r["du"]["total"]), fmt_b(r["tree_bytes"]))
        if r["keep_blobs"]:
            rows.append((label, val, "for comparison", "–"))
        else:
            rows.append((label, val, "<= 1.02", "yes" if r["ratio"] <= 1.02 else "**no**"))
    # 2
    g = res["gc"]
    for name in ("gc", "gc --max HALF", "ls"):
        for temp in ("warm", "cold"):
            v = g["times"]["%s %s" % (name, temp)]
            cmd = "`mlfs cache %s`" % name.replace("HALF", fmt_mib(g["half"]))
            rows.append(("%s on %d images / %d layers, %s (median of %d)" % (cmd, g["images"], g["layers"], temp, len(v)),
                         fmt_t(statistics.median(v)), "< 1 s",
                         "yes" if statistics.median(v) < 1 else "**no**"))
    # 3
    c = res["cap"]
    for how, lp in c["loops"].items():
        what = ("mount `-o cache-max` + tar + unmount" if how == "mount" else "`mlfs pull`, `$MLFS_CACHE_MAX`")
        rows.append(("cap, %s, %d images: max(total) − cap" % (what, len(lp["steps"])),
                     "%s (largest layer on disk %s; %d of %d steps over by more than the layer they added)" % (
                         signed_mib(lp["over"]), fmt_mib(lp["largest_layer_on_disk"]),
                         lp["steps_over_own_layer"], len(lp["steps"])),
                     "<= one layer", "yes" if lp["over"] <= lp["largest_layer_on_disk"]
                     and not lp["steps_over_own_layer"] else "**no**"))
        rows.append(("cap, %s: total after each %s" % (what, "unmount" if how == "mount" else "pull"),
                     "max %s, %d of %d steps over the cap" % (fmt_mib(lp["after_max"]), lp["after_over_cap"],
                                                               len(lp["steps"])),
                     "<= cap (%s)" % fmt_mib(c["cap"]), "yes" if lp["after_over_cap"] == 0 else "**no**"))
    L.append("| metric | value | target | met? |")
    L.append("|---|---|---|---|")
    for r in rows:
        L.append("| %s | %s | %s | %s |" % r)
    L.append("")

    L.append("**1. Cache bytes after a full read.** A new cache each; `mlfs cache du --json` while mounted, "
             "after `tar` of the whole tree; tree bytes = regular files' sizes in the mounted tree, "
             "hardlinks once.")
    L.append("")
    L.append("| how | data | index | blobs | meta | other | total | tree (files) | ratio |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for r in res["ratio"]:
        d = r["du"]
        L.append("| %s, %s%s | %s | %s | %s | %s | %s | %s | %s (%d) | %.4f |" % (
            r["how"], r["comp"], ", keep-blobs" if r["keep_blobs"] else "", fmt_b(d["data"]), fmt_b(d["index"]),
            fmt_b(d["blobs"]), fmt_b(d["meta"]), fmt_b(d["other"] + d["chunks"] + d["partial"] + d["temp"]),
            fmt_b(d["total"]), fmt_b(r["tree_bytes"]), r["tree_files"], r["ratio"]))
    ex = [r for r in res["ratio"] if "export" in r["how"]]
    if ex:
        e = ex[0]
        L.append("")
        L.append("The exported tree unpacked on this disk (ext4): `du -s -B1` %s (%.4f× the files' bytes: "
                 "4 KiB blocks, directories), `du -sb` %s; the cache is %.3f× that allocation."
                 % (fmt_b(e["tree_du_B1"]), e["tree_du_B1"] / e["tree_bytes"], fmt_b(e["tree_du_apparent"]),
                    e["ratio_vs_tree_du"]))
    L.append("")
    same = all(r["du"]["total"] == r["du_after_unmount"]["total"] for r in res["ratio"] if "du_after_unmount" in r)
    L.append("After unmount the totals were %s." % ("the same" if same else "different: " + ", ".join(
        "%s→%s" % (fmt_b(r["du"]["total"]), fmt_b(r["du_after_unmount"]["total"]))
        for r in res["ratio"] if "du_after_unmount" in r)))
    L.append("")

    L.append("**2. `mlfs cache` on %d images.** %s pulled into one cache (%s on disk, %d paths; pulls took "
             "%.1f s); each timed command on a fresh `cp -a` of it; warm = the copy in the page cache, cold = "
             "`drop_caches` first. Runs in ms:" % (
                 g["images"], "%d layers" % g["layers"], fmt_b(g["du"]["total"]), g["paths"], g["pull_seconds"]))
    L.append("")
    L.append("| command | warm | cold |")
    L.append("|---|---|---|")
    for name in ("gc", "gc --max HALF", "ls", "ls --json", "du --json"):
        cells = []
        for temp in ("warm", "cold"):
            v = g["times"]["%s %s" % (name, temp)]
            cells.append("%.1f (%s)" % (statistics.median(v) * 1e3, ", ".join("%.1f" % (x * 1e3) for x in v)))
        L.append("| `mlfs cache %s` | %s |" % (name.replace("HALF", str(g["half"])), " | ".join(cells)))
    L.append("")
    for name, e in g.get("effects", {}).items():
        L.append("- `%s`: %s; %s left of %s, %d images still listed." % (
            name.replace("HALF", fmt_mib(g["half"])),
            ", ".join("%s: %d" % kv for kv in sorted(e["lines"].items())) or "nothing removed",
            fmt_b(e["du_after"]["total"]), fmt_b(g["du"]["total"]), e["images_after"]))
    L.append("")

    L.append("**3. The cap.** CAP = %d× the largest layer's files (%s, %s) = %s; the %d cache-cap images one "
             "after another on one new cache. The total is sampled during each step by `mlfs cache du --json` "
             "every ~50 ms (%d samples in the mount loop, %d in the pull loop) and by an in-process scan with "
             "the same accounting (st_blocks of the files under data/, index/, chunks/, blobs/, meta/, refs/) "
             "every ~5 ms (%d and %d samples), and once by `du --json` after the step (the unmount waited for "
             "the daemon to exit). MiB:" % (
                 CAP_FACTOR, c["largest_name"], fmt_mib(c["largest_layer_files"]), fmt_mib(c["cap"]), N_CAP,
                 c["loops"]["mount"]["samples"], c["loops"]["pull"]["samples"],
                 c["loops"]["mount"]["fast_samples"], c["loops"]["pull"]["fast_samples"]))
    L.append("")
    L.append("| step | own layer on disk | mount: peak (du / scan) | over cap | after unmount | "
             "pull: peak (du / scan) | over cap | after pull |")
    L.append("|---|---|---|---|---|---|---|---|")
    ms, ps = c["loops"]["mount"]["steps"], c["loops"]["pull"]["steps"]

    def mib(v):
        return "–" if v is None else "%.1f" % (v / MB)

    def over(st):
        if st["over"] <= 0:
            return "–"
        own = st["own_on_disk"] or st["own_files"]
        return "%+.1f%s" % (st["over"] / MB, " **> own layer**" if st["over"] > own else "")

    def after(v):
        return mib(v) + (" **> cap**" if v > c["cap"] else "")
    for m, p in zip(ms, ps):
        L.append("| %d | %s | %s / %s | %s | %s | %s / %s | %s | %s |" % (
            m["i"], mib(m["own_on_disk"] or p["own_on_disk"]), mib(m["max_during"]), mib(m["max_during_fast"]),
            over(m), after(m["after"]), mib(p["max_during"]), mib(p["max_during_fast"]), over(p),
            after(p["after"])))
    L.append("")
    for how, lp in c["loops"].items():
        L.append("- %s loop: %.1f s; %s%s" % (
            how, lp["seconds"],
            "the shared base layer's blob was fetched %d time(s) from the registry" % lp["base_blob_gets"]
            if lp["base_blob_gets"] is not None else "",
            "; the scan and `du --json` disagreed after %d steps" % lp["scan_mismatch"] if lp["scan_mismatch"] else
            "; the scan and `du --json` agreed after every step"))
    L.append("")
    L.append("Raw figures: `cache-results.json` in the work dir (%s)." % res["work"])
    L.append("")
    return "\n".join(L)


def signed_mib(v):
    return ("+" if v >= 0 else "−") + fmt_mib(abs(v))


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=os.environ.get("MLFS_BENCH_DIR", "/var/tmp/mlfs-bench"))
    ap.add_argument("--mlfs", default=os.path.join(os.path.dirname(HERE), "build", "fs", "mlfs"))
    ap.add_argument("--runs", type=int, default=int(os.environ.get("MLFS_BENCH_RUNS", "3")))
    ap.add_argument("--debs", default=os.environ.get("MLFS_BENCH_DEBS", "/var/cache/mlfs-bench-debs"))
    ap.add_argument("--mlfs-rev", help="what BIN was built from, for the report (default: the checkout's "
                    "HEAD and its modified tracked files)")
    ap.add_argument("--registry", help="HOST:PORT of a running registry (default: start one)")
    ap.add_argument("--log", help="its access log (for registry request counts)")
    ap.add_argument("--put-section", metavar="RESULTS_MD",
                    help="measure nothing: put WORK/cache-results.md into RESULTS_MD (replacing its section)")
    ap.add_argument("--into", metavar="RESULTS_MD", help="after measuring, put the section into RESULTS_MD too")
    ap.add_argument("--report-only", action="store_true",
                    help="measure nothing: write WORK/cache-results.md again from WORK/cache-results.json "
                    "(after editing the report code); with --into, put it there too")
    a = ap.parse_args()
    a.work = os.path.abspath(a.work)
    a.mlfs = os.path.abspath(a.mlfs)
    md_path = os.path.join(a.work, "cache-results.md")
    if a.put_section:
        with open(md_path) as f:
            put_section(f.read(), a.put_section)
        log("put %s into %s" % (md_path, a.put_section))
        return
    if a.report_only:
        with open(os.path.join(a.work, "cache-results.json")) as f:
            res = json.load(f)
        md = report(res, res["images"])
        with open(md_path, "w") as f:
            f.write(md)
        print(md)
        if a.into:
            put_section(md, a.into)
        return
    if os.getuid() != 0:
        sys.exit("cache: run as root (FUSE mounts, drop_caches)")
    os.makedirs(a.work, exist_ok=True)
    os.makedirs(a.debs, exist_ok=True)
    t_start = now()
    load_start = open("/proc/loadavg").read().split()[:3]
    regpid = None
    cb = None
    try:
        layout = os.path.join(a.work, "cache-bench", "oci")
        os.makedirs(os.path.dirname(layout), exist_ok=True)
        meta, t_build = ensure_images(a.debs, layout)
        if a.registry:
            reg, alog_path = a.registry, a.log
        else:
            reg, regpid, alog_path = start_registry(a.work)
            log("docker-registry on %s (pid %d)" % (reg, regpid))
        t_push = push_images(reg, layout, meta)
        setup = now() - t_start
        alog = bench.AccessLog(alog_path) if alog_path else None
        cb = CacheBench(a, reg, alog, meta)
        cb.ratio()
        cb.gc()
        cb.cap()
        res = cb.res
        res["setup_seconds"] = setup
        res["push_seconds"] = t_push
        res["build_seconds"] = t_build
        res["mlfs"] = a.mlfs
        res["elapsed"] = now() - t_start
        res["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        res["cpu"] = bench.sh("lscpu | sed -n 's/^Model name: *//p' | head -1", capture=True).strip()
        root = os.path.dirname(HERE)
        res["git"] = bench.sh("git -C %s rev-parse --short HEAD" % root, capture=True).strip()
        res["git_modified"] = bench.sh("git -C %s diff --name-only HEAD" % root, capture=True).split()
        res["registry"] = reg
        res["mlfs_rev"] = a.mlfs_rev
        res["work"] = a.work
        res["load"] = [load_start, open("/proc/loadavg").read().split()[:3]]
        res["runs"] = a.runs
        res["images"] = meta
        with open(os.path.join(a.work, "cache-results.json"), "w") as f:
            json.dump(res, f, indent=1)
        md = report(res, meta)
        with open(md_path, "w") as f:
            f.write(md)
        print(md)
        if a.into:
            put_section(md, a.into)
            log("section put into %s" % a.into)
        log("done in %.0f s" % (now() - t_start))
    finally:
        if cb:
            cb.m.umount_all()
        if regpid:
            stop_registry(regpid)


if __name__ == "__main__":
    main()
