"""The mover's first stage on the server: it runs the mover from a cache of its compiled code when
it can, and compiles the mover (and fills the cache) when it cannot.

The bootstrap (tui/core/runner.py) reads a line with this file's length, then compiles and runs
this file, which is small. What follows on stdin is the header line (JSON: the mover's arguments
and its source's length) and the mover's source. Compiling the mover costs more than everything
else a one-file move does; unmarshalling its code from the cache costs a small part of that.

The mover runs as root under sudo, so a cache another user could write would run their code as
root. A cached file is used only when the directory and the file are owned by the effective user,
neither is writable by group or others, the file is a regular file with one link, and neither
name is a symlink; the file is looked up through the directory's open descriptor, so the checked
directory is the one read from. It is named by a hash (BLAKE2b) of the bytes received (not of
anything the header claims) and of the interpreter's version, so a changed mover or another
Python never runs old code. A cache that cannot be read, is not code, or cannot be written is
passed over: the mover is compiled as before, and the move goes on. Stdlib only, Python 3.6.
"""

import contextlib
import json
import marshal
import os
import stat
import sys

CODE_NAME = "servermove-mover"  # the file name in the mover's tracebacks, cached or not
CODE_TYPE = type(compile("", CODE_NAME, "exec"))
SUFFIX = ".code"
OTHERS_MAY_WRITE = stat.S_IWGRP | stat.S_IWOTH


def journal_root():
    # The same directory as the mover's journal_root(): root's is under /var/lib whatever HOME
    # sudo leaves, a user's under their own state directory.
    override = os.environ.get("SERVERMOVE_JOURNAL_DIR")
    if override:
        return os.fsencode(override)
    if os.geteuid() == 0:
        return b"/var/lib/servermove"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    return os.path.join(os.fsencode(base), b"servermove")


def cache_dir():
    return os.path.join(journal_root(), b"code")


def cache_name(source):
    # BLAKE2b from the builtin module: a cryptographic hash, three times as fast here as the
    # builtin SHA-256, and hashlib would load OpenSSL, which costs more than either.
    try:
        from _blake2 import blake2b
    except ImportError:
        from hashlib import blake2b
    digest = blake2b(source, digest_size=32)
    # Code compiled by one interpreter is not code for another: sys.version changes with every
    # release, cache_tag names the implementation, -O changes what compile() keeps.
    digest.update(("\0%s\0%s\0%d" % (sys.version, sys.implementation.cache_tag,
                                      sys.flags.optimize)).encode())
    return digest.hexdigest() + SUFFIX


def only_ours(st, kind):
    """Whether no one but the effective user could have written this file or directory."""
    return (stat.S_IFMT(st.st_mode) == kind and st.st_uid == os.geteuid()
            and not st.st_mode & OTHERS_MAY_WRITE)


def open_cache_dir(create):
    """The cache directory's descriptor when only we could have written into it, else None."""
    path = cache_dir()
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        if not create:
            return None
        os.makedirs(path, 0o700)
        fd = os.open(path, flags)
    if only_ours(os.fstat(fd), stat.S_IFDIR):
        return fd
    os.close(fd)
    return None


def read_cached(dir_fd, name):
    """The cached code, or None when there is none we may trust or it is not whole."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not only_ours(st, stat.S_IFREG) or st.st_nlink != 1:
            return None
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    try:
        code = marshal.loads(b"".join(chunks))
    except (EOFError, ValueError, TypeError):
        return None  # cut short or not marshal data: compile instead
    return code if type(code) is CODE_TYPE else None


def write_cached(dir_fd, name, code):
    """Put `code` in the cache: written whole and flushed under a name of its own, then renamed
    into place, so no reader ever sees part of it. Other entries (older movers, other
    interpreters) are removed: the cache holds what was run last."""
    data = marshal.dumps(code)
    tmp = "%s.%d.tmp" % (name, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError:
        os.close(fd)
        os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.close(fd)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    for other in os.listdir(dir_fd):
        if other != name:
            # Another mover's may be renamed or removed meanwhile: not ours to insist on.
            with contextlib.suppress(OSError):
                os.unlink(other, dir_fd=dir_fd)


def lookup(name):
    try:
        dir_fd = open_cache_dir(create=False)
        if dir_fd is None:
            return None
        try:
            return read_cached(dir_fd, name)
        finally:
            os.close(dir_fd)
    except OSError:
        return None  # unreadable: compile instead


def remember(name, code):
    try:
        dir_fd = open_cache_dir(create=True)
        if dir_fd is not None:
            try:
                write_cached(dir_fd, name, code)
            finally:
                os.close(dir_fd)
    except OSError:
        pass  # a read-only or full disk: the move does not need the cache


def cached_code(source):
    name = cache_name(source)
    code = lookup(name)
    if code is None:
        code = compile(source, CODE_NAME, "exec")
        remember(name, code)
    return code


def main():
    stdin = sys.stdin.buffer
    header = json.loads(stdin.readline().decode())
    sys.argv = [CODE_NAME] + header["argv"]
    code = cached_code(stdin.read(header["size"]))
    exec(code, {"__name__": "__main__"})


if __name__ == "__main__":
    main()
