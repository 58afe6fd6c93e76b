"""remote/mover.py, run as a real subprocess on real filesystems (no mocks).

Key tests run under the default interpreter and the oldest and newest CPython the servers have
(pyenv 3.6.15 and 3.13.0): a missing interpreter fails the test, it never skips.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fstree import build_everything_tree, diff_snapshots, snapshot_tree
from tests.harness import as_user, fill_up, mounted_tmpfs, run
from tui.core import protocol

MOVER = Path(__file__).resolve().parent.parent / "remote" / "mover.py"
RIGGED_MOVER = Path(__file__).resolve().parent / "rigged_mover.py"
PYENV_VERSIONS = {"py3.6": "3.6.15", "py3.13": "3.13.0"}
# The unprivileged test user cannot reach root's pyenv or the venv: it runs the system python3,
# as a server's own login would.
USER_PYTHON = "/usr/bin/python3"
ORDER = ["calculating", "copying", "verifying", "cleaning", "complete"]


def interpreter(name: str) -> str:
    if name == "default":
        return sys.executable
    version = PYENV_VERSIONS[name]
    result = run("pyenv", "prefix", version, check=False)
    path = Path(result.stdout.strip()) / "bin" / "python3"
    if result.returncode != 0 or not path.exists():
        pytest.fail(f"CPython {version} not found via `pyenv prefix {version}`: install it "
                    "(`pyenv install {version}`); the mover must be tested on it")
    return str(path)


@pytest.fixture(params=["default", "py3.6", "py3.13"])
def python(request) -> str:
    return interpreter(request.param)


def rigged(ways: str) -> list[str]:
    """The command that runs the mover with choices pinned or faults staged (rigged_mover.py)."""
    return [sys.executable, str(RIGGED_MOVER), ways]


@pytest.fixture(params=["inline", "threads"])
def removal(request) -> list[str]:
    """The command that runs the mover with the source removed inline or by the Remover's
    worker threads (which of the two the mover picks depends on how slow the disk is)."""
    return rigged(request.param)


@dataclass
class Result:
    returncode: int
    lines: list[dict]
    stderr: str
    events: list = field(default_factory=list)

    @property
    def last(self) -> dict:
        return self.lines[-1]

    def progress(self) -> list[dict]:
        return [m["data"] for m in self.lines if m["subject"] == "move.progress"]

    def subjects(self, subject: str) -> list[dict]:
        return [m["data"] for m in self.lines if m["subject"] == subject]


def parse(stdout: bytes, returncode: int, stderr: bytes) -> Result:
    text = stdout.decode("ascii")  # the mover escapes everything: pure ASCII on the wire
    lines = [json.loads(line) for line in text.splitlines()]
    events = [protocol.parse_line(line) for line in text.splitlines()]
    assert not [e for e in events if isinstance(e, protocol.MalformedLine)], events
    return Result(returncode, lines, stderr.decode("utf-8", "replace"), events)


def mover_command(python: str | list[str]) -> list[str]:
    """`python` is an interpreter to run the mover with, or a whole command (`removal`)."""
    return [python, str(MOVER)] if isinstance(python, str) else python


def mover(python: str | list[str], *args: str | os.PathLike | bytes, **kwargs) -> Result:
    """Run the mover to the end."""
    cmd = [*mover_command(python), *[a if isinstance(a, bytes) else str(a) for a in args]]
    proc = subprocess.run(cmd, capture_output=True, timeout=60,
                          **kwargs)
    return parse(proc.stdout, proc.returncode, proc.stderr)


def check_stream(result: Result) -> None:
    """What every move's output must satisfy, whatever its outcome."""
    lines = result.lines
    assert lines[0]["subject"] == "mover.hello"
    assert lines[0]["data"]["version"] == protocol.PROTOCOL_VERSION
    numbered = [m["data"] for m in lines if m["subject"].startswith("move.")]
    assert [d["seq"] for d in numbered] == list(range(1, len(numbered) + 1))
    progress = result.progress()
    assert progress, lines
    phases = [p["phase"] for p in progress]
    terminal = [p for p in phases if p in ("complete", "error", "cancelled")]
    dry_run = lines[-1]["subject"] == "move.plan" and lines[-1]["data"]["dryRun"]
    if dry_run:
        assert phases == ["calculating"] * len(phases) and result.returncode == 0
        return
    assert terminal == [phases[-1]], phases  # exactly one terminal event, the last one
    assert lines[-1]["subject"] == "move.progress"
    # Phases only go forward.
    ranks = [ORDER.index(p) for p in phases if p in ORDER]
    assert ranks == sorted(ranks), phases
    # Counters never go back; totals never change once copying started.
    for key in ("bytesCopied", "filesCopied", "bytesVerified", "filesVerified"):
        values = [p[key] for p in progress if p["phase"] not in ("error", "cancelled")]
        assert values == sorted(values), (key, values)
    started = [p for p in progress if p["phase"] != "calculating"]
    if started and started[0]["phase"] == "copying":
        assert len({(p["bytesTotal"], p["filesTotal"]) for p in started}) == 1
        for p in started:
            assert p["bytesCopied"] <= p["bytesTotal"] and p["filesCopied"] <= p["filesTotal"]
    last = progress[-1]
    assert last.get("dataState") in ("source", "destination", "both")
    assert (result.returncode == 0) == (last["phase"] == "complete")
    if result.returncode != 0:
        assert last["error"] and "\n" not in last["error"]
        err_lines = result.stderr.strip().splitlines()
        assert err_lines == ["servermove-mover: " + last["error"]], result.stderr
        assert "Traceback" not in result.stderr
    moves = {d["moveId"] for d in numbered if "moveId" in d}
    assert len(moves) <= 1


def check_complete(result: Result, facts: dict, method: str) -> None:
    check_stream(result)
    assert result.returncode == 0, result.stderr
    last = result.progress()[-1]
    assert last["phase"] == "complete" and last["dataState"] == "destination"
    assert last["method"] == method
    plan = result.subjects("move.plan")
    assert len(plan) == 1 and plan[0]["method"] == method
    if method == "rename":
        # One atomic step whatever the size: not worth a walk of the whole tree first.
        assert plan[0]["counted"] is False
        assert (last["filesTotal"], last["bytesTotal"]) == (0, 0)
    else:
        assert plan[0]["counted"] is True
        assert (last["filesTotal"], last["bytesTotal"]) == (facts["files"], facts["bytes"])
        assert (last["filesCopied"], last["bytesCopied"]) == (facts["files"], facts["bytes"])
        assert (plan[0]["filesTotal"], plan[0]["dirsTotal"]) == (facts["files"], facts["dirs"])
    phases = [p["phase"] for p in result.progress()]
    expected = ORDER if method == "copy" else ["calculating", "complete"]
    assert sorted(set(phases), key=ORDER.index) == expected
    if method == "copy":
        assert (last["filesVerified"], last["bytesVerified"]) == (facts["files"], facts["bytes"])


def staging_left(parent: Path) -> list[str]:
    return [n for n in os.listdir(parent) if n.startswith(".servermove-staging")]


# ---------------------------------------------------------------------------------------------
# Moves that work


def test_cross_device_move_keeps_everything(python, public_root, tmpfs, tmp_path):
    src = Path(public_root) / f"src-{os.getpid()}-{time.monotonic_ns()}"
    try:
        facts = build_everything_tree(src)
        before = snapshot_tree(src)
        dst = tmpfs / "moved" / "data"
        dst.parent.mkdir()
        result = mover(python, "move", "--server-name", "box", src, dst)
        check_complete(result, facts, "copy")
        assert result.progress()[0]["serverName"] == "box"
        assert not src.exists()
        assert diff_snapshots(before, snapshot_tree(dst)) == []
        assert staging_left(dst.parent) == []
    finally:
        run("rm", "-rf", src, check=False)


def test_cross_device_move_back_to_disk_with_size_verify(public_root, tmpfs):
    src = tmpfs / "data"
    facts = build_everything_tree(src)
    before = snapshot_tree(src)
    dst = Path(public_root) / f"back-{time.monotonic_ns()}"
    try:
        result = mover(sys.executable, "move", "--verify", "size", src, dst)
        check_complete(result, facts, "copy")
        assert not src.exists()
        assert diff_snapshots(before, snapshot_tree(dst)) == []
    finally:
        run("rm", "-rf", dst, check=False)


def test_verify_none_still_moves_everything(tmpfs, tmp_path):
    src = tmp_path / "src"
    facts = build_everything_tree(src)
    before = snapshot_tree(src)
    result = mover(sys.executable, "move", "--verify", "none", src, tmpfs / "d")
    check_stream(result)
    assert result.returncode == 0 and result.progress()[-1]["bytesCopied"] == facts["bytes"]
    assert diff_snapshots(before, snapshot_tree(tmpfs / "d")) == []


def test_destination_parent_passes_nothing_on_to_the_copies(python, tmpfs, tmp_path):
    """A shared parent with a setgid bit and a default ACL (common for /srv/<team>): the copies
    must keep the source's group and carry no ACL entries the source never had, as `cp -a`."""
    shared = tmpfs / "shared"
    shared.mkdir()
    os.chown(shared, -1, 100)  # group "users": not root's own
    shared.chmod(0o2775)
    run("setfacl", "-d", "-m", "u:nobody:rwx", shared)
    src = tmp_path / "src"
    facts = build_everything_tree(src)
    before = snapshot_tree(src)
    result = mover(python, "move", src, shared / "data")
    check_complete(result, facts, "copy")
    assert diff_snapshots(before, snapshot_tree(shared / "data")) == []


def test_same_filesystem_is_one_rename(python, tmp_path):
    src = tmp_path / "src"
    facts = build_everything_tree(src)
    before = snapshot_tree(src)
    inode = src.stat().st_ino
    dst = tmp_path / "elsewhere" / "dst"
    dst.parent.mkdir()
    result = mover(python, "move", src, dst)
    check_complete(result, facts, "rename")
    assert dst.stat().st_ino == inode  # the same directory, renamed: nothing was copied
    assert not src.exists()
    assert diff_snapshots(before, snapshot_tree(dst)) == []


def test_rename_onto_an_existing_empty_directory(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("x")
    before = snapshot_tree(src)
    dst = tmp_path / "dst"
    dst.mkdir()
    result = mover(sys.executable, "move", src, dst)
    check_stream(result)
    assert result.returncode == 0 and result.progress()[-1]["method"] == "rename"
    assert diff_snapshots(before, snapshot_tree(dst)) == []


def test_bind_mount_of_the_same_disk_is_copied_not_renamed(tmp_path):
    # rename(2) fails with EXDEV across mounts even on one device: the mover must see that.
    target = tmp_path / "bound"
    target.mkdir()
    mountpoint = tmp_path / "bindmount"
    mountpoint.mkdir()
    run("mount", "--bind", target, mountpoint)
    try:
        src = tmp_path / "src"
        facts = build_everything_tree(src)
        before = snapshot_tree(src)
        result = mover(sys.executable, "move", src, mountpoint / "data")
        check_complete(result, facts, "copy")
        assert diff_snapshots(before, snapshot_tree(target / "data")) == []
    finally:
        run("umount", mountpoint)


def test_destination_that_is_an_empty_mount_point(public_root, tmp_path):
    # The usual "move to the new disk": DST is the root of a freshly mounted filesystem. It
    # cannot be renamed over, so the copy is staged inside it and its entries moved in.
    src = tmp_path / "src"
    facts = build_everything_tree(src)
    before = snapshot_tree(src)
    with mounted_tmpfs("256m", parent=Path(public_root)) as mount:
        lost = mount / "lost+found"
        lost.mkdir()  # as on a fresh ext4: an empty lost+found does not make DST "not empty"
        result = mover(sys.executable, "move", src, mount)
        check_complete(result, facts, "copy")
        after = snapshot_tree(mount)
        assert after.pop(b"lost+found")["type"] == "dir"  # left where it was
        assert diff_snapshots(before, after) == []
        assert not src.exists()


def test_dry_run_touches_nothing(python, tmp_path, tmpfs):
    src = tmp_path / "src"
    facts = build_everything_tree(src)
    before = snapshot_tree(src)
    time.sleep(0.01)  # a write now would move the mtime of DST's parent past the tick
    parent_mtime = tmpfs.stat().st_mtime_ns
    result = mover(python, "move", "--dry-run", "--bwlimit", "40M", src, tmpfs / "d")
    check_stream(result)
    assert result.returncode == 0
    assert result.last["subject"] == "move.plan"
    plan = result.last["data"]
    assert plan["dryRun"] is True and plan["method"] == "copy" and plan["bwlimit"] == 40 << 20
    assert (plan["filesTotal"], plan["bytesTotal"]) == (facts["files"], facts["bytes"])
    assert isinstance(protocol.parse_line(json.dumps(result.last)), protocol.PlanEvent)
    assert os.listdir(tmpfs) == []
    # Not even a probe made and removed beside DST: a dry run writes nothing.
    assert tmpfs.stat().st_mtime_ns == parent_mtime and plan["destinationProbed"] is False
    assert diff_snapshots(before, snapshot_tree(src)) == []


def test_runs_when_exec_d_from_stdin_without_a_file(tmp_path, tmpfs):
    # How the SSH layer starts it: the source arrives on stdin, no __file__.
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f").write_bytes(b"x" * 1000)
    bootstrap = ("import sys; code = sys.stdin.read(); sys.argv = ['mover'] + sys.argv[1:]; "
                 "exec(compile(code, 'mover.py', 'exec'), {'__name__': '__main__'})")
    proc = subprocess.run([interpreter("py3.6"), "-c", bootstrap, "move", str(src),
                           str(tmpfs / "d")], input=MOVER.read_bytes(), capture_output=True,
                          timeout=60)
    result = parse(proc.stdout, proc.returncode, proc.stderr)
    check_stream(result)
    assert result.returncode == 0, result.stderr
    assert (tmpfs / "d" / "a" / "f").read_bytes() == b"x" * 1000


def test_progress_is_byte_level_inside_a_big_file_with_a_heartbeat(tmp_path, tmpfs):
    src = tmp_path / "src"
    src.mkdir()
    size = 24 * 1024 * 1024
    (src / "big").write_bytes(os.urandom(size))
    result = mover(sys.executable, "move", "--bwlimit", "16M", src, tmpfs / "d")
    check_stream(result)
    assert result.returncode == 0
    copying = [p for p in result.progress() if p["phase"] == "copying"]
    inside = [p["bytesCopied"] for p in copying if 0 < p["bytesCopied"] < size]
    assert len(inside) >= 5, copying  # ~1.5 s of copying, several lines inside the one file
    assert all(p.get("currentFile") == "big" for p in copying[1:])
    stamps = [p["ts"] for p in result.progress()]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert max(gaps) < 1.5, gaps  # heartbeat: never a silent second (generous for slow CI)
    same_phase = [b["ts"] - a["ts"] for a, b in itertools.pairwise(copying)]
    assert min(same_phase) >= 0.09, same_phase  # at most 10 a second


def failed_at_source(result: Result) -> str:
    """The move failed (exit 1) and said the whole data is still in the source; its error."""
    check_stream(result)
    assert result.returncode == 1, result.lines
    last = result.progress()[-1]
    assert last["phase"] == "error" and last["dataState"] == "source"
    return last["error"]


# ---------------------------------------------------------------------------------------------
# Refusals: exit 2, nothing written


def _refused(result: Result, *needles: str) -> str:
    check_stream(result)
    assert result.returncode == 2, result.lines
    last = result.progress()[-1]
    assert last["phase"] == "error" and last["dataState"] == "source"
    assert not result.subjects("move.plan")
    for needle in needles:
        assert needle in last["error"], last["error"]
    return last["error"]


@pytest.mark.parametrize("case", ["missing", "file", "symlink", "same", "dst-inside-src",
                                  "src-inside-dst", "dst-not-empty", "dst-is-file",
                                  "relative-src", "relative-dst", "dotdot", "bad-verify",
                                  "bad-bwlimit", "parent-is-file", "no-args", "unknown-option",
                                  "unknown-command", "one-path", "no-value", "bad-from-seq",
                                  "flag-with-value"])
def test_refusals_touch_nothing(case, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("keep")
    (tmp_path / "afile").write_text("file")
    os.symlink(src, tmp_path / "srclink")
    before = snapshot_tree(tmp_path)
    dst = tmp_path / "new"
    args = {
        "missing": ["move", tmp_path / "nope", dst],
        "file": ["move", tmp_path / "afile", dst],
        "symlink": ["move", tmp_path / "srclink", dst],
        "same": ["move", src, tmp_path / "." / "src"],
        "dst-inside-src": ["move", src, src / "sub" / "inner"],
        "src-inside-dst": ["move", src / "sub", tmp_path],
        "dst-not-empty": ["move", src, tmp_path / "full"],
        "dst-is-file": ["move", src, tmp_path / "afile"],
        "relative-src": ["move", "src", dst],
        "relative-dst": ["move", src, "new"],
        "dotdot": ["move", src, tmp_path / "full" / ".." / "new"],
        "bad-verify": ["move", "--verify", "md5", src, dst],
        "bad-bwlimit": ["move", "--bwlimit", "40Q", src, dst],
        "parent-is-file": ["move", src, tmp_path / "afile" / "sub" / "new"],
        "no-args": [],
        "unknown-option": ["move", "--fast", src, dst],
        "unknown-command": ["copy", src, dst],
        "one-path": ["move", "--verify=size", src],
        "no-value": ["move", src, dst, "--bwlimit"],
        "bad-from-seq": ["attach", "0123abcd", "--from-seq", "ten"],
        "flag-with-value": ["move", "--dry-run=yes", src, dst],
    }[case]
    result = mover(sys.executable, *args, cwd=tmp_path)
    message = _refused(result)
    words = {"missing": "does not exist", "file": "not a directory", "symlink": "symbolic link",
             "same": "same directory", "dst-inside-src": "inside the source",
             "src-inside-dst": "inside the destination", "dst-not-empty": "not empty",
             "dst-is-file": "not a directory", "relative-src": "absolute path",
             "relative-dst": "absolute path", "dotdot": "'..'", "bad-verify": "checksum, size",
             "bad-bwlimit": "40Q", "parent-is-file": "afile is not a directory", "no-args": "usage",
             "unknown-option": "unknown option --fast", "unknown-command": "unknown command",
             "one-path": "takes SRC DST, got 1 argument", "no-value": "--bwlimit needs a value",
             "bad-from-seq": "--from-seq: not a valid value",
             "flag-with-value": "--dry-run takes no value"}[case]
    assert words in message
    assert diff_snapshots(before, snapshot_tree(tmp_path)) == []


def test_not_enough_space_is_refused_up_front(tiny_fs, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "two-mib").write_bytes(os.urandom(2 * 1024 * 1024))
    before = snapshot_tree(src)
    message = _refused(mover(sys.executable, "move", src, tiny_fs / "d"),
                       "not enough space on", "free some space or pick another destination")
    assert "MiB" in message and str(tiny_fs) in message
    assert os.listdir(tiny_fs) == []
    assert diff_snapshots(before, snapshot_tree(src)) == []


def test_not_enough_inodes_is_refused_up_front(public_root, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(50):
        (src / f"f{i}").write_text("x")
    with mounted_tmpfs("16m", parent=Path(public_root), inodes=20) as small:
        _refused(mover(sys.executable, "move", src, small / "d"), "inodes")
        assert os.listdir(small) == []
    assert len(os.listdir(src)) == 50


# ---------------------------------------------------------------------------------------------
# Faults: error, staging removed, source untouched


def start(python: str | list[str], *args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([*mover_command(python), *[str(a) for a in args]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def wait_for_copying(proc: subprocess.Popen, seen: list[bytes], min_bytes: int = 1) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        data = json.loads(line)["data"]
        if data.get("phase") == "copying" and data["bytesCopied"] >= min_bytes:
            return
    raise AssertionError(f"the move never got to copying: {seen}")


def finish(proc: subprocess.Popen, seen: list[bytes]) -> Result:
    out, err = proc.communicate(timeout=60)
    return parse(b"".join(seen) + out, proc.returncode, err)


def test_disk_full_mid_copy(tiny_fs, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"part-{i}").write_bytes(os.urandom(100 * 1024))
    before = snapshot_tree(src)
    proc = start(sys.executable, "move", "--bwlimit", "200K", src, tiny_fs / "d")
    seen: list[bytes] = []
    wait_for_copying(proc, seen)
    fill_up(tiny_fs / "filler")  # someone else fills the disk: a real ENOSPC, mid-copy
    result = finish(proc, seen)
    error = failed_at_source(result)
    assert "no space left" in error and "part-" in error
    assert "the source is untouched" in error
    assert os.listdir(tiny_fs) == ["filler"]  # staging removed
    assert diff_snapshots(before, snapshot_tree(src)) == []


def test_a_file_vanishing_mid_copy_stops_the_move(tmp_path, tmpfs):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a-big").write_bytes(os.urandom(6 * 1024 * 1024))
    for i in range(20):
        (src / f"small-{i}").write_text(str(i))
    proc = start(sys.executable, "move", "--bwlimit", "4M", src, tmpfs / "d")
    seen: list[bytes] = []
    wait_for_copying(proc, seen)
    for i in range(20):
        (src / f"small-{i}").unlink()
    result = finish(proc, seen)
    error = failed_at_source(result)
    assert "small-" in error
    assert "vanished" in error or "changed" in error
    assert os.listdir(tmpfs) == []
    assert sorted(os.listdir(src)) == ["a-big"]


def test_a_directory_swapped_for_a_symlink_mid_copy_is_not_followed(tmp_path, tmpfs):
    """A directory not yet copied is replaced by a symbolic link to another tree while the move
    runs: the walk opens each directory without following links, so the other tree is never
    copied, and the move stops with the source as it is."""
    src = tmp_path / "src"
    (src / "z-later").mkdir(parents=True)
    (src / "z-later" / "mine").write_text("mine")
    (src / "a-big").write_bytes(os.urandom(6 * 1024 * 1024))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret").write_text("not part of the move")
    proc = start(sys.executable, "move", "--bwlimit", "4M", src, tmpfs / "d")
    seen: list[bytes] = []
    wait_for_copying(proc, seen)
    (src / "z-later").rename(tmp_path / "z-moved-away")
    (src / "z-later").symlink_to(elsewhere)
    after_swap = snapshot_tree(tmp_path)
    result = finish(proc, seen)
    error = failed_at_source(result)
    assert "z-later changed type during the move" in error  # not "after it was copied"
    assert os.listdir(tmpfs) == []
    assert diff_snapshots(after_swap, snapshot_tree(tmp_path)) == []


def test_a_file_changed_after_it_was_copied_deletes_nothing(tmp_path, tmpfs):
    src = tmp_path / "src"
    src.mkdir()
    (src / "early").write_text("original")
    (src / "later").write_bytes(os.urandom(6 * 1024 * 1024))
    (src / "z-later").write_bytes(os.urandom(6 * 1024 * 1024))
    proc = start(sys.executable, "move", "--bwlimit", "4M", src, tmpfs / "d")
    seen: list[bytes] = []
    wait_for_copying(proc, seen, min_bytes=1024 * 1024)
    with open(src / "early", "a") as f:  # a writer still at work on the source
        f.write(" and more")
    with open(src / "later", "r+b") as f:
        f.write(b"changed!")
    with open(src / "z-later", "r+b") as f:
        f.write(b"changed!")
    after_change = snapshot_tree(src)
    result = finish(proc, seen)
    error = failed_at_source(result)
    assert "nothing was deleted" in error or "run the move again" in error
    assert any(name in error for name in ("early", "later"))
    assert os.listdir(tmpfs) == []
    assert diff_snapshots(after_change, snapshot_tree(src)) == []


@pytest.mark.parametrize("ways", ["corrupt-copy", "corrupt-copy,unmapped"])
def test_a_copy_that_reads_back_different_is_caught(ways, tmp_path, tmpfs):
    """What only the checksum verify can tell: a big file's copy with one byte per chunk wrong
    (a disk returning bad data), every size and time right. The copy is compared in place
    (mapped) or read back (on a filesystem that cannot map); chunks of 1,000,000 bytes start
    off page boundaries."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    before = snapshot_tree(src)
    result = mover(rigged(ways), "move", "--bwlimit", "10000000", src, tmpfs / "d")
    error = failed_at_source(result)
    assert "the copy of" in error and "differs from the source" in error
    assert "nothing was deleted" in error
    assert diff_snapshots(before, snapshot_tree(src)) == []
    assert os.listdir(tmpfs) == []


def test_verify_reads_copies_back_where_they_cannot_be_mapped(tmpfs, tmp_path):
    src = tmp_path / "src"
    facts = build_everything_tree(src)
    before = snapshot_tree(src)
    result = mover(rigged("unmapped"), "move", src, tmpfs / "d")
    check_complete(result, facts, "copy")
    assert diff_snapshots(before, snapshot_tree(tmpfs / "d")) == []


def test_unreadable_file_as_unprivileged_user_is_refused(public_tmp, tmpfs):
    src = public_tmp / "src"
    src.mkdir()
    (src / "mine").write_text("mine")
    (src / "roots-secret").write_text("secret")
    os.chmod(src / "roots-secret", 0o600)  # owned by root: smtest cannot read it
    for path in (src, src / "mine"):
        os.chown(path, *owner_of(public_tmp))
    before = snapshot_tree(src)
    result = mover(USER_PYTHON, "move", src, tmpfs / "d", **as_user())
    message = _refused(result, "roots-secret", "permission denied")
    assert "root" in message
    assert os.listdir(tmpfs) == []
    assert diff_snapshots(before, snapshot_tree(src)) == []


def test_destination_not_writable_as_unprivileged_user_is_refused(public_tmp, tmpfs):
    src = public_tmp / "src"
    src.mkdir()
    os.chown(src, *owner_of(public_tmp))
    locked = tmpfs / "locked"
    locked.mkdir(mode=0o755)  # root's
    _refused(mover(USER_PYTHON, "move", src, locked / "d", **as_user()),
             "permission denied")
    assert src.exists() and os.listdir(locked) == []


def test_permission_denied_mid_copy_as_unprivileged_user(public_tmp, tmpfs):
    src = public_tmp / "src"
    src.mkdir()
    (src / "a-big").write_bytes(os.urandom(6 * 1024 * 1024))
    for i in range(10):
        (src / f"small-{i}").write_text(str(i))
    for path in [src, *src.iterdir()]:
        os.chown(path, *owner_of(public_tmp))
    dst_parent = tmpfs / "out"
    dst_parent.mkdir()
    os.chown(dst_parent, *owner_of(public_tmp))
    proc = start(USER_PYTHON, "move", "--bwlimit", "4M", src, dst_parent / "d", **as_user())
    seen: list[bytes] = []
    wait_for_copying(proc, seen)
    for i in range(10):  # an admin tightening permissions while the move runs
        os.chown(src / f"small-{i}", 0, 0)
        os.chmod(src / f"small-{i}", 0o600)
    expected = snapshot_tree(src)
    result = finish(proc, seen)
    error = failed_at_source(result)
    assert "small-" in error
    assert os.listdir(dst_parent) == []
    assert diff_snapshots(expected, snapshot_tree(src)) == []


def test_unprivileged_move_warns_once_about_owners(public_tmp, tmpfs):
    src = public_tmp / "src"
    facts = build_everything_tree(src, privileged=False)
    uid, gid = owner_of(public_tmp)
    run("chown", "-R", f"{uid}:{gid}", src)
    for i in range(3):
        (src / f"roots-{i}").write_text("root's but readable")  # root-owned, in smtest's dir
        os.chmod(src / f"roots-{i}", 0o644)
    os.chmod(src / "modes" / "no-perms", 0o400)  # smtest must be able to read its own file
    before = snapshot_tree(src, owners=False)
    dst_parent = tmpfs / "out"
    dst_parent.mkdir()
    os.chown(dst_parent, uid, gid)
    result = mover(USER_PYTHON, "move", src, dst_parent / "d", **as_user())
    check_stream(result)
    assert result.returncode == 0, result.last
    warnings = result.subjects("move.warning")
    owner_warnings = [w for w in warnings if "owner" in w["message"]]
    assert len(owner_warnings) == 1 and owner_warnings[0]["count"] == 3, warnings
    assert owner_warnings[0]["path"].startswith("roots-")
    after = snapshot_tree(dst_parent / "d", owners=False)
    assert diff_snapshots(before, after) == []
    assert {os.lstat(dst_parent / "d" / f"roots-{i}").st_uid for i in range(3)} == {uid}
    assert facts["files"] + 3 == result.progress()[-1]["filesTotal"]
    assert not src.exists()


def owner_of(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_uid, st.st_gid


# ---------------------------------------------------------------------------------------------
# Cancellation


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cancel_mid_copy(python, sig, tmp_path, tmpfs):
    src = tmp_path / "src"
    facts = build_everything_tree(src)
    (src / "zz-big").write_bytes(os.urandom(32 * 1024 * 1024))
    before = snapshot_tree(src)
    dst_parent = tmpfs / "out"
    dst_parent.mkdir()
    proc = start(python, "move", "--bwlimit", "2M", src, dst_parent / "d")
    seen: list[bytes] = []
    wait_for_copying(proc, seen)
    copied_at_signal = json.loads(seen[-1])["data"]["bytesCopied"]
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    result = parse(b"".join(seen) + out, proc.returncode, err)
    check_stream(result)
    assert result.returncode == 3
    last = result.progress()[-1]
    assert last["phase"] == "cancelled" and last["dataState"] == "source"
    assert sig.name in last["error"] and "untouched" in last["error"]
    # Stopped at once, measured in bytes rather than seconds (a slow machine copies slower
    # too): at most a few of the 200 KB chunks the 2 MB/s limit copies at a time went on after
    # the signal, not the rest of the 32 MiB file.
    assert last["bytesCopied"] - copied_at_signal <= 4 * 1024 * 1024
    assert last["bytesCopied"] < facts["bytes"] + 32 * 1024 * 1024
    assert os.listdir(dst_parent) == []
    assert diff_snapshots(before, snapshot_tree(src)) == []


# ---------------------------------------------------------------------------------------------
# statfs


def test_check_service_runs_the_check_once_and_says_how_it_ended(python, tmp_path):
    marker = tmp_path / "up"
    spec = {"stop": "true", "start": "true", "check": ["test", "-e", str(marker)]}
    down = mover(python, "check-service", "--service", json.dumps(spec))
    assert down.returncode == 1, down.stderr
    [event] = down.events[1:]
    assert isinstance(event, protocol.ServiceCheckEvent) and not event.passed
    assert event.result == "failed (exit 1) without any output"
    assert event.check == f"test -e {marker}"
    marker.touch()
    up = mover(python, "check-service", "--service", json.dumps(spec))
    assert up.returncode == 0 and up.events[1].passed and up.events[1].result == "passed"
    assert abs(up.events[1].checked_at - time.time()) < 60
    docker = {**spec, "check": "echo false", "checkOutput": "true"}
    printed = mover(python, "check-service", "--service", json.dumps(docker)).events[1]
    assert not printed.passed and printed.result == "printed `false`, not `true`"
    refused = mover(python, "check-service")
    assert refused.returncode == 2 and "check-service needs --service JSON" in refused.stderr


def test_statfs_reports_the_filesystems(python, tmp_path, tmpfs):
    result = mover(python, "statfs", tmp_path, tmpfs / "not" / "yet", tmpfs)
    assert result.returncode == 0, result.stderr
    assert result.lines[0]["subject"] == "mover.hello"
    stats = result.lines[1:]
    assert [s["subject"] for s in stats] == ["fs.stat"] * 3
    events = result.events[1:]
    assert all(isinstance(e, protocol.FsStatEvent) for e in events), events
    disk, missing, mount = events
    assert disk.exists and disk.path == str(tmp_path)
    assert not missing.exists and missing.mount_point == str(tmpfs)
    assert mount.mount_point == str(tmpfs) and mount.fs_type == "tmpfs"
    vfs = os.statvfs(tmpfs)
    assert mount.total_bytes == vfs.f_blocks * vfs.f_frsize
    assert 0 < mount.free_bytes <= mount.total_bytes and mount.free_inodes
    assert disk.mount_point != mount.mount_point and disk.device != mount.device


def numbered_tree(src: Path, dirs: int, files: int) -> None:
    """src/d<i>/f<j>, each file holding b"<i>-<j>"."""
    for d in range(dirs):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(files):
            (src / f"d{d}" / f"f{f}").write_bytes(b"%d-%d" % (d, f))


def test_cancel_while_cleaning_keeps_the_complete_destination(removal, tmp_path, tmpfs):
    # Once the copy is in place at DST, a cancel stops the removal of the source where it is:
    # DST stays complete, and the error says what is left of the source.
    src = tmp_path / "src"
    numbered_tree(src, dirs=10, files=1000)
    before = snapshot_tree(src)
    dst = tmpfs / "d"
    proc = start(removal, "move", src, dst)
    seen: list[bytes] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if json.loads(line)["data"].get("phase") == "cleaning":
            proc.send_signal(signal.SIGTERM)
            break
    result = finish(proc, seen)
    check_stream(result)
    assert result.returncode == 3
    last = result.progress()[-1]
    assert last["phase"] == "cancelled" and last["dataState"] in ("both", "destination")
    assert str(dst) in last["error"] and str(src) in last["error"]
    assert "complete and verified" in last["error"]
    assert diff_snapshots(before, snapshot_tree(dst)) == []
    if last["dataState"] == "both":
        assert diff_snapshots(before, snapshot_tree(src)) == []
    else:
        left = snapshot_tree(src, contents=True)
        files_left = {rel: e for rel, e in left.items() if e["type"] == "file"}
        assert len(files_left) < 10000
        for rel, entry in files_left.items():  # what is left of the source is intact
            assert entry["sha256"] == before[rel]["sha256"]


def test_removing_the_source_keeps_everything(removal, tmp_path, tmpfs):
    src = tmp_path / "src"
    facts = build_everything_tree(src)
    before = snapshot_tree(src)
    result = mover(removal, "move", src, tmpfs / "d")
    check_complete(result, facts, "copy")
    assert not src.exists()
    assert diff_snapshots(before, snapshot_tree(tmpfs / "d")) == []


def test_a_source_directory_swapped_for_a_symlink_mid_clean_is_not_followed(tmp_path, tmpfs):
    # The clean unlinks each file by its name in the directory its walk opened: a directory
    # swapped for a symlink while its files are removed cannot send an unlink elsewhere (by
    # path, each later unlink would have removed the file of the same name it points to).
    src = tmp_path / "src"
    numbered_tree(src, dirs=1, files=30)
    before = snapshot_tree(src)
    elsewhere = tmp_path / "elsewhere"
    numbered_tree(elsewhere, dirs=1, files=30)  # the same names, somewhere else
    elsewhere_before = snapshot_tree(elsewhere)
    dst = tmpfs / "d"
    proc = start(rigged("inline,slower-clean"), "move", src, dst)  # an unlink every 0.1 s
    seen: list[bytes] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        data = json.loads(line)["data"]
        if data.get("phase") == "cleaning" and data.get("filesRemoved", 0) >= 1:
            (src / "d0").rename(src / "d0-aside")  # the walk is inside d0, listing its files
            (src / "d0").symlink_to(elsewhere / "d0")
            break
    result = finish(proc, seen)
    check_stream(result)
    assert diff_snapshots(elsewhere_before, snapshot_tree(elsewhere)) == []
    assert diff_snapshots(before, snapshot_tree(dst)) == []
    assert result.returncode == 1 and result.progress()[-1]["dataState"] == "destination"
    assert os.listdir(src) == ["d0"]  # the symlink stays; the emptied directory went


def test_a_file_that_cannot_be_removed_is_named_and_the_rest_goes(removal, tmp_path, tmpfs):
    # An immutable file (chattr +i: not even root may unlink it) fails its unlink in the middle
    # of the clean: the rest of the source goes, DST is complete, and the error names the file.
    src = tmp_path / "src"
    numbered_tree(src, dirs=3, files=100)
    stuck = src / "d1" / "f7"
    before = snapshot_tree(src)
    run("chattr", "+i", stuck)
    try:
        result = mover(removal, "move", src, tmpfs / "d")
        check_stream(result)
        assert result.returncode == 1
        last = result.progress()[-1]
        assert last["phase"] == "error" and last["dataState"] == "destination"
        assert "complete and verified, but removing the source failed" in last["error"]
        assert f"still there: {stuck}" in last["error"]
        assert diff_snapshots(before, snapshot_tree(tmpfs / "d")) == []
        left = sorted(str(p.relative_to(src)) for p in src.rglob("*"))
        assert left == ["d1", "d1/f7"]
        assert stuck.read_bytes() == b"1-7"
    finally:
        run("chattr", "-i", stuck, check=False)
