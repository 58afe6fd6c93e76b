"""The mover's copy processes (CopyProcesses): a move of thousands of small files copies them in
forked processes. Real tmpfs, real files, real processes; the processes are found in /proc as
the mover's children while it copies, and must be gone when it ends or dies."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fstree import build_everything_tree, diff_snapshots, snapshot_tree
from tests.harness import as_user, fill_up, mounted_tmpfs, run
from tests.test_mover import (
    USER_PYTHON,
    check_complete,
    check_stream,
    failed_at_source,
    interpreter,
    mover,
    owner_of,
    parse,
    staging_left,
    start,
)

MANY = 40_000  # enough for the processes, and for a copy still running when the test acts


@pytest.fixture
def src_fs(public_root: Path) -> Iterator[Path]:
    """The source on its own tmpfs: many small files, quick to make and to walk."""
    with mounted_tmpfs("512m", parent=public_root, mode="0777") as path:
        yield path


def add_small_files(root: Path, count: int, dirs: int = 40) -> int:
    """`count` small files in `dirs` directories; their bytes."""
    total = 0
    for d in range(dirs):
        folder = root / f"many-{d:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count // dirs):
            total += (folder / f"f-{i}").write_bytes(b"%d-%d" % (d, i))
    return total


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def gone(pids: list[int]) -> bool:
    """None of `pids` is still a process (not even one dead but not yet reaped)."""
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            return False
    return True


def wait_for_processes(proc, seen: list[bytes]) -> list[int]:
    """Read events until files are being copied; the mover's copy processes at that moment."""
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        data = json.loads(line)["data"]
        if data.get("phase") == "copying" and data["filesCopied"] > 0:
            children = children_of(proc.pid)
            assert len(children) >= 2, "no copy processes while copying"
            return children
    raise AssertionError(f"the move never got to copying: {seen}")


@pytest.mark.parametrize("name", ["default", "py3.6", "py3.13"])
def test_many_small_files_are_copied_whole_with_their_metadata(name, src_fs, tmpfs):
    python = interpreter(name)
    src = src_fs / "src"
    facts = build_everything_tree(src)
    facts["bytes"] += add_small_files(src, 3000)
    facts["files"] += 3000
    facts["dirs"] += 40
    before = snapshot_tree(src)
    result = mover(python, "move", "--verify", "checksum", src, tmpfs / "d")
    check_complete(result, facts, "copy")
    assert result.stderr == ""  # no warning about forking, on any interpreter
    assert diff_snapshots(before, snapshot_tree(tmpfs / "d")) == []  # hard links: one inode
    assert not src.exists()


def test_an_unprivileged_move_keeps_read_only_directories_of_many_files(public_tmp, tmpfs):
    src = public_tmp / "src"
    add_small_files(src, 3000, dirs=3)
    uid, gid = owner_of(public_tmp)
    run("chown", "-R", f"{uid}:{gid}", src)
    for d in range(3):  # set only after its files are in: its mode locks them out
        os.chmod(src / f"many-{d:02d}", 0o500)
    before = snapshot_tree(src)
    dst_parent = tmpfs / "out"
    dst_parent.mkdir()
    os.chown(dst_parent, uid, gid)
    result = mover(USER_PYTHON, "move", "--verify", "checksum", src, dst_parent / "d",
                   **as_user())
    check_stream(result)
    assert result.returncode == 0, result.last
    assert result.stderr == ""
    assert diff_snapshots(before, snapshot_tree(dst_parent / "d")) == []


def test_a_copy_process_failing_fails_the_move_and_leaves_none_behind(src_fs, public_root):
    src = src_fs / "src"
    add_small_files(src, MANY)
    before = snapshot_tree(src, contents=False)
    # Just big enough for the copy (each small file takes a page), so that filling it is quick.
    with mounted_tmpfs("170m", parent=public_root, mode="0777") as dst_fs:
        proc = start(sys.executable, "move", "--verify", "checksum", src, dst_fs / "d")
        seen: list[bytes] = []
        children = wait_for_processes(proc, seen)
        fill_up(dst_fs / "filler")  # someone else fills the disk: ENOSPC in a copy process
        out, err = proc.communicate(timeout=60)
        result = parse(b"".join(seen) + out, proc.returncode, err)
        error = failed_at_source(result)
        assert "no space left on the filesystem" in error and "f-" in error, error
        assert "the source is untouched" in error
        assert gone(children)
        assert os.listdir(dst_fs) == ["filler"]  # staging removed
    assert diff_snapshots(before, snapshot_tree(src, contents=False)) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_cancel_mid_copy_leaves_no_copy_process(sig, src_fs, tmpfs):
    src = src_fs / "src"
    add_small_files(src, MANY)
    before = snapshot_tree(src, contents=False)
    proc = start(sys.executable, "move", "--verify", "checksum", src, tmpfs / "d")
    seen: list[bytes] = []
    children = wait_for_processes(proc, seen)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    result = parse(b"".join(seen) + out, proc.returncode, err)
    check_stream(result)
    last = result.progress()[-1]
    assert (result.returncode, last["phase"], last["dataState"]) == (3, "cancelled", "source")
    assert last["filesCopied"] < MANY  # cut short, not finished first
    assert gone(children)
    assert staging_left(tmpfs) == [] and os.listdir(tmpfs) == []
    assert diff_snapshots(before, snapshot_tree(src, contents=False)) == []


def test_a_killed_mover_leaves_no_copy_process_and_a_rerun_finishes(src_fs, tmpfs):
    src = src_fs / "src"
    add_small_files(src, MANY)
    before = snapshot_tree(src)
    proc = start(sys.executable, "move", "--verify", "checksum", src, tmpfs / "d")
    seen: list[bytes] = []
    children = wait_for_processes(proc, seen)
    proc.kill()  # kill -9: no chance to stop its processes itself
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 1
    while not gone(children) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone(children), "a copy process outlived the killed mover by a second"
    again = mover(sys.executable, "move", "--verify", "checksum", src, tmpfs / "d")
    check_stream(again)
    assert again.returncode == 0, again.last
    assert diff_snapshots(before, snapshot_tree(tmpfs / "d")) == []


def wait_for_phase(proc, seen: list[bytes], phase: str) -> list[int]:
    """Read events until `phase` starts; the mover's processes a moment later."""
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if json.loads(line)["data"].get("phase") == phase:
            deadline = time.monotonic() + 1
            while len(children_of(proc.pid)) < 2 and time.monotonic() < deadline:
                time.sleep(0.001)  # the processes are forked once the phase is announced
            return children_of(proc.pid)
    raise AssertionError(f"the move never got to {phase}: {seen}")


def test_files_a_clean_process_cannot_remove_are_kept_and_named(public_tmp, tmpfs):
    src = public_tmp / "src"
    add_small_files(src, 12_000, dirs=3)
    uid, gid = owner_of(public_tmp)
    run("chown", "-R", f"{uid}:{gid}", src)
    dst_parent = tmpfs / "out"
    dst_parent.mkdir()
    os.chown(dst_parent, uid, gid)
    proc = start(USER_PYTHON, "move", src, dst_parent / "d", **as_user())
    seen: list[bytes] = []
    wait_for_phase(proc, seen, "copying")
    os.chown(src / "many-01", 0, 0)  # an admin takes a directory back: its files stay
    out, err = proc.communicate(timeout=60)
    result = parse(b"".join(seen) + out, proc.returncode, err)
    check_stream(result)
    last = result.progress()[-1]
    assert (result.returncode, last["phase"], last["dataState"]) == (1, "error", "destination")
    assert "but removing the source failed (" in last["error"], last["error"]
    assert ": permission denied); still there: " in last["error"]
    assert "many-01/f-" in last["error"] and "and 3995 more" in last["error"]
    assert sorted(os.listdir(src)) == ["many-01"] and len(os.listdir(src / "many-01")) == 4000
    assert len(os.listdir(dst_parent / "d" / "many-01")) == 4000


def test_a_cancel_mid_clean_says_truly_whether_the_source_is_whole(src_fs, tmpfs):
    """A clean process's removals are counted before it is ended: a source with files removed
    is never reported whole (`both`)."""
    src = src_fs / "src"
    add_small_files(src, MANY)
    proc = start(sys.executable, "move", src, tmpfs / "d")
    seen: list[bytes] = []
    children = wait_for_phase(proc, seen, "cleaning")
    assert len(children) >= 2, "no clean processes while cleaning"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    result = parse(b"".join(seen) + out, proc.returncode, err)
    check_stream(result)
    last = result.progress()[-1]
    assert (result.returncode, last["phase"]) == (3, "cancelled")
    left = sum(len(files) for _dir, _subdirs, files in os.walk(src))
    assert 0 < left < MANY  # cut short, after the first removals
    assert last["dataState"] == "destination", last["error"]
    assert "still holds part of the old data" in last["error"]
    assert gone(children)


def test_a_rerun_links_what_the_killed_move_recorded_and_copies_the_rest(src_fs, tmpfs):
    """Resumption decides before the processes: recorded, unchanged files are linked from the
    dead move's staging, changed ones are copied again (by the processes)."""
    from tests.test_mover_resume import kill_worker, records, state_of, wait_until

    src, count = src_fs / "src", MANY // 4  # enough for the processes in the rerun
    add_small_files(src, count)
    # The whole copy takes seconds at 20K/s (one process: --bwlimit keeps one clock), so the
    # worker is killed mid-copy, never after its verification and cleaning have begun.
    started = mover(sys.executable, "start", "--verify", "checksum", "--bwlimit", "20K", src,
                    tmpfs / "d")
    assert started.returncode == 0, started.stderr
    mdir = Path(started.subjects("move.started")[0]["journal"])
    wait_until("half the copies recorded", lambda: len(records(mdir)) >= count // 2, 60)
    kill_worker(mdir)
    assert state_of(mdir)["phase"] == "copying"
    recorded = [rel for rel, *_ in records(mdir)]
    for rel in recorded[:500]:  # changed since: copied again, not linked
        with open(src / rel, "ab") as f:
            f.write(b" and more")
    before = snapshot_tree(src)
    again = mover(sys.executable, "move", "--verify", "checksum", src, tmpfs / "d")
    check_stream(again)
    assert again.returncode == 0, again.last
    assert again.subjects("move.plan")[0]["resumes"]["moveId"] == mdir.name
    last = again.progress()[-1]
    assert 0 < last["bytesReused"] < last["bytesTotal"]
    assert diff_snapshots(before, snapshot_tree(tmpfs / "d")) == []
