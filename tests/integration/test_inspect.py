"""`mlfs inspect` against the plain loopback registry: platforms, manifest
kinds, digests, output forms."""

import json

import pytest

from conftest import HOST_PLATFORM, Images
from helpers import assert_ok, describe, inspect_json
from registry import MT_DOCKER_MANIFEST, MT_OCI_MANIFEST

KINDS = {"index": "demo:latest", "list": "demo:list"}


def norm_platform(p):
    """containerd's normalisation: arm64/v8 == arm64, arm == arm/v7, amd64/v1 == amd64.

    The contract does not say whether mlfs prints index platforms as written or
    normalised (it normalises today), so tests compare normalised forms."""
    if p is None:
        return None
    parts = p.split("/")
    os_, arch, variant = parts[0], parts[1], (parts[2] if len(parts) > 2 else None)
    if arch == "arm64" and variant == "v8":
        variant = None
    elif arch == "arm" and variant is None:
        variant = "v7"
    elif arch == "amd64" and variant == "v1":
        variant = None
    return "/".join(x for x in (os_, arch, variant) if x)


def config_platform(cfg):
    return norm_platform("/".join(x for x in (cfg["os"], cfg["architecture"], cfg.get("variant")) if x))


def expected_json(ref, desc, plat):
    """The full --json object mlfs must print for `plat` chosen from `desc`
    (platform strings normalised: see norm_platform)."""
    info = Images.by_platform(desc, plat)
    cfg = info["config"]
    c = cfg.get("config", {})
    return {
        "reference": ref,
        "index_digest": desc["digest"],
        "index_media_type": desc["media_type"],
        "platforms": [{"platform": norm_platform(p), "digest": i["digest"], "chosen": p == plat}
                      for p, i in desc["platforms"]],
        "manifest_digest": info["digest"],
        "manifest_media_type": info["media_type"],
        "config": {
            "digest": info["config_digest"],
            "os": cfg["os"],
            "architecture": cfg["architecture"],
            "platform": config_platform(cfg),
            "entrypoint": c.get("Entrypoint"),
            "cmd": c.get("Cmd"),
            "env": c.get("Env"),
        },
        "layers": info["layers"],
    }


def normalised(out):
    """mlfs's --json output with platform strings normalised like expected_json."""
    out = json.loads(json.dumps(out))
    for p in out.get("platforms", []):
        p["platform"] = norm_platform(p["platform"])
    cfg = out["config"]
    cfg["platform"] = config_platform(cfg)
    del cfg["variant"]  # compared through "platform"
    return out


def chosen(out):
    picked = [p for p in out["platforms"] if p["chosen"]]
    assert len(picked) == 1, out["platforms"]
    return picked[0]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_default_platform_is_host(mlfs, demo, kind):
    assert HOST_PLATFORM, "host architecture not in the demo image"
    ref = demo.ref(KINDS[kind])
    out = inspect_json(mlfs, ref)
    assert set(out) == set(expected_json(ref, getattr(demo, kind), HOST_PLATFORM))
    assert set(out["config"]) == {"digest", "os", "architecture", "variant", "entrypoint", "cmd", "env"}
    assert normalised(out) == expected_json(ref, getattr(demo, kind), HOST_PLATFORM)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("requested,expected", [
    ("linux/amd64", "linux/amd64"),
    ("linux/arm64", "linux/arm64/v8"),
    ("linux/arm64/v8", "linux/arm64/v8"),
    ("linux/arm/v7", "linux/arm/v7"),
    ("linux/arm", "linux/arm/v7"),
    ("linux/s390x", "linux/s390x"),
    ("linux/ppc64le", "linux/ppc64le"),
])
def test_platform_option(mlfs, demo, kind, requested, expected):
    desc = getattr(demo, kind)
    ref = demo.ref(KINDS[kind])
    out = inspect_json(mlfs, ref, "--platform", requested)
    info = Images.by_platform(desc, expected)
    assert chosen(normalised(out)) == {"platform": norm_platform(expected), "digest": info["digest"], "chosen": True}
    assert out["manifest_digest"] == info["digest"]
    assert out["config"]["digest"] == info["config_digest"]
    assert "MLFS_PLATFORM=%s" % expected in out["config"]["env"]
    assert normalised(out) == expected_json(ref, desc, expected)


@pytest.mark.parametrize("which,mtype", [("oci", MT_OCI_MANIFEST), ("v2s2", MT_DOCKER_MANIFEST)])
def test_single_platform_manifest(mlfs, single, which, mtype):
    ref = single.ref("single:" + which)
    info = getattr(single, which)
    out = inspect_json(mlfs, ref)
    assert out["reference"] == ref
    assert out["index_digest"] is None
    assert out["index_media_type"] is None
    assert out["manifest_digest"] == info["digest"]
    assert out["manifest_media_type"] == mtype
    assert out["config"]["digest"] == info["config_digest"]
    assert (out["config"]["os"], out["config"]["architecture"]) == ("linux", "amd64")
    assert out["layers"] == info["layers"]


def test_index_by_digest(mlfs, demo):
    ref = demo.ref("demo@" + demo.index["digest"])
    out = inspect_json(mlfs, ref, "--platform", "linux/arm/v7")
    assert out["reference"] == ref
    assert out["index_digest"] == demo.index["digest"]
    assert out["manifest_digest"] == Images.by_platform(demo.index, "linux/arm/v7")["digest"]


def test_manifest_by_digest(mlfs, demo):
    info = Images.by_platform(demo.list, "linux/s390x")
    ref = demo.ref("demo@" + info["digest"])
    # A single manifest: used as it is; a warning that it is not the host's is fine.
    out = inspect_json(mlfs, ref, allow_warnings=True)
    assert out["index_digest"] is None
    assert out["manifest_digest"] == info["digest"]
    assert out["manifest_media_type"] == MT_DOCKER_MANIFEST
    assert out["config"]["architecture"] == "s390x"
    assert out["layers"] == info["layers"]


def test_untagged_image_by_digest(mlfs, demo, digest_only):
    ref = demo.ref("demo@" + digest_only["digest"])
    out = inspect_json(mlfs, ref)
    assert out["manifest_digest"] == digest_only["digest"]
    assert out["config"]["digest"] == digest_only["config_digest"]
    assert "MLFS_DIGEST_ONLY=1" in out["config"]["env"]


def test_tag_and_digest_digest_wins(mlfs, demo, digest_only):
    # The tag does not even exist: only the digest may be used.
    out = inspect_json(mlfs, demo.ref("demo:no-such-tag@" + digest_only["digest"]))
    assert out["manifest_digest"] == digest_only["digest"]
    # A tag that exists but names something else.
    arm64 = Images.by_platform(demo.index, "linux/arm64/v8")
    out = inspect_json(mlfs, demo.ref("demo:latest@" + arm64["digest"]), allow_warnings=True)
    assert out["manifest_digest"] == arm64["digest"]
    assert out["config"]["architecture"] == "arm64"
    assert arm64["digest"] in out["reference"]


def test_default_tag_is_latest(mlfs, demo):
    out = inspect_json(mlfs, demo.ref("demo"))
    assert out["reference"] == demo.ref("demo:latest")
    assert out["index_digest"] == demo.index["digest"]


def test_localhost_name_is_plain_http(mlfs, demo):
    ref = "localhost:%d/demo:latest" % demo.registry.port
    out = inspect_json(mlfs, ref, "--platform", "linux/arm64")
    assert out["reference"] == ref
    assert out["manifest_digest"] == Images.by_platform(demo.index, "linux/arm64/v8")["digest"]


def test_insecure_accepted_on_loopback(mlfs, demo):
    out = inspect_json(mlfs, demo.ref("demo:latest"), "--insecure")
    assert out["index_digest"] == demo.index["digest"]


def test_inspect_does_not_fetch_layers(mlfs, demo):
    info = Images.by_platform(demo.index, "linux/ppc64le")
    before = {l["digest"]: demo.registry.blob_gets(l["digest"]) for l in info["layers"]}
    inspect_json(mlfs, demo.ref("demo:latest"), "--platform", "linux/ppc64le")
    after = {l["digest"]: demo.registry.blob_gets(l["digest"]) for l in info["layers"]}
    assert before == after


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_text_output(mlfs, demo, kind):
    desc = getattr(demo, kind)
    r = mlfs("inspect", demo.ref(KINDS[kind]), "--platform", "linux/arm/v7")
    assert_ok(r)
    text = r.stdout
    info = Images.by_platform(desc, "linux/arm/v7")
    for needle in [desc["digest"], info["digest"], info["config_digest"]] + \
            [l["digest"] for l in info["layers"]]:
        assert needle in text, "%s missing\n%s" % (needle, describe(r))
    lines = text.splitlines()
    starred = [l for l in lines if "*" in l]
    assert len(starred) == 1 and "linux/arm/v7" in starred[0], describe(r)
    for plat, _ in desc["platforms"]:
        assert any(plat in l or norm_platform(plat) in l.split() for l in lines), \
            "%s missing\n%s" % (plat, describe(r))
