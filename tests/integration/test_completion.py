"""contrib/completion/mlfs.bash, sourced in a plain bash (no bash-completion
package needed) and asked the way readline asks it."""

import os
import shutil
import subprocess

import pytest

from helpers import REPO_ROOT, assert_ok

SCRIPT = os.path.join(REPO_ROOT, "contrib", "completion", "mlfs.bash")

# Sets what bash sets for a completion at the end of $1, calls the
# function `complete` registered, prints the replies one per line.
DRIVER = r"""
source "$SCRIPT"
COMP_WORDBREAKS=$' \t\n"\'><=;|&(:'
line=$1
COMP_LINE=$line COMP_POINT=${#line}
read -ra COMP_WORDS <<<"$line"
[[ $line == *' ' ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
spec=$(complete -p "${COMP_WORDS[0]}") || exit 3
fn=${spec#*-F } fn=${fn%% *}
"$fn" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


@pytest.fixture
def complete(mlfs_bin, mlfs_env, tmp_path):
    """complete("mlfs ca") -> the replies, with mlfs and mount.mlfs on PATH."""
    if not shutil.which("bash"):
        pytest.skip("no bash")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("mlfs", "mount.mlfs"):
        os.symlink(mlfs_bin, bindir / name)
    env = dict(mlfs_env, SCRIPT=SCRIPT, PATH="%s:%s" % (bindir, mlfs_env["PATH"]))

    def run(line):
        r = subprocess.run(["bash", "--norc", "--noprofile", "-c", DRIVER, "driver", line],
                           env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stderr == "", r
        return [l for l in r.stdout.split("\n") if l]
    return run


def test_commands(complete):
    assert complete("mlfs ca") == ["cache"]
    assert {"inspect", "pull", "export", "mount", "cache", "chroot", "version"} <= set(complete("mlfs "))
    assert set(complete("mlfs cache ")) == {"ls", "du", "gc", "rm", "verify"}


def test_options(complete):
    assert complete("mlfs inspect --pla") == ["--platform"]
    assert complete("mlfs --vers") == ["--version"]
    assert complete("mlfs --debug pull --keep") == ["--keep-blobs"]
    assert set(complete("mlfs cache gc --")) == {"--max", "--older-than", "--cache", "--help"}
    assert "--json" not in complete("mlfs cache verify --")


def test_option_values(complete, tmp_path):
    assert complete("mlfs export --format ") == ["tar", "mtree"]
    assert "linux/arm64" in complete("mlfs inspect --platform linux/a")
    (tmp_path / "somedir").mkdir()
    assert complete("mlfs pull --cache %s/som" % tmp_path) == ["%s/somedir" % tmp_path]


def test_mount_options(complete):
    assert complete("mount.mlfs -o keep") == ["keep-blobs"]
    assert set(complete("mount.mlfs REF DIR -o insec")) == {"insecure", "insecure-policy"}
    # the list so far is kept; readline replaces only what follows the last '='
    assert complete("mlfs mount REF DIR -o platform=linux/arm64,off") == ["linux/arm64,offline"]
    assert complete("mount.mlfs -o offline,platform=linux/arm6") == ["linux/arm64"]
    assert "upper=" in complete("mlfs chroot -o ")
    assert set(complete("mount.mlfs -")) >= {"-o", "-f", "-d", "--help"}


def after_break(cur, reply):
    """What readline inserts: the reply less what precedes cur's last ':' or '='."""
    keep = max(cur.rfind(":"), cur.rfind("=")) + 1
    assert reply.startswith(cur[:keep])
    return reply[keep:]


def test_cached_references(complete, mlfs, demo):
    ref = demo.ref("demo:latest")
    assert_ok(mlfs("pull", ref, "--platform", "linux/amd64"), allow_warnings=True)
    host = demo.registry.host
    for line, cur in (("mlfs inspect %s/de", "%s/de"), ("mount.mlfs %s/d", "%s/d"),
                      ("mlfs cache rm %s/d", "%s/d"), ("mlfs export %s/demo:la", "%s/demo:la")):
        assert complete(line % host) == [after_break(cur % host, ref)], line
    assert complete("mlfs export %s/demo:la" % host) == ["latest"]
    assert complete("mlfs inspect --cache /nonexistent %s/d" % host) == []
