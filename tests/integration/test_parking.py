"""Requests that wait for layers hold no FUSE thread, and unmount cancels
the downloads under way.

A request that needs a layer (or the merged tree) that is not loaded yet
is parked with the loader and answered when the layer is published; the
thread that took it goes back to libfuse.  So a walk that fans out into a
thousand lookups during a slow first load does not use up the pool (128
threads), and a request that needs no layer (statfs) is still answered at
once.  At unmount the downloads are cancelled (libcurl's progress
callback) and every thread is joined, rather than the process leaving
them behind with _exit().

The registry is held back by a FaultProxy (hold/release) so the layers
stay "loading" for as long as the test needs.
"""

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import Images
from faultproxy import FaultProxy
from helpers import wait_for
from mounts import read_in_child
from registry import RegistryClient
from test_export import D, F, layer_tar, push

N_DIRS = 200
N_WAITERS = 1000

# Stats N names spread over the image's d<k> directories from N threads at
# once (the kernel serialises lookups within one directory: libfuse 3.14
# never tells it FUSE_PARALLEL_DIROPS); prints "started", then a JSON
# summary of the outcomes once every thread has its answer.
STAT_SCRIPT = r"""
import errno, json, os, sys, threading
root, n, dirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = {}
lock = threading.Lock()
def one(i):
    try:
        os.stat(os.path.join(root, "d%d" % (i % dirs), "waiting-%d" % i))
        r = "found"
    except OSError as e:
        r = errno.errorcode.get(e.errno, str(e.errno))
    with lock:
        out[r] = out.get(r, 0) + 1
ts = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
for t in ts:
    t.start()
print("started", flush=True)
for t in ts:
    t.join()
print(json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def wide(plain_registry):
    """Two layers: the bottom one holds a file; the top one N_DIRS
    directories, so lookups of their children can be answered only once
    the bottom layer is in."""
    client = RegistryClient(plain_registry.url)
    bottom = layer_tar([D("etc"), F("etc/hello", b"hello\n")])
    top = layer_tar([D("d%d" % k) for k in range(N_DIRS)])
    return push(client, "parking/wide", "v1", [bottom, top])


@pytest.fixture
def held(demo):
    """A proxy in front of the demo registry whose amd64 layer blobs are
    held back until released."""
    p = FaultProxy(("127.0.0.1", demo.registry.port))
    info = Images.by_platform(demo.index, "linux/amd64")
    p.hold("/blobs/(%s)" % "|".join(l["digest"] for l in info["layers"]))
    yield p
    p.release()
    p.close()


def threads_of(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def statvfs_in_child(path, timeout):
    """statvfs in a child: True if it answered within timeout."""
    proc = subprocess.Popen(["/usr/bin/python3", "-c", "import os,sys; os.statvfs(sys.argv[1])", path],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        return proc.wait(timeout=timeout) == 0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        return False


def test_thousand_waiting_lookups_hold_no_threads(mounter, plain_registry, wide):
    """A thousand lookups in 200 directories arrive while the bottom layer
    is held back: each is parked, the daemon keeps a handful of threads,
    statfs is answered while they wait, and once the registry answers
    every one of them gets its answer (ENOENT: the names are not in the
    image).  Before parking, the first 128 took every FUSE thread and
    statfs waited for the layer."""
    proxy = FaultProxy(("127.0.0.1", plain_registry.port))
    proxy.hold("/blobs/" + wide["layers"][0]["digest"])
    stat = None
    try:
        m = mounter.mount(proxy.host + "/parking/wide:v1", "timeout=300", foreground=True)
        stat = subprocess.Popen(["/usr/bin/python3", "-c", STAT_SCRIPT, m.mountpoint, str(N_WAITERS), str(N_DIRS)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, text=True)
        assert stat.stdout.readline().strip() == "started"
        assert wait_for(lambda: proxy.requests("/blobs/" + wide["layers"][0]["digest"]), timeout=30), \
            "the bottom layer was not asked for"
        # Let the lookups reach the daemon: parked, or (without parking)
        # holding every FUSE thread with the rest queued in the kernel.
        time.sleep(3)
        answered = statvfs_in_child(m.mountpoint, timeout=20)
        threads = threads_of(m.proc.pid)
        assert answered, "statfs was not answered while lookups waited for a layer: the FUSE threads are all taken"
        assert threads < 64, "%d threads in the daemon while lookups wait: they are not parked" % threads
        proxy.release()
        out, err = stat.communicate(timeout=240)
    finally:
        proxy.release()
        if stat is not None and stat.poll() is None:
            os.killpg(stat.pid, signal.SIGKILL)
            stat.wait(timeout=10)
        proxy.close()
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"ENOENT": N_WAITERS}, (result, err)
    # And the image itself is served as usual once the layers are in.
    [(data, e)] = read_in_child([m.path("etc", "hello")])
    assert data == b"hello\n", (data, e)
    assert m.unmount() == 0


def test_interrupted_waiter_is_answered(mounter, held):
    """A parked request whose caller is killed is answered (EINTR) and
    dropped: the daemon stays healthy and serves the file afterwards."""
    m = mounter.mount(held.host + "/demo:latest", "platform=linux/amd64", "timeout=300", foreground=True)
    reader = subprocess.Popen(["/usr/bin/cat", m.path("etc", "mlfs-platform")], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    assert wait_for(lambda: held.requests("/blobs/"), timeout=30)
    time.sleep(0.5)
    reader.send_signal(signal.SIGKILL)  # the kernel sends FUSE an INTERRUPT for the waiting request
    reader.wait(timeout=30)
    held.release()
    [(data, e)] = read_in_child([m.path("etc", "mlfs-platform")], timeout=120)
    assert data == b"linux/amd64\n", (data, e)
    assert m.unmount() == 0


def test_unmount_cancels_downloads(mounter, held):
    """Stopping the mount (SIGTERM) while every layer download is stalled: the daemon
    cancels them, answers the waiting read, joins its threads and exits 0
    on its own (no _exit with threads left behind); the next mount, with
    the registry answering again, serves the right bytes."""
    m = mounter.mount(held.host + "/demo:latest", "platform=linux/amd64", "timeout=300", foreground=True)
    reader = subprocess.Popen(["/usr/bin/cat", m.path("etc", "mlfs-platform")], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for(lambda: held.requests("/blobs/"), timeout=30)
        time.sleep(0.5)
        started = time.monotonic()
        rc = m.unmount(how="sigterm")  # fusermount -u: EBUSY, the reader is inside the mount
        took = time.monotonic() - started
        assert rc == 0, m.stderr()
        assert reader.wait(timeout=30) != 0  # its read was answered with an error, not left hanging
    finally:
        held.release()
        if reader.poll() is None:
            reader.kill()
            reader.wait(timeout=10)
    log = m.stderr()
    assert "downloads cancelled" in log, log
    assert "still loading" not in log, log
    assert took < 30, "unmount took %.1f s" % took
    m2 = mounter.mount(held.host + "/demo:latest", "platform=linux/amd64", foreground=True)
    [(data, e)] = read_in_child([m2.path("etc", "mlfs-platform")], timeout=120)
    assert data == b"linux/amd64\n", (data, e)
    assert m2.unmount() == 0
