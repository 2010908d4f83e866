"""`mlfs chroot [-o OPTIONS] REF [COMMAND [ARG...]]` on debmini (debian_fixture.py:
a tiny Debian 12 from real packages, for linux/arm64, arm/v7, s390x and amd64).

What a chroot must do: the image mounted with a writable overlayfs on it
(upper layer in a private tmpfs, or in DIR/upper with -o upper=DIR),
/proc, /sys, a small /dev (null zero full random urandom tty, devpts at
/dev/pts, a tmpfs /dev/shm), a copy of the host's /etc/resolv.conf, the
image's Env and WorkingDir; the command (default: the image's shell)
with our stdin, stdout and stderr; its exit status (128+N for a signal N;
as podman run: 125 mlfs failed, 126 cannot run, 127 not found); and
everything torn down afterwards, also when the command or mlfs is
killed: no mount in the host's table, no process left, the image as it
was (a fresh export shows the pushed tree).  Foreign platforms run under
qemu-user through binfmt_misc (contrib/binfmt.sh registers the handlers);
without a handler for the image's architecture, mlfs chroot says which
and how to get one, and mounts nothing.

The .deb a chroot installs comes in on stdin (`cat > /tmp/h.deb`).
Every run is bounded and in its own session; the `chroot_guard` fixture
checks for (and then removes) leftovers: mounts the host did not have
before the test, processes carrying this test's MLFS_CACHE or a command
pid the test was told.
"""

import gzip
import hashlib
import io
import json
import os
import select
import shutil
import signal
import subprocess
import tarfile
import time

import pytest

from debian_fixture import ARCHES, BY_ASK, NO_BINFMT, PATH, check_rootfs, debmini  # noqa: F401
from helpers import REPO_ROOT, Result, assert_ok, describe, wait_for
from mounts import force_unmount, mountinfo
from registry import MT_OCI_INDEX, sha256_digest

BINFMT_SCRIPT = os.path.join(REPO_ROOT, "contrib", "binfmt.sh")
CHROOT_TIMEOUT = float(os.environ.get("MLFS_CHROOT_TIMEOUT", "240"))
TEARDOWN_TIMEOUT = 20.0
FOREIGN = [a for a in ARCHES if a.qemu]
ALL = [a.ask for a in ARCHES]


# -- fixtures and helpers ------------------------------------------------------------

@pytest.fixture(scope="session")
def chroot_binfmt():
    """contrib/binfmt.sh once (qemu-user-static's handlers); (status, reason)."""
    r = subprocess.run([BINFMT_SCRIPT], capture_output=True, text=True, timeout=60)
    return r.returncode, (r.stderr or r.stdout).strip()


def need_arch(binfmt, ask):
    arch = BY_ASK[ask]
    if not arch.qemu:
        return
    rc, reason = binfmt
    if rc == 77:
        pytest.skip("foreign binaries cannot run here: %s" % reason)
    assert rc == 0, "contrib/binfmt.sh failed (%d): %s" % (rc, reason)
    assert os.path.exists("/proc/sys/fs/binfmt_misc/" + arch.qemu), (
        "contrib/binfmt.sh succeeded but %s is not registered" % arch.qemu)


def _mount_key(e):
    return (e["mountpoint"], e["fstype"], e["source"], e["majmin"])


def _pids_with_env(needle):
    """Live processes whose environment holds `needle` (bytes, VAR=value)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % d, "rb") as f:
                env = f.read().split(b"\0")
            with open("/proc/%s/stat" % d) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env and state not in ("Z", "X"):
            out.append(int(d))
    return out


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


class ChrootGuard:
    """Runs `mlfs chroot` for one test and knows what it must not leave.

    run(...) -> Result: bounded, in its own session, optional stdin bytes.
    start(...) -> Popen for tests that signal it; .watch(pid) adds a
    command pid to the processes that must be gone.
    leftovers() -> (new host mounts, live processes): both empty when
    everything was torn down.
    """

    def __init__(self, env, binary, our_tmp):
        self.env = dict(env)
        self.our_tmp = our_tmp
        self.binary = binary
        self.marker = ("MLFS_CACHE=" + env["MLFS_CACHE"]).encode()
        self.before = {_mount_key(e) for e in mountinfo()}
        self.run_dirs = self._run_dirs()
        self.procs = []
        self.pids = set()

    @staticmethod
    def _run_dirs():
        try:
            return {n for n in os.listdir("/run") if n.startswith("mlfs-chroot.")}
        except OSError:
            return set()

    def argv(self, ref, *command, options=()):
        cmd = [self.binary, "chroot"]
        if options:
            cmd += ["-o", ",".join(options)]
        return cmd + [ref] + [str(c) for c in command]

    def start(self, ref, *command, options=(), stdin=subprocess.DEVNULL):
        proc = subprocess.Popen(self.argv(ref, *command, options=options), env=self.env, stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.procs.append(proc)
        return proc

    def run(self, ref, *command, options=(), input=None, timeout=CHROOT_TIMEOUT):
        proc = self.start(ref, *command, options=options,
                          stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        try:
            out, err = proc.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            self._killpg(proc)
            out, err = self._drain(proc)
            pytest.fail("mlfs chroot timed out after %ss: %s\nstdout: %s\nstderr: %s" % (
                timeout, " ".join(self.argv(ref, *command, options=options)),
                out.decode("utf-8", "replace"), err.decode("utf-8", "replace")))
        return Result(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    @staticmethod
    def _killpg(proc):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    @staticmethod
    def _drain(proc):
        try:
            return proc.communicate(timeout=10)
        except (subprocess.TimeoutExpired, ValueError):
            return b"", b""

    def watch(self, pid):
        self.pids.add(pid)

    def new_mounts(self):
        return [e for e in mountinfo() if _mount_key(e) not in self.before and not self._other_session(e)]

    def _other_session(self, entry):
        """A mount of another pytest session's (a developer running two
        suites at once): chroots never mount under pytest's temp roots."""
        mp = entry["mountpoint"]
        return mp.startswith("/tmp/pytest-of-") and not mp.startswith(self.our_tmp + "/")

    def live_processes(self):
        pids = set(_pids_with_env(self.marker)) | {p for p in self.pids if _alive(p)}
        pids |= {p.pid for p in self.procs if p.poll() is None}
        return sorted(pids)

    def leftovers(self):
        return self.new_mounts(), self.live_processes()

    def assert_clean(self, timeout=TEARDOWN_TIMEOUT, what="the chroot", work_dirs=True):
        """Nothing of this test's chroots left (waiting up to `timeout`):
        no new host mount, no process; with work_dirs, no new
        /run/mlfs-chroot.* either (only a SIGKILLed mlfs chroot may leave one)."""
        clean = wait_for(lambda: self.leftovers() == ([], []), timeout=timeout, interval=0.1)
        if not clean:
            mounts, pids = self.leftovers()
            pytest.fail("after %s: mounts left %r, processes left %r" % (
                what, [(m["mountpoint"], m["fstype"]) for m in mounts],
                [(p, _cmdline(p)) for p in pids]))
        if work_dirs:
            assert not self.new_run_dirs(), "after %s: work directories left in /run: %r" % (
                what, self.new_run_dirs())

    def new_run_dirs(self):
        return sorted(self._run_dirs() - self.run_dirs)

    def cleanup(self):
        for proc in self.procs:
            if proc.poll() is None:
                self._killpg(proc)
            self._drain(proc)
        for pid in self.live_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for m in sorted(self.new_mounts(), key=lambda e: -len(e["mountpoint"])):
            force_unmount(m["mountpoint"])
        # What a SIGKILLed mlfs chroot could not remove (nothing is mounted
        # there for the host, and every process of the test is gone now).
        for name in self.new_run_dirs():
            path = os.path.join("/run", name)
            if not any(e["mountpoint"].startswith(path + "/") for e in mountinfo()):
                shutil.rmtree(path, ignore_errors=True)


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return "?"


@pytest.fixture
def chroot(mlfs_bin, mlfs_env, tmp_path_factory):
    g = ChrootGuard(mlfs_env, mlfs_bin, str(tmp_path_factory.getbasetemp()))
    yield g
    leftovers = g.leftovers()
    g.cleanup()
    assert leftovers == ([], []), "mlfs chroot left mounts/processes behind: %r" % (leftovers,)


def read_line(proc, timeout):
    """One line of proc's stdout, within timeout (else fail)."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    if b"\n" not in buf:
        proc.poll()
        pytest.fail("no line from mlfs chroot within %ss (rc=%r, got %r)" % (timeout, proc.returncode, buf))
    return buf.split(b"\n", 1)[0].decode()


def wait_exit(proc, timeout=TEARDOWN_TIMEOUT):
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("mlfs chroot (pid %d) still running %ss after its command was killed" % (
            proc.pid, timeout))


def plat(ask):
    return "platform=" + ask


def lines(text):
    return [l for l in text.split("\n") if l]


def stderr_without_warnings(r):
    """stderr less mlfs's own warning lines."""
    return [l for l in lines(r.stderr) if not l.startswith("mlfs: warning: ")]


# -- the image's tree as pushed, and as a fresh export shows it ----------------------------

def _entries(tar_bytes, gz=False, into=None):
    out = {} if into is None else into
    mode = "r:gz" if gz else "r"
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode=mode) as t:
        for m in t.getmembers():
            name = m.name
            while name.startswith("./"):
                name = name[2:]
            name = name.rstrip("/")
            if name in ("", "."):
                continue
            if m.isreg():
                data = t.extractfile(m).read()
                e = ("f", m.mode & 0o7777, hashlib.sha256(data).hexdigest())
            elif m.islnk():
                e = ("h", m.linkname.lstrip("./"))
            elif m.issym():
                e = ("l", m.linkname)
            elif m.isdir():
                e = ("d", m.mode & 0o7777)
            else:
                e = ("?", m.type)
            out[name] = e
    return out


def _resolve_hardlinks(tree):
    """Hardlink entries as the file they name (an export may pick another name first)."""
    for name, e in list(tree.items()):
        if e[0] == "h":
            tree[name] = tree[e[1]]
    return tree


def pushed_tree(image):
    tree = {}
    for blob in image.blobs:
        _entries(blob, gz=True, into=tree)
    return _resolve_hardlinks(tree)


def exported_tree(mlfs, ref, ask, tmp_path, name="export.tar"):
    out = str(tmp_path / name)
    r = mlfs("export", ref, "--platform", ask, "-o", out, timeout=300)
    assert_ok(r, allow_warnings=True)
    with open(out, "rb") as f:
        return _resolve_hardlinks(_entries(f.read()))


def assert_pristine(mlfs, debmini, ask, tmp_path):  # noqa: F811
    got = exported_tree(mlfs, debmini.ref, ask, tmp_path)
    want = pushed_tree(debmini.image(ask))
    assert len(want) > 300 and "usr/bin/dpkg" in want, "the pushed tree looks wrong: %d entries" % len(want)
    assert "usr/bin/hello-mlfs" not in got, "the chroot's dpkg -i reached the image"
    assert "root/written" not in got, "a file written in the chroot reached the image"
    missing = sorted(set(want) - set(got))[:10]
    extra = sorted(set(got) - set(want))[:10]
    changed = sorted(n for n in set(want) & set(got) if want[n] != got[n])[:10]
    assert not (missing or extra or changed), (
        "export of %s after the chroot differs from what was pushed: missing %r, extra %r, changed %r"
        % (ask, missing, extra, changed))


# -- the fixture itself, without mlfs -----------------------------------------------------------

@pytest.mark.harness
def test_debmini_index(debmini):  # noqa: F811
    """An OCI index with the four platforms; each config as specified, diff_ids real."""
    body, mtype, _ = debmini.client.get_manifest("debmini", "latest")
    assert mtype == MT_OCI_INDEX
    idx = json.loads(body)
    got = {(m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant", ""))
           for m in idx["manifests"]}
    assert got == {("linux", "arm64", "v8"), ("linux", "arm", "v7"), ("linux", "s390x", ""),
                   ("linux", "amd64", "")}
    for arch in ARCHES:
        img = debmini.image(arch.ask)
        cfg = json.loads(debmini.client.get_blob("debmini", json.loads(
            debmini.client.get_manifest("debmini", img.digest)[0])["config"]["digest"]))
        assert cfg["architecture"] == arch.arch and cfg["os"] == "linux"
        assert cfg["config"] == {"Env": ["PATH=" + PATH], "Cmd": ["/bin/sh"], "WorkingDir": "/root"}
        assert len(img.layers) == 2
        for layer, blob in zip(img.layers, img.blobs):
            assert sha256_digest(gzip.decompress(blob)) == layer["diff_id"]
        assert cfg["rootfs"]["diff_ids"] == [l["diff_id"] for l in img.layers]
        tree = pushed_tree(img)
        for path in ("bin", "lib", "sbin", "usr/bin/busybox", "usr/bin/sh", "usr/bin/dpkg",
                     "usr/bin/tar", "var/lib/dpkg/status", "etc/passwd", "etc/group", "root", "tmp"):
            assert path in tree, "%s: no %s" % (arch.ask, path)
        assert tree["bin"] == ("l", "usr/bin")
        assert tree["tmp"] == ("d", 0o1777)
        assert tree["usr/bin/tar"][0] == "f", "GNU tar must replace busybox's applet"


@pytest.mark.harness
@pytest.mark.parametrize("ask", ALL)
def test_debmini_rootfs_without_mlfs(debmini, chroot_binfmt, tmp_path, ask):  # noqa: F811
    """The layers unpacked by tar, chroot + dpkg -i work: the fixture, not mlfs."""
    need_arch(chroot_binfmt, ask)
    r = check_rootfs(debmini.image(ask), debmini.hello_deb, str(tmp_path / "rootfs"))
    assert r.returncode == 0, "rc=%d\n%s\n%s" % (r.returncode, r.stdout, r.stderr)
    out = lines(r.stdout)
    assert "hello from %s" % BY_ASK[ask].machine in out, r.stdout
    assert out[-1] == BY_ASK[ask].machine
    assert "warning" not in (r.stdout + r.stderr).lower(), "dpkg complained\n%s\n%s" % (r.stdout, r.stderr)


# -- the chroot: dpkg -i, then nothing left -------------------------------------------------------

INSTALL = ("cat > /tmp/h.deb && echo written > /root/written && "
           "dpkg -i /tmp/h.deb > /tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log >&2; exit 3; }; "
           "hello-mlfs && uname -m && dpkg-query -W -f '${Package} ${Version} ${Status}\\n' hello-mlfs "
           "&& cat /root/written")


@pytest.mark.parametrize("ask", ALL)
def test_dpkg_install_in_chroot(chroot, mlfs, debmini, chroot_binfmt, tmp_path, ask):  # noqa: F811
    need_arch(chroot_binfmt, ask)
    machine = BY_ASK[ask].machine
    r = chroot.run(debmini.ref, "/bin/sh", "-c", INSTALL, options=[plat(ask)], input=debmini.hello_bytes)
    assert r.rc == 0, describe(r)
    assert lines(r.stdout) == ["hello from " + machine, machine, "hello-mlfs 1.0 install ok installed",
                               "written"], describe(r)
    assert stderr_without_warnings(r) == [], describe(r)
    chroot.assert_clean(what="a chroot of %s" % ask)
    assert_pristine(mlfs, debmini, ask, tmp_path)


def test_second_chroot_starts_from_the_image(chroot, debmini):  # noqa: F811
    """The tmpfs upper layer dies with the chroot: the next one sees nothing of it."""
    r = chroot.run(debmini.ref, "/bin/sh", "-c", INSTALL, options=[plat("linux/amd64")],
                   input=debmini.hello_bytes)
    assert r.rc == 0, describe(r)
    r = chroot.run(debmini.ref, "/bin/sh", "-c",
                   "test -e /usr/bin/hello-mlfs && echo installed; test -e /root/written && echo written; "
                   "dpkg-query -W hello-mlfs 2>/dev/null && echo known; echo end",
                   options=[plat("linux/amd64")])
    assert r.rc == 0, describe(r)
    assert lines(r.stdout) == ["end"], describe(r)


# -- exit status ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("script,status", [
    ("exit 0", 0), ("exit 7", 7), ("exit 255", 255), ("true", 0), ("false", 1),
    ("kill -TERM $$", 128 + signal.SIGTERM), ("kill -KILL $$", 128 + signal.SIGKILL),
], ids=["exit0", "exit7", "exit255", "true", "false", "sigterm", "sigkill"])
def test_exit_status(chroot, mlfs, debmini, script, status):  # noqa: F811
    r = mlfs("chroot", "-o", plat("linux/amd64"), debmini.ref, "/bin/sh", "-c", script,
             timeout=CHROOT_TIMEOUT)
    assert r.rc == status, describe(r)
    chroot.assert_clean()


@pytest.mark.parametrize("ask", [a.ask for a in FOREIGN])
def test_exit_status_under_qemu(chroot, mlfs, debmini, chroot_binfmt, ask):  # noqa: F811
    need_arch(chroot_binfmt, ask)
    r = mlfs("chroot", "-o", plat(ask), debmini.ref, "/bin/sh", "-c", "exit 7", timeout=CHROOT_TIMEOUT)
    assert r.rc == 7, describe(r)
    r = mlfs("chroot", "-o", plat(ask), debmini.ref, "/bin/sh", "-c", "kill -KILL $$",
             timeout=CHROOT_TIMEOUT)
    assert r.rc == 137, describe(r)
    chroot.assert_clean()


def test_command_not_found_is_127(chroot, mlfs, debmini):  # noqa: F811
    r = mlfs("chroot", "-o", plat("linux/amd64"), debmini.ref, "/no/such/command", timeout=CHROOT_TIMEOUT)
    assert r.rc == 127, describe(r)
    assert "/no/such/command" in r.stderr, describe(r)
    chroot.assert_clean()


def test_command_not_executable_is_126(chroot, mlfs, debmini):  # noqa: F811
    r = mlfs("chroot", "-o", plat("linux/amd64"), debmini.ref, "/etc/passwd", timeout=CHROOT_TIMEOUT)
    assert r.rc == 126, describe(r)
    chroot.assert_clean()


def test_command_found_on_the_image_path(chroot, mlfs, debmini):  # noqa: F811
    """A bare name is looked up in the image's PATH (dpkg-query is in /usr/bin)."""
    r = mlfs("chroot", "-o", plat("linux/amd64"), debmini.ref, "dpkg-query", "-W", "-f", "${Package}\\n",
             "dpkg", timeout=CHROOT_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert r.stdout == "dpkg\n", describe(r)


# -- killed: the command, mlfs chroot, its process group -----------------------------------------------

SLEEPER = "echo $$; exec sleep 600"


@pytest.mark.parametrize("ask", ["linux/amd64", "linux/arm64"])
@pytest.mark.parametrize("how", ["kill-command", "sigterm-mlfs", "sigterm-group", "sigkill-mlfs"])
def test_killed(chroot, debmini, chroot_binfmt, ask, how):  # noqa: F811
    """Whatever is killed, everything ends and nothing stays mounted."""
    need_arch(chroot_binfmt, ask)
    proc = chroot.start(debmini.ref, "/bin/sh", "-c", SLEEPER, options=[plat(ask)])
    pid = int(read_line(proc, CHROOT_TIMEOUT))
    chroot.watch(pid)
    assert _alive(pid)
    if how == "kill-command":
        os.kill(pid, signal.SIGKILL)
        assert wait_exit(proc) == 128 + signal.SIGKILL
    elif how == "sigterm-mlfs":
        os.kill(proc.pid, signal.SIGTERM)
        # The command gets the SIGTERM; its death is the exit status.
        assert wait_exit(proc) == 128 + signal.SIGTERM
    elif how == "sigterm-group":
        os.killpg(proc.pid, signal.SIGTERM)
        wait_exit(proc)
    else:
        os.kill(proc.pid, signal.SIGKILL)
        assert wait_exit(proc) == -signal.SIGKILL
    # A SIGKILLed mlfs chroot cannot remove its (empty) work directory.
    chroot.assert_clean(what=how, work_dirs=how != "sigkill-mlfs")
    assert not _alive(pid)


# -- the chroot's furniture -----------------------------------------------------------------------------

FURNITURE = r'''
echo "pwd=$(pwd)"
echo "PATH=$PATH"
for d in null zero full random urandom tty; do test -c /dev/$d && echo "dev=$d"; done
test -d /dev/pts && echo devpts-dir
test -d /dev/shm && echo shm-dir
test -r /proc/self/status && echo proc
test -d /sys/kernel && echo sys
echo x > /dev/null && echo null-writable
test "$(head -c 4 /dev/zero | od -An -tx1 | tr -d ' ')" = 00000000 && echo zero-reads
echo shm > /dev/shm/x && cat /dev/shm/x
echo tmp > /tmp/x && cat /tmp/x
echo --resolv--
cat /etc/resolv.conf
'''


@pytest.mark.parametrize("ask", ["linux/amd64", "linux/s390x"])
def test_env_workdir_and_furniture(chroot, mlfs, debmini, chroot_binfmt, ask):  # noqa: F811
    need_arch(chroot_binfmt, ask)
    r = mlfs("chroot", "-o", plat(ask), debmini.ref, "/bin/sh", "-c", FURNITURE, timeout=CHROOT_TIMEOUT)
    assert r.rc == 0, describe(r)
    head, _, resolv = r.stdout.partition("--resolv--\n")
    got = lines(head)
    assert got[:2] == ["pwd=/root", "PATH=" + PATH], describe(r)
    for want in ["dev=" + d for d in ("null", "zero", "full", "random", "urandom", "tty")] + [
            "devpts-dir", "shm-dir", "proc", "sys", "null-writable", "zero-reads", "shm", "tmp"]:
        assert want in got, "%s missing\n%s" % (want, describe(r))
    if os.path.exists("/etc/resolv.conf"):
        with open("/etc/resolv.conf") as f:
            assert resolv == f.read(), describe(r)
    chroot.assert_clean()


def test_mount_table_inside(chroot, mlfs, debmini):  # noqa: F811
    """/ is an overlay; proc, sysfs, /dev a tmpfs with devpts and a /dev/shm tmpfs."""
    r = mlfs("chroot", "-o", plat("linux/amd64"), debmini.ref, "/bin/cat", "/proc/self/mountinfo",
             timeout=CHROOT_TIMEOUT)
    assert r.rc == 0, describe(r)
    table = {}
    for line in lines(r.stdout):
        left, _, right = line.partition(" - ")
        table[left.split(" ")[4]] = right.split(" ")[0]
    assert table.get("/") == "overlay", describe(r)
    for point, fstype in (("/proc", "proc"), ("/sys", "sysfs"), ("/dev/pts", "devpts"),
                          ("/dev/shm", "tmpfs")):
        assert table.get(point) == fstype, "%s should be %s\n%s" % (point, fstype, describe(r))
    for dev in ("null", "zero", "full", "random", "urandom", "tty"):
        assert "/dev/" + dev in table, "/dev/%s is not bind-mounted\n%s" % (dev, describe(r))


def test_host_mount_table_untouched_while_running(chroot, debmini):  # noqa: F811
    """While the command runs, the host's mount table shows none of the chroot."""
    proc = chroot.start(debmini.ref, "/bin/sh", "-c", SLEEPER, options=[plat("linux/amd64")])
    pid = int(read_line(proc, CHROOT_TIMEOUT))
    chroot.watch(pid)
    assert chroot.new_mounts() == [], "the host sees %r" % [
        (m["mountpoint"], m["fstype"]) for m in chroot.new_mounts()]
    # The command's own namespace has them.
    with open("/proc/%d/mountinfo" % pid) as f:
        inner = f.read()
    assert " - overlay " in inner and " - devpts " in inner, inner
    os.kill(pid, signal.SIGKILL)
    assert wait_exit(proc) == 137
    chroot.assert_clean()


def test_default_command_is_the_image_shell(chroot, debmini):  # noqa: F811
    """No COMMAND: the image's Cmd /bin/sh, reading our stdin."""
    r = chroot.run(debmini.ref, options=[plat("linux/amd64")],
                   input=b'echo "sh=$0"; pwd; echo "$PATH"; exit 4\n')
    assert r.rc == 4, describe(r)
    assert lines(r.stdout) == ["sh=/bin/sh", "/root", PATH], describe(r)
    chroot.assert_clean()


def test_stdio_passthrough(chroot, debmini):  # noqa: F811
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    r = chroot.run(debmini.ref, "/bin/sh", "-c", "cat; echo to-stderr >&2", options=[plat("linux/amd64")],
                   input=data)
    assert r.rc == 0, describe(r)
    assert "to-stderr" in lines(r.stderr), describe(r)
    # Result decodes as UTF-8: compare the byte count via a second, binary-safe run.
    proc = chroot.start(debmini.ref, "/usr/bin/sha256sum", options=[plat("linux/amd64")],
                        stdin=subprocess.PIPE)
    out, err = proc.communicate(input=data, timeout=CHROOT_TIMEOUT)
    assert proc.returncode == 0, err
    assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()
    chroot.assert_clean()


# -- -o upper=DIR -------------------------------------------------------------------------------------------

def test_upper_dir_keeps_changes(chroot, mlfs, debmini, tmp_path):  # noqa: F811
    keep = tmp_path / "keep"
    keep.mkdir()
    opts = [plat("linux/arm64"), "upper=%s" % keep]
    if not os.path.exists("/proc/sys/fs/binfmt_misc/qemu-aarch64"):
        opts = [plat("linux/amd64"), "upper=%s" % keep]
    r = chroot.run(debmini.ref, "/bin/sh", "-c", INSTALL, options=opts, input=debmini.hello_bytes)
    assert r.rc == 0, describe(r)
    chroot.assert_clean(what="a chroot with upper=")
    upper = keep / "upper"
    assert (upper / "root" / "written").read_text() == "written\n"
    assert (upper / "usr" / "bin" / "hello-mlfs").exists()
    assert "Package: hello-mlfs" in (upper / "var" / "lib" / "dpkg" / "status").read_text()
    # The next chroot on the same DIR goes on from there.
    r = chroot.run(debmini.ref, "/bin/sh", "-c", "hello-mlfs && cat /root/written", options=opts)
    assert r.rc == 0, describe(r)
    assert lines(r.stdout)[1:] == ["written"], describe(r)
    chroot.assert_clean(what="a second chroot with upper=")
    assert_pristine(mlfs, debmini, opts[0].split("=", 1)[1], tmp_path)


# -- no binfmt handler ------------------------------------------------------------------------------------

def assert_binfmt_error(r, arch, qemu):
    assert r.rc != 0, describe(r)
    assert r.rc == 125, "expected 125 (mlfs failed), as podman run\n" + describe(r)
    assert r.stdout == "", describe(r)
    err = lines(r.stderr)
    assert len(err) == 1, "expected one line on stderr\n" + describe(r)
    assert err[0].startswith("mlfs: "), describe(r)
    assert arch in err[0], "should name the architecture %s\n%s" % (arch, describe(r))
    assert ("update-binfmts --enable %s" % qemu) in err[0] or "qemu-user-static" in err[0], (
        "should say how to register a handler\n" + describe(r))


def test_no_binfmt_handler_for_the_architecture(chroot, mlfs, debmini):  # noqa: F811
    """debmini:riscv64 (a riscv64 config): nothing here runs it."""
    if os.path.exists("/proc/sys/fs/binfmt_misc/" + NO_BINFMT.qemu):
        pytest.skip("%s is registered on this machine" % NO_BINFMT.qemu)
    r = mlfs("chroot", "-o", plat(NO_BINFMT.ask), debmini.noarch_ref, "/bin/sh", "-c", "echo ran",
             timeout=CHROOT_TIMEOUT)
    assert_binfmt_error(r, "riscv64", NO_BINFMT.qemu)
    chroot.assert_clean()


def test_no_binfmt_handler_hidden_in_a_namespace(chroot, mlfs, debmini, chroot_binfmt):  # noqa: F811
    """s390x with binfmt_misc hidden by an empty tmpfs (in a private mount
    namespace only: the machine's handlers stay as they are)."""
    need_arch(chroot_binfmt, "linux/s390x")
    wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs mlfs-no-binfmt /proc/sys/fs/binfmt_misc || exit 99; exec "$@"', "sh"]
    r = mlfs("chroot", "-o", plat("linux/s390x"), debmini.ref, "/bin/sh", "-c", "echo ran", wrap=wrap,
             timeout=CHROOT_TIMEOUT)
    assert r.rc != 99, "could not hide binfmt_misc: " + describe(r)
    assert_binfmt_error(r, "s390x", "qemu-s390x")
    chroot.assert_clean()
