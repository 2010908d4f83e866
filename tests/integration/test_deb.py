"""contrib/deb.sh builds the .deb (dpkg-buildpackage -us -uc -b of
contrib/debian); dpkg installs it into a throwaway root, and the mlfs it
installed runs.  The one build costs about a minute on 2 cores."""

import gzip
import os
import re
import shutil
import subprocess

import pytest

from helpers import REPO_ROOT

from test_cli_version import project_version


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    for tool in ("dpkg-buildpackage", "dh"):
        if not shutil.which(tool):
            pytest.skip("no %s (contrib/install-deps.sh installs it)" % tool)
    out = tmp_path_factory.mktemp("deb")
    r = subprocess.run([os.path.join(REPO_ROOT, "contrib", "deb.sh"), str(out)], capture_output=True,
                       text=True, timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr
    debs = [f for f in os.listdir(out) if f.endswith(".deb")]
    assert len(debs) == 1, debs
    return os.path.join(out, debs[0])


@pytest.fixture(scope="module")
def root(deb, tmp_path_factory):
    """The package installed by dpkg into an empty root (its dependencies
    are the host's libraries, so not installed there)."""
    root = tmp_path_factory.mktemp("root")
    admin = root / "var" / "lib" / "dpkg"
    for d in ("updates", "info"):
        (admin / d).mkdir(parents=True)
    (admin / "status").write_text("")
    subprocess.run(["dpkg", "--root", str(root), "--log", "/dev/null", "--force-depends", "-i", deb],
                   check=True, capture_output=True, timeout=120)
    return root


def test_package_version_is_the_projects(deb):
    with open(os.path.join(REPO_ROOT, "contrib", "debian", "changelog")) as f:
        assert re.match(r"mlfs \(%s\) " % re.escape(project_version()), f.readline())
    assert os.path.basename(deb).startswith("mlfs_%s_" % project_version())


def test_installed_mlfs_runs(root):
    r = subprocess.run([str(root / "usr" / "bin" / "mlfs"), "--version"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # built from a copy without .git, as from a tarball: meson.build's version
    assert r.stdout.splitlines()[0] == "mlfs " + project_version()
    assert "libfuse " in r.stdout
    # /sbin/mount.mlfs is mount(8)'s helper: a link to mlfs, which acts on its name
    assert os.readlink(root / "sbin" / "mount.mlfs") == "/usr/bin/mlfs"
    r2 = subprocess.run(["bash", "-c", 'exec -a mount.mlfs "$0" --help', str(root / "usr" / "bin" / "mlfs")],
                        capture_output=True, text=True)
    assert r2.returncode == 0 and r2.stdout.startswith("usage: mount.mlfs"), r2


def test_installed_docs_and_completion(root):
    for page, section in (("mlfs.1", "man1"), ("mount.mlfs.8", "man8")):
        with gzip.open(root / "usr" / "share" / "man" / section / (page + ".gz"), "rt") as f:
            assert ".TH \"%s\"" % page.rsplit(".", 1)[0] in f.read()
    comp = root / "usr" / "share" / "bash-completion" / "completions"
    assert "complete -F _mlfs mlfs" in (comp / "mlfs").read_text()
    assert os.readlink(comp / "mount.mlfs") == "mlfs"
    examples = root / "usr" / "share" / "doc" / "mlfs" / "examples"
    assert {"mlfs.fstab", "srv-demo.mount"} <= set(os.listdir(examples))


def test_depends_on_what_it_links(deb):
    depends = subprocess.run(["dpkg-deb", "-f", deb, "Depends"], capture_output=True, text=True,
                             check=True).stdout
    for lib in ("libfuse3-3", "libcurl4", "libjansson4", "libarchive13", "libzstd1", "libssl3", "fuse3"):
        assert lib in depends, depends


def test_lintian_clean(deb):
    """lintian finds nothing but the placeholder maintainer address (the
    project has no mailing list yet): a packaging mistake fails here."""
    if not shutil.which("lintian"):
        pytest.skip("no lintian (contrib/install-deps.sh installs it)")
    r = subprocess.run(["lintian", "--tag-display-limit", "0",
                        "--suppress-tags", "bogus-mail-host,bogus-mail-host-in-debian-changelog", deb],
                       capture_output=True, text=True, timeout=300)
    tags = [l for l in r.stdout.splitlines() if re.match(r"[EWI]: ", l)]
    assert tags == [] and r.returncode == 0, r.stdout + r.stderr
