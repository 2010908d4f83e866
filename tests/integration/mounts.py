"""Mounting images with `mlfs mount` / `mount.mlfs` in tests, and always
getting rid of the mount again.

`Mount` runs one mount: daemonised (the command returns once the mount is
up) or in the foreground (`-f`/`-d`: the process is the daemon, its stderr
goes to a file the test can read while it runs).  `unmount(how)` takes it
down the way a user would (umount, fusermount3 -u, SIGTERM); `cleanup()`
takes it down whatever state it is in: fusermount3 -u, then SIGTERM and
SIGKILL to the daemon, then `fusermount3 -uz` / `umount -l` as the last
resort.  Every wait is bounded.

A watchdog per mount (MLFS_MOUNT_WATCHDOG seconds, default 300) kills the
daemon and detaches the mount if the test is still running by then: a
request the daemon never answers would otherwise hang the test process in
the kernel forever; with the daemon gone it fails with ENOTCONN instead.

`Mounter` hands out mounts with fresh mountpoints under a directory and
cleans them all up (the `mounter` fixture in test_mount.py wraps it).

The daemon of a daemonised mount is found by scanning /proc for a process
running the mlfs binary whose argv holds the mountpoint: the daemon must
keep its argv (libfuse's daemonising does).
"""

import os
import signal
import subprocess
import threading
import time

import pytest

from helpers import MLFS_BIN, MLFS_TIMEOUT, Result, describe, wait_for

WATCHDOG = float(os.environ.get("MLFS_MOUNT_WATCHDOG", "300"))
UNMOUNT_TIMEOUT = 15.0


# -- what the kernel says is mounted -----------------------------------------

def _unescape(s):
    """mountinfo/mounts escape space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mountinfo():
    """/proc/self/mountinfo as a list of dicts: mountpoint, majmin, options
    (per-mount flags), fstype, source, super_options."""
    entries = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            l, r = left.split(" "), right.split(" ")
            entries.append({
                "majmin": l[2], "root": _unescape(l[3]), "mountpoint": _unescape(l[4]),
                "options": l[5].split(","), "fstype": r[0], "source": _unescape(r[1]),
                "super_options": r[2].split(",") if len(r) > 2 else [],
            })
    return entries


def proc_mounts():
    """/proc/mounts as a list of (source, mountpoint, fstype, options)."""
    out = []
    with open("/proc/mounts") as f:
        for line in f:
            p = line.split(" ")
            out.append((_unescape(p[0]), _unescape(p[1]), p[2], p[3].split(",")))
    return out


def real_path(path):
    """realpath() that never touches `path` itself, only its parent: a stat
    of a mountpoint whose daemon is stuck would hang."""
    path = os.path.abspath(path).rstrip("/") or "/"
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def mounts_at(path):
    real = real_path(path)
    return [e for e in mountinfo() if e["mountpoint"] in (real, os.path.abspath(path))]


def is_mounted(path):
    return bool(mounts_at(path))


def assert_not_mounted(path, timeout=0.0):
    """No mount at `path` (after waiting up to `timeout` for one to go)."""
    gone = wait_for(lambda: not is_mounted(path), timeout=timeout) if timeout else not is_mounted(path)
    assert gone, "a mount is left at %s: %r" % (path, mounts_at(path))


# -- the daemon's processes ---------------------------------------------------

def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except OSError:
        return False


def mlfs_pids(mountpoint, binary=MLFS_BIN):
    """Live processes running `binary` with `mountpoint` among their arguments."""
    want_exe = os.path.realpath(binary)
    names = {os.path.abspath(mountpoint), real_path(mountpoint), mountpoint,
             mountpoint.rstrip("/") + "/"}
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            exe = os.readlink("/proc/%s/exe" % d)
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().decode("utf-8", "replace").split("\0")
        except OSError:
            continue
        if exe.endswith(" (deleted)"):
            exe = exe[:-len(" (deleted)")]
        if os.path.realpath(exe) != want_exe:
            continue
        if names & set(argv) and _alive(int(d)):
            pids.append(int(d))
    return pids


def _signal(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _run(cmd, timeout=UNMOUNT_TIMEOUT):
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        return r.returncode, (r.stdout + r.stderr).strip()
    except subprocess.TimeoutExpired:
        return -1, "%s timed out" % " ".join(cmd)
    except FileNotFoundError as e:
        return -1, str(e)


def force_unmount(path, pids=()):
    """Last resort: kill the daemon, detach the mount.  Bounded; never raises."""
    if pids:
        _signal(pids, signal.SIGKILL)
    for _ in range(4):  # a mountpoint can be stacked
        if not is_mounted(path):
            break
        _run(["fusermount3", "-uz", path])
        if is_mounted(path):
            _run(["umount", "-l", path])
    wait_for(lambda: not any(_alive(p) for p in pids), timeout=5)


# -- mount.mlfs ------------------------------------------------------------------

def mount_helper(binary, tmpdir):
    """Path of `mount.mlfs` next to the binary, or a symlink made in tmpdir."""
    beside = os.path.join(os.path.dirname(binary), "mount.mlfs")
    if os.path.exists(beside):
        return beside
    link = os.path.join(tmpdir, "mount.mlfs")
    if not os.path.lexists(link):
        os.symlink(os.path.realpath(binary), link)
    return link


# -- one mount ---------------------------------------------------------------------

class Mount:
    """One `mlfs mount REF DIR` (or `mount.mlfs REF DIR`).

    options: list of -o options; foreground: -f; debug: -d (implies -f);
    helper: path of mount.mlfs to call instead of `mlfs mount`.
    After start(): .result (rc, stdout, stderr) of the command for a
    daemonised mount (or of a foreground one that exited early), .proc for
    a foreground one.
    """

    def __init__(self, ref, mountpoint, options=(), env=None, foreground=False, debug=False,
                 helper=None, binary=MLFS_BIN, logdir=None, extra_args=(), watchdog=WATCHDOG):
        self.ref = ref
        self.mountpoint = str(mountpoint)
        self.options = list(options)
        self.env = env
        self.foreground = foreground or debug
        self.debug = debug
        self.helper = helper
        self.binary = binary
        self.extra_args = list(extra_args)
        self.watchdog_seconds = watchdog
        logdir = logdir or os.path.dirname(os.path.abspath(self.mountpoint))
        tag = "%s.%d" % (os.path.basename(self.mountpoint.rstrip("/")) or "mnt", id(self) % 100000)
        self.stdout_path = os.path.join(logdir, tag + ".stdout")
        self.stderr_path = os.path.join(logdir, tag + ".stderr")
        self.proc = None
        self.result = None
        self._watchdog = None
        self.watchdog_fired = False
        self._known_pids = set()

    # -- the command --------------------------------------------------------------
    @property
    def argv(self):
        if self.helper:
            cmd = [self.helper, self.ref, self.mountpoint]
        else:
            cmd = [self.binary, "mount", self.ref, self.mountpoint]
        if self.options:
            cmd += ["-o", ",".join(self.options)]
        if self.debug:
            cmd.append("-d")
        elif self.foreground:
            cmd.append("-f")
        return cmd + self.extra_args

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stdout(self):
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _result(self, rc):
        self.result = Result(rc, self.stdout(), self.stderr())
        return self.result

    def start(self, check=True, timeout=None):
        """Run the mount command.  check=True: fail the test unless the
        mount came up.  Returns self (see .result / .ok)."""
        timeout = timeout or MLFS_TIMEOUT
        self._start_watchdog()
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            # Files, not pipes: a daemon that keeps the inherited stderr
            # open must not make us wait for it.
            self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, start_new_session=True)
        if self.foreground:
            self._wait_foreground(timeout)
        else:
            try:
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.cleanup()
                pytest.fail("mlfs mount did not return within %ss: %s\nstderr: %s" % (
                    timeout, " ".join(self.argv), self.stderr()))
            self._result(rc)
        self._known_pids.update(self.pids())
        if check and not self.ok:
            detail = describe(self.result) if self.result else self.stderr()
            self.cleanup()
            pytest.fail("mount of %s failed\n%s" % (self.ref, detail))
        return self

    def _wait_foreground(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if is_mounted(self.mountpoint):
                return
            rc = self.proc.poll()
            if rc is not None:
                self._result(rc)
                return
            time.sleep(0.02)
        self.cleanup()
        pytest.fail("foreground mount did not come up within %ss: %s\nstderr: %s" % (
            timeout, " ".join(self.argv), self.stderr()))

    @property
    def ok(self):
        if self.foreground:
            return self.proc is not None and self.proc.poll() is None and is_mounted(self.mountpoint)
        return self.result is not None and self.result.rc == 0 and is_mounted(self.mountpoint)

    def pids(self):
        pids = set(mlfs_pids(self.mountpoint, self.binary))
        if self.proc is not None and self.proc.poll() is None:
            pids.add(self.proc.pid)
        return sorted(pids)

    def path(self, *parts):
        return os.path.join(self.mountpoint, *parts)

    # -- taking it down -------------------------------------------------------------
    def unmount(self, how="fusermount3", timeout=UNMOUNT_TIMEOUT):
        """Unmount as a user would: "umount", "fusermount3" or "sigterm".
        Asserts the mount and the daemon are gone (bounded waits); for a
        foreground mount returns the process's exit status."""
        pids = self.pids()
        self._known_pids.update(pids)
        if how == "umount":
            rc, out = _run(["umount", self.mountpoint])
            assert rc == 0, "umount failed: %s" % out
        elif how == "fusermount3":
            rc, out = _run(["fusermount3", "-u", self.mountpoint])
            assert rc == 0, "fusermount3 -u failed: %s" % out
        elif how == "sigterm":
            assert pids, "no mlfs daemon process found for %s" % self.mountpoint
            _signal(pids, signal.SIGTERM)
        else:
            raise ValueError(how)
        assert_not_mounted(self.mountpoint, timeout=timeout)
        gone = wait_for(lambda: not any(_alive(p) for p in pids), timeout=timeout)
        rc = None
        if self.proc is not None:
            try:
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        assert gone, "the mlfs daemon is still running after %s: pids %r" % (how, pids)
        self._stop_watchdog()
        return rc

    def _kill_group(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def cleanup(self):
        """Whatever state it is in: no mount, no daemon.  Never raises."""
        self._stop_watchdog()
        pids = set(self.pids()) | {p for p in self._known_pids if _alive(p)}
        if is_mounted(self.mountpoint):
            _run(["fusermount3", "-u", self.mountpoint])
            wait_for(lambda: not is_mounted(self.mountpoint), timeout=5)
        if pids:
            wait_for(lambda: not any(_alive(p) for p in pids), timeout=5)
            alive = [p for p in pids if _alive(p)]
            _signal(alive, signal.SIGTERM)
            wait_for(lambda: not any(_alive(p) for p in alive), timeout=5)
        force_unmount(self.mountpoint, [p for p in pids if _alive(p)])
        self._kill_group()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    # -- the watchdog -------------------------------------------------------------------
    def _start_watchdog(self):
        if self.watchdog_seconds and self._watchdog is None:
            self._watchdog = threading.Timer(self.watchdog_seconds, self._fire)
            self._watchdog.daemon = True
            self._watchdog.start()

    def _stop_watchdog(self):
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _fire(self):
        self.watchdog_fired = True
        force_unmount(self.mountpoint, self.pids())

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False


class Mounter:
    """Mounts with fresh mountpoints under `basedir`; cleanup_all() in teardown.

    mounter.mount(ref, "platform=linux/arm64", foreground=True, ...) -> Mount
    (started; check=False to get a failed one back instead of failing).
    """

    def __init__(self, basedir, env, binary=MLFS_BIN):
        self.basedir = str(basedir)
        self.env = env
        self.binary = binary
        self.mounts = []
        self._n = 0

    def new_mountpoint(self, create=True):
        self._n += 1
        p = os.path.join(self.basedir, "mnt%d" % self._n)
        if create:
            os.makedirs(p, exist_ok=True)
        return p

    def helper(self):
        return mount_helper(self.binary, self.basedir)

    def mount(self, ref, *options, mountpoint=None, env_extra=None, check=True, start=True,
              use_helper=False, **kw):
        env = dict(self.env)
        env.update(env_extra or {})
        m = Mount(ref, mountpoint or self.new_mountpoint(), options=options, env=env,
                  binary=self.binary, logdir=self.basedir,
                  helper=self.helper() if use_helper else None, **kw)
        self.mounts.append(m)
        if start:
            m.start(check=check)
        return m

    def cleanup_all(self):
        leftovers = []
        for m in reversed(self.mounts):
            m.cleanup()
            if is_mounted(m.mountpoint):
                leftovers.append(m.mountpoint)
        return leftovers


# -- reading through a mount without hanging the test ----------------------------------

READ_SCRIPT = r"""
import json, sys
out = []
for p in sys.argv[1:]:
    try:
        with open(p, "rb") as f:
            data = f.read()
        out.append({"ok": True, "data": data.hex()})
    except OSError as e:
        out.append({"ok": False, "errno": e.errno, "error": str(e)})
print(json.dumps(out))
"""


def read_in_child(paths, timeout=60):
    """Read files in a child process (a stuck FUSE request then hangs the
    child, not pytest).  Returns a list of (bytes or None, errno or None);
    fails the test on timeout."""
    import json
    proc = subprocess.Popen(["/usr/bin/python3", "-c", READ_SCRIPT] + list(paths),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        pytest.fail("reading %r did not return within %ss" % (list(paths), timeout))
    if proc.returncode != 0:
        pytest.fail("reader failed (%d): %s" % (proc.returncode, err.decode("utf-8", "replace")))
    return [(bytes.fromhex(r["data"]), None) if r["ok"] else (None, r["errno"])
            for r in json.loads(out)]
