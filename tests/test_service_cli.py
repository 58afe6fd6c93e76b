"""Service moves through the real `servermove move` CLI (issue 16): a server named in
servers.toml with a service is moved with it — the game server through the real sshd as the
test user (symlink cutover), a real PostgreSQL cluster on `local` as root (config cutover) —
and `--no-service` moves the data alone; and the TUI's Apply (the fleet) with the real mover."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

from tests.cli_support import servermove
from tests.harness import PgCluster, SshServer, run
from tests.test_mover import USER_PYTHON
from tests.test_service_move import (
    GAME_SERVER,
    SERVICE_ORDER,
    check_game_moved,
    end_inserting,
    game,
    healthy_while_not_switched,
    insert_rows,
    stop_game,
    wait_ticks,
    world_with_data,
)

PLAIN_ORDER = ["calculating", "copying", "verifying", "cleaning", "complete"]


def write_servers(text: str) -> None:
    config = Path(os.environ["SERVERMOVE_CONFIG_DIR"])
    config.mkdir(parents=True, exist_ok=True)
    (config / "servers.toml").write_text(text)


def toml_command(argv: list[str]) -> str:
    return json.dumps(argv)  # a TOML array of basic strings reads as JSON does


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(text) for text in stdout.splitlines()]


def phases_of(messages: list[dict]) -> list[str]:
    seen: list[str] = []
    for message in messages:
        phase = message["data"].get("phase") if message["subject"] == "move.progress" else None
        if phase and (not seen or seen[-1] != phase):
            seen.append(phase)
    return seen


def game_server_entry(sshd: SshServer, src: Path, pidfile: Path, game_copy: Path, *,
                      stop: list[str] | None = None) -> str:
    """[game] in servers.toml: the game server started, stopped and checked with the server's
    own python3 as the login user runs them."""
    commands = {action: [USER_PYTHON, str(game_copy), action, *extra] for action, extra in (
        ("stop", [str(pidfile)]), ("start", [str(src), str(pidfile)]),
        ("check", [str(pidfile)]))}
    if stop is not None:
        commands["stop"] = stop
    return (f'[game]\ntarget = "{sshd.alias}"\ndata_path = "{src}"\n'
            + "".join(f"{key} = {toml_command(argv)}\n" for key, argv in commands.items())
            + 'check_timeout = 30\ncutover = "symlink"\n')


def test_a_servers_toml_service_is_moved_with_its_data_through_sshd(sshd, public_tmp, tmpfs):
    src, dst, pidfile = public_tmp / "game", tmpfs / "dst", public_tmp / "game.pid"
    game_copy = public_tmp / "game_server.py"
    game_copy.write_bytes(GAME_SERVER.read_bytes())
    src.mkdir()
    as_user = ["runuser", "-u", sshd.user, "--"]
    write_servers(game_server_entry(sshd, src, pidfile, game_copy))
    try:
        maps = world_with_data(src)
        subprocess.run(["chown", "-R", sshd.user, str(src)], check=True)
        run(*as_user, *game("start", src, pidfile, python=USER_PYTHON))
        wait_ticks(src / "logs" / "console.log", 5)
        moved = servermove("move", "--json", "--ssh-config", sshd.config_file, "game", src, dst,
                           timeout=300)
        assert moved.returncode == 0, moved.stderr
        messages = json_lines(moved.stdout)
        assert phases_of(messages) == SERVICE_ORDER
        [plan] = [m["data"] for m in messages if m["subject"] == "move.plan"]
        assert plan["service"]["cutover"] == "symlink"
        end = messages[-1]["data"]
        assert end["serviceRunsFrom"] == "destination" and end["downtimeSeconds"] > 0
        check_game_moved(src, dst, pidfile, maps)
        # The moves log keeps the service's story, and `servermove log` tells it.
        [record] = json_lines(servermove("log", "--json").stdout)
        assert record["serviceRunsFrom"] == "destination" and record["cutover"] == "symlink"
        assert record["downtimeSeconds"] == end["downtimeSeconds"] and record["passes"] >= 2
        shown = servermove("log")
        assert shown.returncode == 0
        assert f"service down for {end['downtimeSeconds']:.1f} s; {record['passes']} passes; " \
               "cutover symlink; runs from the destination" in shown.stdout
    finally:
        subprocess.run([*as_user, *game("stop", pidfile, python=USER_PYTHON)],
                       capture_output=True)
        stop_game(pidfile)
        if src.is_symlink():
            src.unlink()


def test_no_service_moves_the_data_alone(sshd, public_tmp, tmpfs):
    src, dst, pidfile = public_tmp / "game", tmpfs / "dst", public_tmp / "game.pid"
    game_copy = public_tmp / "game_server.py"
    game_copy.write_bytes(GAME_SERVER.read_bytes())
    src.mkdir()
    maps = world_with_data(src)
    subprocess.run(["chown", "-R", sshd.user, str(src)], check=True)
    # A stop that fails: a service move would end at once, untouched.
    write_servers(game_server_entry(sshd, src, pidfile, game_copy, stop=["false"]))
    moved = servermove("move", "--json", "--no-service", "--ssh-config", sshd.config_file,
                       "game", src, dst, timeout=300)
    assert moved.returncode == 0, moved.stderr
    messages = json_lines(moved.stdout)
    assert phases_of(messages) == PLAIN_ORDER
    [plan] = [m["data"] for m in messages if m["subject"] == "move.plan"]
    assert "service" not in plan and "serviceRunsFrom" not in messages[-1]["data"]
    assert not src.exists() and not src.is_symlink()  # no cutover: the old path is gone
    assert {k: (dst / k).read_bytes() for k in maps} == maps
    assert not pidfile.exists()  # nothing started the service


def test_postgres_db1_moves_by_config_cutover(pg_cluster: PgCluster, tmpfs: Path) -> None:
    # PostgreSQL's data needs root: db1 is this machine (`local`), and the tests run as root.
    # The path through the sshd is the game server's test above.
    pg = pg_cluster
    pg.psql("CREATE TABLE moved (id int PRIMARY KEY)")
    new = tmpfs / "pgdata"
    write_servers(
        f'[db1]\ntarget = "local"\ndata_path = "{pg.data_dir}"\n'
        f"stop = {toml_command(pg.ctl('stop'))}\nstart = {toml_command(pg.ctl('start'))}\n"
        f"check = {toml_command(['pg_isready', '-q', '-p', str(pg.port)])}\n"
        f'cutover = "config:{pg.config_file}"\n')
    stop, committed = threading.Event(), []
    client = threading.Thread(target=insert_rows, args=(pg, stop, committed))
    try:
        client.start()
        time.sleep(1)
        moved = servermove("move", "--json", "db1", pg.data_dir, new, timeout=300)
        time.sleep(1)
        stop.set()
        client.join(30)
        assert moved.returncode == 0, moved.stderr
        messages = json_lines(moved.stdout)
        assert phases_of(messages) == SERVICE_ORDER
        [plan] = [m["data"] for m in messages if m["subject"] == "move.plan"]
        [change] = plan["service"]["cutoverChanges"]
        assert change["after"].startswith(f"data_directory = '{new}'")
        assert messages[-1]["data"]["serviceRunsFrom"] == "destination"
        assert pg.psql("SHOW data_directory") == str(new)
        rows = {int(x) for x in pg.psql("SELECT id FROM moved").split()}
        assert len(committed) > 5 and set(committed) <= rows
        assert not pg.data_dir.exists()
    finally:
        end_inserting(pg, stop, client)


async def test_the_tuis_apply_moves_a_server_with_its_service(game_site, tmp_path):
    # What Apply Changes runs (Fleet.run_move), with the real mover on this machine.
    from tui.core.fleet import Fleet
    from tui.core.inventory import ServerEntry, ServiceConfig
    from tui.core.moves_log import MovesLog
    from tui.core.protocol import Phase, ServiceRunsFrom

    src, dst, pidfile = game_site
    service = ServiceConfig(stop=tuple(game("stop", pidfile)),
                            start=tuple(game("start", src, pidfile)),
                            check=tuple(game("check", pidfile)), cutover="symlink")
    fleet = Fleet(moves_log=MovesLog(tmp_path / "moves.jsonl"))
    maps = world_with_data(src)
    run(*game("start", src, pidfile))
    wait_ticks(src / "logs" / "console.log", 5)
    move = await fleet.run_move(ServerEntry("game", "local", str(src), service=service),
                                str(dst))
    progress = move.progress
    assert progress.phase is Phase.COMPLETE, (move.problem, progress.outcome())
    assert [p.value for p in progress.phases_reached] == SERVICE_ORDER
    assert progress.service_runs_from is ServiceRunsFrom.DESTINATION
    assert progress.outcome() == (f"Moved; the service runs from {dst}; it was down for "
                                  f"{progress.downtime:.1f} s.")
    check_game_moved(src, dst, pidfile, maps)
    [record] = fleet.moves_log.records()
    assert record.cutover == "symlink" and record.downtimeSeconds == progress.downtime


def test_a_rollback_is_told_with_the_old_path_first_then_why(game_site):
    # Into a pipe: a line a phase, then the outcome on stderr in the client's words around the
    # mover's. Healthy only while SRC is the real directory: fails once switched.
    src, dst, pidfile = game_site
    check = healthy_while_not_switched(src, pidfile)
    commands = {"stop": game("stop", pidfile), "start": game("start", src, pidfile),
                "check": check}
    write_servers(f'[game]\ntarget = "local"\ndata_path = "{src}"\n'
                  + "".join(f"{key} = {toml_command(argv)}\n" for key, argv in commands.items())
                  + 'check_timeout = 1\ncutover = "symlink"\n')
    world_with_data(src)
    run(*game("start", src, pidfile))
    moved = servermove("move", "game", src, dst, timeout=300)
    assert moved.returncode == 1, moved.stderr
    lines = moved.stdout.splitlines()
    assert any(text.startswith("syncing, pass 1") for text in lines)
    assert lines[-3:] == ["switching…", "starting…", "checking…"]  # the end: the outcome
    [outcome] = [text for text in moved.stderr.splitlines() if "Move failed" in text]
    assert outcome.startswith(
        f"servermove: Move failed while checking; the service runs from the old path {src} "
        "again: the service did not pass its check")
    assert outcome.count("runs from the old path") == 1
    assert f"the new copy is at {dst}" in outcome and "it was down for" in outcome
    assert src.is_dir() and not src.is_symlink()
    assert subprocess.run(game("check", pidfile)).returncode == 0

async def test_check_service_runs_the_check_once_on_the_server(public_root, tmp_path):
    # "Test check now" in the server form and the server's screen: the real mover's
    # check-service, with the game server as the service, running and then stopped.
    from tui.core.fleet import Fleet
    from tui.core.inventory import ServerEntry, ServiceConfig
    from tui.core.moves_log import MovesLog

    src, pidfile = public_root / f"check-{os.getpid()}", tmp_path / "pid"
    src.mkdir()
    service = ServiceConfig(stop=tuple(game("stop", pidfile)),
                            start=tuple(game("start", src, pidfile)),
                            check=tuple(game("check", pidfile)))
    server = ServerEntry("game", "local", str(src), service=service)
    fleet = Fleet(moves_log=MovesLog(tmp_path / "moves.jsonl"))
    try:
        run(*game("start", src, pidfile))
        before = time.time()
        running = await fleet.check_service(server)
        assert running.passed and running.result == "passed"
        assert before - 1 <= (running.checked_at or 0) <= time.time() + 1
        assert fleet.service_checks["game"] == running
        stop_game(pidfile)
        stopped = await fleet.check_service(server)
        assert not stopped.passed and stopped.result.startswith("failed (exit ")
        assert running.check == stopped.check == " ".join(game("check", pidfile))
    finally:
        stop_game(pidfile)
        subprocess.run(["rm", "-rf", str(src)])


async def test_the_tui_shows_a_real_service_move_from_apply_to_its_downtime(game_site,
                                                                           tmp_path):
    # The TUI with the real runner and the real mover on this machine: the game server keeps
    # writing while its world is copied, is stopped for the final copy, and runs from the new
    # path after it; the screen says so with the measured downtime.
    from textual.widgets import Input, Label

    from tests.test_tui_support import make_app, settle, wait_for
    from tui.app.screens.modals import ConfirmMoveScreen
    from tui.app.screens.server_detail import ServerDetailScreen
    from tui.app.widgets.move_panel import OutcomePanel
    from tui.core.protocol import Phase

    src, dst, pidfile = game_site
    # The stop takes a second more: the screen is sure to show the clock running.
    stop = ["/bin/sh", "-c", '"$0" "$@" && sleep 1', *game("stop", pidfile)]
    commands = {"stop": stop, "start": game("start", src, pidfile),
                "check": game("check", pidfile)}
    (tmp_path / "servers.toml").write_text(
        f'[game]\ntarget = "local"\ndata_path = "{src}"\n'
        + "".join(f"{key} = {toml_command(argv)}\n" for key, argv in commands.items())
        + 'cutover = "symlink"\n')
    app = make_app(tmp_path, [], real_runner=True, open_server="game")
    seen_down: list[str] = []
    maps = world_with_data(src)
    run(*game("start", src, pidfile))
    wait_ticks(src / "logs" / "console.log", 5)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        state = app.screen.query_one("#service-state", Label)
        await wait_for(pilot, lambda: str(state.render()).startswith("running"),
                       what="the service's check on the screen")
        app.screen.query_one("#new-path", Input).value = str(dst)
        await pilot.click("#apply")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmMoveScreen)
                       and bool(app.screen.query("#max-downtime")), timeout=60,
                       what="the plan")
        await pilot.pause()
        await pilot.click("#yes")

        def note_down() -> bool:
            status = app.screen.query("#service-status")
            if status and status.first().has_class("-down"):
                seen_down.append(str(status.first().render()))
            move = app.fleet.get("game")
            return move is not None and not move.active

        await wait_for(pilot, note_down, timeout=240, what="the move to end")
        await settle(pilot)
        progress = app.fleet.get("game").progress
        assert progress.phase is Phase.COMPLETE, progress.outcome()
        assert [p.value for p in progress.phases_reached] == SERVICE_ORDER
        outcome = str(app.screen.query_one(OutcomePanel).render())
        assert (f"The service runs from {dst}. It was down for "
                f"{progress.downtime:.1f} s.") in outcome
        await wait_for(pilot, lambda: str(app.screen.query_one(
            "#service-downtime", Label).render()).startswith(
            f"last downtime: {progress.downtime:.1f} s"), what="the last downtime")
    assert seen_down and all(text.startswith("service down for ") for text in seen_down)
    check_game_moved(src, dst, pidfile, maps)
