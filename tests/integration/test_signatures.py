"""Trust, second slice: GPG simple signing, with the tools users sign with.

A key made by gpg itself (`gpg --batch --passphrase '' --quick-gen-key`),
images signed by `skopeo copy --all --sign-by FPR` into a lookaside store
that registries.d(5) names (skopeo writes one signature per platform
manifest and one for the index), and a policy whose scope requires
`signedBy` that key.  Then `mlfs inspect`, `export`, `pull` and a mount
must accept the signed image and refuse, each with one line naming the
policy scope and what was wrong, a non-zero exit, no mount and nothing in
the cache:

- an unsigned image;
- an image signed by another key;
- signatures made for another repository (identity mismatch);
- a tampered signature file;
- signatures that name another digest (with the right identity).

Every case is also asked of skopeo with the same policy and registries.d
(`skopeo copy docker://REF oci:DIR`): both must give the same answer, and
the answer each case must give is written down, so that two tools failing
for some other reason cannot agree by accident.  (skopeo checks the
platform's manifest only; mlfs also accepts a signature over the index,
which no case here has alone.)
"""

import http.server
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from helpers import assert_ok
from mounts import is_mounted
from trust import skopeo_copy, write_policy

SIGNER = "mlfs test signer <signer@example.invalid>"
OTHER = "mlfs other signer <other@example.invalid>"


def gpg(home, *args):
    r = subprocess.run(["gpg", "--homedir", home, "--batch"] + list(args), capture_output=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError("gpg %s failed: %s" % (" ".join(args), r.stderr.decode(errors="replace")))
    return r.stdout


def make_key(home, name, pub_path):
    gpg(home, "--passphrase", "", "--quick-gen-key", name, "default", "default", "never")
    out = gpg(home, "--with-colons", "--list-secret-keys", name).decode()
    fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
    with open(pub_path, "wb") as f:
        f.write(gpg(home, "--export", "--armor", fpr))
    return fpr


def write_registries_d(path, host, lookaside):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "test.yaml"), "w") as f:
        f.write("# written by test_signatures.py\ndocker:\n  %s:\n    lookaside: %s\n" % (host, lookaside))
    return path


class Signed:
    pass


def image_digests(client, repo):
    """The index digest and its platforms' manifest digests."""
    body, _, digest = client.get_manifest(repo, "latest")
    return [digest] + [m["digest"] for m in json.loads(body)["manifests"]]


def sig_dir(lookaside, repo, digest):
    return os.path.join(lookaside, "%s@%s" % (repo, digest.replace(":", "=")))


@pytest.fixture(scope="module")
def signing(demo, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("signing"))
    s = Signed()
    s.host = demo.host
    s.client = demo.client
    gnupg = os.path.join(d, "gnupg")
    os.mkdir(gnupg, 0o700)
    s.pub = os.path.join(d, "signer.asc")
    s.other_pub = os.path.join(d, "other.asc")
    s.fpr = make_key(gnupg, SIGNER, s.pub)
    s.other_fpr = make_key(gnupg, OTHER, s.other_pub)
    s.lookaside = os.path.join(d, "lookaside")
    s.regd = write_registries_d(os.path.join(d, "registries.d"), demo.host, "file://" + s.lookaside)
    env = dict(os.environ, GNUPGHOME=gnupg)
    s.gnupg = gnupg

    def push(src, dst, fpr=None):
        args = ["skopeo", "--insecure-policy", "--registries.d", s.regd, "copy", "-q", "--all",
                "--src-tls-verify=false", "--dest-tls-verify=false"]
        if fpr:
            args += ["--sign-by", fpr]
        args += ["docker://%s/%s" % (demo.host, src), "docker://%s/%s" % (demo.host, dst)]
        r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr

    push("demo:latest", "signed:latest", s.fpr)
    # skopeo signed the index and each platform's manifest
    s.digests = image_digests(demo.client, "signed")
    for digest in s.digests:
        assert os.path.isfile(os.path.join(sig_dir(s.lookaside, "signed", digest), "signature-1")), digest
    push("demo:latest", "unsigned:latest")
    push("demo:latest", "wrongkey:latest", s.other_fpr)
    # Another repository's signatures (same digests) put where idmismatch's are looked for
    push("demo:latest", "elsewhere:latest", s.fpr)
    push("demo:latest", "idmismatch:latest")
    for digest in image_digests(demo.client, "idmismatch"):
        shutil.copytree(sig_dir(s.lookaside, "elsewhere", digest), sig_dir(s.lookaside, "idmismatch", digest))
    # A byte of each signature flipped
    push("demo:latest", "tampered:latest", s.fpr)
    for digest in image_digests(demo.client, "tampered"):
        path = os.path.join(sig_dir(s.lookaside, "tampered", digest), "signature-1")
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            data[len(data) // 2] ^= 0x20
            f.seek(0)
            f.write(data)
    # Signatures for otherdigest:latest, right identity, over another image's
    # digest (demo:list's index), put where this image's are looked for
    push("demo:list", "otherdigest:latest", s.fpr)
    wrong = os.path.join(sig_dir(s.lookaside, "otherdigest", image_digests(demo.client, "otherdigest")[0]),
                         "signature-1")
    with open(wrong, "rb") as f:
        wrong_sig = f.read()
    push("demo:latest", "otherdigest:latest")
    for digest in image_digests(demo.client, "otherdigest"):
        os.makedirs(sig_dir(s.lookaside, "otherdigest", digest), exist_ok=True)
        with open(os.path.join(sig_dir(s.lookaside, "otherdigest", digest), "signature-1"), "wb") as f:
            f.write(wrong_sig)
    s.dir = d
    yield s
    # skopeo's signing started a gpg-agent for this home: it must not outlive the tests.
    subprocess.run(["gpgconf", "--homedir", gnupg, "--kill", "gpg-agent"], capture_output=True, timeout=30)


def signed_by(key, identity=None):
    req = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": key}
    if identity:
        req["signedIdentity"] = identity
    return req


def skopeo_accepts(policy, regd, ref, tmp_path):
    rc, err = skopeo_copy(policy, regd, ref, tmp_path)
    return rc == 0, err.strip()


def assert_nothing_cached(mlfs, ref):
    r = mlfs("inspect", "--insecure-policy", "--offline", ref)
    assert r.rc != 0 and "not in the cache" in r.stderr, "a refused image left something in the cache: " + r.stderr


def mlfs_answers(mlfs, mounter, tmp_path, policy, regd, ref):
    """{"inspect", "export", "pull", "mount"} -> accepted?  Each refusal is
    checked: one line naming the policy, non-zero exit, no mount left, and
    nothing in the cache.  Returns the answers and the refusal line."""
    answers, line = {}, None
    opts = ["--policy", policy, "--registries.d", regd]
    out = os.path.join(str(tmp_path), "export.tar")
    for cmd, extra in (("inspect", []), ("export", ["-o", out]), ("pull", [])):
        r = mlfs(cmd, *(opts + extra + [ref]))
        answers[cmd] = r.rc == 0
        if r.rc != 0:
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("mlfs: error: "), r.stderr
            assert policy in lines[0], r.stderr
            line = lines[0]
            assert_nothing_cached(mlfs, ref)
    m = mounter.mount(ref, "policy=" + policy, "registries.d=" + regd, check=False)
    answers["mount"] = m.ok
    if m.ok:
        assert os.listdir(m.mountpoint), "the accepted image mounted empty"
        m.unmount()
    else:
        assert m.result.rc != 0 and policy in m.stderr(), m.stderr()
        assert not is_mounted(m.mountpoint)
        assert_nothing_cached(mlfs, ref)
    return answers, line


# (case, repository, signedIdentity or None, expected, what the refusal says)
CASES = [
    ("signed", "signed", None, True, None),
    ("unsigned", "unsigned", None, False, "no signature found"),
    ("wrong-key", "wrongkey", None, False, "which is not one of the policy's"),
    ("identity-mismatch", "idmismatch", None, False, "signedIdentity does not accept"),
    ("tampered", "tampered", None, False, None),
    ("other-digest", "otherdigest", None, False, "for the manifest sha256:"),
    ("match-repository-other-repo", "idmismatch", {"type": "matchRepository"}, False,
     "signedIdentity does not accept"),
    ("exact-reference", "idmismatch", lambda h: {"type": "exactReference", "dockerReference": h + "/elsewhere:latest"},
     True, None),
    ("exact-repository", "idmismatch", lambda h: {"type": "exactRepository", "dockerRepository": h + "/elsewhere"},
     True, None),
    ("remap-identity", "idmismatch", lambda h: {"type": "remapIdentity", "prefix": h + "/idmismatch",
                                                "signedPrefix": h + "/elsewhere"}, True, None),
    ("exact-reference-wrong", "signed", lambda h: {"type": "exactReference", "dockerReference": h + "/signed:v2"},
     False, "signedIdentity does not accept"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gpg_differential(mlfs, mounter, signing, tmp_path, case):
    name, repo, identity, expected, says = case
    if callable(identity):
        identity = identity(signing.host)
    ref = "%s/%s:latest" % (signing.host, repo)
    policy = write_policy(str(tmp_path), name, {signing.host: [signed_by(signing.pub, identity)]})
    sk, sk_err = skopeo_accepts(policy, signing.regd, ref, tmp_path)
    assert sk == expected, "skopeo %s %s: %s" % ("accepted" if sk else "refused", ref, sk_err)
    answers, line = mlfs_answers(mlfs, mounter, tmp_path, policy, signing.regd, ref)
    assert answers == {"inspect": sk, "export": sk, "pull": sk, "mount": sk}, (answers, line, sk_err)
    if not expected:
        assert ('(scope "%s": signedBy GPGKeys keyPath %s)' % (signing.host, signing.pub)) in line, line
        assert ref in line, line
        if says:
            assert says in line, line
        if name == "tampered":
            # where the flipped byte lands decides what gpg sees: a bad signature, or no signature at all
            assert "signature-1 of sha256:" in line and ("signature is bad" in line or "not an OpenPGP" in line
                                                          or "no OpenPGP signature" in line), line


def test_inspect_says_who_signed(mlfs, signing, tmp_path):
    ref = "%s/signed:latest" % signing.host
    policy = write_policy(str(tmp_path), "p", {signing.host: [signed_by(signing.pub)]})
    r = mlfs("inspect", "--policy", policy, "--registries.d", signing.regd, ref)
    assert_ok(r)
    assert signing.fpr in r.stdout, r.stdout
    r = mlfs("inspect", "--json", "--policy", policy, "--registries.d", signing.regd, ref)
    assert_ok(r)
    sig = json.loads(r.stdout)["signed_by"]
    assert signing.fpr in sig and ref in sig, sig
    # No policy requirement: nothing to report
    r = mlfs("inspect", "--json", "--insecure-policy", ref)
    assert_ok(r)
    assert "signed_by" not in json.loads(r.stdout)


def test_keydata_and_several_keys(mlfs, signing, tmp_path):
    """keyData (inline) and keyPaths: any of the keys may have signed."""
    import base64
    ref = "%s/signed:latest" % signing.host
    with open(signing.pub, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    inline = write_policy(str(tmp_path), "inline",
                          {signing.host: [{"type": "signedBy", "keyType": "GPGKeys", "keyData": data}]})
    assert_ok(mlfs("inspect", "--policy", inline, "--registries.d", signing.regd, ref))
    both = write_policy(str(tmp_path), "both", {signing.host: [
        {"type": "signedBy", "keyType": "GPGKeys", "keyPaths": [signing.other_pub, signing.pub]}]})
    assert_ok(mlfs("inspect", "--policy", both, "--registries.d", signing.regd, ref))
    # A key file that is not there: refused, naming it
    missing = write_policy(str(tmp_path), "missing", {signing.host: [signed_by("/nonexistent/key.asc")]})
    r = mlfs("inspect", "--policy", missing, "--registries.d", signing.regd, ref)
    assert r.rc != 0 and "/nonexistent/key.asc" in r.stderr, r.stderr


def test_no_gpg_home_left_behind(mlfs, signing, tmp_path):
    tmp = os.path.join(str(tmp_path), "tmp")
    os.mkdir(tmp)
    ref = "%s/signed:latest" % signing.host
    policy = write_policy(str(tmp_path), "p", {signing.host: [signed_by(signing.pub)]})
    assert_ok(mlfs("inspect", "--policy", policy, "--registries.d", signing.regd, ref, env_extra={"TMPDIR": tmp}))
    r = mlfs("inspect", "--policy", policy, "--registries.d", signing.regd, "%s/wrongkey:latest" % signing.host,
             env_extra={"TMPDIR": tmp})
    assert r.rc != 0
    assert os.listdir(tmp) == [], "temporary GPG homes left: %r" % os.listdir(tmp)


class Served:
    """A directory served over HTTP on loopback, counting the requests."""

    def __init__(self, root):
        self.hits = []
        hits = self.hits

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=root, **kw)

            def log_message(self, *a):
                pass

            def do_GET(self):
                hits.append(self.path)
                super().do_GET()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def kept_signatures(mlfs_env):
    d = os.path.join(mlfs_env["MLFS_CACHE"], "sigs", "sha256")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_http_lookaside_and_offline(mlfs, mlfs_env, mounter, signing, demo, tmp_path):
    """The same store served over HTTP on loopback.  Online, signatures
    are fetched fresh every time and those that verify are kept in the
    cache; offline, the kept ones are verified again against the policy
    of the day (nothing asked of the store or the registry), and with none
    kept the refusal says to run once online."""
    served = Served(signing.lookaside)
    try:
        regd = write_registries_d(os.path.join(str(tmp_path), "regd-http"), signing.host, served.url)
        policy = write_policy(str(tmp_path), "p", {signing.host: [signed_by(signing.pub)]})
        ref = "%s/signed:latest" % signing.host
        sk, sk_err = skopeo_accepts(policy, regd, ref, tmp_path)
        assert sk, sk_err
        r = mlfs("inspect", "--policy", policy, "--registries.d", regd, "%s/unsigned:latest" % signing.host)
        assert r.rc != 0 and "no signature found (none at %s/unsigned@sha256=" % served.url in r.stderr, r.stderr
        assert kept_signatures(mlfs_env) == [], "a refused image's (missing) signatures left files"

        # The image cached without its signatures: offline, nothing to verify.
        assert_ok(mlfs("pull", "--insecure-policy", ref))
        r = mlfs("inspect", "--offline", "--policy", policy, "--registries.d", regd, ref)
        lines = r.stderr.strip().splitlines()
        assert r.rc != 0 and len(lines) == 1 and policy in lines[0], r.stderr
        assert ("no signature kept for offline use (signatures from %s/signed are kept when they verify online: "
                "run once online, e.g. mlfs pull %s)" % (served.url, ref)) in lines[0], r.stderr
        m = mounter.mount(ref, "offline", "policy=" + policy, "registries.d=" + regd, check=False)
        assert not m.ok and not is_mounted(m.mountpoint)

        # Online: fetched, verified, kept (the platform's manifest's signature: the first that verifies).
        hits = len(served.hits)
        r = mlfs("inspect", "--json", "--policy", policy, "--registries.d", regd, ref)
        assert_ok(r)
        manifest = json.loads(r.stdout)["manifest_digest"]
        assert len(served.hits) > hits
        kept = kept_signatures(mlfs_env)
        assert len(kept) == 1 and kept[0].startswith(manifest.split(":")[1] + ".lookaside-"), kept
        du = json.loads(mlfs("cache", "du", "--json").stdout)
        assert du["meta"] >= os.path.getsize(os.path.join(mlfs_env["MLFS_CACHE"], "sigs", "sha256", kept[0]))

        # Offline: accepted from what was kept, without a request to the store or the registry.
        hits, reg_requests = len(served.hits), len(demo.registry.requests())
        r = mlfs("inspect", "--json", "--offline", "--policy", policy, "--registries.d", regd, ref)
        assert_ok(r)
        assert signing.fpr in json.loads(r.stdout)["signed_by"], r.stdout
        out = os.path.join(str(tmp_path), "offline.tar")
        assert_ok(mlfs("export", "--offline", "--policy", policy, "--registries.d", regd, "-o", out, ref))
        m = mounter.mount(ref, "offline", "policy=" + policy, "registries.d=" + regd)
        assert m.ok and os.listdir(m.mountpoint)
        m.unmount()
        assert len(served.hits) == hits, served.hits[hits:]
        assert len(demo.registry.requests()) == reg_requests, demo.registry.requests()[reg_requests:]

        # The policy changed since: the kept signature is checked again, never its verdict.
        other = write_policy(str(tmp_path), "other", {signing.host: [signed_by(signing.other_pub)]})
        r = mlfs("inspect", "--offline", "--policy", other, "--registries.d", regd, ref)
        assert r.rc != 0 and other in r.stderr and "which is not one of the policy's" in r.stderr, r.stderr
        assert len(served.hits) == hits

        # offline with the file:// store: verified from the disk, as ever
        assert_ok(mlfs("inspect", "--offline", "--policy", policy, "--registries.d", signing.regd, ref))
    finally:
        served.stop()


def test_revoked_signature_not_kept(mlfs, mlfs_env, signing, tmp_path):
    """A fresh fetch replaces what was kept: signatures removed from the
    store take effect online at once, and offline after that too."""
    store = os.path.join(str(tmp_path), "store")
    shutil.copytree(signing.lookaside, store)
    served = Served(store)
    try:
        regd = write_registries_d(os.path.join(str(tmp_path), "regd"), signing.host, served.url)
        policy = write_policy(str(tmp_path), "p", {signing.host: [signed_by(signing.pub)]})
        ref = "%s/signed:latest" % signing.host
        assert_ok(mlfs("pull", "--policy", policy, "--registries.d", regd, ref))
        assert len(kept_signatures(mlfs_env)) == 1
        assert_ok(mlfs("inspect", "--offline", "--policy", policy, "--registries.d", regd, ref))
        for d in os.listdir(store):
            if d.startswith("signed@"):
                shutil.rmtree(os.path.join(store, d))
        r = mlfs("inspect", "--policy", policy, "--registries.d", regd, ref)
        assert r.rc != 0 and "no signature found" in r.stderr, r.stderr
        assert kept_signatures(mlfs_env) == []
        r = mlfs("inspect", "--offline", "--policy", policy, "--registries.d", regd, ref)
        assert r.rc != 0 and "no signature kept for offline use" in r.stderr, r.stderr
    finally:
        served.stop()


def test_offline_after_the_key_changed(mlfs, mlfs_env, signing, tmp_path):
    """A signer's key rotated: the store has signature-1 by the old key and
    signature-2 by the new one.  Online under the old key's policy, all the
    signatures fetched are kept, not only the one that verified, so offline
    under the new key's policy finds what online would (the kept bytes are
    checked against the policy of the day, as ever)."""
    env = dict(os.environ, GNUPGHOME=signing.gnupg)
    ref = "%s/rotated:latest" % signing.host
    stores = {}
    for name, fpr in (("old", signing.fpr), ("new", signing.other_fpr)):
        stores[name] = os.path.join(str(tmp_path), name)
        regd = write_registries_d(os.path.join(str(tmp_path), "regd-" + name), signing.host,
                                  "file://" + stores[name])
        r = subprocess.run(["skopeo", "--insecure-policy", "--registries.d", regd, "copy", "-q", "--all",
                            "--src-tls-verify=false", "--dest-tls-verify=false", "--sign-by", fpr,
                            "docker://%s/demo:latest" % signing.host, "docker://" + ref],
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    store = os.path.join(str(tmp_path), "store")
    shutil.copytree(stores["old"], store)
    for d in os.listdir(stores["new"]):
        shutil.copy(os.path.join(stores["new"], d, "signature-1"), os.path.join(store, d, "signature-2"))
    old_policy = write_policy(str(tmp_path), "old", {signing.host: [signed_by(signing.pub)]})
    new_policy = write_policy(str(tmp_path), "new", {signing.host: [signed_by(signing.other_pub)]})
    served = Served(store)
    try:
        regd = write_registries_d(os.path.join(str(tmp_path), "regd-http"), signing.host, served.url)
        for policy in (old_policy, new_policy):
            sk, sk_err = skopeo_accepts(policy, regd, ref, tmp_path)
            assert sk, sk_err
        assert_ok(mlfs("pull", "--policy", old_policy, "--registries.d", regd, ref))
    finally:
        served.stop()
    kept = kept_signatures(mlfs_env)
    assert len(kept) == 1, kept
    with open(os.path.join(mlfs_env["MLFS_CACHE"], "sigs", "sha256", kept[0])) as f:
        assert len(json.load(f)["signatures"]) == 2
    r = mlfs("inspect", "--json", "--offline", "--policy", new_policy, "--registries.d", regd, ref)
    assert_ok(r)
    assert signing.other_fpr in json.loads(r.stdout)["signed_by"], r.stdout
    assert_ok(mlfs("inspect", "--offline", "--policy", old_policy, "--registries.d", regd, ref))


def pull_signed_over_http(mlfs, signing, tmp_path):
    """`mlfs pull` of the signed image with its signatures from an HTTP
    store: they are kept in the cache.  Returns the reference."""
    served = Served(signing.lookaside)
    try:
        regd = write_registries_d(os.path.join(str(tmp_path), "regd"), signing.host, served.url)
        policy = write_policy(str(tmp_path), "p", {signing.host: [signed_by(signing.pub)]})
        ref = "%s/signed:latest" % signing.host
        assert_ok(mlfs("pull", "--policy", policy, "--registries.d", regd, ref))
    finally:
        served.stop()
    return ref


def test_kept_signatures_go_with_the_image(mlfs, mlfs_env, signing, tmp_path):
    """`mlfs cache gc` removes the kept signatures with their image's metadata."""
    ref = pull_signed_over_http(mlfs, signing, tmp_path)
    kept = kept_signatures(mlfs_env)
    assert len(kept) == 1
    # The image's record resolved 40 days ago, its layers evicted: its metadata goes, signatures included.
    ref_file = os.path.join(mlfs_env["MLFS_CACHE"], "refs", signing.host, "signed", "latest")
    old = time.time() - 40 * 86400
    os.utime(ref_file, (old, old))
    r = mlfs("cache", "gc", "--max", "0")
    assert_ok(r)
    assert "removed reference %s" % ref in r.stdout, r.stdout
    assert "removed the signatures of sha256:%s kept for offline use (1 file)" % kept[0].split(".")[0] in r.stdout, \
        r.stdout
    assert kept_signatures(mlfs_env) == []
    # A kept signature whose manifest is gone some other way: swept by gc.
    sigs = os.path.join(mlfs_env["MLFS_CACHE"], "sigs", "sha256")
    with open(os.path.join(sigs, kept[0]), "w") as f:
        f.write("{}")
    r = mlfs("cache", "gc")
    assert_ok(r)
    assert "removed 1 file of signatures whose manifest is no longer cached" in r.stdout, r.stdout
    assert kept_signatures(mlfs_env) == []


def test_digest_signed_in_sha512(mlfs, mounter, signing, tmp_path):
    """A signature that names the manifest by its sha512 digest (where the
    registry names it by sha256) is refused: containers/image's
    manifest.MatchesDigest compares with the manifest's sha256 digest only
    ("This should eventually support various digest types"), so skopeo
    refuses it, and so does mlfs.  The payloads are signed with gpg --sign,
    as containers/image's gpgme signing does."""
    repo = "sha512signed"
    ref = "%s/%s:latest" % (signing.host, repo)
    copy = subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--all", "--src-tls-verify=false",
                           "--dest-tls-verify=false", "docker://%s/demo:latest" % signing.host, "docker://" + ref],
                          capture_output=True, text=True, timeout=300)
    assert copy.returncode == 0, copy.stderr
    store = os.path.join(str(tmp_path), "store")
    regd = write_registries_d(os.path.join(str(tmp_path), "regd"), signing.host, "file://" + store)
    policy = write_policy(str(tmp_path), "p", {signing.host: [signed_by(signing.pub)]})

    for digest in image_digests(signing.client, repo)[1:]:
        body = signing.client.get_manifest(repo, digest)[0]
        hashed = hashlib.sha512(body).hexdigest()
        payload = json.dumps({"critical": {"type": "atomic container signature",
                                           "image": {"docker-manifest-digest": "sha512:" + hashed},
                                           "identity": {"docker-reference": ref}},
                              "optional": {"creator": "test_signatures.py", "timestamp": 1700000000}}).encode()
        d = sig_dir(store, repo, digest)
        os.makedirs(d, exist_ok=True)
        src = os.path.join(str(tmp_path), "payload.json")
        with open(src, "wb") as f:
            f.write(payload)
        out = os.path.join(d, "signature-1")
        gpg(signing.gnupg, "--pinentry-mode", "loopback", "--passphrase", "", "-u", signing.fpr,
            "--sign", "--output", out, src)
    sk, sk_err = skopeo_accepts(policy, regd, ref, tmp_path)
    assert not sk and "does not match" in sk_err, sk_err
    answers, line = mlfs_answers(mlfs, mounter, tmp_path, policy, regd, ref)
    assert answers == {"inspect": sk, "export": sk, "pull": sk, "mount": sk}, (answers, line, sk_err)
    assert "for the manifest sha512:" in line, line


def test_cache_ls_and_verify_show_kept_signatures(mlfs, mlfs_env, signing, tmp_path):
    """`cache ls` counts the signatures kept for each image; `cache verify`
    checks their files, and removes a damaged one (exit 1), as it does a
    damaged layer."""
    ref = pull_signed_over_http(mlfs, signing, tmp_path)
    ls = json.loads(mlfs("cache", "ls", "--json").stdout)
    assert [im["signatures_kept"] for im in ls if im["reference"] == ref] == [1], ls
    r = mlfs("cache", "ls")
    assert_ok(r)
    assert "signatures: 1 kept for offline use" in r.stdout, r.stdout
    r = mlfs("cache", "verify")
    assert_ok(r)
    assert "verified 1 file of signatures kept for offline use: 1 sound, 0 broken" in r.stdout, r.stdout
    # Moved under another image's name: its content no longer matches, removed.
    sigs = os.path.join(mlfs_env["MLFS_CACHE"], "sigs", "sha256")
    kept = kept_signatures(mlfs_env)
    moved = os.path.join(sigs, "0" * 64 + kept[0][64:])
    os.rename(os.path.join(sigs, kept[0]), moved)
    r = mlfs("cache", "verify")
    assert r.rc == 1, r.stdout + r.stderr
    assert "removed kept signatures %s: its name does not match its content" % moved in r.stdout, r.stdout
    assert kept_signatures(mlfs_env) == []


def test_registries_d_errors(mlfs, signing, tmp_path):
    ref = "%s/signed:latest" % signing.host
    policy = write_policy(str(tmp_path), "p", {signing.host: [signed_by(signing.pub)]})
    bad = os.path.join(str(tmp_path), "bad-regd")
    os.mkdir(bad)
    with open(os.path.join(bad, "a.yaml"), "w") as f:
        f.write("docker:\n  %s:\n    lookaside: [not, a, url]\n" % signing.host)
    r = mlfs("inspect", "--policy", policy, "--registries.d", bad, ref)
    assert r.rc != 0 and "a.yaml" in r.stderr and "must be a string" in r.stderr, r.stderr
    # The same scope in two files: refused, as containers/image does
    twice = os.path.join(str(tmp_path), "twice")
    os.mkdir(twice)
    for name in ("a.yaml", "b.yaml"):
        with open(os.path.join(twice, name), "w") as f:
            f.write("docker:\n  %s:\n    lookaside: file://%s\n" % (signing.host, signing.lookaside))
    r = mlfs("inspect", "--policy", policy, "--registries.d", twice, ref)
    assert r.rc != 0 and "also defined in" in r.stderr, r.stderr
    # The older "sigstore:" key, in default-docker, works as lookaside
    old = os.path.join(str(tmp_path), "old")
    os.mkdir(old)
    with open(os.path.join(old, "x.yaml"), "w") as f:
        f.write("default-docker:\n  sigstore: file://%s\n" % signing.lookaside)
    assert_ok(mlfs("inspect", "--policy", policy, "--registries.d", old, ref))
    # A more specific scope without a lookaside falls through to one that has it
    specific = os.path.join(str(tmp_path), "specific")
    os.mkdir(specific)
    with open(os.path.join(specific, "x.yaml"), "w") as f:
        f.write("docker:\n  %s/signed:\n    lookaside: file:///nonexistent\n  %s:\n    lookaside: file://%s\n"
                % (signing.host, signing.host, signing.lookaside))
    r = mlfs("inspect", "--policy", policy, "--registries.d", specific, ref)
    assert r.rc != 0 and "none at file:///nonexistent/signed@sha256=" in r.stderr, r.stderr


def test_every_platform(mlfs, mounter, signing, demo, tmp_path):
    """skopeo copy --all --sign-by signs each platform's manifest: each is
    accepted for its own digest (what a board of that platform mounts);
    a platform whose signature is removed is refused, the others not."""
    policy = write_policy(str(tmp_path), "p", {signing.host: [signed_by(signing.pub)]})
    ref = "%s/signed:latest" % signing.host
    platforms = [p for p, _ in demo.index["platforms"]]
    assert len(platforms) > 1
    body, _, _ = signing.client.get_manifest("signed", "latest")
    by_platform = {"%s/%s%s" % (m["platform"]["os"], m["platform"]["architecture"],
                                "/" + m["platform"]["variant"] if m["platform"].get("variant") else ""): m["digest"]
                   for m in json.loads(body)["manifests"]}
    for plat in platforms:
        r = mlfs("inspect", "--json", "--platform", plat, "--policy", policy, "--registries.d", signing.regd, ref)
        assert_ok(r)
        j = json.loads(r.stdout)
        assert j["manifest_digest"] == by_platform[plat] and by_platform[plat] in j["signed_by"], (plat, j)
    m = mounter.mount(ref, "platform=" + platforms[-1], "policy=" + policy, "registries.d=" + signing.regd)
    assert m.ok and os.listdir(m.mountpoint)
    m.unmount()
    # One platform's signature gone, and the index's: that platform is refused
    d = os.path.join(str(tmp_path), "lookaside")
    shutil.copytree(signing.lookaside, d)
    shutil.rmtree(sig_dir(d, "signed", by_platform[platforms[0]]))
    shutil.rmtree(sig_dir(d, "signed", image_digests(signing.client, "signed")[0]))
    regd = write_registries_d(os.path.join(str(tmp_path), "regd"), signing.host, "file://" + d)
    r = mlfs("inspect", "--platform", platforms[0], "--policy", policy, "--registries.d", regd, ref)
    assert r.rc != 0 and "no signature found" in r.stderr, r.stderr
    assert_ok(mlfs("inspect", "--platform", platforms[1], "--policy", policy, "--registries.d", regd, ref))
