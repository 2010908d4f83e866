"""What the signature tests share: a policy file of docker scopes, and
skopeo asked to copy an image under a policy (the reference's verdict)."""

import json
import os
import shutil
import subprocess


def write_policy(dirpath, name, scopes):
    """DIR/NAME.json: reject by default, `scopes` for the docker transport."""
    path = os.path.join(dirpath, name + ".json")
    with open(path, "w") as f:
        json.dump({"default": [{"type": "reject"}], "transports": {"docker": scopes}}, f, indent=1)
    return path


def skopeo_copy(policy, regd, ref, tmp_path):
    """skopeo copy of the host's platform under the policy: (rc, stderr).
    --remove-signatures: an oci: layout cannot store them; the policy is
    checked all the same."""
    dest = os.path.join(str(tmp_path), "skopeo-oci")
    shutil.rmtree(dest, ignore_errors=True)
    r = subprocess.run(["skopeo", "--policy", policy, "--registries.d", regd, "copy", "-q", "--remove-signatures",
                        "--src-tls-verify=false", "docker://" + ref, "oci:" + dest + ":x"],
                       capture_output=True, text=True, timeout=300)
    return r.returncode, r.stderr
