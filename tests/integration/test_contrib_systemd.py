"""contrib/systemd/srv-demo.mount and contrib/mlfs.fstab: systemd reads
them without a complaint, they wait for the network, and mount.mlfs
accepts every option they pass (checked up to the mountpoint, so no
registry is asked)."""

import os
import shutil
import subprocess

import pytest

from helpers import REPO_ROOT

UNIT = os.path.join(REPO_ROOT, "contrib", "systemd", "srv-demo.mount")
FSTAB = os.path.join(REPO_ROOT, "contrib", "mlfs.fstab")
GENERATOR = "/lib/systemd/system-generators/systemd-fstab-generator"


def fstab_lines():
    with open(FSTAB) as f:
        return [l.split() for l in f if l.strip() and not l.startswith("#")]


def unit_settings(path):
    out = {}
    with open(path) as f:
        for line in f:
            if "=" in line and not line.startswith("#"):
                k, v = line.rstrip("\n").split("=", 1)
                out[k] = v
    return out


def verify(*units):
    if not shutil.which("systemd-analyze"):
        pytest.skip("no systemd-analyze")
    r = subprocess.run(["systemd-analyze", "verify", "--man=no"] + list(units),
                       capture_output=True, text=True, timeout=60)
    # an unknown key or a bad value is only a warning on stderr
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_unit_verifies_and_waits_for_the_network():
    verify(UNIT)
    s = unit_settings(UNIT)
    assert s["Type"] == "mlfs"
    assert "network-online.target" in s["Wants"] and "network-online.target" in s["After"]
    assert "_netdev" in s["Options"].split(",")


def test_fstab_lines_become_units_that_verify(tmp_path):
    if not os.access(GENERATOR, os.X_OK):
        pytest.skip("no systemd-fstab-generator")
    out = tmp_path / "gen"
    out.mkdir()
    env = dict(os.environ, SYSTEMD_FSTAB=FSTAB)
    subprocess.run([GENERATOR, str(out), str(out), str(out)], env=env, check=True, timeout=60)
    units = []
    for ref, where, fstype, opts, _, _ in fstab_lines():
        assert fstype == "mlfs"
        assert {"_netdev", "x-systemd.requires=network-online.target"} <= set(opts.split(","))
        name = subprocess.run(["systemd-escape", "-p", "--suffix=mount", where], capture_output=True,
                              text=True, check=True).stdout.strip()
        s = unit_settings(out / name)
        assert s["What"] == ref and s["Type"] == "mlfs"
        assert "network-online.target" in s["Requires"] and "network-online.target" in s["After"]
        units.append(str(out / name))
    verify(*units)


def test_mount_mlfs_accepts_their_options(mlfs_bin, tmp_path):
    helper = tmp_path / "mount.mlfs"
    os.symlink(mlfs_bin, helper)
    cases = [(ref, opts) for ref, _, _, opts, _, _ in fstab_lines()]
    s = unit_settings(UNIT)
    cases.append((s["What"], s["Options"]))
    missing = tmp_path / "no-such-dir"
    for ref, opts in cases:
        r = subprocess.run([str(helper), ref, str(missing), "-o", opts], capture_output=True, text=True,
                           timeout=30, env={"PATH": os.environ["PATH"], "MLFS_CACHE": str(tmp_path / "c")})
        assert r.returncode == 1 and "mountpoint %s" % missing in r.stderr, (opts, r.stderr)
