"""`mlfs export`: the merged rootfs as tar or mtree, compared entry by entry
with `umoci unpack` of the same image (the reference extraction).

Besides the demo image, images are crafted here with Python's tarfile so that
every merge rule is on the wire: whiteouts, an opaque directory, file <-> dir
replacement, hardlinks whose first name is whited out above, setuid bits,
implicit parents.  The same layers are pushed as gzip, zstd and plain tar:
the exports must be byte-identical.
"""

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
import time

import pytest

from conftest import Images
from helpers import assert_mlfs_error, assert_ok
from registry import MT_OCI_CONFIG, MT_OCI_MANIFEST, sha256_digest, skopeo

MT_LAYER = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}
T0 = 1700000000


# -- building layers ------------------------------------------------------------

def F(name, data=b"", mode=0o644, uid=0, gid=0, mtime=T0):
    return ("f", name, dict(data=data, mode=mode, uid=uid, gid=gid, mtime=mtime))


def D(name, mode=0o755, uid=0, gid=0, mtime=T0):
    return ("d", name, dict(mode=mode, uid=uid, gid=gid, mtime=mtime))


def L(name, target, mtime=T0):
    return ("l", name, dict(target=target, mtime=mtime))


def H(name, target):
    return ("h", name, dict(target=target))


def layer_tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, kw in entries:
            info = tarfile.TarInfo(name)
            info.mtime = kw.get("mtime", T0)
            info.uid, info.gid = kw.get("uid", 0), kw.get("gid", 0)
            data = None
            if kind == "f":
                data = kw["data"]
                info.size = len(data)
                info.mode = kw["mode"]
            elif kind == "d":
                info.type = tarfile.DIRTYPE
                info.mode = kw["mode"]
            elif kind == "l":
                info.type = tarfile.SYMTYPE
                info.linkname = kw["target"]
                info.mode = 0o777
            elif kind == "h":
                info.type = tarfile.LNKTYPE
                info.linkname = kw["target"]
                info.mode = 0o644
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def compress(raw, how):
    if how == "gzip":
        return gzip.compress(raw, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout
    return raw


def push(client, repo, tag, raw_layers, how="gzip", diff_ids=None):
    blobs = [compress(raw, how) for raw in raw_layers]
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers",
                   "diff_ids": diff_ids or [sha256_digest(raw) for raw in raw_layers]},
    }
    cbytes = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": client.push_blob(repo, cbytes),
                   "size": len(cbytes)},
        "layers": [{"mediaType": MT_LAYER[how], "digest": client.push_blob(repo, b), "size": len(b)}
                   for b in blobs],
    }
    client.put_manifest(repo, tag, json.dumps(manifest).encode(), MT_OCI_MANIFEST)
    return {"layers": manifest["layers"], "diff_ids": config["rootfs"]["diff_ids"]}


CRAFTED = [
    [
        D("etc"), F("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"), F("etc/gone", b"bye"),
        D("usr", mode=0o755), D("usr/bin"),
        F("usr/bin/tool", b"\x7fELF tool" * 100, mode=0o4755),
        H("usr/bin/tool2", "usr/bin/tool"), H("usr/bin/tool3", "usr/bin/tool"),
        L("usr/bin/sh", "tool"),
        D("opaque", mode=0o750, uid=7, gid=8), F("opaque/a", b"a"), D("opaque/sub"), F("opaque/sub/b", b"b"),
        F("fd", b"file that becomes a dir"),
        D("df"), F("df/x", b"x"), D("df/y"),
        D("tmp", mode=0o1777), F("sg", b"sg", mode=0o2755, uid=1000, gid=50),
        D("gonedir"), F("gonedir/deep", b"deep"),
    ],
    [
        D("etc"), F("etc/.wh.gone"), F("etc/passwd", b"root:x:0:0::/root:/bin/bash\n", mtime=T0 + 5),
        D("opaque", mode=0o700, uid=7, gid=8), F("opaque/.wh..wh..opq"), F("opaque/c", b"c"),
        D("fd"), F("fd/inner", b"inner"),
        F("df", b"dir that became a file"),
        D("usr"), D("usr/bin"), F("usr/bin/.wh.tool"),
        F(".wh.gonedir"), F(".wh.never-existed"),
        D("new"), D("new/d", mode=0o711), F("new/d/f", b"f", uid=65534),
    ],
    [
        F("etc/passwd", b"root:x:0:0::/root:/bin/zsh\n", mtime=T0 + 9),
        D("usr"), D("usr/bin"), H("usr/bin/tool4", "usr/bin/tool2"),
        F("usr/bin/.wh.tool3"),
        D("gonedir"), F("gonedir/again", b"again"),
    ],
]


@pytest.fixture(scope="module")
def crafted(demo):
    raws = [layer_tar(l) for l in CRAFTED]
    out = {}
    for how in ("gzip", "zstd", "none"):
        out[how] = push(demo.client, "crafted", how, raws, how=how)
    bad = ["sha256:" + "1" * 64] + [sha256_digest(r) for r in raws[1:]]
    out["bad_diff_id"] = push(demo.client, "crafted", "bad-diff-id", raws, diff_ids=bad)
    return Images(demo.registry, **out)


# -- describing trees -----------------------------------------------------------

def _kind(mode):
    for test, k in ((stat.S_ISDIR, "d"), (stat.S_ISREG, "f"), (stat.S_ISLNK, "l"),
                    (stat.S_ISCHR, "c"), (stat.S_ISBLK, "b"), (stat.S_ISFIFO, "p")):
        if test(mode):
            return k
    return "?"


def tree_of_rootfs(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            k = _kind(st.st_mode)
            e = {"kind": k, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
            if k == "f":
                with open(p, "rb") as f:
                    e["sha256"] = hashlib.sha256(f.read()).hexdigest()
                e["nlink"] = st.st_nlink
            if k == "l":
                e["link"] = os.readlink(p)
            if k != "d":
                e["mtime"] = int(st.st_mtime)
            out[os.path.relpath(p, root)] = e
    return out


def _norm(name):
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def tree_of_tar(data):
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        first = {}
        nlink = {}
        for m in members:
            name = _norm(m.name)
            if name in ("", "."):
                continue
            if m.islnk():
                target = _norm(m.linkname)
                src = first[target]
                first[name] = src
            else:
                first[name] = m
            nlink[id(first[name])] = nlink.get(id(first[name]), 0) + 1
        for m in members:
            name = _norm(m.name)
            if name in ("", "."):
                continue
            src = first[name]
            k = "d" if src.isdir() else "f" if src.isreg() else "l" if src.issym() else \
                "c" if src.ischr() else "b" if src.isblk() else "p" if src.isfifo() else "?"
            e = {"kind": k, "mode": src.mode & 0o7777, "uid": src.uid, "gid": src.gid}
            if k == "f":
                e["sha256"] = hashlib.sha256(tar.extractfile(src).read()).hexdigest()
                e["nlink"] = nlink[id(src)]
            if k == "l":
                e["link"] = src.linkname
            if k != "d":
                e["mtime"] = int(src.mtime)
            out[name] = e
    return out


def assert_same_tree(got, want):
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    differ = sorted(p for p in set(got) & set(want) if got[p] != want[p])
    msg = []
    if missing:
        msg.append("missing from the export: %s" % missing[:20])
    if extra:
        msg.append("only in the export: %s" % extra[:20])
    for p in differ[:20]:
        msg.append("%s: export %s, umoci %s" % (p, got[p], want[p]))
    assert not msg, "\n".join(msg)


def umoci_rootfs(tmp_path, registry, ref):
    """`umoci unpack` of registry/ref (gzip layers only: umoci reads no zstd)."""
    layout = str(tmp_path / "layout")
    bundle = str(tmp_path / "bundle")
    skopeo("copy", "--src-tls-verify=false", "docker://%s/%s" % (registry.host, ref), "oci:%s:img" % layout)
    r = subprocess.run(["umoci", "unpack", "--image", layout + ":img", bundle], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail("umoci unpack failed: %s" % r.stderr)
    return os.path.join(bundle, "rootfs")


def export(mlfs, tmp_path, ref, *args, name="out.tar"):
    out = str(tmp_path / name)
    r = mlfs("export", ref, "-o", out, *args)
    assert_ok(r, allow_warnings=True)
    with open(out, "rb") as f:
        return f.read()


# -- tests ----------------------------------------------------------------------

def test_export_demo_matches_umoci(mlfs, demo, tmp_path):
    data = export(mlfs, tmp_path, demo.ref("demo:latest"), "--platform", "linux/arm64")
    want = tree_of_rootfs(umoci_rootfs(tmp_path, demo.registry, "demo:oci-linux-arm64-v8"))
    got = tree_of_tar(data)
    assert "bin/busybox" in got and "etc/mlfs-platform" in got
    assert_same_tree(got, want)


def test_export_crafted_matches_umoci(mlfs, crafted, tmp_path):
    data = export(mlfs, tmp_path, crafted.ref("crafted:gzip"))
    got = tree_of_tar(data)
    want = tree_of_rootfs(umoci_rootfs(tmp_path, crafted.registry, "crafted:gzip"))
    assert_same_tree(got, want)
    # The rules, spelled out (the comparison above would also pass if umoci
    # and mlfs shared a bug).
    assert "etc/gone" not in got and "gonedir/deep" not in got and "usr/bin/tool" not in got
    assert sorted(p for p in got if p.startswith("opaque/")) == ["opaque/c"]
    assert got["opaque"]["mode"] == 0o700
    assert got["fd"]["kind"] == "d" and got["fd/inner"]["kind"] == "f"
    assert got["df"]["kind"] == "f" and not any(p.startswith("df/") for p in got)
    assert got["usr/bin/tool2"]["mode"] == 0o4755 and got["usr/bin/tool2"]["nlink"] == 2
    assert got["usr/bin/tool4"]["sha256"] == got["usr/bin/tool2"]["sha256"]
    assert "usr/bin/tool3" not in got
    assert got["gonedir"]["kind"] == "d" and "gonedir/again" in got
    assert not any(os.path.basename(p).startswith(".wh.") for p in got)


def test_export_same_bytes_for_every_compression(mlfs, crafted, tmp_path):
    outs = {how: export(mlfs, tmp_path, crafted.ref("crafted:" + how), name=how + ".tar")
            for how in ("gzip", "zstd", "none")}
    assert outs["gzip"] == outs["zstd"] == outs["none"]
    # Deterministic: a second export (from the cached indexes) is identical too.
    assert export(mlfs, tmp_path, crafted.ref("crafted:zstd"), name="again.tar") == outs["gzip"]


def test_second_export_uses_cached_index(mlfs, mlfs_env, crafted, tmp_path):
    export(mlfs, tmp_path, crafted.ref("crafted:gzip"))
    for diff_id in crafted.gzip["diff_ids"]:
        hexd = diff_id.split(":", 1)[1]
        assert os.path.isfile(os.path.join(mlfs_env["MLFS_CACHE"], "index", "sha256", hexd))
        assert os.path.isfile(os.path.join(mlfs_env["MLFS_CACHE"], "data", "sha256", hexd))
    time.sleep(0.3)  # let the access log catch up
    before = crafted.registry.blob_gets()
    export(mlfs, tmp_path, crafted.ref("crafted:gzip"), name="second.tar")
    time.sleep(0.3)
    assert crafted.registry.blob_gets() == before


def test_export_to_stdout(mlfs_bin, mlfs_env, crafted, tmp_path):
    r = subprocess.run([mlfs_bin, "export", crafted.ref("crafted:gzip")], env=mlfs_env,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert tree_of_tar(r.stdout) == tree_of_tar(export_bytes_via_file(mlfs_bin, mlfs_env, crafted, tmp_path))


def export_bytes_via_file(mlfs_bin, env, crafted, tmp_path):
    out = str(tmp_path / "viafile.tar")
    subprocess.run([mlfs_bin, "export", crafted.ref("crafted:gzip"), "-o", out], env=env, check=True,
                   timeout=60)
    with open(out, "rb") as f:
        return f.read()


def test_export_mtree(mlfs, crafted, tmp_path):
    out = str(tmp_path / "out.mtree")
    assert_ok(mlfs("export", crafted.ref("crafted:gzip"), "--format", "mtree", "-o", out), allow_warnings=True)
    with open(out) as f:
        text = f.read()
    assert text.startswith("#mtree")
    entries = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith("/set"):
            continue
        fields = line.split()
        entries[_norm(fields[0])] = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
    passwd = entries["etc/passwd"]
    assert passwd["type"] == "file"
    assert passwd["sha256digest"] == hashlib.sha256(b"root:x:0:0::/root:/bin/zsh\n").hexdigest()
    assert passwd["size"] == str(len(b"root:x:0:0::/root:/bin/zsh\n"))
    assert entries["usr/bin/sh"]["type"] == "link" and entries["usr/bin/sh"]["link"] == "tool"
    assert entries["tmp"]["type"] == "dir" and entries["tmp"]["mode"] == "1777"
    assert entries["sg"]["uid"] == "1000" and entries["sg"]["gid"] == "50"
    assert entries["sg"]["time"].startswith(str(T0))
    assert not any(os.path.basename(p).startswith(".wh.") for p in entries)


def test_export_diff_id_mismatch(mlfs, mlfs_env, crafted, tmp_path):
    r = mlfs("export", crafted.ref("crafted:bad-diff-id"), "-o", str(tmp_path / "x.tar"))
    assert_mlfs_error(r, "diff_id")
    assert not os.path.exists(tmp_path / "x.tar")
    bad = os.path.join(mlfs_env["MLFS_CACHE"], "data", "sha256", "1" * 64)
    assert not os.path.exists(bad)


def test_export_corrupt_layer(mlfs, broken, tmp_path):
    r = mlfs("export", broken.ref("broken/layer-digest:v1"), "-o", str(tmp_path / "x.tar"))
    assert_mlfs_error(r, "digest")


def test_export_bad_format(mlfs, crafted):
    assert_mlfs_error(mlfs("export", crafted.ref("crafted:gzip"), "--format", "zip", "-o", "/dev/null"),
                      "format")


# -- where -o writes ------------------------------------------------------------------------------

def test_export_failure_keeps_the_file_it_replaces(mlfs, demo, tmp_path):
    """-o FILE is written beside FILE and renamed over it only when whole: an
    export that fails midway (here the disk fills) leaves the old FILE as it
    was and no temporary file behind (it used to truncate FILE, then delete it)."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(small)], check=True, timeout=30)
    try:
        keep = small / "keep.tar"
        keep.write_bytes(b"precious" * 1024)
        r = mlfs("export", demo.ref("demo:latest"), "-o", str(keep))
        assert_mlfs_error(r, "space", "writing")
        assert keep.read_bytes() == b"precious" * 1024
        assert sorted(os.listdir(small)) == ["keep.tar"], os.listdir(small)
    finally:
        subprocess.run(["umount", "-l", str(small)], timeout=30)


def test_export_success_replaces_the_file(mlfs, crafted, tmp_path):
    """A whole export lands under FILE with the mode a plain create would
    give (0666 less the umask), replacing what was there, with no temporary
    file left beside it."""
    where = tmp_path / "out"
    where.mkdir()
    out = where / "out.tar"
    out.write_bytes(b"old")
    assert_ok(mlfs("export", crafted.ref("crafted:gzip"), "-o", str(out)), allow_warnings=True)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o666 & ~mask
    assert tree_of_tar(out.read_bytes())
    assert os.listdir(where) == ["out.tar"]


def test_export_to_a_fifo_whose_reader_leaves(mlfs_bin, mlfs_env, demo, tmp_path):
    """-o a named pipe is written directly; when its reader goes away
    midway the export fails, and the pipe is still there (the export used
    to delete whatever -o named on failure, /dev/stdout included)."""
    where = tmp_path / "out"
    where.mkdir()
    fifo = where / "pipe"
    os.mkfifo(fifo)
    p = subprocess.Popen([mlfs_bin, "export", demo.ref("demo:latest"), "-o", str(fifo)], env=mlfs_env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with open(fifo, "rb") as f:
            assert f.read(512)      # the first header, then the reader leaves
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert os.listdir(where) == ["pipe"]


def test_export_refuses_a_directory(mlfs, crafted, tmp_path):
    """-o naming something that is neither a regular file, a pipe nor a
    character device (here a directory) is refused, and the directory is
    untouched."""
    d = tmp_path / "dir"
    d.mkdir()
    (d / "inside").write_text("x")
    r = mlfs("export", crafted.ref("crafted:gzip"), "-o", str(d))
    assert_mlfs_error(r, "not a regular file")
    assert os.listdir(d) == ["inside"]


def test_export_into_a_pipe_closed_early_is_quiet(mlfs_bin, mlfs_env, demo):
    """`mlfs export REF | head -c 1000`: the reader leaves early; mlfs ends
    as cat and tar do, with SIGPIPE's status and no error line."""
    p = subprocess.Popen([mlfs_bin, "export", demo.ref("demo:latest")], env=mlfs_env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.read(1000)
        p.stdout.close()  # the reader leaves
        err = p.stderr.read()
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 128 + 13, (rc, err)
    assert err == b"", err
