"""Trust: sigstore (cosign) signatures attached in the registry, verified
with public keys (sigstoreSigned keyPath / keyData).

No differential here: Debian 12's skopeo 1.9.3 is built with sigstore
verification disabled (it refuses every sigstore signature with "Debian-
local change: sigstore disabled").  It still reads the attachments, and
that is used: for every case, skopeo must find signatures exactly where
this test attached them ("sigstore disabled" for each one) and none where
there are none ("no signature exists"), which checks the layout with the
real reader.  What each case must answer is written down.

cosign is not in Debian 12 and skopeo 1.9.3 cannot make cosign keys, so
the signatures are written here with Debian's python3-cryptography (ECDSA
P-256 over SHA-256, as `cosign sign --key` does) in exactly cosign's
layout, checked against sigstore/cosign's source (pkg/oci/static/
signature.go: the annotation keys; pkg/oci/remote: the "sha256-<hex>.sig"
tag; the simple-signing media type) and what containers/image reads
(docker/docker_image_src.go, signature/sigstore):

  tag  sha256-<hex>.sig in the image's repository, an OCI image manifest:
    config  cosign's empty image config (rootfs.diff_ids = the payloads)
    layers  one per signature: mediaType application/vnd.dev.cosign.simplesigning.v1+json,
            the payload blob {"critical": {"identity": {"docker-reference": REPO},
            "image": {"docker-manifest-digest": DIGEST}, "type": "cosign container
            image signature"}, "optional": null}, and the base64 DER signature in
            the annotation dev.cosignproject.cosign/signature

cosign signs the repository name without a tag, so policies use
signedIdentity matchRepository (the default matchRepoDigestOrExact
refuses a tag-less identity for a tagged image: one case checks that,
skopeo agrees).  Each platform's manifest and the index are signed, as
`cosign sign --recursive` does.
"""

import base64
import hashlib
import json
import os
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from helpers import assert_ok
from mounts import is_mounted
from registry import MT_OCI_MANIFEST, copy_image, sha256_digest

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIG_ANNOTATION = "dev.cosignproject.cosign/signature"


def cosign_payload(reference, digest):
    # The key order and "optional": null as cosign's payload.Cosign marshals them
    return json.dumps({"critical": {"identity": {"docker-reference": reference},
                                    "image": {"docker-manifest-digest": digest},
                                    "type": "cosign container image signature"},
                       "optional": None}, separators=(",", ":")).encode()


def attach(client, repo, digest, signatures):
    """Pushes the .sig manifest of `digest`: signatures = [(payload, b64sig, media_type)]."""
    layers = []
    for payload, sig, media in signatures:
        layers.append({"mediaType": media, "size": len(payload), "digest": client.push_blob(repo, payload),
                       "annotations": {SIG_ANNOTATION: sig}})
    config = json.dumps({"architecture": "", "created": "0001-01-01T00:00:00Z",
                         "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
                         "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
                         "config": {}}, separators=(",", ":")).encode()
    manifest = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
                           "digest": client.push_blob(repo, config)},
                "layers": layers}
    client.put_manifest(repo, digest.replace(":", "-") + ".sig", manifest, MT_OCI_MANIFEST)


def sign(key, payload):
    return base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()


def digests_of(client, repo):
    body, _, digest = client.get_manifest(repo, "latest")
    return [digest] + [m["digest"] for m in json.loads(body)["manifests"]]


class Cosigned:
    pass


@pytest.fixture(scope="module")
def cosigned(demo, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("cosign"))
    c = Cosigned()
    c.host, c.client = demo.host, demo.client
    c.key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    c.pub = os.path.join(d, "cosign.pub")
    with open(c.pub, "wb") as f:
        f.write(c.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo))
    c.regd = os.path.join(d, "registries.d")
    os.mkdir(c.regd)
    with open(os.path.join(c.regd, "sigstore.yaml"), "w") as f:
        f.write("docker:\n  %s:\n    use-sigstore-attachments: true\n" % demo.host)
    c.no_attach = os.path.join(d, "registries.d-none")
    os.mkdir(c.no_attach)
    reg = demo.registry

    def image(repo, sigs_for):
        copy_image(reg, "demo:latest", reg, repo + ":latest")
        for digest in digests_of(demo.client, repo):
            attach(demo.client, repo, digest, sigs_for(digest))

    name = lambda repo: "%s/%s" % (demo.host, repo)
    image("cosigned", lambda dg: [(p, sign(c.key, p), SIMPLESIGNING) for p in [cosign_payload(name("cosigned"), dg)]])
    copy_image(reg, "demo:latest", reg, "unsigned-cosign:latest")
    image("cosign-otherkey", lambda dg: [(p, sign(other, p), SIMPLESIGNING)
                                         for p in [cosign_payload(name("cosign-otherkey"), dg)]])
    image("cosign-elsewhere", lambda dg: [(p, sign(c.key, p), SIMPLESIGNING)
                                          for p in [cosign_payload(name("somewhere-else"), dg)]])
    # the payload altered after signing (its blob is what the digest names: the registry serves it as pushed)
    image("cosign-tampered", lambda dg: [(cosign_payload(name("cosign-tampered"), dg),
                                          sign(c.key, cosign_payload(name("cosign-tamperex"), dg)), SIMPLESIGNING)])
    wrong = "sha256:" + "0" * 64
    image("cosign-otherdigest", lambda dg: [(p, sign(c.key, p), SIMPLESIGNING)
                                            for p in [cosign_payload(name("cosign-otherdigest"), wrong)]])
    # a bad signature first, then a good one: any good one is enough
    image("cosign-second", lambda dg: [(p, sign(other, p), SIMPLESIGNING)
                                       for p in [cosign_payload(name("cosign-second"), dg)]] +
          [(p, sign(c.key, p), SIMPLESIGNING) for p in [cosign_payload(name("cosign-second"), dg)]])
    # only the index signed
    copy_image(reg, "demo:latest", reg, "cosign-indexonly:latest")
    top = digests_of(demo.client, "cosign-indexonly")[0]
    p = cosign_payload(name("cosign-indexonly"), top)
    attach(demo.client, "cosign-indexonly", top, [(p, sign(c.key, p), SIMPLESIGNING)])
    return c


def write_policy(dirpath, name, scopes):
    path = os.path.join(dirpath, name + ".json")
    with open(path, "w") as f:
        json.dump({"default": [{"type": "reject"}], "transports": {"docker": scopes}}, f, indent=1)
    return path


def sigstore_req(pub, identity=None, inline=False):
    req = {"type": "sigstoreSigned"}
    if inline:
        with open(pub, "rb") as f:
            req["keyData"] = base64.b64encode(f.read()).decode()
    else:
        req["keyPath"] = pub
    req["signedIdentity"] = identity or {"type": "matchRepository"}
    return req


def skopeo_signatures(policy, regd, ref, tmp_path):
    """How many sigstore signatures skopeo found for the platform's
    manifest (it verifies none: see the top)."""
    dest = os.path.join(str(tmp_path), "skopeo-oci")
    shutil.rmtree(dest, ignore_errors=True)
    r = subprocess.run(["skopeo", "--policy", policy, "--registries.d", regd, "copy", "-q", "--remove-signatures",
                        "--src-tls-verify=false", "docker://" + ref, "oci:" + dest + ":x"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0, "Debian's skopeo accepted a sigstore signature: make this test a differential"
    if "no signature exists" in r.stderr:
        return 0
    assert "sigstore disabled" in r.stderr, r.stderr
    return r.stderr.count("sigstore disabled")


def mlfs_answers(mlfs, mounter, tmp_path, policy, regd, ref):
    answers, line = {}, None
    out = os.path.join(str(tmp_path), "export.tar")
    for cmd, extra in (("inspect", []), ("export", ["-o", out]), ("pull", [])):
        r = mlfs(cmd, "--policy", policy, "--registries.d", regd, *(extra + [ref]))
        answers[cmd] = r.rc == 0
        if r.rc != 0:
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("mlfs: error: ") and policy in lines[0], r.stderr
            line = lines[0]
            r2 = mlfs("inspect", "--insecure-policy", "--offline", ref)
            assert r2.rc != 0 and "not in the cache" in r2.stderr, "a refused image was cached: " + r2.stderr
    m = mounter.mount(ref, "policy=" + policy, "registries.d=" + regd, check=False)
    answers["mount"] = m.ok
    if m.ok:
        assert os.listdir(m.mountpoint)
        m.unmount()
    else:
        assert m.result.rc != 0 and policy in m.stderr() and not is_mounted(m.mountpoint)
    return answers, line


# (case, repository, signedIdentity (None: matchRepository), inline key, registries.d attachments,
#  signatures skopeo must find, accepted, what the refusal says)
CASES = [
    ("signed", "cosigned", None, False, True, 1, True, None),
    ("signed-keydata", "cosigned", None, True, True, 1, True, None),
    ("no-attachments-configured", "cosigned", None, False, False, 0, False, "use-sigstore-attachments: true"),
    ("unsigned", "unsigned-cosign", None, False, True, 0, False, "no signature found"),
    ("other-key", "cosign-otherkey", None, False, True, 1, False, "does not verify with the policy's key"),
    ("identity-mismatch", "cosign-elsewhere", None, False, True, 1, False, "signedIdentity does not accept"),
    ("tampered-payload", "cosign-tampered", None, False, True, 1, False, "does not verify with the policy's key"),
    ("other-digest", "cosign-otherdigest", None, False, True, 1, False, "for the manifest sha256:0000"),
    ("second-signature-good", "cosign-second", None, False, True, 2, True, None),
    ("default-identity-tagless", "cosigned", {"type": "matchRepoDigestOrExact"}, False, True, 1, False,
     "signedIdentity does not accept"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_sigstore(mlfs, mounter, cosigned, tmp_path, case):
    name, repo, identity, inline, attachments, found, expected, says = case
    ref = "%s/%s:latest" % (cosigned.host, repo)
    regd = cosigned.regd if attachments else cosigned.no_attach
    policy = write_policy(str(tmp_path), name, {cosigned.host: [sigstore_req(cosigned.pub, identity, inline)]})
    assert skopeo_signatures(policy, regd, ref, tmp_path) == found, "skopeo reads the layout differently"
    answers, line = mlfs_answers(mlfs, mounter, tmp_path, policy, regd, ref)
    assert answers == {"inspect": expected, "export": expected, "pull": expected, "mount": expected}, (answers, line)
    if not expected:
        assert '(scope "%s": sigstoreSigned key' % cosigned.host in line and ref in line, line
        assert says in line, line


def test_index_signature_accepted(mlfs, cosigned, tmp_path):
    """Only the index is signed: mlfs accepts it (the index names the
    platform's manifest by digest; cosign signs whatever digest it is
    given, an index is common); containers/image checks the platform's
    manifest alone."""
    ref = "%s/cosign-indexonly:latest" % cosigned.host
    policy = write_policy(str(tmp_path), "p", {cosigned.host: [sigstore_req(cosigned.pub)]})
    r = mlfs("inspect", "--policy", policy, "--registries.d", cosigned.regd, ref)
    assert_ok(r)
    top = digests_of(cosigned.client, "cosign-indexonly")[0]
    assert "Signed by:  sigstore key sha256:" in r.stdout and top in r.stdout, r.stdout


def test_inspect_and_offline(mlfs, cosigned, tmp_path):
    ref = "%s/cosigned:latest" % cosigned.host
    policy = write_policy(str(tmp_path), "p", {cosigned.host: [sigstore_req(cosigned.pub)]})
    r = mlfs("inspect", "--json", "--policy", policy, "--registries.d", cosigned.regd, ref)
    assert_ok(r)
    der = cosigned.key.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    key_id = "sha256:" + hashlib.sha256(der).hexdigest()[:16]
    assert json.loads(r.stdout)["signed_by"].startswith("sigstore key %s as %s/cosigned (manifest sha256:"
                                                        % (key_id, cosigned.host)), r.stdout
    # offline: the attachments verified online were kept, and are verified again
    r = mlfs("inspect", "--json", "--offline", "--policy", policy, "--registries.d", cosigned.regd, ref)
    assert_ok(r)
    assert json.loads(r.stdout)["signed_by"].startswith("sigstore key %s" % key_id), r.stdout


def kept_signatures(mlfs_env):
    d = os.path.join(mlfs_env["MLFS_CACHE"], "sigs", "sha256")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_offline_kept_attachments(mlfs, mlfs_env, mounter, cosigned, demo, tmp_path):
    """Offline, the registry cannot be asked for the attachments: those
    that verified online were kept in the cache, and are verified again
    against the policy of the day without a request to the registry; with
    none kept, the refusal says to run once online.  A fresh fetch
    replaces them: an attachment replaced by one that no longer verifies
    is refused online at once and no longer kept; rm/gc remove them with
    the image."""
    repo = "cosign-offline"
    copy_image(demo.registry, "demo:latest", demo.registry, repo + ":latest")
    name = "%s/%s" % (cosigned.host, repo)
    for digest in digests_of(demo.client, repo):
        p = cosign_payload(name, digest)
        attach(demo.client, repo, digest, [(p, sign(cosigned.key, p), SIMPLESIGNING)])
    ref = name + ":latest"
    policy = write_policy(str(tmp_path), "p", {cosigned.host: [sigstore_req(cosigned.pub)]})
    opts = ["--policy", policy, "--registries.d", cosigned.regd]

    # Cached without its signatures: nothing to verify offline.
    assert_ok(mlfs("pull", "--insecure-policy", ref))
    r = mlfs("inspect", "--offline", *(opts + [ref]))
    lines = r.stderr.strip().splitlines()
    assert r.rc != 0 and len(lines) == 1 and policy in lines[0], r.stderr
    assert ("no signature kept for offline use (signatures from %s are kept when they verify online: run once "
            "online, e.g. mlfs pull %s)" % (name, ref)) in lines[0], r.stderr

    # Online: verified and kept.
    r = mlfs("inspect", "--json", *(opts + [ref]))
    assert_ok(r)
    manifest = json.loads(r.stdout)["manifest_digest"]
    kept = kept_signatures(mlfs_env)
    assert len(kept) == 1 and kept[0].startswith(manifest.split(":")[1] + ".sigstore-"), kept

    # Offline: inspect, export and a mount accepted, the registry not asked.
    before = len(demo.registry.requests())
    assert_ok(mlfs("inspect", "--offline", *(opts + [ref])))
    assert_ok(mlfs("export", "--offline", *(opts + ["-o", os.path.join(str(tmp_path), "x.tar"), ref])))
    m = mounter.mount(ref, "offline", "policy=" + policy, "registries.d=" + cosigned.regd)
    assert m.ok and os.listdir(m.mountpoint)
    m.unmount()
    assert len(demo.registry.requests()) == before, demo.registry.requests()[before:]

    # Another key in the policy now: the kept signature does not verify with it.
    other = ec.generate_private_key(ec.SECP256R1())
    other_pub = os.path.join(str(tmp_path), "other.pub")
    with open(other_pub, "wb") as f:
        f.write(other.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    other_policy = write_policy(str(tmp_path), "other", {cosigned.host: [sigstore_req(other_pub)]})
    r = mlfs("inspect", "--offline", "--policy", other_policy, "--registries.d", cosigned.regd, ref)
    assert r.rc != 0 and other_policy in r.stderr and "does not verify with the policy's key" in r.stderr, r.stderr
    assert len(demo.registry.requests()) == before

    # The attachments replaced by another key's: refused online, and no longer kept.
    for digest in digests_of(demo.client, repo):
        p = cosign_payload(name, digest)
        attach(demo.client, repo, digest, [(p, sign(other, p), SIMPLESIGNING)])
    r = mlfs("inspect", *(opts + [ref]))
    assert r.rc != 0 and "does not verify with the policy's key" in r.stderr, r.stderr
    assert kept_signatures(mlfs_env) == []
    r = mlfs("inspect", "--offline", *(opts + [ref]))
    assert r.rc != 0 and "no signature kept for offline use" in r.stderr, r.stderr

    # Kept again (now for the other key), then removed with the image.
    assert_ok(mlfs("pull", "--policy", other_policy, "--registries.d", cosigned.regd, ref))
    assert len(kept_signatures(mlfs_env)) == 1
    r = mlfs("cache", "rm", ref)
    assert_ok(r)
    assert "removed the signatures of %s kept for offline use" % manifest in r.stdout, r.stdout
    assert kept_signatures(mlfs_env) == []


def test_fulcio_not_supported(mlfs, cosigned, tmp_path):
    ref = "%s/cosigned:latest" % cosigned.host
    policy = write_policy(str(tmp_path), "p", {cosigned.host: [
        {"type": "sigstoreSigned", "fulcio": {"caPath": "/ca.pem", "oidcIssuer": "https://issuer.example",
                                              "subjectEmail": "a@example.com"},
         "rekorPublicKeyPath": "/rekor.pub"}]})
    r = mlfs("inspect", "--policy", policy, "--registries.d", cosigned.regd, ref)
    assert r.rc != 0 and "Fulcio certificates and Rekor entries are not supported yet" in r.stderr, r.stderr
