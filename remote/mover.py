#!/usr/bin/env python3
"""servermove's mover: move one data directory to a new path on this server, safely and observably.

servermove ships this file over SSH and runs it with the server's own python3, so it is one file,
standard library only, and must run on CPython 3.6 and every later 3.x. It is exec'd from a
`python3 -c` bootstrap, so it never relies on __file__. The JSON-lines wire format it prints on
stdout is written down in docs/protocol.md of the servermove repository.

    mover.py move [--server-name NAME] [--verify checksum|size|none] [--bwlimit RATE]
                  [--dry-run] SRC DST
    mover.py statfs PATH...

How a move stays safe:

* Every check that can refuse runs before anything is written (exit status 2).
* SRC and DST on the same mount: one rename(2), atomic whatever the size.
* Otherwise the tree is copied into a hidden staging directory beside DST, verified against the
  source, flushed to disk, and renamed to DST in one step. Only then is the source removed, and
  only entry by entry, each one checked against its copy first: nothing that is not safely at DST
  is ever deleted.
* Any fault or a signal before that rename removes the staging directory and leaves the source
  untouched: the data is whole in exactly one place, and the last event says which (dataState).

Paths are handled as bytes throughout: names need not be UTF-8, and Python 3.6 in the C locale
would otherwise decode them as ASCII. They go on the wire decoded with surrogateescape.
"""

import contextlib
import errno
import fcntl
import io
import json
import marshal
import os
import queue
import signal
import stat
import sys
import threading
import time

# hashlib and shutil are imported where used (start, a failed move's clean-up): a foreground
# move starts sooner without them, a noticeable part of moving a small tree (see
# docs/performance.md).

PROTOCOL_VERSION = 1

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_CANCELLED = 3

# Big chunks keep the syscall count low; the adaptive sizing below shrinks them on slow disks so
# that progress stays byte-level and a cancel is seen within a fraction of a second.
CHUNK_MIN = 256 * 1024
CHUNK_START = 8 * 1024 * 1024
CHUNK_MAX = 64 * 1024 * 1024
CHUNK_TARGET_SECONDS = 0.2
VERIFY_CHUNK = 4 * 1024 * 1024
INLINE_VERIFY_MAX = 1024 * 1024  # smaller files are verified by the copy loop itself
SMALL_FILE_MAX = 64 * 1024  # unverified, smaller files are copied by one read and one write
# O_NOFOLLOW and O_NONBLOCK: a regular file swapped for a symlink or a fifo since it was listed
# must fail (ELOOP) or open at once, to be caught by fstat, not be followed or hang.
READ_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
              | getattr(os, "O_NONBLOCK", 0))
CREATE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
DIR_FLAGS = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0))

TICK_SECONDS = 0.2          # progress lines within a phase: at most 5 a second...
HEARTBEAT_SECONDS = 0.9     # ...and at least one a second even when nothing changed
SLEEP_SLICE = 0.05          # throttling sleeps in slices so a cancel is seen at once
PATH_MAX = 4096

STAGING_PREFIX = b".servermove-staging-"

CALCULATING = "calculating"
COPYING = "copying"
VERIFYING = "verifying"
CLEANING = "cleaning"
SYNCING = "syncing"      # a service move's phases (see ServiceMove)
STOPPING = "stopping"
SWITCHING = "switching"
STARTING = "starting"
CHECKING = "checking"
COMPLETE = "complete"
ERROR = "error"
CANCELLED = "cancelled"
TERMINAL = (COMPLETE, ERROR, CANCELLED)

# Where the whole data is when a move ends (dataState on terminal events).
STATE_SOURCE = "source"
STATE_DESTINATION = "destination"
STATE_BOTH = "both"

WORDS = {
    errno.ENOSPC: "no space left on the filesystem",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error (the disk may be failing)",
    errno.ENOENT: "it vanished (something deleted it while the move ran)",
    errno.EROFS: "the filesystem is read-only",
    errno.ENAMETOOLONG: "the name or path is too long",
    errno.EMLINK: "too many hard links",
    errno.ENOTEMPTY: "the directory is not empty",
    errno.EEXIST: "it already exists",
    errno.ENOTDIR: "a path component is not a directory",
    errno.EBUSY: "it is busy (a mount point or in use)",
    errno.EXDEV: "it is on another filesystem",
}


def words(err):
    """An OSError as a few plain words, without errno names or Python jargon."""
    if isinstance(err, OSError) and err.errno in WORDS:
        return WORDS[err.errno]
    if isinstance(err, OSError) and err.errno:
        return os.strerror(err.errno).lower()
    return str(err) or type(err).__name__


def show(path):
    """A bytes path as a wire string (protocol: surrogateescape for undecodable bytes)."""
    return path.decode("utf-8", "surrogateescape")


def human(n):
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return "%d bytes" % n if unit == "bytes" else "%.1f %s" % (value, unit)
        value /= 1024
    return "%d bytes" % n


def join(root, rel):
    return root + b"/" + rel if rel else root


class Refused(Exception):
    """Bad input or a precondition that fails before anything was written: exit status 2."""


class Failure(Exception):
    """A fault that ends the move. The message is one plain line naming the file and the cause."""


class Cancelled(Exception):
    pass


class SourceChanged(Failure):
    pass


# ----------------------------------------------------------------------------------------------
# Output


class Emitter:
    """Every line the mover prints goes through here: one lock, one sequence, any number of sinks.

    A later on-server journal is just another sink. If stdout goes away (the SSH client dropped),
    the move carries on: it is safe on its own, and stopping half-way would not be.
    """

    def __init__(self, stream):
        self.stream = stream
        self._lock = threading.Lock()
        self._seq = 0
        self.sinks = []
        self.stdout_ok = stream is not None

    def emit(self, subject, data, sequenced=True):
        with self._lock:
            if sequenced:
                self._seq += 1
                data["seq"] = self._seq
            line = json_line(subject, data)
            for sink in self.sinks:
                sink(line, subject, data)
            if self.stdout_ok:
                try:
                    self.stream.write(line.encode("ascii"))
                    self.stream.flush()
                except (OSError, ValueError):
                    self.stdout_ok = False

    def hello(self):
        self.emit("mover.hello", {"version": PROTOCOL_VERSION,
                                  "python": "%d.%d.%d" % sys.version_info[:3],
                                  "pid": os.getpid()}, sequenced=False)


def stderr_line(message):
    try:
        sys.stderr.write("servermove-mover: " + message + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# ----------------------------------------------------------------------------------------------
# Mount table: rename(2) only works within one mount, and bind mounts of one device are separate
# mounts, so st_dev alone cannot tell.


def _unescape_mount(field):
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i:i + 1] == b"\\" and field[i + 1:i + 4].isdigit():
            out.append(int(field[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


def read_mounts():
    """[(mount_id, mount_point, fs_type, source, major_minor, root)] from /proc/self/mountinfo,
    or [] without /proc. `root` is the directory of the filesystem mounted there (not / for a
    bind mount of a directory)."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            text = f.read()
    except OSError:
        return []
    mounts = []
    for line in text.splitlines():
        parts = line.split(b" ")
        try:
            sep = parts.index(b"-", 6)
            mounts.append((parts[0], _unescape_mount(parts[4]), parts[sep + 1],
                           _unescape_mount(parts[sep + 2]), parts[2],
                           _unescape_mount(parts[3])))
        except (ValueError, IndexError):
            continue
    return mounts


def mount_of(real_path, mounts):
    """The mount holding real_path (a resolved absolute path): the longest matching mount point,
    the last listed winning (it is the one on top)."""
    best = None
    for mount in mounts:
        point = mount[1]
        inside = point == b"/" or real_path == point or real_path.startswith(point + b"/")
        if inside and (best is None or len(point) >= len(best[1])):
            best = mount
    if best is not None:
        return best
    # No /proc: walk up until the device changes.
    path = real_path
    dev = os.stat(path).st_dev
    while path != b"/":
        parent = os.path.dirname(path)
        if os.stat(parent).st_dev != dev:
            break
        path = parent
    return (str(dev).encode(), path, b"", b"")


def mounts_inside(real_path, mounts):
    """The mounts whose mount point is below real_path (a resolved absolute path)."""
    return [m for m in mounts if m[1].startswith(real_path + b"/")]


def describe_mount(mount, mounts):
    """What is mounted there, in a few words: "bind of /srv/assets", "tmpfs", "/dev/sdb1"."""
    dev, root = mount[4], mount[5]
    if root != b"/":
        # A bind mount of a directory: name it where the same filesystem is mounted whole.
        for other in mounts:
            base = other[5].rstrip(b"/")
            if other[4] == dev and other is not mount and \
                    (root == other[5] or root.startswith(base + b"/")):
                return "bind of %s" % show(other[1].rstrip(b"/") + root[len(base):])
        return "bind of %s of %s" % (show(root), show(mount[3]))
    if mount[2] in (b"tmpfs", b"ramfs") or not mount[3].startswith(b"/"):
        return show(mount[2])
    return "%s, %s" % (show(mount[3]), show(mount[2]))


def nearest_existing(path):
    while not os.path.lexists(path) and path != b"/":
        path = os.path.dirname(path)
    return path


def statfs_command(emitter, paths):
    mounts = read_mounts()
    status = EXIT_OK
    for arg in paths:
        path = os.path.normpath(os.path.abspath(os.fsencode(arg)))
        data = {"path": show(path), "exists": os.path.lexists(path)}
        try:
            probe = nearest_existing(path)
            vfs = os.statvfs(probe)
            mount = mount_of(os.path.realpath(probe), mounts)
            data.update({
                "freeBytes": vfs.f_bavail * vfs.f_frsize,
                "totalBytes": vfs.f_blocks * vfs.f_frsize,
                "freeInodes": vfs.f_favail if vfs.f_files else None,
                "mountPoint": show(mount[1]),
                "device": show(mount[3]),
                "fsType": show(mount[2]),
                "probedPath": show(probe),
            })
        except OSError as err:
            status = EXIT_FAILED
            data["error"] = "cannot read %s: %s" % (show(path), words(err))
        emitter.emit("fs.stat", data, sequenced=False)
    return status


# ----------------------------------------------------------------------------------------------
# Walking a tree


WALK_DIR = 0    # a directory, before its contents
WALK_FILE = 1   # any non-directory
WALK_POST = 2   # a directory, after all its contents


class WalkError(Exception):
    def __init__(self, rel, err):
        Exception.__init__(self, rel, err)
        self.rel = rel
        self.err = err


def walk(root, stat_files=True, skip=None):
    """Yield (kind, rel, lstat, name, dir_fd) over a tree: files of a directory before its
    subdirectories, each directory once before (WALK_DIR) and once after (WALK_POST) its
    contents. A file also comes with its name and a descriptor of its directory, open while that
    directory is listed (that is, while its files are yielded): calls relative to it look up one
    name instead of a whole path, and no directory above can be swapped underneath them.

    A directory's listing is finished before descending, so at most one directory is open at any
    time (deep trees do not run out of descriptors) and only subdirectory names are held, never a
    list of every file: memory stays small for millions of files.

    With stat_files=False a file comes with its os.DirEntry instead of an lstat: the copy, which
    opens and fstats each regular file anyway, saves a stat call per file (the type comes with
    the directory listing). `skip(rel, entry, dir_fd)`, with stat_files=False, is asked about
    each file first: one it has dealt with (returns True) is not yielded.
    """
    try:
        root_st = os.lstat(root)
    except OSError as err:
        raise WalkError(b"", err) from err
    stack = [(b"", root_st, False)]
    while stack:
        rel, st, post = stack.pop()
        if post:
            yield WALK_POST, rel, st, None, None
            continue
        yield WALK_DIR, rel, st, None, None
        stack.append((rel, st, True))
        subdirs = []
        child = b""
        path = join(root, rel)
        try:
            dir_fd = os.open(path, DIR_FLAGS)
            try:
                with os.scandir(path) as entries:
                    for entry in entries:
                        name = entry.name
                        child = rel + b"/" + name if rel else name
                        if stat_files or entry.is_dir(follow_symlinks=False):
                            cst = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                            if stat.S_ISDIR(cst.st_mode):
                                subdirs.append((child, cst))
                            else:
                                yield WALK_FILE, child, cst, name, dir_fd
                        elif skip is None or not skip(child, entry, dir_fd):
                            yield WALK_FILE, child, entry, name, dir_fd
                        child = b""
            finally:
                os.close(dir_fd)
        except OSError as err:
            raise WalkError(child or rel, err) from err
        for child, cst in reversed(subdirs):
            stack.append((child, cst, False))


class MirrorDir:
    """The directory of another tree (the copy) that matches the one a walk is listing, open for
    calls relative to it: `enter` it on each WALK_DIR, whose files follow at once."""

    def __init__(self, root):
        self.root = root
        self.fd = None

    def enter(self, rel):
        self.close()
        self.fd = os.open(join(self.root, rel), DIR_FLAGS)

    def lstat(self, name):
        if self.fd is None:  # never relative to the working directory
            raise OSError(errno.EBADF, "the directory of the copy could not be opened")
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ----------------------------------------------------------------------------------------------
# Programs that use the source
#
# A program that keeps a file under SRC open for writing goes on writing into the old inode after
# a copy-move removed it: every later write is lost. So before anything is written, and again
# just before the copy is put in place, /proc is searched for processes that have a file under
# SRC open for writing, mapped shared and writable, or SRC as their working directory. /proc
# shows real paths, so they are compared with the real path of SRC. Only processes the mover may
# inspect are seen: all of them as root, a user's own otherwise.

USE_WRITE = "write"
USE_MAP = "map"
USE_CWD = "cwd"
USE_READ = "read"
DELETED_SUFFIX = b" (deleted)"
SCOPE_ALL = "all processes"
SCOPE_OWN = "own processes only"


class SourceUse(object):
    """One process using a path under SRC: `how` is one of the USE_* kinds."""

    __slots__ = ("pid", "command", "path", "how")

    def __init__(self, pid, command, path, how):
        self.pid = pid
        self.command = command
        self.path = path
        self.how = how

    def describe(self):
        what = {USE_WRITE: "has %s open for writing", USE_MAP: "has %s mapped for writing",
                USE_CWD: "works in %s (its working directory)",
                USE_READ: "has %s open for reading"}[self.how] % show(self.path)
        return "pid %d (%s) %s" % (self.pid, self.command, what)

    def as_data(self):
        return {"pid": self.pid, "command": self.command, "path": show(self.path),
                "how": self.how}


def _parent_pid(pid):
    with open(b"/proc/%d/stat" % pid, "rb") as handle:
        text = handle.read()
    return int(text[text.rindex(b")") + 2:].split()[1])  # the command may hold ") "


def mover_ancestors():
    """This process's parents up to init: the shell, sudo and sshd that started the move."""
    found = set()
    pid = os.getpid()
    while pid > 1:
        try:
            pid = _parent_pid(pid)
        except (OSError, ValueError, IndexError):
            break
        found.add(pid)
    return found


def _fd_opened_for_writing(proc, fd):
    with open(proc + b"/fdinfo/" + fd, "rb") as handle:
        for line in handle:
            if line.startswith(b"flags:"):
                return (int(line.split()[1], 8) & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)
    return False


def _fd_uses(proc, inside):
    """(path, how) for each open file descriptor of the process that points under SRC."""
    uses = []
    links = proc + b"/fd/"
    readlink = os.readlink  # a busy server has tens of thousands of descriptors: a tight loop
    for fd in os.listdir(links):
        try:
            target = readlink(links + fd)
        except PermissionError:
            raise
        except OSError:  # closed meanwhile
            continue
        if not inside(target):
            continue
        try:
            # An unlinked file is already out of the tree: moving it loses nothing of it.
            if target.endswith(DELETED_SUFFIX) and os.stat(links + fd).st_nlink == 0:
                continue
            how = USE_WRITE if _fd_opened_for_writing(proc, fd) else USE_READ
        except (OSError, ValueError):  # closed meanwhile
            continue
        uses.append((target, how))
    return uses


def _read_proc_file(path):
    # Straight os.read: a buffered file object is measurably slower over every process's maps.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 18)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _map_uses(proc, real_src):
    """(path, how) for each file under SRC the process has mapped. A private mapping, even a
    writable one, never writes to its file: only a shared writable one counts as writing."""
    text = _read_proc_file(proc + b"/maps")
    uses = []
    if real_src + b"/" not in text:  # the common case: one search, nothing parsed
        return uses
    for line in text.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 6 or not fields[5].startswith(real_src + b"/") or \
                fields[5].endswith(DELETED_SUFFIX):
            continue
        perms = fields[1]
        writes = perms[1:2] == b"w" and perms[3:4] == b"s"
        uses.append((fields[5], USE_MAP if writes else USE_READ))
    return uses


def _process_uses(pid, real_src, inside, skip_cwd):
    proc = b"/proc/%d" % pid
    uses = _fd_uses(proc, inside) + _map_uses(proc, real_src)
    if not skip_cwd:
        try:
            cwd = os.readlink(proc + b"/cwd")
        except OSError:  # a zombie or a kernel thread has none
            cwd = b""
        if inside(cwd) and not cwd.endswith(DELETED_SUFFIX):
            uses.append((cwd, USE_CWD))
    if not uses:
        return []
    try:
        with open(proc + b"/comm", "rb") as handle:
            command = show(handle.read().strip()) or "?"
    except OSError:
        command = "?"
    return [SourceUse(pid, command, path, how) for path, how in uses]


def source_users(real_src):
    """Every process but this one using something under real_src, and how many processes could
    not be inspected (as a user: other users'). The working directory of this process's parents
    does not count: it is the admin's shell, sudo or sshd, which write nothing there (their open
    files still count)."""
    prefix = real_src + b"/"

    def inside(path):
        return path == real_src or path.startswith(prefix)

    me = os.getpid()
    parents = mover_ancestors()
    found = []
    hidden = 0
    for name in os.listdir(b"/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        try:
            found.extend(_process_uses(pid, real_src, inside, pid in parents))
        except (PermissionError, ProcessLookupError):
            hidden += 1  # another user's process (EACCES), or a dying one
        except FileNotFoundError:
            continue  # it ended while we looked
    return found, hidden


def refuse_source_writers(real_src, error):
    """Raise `error` (Refused or Failure) naming a program that writes under SRC; return the
    readers and what the search covered (the plan's openFilesCheck and openFilesUnchecked)."""
    users, hidden = source_users(real_src)
    scope = {"openFilesCheck": SCOPE_ALL if os.geteuid() == 0 else SCOPE_OWN,
             "openFilesUnchecked": hidden}
    writers = [use for use in users if use.how != USE_READ]
    if writers:
        raise error("%s — stop that program first%s, then run the move again"
                    % (writers_words(writers),
                       " (a shell: cd out of it)" if writers[0].how == USE_CWD else ""))
    readers = {}
    for use in users:  # one per program: the first file it reads
        readers.setdefault(use.pid, use)
    return sorted(readers.values(), key=lambda use: use.pid), scope


def writers_words(writers):
    """"pid 4242 (java) has … open for writing (and 2 more programs)": the writer that says most
    about what to stop (a file open for writing; a working directory the least). Sorts
    `writers` so."""
    writers.sort(key=lambda use: (use.how == USE_CWD, use.pid))
    others = len(set(use.pid for use in writers)) - 1
    return writers[0].describe() + (" (and %d more program%s)" % (
        others, "s" if others > 1 else "") if others else "")


def source_writers(real_src):
    """The SourceUses of programs writing under real_src (empty when none)."""
    return [use for use in source_users(real_src)[0] if use.how != USE_READ]


def reader_warning(readers, real_src, move_id):
    """The move.warning about programs that only read under SRC (one SourceUse each): they keep
    the files they opened, so they should be restarted to use the new path."""
    text = readers[0].describe() + " — restart it after the move so that it uses the new path"
    if len(readers) > 1:
        text += " (%d programs read from the source)" % len(readers)
    rel = readers[0].path[len(real_src) + 1:]  # warnings name a path relative to SRC
    return {"message": text, "path": show(rel), "count": len(readers),
            "moveId": move_id}


# ----------------------------------------------------------------------------------------------
# The move


def parse_rate(text):
    """'40M' -> 41943040 bytes a second (binary suffixes; a bare number is bytes)."""
    raw = text.strip()
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    number = raw.rstrip("bBiI/sS")
    suffix = ""
    if number and number[-1].upper() in "KMGT":
        suffix = number[-1].upper()
        number = number[:-1]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if not number or value <= 0 or value != value or value == float("inf"):
        raise Refused("bad --bwlimit %r: give bytes a second like 40M, 1G or 500K (binary "
                      "suffixes K, M, G, T)" % text)
    return max(1, int(value * units[suffix]))


# JSON lines are serialised here only: the Emitter's events and the reaper's last word.
def json_line(subject, data):
    return json.dumps({"subject": subject, "data": data}, ensure_ascii=True,
                      separators=(",", ":")) + "\n"


def progress_data(server_name, phase, counts, move_id=None, error=None, data_state=None):
    """The one builder of a move.progress event's data; `counts`: its counters, by wire name."""
    data = {"serverName": server_name, "phase": phase}
    if move_id is not None:
        data["moveId"] = move_id
    data["ts"] = round(time.time(), 3)
    data.update(counts)
    if error is not None:
        data["error"] = error
    if data_state is not None:
        data["dataState"] = data_state
    return data


NO_COUNTS = {"bytesTotal": 0, "bytesCopied": 0, "filesTotal": 0, "filesCopied": 0}


class Progress:
    """A move's counters and where its data is, and the one place they become move.progress
    events: the phase changes the main thread makes, and the reporter thread's lines (at most
    one a tick while counters move, a heartbeat when they do not).

    The main thread counts by plain `+=`; the verifier and remover threads count through
    add_verified and add_removed, which take a lock (the copy loop counts verified bytes too)."""

    def __init__(self, emitter, server_name, move_id):
        self.out = emitter
        self.server_name = server_name
        self.move_id = move_id
        self.method = None
        self.reusing = False  # taking over a dead move's staging: bytesReused is reported
        self.phase = None
        self.bytes_total = 0
        self.files_total = 0
        self.dirs_total = 0
        self.bytes_copied = 0
        self.files_copied = 0
        self.bytes_reused = 0
        self.bytes_verified = 0
        self.files_verified = 0
        self.files_removed = 0
        self.current = None
        self.data_state = STATE_SOURCE  # where the whole data is (dataState)
        self.deleted_any = False
        self.service = None  # a service move's fields (pass, forecastDowntimeSeconds, downSince)
        self.service_end = None  # ...and on its terminal event (downtimeSeconds, serviceRunsFrom)
        self.kept_old = None  # where the old copy is kept and until when (keep_old)
        self._lock = threading.Lock()  # one event at a time
        self._count_lock = threading.Lock()  # counts from other threads
        self._last_report = 0.0
        self._last_counters = None
        self._stop = threading.Event()
        self._thread = None
        self._poll = None

    def add_verified(self, count):
        # `+=` on an attribute is a read and a write: a thread switch between them loses one.
        with self._count_lock:
            self.bytes_verified += count

    def add_removed(self, count):
        """`count` files removed (0: a directory): the source is no longer whole."""
        with self._count_lock:
            self.files_removed += count
            self.deleted_any = True
            self.data_state = STATE_DESTINATION

    def _counters(self):
        return (self.bytes_total, self.files_total, self.bytes_copied, self.files_copied,
                self.bytes_verified, self.files_verified, self.files_removed, self.current)

    def data(self, error=None, data_state=None):
        counts = {"bytesTotal": self.bytes_total, "bytesCopied": self.bytes_copied,
                  "filesTotal": self.files_total, "filesCopied": self.files_copied,
                  "bytesVerified": self.bytes_verified, "filesVerified": self.files_verified}
        if self.method is not None:
            counts["method"] = self.method
        if self.reusing:
            counts["bytesReused"] = self.bytes_reused
        if self.phase == CALCULATING:
            counts["dirsTotal"] = self.dirs_total
        if self.phase == CLEANING:
            counts["filesRemoved"] = self.files_removed
        if self.current is not None:
            counts["currentFile"] = show(self.current)
        if self.service is not None:
            counts.update(self.service)
            if self.phase in TERMINAL:
                counts.update(self.service_end)
        if self.kept_old is not None and self.phase in TERMINAL:
            counts.update(self.kept_old)  # oldCopyPath, oldCopyDueAt (KeptCopies.keep)
        return progress_data(self.server_name, self.phase, counts, self.move_id, error,
                             data_state)

    def set_phase(self, phase, error=None, data_state=None):
        with self._lock:
            if self.phase in TERMINAL:
                return
            if phase != self.phase:
                self.current = None
            self.phase = phase
            self._last_report = time.monotonic()
            self._last_counters = self._counters()
            self.out.emit("move.progress", self.data(error, data_state))

    def tick(self):
        """Called by the reporter thread: a line when counters moved, a heartbeat when not."""
        with self._lock:
            if self.phase is None or self.phase in TERMINAL:
                return
            now = time.monotonic()
            counters = self._counters()
            since = now - self._last_report
            if (counters != self._last_counters and since >= TICK_SECONDS) or \
                    since >= HEARTBEAT_SECONDS:
                self._last_report = now
                self._last_counters = counters
                self.out.emit("move.progress", self.data())

    def start_reporter(self, poll=None):
        """Start the reporter thread; `poll`, if given, is called every CANCEL_POLL_SECONDS."""
        self._poll = poll
        self._thread = threading.Thread(target=self._reporter, name="reporter")
        self._thread.daemon = True
        self._thread.start()

    def stop_reporter(self):
        self._stop.set()
        self._thread.join(2)

    def _reporter(self):
        next_poll = 0.0
        while not self._stop.wait(TICK_SECONDS / 2):
            self.tick()
            if self._poll is not None and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + CANCEL_POLL_SECONDS
                self._poll()


class Cancellation:
    """Whether the move must stop, and why: a signal or a cancel request (`by` says whose), or a
    failure found by another thread (the verifier, the journal), raised by the main thread at
    its next check. The worker threads stop at the next file or chunk once it is set."""

    def __init__(self):
        self._event = threading.Event()
        self.by = None
        self.failure = None

    def request(self, by):
        if self.by is None:
            self.by = by
        self._event.set()

    def fail(self, failure):
        self.failure = failure

    def stop_threads(self):
        self._event.set()

    def is_set(self):
        return self._event.is_set()

    def check(self):
        """The one cancellation point: the copy, verify and clean loops call it between chunks."""
        if self.failure is not None:
            raise self.failure
        if self._event.is_set():
            raise Cancelled()


class Plan:
    """How the move will go, as Preflight finds it: filled in check by check (a move refused or
    cancelled half-way keeps what was found so far, its staging path among it) and read by the
    rest of the move."""

    def __init__(self):
        self.method = None  # "rename" or "copy"
        self.counted = False  # whether the source was counted (a real rename is not)
        self.blocks_needed = 0  # bytes of allocated blocks the copy needs at DST
        self.inodes_needed = 0
        self.staging = None  # where the copy is made; None once it is DST (publish)
        self.dst_is_mount = False  # DST is a mount point: its entries are published one by one
        self.missing_parents = []  # DST's parents to make, outermost first
        self.counted_at_ns = 0  # when counting began (changed_example)
        self.needs = {}  # what the copy must keep -> an entry of the source that has it
        self.resume = None  # a DeadMove this move takes over (see the journal), or None
        self.finishing = False  # True: only the cleaning of the dead move in resume is left
        self.dead_moves = None  # the dead moves of the same SRC and DST, once looked up

    def dead_staging_note(self):
        """For a refusal for space: the dead move's staging taken over holds some of it."""
        if self.resume is None or self.finishing:
            return ""
        return ("; %s, the partial copy left by the move %s cut short, takes space there too "
                "(its files that can be reused are counted as copied; delete it to start afresh)"
                % (show(self.resume.staging), self.resume.move_id))

    def resume_summary(self):
        """What the plan says of a dead move taken over (None for a fresh move)."""
        if self.resume is None:
            return None
        return {"moveId": self.resume.move_id, "finishes": self.finishing,
                "staging": None if self.finishing else show(self.resume.staging)}


class Preflight:
    """Every check that can refuse, run before anything is written, in small steps: the source,
    the paths, the destination, the mounts, the open files, the dead moves to take over, the
    count, the capacity and what DST keeps. Fills in the move's Plan and announces it."""

    def __init__(self, move):
        self.move = move
        self.plan = move.plan
        self.src, self.dst, self.move_id = move.src, move.dst, move.move_id
        self.progress = move.progress
        self.check, self.warn, self.src_show = move.check, move.warn, move.src_show
        self.euid, self.egid, self.is_root = move.euid, move.egid, move.is_root

    def run(self):
        src, dst = self.src, self.dst
        self.check_source()
        dst_parent = os.path.dirname(dst)
        self.find_missing_parents(dst_parent)
        real_src = os.path.realpath(src)
        real_dst = os.path.join(os.path.realpath(dst_parent), os.path.basename(dst))
        self.check_paths(real_src, real_dst)
        if self.move.service is None:
            readers, open_files = refuse_source_writers(real_src, Refused)
        else:  # the running service writes there: it is stopped before the final copy
            readers, open_files = service_source_users(real_src, self.move)
        dst_st = self.lstat_destination()
        mounts = read_mounts()
        src_mount = mount_of(real_src, mounts)
        self.refuse_mounts_inside(real_src, mounts)
        if dst_st is not None:
            dst_mount = self.check_existing_destination(dst_st, real_src, real_dst, mounts)
        else:
            dst_mount = mount_of(os.path.realpath(dst_parent), mounts)
        self.choose_method(src_mount, dst_mount)
        service_plan = None
        if self.move.service is not None:
            service_plan = plan_service(self.move, self.plan)
        self.take_over_dead_move(real_src, real_dst)
        self.progress.reusing = self.plan.resume is not None and not self.plan.finishing
        self.check()
        # A rename is one atomic step whatever the size, so counting a million files first
        # would only make it slow: a real rename is not counted (the plan says so with
        # "counted": false); a dry run still counts, to show the admin what would move.
        self.plan.counted = self.plan.method == "copy" or self.move.dry_run
        if self.plan.counted:
            SourceCounter(self).run()
        dst_vfs = os.statvfs(dst if dst_st is not None else nearest_existing(dst_parent))
        self.check_writable(dst_vfs, dst_mount)
        if self.plan.method == "copy" and not self.plan.finishing:
            self.check_capacity(dst_vfs, dst_mount)
        if self.plan.method == "copy" and not self.move.dry_run:  # the probe writes
            self.refuse_what_destination_loses(dst_mount)
        if readers:
            self.move.out.emit("move.warning", reader_warning(readers, real_src, self.move_id))
        self.announce(dst_vfs, open_files, readers, service_plan)
        return self.plan

    def check_source(self):
        src = self.src
        try:
            src_st = os.lstat(src)
        except FileNotFoundError:
            raise Refused("source %s does not exist — check the path" % show(src)) from None
        except OSError as err:
            raise Refused("cannot read source %s: %s" % (show(src), words(err))) from err
        if stat.S_ISLNK(src_st.st_mode):
            raise Refused("source %s is a symbolic link — give the real directory (%s)"
                          % (show(src), show(os.path.realpath(src))))
        if not stat.S_ISDIR(src_st.st_mode):
            raise Refused("source %s is not a directory — the mover moves directories"
                          % show(src))
        if src == b"/":
            raise Refused("refusing to move / — give a data directory")

    def check_paths(self, real_src, real_dst):
        src, dst = self.src, self.dst
        if real_dst == real_src:
            raise Refused("source and destination are the same directory (%s) — pick another "
                          "destination" % show(src))
        if real_dst.startswith(real_src + b"/"):
            raise Refused("destination %s is inside the source %s — pick a destination outside "
                          "it" % (show(dst), show(src)))
        if real_src.startswith(real_dst + b"/"):
            raise Refused("the source %s is inside the destination %s — pick another "
                          "destination" % (show(src), show(dst)))

    def lstat_destination(self):
        """DST's lstat, or None when it does not exist yet."""
        try:
            return os.lstat(self.dst)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise Refused("cannot check destination %s: %s" % (show(self.dst), words(err))) \
                from err

    def check_existing_destination(self, dst_st, real_src, real_dst, mounts):
        """DST exists: it must be a directory, empty but for what a dead move left; its mount."""
        src, dst = self.src, self.dst
        if stat.S_ISLNK(dst_st.st_mode) or not stat.S_ISDIR(dst_st.st_mode):
            raise Refused("destination %s already exists and is not a directory — remove it "
                          "or pick another destination" % show(dst))
        try:
            names = os.listdir(dst)
        except OSError as err:
            raise Refused("cannot read destination %s: %s" % (show(dst), words(err))) from err
        dst_mount = mount_of(real_dst, mounts)
        self.plan.dst_is_mount = dst_mount[1] == real_dst
        if self.plan.dst_is_mount and names == [b"lost+found"] and \
                not os.path.lexists(join(src, b"lost+found")) and \
                not os.listdir(join(dst, b"lost+found")):
            # A freshly made ext4 filesystem: its empty lost+found stays where it is.
            names = []
        if names:
            self.check_nonempty_destination(names, real_src, real_dst)
        return dst_mount

    def choose_method(self, src_mount, dst_mount):
        plan = self.plan
        plan.method = "rename" if dst_mount[0] == src_mount[0] else "copy"
        self.progress.method = plan.method
        if plan.method == "copy":
            parent = self.dst if plan.dst_is_mount else os.path.dirname(self.dst)
            plan.staging = join(parent, STAGING_PREFIX) + self.move_id.encode()

    def check_writable(self, dst_vfs, dst_mount):
        src, dst = self.src, self.dst
        if dst_vfs.f_flag & getattr(os, "ST_RDONLY", 1):
            raise Refused("the destination filesystem (%s) is read-only — remount it "
                          "read-write or pick another destination" % show(dst_mount[1]))
        writable_dir = dst if self.plan.dst_is_mount else nearest_existing(os.path.dirname(dst))
        if not os.access(writable_dir, os.W_OK | os.X_OK):
            raise Refused("cannot write in %s: permission denied — run as a user who may, or "
                          "pick another destination" % show(writable_dir))
        if not os.access(os.path.dirname(src), os.W_OK | os.X_OK):
            raise Refused("cannot remove %s afterwards: its parent %s is not writable for this "
                          "user — run as a user who may" % (show(src),
                                                           show(os.path.dirname(src))))

    def bytes_needed(self, dst_vfs):
        # Allocated blocks, not apparent sizes: sparse files stay sparse. Directories are
        # counted at one block each.
        return self.plan.blocks_needed + self.progress.dirs_total * dst_vfs.f_frsize

    def check_capacity(self, dst_vfs, dst_mount):
        dst_free = dst_vfs.f_bavail * dst_vfs.f_frsize
        need = self.bytes_needed(dst_vfs)
        if need > dst_free:
            raise Refused("not enough space on %s: need %s, %s free — free some space or "
                          "pick another destination%s" % (show(dst_mount[1]), human(need),
                                                          human(dst_free),
                                                          self.plan.dead_staging_note()))
        if dst_vfs.f_files and self.plan.inodes_needed > dst_vfs.f_favail:
            raise Refused("not enough free inodes on %s: need %d, %d free — free some or "
                          "pick another destination" % (show(dst_mount[1]),
                                                        self.plan.inodes_needed,
                                                        dst_vfs.f_favail))

    def announce(self, dst_vfs, open_files, readers, service_plan=None):
        """The move.plan event."""
        move, plan, progress = self.move, self.plan, self.progress
        src_vfs = os.statvfs(self.src)
        data = {
            "moveId": self.move_id,
            "serverName": move.server_name,
            "src": show(self.src),
            "dst": show(self.dst),
            "method": plan.method,
            "bytesTotal": progress.bytes_total,
            "filesTotal": progress.files_total,
            "dirsTotal": progress.dirs_total,
            "dstFreeBytes": dst_vfs.f_bavail * dst_vfs.f_frsize,
            "dstFreeInodes": dst_vfs.f_favail if dst_vfs.f_files else None,
            "srcFreeBytes": src_vfs.f_bavail * src_vfs.f_frsize,
            "verify": move.verify,
            "bwlimit": move.bwlimit,
            "dryRun": move.dry_run,
            "counted": plan.counted,
            "openFilesCheck": open_files["openFilesCheck"],
            "openFilesUnchecked": open_files["openFilesUnchecked"],
            "openFilesReaders": [use.as_data() for use in readers],
            "createdParents": [show(path) for path in plan.missing_parents],
            "bytesNeeded": self.bytes_needed(dst_vfs),
            "resumes": self.plan.resume_summary(),
            "destinationProbed": plan.method == "copy" and not move.dry_run,
        }
        if service_plan is not None:
            data["service"] = service_plan
        if move.keep_old is not None and plan.method == "copy":  # a rename leaves no old copy
            data["keepOldSeconds"] = move.keep_old
        move.out.emit("move.plan", data)

    def find_missing_parents(self, dst_parent):
        """The destination's missing parent directories, outermost first, into
        missing_parents: the move makes them (make_parents), like mkdir -p."""
        missing = []
        path = dst_parent
        while True:
            try:
                parent_st = os.stat(path)
                break
            except (FileNotFoundError, NotADirectoryError):
                missing.insert(0, path)
                path = os.path.dirname(path)
            except OSError as err:
                raise Refused("the destination's parent %s is unusable (%s) — pick another "
                              "destination" % (show(path), words(err))) from err
        if not stat.S_ISDIR(parent_st.st_mode):
            raise Refused("the destination's parent %s is not a directory — pick another "
                          "destination" % show(path))
        self.plan.missing_parents = missing

    def refuse_mounts_inside(self, real_src, mounts):
        """A mount below SRC belongs to someone else: a copy would copy the mounted tree and
        cleaning would then empty it, and a rename would carry the mount along to DST while
        fstab and the services that use it still name the old path. Refused either way."""
        inside = mounts_inside(real_src, mounts)
        if inside:
            mount = min(inside, key=lambda m: len(m[1]))
            where = self.src + mount[1][len(real_src):]
            raise Refused("%s is a mount point (%s): unmount it, or move it on its own"
                          % (show(where), describe_mount(mount, mounts)))

    def refuse_what_destination_loses(self, dst_mount):
        """Refuse a destination filesystem that cannot keep what the source has (exFAT and FAT:
        no owners, modes, symbolic or hard links, times only to the second or coarser): the
        verify would find every such copy different, and blame a writer."""
        lacks = [what for what in destination_lacks(
            self.dst if self.plan.dst_is_mount else nearest_existing(os.path.dirname(self.dst)),
            self.is_root) if what in self.plan.needs]
        if lacks:
            raise Refused("the destination filesystem (%s at %s) cannot keep the source's %s "
                          "(e.g. %s) — move it to a filesystem that can, such as ext4, xfs or "
                          "btrfs" % (show(dst_mount[2]) or "unknown", show(dst_mount[1]),
                                     ", ".join(lacks), self.src_show(self.plan.needs[lacks[0]])))

    def dead_moves(self, real_src, real_dst):
        if self.plan.dead_moves is None:
            self.plan.dead_moves = dead_moves_of(real_src, real_dst)
        return self.plan.dead_moves

    def check_nonempty_destination(self, names, real_src, real_dst):
        """DST holds something. It is the copy a dead move of this source put there (its
        cleaning is then finished), or a dead move's staging inside DST (taken over later);
        anything else is refused, without ever advising to delete what may be the only copy."""
        dead = self.dead_moves(real_src, real_dst)
        stagings = set(os.path.basename(m.staging) for m in dead if m.staging)
        rest = [name for name in names if name not in stagings]
        if rest == [b"lost+found"] and rest != names and self.plan.dst_is_mount and \
                not os.listdir(join(self.dst, b"lost+found")) and \
                not os.path.lexists(join(self.src, b"lost+found")):
            rest = []  # a new filesystem's own empty lost+found, beside a dead move's staging
        if not rest:
            return
        published = [m for m in dead if m.published()]
        if published:
            self.plan.resume = published[0]
            self.plan.finishing = True
            return
        earlier = [m for m in dead if m.left_copy_at_destination()]
        if earlier:
            raise Refused("destination %s holds an earlier copy that is not in use (move %s, "
                          "which did not finish; the source %s is whole): empty it, then run "
                          "the move again" % (show(self.dst), earlier[0].move_id,
                                              show(self.src)))
        raise Refused("destination %s exists and is not empty — pick another destination (what "
                      "it holds may be data the source no longer has: check it before deleting "
                      "anything)" % show(self.dst))

    def take_over_dead_move(self, real_src, real_dst):
        """A copy picks up the staging of a dead move of the same SRC and DST: what it holds and
        the journal recorded as finished is linked into this move's staging, not copied again."""
        if self.plan.finishing:
            if self.plan.method != "copy":
                raise Refused("%s and %s are now on the same filesystem, but an earlier move "
                              "between them was cut short while removing the source — compare "
                              "them and remove the source by hand" % (show(self.src),
                                                                      show(self.dst)))
            self.plan.staging = None
            return
        if self.plan.method != "copy":
            return
        for dead in self.dead_moves(real_src, real_dst):
            if dead.resumable():
                dead.load_records()
                self.plan.resume = dead
                return


class SourceCounter:
    """Counts what will be moved (into Progress and the Plan), notes what DST must keep, and for
    a copy refuses early what would fail half-way: paths too long, what this user cannot read
    or empty, device nodes without root."""

    def __init__(self, preflight):
        self.src, self.dst, self.plan = preflight.src, preflight.dst, preflight.plan
        self.progress, self.check = preflight.progress, preflight.check
        self.warn, self.src_show = preflight.warn, preflight.src_show
        self.euid, self.egid, self.is_root = preflight.euid, preflight.egid, preflight.is_root

    def run(self):
        """Count what will be moved, and for a copy refuse early what would fail half-way."""
        # A tick before now: ctimes come from a coarse clock (changed_example compares them).
        self.plan.counted_at_ns = int((time.time() - 0.01) * 1e9)
        seen_links = {}  # (dev, ino) -> [names found, st_nlink, first name]
        blocks = 0
        inodes = 0
        copying = self.plan.method == "copy"
        check_access = copying and not self.is_root
        src_len = len(self.src)
        dst_len = max(len(self.dst), len(self.plan.staging or b""))
        for kind, rel, st, _name, _dir_fd in walk(self.src):
            self.check()
            self.progress.current = rel
            if kind == WALK_POST:
                continue
            if copying and max(src_len, dst_len) + len(rel) + 1 >= PATH_MAX:
                raise Refused("path too long to copy (over %d bytes): %s — shorten it or move "
                              "a deeper directory" % (PATH_MAX, self.src_show(rel)))
            if kind == WALK_DIR:
                self.note_needs(rel, st)
                self.progress.dirs_total += 1
                inodes += 1
                # Emptying it needs write access too, unless it is ours: cleaning then makes
                # a read-only directory writable (it is going away).
                need = os.R_OK | os.X_OK | (0 if st.st_uid == self.euid else os.W_OK)
                if check_access and not os.access(join(self.src, rel), need):
                    raise Refused(self.unreadable(rel, st, "rx"))
                continue
            self.progress.files_total += 1
            mode = st.st_mode
            self.note_needs(rel, st)
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in seen_links:
                    seen_links[key][0] += 1
                    self.plan.needs.setdefault("hard links", rel)
                    continue
                seen_links[key] = [1, st.st_nlink, rel]
            # A copy a dead move left that will be linked, not written: no new space needed.
            reused = self.plan.resume is not None and self.plan.resume.matches(rel, st)
            inodes += 0 if reused else 1
            if stat.S_ISREG(mode):
                self.progress.bytes_total += st.st_size
                blocks += 0 if reused else st.st_blocks * 512
                if check_access and not os.access(join(self.src, rel), os.R_OK):
                    raise Refused(self.unreadable(rel, st, "r"))
            elif (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) and copying and not self.is_root:
                raise Refused("%s is a device node and only root can create one — run the move "
                              "as root" % self.src_show(rel))
        self.progress.current = None
        self.plan.blocks_needed = blocks
        self.plan.inodes_needed = inodes
        if copying:
            self.warn_links_outside(seen_links)

    def note_needs(self, rel, st):
        """Note what the destination must keep for this entry (see destination_lacks)."""
        needs = self.plan.needs
        if st.st_mtime_ns % 1000000000 and "nanosecond times" not in needs:
            needs["nanosecond times"] = rel
        if stat.S_ISLNK(st.st_mode):
            needs.setdefault("symbolic links", rel)
        else:
            needs.setdefault("permission modes", rel)
        if self.is_root and (st.st_uid, st.st_gid) != (self.euid, self.egid):
            needs.setdefault("owners", rel)

    def warn_links_outside(self, seen_links):
        """A file with hard links outside SRC: its copy cannot stay linked to them."""
        for found, nlink, rel in seen_links.values():
            if found < nlink:
                self.warn("linksoutside", "%s has hard links outside the source: its copy at %s "
                          "is a file of its own, no longer linked to them"
                          % (self.src_show(rel), show(self.dst)), rel)

    def unreadable(self, rel, st, need):
        """Why a file or directory the move must read (and empty) is refused, and what to do."""
        kind = "directory" if need == "rx" else "file"
        if st.st_uid == self.euid:
            return ("cannot read %s %s: its mode (%03o) keeps out even its owner, the user "
                    "running the move — give it back (chmod u+%s %s) and run the move again"
                    % (kind, self.src_show(rel), stat.S_IMODE(st.st_mode),
                       "rwx" if kind == "directory" else "r", self.src_show(rel)))
        what = "read or empty directory" if kind == "directory" else "read"
        return ("cannot %s %s: permission denied — run as its owner or as root"
                % (what, self.src_show(rel)))


class Metadata:
    """Gives each copy its source's owner, extended attributes, mode and times."""

    def __init__(self, move):
        self.move = move
        self.src, self.dst, self.plan, self.progress = move.src, move.dst, move.plan, move.progress
        self.check, self.warn, self.src_show = move.check, move.warn, move.src_show
        self.read_failure, self.write_failure = move.read_failure, move.write_failure
        self.euid, self.egid = move.euid, move.egid

    def set_meta(self, rel, st, src_ref, dpath, fd, mode_is_set=False):
        """Owner, xattrs, mode and times, in that order: chown clears setuid/setgid bits, and an
        ACL xattr rewrites the group mode bits, so chmod comes after both; times come last.
        `mode_is_set`: created with its final mode, which stands unless chown or xattrs ran."""
        is_link = stat.S_ISLNK(st.st_mode)
        target = fd if fd is not None else dpath
        chowned = self.set_owner(rel, st, target, fd is not None)
        copied = self.copy_xattrs(rel, src_ref, target, is_link)
        try:
            if not is_link and not (mode_is_set and not chowned and not copied):
                os.chmod(target, stat.S_IMODE(st.st_mode))
            if fd is not None:
                os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
            else:
                os.utime(dpath, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        except OSError as err:
            raise self.write_failure(rel, err) from err

    def set_dir_meta(self, rel, st, dpath):
        spath = join(self.src, rel)
        self.set_meta(rel, st, spath, dpath, None)

    def set_owner(self, rel, st, target, is_fd):
        """Give the copy the source's owner; say whether chown was called."""
        if st.st_uid == self.euid and st.st_gid == self.egid:
            # What a new entry gets anyway: the staging directories carry no setgid bit until
            # their contents are in (isolate_staging), so new files take our own group.
            return False
        try:
            if is_fd:
                os.chown(target, st.st_uid, st.st_gid)
            else:
                os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.EINVAL, errno.EACCES):
                raise self.write_failure(rel, err) from err
            self.warn("owner", "owner and group not kept (only root can give files to another "
                      "user): the copies belong to the user running the move", rel)
        return True

    def copy_xattrs(self, rel, src_ref, target, is_link):
        """Copy every extended attribute (ACLs among them); say whether any was set."""
        copied = False
        try:
            if isinstance(src_ref, int):
                names = os.listxattr(src_ref)
            else:
                names = os.listxattr(src_ref, follow_symlinks=False)
        except OSError as err:
            if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                return False
            raise self.read_failure(rel, err) from err
        for name in names:
            try:
                if isinstance(src_ref, int):
                    value = os.getxattr(src_ref, name)
                else:
                    value = os.getxattr(src_ref, name, follow_symlinks=False)
            except OSError as err:
                if err.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                    continue
                raise self.read_failure(rel, err) from err
            try:
                if isinstance(target, int):
                    os.setxattr(target, name, value)
                else:
                    os.setxattr(target, name, value, follow_symlinks=False)
                copied = True
            except OSError as err:
                if err.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise self.write_failure(rel, err) from err
                self.warn("xattr:" + name, "extended attribute %s not kept: %s" % (
                    name, words(err)), rel)
        return copied


class Resumption:
    """A move cut short, and the next one: what a dead move copied and recorded is linked into
    this move's staging instead of copied again, and what this move copies is recorded (by a
    detached worker's Recorder) for a move that may take it over."""

    def __init__(self, move):
        self.move = move
        self.plan, self.progress, self.warn = move.plan, move.progress, move.warn
        self.move_id = move.move_id

    def reuse(self, rel, name, st, dst_dir, verifier):
        """Link the dead move's copy of `rel` into our staging if the journal recorded it as
        finished and its source is the same inode, unchanged since (size, mtime and ctime: any
        write, chmod, chown or xattr change moves ctime). Say whether it was taken."""
        if not self.plan.resume.matches(rel, st, forget=True):
            return False
        old = join(self.plan.resume.staging, rel)
        try:
            cst = os.lstat(old)
            if not stat.S_ISREG(cst.st_mode) or (cst.st_size, cst.st_mtime_ns) != \
                    (st.st_size, st.st_mtime_ns):
                return False
            os.link(old, name, dst_dir_fd=dst_dir, follow_symlinks=False)
        except OSError:
            return False  # gone, or cannot be linked: copied like any other file
        self.progress.bytes_copied += st.st_size
        self.progress.bytes_reused += st.st_size
        self.record(rel, st)
        if verifier is not None:  # --verify checksum: its content is compared again
            verifier.put(("file", rel, st))
        return True

    def record(self, rel, st):
        if self.move.recorder is not None:
            self.move.recorder.add(rel, st)


    def stop_recording(self):
        if self.move.recorder is not None:
            self.move.recorder.stop()

    def release_dead_moves(self):
        """Once copying is done: remove the stagings of the dead moves taken over (all that was
        worth keeping is linked into ours) and mark them taken over, so no later move takes
        them again. A staging that cannot be removed is named in a warning."""
        if self.plan.resume is None:
            return
        for dead in self.plan.dead_moves or ():
            if dead.staging is not None and dead.resumable():
                try:
                    force_rmtree(dead.staging)
                except OSError as err:
                    self.warn("staging", "the partial copy of the earlier move %s could not be "
                              "removed (%s): delete %s by hand" % (
                                  dead.move_id, words(err), show(dead.staging)), b"")
                    continue
            dead.mark_taken_over(self.move_id)


class Copier:
    """Copies the source tree into staging: directories, regular files (the fastest call the
    kernel allows, sparse files kept sparse, small ones in one read and one write), hard links,
    symlinks and special files; what a dead move already copied is linked in (Resumption).
    Counts in Progress; hands big files to the Verifier chunk by chunk."""

    def __init__(self, move, metadata, resumption):
        self.move = move
        self.src, self.dst, self.plan, self.progress = move.src, move.dst, move.plan, move.progress
        self.check, self.warn, self.src_show = move.check, move.warn, move.src_show
        self.read_failure, self.write_failure = move.read_failure, move.write_failure
        self.metadata, self.resumption = metadata, resumption
        self.bwlimit, self.noatime = move.bwlimit, move.noatime
        self.egid = move.egid
        self.use_copy_file_range = hasattr(os, "copy_file_range")
        self.use_sendfile = hasattr(os, "sendfile")
        self.chunk = CHUNK_START
        self.umask = os.umask(0o077)  # reading the umask means setting it: put it straight back
        os.umask(self.umask)
        self.hardlinks = {}
        self.started = 0.0  # when copying began (throttle)
        self.written = 0  # the bytes copied since (throttle)
        self.live = None  # a service move's pass (LivePass): reuses the last pass's copies

    def copy_tree(self, verifier):
        self.started, self.written = time.monotonic(), 0
        staging, src = self.plan.staging, self.src
        copies = MirrorDir(staging)
        processes = CopyProcesses.for_move(self, verifier)
        walked = 0
        keep = None  # the final pass keeps unchanged files inside the walk (LivePass.keep)
        if self.live is not None and self.live.in_place:
            keep = self.live.keeper(verifier, self)
        try:
            # A directory comes with its lstat, a file with its os.DirEntry (see walk).
            for kind, rel, item, name, src_dir in walk(src, stat_files=False, skip=keep):
                self.check()
                if kind == WALK_DIR:
                    self.progress.current = rel or None
                    try:
                        # Owner-only until its contents are in: a read-only directory stays
                        # writable for us, and nobody else sees half a tree.
                        if self.live is not None and self.live.in_place:
                            self.live.prepare_dir(rel, item)
                        else:
                            os.mkdir(join(staging, rel), 0o700)
                            if not rel:
                                self.isolate_staging(staging)
                        copies.enter(rel)
                    except OSError as err:
                        raise self.write_failure(rel, err) from err
                    continue
                if kind == WALK_POST:
                    if self.live is not None:
                        self.live.finish_dir(rel, item, self)
                    elif processes is not None:  # once the processes finished its files
                        processes.post(rel, item)
                    else:
                        self.metadata.set_dir_meta(rel, item, join(staging, rel))
                    continue
                self.progress.current = rel
                if self.live is None and walked == self.progress.files_total:
                    raise SourceChanged("files appeared in the source during the move (%d "
                                        "counted before copying, more found)%s — stop what "
                                        "writes to %s and run the move again"
                                        % (self.progress.files_total, self.move.changed_example(),
                                           show(src)))
                walked += 1
                if processes is not None and processes.takes(rel, item):
                    processes.add(rel, name)
                    continue
                try:
                    self.copy_entry(rel, item, name, src_dir, copies.fd, verifier)
                except SourceChanged:
                    if self.live is None or not self.live.tolerant:
                        raise
                    self.live.skip(rel, self)  # changed while copied: copied in the next pass
                    continue
                self.progress.files_copied += 1
            if processes is not None:
                processes.finish()
        finally:
            copies.close()
            if processes is not None:
                processes.stop()  # ended and reaped before anything removes the staging

    def copy_entry(self, rel, item, name, src_dir, dst_dir, verifier):
        if self.live is not None and self.live.in_place:
            self.live.clear(rel, self)  # not kept (walk asked LivePass.keep first)
        if item.is_file(follow_symlinks=False):
            if self.live is None or not self.live.reuse_entry(rel, item, name, dst_dir, verifier):
                self.copy_regular(rel, name, src_dir, dst_dir, verifier)
            return
        try:
            st = item.stat(follow_symlinks=False)
        except OSError as err:
            raise self.read_failure(rel, err) from err
        self.copy_special(rel, st, join(self.plan.staging, rel))
        if self.live is not None:
            self.live.note(rel, st, False)

    def isolate_staging(self, path):
        """Staging must not pass on what it inherited from DST's parent: under a setgid parent
        every copy would take the parent's group (set_owner relies on new entries being ours),
        and under a default ACL every copy would get its entries, which the source never had."""
        for name in (b"system.posix_acl_default", b"system.posix_acl_access"):
            try:
                os.removexattr(path, name)
            except OSError as err:
                if err.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP,
                                     errno.ENOSYS):
                    raise
        if os.lstat(path).st_gid != self.egid:
            os.chown(path, -1, self.egid)
        os.chmod(path, 0o700)  # also drops an inherited setgid bit

    def link_if_seen(self, rel, st, target, dst_dir=None):
        """A further name of a hard-linked inode already copied: link it, and say so. `target`
        is a path, or a name in the directory `dst_dir`."""
        if st.st_nlink < 2:
            return False
        key = (st.st_dev, st.st_ino)
        first = self.hardlinks.get(key)
        if first is None:
            self.hardlinks[key] = rel
            return False
        try:
            os.link(join(self.plan.staging, first), target, dst_dir_fd=dst_dir,
                    follow_symlinks=False)
        except OSError as err:
            raise self.write_failure(rel, err) from err
        return True

    def copy_special(self, rel, st, dpath):
        """A symlink, fifo, socket or device node."""
        mode = st.st_mode
        spath = join(self.src, rel)
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            raise SourceChanged("%s changed type while the move ran — stop what writes to %s "
                                "and run the move again" % (self.src_show(rel), show(self.src)))
        if self.link_if_seen(rel, st, dpath):
            return
        try:
            if stat.S_ISLNK(mode):
                target = os.readlink(spath)
        except OSError as err:
            raise self.read_failure(rel, err) from err
        try:
            if stat.S_ISLNK(mode):
                os.symlink(target, dpath)
            elif stat.S_ISFIFO(mode):
                os.mkfifo(dpath, 0o600)
            else:
                os.mknod(dpath, stat.S_IFMT(mode) | 0o600, st.st_rdev)
        except OSError as err:
            raise self.write_failure(rel, err) from err
        self.metadata.set_meta(rel, st, spath, dpath, None)

    def open_source(self, rel, name, src_dir):
        # O_NOATIME: reading must not even touch the source's access times (only the owner or
        # root may ask for it; open_readonly falls back).
        try:
            return open_readonly(name, self.noatime, src_dir)
        except OSError as err:
            raise self.read_failure(rel, err) from err

    def copy_regular(self, rel, name, src_dir, dst_dir, verifier=None):
        """Copy the regular file `name` of the directory `src_dir` into `dst_dir` (descriptors).
        With a verifier (checksum mode) its content is verified too: a small file right here, a
        big one chunk by chunk by the verifier thread as each chunk lands (so verifying overlaps
        copying, even for the last file), a sparse one whole.

        The source's type and metadata come from fstat on the open file, never from an earlier
        lstat: what is copied and what is described are the same inode."""
        fin = self.open_source(rel, name, src_dir)
        try:
            st = self.fstat_regular(rel, fin)
            if self.link_if_seen(rel, st, name, dst_dir):
                if self.live is not None:
                    self.live.note(rel, st, False)
                return
            if self.plan.resume is not None and \
                    self.resumption.reuse(rel, name, st, dst_dir, verifier):
                return
            if self.live is not None and self.live.reuse(rel, name, st, dst_dir, verifier):
                return
            fout, final_mode = self.create_copy(rel, name, st, dst_dir)
            try:
                size = st.st_size
                sparse = size > 0 and st.st_blocks * 512 < size
                if self.is_small(st, verifier is not None):
                    self.copy_small(rel, fin, fout, size, verifier is not None)
                    self.metadata.set_meta(rel, st, fin, fout, fout, final_mode)
                    self.copied(rel, st)
                    return
                self.copy_content(rel, st, fin, fout, sparse, verifier)
                self.metadata.set_meta(rel, st, fin, fout, fout, final_mode)
                self.copied(rel, st)
            finally:
                os.close(fout)
        finally:
            os.close(fin)
        if verifier is not None:
            verifier.put(("end", rel, st) if not sparse else ("file", rel, st))

    def fstat_regular(self, rel, fin):
        st = os.fstat(fin)
        if not stat.S_ISREG(st.st_mode):
            raise SourceChanged("%s changed type while the move ran — stop what writes to %s "
                                "and run the move again" % (self.src_show(rel), show(self.src)))
        return st

    @staticmethod
    def is_small(st, verify):
        """Copied (and with `verify` read back) in one call each, not range by range: not
        sparse, and small enough to hold in memory at once."""
        size = st.st_size
        return not (size > 0 and st.st_blocks * 512 < size) and \
            size <= (INLINE_VERIFY_MAX if verify else SMALL_FILE_MAX)

    def create_copy(self, rel, name, st, dst_dir):
        """Create the copy of a regular file in `dst_dir`; its descriptor, and whether it was
        created with its final mode."""
        mode = stat.S_IMODE(st.st_mode)
        # Created with its final mode when the umask lets it through whole, so set_meta needs
        # no chmod; not with setuid/setgid/sticky bits (writing clears them) nor a mode that
        # locks the owner out (the verifier opens the copy again to read it, and root may be
        # just another user on a root-squashed NFS destination).
        final_mode = not (mode & 0o7000 or mode & self.umask or mode & 0o600 != 0o600)
        try:
            fout = os.open(name, CREATE_FLAGS, mode if final_mode else 0o600, dir_fd=dst_dir)
        except OSError as err:
            raise self.write_failure(rel, err) from err
        return fout, final_mode

    def copy_small_file(self, rel, name, src_dir, dst_dir, verify):
        """A copy process's part (CopyProcesses): copy `name` if it is a small regular file
        with one link, exactly as copy_regular would, and return its source's stat; None when
        it is not such a file (the main process copies it)."""
        fin = self.open_source(rel, name, src_dir)
        try:
            st = self.fstat_regular(rel, fin)
            if st.st_nlink > 1 or not self.is_small(st, verify):
                return None
            fout, final_mode = self.create_copy(rel, name, st, dst_dir)
            try:
                self.copy_small(rel, fin, fout, st.st_size, verify)
                self.metadata.set_meta(rel, st, fin, fout, fout, final_mode)
            finally:
                os.close(fout)
        finally:
            os.close(fin)
        return st

    def copied(self, rel, st):
        """A regular file's copy is finished: recorded for a move that may take it over, and
        for a service move's next pass."""
        if self.live is None or self.live.trusts(st):
            self.resumption.record(rel, st)
        if self.live is not None:
            self.live.note(rel, st, False, copied=True)

    def copy_content(self, rel, st, fin, fout, sparse, verifier):
        """A big or sparse file's bytes, range by range (a sparse file's holes are skipped);
        with a verifier, each chunk of a file that is not sparse is handed to it as it lands."""
        size = st.st_size
        done = 0
        on_chunk = None
        if verifier is not None and not sparse:
            def on_chunk(start, end):
                verifier.put(("range", rel, st, start, end))
        for start, end in (data_segments(fin, size) if sparse else ((0, size),)):
            if start > done:
                self.progress.bytes_copied += start - done  # a hole: nothing to write
            self.copy_range(rel, fin, fout, start, end, on_chunk)
            done = end
        if done < size:
            self.progress.bytes_copied += size - done
        if sparse:
            try:
                os.ftruncate(fout, size)
            except OSError as err:
                raise self.write_failure(rel, err) from err

    def copy_small(self, rel, fin, fout, size, verify):
        """A small file in one read and one write; with `verify`, the copy is read back and
        compared right here.

        For the many small files of a typical data directory the kernel copy calls and the
        verifier thread's per-file hand-off (and its second open of the source) cost more than
        the bytes; reading the source once and checking the copy against exactly those bytes is
        the same guarantee: a source changed afterwards is caught by the FinalCheck and again
        before deletion."""
        try:
            data = os.pread(fin, size + 1, 0) if size else b""
        except OSError as err:
            raise self.read_failure(rel, err) from err
        if len(data) != size:
            raise SourceChanged("%s changed size while the move ran — stop what writes to %s "
                                "and run the move again" % (self.src_show(rel), show(self.src)))
        try:
            written = os.pwrite(fout, data, 0) if size else 0
            while written < size:  # a short write: rare, but allowed
                written += os.pwrite(fout, memoryview(data)[written:], written)
            back = os.pread(fout, size + 1, 0) if verify and size else data
        except OSError as err:
            raise self.write_failure(rel, err) from err
        if back != data:
            raise Failure("the copy of %s reads back different from what was written (a "
                          "failing disk or filesystem?) — nothing was deleted; check the "
                          "destination disk" % self.src_show(rel))
        self.progress.bytes_copied += size
        if verify:
            self.progress.add_verified(size)
        if self.bwlimit:
            self.throttle(size)

    def copy_range(self, rel, fin, fout, offset, end, on_chunk=None):
        """Copy [offset, end) with the fastest call the kernel allows, in chunks: each chunk
        advances bytesCopied, passes the cancellation point and, with --bwlimit, the throttle;
        `on_chunk(start, end)` hears of each chunk once it is written."""
        sendfile_at = None
        while offset < end:
            self.check()
            want = min(self.chunk, end - offset)
            if self.bwlimit:
                want = min(want, max(64 * 1024, self.bwlimit // 10))
            started = time.monotonic()
            try:
                got = self.copy_chunk(fin, fout, offset, want, sendfile_at)
                if got is None:
                    continue  # that call is not possible here: the next one is tried
                if self.use_sendfile and not self.use_copy_file_range:
                    sendfile_at = offset + got
            except OSError as err:
                if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
                    raise self.write_failure(rel, err) from err
                if err.errno == errno.EIO:
                    raise Failure("cannot copy %s: input/output error on one of the disks — "
                                  "check the disks (dmesg) before trying again"
                                  % self.src_show(rel)) from err
                raise Failure("cannot copy %s: %s" % (self.src_show(rel), words(err))) from err
            if got == 0:
                raise SourceChanged("%s shrank while the move ran — stop what writes to %s and "
                                    "run the move again" % (self.src_show(rel), show(self.src)))
            if on_chunk is not None:
                on_chunk(offset, offset + got)
            offset += got
            self.progress.bytes_copied += got
            elapsed = time.monotonic() - started
            if elapsed > CHUNK_TARGET_SECONDS and self.chunk > CHUNK_MIN:
                self.chunk //= 2
            elif elapsed < CHUNK_TARGET_SECONDS / 4 and self.chunk < CHUNK_MAX:
                self.chunk *= 2
            if self.bwlimit:
                self.throttle(got)

    def copy_chunk(self, fin, fout, offset, want, sendfile_at):
        """Copy up to `want` bytes at `offset` with the fastest call left; the count copied, or
        None when that call proved impossible here (it is then not tried again)."""
        if self.use_copy_file_range:
            try:
                return os.copy_file_range(fin, fout, want, offset, offset)
            except OSError as err:
                # Across filesystems (of different types, on current kernels), on old kernels
                # or odd filesystems: fall back to sendfile for the whole move.
                if err.errno in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL,
                                 errno.EBADF, errno.ETXTBSY):
                    self.use_copy_file_range = False
                    return None
                raise
        if self.use_sendfile:
            if sendfile_at != offset:
                os.lseek(fout, offset, os.SEEK_SET)
            try:
                return os.sendfile(fout, fin, offset, want)
            except OSError as err:
                if err.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    self.use_sendfile = False
                    return None
                raise
        data = os.pread(fin, want, offset)
        view = memoryview(data)
        written = 0
        while written < len(data):
            written += os.pwrite(fout, view[written:], offset + written)
        return len(data)

    def throttle(self, written):
        # Only the bytes read and written count: the copies linked from a dead move's staging or
        # from the last live pass, and the files a final pass keeps, cost no bandwidth (counted,
        # they made a service wait, down, for bytes nobody copied).
        self.written += written
        due = self.started + self.written / float(self.bwlimit)
        while True:
            self.check()
            wait = due - time.monotonic()
            if wait <= 0:
                return
            time.sleep(min(wait, SLEEP_SLICE))


# Copy and clean processes (BatchProcesses). A small file's copy is ten short system calls, its
# clean three; threads cannot overlap them (each call hands the interpreter lock over, which costs
# more than the call on tmpfs), forked processes can: each has its own interpreter. Forking costs
# a few milliseconds and each batch two messages, so they are used only for many files
# (docs/performance.md, "Copy workers and fewer system calls").
BATCH_PROCESSES_MIN_FILES = 2000
BATCH_PROCESSES_MAX = 4
PROCESS_BATCH_FILES = 32  # names in one message to a process
PROCESS_BATCHES_AHEAD = 2  # per process: what is in flight stays small at any size of tree
PR_SET_PDEATHSIG = 1


def send_message(fd, payload):
    write_all(fd, len(payload).to_bytes(4, "little") + payload)


def read_exactly(fd, size):
    """`size` bytes from a pipe, or None at its end."""
    data = b""
    while len(data) < size:
        got = os.read(fd, size - len(data))
        if not got:
            return None
        data += got
    return data


def read_message(fd):
    header = read_exactly(fd, 4)
    return None if header is None else read_exactly(fd, int.from_bytes(header, "little"))


class RecordedFields(object):
    """A source's stat as a copy process reported it: what Recorder.add reads."""
    __slots__ = ("st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")

    def __init__(self, fields):
        self.st_ino, self.st_size, self.st_mtime_ns, self.st_ctime_ns = fields


class ProcessCounts(object):
    """A copy process's stand-in for Progress (whose locks another thread may have held when
    the process was forked): the main process counts from the answers instead."""
    bytes_copied = 0

    def add_verified(self, count):
        pass


class BatchWorker(object):
    def __init__(self, pid, tasks, results):
        self.pid, self.tasks, self.results = pid, tasks, results
        self.batches = []  # in flight, oldest first: (number, directory, names)


class BatchProcesses(object):
    """Forked processes that work through the regular files of a walk while it goes on: the
    main process sends each process batches of names of one directory through a pipe, and
    takes each batch's answer (`take`); a process opens the directory and its mirror (`roots`)
    by path, as the walk does, and answers each batch (`work`). CopyProcesses and
    CleanProcesses say what the work is.

    A process touches no lock (forked with other threads running, any lock they held stays
    held in it): no Progress, no Emitter, no output; it ends with os._exit. It ends at the end
    of its task pipe, and is killed by the kernel if the mover dies (PR_SET_PDEATHSIG); the
    mover ends and reaps every process before it goes on (finish, stop)."""

    def __init__(self, move, roots, count):
        self.move, self.roots = move, roots
        self.workers = []
        self.batch_dir, self.batch_names = None, []
        self.numbered = 0
        self.prctl = self.load_prctl()
        import select  # only here: a move of few files never needs it

        self.poll = select.poll()
        self.by_fd = {}
        for _ in range(count):
            self.start_one()

    @staticmethod
    def count_for(move):
        """How many processes a move of its files may use; 0 where they cannot pay: few files,
        one core."""
        count = min(os.cpu_count() or 1, BATCH_PROCESSES_MAX)
        if move.progress.files_total < BATCH_PROCESSES_MIN_FILES or count < 2 or \
                not hasattr(os, "fork"):
            return 0
        return count

    @staticmethod
    def load_prctl():
        try:
            import ctypes

            return ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError, ImportError):
            return None  # no prctl: a process still ends at the end of its task pipe

    def start_one(self):
        tasks_r, tasks_w = os.pipe()
        results_r, results_w = os.pipe()
        parent = os.getpid()
        import warnings

        with warnings.catch_warnings():  # 3.12+ warns of forking with threads: see above
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            status = 70
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the mover cancels, then ends us
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                if self.prctl is not None:
                    self.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() == parent:  # not already orphaned before prctl
                    for worker in self.workers:  # their ends of the others' pipes
                        os.close(worker.tasks)
                        os.close(worker.results)
                    os.close(tasks_w)
                    os.close(results_r)
                    self.serve(tasks_r, results_w)
                    status = 0
            finally:
                os._exit(status)
        os.close(tasks_r)
        os.close(results_w)
        worker = BatchWorker(pid, tasks_w, results_r)
        self.workers.append(worker)
        self.by_fd[results_r] = worker
        self.poll.register(results_r, 1)  # select.POLLIN

    # -- in a process ---------------------------------------------------------------------------

    def serve(self, tasks, results):
        self.move.warnings = {}
        opened = [None, None, None]  # the directory, its descriptor, its mirror's
        try:
            while True:
                message = read_message(tasks)
                if message is None:
                    return
                directory, names = marshal.loads(message)
                send_message(results, marshal.dumps(self.work(directory, names, opened)))
        finally:
            for fd in opened[1:]:
                if fd is not None:
                    os.close(fd)

    def open_dirs(self, directory, opened):
        """The directory and its mirror, open (the last batch's, unless it is another); an
        OSError says which failed in `failed_root` (0 or 1)."""
        if opened[0] == directory:
            return
        for i in (1, 2):
            if opened[i] is not None:
                os.close(opened[i])
                opened[i] = None
        opened[0] = None
        for i, root in enumerate(self.roots):
            try:
                opened[1 + i] = os.open(join(root, directory), DIR_FLAGS)
            except OSError as err:
                err.failed_root = i
                raise
        opened[0] = directory

    # -- in the main process --------------------------------------------------------------------

    def add(self, rel, name):
        directory = rel[:-len(name) - 1] if len(rel) > len(name) else b""
        if directory != self.batch_dir:
            self.send()
            self.batch_dir = directory
        self.batch_names.append(name)
        if len(self.batch_names) >= PROCESS_BATCH_FILES:
            self.send()

    def send(self):
        if not self.batch_names:
            return
        while True:
            worker = min(self.workers, key=lambda w: len(w.batches))
            if len(worker.batches) < PROCESS_BATCHES_AHEAD:
                break
            self.collect()
        names, self.batch_names = self.batch_names, []
        send_message(worker.tasks, marshal.dumps((self.batch_dir, names)))
        worker.batches.append((self.numbered, self.batch_dir, names))
        self.numbered += 1

    def collect(self, check=True):
        """Wait for answers (seeing a cancel within a tenth of a second) and take them."""
        while True:
            if check:
                self.move.check()
            ready = self.poll.poll(100)
            if ready or not check:
                break
        for fd, _event in ready:
            worker = self.by_fd[fd]
            message = read_message(fd)
            if message is None:
                if not check:  # draining (CleanProcesses.stop): its answers are all in
                    self.how_it_ended(worker)
                    continue
                self.move.check()  # a signal to the whole group: the cancel, not a fault
                raise Failure("a %s process of the mover ended unexpectedly (%s) — run the "
                              "move again" % (self.what, self.how_it_ended(worker)))
            self.take(worker.batches.pop(0), marshal.loads(message))
        self.answered()

    def answered(self):
        """After each round of answers."""

    def how_it_ended(self, worker):
        _pid, status = os.waitpid(worker.pid, 0)
        worker.pid = None
        self.poll.unregister(worker.results)
        if os.WIFSIGNALED(status):
            return "killed by %s" % signal.Signals(os.WTERMSIG(status)).name
        return "exit status %d" % os.WEXITSTATUS(status)

    def finish(self):
        """Every batch sent and answered, the processes ended (each at the end of its task
        pipe) and reaped."""
        self.send()
        while any(w.batches for w in self.workers):
            self.collect()
        self.end()

    def end(self):
        for worker in self.workers:
            if worker.tasks is not None:
                os.close(worker.tasks)
                worker.tasks = None
        for worker in self.workers:
            if worker.pid is not None:
                os.waitpid(worker.pid, 0)
                worker.pid = None

    def stop(self):
        """Kill and reap what is left (a failure or a cancel); close every pipe."""
        for worker in self.workers:
            if worker.pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(worker.pid, signal.SIGKILL)
                with contextlib.suppress(OSError):
                    os.waitpid(worker.pid, 0)
                worker.pid = None
            for name in ("tasks", "results"):
                if getattr(worker, name) is not None:
                    os.close(getattr(worker, name))
                    setattr(worker, name, None)


class CopyProcesses(BatchProcesses):
    """Small regular files with one link, copied by processes with the Copier's own calls
    (copy_small_file); a process hands back (None) what is not such a file: big, sparse,
    hard-linked or no longer a regular file, and the main process copies those. The main
    process counts and records (Recorder) each batch's copies from its answer and words its
    failure; a directory's metadata is set once every batch sent before its WALK_POST is
    answered (its mode may lock its entries out)."""

    what = "copy"

    def __init__(self, copier, verifier, count):
        self.copier, self.verifier = copier, verifier
        self.verify = verifier is not None
        self.posts = []  # (batches sent before it, rel, lstat) of each directory, walk order
        BatchProcesses.__init__(self, copier.move, (copier.src, copier.plan.staging), count)

    @classmethod
    def for_move(cls, copier, verifier):
        """The processes for this copy, or None: not with --bwlimit (one clock throttles all)
        nor in a service move's passes."""
        count = cls.count_for(copier.move)
        if not count or copier.bwlimit or copier.live is not None:
            return None
        return cls(copier, verifier, count)

    def takes(self, rel, entry):
        """Whether a walked entry goes to the processes: a regular file by its listing, and
        not one a dead move recorded (Resumption links it in, in the main process)."""
        resume = self.copier.plan.resume
        return entry.is_file(follow_symlinks=False) and \
            (resume is None or rel not in resume.records)

    def work(self, directory, names, opened):
        """Copy the files of a batch; the answer: a stat's fields (or None: handed back) for
        each file copied, the warnings, and a failure's kind and words if one stopped it."""
        copier, move = self.copier, self.move
        copier.progress = ProcessCounts()
        move.warnings = {}
        done, failure = [], None
        try:
            try:
                self.open_dirs(directory, opened)
            except OSError as err:
                raise (copier.write_failure if err.failed_root else copier.read_failure)(
                    directory, err) from err
            for name in names:
                rel = directory + b"/" + name if directory else name
                st = copier.copy_small_file(rel, name, opened[1], opened[2], self.verify)
                done.append(None if st is None else
                            (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except Failure as exc:
            failure = (isinstance(exc, SourceChanged), str(exc))
        except Exception as exc:  # a bug: worded as the main process words one
            failure = (False, "internal error in the mover's copy process (%s: %s) — please "
                              "report it" % (type(exc).__name__, exc))
        return done, list(move.warnings.items()), failure

    def take(self, batch, answer):
        """Count, record and warn of a batch's copies; copy what was handed back; raise the
        failure that stopped it."""
        _number, directory, names = batch
        done, warnings, failure = answer
        copier, progress = self.copier, self.copier.progress
        self.move.merge_warnings(warnings)
        handed_back = []
        verified = 0
        for name, fields in zip(names, done):
            rel = directory + b"/" + name if directory else name
            if fields is None:
                handed_back.append((rel, name))
                continue
            progress.bytes_copied += fields[1]
            progress.files_copied += 1
            verified += fields[1]
            copier.resumption.record(rel, RecordedFields(fields))
        if self.verify and verified:
            progress.add_verified(verified)
        if failure is not None:
            raise (SourceChanged if failure[0] else Failure)(failure[1])
        if handed_back:
            self.copy_handed_back(directory, handed_back)

    def copy_handed_back(self, directory, files):
        copier = self.copier
        src_dir = dst_dir = None
        try:
            try:
                src_dir = os.open(join(copier.src, directory), DIR_FLAGS)
            except OSError as err:
                raise copier.read_failure(directory, err) from err
            try:
                dst_dir = os.open(join(copier.plan.staging, directory), DIR_FLAGS)
            except OSError as err:
                raise copier.write_failure(directory, err) from err
            for rel, name in files:
                copier.check()
                copier.copy_regular(rel, name, src_dir, dst_dir, self.verifier)
                copier.progress.files_copied += 1
        finally:
            for fd in (src_dir, dst_dir):
                if fd is not None:
                    os.close(fd)

    def post(self, rel, st):
        """A directory's WALK_POST: its metadata once every batch sent before is answered."""
        self.send()
        self.posts.append((self.numbered, rel, st))
        self.answered()

    def answered(self):
        oldest = min([w.batches[0][0] for w in self.workers if w.batches] or [self.numbered])
        applied = 0
        for sent, rel, st in self.posts:
            if sent > oldest:
                break
            self.copier.metadata.set_dir_meta(rel, st, join(self.copier.plan.staging, rel))
            applied += 1
        del self.posts[:applied]

    def finish(self):
        """...and every directory's metadata set."""
        BatchProcesses.finish(self)
        self.answered()


class CleanProcesses(BatchProcesses):
    """The source's regular files checked against their copies at DST (`differs`) and removed
    by processes, as Cleaner.remove_files does it: each answer says how many were removed and
    which were kept and why. A cancel lets the processes answer what they are doing before they
    are ended (stop): every removal is counted, and `dataState` stays true."""

    what = "clean"

    def __init__(self, cleaner, count):
        self.cleaner = cleaner
        self.kept, self.newer, self.failed = [], [], []
        BatchProcesses.__init__(self, cleaner.move, (cleaner.src, cleaner.dst), count)

    @classmethod
    def for_move(cls, cleaner):
        """The processes for this clean, or None: not for a service move (its records decide)."""
        count = cls.count_for(cleaner.move)
        if not count or cleaner.against is not None:
            return None
        return cls(cleaner, count)

    def work(self, directory, names, opened):
        """Check and remove the files of a batch; the answer: how many were removed, those
        kept (index, why, whether it changed after its copy) and those whose removal failed or
        that vanished (index, errno, strerror, which)."""
        removed, kept, failed = 0, [], []
        try:
            self.open_dirs(directory, opened)
        except OSError as err:
            which = "dst" if err.failed_root else "walk"
            return 0, [], [(i, err.errno, err.strerror, which) for i in range(len(names))]
        src, dst, is_root = self.cleaner.src, self.cleaner.dst, self.cleaner.is_root
        for i, name in enumerate(names):
            rel = directory + b"/" + name if directory else name
            try:
                s = os.stat(name, dir_fd=opened[1], follow_symlinks=False)
            except OSError as err:
                failed.append((i, err.errno, err.strerror, "walk"))
                continue
            try:
                d = os.stat(name, dir_fd=opened[2], follow_symlinks=False)
                problem = differs(src, dst, rel, s, d, is_root)
                changed = True
            except OSError:
                problem, changed = "is not at the destination", False
            if problem:
                kept.append((i, problem, changed))
                continue
            try:
                os.unlink(name, dir_fd=opened[1])
                err = None
            except OSError:
                err = self.cleaner.remove(os.unlink, join(src, rel))
            if err is None:
                removed += 1
            else:
                failed.append((i, err.errno, err.strerror, "unlink"))
        return removed, kept, failed

    def take(self, batch, answer):
        _number, directory, names = batch
        removed, kept, failed = answer
        cleaner = self.cleaner
        if removed:
            cleaner.progress.add_removed(removed)
        for i, problem, changed in kept:
            rel = directory + b"/" + names[i] if directory else names[i]
            self.kept.append((rel, "%s %s" % (cleaner.src_show(rel), problem)))
            if changed:
                self.newer.append(rel)
        for i, code, text, which in failed:
            rel = directory + b"/" + names[i] if directory else names[i]
            if which == "walk":  # as the walk's own stat would have failed
                raise WalkError(rel, OSError(code, text))
            if which == "dst":
                self.kept.append((rel, "%s is not at the destination" % cleaner.src_show(rel)))
            else:
                self.failed.append((rel, OSError(code, text)))

    def stop(self):
        """On a cancel: each process answers the batches it was sent (they are short) before it
        is ended, so that every removal is counted; one that does not within a second is killed,
        and the source is then taken as no longer whole."""
        for worker in self.workers:
            if worker.tasks is not None:
                os.close(worker.tasks)
                worker.tasks = None
        deadline = time.monotonic() + 1
        with contextlib.suppress(Exception):
            while any(w.batches for w in self.workers if w.pid is not None) and \
                    time.monotonic() < deadline:
                self.collect(check=False)
        if any(w.batches for w in self.workers):
            self.cleaner.progress.add_removed(0)  # some may have been removed, uncounted
        BatchProcesses.stop(self)


class Publisher:
    """Makes the verified copy durable and puts it at DST: the watched descriptor whose syncfs
    reports the copy's write-back errors, the flushes, and the rename."""

    def __init__(self, move, metadata):
        self.move = move
        self.src, self.dst, self.plan, self.progress = move.src, move.dst, move.plan, move.progress
        self.check, self.warn, self.src_show = move.check, move.warn, move.src_show
        self.read_failure, self.write_failure = move.read_failure, move.write_failure
        self.metadata = metadata
        self.dst_watch = None  # a descriptor on the destination's filesystem (flush_copy)

    def close(self):
        if self.dst_watch is not None:
            os.close(self.dst_watch)
            self.dst_watch = None

    def watch_destination(self):
        """Open the directory that will hold staging, before anything is written, and keep it
        open for the whole move: syncfs on it reports every write-back error of the
        destination's filesystem since this moment, that is, of the whole copy."""
        path = os.path.dirname(self.plan.staging)
        try:
            self.dst_watch = os.open(path, DIR_FLAGS)
        except OSError as err:
            raise Failure("cannot open %s: %s" % (show(path), words(err))) from err
        if self.move.recorder is not None:
            self.move.recorder.watch(path)

    def flush_copy(self, tree):
        """Make the copy durable, and fail the move if the disk did not store it: a copy
        verified from the page cache can still be lost when the cache is written back. `tree`:
        the copy to fsync file by file where syncfs does not report write-back errors."""
        try:
            if not flush_filesystem(self.dst_watch) or not syncfs_reports_errors():
                os.sync()
                if tree is not None:
                    fsync_tree(tree)
                os.fsync(self.dst_watch)
        except OSError as err:
            where = "check that disk (dmesg) before trying again"
            if tree is None:  # after the rename: staging is DST now, and nothing says so
                where = ("nothing was deleted: the source %s is whole; check that disk "
                         "(dmesg), delete %s and run the move again" % (show(self.src),
                                                                       show(self.dst)))
            raise Failure("the destination disk failed to store the copy: %s — %s"
                          % (words(err), where)) from err

    def publish(self):
        """Make the verified copy DST: one rename (or, when DST is a mount point, one rename per
        top-level entry: a mount point itself cannot be replaced)."""
        self.progress.current = None
        try:
            if not self.plan.dst_is_mount:
                os.rename(self.plan.staging, self.dst)
            else:
                self.publish_into_mount()
        except OSError as err:
            raise Failure("cannot put the copy in place at %s: %s" % (show(self.dst),
                                                                       words(err))) from err
        self.plan.staging = None
        self.progress.data_state = STATE_BOTH
        fsync_dir(os.path.dirname(self.dst))
        fsync_dir(self.dst)

    def publish_into_mount(self):
        names = [n for n in os.listdir(self.dst) if n != os.path.basename(self.plan.staging)]
        if names not in ([], [b"lost+found"]):
            raise OSError(errno.ENOTEMPTY, "not empty")
        st = os.lstat(self.plan.staging)  # before the renames below change its mtime
        moved = []
        try:
            for name in os.listdir(self.plan.staging):
                os.rename(join(self.plan.staging, name), join(self.dst, name))
                moved.append(name)
        except OSError:
            for name in moved:  # put back what went: the copy stays whole in staging
                os.rename(join(self.dst, name), join(self.plan.staging, name))
            raise
        self.metadata.copy_xattrs(b"", self.plan.staging, self.dst, False)
        os.chown(self.dst, st.st_uid, st.st_gid)
        os.chmod(self.dst, stat.S_IMODE(st.st_mode))
        os.rmdir(self.plan.staging)
        os.utime(self.dst, ns=(st.st_atime_ns, st.st_mtime_ns))


class Cleaner:
    """Removes the source once DST holds the move: each file only if its copy still matches,
    through the Remover (or, for many files, CleanProcesses), then the emptied directories."""

    def __init__(self, move):
        self.move = move
        self.src, self.dst, self.plan, self.progress = move.src, move.dst, move.plan, move.progress
        self.check, self.warn, self.src_show = move.check, move.warn, move.src_show
        self.read_failure, self.write_failure = move.read_failure, move.write_failure
        self.is_root, self.euid = move.is_root, move.euid
        self.finish = move.finish
        # A service move: the source is checked against what its final pass recorded (the
        # service now writes into DST), from `src` (for a symlink cutover, the old directory
        # renamed aside).
        self.against = None

    def clean_source(self):
        """Remove the source: each file only if its copy at DST still matches (checked here,
        just before it is handed to the Remover's threads), then the emptied directories,
        deepest first."""
        self.move.set_phase(CLEANING)
        if self.move.keep_old is not None:
            return self.keep_old_copy()
        kept, newer = self.remove_files()
        self.remove_directories(kept)
        self.move.flush_warnings()
        if kept:
            self.progress.data_state = (STATE_DESTINATION if self.progress.deleted_any
                                        else STATE_BOTH)
            listed = ", ".join(self.src_show(rel) for rel, _ in kept[:5])
            if len(kept) > 5:
                listed += " and %d more" % (len(kept) - 5)
            if newer:
                raise Failure(self.newer_in_source(newer, listed))
            raise Failure("%s is complete and verified, but removing the source failed (%s); "
                          "still there: %s — check and delete them by hand"
                          % (show(self.dst), kept[0][1], listed))
        self.finish(COMPLETE, None, EXIT_OK)

    def keep_old_copy(self):
        """keep_old: the old copy set aside read-only, to be removed when due. Its files are
        first checked against their copies, as a clean checks them before it removes any: a
        file changed or added since the copy was checked would be lost when the kept copy
        goes, so then the copy is kept without a due time, and the error says what to look at."""
        kept_copies = KeptCopies()
        aside, mode = kept_copies.set_aside(self.move, self.src)
        self.src = aside
        self.src_show = lambda rel: show(join(aside, rel))
        kept, newer = self.remove_files(remove=False)
        if kept:
            self.progress.data_state = STATE_BOTH
            listed = ", ".join(self.src_show(rel) for rel, _ in kept[:5])
            if len(kept) > 5:
                listed += " and %d more" % (len(kept) - 5)
            unscheduled = ("; the old copy is kept in %s as asked (keep_old), but it will not be "
                           "removed when due: delete it by hand once you have what you need "
                           "(rm -rf %s)" % (show(aside), show(aside)))
            if newer:
                raise Failure(self.newer_in_source(newer, listed) + unscheduled)
            raise Failure("%s is complete and verified, but the old copy has entries its copy "
                          "does not match (%s): %s%s" % (show(self.dst), kept[0][1], listed,
                                                          unscheduled))
        self.progress.kept_old = kept_copies.record(self.move, aside, mode, self.move.keep_old)
        return self.finish(COMPLETE, None, EXIT_OK, STATE_DESTINATION)

    def remove_files(self, remove=True):
        """Hand each source file whose copy matches to the Remover (with `remove` False, only
        check them). Returns the files kept, as (rel, why) in the order found, and those among
        them changed after they were copied."""
        kept = []
        newer = []
        linked = set()  # inodes with further names, one name already handed to the Remover
        src, dst = self.src, self.dst
        remover = Remover(self.move)
        processes = CleanProcesses.for_move(self) if remove else None
        copies = MirrorDir(dst)
        try:
            for kind, rel, st, name, dir_fd in walk(src, stat_files=processes is None):
                self.check()
                if kind == WALK_DIR:
                    with contextlib.suppress(OSError):  # then its files are not at DST: kept
                        copies.enter(rel)
                if kind != WALK_FILE:
                    continue
                self.progress.current = rel
                if processes is not None:  # st is the os.DirEntry (see walk)
                    if st.is_file(follow_symlinks=False):
                        processes.add(rel, name)
                        continue
                    try:
                        st = st.stat(follow_symlinks=False)
                    except OSError as err:
                        raise WalkError(rel, err) from err
                try:
                    if self.against is not None:
                        problem = self.against_record(rel, st, linked)
                    else:
                        problem = differs(src, dst, rel, st, copies.lstat(name), self.is_root)
                    if problem:
                        newer.append(rel)
                except OSError:
                    problem = "is not at the destination"
                if problem:
                    kept.append((rel, "%s %s" % (self.src_show(rel), problem)))
                elif remove:
                    remover.add(rel, join(src, rel), name, dir_fd)
            if processes is not None:
                processes.finish()
            remover.finish()
        finally:
            if processes is not None:
                processes.stop()  # every removal answered and counted first
            remover.stop()
            copies.close()
        if processes is not None:
            kept.extend(processes.kept)
            newer.extend(processes.newer)
            remover.failed.extend(processes.failed)
        kept.extend((rel, "%s: %s" % (self.src_show(rel), words(err)))
                    for rel, err in remover.failed)
        return kept, newer

    def against_record(self, rel, st, linked):
        """A service move's check: the entry as its final pass recorded it. Removing one name of
        a hard-linked file moves the ctime of the others: once a name of an inode passed the
        whole check, its further names are checked without the ctime."""
        key = (st.st_dev, st.st_ino)
        problem = changed_since_recorded(self.against.get(rel), st, key in linked)
        if problem is None and st.st_nlink > 1:
            linked.add(key)
        return problem

    def remove_directories(self, kept):
        """Remove the emptied directories, deepest first; add to `kept` those that stay."""
        src = self.src
        for kind, rel, _st, _name, _dir_fd in walk(src):
            self.check()
            if kind != WALK_POST:
                continue
            self.progress.current = rel or None
            err = self.remove(os.rmdir, join(src, rel))
            if err is None:
                self.progress.add_removed(0)
            elif rel == b"" and err.errno == errno.EBUSY and not kept:
                self.warn("srcmount", "%s is a mount point: it was emptied but not removed"
                          % show(src), b"")
            elif not kept or err.errno != errno.ENOTEMPTY:
                kept.append((rel, "%s: %s" % (self.src_show(rel), words(err))))

    def newer_in_source(self, newer, listed):
        """The error of a clean that kept files changed after they were copied (a writer still
        at work): DST holds the move, but those source files are newer than their copies."""
        names = ", ".join(self.src_show(rel) for rel in newer[:5])
        if len(newer) > 5:
            names += " and %d more" % (len(newer) - 5)
        return ("%s holds the whole move as verified, but %d source file%s changed after %s "
                "copied and %s kept: the source's version%s newer than the copy in %s (%s) — "
                "stop what writes there, copy what you need over by hand, then delete the rest "
                "of the source; still there: %s"
                % (show(self.dst), len(newer), "s" if len(newer) > 1 else "",
                   "they were" if len(newer) > 1 else "it was",
                   "were" if len(newer) > 1 else "was", "s are" if len(newer) > 1 else " is",
                   show(self.dst), names, listed))

    def remove(self, func, path):
        try:
            func(path)
            return None
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EPERM) or self.is_root:
                return err
            first = err
        # A read-only directory of our own: make it writable (it is going away) and retry.
        parent = os.path.dirname(path)
        try:
            if os.stat(parent).st_uid != self.euid:
                return first
            os.chmod(parent, stat.S_IMODE(os.stat(parent).st_mode) | 0o700)
            func(path)
            return None
        except OSError as err:
            return err


class FinalCheck:
    """Compares every entry of the source with its copy in staging, just before publishing."""

    def __init__(self, move):
        self.move = move
        self.src, self.dst, self.plan, self.progress = move.src, move.dst, move.plan, move.progress
        self.check, self.warn, self.src_show = move.check, move.warn, move.src_show
        self.read_failure, self.write_failure = move.read_failure, move.write_failure
        self.is_root, self.verify = move.is_root, move.verify

    def run(self):
        """Compare every entry of the source with its copy, just before anything is deleted.

        This is also the source-changed check: each copy carries the mtime its source had when
        it was copied, so a source modified afterwards no longer matches (and a directory whose
        entries changed has a new mtime too).
        """
        counting = self.verify != "none"
        seen = 0
        copies = MirrorDir(self.plan.staging)
        try:
            for kind, rel, sst, name, _dir_fd in walk(self.src):
                self.check()
                if kind == WALK_POST:
                    continue
                self.progress.current = rel or None
                try:
                    if kind == WALK_FILE:
                        dst_st = copies.lstat(name)
                    else:
                        dst_st = os.lstat(join(self.plan.staging, rel))
                        copies.enter(rel)  # its files come next
                except FileNotFoundError:
                    raise self.appeared(rel) from None
                except OSError as err:
                    raise Failure("cannot check the copy of %s: %s"
                                  % (show(rel), words(err))) from err
                self.compare(rel, sst, dst_st)
                if kind == WALK_DIR:
                    continue
                seen += 1
                if counting:
                    self.progress.files_verified += 1
                    if self.verify == "size" and stat.S_ISREG(sst.st_mode):
                        self.progress.bytes_verified += sst.st_size
        finally:
            copies.close()
        if seen != self.progress.files_copied:
            raise SourceChanged("%d entries vanished from %s during the move — nothing was "
                                "deleted; stop what writes to it and run the move again"
                                % (self.progress.files_copied - seen, show(self.src)))
        if self.verify == "size":
            self.progress.bytes_verified = self.progress.bytes_total
        self.progress.current = None

    def appeared(self, rel):
        return SourceChanged("%s appeared in the source after it was copied — nothing was "
                             "deleted; stop what writes to %s and run the move again"
                             % (self.src_show(rel), show(self.src)))

    def compare(self, rel, sst, dst_st):
        problem = differs(self.src, self.plan.staging, rel, sst, dst_st, self.is_root)
        if problem:
            raise SourceChanged("%s %s — nothing was deleted; stop what writes to %s and run "
                                "the move again" % (self.src_show(rel), problem, show(self.src)))

    def run_over(self, final):
        """A service move's check after its final pass (`final`, a LivePass): only what that
        pass wrote — copied anew, directories given metadata again — is compared with the
        source, and no name it removed may be in the source. Every other entry is a regular
        file the pass found unchanged since a live pass copied it (see docs/protocol.md,
        "Why comparing only what the final pass wrote is sound")."""
        for rel in final.touched:
            self.check()
            try:
                sst = os.lstat(join(self.src, rel))
            except FileNotFoundError:
                raise SourceChanged("%s vanished from the source after it was copied — nothing "
                                    "was deleted; stop what writes to %s and run the move again"
                                    % (self.src_show(rel), show(self.src))) from None
            except OSError as err:
                raise self.read_failure(rel, err) from err
            try:
                dst_st = os.lstat(join(self.plan.staging, rel))
            except OSError as err:
                raise Failure("cannot check the copy of %s: %s"
                              % (show(rel), words(err))) from err
            self.compare(rel, sst, dst_st)
        for rel in final.removed:
            if os.path.lexists(join(self.src, rel)):
                raise self.appeared(rel)
        if self.verify != "none":
            self.progress.files_verified += self.progress.files_copied
        if self.verify == "size":
            self.progress.bytes_verified = self.progress.bytes_total


def differs(src_root, dst_root, rel, s, d, compare_owner):
    """How the entry `rel` of src_root (lstat `s`) and its copy in dst_root (lstat `d`)
    differ, in words; None when they match."""
    if stat.S_IFMT(s.st_mode) != stat.S_IFMT(d.st_mode):
        return "changed type after it was copied"
    if stat.S_ISREG(s.st_mode) and s.st_size != d.st_size:
        return "changed size after it was copied (%d bytes, the copy has %d)" % (
            s.st_size, d.st_size)
    if s.st_mtime_ns != d.st_mtime_ns:
        return "was modified after it was copied"
    if not stat.S_ISLNK(s.st_mode):
        mask = 0o7777 if (s.st_uid, s.st_gid) == (d.st_uid, d.st_gid) else 0o1777
        if stat.S_IMODE(s.st_mode) & mask != stat.S_IMODE(d.st_mode) & mask:
            return "changed mode after it was copied"
    if compare_owner and (s.st_uid, s.st_gid) != (d.st_uid, d.st_gid):
        return "changed owner after it was copied"
    if stat.S_ISLNK(s.st_mode) and \
            os.readlink(join(src_root, rel)) != os.readlink(join(dst_root, rel)):
        return "changed link target after it was copied"
    return None


class Move:
    """One move, start to end: runs Preflight, then a rename or the parts of a copy (Copier,
    FinalCheck, Publisher, Cleaner) in order, and ends it with one terminal event that says
    where the data is; a fault or a cancel on the way removes what it made."""

    keep_old = None  # seconds to keep the old copy aside instead of removing it (KeptCopies)

    def __init__(self, emitter, server_name, src, dst, verify, bwlimit, dry_run, move_id=None,
                 service=None, max_downtime=None):
        self.out = emitter
        self.service = service  # a ServiceSpec: the service is stopped, repointed and started
        self.max_downtime = max_downtime
        self.server_name = server_name
        self.src = src
        self.dst = dst
        self.verify = verify
        self.bwlimit = bwlimit
        self.dry_run = dry_run
        self.move_id = move_id or os.urandom(6).hex()
        self.cancel_file = None  # a detached worker's cancel request (see the journal)
        self.journal_dir = None  # a detached worker's journal (ServiceMove keeps its cutover)
        self.plan = Plan()
        self.made_parents = []
        self.recorder = None  # a detached worker's Recorder of finished copies
        self.progress = Progress(emitter, server_name, self.move_id)
        if service is not None:  # the service's fields are on every event of its move
            self.progress.service = {"pass": None, "forecastDowntimeSeconds": None,
                                     "downSince": None}
            self.progress.service_end = {"downtimeSeconds": None, "serviceRunsFrom": "source"}
        self.cancel = Cancellation()
        self.check = self.cancel.check  # the one cancellation point (see Cancellation.check)

        self.euid = os.geteuid()
        self.egid = os.getegid()
        self.is_root = self.euid == 0
        self.warnings = {}

        self.noatime = getattr(os, "O_NOATIME", 0)
        self.metadata = Metadata(self)
        self.resumption = Resumption(self)
        self.copier = Copier(self, self.metadata, self.resumption)
        self.publisher = Publisher(self, self.metadata)
        self.cleaner = Cleaner(self)

    # -- events --------------------------------------------------------------------------------

    def set_phase(self, phase, error=None, data_state=None):
        self.progress.set_phase(phase, error, data_state)

    def warn(self, key, message, rel):
        """Aggregate non-fatal problems: one move.warning per kind, with a count and an example."""
        entry = self.warnings.get(key)
        if entry is None:
            self.warnings[key] = [1, message, rel]
        else:
            entry[0] += 1

    def merge_warnings(self, warnings):
        """Warnings a copy process aggregated (warn), added to ours."""
        for key, (count, message, rel) in warnings:
            entry = self.warnings.get(key)
            if entry is None:
                self.warnings[key] = [count, message, rel]
            else:
                entry[0] += count

    def flush_warnings(self):
        for count, message, rel in self.warnings.values():
            text = message
            if count > 1:
                text += " (%d entries, e.g. %s)" % (count, show(rel) or ".")
            self.out.emit("move.warning", {"message": text, "path": show(rel), "count": count,
                                           "moveId": self.move_id})
        self.warnings = {}

    def on_signal(self, signum, frame):
        self.cancel.request(signal.Signals(signum).name)

    def poll_cancel_file(self):
        """A detached worker's cancel request: the `cancel` file in its journal."""
        if os.path.exists(self.cancel_file):
            self.cancel.request("the user (Ctrl-C, or Cancel in the TUI)")

    # -- the whole move ------------------------------------------------------------------------

    def run(self):
        self.progress.start_reporter(self.poll_cancel_file if self.cancel_file else None)
        try:
            return self._run()
        finally:
            self.progress.stop_reporter()
            self.publisher.close()

    def _run(self):
        try:
            self.set_phase(CALCULATING)
            Preflight(self).run()
            if self.dry_run:
                self.flush_warnings()
                return EXIT_OK
            self.make_parents()
            if self.service is not None and not self.plan.finishing:
                return ServiceMove(self).run()
            if self.plan.method == "rename":
                self.do_rename()
            elif self.plan.finishing:
                self.finish_cleaning()
            else:
                self.do_copy()
            return EXIT_OK
        except Refused as exc:
            return self.finish(ERROR, str(exc), EXIT_REFUSED)
        except Cancelled:
            return self.finish_cancelled()
        except Failure as exc:
            return self.finish_failure(str(exc))
        except WalkError as exc:
            return self.finish_failure(str(self.read_failure(exc.rel, exc.err)))
        except Exception as exc:  # a bug: still end with a terminal event and the data state
            tb = sys.exc_info()[2]
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            where = " at mover.py line %d" % tb.tb_lineno if tb is not None else ""
            return self.finish_failure("internal error in the mover (%s: %s%s) — please report "
                                       "it" % (type(exc).__name__, exc, where))

    def finish(self, phase, error, status, data_state=None):
        self.progress.current = None
        if phase != COMPLETE and (data_state or self.progress.data_state) == STATE_SOURCE:
            self.remove_made_parents()
        self.set_phase(phase, error=error, data_state=data_state or self.progress.data_state)
        if error:
            stderr_line(error)
        return status

    def src_show(self, rel):
        return show(join(self.src, rel))

    def remove_staging(self):
        """Remove the partial copy; the text to add to the error if that fails."""
        if self.plan.staging is None or not os.path.lexists(self.plan.staging):
            return ""
        try:
            force_rmtree(self.plan.staging)
        except OSError as err:
            return "; the partial copy could not be removed (%s): delete %s by hand" % (
                words(err), show(self.plan.staging))
        return ""

    def finish_failure(self, message):
        self.cancel.stop_threads()
        if self.progress.data_state == STATE_SOURCE:
            message += self.remove_staging()
            if self.plan.staging is not None:
                message += "; nothing was changed: the source is untouched"
        return self.finish(ERROR, message, EXIT_FAILED)

    def finish_cancelled(self):
        why = "cancelled by %s" % (self.cancel.by or "a signal")
        if self.progress.data_state == STATE_SOURCE:
            text = why + "; the source is untouched" + self.remove_staging()
            if self.plan.staging is not None and not text.endswith("by hand"):
                text += " and the partial copy was removed"
        elif self.progress.data_state == STATE_BOTH:
            text = (why + " before the source was removed: %s is complete and verified, and "
                    "%s is still whole — remove one of them yourself"
                    % (show(self.dst), show(self.src)))
        else:
            text = (why + " while removing the source: %s is complete and verified, but %s "
                    "still holds part of the old data — delete it by hand (rm -rf %s)"
                    % (show(self.dst), show(self.src), show(self.src)))
        return self.finish(CANCELLED, text, EXIT_CANCELLED)

    # -- checks --------------------------------------------------------------------------------

    def make_parents(self):
        """Make the missing parents (mode 755, owned by the user running the move); a move
        that does not complete removes them again (remove_made_parents)."""
        for path in self.plan.missing_parents:
            try:
                os.mkdir(path, 0o755)
                self.made_parents.append(path)
                os.chmod(path, 0o755)  # whatever the umask
            except OSError as err:
                raise Failure("cannot create the destination's parent %s: %s — nothing was "
                              "changed" % (show(path), words(err))) from err
            fsync_dir(os.path.dirname(path))

    def remove_made_parents(self):
        while self.made_parents:
            with contextlib.suppress(OSError):  # not empty: someone else's now
                os.rmdir(self.made_parents[-1])
            self.made_parents.pop()

    # -- rename --------------------------------------------------------------------------------

    def do_rename(self):
        self.check()
        try:
            os.rename(self.src, self.dst)
        except OSError as err:
            if err.errno == errno.EXDEV:
                raise Failure("cannot rename %s to %s: they are on different mounts after all "
                              "— nothing was changed; run the move again"
                              % (show(self.src), show(self.dst))) from err
            raise Failure("cannot rename %s to %s: %s — nothing was changed"
                          % (show(self.src), show(self.dst), words(err))) from err
        self.progress.data_state = STATE_DESTINATION
        fsync_dir(os.path.dirname(self.dst))
        fsync_dir(os.path.dirname(self.src))
        self.progress.bytes_copied = self.progress.bytes_total
        self.progress.files_copied = self.progress.files_total
        self.finish(COMPLETE, None, EXIT_OK)

    # -- copy ----------------------------------------------------------------------------------

    def do_copy(self):
        self.publisher.watch_destination()
        verifier = None
        if self.verify == "checksum":
            verifier = Verifier(self)
            verifier.start()
        try:
            self.set_phase(COPYING)
            self.copier.copy_tree(verifier)
            self.resumption.stop_recording()
            self.resumption.release_dead_moves()
            self.flush_warnings()
            progress = self.progress
            if progress.files_copied != progress.files_total or \
                    progress.bytes_copied != progress.bytes_total:
                raise SourceChanged(self.count_changed())
            self.set_phase(VERIFYING)
            if verifier is not None:
                verifier.finish()
            FinalCheck(self).run()
        finally:
            if verifier is not None:
                verifier.stop()
        self.check()
        # Durable before anything is deleted: a crash after cleaning must not lose the copy.
        self.publisher.flush_copy(self.plan.staging)
        self.check()
        refuse_source_writers(os.path.realpath(self.src), Failure)  # one that started meanwhile
        self.publisher.publish()
        self.publisher.flush_copy(None)  # the rename too: DST must still be there after a crash
        self.cleaner.clean_source()

    def changed_example(self):
        """", e.g. X was created or changed since it was counted": the file of the source
        changed last, if its ctime is later than the count, to name in an error ("" when none
        is)."""
        newest, newest_ns = None, self.plan.counted_at_ns
        try:
            for kind, rel, st, _name, _dir_fd in walk(self.src):
                if kind == WALK_FILE and st.st_ctime_ns >= newest_ns:
                    newest, newest_ns = rel, st.st_ctime_ns
        except (OSError, WalkError):
            pass
        if newest is None:
            return ""
        return ", e.g. %s was created or changed since it was counted" % self.src_show(newest)

    def count_changed(self):
        """What changed in the source between counting and copying, in words."""
        changes = []
        p = self.progress
        if p.files_copied != p.files_total:
            changes.append("%d files were counted before copying and %d copied (%d %s)" % (
                p.files_total, p.files_copied, abs(p.files_copied - p.files_total),
                "more" if p.files_copied > p.files_total else "fewer"))
        if p.bytes_copied != p.bytes_total:
            changes.append("the files held {:,} bytes when counted and {:,} when copied ({:,} "
                           "bytes {})".format(p.bytes_total, p.bytes_copied,
                                              abs(p.bytes_copied - p.bytes_total),
                                              "more" if p.bytes_copied > p.bytes_total
                                              else "fewer"))
        return ("the source changed during the move: %s%s — stop what writes to %s and run "
                "the move again" % ("; ".join(changes), self.changed_example(), show(self.src)))

    def write_failure(self, rel, err):
        where = show(self.dst)
        hint = ""
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            hint = " — free some space on the destination or pick another one"
        elif isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM):
            hint = " — run the move as root or as the owner of the files"
        return Failure("cannot write %s in %s: %s%s" % (show(rel) or ".", where, words(err), hint))

    def read_failure(self, rel, err):
        hint = ""
        if isinstance(err, OSError) and err.errno == errno.ELOOP:
            return SourceChanged("%s was replaced by a symbolic link during the move — stop "
                                 "what writes to %s and run the move again"
                                 % (self.src_show(rel), show(self.src)))
        if isinstance(err, OSError) and err.errno == errno.ENOTDIR:
            return SourceChanged("%s changed type during the move — stop what writes to %s and "
                                 "run the move again" % (self.src_show(rel), show(self.src)))
        if isinstance(err, OSError) and err.errno == errno.ENOENT:
            return SourceChanged("%s vanished from the source during the move — stop what "
                                 "writes to %s and run the move again"
                                 % (self.src_show(rel), show(self.src)))
        if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM):
            hint = " — run the move as root or as the owner of the files"
        return Failure("cannot read %s: %s%s" % (self.src_show(rel), words(err), hint))

    # -- metadata ------------------------------------------------------------------------------

    # -- verify --------------------------------------------------------------------------------

    # -- publish and clean ---------------------------------------------------------------------

    # -- a move cut short, taken over ----------------------------------------------------------

    def finish_cleaning(self):
        """Finish the cleaning of a dead move: its copy at DST was complete, verified and
        flushed, and each source entry still there is checked against it before it goes."""
        p = self.progress
        p.data_state = self.plan.resume.state.get("dataState") or STATE_BOTH
        p.deleted_any = p.data_state == STATE_DESTINATION
        p.bytes_copied, p.files_copied = p.bytes_total, p.files_total
        if self.plan.resume.state.get("cutover") is not None:
            self.cleaner.against = service_final_records(self.plan.resume, self.dst)
        self.cleaner.clean_source()  # returns only once complete
        self.resumption.release_dead_moves()


def data_segments(fd, size):
    """The (start, end) ranges of a sparse file that hold data; holes are skipped."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:
                return  # only a hole from here to the end
            if err.errno == errno.EINVAL and pos == 0:
                yield (0, size)  # the filesystem cannot tell: copy it all
                return
            raise
        if start >= size:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield (start, end)
        pos = end


def put_unless_cancelled(move, work, item):
    """Queue `item`, waiting for room, but passing the cancellation point while waiting."""
    while True:
        move.check()
        try:
            work.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


class Remover:
    """Unlinks source files, on worker threads once unlinks prove slow, while the main thread
    re-checks the next files against their copies.

    On ext4 an unlink waits on the journal, and waits in parallel overlap (docs/performance.md
    has the figures). On tmpfs an unlink is quick and threads would only contend for the
    interpreter, so files are removed inline until a window of them averages over
    SLOW_UNLINK_SECONDS. Batches are small and the queue short: a file is deleted soon after its
    check."""

    WORKERS = 4
    BATCH = 64
    WINDOW = 32
    SLOW_UNLINK_SECONDS = 50e-6

    def __init__(self, move):
        self.move = move
        self.queue = queue.Queue(maxsize=self.WORKERS)
        self.batch = []
        self.failed = []  # (rel, OSError), for the files that could not be removed
        self.stopping = threading.Event()
        self.threads = []
        self.window_count = 0
        self.window_seconds = 0.0

    def add(self, rel, path, name, dir_fd):
        """Remove the source file `rel`: `path`, also the name `name` in the directory open as
        `dir_fd` (the walk's, open only while this call runs)."""
        if self.threads:
            self.batch.append((rel, path))
            if len(self.batch) >= self.BATCH:
                put_unless_cancelled(self.move, self.queue, self.batch)
                self.batch = []
            return
        started = time.monotonic()
        self.remove_inline(rel, path, name, dir_fd)
        self.window_seconds += time.monotonic() - started
        self.window_count += 1
        if self.window_count == self.WINDOW:
            if self.window_seconds > self.WINDOW * self.SLOW_UNLINK_SECONDS:
                self.start_workers()
            self.window_count = 0
            self.window_seconds = 0.0

    def start_workers(self):
        for _ in range(self.WORKERS):
            thread = threading.Thread(target=self._run, name="remover")
            thread.daemon = True
            thread.start()
            self.threads.append(thread)

    def finish(self):
        """Wait until every file handed over was removed (or failed)."""
        if self.batch:
            put_unless_cancelled(self.move, self.queue, self.batch)
            self.batch = []
        for _ in self.threads:
            put_unless_cancelled(self.move, self.queue, None)
        for thread in self.threads:
            while thread.is_alive():
                thread.join(0.1)
                self.move.check()

    def stop(self):
        """After finish, or on a cancel or failure: stop at the next file and wait for that."""
        self.stopping.set()
        while True:  # only this thread puts: once drained, the sentinels fit
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        for _ in self.threads:
            with contextlib.suppress(queue.Full):
                self.queue.put_nowait(None)
        for thread in self.threads:
            thread.join(5)

    def remove_inline(self, rel, path, name, dir_fd):
        """Unlink by the one name relative to its directory (the kernel looks up one name, not
        the whole path); Cleaner.remove retries by path when that is refused."""
        if self.move.cancel.is_set():
            return
        try:
            os.unlink(name, dir_fd=dir_fd)
            err = None
        except OSError:
            err = self.move.cleaner.remove(os.unlink, path)
        if err is None:
            self.move.progress.add_removed(1)
        else:
            self.failed.append((rel, err))

    def remove_batch(self, batch):
        move = self.move
        removed = 0
        for rel, path in batch:
            if self.stopping.is_set() or move.cancel.is_set():
                break
            err = move.cleaner.remove(os.unlink, path)
            if err is None:
                removed += 1
            else:
                self.failed.append((rel, err))
        if removed:
            move.progress.add_removed(removed)

    def _run(self):
        while True:
            batch = self.queue.get()
            if batch is None:
                return
            self.remove_batch(batch)


class Verifier:
    """Compares copied content with its source in a thread, overlapping the copy: the data is
    still in the page cache, and the two run on different cores.

    Work items: ("range", rel, st, start, end) as each chunk of a big file lands, then
    ("end", rel, st) to check that the source did not change meanwhile; ("file", rel, st) for a
    sparse file, compared whole once copied (its holes are compared by their map)."""

    MAP_COPIES = True  # try mapping copies (mapped_copy_equals); tests pin the fallback

    def __init__(self, move):
        self.move = move
        self.queue = queue.Queue(maxsize=1024)
        self.thread = threading.Thread(target=self._run, name="verifier")
        self.thread.daemon = True
        self.done = threading.Event()
        self.stopping = threading.Event()
        # Two chunk-sized buffers, made on the first whole chunk: zero-filling 8 MiB is a large
        # part of a tiny move's time, and of its RSS.
        self.chunks = [None, None]
        import mmap  # here: only checksum moves map files

        self.mmap = mmap
        self.can_map = self.MAP_COPIES
        self.open_rel = None  # the file whose two descriptors are open for "range" items
        self.fs = self.fd = None

    def start(self):
        self.thread.start()

    def put(self, item):
        put_unless_cancelled(self.move, self.queue, item)

    def finish(self):
        """Wait for every queued item, passing the cancellation point while waiting."""
        self.put(None)
        while not self.done.wait(0.1):
            self.move.check()
        self.move.check()

    def stop(self):
        self.stopping.set()
        if self.thread.is_alive():
            with contextlib.suppress(queue.Full):
                self.queue.put_nowait(None)
            self.thread.join(2)

    def _run(self):
        move = self.move
        rel = None
        try:
            while True:
                item = self.queue.get()
                if item is None or move.cancel.is_set() or self.stopping.is_set():
                    break
                kind, rel, st = item[:3]
                if kind == "range":
                    self.open_pair(rel)
                    self.compare_range(join(move.src, rel), self.fs, self.fd, item[3], item[4])
                elif kind == "end":
                    self.open_pair(rel)
                    self.check_unchanged(join(move.src, rel), self.fs, st)
                    self.close_pair()
                else:
                    self.compare(rel, st)
        except Failure as exc:
            move.cancel.fail(exc)
        except OSError as exc:
            move.cancel.fail(Failure("cannot verify %s: %s" % (show(rel), words(exc))))
        except Exception as exc:
            move.cancel.fail(Failure("internal error in the mover's verifier (%s: %s) — "
                                     "please report it" % (type(exc).__name__, exc)))
        finally:
            self.close_pair()
            self.done.set()

    def open_pair(self, rel):
        if self.open_rel == rel:
            return
        self.close_pair()
        move = self.move
        try:
            self.fs = open_readonly(join(move.src, rel), move.noatime)
        except OSError as err:
            raise move.read_failure(rel, err) from err
        self.fd = open_readonly(join(move.plan.staging, rel), 0)
        self.open_rel = rel

    def close_pair(self):
        for fd in (self.fs, self.fd):
            if fd is not None:
                os.close(fd)
        self.fs = self.fd = self.open_rel = None

    def compare(self, rel, st):
        move = self.move
        spath = join(move.src, rel)
        try:
            fs = open_readonly(spath, move.noatime)
        except OSError as err:
            raise move.read_failure(rel, err) from err
        try:
            fd = open_readonly(join(move.plan.staging, rel), 0)
            try:
                self.compare_fds(rel, st, spath, fs, fd)
            finally:
                os.close(fd)
        finally:
            os.close(fs)

    def compare_fds(self, rel, st, spath, fs, fd):
        size = st.st_size
        ranges = ((0, size),)
        if size and st.st_blocks * 512 < size:
            # Sparse: when both have holes in the same places, holes read as zeros on both
            # sides and need no reading (a 1 TB disk image with 1 GB of data verifies in
            # seconds); otherwise compare every byte.
            src_map = tuple(data_segments(fs, size))
            if src_map == tuple(data_segments(fd, size)):
                ranges = src_map
                self.move.progress.add_verified(size - sum(e - s for s, e in src_map))
        for start, end in ranges:
            self.compare_range(spath, fs, fd, start, end)
        self.check_unchanged(spath, fs, st)

    def check_unchanged(self, spath, fs, st):
        after = os.fstat(fs)
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            raise SourceChanged("%s was modified after it was copied — nothing was deleted; "
                                "stop what writes to %s and run the move again"
                                % (show(spath), show(self.move.src)))

    def compare_range(self, spath, fs, fd, start, end):
        move = self.move
        os.lseek(fs, start, os.SEEK_SET)
        source = io.FileIO(fs, "r", closefd=False)
        # Mapping a range past the copy's end would be a SIGBUS, not an error: only a copy
        # that is long enough is mapped (our own, in staging nobody else can enter).
        mapped = self.can_map and os.fstat(fd).st_size >= end
        pos = start
        while pos < end:
            if self.stopping.is_set() or move.cancel.is_set():
                return
            want = min(end - pos, VERIFY_CHUNK)
            data = self.buffer(0, want)
            if read_full(source, data) != want:
                raise SourceChanged("%s shrank after it was copied — nothing was deleted; "
                                    "stop what writes to %s and run the move again"
                                    % (show(spath), show(move.src)))
            if mapped:
                same = self.mapped_copy_equals(fd, pos, data)
                mapped = same is not None
            if not mapped:
                os.lseek(fd, pos, os.SEEK_SET)
                back = self.buffer(1, want)
                same = read_full(io.FileIO(fd, "r", closefd=False), back) == want and data == back
            if not same:
                raise SourceChanged(
                    "the copy of %s differs from the source (the file changed while it was "
                    "copied, or a disk returned bad data) — nothing was deleted; stop what "
                    "writes to %s and run the move again" % (show(spath), show(move.src)))
            pos += want
            move.progress.add_verified(want)

    def buffer(self, which, size):
        """A buffer of `size` bytes: chunk buffer `which` for a whole chunk, kept for the next."""
        if size < VERIFY_CHUNK:
            return bytearray(size)
        if self.chunks[which] is None:
            self.chunks[which] = bytearray(VERIFY_CHUNK)
        return self.chunks[which]

    def mapped_copy_equals(self, fd, pos, data):
        """Whether the copy holds `data` at `pos`, compared in place through a mapping; None
        when the copy's filesystem cannot map it (then it is read).

        Reading the copy back would copy every byte once more; mapped, the verifier keeps pace
        with the kernel's copy (docs/performance.md). A bytearray compares with any buffer by
        memcmp.

        Only the copy is ever mapped, never the source: a mapped file truncated by someone else,
        or a disk error while a page is read in, is a SIGBUS that ends the mover instead of an
        error it can word. The copy is ours, in staging, and was just written (it is in the page
        cache); should it still happen, the move ends as for a killed mover: the source
        untouched, the staging named."""
        skew = pos % self.mmap.ALLOCATIONGRANULARITY
        try:
            window = self.mmap.mmap(fd, len(data) + skew, access=self.mmap.ACCESS_READ,
                                    offset=pos - skew)
        except (OSError, ValueError):
            self.can_map = False
            return None
        try:
            if not skew:
                return data == window
            with memoryview(window) as view:
                return data == view[skew:]
        finally:
            window.close()


def open_readonly(path, noatime, dir_fd=None):
    if noatime:
        try:
            return os.open(path, READ_FLAGS | noatime, dir_fd=dir_fd)
        except OSError as err:
            if err.errno != errno.EPERM:
                raise
    return os.open(path, READ_FLAGS, dir_fd=dir_fd)


def read_full(f, buf):
    """readinto until buf is full or the file ends (a raw read may return less)."""
    view = memoryview(buf)
    total = 0
    size = len(view)
    while total < size:
        n = f.readinto(view[total:])
        if not n:
            break
        total += n
    return total


def syncfs_reports_errors():
    """Whether syncfs(2) returns the writeback errors of the filesystem (Linux 5.8 and later);
    before that it returns 0 even when the disk failed to store the data."""
    release = os.uname().release.split(".")
    try:
        return (int(release[0]), int(release[1].split("-")[0])) >= (5, 8)
    except (IndexError, ValueError):
        return False


def flush_filesystem(fd):
    """syncfs(2) on the filesystem of the open descriptor `fd` (only the destination's disk is
    flushed, not every filesystem of the server: a stuck NFS mount elsewhere must not hang the
    move). Raises the OSError it reports: a write-back error since `fd` was opened. Returns
    False when syncfs cannot be called (then the caller fsyncs each file)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError, ImportError):
        return False
    if syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return True


def fsync_tree(root):
    """fsync every file and directory of a tree: each reports the write-back errors of its own
    inode, where syncfs cannot (old kernels)."""
    for kind, rel, st, _name, _dir_fd in walk(root):
        if kind == WALK_POST or stat.S_ISLNK(st.st_mode) or \
                not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            continue
        fd = os.open(join(root, rel), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


PROBE_NS = 1500000000123456789  # a time with every digit: what a filesystem rounds shows


def destination_lacks(parent, is_root):
    """What a filesystem cannot keep, found by trying in a probe directory made (and removed)
    in `parent`: [] when the probe cannot be made (the copy will say why)."""
    probe = join(parent, b".servermove-probe-" + os.urandom(6).hex().encode())
    try:
        os.mkdir(probe, 0o700)
    except OSError:
        return []
    lacks = []
    try:
        path = join(probe, b"f")
        os.close(os.open(path, CREATE_FLAGS, 0o600))
        os.chmod(path, 0o640)
        if stat.S_IMODE(os.lstat(path).st_mode) != 0o640:
            lacks.append("permission modes")
        os.utime(path, ns=(PROBE_NS, PROBE_NS))
        if os.lstat(path).st_mtime_ns != PROBE_NS:
            lacks.append("nanosecond times")
        for what, make in (("symbolic links", os.symlink), ("hard links", os.link)):
            try:
                make(path, join(probe, b"l"))
                os.unlink(join(probe, b"l"))
            except OSError:
                lacks.append(what)
        if is_root:
            try:
                os.chown(path, 1, 1)
                if (os.lstat(path).st_uid, os.lstat(path).st_gid) != (1, 1):
                    lacks.append("owners")
            except OSError:
                lacks.append("owners")
    except OSError:
        pass
    finally:
        for name in (b"l", b"f"):
            with contextlib.suppress(OSError):
                os.unlink(join(probe, name))
        with contextlib.suppress(OSError):
            os.rmdir(probe)
    return lacks


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def force_rmtree(path):
    """Remove a tree we made, including read-only directories inside it."""
    import shutil

    def fix(func, failed, exc_info):
        parent = os.path.dirname(failed)
        os.chmod(parent, 0o700)
        if func in (os.rmdir, os.unlink) or func is getattr(os, "unlink", None):
            func(failed)
        else:
            os.chmod(failed, 0o700)
            shutil.rmtree(failed, onerror=fix)
    for root, dirs, _files in os.walk(path):
        for name in dirs:
            try:
                full = join(root, name)
                if not os.path.islink(full):
                    os.chmod(full, 0o700)
            except OSError:
                pass
    shutil.rmtree(path, onerror=fix)


# ----------------------------------------------------------------------------------------------
# Service steps: stop, start and check the service whose data is moved, and repoint it
#
# The building blocks of a service move: running the admin's stop, start and check commands, the
# health check, and the cutover that makes the service find its data at the new path, each
# cutover with its exact undo. The client sends the service as JSON (parse_service_spec). A
# command given as a string runs with /bin/sh -c, a list runs without a shell; the mover never
# puts a path of its own into a shell string. A cutover returns a record (JSON-ready, paths as
# wire strings) from which undo_cutover puts back exactly what it changed.

SERVICE_COMMAND_TIMEOUT = 300   # seconds a stop or start command may take before it is killed
CHECK_TIMEOUT_DEFAULT = 60
CHECK_TIMEOUT_MAX = 3600
CHECK_ATTEMPT_SECONDS = 10      # one run of the check; a hung check is killed and tried again
CHECK_BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)  # a service up soon after start is seen soon
KILL_GRACE_SECONDS = 2
OUTPUT_TAIL_BYTES = 4096
ASIDE_MARKER = b".servermove-old-"
LINK_MARKER = b".servermove-link-"
BACKUP_MARKER = b".servermove-"
TEMP_MARKER = b".servermove-tmp-"
NAME_MAX = 255
# Bytes that continue a path name: after the old path one of these means another path
# (/srv/data2, /srv/data.old); before it, these or "/" mean a longer path (/mnt/srv/data).
# Bytes from 0x80 up are the parts of non-ASCII names.
PATH_NAME_BYTES = b"A-Za-z0-9_.~+@%\\-\\x80-\\xff"


def wire_path(text):
    """A wire string back to the path's bytes (the inverse of show)."""
    return text.encode("utf-8", "surrogateescape")


def words_for_given_path(err):
    """words(), but a path the admin gave that is not there does not exist: it did not vanish."""
    return "it does not exist" if err.errno == errno.ENOENT else words(err)


def command_text(command):
    """A service command as the admin wrote it, for messages."""
    if isinstance(command, str):
        return command
    import shlex

    return " ".join(shlex.quote(word) for word in command)


def last_line(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def kill_group(process):
    """SIGTERM to the command's whole process group, SIGKILL to what is left after a grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(OSError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(SLEEP_SLICE)
    process.wait()


def run_command(command, timeout, cancel_check=None):
    """Run a service command to its end: (exit status, the tail of its output as text). The status
    is None when it ran out of time (it and its process group were killed), negative when a
    signal ended it. `cancel_check` is called while it runs; what it raises kills the command and
    goes on up.

    The command gets its own session (so its own process group: a timeout kills everything it
    started that is still in it), stdin /dev/null and cwd /, so it never holds the source open.
    Its output goes to an unlinked file, not a pipe: a start command leaves a daemon behind that
    may keep its stdout, and a pipe would then keep us waiting for as long as the daemon runs."""
    import subprocess
    import tempfile

    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
    with tempfile.TemporaryFile() as output:
        try:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output,
                                       stderr=subprocess.STDOUT, cwd="/", close_fds=True,
                                       start_new_session=True)
        except OSError as err:
            problem = "not found" if err.errno == errno.ENOENT else words(err)
            return 127, "cannot run %s: %s" % (argv[0], problem)
        deadline = time.monotonic() + timeout
        status = None
        while status is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                status = process.wait(timeout=SLEEP_SLICE)
            if status is None and time.monotonic() >= deadline:
                kill_group(process)
                break
            if status is None and cancel_check is not None:
                try:
                    cancel_check()
                except BaseException:
                    kill_group(process)
                    raise
        output.seek(max(0, os.fstat(output.fileno()).st_size - OUTPUT_TAIL_BYTES))
        return status, output.read().decode("utf-8", "replace")


def how_it_ended(status, tail, timeout):
    """A command's end in plain words: "failed (exit 3): <its last line>"."""
    line = last_line(tail)
    if status is None:
        return ("did not finish within %s: it was killed, with what it started in its process "
                "group" % seconds_text(timeout))
    text = "was killed by signal %d" % -status if status < 0 else "failed (exit %d)" % status
    return text + (": " + line if line else " without any output")


def seconds_text(seconds):
    return "1 second" if seconds == 1 else "%g seconds" % seconds


def run_service_command(role, command, timeout=SERVICE_COMMAND_TIMEOUT, cancel_check=None):
    """Run the service's stop or start command (`role`); a failure raises Failure in one line:
    "the stop command `...` failed (exit 3): <the last line of its output>"."""
    status, tail = run_command(command, timeout, cancel_check)
    if status != 0:
        raise Failure("the %s command `%s` %s" % (role, command_text(command),
                                                   how_it_ended(status, tail, timeout)))
    return tail


def pause(seconds, cancel_check):
    deadline = time.monotonic() + seconds
    while True:
        if cancel_check is not None:
            cancel_check()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, SLEEP_SLICE))


def wait_until_healthy(check, timeout=CHECK_TIMEOUT_DEFAULT, cancel_check=None,
                       expect_output=None):
    """Run `check` until it passes, with a short backoff, for at most `timeout` seconds; return
    the seconds it took. It passes when it exits 0 and, if `expect_output` is given, its last line
    of output is exactly that (`docker inspect` prints false and still exits 0)."""
    started = time.monotonic()
    deadline = started + timeout
    tries = 0
    while True:
        attempt_seconds = max(1.0, min(CHECK_ATTEMPT_SECONDS, deadline - time.monotonic()))
        status, tail = run_command(check, attempt_seconds, cancel_check)
        tries += 1
        if status == 0 and (expect_output is None or last_line(tail) == expect_output):
            return time.monotonic() - started
        left = deadline - time.monotonic()
        if left <= 0:
            break
        pause(min(left, CHECK_BACKOFF[min(tries - 1, len(CHECK_BACKOFF) - 1)]), cancel_check)
    if status == 0:
        last = "printed `%s`, not `%s`" % (last_line(tail), expect_output)
    else:
        last = how_it_ended(status, tail, attempt_seconds)
    raise Failure("the service did not pass its check `%s` within %s (%d tries; the last one %s)"
                  % (command_text(check), seconds_text(timeout), tries, last))


def check_service_command(emitter, payload):
    """`check-service --service JSON`: run the service's check once, as a move would (the
    server form's "Test check now"): one `service.check` line saying whether it passed, how it
    ended and when it ran. Exit 0 when it passed, 1 when not."""
    if payload is None:
        raise Refused("check-service needs --service JSON")
    service = parse_service_spec(payload)
    checked_at = time.time()
    status, tail = run_command(service.check, CHECK_ATTEMPT_SECONDS)
    passed = status == 0 and (service.check_output is None
                              or last_line(tail) == service.check_output)
    if passed:
        says = "passed"
    elif status == 0:
        says = "printed `%s`, not `%s`" % (last_line(tail), service.check_output)
    else:
        says = how_it_ended(status, tail, CHECK_ATTEMPT_SECONDS)
    emitter.emit("service.check", {"passed": passed, "checkedAt": checked_at,
                                   "check": command_text(service.check), "result": says},
                 sequenced=False)
    return EXIT_OK if passed else EXIT_FAILED


def sibling_name(path, marker, move_id):
    """A hidden name beside `path` with servermove's marker and the move id in it."""
    parent, base = os.path.split(path)
    tail = marker + move_id.encode("ascii")
    return join(parent, b"." + base[:NAME_MAX - 1 - len(tail)] + tail)


class NoCutover(object):
    """cutover = "none": the service is not repointed (the admin does it, or it needs nothing)."""

    name = "none"

    def plan(self, old, new, move_id):
        return []

    def apply(self, old, new, move_id):
        return {"cutover": "none"}


def symlink_problem(old, why):
    return "cannot repoint %s with a symlink: %s" % (show(old), why)


class SymlinkCutover(object):
    """cutover = "symlink": the old directory is renamed aside (a sibling, so one atomic rename
    on its own filesystem) and a symlink at the old path points to the new one."""

    name = "symlink"

    def plan(self, old, new, move_id):
        try:
            st = os.lstat(old)
        except OSError as err:
            raise Refused(symlink_problem(old, words_for_given_path(err))) from None
        if not stat.S_ISDIR(st.st_mode):
            raise Refused(symlink_problem(old, "it is not a directory"))
        aside = sibling_name(old, ASIDE_MARKER, move_id)
        if os.path.lexists(aside):
            raise Refused("%s is in the way of the symlink cutover (it keeps the old directory): "
                          "move it away first" % show(aside))
        return [{"change": "%s is renamed to %s, and %s becomes a symlink to %s"
                 % (show(old), show(aside), show(old), show(new))}]

    def apply(self, old, new, move_id):
        aside = sibling_name(old, ASIDE_MARKER, move_id)
        link = sibling_name(old, LINK_MARKER, move_id)
        self.plan(old, new, move_id)
        try:
            # The symlink is made first under a temporary name: if it cannot be made, nothing
            # was touched; then two renames, each undone if the next one fails.
            os.symlink(new, link)
            os.rename(old, aside)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(link)
            raise Failure(symlink_problem(old, words(err))) from None
        try:
            os.rename(link, old)
        except OSError as err:
            os.rename(aside, old)
            os.unlink(link)
            raise Failure(symlink_problem(old, words(err))) from None
        fsync_dir(os.path.dirname(old))
        st = os.lstat(aside)
        return {"cutover": "symlink", "old": show(old), "new": show(new), "aside": show(aside),
                "asideDevice": st.st_dev, "asideInode": st.st_ino}


def undo_symlink_cutover(record):
    """Remove the symlink (only if it is still ours, pointing where we set it) and rename the
    old directory back. Running it again after it succeeded changes nothing."""
    old, new, aside = (wire_path(record[key]) for key in ("old", "new", "aside"))
    try:
        st = os.lstat(old)
    except OSError as err:
        if err.errno != errno.ENOENT:
            raise Failure("cannot undo the symlink at %s: %s" % (show(old), words(err))) from None
        st = None
    if st is not None:
        if (st.st_dev, st.st_ino) == (record["asideDevice"], record["asideInode"]):
            return  # already back in place
        if not stat.S_ISLNK(st.st_mode) or os.readlink(old) != new:
            raise Failure("%s is no longer the symlink servermove made: left it as it is; the "
                          "old directory is at %s" % (show(old), show(aside)))
    try:
        st = os.lstat(aside)
        if (st.st_dev, st.st_ino) != (record["asideDevice"], record["asideInode"]):
            raise Failure("%s is not the directory servermove renamed aside: left both as they "
                          "are" % show(aside))
        if os.path.lexists(old):
            os.unlink(old)
        os.rename(aside, old)
    except OSError as err:
        raise Failure("cannot put the old directory %s back at %s: %s"
                      % (show(aside), show(old), words(err))) from None
    fsync_dir(os.path.dirname(old))


def whole_path_pattern(old):
    """The old path where it stands as a whole path: not preceded by a name byte or "/", not
    followed by a name byte. Followed by "/" it is a path inside the old directory and matches
    too, so /srv/data/pg_wal moves with /srv/data (rule in docs/protocol.md)."""
    import re

    return re.compile(b"(?<![" + PATH_NAME_BYTES + b"/])" + re.escape(old)
                      + b"(?![" + PATH_NAME_BYTES + b"])")


def repointed(content, old, new):
    """(the content with `old` replaced by `new` as a whole path, [(line number, before, after)]
    for each line that changes). Works on bytes: what is not UTF-8 passes through as it is."""
    pattern = whole_path_pattern(old)
    lines = content.split(b"\n")
    changes = []
    for number, line in enumerate(lines):
        changed = pattern.sub(lambda match: new, line)
        if changed != line:
            changes.append((number + 1, line, changed))
            lines[number] = changed
    return b"\n".join(lines), changes


def sha256_of(payload):
    import hashlib

    return hashlib.sha256(payload).hexdigest()


def read_config(path):
    """(the real path of a config file, its stat, its bytes)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "it is not a regular file")
    with open(real, "rb") as handle:
        return real, st, handle.read()


def write_like(path, payload, like):
    """Create `path` (never over an existing file) with `payload` and the owner, group and mode
    of the stat `like`; fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (like.st_uid, like.st_gid):
            os.fchown(fd, like.st_uid, like.st_gid)
        os.fchmod(fd, stat.S_IMODE(like.st_mode))
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_xattrs(source, target):
    """Best effort: ACLs and security labels of the config file go with its new content."""
    try:
        names = os.listxattr(source)
    except (OSError, AttributeError):
        return
    for name in names:
        with contextlib.suppress(OSError):
            os.setxattr(target, name, os.getxattr(source, name))


def replace_atomically(real, payload, like, move_id):
    """Replace the file `real` with `payload`: a temp file beside it with its owner, group, mode
    and xattrs, fsynced, renamed over it, and the directory fsynced."""
    tmp = sibling_name(real, TEMP_MARKER, move_id)
    with contextlib.suppress(OSError):
        os.unlink(tmp)  # a temp file of ours left by a worker that died
    try:
        write_like(tmp, payload, like)
        copy_xattrs(real, tmp)
        os.rename(tmp, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(real))


class ConfigCutover(object):
    """cutover = "config:FILE": the old path is replaced by the new one in FILE wherever it
    stands as a whole path; FILE is rewritten atomically, keeping its owner, group, mode and
    xattrs, and its original is kept beside it as FILE.servermove-<move id>."""

    name = "config"

    def __init__(self, path):
        self.path = path

    def _read(self, refusal):
        try:
            return read_config(self.path)
        except OSError as err:
            raise refusal("cannot read the cutover's config file %s: %s"
                          % (show(self.path), words_for_given_path(err))) from None

    def plan(self, old, new, move_id):
        """The lines that will change, as wire strings; refused when FILE does not hold the old
        path as a whole path (there would be nothing to repoint)."""
        real_old = os.path.realpath(old)
        real = os.path.realpath(self.path)
        if real == real_old or real.startswith(real_old + b"/"):
            raise Refused("the cutover's config file %s is inside the source %s: it would be "
                          "copied with the data and removed with the old copy, so the service "
                          "would never read the new path — use a config file outside %s, or "
                          "cutover symlink" % (show(self.path), show(old), show(old)))
        real, _st, content = self._read(Refused)
        _payload, changes = repointed(content, old, new)
        if not changes:
            raise Refused("%s does not mention %s as a whole path: servermove cannot repoint "
                          "the service there — check cutover in servers.toml"
                          % (show(real), show(old)))
        return [{"file": show(real), "line": number, "before": show(before),
                 "after": show(after)} for number, before, after in changes]

    def apply(self, old, new, move_id):
        real, st, content = self._read(Failure)
        payload, changes = repointed(content, old, new)
        if not changes:
            raise Failure("%s no longer mentions %s: it changed since the plan; nothing was "
                          "repointed" % (show(real), show(old)))
        backup = real + BACKUP_MARKER + move_id.encode("ascii")
        try:
            write_like(backup, content, st)
        except OSError as err:
            raise Failure("cannot keep a backup of %s as %s: %s (nothing was changed)"
                          % (show(real), show(backup), words(err))) from None
        try:
            copy_xattrs(real, backup)
            replace_atomically(real, payload, st, move_id)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(backup)
            raise Failure("cannot rewrite %s to point to %s: %s (it was left as it was)"
                          % (show(real), show(new), words(err))) from None
        return {"cutover": "config", "moveId": move_id, "file": show(real), "backup": show(backup),
                "old": show(old), "new": show(new), "originalSha256": sha256_of(content),
                "newSha256": sha256_of(payload)}


def undo_config_cutover(record):
    """Put FILE's original content back, atomically, from the backup; then remove the backup.
    A FILE changed by something else since servermove rewrote it is left alone, loudly. Running
    it again after it succeeded changes nothing."""
    real, backup = wire_path(record["file"]), wire_path(record["backup"])
    try:
        _real, st, current = read_config(real)
        if sha256_of(current) == record["originalSha256"]:
            with contextlib.suppress(OSError):
                os.unlink(backup)
            return
        if sha256_of(current) != record["newSha256"]:
            raise Failure("%s was changed by something else after servermove rewrote it: left "
                          "it as it is; its original content is in %s" % (show(real),
                                                                          show(backup)))
        with open(backup, "rb") as handle:
            original = handle.read()
        if sha256_of(original) != record["originalSha256"]:
            raise Failure("the backup %s is not the original of %s any more: left both as they "
                          "are" % (show(backup), show(real)))
        replace_atomically(real, original, st, record["moveId"])
    except OSError as err:
        raise Failure("cannot put back the original %s from %s: %s"
                      % (show(real), show(backup), words(err))) from None
    with contextlib.suppress(OSError):
        os.unlink(backup)
    fsync_dir(os.path.dirname(real))


def undo_cutover(record):
    """Undo what a cutover's apply() did, from the record it returned."""
    kind = record.get("cutover")
    if kind == "symlink":
        undo_symlink_cutover(record)
    elif kind == "config":
        undo_config_cutover(record)


def cutover_from_text(text):
    """"none", "symlink" or "config:/abs/path" as a cutover object; Refused otherwise."""
    if text == "none":
        return NoCutover()
    if text == "symlink":
        return SymlinkCutover()
    if isinstance(text, str) and text.startswith("config:"):
        return ConfigCutover(absolute("the cutover's config file", text[len("config:"):]))
    raise Refused("the service's cutover must be \"none\", \"symlink\" or \"config:FILE\" "
                  "(got %s)" % json.dumps(text))


class ServiceSpec(object):
    """The service of a move, as the client sent it (parse_service_spec)."""

    def __init__(self, stop, start, check, check_timeout, check_output, cutover):
        self.stop = stop
        self.start = start
        self.check = check
        self.check_timeout = check_timeout
        self.check_output = check_output
        self.cutover = cutover


SERVICE_KEYS = ("stop", "start", "check", "checkTimeout", "checkOutput", "cutover")


def service_command(data, key):
    command = data.get(key)
    if command is None:
        raise Refused("the service has no %s command: stop, start and check are all needed"
                      % key)
    words_ok = isinstance(command, list) and command and all(
        isinstance(word, str) and word and "\0" not in word for word in command)
    text_ok = isinstance(command, str) and command.strip() and "\0" not in command
    if not (words_ok or text_ok):
        raise Refused("the service's %s must be a command: a non-empty string (run by /bin/sh) "
                      "or a list of non-empty strings (run without a shell)" % key)
    return command


def parse_service_spec(payload):
    """The service as JSON from the client: {"stop", "start", "check": a string or a list of
    strings, "checkTimeout": seconds, "checkOutput": the line a passing check prints (optional),
    "cutover": "none" | "symlink" | "config:FILE"}. Anything else is refused in one line."""
    try:
        data = json.loads(payload.decode("utf-8") if isinstance(payload, bytes) else payload)
    except ValueError as err:
        raise Refused("the service description is not valid JSON (%s)" % err) from None
    if not isinstance(data, dict):
        raise Refused("the service description must be a JSON object")
    unknown = sorted(set(data) - set(SERVICE_KEYS))
    if unknown:
        raise Refused("the service description has an unknown key %s (known: %s)"
                      % (json.dumps(unknown[0]), ", ".join(SERVICE_KEYS)))
    commands = [service_command(data, key) for key in ("stop", "start", "check")]
    timeout = data.get("checkTimeout", CHECK_TIMEOUT_DEFAULT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not 0 < timeout <= CHECK_TIMEOUT_MAX:
        raise Refused("the service's checkTimeout must be a number of seconds, more than 0 "
                      "and at most %d" % CHECK_TIMEOUT_MAX)
    expect = data.get("checkOutput")
    if expect is not None and (not isinstance(expect, str) or not expect.strip()
                               or "\n" in expect):
        raise Refused("the service's checkOutput must be the one line a passing check prints")
    cutover = cutover_from_text(data.get("cutover", "none"))
    return ServiceSpec(commands[0], commands[1], commands[2], timeout, expect, cutover)


# ----------------------------------------------------------------------------------------------
# Service moves: copy while the service runs (live passes), stop it, copy the final delta,
# switch, start and check it — or put it back on the source

LIVE_PASSES_MAX = 5
KEEP_CHECK_EVERY = 1024  # kept files between two cancel checks of the final pass
# The kernel stamps ctimes from a coarse clock: a file written again in the same tick right after
# its stat was recorded keeps the recorded ctime ("racily clean", as git calls it). A file whose
# ctime is not older than its pass's start minus this margin (ticks are 1 to 10 ms) is therefore
# not trusted as unchanged in the next pass.
RACY_MARGIN_NS = 50 * 1000 * 1000
RESTART_GUESS_SECONDS = 2.0  # stop, start and check in a forecast: they cannot be measured before


def cutover_text(cutover):
    if isinstance(cutover, ConfigCutover):
        return "config:" + show(cutover.path)
    return cutover.name


def stat_key(st):
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def changed_since_recorded(record, st, but_ctime=False):
    """Why a source entry must not be removed by a service move's cleaning, or None: it must be
    the inode its final pass recorded, unchanged since (size, mtime, ctime)."""
    if record is None:
        return "was not in the final copy (it appeared after the service was stopped)"
    if record[:4 if not but_ctime else 3] != stat_key(st)[:4 if not but_ctime else 3]:
        return "changed after the service was stopped and its final copy was made"
    return None


def service_source_users(real_src, move):
    """The programs using SRC, for a service move's plan. Writers are expected (the running
    service): they are only named in a warning; the strict check runs once it is stopped."""
    users, hidden = source_users(real_src)
    scope = {"openFilesCheck": SCOPE_ALL if os.geteuid() == 0 else SCOPE_OWN,
             "openFilesUnchecked": hidden}
    writers, readers = {}, {}
    for use in users:
        (readers if use.how == USE_READ else writers).setdefault(use.pid, use)
    if writers:
        first = writers[min(writers)]
        move.out.emit("move.warning", {
            "message": "%s — expected of the running service: it is stopped before the final "
                       "copy, and the move is rolled back if a program still writes there then"
                       % first.describe(),
            "path": show(first.path[len(real_src) + 1:]), "count": len(writers),
            "moveId": move.move_id})
    readers = [use for pid, use in sorted(readers.items()) if pid not in writers]
    return readers, scope


def plan_service(move, plan):
    """The plan's `service` field. A cutover that cannot be done is refused here, before
    anything is written (a config FILE that does not hold SRC as a whole path)."""
    if plan.method != "copy":
        raise Refused("%s and %s are on the same filesystem: a service move copies across "
                      "filesystems — pick a destination on another disk, or stop the service, "
                      "move the data without --service (one rename) and start it yourself"
                      % (show(move.src), show(move.dst)))
    spec = move.service
    return {"stop": command_text(spec.stop), "start": command_text(spec.start),
            "check": command_text(spec.check), "cutover": cutover_text(spec.cutover),
            # Finishing a dead move's cleaning: its cutover was applied, there is none to plan.
            "cutoverChanges": [] if plan.finishing else spec.cutover.plan(move.src, move.dst,
                                                                          move.move_id),
            "maxDowntimeSeconds": move.max_downtime}


class LivePass(object):
    """One copy pass of a service move into a fresh staging. A regular file that the previous
    pass recorded and that is unchanged since (same inode, size, mtime and ctime) is hard-linked
    from the previous pass's staging instead of copied, as a move taken over reuses a dead
    move's copies; everything else is copied anew, so deletions, type changes and hard-link
    groups follow the source, and directories get their metadata last, as in any copy. While
    the service runs (`tolerant`), a file that changes while it is copied is only skipped: the
    next pass copies it."""

    def __init__(self, number, previous, tolerant, move, in_place=False):
        self.number = number
        self.previous = previous
        self.tolerant = tolerant
        self.in_place = in_place  # updates the previous pass's staging (the final pass)
        self.names = {}  # in place: directory -> the names the source has there
        self.verifier = self.copier = None  # in place: what keep hands its work to (keeper)
        self.kept = 0  # in place: the files kept so far
        self.here = None  # in place: the names of the directory whose files the walk yields
        self.dirs = {}  # directory -> stat_key when its copy got its metadata (trusted ones)
        self.opened = set()  # in place: the directories written into, their metadata re-given
        self.touched = []  # in place: what was copied anew or re-given metadata (FinalCheck)
        self.removed = []  # in place: the names removed, the source no longer having them
        self.progress = move.progress
        self.started_ns = int(time.time() * 1e9)
        self.started = time.monotonic()
        self.seconds = 0.0
        self.staging = move.plan.staging  # renamed aside when the next pass begins
        self.records = {}  # rel -> [inode, size, mtime_ns, ctime_ns, content verified]
        self.copied = []  # (rel, st) of the regular files copied (not linked)
        self.changed = 0  # entries copied or skipped: what changed since the previous pass
        self.complete = True  # False: the walk was cut short (a directory vanished)

    def note(self, rel, st, verified, copied=False):
        key = stat_key(st)
        if copied:
            self.copied.append((rel, st))
            self.changed += 1
        elif not stat.S_ISREG(st.st_mode) and (
                self.previous is None or self.previous.records.get(rel, [])[:4] != key):
            self.changed += 1
        if not self.trusts(st):
            return  # racily clean: copied again in the next pass
        self.records[rel] = key + [verified]

    def trusts(self, st):
        """Whether a copy made from a file with stat `st` can stand for it later (recorded for
        the next pass, or for a move that takes this one over): not one whose ctime is so close
        to a live pass's start that a write in the same clock tick would not move it."""
        return not (self.tolerant and st.st_ctime_ns >= self.started_ns - RACY_MARGIN_NS)

    def skip(self, rel, copier):
        """`rel` changed while it was copied: its partial copy goes, the next pass copies it."""
        self.changed += 1
        self.records.pop(rel, None)
        with contextlib.suppress(OSError):
            os.unlink(join(self.staging, rel))
        for key, first in list(copier.hardlinks.items()):
            if first == rel:
                del copier.hardlinks[key]

    # -- the final pass: the last live pass's staging updated in place -----------------------

    def saw(self, rel):
        cut = rel.rfind(b"/")
        self.names.setdefault(rel[:cut] if cut > 0 else b"", set()).add(rel[cut + 1:])

    def prepare_dir(self, rel, st):
        """A directory of the source: kept if the staging has one there, made otherwise. One
        unchanged since the last pass gave its copy metadata (same stat_key: a mode, owner,
        xattr or entry change moves the ctime) is left as it is until something in it must be
        written (open_dir); a changed one is opened now, emptied of its extended attributes
        (set_dir_meta gives it the source's)."""
        path = join(self.staging, rel)
        parent = os.path.dirname(rel)
        if rel:
            self.saw(rel)
        self.here = self.names.setdefault(rel, set())  # the names of its files come next
        try:
            dst_st = os.lstat(path)
        except FileNotFoundError:
            dst_st = None
        if dst_st is not None and not stat.S_ISDIR(dst_st.st_mode):
            self.open_dir(parent)
            os.unlink(path)
            dst_st = None
        if dst_st is None:
            if rel:
                self.open_dir(parent)
            os.mkdir(path, 0o700)
            self.opened.add(rel)
            return
        if self.previous.dirs.get(rel) != stat_key(st):
            self.open_dir(rel, strip=True)

    def open_dir(self, rel, strip=False):
        """Make the staging's directory `rel` ours to write into (owner-only, as when it was
        made); its metadata is given again when the walk leaves it (finish_dir)."""
        if rel in self.opened:
            return
        path = join(self.staging, rel)
        os.chmod(path, 0o700)
        self.opened.add(rel)
        if not strip:
            return
        with contextlib.suppress(OSError):  # no xattrs here, or a label that must stay
            for attribute in os.listxattr(path, follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.removexattr(path, attribute, follow_symlinks=False)

    def finish_dir(self, rel, st, copier):
        """The walk leaves a directory: a live pass gives its copy the source's metadata and
        records it; the final pass mirrors deletions and gives metadata again only to the
        directories it opened."""
        path = join(self.staging, rel)
        if self.in_place:
            self.drop_extra(rel, copier)
            if rel not in self.opened:
                return
            self.touched.append(rel)
        copier.metadata.set_dir_meta(rel, st, path)
        if not self.in_place and self.trusts(st):
            self.dirs[rel] = stat_key(st)

    def keeper(self, verifier, copier):
        """keep, for the walk of the final pass (walk's `skip`)."""
        self.verifier, self.copier, self.kept = verifier, copier, 0
        return self.keep

    def keep(self, rel, item, src_dir):
        """Keep the staging's copy of a regular file unchanged since the last pass recorded it
        (True), or leave the file to the copy (False). Run inside the walk for every file of
        the tree while the service is down: one lstat (relative to the open directory
        `src_dir`) and a few comparisons; the copy's own per-file steps are skipped, its cancel
        check made every KEEP_CHECK_EVERY files."""
        name = item.name
        self.here.add(name)
        record = self.previous.records.get(rel)
        if record is None or not item.is_file(follow_symlinks=False):
            return False
        try:
            st = os.stat(name, dir_fd=src_dir, follow_symlinks=False)
        except OSError:
            return False
        if st.st_ino != record[0] or st.st_size != record[1] or \
                st.st_mtime_ns != record[2] or st.st_ctime_ns != record[3] or \
                not stat.S_ISREG(st.st_mode):
            return False
        if st.st_nlink > 1:  # its other names, unchanged too, are kept as well
            self.copier.hardlinks.setdefault((st.st_dev, st.st_ino), rel)
        progress = self.progress
        progress.bytes_copied += st.st_size
        progress.files_copied += 1
        self.records[rel] = record  # the last pass: nothing changes a record any more
        if not record[4] and self.verifier is not None:
            self.verifier.put(("file", rel, st))
        self.kept += 1
        if not self.kept % KEEP_CHECK_EVERY:
            self.copier.check()
        return True

    def clear(self, rel, copier):
        """Remove the staging's entry at `rel` (changed, or of another type): copied anew."""
        self.touched.append(rel)
        self.remove_entry(rel, copier)

    def remove_entry(self, rel, copier):
        path = join(self.staging, rel)
        try:
            self.open_dir(os.path.dirname(rel))
            if stat.S_ISDIR(os.lstat(path).st_mode):
                force_rmtree(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise copier.write_failure(rel, err) from err

    def drop_extra(self, rel, copier):
        """Mirror deletions: what the staging's directory holds and the source's no longer.
        Every name the source has must be there too: one the final pass kept and that is gone
        was deleted by something else (a cleaner of old files), and nothing else would notice."""
        try:
            names = os.listdir(join(self.staging, rel))
        except OSError as err:
            raise copier.write_failure(rel, err) from err
        wanted = self.names.pop(rel, set())
        extra = [name for name in names if name not in wanted]
        for name in extra:
            self.removed.append(join(rel, name) if rel else name)
            self.remove_entry(self.removed[-1], copier)
        if len(names) - len(extra) != len(wanted):
            missing = sorted(wanted.difference(names))[0]
            raise Failure("the copy of %s vanished from the staging %s while the move ran "
                          "(something else deletes files there) — nothing was deleted"
                          % (copier.src_show(join(rel, missing) if rel else missing),
                             show(self.staging)))

    def reuse_entry(self, rel, item, name, dst_dir, verifier):
        """reuse, from the directory entry's lstat: an unchanged file is linked without being
        opened (a file with further names goes through the copy's hard-link bookkeeping)."""
        if self.previous is None or rel not in self.previous.records:
            return False
        try:
            st = item.stat(follow_symlinks=False)
        except OSError:
            return False
        return st.st_nlink < 2 and stat.S_ISREG(st.st_mode) and \
            self.reuse(rel, name, st, dst_dir, verifier)

    def reuse(self, rel, name, st, dst_dir, verifier):
        """Link the previous pass's copy of `rel` if its source is unchanged since it was
        recorded; a copy whose content was not verified yet goes to the verifier."""
        record = self.previous.records.get(rel) if self.previous is not None else None
        if self.in_place or record is None or record[:4] != stat_key(st):
            return False
        try:
            os.link(join(self.previous.staging, rel), name, dst_dir_fd=dst_dir,
                    follow_symlinks=False)
        except OSError:
            return False  # copied like any other file
        self.progress.bytes_copied += st.st_size
        self.records[rel] = list(record)
        if not record[4] and verifier is not None:
            verifier.put(("file", rel, st))
        return True


class ServiceMove(object):
    """A move of a running service's data: live passes into the staging while it runs, then
    stop, the final delta, verify, switch (flush, staging into place, cutover), start, check,
    clean. A failure or cancel on the way leaves the service running from the source, or says
    loudly that it runs nowhere (end)."""

    def __init__(self, move):
        self.move, self.spec, self.plan = move, move.service, move.plan
        self.progress, self.check = move.progress, move.check
        self.passes = []  # LivePass, the final one last
        self.previous_path = self.plan.staging + b"-previous"
        self.down_clock = None  # monotonic time the stop command began
        self.stopped = self.stop_failed = self.switched = self.start_ran = False
        self.cutover_record = None

    def run(self):
        try:
            self.sync_live()
            self.stop_service()
            self.copy_final()
            self.switch()
            self.start_service()
        except Cancelled:
            return self.end(CANCELLED, "cancelled by %s" % (self.move.cancel.by or "a signal"),
                            EXIT_CANCELLED)
        except WalkError as exc:
            return self.end(ERROR, str(self.move.read_failure(exc.rel, exc.err)), EXIT_FAILED)
        except Failure as exc:
            return self.end(ERROR, str(exc), EXIT_FAILED)
        except Exception as exc:  # a bug: the service is still put back where it ran
            return self.end(ERROR, "internal error in the mover (%s: %s) — please report it"
                            % (type(exc).__name__, exc), EXIT_FAILED)
        return self.clean()

    # -- while the service runs ----------------------------------------------------------------

    def sync_live(self):
        """Live passes while the changed set shrinks (and, with --max-downtime, while the
        forecast is over it), at most LIVE_PASSES_MAX."""
        move = self.move
        move.publisher.watch_destination()
        move.set_phase(SYNCING)
        previous_changed = None
        while True:
            live = self.run_pass(tolerant=True)
            forecast = self.forecast(live)
            over = move.max_downtime is not None and forecast > move.max_downtime
            if live.number >= LIVE_PASSES_MAX:
                break
            shrinking = previous_changed is None or live.changed < previous_changed or \
                not live.complete
            if not over and (live.changed == 0 or not shrinking):
                break
            previous_changed = live.changed
        if over:
            raise Failure("after %d live passes the service would still be down about %.1f "
                          "seconds, more than --max-downtime %g (each pass still finds %d "
                          "changed files) — the service was not stopped; run the move when it "
                          "writes less, or allow more downtime"
                          % (live.number, forecast, move.max_downtime, live.changed))

    def run_pass(self, tolerant, verifier=None):
        """A live pass (`tolerant`) builds a fresh staging from the last one; the final pass
        updates the last one in place, touching only what changed (less downtime)."""
        move, progress = self.move, self.progress
        previous = self.passes[-1] if self.passes else None
        if previous is not None and tolerant:
            self.remove_previous()
            os.rename(self.plan.staging, self.previous_path)
            previous.staging = self.previous_path
        live = LivePass(len(self.passes) + 1, previous, tolerant, move,
                        in_place=not tolerant and previous is not None)
        self.passes.append(live)
        progress.service["pass"] = live.number
        progress.bytes_copied = progress.files_copied = 0  # each pass goes over the whole tree
        move.copier.hardlinks = {}
        move.copier.live = live
        try:
            move.copier.copy_tree(verifier)
        except WalkError:
            if not tolerant:
                raise
            live.complete = False  # what it copied is reused; the next pass does the rest
        finally:
            move.copier.live = None
        progress.bytes_total, progress.files_total = progress.bytes_copied, progress.files_copied
        if live.number == 1:
            move.resumption.release_dead_moves()
            self.plan.resume = None
        if tolerant:
            self.verify_live(live)
            self.remove_previous()
        live.seconds = time.monotonic() - live.started
        if tolerant:
            # On the disk now, while the service still runs: left to the final flush, the
            # whole copy would be written back while the service is down.
            move.publisher.flush_copy(live.staging)
        return live

    def verify_live(self, live):
        """With --verify checksum, compare what this pass copied now, while the service runs: a
        copy whose source is unchanged since (stat_key) is not read again after the stop."""
        if self.move.verify != "checksum":
            return
        verifier = Verifier(self.move)  # its comparison, not its thread
        for rel, st in live.copied:
            self.check()
            record = live.records.get(rel)
            if record is None:
                continue
            try:
                fs = open_readonly(join(self.move.src, rel), self.move.noatime)
                try:
                    fd = open_readonly(join(live.staging, rel), 0)
                    try:
                        verifier.compare_fds(rel, st, join(self.move.src, rel), fs, fd)
                    finally:
                        os.close(fd)
                    same = stat_key(os.fstat(fs)) == record[:4]
                finally:
                    os.close(fs)
            except (SourceChanged, OSError):
                same = False
            self.check()
            if same:
                record[4] = True
            else:
                del live.records[rel]  # changed meanwhile: copied again in the next pass

    def forecast(self, live):
        """The downtime to expect if the service were stopped now: the next pass is about as
        long as this one (a walk of the tree, links for what did not change, copies and
        verifies of what did), plus a guess for the stop, start and check commands."""
        seconds = round(live.seconds + RESTART_GUESS_SECONDS, 1)
        self.progress.service["forecastDowntimeSeconds"] = seconds
        self.move.set_phase(SYNCING)  # a line with the pass's figures
        return seconds

    # -- the service down ----------------------------------------------------------------------

    def stop_service(self):
        self.down_clock = time.monotonic()
        self.progress.service["downSince"] = round(time.time(), 3)
        self.stopped = True
        self.move.set_phase(STOPPING)
        try:
            run_service_command("stop", self.spec.stop, cancel_check=self.check)
        except Failure:
            if self.passes_check_once():
                self.stopped, self.stop_failed = False, True
                self.progress.service["downSince"] = None
            raise
        refuse_source_writers(os.path.realpath(self.move.src), Failure)

    def passes_check_once(self):
        status, tail = run_command(self.spec.check, CHECK_ATTEMPT_SECONDS)
        return status == 0 and (self.spec.check_output is None or
                                last_line(tail) == self.spec.check_output)

    def copy_final(self):
        """The final delta (the service is down): what changed since the last live pass is
        copied and verified; copies verified before and unchanged since are only linked."""
        move = self.move
        move.set_phase(COPYING)
        verifier = Verifier(move) if move.verify == "checksum" else None
        if verifier is not None:
            verifier.start()
        try:
            self.run_pass(tolerant=False, verifier=verifier)
            move.flush_warnings()
            move.set_phase(VERIFYING)
            if verifier is not None:
                verifier.finish()
            FinalCheck(move).run_over(self.passes[-1])
        finally:
            if verifier is not None:
                verifier.stop()

    def switch(self):
        move = self.move
        self.check()
        move.set_phase(SWITCHING)
        if self.plan.dst_is_mount:
            self.remove_previous()  # DST itself must hold nothing but the staging
        move.publisher.flush_copy(self.plan.staging)
        self.check()
        move.publisher.publish()
        self.switched = True
        move.publisher.flush_copy(None)
        self.cutover_record = self.spec.cutover.apply(move.src, move.dst, move.move_id)
        self.journal_cutover()

    def journal_cutover(self):
        """Keep the cutover's record in a detached move's journal: a worker killed later
        leaves words (reap_dead_worker) that name where the old data went."""
        if self.move.journal_dir is None:
            return
        with contextlib.suppress(OSError):  # the words are then only less precise
            write_atomically(os.path.join(self.move.journal_dir, CUTOVER_RECORD),
                             json.dumps(self.cutover_record, ensure_ascii=True).encode("ascii"))

    def start_service(self):
        self.move.set_phase(STARTING)
        self.start_ran = True
        run_service_command("start", self.spec.start, cancel_check=self.check)
        self.move.set_phase(CHECKING)
        wait_until_healthy(self.spec.check, self.spec.check_timeout, self.check,
                           self.spec.check_output)
        self.came_up("destination")

    def came_up(self, where):
        self.progress.service["downSince"] = None
        self.progress.service_end["downtimeSeconds"] = round(
            time.monotonic() - self.down_clock, 3)
        self.progress.service_end["serviceRunsFrom"] = where

    # -- the end -------------------------------------------------------------------------------

    def old_copy(self):
        """Where the old data is once switched: SRC, or the directory renamed aside."""
        if self.cutover_record is not None and self.cutover_record.get("cutover") == "symlink":
            return wire_path(self.cutover_record["aside"])
        return self.move.src

    def clean(self):
        move = self.move
        self.remove_previous()
        old = self.old_copy()
        cleaner = move.cleaner
        cleaner.src = old
        cleaner.src_show = lambda rel: show(join(old, rel))
        cleaner.against = self.passes[-1].records
        self.refuse_old_copy_in_use(old)
        self.journal_final_records()
        try:
            cleaner.clean_source()  # returns only once complete
        except Cancelled:
            why = "cancelled by %s" % (move.cancel.by or "a signal")
            return move.finish(CANCELLED, "%s while removing the old copy: the service runs from "
                               "%s, which is complete and verified; %s still holds part of the "
                               "old data — delete it by hand (rm -rf %s)"
                               % (why, show(move.dst), show(old), show(old)), EXIT_CANCELLED)
        if move.journal_dir is not None:  # nothing left to check against them
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(move.journal_dir, FINAL_RECORDS))
        return EXIT_OK

    def journal_final_records(self):
        """Keep the final pass's records in a detached move's journal before cleaning: the
        service writes into DST by now, so a move that finishes this one's cleaning checks the
        old copy against them (service_final_records), never against DST."""
        if self.move.journal_dir is None:
            return
        records = dict((show(rel), record) for rel, record in self.passes[-1].records.items())
        with contextlib.suppress(OSError):  # then such a move removes nothing, and says so
            write_atomically(os.path.join(self.move.journal_dir, FINAL_RECORDS),
                             json.dumps(records, ensure_ascii=True).encode("ascii"))

    def refuse_old_copy_in_use(self, old):
        """A program writing under the old copy after the check passed: the service still uses
        the old path (a cutover `none` with a start command that names SRC, a process the stop
        left behind). Removing it would delete files under it: both copies are kept."""
        writers = source_writers(os.path.realpath(old))
        if not writers:
            return
        self.progress.service_end["serviceRunsFrom"] = "source"
        dst = show(self.move.dst)
        raise Failure("%s: the service still uses the old path %s after the switch (its start "
                      "command or cutover does not point it to %s), so nothing was removed — "
                      "both copies are kept: %s, in use, and %s, the new copy, not in use; fix "
                      "the service's start command or cutover, empty %s, then run the move "
                      "again" % (writers_words(writers), show(old), dst, show(old), dst, dst))

    def remove_previous(self):
        if os.path.lexists(self.previous_path):
            try:
                force_rmtree(self.previous_path)
            except OSError as err:
                self.move.warn("previous", "the copy of an earlier pass could not be removed "
                               "(%s): delete %s by hand" % (words(err),
                                                           show(self.previous_path)), b"")

    def end(self, phase, why, status):
        """A failure or cancel before the service passed its check on DST: put it back."""
        move = self.move
        move.cancel.stop_threads()
        move.progress.current = None
        if not self.switched:
            self.remove_previous()
            gone = move.remove_staging()
            if not self.stopped:
                text = "%s; nothing was changed: the service %s and the source is untouched%s" % (
                    why, "still passes its check, so it was left running" if self.stop_failed
                    else "was not touched", gone or " (the partial copy was removed)")
            else:
                text = why + self.restart_on_source(gone or "; the partial copy was removed")
            return move.finish(phase, text, status, STATE_SOURCE)
        return move.finish(phase, why + self.undo_switch(), status, STATE_BOTH)

    def restart_on_source(self, gone):
        move = self.move
        try:
            if not self.passes_check_once():
                run_service_command("start", self.spec.start)
                wait_until_healthy(self.spec.check, self.spec.check_timeout, None,
                                   self.spec.check_output)
        except Failure as exc:
            self.progress.service_end["serviceRunsFrom"] = "nowhere"
            return ("; THE SERVICE IS NOT RUNNING: it was stopped, and starting it again on the "
                    "untouched source failed (%s) — the data is whole in %s, untouched since "
                    "the stop%s; start the service by hand" % (exc, show(move.src), gone))
        self.came_up("source")
        return "; the service was started again on the untouched source %s%s" % (
            show(move.src), gone)

    def stop_again(self):
        """Stop the service started on DST; a stop that fails is fine if it is not running
        (its start failed), not if it still passes its check."""
        try:
            run_service_command("stop", self.spec.stop)
        except Failure:
            if self.passes_check_once():
                raise

    def undo_switch(self):
        """Start or check failed after switching: stop it, undo the cutover, start it on the
        source (not cleaned yet), check it. The copy stays at DST."""
        move, undone = self.move, False
        try:
            if self.start_ran:
                self.stop_again()
            if self.cutover_record is not None:
                undo_cutover(self.cutover_record)
            undone = True
            run_service_command("start", self.spec.start)
            wait_until_healthy(self.spec.check, self.spec.check_timeout, None,
                               self.spec.check_output)
        except Failure as exc:
            self.progress.service_end["serviceRunsFrom"] = "nowhere"
            return ("; THE SERVICE IS NOT RUNNING: putting it back on the old path failed (%s) "
                    "— %s holds the data as it was at the stop, whole; %s holds the verified "
                    "copy (and whatever the service wrote there while it ran); the cutover %s; "
                    "start the service by hand on one of them"
                    % (exc, show(move.src) if undone or self.cutover_record is None
                       else show(self.old_copy()), show(move.dst),
                       "was undone" if undone else "was NOT undone"))
        self.came_up("source")
        return ("; the service runs from the old path %s again; the new copy is at %s (not "
                "used; the service may have written to it while it ran from there) — to run "
                "the move again, empty %s first" % (show(move.src), show(move.dst),
                                                   show(move.dst)))


# ----------------------------------------------------------------------------------------------
# Detached moves and their journal
#
# `start` runs a move in a worker detached from the SSH session (setsid and a double fork, stdio
# on /dev/null), so it runs to its end whatever happens to the admin's connection. Everything the
# worker says goes into a journal per move:
#
#     <root>/moves/<id>/events.jsonl  append-only: the very lines `move` would print
#     <root>/moves/<id>/state.json    the latest state, replaced atomically (what `list` reads)
#     <root>/moves/<id>/worker.lock   flock'ed by the worker for its whole life
#     <root>/moves/<id>/cancel        created by `cancel ID`; the worker polls for it
#     <root>/moves/<id>/copied.jsonl  the files whose copy in staging is finished (Recorder)
#     <root>/moves/<id>/final.json    a service move's final pass records, while it cleans
#     <root>/moves/<id>/reserve       room kept for the last words when the journal's disk fills
#     <root>/locks/<sha256 of SRC>.lock  flock'ed by the worker: one move per source at a time
#
# A free worker.lock means the worker is dead — the kernel drops a flock when its holder dies, so
# there is no pid to re-check and no pid-reuse to guess about. `attach` and `list` then finish the
# journal with an error event that says where the data is.

JOURNAL_KEEP = 50
CUTOVER_RECORD = b"cutover.json"  # a service move's cutover, once applied (ServiceMove)
FINAL_RECORDS = b"final.json"  # a service move's final pass records, kept for its cleaning
JOURNAL_POLL_SECONDS = 0.1
CANCEL_POLL_SECONDS = 0.25
STATE_WRITE_SECONDS = 1.0
RECORD_SECONDS = 2.0
# A move's journal grows by a few KiB a minute, plus a line a copied file while it copies: a
# journal disk with less room than this is refused before anything is written, and the reserve
# is given up for the move's last words when the disk fills anyway.
JOURNAL_MIN_FREE = 8 * 1024 * 1024
JOURNAL_RESERVE = 256 * 1024
MOVE_ID_CHARS = frozenset("0123456789abcdef")


def service_final_records(dead, dst):
    """The final pass's records a dead service move kept for its cleaning (journal_final_records):
    rel -> [inode, size, mtime, ctime, verified]. Without them nothing of the old copy can be
    checked, so nothing is removed: a Failure says what is left."""
    try:
        with open(os.path.join(dead.mdir, FINAL_RECORDS), "rb") as handle:
            records = json.loads(handle.read().decode("ascii"))
        return dict((rel.encode("utf-8", "surrogateescape"), record)
                    for rel, record in records.items())
    except (OSError, ValueError, AttributeError, UnicodeError):
        src = dead.state.get("src")
        raise Failure("the service runs from %s, which is complete and verified; %s holds what "
                      "is left of the old copy, but the records of its final copy are missing "
                      "from the journal of move %s, so it cannot be checked file by file and "
                      "nothing was removed — delete it by hand when you are sure the service "
                      "no longer needs it (rm -rf %s)" % (show(dst), src, dead.move_id, src)
                      ) from None


def journal_root():
    override = os.environ.get("SERVERMOVE_JOURNAL_DIR")
    if override:
        return os.fsencode(override)
    if os.geteuid() == 0:
        return b"/var/lib/servermove"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    return os.path.join(os.fsencode(base), b"servermove")


def move_dir(move_id):
    if not move_id or not set(move_id) <= MOVE_ID_CHARS or len(move_id) > 32:
        raise Refused("%r is not a move id — list the moves with: servermove moves TARGET"
                      % move_id)
    path = os.path.join(journal_root(), b"moves", move_id.encode())
    if not os.path.isdir(path):
        raise Refused("no move %s on this server — list the moves with: servermove moves TARGET"
                      % move_id)
    return path


def write_atomically(path, payload):
    tmp = path + b".tmp"
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_state(mdir):
    try:
        with open(os.path.join(mdir, b"state.json"), "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError):
        return None


def try_lock(path):
    """The fd holding an exclusive flock on `path`, or None when someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def check_journal_room(root):
    """Refuse a move whose journal could not be written: without it nobody could follow the
    move, nor know where the data is should the worker die."""
    vfs = os.statvfs(root)
    free = vfs.f_bavail * vfs.f_frsize
    if free < JOURNAL_MIN_FREE or (vfs.f_files and vfs.f_favail < 64):
        raise Refused("the filesystem of the move journal %s is full (%s free) — free some space "
                      "there and start the move again; nothing was changed"
                      % (show(root), human(free)))


def journal_refusal(err):
    """A journal that cannot be set up, in words: what to do, and that nothing was changed."""
    hint = "fix its permissions"
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space there"
    return "cannot use the move journal in %s: %s — %s; nothing was changed" % (
        show(journal_root()), words(err), hint)


def lock_source(root, src, holder):
    """The fd of the flock that makes a move the only one of the real `src`, with `holder` (what
    a refused move is told about it) written in; Refused when another move holds it."""
    os.makedirs(os.path.join(root, b"locks"), mode=0o700, exist_ok=True)
    real_src = os.path.realpath(src)
    lock_path = os.path.join(root, b"locks", sha256_hex(real_src).encode() + b".lock")
    source_lock = try_lock(lock_path)
    if source_lock is None:
        with open(lock_path, "rb") as handle:
            other = handle.read().decode("ascii", "replace").strip()
        if not other:  # its id could not be written (a full journal disk)
            raise Refused("%s is already being moved by another move: wait for it to end"
                          % show(src))
        if other.endswith(" foreground"):  # `mover.py move`: no journal to follow
            raise Refused("%s is already being moved (move %s, run in the foreground): wait "
                          "for it to end" % (show(src), other.split()[0]))
        raise Refused("%s is already being moved (move %s): wait for it, or follow it with: "
                      "servermove attach TARGET %s" % (show(src), other, other))
    try:
        os.ftruncate(source_lock, 0)
        os.write(source_lock, holder.encode("ascii"))
    except OSError:
        pass  # a full journal disk: the lock holds all the same, a refusal names no move
    return source_lock


def sha256_hex(data):
    # hashlib loads OpenSSL, a noticeable part of a foreground rename's time. The builtin module
    # is the same SHA-256 (named _sha2 from Python 3.12 on).
    try:
        from _sha256 import sha256
    except ImportError:
        try:
            from _sha2 import sha256
        except ImportError:
            from hashlib import sha256
    return sha256(data).hexdigest()


def write_all(fd, payload, on_full=None):
    """Write the whole of `payload` (os.write may write less). When the disk is full, on_full()
    may make room and say so; otherwise the error stands."""
    view = memoryview(payload)
    done = 0
    while done < len(view):
        try:
            done += os.write(fd, view[done:])
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT) or on_full is None or \
                    not on_full(err):
                raise


class Journal:
    """An Emitter sink: appends each line to events.jsonl and keeps state.json current."""

    def __init__(self, mdir, state):
        self.mdir = mdir
        self.state = state
        self.move = None  # set once the Move exists: its staging path goes into the state
        self.events = os.open(os.path.join(mdir, b"events.jsonl"),
                              os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                              0o644)
        self._state_written = 0.0
        self._phase = None  # state["phase"] starts as calculating, before any event
        self.full = None  # the error that filled the journal's disk, once it did
        self.keep_reserve()

    def keep_reserve(self):
        fd = os.open(os.path.join(self.mdir, b"reserve"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, JOURNAL_RESERVE)
            except OSError as err:
                if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                write_all(fd, bytes(JOURNAL_RESERVE))
        finally:
            os.close(fd)

    def give_up_reserve(self, err):
        """The journal's disk is full: free the reserve for the move's last words and stop the
        move (nobody could follow it, nor learn its end). Say whether there is room now."""
        if self.full is not None:
            return False
        self.full = err
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.mdir, b"reserve"))
        if self.move is not None:
            # The failure the main thread raises at its next check (as for a verify failure).
            self.move.cancel.fail(Failure(
                "the move journal in %s could not be written (%s) — the move was stopped; free "
                "some space there and run the move again" % (show(os.path.dirname(os.path.dirname(
                    self.mdir))), words(err))))
        return True

    def __call__(self, line, subject, data):
        try:
            self.record(line, subject, data)
        except OSError as err:
            self.give_up_reserve(err)  # a line that cannot be kept even then is lost

    def record(self, line, subject, data):
        write_all(self.events, line.encode("ascii"), self.give_up_reserve)
        state = self.state
        state["lastSeq"] = data.get("seq", state.get("lastSeq", 0))
        phase_changed = False
        if subject == "move.plan":
            for key in ("method", "bytesTotal", "filesTotal", "dirsTotal"):
                state[key] = data.get(key)
        elif subject == "move.progress":
            phase = data.get("phase")
            phase_changed = phase != self._phase
            self._phase = phase
            for key in ("phase", "bytesTotal", "bytesCopied", "filesTotal", "filesCopied",
                        "bytesVerified", "filesVerified", "error", "dataState", "method",
                        "bytesReused", "downtimeSeconds", "serviceRunsFrom", "oldCopyPath",
                        "oldCopyDueAt"):
                if key in data:
                    state[key] = data[key]
            if data.get("pass") is not None:
                state["passes"] = data["pass"]
            if phase_changed:
                entry = {"ts": data.get("ts"), "phase": phase}
                if data.get("error"):
                    entry["error"] = data["error"]
                state["timeline"].append(entry)
            if phase in TERMINAL:
                state["finishedAt"] = data.get("ts")
        if self.move is not None and self.move.plan.staging is not None:
            state["staging"] = show(self.move.plan.staging)
        now = time.monotonic()
        if phase_changed or subject == "move.plan" or now - self._state_written >= \
                STATE_WRITE_SECONDS:
            if phase_changed:
                os.fsync(self.events)  # phase changes survive a reboot
            self.save()

    def save(self):
        self._state_written = time.monotonic()
        payload = json.dumps(self.state, ensure_ascii=True).encode("ascii")
        path = os.path.join(self.mdir, b"state.json")
        try:
            write_atomically(path, payload)
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT) or not self.give_up_reserve(err):
                raise
            write_atomically(path, payload)

    def close(self):
        """The move has ended: what it recorded for a resume goes once its staging is gone."""
        with contextlib.suppress(OSError):
            os.close(self.events)
        staging = self.move.plan.staging if self.move is not None else None
        if staging is None or not os.path.lexists(staging):
            for name in (b"copied.jsonl", b"reserve"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.mdir, name))


class Recorder:
    """Writes down in the journal (copied.jsonl) each file whose copy in staging is finished,
    so that a move cut short resumes without copying it again.

    A file is added only once its copy is written whole with its metadata set, and written down
    in batches, each after a flush of the staging's filesystem: a record never names a copy that
    a crash could have cut short or a reboot could have lost. Nothing is written down when that
    flush fails: the files are then copied again, which is only slower."""

    def __init__(self, path, move):
        self.path = path
        self.move = move
        self.pending = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = None
        self.fd = None
        self.broken = False
        # Its own descriptor on the destination's filesystem, opened with the move's (watch):
        # a write-back error is reported once per descriptor, so sharing the move's would hide
        # from the move's final flush an error that this flush saw first.
        self.watch_fd = None

    def watch(self, path):
        with contextlib.suppress(OSError):
            self.watch_fd = os.open(path, DIR_FLAGS)

    def add(self, rel, st):
        with self.lock:
            self.pending.append((rel, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="recorder")
            self.thread.daemon = True
            self.thread.start()

    def _run(self):
        while not self.stopping.wait(RECORD_SECONDS):
            self.write_down()

    def write_down(self):
        with self.lock:
            batch, self.pending = self.pending, []
        if not batch or self.broken or self.watch_fd is None:
            return
        try:
            if not flush_filesystem(self.watch_fd) or not syncfs_reports_errors():
                self.broken = True  # no proof the copies are on disk: nothing is written down
                return
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            write_all(self.fd, "".join(
                json.dumps([show(rel), ino, size, mtime, ctime]) + "\n"
                for rel, ino, size, mtime, ctime in batch).encode("ascii"))
        except OSError:
            self.broken = True  # a full journal disk: the rest is copied again on a resume

    def stop(self):
        """Write down what is pending and stop: called when copying ends."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        self.write_down()
        for name in ("fd", "watch_fd"):
            if getattr(self, name) is not None:
                os.close(getattr(self, name))
                setattr(self, name, None)


class DeadMove:
    """A journaled move of the same SRC and DST that ended without finishing and was not taken
    over: its staging (with the records of the copies finished in it) for a copy to resume, or,
    once its copy was published at DST, a cleaning to finish."""

    def __init__(self, mdir, state):
        self.mdir = mdir
        self.state = state
        self.move_id = state.get("moveId")
        staging = state.get("staging")
        self.staging = os.fsencode(staging) if staging else None
        self.records = {}

    def resumable(self):
        """Whether its staging is there to take over: the source was still whole."""
        return (self.state.get("dataState") == STATE_SOURCE and self.staging is not None
                and os.path.basename(self.staging).startswith(STAGING_PREFIX)
                and os.path.isdir(self.staging) and not os.path.islink(self.staging))

    def published(self):
        """Whether its copy was complete, verified, put at DST and in use, so that only the
        cleaning is left: its timeline reached cleaning (a plain move enters it only once the
        flush after the rename succeeded, a service move only once the check passed on DST)."""
        return reached_cleaning(self.state) and \
            not (self.staging is not None and os.path.lexists(self.staging))

    def left_copy_at_destination(self):
        """Whether it left a copy at DST that is not in use, the source still whole: it ended
        with `both` (a service rolled back, a flush after the rename that failed, a worker
        killed after its copy was put in place) without reaching cleaning."""
        return self.state.get("dataState") == STATE_BOTH and not reached_cleaning(self.state) \
            and not self.resumable()

    def load_records(self):
        try:
            with open(os.path.join(self.mdir, b"copied.jsonl"), "rb") as handle:
                for line in handle:
                    try:
                        rel, ino, size, mtime, ctime = json.loads(line.decode("ascii"))
                        self.records[rel.encode("utf-8", "surrogateescape")] = (
                            ino, size, mtime, ctime)
                    except (ValueError, TypeError, AttributeError, UnicodeError):
                        continue  # a line cut short by the kill
        except OSError:
            pass  # no records: everything is copied again

    def matches(self, rel, st, forget=False):
        """Whether its copy of `rel` was finished while the source was exactly as it is now."""
        record = self.records.pop(rel, None) if forget else self.records.get(rel)
        return record == (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def mark_taken_over(self, move_id):
        fd = try_lock(os.path.join(self.mdir, b"worker.lock"))
        if fd is None:
            return
        try:
            state = read_state(self.mdir) or self.state
            state["takenOverBy"] = move_id
            if state.get("error"):  # what `list` shows: no longer "run it again"
                state["error"] += " [since taken over by move %s, which ran it again]" % move_id
            write_atomically(os.path.join(self.mdir, b"state.json"),
                             json.dumps(state, ensure_ascii=True).encode("ascii"))
            for name in (b"copied.jsonl", FINAL_RECORDS):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.mdir, name))
        except OSError:
            pass  # still listed as a candidate; its staging is gone, so nothing is taken again
        finally:
            os.close(fd)


def reached_cleaning(state):
    """Whether a journaled move's timeline reached its cleaning phase."""
    return any(entry.get("phase") == CLEANING for entry in state.get("timeline") or [])


def dead_moves_of(real_src, real_dst):
    """The journaled copy-moves of real_src to real_dst that ended without finishing (a dead
    worker is reaped first) and were not taken over, newest first."""
    moves = os.path.join(journal_root(), b"moves")
    try:
        names = os.listdir(moves)
    except OSError:
        return []
    found = []
    for name in names:
        mdir = os.path.join(moves, name)
        state = read_state(mdir) if not name.startswith(b".") else None
        if not state or state.get("takenOverBy") or state.get("method") != "copy" or \
                state.get("phase") == COMPLETE:
            continue
        src, dst = os.fsencode(state.get("src") or ""), os.fsencode(state.get("dst") or "")
        real = os.path.join(os.path.realpath(os.path.dirname(dst)), os.path.basename(dst))
        if os.path.realpath(src) != real_src or real != real_dst:
            continue
        state, alive = settle(mdir)
        if state is not None and not alive and state.get("phase") in (ERROR, CANCELLED):
            found.append(DeadMove(mdir, state))
    found.sort(key=lambda m: m.state.get("startedAt") or 0, reverse=True)
    return found


def prune_journals(root, keep):
    """Keep the newest `keep` moves' journals; never touch a running one. One pruner at a time
    (starts run concurrently), and a journal still being set up has a dot name and is skipped."""
    moves = os.path.join(root, b"moves")
    guard = os.open(os.path.join(root, b"locks", b"prune.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        entries = []
        for name in os.listdir(moves):
            if not name.startswith(b"."):
                mdir = os.path.join(moves, name)
                entries.append(((read_state(mdir) or {}).get("startedAt") or 0, mdir))
        entries.sort(reverse=True)
        for _, mdir in entries[keep:]:
            fd = try_lock(os.path.join(mdir, b"worker.lock"))
            if fd is not None:
                force_rmtree(mdir)
                os.close(fd)
    finally:
        os.close(guard)


def start_command(emitter, server_name, src, dst, verify, bwlimit, bwlimit_text, started_by,
                  service=None, max_downtime=None, keep_old=None):
    root = journal_root()
    for sub in (b"moves", b"locks"):
        os.makedirs(os.path.join(root, sub), mode=0o700, exist_ok=True)
    check_journal_room(root)
    prune_journals(root, JOURNAL_KEEP - 1)
    move_id = os.urandom(6).hex()
    source_lock = lock_source(root, src, move_id)
    # Built under a dot name and renamed into place whole: `list` and other starts' pruning
    # never see a journal without its lock held and its state written.
    building = os.path.join(root, b"moves", b"." + move_id.encode())
    os.mkdir(building, 0o700)
    worker_lock = try_lock(os.path.join(building, b"worker.lock"))
    state = {"moveId": move_id, "serverName": server_name, "src": show(src), "dst": show(dst),
             "verify": verify, "bwlimit": bwlimit_text, "startedAt": round(time.time(), 3),
             "startedBy": started_by,
             "finishedAt": None, "phase": CALCULATING, "bytesTotal": 0, "bytesCopied": 0,
             "filesTotal": 0, "filesCopied": 0, "error": None, "dataState": None,
             "timeline": [], "pid": None, "exitStatus": None, "lastSeq": 0}
    if service is not None:
        state.update({"cutover": cutover_text(service.cutover), "passes": 0,
                      "downtimeSeconds": None, "serviceRunsFrom": "source",
                      "serviceStart": command_text(service.start)})
    journal = Journal(building, state)
    journal.save()
    mdir = os.path.join(root, b"moves", move_id.encode())
    os.rename(building, mdir)
    journal.mdir = mdir
    sys.stdout.flush()
    child = os.fork()
    if child == 0:
        # The first child: a session of its own, then fork again so the worker is no session
        # leader and can never get a controlling terminal back. Its exit frees `start` at once.
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        status = EXIT_FAILED
        try:
            status = run_worker(server_name, src, dst, verify, bwlimit, move_id, journal,
                                service, max_downtime, keep_old=keep_old)
        finally:
            os._exit(status)
    os.waitpid(child, 0)
    os.close(worker_lock)  # the worker holds its own copies of both locks
    os.close(source_lock)
    emitter.emit("move.started", {"moveId": move_id, "journal": show(mdir)}, sequenced=False)
    return EXIT_OK


def run_worker(server_name, src, dst, verify, bwlimit, move_id, journal, service=None,
               max_downtime=None, keep_old=None):
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the SSH session going away means nothing now
    emitter = Emitter(None)
    emitter.sinks.append(journal)
    journal.state["pid"] = os.getpid()
    move = Move(emitter, server_name, src, dst, verify, bwlimit, False, move_id=move_id,
                service=service, max_downtime=max_downtime)
    move.keep_old = keep_old
    move.cancel_file = os.path.join(journal.mdir, b"cancel")
    move.journal_dir = journal.mdir
    move.recorder = Recorder(os.path.join(journal.mdir, b"copied.jsonl"), move)
    journal.move = move
    for name in ("SIGINT", "SIGTERM"):
        signal.signal(getattr(signal, name), move.on_signal)
    status = move.run()
    move.resumption.stop_recording()
    journal.state["exitStatus"] = status
    with contextlib.suppress(OSError):
        journal.save()
    journal.close()
    return status


def reap_dead_worker(mdir, state):
    """Finish the journal of a worker that died without a last word (SIGKILL, reboot): one error
    event that says where the data is. The caller holds the worker lock."""
    phase = state.get("phase") or CALCULATING
    src, dst = os.fsencode(state["src"]), os.fsencode(state["dst"])
    staging = state.get("staging")
    what = "the mover stopped without finishing (killed, or the server restarted) while %s" % phase
    again = "run the same move again to finish it"
    aside = journaled_aside(mdir)
    if phase == CLEANING and aside is not None:
        data_state = STATE_DESTINATION
        text = ("%s: the service runs from %s, which is complete and verified (%s is a "
                "symlink to it); the old copy, perhaps partly removed, is in %s — delete it "
                "when you are sure you no longer need it (rm -rf %s)"
                % (what, show(dst), show(src), show(aside), show(aside)))
    elif phase == CLEANING:
        data_state = STATE_DESTINATION
        text = ("%s: %s is complete and verified, but %s may still hold part of the old data — "
                "%s (each file left in the source is checked against its copy, then removed)"
                % (what, show(dst), show(src), again))
    elif staging and os.path.lexists(os.fsencode(staging)):
        data_state = STATE_SOURCE
        text = ("%s: the source %s is untouched; a partial copy was left in %s — %s (what it "
                "holds is reused), or delete it (rm -rf %s)" % (what, show(src), staging, again,
                                                               staging))
    elif state.get("method") == "copy" and phase in (VERIFYING, SWITCHING, STARTING, CHECKING):
        data_state = STATE_BOTH  # the source is whole: cleaning was never reached
        if state.get("cutover") is None:
            text = ("%s: the source %s is whole; %s may hold this move's copy, not in use "
                    "(perhaps not flushed) — empty %s, then run the same move again"
                    % (what, show(src), show(dst), show(dst)))
        else:
            where = show(src) if aside is None else "%s (%s is now a symlink to %s)" % (
                show(aside), show(src), show(dst))
            text = ("%s: the source %s is whole as it was at the stop; %s may hold this move's "
                    "copy (the service may have written to it if it was started there) — once "
                    "the service runs from %s again, empty %s first, then run the same move "
                    "again" % (what, where, show(dst), show(src), show(dst)))
    elif os.path.lexists(dst) and not os.path.lexists(src):
        data_state = STATE_DESTINATION
        text = "%s: the data is at %s" % (what, show(dst))
    else:
        data_state = STATE_SOURCE
        text = "%s: nothing was changed — the source %s is untouched" % (what, show(src))
    text += service_left_words(state, phase)
    last = last_event_of(mdir)  # fresher than state.json, which is written once a second
    if last.get("workerGone"):  # reaped before, but the state could not be saved then
        return repaired_state(mdir, state, last)
    counts = dict((key, last.get(key, state.get(key, 0))) for key in (
        "bytesTotal", "bytesCopied", "filesTotal", "filesCopied", "bytesVerified",
        "filesVerified"))
    data = progress_data(state.get("serverName", ""), ERROR, counts, state["moveId"], text,
                         data_state)
    data.update(workerGone=True, seq=(last.get("seq") or 0) + 1, diedIn=phase)
    with contextlib.suppress(OSError):  # the dead worker's room for its last words
        os.unlink(os.path.join(mdir, b"reserve"))
    line = json_line("move.progress", data)
    with contextlib.suppress(OSError):  # a full disk: the next reader tries again
        append_whole_line(os.path.join(mdir, b"events.jsonl"), line.encode("ascii"))
    return repaired_state(mdir, state, data)


def journaled_aside(mdir):
    """The directory a service move's symlink cutover renamed the old data to, if its journal
    kept that cutover and the directory is still there (else None)."""
    try:
        with open(os.path.join(mdir, CUTOVER_RECORD), "rb") as handle:
            record = json.loads(handle.read().decode("ascii"))
        aside = os.fsencode(record["aside"]) if record.get("cutover") == "symlink" else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return aside if aside is not None and os.path.lexists(aside) else None


def service_left_words(state, phase):
    """What a service move's dead worker left of the service. A reader (list, attach) never
    starts it: it only says how."""
    if state.get("cutover") is None:
        return ""
    start = state.get("serviceStart")
    if phase == STOPPING:  # killed while the stop command ran, or just after
        return ("; THE SERVICE MAY BE STOPPED: this move was stopping it and did not start it "
                "again — check it, and if it is stopped, start it on the source by hand (`%s`)"
                % start)
    if phase in (COPYING, VERIFYING):
        return ("; THE SERVICE IS STOPPED: this move stopped it and did not start it again — "
                "start it on the source by hand (`%s`)" % start)
    if phase in (SWITCHING, STARTING, CHECKING):
        return ("; THE SERVICE MAY BE STOPPED: this move stopped it and was repointing it to %s "
                "(cutover %s) — see which of the two copies it now points to, then start it by "
                "hand (`%s`)" % (state["dst"], state["cutover"], start))
    return ""


def append_whole_line(path, line):
    """Append `line` durably, or not at all: on a full disk a line cut short would be no
    repair, and the next reader would append another."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        try:
            write_all(fd, line)
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def repaired_state(mdir, state, data):
    """The state after the reaper's event `data`, saved when the disk lets us (else the next
    reader saves it: the event itself is never written twice)."""
    state.update(phase=ERROR, error=data["error"], dataState=data["dataState"],
                 finishedAt=data["ts"], exitStatus=EXIT_FAILED, lastSeq=data["seq"],
                 bytesCopied=data.get("bytesCopied", 0), filesCopied=data.get("filesCopied", 0))
    timeline = state.setdefault("timeline", [])
    if not timeline or timeline[-1].get("phase") != ERROR:
        timeline.append({"ts": data["ts"], "phase": ERROR, "error": data["error"]})
    with contextlib.suppress(OSError):
        write_atomically(os.path.join(mdir, b"state.json"),
                         json.dumps(state, ensure_ascii=True).encode("ascii"))
    return state


def last_event_of(mdir):
    """The data of the journal's last readable sequenced line ({} when there is none)."""
    last = {}
    with open(os.path.join(mdir, b"events.jsonl"), "rb") as handle:
        for line in handle:
            try:
                data = json.loads(line.decode("utf-8"))["data"]
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by the crash
            if isinstance(data, dict) and data.get("seq"):
                last = data
    return last


def settle(mdir):
    """The move's state, with a dead worker's journal finished first. (state, alive)"""
    state = read_state(mdir)
    if state is None:
        return None, False
    try:
        fd = try_lock(os.path.join(mdir, b"worker.lock"))
    except FileNotFoundError:
        return None, False  # pruned as we looked
    if fd is None:
        return state, True
    try:
        state = read_state(mdir) or state  # the worker may have written its last word
        if state.get("phase") not in TERMINAL:
            with contextlib.suppress(OSError):  # a journal that cannot be repaired is read as is
                state = reap_dead_worker(mdir, state)
    finally:
        os.close(fd)
    return state, False


def attach_command(emitter, move_id, from_seq):
    """Stream a move's journal from `from_seq` and follow it to its end.

    Exits with the move's own exit status, or as soon as our stdout is gone (the client left;
    the move goes on)."""
    mdir = move_dir(move_id)
    out = emitter.stream
    pending = b""
    last = None
    with open(os.path.join(mdir, b"events.jsonl"), "rb") as events:
        while True:
            chunk = events.read(1 << 16)
            if not chunk:
                state, alive = settle(mdir)
                if alive or state is None:
                    time.sleep(JOURNAL_POLL_SECONDS)
                    continue
                chunk = events.read()  # a dead worker's last words, or the reaper's
                if not chunk:
                    return state.get("exitStatus") or EXIT_FAILED
            pending += chunk
            lines = pending.split(b"\n")
            pending = lines.pop()
            for line in lines:
                try:
                    data = json.loads(line.decode("utf-8"))["data"]
                except (ValueError, KeyError, TypeError):
                    continue
                if (data.get("seq") or 0) >= from_seq:
                    try:
                        out.write(line + b"\n")
                        out.flush()
                    except (OSError, ValueError):
                        return EXIT_FAILED
                last = data
            if last is not None and last.get("phase") in TERMINAL and not pending:
                state = read_state(mdir) or {}
                if state.get("exitStatus") is None:
                    # The terminal line is written before the exit status: wait for it briefly.
                    time.sleep(JOURNAL_POLL_SECONDS)
                    state = read_state(mdir) or {}
                status = state.get("exitStatus")
                if status is None:
                    status = {COMPLETE: EXIT_OK, CANCELLED: EXIT_CANCELLED}.get(
                        last["phase"], EXIT_FAILED)
                return status


def cancel_command(emitter, move_id):
    mdir = move_dir(move_id)
    state, alive = settle(mdir)
    if alive:
        # A file, not a signal: it reaches the worker whoever we run as, and cannot hit a
        # process that merely reused the worker's pid.
        with open(os.path.join(mdir, b"cancel"), "wb"):
            pass
    emitter.emit("move.cancel-requested", {"moveId": move_id, "running": alive,
                                           "phase": (state or {}).get("phase")},
                 sequenced=False)
    return EXIT_OK


def list_command(emitter):
    moves = os.path.join(journal_root(), b"moves")
    listed = []
    for name in os.listdir(moves) if os.path.isdir(moves) else []:
        if name.startswith(b"."):
            continue  # a journal still being set up
        state, alive = settle(os.path.join(moves, name))
        if state is not None and state.get("exitStatus") != EXIT_REFUSED:  # a refusal: no move
            state["alive"] = alive
            listed.append(state)
    listed.sort(key=lambda s: s.get("startedAt") or 0, reverse=True)
    for state in listed:
        emitter.emit("move.listed", state, sequenced=False)
    return EXIT_OK


# ----------------------------------------------------------------------------------------------
# Old copies kept (keep_old)
#
# With --keep-old SECONDS the cleaning step does not remove the old copy: it renames it aside
# beside the source (the name a symlink cutover gives it; a symlink cutover has already put it
# there), takes the write bits off its top directory, and records it in <root>/kept/<id>.json
# with its due time. The records live outside the moves' journals, which are pruned. `clean-kept`
# lists them and removes those due; a later move runs it first.

KEPT_DIR = b"kept"
KEEP_OLD_MAX = 10 * 366 * 86400  # ten years: more is a typo
WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


def keep_old_seconds(text):
    """--keep-old SECONDS as a number; Refused when it is not one the mover can keep to."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= KEEP_OLD_MAX:
        raise Refused("bad --keep-old %r: give the seconds to keep the old copy, more than 0 "
                      "and at most %d" % (text, KEEP_OLD_MAX))
    return seconds


class KeptCopies(object):
    """The old copies kept beside their sources: set aside at the end of a move (keep), listed
    and removed once due (clean)."""

    def __init__(self, root=None):
        self.root = root if root is not None else journal_root()
        self.dir = os.path.join(self.root, KEPT_DIR)

    # -- at the end of a move ------------------------------------------------------------------

    def set_aside(self, move, old):
        """Set `old` (SRC, or the directory a symlink cutover renamed aside) aside read-only;
        its new path and its mode before. Failure when it cannot be: the copy at DST is
        complete either way, and the old copy is whole (nothing was removed)."""
        aside = sibling_name(move.src, ASIDE_MARKER, move.move_id)
        try:
            if old != aside:
                if os.path.lexists(aside):
                    raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
                os.rename(old, aside)
                fsync_dir(os.path.dirname(aside))
            mode = stat.S_IMODE(os.lstat(aside).st_mode)
            os.chmod(aside, mode & ~WRITE_BITS)
        except OSError as err:
            raise self.not_kept(move, old, aside, err) from None
        return aside, mode

    @staticmethod
    def not_kept(move, old, aside, err):
        where = show(aside) if os.path.lexists(aside) else show(old)
        return Failure("%s is complete and verified, but the old copy could not be kept aside "
                       "as asked (keep_old): %s — nothing of it was removed: it is whole in %s; "
                       "delete it by hand when you no longer need it"
                       % (show(move.dst), words(err), where))

    def record(self, move, aside, mode, seconds):
        """Record the copy set aside with its due time; the fields of the terminal event."""
        try:
            st = os.lstat(aside)
            kept_at = time.time()
            record = {"moveId": move.move_id, "path": show(aside), "src": show(move.src),
                      "dst": show(move.dst), "device": st.st_dev, "inode": st.st_ino,
                      "mode": mode, "keptAt": round(kept_at, 3),
                      "dueAt": round(kept_at + seconds, 3)}
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            write_atomically(self.record_path(move.move_id),
                             json.dumps(record, ensure_ascii=True).encode("ascii"))
            fsync_dir(self.dir)
        except OSError as err:
            raise self.not_kept(move, aside, aside, err) from None
        return {"oldCopyPath": record["path"], "oldCopyDueAt": record["dueAt"]}

    def record_path(self, move_id):
        return os.path.join(self.dir, move_id.encode("ascii") + b".json")

    # -- clean-kept ----------------------------------------------------------------------------

    def records(self):
        """(record file, record) of each kept copy, the oldest due first."""
        found = []
        names = os.listdir(self.dir) if os.path.isdir(self.dir) else []
        for name in names:
            if not name.endswith(b".json"):
                continue  # a record still being written (.tmp)
            path = os.path.join(self.dir, name)
            try:
                with open(path, "rb") as handle:
                    record = json.loads(handle.read().decode("utf-8"))
                found.append((path, record, float(record["dueAt"])))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # unreadable: listed by nobody, removed by nobody
        found.sort(key=lambda item: item[2])
        return [(path, record) for path, record, _due in found]

    def clean(self, emitter, now=False, dry_run=False, quiet=False):
        """One `kept.copy` event for each kept copy: removed when due (any with `now`), or
        kept; with dry_run what would be done; `quiet`: nothing about those not due. One
        cleaner at a time."""
        if not os.path.isdir(self.dir):
            return EXIT_OK
        guard = os.open(os.path.join(self.dir, b".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        failed = False
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
            for path, record in self.records():
                due = now or time.time() >= float(record["dueAt"])
                if quiet and not due:
                    continue  # before a move: not even sized
                data = self.clean_one(path, record, due, dry_run)
                failed = failed or data["action"] == "failed"
                emitter.emit("kept.copy", data, sequenced=False)
        finally:
            os.close(guard)
        return EXIT_FAILED if failed else EXIT_OK

    def clean_one(self, record_file, record, due, dry_run):
        """What happens to one kept copy, as the data of its event."""
        data = dict((key, record.get(key)) for key in ("moveId", "path", "src", "dst", "keptAt",
                                                       "dueAt"))
        path = wire_path(record["path"])
        found, why = self.still_ours(path, record)
        data["bytes"], data["files"] = tree_size(path) if found == "ours" else (None, None)
        if found in ("gone", "left"):
            data["action"], data["why"] = found, why
        elif found == "unknown":
            data["action"], data["why"] = "failed", why
            return data  # the record stays: looked at again next time
        elif not due:
            data["action"] = "kept"
        elif dry_run:
            data["action"] = "would remove"
            return data
        else:
            err = remove_kept(path, record)
            if err is not None:
                data["action"], data["why"] = "failed", words(err)
                return data
            data["action"] = "removed"
        if data["action"] != "kept" and not dry_run:
            with contextlib.suppress(OSError):
                os.unlink(record_file)  # removed, gone, or no longer ours: nothing more to do
        return data

    def still_ours(self, path, record):
        """("ours", None) when `path` is still the directory set aside (same device and inode,
        not a symlink); ("gone", None); ("left", why) when something else has its name now;
        ("unknown", why) when it cannot be looked at."""
        try:
            st = os.lstat(path)
        except OSError as err:
            if err.errno == errno.ENOENT:
                return "gone", None
            return "unknown", "cannot look at it: %s" % words(err)
        if stat.S_ISLNK(st.st_mode):
            return "left", "it was replaced by a symbolic link, which is not followed"
        if not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) != (record.get("device"),
                                                                      record.get("inode")):
            return "left", "it is no longer the directory set aside: something else has its name"
        return "ours", None


def tree_size(path):
    """(bytes, files) of the files under `path`, symlinks not followed; (None, None) when
    unreadable."""
    total = files = 0
    try:
        for kind, _rel, st, _name, _dir_fd in walk(path):
            if kind == WALK_FILE:
                files += 1
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    except WalkError:
        return None, None
    return total, files


def remove_kept(path, record):
    """Remove the kept copy at `path`, checked once more to be the directory set aside (opened
    without following a symlink); the error, or None."""
    try:
        fd = os.open(path, DIR_FLAGS)
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (record.get("device"), record.get("inode")):
                return OSError(errno.ESTALE, "it changed while being removed")
            os.fchmod(fd, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)  # our read-only top
        finally:
            os.close(fd)
        # rmtree lists and removes through descriptors, never following a symlink inside.
        force_rmtree(path)
        fsync_dir(os.path.dirname(path))
    except OSError as err:
        return err
    return None


def clean_kept_command(emitter, now=False, dry_run=False):
    return KeptCopies().clean(emitter, now, dry_run)


def clean_due_kept(emitter):
    """Before a move: remove the kept old copies that are due (space the move may need). What
    goes is said in `kept.copy` events; a failure here does not stop the move."""
    with contextlib.suppress(OSError):
        KeptCopies().clean(emitter, quiet=True)


# ----------------------------------------------------------------------------------------------
# Command line


class ArgumentError(Exception):
    pass


# Each command: its options that take a value (option -> (attribute, converter)), its flags, and
# its positional arguments ("paths+" takes one or more). `start` is the same move as `move`,
# detached, with a journal.
MOVE_OPTIONS = {"--server-name": ("server_name", str), "--verify": ("verify", str),
                "--bwlimit": ("bwlimit", str), "--started-by": ("started_by", str),
                "--service": ("service", str), "--max-downtime": ("max_downtime", str),
                "--keep-old": ("keep_old", str)}
COMMANDS = {
    "move": (MOVE_OPTIONS, ("--dry-run",), ("src", "dst")),
    "start": (MOVE_OPTIONS, ("--dry-run",), ("src", "dst")),
    "attach": ({"--from-seq": ("from_seq", int)}, (), ("move_id",)),
    "cancel": ({}, (), ("move_id",)),
    "list": ({}, (), ()),
    "statfs": ({}, (), ("paths+",)),
    "check-service": ({"--service": ("service", str)}, (), ()),
    "clean-kept": ({}, ("--now", "--dry-run"), ()),
}
USAGE = ("mover.py move|start [--server-name NAME] [--verify checksum|size|none] "
         "[--bwlimit RATE] [--started-by USER@HOST] [--service JSON [--max-downtime SECONDS]] "
         "[--keep-old SECONDS] [--dry-run] SRC DST, attach ID "
         "[--from-seq N], cancel ID, list, statfs PATH..., check-service --service JSON, or "
         "clean-kept [--now] [--dry-run]")


class Arguments:
    server_name = None
    verify = "checksum"
    bwlimit = None
    started_by = None
    service = None
    max_downtime = None
    keep_old = None
    dry_run = False
    now = False
    from_seq = 1

    def __init__(self, command):
        self.command = command


def parse_arguments(argv):
    """The mover's command line, which servermove itself writes. Not argparse: importing it and
    building its parsers (a gettext lookup per help string) is a good part of the mover's start
    (docs/performance.md), and a same-filesystem move is nothing but that start and one
    rename."""
    if not argv:
        raise ArgumentError("no command given")
    command, rest = argv[0], iter(argv[1:])
    if command not in COMMANDS:
        raise ArgumentError("unknown command %r" % command)
    options, flags, names = COMMANDS[command]
    args = Arguments(command)
    positional = []
    for word in rest:
        if word == "--":
            positional.extend(rest)
        elif word.startswith("-") and word != "-":
            key, has_value, value = word.partition("=")
            if key in flags:
                if has_value:
                    raise ArgumentError("%s takes no value" % key)
                setattr(args, key[2:].replace("-", "_"), True)
                continue
            if key not in options:
                raise ArgumentError("unknown option %s" % key)
            if not has_value:
                value = next(rest, None)
                if value is None:
                    raise ArgumentError("%s needs a value" % key)
            attribute, convert = options[key]
            try:
                setattr(args, attribute, convert(value))
            except ValueError:
                raise ArgumentError("%s: not a valid value: %r" % (key, value)) from None
        else:
            positional.append(word)
    if names == ("paths+",):
        if not positional:
            raise ArgumentError("%s needs at least one path" % command)
        args.paths = positional
        return args
    if len(positional) != len(names):
        raise ArgumentError("%s takes %s, got %d argument%s" % (
            command, " ".join(n.upper() for n in names) or "no arguments", len(positional),
            "" if len(positional) == 1 else "s"))
    for name, value in zip(names, positional):
        setattr(args, name, value)
    return args


def absolute(name, text):
    path = os.fsencode(text)
    if not path.startswith(b"/"):
        raise Refused("%s must be an absolute path (got %r): the path on the server is not "
                      "relative to any directory you see — give it in full, starting with /"
                      % (name, text))
    if b".." in path.split(b"/"):
        raise Refused("%s must not contain '..' (got %r): give the plain path" % (name, text))
    return os.path.normpath(path).replace(b"//", b"/")


def service_arguments(args):
    """--service JSON and --max-downtime SECONDS: (ServiceSpec or None, seconds or None)."""
    if args.service is None:
        if args.max_downtime is not None:
            raise Refused("--max-downtime needs --service: only a service move has downtime")
        return None, None
    service = parse_service_spec(args.service)
    if args.max_downtime is None:
        return service, None
    try:
        seconds = float(args.max_downtime)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise Refused("bad --max-downtime %r: give the seconds the service may be down, more "
                      "than 0" % args.max_downtime)
    return service, seconds


def refuse(emitter, server_name, message):
    emitter.emit("move.progress", progress_data(server_name, ERROR, NO_COUNTS, error=message,
                                                data_state=STATE_SOURCE))
    stderr_line(message)
    return EXIT_REFUSED


def main(argv):
    emitter = Emitter(getattr(sys.stdout, "buffer", sys.stdout))
    emitter.hello()
    server_name = os.uname().nodename  # what socket.gethostname() returns
    try:
        args = parse_arguments(argv)
    except ArgumentError as exc:
        return refuse(emitter, server_name, "bad arguments: %s — usage: %s" % (exc, USAGE))
    try:
        if args.command == "statfs":
            return statfs_command(emitter, args.paths)
        if args.command == "attach":
            return attach_command(emitter, args.move_id, args.from_seq)
        if args.command == "cancel":
            return cancel_command(emitter, args.move_id)
        if args.command == "list":
            return list_command(emitter)
        if args.command == "check-service":
            return check_service_command(emitter, args.service)
        if args.command == "clean-kept":
            return clean_kept_command(emitter, args.now, args.dry_run)
        if args.server_name is not None:
            server_name = args.server_name
        if args.verify not in ("checksum", "size", "none"):
            raise Refused("unknown --verify mode %r: use checksum, size or none" % args.verify)
        bwlimit = parse_rate(args.bwlimit) if args.bwlimit is not None else None
        src = absolute("SRC", args.src)
        dst = absolute("DST", args.dst)
        service, max_downtime = service_arguments(args)
        keep_old = keep_old_seconds(args.keep_old) if args.keep_old is not None else None
        if not args.dry_run:
            clean_due_kept(emitter)
        if args.command == "start" and not args.dry_run:
            return start_command(emitter, server_name, src, dst, args.verify, bwlimit,
                                 args.bwlimit, args.started_by, service, max_downtime,
                                 keep_old=keep_old)
    except Refused as exc:
        return refuse(emitter, server_name, str(exc))
    except OSError as err:
        return refuse(emitter, server_name, journal_refusal(err))
    move = Move(emitter, server_name, src, dst, args.verify, bwlimit, args.dry_run,
                service=service, max_downtime=max_downtime)
    move.keep_old = keep_old
    if not args.dry_run:  # the same lock as a detached move's, held until this process ends
        try:
            lock_source(journal_root(), src, move.move_id + " foreground")
        except Refused as exc:
            return refuse(emitter, server_name, str(exc))
        except OSError as err:
            return refuse(emitter, server_name, journal_refusal(err))
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        # SIGHUP too: a dropped SSH session must not leave a half copy behind.
        signal.signal(getattr(signal, name), move.on_signal)
    return move.run()


def end(status):
    """Exit with `status`. Without the interpreter's teardown when nothing needs it: freeing
    every object of this large program takes longer than a small move. Every line is flushed as
    it is printed and every file closed by then; a thread still at work (not a daemon), or
    output that cannot be flushed, takes the ordinary way out, which waits for it or reports."""
    status = status or 0
    busy = [thread for thread in threading.enumerate()
            if thread is not threading.main_thread() and not thread.daemon and thread.is_alive()]
    if not busy:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            sys.exit(status)
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    end(main(sys.argv[1:]))
