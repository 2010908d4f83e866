"""The HTTP layer against a real registry behind a misbehaving proxy:
retries with backoff on 5xx and 429 (Retry-After honoured), a blob download
cut in the middle resumes with Range, a partial download left by an earlier
run resumes, redirects to another host never carry Authorization, the proxy
environment variables are honoured, and a corrupt blob leaves nothing in
the cache."""

import os
import time

from conftest import Images
from faultproxy import FaultProxy
from helpers import assert_mlfs_error, assert_ok, cache_blob_path, sha256_file


def amd64(demo):
    return Images.by_platform(demo.index, "linux/amd64")


def biggest_layer(info):
    return max(info["layers"], key=lambda l: l["size"])


def test_retries_5xx_then_succeeds(mlfs, proxy):
    proxy.fail(r"/manifests/latest", 503, times=2)
    r = mlfs("inspect", "--json", proxy.host + "/demo:latest")
    assert_ok(r)
    assert len(proxy.requests(r"/manifests/latest")) == 3


def test_gives_up_after_bounded_retries(mlfs, proxy):
    proxy.fail(r"/manifests/latest", 503, times=100)
    r = mlfs("inspect", proxy.host + "/demo:latest")
    assert_mlfs_error(r, "503")
    n = len(proxy.requests(r"/manifests/latest"))
    assert 2 <= n <= 10, "retries must be bounded, saw %d" % n


def test_429_honours_retry_after(mlfs, proxy):
    proxy.fail(r"/manifests/latest", 429, headers={"Retry-After": "1"})
    start = time.monotonic()
    r = mlfs("inspect", proxy.host + "/demo:latest")
    assert_ok(r)
    assert len(proxy.requests(r"/manifests/latest")) == 2
    assert time.monotonic() - start >= 0.9, "the retry came before Retry-After said"


def test_cut_download_resumes_with_range(mlfs, mlfs_env, proxy, demo):
    layer = biggest_layer(amd64(demo))
    assert layer["size"] > 4096
    proxy.cut(r"/blobs/" + layer["digest"], layer["size"] // 3)
    r = mlfs("pull", "--keep-blobs", "--platform", "linux/amd64", proxy.host + "/demo:latest")
    assert_ok(r)
    gets = proxy.requests(r"/blobs/" + layer["digest"])
    assert len(gets) == 2, gets
    assert gets[1]["headers"].get("range") == "bytes=%d-" % (layer["size"] // 3)
    assert os.path.getsize(cache_blob_path(mlfs_env, layer["digest"])) == layer["size"]


def test_partial_file_from_earlier_run_resumes(mlfs, mlfs_env, proxy, demo):
    layer = biggest_layer(amd64(demo))
    with open(demo.registry.blob_data_path(layer["digest"]), "rb") as f:
        data = f.read()
    final = cache_blob_path(mlfs_env, layer["digest"])
    os.makedirs(os.path.dirname(final), exist_ok=True)
    half = len(data) // 2
    with open(final + ".partial", "wb") as f:
        f.write(data[:half])
    r = mlfs("pull", "--keep-blobs", "--platform", "linux/amd64", proxy.host + "/demo:latest")
    assert_ok(r)
    gets = proxy.requests(r"/blobs/" + layer["digest"])
    assert [g["headers"].get("range") for g in gets] == ["bytes=%d-" % half]
    with open(final, "rb") as f:
        assert f.read() == data
    assert not os.path.exists(final + ".partial")


def test_garbage_partial_is_not_trusted(mlfs, mlfs_env, proxy, demo):
    """A partial file whose bytes are not a prefix of the blob (a proxy
    that once served junk): it is dropped and the download starts over from
    byte 0 in the same run, which succeeds."""
    layer = biggest_layer(amd64(demo))
    final = cache_blob_path(mlfs_env, layer["digest"])
    os.makedirs(os.path.dirname(final), exist_ok=True)
    with open(final + ".partial", "wb") as f:
        f.write(b"\0" * 100)
    r = mlfs("pull", "--keep-blobs", "--platform", "linux/amd64", proxy.host + "/demo:latest")
    assert_ok(r, allow_warnings=True)
    assert "not usable" in r.stderr, r.stderr
    gets = proxy.requests(r"/blobs/" + layer["digest"])
    assert [g["headers"].get("range") for g in gets] == ["bytes=100-", None], gets
    assert sha256_file(final) == layer["digest"]
    assert not os.path.exists(final + ".partial")


def test_corrupt_layer_blob_leaves_nothing_cached(mlfs, mlfs_env, broken):
    r = mlfs("pull", "--keep-blobs", broken.ref("broken/layer-digest:v1"))
    assert_mlfs_error(r, "digest mismatch")
    blob = cache_blob_path(mlfs_env, broken.layer_digest["layer_digest"])
    assert not os.path.exists(blob) and not os.path.exists(blob + ".partial")


def test_second_pull_uses_the_cache(mlfs, proxy):
    ref = proxy.host + "/demo:latest"
    assert_ok(mlfs("pull", "--keep-blobs", ref))
    first = len(proxy.requests(r"/blobs/"))
    assert first >= 2  # config + layers
    assert_ok(mlfs("pull", "--keep-blobs", ref))
    # Layers, config and the platform's manifest all come from the cache:
    # only the tag is asked again (it may have moved).
    assert len(proxy.requests(r"/blobs/")) == first
    assert [q["path"] for q in proxy.requests(r"/manifests/")][-1].endswith("/manifests/latest")


def test_redirect_to_other_host_drops_authorization(mlfs, bearer):
    """Like a registry that sends blob GETs to object storage on another host."""
    reg = bearer.registry
    store = FaultProxy(("127.0.0.1", reg.port), bind="127.0.0.2")
    front = FaultProxy(("127.0.0.1", reg.port))
    try:
        def from_storage(path):
            digest = path.split("/blobs/", 1)[1].split("?", 1)[0]
            try:
                with open(reg.blob_data_path(digest), "rb") as f:
                    return f.read()
            except OSError:
                return None
        store.serve_blobs_from(from_storage)
        front.redirect_blobs("http://" + store.host)
        r = mlfs("pull", "--keep-blobs", "--platform", "linux/arm64", front.host + "/public/demo:latest")
        assert_ok(r)
        assert store.seen, "the redirect was not followed"
        for req in store.seen:
            assert "authorization" not in req["headers"], req
        # ... while the registry itself did get the token.
        assert any("authorization" in q["headers"] for q in front.requests(r"/manifests/"))
    finally:
        store.close()
        front.close()


def test_http_proxy_environment_is_honoured(mlfs, proxy, demo):
    r = mlfs("inspect", demo.ref("demo:latest"),
             env_extra={"http_proxy": "http://" + proxy.host, "no_proxy": "", "NO_PROXY": ""})
    assert_ok(r)
    assert any(q["path"].startswith("http://" + demo.host + "/v2/demo/manifests/latest")
               for q in proxy.seen), proxy.seen


def test_token_renewed_mid_download_keeps_the_offset(mlfs, mlfs_env, bearer):
    """The download drops, and the retry is refused (the token expired):
    after renewing the token the next request still asks only for the rest."""
    reg = bearer.registry
    front = FaultProxy(("127.0.0.1", reg.port))
    try:
        layer = biggest_layer(Images.by_platform(bearer.index, "linux/arm64/v8"))
        cut = layer["size"] // 2
        front.cut(r"/blobs/" + layer["digest"], cut)
        challenge = 'Bearer realm="%s",service="%s",scope="repository:public/demo:pull"' % (
            bearer.issuer.realm, bearer.issuer.service)
        # The first GET is cut; the retry (with Range) gets the 401.
        front.fail(r"/blobs/" + layer["digest"], 401, headers={"WWW-Authenticate": challenge}, times=1,
                   after=1)
        r = mlfs("pull", "--keep-blobs", "--platform", "linux/arm64", front.host + "/public/demo:latest")
        assert_ok(r)
        gets = front.requests(r"/blobs/" + layer["digest"])
        ranges = [g["headers"].get("range") for g in gets]
        assert ranges == [None, "bytes=%d-" % cut, "bytes=%d-" % cut], ranges
        with open(cache_blob_path(mlfs_env, layer["digest"]), "rb") as f, \
                open(reg.blob_data_path(layer["digest"]), "rb") as g:
            assert f.read() == g.read()
    finally:
        front.close()


def test_206_with_another_range_is_realigned(mlfs, mlfs_env, proxy, demo):
    """A resumed download answered from earlier bytes than asked (206 with
    its own Content-Range): the overlap is skipped, the blob is exact."""
    layer = biggest_layer(amd64(demo))
    cut = layer["size"] // 2
    proxy.cut(r"/blobs/" + layer["digest"], cut)
    proxy.misrange(r"/blobs/" + layer["digest"], 1000)
    assert_ok(mlfs("pull", "--keep-blobs", "--platform", "linux/amd64", proxy.host + "/demo:latest"))
    with open(cache_blob_path(mlfs_env, layer["digest"]), "rb") as f, \
            open(demo.registry.blob_data_path(layer["digest"]), "rb") as g:
        assert f.read() == g.read()
    gets = proxy.requests(r"/blobs/" + layer["digest"])
    assert [g["headers"].get("range") for g in gets] == [None, "bytes=%d-" % cut]
