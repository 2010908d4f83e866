"""HTTPS to a registry that is not loopback by name.

mlfs runs in a private mount namespace where /etc/hosts maps mlfs-tls.test
to 127.0.0.1 and /etc/docker/certs.d is a directory of ours (with or
without the test CA), so nothing on the machine is changed.
"""

import pytest

from conftest import Images
from helpers import assert_mlfs_error, inspect_json, unshare_wrap

pytestmark = pytest.mark.tls


def test_untrusted_certificate(mlfs, tls_setup):
    r = mlfs("inspect", tls_setup.tls_ref, wrap=unshare_wrap(tls_setup.hosts, tls_setup.certs_empty))
    assert_mlfs_error(r, "tls", "certificate")


def test_ca_in_certs_d(mlfs, tls_setup):
    out = inspect_json(mlfs, tls_setup.tls_ref, "--platform", "linux/arm64",
                       wrap=unshare_wrap(tls_setup.hosts, tls_setup.certs_with_ca))
    assert out["reference"] == tls_setup.tls_ref
    assert out["manifest_digest"] == Images.by_platform(
        tls_setup.demo_index, "linux/arm64/v8")["digest"]


def test_insecure_without_ca(mlfs, tls_setup):
    out = inspect_json(mlfs, tls_setup.tls_ref, "--insecure",
                       wrap=unshare_wrap(tls_setup.hosts, tls_setup.certs_empty))
    assert out["index_digest"] == tls_setup.demo_index["digest"]


def test_plain_http_not_used_for_remote_names(mlfs, tls_setup, demo):
    """A non-loopback name must not be reached over plain HTTP: the plain
    registry, named mlfs-tls.test, answers no TLS, so this fails."""
    ref = "%s:%d/demo:latest" % (tls_setup.hostname, demo.registry.port)
    r = mlfs("inspect", ref, wrap=unshare_wrap(tls_setup.hosts, tls_setup.certs_empty))
    assert_mlfs_error(r)
