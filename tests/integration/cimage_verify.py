"""The reference for sigstore policies: containers/image 5.23's own policy
check (Debian's, with the sigstore verification Debian stubs out put back;
tests/reference/cimage-verify/README.md says why and how), as `skopeo copy
--all` runs it: one verdict per platform instance.

The Go build cache is kept in MLFS_GOCACHE (default
/var/cache/mlfs-test-gocache, as the .debs in MLFS_DEB_CACHE), so only the
first run on a machine pays the whole build (~45 s on 2 cores).
"""

import os
import subprocess

from helpers import REPO_ROOT

BUILD_SH = os.path.join(REPO_ROOT, "tests", "reference", "cimage-verify", "build.sh")
GOCACHE = os.environ.get("MLFS_GOCACHE", "/var/cache/mlfs-test-gocache")


def build(workdir):
    """Builds it into workdir; returns the binary's path.  Raises with
    build.sh's message when Go or Debian's containers/image is missing:
    contrib/install-deps.sh installs both."""
    env = dict(os.environ, GOCACHE=GOCACHE)
    r = subprocess.run([BUILD_SH, workdir], env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError("building the containers/image reference failed (%d):\n%s%s"
                           % (r.returncode, r.stdout, r.stderr))
    return os.path.join(workdir, "cimage-verify")


class Verdicts(dict):
    """platform -> (accepted, digest, reason); .rc is the exit status."""


def verdicts(binary, policy, regd, ref):
    r = subprocess.run([binary, "--policy", policy, "--registries.d", regd, "--src-tls-verify=false",
                        "docker://" + ref], capture_output=True, text=True, timeout=300)
    v = Verdicts()
    v.rc, v.stderr = r.returncode, r.stderr.strip()
    for line in r.stdout.splitlines():
        word, digest, rest = line.split(" ", 2)
        platform, _, reason = rest.partition(": ")
        assert word in ("accepted", "refused"), line
        v[platform] = (word == "accepted", digest, reason)
    if not v:
        raise RuntimeError("the reference gave no verdict (%d): %s" % (r.returncode, v.stderr))
    assert (v.rc == 0) == all(a for a, _, _ in v.values()), (v.rc, dict(v))
    return v


def sign(binary, key, passphrase_file, regd, src, dst):
    """`skopeo copy --all --sign-by-sigstore-private-key KEY` by
    containers/image itself: every platform's manifest and the list signed
    into the registry (regd must say use-sigstore-attachments: true)."""
    r = subprocess.run([binary, "sign", "--sigstore-private-key", key, "--passphrase-file", passphrase_file,
                        "--registries.d", regd, "--tls-verify=false", "docker://" + src, "docker://" + dst],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError("containers/image did not sign %s (%d): %s" % (dst, r.returncode, r.stderr.strip()))
