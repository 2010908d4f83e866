"""The harness itself: registries, images, token issuer, TLS, namespace trick.

None of these run mlfs; they must pass whatever state the C side is in.
"""

import gzip
import io
import json
import socket
import ssl
import subprocess
import tarfile
import urllib.error
import urllib.request

import pytest

from conftest import PASSWORD, USER, Images
from helpers import unshare_wrap
from registry import MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST, sha256_digest, skopeo

pytestmark = pytest.mark.harness

PLATFORMS = ["linux/arm/v7", "linux/arm64/v8", "linux/amd64", "linux/s390x", "linux/ppc64le"]
# ELF e_machine per architecture.
ELF_MACHINE = {"amd64": 62, "arm64": 183, "arm": 40, "s390x": 22, "ppc64le": 21}


def _layer_files(blob):
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        return {m.name.lstrip("./"): (m, tar.extractfile(m).read() if m.isfile() else None)
                for m in tar.getmembers()}


@pytest.mark.parametrize("which,mtype,manifest_type", [
    ("index", MT_OCI_INDEX, MT_OCI_MANIFEST),
    ("list", MT_DOCKER_LIST, MT_DOCKER_MANIFEST),
])
def test_demo_image(demo, which, mtype, manifest_type):
    desc = getattr(demo, which)
    assert desc["media_type"] == mtype
    assert [p for p, _ in desc["platforms"]] == PLATFORMS
    for plat, info in desc["platforms"]:
        assert info["media_type"] == manifest_type
        os_, arch = plat.split("/")[:2]
        variant = plat.split("/")[2] if plat.count("/") == 2 else None
        cfg = info["config"]
        assert (cfg["os"], cfg["architecture"], cfg.get("variant")) == (os_, arch, variant)
        assert cfg["config"]["Entrypoint"] == ["/bin/busybox"]
        assert cfg["config"]["Cmd"] == ["sh"]
        assert "MLFS_PLATFORM=%s" % plat in cfg["config"]["Env"]
        assert len(info["layers"]) >= 2
        if which == "list":
            continue  # same blobs as the index's images
        bottom = _layer_files(demo.client.get_blob("demo", info["layers"][0]["digest"]))
        top = _layer_files(demo.client.get_blob("demo", info["layers"][-1]["digest"]))
        busybox = bottom["bin/busybox"][1]
        assert busybox[:4] == b"\x7fELF"
        order = "little" if busybox[5] == 1 else "big"
        assert int.from_bytes(busybox[18:20], order) == ELF_MACHINE[arch]
        assert bottom["bin/sh"][0].issym()
        assert top["etc/mlfs-platform"][1] == (plat + "\n").encode()


def test_index_and_list_share_layers(demo):
    for (p1, a), (p2, b) in zip(demo.index["platforms"], demo.list["platforms"]):
        assert p1 == p2
        assert [l["digest"] for l in a["layers"]] == [l["digest"] for l in b["layers"]]
        assert a["config_digest"] == b["config_digest"]


def test_skopeo_reads_demo(demo):
    out = skopeo("inspect", "--tls-verify=false", "--override-arch", "s390x",
                 "docker://%s" % demo.ref("demo:list"))
    assert json.loads(out)["Architecture"] == "s390x"


def test_single_and_digest_only(single, digest_only, demo):
    assert single.oci["media_type"] == MT_OCI_MANIFEST
    assert single.v2s2["media_type"] == MT_DOCKER_MANIFEST
    assert "MLFS_DIGEST_ONLY=1" in digest_only["config"]["config"]["Env"]
    # No tag points at it.
    tags = json.loads(urllib.request.urlopen(demo.registry.url + "/v2/demo/tags/list", timeout=10).read())
    for t in tags["tags"]:
        _, _, d = demo.client.get_manifest("demo", t)
        assert d != digest_only["digest"]


def test_broken_images_are_broken(broken, demo):
    c = demo.client
    cd = broken.config_digest["config_digest"]
    assert sha256_digest(c.get_blob("broken/config-digest", cd)) != cd
    ld = broken.layer_digest["layer_digest"]
    assert sha256_digest(c.get_blob("broken/layer-digest", ld)) != ld
    md = broken.manifest_digest["digest"]
    body, _, got = c.get_manifest("broken/manifest-digest", md)
    assert got != md and json.loads(body)  # served by digest, wrong bytes, still JSON
    assert c.get_blob("broken/malformed", broken.malformed["config_digest"]).startswith(b"this is")
    assert len(c.get_blob("broken/huge", broken.huge["config_digest"])) > 4 * 1024 * 1024


def test_basic_auth_registry(basic_registry):
    ref = "docker://%s" % basic_registry.ref("private/demo:latest")
    with pytest.raises(RuntimeError, match="(?i)unauthorized|authentication"):
        skopeo("inspect", "--raw", "--tls-verify=false", ref)
    out = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", "%s:%s" % (USER, PASSWORD), ref)
    assert json.loads(out)["mediaType"] == MT_OCI_INDEX


def test_token_auth(bearer):
    host = bearer.host
    issuer = bearer.issuer
    skopeo("inspect", "--raw", "--tls-verify=false", "docker://%s/public/demo:latest" % host)
    with pytest.raises(RuntimeError, match="(?i)unauthorized|denied"):
        skopeo("inspect", "--raw", "--tls-verify=false", "docker://%s/private/demo:latest" % host)
    skopeo("inspect", "--raw", "--tls-verify=false", "--creds", "%s:%s" % (USER, PASSWORD),
           "docker://%s/private/demo:latest" % host)
    with pytest.raises(RuntimeError, match="(?i)unauthorized|incorrect"):
        skopeo("inspect", "--raw", "--tls-verify=false", "--creds", "%s:nope" % USER,
               "docker://%s/private/demo:latest" % host)
    reqs = issuer.requests
    assert any(r["user"] is None and "repository:public/demo:pull" in r["scopes"] and r["granted"]
               for r in reqs)
    assert any(r["user"] is None and "repository:private/demo:pull" in r["scopes"] and not r["granted"]
               for r in reqs)
    assert any(r["user"] == USER and "repository:private/demo:pull" in r["scopes"] and r["granted"]
               for r in reqs)
    assert any(r["basic"] and r["status"] == 401 for r in reqs)
    assert all(r["service"] == bearer.issuer.service for r in reqs)


def test_token_response_fields(bearer):
    url = "%s?service=%s&scope=repository:public/demo:pull" % (bearer.issuer.realm, bearer.issuer.service)
    body = json.loads(urllib.request.urlopen(url, timeout=10).read())
    assert body["token"] == body["access_token"] and body["expires_in"] > 0
    # The registry accepts it.
    req = urllib.request.Request("%s/v2/public/demo/manifests/latest" % bearer.registry.url,
                                 headers={"Authorization": "Bearer " + body["token"],
                                          "Accept": MT_OCI_INDEX})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def test_tls_certificate(tls_setup):
    ctx = ssl.create_default_context(cafile=tls_setup.certs["ca"])
    with socket.create_connection(("127.0.0.1", tls_setup.registry.port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname=tls_setup.hostname) as t:
            assert t.version()
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection(("127.0.0.1", tls_setup.registry.port), timeout=10) as s:
            ssl.create_default_context().wrap_socket(s, server_hostname=tls_setup.hostname)


def test_namespace_trick(tls_setup):
    """Inside the wrapper, mlfs-tls.test resolves to 127.0.0.1 and certs.d is ours."""
    port = tls_setup.registry.port
    cmd = unshare_wrap(tls_setup.hosts, tls_setup.certs_with_ca) + [
        "sh", "-c", "getent hosts %s; ls /etc/docker/certs.d" % tls_setup.hostname]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "127.0.0.1" in out.stdout and "%s:%d" % (tls_setup.hostname, port) in out.stdout
    # With the CA, curl trusts it by name (the way mlfs should).
    ca = "/etc/docker/certs.d/%s:%d/ca.crt" % (tls_setup.hostname, port)
    cmd = unshare_wrap(tls_setup.hosts, tls_setup.certs_with_ca) + [
        "curl", "-fsS", "--max-time", "10", "--cacert", ca,
        "https://%s:%d/v2/" % (tls_setup.hostname, port)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    # Outside, nothing changed.
    out = subprocess.run(["getent", "hosts", tls_setup.hostname], capture_output=True, text=True)
    assert out.returncode != 0


def test_registry_log_counts_blob_gets(demo):
    info = Images.by_platform(demo.index, "linux/s390x")
    d = info["layers"][-1]["digest"]
    before = demo.registry.blob_gets(d)
    demo.client.get_blob("demo", d)
    from helpers import wait_for
    assert wait_for(lambda: demo.registry.blob_gets(d) == before + 1)
