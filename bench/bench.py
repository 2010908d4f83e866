#!/usr/bin/python3
"""mlfs benchmark: measurements and bench/RESULTS.md.  Started by bench/run.sh,
which builds the images and runs the registry; stdlib only.

    bench.py --mlfs BIN --registry HOST:PORT --log ACCESS_LOG --work DIR
             --big-meta META.json --out RESULTS.md [--runs N]

Every workload is measured N times (default 3); each run interleaves mlfs
and the baselines so that noise from the machine spreads over all of them.
"Cold" means an empty mlfs cache (a new cache=DIR) and, right before the
timed step, `sync; echo 3 > /proc/sys/vm/drop_caches` (page cache, dentries
and inodes: the registry's blob files, the mlfs cache and the unpacked
reference tree are all read from disk again).  "Warm" is the same step
repeated at once, everything in memory.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
# The real program run from the large image in a chroot (the toolchain
# layer's gcc driver, which needs the base-libs layer's libc).
PROGRAM = ["/usr/bin/gcc-12", "--version"]
PROGRAM_SAYS = "gcc-12 (Debian 12"
# Seekable copies of big:gzip (bench/convert.py): tag -> what made it.
SEEKABLE = ["estargz", "zstdchunked", "cszstd"]
SEEKABLE_TOOL = {
    "estargz": "eStargz, `ctr-remote image convert --estargz --oci` (gzip level 9, 4 MiB chunks)",
    "zstdchunked": "zstd:chunked, `ctr-remote image convert --zstdchunked --oci`",
    "cszstd": "containers/storage's zstd:chunked, `skopeo copy --dest-compress-format zstd:chunked` via an oci: layout",
}
CMD_TIMEOUT = 600          # any single command; a run is far shorter
UNMOUNT_WAIT = 30.0


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def now():
    return time.perf_counter()


def sh(cmd, timeout=CMD_TIMEOUT, capture=False):
    """Run a bash command line (pipefail); raise on failure."""
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], timeout=timeout,
                       stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (cmd, r.returncode, r.stderr.strip()[-2000:]))
    return r.stdout if capture else None


def timed(cmd, timeout=CMD_TIMEOUT):
    t0 = now()
    out = sh(cmd, timeout, capture=True)
    return now() - t0, out


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def first_byte(path):
    t0 = now()
    with open(path, "rb") as f:
        b = f.read(1)
    if len(b) != 1:
        raise RuntimeError("%s: no first byte" % path)
    return now() - t0


def rmtree(path):
    if os.path.lexists(path):
        shutil.rmtree(path)


def vm_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0]) * 1024
    return out


def du_bytes(path):
    return int(sh("du -sb %s | cut -f1" % path, capture=True).strip() or 0)


def du_disk(path):
    """Disk blocks used (what the cache costs on disk, holes excluded)."""
    return int(sh("du -s -B1 %s | cut -f1" % path, capture=True).strip() or 0)


# -- the registry's access log ----------------------------------------------------

ACCESS_RE = re.compile(r'^\S+ - \S+ \[[^\]]*\] "(\w+) (\S+) HTTP/[0-9.]+" (\d{3}) (\d+|-) "[^"]*" "([^"]*)"')


class AccessLog:
    def __init__(self, path):
        self.path = path

    def mark(self):
        return os.path.getsize(self.path)

    def since(self, mark):
        """Requests logged after mark: dict with GET bytes and counts."""
        time.sleep(0.2)   # the registry logs a request once the response is done
        with open(self.path, "rb") as f:
            f.seek(mark)
            text = f.read().decode("utf-8", "replace")
        res = {"get_bytes": 0, "gets": 0, "heads": 0, "blob_gets": 0, "range_gets": 0, "requests": 0,
               "per_blob": {}}
        for line in text.splitlines():
            m = ACCESS_RE.match(line)
            if not m:
                continue
            method, path, status, size = m.group(1), m.group(2), m.group(3), m.group(4)
            res["requests"] += 1
            if method == "GET":
                n = int(size) if size != "-" else 0
                res["gets"] += 1
                res["get_bytes"] += n
                if "/blobs/" in path:
                    res["blob_gets"] += 1
                    pb = res["per_blob"].setdefault(path.rsplit("/", 1)[1], [0, 0])
                    pb[0] += 1
                    pb[1] += n
                if status == "206":
                    res["range_gets"] += 1
            elif method == "HEAD":
                res["heads"] += 1
        return res


# -- mlfs mounts ---------------------------------------------------------------

class Mlfs:
    def __init__(self, binary, work):
        self.bin = binary
        self.work = work
        self.mounted = set()
        self.seq = 0

    def new_cache(self):
        self.seq += 1
        path = os.path.join(self.work, "cache-%d" % self.seq)
        rmtree(path)
        return path

    def mount(self, ref, mnt, cache, extra=""):
        """Mount; returns seconds from command start to a usable mountpoint."""
        os.makedirs(mnt, exist_ok=True)
        if os.path.ismount(mnt):
            raise RuntimeError("%s is already mounted" % mnt)
        opts = "cache=" + cache + ("," + extra if extra else "")
        t0 = now()
        r = subprocess.run([self.bin, "mount", ref, mnt, "-o", opts], timeout=CMD_TIMEOUT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise RuntimeError("mlfs mount %s: %s" % (ref, r.stderr.strip()))
        self.mounted.add(mnt)
        os.stat(mnt)
        if not os.path.ismount(mnt):
            raise RuntimeError("mlfs mount returned but %s is no mountpoint" % mnt)
        return now() - t0

    def daemon_pid(self, mnt):
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if len(argv) > 3 and argv[1] == b"mount" and argv[3] == mnt.encode() \
                    and os.path.basename(argv[0]) == b"mlfs":
                return int(d)
        raise RuntimeError("no mlfs daemon for %s" % mnt)

    def umount(self, mnt):
        try:
            pid = self.daemon_pid(mnt)
        except RuntimeError:
            pid = None
        r = subprocess.run(["fusermount3", "-u", mnt], timeout=60, capture_output=True)
        if r.returncode != 0:
            log("fusermount3 -u %s failed (%s); lazy unmount" % (mnt, r.stderr.strip()))
            subprocess.run(["fusermount3", "-uz", mnt], timeout=60)
        deadline = now() + UNMOUNT_WAIT
        while pid and os.path.exists("/proc/%d" % pid) and now() < deadline:
            try:
                with open("/proc/%d/stat" % pid) as f:
                    if f.read().split(")")[-1].split()[0] == "Z":
                        break
            except OSError:
                break
            time.sleep(0.02)
        self.mounted.discard(mnt)

    def umount_all(self):
        for mnt in list(self.mounted):
            if os.path.ismount(mnt):
                self.umount(mnt)
            self.mounted.discard(mnt)


# -- registry helpers (for the baselines) ---------------------------------------

def get_json(url):
    req = urllib.request.Request(url, headers={"Accept": ACCEPT})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def resolve_layers(reg, repo, tag):
    """Layer digests of the host's (linux/amd64) manifest."""
    m = get_json("http://%s/v2/%s/manifests/%s" % (reg, repo, tag))
    if "manifests" in m:
        pick = [d for d in m["manifests"] if d.get("platform", {}).get("architecture") == "amd64"
                and d.get("platform", {}).get("os") == "linux"]
        m = get_json("http://%s/v2/%s/manifests/%s" % (reg, repo, pick[0]["digest"]))
    return [l["digest"] for l in m["layers"]], [l["size"] for l in m["layers"]]


def layer_formats(reg, repo, tag):
    """Each layer's format as mlfs recognises it, from its media type and annotations."""
    m = get_json("http://%s/v2/%s/manifests/%s" % (reg, repo, tag))
    out = []
    for l in m.get("layers", []):
        ann = l.get("annotations") or {}
        mt = l.get("mediaType", "")
        if any(k.endswith("zstd-chunked.manifest-checksum") for k in ann):
            out.append("zstd:chunked" + (" (ctr-remote)" if "containerd.io/snapshot/stargz/toc.digest" in ann
                                         else " (containers/storage)"))
        elif "containerd.io/snapshot/stargz/toc.digest" in ann:
            out.append("eStargz")
        elif mt.endswith("zstd"):
            out.append("zstd")
        else:
            out.append("gzip")
    return out


def parallel(cmds, timeout=CMD_TIMEOUT):
    """Start every command line at once; wait for all; seconds for the lot."""
    t0 = now()
    procs = [subprocess.Popen(["bash", "-o", "pipefail", "-c", c], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for c in cmds]
    errs = []
    for c, p in zip(cmds, procs):
        _, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            errs.append("%s: %s" % (c, err.strip()[-500:]))
    if errs:
        raise RuntimeError("; ".join(errs))
    return now() - t0


# -- the measurements --------------------------------------------------------------

class Bench:
    def __init__(self, a):
        self.a = a
        self.reg = a.registry
        self.work = a.work
        self.alog = AccessLog(a.log)
        self.mlfs = Mlfs(os.path.abspath(a.mlfs), os.path.join(a.work, "mlfs"))
        os.makedirs(self.mlfs.work, exist_ok=True)
        self.fig = {}       # (workload, key) -> list of samples
        self.failures = []  # steps that could not read every file
        self.info = {}      # workload -> facts
        self.local_ref = {}  # workload -> unpacked reference tree

    def add(self, w, key, value):
        if value is None:       # a failed step (see failures): no sample
            return
        self.fig.setdefault((w, key), []).append(value)

    def tar_read(self, d, w=None, step=None):
        """(seconds, tar stream bytes); seconds is None when tar could not read
        every file (the failure is recorded for the report, not raised)."""
        # Exit status 1 is "file changed as we read it": an mlfs mount answers
        # the root's stat with a placeholder until the layers are loaded.
        t0 = now()
        r = subprocess.run(["bash", "-o", "pipefail", "-c",
                            "(tar --warning=no-file-changed -cf - -C %s . || [ $? = 1 ]) | wc -c" % d],
                           timeout=CMD_TIMEOUT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t = now() - t0
        if r.returncode == 0:
            return t, int(r.stdout.strip())
        if w is None:
            raise RuntimeError("tar of %s: exit %d: %s" % (d, r.returncode, r.stderr.strip()[-2000:]))
        errs = [l for l in r.stderr.splitlines() if l.startswith("tar: ./")]
        log("%s %s: tar could not read %d files, e.g. %s" % (w, step, len(errs), errs[:1]))
        self.failures.append({"workload": w, "step": step, "files": len(errs), "seconds": t,
                              "examples": errs[:3]})
        return None, int(r.stdout.strip() or 0)

    def find_walk(self, d):
        t, _ = timed("find %s -printf '%%s %%m\\n' >/dev/null" % d)
        return t

    # --- mlfs ---
    def mlfs_run(self, w, ref, deep, r):
        m = self.mlfs
        mnt = os.path.join(self.work, "mnt-%s" % w)

        # A: cold mount, cold first byte, warm mount latency, cached remounts.
        cache = m.new_cache()
        drop_caches()
        mark = self.alog.mark()
        t_mount = m.mount(ref, mnt, cache)
        self.add(w, "mlfs.mount.cold", t_mount)
        reqs = self.alog.since(mark)
        self.add(w, "mlfs.bytes.mount", reqs["get_bytes"])
        pid = m.daemon_pid(mnt)
        self.add(w, "mlfs.rss.idle", vm_status(pid)["VmHWM"])
        mark = self.alog.mark()
        t_fb = first_byte(os.path.join(mnt, deep))
        self.add(w, "mlfs.firstbyte.after_mount", t_fb)
        self.add(w, "mlfs.firstbyte.cold", t_mount + t_fb)
        reqs = self.alog.since(mark)
        self.add(w, "mlfs.bytes.firstbyte", reqs["get_bytes"])
        self.add(w, "mlfs.reqs.firstbyte", reqs["blob_gets"])
        # The layers are loaded now (and their data files in the page cache):
        # a first tar pass shows what FUSE itself costs before the kernel's caches fill.
        self.add(w, "mlfs.tar.firstpass", self.tar_read(mnt, w, "tar after first byte")[0])
        m.umount(mnt)

        # Empty cache, but mlfs and its libraries already in memory: what the
        # mount itself costs without exec reading them from disk.
        c2 = m.new_cache()
        self.add(w, "mlfs.mount.emptycache", m.mount(ref, mnt, c2))
        m.umount(mnt)
        rmtree(c2)

        self.add(w, "mlfs.mount.warm", m.mount(ref, mnt, cache))
        m.umount(mnt)
        for key, extra in (("mlfs.remount", ""), ("mlfs.remount.offline", "offline")):
            mark = self.alog.mark()
            t_m = m.mount(ref, mnt, cache, extra)
            t_fb = first_byte(os.path.join(mnt, deep))
            self.add(w, key + ".mounted", t_m)
            self.add(w, key, t_m + t_fb)
            if not extra:
                self.add(w, "mlfs.rss.remount", vm_status(m.daemon_pid(mnt))["VmHWM"])
            self.add(w, "mlfs.bytes." + key.split(".", 1)[1], self.alog.since(mark)["get_bytes"])
            m.umount(mnt)
        rmtree(cache)

        # B: cold whole-tree read, then warm, walks, memory, cache size.
        cache = m.new_cache()
        drop_caches()
        mark = self.alog.mark()
        t_m = m.mount(ref, mnt, cache)
        t_tar, nbytes = self.tar_read(mnt, w, "cold tar")
        self.add(w, "mlfs.tar.cold", t_m + t_tar if t_tar is not None else None)
        reqs = self.alog.since(mark)
        self.add(w, "mlfs.bytes.full", reqs["get_bytes"])
        self.add(w, "mlfs.reqs.full", reqs["blob_gets"])
        self.info[w]["tar_stream_bytes"] = nbytes
        self.add(w, "mlfs.tar.warm", self.tar_read(mnt, w, "warm tar")[0])
        self.add(w, "mlfs.find.warm", self.find_walk(mnt))
        self.info[w]["entries"] = int(sh("find %s | wc -l" % mnt, capture=True).strip())
        pid = m.daemon_pid(mnt)
        st = vm_status(pid)
        self.add(w, "mlfs.rss.hwm", st["VmHWM"])
        self.add(w, "mlfs.rss.now", st["VmRSS"])
        for part in ("", "blobs", "data", "index"):
            p = os.path.join(cache, part)
            if os.path.exists(p):
                self.add(w, "mlfs.cache.du" + ("." + part if part else ""), du_disk(p))
        # Cached layers but nothing in memory: the page cache and the
        # kernel's FUSE dentries/inodes are dropped under the live mount.
        drop_caches()
        self.add(w, "mlfs.tar.pagecold", self.tar_read(mnt, w, "tar, page cache dropped")[0])
        drop_caches()
        self.add(w, "mlfs.find.pagecold", self.find_walk(mnt))
        m.umount(mnt)
        rmtree(cache)

        # C: metadata walk on an empty cache (includes fetching the layers).
        cache = m.new_cache()
        drop_caches()
        t_m = m.mount(ref, mnt, cache)
        self.add(w, "mlfs.find.cold", t_m + self.find_walk(mnt))
        m.umount(mnt)
        rmtree(cache)

    def program(self, root):
        """Run PROGRAM in a chroot of root; seconds.  Checks its output."""
        t, out = timed("env -i PATH=/usr/bin:/bin LANG=C /usr/sbin/chroot %s %s" % (root, " ".join(PROGRAM)))
        if PROGRAM_SAYS not in out:
            raise RuntimeError("chroot %s %s printed %r" % (root, " ".join(PROGRAM), out[:200]))
        return t

    def ls_r(self, d):
        t, out = timed("ls -R %s | wc -l" % d)
        return t, int(out.strip())

    def mlfs_seekable_run(self, w, ref, r):
        """The measurements the seekable formats are about, on every large
        workload (gzip and zstd too, side by side): each on a new empty
        cache after dropping the caches, mount included."""
        m = self.mlfs
        mnt = os.path.join(self.work, "mnt-%s" % w)

        def cold(key, step, extra=""):
            cache = m.new_cache()
            drop_caches()
            mark = self.alog.mark()
            t_m = m.mount(ref, mnt, cache, extra)
            t_step, res = step()
            reqs = self.alog.since(mark)
            self.add(w, "mlfs.%s.cold" % key, t_m + t_step if t_step is not None else None)
            self.add(w, "mlfs.%s.after_mount" % key, t_step)
            self.add(w, "mlfs.bytes.%s" % key, reqs["get_bytes"])
            self.add(w, "mlfs.reqs.%s" % key, reqs["blob_gets"])
            self.info[w].setdefault("per_blob", {}).setdefault(key, []).append(reqs["per_blob"])
            m.umount(mnt)
            rmtree(cache)
            return res

        # Listing the whole tree (names and attributes, no file contents).
        n = cold("lsR", lambda: self.ls_r(mnt))
        self.info[w]["ls_r_lines"] = n
        # A real program from the image, in a chroot.
        cold("prog", lambda: (self.program(mnt), None))
        # Whole-tree read with -o prefetch (every chunk filled in the background).
        cold("tar.prefetch", lambda: self.tar_read(mnt, w, "cold tar -o prefetch"), "prefetch")

        # mlfs pull: every layer into an empty cache (gzip/zstd: the blobs;
        # seekable: the TOC and every chunk, decompressed and verified).
        cache = m.new_cache()
        drop_caches()
        mark = self.alog.mark()
        t0 = now()
        r = subprocess.run([m.bin, "pull", "--quiet", "--cache", cache, ref], timeout=CMD_TIMEOUT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t = now() - t0
        if r.returncode != 0:
            errs = r.stderr.strip().splitlines()
            log("%s mlfs pull failed: %s" % (w, errs[-1:]))
            self.failures.append({"workload": w, "step": "mlfs pull", "files": 0, "seconds": t,
                                  "examples": ["exit %d, %d error lines; last: %s"
                                               % (r.returncode, len(errs), errs[-1] if errs else "")]})
            t = None
        self.add(w, "mlfs.pull.cold", t)
        self.add(w, "mlfs.bytes.pull", self.alog.since(mark)["get_bytes"])
        rmtree(cache)

    # --- baselines ---
    def baseline_run(self, w, repo, tag, deep, r, umoci_ok, big):
        ref = "%s/%s:%s" % (self.reg, repo, tag)
        sk = "skopeo --insecure-policy"
        bdir = os.path.join(self.work, "base-%s" % w)
        rmtree(bdir)
        os.makedirs(bdir)

        drop_caches()
        mark = self.alog.mark()
        self.add(w, "skopeo.inspect.cold", timed("%s inspect --tls-verify=false docker://%s" % (sk, ref))[0])
        self.add(w, "skopeo.bytes.inspect", self.alog.since(mark)["get_bytes"])
        self.add(w, "skopeo.inspect.warm", timed("%s inspect --tls-verify=false docker://%s" % (sk, ref))[0])

        # The fastest full pull: every layer at once, curl piped into bsdtar,
        # each into its own directory (as containerd's overlay snapshotter does).
        drop_caches()
        mark = self.alog.mark()
        t0 = now()
        digests, _ = resolve_layers(self.reg, repo, tag)
        dirs = [os.path.join(bdir, "pull", "%d" % i) for i in range(len(digests))]
        for d in dirs:
            os.makedirs(d)
        parallel(["curl -fsS --max-time 300 http://%s/v2/%s/blobs/%s | bsdtar -xf - -C %s"
                  % (self.reg, repo, dg, d) for dg, d in zip(digests, dirs)])
        t_pull = now() - t0
        # the deep file from the topmost layer that has it
        path = next(os.path.join(d, deep) for d in reversed(dirs) if os.path.exists(os.path.join(d, deep)))
        self.add(w, "pull.curl_bsdtar", t_pull)
        self.add(w, "pull.curl_bsdtar.firstbyte", t_pull + first_byte(path))
        self.add(w, "pull.bytes", self.alog.since(mark)["get_bytes"])
        if big:
            # The pulled layers as one tree, the way containerd's overlay
            # snapshotter stacks them (read-only overlayfs, top layer first),
            # then the same steps as on mlfs: `ls -R` and the program in a chroot.
            ovl = os.path.join(bdir, "overlay")
            os.makedirs(ovl)
            sh("mount -t overlay overlay -o ro,lowerdir=%s %s" % (":".join(reversed(dirs)), ovl))
            try:
                self.add(w, "pull.curl_bsdtar.prog", t_pull + self.program(ovl))
                self.add(w, "pull.curl_bsdtar.lsR", t_pull + self.ls_r(ovl)[0])
            finally:
                sh("umount %s" % ovl)
        rmtree(os.path.join(bdir, "pull"))

        # Download alone (to /dev/null) and decompression alone.
        drop_caches()
        self.add(w, "download.parallel", parallel(
            ["curl -fsS --max-time 300 -o /dev/null http://%s/v2/%s/blobs/%s" % (self.reg, repo, dg)
             for dg in digests]))
        blobs = self.blob_files(repo, digests)
        for b in blobs:
            sh("cat %s >/dev/null" % b)       # compressed blobs in memory: decompression only
        self.add(w, "decompress.parallel", parallel(["bsdtar -xOf %s >/dev/null" % b for b in blobs]))
        t_seq = 0.0
        for b in blobs:
            t_seq += timed("bsdtar -xOf %s >/dev/null" % b)[0]
        self.add(w, "decompress.sequential", t_seq)

        # skopeo copy + umoci unpack (umoci reads gzip and plain layers only).
        if umoci_ok:
            lay = os.path.join(bdir, "oci")
            bundle = os.path.join(bdir, "bundle")
            drop_caches()
            mark = self.alog.mark()
            t_copy, _ = timed("%s copy -q --src-tls-verify=false docker://%s oci:%s:img" % (sk, ref, lay))
            t_unpack, _ = timed("umoci unpack --image %s:img %s" % (lay, bundle))
            t_fb = first_byte(os.path.join(bundle, "rootfs", deep))
            self.add(w, "skopeo.copy", t_copy)
            self.add(w, "umoci.unpack", t_unpack)
            self.add(w, "skopeo_umoci.firstbyte", t_copy + t_unpack + t_fb)
            self.add(w, "skopeo.bytes.copy", self.alog.since(mark)["get_bytes"])
            keep = os.path.join(self.work, "ref-%s" % w)
            rmtree(keep)
            os.rename(os.path.join(bundle, "rootfs"), keep)
            self.local_ref[w] = keep
        rmtree(bdir)

    def blob_files(self, repo, digests):
        d = os.path.join(self.work, "blobs")
        os.makedirs(d, exist_ok=True)
        out = []
        for dg in digests:
            p = os.path.join(d, dg.split(":", 1)[1])
            if not os.path.exists(p):
                sh("curl -fsS --max-time 300 -o %s.tmp http://%s/v2/%s/blobs/%s && mv %s.tmp %s"
                   % (p, self.reg, repo, dg, p, p))
            out.append(p)
        return out

    def local_run(self, w, ref_tree):
        drop_caches()
        t, nbytes = self.tar_read(ref_tree)
        self.add(w, "local.tar.cold", t)
        self.info[w]["local_tar_stream_bytes"] = nbytes
        self.add(w, "local.tar.warm", self.tar_read(ref_tree)[0])
        drop_caches()
        self.add(w, "local.find.cold", self.find_walk(ref_tree))
        self.add(w, "local.find.warm", self.find_walk(ref_tree))

    def workload(self, w, repo, tag, deep, umoci_ok, local_from):
        ref = "%s/%s:%s" % (self.reg, repo, tag)
        big = w != "demo"
        self.info.setdefault(w, {})
        digests, sizes = resolve_layers(self.reg, repo, tag)
        self.info[w].update(ref=ref, deep=deep, layers=len(digests), compressed_bytes=sum(sizes),
                            layer_sizes=sizes, layer_digests=digests,
                            layer_formats=layer_formats(self.reg, repo, tag))
        runs = max(self.a.runs, 10) if w == "demo" else self.a.runs   # ms-scale: more samples
        for r in range(runs):
            log("%s: run %d of %d" % (w, r + 1, runs))
            t0 = now()
            self.baseline_run(w, repo, tag, deep, r, umoci_ok, big)
            self.mlfs_run(w, ref, deep, r)
            if big:
                self.mlfs_seekable_run(w, ref, r)
            tree = self.local_ref.get(local_from)
            self.local_run(w, tree)
            log("%s: run %d took %.0fs" % (w, r + 1, now() - t0))
        tree = self.local_ref[local_from]
        self.info[w]["local_tree"] = tree
        self.info[w]["local_tree_bytes"] = du_bytes(tree)
        self.info[w]["local_entries"] = int(sh("find %s | wc -l" % tree, capture=True).strip())


# -- the report ---------------------------------------------------------------------

def md(s):
    return s.replace("|", "\\|")


def fmt_value(v, unit):
    if unit == "s":
        return "%.1f ms" % (v * 1e3) if v < 1 else "%.2f s" % v
    if unit == "B":
        if v >= 1e6:
            return "%.1f MB" % (v / 1e6)
        if v >= 1e3:
            return "%.1f kB" % (v / 1e3)
        return "%d B" % v
    if unit == "n":
        return "%d" % round(v)
    return "%.3g" % v


FIGURES = [
    # key, unit, label
    ("1. Mount latency (command start to usable mountpoint)", None, None),
    ("mlfs.mount.cold", "s", "mlfs mount, cold (empty cache, caches dropped)"),
    ("mlfs.mount.emptycache", "s", "mlfs mount, empty cache, caches not dropped (mlfs binary in memory)"),
    ("mlfs.mount.warm", "s", "mlfs mount, warm (cached image)"),
    ("skopeo.inspect.cold", "s", "skopeo inspect, cold"),
    ("skopeo.inspect.warm", "s", "skopeo inspect, warm"),
    ("2. Time to the first byte of a deep file, cold", None, None),
    ("mlfs.firstbyte.cold", "s", "mlfs: mount + first byte"),
    ("mlfs.firstbyte.after_mount", "s", "mlfs: first byte alone (after the mount returned)"),
    ("skopeo_umoci.firstbyte", "s", "skopeo copy + umoci unpack + first byte"),
    ("skopeo.copy", "s", "  of which skopeo copy"),
    ("umoci.unpack", "s", "  of which umoci unpack"),
    ("pull.curl_bsdtar.firstbyte", "s", "full pull, curl | bsdtar -x per layer, all layers at once, + first byte"),
    ("3. Whole-tree read (tar -cf - DIR | wc -c)", None, None),
    ("mlfs.tar.cold", "s", "mlfs, cold (mount + tar, empty cache)"),
    ("mlfs.tar.warm", "s", "mlfs, warm (same mount, again)"),
    ("mlfs.tar.firstpass", "s", "mlfs, first pass once the layers are loaded (data files in page cache)"),
    ("mlfs.tar.pagecold", "s", "mlfs, layers cached but page cache dropped"),
    ("local.tar.cold", "s", "unpacked tree on local disk, caches dropped"),
    ("local.tar.warm", "s", "unpacked tree on local disk, warm"),
    ("download.parallel", "s", "download alone: curl every blob to /dev/null, all at once, cold"),
    ("decompress.parallel", "s", "decompression alone: bsdtar -xOf every blob, all at once (blobs in memory)"),
    ("decompress.sequential", "s", "decompression alone: bsdtar -xOf, one blob after another (sum)"),
    ("4. Metadata walk (find DIR -printf '%s %m\\n')", None, None),
    ("mlfs.find.cold", "s", "mlfs, cold (mount + find, empty cache)"),
    ("mlfs.find.pagecold", "s", "mlfs, layers cached but page/dentry cache dropped"),
    ("mlfs.find.warm", "s", "mlfs, warm"),
    ("local.find.cold", "s", "unpacked tree on local disk, caches dropped"),
    ("local.find.warm", "s", "unpacked tree on local disk, warm"),
    ("5. Bytes sent by the registry (GET response bodies, from its access log)", None, None),
    ("mlfs.bytes.mount", "B", "mlfs mount, cold (manifests and config only)"),
    ("mlfs.bytes.firstbyte", "B", "mlfs first byte after mount (the layers)"),
    ("mlfs.bytes.full", "B", "mlfs mount + whole-tree read, cold"),
    ("mlfs.bytes.remount", "B", "mlfs remount of the cached image + first byte"),
    ("mlfs.bytes.remount.offline", "B", "mlfs remount -o offline + first byte"),
    ("skopeo.bytes.inspect", "B", "skopeo inspect"),
    ("skopeo.bytes.copy", "B", "skopeo copy"),
    ("pull.bytes", "B", "curl | bsdtar full pull"),
    ("6. Daemon memory and cache disk use", None, None),
    ("mlfs.rss.idle", "B", "mlfs daemon VmHWM right after mount (gzip/zstd: nothing loaded; seekable: the TOCs, "
                            "which the mountpoint's stat waits for)"),
    ("mlfs.rss.hwm", "B", "mlfs daemon VmHWM after whole-tree read, find (before unmount)"),
    ("mlfs.rss.now", "B", "mlfs daemon VmRSS at the same point"),
    ("mlfs.rss.remount", "B", "mlfs daemon VmHWM after a cached remount + first byte (indexes loaded, nothing decompressed)"),
    ("mlfs.cache.du", "B", "cache on disk (du), total"),
    ("mlfs.cache.du.blobs", "B", "  blobs/ (compressed layers, manifests, config)"),
    ("mlfs.cache.du.data", "B", "  data/ (decompressed file contents)"),
    ("mlfs.cache.du.index", "B", "  index/"),
    ("7. Remount of a cached image (until the deep file's first byte is read)", None, None),
    ("mlfs.remount", "s", "mlfs remount + first byte"),
    ("mlfs.remount.mounted", "s", "  of which the mount command"),
    ("mlfs.remount.offline", "s", "mlfs remount -o offline + first byte"),
    ("mlfs.remount.offline.mounted", "s", "  of which the mount command"),
    ("8. Seekable-layer steps (large images; cold: new empty cache, caches dropped, the mount included)", None, None),
    ("mlfs.lsR.cold", "s", "mlfs mount + ls -R"),
    ("mlfs.lsR.after_mount", "s", "  of which ls -R"),
    ("mlfs.bytes.lsR", "B", "  registry bytes"),
    ("mlfs.reqs.lsR", "n", "  blob requests (footers, TOCs; whole layers for gzip/zstd)"),
    ("mlfs.prog.cold", "s", "mlfs mount + chroot " + " ".join(PROGRAM)),
    ("mlfs.prog.after_mount", "s", "  of which the program"),
    ("mlfs.bytes.prog", "B", "  registry bytes"),
    ("mlfs.reqs.prog", "n", "  blob requests"),
    ("mlfs.reqs.firstbyte", "n", "blob requests for the deep file's first byte (after the mount, section 2)"),
    ("mlfs.reqs.full", "n", "blob requests for the whole-tree read (section 3)"),
    ("mlfs.tar.prefetch.cold", "s", "mlfs mount -o prefetch + whole-tree read"),
    ("mlfs.bytes.tar.prefetch", "B", "  registry bytes"),
    ("mlfs.reqs.tar.prefetch", "n", "  blob requests"),
    ("mlfs.pull.cold", "s", "mlfs pull (empty cache)"),
    ("mlfs.bytes.pull", "B", "  registry bytes"),
    ("pull.curl_bsdtar", "s", "curl | bsdtar full pull alone"),
    ("pull.curl_bsdtar.lsR", "s", "curl | bsdtar full pull + ls -R (overlayfs of the layers)"),
    ("pull.curl_bsdtar.prog", "s", "curl | bsdtar full pull + chroot " + " ".join(PROGRAM) + " (overlayfs)"),
]


METHOD = [
    "Each run does, per workload: the baselines, then mlfs (three mounts on new empty caches: "
    "A first byte, B whole-tree read, C metadata walk), then the local-disk tree; timings are "
    "wall clock from the harness (Python `perf_counter` around the commands).",
    "**Cold**: a new empty `cache=DIR` and `sync; echo 3 > /proc/sys/vm/drop_caches` just before; "
    "mlfs cold figures include the `mlfs mount` command itself.",
    "**Mount latency**: from starting `mlfs mount` until it returned and `stat DIR` answered "
    "(mlfs returns once the mount is up; no layer is fetched).",
    "**First byte**: `open` + `read(1)` of the deep file. Baselines: `skopeo copy docker://… oci:…` + "
    "`umoci unpack`; and the fastest full pull: the manifest, then every layer at once as "
    "`curl blob | bsdtar -xf - -C DIR/i`.",
    "**Download alone**: every blob with `curl -o /dev/null`, all at once, after dropping caches. "
    "**Decompression alone**: `bsdtar -xOf blob >/dev/null`, all blobs at once (the cold-read "
    "target uses this one), compressed blobs already in memory; the one-after-another sum is shown too.",
    "**Whole-tree read**: `tar -cf - -C DIR . | wc -c` (GNU tar; exit status 1, \"file changed as "
    "we read it\", is accepted: a fresh mlfs mount answers the stat of its root with a placeholder until the layers are loaded, so tar sees `.` change). **Metadata walk**: `find DIR -printf '%s %m\\n' >/dev/null`.",
    "**Registry bytes**: the sizes of GET responses in docker-registry's access log between two marks "
    "(HEAD requests carry no body and are not counted).",
    "**Memory**: VmHWM and VmRSS of the mlfs daemon from `/proc/PID/status`, read before unmount. "
    "**Cache**: `du -s -B1` of the cache dir and its parts (disk blocks).",
    "**Remount**: unmount, then mount the same image on the same (warm) cache and read the deep "
    "file's first byte; again with `-o offline`.",
    "**Large images, section 8** (each step on its own new empty cache after `drop_caches`, the mount "
    "included): `ls -R DIR | wc -l`; `env -i PATH=/usr/bin:/bin LANG=C chroot DIR " + " ".join(PROGRAM) +
    "` (the toolchain layer's gcc driver, dynamically linked to the base-libs layer's libc; its output "
    "is checked); `mount -o prefetch` + the whole-tree `tar`; `mlfs pull --cache DIR REF`. "
    "The pull baseline mounts the pulled layer directories as one read-only overlayfs and runs the "
    "same `ls -R` and program there.",
]


def med(b, w, key):
    v = b.fig.get((w, key))
    return statistics.median(v) if v else None


def targets(b, w):
    """(name, measured, limit, met, how) for each target."""
    out = []
    info = b.info[w]
    nbytes = info.get("tar_stream_bytes", 0)
    mw, lw = med(b, w, "mlfs.tar.warm"), med(b, w, "local.tar.warm")
    if mw and lw:
        ratio = lw / mw
        out.append(("warm whole-tree read >= 0.8x local disk throughput",
                    "%.0f MB/s vs %.0f MB/s local = %.2fx" % (nbytes / mw / 1e6, nbytes / lw / 1e6, ratio),
                    ">= 0.80x", ratio >= 0.8))
    mc = med(b, w, "mlfs.tar.cold")
    dl, dc = med(b, w, "download.parallel"), med(b, w, "decompress.parallel")
    if mc and dl and dc:
        lim = 1.2 * max(dl, dc)
        out.append(("cold whole-tree read <= 1.2x max(download, decompression)",
                    "%s (download %s, decompression %s)" % (fmt_value(mc, "s"), fmt_value(dl, "s"),
                                                            fmt_value(dc, "s")),
                    "<= %s" % fmt_value(lim, "s"), mc <= lim))
    fb, pull = med(b, w, "mlfs.firstbyte.cold"), med(b, w, "pull.curl_bsdtar.firstbyte")
    if fb and pull:
        out.append(("cold time to first file <= 0.5x curl|bsdtar full pull",
                    "%s vs pull %s = %.2fx" % (fmt_value(fb, "s"), fmt_value(pull, "s"), fb / pull),
                    "<= %s" % fmt_value(0.5 * pull, "s"), fb <= 0.5 * pull))
    fw, lfw = med(b, w, "mlfs.find.warm"), med(b, w, "local.find.warm")
    if fw and lfw:
        out.append(("warm metadata walk <= 1.5x local disk",
                    "%s vs %s = %.2fx" % (fmt_value(fw, "s"), fmt_value(lfw, "s"), fw / lfw),
                    "<= %s" % fmt_value(1.5 * lfw, "s"), fw <= 1.5 * lfw))
    rss = b.fig.get((w, "mlfs.rss.hwm"))
    if rss:
        ents = info.get("entries", 0)
        lim = 20e6 + 200 * ents
        worst = max(rss)
        out.append(("daemon RSS <= 20 MB + 200 B/entry",
                    "VmHWM %s (max of runs) for %d entries" % (fmt_value(worst, "B"), ents),
                    "<= %s" % fmt_value(lim, "B"), worst <= lim))
    out.extend(seekable_targets(b, w))
    rm = med(b, w, "mlfs.remount")
    if rm:
        out.append(("cached remount <= 50 ms (mount + first byte of the deep file)",
                    "%s (offline: %s)" % (fmt_value(rm, "s"), fmt_value(med(b, w, "mlfs.remount.offline"), "s")),
                    "<= 50.0 ms", rm <= 0.050))
    return out


def seekable_targets(b, w):
    """The seekable-layer targets, for the seekable workloads."""
    if w[len("big-"):] not in SEEKABLE:
        return []
    out = []
    size = b.info[w]["compressed_bytes"]
    prog = " ".join(PROGRAM)
    v = med(b, w, "mlfs.bytes.lsR")
    if v is not None:
        out.append(("mount + `ls -R` <= 3% of the image's compressed bytes",
                    "%s = %.2f%% of %s" % (fmt_value(v, "B"), 100 * v / size, fmt_value(size, "B")),
                    "<= %s" % fmt_value(0.03 * size, "B"), v <= 0.03 * size))
    v = med(b, w, "mlfs.bytes.prog")
    if v is not None:
        out.append(("mount + chroot `%s` <= 10%% of the compressed bytes" % prog,
                    "%s = %.1f%% of %s" % (fmt_value(v, "B"), 100 * v / size, fmt_value(size, "B")),
                    "<= %s" % fmt_value(0.10 * size, "B"), v <= 0.10 * size))
    v, pull = med(b, w, "mlfs.prog.cold"), med(b, "big-gzip", "pull.curl_bsdtar")
    if v is not None and pull:
        out.append(("mount + chroot `%s` <= 0.2x the gzip image's full pull (curl \| bsdtar)" % prog,
                    "%s vs pull %s = %.3fx" % (fmt_value(v, "s"), fmt_value(pull, "s"), v / pull),
                    "<= %s" % fmt_value(0.2 * pull, "s"), v <= 0.2 * pull))
    v, gz = med(b, w, "mlfs.tar.cold"), med(b, "big-gzip", "mlfs.tar.cold")
    if v is not None and gz:
        out.append(("cold whole-tree read no slower than the gzip image's (mlfs)",
                    "%s vs gzip %s = %.2fx" % (fmt_value(v, "s"), fmt_value(gz, "s"), v / gz),
                    "<= %s" % fmt_value(gz, "s"), v <= gz))
    elif gz:
        failed = [f for f in b.failures if f["workload"] == w and f["step"] == "cold tar"]
        out.append(("cold whole-tree read no slower than the gzip image's (mlfs)",
                    "not measured: tar could not read %s files in %d runs (see Failures)"
                    % ("/".join(sorted(set(str(f["files"]) for f in failed))) or "?", len(failed)),
                    "<= %s" % fmt_value(gz, "s"), False))
    return out


SEEKABLE_NAMES = {"big-gzip": "gzip", "big-zstd": "zstd", "big-estargz": "eStargz",
                  "big-zstdchunked": "zstd:chunked (ctr-remote)",
                  "big-cszstd": "zstd:chunked (containers/storage)"}


def report_seekable(b):
    """The side-by-side section: every large workload through mlfs, and the
    gzip image's curl | bsdtar full pull."""
    ws = [w for w in ("big-gzip", "big-zstd") + tuple("big-" + t for t in SEEKABLE) if w in b.workloads]
    if not any(w[len("big-"):] in SEEKABLE for w in ws):
        return []
    L = []
    meta = b.big_meta
    prog = " ".join(PROGRAM)
    L.append("## Seekable layers, side by side")
    L.append("")
    L.append("The same large image (%d layers, %s of uncompressed tar, %d entries) in every format; "
             "medians of %d runs. Every step is cold: a new empty cache, "
             "`drop_caches`, and the `mlfs mount` command counted in the time. A cell: time · "
             "registry bytes (share of that image's compressed size) · blob requests."
             % (len(meta["layers"]), fmt_value(meta["tar_bytes"], "B"), meta["entries"], b.a.runs))
    L.append("")
    L.append("Layout (compressed bytes per layer; the program's layers: gcc-12 is in toolchain, "
             "the libc it loads in base-libs):")
    L.append("")
    L.append("| layer | tar | " + " | ".join(SEEKABLE_NAMES[w] for w in ws) + " |")
    L.append("|---|---|" + "---|" * len(ws))
    for i, l in enumerate(meta["layers"]):
        cells = []
        for w in ws:
            sz = b.info[w]["layer_sizes"]
            cells.append(fmt_value(sz[i], "B") if i < len(sz) else "n/a")
        L.append("| %s | %s | %s |" % (l["name"], fmt_value(l["tar_size"], "B"), " | ".join(cells)))
    L.append("| **total** | %s | %s |" % (fmt_value(meta["tar_bytes"], "B"), " | ".join(
        "**%s**" % fmt_value(b.info[w]["compressed_bytes"], "B") for w in ws)))
    L.append("")

    def cell(w, tkey, bkey, rkey):
        t = med(b, w, tkey)
        if t is None:
            return "n/a"
        out = fmt_value(t, "s")
        if bkey:
            v = med(b, w, bkey)
            if v is not None:
                out += " · %s (%.1f%%)" % (fmt_value(v, "B"), 100 * v / b.info[w]["compressed_bytes"])
        if rkey:
            v = med(b, w, rkey)
            if v is not None:
                out += " · %d req" % round(v)
        return out

    pull_w = "big-gzip" if "big-gzip" in b.workloads else None
    cols = ["`curl \| bsdtar` full pull (gzip)"] + ["mlfs, %s" % SEEKABLE_NAMES[w] for w in ws]
    L.append("| cold | " + " | ".join(cols) + " |")
    L.append("|---|" + "---|" * len(cols))
    rows = [
        ("mount + `ls -R`", "pull.curl_bsdtar.lsR", ("mlfs.lsR.cold", "mlfs.bytes.lsR", "mlfs.reqs.lsR")),
        ("mount + first byte of a deep file", "pull.curl_bsdtar.firstbyte",
         ("mlfs.firstbyte.cold", "mlfs.bytes.firstbyte", "mlfs.reqs.firstbyte")),
        ("mount + chroot `%s`" % prog, "pull.curl_bsdtar.prog", ("mlfs.prog.cold", "mlfs.bytes.prog", "mlfs.reqs.prog")),
        ("mount + whole-tree read (`tar`)", "pull.curl_bsdtar", ("mlfs.tar.cold", "mlfs.bytes.full", "mlfs.reqs.full")),
        ("mount `-o prefetch` + whole-tree read", None,
         ("mlfs.tar.prefetch.cold", "mlfs.bytes.tar.prefetch", "mlfs.reqs.tar.prefetch")),
        ("`mlfs pull`", None, ("mlfs.pull.cold", "mlfs.bytes.pull", None)),
    ]
    for label, pkey, (tk, bk, rk) in rows:
        pc = "n/a"
        if pkey and pull_w:
            t = med(b, pull_w, pkey)
            pc = "%s · %s" % (fmt_value(t, "s"), fmt_value(med(b, pull_w, "pull.bytes"), "B")) if t else "n/a"
            if pkey == "pull.curl_bsdtar":
                pc += " (the pull alone)"
        L.append("| %s | %s | %s |" % (label, pc, " | ".join(cell(w, tk, bk, rk) for w in ws)))
    L.append("")
    L.append("The pull column: every layer at once as `curl blob | bsdtar -x`, then the same step on a "
             "read-only overlayfs of the pulled layers; its whole-tree row is the pull alone. "
             "Registry bytes are GET response bodies in docker-registry's access log (a Range GET "
             "answers 206 with the range's bytes); blob requests count GETs of `/blobs/`, "
             "the config's included.")
    L.append("")
    # Which layers the program start touched (per-blob bytes, first run).
    L.append("Where the program start's bytes came from (first run; requests · bytes per layer):")
    L.append("")
    L.append("| layer | " + " | ".join(SEEKABLE_NAMES[w] for w in ws) + " |")
    L.append("|---|" + "---|" * len(ws))
    for i, l in enumerate(meta["layers"]):
        cells = []
        for w in ws:
            runs = b.info[w].get("per_blob", {}).get("prog")
            dg = b.info[w]["layer_digests"][i] if i < len(b.info[w]["layer_digests"]) else None
            if not runs or not dg:
                cells.append("n/a")
                continue
            c, n = runs[0].get(dg, [0, 0])
            cells.append("%d · %s" % (c, fmt_value(n, "B")) if c else "–")
        L.append("| %s | %s |" % (l["name"], " | ".join(cells)))
    L.append("")
    return L


def machine_facts(a):
    def cmd(c):
        try:
            return sh(c, capture=True, timeout=30).strip()
        except Exception:
            return "?"
    root = os.path.dirname(os.path.dirname(a.out))
    modified = cmd("git -C %s diff --name-only HEAD" % root)
    facts = [
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("host", "%s, kernel %s" % (platform.node(), platform.release())),
        ("OS", cmd(". /etc/os-release && echo $PRETTY_NAME")),
        ("CPU", "%s, %d cores" % (cmd("lscpu | sed -n 's/^Model name: *//p' | head -1"), os.cpu_count())),
        ("memory", cmd("free -g | awk '/^Mem:/{print $2\" GB\"}'")),
        ("work dir", "%s on %s" % (a.work, cmd("df -PT %s | awk 'NR==2{print $2\" (\"$1\")\"}'" % a.work))),
        ("mlfs", "%s (git %s%s)" % (a.mlfs, cmd("git -C %s rev-parse --short HEAD" % root),
                                    ", tracked files modified: " + " ".join(
                                        l for l in modified.splitlines()) if modified else "")),
        ("tools", "; ".join([cmd("skopeo --version"), cmd("umoci --version"), cmd("bsdtar --version"),
                             cmd("curl --version | head -1 | cut -d' ' -f1-2"),
                             cmd("tar --version | head -1"), cmd("docker-registry --version"),
                             cmd("ctr-remote --version"), cmd("containerd --version | cut -d' ' -f1,3")])),
        ("libfuse", cmd("dpkg-query -W -f '${Version}' libfuse3-3")),
    ]
    return facts


def report(b, a, t_start, load_start, elapsed, load_end):
    L = []
    L.append("# mlfs benchmark results")
    L.append("")
    L.append("Generated by `bench/run.sh` (do not edit by hand). %d runs of everything "
             "(the small demo image: 10); **min** and **median** of the runs." % a.runs)
    L.append("")
    L.append("## Machine")
    L.append("")
    for k, v in machine_facts(a):
        L.append("- **%s**: %s" % (k, v))
    L.append("- **load average**: %s at the start, %s at the end (other work on the machine "
             "shows up here; the min of the runs is the least disturbed figure)"
             % (" ".join(load_start), " ".join(load_end)))
    L.append("- **bench duration**: %.0f s" % elapsed)
    L.append("")
    L.append("## Workloads")
    L.append("")
    meta = b.big_meta
    L.append("Registry: Debian's docker-registry (distribution 2.8) on %s, plain HTTP on loopback, "
             "filesystem storage under the work dir, access log on." % a.registry)
    L.append("")
    L.append("| workload | reference | layers | compressed | uncompressed tar | entries (mounted tree) | deep file |")
    L.append("|---|---|---|---|---|---|---|")
    for w in b.workloads:
        i = b.info[w]
        unc = meta["tar_bytes"] if w.startswith("big") else i.get("tar_stream_bytes", 0)
        L.append("| %s | `%s` | %d | %s | %s | %d | `/%s` |" % (
            w, i["ref"], i["layers"], fmt_value(i["compressed_bytes"], "B"), fmt_value(unc, "B"),
            i.get("entries", 0), i["deep"]))
    L.append("")
    L.append("- **demo**: `contrib/demo-image.sh` (multi-platform OCI index; the host's linux/amd64 "
             "image: busybox-static and one small file, 2 gzip layers).")
    L.append("- **big-gzip / big-zstd**: `bench/mkimage.py`, Debian packages unpacked into %d layers "
             "(%d entries, %d regular files, %s of file contents); the same tars compressed with "
             "`gzip -6` and with `zstd -3`:" % (len(meta["layers"]), meta["entries"], meta["files"],
                                               fmt_value(meta["content_bytes"], "B")))
    L.append("")
    L.append("  | layer | packages | entries | tar | gzip | zstd |")
    L.append("  |---|---|---|---|---|---|")
    for l in meta["layers"]:
        L.append("  | %s | %s | %d | %s | %s | %s |" % (
            l["name"], ", ".join(l["packages"]) or "(a release file and a whiteout)", l["entries"],
            fmt_value(l["tar_size"], "B"), fmt_value(l["gzip"]["size"], "B"), fmt_value(l["zstd"]["size"], "B")))
    L.append("")
    seek = [w for w in b.workloads if w[len("big-"):] in SEEKABLE]
    if seek:
        L.append("- **%s**: big-gzip converted once by the real tools (`bench/convert.py`):" % " / ".join(seek))
        L.append("")
        for w in seek:
            L.append("  - **%s**: %s; layers: %s" % (w, SEEKABLE_TOOL[w[len("big-"):]],
                                                  ", ".join(b.info[w].get("layer_formats", []))))
        L.append("")
    L.append("Local-disk reference tree: `umoci unpack` of big-gzip for every large workload (the same "
             "files; umoci reads no zstd). The seekable images' trees may add the converters' "
             "marker files (`.no.prefetch.landmark`, `stargz.index.json`) unless mlfs hides them.")
    L.append("")
    L.append("## Method")
    L.append("")
    for line in METHOD:
        L.append("- " + line)
    L.append("")
    L.append("## Targets")
    L.append("")
    L.append("Judged on the medians (RSS: the worst run).")
    L.append("")
    L.append("| workload | target | measured | limit | |")
    L.append("|---|---|---|---|---|")
    for w in b.workloads:
        for name, meas, lim, ok in targets(b, w):
            L.append("| %s | %s | %s | %s | **%s** |" % (w, md(name), meas, lim, "met" if ok else "unmet"))
    L.append("")
    L.extend(report_seekable(b))
    if b.failures:
        L.append("## Failures")
        L.append("")
        L.append("Steps that could not read every file (the step's figure has no sample from "
                 "that run; the files as tar reported them, or mlfs pull's last error):")
        L.append("")
        L.append("| workload | step | runs failed | files tar could not read | examples (first failed run) |")
        L.append("|---|---|---|---|---|")
        groups = {}
        for f in b.failures:
            groups.setdefault((f["workload"], f["step"]), []).append(f)
        for (w, step), fs in groups.items():
            L.append("| %s | %s | %d | %s | %s |" % (
                w, step, len(fs), "/".join(sorted(set(str(f["files"]) if f["files"] else "–" for f in fs))),
                md("<br>".join(fs[0]["examples"]))))
        L.append("")
    L.append("## Figures")
    L.append("")
    L.append("Each cell: min / median (n runs). Cold = empty mlfs cache and "
             "`sync; echo 3 > /proc/sys/vm/drop_caches` before the step; warm = repeated at once.")
    L.append("")
    L.append("| figure | " + " | ".join(b.workloads) + " |")
    L.append("|---|" + "---|" * len(b.workloads))
    for key, unit, label in FIGURES:
        if unit is None:
            L.append("| **%s** |" % md(key) + " |" * len(b.workloads))
            continue
        cells = []
        for w in b.workloads:
            v = b.fig.get((w, key))
            if not v:
                cells.append("n/a")
            else:
                cells.append("%s / %s (%d)" % (fmt_value(min(v), unit), fmt_value(statistics.median(v), unit), len(v)))
        L.append("| %s | %s |" % (md(label), " | ".join(cells)))
    L.append("")
    L.append("### Derived")
    L.append("")
    L.append("| figure | " + " | ".join(b.workloads) + " |")
    L.append("|---|" + "---|" * len(b.workloads))
    rows = []

    def row(label, fn):
        cells = []
        for w in b.workloads:
            try:
                cells.append(fn(w))
            except (TypeError, ZeroDivisionError, KeyError):
                cells.append("n/a")
        rows.append("| %s | %s |" % (label, " | ".join(cells)))

    row("whole-tree bytes (tar stream): mlfs / local tree",
        lambda w: "%d / %d%s" % (b.info[w]["tar_stream_bytes"], b.info[w]["local_tar_stream_bytes"],
                                 "" if b.info[w]["tar_stream_bytes"] == b.info[w]["local_tar_stream_bytes"]
                                 else " **(differ)**"))
    row("mlfs warm tar throughput (median)",
        lambda w: "%.0f MB/s" % (b.info[w]["tar_stream_bytes"] / med(b, w, "mlfs.tar.warm") / 1e6))
    row("local warm tar throughput (median)",
        lambda w: "%.0f MB/s" % (b.info[w]["tar_stream_bytes"] / med(b, w, "local.tar.warm") / 1e6))
    row("mlfs cold tar throughput (median, incl. fetch)",
        lambda w: "%.0f MB/s" % (b.info[w]["tar_stream_bytes"] / med(b, w, "mlfs.tar.cold") / 1e6))
    row("daemon VmHWM per 10k entries (median)",
        lambda w: fmt_value(med(b, w, "mlfs.rss.hwm") / b.info[w]["entries"] * 1e4, "B")
        if b.info[w]["entries"] >= 1000 else "n/a (few entries)")
    row("daemon VmHWM growth over idle, per entry (median)",
        lambda w: "%.0f B" % ((med(b, w, "mlfs.rss.hwm") - med(b, w, "mlfs.rss.idle")) / b.info[w]["entries"])
        if b.info[w]["entries"] >= 1000 else "n/a (few entries)")
    row("cache du / compressed image",
        lambda w: "%.2fx" % (med(b, w, "mlfs.cache.du") / b.info[w]["compressed_bytes"]))
    row("cache du / uncompressed tar",
        lambda w: "%.2fx" % (med(b, w, "mlfs.cache.du") / (b.big_meta["tar_bytes"] if w.startswith("big")
                                                              else b.info[w]["tar_stream_bytes"])))
    row("local reference tree (du -sb)", lambda w: fmt_value(b.info[w]["local_tree_bytes"], "B"))
    row("registry bytes for a cold full read / compressed image",
        lambda w: "%.3fx" % (med(b, w, "mlfs.bytes.full") / b.info[w]["compressed_bytes"]))
    L.extend(rows)
    L.append("")
    L.append("Raw samples: `results.json` in the work dir (%s)." % a.work)
    L.append("")
    with open(a.out, "w") as f:
        f.write("\n".join(L))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mlfs", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--big-meta", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated workloads (debugging)")
    ap.add_argument("--report-only", action="store_true",
                    help="measure nothing: write OUT again from WORK/results.json (after editing the report code)")
    a = ap.parse_args()
    a.work = os.path.abspath(a.work)
    a.out = os.path.abspath(a.out)
    t_start = now()
    load_start = open("/proc/loadavg").read().split(" ", 3)[:3]
    b = Bench(a)
    with open(a.big_meta) as f:
        b.big_meta = json.load(f)
    results = os.path.join(a.work, "results.json")
    if a.report_only:
        with open(results) as f:
            saved = json.load(f)
        b.info, b.failures, b.workloads = saved["info"], saved["failures"], saved["workloads"]
        b.fig = {tuple(k.split(" ", 1)): v for k, v in saved["figures"].items()}
        a.runs, a.registry = saved["runs"], saved["registry"]
        report(b, a, t_start, saved["load_start"], saved["elapsed"], saved["load_end"])
        log("wrote %s from %s" % (a.out, results))
        return
    deep = b.big_meta["deep_file"]
    plan = [
        ("demo", "demo", "latest", "bin/busybox", True, "demo"),
        ("big-gzip", "big", "gzip", deep, True, "big-gzip"),
        ("big-zstd", "big", "zstd", deep, False, "big-gzip"),
    ] + [("big-" + t, "big", t, deep, False, "big-gzip") for t in SEEKABLE]
    only = set(x for x in a.only.split(",") if x)
    if only & set(["big-zstd"] + ["big-" + t for t in SEEKABLE]):
        only.add("big-gzip")      # the local reference tree and the baselines come from there
    b.workloads = [p[0] for p in plan if not only or p[0] in only]
    try:
        for w, repo, tag, dp, umoci_ok, local_from in plan:
            if w in b.workloads:
                b.workload(w, repo, tag, dp, umoci_ok, local_from)
    finally:
        b.mlfs.umount_all()
        elapsed = now() - t_start
        load_end = open("/proc/loadavg").read().split(" ", 3)[:3]
        with open(results, "w") as f:
            json.dump({"info": b.info, "figures": {"%s %s" % k: v for k, v in b.fig.items()},
                       "failures": b.failures, "workloads": b.workloads, "runs": a.runs,
                       "registry": a.registry, "load_start": load_start, "load_end": load_end,
                       "elapsed": elapsed}, f, indent=1)
    report(b, a, t_start, load_start, elapsed, load_end)
    log("wrote %s" % a.out)


if __name__ == "__main__":
    main()
