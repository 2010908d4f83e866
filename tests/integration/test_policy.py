"""Trust policy (containers-policy.json): what the policy decides from the
reference alone (signatures themselves: test_signatures.py).

A differential against skopeo: for each policy, `skopeo --policy FILE copy
docker://REF oci:DIR` accepts exactly when `mlfs inspect`, `mlfs pull` and
a mount with -o policy=FILE do (skopeo refuses an unsigned image under a
signedBy / sigstoreSigned scope: the same answer).  Each case also says
what the answer must be, so that two tools failing for some other reason
cannot agree by accident.  A refusal is one line naming the file, the
scope and the requirement; a `reject` is decided before anything is asked
of the registry; no mount is left behind.
"""

import json
import os
import subprocess
import time

import pytest

from helpers import assert_ok
from mounts import is_mounted

ACCEPT = {"type": "insecureAcceptAnything"}
REJECT = {"type": "reject"}
SIGNED_BY = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/nonexistent/key.gpg"}
SIGSTORE = {"type": "sigstoreSigned", "keyPath": "/nonexistent/cosign.pub"}


def policy(default, docker=None, **transports):
    p = {"default": [default] if isinstance(default, dict) else default}
    if docker is not None:
        transports["docker"] = {k: [v] if isinstance(v, dict) else v for k, v in docker.items()}
    if transports:
        p["transports"] = transports
    return p


# (case id, reference under the demo registry, policy built from the host, mlfs/skopeo must accept)
CASES = [
    ("default-reject-repo-accept", "demo:latest",
     lambda h: policy(REJECT, {h + "/demo": ACCEPT}), True),
    ("default-reject-other-repo", "demo:latest",
     lambda h: policy(REJECT, {h + "/other": ACCEPT}), False),
    ("default-accept-host-reject", "demo:latest",
     lambda h: policy(ACCEPT, {h: REJECT}), False),
    ("repo-beats-host", "demo:latest",
     lambda h: policy(REJECT, {h: REJECT, h + "/demo": ACCEPT}), True),
    ("repo-reject-beats-host-accept", "demo:latest",
     lambda h: policy(ACCEPT, {h: ACCEPT, h + "/demo": REJECT}), False),
    ("wildcard-reject", "demo:latest",
     lambda h: policy(ACCEPT, {"*.0.0.1": REJECT}), False),
    ("wildcard-longest-wins", "demo:latest",
     lambda h: policy(REJECT, {"*.0.0.1": ACCEPT, "*.1": REJECT}), True),
    ("host-beats-wildcard", "demo:latest",
     lambda h: policy(REJECT, {"*.0.0.1": REJECT, h: ACCEPT}), True),
    ("exact-tag-accepted", "demo:latest",
     lambda h: policy(ACCEPT, {h + "/demo:latest": ACCEPT, h + "/demo": REJECT}), True),
    ("exact-tag-other-tag", "demo:list",
     lambda h: policy(ACCEPT, {h + "/demo:latest": ACCEPT, h + "/demo": REJECT}), False),
    ("transport-default-reject", "demo:latest",
     lambda h: policy(ACCEPT, {"": REJECT}), False),
    ("transport-default-accept", "demo:latest",
     lambda h: policy(REJECT, {"": ACCEPT}), True),
    ("other-transport-ignored", "demo:latest",
     lambda h: policy(ACCEPT, None, **{"docker-daemon": {"": [REJECT]}}), True),
    ("all-requirements-must-hold", "demo:latest",
     lambda h: policy(ACCEPT, {h + "/demo": [ACCEPT, REJECT]}), False),
    ("signed-by-required", "demo:latest",
     lambda h: policy(ACCEPT, {h + "/demo": SIGNED_BY}), False),
    ("sigstore-required", "demo:latest",
     lambda h: policy(ACCEPT, {h + "/demo": SIGSTORE}), False),
    ("signed-by-elsewhere", "demo:latest",
     lambda h: policy(ACCEPT, {h + "/other": SIGNED_BY}), True),
    ("malformed-unknown-key", "demo:latest",
     lambda h: {"default": [ACCEPT], "transport": {}}, False),
    ("malformed-requirement", "demo:latest",
     lambda h: {"default": [{"type": "insecureAcceptAnything", "keyPath": "/k"}]}, False),
    ("malformed-empty-list", "demo:latest",
     lambda h: policy(ACCEPT, {h + "/demo": []}), False),
]


def write_policy(tmp_path, name, content):
    path = os.path.join(str(tmp_path), name + ".json")
    with open(path, "w") as f:
        f.write(content if isinstance(content, str) else json.dumps(content, indent=1))
    return path


def skopeo_accepts(policy_path, ref, tmp_path):
    dest = os.path.join(str(tmp_path), "skopeo-oci")
    r = subprocess.run(["skopeo", "--policy", policy_path, "copy", "-q", "--src-tls-verify=false",
                        "docker://" + ref, "oci:" + dest + ":x"],
                       capture_output=True, text=True, timeout=300)
    return r.returncode == 0, r.stderr.strip()


def mlfs_answers(mlfs, mounter, policy_path, ref):
    """{"inspect": bool, "pull": bool, "mount": bool}, each refusal checked:
    a non-zero exit, one line naming the policy file, no mount left."""
    answers = {}
    for cmd in ("inspect", "pull"):
        r = mlfs(cmd, "--policy", policy_path, ref)
        answers[cmd] = r.rc == 0
        if r.rc != 0:
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("mlfs: error: "), r.stderr
            assert policy_path in lines[0], r.stderr
    m = mounter.mount(ref, "policy=" + policy_path, check=False)
    answers["mount"] = m.ok
    if m.ok:
        assert os.listdir(m.mountpoint), "the accepted image mounted empty"
        m.unmount()
    else:
        assert m.result.rc != 0, m.stderr()
        assert policy_path in m.stderr(), m.stderr()
        assert not is_mounted(m.mountpoint)
    return answers


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_policy_differential(mlfs, mounter, demo, tmp_path, case):
    name, tag, build, expected = case
    ref = demo.ref(tag)
    path = write_policy(tmp_path, name, build(demo.host))
    sk, sk_err = skopeo_accepts(path, ref, tmp_path)
    assert sk == expected, "skopeo %s %s: %s" % ("accepted" if sk else "refused", ref, sk_err)
    answers = mlfs_answers(mlfs, mounter, path, ref)
    assert answers == {"inspect": sk, "pull": sk, "mount": sk}, (answers, sk_err)


def requests_after(registry, action):
    time.sleep(0.3)  # the access log catches up
    before = len(registry.requests())
    result = action()
    time.sleep(0.3)
    return result, registry.requests()[before:]


def test_reject_message_and_nothing_fetched(mlfs, mounter, demo, tmp_path):
    path = write_policy(tmp_path, "p", policy(ACCEPT, {demo.host + "/demo": REJECT}))
    ref = demo.ref("demo:latest")
    r, seen = requests_after(demo.registry, lambda: mlfs("inspect", "--policy", path, ref))
    assert r.rc != 0
    assert r.stderr.strip() == ('mlfs: error: %s: rejected by policy %s (scope "%s/demo": reject)'
                                % (ref, path, demo.host))
    assert seen == [], "a rejected reference reached the registry: %r" % seen
    m, seen = requests_after(demo.registry, lambda: mounter.mount(ref, "policy=" + path, check=False))
    assert not m.ok and not is_mounted(m.mountpoint)
    assert seen == []
    # Nothing was cached either: an offline inspect finds nothing.
    r = mlfs("inspect", "--insecure-policy", "--offline", ref)
    assert r.rc != 0 and "not in the cache" in r.stderr


def test_signatures_required_message(mlfs, demo, tmp_path):
    """A scope that requires signatures, for an image that has none (the
    lookaside store: test_signatures.py tests the rest)."""
    path = write_policy(tmp_path, "p", policy(REJECT, {"*.0.0.1": SIGNED_BY}))
    regd = os.path.join(str(tmp_path), "registries.d")
    os.mkdir(regd)
    with open(os.path.join(regd, "x.yaml"), "w") as f:
        f.write("default-docker:\n  lookaside: file:///nonexistent/sigstore\n")
    ref = demo.ref("demo:latest")
    r = mlfs("pull", "--policy", path, "--registries.d", regd, ref)
    assert r.rc != 0
    assert r.stderr.strip() == (
        'mlfs: error: %s: rejected by policy %s (scope "*.0.0.1": signedBy GPGKeys keyPath '
        '/nonexistent/key.gpg): no signature found (none at file:///nonexistent/sigstore/demo@%s/signature-1, '
        'nor for the index)' % (ref, path, demo.by_platform(demo.index, "linux/amd64")["digest"].replace(":", "=")))
    # sigstoreSigned: only looked for where registries.d allows attachments
    path = write_policy(tmp_path, "s", policy(REJECT, {"*.0.0.1": SIGSTORE}))
    r = mlfs("pull", "--policy", path, "--registries.d", regd, ref)
    assert r.rc != 0 and "use-sigstore-attachments: true" in r.stderr, r.stderr


def test_digest_reference_scopes(mlfs, demo, tmp_path):
    """By digest: the digest's own scope, then the repository's; a tag and
    a digest together must be accepted under both names."""
    digest = demo.index["digest"]
    by_digest = "%s/demo@%s" % (demo.host, digest)
    path = write_policy(tmp_path, "p", policy(ACCEPT, {by_digest: ACCEPT, demo.host + "/demo": REJECT}))
    assert_ok(mlfs("inspect", "--policy", path, by_digest))
    assert mlfs("inspect", "--policy", path, demo.ref("demo:latest")).rc != 0
    r = mlfs("inspect", "--policy", path, "%s/demo:latest@%s" % (demo.host, digest))
    assert r.rc != 0 and "demo:latest: rejected" in r.stderr


def test_where_the_policy_comes_from(mlfs, mlfs_env, mounter, demo, tmp_path):
    ref = demo.ref("demo:latest")
    reject = write_policy(tmp_path, "reject", policy(REJECT))
    accept = write_policy(tmp_path, "accept", policy(ACCEPT))
    # $MLFS_POLICY, and the command line over it
    r = mlfs("inspect", ref, env_extra={"MLFS_POLICY": reject})
    assert r.rc != 0 and reject in r.stderr
    assert_ok(mlfs("inspect", "--policy", accept, ref, env_extra={"MLFS_POLICY": reject}))
    # ~/.config/containers/policy.json, as containers/image
    user = os.path.join(mlfs_env["HOME"], ".config", "containers")
    os.makedirs(user)
    with open(os.path.join(user, "policy.json"), "w") as f:
        json.dump(policy(REJECT), f)
    r = mlfs("inspect", ref)
    assert r.rc != 0 and os.path.join(user, "policy.json") in r.stderr
    # --insecure-policy and -o insecure-policy skip it
    assert_ok(mlfs("inspect", "--insecure-policy", ref, env_extra={"MLFS_POLICY": reject}))
    m = mounter.mount(ref, "insecure-policy", env_extra={"MLFS_POLICY": reject})
    assert m.ok
    m.unmount()
    # A named file that is missing is an error, not "no policy"
    r = mlfs("inspect", "--policy", os.path.join(str(tmp_path), "missing.json"), ref)
    assert r.rc != 0 and "missing.json" in r.stderr and "No such file" in r.stderr


def test_no_policy_file_says_so_in_debug(mlfs, demo, tmp_path):
    """No file anywhere: every image accepted, as before, and --debug says
    so (/etc/containers hidden under a tmpfs in a mount namespace)."""
    if os.geteuid() != 0:
        pytest.skip("hiding /etc/containers needs a mount namespace (root)")
    hide = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mkdir -p /etc/containers && mount -t tmpfs none /etc/containers && exec "$@"', "sh"]
    r = mlfs("--debug=fetch", "inspect", demo.ref("demo:latest"), wrap=hide)
    assert r.rc == 0, r.stderr
    assert "no policy file" in r.stderr and "every image is accepted" in r.stderr


def test_chroot_checks_the_policy(mlfs, demo, tmp_path):
    """mlfs chroot checks REF and then mounts it pinned to its digest: a
    policy that accepts only the tag must still let it run."""
    if os.geteuid() != 0:
        pytest.skip("mlfs chroot needs root")
    ref = demo.ref("demo:latest")
    only_tag = write_policy(tmp_path, "tag", policy(REJECT, {ref: ACCEPT}))
    r = mlfs("chroot", "-o", "policy=" + only_tag, ref, "/bin/busybox", "true", timeout=240)
    if r.rc in (126, 127):
        pytest.skip("the demo image has no /bin/busybox to run here: %s" % r.stderr.strip())
    assert r.rc == 0, r.stderr
    reject = write_policy(tmp_path, "reject", policy(REJECT))
    r = mlfs("chroot", "-o", "policy=" + reject, ref, "/bin/busybox", "true", timeout=240)
    assert r.rc == 125 and "rejected by policy" in r.stderr and reject in r.stderr
