"""remote/mover.py against what a live server has: a disk that fails only at write-back, mounts
inside the source, a destination whose parents are missing, and the texts a move says when the
source changes under it. Real loop devices, mounts and processes; helpers from test_mover."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fstree import diff_snapshots, snapshot_tree
from tests.harness import as_user, ensure_test_user, mounted_tmpfs, run
from tests.test_mover import (
    _refused,
    check_complete,
    check_stream,
    failed_at_source,
    finish,
    interpreter,
    mover,
    USER_PYTHON,
    start,
    wait_for_copying,
)

MIB = 1024 * 1024


@pytest.fixture(params=["default", "py3.6", "py3.13"])
def python(request) -> str:
    return interpreter(request.param)


@contextlib.contextmanager
def loop_mount(image: Path, mkfs: list[str], parent: Path) -> Iterator[Path]:
    """A filesystem made by `mkfs` on a loop device over `image`, mounted; unmounted and the
    loop device detached afterwards, whatever happens."""
    loop = run("losetup", "-f", "--show", image).stdout.strip()
    try:
        run(*mkfs, loop)
        point = Path(tempfile.mkdtemp(prefix="sm-loop-", dir=parent))
        point.chmod(0o755)
        try:
            run("mount", loop, point)
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


# ---------------------------------------------------------------------------------------------
# 3. A mount inside the source


@contextlib.contextmanager
def bind_mounted(what: Path, where: Path) -> Iterator[None]:
    run("mount", "--bind", what, where)
    try:
        yield
    finally:
        if run("umount", where, check=False).returncode != 0:
            run("umount", "-l", where, check=False)


@pytest.mark.parametrize("method", ["copy", "rename"])
@pytest.mark.parametrize("kind", ["bind", "tmpfs"])
def test_a_mount_inside_the_source_is_refused(kind, method, public_root, tmpfs, tmp_path):
    src = tmp_path / "src"
    (src / "data" / "shared").mkdir(parents=True)
    (src / "data" / "mine").write_text("mine")
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "logo.png").write_bytes(os.urandom(4096))
    dst = (tmpfs if method == "copy" else tmp_path) / "moved"
    with contextlib.ExitStack() as stack:
        if kind == "bind":
            stack.enter_context(bind_mounted(assets, src / "data" / "shared"))
            source = f"bind of {assets}"
        else:
            mounted = stack.enter_context(mounted_tmpfs("1m", parent=public_root))
            (mounted / "scratch").write_text("theirs")
            stack.enter_context(bind_mounted(mounted, src / "data" / "shared"))
            source = "tmpfs"
        before = snapshot_tree(tmp_path)
        for extra in ([], ["--dry-run"]):
            message = _refused(mover(sys.executable, "move", *extra, src, dst))
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
