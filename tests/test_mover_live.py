"""remote/mover.py against what a live server has: a disk that fails only at write-back, mounts
inside the source, a destination whose parents are missing, and the texts a move says when the
source changes under it. Real loop devices, mounts and processes; helpers from test_mover."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_support import servermove, start_json_move
from tests.cli_support import wait_for_copying as wait_for_cli_copying
from tests.fstree import diff_snapshots, snapshot_tree
from tests.harness import as_user, ensure_test_user, mounted_tmpfs, run
from tests.test_mover import (
    USER_PYTHON,
    _refused,
    check_complete,
    check_stream,
    failed_at_source,
    finish,
    interpreter,
    mover,
    rigged,
    start,
    wait_for_copying,
)
from tui.core import protocol
from tui.core.formatting import human_size
from tui.core.wording import plan_line as _plan_line
from tui.core.wording import plan_lines

MIB = 1024 * 1024


@pytest.fixture(params=["default", "py3.6", "py3.13"])
def python(request) -> str:
    return interpreter(request.param)


@contextlib.contextmanager
def loop_mount(image: Path, mkfs: list[str], parent: Path,
               mount: tuple[str, ...] = ("mount",)) -> Iterator[Path]:
    """A filesystem made by `mkfs` on a loop device over `image`, mounted by `mount`; unmounted
    and the loop device detached afterwards, whatever happens."""
    loop = run("losetup", "-f", "--show", image).stdout.strip()
    try:
        run(*mkfs, loop)
        point = Path(tempfile.mkdtemp(prefix="sm-loop-", dir=parent))
        point.chmod(0o755)
        try:
            run(*mount, loop, point)
            try:
                yield point
            finally:
                if run("umount", point, check=False).returncode != 0:
                    run("umount", "-l", point, check=False)
        finally:
            with contextlib.suppress(OSError):
                point.rmdir()
    finally:
        run("losetup", "-d", loop, check=False)


@contextlib.contextmanager
def disk_failing_at_writeback(parent: Path) -> Iterator[Path]:
    """ext4 without a journal on a loop device whose sparse 1 GiB image sits on a 120 MiB tmpfs
    with 80 MiB already taken: writes land in the page cache and read back fine, and fail (EIO)
    only when the cache is written back and the image's tmpfs is full."""
    with mounted_tmpfs("120m", parent=parent) as backing:
        run("fallocate", "-l", "80M", backing / "ballast")
        run("truncate", "-s", "1G", backing / "disk.img")
        with loop_mount(backing / "disk.img", ["mkfs.ext4", "-q", "-O", "^has_journal"],
                        parent) as point:
            yield point


# ---------------------------------------------------------------------------------------------
# 1. A failed flush fails the move


def test_a_disk_failing_at_writeback_fails_the_move_and_keeps_the_source(python, public_root,
                                                                       tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"part-{i}").write_bytes(os.urandom(100 * MIB))
    (src / "small").write_text("small")
    before = snapshot_tree(src)
    with disk_failing_at_writeback(public_root) as disk:
        result = mover(python, "move", src, disk / "d")
        error = failed_at_source(result)
        assert "the destination disk failed to store the copy: input/output error" in error
        assert "the source is untouched" in error
        assert not (disk / "d").exists()
    assert diff_snapshots(before, snapshot_tree(src)) == []


def test_a_disk_failing_at_writeback_ends_a_service_move_before_the_stop(public_root, tmp_path):
    """A live pass is flushed while the service runs: a disk that cannot store the copy is found
    then, and the service is never stopped."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"part-{i}").write_bytes(os.urandom(100 * MIB))
    before = snapshot_tree(src)
    stopped = tmp_path / "stopped"
    spec = {"stop": ["touch", str(stopped)], "start": ["true"], "check": ["true"],
            "cutover": "none"}
    with disk_failing_at_writeback(public_root) as disk:
        result = mover(sys.executable, "move", "--service", json.dumps(spec), src, disk / "d")
        last = result.progress()[-1]
        assert result.returncode == 1 and last["phase"] == "error", result.lines
        assert last["dataState"] == "source" and last["serviceRunsFrom"] == "source"
        assert "the destination disk failed to store the copy: input/output error" in \
            last["error"]
        assert [p["phase"] for p in result.progress()].count("stopping") == 0
        assert not (disk / "d").exists()
    assert not stopped.exists()
    assert diff_snapshots(before, snapshot_tree(src)) == []


# ---------------------------------------------------------------------------------------------
# 3. A mount inside the source


@contextlib.contextmanager
def bind_mounted(what: Path, where: Path, tree: Path) -> Iterator[None]:
    """`what` bind-mounted at `where`; afterwards every mount under `tree` is unmounted, also
    one that a wrong move carried along to another path in it."""
    run("mount", "--bind", what, where)
    try:
        yield
    finally:
        prefix = str(tree) + "/"
        points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                  if line.split()[4].startswith(prefix)]
        for point in sorted(points, key=len, reverse=True):
            if run("umount", point, check=False).returncode != 0:
                run("umount", "-l", point, check=False)


@pytest.mark.parametrize("method", ["copy", "rename"])
@pytest.mark.parametrize("kind", ["bind", "tmpfs"])
def test_a_mount_inside_the_source_is_refused(python, kind, method, public_root, tmpfs,
                                              tmp_path):
    src = tmp_path / "src"
    (src / "data" / "shared").mkdir(parents=True)
    (src / "data" / "mine").write_text("mine")
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "logo.png").write_bytes(os.urandom(4096))
    dst = (tmpfs if method == "copy" else tmp_path) / "moved"
    with contextlib.ExitStack() as stack:
        if kind == "bind":
            stack.enter_context(bind_mounted(assets, src / "data" / "shared", tmp_path))
            source = f"bind of {assets}"
        else:
            mounted = stack.enter_context(mounted_tmpfs("1m", parent=public_root))
            (mounted / "scratch").write_text("theirs")
            stack.enter_context(bind_mounted(mounted, src / "data" / "shared", tmp_path))
            source = "tmpfs"
        before = snapshot_tree(tmp_path)
        for extra in ([], ["--dry-run"]):
            message = _refused(mover(python, "move", *extra, src, dst))
            assert message == (f"{src}/data/shared is a mount point ({source}): unmount it, or "
                               "move it on its own"), message
        assert diff_snapshots(before, snapshot_tree(tmp_path)) == []
        assert not dst.exists()


# ---------------------------------------------------------------------------------------------
# 6. A destination whose parents do not exist


def test_missing_parents_are_made_and_listed_in_the_plan(python, tmpfs, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data")
    dst = tmpfs / "new" / "deeper" / "d"
    dry = mover(python, "move", "--dry-run", src, dst)
    check_stream(dry)
    assert dry.returncode == 0
    made = [str(tmpfs / "new"), str(tmpfs / "new" / "deeper")]
    assert dry.subjects("move.plan")[0]["createdParents"] == made
    assert os.listdir(tmpfs) == []  # a dry run makes nothing
    result = mover(python, "move", src, dst)
    check_complete(result, {"files": 1, "bytes": 4, "dirs": 1}, "copy")
    assert result.subjects("move.plan")[0]["createdParents"] == made
    for path in made:
        st = os.stat(path)
        assert (oct(st.st_mode & 0o7777), st.st_uid) == ("0o755", 0)
    assert (dst / "f").read_text() == "data" and not src.exists()
    # An existing parent: nothing to make.
    again = mover(python, "move", dst, tmpfs / "new" / "e")
    check_complete(again, {"files": 1, "bytes": 4, "dirs": 1}, "rename")
    assert again.subjects("move.plan")[0]["createdParents"] == []


def test_missing_parents_are_made_for_a_rename_and_owned_by_the_user(public_tmp):
    user = ensure_test_user()
    src = public_tmp / "src"
    src.mkdir()
    (src / "f").write_text("data")
    run("chown", "-R", f"{user.pw_uid}:{user.pw_gid}", src)
    dst = public_tmp / "a" / "b" / "d"
    result = mover(USER_PYTHON, "move", src, dst, **as_user())
    check_complete(result, {}, "rename")
    for path in (public_tmp / "a", public_tmp / "a" / "b"):
        st = os.stat(path)
        assert (oct(st.st_mode & 0o7777), st.st_uid) == ("0o755", user.pw_uid)
    assert (dst / "f").read_text() == "data"


@pytest.mark.parametrize("how", ["cancel", "error"])
def test_parents_made_by_a_move_that_does_not_complete_are_removed(how, tmpfs, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a-big").write_bytes(os.urandom(6 * MIB))
    for i in range(5):
        (src / f"small-{i}").write_text(str(i))
    (tmpfs / "kept").mkdir()
    proc = start(sys.executable, "move", "--bwlimit", "4M", src, tmpfs / "kept" / "x" / "y" / "d")
    seen: list[bytes] = []
    wait_for_copying(proc, seen)
    assert os.path.isdir(tmpfs / "kept" / "x" / "y")
    if how == "cancel":
        proc.send_signal(signal.SIGINT)
    else:
        for i in range(5):
            (src / f"small-{i}").unlink()
    result = finish(proc, seen)
    check_stream(result)
    last = result.progress()[-1]
    assert last["phase"] == ("cancelled" if how == "cancel" else "error")
    assert last["dataState"] == "source"
    assert os.listdir(tmpfs) == ["kept"] and os.listdir(tmpfs / "kept") == []


# ---------------------------------------------------------------------------------------------
# 7. Texts that must be true


def failed_after_copying_more(result) -> str:
    """failed_at_source for a source that grew: more bytes were copied than were counted, so
    check_stream's bound on bytesCopied does not hold; the error."""
    last = result.progress()[-1]
    assert (result.returncode, last["phase"], last["dataState"]) == (1, "error", "source")
    assert result.stderr.strip() == "servermove-mover: " + last["error"]
    return last["error"]


def test_a_file_appearing_mid_copy_is_the_one_named(tmp_path, tmpfs):
    """The count overflows at whichever file the walk meets last, most likely one that was
    always there: the error names the new one."""
    src = tmp_path / "src"
    (src / "later").mkdir(parents=True)
    (src / "big").write_bytes(os.urandom(6 * MIB))  # a root's files come before its subdirs
    for i in range(30):
        (src / "later" / f"old-{i}").write_text(str(i))
    proc = start(sys.executable, "move", "--bwlimit", "4M", src, tmpfs / "d")
    seen: list[bytes] = []
    wait_for_copying(proc, seen)
    (src / "later" / "new").write_text("new")
    after = snapshot_tree(src)
    error = failed_after_copying_more(finish(proc, seen))
    assert error.startswith("files appeared in the source during the move (31 counted before "
                            f"copying, more found), e.g. {src}/later/new was created or changed "
                            "since it was counted — "), error
    assert "old-" not in error
    assert diff_snapshots(after, snapshot_tree(src)) == [] and os.listdir(tmpfs) == []


def test_a_file_growing_mid_copy_says_what_changed(python, tmp_path, tmpfs):
    src = tmp_path / "src"
    (src / "later").mkdir(parents=True)
    (src / "big").write_bytes(os.urandom(6 * MIB))
    (src / "later" / "grow.log").write_text("line\n")
    proc = start(python, "move", "--bwlimit", "4M", src, tmpfs / "d")
    seen: list[bytes] = []
    wait_for_copying(proc, seen)
    with open(src / "later" / "grow.log", "a") as log:
        log.write("x" * 512)
    error = failed_after_copying_more(finish(proc, seen))
    total = 6 * MIB + 5
    assert error.startswith(f"the source changed during the move: the files held {total:,} "
                            f"bytes when counted and {total + 512:,} when copied (512 bytes "
                            f"more), e.g. {src}/later/grow.log was created or changed since it "
                            "was counted — stop what writes to"), error
    assert os.listdir(tmpfs) == []


def test_files_changed_while_cleaning_are_said_to_be_newer_in_the_source(tmp_path, tmpfs):
    src = tmp_path / "src"
    for d in range(4):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(200):
            (src / f"d{d}" / f"f{f}").write_text(f"{d}-{f}")
    dst = tmpfs / "d"
    proc = start(rigged("slow-clean"), "move", src, dst)
    seen: list[bytes] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if b'"phase":"cleaning"' in line:
            break
    changed = []
    for path in sorted(src.rglob("f*")):  # a writer still at work on the source
        with contextlib.suppress(FileNotFoundError):
            with open(path, "r+") as f:
                f.write("newer!")
            changed.append(path)
    result = finish(proc, seen)
    check_stream(result)
    last = result.progress()[-1]
    assert (result.returncode, last["phase"], last["dataState"]) == (1, "error", "destination")
    error = last["error"]
    assert error.startswith(f"{dst} holds the whole move as verified, but "), error
    assert f"copied and were kept: the source's versions are newer than the copy in {dst} (" \
        in error, error
    kept = [p for p in changed if p.exists()]
    assert kept and any(str(path) in error for path in kept)
    for path in kept:
        assert path.read_text().startswith("newer!")


def test_an_own_unreadable_file_does_not_say_run_as_its_owner(public_tmp, tmpfs):
    user = ensure_test_user()
    src = public_tmp / "src"
    src.mkdir()
    (src / "locked").write_text("mine")
    run("chown", "-R", f"{user.pw_uid}:{user.pw_gid}", src)
    os.chmod(src / "locked", 0)
    message = _refused(mover(USER_PYTHON, "move", src, tmpfs / "d", **as_user()))
    assert message == (f"cannot read file {src}/locked: its mode (000) keeps out even its owner, "
                       "the user running the move — give it back (chmod u+r "
                       f"{src}/locked) and run the move again"), message
    assert os.listdir(tmpfs) == []


def test_an_empty_bwlimit_is_refused(tmp_path, tmpfs):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    result = servermove("move", "--bwlimit", "", "local", src, tmpfs / "d")
    assert result.returncode == 2, result
    assert "bad --bwlimit ''" in result.stderr
    assert (src / "f").exists() and os.listdir(tmpfs) == []


def test_a_sparse_file_leaves_the_space_it_does_not_take(tmp_path, tmpfs):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "disk.img", "wb") as image:
        image.truncate(50 << 30)
        image.write(b"boot")
    result = mover(sys.executable, "move", "--dry-run", src, tmpfs / "d")
    check_stream(result)
    plan = next(e for e in result.events if isinstance(e, protocol.PlanEvent))
    assert plan.bytes_total == 50 << 30 and plan.bytes_needed is not None
    assert plan.bytes_needed < 1 * MIB < plan.dst_free_bytes
    line = _plan_line(plan)
    free = plan.dst_free_bytes - plan.bytes_needed
    free_part = next(part for part in line.split("; ") if part.endswith("free after"))
    assert free_part == f"{human_size(free)} free after"
    lines = plan_lines(plan)
    assert f"Free at the destination after the move: {human_size(free)}" in lines


def test_a_hard_link_to_a_file_outside_the_source_is_warned_about(tmp_path, tmpfs):
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "outside").write_text("shared")
    os.link(tmp_path / "outside", src / "linked")
    (src / "inner-a").write_text("inner")
    os.link(src / "inner-a", src / "inner-b")  # both names inside: no warning
    result = mover(sys.executable, "move", src, tmpfs / "d")
    check_complete(result, {"files": 3, "bytes": 11, "dirs": 1}, "copy")
    warnings = result.subjects("move.warning")
    assert [w["message"] for w in warnings] == [
        f"{src}/linked has hard links outside the source: its copy at {tmpfs}/d is a file of "
        "its own, no longer linked to them"]
    assert (tmpfs / "d" / "linked").read_text() == "shared"
    assert (tmp_path / "outside").read_text() == "shared"


def test_a_second_ctrl_c_does_not_say_the_move_goes_on(tmp_path, tmpfs):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(8 * MIB))
    process = start_json_move("--bwlimit", "1M", "local", src, tmpfs / "d")
    wait_for_cli_copying(process)
    process.send_signal(signal.SIGINT)
    # Apart, or the kernel merges the two; close, so the cancel (the worker polls for it every
    # 0.25 s, then cleans up) is still under way.
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _out, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "goes on" not in stderr
    assert "stopped waiting for the cancel" in stderr


@contextlib.contextmanager
def exfat_disk(parent: Path, tmp_path: Path) -> Iterator[Path]:
    """A real exFAT filesystem (FUSE: this kernel has no exFAT driver) on a loop device."""
    image = tmp_path / "exfat.img"
    image.write_bytes(b"")
    os.truncate(image, 64 * MIB)
    with loop_mount(image, ["mkfs.exfat"], parent, mount=("mount.exfat-fuse",)) as point:
        yield point


def test_a_destination_that_cannot_keep_the_source_is_refused_up_front(python, public_root,
                                                                       tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("data")
    os.symlink("a", src / "link")
    before = snapshot_tree(src)
    with exfat_disk(public_root, tmp_path) as disk:
        message = _refused(mover(python, "move", src, disk / "d"))
        assert message == (
            f"the destination filesystem (fuseblk at {disk}) cannot keep the source's "
            "permission modes, nanosecond times, symbolic links (e.g. "
            f"{src}) — move it to a filesystem that can, such as ext4, xfs or btrfs"), message
        assert os.listdir(disk) == []
        # A dry run writes nothing, so it cannot probe: its plan says so.
        dry = mover(python, "move", "--dry-run", src, disk / "d")
        assert dry.returncode == 0 and dry.last["data"]["destinationProbed"] is False
        assert os.listdir(disk) == []
    assert diff_snapshots(before, snapshot_tree(src)) == []
