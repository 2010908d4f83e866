"""Failures: exit 1, one `mlfs: ...` line on stderr that names the cause."""

import os

import pytest

from helpers import assert_mlfs_error, cache_blob_path
from registry import free_port

pytestmark = pytest.mark.errors


def test_unknown_host(mlfs):
    # .invalid never resolves (RFC 2606); the host is not loopback, so HTTPS.
    r = mlfs("inspect", "mlfs-no-such-host.invalid/demo:latest")
    assert_mlfs_error(r, "resolve")


def test_connection_refused(mlfs):
    r = mlfs("inspect", "127.0.0.1:%d/demo:latest" % free_port())
    assert_mlfs_error(r, "connection refused", "could not connect")


@pytest.mark.parametrize("name", [
    "nosuch/repo:latest",
    "demo:no-such-tag",
    "demo@sha256:" + "0" * 64,
])
def test_not_found(mlfs, demo, name):
    r = mlfs("inspect", demo.ref(name))
    assert_mlfs_error(r, "not found")


@pytest.mark.parametrize("ref", ["demo:latest", "demo:list"])
def test_no_matching_platform(mlfs, demo, ref):
    r = mlfs("inspect", demo.ref(ref), "--platform", "linux/riscv64")
    line = assert_mlfs_error(r, "no matching platform")
    assert "linux/s390x" in line and "linux/arm/v7" in line


def test_config_digest_mismatch(mlfs, broken):
    r = mlfs("inspect", broken.ref("broken/config-digest:v1"))
    assert_mlfs_error(r, "digest mismatch")


def test_manifest_digest_mismatch(mlfs, broken):
    # The registry serves, for this digest, bytes that hash to something else.
    r = mlfs("inspect", broken.ref("broken/manifest-digest@" + broken.manifest_digest["digest"]))
    assert_mlfs_error(r, "digest mismatch")


def test_malformed_config(mlfs, broken):
    r = mlfs("inspect", broken.ref("broken/malformed:v1"))
    assert_mlfs_error(r, "malformed")


def test_config_too_large(mlfs, broken):
    r = mlfs("inspect", broken.ref("broken/huge:v1"))
    assert_mlfs_error(r, "too large")


@pytest.mark.pull
def test_pull_layer_digest_mismatch(mlfs, mlfs_env, broken):
    r = mlfs("pull", broken.ref("broken/layer-digest:v1"))
    assert_mlfs_error(r, "digest mismatch")
    # Nothing unverified is left under the digest's name.
    assert not os.path.exists(cache_blob_path(mlfs_env, broken.layer_digest["layer_digest"]))


@pytest.mark.parametrize("ref", ["Demo/UPPER:case", "demo:latest@sha256:nothex", ""])
def test_invalid_reference(mlfs, ref):
    r = mlfs("inspect", ref)
    assert_mlfs_error(r)


def test_unknown_platform_syntax(mlfs, demo):
    r = mlfs("inspect", demo.ref("demo:latest"), "--platform", "linux/")
    assert_mlfs_error(r)
