"""A move cut short is finished by running it again; the journal's own disk filling up.

Real `kill -9` of the detached worker (as a reboot or the OOM killer would), through the real
sshd as the unprivileged user, and a tiny real tmpfs for the journal.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli_support import servermove, start_json_move, wait_for_copying
from tests.fstree import build_everything_tree, diff_snapshots, snapshot_tree
from tests.harness import SshServer, as_user, fill_up, mounted_tmpfs, run
from tests.test_mover import MOVER, RIGGED_MOVER, USER_PYTHON, check_stream, mover
from tui.core import protocol
from tui.core.wording import plan_line as _plan_line

STAGING = ".servermove-staging-"


def ssh_cli(sshd: SshServer, *args: object, **kwargs) -> subprocess.CompletedProcess:
    return servermove(*args[:1], "--ssh-config", sshd.config_file, *args[1:], **kwargs)


def wait_until(what: str, condition: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {timeout} s: {what}")
        time.sleep(0.05)


def state_of(mdir: Path) -> dict:
    return json.loads((mdir / "state.json").read_text())


def records(mdir: Path) -> list[list]:
    """The files the journal recorded as copied (a line being written is skipped)."""
    path = mdir / "copied.jsonl"
    found = []
    for line in path.read_text().splitlines() if path.exists() else []:
        with contextlib.suppress(ValueError):
            found.append(json.loads(line))
    return found


def files_removed(mdir: Path) -> int:
    """The most source files the move's journal says it removed (a line being written is
    skipped)."""
    removed = 0
    for line in (mdir / "events.jsonl").read_text().splitlines():
        with contextlib.suppress(ValueError):
            removed = max(removed, json.loads(line)["data"].get("filesRemoved", 0))
    return removed


def kill_worker(mdir: Path) -> None:
    """SIGKILL the move's detached worker, as a reboot or the OOM killer would, and wait for it."""
    pid = state_of(mdir)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until("the worker is gone", lambda: not Path(f"/proc/{pid}").exists(), 10)


def build_tree(src: Path, owner: str = "smtest") -> None:
    """Every kind of entry the mover keeps, plus enough bytes to be caught mid-copy at 1 MiB/s."""
    build_everything_tree(src, privileged=False)
    # At the top: a directory's files are copied before its subdirectories.
    for i in range(8):
        (src / f"part-{i}.bin").write_bytes(os.urandom(400_000 + i))
    os.link(src / "part-0.bin", src / "part-0-again.bin")
    run("chown", "-R", f"{owner}:{owner}", src)
    os.chmod(src / "modes" / "no-perms", 0o400)  # its owner must be able to read it


def progress_of(stdout: str) -> list[dict]:
    lines = [json.loads(line) for line in stdout.splitlines()]
    return [m["data"] for m in lines if "phase" in m["data"]]


def plan_of(stdout: str) -> dict:
    plans = [m for m in map(json.loads, stdout.splitlines()) if "method" in m["data"]
             and "counted" in m["data"]]
    assert plans, stdout
    return plans[0]["data"]


def big_parts_recorded(mdir: Path) -> int:
    return len([r for r in records(mdir) if r[0].startswith("part-")])


def plan_text(stdout: str) -> str:
    """The plan line the CLI shows without --json, from the plan event of a --json run."""
    [event] = [e for e in map(protocol.parse_line, stdout.splitlines())
               if isinstance(e, protocol.PlanEvent)]
    return _plan_line(event)


def start_and_kill_mid_copy(sshd: SshServer, src: Path, dst: Path, journal: Path) -> Path:
    """Start the move through sshd, throttled; SIGKILL its worker once the journal has recorded
    two of the big files as copied (the client is killed first: nobody is watching). Its
    journal directory."""
    client = start_json_move("--bwlimit", "1M", "--ssh-config", sshd.config_file, sshd.alias,
                             src, dst)
    try:
        mdir = journal / "moves" / wait_for_copying(client)["moveId"]
        wait_until("copies recorded in the journal", lambda: big_parts_recorded(mdir) >= 2)
    finally:
        client.kill()
        client.wait()
    kill_worker(mdir)
    return mdir


def user_journal(sshd: SshServer) -> Path:
    return Path(f"/home/{sshd.user}/.local/state/servermove")


def test_killed_while_copying_the_same_move_again_resumes_it(sshd, public_tmp, tmpfs):
    src, dst = public_tmp / "src", tmpfs / "dst"
    build_tree(src)
    before = snapshot_tree(src)
    dead = start_and_kill_mid_copy(sshd, src, dst, user_journal(sshd))
    assert diff_snapshots(before, snapshot_tree(src)) == []
    [staging] = [p for p in tmpfs.iterdir() if p.name.startswith(STAGING)]

    listed = ssh_cli(sshd, "moves", "--json", sshd.alias)
    entry = next(json.loads(line) for line in listed.stdout.splitlines()
                 if json.loads(line)["moveId"] == dead.name)
    assert "run the same move again to finish it" in entry["error"], entry
    assert str(staging) in entry["error"]

    again = ssh_cli(sshd, "move", "--json", sshd.alias, src, dst, timeout=120)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr
    assert plan_of(again.stdout)["resumes"]["moveId"] == dead.name
    assert f"resumes move {dead.name}, cut short: its finished copies are reused" in plan_text(
        again.stdout)
    last = progress_of(again.stdout)[-1]
    assert last["phase"] == "complete"
    assert 0 < last["bytesReused"] < last["bytesCopied"] == last["bytesTotal"]
    assert last["bytesVerified"] == last["bytesTotal"]  # reused copies compared too
    assert diff_snapshots(before, snapshot_tree(dst)) == []
    assert sorted(p.name for p in tmpfs.iterdir()) == ["dst"]  # the dead staging is gone
    assert not src.exists()
    taken = state_of(dead)
    assert taken["takenOverBy"] == last["moveId"] and not (dead / "copied.jsonl").exists()


def test_a_file_changed_after_the_kill_is_copied_again_not_reused(sshd, public_tmp, tmpfs):
    src, dst = public_tmp / "src", tmpfs / "dst"
    build_tree(src)
    dead = start_and_kill_mid_copy(sshd, src, dst, user_journal(sshd))
    # A file the dead move had finished copying is rewritten in place: same size, and its
    # mtime put back, so only its ctime tells (and --verify size compares no contents).
    recorded = [r for r in records(dead) if r[0].startswith("part-")]
    changed = src / recorded[0][0]
    st = changed.stat()
    changed.write_bytes(os.urandom(st.st_size))
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns))
    before = snapshot_tree(src)

    again = ssh_cli(sshd, "move", "--json", "--verify", "size", sshd.alias, src, dst,
                    timeout=120)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr
    last = progress_of(again.stdout)[-1]
    assert last["phase"] == "complete" and last["bytesReused"] > 0
    assert diff_snapshots(before, snapshot_tree(dst)) == []  # the new content, not the old
    assert sorted(p.name for p in tmpfs.iterdir()) == ["dst"]


def test_killed_while_cleaning_the_same_move_again_finishes_it(sshd, public_tmp, tmpfs):
    src, dst = public_tmp / "src", tmpfs / "dst"
    build_tree(src)
    before = snapshot_tree(src)
    journal = user_journal(sshd)
    # The worker runs as the user the sshd logins are, with that user's journal; rigged to
    # remove a file a tenth of a second so that it can be caught cleaning.
    started = subprocess.run([USER_PYTHON, str(RIGGED_MOVER), "inline,slower-clean", "start",
                              str(src), str(dst)], capture_output=True, text=True, timeout=60,
                             **as_user())
    assert started.returncode == 0, started.stdout + started.stderr
    move_id = json.loads(started.stdout.splitlines()[-1])["data"]["moveId"]
    mdir = journal / "moves" / move_id
    wait_until("three source files removed", lambda: files_removed(mdir) >= 3)
    kill_worker(mdir)
    assert src.exists() and diff_snapshots(before, snapshot_tree(dst)) == []

    listed = ssh_cli(sshd, "moves", "--json", sshd.alias)
    entry = next(json.loads(line) for line in listed.stdout.splitlines()
                 if json.loads(line)["moveId"] == move_id)
    assert entry["phase"] == "error" and "while cleaning" in entry["error"]
    assert "run the same move again to finish it" in entry["error"]
    attached = ssh_cli(sshd, "attach", "--json", sshd.alias, move_id)
    assert "run the same move again to finish it" in progress_of(attached.stdout)[-1]["error"]

    again = ssh_cli(sshd, "move", "--json", sshd.alias, src, dst, timeout=120)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr
    assert plan_of(again.stdout)["resumes"] == {"moveId": move_id, "finishes": True,
                                                "staging": None}
    assert f"plan: finish move {move_id}, cut short while removing the source" in plan_text(
        again.stdout)
    phases = [p["phase"] for p in progress_of(again.stdout)]
    assert phases[0] == "calculating" and phases[-2:] == ["cleaning", "complete"]
    assert "copying" not in phases
    assert not src.exists()
    assert diff_snapshots(before, snapshot_tree(dst)) == []


def test_a_destination_that_is_not_a_dead_moves_copy_is_refused_without_advising_to_delete_it(
        public_tmp, tmpfs):
    src, dst = public_tmp / "src", tmpfs / "dst"
    build_tree(src, owner="root")
    dst.mkdir()
    (dst / "only-copy.txt").write_text("the source no longer has this")
    result = mover(sys.executable, "move", src, dst)
    assert result.returncode == 2
    error = result.last["data"]["error"]
    assert "exists and is not empty" in error and "empty it" not in error
    assert "check it before deleting anything" in error
    assert (dst / "only-copy.txt").read_text() == "the source no longer has this"


def start_rigged(ways: str, src: Path, dst: Path) -> str:
    """Start a detached move as root with a fault staged (rigged_mover.py); its id."""
    started = subprocess.run([sys.executable, str(RIGGED_MOVER), ways, "start", str(src),
                              str(dst)], capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stdout + started.stderr
    return json.loads(started.stdout.splitlines()[-1])["data"]["moveId"]


def assert_rerun_refused_and_source_kept(src: Path, dst: Path, before) -> None:
    again = mover(sys.executable, "move", src, dst)
    assert again.returncode == 2, again.lines
    error = again.last["data"]["error"]
    assert f"destination {dst} holds an earlier copy that is not in use" in error
    assert f"the source {src} is whole): empty it, then run the move again" in error
    assert diff_snapshots(before, snapshot_tree(src)) == []


def test_a_move_whose_flush_after_the_rename_failed_is_not_finished_by_cleaning(public_tmp,
                                                                                 tmpfs):
    """The flush after the rename failed (`both`, "delete DST and run the move again"): run
    again without deleting DST, the move must not clean SRC against a copy never flushed."""
    src, dst = public_tmp / "src", tmpfs / "dst"
    build_tree(src, owner="root")
    before = snapshot_tree(src)
    move_id = start_rigged("eio-after-rename", src, dst)
    end = mover(sys.executable, "attach", move_id).last["data"]
    assert end["phase"] == "error" and end["dataState"] == "both", end
    assert f"delete {dst} and run the move again" in end["error"]
    assert_rerun_refused_and_source_kept(src, dst, before)


def test_a_worker_killed_after_putting_its_copy_on_a_new_disk_is_not_taken_for_cleaning(
        public_tmp, tmpfs):
    """DST is a mount point (always there) and the worker is killed after the rename, before
    the flush that makes it durable: the reaper says the source is whole and the copy at DST is
    not in use, and running the move again is refused rather than cleaning SRC."""
    src = public_tmp / "src"
    build_tree(src, owner="root")
    before = snapshot_tree(src)
    move_id = start_rigged("stall-after-rename", src, tmpfs)
    mdir = Path(os.environ["SERVERMOVE_JOURNAL_DIR"]) / "moves" / move_id
    wait_until("the copy renamed into place", lambda: (tmpfs / "part-0.bin").exists() and not [
        p for p in tmpfs.iterdir() if p.name.startswith(STAGING)])
    time.sleep(0.3)  # into the stalled flush
    kill_worker(mdir)
    [state] = [line["data"] for line in mover(sys.executable, "list").lines
               if line["subject"] == "move.listed"]
    assert state["dataState"] == "both" and "complete and verified" not in state["error"]
    assert f"the source {src} is whole; {tmpfs} may hold this move's copy" in state["error"]
    assert_rerun_refused_and_source_kept(src, tmpfs, before)


@pytest.mark.parametrize("name", ["default", "py3.6", "py3.13"])
def test_resume_on_every_interpreter(name, public_tmp, tmpfs):
    """The local mover (no sshd): start, kill -9 mid-copy, `move` again in the foreground."""
    from tests.test_mover import interpreter

    python = interpreter(name)
    src, dst = public_tmp / "src", tmpfs / "dst"
    build_tree(src, owner="root")
    before = snapshot_tree(src)
    started = mover(python, "start", "--bwlimit", "1M", src, dst)
    assert started.returncode == 0, started.stderr
    mdir = Path(started.subjects("move.started")[0]["journal"])
    wait_until("copies recorded in the journal", lambda: len(records(mdir)) >= 3)
    kill_worker(mdir)
    again = mover(python, "move", src, dst)
    check_stream(again)
    assert again.returncode == 0, again.last
    assert again.subjects("move.plan")[0]["resumes"]["moveId"] == mdir.name
    assert again.progress()[-1]["bytesReused"] > 0
    assert diff_snapshots(before, snapshot_tree(dst)) == []
    assert sorted(p.name for p in tmpfs.iterdir()) == ["dst"]


def test_a_foreground_move_takes_the_same_source_lock(public_tmp, tmpfs):
    src = public_tmp / "src"
    build_tree(src, owner="root")
    started = mover(sys.executable, "start", "--bwlimit", "1M", src, tmpfs / "a")
    move_id = started.subjects("move.started")[0]["moveId"]
    second = mover(sys.executable, "move", src, tmpfs / "b")
    assert second.returncode == 2
    assert f"already being moved (move {move_id})" in second.last["data"]["error"]
    mover(sys.executable, "cancel", move_id)
    assert mover(sys.executable, "attach", move_id).returncode == 3
    # ...and a foreground move holds it against a detached one.
    foreground = subprocess.Popen([sys.executable, str(MOVER), "move", "--bwlimit", "1M",
                                   str(src), str(tmpfs / "b")], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
    try:
        assert foreground.stdout is not None
        for line in foreground.stdout:
            if b'"copying"' in line:
                break
        refused = mover(sys.executable, "start", src, tmpfs / "c")
        assert refused.returncode == 2
        assert "run in the foreground" in refused.last["data"]["error"]
    finally:
        foreground.send_signal(signal.SIGINT)
        foreground.wait(30)
    assert foreground.returncode == 3 and not (tmpfs / "c").exists()


@pytest.fixture
def journal_disk(public_root: Path, monkeypatch: pytest.MonkeyPatch):
    """A real 16 MiB tmpfs holding the journal (SERVERMOVE_JOURNAL_DIR)."""
    with mounted_tmpfs("16m", parent=public_root) as path:
        monkeypatch.setenv("SERVERMOVE_JOURNAL_DIR", str(path / "journal"))
        yield path


def test_a_full_journal_disk_is_refused_before_anything_is_written(public_tmp, tmpfs,
                                                                  journal_disk):
    src = public_tmp / "src"
    build_tree(src, owner="root")
    before = snapshot_tree(src)
    fill_up(journal_disk / "filler")
    result = mover(sys.executable, "start", src, tmpfs / "dst")
    assert result.returncode == 2
    error = result.last["data"]["error"]
    assert "move journal" in error and "is full" in error and "free some space" in error
    assert "nothing was changed" in error and "internal error" not in error
    assert list(tmpfs.iterdir()) == []
    assert diff_snapshots(before, snapshot_tree(src)) == []
    # A foreground move keeps no journal: it still runs.
    assert mover(sys.executable, "move", src, tmpfs / "dst").returncode == 0
    assert diff_snapshots(before, snapshot_tree(tmpfs / "dst")) == []


def terminal_events(mdir: Path) -> list[dict]:
    out = []
    for line in (mdir / "events.jsonl").read_text().splitlines():
        data = json.loads(line)["data"]
        if data.get("phase") in ("complete", "error", "cancelled"):
            out.append(data)
    return out


def test_a_journal_disk_filling_up_mid_move_fails_it_cleanly(public_tmp, tmpfs, journal_disk):
    src = public_tmp / "src"
    build_tree(src, owner="root")
    before = snapshot_tree(src)
    started = mover(sys.executable, "start", "--bwlimit", "1M", src, tmpfs / "dst")
    assert started.returncode == 0, started.stderr
    mdir = Path(started.subjects("move.started")[0]["journal"])
    wait_until("copying", lambda: state_of(mdir)["phase"] == "copying")
    fill_up(journal_disk / "filler")
    attached = mover(sys.executable, "attach", mdir.name)
    assert attached.returncode == 1
    last = attached.progress()[-1]
    assert last["phase"] == "error" and last["dataState"] == "source"
    assert "the move journal in" in last["error"] and "no space left" in last["error"]
    assert "the source is untouched" in last["error"] and "internal error" not in last["error"]
    assert diff_snapshots(before, snapshot_tree(src)) == []
    assert list(tmpfs.iterdir()) == []  # the staging was removed
    assert_reading_twice_repairs_nothing(mdir)


def test_a_killed_worker_on_a_full_journal_disk_is_reaped_once(public_tmp, tmpfs, journal_disk):
    src = public_tmp / "src"
    build_tree(src, owner="root")
    before = snapshot_tree(src)
    started = mover(sys.executable, "start", "--bwlimit", "1M", src, tmpfs / "dst")
    mdir = Path(started.subjects("move.started")[0]["journal"])
    wait_until("copying", lambda: state_of(mdir)["phase"] == "copying")
    kill_worker(mdir)
    fill_up(journal_disk / "filler")
    listed = mover(sys.executable, "list")
    assert listed.returncode == 0, listed.last
    [entry] = listed.subjects("move.listed")
    assert entry["phase"] == "error" and "stopped without finishing" in entry["error"]
    assert_reading_twice_repairs_nothing(mdir)
    assert diff_snapshots(before, snapshot_tree(src)) == []


def assert_reading_twice_repairs_nothing(mdir: Path) -> None:
    events = (mdir / "events.jsonl").read_bytes()
    for _ in range(2):
        listed = mover(sys.executable, "list")
        assert listed.returncode == 0, listed.last
        assert [e["phase"] for e in listed.subjects("move.listed")] == ["error"]
        attached = mover(sys.executable, "attach", mdir.name)
        assert attached.returncode == 1 and attached.progress()[-1]["phase"] == "error"
    assert (mdir / "events.jsonl").read_bytes() == events
    assert len(terminal_events(mdir)) == 1


def kill_after_four_copies(src: Path, dst: Path) -> Path:
    started = mover(sys.executable, "start", "--bwlimit", "1M", src, dst)
    mdir = Path(started.subjects("move.started")[0]["journal"])
    wait_until("four copies recorded", lambda: len(records(mdir)) >= 4)
    kill_worker(mdir)
    return mdir


def six_parts(src: Path) -> None:
    src.mkdir()
    for i in range(6):
        (src / f"part-{i}.bin").write_bytes(os.urandom(500_000))


def test_the_free_space_check_counts_what_the_dead_staging_holds(public_tmp, public_root):
    """4 MiB of disk, 3 MB to move, 2 MB of it already in the dead move's staging: without
    counting those, the retry would be refused for space its own leftovers take."""
    src = public_tmp / "src"
    six_parts(src)
    before = snapshot_tree(src)
    with mounted_tmpfs("4m", parent=public_root, mode="0777") as disk:
        kill_after_four_copies(src, disk / "dst")
        again = mover(sys.executable, "move", src, disk / "dst")
        assert again.returncode == 0, again.last
        plan = again.subjects("move.plan")[0]
        assert plan["dstFreeBytes"] < plan["bytesTotal"]  # it would not fit a second time
        assert again.progress()[-1]["bytesReused"] >= 2_000_000
        assert diff_snapshots(before, snapshot_tree(disk / "dst")) == []
        assert sorted(p.name for p in disk.iterdir()) == ["dst"]


def test_a_refusal_for_space_names_the_dead_staging_that_takes_it(public_tmp, public_root):
    src = public_tmp / "src"
    six_parts(src)
    with mounted_tmpfs("4m", parent=public_root, mode="0777") as disk:
        dead = kill_after_four_copies(src, disk / "dst")
        for part in src.iterdir():  # every file changed: nothing of the staging can be reused
            part.write_bytes(os.urandom(500_000))
        before = snapshot_tree(src)
        [staging] = disk.iterdir()
        refused = mover(sys.executable, "move", src, disk / "dst")
        assert refused.returncode == 2
        error = refused.last["data"]["error"]
        assert error.startswith("not enough space on")
        assert f"{staging}, the partial copy left by the move {dead.name} cut short" in error
        assert diff_snapshots(before, snapshot_tree(src)) == []
        assert list(disk.iterdir()) == [staging]  # nothing written, nothing deleted
