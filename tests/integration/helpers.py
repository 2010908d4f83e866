"""Running mlfs and checking what it says (shared by conftest and the tests)."""

import collections
import hashlib
import json
import os
import platform
import signal
import subprocess
import time

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MLFS_BIN = os.environ.get("MLFS_BIN", os.path.join(REPO_ROOT, "build", "fs", "mlfs"))
MLFS_TIMEOUT = float(os.environ.get("MLFS_TEST_TIMEOUT", "60"))

Result = collections.namedtuple("Result", "rc stdout stderr")


def base_env(tmp_path):
    """A clean environment: no credentials or caches of the machine leak in."""
    home = os.path.join(tmp_path, "home")
    run = os.path.join(tmp_path, "run")
    cache = os.path.join(tmp_path, "cache")
    for d in (home, run):
        os.makedirs(d, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": home,
        "XDG_RUNTIME_DIR": run,
        "MLFS_CACHE": cache,
        # pull and export print progress on stderr; the tests that look
        # at it (test_progress.py) take this out.
        "MLFS_QUIET": "1",
    }


def run_mlfs(*args, env=None, wrap=(), timeout=None, binary=None):
    """Run mlfs; returns Result(rc, stdout, stderr) (a 3-tuple).

    `wrap` is an argv prefix (e.g. an unshare call) the mlfs command is
    appended to.  A hang is a test failure, not a stuck suite.
    """
    binary = binary or MLFS_BIN
    cmd = list(wrap) + [binary] + [str(a) for a in args]
    proc = subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout or MLFS_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        pytest.fail("mlfs timed out after %ss: %s\nstderr: %s" % (
            timeout or MLFS_TIMEOUT, " ".join(cmd), err.decode("utf-8", "replace")))
    return Result(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


def describe(result):
    return "rc=%d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (result.rc, result.stdout, result.stderr)


def assert_no_crash(result):
    # A negative status is a signal (subprocess), >= 128 a shell-reported one.
    assert 0 <= result.rc < 128, "mlfs crashed\n" + describe(result)


def assert_ok(result, allow_warnings=False):
    """Exit 0 and a silent stderr (or, if allowed, only `mlfs: warning: ` lines)."""
    assert_no_crash(result)
    assert result.rc == 0, "mlfs failed\n" + describe(result)
    if allow_warnings:
        lines = [l for l in result.stderr.split("\n") if l]
        assert all(l.startswith("mlfs: warning: ") for l in lines), (
            "unexpected stderr\n" + describe(result))
    else:
        assert result.stderr == "", "unexpected stderr\n" + describe(result)


def assert_mlfs_error(result, *needles, secrets=()):
    """Exit 1, exactly one stderr line `mlfs: ...` containing one of `needles`
    (case-insensitive), nothing on stdout, no secret anywhere."""
    assert_no_crash(result)
    assert result.rc == 1, "expected exit status 1\n" + describe(result)
    lines = result.stderr.rstrip("\n").split("\n")
    assert len(lines) == 1 and result.stderr.strip(), "expected one line on stderr\n" + describe(result)
    assert lines[0].startswith("mlfs: "), "stderr line must start with 'mlfs: '\n" + describe(result)
    low = lines[0].lower()
    if needles:
        assert any(n.lower() in low for n in needles), (
            "stderr should mention one of %r\n%s" % (needles, describe(result)))
    assert "traceback" not in low
    for s in secrets:
        assert s not in result.stdout and s not in result.stderr, "secret leaked\n" + describe(result)
    return lines[0]


def inspect_json(run, ref, *args, allow_warnings=False, **kw):
    r = run("inspect", ref, "--json", *args, **kw)
    assert_ok(r, allow_warnings=allow_warnings)
    try:
        return json.loads(r.stdout)
    except ValueError as e:
        pytest.fail("inspect --json did not print JSON (%s)\n%s" % (e, describe(r)))


def host_platform():
    """The host's platform as the image index spells it (containerd normalisation)."""
    m = platform.machine().lower()
    table = {
        "x86_64": "linux/amd64", "x86-64": "linux/amd64", "amd64": "linux/amd64",
        "aarch64": "linux/arm64/v8", "arm64": "linux/arm64/v8",
        "armv7l": "linux/arm/v7", "s390x": "linux/s390x", "ppc64le": "linux/ppc64le",
    }
    return table.get(m)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def cache_blob_path(env, digest):
    algo, hexd = digest.split(":", 1)
    return os.path.join(env["MLFS_CACHE"], "blobs", algo, hexd)


def wait_for(predicate, timeout=3.0, interval=0.05):
    """Poll `predicate` (bounded); returns its last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def unshare_wrap(hosts_file, certs_dir=None):
    """argv prefix: run in a private mount namespace with our /etc/hosts and,
    optionally, our directory over /etc/docker/certs.d."""
    script = 'mount --bind "$1" /etc/hosts || exit 99; '
    script += '[ -z "$2" ] || mount --bind "$2" /etc/docker/certs.d || exit 99; '
    script += 'shift 2; exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
            hosts_file, certs_dir or ""]
