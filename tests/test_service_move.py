"""Service moves (issue 16) with real services: the game server and a PostgreSQL cluster, moved
by the mover while they run, across filesystems; and the rollbacks."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.cli_support import make_tree, read_tree
from tests.fstree import diff_snapshots, snapshot_tree
from tests.harness import PgCluster, SshServer, drop_cluster, run
from tests.test_mover import MOVER, RIGGED_MOVER, USER_PYTHON, Result, interpreter
from tui.core.runner import BOOTSTRAP, PYTHON_FLAGS, program_input

GAME_SERVER = Path(__file__).resolve().parent / "game_server.py"
SERVICE_ORDER = ["calculating", "syncing", "stopping", "copying", "verifying", "switching",
                 "starting", "checking", "cleaning", "complete"]


def end_inserting(pg: PgCluster, stop: threading.Event, client: threading.Thread) -> None:
    """A PostgreSQL test's end: its inserting client stopped, its cluster and the config
    backups the cutover kept removed (or pg_dropcluster leaves the cluster's directory behind)."""
    stop.set()
    client.join(30)
    for backup in pg.config_file.parent.glob("postgresql.conf.servermove-*"):
        backup.unlink()
    drop_cluster(pg)


def parse(stdout: bytes, returncode: int, stderr: bytes) -> Result:
    """The mover's lines (tui/protocol.py learns the service phases on its own branch)."""
    lines = [json.loads(line) for line in stdout.decode("ascii").splitlines()]
    return Result(returncode, lines, stderr.decode("utf-8", "replace"))


def mover(python: str, *args: str | os.PathLike) -> Result:
    proc = subprocess.run([python, str(MOVER), *map(str, args)], capture_output=True,
                          timeout=300)
    return parse(proc.stdout, proc.returncode, proc.stderr)


def game(action: str, *args: Path | str, python: str = sys.executable) -> list[str]:
    return [python, str(GAME_SERVER), action, *map(str, args)]


def game_spec(data: Path, pidfile: Path, **extra) -> dict:
    return {"stop": game("stop", pidfile), "start": game("start", data, pidfile),
            "check": game("check", pidfile), "cutover": "symlink", **extra}


def running(pidfile: Path) -> bool:
    return subprocess.run(game("check", pidfile), capture_output=True).returncode == 0


def stop_game(pidfile: Path) -> None:
    if running(pidfile):
        subprocess.run(game("stop", pidfile), capture_output=True, timeout=30)


def remove_game(src: Path, pidfile: Path) -> None:
    """After a test: the game server stopped, its data gone (SRC may be the cutover's link)."""
    stop_game(pidfile)
    if src.is_symlink():
        src.unlink()
    subprocess.run(["rm", "-rf", str(src)])


def healthy_while_not_switched(src: Path, pidfile: Path) -> list[str]:
    """A check that passes only while SRC is the real directory: it fails once the cutover made
    SRC a link, and passes again after a rollback."""
    return ["/bin/sh", "-c", 'test ! -L "$0" && "$1" "$2" check "$3"', str(src),
            sys.executable, str(GAME_SERVER), str(pidfile)]


def kill_worker(journal: Path) -> None:
    """SIGKILL the detached worker of a journaled move, and wait until it is gone."""
    worker = json.loads((journal / "state.json").read_text())["pid"]
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{worker}").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def phases(result: Result) -> list[str]:
    seen: list[str] = []
    for event in result.progress():
        if not seen or seen[-1] != event["phase"]:
            seen.append(event["phase"])
    return seen


def ticks_logged(log: str) -> list[int]:
    return [int(line.split()[1]) for line in log.splitlines() if line.startswith("tick ")]


def world_with_data(src: Path) -> dict[str, bytes]:
    contents = make_tree(src / "maps", files=40, size=30_000)
    return {f"maps/{name}": data for name, data in contents.items()}


def wait_ticks(log: Path, more: int) -> None:
    start = len(ticks_logged(log.read_text()))
    deadline = time.monotonic() + 15
    while len(ticks_logged(log.read_text())) < start + more:
        assert time.monotonic() < deadline, "the game server does not write"
        time.sleep(0.05)


def check_game_moved(src: Path, dst: Path, pidfile: Path, maps: dict[str, bytes]) -> None:
    """The server runs from DST through the symlink at SRC, and nothing it wrote was lost: its
    log holds every tick up to the save at the stop, then the new start."""
    assert src.is_symlink() and os.readlink(src) == str(dst)
    assert not [p for p in src.parent.iterdir() if ".servermove-" in p.name]
    assert running(pidfile)
    log = dst / "logs" / "console.log"
    wait_ticks(log, 3)  # writes into the new copy
    text = log.read_text()
    before, _stopped, after = text.partition("stopped at tick ")
    last = int(after.split()[0])
    assert ticks_logged(before) == list(range(1, last + 1))  # no line of the old run lost
    assert (dst / "world" / "level.dat").read_text() == f"saved at tick {last}\n"
    assert "started pid=" in after
    assert {k: v for k, v in read_tree(dst).items() if k.startswith("maps/")} == maps


def test_a_running_game_server_moves_with_seconds_of_downtime(game_site):
    src, dst, pidfile = game_site
    maps = world_with_data(src)
    run(*game("start", src, pidfile))
    wait_ticks(src / "logs" / "console.log", 5)
    result = mover(sys.executable, "move", "--service", json.dumps(game_spec(src, pidfile)),
                   src, dst)
    assert result.returncode == 0, result.stderr
    assert phases(result) == SERVICE_ORDER
    [plan] = result.subjects("move.plan")
    assert plan["service"]["cutover"] == "symlink"
    assert "becomes a symlink" in plan["service"]["cutoverChanges"][0]["change"]
    end = result.progress()[-1]
    assert end["serviceRunsFrom"] == "destination" and end["dataState"] == "destination"
    events = result.progress()
    down = [e for e in events if e["phase"] in SERVICE_ORDER[2:8]]
    assert all(e["downSince"] for e in down)
    assert events[-1]["downSince"] is None
    syncing = [e for e in events if e["phase"] == "syncing"]
    assert 2 <= max(e["pass"] or 0 for e in events) <= 6
    assert any(e["forecastDowntimeSeconds"] for e in syncing)
    # The downtime is a part of the move: from the stop command to the first passing check.
    moved_for = events[-1]["ts"] - syncing[0]["ts"]
    assert 0 < end["downtimeSeconds"] < moved_for
    check_game_moved(src, dst, pidfile, maps)


def test_a_check_that_never_passes_rolls_back_to_the_source(game_site):
    src, dst, pidfile = game_site
    # Healthy only while SRC is the real directory: fails once switched, passes after rollback.
    check = healthy_while_not_switched(src, pidfile)
    maps = world_with_data(src)
    run(*game("start", src, pidfile))
    result = mover(sys.executable, "move", "--service", json.dumps(
        game_spec(src, pidfile, check=check, checkTimeout=1)), src, dst)
    assert result.returncode == 1
    end = result.progress()[-1]
    assert end["phase"] == "error" and end["serviceRunsFrom"] == "source"
    assert end["dataState"] == "both" and end["downtimeSeconds"] > 0
    assert "did not pass its check" in end["error"]
    assert f"runs from the old path {src} again" in end["error"]
    assert f"the new copy is at {dst}" in end["error"]
    assert src.is_dir() and not src.is_symlink() and running(pidfile)
    wait_ticks(src / "logs" / "console.log", 3)  # the old data, in use again
    assert {k: v for k, v in read_tree(src).items() if k.startswith("maps/")} == maps
    text = (src / "logs" / "console.log").read_text()
    last = int(text.partition("stopped at tick ")[2].split()[0])
    assert ticks_logged(text.partition("stopped at tick ")[0]) == list(range(1, last + 1))


def test_a_stop_command_that_fails_changes_nothing(game_site, tmpfs):
    src, dst, pidfile = game_site
    world_with_data(src)
    run(*game("start", src, pidfile))
    spec = game_spec(src, pidfile, stop=["/bin/sh", "-c", "echo cannot stop; exit 4"])
    result = mover(sys.executable, "move", "--service", json.dumps(spec), src, dst)
    assert result.returncode == 1
    end = result.progress()[-1]
    assert "the stop command" in end["error"] and "exit 4" in end["error"]
    assert "nothing was changed" in end["error"]
    assert end["serviceRunsFrom"] == "source" and end["dataState"] == "source"
    assert end["downtimeSeconds"] is None
    assert running(pidfile) and src.is_dir() and not src.is_symlink()
    assert not dst.exists() and os.listdir(tmpfs) == []


def test_cancel_after_the_stop_starts_the_service_again_on_the_source(game_site, tmpfs):
    src, dst, pidfile = game_site
    # The stop command stops the server, then lingers: the cancel comes while the service is down.
    stop = ["/bin/sh", "-c", '"$0" "$1" stop "$2" && sleep 5', sys.executable, str(GAME_SERVER),
            str(pidfile)]
    proc = None
    try:
        maps = world_with_data(src)
        run(*game("start", src, pidfile))
        proc = subprocess.Popen([sys.executable, str(MOVER), "move", "--service",
                                 json.dumps(game_spec(src, pidfile, stop=stop)), str(src),
                                 str(dst)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if b'"phase":"stopping"' in line:
                deadline = time.monotonic() + 15
                while running(pidfile):
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                proc.send_signal(signal.SIGTERM)
                break
        out, err = proc.communicate(timeout=60)
        result = parse(b"".join(lines) + out, proc.returncode, err)
        assert result.returncode == 3
        end = result.progress()[-1]
        assert end["phase"] == "cancelled" and end["serviceRunsFrom"] == "source"
        assert "started again on the untouched source" in end["error"]
        assert end["dataState"] == "source" and not dst.exists() and os.listdir(tmpfs) == []
        assert running(pidfile) and not src.is_symlink()
        assert {k: v for k, v in read_tree(src).items() if k.startswith("maps/")} == maps
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def test_max_downtime_that_cannot_be_met_leaves_the_service_untouched(game_site, tmpfs):
    src, dst, pidfile = game_site
    world_with_data(src)
    run(*game("start", src, pidfile))
    result = mover(sys.executable, "move", "--service", json.dumps(game_spec(src, pidfile)),
                   "--max-downtime", "0.001", src, dst)
    assert result.returncode == 1
    end = result.progress()[-1]
    assert "--max-downtime" in end["error"] and "the service was not stopped" in end["error"]
    assert end["pass"] == 5 and end["serviceRunsFrom"] == "source"
    assert "stopping" not in phases(result)
    assert running(pidfile) and not dst.exists() and os.listdir(tmpfs) == []


def test_bad_service_options_are_refused_in_one_line(tmp_path, tmpfs):
    (tmp_path / "src").mkdir()
    refused = mover(sys.executable, "move", "--max-downtime", "5", tmp_path / "src", tmpfs / "d")
    assert refused.returncode == 2 and "--max-downtime needs --service" in refused.last["data"][
        "error"]
    conf = tmp_path / "app.conf"
    conf.write_text("data = /elsewhere\n")
    spec = {"stop": "true", "start": "true", "check": "true", "cutover": f"config:{conf}"}
    refused = mover(sys.executable, "move", "--service", json.dumps(spec), tmp_path / "src",
                    tmpfs / "d")
    assert refused.returncode == 2 and "does not mention" in refused.last["data"]["error"]
    assert os.listdir(tmpfs) == []


# --- PostgreSQL, a client inserting the whole time ------------------------------------------------


def insert_rows(pg: PgCluster, stop: threading.Event, committed: list[int]) -> None:
    """INSERT one row at a time; a row is committed when psql said so."""
    n = 0
    while not stop.is_set():
        n += 1
        done = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-p",
                               str(pg.port), "-v", "ON_ERROR_STOP=1", "-c",
                               f"INSERT INTO moved VALUES ({n})"], capture_output=True)
        if done.returncode == 0:
            committed.append(n)
        else:
            time.sleep(0.05)


def test_postgres_moves_by_config_cutover_with_a_client_inserting(pg_cluster: PgCluster,
                                                                  tmpfs: Path) -> None:
    pg = pg_cluster
    pg.psql("CREATE TABLE moved (id int PRIMARY KEY)")
    new = tmpfs / "pgdata"
    stop, committed = threading.Event(), []
    client = threading.Thread(target=insert_rows, args=(pg, stop, committed))
    spec = {"stop": pg.ctl("stop"), "start": pg.ctl("start"),
            "check": ["pg_isready", "-q", "-p", str(pg.port)],
            "cutover": f"config:{pg.config_file}"}
    try:
        client.start()
        time.sleep(1)
        result = mover(sys.executable, "move", "--service", json.dumps(spec), pg.data_dir, new)
        time.sleep(1)
        stop.set()
        client.join(30)
        assert result.returncode == 0, result.stderr
        assert phases(result) == SERVICE_ORDER
        [change] = result.subjects("move.plan")[0]["service"]["cutoverChanges"]
        assert change["after"].startswith(f"data_directory = '{new}'")
        assert result.progress()[-1]["serviceRunsFrom"] == "destination"
        assert pg.psql("SHOW data_directory") == str(new)
        assert not pg.data_dir.exists()
        rows = {int(x) for x in pg.psql("SELECT id FROM moved").split()}
        assert len(committed) > 5 and set(committed) <= rows
        [backup] = pg.config_file.parent.glob("postgresql.conf.servermove-*")  # kept, as promised
        assert backup.read_bytes().count(str(pg.data_dir).encode()) >= 1
    finally:
        end_inserting(pg, stop, client)


# --- detached, through the real sshd, the client killed ------------------------------------------


def ssh_mover(sshd: SshServer, *argv: str, **kwargs) -> subprocess.Popen:
    """The mover over the real sshd, as servermove runs it: a bootstrap, argv and source on
    stdin."""
    remote = shlex.join([USER_PYTHON, *PYTHON_FLAGS, "-c", BOOTSTRAP])
    proc = subprocess.Popen(["ssh", "-F", str(sshd.config_file), "-o", "BatchMode=yes",
                             sshd.alias, remote], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
    proc.stdin.write(program_input(argv))
    proc.stdin.close()
    proc.stdin = None  # written whole: communicate() only reads
    return proc


def test_detached_service_move_completes_with_the_client_killed(sshd, public_tmp, tmpfs):
    src, dst, pidfile = public_tmp / "game", tmpfs / "dst", public_tmp / "game.pid"
    src.mkdir()
    server = ["runuser", "-u", sshd.user, "--"]
    spec = game_spec(src, pidfile)
    for key in ("stop", "start", "check"):  # the server's python3, as the login user runs it
        spec[key][0] = USER_PYTHON
    game_copy = public_tmp / "game_server.py"
    game_copy.write_bytes(GAME_SERVER.read_bytes())
    for key in ("stop", "start", "check"):
        spec[key][1] = str(game_copy)
    try:
        maps = world_with_data(src)
        subprocess.run(["chown", "-R", sshd.user, str(src)], check=True)
        run(*server, *game("start", src, pidfile, python=USER_PYTHON))
        started = ssh_mover(sshd, "start", "--service", json.dumps(spec), str(src), str(dst))
        out_start, err = started.communicate(timeout=60)
        assert started.returncode == 0, err
        move_id = [json.loads(line) for line in out_start.splitlines()][-1]["data"]["moveId"]
        attach = ssh_mover(sshd, "attach", move_id)
        for line in attach.stdout:
            if b'"phase":"syncing"' in line:
                attach.kill()  # the client dies mid-move
                break
        attach.wait()
        replay = ssh_mover(sshd, "attach", move_id)
        out, err = replay.communicate(timeout=120)
        result = parse(out, replay.returncode, err)
        assert result.returncode == 0, result.stderr
        assert phases(result) == SERVICE_ORDER
        assert result.progress()[-1]["serviceRunsFrom"] == "destination"
        check_game_moved(src, dst, pidfile, maps)
        listed = ssh_mover(sshd, "list")
        out, _ = listed.communicate(timeout=60)
        [state] = [json.loads(line)["data"] for line in out.splitlines()
                   if b'"moveId":"%s"' % move_id.encode() in line]
        assert state["serviceRunsFrom"] == "destination" and state["cutover"] == "symlink"
        assert state["passes"] >= 2 and state["downtimeSeconds"] > 0
        journal = Path([json.loads(line) for line in out_start.splitlines()][-1]["data"]["journal"])
        assert (journal / "state.json").exists() and not (journal / "final.json").exists()
    finally:
        subprocess.run([*server, *game("stop", pidfile, python=USER_PYTHON)],
                       capture_output=True)
        if src.is_symlink():
            src.unlink()


@pytest.mark.parametrize("python", ["py3.6", "py3.13"])
def test_a_service_move_runs_on_the_oldest_and_newest_python(game_site, python):
    src, dst, pidfile = game_site
    maps = world_with_data(src)
    run(*game("start", src, pidfile))
    result = mover(interpreter(python), "move", "--service",
                   json.dumps(game_spec(src, pidfile)), src, dst)
    assert result.returncode == 0, result.stderr
    assert phases(result) == SERVICE_ORDER
    check_game_moved(src, dst, pidfile, maps)


def test_a_worker_killed_while_the_service_is_stopped_says_how_to_start_it(public_root, tmpfs,
                                                                           tmp_path):
    src, dst, pidfile = public_root / f"game-{os.getpid()}", tmpfs / "dst", tmp_path / "pid"
    stopper = tmp_path / "stopper.pid"
    src.mkdir()
    # The stop command stops the server, then lingers: the worker is killed while it is down.
    stop = ["/bin/sh", "-c", 'echo $$ > "$3"; "$0" "$1" stop "$2" && sleep 60', sys.executable,
            str(GAME_SERVER), str(pidfile), str(stopper)]
    try:
        world_with_data(src)
        run(*game("start", src, pidfile))
        started = mover(sys.executable, "start", "--service",
                        json.dumps(game_spec(src, pidfile, stop=stop)), src, dst)
        assert started.returncode == 0, started.stderr
        journal = Path(started.last["data"]["journal"])
        deadline = time.monotonic() + 30
        while running(pidfile) or b'"phase":"stopping"' not in (
                journal / "events.jsonl").read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        kill_worker(journal)
        listed = mover(sys.executable, "list")
        [state] = [line["data"] for line in listed.lines if line["subject"] == "move.listed"]
        assert "THE SERVICE MAY BE STOPPED: this move was stopping it" in state["error"]
        assert "`" + " ".join(game("start", src, pidfile)) + "`" in state["error"]
        assert not running(pidfile)  # a reader never starts it
    finally:
        if stopper.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(stopper.read_text()), signal.SIGKILL)
        stop_game(pidfile)
        subprocess.run(["rm", "-rf", str(src)])


CHURN = Path(__file__).resolve().parent / "churn_service.py"


@pytest.mark.parametrize("verify", ["checksum", "size"])
def test_live_passes_follow_every_change_the_service_makes(verify, public_root, tmpfs, tmp_path):
    """A service that rewrites, deletes, creates, turns files into directories and symlinks,
    adds hard links and chmods the whole time: the moved copy is the source exactly as it was
    when the service stopped (its stop command snapshots it)."""
    src, dst, pidfile = public_root / f"churn-{os.getpid()}", tmpfs / "dst", tmp_path / "pid"
    snapshot = tmp_path / "at-stop.pickle"
    for n in range(300):
        (src / f"d{n % 10}").mkdir(parents=True, exist_ok=True)
        (src / f"d{n % 10}" / f"f{n}").write_bytes(os.urandom(1 + n * 97 % 60_000))
    os.link(src / "d0" / "f0", src / "d1" / "also-f0")
    spec = {"stop": [sys.executable, str(CHURN), "stop", str(pidfile), str(src), str(snapshot)],
            "start": ["true"], "check": ["true"], "cutover": "none"}
    try:
        run(sys.executable, str(CHURN), "start", str(src), str(pidfile))
        time.sleep(0.3)
        result = mover(sys.executable, "move", "--verify", verify, "--service", json.dumps(spec),
                       src, dst)
        assert result.returncode == 0, result.stderr + json.dumps(result.last)
        assert phases(result) == SERVICE_ORDER
        assert max(e["pass"] or 0 for e in result.progress() if e["phase"] == "syncing") >= 2
        with snapshot.open("rb") as handle:
            at_stop = pickle.load(handle)
        assert diff_snapshots(at_stop, snapshot_tree(dst)) == []
        assert not src.exists()
    finally:
        if running_churn(pidfile):
            subprocess.run([sys.executable, str(CHURN), "stop", str(pidfile), str(src),
                            str(snapshot)], capture_output=True)
        subprocess.run(["rm", "-rf", str(src)])


def running_churn(pidfile: Path) -> bool:
    return subprocess.run([sys.executable, str(CHURN), "check", str(pidfile)],
                          capture_output=True).returncode == 0


def test_a_start_that_fails_on_the_new_path_rolls_back_and_one_that_always_fails_says_so(game_site):
    src, dst, pidfile = game_site
    # Starts only while SRC is the real directory: fails once switched, works after the undo.
    start = ["/bin/sh", "-c", 'test ! -L "$0" && exec "$1" "$2" start "$0" "$3"', str(src),
             sys.executable, str(GAME_SERVER), str(pidfile)]
    maps = world_with_data(src)
    run(*game("start", src, pidfile))
    result = mover(sys.executable, "move", "--service",
                   json.dumps(game_spec(src, pidfile, start=start)), src, dst)
    assert result.returncode == 1
    end = result.progress()[-1]
    assert "the start command" in end["error"], end["error"]
    assert f"runs from the old path {src} again" in end["error"]
    assert end["serviceRunsFrom"] == "source" and end["dataState"] == "both"
    assert running(pidfile) and src.is_dir() and not src.is_symlink()
    assert {k: v for k, v in read_tree(src).items() if k.startswith("maps/")} == maps
    stop_game(pidfile)
    subprocess.run(["rm", "-rf", str(dst)], check=True)

    run(*game("start", src, pidfile))
    never = game_spec(src, pidfile, start=["/bin/sh", "-c", "echo no luck; exit 5"])
    result = mover(sys.executable, "move", "--service", json.dumps(never), src, dst)
    assert result.returncode == 1
    end = result.progress()[-1]
    assert end["serviceRunsFrom"] == "nowhere" and end["downSince"]
    assert "THE SERVICE IS NOT RUNNING" in end["error"] and "was undone" in end["error"]
    assert str(src) in end["error"] and str(dst) in end["error"]
    assert not running(pidfile) and src.is_dir() and not src.is_symlink()
    assert {k: v for k, v in read_tree(src).items() if k.startswith("maps/")} == maps
    assert {k: v for k, v in read_tree(dst).items() if k.startswith("maps/")} == maps


def test_a_rolled_back_service_move_run_again_is_refused_not_cleaned(game_site):
    """A service move that rolled back left its copy at DST (`both`) and the service running
    from SRC: the same move run again must not take that copy for a finished one and clean SRC
    under the running service."""
    src, dst, pidfile = game_site
    check = healthy_while_not_switched(src, pidfile)
    spec = json.dumps(game_spec(src, pidfile, check=check, checkTimeout=1))
    maps = world_with_data(src)
    run(*game("start", src, pidfile))
    started = mover(sys.executable, "start", "--service", spec, src, dst)
    assert started.returncode == 0, started.stderr
    ended = mover(sys.executable, "attach", started.last["data"]["moveId"])
    end = ended.progress()[-1]
    assert end["dataState"] == "both" and end["serviceRunsFrom"] == "source"
    assert f"empty {dst} first" in end["error"]
    again = mover(sys.executable, "move", "--service", spec, src, dst)
    assert again.returncode == 2, again.lines
    error = again.progress()[-1]["error"]
    assert f"destination {dst} holds an earlier copy that is not in use" in error
    assert "empty it, then run the move again" in error
    assert src.is_dir() and not src.is_symlink() and running(pidfile)
    assert {k: v for k, v in read_tree(src).items() if k.startswith("maps/")} == maps


def test_a_worker_killed_after_switching_leaves_a_copy_a_rerun_does_not_clean_against(
        public_root, tmpfs, tmp_path):
    """Killed while its start command runs (the copy is at DST, never checked there): the reaper
    says the source is whole, and the same move run again is refused instead of cleaning SRC."""
    src, dst, pidfile = public_root / f"game-{os.getpid()}", tmpfs / "dst", tmp_path / "pid"
    starter = tmp_path / "starter.pid"
    src.mkdir()
    start = ["/bin/sh", "-c", 'echo $$ > "$0"; sleep 60', str(starter)]
    spec = game_spec(src, pidfile, cutover="none")
    try:
        maps = world_with_data(src)
        run(*game("start", src, pidfile))
        started = mover(sys.executable, "start", "--service",
                        json.dumps({**spec, "start": start}), src, dst)
        assert started.returncode == 0, started.stderr
        journal = Path(started.last["data"]["journal"])
        deadline = time.monotonic() + 30
        while not starter.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        kill_worker(journal)
        listed = mover(sys.executable, "list")
        [state] = [line["data"] for line in listed.lines if line["subject"] == "move.listed"]
        assert state["dataState"] == "both"
        assert f"the source {src} is whole as it was at the stop" in state["error"]
        assert "THE SERVICE MAY BE STOPPED" in state["error"]
        again = mover(sys.executable, "move", "--service", json.dumps(spec), src, dst)
        assert again.returncode == 2, again.lines
        assert "holds an earlier copy that is not in use" in again.progress()[-1]["error"]
        assert {k: v for k, v in read_tree(src).items() if k.startswith("maps/")} == maps
    finally:
        if starter.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(starter.read_text()), signal.SIGKILL)
        stop_game(pidfile)
        subprocess.run(["rm", "-rf", str(src)])


def test_a_service_still_writing_to_the_old_path_after_the_switch_keeps_both_copies(game_site):
    """Cutover `none` and a start command that names SRC: the check passes, but the service
    writes into SRC again. Cleaning must not delete files under it."""
    src, dst, pidfile = game_site
    maps = world_with_data(src)
    run(*game("start", src, pidfile))
    result = mover(sys.executable, "move", "--service",
                   json.dumps(game_spec(src, pidfile, cutover="none")), src, dst)
    assert result.returncode == 1, result.lines
    end = result.progress()[-1]
    assert end["phase"] == "error" and end["dataState"] == "both"
    assert end["serviceRunsFrom"] == "source"
    assert "open for writing: the service still uses the old path" in end["error"]
    assert f"both copies are kept: {src}, in use, and {dst}, the new copy" in end["error"]
    assert "cleaning" not in phases(result)
    assert running(pidfile)
    wait_ticks(src / "logs" / "console.log", 2)
    assert {k: v for k, v in read_tree(src).items() if k.startswith("maps/")} == maps
    assert (src / "world" / "level.dat").exists()


def test_a_live_pass_does_not_record_racily_clean_copies_for_a_resume(public_root, tmpfs):
    """A live pass does not trust a file whose ctime is within the racy margin of its start; the
    records a move cut short leaves for the next one (copied.jsonl) follow the same rule. Rigged
    so that every file is racy: a worker killed in its first live pass recorded nothing."""
    src, dst = public_root / f"live-{os.getpid()}", tmpfs / "dst"
    src.mkdir()
    spec = {"stop": ["true"], "start": ["true"], "check": ["true"], "cutover": "none"}
    try:
        make_tree(src, files=8, size=600_000)
        started = subprocess.run(
            [sys.executable, str(RIGGED_MOVER), "all-racy", "start", "--bwlimit", "1M",
             "--service", json.dumps(spec), str(src), str(dst)], capture_output=True,
            timeout=60)
        assert started.returncode == 0, started.stderr
        journal = Path(json.loads(started.stdout.splitlines()[-1])["data"]["journal"])
        deadline = time.monotonic() + 30
        # Six files copied: more than two seconds after the first (a batch every 2 s).
        while json.loads((journal / "state.json").read_text()).get("filesCopied", 0) < 6:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        state = json.loads((journal / "state.json").read_text())
        assert state["phase"] == "syncing"
        os.kill(state["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{state['pid']}").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        copied = journal / "copied.jsonl"
        assert not copied.exists() or copied.read_text() == ""
    finally:
        subprocess.run(["rm", "-rf", str(src)])


def test_a_config_cutover_file_inside_the_source_is_refused_at_plan_time(public_root, tmpfs):
    src, dst = public_root / f"conf-{os.getpid()}", tmpfs / "dst"
    src.mkdir()
    try:
        (src / "app.conf").write_text(f"data_directory = '{src}'\n")
        link = public_root / f"conf-link-{os.getpid()}.conf"
        link.symlink_to(src / "app.conf")  # followed: the real file is what counts
        for given in (src / "app.conf", link):
            spec = {"stop": ["true"], "start": ["true"], "check": ["true"],
                    "cutover": f"config:{given}"}
            result = mover(sys.executable, "move", "--service", json.dumps(spec), src, dst)
            assert result.returncode == 2, result.lines
            error = result.progress()[-1]["error"]
            assert f"the cutover's config file {given} is inside the source {src}" in error
            assert not dst.exists() and list(tmpfs.iterdir()) == []
            assert (src / "app.conf").read_text() == f"data_directory = '{src}'\n"
    finally:
        subprocess.run(["rm", "-rf", str(src), str(public_root / f"conf-link-{os.getpid()}.conf")])


def test_a_worker_killed_while_cleaning_a_symlink_cutover_names_the_old_copy_aside(game_site):
    """Killed while removing the old data renamed aside: SRC is the symlink now, so the words
    name the aside directory (from the journaled cutover), not SRC, and not a rerun."""
    src, dst, pidfile = game_site
    world_with_data(src)
    run(*game("start", src, pidfile))
    start_killed_while_cleaning(src, dst, game_spec(src, pidfile))
    [state] = [line["data"] for line in mover(sys.executable, "list").lines
               if line["subject"] == "move.listed"]
    [aside] = src.parent.glob(f".{src.name}.servermove-old-*")
    error = state["error"]
    assert state["dataState"] == "destination"
    assert f"the old copy, perhaps partly removed, is in {aside}" in error
    assert f"delete it when you are sure you no longer need it (rm -rf {aside})" in error
    assert "run the same move again" not in error
    assert src.is_symlink() and running(pidfile)


def start_killed_while_cleaning(src: Path, dst: Path, spec: dict) -> Path:
    """A detached service move, rigged to remove a source file a tenth of a second, killed once
    it removed three: its journal."""
    started = subprocess.run(
        [sys.executable, str(RIGGED_MOVER), "inline,slower-clean", "start", "--service",
         json.dumps(spec), str(src), str(dst)], capture_output=True, timeout=60)
    assert started.returncode == 0, started.stderr
    journal = Path(json.loads(started.stdout.splitlines()[-1])["data"]["journal"])
    deadline = time.monotonic() + 60
    while b'"filesRemoved":3' not in (journal / "events.jsonl").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    kill_worker(journal)
    return journal


@pytest.mark.parametrize("cutover", ["none", "config"])
def test_a_service_move_killed_while_cleaning_is_finished_by_running_it_again(
        cutover, game_site, tmp_path):
    """Killed while removing SRC (cutover `none` or `config`): the service writes into DST by
    then, so the same move run again must not compare SRC with DST (every file the service
    rewrote would look "newer in the source"): it checks SRC against the final pass's records,
    kept in the journal, and finishes the cleaning."""
    src, dst, pidfile = game_site
    maps = world_with_data(src)
    conf = tmp_path / "game.conf"
    conf.write_text(f"data = {src}\n")
    spec = game_spec(src, pidfile, cutover="none" if cutover == "none" else f"config:{conf}",
                     start=game("start", dst, pidfile))
    run(*game("start", src, pidfile))
    journal = start_killed_while_cleaning(src, dst, spec)
    wait_ticks(dst / "logs" / "console.log", 3)
    for name in maps:  # the service, running from DST, may rewrite any file there
        os.utime(dst / name)
    again = mover(sys.executable, "move", "--service", json.dumps(spec), src, dst)
    assert again.returncode == 0, again.progress()[-1].get("error")
    assert phases(again) == ["calculating", "cleaning", "complete"]
    assert not src.exists() and running(pidfile)
    assert {k: v for k, v in read_tree(dst).items() if k.startswith("maps/")} == maps
    state = json.loads((journal / "state.json").read_text())
    assert state["takenOverBy"] == again.progress()[-1]["moveId"]
    assert not (journal / "final.json").exists()


def test_a_service_move_killed_while_cleaning_without_its_records_says_what_is_left(game_site):
    """The journal lost the final pass's records (a full journal disk when they were written):
    the move run again cannot check SRC file by file, so it removes nothing and says where the
    service runs and what is left to delete by hand."""
    src, dst, pidfile = game_site
    world_with_data(src)
    spec = game_spec(src, pidfile, cutover="none", start=game("start", dst, pidfile))
    run(*game("start", src, pidfile))
    journal = start_killed_while_cleaning(src, dst, spec)
    (journal / "final.json").unlink()
    left = sorted(p for p in src.rglob("*"))
    again = mover(sys.executable, "move", "--service", json.dumps(spec), src, dst)
    assert again.returncode == 1, again.lines
    error = again.progress()[-1]["error"]
    assert f"the service runs from {dst}" in error
    assert f"{src} holds what is left of the old copy" in error
    assert f"rm -rf {src}" in error
    assert "newer" not in error
    assert sorted(p for p in src.rglob("*")) == left and running(pidfile)


STOP_AND_CHANGE = """
import glob, os, pickle, sys
sys.path.insert(0, sys.argv[1])
from tests.fstree import snapshot_tree
src, dst, snapshot, how = sys.argv[2:6]
if how == "source":  # what a service may do as it stops, after the last live pass
    path = os.path.join(src, "d1", "f1")
    st = os.stat(path)
    with open(path, "r+b") as handle:  # same size, and the mtime put back: only ctime moves
        handle.write(b"rewritten at the stop")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(os.path.join(src, "d2"), 0o750)
    os.symlink("f3", os.path.join(src, "d3", "new-link"))
    os.unlink(os.path.join(src, "d4", "f4"))
else:  # a cleaner of old files deletes a copy in the staging
    [staging] = glob.glob(os.path.join(os.path.dirname(dst), ".servermove-staging-*"))
    os.unlink(os.path.join(staging, "d5", "f5"))
with open(snapshot, "wb") as handle:
    pickle.dump(snapshot_tree(src), handle)
"""


def move_changed_at_the_stop(how: str, public_root: Path, tmpfs: Path, tmp_path: Path):
    """A service move of a quiet tree whose stop command changes it (`how`): the source, or the
    staging. Returns the result, SRC, DST and the source's snapshot taken by the stop."""
    src, dst, snapshot = public_root / f"quiet-{os.getpid()}", tmpfs / "dst", tmp_path / "snap"
    for n in range(60):
        (src / f"d{n % 6}").mkdir(parents=True, exist_ok=True)
        (src / f"d{n % 6}" / f"f{n}").write_bytes(os.urandom(100 + n))
    time.sleep(0.2)  # older than a live pass's racy margin: recorded by the first pass
    stop = [sys.executable, "-c", STOP_AND_CHANGE, str(Path(__file__).resolve().parents[1]),
            str(src), str(dst), str(snapshot), how]
    spec = {"stop": stop, "start": ["true"], "check": ["true"], "cutover": "none"}
    result = mover(sys.executable, "move", "--verify", "checksum", "--service", json.dumps(spec),
                   src, dst)
    with snapshot.open("rb") as handle:
        return result, src, dst, pickle.load(handle)


def test_a_change_after_the_last_live_pass_is_copied_even_with_its_mtime_put_back(
        public_root, tmpfs, tmp_path):
    """The final pass keeps only files unchanged since a live pass copied them (inode, size,
    mtime and ctime), and the final check compares only what it wrote: a rewrite of the same
    size whose mtime was put back (only its ctime moved), a directory chmod, a new symlink and
    a deletion, all made by the stop command, are in the copy."""
    result, src, dst, at_stop = move_changed_at_the_stop("source", public_root, tmpfs, tmp_path)
    try:
        assert result.returncode == 0, result.stderr + json.dumps(result.last)
        assert phases(result) == SERVICE_ORDER
        assert (dst / "d1" / "f1").read_bytes().startswith(b"rewritten at the stop")
        assert diff_snapshots(at_stop, snapshot_tree(dst)) == []
    finally:
        subprocess.run(["rm", "-rf", str(src)])


def test_a_copy_deleted_from_the_staging_after_the_last_live_pass_fails_the_move(
        public_root, tmpfs, tmp_path):
    """A kept file is not compared with its copy again, but every name of the source must still
    be in the staging: one deleted there by something else fails the move, which puts the
    service back on the untouched source."""
    result, src, dst, at_stop = move_changed_at_the_stop("staging", public_root, tmpfs, tmp_path)
    try:
        assert result.returncode == 1, result.lines
        error = result.progress()[-1]["error"]
        assert f"the copy of {src}/d5/f5 vanished from the staging" in error
        assert f"the service was started again on the untouched source {src}" in error
        assert result.progress()[-1]["dataState"] == "source"
        assert diff_snapshots(at_stop, snapshot_tree(src)) == [] and not dst.exists()
    finally:
        subprocess.run(["rm", "-rf", str(src)])


def test_bwlimit_counts_only_what_is_copied_not_what_the_final_pass_keeps(public_root, tmpfs):
    """--bwlimit paces the bytes read and written. The final pass keeps 2 MiB unchanged since the
    live pass and copies the one file the stop command changed: paced by everything it walked, it
    would keep the service down about 2 s at 1 MiB/s; paced by what it copied, a blink."""
    src, dst = public_root / f"limited-{os.getpid()}", tmpfs / "dst"
    (src / "z").mkdir(parents=True)
    for n in range(2):  # a directory's files are walked before its subdirectories
        (src / f"big-{n}").write_bytes(os.urandom(1 << 20))
    (src / "z" / "last").write_bytes(b"before the stop")
    time.sleep(0.2)  # older than a live pass's racy margin: recorded by the first pass
    stop = ["sh", "-c", 'echo "written as it stopped" >> "$0"', str(src / "z" / "last")]
    spec = {"stop": stop, "start": ["true"], "check": ["true"], "cutover": "none"}
    try:
        result = mover(sys.executable, "move", "--bwlimit", "1M", "--service", json.dumps(spec),
                       src, dst)
        assert result.returncode == 0, result.stderr + json.dumps(result.last)
        assert (dst / "z" / "last").read_bytes().endswith(b"written as it stopped\n")
        assert result.progress()[-1]["downtimeSeconds"] < 1.0
    finally:
        subprocess.run(["rm", "-rf", str(src)])
