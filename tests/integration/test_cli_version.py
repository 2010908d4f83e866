"""mlfs --version / mlfs version / mount.mlfs --version, and --help of every
subcommand.  No registry needed."""

import os
import re
import shutil
import subprocess

import pytest

from helpers import REPO_ROOT, describe

# What --version names each library, and its pkg-config module.
LIBRARIES = {
    "libfuse": "fuse3",
    "libcurl": "libcurl",
    "jansson": "jansson",
    "libarchive": "libarchive",
    "zstd": "libzstd",
    "OpenSSL": "libcrypto",
    "libyaml": "yaml-0.1",
    "gpgme": "gpgme",
}


def project_version():
    with open(os.path.join(REPO_ROOT, "meson.build")) as f:
        return re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)


def versions(text):
    """{name: version} from --version's lines "NAME VERSION [(details)]"."""
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        out[name] = rest.split(" (")[0]
    return out


def test_version_names_mlfs_and_each_library(mlfs):
    r = mlfs("--version")
    assert r.rc == 0 and r.stderr == "", describe(r)
    got = versions(r.stdout)
    assert list(got) == ["mlfs"] + list(LIBRARIES), describe(r)
    # git describe (VERSION-gHASH, or a tag's) or the bare project version
    assert re.fullmatch(r"\d+\.\d+\.\d+(-\S+)?", got["mlfs"]), describe(r)
    if shutil.which("pkg-config"):
        for name, module in LIBRARIES.items():
            want = subprocess.run(["pkg-config", "--modversion", module], capture_output=True,
                                  text=True).stdout.strip()
            if want:
                assert got[name] == want, "%s: %s, pkg-config says %s" % (name, got[name], want)


def test_version_forms_agree(mlfs, mlfs_bin, tmp_path):
    want = mlfs("--version").stdout
    for args in (["version"], ["-V"]):
        r = mlfs(*args)
        assert r.rc == 0 and r.stdout == want, describe(r)
    helper = tmp_path / "mount.mlfs"
    os.symlink(mlfs_bin, helper)
    for flag in ("--version", "-V"):
        r = subprocess.run([str(helper), flag], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout == want, r
    assert mlfs("version", "extra").rc == 2


SHIM = r"""
#include <string.h>
#include <dlfcn.h>
#include <curl/curl.h>
const char *fuse_pkgversion(void) { return "91.0.1"; }
const char *jansson_version_str(void) { return "92.0.2"; }
const char *archive_version_details(void) { return "libarchive 93.0.3 zlib/9"; }
const char *ZSTD_versionString(void) { return "94.0.4"; }
const char *OpenSSL_version(int t) { return "95.0.5"; }
const char *yaml_get_version_string(void) { return "97.0.7"; }
const char *gpgme_check_version_internal(const char *req, size_t off) { return "98.0.8"; }
curl_version_info_data *curl_version_info(CURLversion v)
{
	static curl_version_info_data copy;
	curl_version_info_data *(*real)(CURLversion) = dlsym(RTLD_NEXT, "curl_version_info");
	copy = *real(v);
	copy.version = "96.0.6";
	return &copy;
}
"""


def test_version_asks_the_libraries_at_run_time(mlfs, tmp_path):
    """The versions are what the loaded libraries say, not their headers'
    at build time: a preloaded library that answers differently shows."""
    if not shutil.which("cc"):
        pytest.skip("no C compiler for the preload shim")
    src, so = tmp_path / "shim.c", tmp_path / "shim.so"
    src.write_text(SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(so), str(src), "-ldl"], check=True)
    r = mlfs("--version", env_extra={"LD_PRELOAD": str(so)})
    assert r.rc == 0, describe(r)
    assert versions(r.stdout) == {
        "mlfs": versions(mlfs("--version").stdout)["mlfs"],
        "libfuse": "91.0.1", "libcurl": "96.0.6", "jansson": "92.0.2",
        "libarchive": "93.0.3", "zstd": "94.0.4", "OpenSSL": "95.0.5",
        "libyaml": "97.0.7", "gpgme": "98.0.8",
    }, describe(r)


def commands(mlfs):
    """The commands `mlfs --help` lists (its "commands:" block)."""
    r = mlfs("--help")
    assert r.rc == 0, describe(r)
    block = r.stdout.split("\ncommands:\n", 1)[1].split("\n\n", 1)[0]
    names = [line.split()[0] for line in block.splitlines()]
    assert "inspect" in names and "version" in names, r.stdout
    return names


def test_each_subcommand_help_prints_usage_and_exits_0(mlfs):
    subs = commands(mlfs)
    for cmd in subs + ["cache ls", "cache gc"]:
        for flag in ("--help", "-h"):
            r = mlfs(*cmd.split(), flag)
            assert r.rc == 0 and r.stderr == "", "%s %s: %s" % (cmd, flag, describe(r))
            assert r.stdout.startswith("usage: "), "%s %s: %s" % (cmd, flag, describe(r))
            # mount's usage is mount.mlfs's; every other names its command
            if cmd != "mount":
                assert ("mlfs " + cmd.split()[0]) in r.stdout.splitlines()[0], r.stdout


def test_help_after_the_reference_too(mlfs):
    r = mlfs("inspect", "busybox", "--help")
    assert r.rc == 0 and r.stdout.startswith("usage: mlfs inspect REF"), describe(r)


def test_chroot_help_after_the_reference_is_the_commands(mlfs):
    """`mlfs chroot REF sh --help`: --help belongs to sh, so mlfs does not
    answer it (here the image does not exist: mlfs fails resolving it)."""
    r = mlfs("chroot", "-o", "offline", "nosuch.invalid/x:1", "sh", "--help")
    assert r.rc != 0 and not r.stdout.startswith("usage:"), describe(r)


def test_bad_usage_still_fails(mlfs):
    r = mlfs("inspect")
    assert r.rc == 2 and r.stdout == "" and r.stderr.startswith("usage: mlfs inspect"), describe(r)
    r = mlfs("cache", "ls", "--bogus")
    assert r.rc == 2 and r.stdout == "", describe(r)
