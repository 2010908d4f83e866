"""Trust: sigstore (cosign) signatures attached in the registry, verified
with public keys (sigstoreSigned keyPath / keyData).

Differential against containers/image: Debian 12's skopeo 1.9.3 is built
with sigstore verification disabled (it refuses every sigstore signature
with "Debian-local change: sigstore disabled"), so the reference is
tests/reference/cimage-verify (cimage_verify.py): Debian's containers/image
5.23.1, the library that skopeo is built from, with the two stubbed
functions put back, running the check `skopeo copy --all` runs, each
platform of the image on its own.  For every policy x image case (CASES)
the reference must give the answer written down on every platform, for
the reason written down, and mlfs must agree: inspect, export, pull and a
mount on the host's platform, and `inspect --platform` on each of the
others.  skopeo is still asked: it reads the attachments, so for every case
it must find signatures exactly where this test attached them ("sigstore
disabled" for each one) and none where there are none ("no signature
exists"), which checks the layout with the real reader; where it decides
without verifying a signature (reject, insecureAcceptAnything, a .sig
manifest of Docker's type) its answer must be the same.

The one deliberate difference: mlfs also accepts a signature over the
index (test_index_signature_accepted spells it out, platform by platform);
containers/image checks each platform's manifest only.

cosign is not in Debian 12 and skopeo 1.9.3 cannot make cosign keys, so
the signatures are written here with Debian's python3-cryptography (ECDSA
P-256 over SHA-256, as `cosign sign --key` does; RSA PKCS#1 v1.5 and
Ed25519 as sigstore's other signers, for the key types) in exactly cosign's
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

One image (cimage-signed) is signed the way `skopeo copy --all
--sign-by-sigstore-private-key` signs, by containers/image itself
(cimage_verify.sign; Debian's skopeo has that stubbed out too), with the
key in cosign's encrypted private-key format written here (python3-nacl
and hashlib.scrypt, as go-tuf's encrypted package reads it).

cosign signs the repository name without a tag, so policies use
signedIdentity matchRepository (the default matchRepoDigestOrExact
refuses a tag-less identity for a tagged image: one case checks that,
containers/image agrees).  Each platform's manifest and the index are signed, as
`cosign sign --recursive` does.
"""

import base64
import hashlib
import json
import os

import nacl.secret
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

import cimage_verify
from helpers import assert_ok
from mounts import is_mounted
from registry import MT_DOCKER_CONFIG, MT_DOCKER_MANIFEST, MT_OCI_MANIFEST, copy_image
from trust import skopeo_copy, write_policy

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIG_ANNOTATION = "dev.cosignproject.cosign/signature"
DSSE = "application/vnd.dsse.envelope.v1+json"   # cosign attest's attachments


def cosign_payload(reference, digest):
    # The key order and "optional": null as cosign's payload.Cosign marshals them
    return json.dumps({"critical": {"identity": {"docker-reference": reference},
                                    "image": {"docker-manifest-digest": digest},
                                    "type": "cosign container image signature"},
                       "optional": None}, separators=(",", ":")).encode()


def attach(client, repo, digest, signatures, docker_types=False):
    """Pushes the .sig manifest of `digest`: signatures = [(payload, b64sig, media_type)];
    as a Docker v2s2 manifest with docker_types (cosign's COSIGN_DOCKER_MEDIA_TYPES=1)."""
    layers = []
    for payload, sig, media in signatures:
        layers.append({"mediaType": media, "size": len(payload), "digest": client.push_blob(repo, payload),
                       "annotations": {SIG_ANNOTATION: sig}})
    config = json.dumps({"architecture": "", "created": "0001-01-01T00:00:00Z",
                         "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
                         "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
                         "config": {}}, separators=(",", ":")).encode()
    mt = MT_DOCKER_MANIFEST if docker_types else MT_OCI_MANIFEST
    config_mt = MT_DOCKER_CONFIG if docker_types else "application/vnd.oci.image.config.v1+json"
    manifest = {"schemaVersion": 2, "mediaType": mt,
                "config": {"mediaType": config_mt, "size": len(config), "digest": client.push_blob(repo, config)},
                "layers": layers}
    client.put_manifest(repo, digest.replace(":", "-") + ".sig", manifest, mt)


def sign(key, payload):
    """As cosign's signers: ECDSA and RSA PKCS#1 v1.5 over SHA-256, Ed25519 over the payload."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
    else:
        sig = key.sign(payload)
    return base64.b64encode(sig).decode()


def write_cosign_private_key(key, path, passphrase):
    """cosign's encrypted private key (what `cosign generate-key-pair`
    writes, read by go-tuf's encrypted package): the key's PKCS#8 DER
    sealed by NaCl secretbox (python3-nacl) under scrypt(N=32768, r=8,
    p=1) of the passphrase, as JSON with base64 fields in a PEM block."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    salt, nonce = os.urandom(32), os.urandom(24)
    box_key = hashlib.scrypt(passphrase, salt=salt, n=32768, r=8, p=1, maxmem=64 << 20, dklen=32)
    sealed = nacl.secret.SecretBox(box_key).encrypt(der, nonce).ciphertext
    b64 = lambda b: base64.b64encode(b).decode()
    doc = json.dumps({"kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": b64(salt)},
                      "cipher": {"name": "nacl/secretbox", "nonce": b64(nonce)}, "ciphertext": b64(sealed)})
    body = base64.b64encode(doc.encode()).decode()
    with open(path, "w") as f:
        f.write("-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n")
        f.write("".join(body[i:i + 64] + "\n" for i in range(0, len(body), 64)))
        f.write("-----END ENCRYPTED COSIGN PRIVATE KEY-----\n")
    return path


def write_public_key(key, path, pkcs1=False):
    """cosign.pub's form (PEM "PUBLIC KEY"); pkcs1: an RSA key as "RSA PUBLIC KEY"."""
    with open(path, "wb") as f:
        f.write(key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.PKCS1 if pkcs1 else serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def digests_of(client, repo):
    body, _, digest = client.get_manifest(repo, "latest")
    return [digest] + [m["digest"] for m in json.loads(body)["manifests"]]


class Cosigned:
    pass


@pytest.fixture(scope="module")
def cosigned(demo, cimage_verify_bin, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("cosign"))
    c = Cosigned()
    c.host, c.client = demo.host, demo.client
    c.platforms = [p for p, _ in demo.index["platforms"]]
    assert len(c.platforms) > 2
    c.key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    k1_key = ec.generate_private_key(ec.SECP256K1())
    c.pub = write_public_key(c.key, os.path.join(d, "cosign.pub"))
    # The public keys a policy may name (CASES' "key" column)
    c.keys = {
        "pub": c.pub,
        "rsa": write_public_key(rsa_key, os.path.join(d, "rsa.pub")),
        "rsa-pkcs1": write_public_key(rsa_key, os.path.join(d, "rsa-pkcs1.pub"), pkcs1=True),
        "ed25519": write_public_key(ed_key, os.path.join(d, "ed25519.pub")),
        "secp256k1": write_public_key(k1_key, os.path.join(d, "secp256k1.pub")),
        "two-keys": os.path.join(d, "two-keys.pub"),
    }
    # Another key first, then the signer's: one keyPath is one key (the first PEM block)
    with open(c.keys["two-keys"], "wb") as f:
        for path in (write_public_key(other, os.path.join(d, "other.pub")), c.pub):
            with open(path, "rb") as g:
                f.write(g.read())
    c.regd = os.path.join(d, "registries.d")
    os.mkdir(c.regd)
    with open(os.path.join(c.regd, "sigstore.yaml"), "w") as f:
        f.write("docker:\n  %s:\n    use-sigstore-attachments: true\n" % demo.host)
    c.no_attach = os.path.join(d, "registries.d-none")
    os.mkdir(c.no_attach)
    reg = demo.registry

    def image(repo, sigs_for, **kw):
        copy_image(reg, "demo:latest", reg, repo + ":latest")
        for digest in digests_of(demo.client, repo):
            attach(demo.client, repo, digest, sigs_for(digest), **kw)

    name = lambda repo: "%s/%s" % (demo.host, repo)

    def signed_by(repo, *keys):
        return lambda dg: [(p, sign(k, p), SIMPLESIGNING) for k in keys for p in [cosign_payload(name(repo), dg)]]

    image("cosigned", signed_by("cosigned", c.key))
    copy_image(reg, "demo:latest", reg, "unsigned-cosign:latest")
    image("cosign-otherkey", signed_by("cosign-otherkey", other))
    image("cosign-elsewhere", lambda dg: [(p, sign(c.key, p), SIMPLESIGNING)
                                          for p in [cosign_payload(name("somewhere-else"), dg)]])
    # the payload altered after signing (its blob is what the digest names: the registry serves it as pushed)
    image("cosign-tampered", lambda dg: [(cosign_payload(name("cosign-tampered"), dg),
                                          sign(c.key, cosign_payload(name("cosign-tamperex"), dg)), SIMPLESIGNING)])
    wrong = "sha256:" + "0" * 64
    image("cosign-otherdigest", lambda dg: [(p, sign(c.key, p), SIMPLESIGNING)
                                            for p in [cosign_payload(name("cosign-otherdigest"), wrong)]])
    # a bad signature first, then a good one: any good one is enough
    image("cosign-second", signed_by("cosign-second", other, c.key))
    # each key type cosign signs with, one signature of each per digest
    image("cosign-keytypes", signed_by("cosign-keytypes", k1_key, ed_key, rsa_key))
    # good signatures, in a .sig manifest of Docker's type
    image("cosign-dockersig", signed_by("cosign-dockersig", c.key), docker_types=True)
    # Signed as `skopeo copy --all --sign-by-sigstore-private-key` signs (skopeo 1.9.3 cannot: Debian
    # stubbed it out), by containers/image itself, with the key in cosign's encrypted form; its
    # identity keeps the tag, unlike cosign's
    private = write_cosign_private_key(c.key, os.path.join(d, "cosign.key"), b"mlfs test passphrase")
    passphrase = os.path.join(d, "passphrase")
    with open(passphrase, "w") as f:
        f.write("mlfs test passphrase\n")
    wrong_passphrase = os.path.join(d, "wrong-passphrase")
    with open(wrong_passphrase, "w") as f:
        f.write("another passphrase\n")
    with pytest.raises(RuntimeError, match="decryption failed"):
        cimage_verify.sign(cimage_verify_bin, private, wrong_passphrase, c.regd, name("demo:latest"),
                           name("cimage-signed:x"))
    cimage_verify.sign(cimage_verify_bin, private, passphrase, c.regd, name("demo:latest"),
                       name("cimage-signed:latest"))
    for digest in digests_of(demo.client, "cimage-signed"):
        body, _, _ = demo.client.get_manifest("cimage-signed", digest.replace(":", "-") + ".sig")
        layers = json.loads(body)["layers"]
        assert len(layers) == 1 and layers[0]["mediaType"] == SIMPLESIGNING, (digest, body)
        payload = json.loads(demo.client.get_blob("cimage-signed", layers[0]["digest"]))
        assert payload["critical"]["identity"]["docker-reference"] == name("cimage-signed:latest"), payload
        assert payload["critical"]["image"]["docker-manifest-digest"] == digest, payload
    # an attestation (another kind of attachment, skipped) before a good signature, and alone
    attestation = json.dumps({"payloadType": "application/vnd.in-toto+json", "payload": "", "signatures": []}).encode()
    image("cosign-attestation", lambda dg: [(attestation, sign(c.key, attestation), DSSE)] +
          signed_by("cosign-attestation", c.key)(dg))
    image("cosign-attestation-only", lambda dg: [(attestation, sign(c.key, attestation), DSSE)])
    # only the index signed; and the index signed, each platform by another key
    copy_image(reg, "demo:latest", reg, "cosign-indexonly:latest")
    top = digests_of(demo.client, "cosign-indexonly")[0]
    p = cosign_payload(name("cosign-indexonly"), top)
    attach(demo.client, "cosign-indexonly", top, [(p, sign(c.key, p), SIMPLESIGNING)])
    copy_image(reg, "demo:latest", reg, "cosign-indexgood:latest")
    good_top, *instances = digests_of(demo.client, "cosign-indexgood")
    for digest in [good_top] + instances:
        attach(demo.client, "cosign-indexgood", digest,
               signed_by("cosign-indexgood", c.key if digest == good_top else other)(digest))
    # per platform: the first signed by another key, the second not at all, the others (not the index) well
    copy_image(reg, "demo:latest", reg, "cosign-perplatform:latest")
    body, _, _ = demo.client.get_manifest("cosign-perplatform", "latest")
    c.perplatform = {}
    for i, m in enumerate(json.loads(body)["manifests"]):
        plat = "%s/%s%s" % (m["platform"]["os"], m["platform"]["architecture"],
                            "/" + m["platform"]["variant"] if m["platform"].get("variant") else "")
        c.perplatform[plat] = i > 1
        if i != 1:
            attach(demo.client, "cosign-perplatform", m["digest"],
                   signed_by("cosign-perplatform", other if i == 0 else c.key)(m["digest"]))
    return c


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
    rc, err = skopeo_copy(policy, regd, ref, tmp_path)
    assert rc != 0, "Debian's skopeo accepted a sigstore signature: make this test a differential"
    if "no signature exists" in err:
        return 0
    assert "sigstore disabled" in err, err
    return err.count("sigstore disabled")


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


def mlfs_platforms(mlfs, policy, regd, ref, platforms):
    """platform -> (accepted, signed_by or the refusal), from `mlfs inspect --platform`."""
    res = {}
    for plat in platforms:
        r = mlfs("inspect", "--json", "--platform", plat, "--policy", policy, "--registries.d", regd, ref)
        res[plat] = (r.rc == 0, json.loads(r.stdout).get("signed_by", "") if r.rc == 0 else r.stderr.strip())
    return res


def case(name, repo, accepted, says=None, reference_says=None, skopeo=1, key="pub", identity=None, inline=False,
         attachments=True, requirement=None, by_digest=False):
    """One policy x image: what mlfs and the reference (containers/image,
    every platform) must answer, and what skopeo must do: find `skopeo`
    signatures (an int: it verifies none), or, where it decides without
    verifying one (a str: what its refusal says; True: accepted), answer so."""
    return dict(name=name, repo=repo, accepted=accepted, says=says, reference_says=reference_says, skopeo=skopeo,
                key=key, identity=identity, inline=inline, attachments=attachments, requirement=requirement,
                by_digest=by_digest)


NO_SIGNATURE = "A signature was required, but no signature exists"
BAD_SIGNATURE = "cryptographic signature verification failed"
CASES = [
    case("signed", "cosigned", True),
    case("signed-keydata", "cosigned", True, inline=True),
    case("no-attachments-configured", "cosigned", False, "use-sigstore-attachments: true", NO_SIGNATURE,
         skopeo=0, attachments=False),
    case("unsigned", "unsigned-cosign", False, "no signature found", NO_SIGNATURE, skopeo=0),
    case("other-key", "cosign-otherkey", False, "does not verify with the policy's key", BAD_SIGNATURE),
    case("identity-mismatch", "cosign-elsewhere", False, "signedIdentity does not accept",
         "Signature for identity %s/somewhere-else is not accepted"),
    case("tampered-payload", "cosign-tampered", False, "does not verify with the policy's key", BAD_SIGNATURE),
    case("other-digest", "cosign-otherdigest", False, "for the manifest sha256:0000",
         "Signature for digest sha256:%s does not match" % ("0" * 64)),
    case("second-signature-good", "cosign-second", True, skopeo=2),
    case("default-identity-tagless", "cosigned", False, "signedIdentity does not accept",
         "Signature for identity %s/cosigned is not accepted", identity={"type": "matchRepoDigestOrExact"}),
    # by digest, the default accepts any tag or digest of the repository, but never a tag-less identity
    case("default-identity-by-digest-tagless", "cosigned", False, "signedIdentity does not accept",
         "Signature for identity %s/cosigned is not accepted", identity={"type": "matchRepoDigestOrExact"},
         by_digest=True),
    case("reject", "cosigned", False, '": reject)', "is rejected by policy", skopeo="is rejected by policy",
         requirement={"type": "reject"}),
    case("insecure-accept-anything", "unsigned-cosign", True, skopeo=True,
         requirement={"type": "insecureAcceptAnything"}),
    case("rsa", "cosign-keytypes", True, skopeo=3, key="rsa"),
    case("rsa-pkcs1-pem", "cosign-keytypes", True, skopeo=3, key="rsa-pkcs1"),
    case("ed25519", "cosign-keytypes", True, skopeo=3, key="ed25519"),
    # Go's crypto/x509 (so containers/image) reads P-224, P-256, P-384 and P-521 keys only
    case("unsupported-curve", "cosign-keytypes", False, "secp256k1", "parsing public key", skopeo=3,
         key="secp256k1"),
    case("attestation-then-signature", "cosign-attestation", True),
    case("attestation-only", "cosign-attestation-only", False, "not a cosign simple-signing payload",
         "no signature exists (0 non-sigstore signatures, 1 sigstore non-signature attachments)", skopeo=0),
    case("signed-by-containers-image", "cimage-signed", True),
    case("signed-by-containers-image-default-identity", "cimage-signed", True,
         identity={"type": "matchRepoDigestOrExact"}),
    case("signed-by-containers-image-by-digest", "cimage-signed", True, identity={"type": "matchRepoDigestOrExact"},
         by_digest=True),
    case("signed-by-containers-image-other-key", "cimage-signed", False, "does not verify with the policy's key",
         BAD_SIGNATURE, key="rsa"),
    case("second-key-in-key-file", "cosigned", False, "does not verify with the policy's key", BAD_SIGNATURE,
         key="two-keys"),
    case("docker-typed-sig-manifest", "cosign-dockersig", False, "not an OCI image manifest",
         "unexpected MIME type for sigstore attachment manifest",
         skopeo="unexpected MIME type for sigstore attachment manifest"),
]


@pytest.mark.parametrize("c", CASES, ids=[c["name"] for c in CASES])
def test_sigstore(mlfs, mounter, cosigned, cimage_verify_bin, tmp_path, c):
    ref = "%s/%s:latest" % (cosigned.host, c["repo"])
    if c["by_digest"]:
        ref = "%s/%s@%s" % (cosigned.host, c["repo"], digests_of(cosigned.client, c["repo"])[0])
    regd = cosigned.regd if c["attachments"] else cosigned.no_attach
    req = c["requirement"] or sigstore_req(cosigned.keys[c["key"]], c["identity"], c["inline"])
    policy = write_policy(str(tmp_path), c["name"], {cosigned.host: [req]})
    expected = c["accepted"]

    # containers/image: every platform, for the reason written down
    ref_v = cimage_verify.verdicts(cimage_verify_bin, policy, regd, ref)
    assert sorted(ref_v) == sorted(cosigned.platforms), ref_v
    for plat, (accepted, _, reason) in ref_v.items():
        assert accepted == expected, (plat, reason)
        if not expected:
            assert c["reference_says"].replace("%s", cosigned.host) in reason, (plat, reason)

    # skopeo 1.9.3 (the host's platform): the attachments it reads, or its own answer
    if isinstance(c["skopeo"], int) and not isinstance(c["skopeo"], bool):
        assert skopeo_signatures(policy, regd, ref, tmp_path) == c["skopeo"], "skopeo reads the layout differently"
    else:
        rc, err = skopeo_copy(policy, regd, ref, tmp_path)
        assert (rc == 0) == (c["skopeo"] is True), err
        assert c["skopeo"] is True or c["skopeo"] in err, err

    # mlfs: every command on the host's platform, then each platform
    answers, line = mlfs_answers(mlfs, mounter, tmp_path, policy, regd, ref)
    assert answers == {"inspect": expected, "export": expected, "pull": expected, "mount": expected}, (answers, line)
    if not expected:
        describes = "reject" if c["requirement"] else "sigstoreSigned key"
        assert '(scope "%s": %s' % (cosigned.host, describes) in line and ref in line, line
        assert c["says"] in line, line
    per_platform = mlfs_platforms(mlfs, policy, regd, ref, cosigned.platforms)
    assert {p: a for p, (a, _) in per_platform.items()} == {p: a for p, (a, _, _) in ref_v.items()}, \
        (per_platform, dict(ref_v))


def test_each_platform(mlfs, mounter, cosigned, cimage_verify_bin, tmp_path):
    """One platform signed by another key, one not signed, the others
    well: each platform gets its own answer, the same from mlfs and
    containers/image (which checks each instance of a list, never the
    list: copy/copy.go), and a mount of each follows it."""
    ref = "%s/cosign-perplatform:latest" % cosigned.host
    policy = write_policy(str(tmp_path), "p", {cosigned.host: [sigstore_req(cosigned.pub)]})
    ref_v = cimage_verify.verdicts(cimage_verify_bin, policy, cosigned.regd, ref)
    assert ref_v.rc != 0
    assert {p: a for p, (a, _, _) in ref_v.items()} == cosigned.perplatform, dict(ref_v)
    per_platform = mlfs_platforms(mlfs, policy, cosigned.regd, ref, cosigned.platforms)
    assert {p: a for p, (a, _) in per_platform.items()} == cosigned.perplatform, per_platform
    for plat, (accepted, digest, reason) in ref_v.items():
        if accepted:
            assert digest in per_platform[plat][1], (plat, per_platform[plat])
        else:
            assert (BAD_SIGNATURE if plat == cosigned.platforms[0] else NO_SIGNATURE) in reason, (plat, reason)
    for plat in (cosigned.platforms[0], cosigned.platforms[-1]):
        m = mounter.mount(ref, "platform=" + plat, "policy=" + policy, "registries.d=" + cosigned.regd, check=False)
        assert m.ok == cosigned.perplatform[plat], (plat, m.stderr())
        if m.ok:
            m.unmount()


@pytest.mark.parametrize("repo,platforms_say", [("cosign-indexonly", NO_SIGNATURE),
                                                 ("cosign-indexgood", BAD_SIGNATURE)])
def test_index_signature_accepted(mlfs, cosigned, cimage_verify_bin, tmp_path, repo, platforms_say):
    """The index is signed, each platform's manifest not (or by another
    key): mlfs accepts the index's signature (the index names the
    platform's manifest by digest; cosign signs whatever digest it is
    given, an index is common); containers/image checks the platform's
    manifest alone and refuses.  The one place mlfs deliberately differs
    from it: written down here, platform by platform."""
    ref = "%s/%s:latest" % (cosigned.host, repo)
    policy = write_policy(str(tmp_path), "p", {cosigned.host: [sigstore_req(cosigned.pub)]})
    top = digests_of(cosigned.client, repo)[0]
    ref_v = cimage_verify.verdicts(cimage_verify_bin, policy, cosigned.regd, ref)
    assert sorted(ref_v) == sorted(cosigned.platforms), ref_v
    for plat, (accepted, _, reason) in ref_v.items():
        assert not accepted and platforms_say in reason, (plat, reason)
    per_platform = mlfs_platforms(mlfs, policy, cosigned.regd, ref, cosigned.platforms)
    for plat, (accepted, signed_by) in per_platform.items():
        assert accepted and "(manifest %s)" % top in signed_by, (plat, signed_by)
    r = mlfs("inspect", "--policy", policy, "--registries.d", cosigned.regd, ref)
    assert_ok(r)
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


def test_offline_after_the_key_changed(mlfs, mlfs_env, cosigned, cimage_verify_bin, demo, tmp_path):
    """A .sig with two signatures, by the old key and by the new one.  Online
    under the old key's policy the first verifies, and both are kept (the
    second only fetched), so offline under the new key's policy accepts as
    containers/image does online."""
    repo = "cosign-rotated"
    copy_image(demo.registry, "demo:latest", demo.registry, repo + ":latest")
    name = "%s/%s" % (cosigned.host, repo)
    new = ec.generate_private_key(ec.SECP256R1())
    new_pub = os.path.join(str(tmp_path), "new.pub")
    with open(new_pub, "wb") as f:
        f.write(new.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    for digest in digests_of(demo.client, repo):
        p = cosign_payload(name, digest)
        attach(demo.client, repo, digest, [(p, sign(cosigned.key, p), SIMPLESIGNING), (p, sign(new, p), SIMPLESIGNING)])
    ref = name + ":latest"
    old_policy = write_policy(str(tmp_path), "old", {cosigned.host: [sigstore_req(cosigned.pub)]})
    new_policy = write_policy(str(tmp_path), "new", {cosigned.host: [sigstore_req(new_pub)]})
    for policy in (old_policy, new_policy):
        ref_v = cimage_verify.verdicts(cimage_verify_bin, policy, cosigned.regd, ref)
        assert ref_v.rc == 0, dict(ref_v)
    assert_ok(mlfs("pull", "--policy", old_policy, "--registries.d", cosigned.regd, ref))
    kept = kept_signatures(mlfs_env)
    assert len(kept) == 1, kept
    with open(os.path.join(mlfs_env["MLFS_CACHE"], "sigs", "sha256", kept[0])) as f:
        assert len(json.load(f)["signatures"]) == 2
    before = len(demo.registry.requests())
    assert_ok(mlfs("inspect", "--offline", "--policy", new_policy, "--registries.d", cosigned.regd, ref))
    assert_ok(mlfs("inspect", "--offline", "--policy", old_policy, "--registries.d", cosigned.regd, ref))
    assert len(demo.registry.requests()) == before, demo.registry.requests()[before:]


def test_fulcio_not_supported(mlfs, cosigned, tmp_path):
    ref = "%s/cosigned:latest" % cosigned.host
    policy = write_policy(str(tmp_path), "p", {cosigned.host: [
        {"type": "sigstoreSigned", "fulcio": {"caPath": "/ca.pem", "oidcIssuer": "https://issuer.example",
                                              "subjectEmail": "a@example.com"},
         "rekorPublicKeyPath": "/rekor.pub"}]})
    r = mlfs("inspect", "--policy", policy, "--registries.d", cosigned.regd, ref)
    assert r.rc != 0 and "Fulcio certificates and Rekor entries are not supported yet" in r.stderr, r.stderr
