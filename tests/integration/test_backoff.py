"""A mount whose layers fail to load: how often it tries again.

A transient failure (the registry answers 503) is retried by a later access,
but not before a backoff (1 s, doubling to 60 s), so a burst of accesses to a
dead registry costs one attempt, not one per `stat`.  A failure that is the
image's own (its bytes do not match their digest) is never retried for the
life of the mount: every access answers EIO at once, with no download.
"""

import errno
import time

from conftest import Images
from helpers import wait_for
from mounts import read_in_child


def test_corrupt_layer_is_not_downloaded_again(mounter, broken, proxy):
    """The layer's blob does not hash to its digest: the first access
    downloads it once and fails; later accesses, seconds apart, fail at
    once without another download, and the log says there will be no more
    tries."""
    digest = broken.layer_digest["layer_digest"]
    m = mounter.mount(proxy.host + "/broken/layer-digest:v1", "timeout=10", foreground=True)
    target = m.path("etc", "mlfs-layer-digest")
    [(data, err)] = read_in_child([target], timeout=60)
    assert data is None and err == errno.EIO, (data, err)
    assert wait_for(lambda: "no more tries" in m.stderr(), timeout=10), m.stderr()
    gets = len(proxy.requests("/blobs/" + digest))
    assert gets >= 1
    for _ in range(3):
        time.sleep(1.2)
        started = time.monotonic()
        [(data, err)] = read_in_child([target], timeout=60)
        assert data is None and err == errno.EIO, (data, err)
        assert time.monotonic() - started < 5
    assert len(proxy.requests("/blobs/" + digest)) == gets, "the corrupt layer was downloaded again"


def test_transient_failure_backs_off_then_recovers(mounter, demo, proxy):
    """With every layer answering 503, the first access fails; a burst of
    accesses right after it fails at once without a new attempt (backoff);
    once the registry is back and the backoff is over, an access loads the
    image and reads the right bytes."""
    info = Images.by_platform(demo.index, "linux/amd64")
    pattern = "/blobs/(%s)" % "|".join(l["digest"] for l in info["layers"])
    proxy.fail(pattern, 503, times=10 ** 6)
    m = mounter.mount(proxy.host + "/demo:latest", "platform=linux/amd64", "timeout=10", foreground=True)
    target = m.path("etc", "mlfs-platform")
    [(data, err)] = read_in_child([target], timeout=60)
    assert data is None and err == errno.EIO, (data, err)
    assert wait_for(lambda: "next try in" in m.stderr(), timeout=10), m.stderr()
    attempts = len(proxy.requests(pattern))
    burst = read_in_child([target] * 5, timeout=60)
    assert all(d is None and e == errno.EIO for d, e in burst), burst
    assert len(proxy.requests(pattern)) == attempts, "accesses during the backoff went to the registry"
    with proxy._lock:           # the registry is healthy again
        proxy._faults.clear()
    deadline = time.monotonic() + 10
    while True:
        [(data, err)] = read_in_child([target], timeout=60)
        if data is not None or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert data == b"linux/amd64\n", (err, m.stderr())
