"""A tree that holds every kind of entry a data directory can hold, and a full snapshot of a tree.

`build_everything_tree(root)` makes the tree; `snapshot_tree(root)` returns a plain dict (path
relative to the root, as bytes -> every property a move must keep) that compares equal for two
trees exactly when a move kept everything: types, modes (setuid/setgid/sticky included), owners,
nanosecond mtimes, contents, link targets, hard-link groups, xattrs (ACLs included) and where the
holes of sparse files are. Access times are left out on purpose: reading a file changes them.

Both work on any real filesystem (ext4, tmpfs...) and are used by the mover tests and the SSH
end-to-end tests. Names are bytes: the tree has names that are not UTF-8.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import struct
from pathlib import Path

FOREIGN_UID = 4242
FOREIGN_GID = 4343
DEEP_LEVELS = 60
BIG_FILE_SIZE = 3 * 1024 * 1024 + 12345   # more than one read/copy chunk in places
SPARSE_SIZE = 64 * 1024 * 1024
SPARSE_DATA_AT = (0, 20 * 1024 * 1024)     # data blocks at these offsets; the rest is holes

# ACL xattr (system.posix_acl_access), version 2: user::rw-, user:4242:r--, group::r--,
# mask::r--, other::---
_ACL_ENTRIES = [(0x01, 6, 0xFFFFFFFF), (0x02, 4, FOREIGN_UID), (0x04, 4, 0xFFFFFFFF),
                (0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)]
ACL_ACCESS = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in _ACL_ENTRIES)


def _b(path: Path | bytes | str) -> bytes:
    return os.fsencode(path)


def build_everything_tree(root: Path | bytes | str, *, privileged: bool | None = None,
                          seed: int = 1) -> dict[str, int]:
    """Create `root` (must not exist) holding every case a move must keep.

    privileged (default: running as root) adds what only root can make: foreign owners,
    setuid files of another user, a device node, an ACL naming another user.
    Returns a few facts the tests check events against (non-directory entry count, bytes of
    regular files counting each hard-linked inode once).
    """
    if privileged is None:
        privileged = os.geteuid() == 0
    r = _b(root)
    os.mkdir(r, 0o755)

    def p(*parts: bytes) -> bytes:
        return b"/".join((r, *parts))

    def write(path: bytes, data: bytes, mode: int = 0o644) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.chmod(path, mode)

    rng = hashlib.sha256(b"seed%d" % seed)

    def random_bytes(n: int) -> bytes:
        out = bytearray()
        block = rng.digest()
        while len(out) < n:
            block = hashlib.sha256(block).digest()
            out += block * 64  # cheap, still not sparse-looking or compressible to zero
        return bytes(out[:n])

    # Odd names.
    os.mkdir(p(b"names"))
    write(p(b"names", b"with spaces in it.txt"), b"spaces\n")
    write(p(b"names", b"new\nline"), b"newline in the name\n")
    write(p(b"names", b"latin1-\xe9t\xe9-\xff\xfe"), b"not utf-8\n")
    write(p(b"names", "utf8-żółw-🐢".encode()), b"utf-8\n")
    write(p(b"names", b"n" * 255), b"255 bytes\n")
    write(p(b"names", "é".encode() * 127 + b"x"), b"255 bytes, multibyte\n")
    write(p(b"names", b"-starts-with-dash"), b"dash\n")
    write(p(b"names", b".hidden"), b"hidden\n")
    write(p(b"names", b"back\\slash \t tab"), b"tab\n")

    # Deep nesting.
    deep = p(b"deep")
    os.mkdir(deep)
    for level in range(DEEP_LEVELS):
        deep = deep + b"/d%d" % level
        os.mkdir(deep)
    write(deep + b"/bottom", b"at the bottom\n")

    # Contents: empty, small, big.
    os.mkdir(p(b"data"))
    write(p(b"data", b"empty"), b"")
    write(p(b"data", b"small"), b"hello\n")
    big = random_bytes(BIG_FILE_SIZE)
    write(p(b"data", b"big.bin"), big)
    os.mkdir(p(b"data", b"empty-dir"))
    os.mkdir(p(b"data", b"empty-dir-2"))
    os.mkdir(p(b"data", b"empty-dir-2", b"nested-empty"))

    # Sparse: data at a few offsets, holes elsewhere, a hole at the end.
    sparse = p(b"data", b"sparse.img")
    fd = os.open(sparse, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        for offset in SPARSE_DATA_AT:
            os.pwrite(fd, b"D" * 8192, offset)
        os.ftruncate(fd, SPARSE_SIZE)
    finally:
        os.close(fd)
    os.chmod(sparse, 0o640)
    fd = os.open(p(b"data", b"all-hole"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.ftruncate(fd, 1024 * 1024)
    os.close(fd)

    # Hard links: a group of three across directories, and a pair.
    os.mkdir(p(b"links"))
    write(p(b"links", b"hl-a"), b"hard linked\n")
    os.link(p(b"links", b"hl-a"), p(b"links", b"hl-b"))
    os.link(p(b"links", b"hl-a"), p(b"data", b"hl-c"))
    write(p(b"links", b"pair-1"), random_bytes(70000))
    os.link(p(b"links", b"pair-1"), p(b"links", b"pair-2"))

    # Symlinks: relative, absolute, dangling, to a directory, to itself's parent, odd target.
    os.symlink(b"hl-a", p(b"links", b"rel-link"))
    os.symlink(b"/etc/hostname", p(b"links", b"abs-link"))
    os.symlink(b"/nonexistent/servermove/target", p(b"links", b"dangling-abs"))
    os.symlink(b"../missing", p(b"links", b"dangling-rel"))
    os.symlink(b"../data", p(b"links", b"dir-link"))
    os.symlink(b"target with\nnewline \xff", p(b"links", b"odd-target"))
    # Hard links to a symlink and to a fifo (link(2) must not follow the symlink).
    os.link(p(b"links", b"rel-link"), p(b"links", b"hard-to-symlink"), follow_symlinks=False)

    # Special files.
    os.mkdir(p(b"special"))
    os.mkfifo(p(b"special", b"fifo"), 0o620)
    os.chmod(p(b"special", b"fifo"), 0o620)
    os.mknod(p(b"special", b"socket"), stat.S_IFSOCK | 0o755)
    os.link(p(b"special", b"fifo"), p(b"special", b"fifo-hardlink"))
    if privileged:
        os.mknod(p(b"special", b"null-dev"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.chmod(p(b"special", b"null-dev"), 0o666)

    # Modes.
    os.mkdir(p(b"modes"))
    write(p(b"modes", b"setuid"), b"#!/bin/sh\n", 0o4755)
    write(p(b"modes", b"setgid"), b"#!/bin/sh\n", 0o2711)
    write(p(b"modes", b"no-perms"), b"nobody may read me\n", 0o000)
    write(p(b"modes", b"exec"), b"#!/bin/sh\n", 0o700)
    os.mkdir(p(b"modes", b"sticky"), 0o1777)
    os.chmod(p(b"modes", b"sticky"), 0o1777)
    os.mkdir(p(b"modes", b"setgid-dir"))
    os.chmod(p(b"modes", b"setgid-dir"), 0o2775)
    os.mkdir(p(b"modes", b"read-only-dir"))
    write(p(b"modes", b"read-only-dir", b"inside"), b"inside a read-only dir\n", 0o444)

    # Foreign owners (root only).
    if privileged:
        os.mkdir(p(b"owners"))
        write(p(b"owners", b"foreign-file"), b"owned by someone else\n")
        os.chown(p(b"owners", b"foreign-file"), FOREIGN_UID, FOREIGN_GID)
        write(p(b"owners", b"foreign-setuid"), b"#!/bin/sh\n")
        os.chown(p(b"owners", b"foreign-setuid"), FOREIGN_UID, FOREIGN_GID)
        os.chmod(p(b"owners", b"foreign-setuid"), 0o6755)  # after chown, which clears it
        os.mkdir(p(b"owners", b"foreign-dir"), 0o750)
        write(p(b"owners", b"foreign-dir", b"x"), b"x\n")
        os.symlink(b"foreign-file", p(b"owners", b"foreign-link"))
        os.chown(p(b"owners", b"foreign-link"), FOREIGN_UID, 0, follow_symlinks=False)
        os.chown(p(b"owners", b"foreign-dir"), FOREIGN_UID, FOREIGN_GID)
        os.chown(p(b"owners", b"foreign-dir", b"x"), 0, FOREIGN_GID)

    # Extended attributes (user.*, and an ACL as root).
    os.mkdir(p(b"xattrs"))
    write(p(b"xattrs", b"tagged"), b"has xattrs\n")
    os.setxattr(p(b"xattrs", b"tagged"), b"user.servermove.test", b"value \x00\xff binary")
    os.setxattr(p(b"xattrs", b"tagged"), b"user.empty", b"")
    os.setxattr(p(b"xattrs"), b"user.on-a-dir", b"dir value")
    if privileged:
        write(p(b"xattrs", b"acl"), b"has an ACL\n", 0o640)
        os.setxattr(p(b"xattrs", b"acl"), b"system.posix_acl_access", ACL_ACCESS)
        os.setxattr(p(b"xattrs", b"tagged"), b"trusted.servermove", b"root only")

    # Read-only directory last (its contents are in) and fixed, distinct times everywhere,
    # directories bottom-up so setting a child's time does not disturb its parent's.
    os.chmod(p(b"modes", b"read-only-dir"), 0o555)
    entries = []
    for dirpath, dirnames, filenames in os.walk(r):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            entries.append(os.path.join(dirpath, name))
    for i, path in enumerate(sorted(entries)):
        os.utime(path, ns=(1_500_000_000_000_000_000 + i * 1_000_003_001,
                           1_600_000_000_123_456_789 + i * 7_000_000_011), follow_symlinks=False)
    dirs = [d for d, _, _ in os.walk(r)]
    for i, path in enumerate(sorted(dirs, key=lambda d: -d.count(b"/"))):
        os.utime(path, ns=(1_500_000_000_000_000_000, 1_650_000_000_987_654_321 + i * 13_001))

    snap = snapshot_tree(r)
    counted = set()
    total_bytes = 0
    for entry in snap.values():
        if entry["type"] == "file" and entry["inode_key"] not in counted:
            counted.add(entry["inode_key"])
            total_bytes += entry["size"]
    return {"files": sum(1 for e in snap.values() if e["type"] != "dir"),
            "dirs": sum(1 for e in snap.values() if e["type"] == "dir"),
            "bytes": total_bytes}


_TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
          stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev",
          stat.S_IFBLK: "blockdev"}


def _data_segments(path: bytes, size: int) -> tuple[tuple[int, int], ...]:
    segments = []
    fd = os.open(path, os.O_RDONLY)
    try:
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as err:
                if err.errno == errno.ENXIO:
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            segments.append((start, end))
            pos = end
    finally:
        os.close(fd)
    return tuple(segments)


def _xattrs(path: bytes) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    # security.* labels are the host's business (SELinux/Smack), not the data's.
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in sorted(names)
            if not n.startswith("security.")}


def snapshot_tree(root: Path | bytes | str, *, owners: bool = True,
                  contents: bool = True) -> dict[bytes, dict]:
    """Every property of every entry under root (root itself is b""), keyed by relative path.

    Two snapshots are equal exactly when the trees are the same for a move. `owners=False`
    leaves out uid/gid (for moves by an unprivileged user). Hard-link groups are given as the
    sorted relative paths sharing an inode; `inode_key` is an opaque per-snapshot group id.
    """
    r = _b(root)
    snap: dict[bytes, dict] = {}
    groups: dict[tuple[int, int], list[bytes]] = {}
    stack = [b""]
    while stack:
        rel = stack.pop()
        path = r + b"/" + rel if rel else r
        st = os.lstat(path)
        kind = _TYPES[stat.S_IFMT(st.st_mode)]
        entry: dict = {"type": kind, "mtime_ns": st.st_mtime_ns, "xattrs": _xattrs(path)}
        if kind != "symlink":  # a symlink's mode is always 0777 on Linux and cannot be set
            entry["mode"] = oct(stat.S_IMODE(st.st_mode))
        if owners:
            entry["uid"], entry["gid"] = st.st_uid, st.st_gid
        if kind == "dir":
            stack.extend(rel + b"/" + n if rel else n for n in os.listdir(path))
        else:
            entry["nlink"] = st.st_nlink
            groups.setdefault((st.st_dev, st.st_ino), []).append(rel)
        if kind == "file":
            entry["size"] = st.st_size
            entry["data_segments"] = _data_segments(path, st.st_size)
            if contents:
                digest = hashlib.sha256()
                was = stat.S_IMODE(st.st_mode)
                with open(path, "rb") as f:
                    for block in iter(lambda f=f: f.read(1 << 20), b""):
                        digest.update(block)
                entry["sha256"] = digest.hexdigest()
                assert was == stat.S_IMODE(os.lstat(path).st_mode)
        elif kind == "symlink":
            entry["target"] = os.readlink(path)
        elif kind in ("chardev", "blockdev"):
            entry["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        snap[rel] = entry
    for paths in groups.values():
        group = tuple(sorted(paths))
        for rel in paths:
            snap[rel]["link_group"] = group
            snap[rel]["inode_key"] = group[0]
    return snap


def diff_snapshots(before: dict[bytes, dict], after: dict[bytes, dict]) -> list[str]:
    """Readable differences, for assertion messages ([] when equal)."""
    out = []
    for rel in sorted(set(before) | set(after)):
        a, b = before.get(rel), after.get(rel)
        if a == b:
            continue
        if a is None or b is None:
            out.append(f"{rel!r}: {'missing after' if b is None else 'new after'}")
            continue
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"{rel!r}: {key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out
