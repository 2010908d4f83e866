"""Differential check of two directory trees, entry by entry.

`walk(root)` describes a tree as a dict {relative path: metadata}; the root
itself is "." .  `diff(expected, actual)` returns a list of readable
differences (empty when equal); `assert_same_tree` fails with a report.

What is compared (DEFAULT_FIELDS): type, permission bits (with setuid,
setgid, sticky), uid, gid, size of regular files and symlinks, sha256 of
regular file contents, symlink targets, hardlink groups, link counts of
non-directories, xattrs (names and values) and device numbers.  Hardlinks
are compared as groups: every non-directory records the sorted tuple of
all paths in the tree that share its (st_dev, st_ino), so "same inode in
one tree <=> same inode in the other" is exactly "same group".  Directory
sizes and link counts differ between filesystems and are left out; mtimes
are recorded but compared only on request (`fields=ALL_FIELDS`).

An entry that cannot be read (EIO from a FUSE mount, say) is recorded with
type "error" and the errno, so the report names the path instead of the
walk dying halfway.  Nothing here follows a symlink or opens anything but
regular files.
"""

import errno
import hashlib
import os
import stat

DEFAULT_FIELDS = ("type", "mode", "uid", "gid", "size", "sha256", "target", "links", "nlink",
                  "xattrs", "rdev")
ALL_FIELDS = DEFAULT_FIELDS + ("mtime",)

_TYPES = (
    (stat.S_ISDIR, "dir"), (stat.S_ISREG, "file"), (stat.S_ISLNK, "symlink"),
    (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
)


def file_type(mode):
    for pred, name in _TYPES:
        if pred(mode):
            return name
    return "unknown"


def sha256_of(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _xattrs(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            return {}
        raise
    out = {}
    for n in sorted(names):
        out[n] = os.getxattr(path, n, follow_symlinks=False).hex()
    return out


def _error(e):
    return {"type": "error", "error": "%s (%s)" % (errno.errorcode.get(e.errno, e.errno), e.strerror)}


def describe_entry(path, st=None, hash_files=True):
    """Metadata of one entry (no hardlink group: that needs the whole tree)."""
    try:
        st = st or os.lstat(path)
    except OSError as e:
        return _error(e), None
    kind = file_type(st.st_mode)
    meta = {
        "type": kind,
        "mode": "%04o" % stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime": int(st.st_mtime),
    }
    try:
        meta["xattrs"] = _xattrs(path)
        if kind == "file":
            meta["size"] = st.st_size
            if hash_files:
                meta["sha256"] = sha256_of(path)
        elif kind == "symlink":
            meta["target"] = os.readlink(path)
            meta["size"] = st.st_size
        elif kind in ("char", "block"):
            meta["rdev"] = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
        if kind != "dir":
            meta["nlink"] = st.st_nlink
    except OSError as e:
        return _error(e), st
    return meta, st


def walk(root, hash_files=True):
    """{relative path ("." for the root): metadata} for the tree under root."""
    tree = {}
    inodes = {}
    meta, st = describe_entry(root, hash_files=hash_files)
    tree["."] = meta
    pending = [""] if meta["type"] == "dir" else []
    while pending:
        rel = pending.pop()
        full = os.path.join(root, rel) if rel else root
        try:
            with os.scandir(full) as it:
                names = sorted(e.name for e in it)
        except OSError as e:
            tree[rel or "."] = dict(tree.get(rel or ".", {}), **_error(e))
            continue
        for name in names:
            crel = os.path.join(rel, name) if rel else name
            meta, st = describe_entry(os.path.join(root, crel), hash_files=hash_files)
            tree[crel] = meta
            if meta["type"] == "dir":
                pending.append(crel)
            elif st is not None and meta["type"] != "error":
                inodes.setdefault((st.st_dev, st.st_ino), []).append(crel)
    for paths in inodes.values():
        group = tuple(sorted(paths))
        for p in paths:
            tree[p]["links"] = group
    return tree


def _show(v):
    if isinstance(v, dict) and v and all(isinstance(x, str) for x in v.values()):
        return "{%s}" % ", ".join("%s=%s" % (k, _hexshow(x)) for k, x in v.items())
    return repr(v)


def _hexshow(h):
    try:
        b = bytes.fromhex(h)
    except ValueError:
        return h
    return repr(b) if len(b) <= 64 else repr(b[:64]) + "..."


def diff(expected, actual, fields=DEFAULT_FIELDS, ignore_paths=()):
    """Readable differences between two walk() results; [] if the trees agree."""
    out = []
    ignore = set(ignore_paths)
    for p in sorted(set(expected) | set(actual)):
        if p in ignore:
            continue
        e, a = expected.get(p), actual.get(p)
        if a is None:
            out.append("%s: missing (expected %s)" % (p, e["type"]))
            continue
        if e is None:
            out.append("%s: unexpected %s" % (p, a["type"]))
            continue
        if a["type"] == "error" or e["type"] == "error":
            if a != e:
                out.append("%s: expected %s, got %s" % (
                    p, e.get("error", e["type"]), a.get("error", a["type"])))
            continue
        for f in fields:
            if e.get(f) != a.get(f):
                if f == "type":
                    out.append("%s: type: expected %s, got %s" % (p, e["type"], a["type"]))
                    break
                out.append("%s: %s: expected %s, got %s" % (p, f, _show(e.get(f)), _show(a.get(f))))
    return out


def report(differences, limit=60):
    if not differences:
        return "trees are equal"
    lines = differences[:limit]
    if len(differences) > limit:
        lines.append("... and %d more" % (len(differences) - limit))
    return "%d difference(s):\n  %s" % (len(differences), "\n  ".join(lines))


def assert_same_tree(expected, actual, fields=DEFAULT_FIELDS, ignore_paths=(), what="tree"):
    """expected/actual: walk() dicts or directory paths."""
    if isinstance(expected, str):
        expected = walk(expected)
    if isinstance(actual, str):
        actual = walk(actual)
    d = diff(expected, actual, fields=fields, ignore_paths=ignore_paths)
    assert not d, "%s differs from the reference: %s" % (what, report(d))
    return actual
