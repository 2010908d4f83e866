"""Foreign (non-distributable) layers: the registry holds the manifest but
not the layer, which lives at one of the descriptor's URLs.  mlfs fetches
it from there, without the registry's credentials, verifies it like any
blob, and says clearly when there is no URL to try."""

import gzip
import hashlib
import io
import json
import tarfile

import pytest

from faultproxy import FaultProxy
from helpers import assert_mlfs_error, assert_ok, cache_blob_path
from registry import Registry, RegistryClient

MT_LIST_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


def _layer():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"a foreign layer's file\n"
        info = tarfile.TarInfo("etc/foreign")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return raw, gzip.compress(raw, mtime=0)


@pytest.fixture(scope="module")
def foreign(request, tmp_path_factory):
    raw, blob = _layer()
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    store = FaultProxy(("127.0.0.1", 9), bind="127.0.0.2")
    store.serve_blobs_from(lambda path: blob if path.startswith("/layers/") else None)
    request.addfinalizer(store.close)
    reg = Registry(str(tmp_path_factory.mktemp("foreign")), extra_config=[
        "validation:", "  manifests:", "    urls:", "      allow:", "        - ^http://127\\.0\\.0\\.2",
    ]).start()
    request.addfinalizer(reg.stop)
    client = RegistryClient(reg.url)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]}}).encode()
    cdigest = client.push_blob("foreign", cfg)

    def push(tag, urls):
        layer = {"mediaType": MT_FOREIGN, "digest": digest, "size": len(blob)}
        if urls:
            layer["urls"] = urls
        m = {"schemaVersion": 2, "mediaType": MT_LIST_MANIFEST,
             "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                        "digest": cdigest, "size": len(cfg)},
             "layers": [layer]}
        client.put_manifest("foreign", tag, json.dumps(m).encode(), MT_LIST_MANIFEST)

    push("urls", ["http://127.0.0.2:%d/gone" % store.port, "http://%s/layers/x.tar.gz" % store.host])
    try:
        push("nourl", [])
        nourl = True
    except Exception:  # distribution may refuse a foreign layer without URLs
        nourl = False
    return {"reg": reg, "store": store, "digest": digest, "blob": blob, "nourl": nourl}


def test_foreign_layer_comes_from_its_url(mlfs, mlfs_env, foreign):
    host = foreign["reg"].host
    # --insecure: the URLs are plain HTTP on loopback, which a layer URL may
    # only use when the user allows it (test_netsafety.py checks the refusal
    # without it); what this test is about, the fallback from a 404ing URL
    # to the next and no credentials sent, is unchanged.
    r = mlfs("pull", "--keep-blobs", "--insecure", host + "/foreign:urls")
    assert_ok(r)
    with open(cache_blob_path(mlfs_env, foreign["digest"]), "rb") as f:
        assert f.read() == foreign["blob"]
    seen = [q["path"] for q in foreign["store"].seen]
    assert "/gone" in seen and "/layers/x.tar.gz" in seen, seen  # first URL 404s, second serves
    for q in foreign["store"].seen:
        assert "authorization" not in q["headers"]


def test_foreign_layer_without_url_is_a_clear_error(mlfs, foreign):
    if not foreign["nourl"]:
        pytest.skip("this registry refuses foreign layers without URLs")
    r = mlfs("pull", "--keep-blobs", "--insecure", foreign["reg"].host + "/foreign:nourl")
    assert_mlfs_error(r, "foreign layer")
