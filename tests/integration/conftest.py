"""Session fixtures: real registries (plain, htpasswd, bearer token, TLS) and
images built with umoci/skopeo by contrib/demo-image.sh, built once per
session.  Per test: a clean environment with its own MLFS_CACHE.

Run with Debian's pytest (`pytest-3 tests/integration`): the python3 first
on PATH may not see python3-jwt / python3-cryptography.
"""

import base64
import copy
import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

import cimage_verify
import helpers
from helpers import MLFS_BIN, REPO_ROOT, Result, base_env, run_mlfs  # noqa: F401 (re-exported)
from registry import (
    MT_DOCKER_LIST, MT_OCI_CONFIG, MT_OCI_INDEX, MT_OCI_LAYER_GZIP, MT_OCI_MANIFEST,
    Registry, RegistryClient, copy_image, make_tls_certs, sha256_digest,
)
from seekable_images import build_seekable_images
from token_issuer import TokenIssuer

USER, PASSWORD = "alice", "wonderland"
TLS_HOSTNAME = "mlfs-tls.test"
TOKEN_SERVICE = "mlfs-test-registry"
DEMO_SCRIPT = os.path.join(REPO_ROOT, "contrib", "demo-image.sh")
HOST_PLATFORM = helpers.host_platform()


def pytest_configure(config):
    for name, doc in (
        ("harness", "checks the test harness itself (registries, images, token issuer); no mlfs"),
        ("pull", "needs `mlfs pull`"),
        ("auth", "needs registry authentication (basic, credential files, helpers)"),
        ("bearer", "needs the bearer token flow"),
        ("tls", "needs HTTPS with certs.d CAs (runs in a mount namespace)"),
        ("errors", "needs mlfs's error reporting for a failure class"),
    ):
        config.addinivalue_line("markers", "%s: %s" % (name, doc))


# -- the binary -------------------------------------------------------------

@pytest.fixture(scope="session")
def mlfs_bin():
    if not (os.path.isfile(MLFS_BIN) and os.access(MLFS_BIN, os.X_OK)):
        pytest.fail("mlfs binary not found at %s (build it, or set MLFS_BIN)" % MLFS_BIN)
    return MLFS_BIN


@pytest.fixture(scope="session")
def cimage_verify_bin(session_dir):
    """containers/image's own policy check, sigstore included
    (cimage_verify.py), built once per run; missing Go or Debian's
    containers/image is a failure, not a skip."""
    try:
        return cimage_verify.build(os.path.join(session_dir, "cimage-verify"))
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture
def mlfs_env(tmp_path):
    """Fresh HOME, XDG_RUNTIME_DIR and MLFS_CACHE; no DOCKER_CONFIG/REGISTRY_AUTH_FILE."""
    return base_env(str(tmp_path))


@pytest.fixture
def mlfs(mlfs_bin, mlfs_env):
    """mlfs("inspect", ref, ..., env_extra={...}, wrap=[...]) -> Result(rc, stdout, stderr)."""
    def run(*args, env_extra=None, wrap=(), timeout=None):
        env = dict(mlfs_env)
        env.update(env_extra or {})
        return run_mlfs(*args, env=env, wrap=wrap, timeout=timeout, binary=mlfs_bin)
    return run


@pytest.fixture
def mounter(mlfs_bin, mlfs_env, tmp_path):
    """mounter.mount(ref, *options, foreground=, debug=, check=, ...) -> started Mount;
    every mount unmounted (forcibly if need be) at teardown."""
    from mounts import Mounter
    m = Mounter(tmp_path, mlfs_env, binary=mlfs_bin)
    yield m
    leftovers = m.cleanup_all()
    assert not leftovers, "could not unmount %r" % leftovers


@pytest.fixture
def proxy(demo):
    """A FaultProxy in front of the demo registry (test_mount has its own, a StallProxy)."""
    from faultproxy import FaultProxy
    p = FaultProxy(("127.0.0.1", demo.registry.port))
    yield p
    p.close()


# -- describing what is in a registry (the ground truth tests compare with) ---

def platform_string(p):
    s = "%s/%s" % (p["os"], p["architecture"])
    if p.get("variant"):
        s += "/" + p["variant"]
    return s


def describe_manifest(client, repo, ref):
    body, mtype, digest = client.get_manifest(repo, ref)
    m = json.loads(body)
    cfg_raw = client.get_blob(repo, m["config"]["digest"])
    return {
        "digest": digest,
        "media_type": mtype,
        "config_digest": m["config"]["digest"],
        "config": json.loads(cfg_raw),
        "layers": [{"digest": l["digest"], "media_type": l["mediaType"], "size": l["size"]}
                   for l in m["layers"]],
    }


def describe_image(client, repo, ref):
    """An index/list: its digest, type and each platform's manifest described."""
    body, mtype, digest = client.get_manifest(repo, ref)
    if mtype not in (MT_OCI_INDEX, MT_DOCKER_LIST):
        return {"digest": None, "media_type": None, "platforms": [], "manifest": describe_manifest(client, repo, ref)}
    idx = json.loads(body)
    platforms = []
    for d in idx["manifests"]:
        info = describe_manifest(client, repo, d["digest"])
        platforms.append((platform_string(d["platform"]), info))
    return {"digest": digest, "media_type": mtype, "platforms": platforms}


class Images:
    """What a registry holds, for the tests: `.ref(name)`, `.index`, `.list`..."""

    def __init__(self, registry, **kw):
        self.registry = registry
        self.host = registry.host
        self.__dict__.update(kw)

    def ref(self, name):
        return "%s/%s" % (self.host, name)

    @staticmethod
    def by_platform(desc, plat):
        for p, info in desc["platforms"]:
            if p == plat:
                return info
        raise KeyError(plat)


# -- registries ---------------------------------------------------------------

@pytest.fixture(scope="session")
def session_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mlfs-session"))


def _start(request, registry):
    registry.start()
    request.addfinalizer(registry.stop)
    return registry


@pytest.fixture(scope="session")
def plain_registry(request, session_dir):
    return _start(request, Registry(os.path.join(session_dir, "plain")))


@pytest.fixture(scope="session")
def demo(plain_registry, session_dir):
    """contrib/demo-image.sh pushed to the plain registry, described."""
    env = dict(os.environ, MLFS_DEMO_WORKDIR=os.path.join(session_dir, "demo-build"))
    r = subprocess.run([DEMO_SCRIPT, plain_registry.host], env=env, capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0:
        pytest.fail("contrib/demo-image.sh failed (%d):\n%s\n%s" % (r.returncode, r.stdout, r.stderr))
    client = RegistryClient(plain_registry.url)
    return Images(
        plain_registry,
        client=client,
        index=describe_image(client, "demo", "latest"),
        list=describe_image(client, "demo", "list"),
    )


@pytest.fixture(scope="session")
def single(demo):
    """Single-platform images (amd64): single:oci (OCI manifest), single:v2s2 (Docker v2s2)."""
    reg = demo.registry
    copy_image(reg, "demo:oci-linux-amd64", reg, "single:oci", all_platforms=False)
    copy_image(reg, "demo:v2s2-linux-amd64", reg, "single:v2s2", all_platforms=False)
    return Images(
        reg,
        oci=describe_manifest(demo.client, "single", "oci"),
        v2s2=describe_manifest(demo.client, "single", "v2s2"),
    )


@pytest.fixture(scope="session")
def digest_only(demo):
    """An amd64 image in repo `demo` reachable only by digest (no tag points at it)."""
    client = demo.client
    base = Images.by_platform(demo.index, "linux/amd64")
    body, _, _ = client.get_manifest("demo", base["digest"])
    manifest = json.loads(body)
    config = copy.deepcopy(base["config"])
    config["config"]["Env"] = config["config"].get("Env", []) + ["MLFS_DIGEST_ONLY=1"]
    raw = json.dumps(config).encode()
    manifest["config"]["digest"] = client.push_blob("demo", raw)
    manifest["config"]["size"] = len(raw)
    mbody = json.dumps(manifest).encode()
    digest = client.put_manifest("demo", sha256_digest(mbody), mbody, MT_OCI_MANIFEST)
    return describe_manifest(client, "demo", digest)


def _small_layer(tag):
    """A gzip tar layer unique to `tag` (so corrupting it hurts nobody else)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = ("mlfs test layer %s\n" % tag).encode() * 64
        info = tarfile.TarInfo("etc/mlfs-%s" % tag)
        info.size = len(data)
        info.mtime = 1700000000
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def _push_image(client, repo, tag, config_bytes, layer_bytes, annotations=None):
    cdigest = client.push_blob(repo, config_bytes)
    ldigest = client.push_blob(repo, layer_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": cdigest, "size": len(config_bytes)},
        "layers": [{"mediaType": MT_OCI_LAYER_GZIP, "digest": ldigest, "size": len(layer_bytes)}],
    }
    if annotations:
        manifest["annotations"] = annotations
    body = json.dumps(manifest, indent=2).encode()
    mdigest = client.put_manifest(repo, tag, body, MT_OCI_MANIFEST)
    return {"digest": mdigest, "config_digest": cdigest, "layer_digest": ldigest, "body": body}


def _config(tag, pad=0):
    layer_diff = "sha256:" + "0" * 64  # never checked by inspect
    cfg = {
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin", "MLFS_BROKEN=%s" % tag], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_diff]},
    }
    if pad:
        cfg["config"]["Labels"] = {"padding": "x" * pad}
    return json.dumps(cfg).encode()


@pytest.fixture(scope="session")
def broken(demo):
    """Images in the plain registry that must make mlfs fail, each in its own repo:

    broken/config-digest:v1   config blob corrupted in storage (same size)
    broken/layer-digest:v1    layer blob corrupted in storage (same size)
    broken/manifest-digest:v1 manifest stored with one byte changed (still valid JSON)
    broken/malformed:v1       config blob that is not JSON
    broken/huge:v1            config blob of 5 MiB (valid JSON)
    """
    reg, client = demo.registry, demo.client
    out = {}
    out["config_digest"] = _push_image(client, "broken/config-digest", "v1",
                                       _config("config-digest"), _small_layer("config-digest"))
    reg.corrupt_blob(out["config_digest"]["config_digest"])

    out["layer_digest"] = _push_image(client, "broken/layer-digest", "v1",
                                      _config("layer-digest"), _small_layer("layer-digest"))
    reg.corrupt_blob(out["layer_digest"]["layer_digest"])

    marker = b"manifest-corruption-target"
    out["manifest_digest"] = _push_image(client, "broken/manifest-digest", "v1",
                                         _config("manifest-digest"), _small_layer("manifest-digest"),
                                         annotations={"org.mlfs.test": marker.decode()})
    reg.corrupt_blob(out["manifest_digest"]["digest"], offset=out["manifest_digest"]["body"].index(marker))

    out["malformed"] = _push_image(client, "broken/malformed", "v1",
                                   b"this is { not JSON at all\n", _small_layer("malformed"))
    out["huge"] = _push_image(client, "broken/huge", "v1",
                              _config("huge", pad=5 * 1024 * 1024), _small_layer("huge"))
    return Images(reg, **out)


@pytest.fixture(scope="session")
def basic_registry(request, session_dir, demo):
    """htpasswd registry (alice/wonderland) holding private/demo:latest (the demo index)."""
    reg = _start(request, Registry(os.path.join(session_dir, "basic"), auth="htpasswd",
                                   users={USER: PASSWORD}))
    copy_image(demo.registry, "demo:latest", reg, "private/demo:latest",
               dest_creds="%s:%s" % (USER, PASSWORD))
    client = RegistryClient(reg.url, USER, PASSWORD)
    return Images(reg, client=client, index=describe_image(client, "private/demo", "latest"))


@pytest.fixture(scope="session")
def token_setup(request, session_dir, demo):
    issuer = TokenIssuer(service=TOKEN_SERVICE, users={USER: PASSWORD}).start()
    request.addfinalizer(issuer.stop)
    reg = _start(request, Registry(os.path.join(session_dir, "token"), auth="token",
                                   token_issuer=issuer))
    creds = "%s:%s" % (USER, PASSWORD)
    copy_image(demo.registry, "demo:latest", reg, "public/demo:latest", dest_creds=creds)
    copy_image(demo.registry, "demo:latest", reg, "private/demo:latest", dest_creds=creds)
    # Contents are the demo index's: same digests.
    return Images(reg, issuer=issuer, index=demo.index)


@pytest.fixture
def bearer(token_setup):
    """The token registry with its issuer's request log cleared for this test."""
    token_setup.issuer.clear()
    return token_setup


@pytest.fixture(scope="session")
def tls_setup(request, session_dir, demo):
    """An HTTPS registry whose certificate names mlfs-tls.test (signed by a test CA),
    holding tls/demo:latest; plus a hosts file and a certs.d tree for the namespace."""
    base = os.path.join(session_dir, "tls")
    certs = make_tls_certs(os.path.join(base, "pki"), [TLS_HOSTNAME])
    reg = _start(request, Registry(base, tls=certs))
    copy_image(demo.registry, "demo:latest", reg, "tls/demo:latest")

    hosts = os.path.join(base, "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost\n127.0.0.1 %s\n::1 localhost ip6-localhost\n" % TLS_HOSTNAME)

    with_ca = os.path.join(base, "certs.d-with-ca")
    os.makedirs(os.path.join(with_ca, "%s:%d" % (TLS_HOSTNAME, reg.port)))
    shutil.copy(certs["ca"], os.path.join(with_ca, "%s:%d" % (TLS_HOSTNAME, reg.port), "ca.crt"))
    empty = os.path.join(base, "certs.d-empty")
    os.makedirs(empty)

    # The bind mounts need a mountpoint: create what is missing, remove it after.
    created = []
    for d in ("/etc/docker", "/etc/docker/certs.d"):
        if not os.path.isdir(d):
            os.mkdir(d)
            created.append(d)

    def cleanup():
        for d in reversed(created):
            try:
                os.rmdir(d)
            except OSError:
                pass
    request.addfinalizer(cleanup)

    return Images(reg, hostname=TLS_HOSTNAME, certs=certs, demo_index=demo.index, hosts=hosts,
                  certs_with_ca=with_ca, certs_empty=empty,
                  tls_ref="%s:%d/tls/demo:latest" % (TLS_HOSTNAME, reg.port))


# -- seekable layers (eStargz, zstd:chunked) -------------------------------------

class PrivateRegistry(Registry):
    """A Registry a test may damage: `restart()` keeps its port (so refs and
    a mount's connection target stay valid), `corrupt_blob()` first gives
    the blob a file of its own (clones hardlink their blobs), so flipping a
    byte here never reaches the registry it was cloned from."""

    def restart(self):
        """Stop, then serve again on the same port (bounded; fails if it cannot)."""
        self.stop()
        rc = self._serve()
        if rc is not True:
            raise RuntimeError("registry did not come back on port %d (exit status %r); log: %s"
                               % (self.port, rc, self.log_path))
        return self

    def corrupt_blob(self, digest, offset=None):
        path = self.blob_data_path(digest)
        if os.stat(path).st_nlink > 1:
            private = path + ".private"
            shutil.copyfile(path, private)
            os.replace(private, path)
        super().corrupt_blob(digest, offset)


def clone_registry(src, workdir):
    """A started PrivateRegistry serving what `src` holds: the repositories
    (tags, manifest links) copied, the blob files hardlinked."""
    reg = PrivateRegistry(workdir)
    v2 = os.path.join("docker", "registry", "v2")
    shutil.copytree(os.path.join(src.storage, v2, "repositories"),
                    os.path.join(reg.storage, v2, "repositories"), symlinks=True)
    shutil.copytree(os.path.join(src.storage, v2, "blobs"), os.path.join(reg.storage, v2, "blobs"),
                    copy_function=os.link)
    return reg.start()


@pytest.fixture(scope="session")
def seekable(request, session_dir):
    """seekable_images.build_seekable_images() in a registry of its own (so
    no other test's registry is touched), built once per session.  The
    dict it returns (see its docstring), plus: registry, client, blobs (an
    empty dict tests may cache blobs in), reference_dir (where
    reference_rootfs() unpacks) and ref(name, tag="latest")."""
    reg = _start(request, Registry(os.path.join(session_dir, "seekable")))
    images = build_seekable_images(reg, os.path.join(session_dir, "seekable-build"))
    images["registry"] = reg
    images["client"] = RegistryClient(reg.url)
    images["blobs"] = {}   # (repo, digest) -> bytes, for tests that cache blobs they fetched
    images["reference_dir"] = os.path.join(session_dir, "seekable-ref")
    images["ref"] = lambda name, tag="latest": "%s/%s:%s" % (reg.host, name, tag)
    return images


@pytest.fixture
def seekable_clone(request, seekable, tmp_path):
    """clone() -> a PrivateRegistry with the seekable images, for this test
    alone (to corrupt, stop and restart); stopped at teardown."""
    made = []

    def clone():
        reg = clone_registry(seekable["registry"], str(tmp_path / ("registry-%d" % len(made))))
        made.append(reg)
        request.addfinalizer(reg.stop)
        return reg
    return clone


# -- credential helpers -------------------------------------------------------

CRED_HELPER = """#!/bin/sh
# docker-credential-mlfstest: test credential helper; logs what it is asked.
read -r server
echo "$1 $server" >> "%(log)s"
if [ "$1" = get ]; then
  printf '{"ServerURL":"%%s","Username":"%(user)s","Secret":"%(password)s"}\\n' "$server"
  exit 0
fi
echo "unsupported" >&2
exit 1
"""


@pytest.fixture
def cred_helper(tmp_path):
    """A docker-credential-mlfstest on a PATH prefix; returns (bin_dir, log_path)."""
    bindir = tmp_path / "helper-bin"
    bindir.mkdir()
    log = tmp_path / "helper.log"
    script = bindir / "docker-credential-mlfstest"
    script.write_text(CRED_HELPER % {"log": log, "user": USER, "password": PASSWORD})
    script.chmod(0o755)
    return str(bindir), str(log)


def auth_json(host, user=USER, password=PASSWORD):
    token = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
    return {"auths": {host: {"auth": token}}}
