"""Programs that use the source while it is moved (issue 13, section 2): real processes hold files
under SRC open, mapped or as their working directory, and the mover must see them.

A program that keeps SRC/logs/console.log open for writing would go on writing into the removed
inode after a copy-move: every later line lost. So the mover refuses before anything is written,
and checks again just before the copy is put in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli_support import servermove, start_json_move
from tests.cli_support import wait_for_copying as wait_for_json_copying
from tests.fstree import diff_snapshots, snapshot_tree
from tests.harness import as_user, run
from tests.test_mover import (
    USER_PYTHON,
    Result,
    check_complete,
    check_stream,
    failed_at_source,
    finish,
    interpreter,
    mover,
    staging_left,
    start,
    wait_for_copying,
)
from tui.core import protocol
from tui.core.wording import plan_line as _plan_line
from tui.core.wording import plan_lines

# One small program for every way of using a file: it sets itself up, says "ready", then waits
# (the "append" mode writes a numbered line every 20 ms, as a running server's log does).
HOLDER = r"""
import mmap, os, sys, time
mode, path = sys.argv[1], sys.argv[2]
if mode == "cwd":
    os.chdir(path)
elif mode == "read":
    f = open(path, "rb")
elif mode in ("hold", "append"):
    f = open(path, "ab", buffering=0)
elif mode in ("mmap-shared", "mmap-private"):
    shared = mode == "mmap-shared"
    fd = os.open(path, os.O_RDWR if shared else os.O_RDONLY)
    m = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE,
                  prot=mmap.PROT_READ | mmap.PROT_WRITE)
    os.close(fd)
    # mmap keeps a duplicate of the descriptor: close it too, so that only the mapping is left.
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + name) == os.path.realpath(path):
                os.close(int(name))
        except OSError:
            pass
print("ready", flush=True)
n = 0
while True:
    if mode == "append":
        f.write(b"line %d\n" % n)
        n += 1
    time.sleep(0.02)
"""

Hold = Callable[..., subprocess.Popen]


@pytest.fixture(params=["default", "py3.6", "py3.13"])
def python(request) -> str:
    return interpreter(request.param)


@pytest.fixture
def hold() -> Iterator[Hold]:
    """Start a real process that uses a path (see HOLDER); every one is killed at the end."""
    procs: list[subprocess.Popen] = []

    def start_holder(mode: str, path: Path, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen([USER_PYTHON, "-c", HOLDER, mode, str(path)], cwd="/",
                                stdout=subprocess.PIPE, **kwargs)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        return proc

    try:
        yield start_holder
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def command_of(proc: subprocess.Popen) -> str:
    return Path(f"/proc/{proc.pid}/comm").read_text().strip()


def server_tree(src: Path) -> None:
    """A game server's directory: a world, a log, and a big file that takes a while to copy."""
    (src / "logs").mkdir(parents=True)
    (src / "logs" / "console.log").write_text("[boot] server started\n")
    (src / "world").mkdir()
    (src / "world" / "level.dat").write_bytes(os.urandom(64 * 1024))
    (src / "world" / "region.bin").write_bytes(os.urandom(8 * 1024 * 1024))


def refused(result: Result, *needles: str) -> str:
    check_stream(result)
    assert result.returncode == 2, result.lines
    last = result.progress()[-1]
    assert last["phase"] == "error" and last["dataState"] == "source"
    assert not result.subjects("move.plan")
    assert [p["phase"] for p in result.progress()] == ["calculating", "error"]
    for needle in needles:
        assert needle in last["error"], last["error"]
    return last["error"]


def without(snapshot: dict[bytes, dict], rel: bytes) -> dict[bytes, dict]:
    return {key: value for key, value in snapshot.items() if key != rel}


# ---------------------------------------------------------------------------------------------
# Refused before anything is written


@pytest.mark.parametrize("same_fs", [False, True], ids=["copy", "rename"])
def test_a_program_writing_a_log_is_refused_before_anything_is_written(python, same_fs, hold,
                                                                       tmp_path, tmpfs):
    """A rename too: the program's open file would follow the move, but the program still uses
    SRC's path and would make it anew on its next open."""
    src = tmp_path / "src"
    server_tree(src)
    before = snapshot_tree(src)
    log = src / "logs" / "console.log"
    writer = hold("append", log)
    dst = (tmp_path if same_fs else tmpfs) / "moved"
    result = mover(python, "move", src, dst)
    error = refused(result, f"pid {writer.pid} ({command_of(writer)})", str(log),
                    "open for writing", "stop that program first")
    assert "\n" not in error
    assert not dst.exists() and staging_left(dst.parent) == []
    writer.kill()
    writer.wait()
    # Everything as it was, and the log holds every line the writer wrote, in order.
    after = snapshot_tree(src)
    assert diff_snapshots(without(before, b"logs/console.log"),
                          without(after, b"logs/console.log")) == []
    lines = log.read_text().splitlines()
    assert lines[0] == "[boot] server started" and len(lines) > 1
    assert lines[1:] == [f"line {n}" for n in range(len(lines) - 1)]


def test_a_dry_run_with_a_writer_is_refused_too(hold, tmp_path, tmpfs):
    src = tmp_path / "src"
    server_tree(src)
    writer = hold("hold", src / "logs" / "console.log")
    result = mover(sys.executable, "move", "--dry-run", src, tmpfs / "moved")
    refused(result, f"pid {writer.pid}")


@pytest.mark.parametrize("mode, word", [("mmap-shared", "has {} mapped for writing"),
                                        ("cwd", "works in {} (its working directory)")])
def test_a_shared_writable_mapping_or_a_working_directory_is_refused(mode, word, hold, tmp_path,
                                                                     tmpfs):
    src = tmp_path / "src"
    server_tree(src)
    before = snapshot_tree(src)
    target = src / "world" / "level.dat" if mode == "mmap-shared" else src / "world"
    user = hold(mode, target)
    result = mover(sys.executable, "move", src, tmpfs / "moved")
    refused(result, f"pid {user.pid} ({command_of(user)}) " + word.format(target),
            "stop that program first")
    assert os.listdir(tmpfs) == []
    assert diff_snapshots(before, snapshot_tree(src)) == []


# ---------------------------------------------------------------------------------------------
# Readers: a warning, and the move goes on


@pytest.mark.parametrize("mode", ["read", "mmap-private"])
def test_a_program_that_only_reads_is_a_warning_and_the_move_goes_on(python, mode, hold,
                                                                     tmp_path, tmpfs):
    """A private mapping, even a writable one, never writes to its file: a reader."""
    src = tmp_path / "src"
    server_tree(src)
    facts = {"files": 3, "dirs": 3, "bytes": sum(p.stat().st_size for p in src.rglob("*")
                                                 if p.is_file())}
    target = src / "world" / "level.dat"
    reader = hold(mode, target)
    result = mover(python, "move", src, tmpfs / "moved")
    check_complete(result, facts, "copy")
    warnings = result.subjects("move.warning")
    assert len(warnings) == 1, warnings
    assert warnings[0]["message"] == (
        f"pid {reader.pid} ({command_of(reader)}) has {target} open for reading — restart it "
        "after the move so that it uses the new path")
    assert warnings[0]["path"] == "world/level.dat" and warnings[0]["count"] == 1
    plan = result.subjects("move.plan")[0]
    assert plan["openFilesCheck"] == "all processes"
    assert plan["openFilesReaders"] == [{"pid": reader.pid, "command": command_of(reader),
                                         "path": str(target), "how": "read"}]
    assert not src.exists()


def test_the_plan_and_the_confirmation_say_what_the_check_found(hold, tmp_path, tmpfs):
    """The dry run's plan, parsed by the client, in the CLI's plan line and the TUI's
    confirmation."""
    src = tmp_path / "src"
    server_tree(src)
    reader = hold("read", src / "logs" / "console.log")
    result = mover(sys.executable, "move", "--dry-run", src, tmpfs / "moved")
    check_stream(result)
    plan = result.events[-1]
    assert isinstance(plan, protocol.PlanEvent)
    assert plan.open_files_check == "all processes"
    assert plan.source_readers == (protocol.SourceReader(reader.pid, command_of(reader),
                                                         str(src / "logs" / "console.log")),)
    unchecked = plan.open_files_unchecked  # processes even root may not inspect (a container's)
    checked = ("all programs were checked" if not unchecked else
               f"all programs were checked but {unchecked:,} that could not be inspected")
    reading = (f"eading from it: pid {reader.pid} ({command_of(reader)}) "
               f"{src / 'logs' / 'console.log'} — restart it after the move")
    assert f"No program writes in the source ({checked})." in plan_lines(plan)
    assert "R" + reading + "." in plan_lines(plan)
    assert _plan_line(plan).endswith(f"; no program writes in the source ({checked}); r"
                                      + reading)


def test_the_working_directory_of_the_shell_that_runs_the_move_does_not_count(tmp_path, tmpfs):
    """The admin cd'ed into SRC and started the move from there: that shell only waits for the
    mover (and so does sudo or sshd above it); it writes nothing in SRC."""
    src = tmp_path / "src"
    server_tree(src)
    script = f"{sys.executable} {Path(__file__).parent.parent / 'remote' / 'mover.py'} " \
             f"move {src} {tmpfs / 'moved'}; exit $?"  # `; exit`: sh stays, as the parent
    proc = subprocess.run(["sh", "-c", script], cwd=src / "logs", capture_output=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not src.exists() and (tmpfs / "moved" / "logs" / "console.log").exists()


# ---------------------------------------------------------------------------------------------
# A writer that starts while the copy runs


def test_a_writer_that_starts_during_the_copy_keeps_the_source(python, hold, tmp_path, tmpfs):
    """It opens the log while the copy runs and has written nothing yet, so verification passes:
    only the second check, just before the copy is put in place, can see it. The copy is
    discarded and the source kept whole: its next lines land in the source, which stays."""
    src = tmp_path / "src"
    server_tree(src)
    before = snapshot_tree(src)
    log = src / "logs" / "console.log"
    proc = start(python, "move", "--bwlimit", "4M", src, tmpfs / "moved")
    try:
        seen: list[bytes] = []
        wait_for_copying(proc, seen)
        writer = hold("hold", log)
        result = finish(proc, seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    error = failed_at_source(result)
    assert f"pid {writer.pid} ({command_of(writer)}) has {log} open for writing" in error
    assert "stop that program first, then run the move again" in error
    assert "the source is untouched" in error
    assert "verifying" in [p["phase"] for p in result.progress()]  # the copy itself was good
    assert os.listdir(tmpfs) == []
    assert diff_snapshots(before, snapshot_tree(src)) == []


# ---------------------------------------------------------------------------------------------
# As an unprivileged user, through the real sshd


def test_an_unprivileged_user_sees_only_its_own_programs(sshd, public_tmp, tmpfs, hold):
    """smtest cannot look into root's processes: a writer run by root is not seen (and the plan
    says the check covered only smtest's own programs); a writer run by smtest is refused."""
    src = public_tmp / "src"
    server_tree(src)
    run("chown", "-R", "smtest:smtest", src)
    log = src / "logs" / "console.log"
    hold("hold", log)  # as root
    args = ("move", "--dry-run", "--json", "--ssh-config", sshd.config_file, sshd.alias, src,
            tmpfs / "moved")
    result = servermove(*args)
    assert result.returncode == 0, result.stderr
    plans = [json.loads(line)["data"] for line in result.stdout.splitlines()
             if json.loads(line)["subject"] == "move.plan"]
    assert len(plans) == 1
    assert plans[0]["openFilesCheck"] == "own processes only"
    assert plans[0]["openFilesUnchecked"] > 0
    shown = servermove(*(a for a in args if a != "--json"))
    assert shown.returncode == 0, shown.stderr
    assert "; no program writes in the source (only this user's own programs were checked: " \
        "run as root to check all)" in shown.stdout

    writer = hold("hold", log, **as_user())
    result = servermove(*args)
    assert result.returncode == 2, result.stdout
    assert f"pid {writer.pid} ({command_of(writer)}) has {log} open for writing" \
        in result.stderr
    assert os.listdir(tmpfs) == []


def descendants(root: int) -> set[int]:
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            parents[int(pid)] = int(stat[stat.rindex(")") + 2:].split()[1])
    found = {root}
    while True:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        if not more:
            return found - {root}
        found |= more


def test_servermoves_own_sessions_on_the_server_work_in_the_root_directory(sshd, public_tmp,
                                                                         tmpfs):
    """A login lands in its home; were the mover and the sudo above it left working there, a move
    of a directory that holds that home (/home) would find them as programs working in it."""
    src = public_tmp / "src"
    server_tree(src)
    run("chown", "-R", "smtest:smtest", src)
    proc = start_json_move("--bwlimit", "2M", "--ssh-config", sshd.config_file, sshd.alias, src,
                           tmpfs / "moved")
    try:
        wait_for_json_copying(proc)
        # This test's sessions (other test runs use smtest too): what its sshd started (attach),
        # and what holds this move's files open (the detached worker, whose parent is init).
        cwds = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):  # ended meanwhile
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                    continue
                if int(pid) in descendants(sshd.process.pid) or any(
                        os.readlink(f"/proc/{pid}/fd/{fd}").startswith((str(src), str(tmpfs)))
                        for fd in os.listdir(f"/proc/{pid}/fd")):
                    cwds[pid] = os.readlink(f"/proc/{pid}/cwd")
        assert len(cwds) >= 2, cwds  # the detached worker and the attach following it
        assert set(cwds.values()) == {"/"}, cwds
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
