"""Short names (issue 13): a reference without a registry resolved the
containers way — [aliases], unqualified-search-registries, short-name-mode
— from a registries.conf under a throwaway $MLFS_CONFIG_ROOT, against two
Debian docker-registry instances used as search registries; Docker's rule
(docker.io) when no registries.conf exists at all.

skopeo 1.9.3 does not resolve short names (its docker:// transport always
completes them with docker.io, whatever registries.conf says), so it is the
reference only for what the name resolves to: skopeo reading the resolved,
fully-qualified reference must see the same index mlfs mounted.
"""

import hashlib
import json
import os
import subprocess

import pytest

from conftest import PrivateRegistry
from helpers import describe
from registry import copy_image

PLATFORM = "linux/arm64"


@pytest.fixture(scope="module")
def two(request, demo, tmp_path_factory):
    """first: a search registry without the image; second: one holding it as team/demo:latest."""
    base = tmp_path_factory.mktemp("shortnames")
    regs = []
    for name in ("first", "second"):
        r = PrivateRegistry(str(base / name))
        r.start()
        request.addfinalizer(r.stop)
        regs.append(r)
    copy_image(demo.registry, "demo:latest", regs[1], "team/demo:latest")
    return regs[0], regs[1], demo


def conf_root(tmp_path, text, dropins=()):
    root = tmp_path / "root"
    d = root / "etc" / "containers"
    d.mkdir(parents=True, exist_ok=True)
    if text is not None:
        (d / "registries.conf").write_text(text)
    for name, body in dropins:
        (d / "registries.conf.d").mkdir(exist_ok=True)
        (d / "registries.conf.d" / name).write_text(body)
    return root


def inspect(mlfs, ref, root, *args):
    return mlfs("--debug=fetch", "inspect", ref, "--json", "--platform", PLATFORM, *args,
                env_extra={"MLFS_CONFIG_ROOT": str(root)})


def error_lines(r):
    return [l for l in r.stderr.splitlines() if l.startswith("mlfs: error:")]


def manifest_gets(reg):
    return [p for m, p, st in reg.requests() if "/manifests/" in p]


def skopeo_index_digest(ref, tmp_path):
    sk = subprocess.run(["skopeo", "--insecure-policy", "inspect", "--raw", "--tls-verify=false", "docker://" + ref],
                        capture_output=True, timeout=120, env=dict(os.environ, HOME=str(tmp_path)))
    assert sk.returncode == 0, sk.stderr.decode()
    return "sha256:" + hashlib.sha256(sk.stdout).hexdigest()


def test_alias(mlfs, two, tmp_path):
    """An alias in a drop-in names the second registry's repository: the tag
    typed is put back on it, and the search list is not consulted."""
    first, second, demo = two
    root = conf_root(tmp_path, 'unqualified-search-registries = ["%s"]\n' % first.host,
                     [("shortnames.conf", '[aliases]\n"demo" = "%s/team/demo"\n' % second.host)])
    before = len(manifest_gets(first))
    r = inspect(mlfs, "demo:latest", root)
    assert r.rc == 0, describe(r)
    assert json.loads(r.stdout)["index_digest"] == demo.index["digest"]
    assert "short name demo:latest: alias %s/team/demo:latest (%s:2)" % (
        second.host, root / "etc/containers/registries.conf.d/shortnames.conf") in r.stderr, r.stderr
    assert len(manifest_gets(first)) == before, "a search registry was asked despite the alias"
    assert json.loads(r.stdout)["index_digest"] == skopeo_index_digest("%s/team/demo:latest" % second.host, tmp_path)


def test_one_search_registry(mlfs, two, tmp_path):
    first, second, demo = two
    root = conf_root(tmp_path, 'unqualified-search-registries = ["%s"]\n' % second.host)
    r = inspect(mlfs, "team/demo", root)
    assert r.rc == 0, describe(r)
    assert json.loads(r.stdout)["index_digest"] == demo.index["digest"]
    assert "unqualified-search registry 1 of 1" in r.stderr and "%s/team/demo" % second.host in r.stderr, r.stderr
    # The cache knows it by its resolved name, and `cache rm` finds it by the short one.
    env = {"MLFS_CONFIG_ROOT": str(root)}
    r = mlfs("cache", "rm", "team/demo", env_extra=env)
    assert r.rc == 0, describe(r)
    r = mlfs("cache", "rm", "team/demo", env_extra=env)
    assert r.rc != 0 and "%s/team/demo:latest is not in the cache" % second.host in r.stderr, describe(r)


def test_two_search_registries_permissive(mlfs, two, tmp_path):
    """permissive (and the default, and a version-1 file): the first, which
    lacks the image, is asked once; the second has it.  The canonical name (what the cache and
    the policy see) is the second's."""
    first, second, demo = two
    # The last: version 1's [registries.search], which containers/image converts to the same list.
    for text in ('unqualified-search-registries = ["%s", "%s"]\nshort-name-mode = "permissive"\n',
                 'unqualified-search-registries = ["%s", "%s"]\n',
                 '[registries.search]\nregistries = ["%s", "%s"]\n'):
        root = conf_root(tmp_path, text % (first.host, second.host))
        before = len(manifest_gets(first))
        r = inspect(mlfs, "team/demo:latest", root)
        assert r.rc == 0, describe(r)
        got = json.loads(r.stdout)
        assert got["index_digest"] == demo.index["digest"]
        assert "%s/team/demo:latest" % second.host in json.dumps(got), got
        assert len(manifest_gets(first)) - before == 1, manifest_gets(first)[before:]
        assert "short name team/demo:latest: not at %s/team/demo:latest" % first.host in r.stderr, r.stderr
    # In none of them: one line naming the search list, bounded to one request each.
    r = inspect(mlfs, "team/nothing", root)
    assert r.rc != 0
    lines = error_lines(r)
    assert len(lines) == 1 and "none of the 2 unqualified-search registries of %s has it" % (
        root / "etc/containers/registries.conf") in lines[0], r.stderr


def test_two_search_registries_enforcing(mlfs, two, tmp_path):
    first, second, demo = two
    root = conf_root(tmp_path, 'unqualified-search-registries = ["%s", "%s"]\nshort-name-mode = "enforcing"\n'
                     % (first.host, second.host))
    before = len(manifest_gets(first)) + len(manifest_gets(second))
    r = inspect(mlfs, "team/demo", root)
    assert r.rc != 0
    lines = error_lines(r)
    assert len(lines) == 1, r.stderr
    assert 'short name "team/demo" is ambiguous' in lines[0]
    assert "%s/team/demo, %s/team/demo" % (first.host, second.host) in lines[0]
    assert "use a fully-qualified reference or add an [aliases] entry" in lines[0]
    assert len(manifest_gets(first)) + len(manifest_gets(second)) == before, "a registry was asked"


def test_no_registries_conf_is_docker_hub(mlfs, tmp_path):
    """No registries.conf nor drop-in: Docker's rule.  This machine has no
    route to Docker Hub, so the request fails, naming it; skopeo (which always
    uses that rule) asks the same host."""
    root = conf_root(tmp_path, None)
    r = inspect(mlfs, "myorg/app:1", root)
    assert r.rc != 0
    assert "short name myorg/app:1: no registries.conf: Docker's rule (docker.io)" in r.stderr, r.stderr
    assert "docker.io/myorg/app:1" in r.stderr and "registry-1.docker.io" in error_lines(r)[0], r.stderr
    sk = subprocess.run(["skopeo", "--insecure-policy", "--registries-conf", "/dev/null", "inspect", "--raw",
                         "docker://myorg/app:1"], capture_output=True, timeout=120,
                        env=dict(os.environ, HOME=str(tmp_path)))
    assert sk.returncode != 0 and b"registry-1.docker.io" in sk.stderr, sk.stderr


def test_registries_conf_without_search_list(mlfs, tmp_path):
    root = conf_root(tmp_path, '[[registry]]\nlocation = "quay.io"\n')
    r = inspect(mlfs, "busybox", root)
    assert r.rc != 0
    lines = error_lines(r)
    assert len(lines) == 1 and ('short name "busybox" did not resolve to an alias and no unqualified-search '
                                'registries are defined in %s' % (root / "etc/containers/registries.conf")) in lines[0], \
        r.stderr
    assert "registry-1.docker.io" not in r.stderr


def test_alias_syntax_error(mlfs, tmp_path):
    root = conf_root(tmp_path, '[aliases]\n"demo" = "localhost:5000/team/demo"\n',
                     [("50-bad.conf", '# mine\n[aliases]\n"demo" = "team/demo"\n')])
    r = inspect(mlfs, "demo", root)
    assert r.rc != 0
    lines = error_lines(r)
    assert len(lines) == 1 and lines[0].startswith(
        'mlfs: error: %s:3: invalid alias "demo" = "team/demo": the value must be a fully-qualified repository'
        % (root / "etc/containers/registries.conf.d/50-bad.conf")), r.stderr


def test_search_stops_at_a_failure_other_than_not_found(mlfs, two, tmp_path):
    """A first search registry nobody listens on is not "not found": the
    search stops there (a squatter could otherwise win while it is down),
    naming it; the second is not asked."""
    from registry import free_port
    first, second, demo = two
    dead = "127.0.0.1:%d" % free_port()
    root = conf_root(tmp_path, 'unqualified-search-registries = ["%s", "%s"]\n' % (dead, second.host))
    before = len(manifest_gets(second))
    r = inspect(mlfs, "team/demo", root)
    assert r.rc != 0
    lines = error_lines(r)
    assert len(lines) == 1 and ("short name team/demo: %s/team/demo (unqualified-search registry 1 of 2; the rest "
                                "were not tried)" % dead) in lines[0], r.stderr
    assert len(manifest_gets(second)) == before
