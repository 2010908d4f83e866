"""Credentials: Docker/containers auth files, credential helpers, Basic and
Bearer registries."""

import base64
import json
import os

import pytest

from conftest import PASSWORD, USER, Images, auth_json
from helpers import assert_mlfs_error, assert_ok, inspect_json

WRONG = "not-the-password-xyzzy"
SECRETS = (PASSWORD, WRONG, base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode()).decode(),
           base64.b64encode(("%s:%s" % (USER, WRONG)).encode()).decode())


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


def check_private_ok(mlfs, images, env_extra, platform="linux/arm/v7"):
    ref = images.ref("private/demo:latest")
    r = mlfs("inspect", ref, "--json", "--platform", platform, env_extra=env_extra)
    assert_ok(r)
    for s in SECRETS:
        assert s not in r.stdout and s not in r.stderr
    out = json.loads(r.stdout)
    assert out["manifest_digest"] == Images.by_platform(images.index, platform)["digest"]
    return out


# -- Basic (htpasswd) ---------------------------------------------------------

@pytest.mark.auth
class TestBasic:
    def test_docker_config_dir(self, mlfs, mlfs_env, basic_registry, tmp_path):
        d = str(tmp_path / "docker-config")
        write_json(os.path.join(d, "config.json"), auth_json(basic_registry.host))
        check_private_ok(mlfs, basic_registry, {"DOCKER_CONFIG": d})

    def test_home_docker_config(self, mlfs, mlfs_env, basic_registry):
        write_json(os.path.join(mlfs_env["HOME"], ".docker", "config.json"),
                   auth_json(basic_registry.host))
        check_private_ok(mlfs, basic_registry, {})

    def test_registry_auth_file(self, mlfs, basic_registry, tmp_path):
        f = write_json(str(tmp_path / "auth" / "my-auth.json"), auth_json(basic_registry.host))
        check_private_ok(mlfs, basic_registry, {"REGISTRY_AUTH_FILE": f})

    def test_xdg_runtime_dir(self, mlfs, mlfs_env, basic_registry):
        write_json(os.path.join(mlfs_env["XDG_RUNTIME_DIR"], "containers", "auth.json"),
                   auth_json(basic_registry.host))
        check_private_ok(mlfs, basic_registry, {})

    def test_cred_helpers(self, mlfs, mlfs_env, basic_registry, cred_helper, tmp_path):
        bindir, log = cred_helper
        d = str(tmp_path / "docker-config")
        write_json(os.path.join(d, "config.json"), {"credHelpers": {basic_registry.host: "mlfstest"}})
        env = {"DOCKER_CONFIG": d, "PATH": bindir + os.pathsep + mlfs_env["PATH"]}
        check_private_ok(mlfs, basic_registry, env)
        with open(log) as f:
            calls = f.read().split("\n")
        assert any(c.startswith("get ") and basic_registry.host in c for c in calls), calls

    def test_creds_store(self, mlfs, mlfs_env, basic_registry, cred_helper, tmp_path):
        bindir, log = cred_helper
        d = str(tmp_path / "docker-config")
        write_json(os.path.join(d, "config.json"), {"credsStore": "mlfstest"})
        env = {"DOCKER_CONFIG": d, "PATH": bindir + os.pathsep + mlfs_env["PATH"]}
        check_private_ok(mlfs, basic_registry, env)
        with open(log) as f:
            assert basic_registry.host in f.read()

    def test_auth_key_with_scheme(self, mlfs, basic_registry, tmp_path):
        # `docker login https://host:port` style keys name the same registry.
        d = str(tmp_path / "docker-config")
        write_json(os.path.join(d, "config.json"), auth_json("https://" + basic_registry.host))
        check_private_ok(mlfs, basic_registry, {"DOCKER_CONFIG": d})

    def test_wrong_password(self, mlfs, basic_registry, tmp_path):
        d = str(tmp_path / "docker-config")
        write_json(os.path.join(d, "config.json"), auth_json(basic_registry.host, password=WRONG))
        r = mlfs("inspect", basic_registry.ref("private/demo:latest"), env_extra={"DOCKER_CONFIG": d})
        assert_mlfs_error(r, "unauthorized", "denied", secrets=SECRETS)

    def test_no_credentials(self, mlfs, basic_registry):
        r = mlfs("inspect", basic_registry.ref("private/demo:latest"))
        assert_mlfs_error(r, "unauthorized", "denied", secrets=SECRETS)

    def test_credentials_for_another_registry_unused(self, mlfs, basic_registry, tmp_path):
        d = str(tmp_path / "docker-config")
        write_json(os.path.join(d, "config.json"), auth_json("127.0.0.2:1"))
        r = mlfs("inspect", basic_registry.ref("private/demo:latest"), env_extra={"DOCKER_CONFIG": d})
        assert_mlfs_error(r, "unauthorized", "denied", secrets=SECRETS)


# -- Bearer (token issuer) ----------------------------------------------------

def token_requests(bearer, repo):
    scope = "repository:%s:pull" % repo
    return [r for r in bearer.issuer.requests if scope in r["scopes"]]


@pytest.mark.bearer
class TestBearer:
    def test_anonymous_public(self, mlfs, bearer):
        ref = bearer.ref("public/demo:latest")
        out = inspect_json(mlfs, ref, "--platform", "linux/s390x")
        assert out["manifest_digest"] == Images.by_platform(bearer.index, "linux/s390x")["digest"]
        reqs = token_requests(bearer, "public/demo")
        assert reqs, bearer.issuer.requests
        assert all(r["service"] == bearer.issuer.service for r in reqs)
        assert all(not r["basic"] for r in reqs)
        # Scopes asked for are pull only: mlfs never asks to push.
        for r in bearer.issuer.requests:
            assert all(s.endswith(":pull") for s in r["scopes"]), r

    def test_credentialed_private(self, mlfs, bearer, tmp_path):
        d = str(tmp_path / "docker-config")
        write_json(os.path.join(d, "config.json"), auth_json(bearer.host))
        check_private_ok(mlfs, bearer, {"DOCKER_CONFIG": d})
        reqs = token_requests(bearer, "private/demo")
        assert reqs and all(r["user"] == USER and r["service"] == bearer.issuer.service for r in reqs)

    def test_private_without_credentials(self, mlfs, bearer):
        r = mlfs("inspect", bearer.ref("private/demo:latest"))
        assert_mlfs_error(r, "unauthorized", "denied")
        # Asked once or twice, not in a loop.
        assert 1 <= len(token_requests(bearer, "private/demo")) <= 3, bearer.issuer.requests

    def test_wrong_password(self, mlfs, bearer, tmp_path):
        d = str(tmp_path / "docker-config")
        write_json(os.path.join(d, "config.json"), auth_json(bearer.host, password=WRONG))
        r = mlfs("inspect", bearer.ref("private/demo:latest"), env_extra={"DOCKER_CONFIG": d})
        assert_mlfs_error(r, "unauthorized", "denied", secrets=SECRETS)
        reqs = token_requests(bearer, "private/demo")
        assert reqs and any(r["status"] == 401 for r in reqs)
        assert len(reqs) <= 3, reqs
