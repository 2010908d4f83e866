"""`mlfs pull`: the chosen manifest's layers land, indexed, in the cache;
with --keep-blobs their blobs also stay, verified, in
$MLFS_CACHE/blobs/sha256/<hex>; a second pull downloads nothing again."""

import json
import os
import time

import pytest

from conftest import HOST_PLATFORM, Images, auth_json
from helpers import assert_ok, cache_blob_path, sha256_file, wait_for

pytestmark = pytest.mark.pull


def assert_cached(env, layers):
    for l in layers:
        path = cache_blob_path(env, l["digest"])
        assert os.path.isfile(path), "%s not in the cache" % l["digest"]
        assert os.path.getsize(path) == l["size"]
        assert sha256_file(path) == l["digest"]


def gets(registry, layers):
    return {l["digest"]: registry.blob_gets(l["digest"], status=200) for l in layers}


def test_pull_fills_cache(mlfs, mlfs_env, demo):
    info = Images.by_platform(demo.index, HOST_PLATFORM)
    before = gets(demo.registry, info["layers"])
    r = mlfs("pull", "--keep-blobs", demo.ref("demo:latest"))
    assert_ok(r)
    assert r.stdout == ""
    assert_cached(mlfs_env, info["layers"])
    assert wait_for(lambda: all(gets(demo.registry, info["layers"])[d] > n for d, n in before.items()))


def test_second_pull_downloads_nothing(mlfs, mlfs_env, demo):
    info = Images.by_platform(demo.list, "linux/arm/v7")
    assert_ok(mlfs("pull", "--keep-blobs", demo.ref("demo:list"), "--platform", "linux/arm/v7"))
    assert_cached(mlfs_env, info["layers"])
    time.sleep(0.3)  # let the access log catch up
    before = gets(demo.registry, info["layers"])
    r = mlfs("pull", "--keep-blobs", demo.ref("demo:list"), "--platform", "linux/arm/v7")
    assert_ok(r)
    assert r.stdout == ""
    time.sleep(0.3)
    assert gets(demo.registry, info["layers"]) == before
    assert_cached(mlfs_env, info["layers"])


@pytest.mark.parametrize("plat,expected", [("linux/s390x", "linux/s390x"), ("linux/arm64", "linux/arm64/v8")])
def test_pull_platform(mlfs, mlfs_env, demo, plat, expected):
    info = Images.by_platform(demo.index, expected)
    assert_ok(mlfs("pull", "--keep-blobs", demo.ref("demo:latest"), "--platform", plat))
    assert_cached(mlfs_env, info["layers"])
    # Only the chosen platform's layers.
    other = Images.by_platform(demo.index, "linux/ppc64le")
    assert not os.path.exists(cache_blob_path(mlfs_env, other["layers"][0]["digest"]))


def test_pull_by_digest(mlfs, mlfs_env, demo):
    info = Images.by_platform(demo.index, "linux/ppc64le")
    assert_ok(mlfs("pull", "--keep-blobs", demo.ref("demo@" + info["digest"])), allow_warnings=True)
    assert_cached(mlfs_env, info["layers"])


def test_pull_single_v2s2(mlfs, mlfs_env, single):
    assert_ok(mlfs("pull", "--keep-blobs", single.ref("single:v2s2")))
    assert_cached(mlfs_env, single.v2s2["layers"])


@pytest.mark.bearer
def test_pull_bearer_private(mlfs, mlfs_env, bearer, tmp_path):
    d = tmp_path / "docker-config"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(auth_json(bearer.host)))
    info = Images.by_platform(bearer.index, "linux/arm/v7")
    r = mlfs("pull", "--keep-blobs", bearer.ref("private/demo:latest"), "--platform", "linux/arm/v7",
             env_extra={"DOCKER_CONFIG": str(d)})
    assert_ok(r)
    assert_cached(mlfs_env, info["layers"])
    # One token serves the manifest and every blob of the repository (it is
    # valid 300 s): not one token request per blob.
    asked = [q for q in bearer.issuer.requests if "repository:private/demo:pull" in q["scopes"]]
    assert 1 <= len(asked) <= 2, asked


def test_pull_keeps_layers_not_blobs(mlfs, mlfs_env, demo):
    """Without --keep-blobs a pull stores each layer once: indexed, its
    compressed blob dropped; an offline export then needs no network."""
    info = Images.by_platform(demo.index, HOST_PLATFORM)
    assert_ok(mlfs("pull", demo.ref("demo:latest")))
    for l in info["layers"]:
        assert not os.path.exists(cache_blob_path(mlfs_env, l["digest"])), l["digest"]
    r = mlfs("cache", "ls", "--json")
    assert_ok(r)
    images = [i for i in json.loads(r.stdout) if i["digest"] == info["digest"]]
    assert images, r.stdout
    assert [l["state"] for l in images[0]["layers"]] == ["indexed"] * len(info["layers"])
    before = gets(demo.registry, info["layers"])
    r = mlfs("export", "--offline", demo.ref("demo:latest"), "-o", os.path.join(mlfs_env["HOME"], "x.tar"))
    assert_ok(r)
    time.sleep(0.3)
    assert gets(demo.registry, info["layers"]) == before
