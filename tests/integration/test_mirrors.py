"""Mirrors and pull-through caches (issue 13), against the real thing:
Debian's docker-registry in proxy mode (`proxy: remoteurl:`, with the
upstream's credentials in its own config) as the mirror, in front of an
upstream docker-registry that wants credentials.  The upstream uses bearer
tokens, not htpasswd: distribution 2.8's proxy keys the credentials of its
config by the realms of the upstream's challenges, so it can answer a
Bearer realm (a URL) but never a Basic one ("unauthorized: authentication
required" on every pull).  mlfs reaches the mirror
through a FaultProxy, which records what mlfs sent it and can cut, fail or
die; the upstream's access log says what it served.

The configuration lives under a throwaway $MLFS_CONFIG_ROOT (its
etc/containers/registries.conf), never in the machine's /etc.
"""

import base64
import hashlib
import json
import os
import subprocess
import time

import pytest

from conftest import USER, PASSWORD, Images, PrivateRegistry
from faultproxy import FaultProxy
from helpers import MLFS_BIN, assert_ok, describe, base_env, cache_blob_path, wait_for
from registry import RegistryClient, copy_image, free_port
from token_issuer import TokenIssuer
from test_export import assert_same_tree, tree_of_rootfs, tree_of_tar, umoci_rootfs

REPO = "lib/demo"
PLATFORM = "linux/arm64"


@pytest.fixture(scope="module")
def fleet(request, demo, tmp_path_factory):
    """upstream: a registry with bearer-token auth holding lib/demo:latest (the demo index);
    mirror: a pull-through cache of it, with the credentials in its config."""
    base = tmp_path_factory.mktemp("mirrors")
    issuer = TokenIssuer(service="mlfs-mirror-upstream", users={USER: PASSWORD}).start()
    request.addfinalizer(issuer.stop)
    upstream = PrivateRegistry(str(base / "upstream"), auth="token", token_issuer=issuer)
    upstream.start()
    request.addfinalizer(upstream.stop)
    copy_image(demo.registry, "demo:latest", upstream, REPO + ":latest", dest_creds="%s:%s" % (USER, PASSWORD))
    # What a Docker Hub mirror would hold (docker.io/library/demo), for daemon.json.
    copy_image(demo.registry, "demo:latest", upstream, "library/demo:latest", dest_creds="%s:%s" % (USER, PASSWORD))
    # ... and a Harbor proxy-cache project "hub-proxy" would (hosts.toml override_path).
    copy_image(demo.registry, "demo:latest", upstream, "hub-proxy/library/demo:latest",
               dest_creds="%s:%s" % (USER, PASSWORD))
    mirror = PrivateRegistry(str(base / "mirror"), extra_config=[
        "proxy:",
        "  remoteurl: http://%s" % upstream.host,
        "  username: %s" % USER,
        "  password: %s" % PASSWORD,
    ])
    mirror.start()
    request.addfinalizer(mirror.stop)
    return Images(upstream, upstream=upstream, mirror=mirror, arm=Images.by_platform(demo.index, PLATFORM + "/v8"),
                  demo=demo, issuer=issuer)


@pytest.fixture(scope="module")
def want_tree(fleet, tmp_path_factory):
    """The arm64 image's rootfs as umoci unpacks it (from the demo registry: same digests)."""
    tmp = tmp_path_factory.mktemp("mirrors-umoci")
    return tree_of_rootfs(umoci_rootfs(tmp, fleet.demo.registry, "demo:oci-linux-arm64-v8"))


@pytest.fixture
def front(fleet):
    """A FaultProxy in front of the mirror: what mlfs talks to as "the mirror"."""
    p = FaultProxy(("127.0.0.1", fleet.mirror.port))
    yield p
    try:
        p.close()
    except Exception:
        pass


def conf(tmp_path, mirrors, upstream, extra=""):
    """A configuration root whose registries.conf sends upstream's references
    through `mirrors` [(location, pull-from-mirror or None)]; and an auth
    file with credentials for the upstream only.  The env to run mlfs with."""
    root = tmp_path / "root"
    (root / "etc" / "containers").mkdir(parents=True, exist_ok=True)
    text = '[[registry]]\nprefix = "%s"\nlocation = "%s"\n%s' % (upstream.host, upstream.host, extra)
    for loc, pull in mirrors:
        text += '[[registry.mirror]]\nlocation = "%s"\n' % loc
        if pull:
            text += 'pull-from-mirror = "%s"\n' % pull
    (root / "etc" / "containers" / "registries.conf").write_text(text)
    auth = tmp_path / "auth.json"
    token = base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode()).decode()
    auth.write_text(json.dumps({"auths": {upstream.host: {"auth": token}}}))
    return {"MLFS_CONFIG_ROOT": str(root), "REGISTRY_AUTH_FILE": str(auth)}


def export(mlfs, tmp_path, ref, env, name, *args):
    out = str(tmp_path / name)
    r = mlfs("export", ref, "-o", out, "--platform", PLATFORM, *args, env_extra=env)
    return r, out


def read_tree(path):
    with open(path, "rb") as f:
        return tree_of_tar(f.read())


def biggest_layer(fleet):
    return max(fleet.arm["layers"], key=lambda l: l["size"])


def test_fleet_through_the_mirror(mlfs, fleet, front, want_tree, tmp_path):
    """Three exports on three caches through the pull-through cache: each tree
    is umoci's, the upstream's blob traffic does not grow with the number of
    machines, the mirror's answers were used, and the mirror never saw the
    upstream's credentials.

    "Once" is per miss of the cache, and distribution 2.8's proxy pays a
    miss twice: it GETs the blob once to store it and once to stream it to
    the client (proxyblobstore.go: storeLocal in a goroutine beside
    copyContent).  So: at most 2 upstream GETs per blob for the first
    export, 0 for the second and third."""
    env = conf(tmp_path, [(front.host, None)], fleet.upstream)
    ref = "%s/%s:latest" % (fleet.upstream.host, REPO)
    digests = [l["digest"] for l in fleet.arm["layers"]] + [fleet.arm["config_digest"]]

    def upstream_gets():
        return {d: fleet.upstream.blob_gets(d, status=200) for d in digests}
    counts = [upstream_gets()]
    for i in range(3):
        e = dict(env, MLFS_CACHE=str(tmp_path / ("cache-%d" % i)))
        r, out = export(mlfs, tmp_path, ref, e, "out-%d.tar" % i)
        assert_ok(r, allow_warnings=True)
        assert_same_tree(read_tree(out), want_tree)
        counts.append(upstream_gets())
    for d in digests:
        first = counts[1][d] - counts[0][d]
        later = counts[3][d] - counts[1][d]
        assert first <= 2 and later == 0, \
            "upstream GETs of %s: %d for the first export, %d for the next two" % (d, first, later)
    for d in digests:
        assert len(front.requests(r"/blobs/" + d)) >= 3, "the mirror was not asked for %s by each export" % d
    assert not [q for q in front.seen if "authorization" in q["headers"]], \
        "credentials were sent to the mirror, which did not ask for any"


def test_mirror_killed_mid_layer(mlfs, fleet, front, want_tree, tmp_path):
    """The mirror cuts the biggest layer halfway, then is gone: the export
    still completes, the upstream continuing that blob with Range."""
    env = conf(tmp_path, [(front.host, None)], fleet.upstream)
    big = biggest_layer(fleet)
    pattern = "/blobs/" + big["digest"]
    front.cut(pattern, big["size"] // 2)
    front.fail(pattern, 503, times=100, after=1)  # whatever reaches it before it is closed
    resumed_before = fleet.upstream.blob_gets(big["digest"], status=206)
    out_tar = tmp_path / "out.tar"
    e = dict(base_env(str(tmp_path / "envdir")), **env)
    p = subprocess.Popen([MLFS_BIN, "export", "%s/%s:latest" % (fleet.upstream.host, REPO), "-o", str(out_tar),
                          "--platform", PLATFORM], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert wait_for(lambda: front.requests(pattern), timeout=30), "the layer never reached the mirror"
    front.close()  # the mirror dies
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err.decode()
    assert_same_tree(read_tree(str(out_tar)), want_tree)
    assert fleet.upstream.blob_gets(big["digest"], status=206) > resumed_before, \
        "the upstream was not asked for the rest with Range:\n" + err.decode()


def _warm_mirror(fleet, digest):
    """Makes sure the pull-through cache holds the blob (fetched once through it)."""
    RegistryClient(fleet.mirror.url).get_blob(REPO, digest)
    assert os.path.exists(fleet.mirror.blob_data_path(digest))


def test_tampered_blob_on_the_mirror(mlfs, fleet, front, want_tree, tmp_path):
    """A mirror serving a corrupted layer: the upstream is used, the tree is
    right; with the upstream down too, a clear error and nothing in the cache."""
    env = conf(tmp_path, [(front.host, None)], fleet.upstream)
    big = biggest_layer(fleet)
    _warm_mirror(fleet, big["digest"])
    fleet.mirror.corrupt_blob(big["digest"])
    try:
        ref = "%s/%s:latest" % (fleet.upstream.host, REPO)
        r, out = export(mlfs, tmp_path, ref, dict(env, MLFS_CACHE=str(tmp_path / "c1")), "good.tar")
        assert_ok(r, allow_warnings=True)
        assert "a mirror served bytes that do not match" in r.stderr, r.stderr
        assert_same_tree(read_tree(out), want_tree)

        # Upstream down as well: the mirror's bytes are never accepted.
        e2 = dict(env, MLFS_CACHE=str(tmp_path / "c2"))
        pinned = "%s/%s@%s" % (fleet.upstream.host, REPO, fleet.arm["digest"])
        # The manifest and config into this cache (not the layer) while the upstream is up.
        r = mlfs("inspect", pinned, "--platform", PLATFORM, env_extra=e2)
        assert_ok(r, allow_warnings=True)
        fleet.upstream.stop()
        try:
            r, out = export(mlfs, tmp_path, pinned, e2, "bad.tar")
        finally:
            fleet.upstream.restart()
        assert r.rc != 0
        errors = [l for l in r.stderr.splitlines() if l.startswith("mlfs: error:")]
        assert len(errors) == 1, r.stderr
        assert not os.path.exists(cache_blob_path(e2, big["digest"])), "a wrong blob was cached"
    finally:
        # Put the mirror's copy back (the test may run again in this session).
        fleet.mirror.corrupt_blob(big["digest"])


def test_digest_only_mirror(mlfs, fleet, front, tmp_path):
    """pull-from-mirror = "digest-only": the tag is resolved upstream, never
    asked of the mirror; what is asked by digest goes to the mirror."""
    env = conf(tmp_path, [(front.host, "digest-only")], fleet.upstream)
    r = mlfs("inspect", "%s/%s:latest" % (fleet.upstream.host, REPO), "--platform", PLATFORM, "--debug=fetch",
             env_extra=env)
    assert r.rc == 0, describe(r)
    assert not front.requests(r"/manifests/latest"), "the tag was asked of a digest-only mirror"
    assert front.requests(r"/manifests/sha256:"), "nothing was asked of the mirror by digest"
    assert 'skipping mirror %s: pull-from-mirror = "digest-only"' % front.host in r.stderr, r.stderr
    assert "trying upstream %s/%s" % (fleet.upstream.host, REPO) in r.stderr


def test_blocked(mlfs, fleet, front, tmp_path):
    env = conf(tmp_path, [(front.host, None)], fleet.upstream, extra="blocked = true\n")
    before = len(fleet.upstream.requests())
    r = mlfs("inspect", "%s/%s:latest" % (fleet.upstream.host, REPO), env_extra=env)
    assert r.rc != 0
    lines = [l for l in r.stderr.splitlines() if l.startswith("mlfs: error:")]
    assert len(lines) == 1 and "is blocked by" in lines[0] and "registries.conf" in lines[0], r.stderr
    assert not front.seen and len(fleet.upstream.requests()) == before, "a blocked registry was contacted"


def test_registries_conf_option_and_errors(mlfs, fleet, front, tmp_path):
    """--registries-conf FILE is read instead of the configuration root's; a
    syntax error names the file and line."""
    env = conf(tmp_path, [], fleet.upstream)
    f = tmp_path / "mine.conf"
    f.write_text('[[registry]]\nlocation = "%s"\n[[registry.mirror]]\nlocation = "%s"\n'
                 % (fleet.upstream.host, front.host))
    r = mlfs("inspect", "%s/%s:latest" % (fleet.upstream.host, REPO), "--registries-conf", str(f), env_extra=env)
    assert_ok(r, allow_warnings=True)
    assert front.requests(r"/manifests/"), "the mirror of --registries-conf was not used"
    f.write_text('[[registry]]\nlocation = "%s"\nblocked = maybe\n' % fleet.upstream.host)
    r = mlfs("inspect", "%s/%s:latest" % (fleet.upstream.host, REPO), "--registries-conf", str(f), env_extra=env)
    assert r.rc != 0
    assert "mlfs: error: %s:3: invalid value starting with 'm'" % f in r.stderr, r.stderr


def test_dead_mirror_and_hosts_toml(mlfs, fleet, tmp_path):
    """containerd's hosts.toml (no registries.conf entry): a mirror nobody
    listens on is skipped, and the upstream answers."""
    root = tmp_path / "root"
    d = root / "etc" / "containerd" / "certs.d" / fleet.upstream.host
    d.mkdir(parents=True)
    dead = "127.0.0.1:%d" % free_port()
    (d / "hosts.toml").write_text('server = "http://%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n'
                                  % (fleet.upstream.host, dead))
    env = conf(tmp_path, [], fleet.upstream)
    os.remove(os.path.join(env["MLFS_CONFIG_ROOT"], "etc", "containers", "registries.conf"))
    t0 = time.monotonic()
    r = mlfs("--debug=fetch", "inspect", "%s/%s:latest" % (fleet.upstream.host, REPO), "--platform", PLATFORM,
             env_extra=env)
    assert r.rc == 0, describe(r)
    assert "endpoints from %s" % (d / "hosts.toml") in r.stderr, r.stderr
    assert "mirror %s failed, trying the next endpoint" % dead in r.stderr, r.stderr
    assert "skipping mirror %s: it could not be reached a moment ago" % dead in r.stderr, r.stderr
    assert time.monotonic() - t0 < 20


def test_hosts_toml_headers(mlfs, fleet, front, want_tree, tmp_path):
    """A host's [host."URL".header] goes with every request to that host,
    each value of a list as its own header (http.c sends them to that
    origin only, never to a token server or a redirect's target)."""
    root = tmp_path / "root"
    d = root / "etc" / "containerd" / "certs.d" / fleet.upstream.host
    d.mkdir(parents=True)
    (d / "hosts.toml").write_text('server = "http://%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n'
                                  '  [host."http://%s".header]\n    x-mirror-key = "k1"\n    x-team = ["a", "b"]\n'
                                  % (fleet.upstream.host, front.host, front.host))
    env = conf(tmp_path, [], fleet.upstream)
    os.remove(os.path.join(env["MLFS_CONFIG_ROOT"], "etc", "containers", "registries.conf"))
    r, out = export(mlfs, tmp_path, "%s/%s:latest" % (fleet.upstream.host, REPO), env, "h.tar")
    assert r.rc == 0, describe(r)
    assert read_tree(out) == want_tree
    asked = front.requests("^/v2/")
    assert asked and all(q["headers"].get("x-mirror-key") == "k1" for q in asked), asked
    assert all(q["headers"].get("x-team") == "a, b" for q in asked), [q["headers"] for q in asked]


def test_location_rewrite_as_skopeo_reads_it(mlfs, fleet, front, tmp_path):
    """A prefix of a name that exists nowhere, rewritten by `location` to the
    upstream, with the mirror rewritten the same way: mlfs and skopeo (which
    reads the same file) resolve the reference to the same index, and mlfs
    got it through the mirror."""
    env = conf(tmp_path, [], fleet.upstream)
    f = tmp_path / "rewrite.conf"
    f.write_text('[[registry]]\nprefix = "mlfs-alias.test/apps"\nlocation = "%s/lib"\ninsecure = true\n'
                 '[[registry.mirror]]\nlocation = "%s/lib"\ninsecure = true\n' % (fleet.upstream.host, front.host))
    ref = "mlfs-alias.test/apps/demo:latest"
    r = mlfs("inspect", ref, "--json", "--registries-conf", str(f), "--platform", PLATFORM, env_extra=env)
    assert r.rc == 0, describe(r)
    got = json.loads(r.stdout)
    assert front.requests(r"^/v2/lib/demo/manifests/latest$"), "the rewritten mirror was not asked"
    # skopeo runs with our HOME (no drop-ins there); the machine's
    # registries.conf.d has no entry for this prefix.
    sk = subprocess.run(["skopeo", "--insecure-policy", "--registries-conf", str(f), "inspect", "--raw",
                         "--authfile", env["REGISTRY_AUTH_FILE"], "docker://" + ref],
                        capture_output=True, timeout=120, env=dict(os.environ, HOME=str(tmp_path)))
    assert sk.returncode == 0, sk.stderr.decode()
    assert got["index_digest"] == "sha256:" + hashlib.sha256(sk.stdout).hexdigest() == fleet.demo.index["digest"]


def test_seekable_chunk_tampered_on_the_mirror(mounter, mlfs_env, seekable, seekable_clone, tmp_path):
    """A mount of an eStargz image whose mirror (a copy of the upstream) has
    one chunk of the big file wrong: the read returns the right bytes (the
    chunk read again from the upstream), and only the verified chunk is
    kept."""
    from test_seekable import BIG, layers_of, present_map, read_one, reference_bytes
    upstream = seekable["registry"]
    mirror = seekable_clone()
    lower, _ = layers_of(seekable, "estargz")
    bad = lower.files[BIG][1]
    mirror.corrupt_blob(lower.digest, bad["start"] + (bad["end"] - bad["start"]) // 2)
    root = tmp_path / "root" / "etc" / "containers"
    root.mkdir(parents=True)
    (root / "registries.conf").write_text('[[registry]]\nlocation = "%s"\n[[registry.mirror]]\nlocation = "%s"\n'
                                          % (upstream.host, mirror.host))
    m = mounter.mount(upstream.host + "/estargz:latest", "timeout=20", foreground=True,
                      env_extra={"MLFS_CONFIG_ROOT": str(tmp_path / "root")})
    data, err = read_one(m.path(BIG))
    assert err is None and data == reference_bytes(seekable, BIG), (err, m.stderr())
    assert present_map(mlfs_env, lower)[bad["index"]] == 1
    assert "did not verify: reading them again from the upstream" in m.stderr(), m.stderr()
    assert mirror.blob_gets(lower.digest) > 0, "the mirror was not used"


@pytest.mark.parametrize("how", ["daemon.json", "hosts.toml", "override_path"])
def test_docker_hub_mirror(mlfs, fleet, tmp_path, how):
    """docker.io references through a Docker Hub mirror (this machine has no
    route to Docker Hub: the mirror must answer everything), from Docker's
    daemon.json or containerd's certs.d/docker.io/hosts.toml; with
    override_path, a Harbor-style proxy project whose API root is
    /v2/hub-proxy.  The mirror wants credentials of its own: those for its
    host are used, Docker Hub's never leave for it."""
    root = tmp_path / "root"
    if how == "daemon.json":
        (root / "etc" / "docker").mkdir(parents=True)
        (root / "etc" / "docker" / "daemon.json").write_text(json.dumps(
            {"registry-mirrors": ["http://%s" % fleet.upstream.host], "log-level": "warn"}))
    else:
        d = root / "etc" / "containerd" / "certs.d" / "docker.io"
        d.mkdir(parents=True)
        where = fleet.upstream.host + ("/v2/hub-proxy" if how == "override_path" else "")
        (d / "hosts.toml").write_text('server = "https://registry-1.docker.io"\n\n[host."http://%s"]\n'
                                      '  capabilities = ["pull", "resolve"]\n%s'
                                      % (where, "  override_path = true\n" if how == "override_path" else ""))
    before = len(fleet.upstream.requests())
    auth = tmp_path / "auth.json"
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    auth.write_text(json.dumps({"auths": {
        fleet.upstream.host: {"auth": b64("%s:%s" % (USER, PASSWORD))},
        "https://index.docker.io/v1/": {"auth": b64("hubuser:hubsecret")},
    }}))
    fleet.issuer.clear()
    r = mlfs("inspect", "docker.io/library/demo:latest", "--json", "--platform", PLATFORM, "--debug=fetch",
             env_extra={"MLFS_CONFIG_ROOT": str(root), "REGISTRY_AUTH_FILE": str(auth)})
    assert r.rc == 0, describe(r)
    assert json.loads(r.stdout)["index_digest"] == fleet.demo.index["digest"]
    assert "endpoints from %s" % root in r.stderr, r.stderr
    assert "trying upstream registry-1.docker.io" not in r.stderr, "Docker Hub was asked: " + r.stderr
    users = {q["user"] for q in fleet.issuer.requests}
    assert USER in users and "hubuser" not in users, users
    if how == "override_path":
        paths = [p for m, p, st in fleet.upstream.requests()[before:] if "/manifests/" in p]
        assert paths and all(p.startswith("/v2/hub-proxy/library/demo/manifests/") for p in paths), paths


def test_mount_with_registries_conf_option(mounter, fleet, front, tmp_path, want_tree):
    """-o registries-conf=FILE: a mount reads through the mirror it names."""
    env = conf(tmp_path, [], fleet.upstream)
    f = tmp_path / "mount.conf"
    f.write_text('[[registry]]\nlocation = "%s"\n[[registry.mirror]]\nlocation = "%s"\n'
                 % (fleet.upstream.host, front.host))
    m = mounter.mount("%s/%s:latest" % (fleet.upstream.host, REPO), "platform=" + PLATFORM,
                      "registries-conf=%s" % f, env_extra={"REGISTRY_AUTH_FILE": env["REGISTRY_AUTH_FILE"]})
    with open(m.path("etc/mlfs-platform"), "rb") as fh:
        data = fh.read()
    assert want_tree["etc/mlfs-platform"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert front.requests(r"/blobs/sha256:"), "the layers did not come through the mirror"
