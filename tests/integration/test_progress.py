"""Progress of `mlfs pull` and `mlfs export` on stderr: a line per layer
started and done (with sizes) and one summary line when stderr is not a
terminal; layer and total lines redrawn in place on a terminal (a
pseudo-terminal here); nothing with -q / --quiet; errors printed always.

The rest of the suite runs with MLFS_QUIET=1 (helpers.base_env); these
tests take it out."""

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

import pytest

from conftest import HOST_PLATFORM, Images
from helpers import MLFS_TIMEOUT, assert_mlfs_error, assert_ok, cache_blob_path

pytestmark = pytest.mark.pull


def fmt_size(n):
    """mlfs_format_size (fs/cli/units.c)."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    v, u = float(n), 0
    while v >= 1023.95 and u + 1 < len(units):
        v /= 1024
        u += 1
    return "%d B" % n if u == 0 else "%.1f %s" % (v, units[u])


@pytest.fixture
def loud(mlfs):
    """mlfs(...) with progress on (no MLFS_QUIET)."""
    def run(*args, **kw):
        return mlfs(*args, env_extra={"MLFS_QUIET": ""}, **kw)
    return run


def host_layers(demo):
    return Images.by_platform(demo.index, HOST_PLATFORM)["layers"]


LAYER = r"layer (\d+)/(\d+) (sha256:[0-9a-f]{12}): "
ELAPSED = r"(\d+\.\d s|\d+m\d\ds|\d+h\d\dm)"


def check_lines(stderr, layers, ref, verb, cold):
    """Each layer: 'fetching SIZE' then 'done, SIZE fetched in T' (cold),
    or 'already cached (SIZE)' (warm), in order; then the summary."""
    lines = stderr.rstrip("\n").split("\n")
    n = len(layers)
    want = []
    for i, l in enumerate(layers):
        head = "layer %d/%d %s: " % (i + 1, n, l["digest"][:19])
        if cold:
            want.append(re.escape(head + "fetching " + fmt_size(l["size"])))
            want.append(re.escape(head + "done, %s fetched in " % fmt_size(l["size"])) + ELAPSED)
        else:
            want.append(re.escape(head + "already cached (%s)" % fmt_size(l["size"])))
    total = sum(l["size"] for l in layers)
    want.append(re.escape("%s %s: %d layer%s, %s fetched, %s already cached, in " % (
        verb, ref, n, "" if n == 1 else "s", fmt_size(total if cold else 0), fmt_size(0 if cold else total)))
        + ELAPSED)
    assert len(lines) == len(want), "expected %d lines:\n%s" % (len(want), stderr)
    for line, pattern in zip(lines, want):
        assert re.fullmatch(pattern, line), "%r does not match %r\n%s" % (line, pattern, stderr)


def test_pull_lines_cold_then_warm(loud, demo):
    layers = host_layers(demo)
    ref = demo.ref("demo:latest")
    r = loud("pull", ref)
    assert r.rc == 0 and r.stdout == "", r.stderr
    check_lines(r.stderr, layers, ref, "pulled", cold=True)
    r = loud("pull", ref)
    assert r.rc == 0 and r.stdout == "", r.stderr
    check_lines(r.stderr, layers, ref, "pulled", cold=False)


def test_export_lines_cold_then_warm(loud, demo, tmp_path):
    layers = host_layers(demo)
    ref = demo.ref("demo:latest")
    out = str(tmp_path / "out.tar")
    r = loud("export", ref, "-o", out)
    assert r.rc == 0, r.stderr
    check_lines(r.stderr, layers, ref, "loaded", cold=True)
    assert os.path.getsize(out) > 0
    r = loud("export", ref, "-o", out)
    assert r.rc == 0, r.stderr
    check_lines(r.stderr, layers, ref, "loaded", cold=False)


def test_kept_blobs_are_not_counted_twice(loud, demo):
    """--keep-blobs reads the blob it just fetched again to index it: that
    is not 'already cached'."""
    layers = host_layers(demo)
    ref = demo.ref("demo:latest")
    r = loud("pull", "--keep-blobs", ref)
    assert r.rc == 0, r.stderr
    check_lines(r.stderr, layers, ref, "pulled", cold=True)


def test_a_retried_download_is_counted_once(loud, demo, proxy):
    """The connection drops mid-blob and the retry resumes with Range:
    each byte is counted once (libcurl's own counts start over)."""
    layers = host_layers(demo)
    proxy.cut(r"/blobs/" + layers[0]["digest"], layers[0]["size"] // 3)
    ref = "%s/demo:latest" % proxy.host
    r = loud("pull", ref)
    assert r.rc == 0, r.stderr
    check_lines(r.stderr, layers, ref, "pulled", cold=True)


def test_a_resumed_partial_download_is_already_cached(loud, mlfs_env, demo, proxy):
    """A pull that failed mid-blob leaves a partial download, its lines,
    and the error last; the next pull resumes it: what the partial file
    held is 'already cached', the rest 'fetched'."""
    layers = host_layers(demo)
    big = layers[0]
    proxy.cut(r"/blobs/" + big["digest"], big["size"] // 3)
    proxy.fail(r"/blobs/" + big["digest"], 503, times=100, after=1)
    ref = "%s/demo:latest" % proxy.host
    r = loud("pull", ref)
    lines = r.stderr.rstrip("\n").split("\n")
    assert r.rc == 1 and lines[-1].startswith("mlfs: error: "), r.stderr
    assert lines[0] == "layer 1/%d %s: fetching %s" % (len(layers), big["digest"][:19], fmt_size(big["size"])), \
        r.stderr
    assert not any(l.startswith("pulled ") for l in lines), r.stderr
    kept = os.path.getsize(cache_blob_path(mlfs_env, big["digest"]) + ".partial")
    assert 0 < kept < big["size"]

    r = loud("pull", demo.ref("demo:latest"))  # straight to the registry now
    assert r.rc == 0, r.stderr
    lines = r.stderr.rstrip("\n").split("\n")
    head = "layer 1/%d %s: " % (len(layers), big["digest"][:19])
    assert re.fullmatch(re.escape(head + "done, %s fetched in " % fmt_size(big["size"] - kept)) + ELAPSED
                        + re.escape(", %s already cached" % fmt_size(kept)), lines[1]), r.stderr
    total = sum(l["size"] for l in layers)
    assert re.fullmatch(re.escape("pulled %s: %d layers, %s fetched, %s already cached, in " % (
        demo.ref("demo:latest"), len(layers), fmt_size(total - kept), fmt_size(kept))) + ELAPSED,
        lines[-1]), r.stderr


@pytest.mark.parametrize("flag", ["-q", "--quiet"])
def test_quiet_prints_nothing(loud, demo, tmp_path, flag):
    ref = demo.ref("demo:latest")
    assert_ok(loud("pull", flag, ref))
    r = loud("export", ref, flag, "-o", str(tmp_path / "out.tar"))
    assert_ok(r)


@pytest.mark.parametrize("quiet", [[], ["--quiet"]])
def test_errors_still_print(loud, demo, quiet):
    r = loud("pull", *quiet, demo.ref("demo:no-such-tag"))
    assert_mlfs_error(r, "no-such-tag", "not found", "unknown")


def test_quiet_is_for_pull_and_export_only(loud, demo):
    r = loud("inspect", "-q", demo.ref("demo:latest"))
    assert r.rc == 2, r


def run_on_pty(argv, env, cols=100):
    """Runs argv with stderr on a pseudo-terminal of `cols` columns;
    returns (rc, stdout bytes, what the terminal got)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                         start_new_session=True)
    os.close(slave)
    got = b""
    deadline = time.monotonic() + MLFS_TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if not ready:
                if p.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            got += chunk
        out = p.stdout.read()
        rc = p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
    return rc, out, got.decode("utf-8", "replace")


def test_pull_on_a_terminal_redraws(mlfs_bin, mlfs_env, demo):
    layers = host_layers(demo)
    assert len(layers) >= 2, "the demo image needs two layers for a redraw between them"
    ref = demo.ref("demo:latest")
    env = dict(mlfs_env)
    env.pop("MLFS_QUIET")
    rc, out, tty = run_on_pty([mlfs_bin, "pull", ref], env, cols=100)
    assert rc == 0 and out == b"", tty
    # The total line, drawn, then drawn over: cursor up and clear to the end.
    assert re.search(r"total  \[[=> ]+\]  [0-9.]+ [KMG]?i?B / %s  " % re.escape(fmt_size(
        sum(l["size"] for l in layers))), tty), repr(tty)
    assert re.search(r"\x1b\[\d+A\x1b\[J", tty), repr(tty)
    text = tty.replace("\r", "")
    for i, l in enumerate(layers):
        assert "layer %d/%d %s: done, %s fetched in " % (i + 1, len(layers), l["digest"][:19],
                                                        fmt_size(l["size"])) in text, repr(tty)
    # The last thing drawn over is the total line; the summary stays.
    summary = re.split(r"\x1b\[\d+A\x1b\[J", text.rstrip("\n").split("\n")[-1])[-1]
    assert re.fullmatch(r"pulled %s: %d layers, %s fetched, 0 B already cached, in %s" % (
        re.escape(ref), len(layers), re.escape(fmt_size(sum(l["size"] for l in layers))), ELAPSED),
        summary), repr(tty)
    # No line wider than the terminal: a wrapped line breaks the redraw.
    for line in re.split(r"\n|\x1b\[\d+A\x1b\[J", text):
        assert len(line) < 100, repr(line)


def test_a_dumb_terminal_gets_lines(mlfs_bin, mlfs_env, demo):
    """TERM=dumb cannot move its cursor: the plain lines, no escapes."""
    layers = host_layers(demo)
    ref = demo.ref("demo:latest")
    env = dict(mlfs_env, TERM="dumb")
    env.pop("MLFS_QUIET")
    rc, out, tty = run_on_pty([mlfs_bin, "pull", ref], env)
    assert rc == 0 and "\x1b" not in tty, repr(tty)
    check_lines(tty.replace("\r\n", "\n"), layers, ref, "pulled", cold=True)


def test_quiet_on_a_terminal(mlfs_bin, mlfs_env, demo):
    env = dict(mlfs_env)
    env.pop("MLFS_QUIET")
    rc, out, tty = run_on_pty([mlfs_bin, "pull", "-q", demo.ref("demo:latest")], env)
    assert rc == 0 and out == b"" and tty == "", repr(tty)


def test_seekable_pull(loud, seekable):
    """A seekable image's chunks come by many ranges at once: every layer
    still ends with one line, and the summary counts what came (TOCs and
    chunks: at least each layer's size)."""
    ref = seekable["ref"]("estargz")
    r = loud("pull", ref)
    assert r.rc == 0, r.stderr
    lines = r.stderr.rstrip("\n").split("\n")
    done = [l for l in lines if re.fullmatch(LAYER + r"done, .* fetched in .*", l)]
    summary = re.fullmatch(r"pulled %s: (\d+) layers?, (.+) fetched, 0 B already cached, in %s" % (
        re.escape(ref), ELAPSED), lines[-1])
    assert summary and len(done) == int(summary.group(1)), r.stderr
    r = loud("pull", ref)
    assert r.rc == 0, r.stderr
    assert re.fullmatch(r"pulled %s: \d+ layers?, 0 B fetched, .+ already cached, in %s" % (
        re.escape(ref), ELAPSED), r.stderr.rstrip("\n").split("\n")[-1]), r.stderr
