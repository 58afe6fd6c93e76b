"""A service move on screen: the phase indicator with the pass, the live pass's and the final
delta's bars, the downtime clock while the service is down, the forecast after each pass, and the
outcome (where the service runs, how long it was down, a rollback and why).

The mover here is a synthetic stream (the screen is what is tested); tests/test_service_cli.py
runs the real mover with a real process as the service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from textual.widgets import Button, Input, Label, Static

from tests.test_tui_snapshots import steady
from tests.test_tui_support import (
    FIXED_NOW,
    ScriptedHandle,
    ScriptedMover,
    dry_run_again,
    make_app,
    open_confirmation,
    plan,
    progress,
    settle,
    wait_for,
)
from tui.app.screens.moves_log import matches_text, summary_table
from tui.app.screens.server_detail import ServerDetailScreen
from tui.app.screens.server_form import ServerFormScreen
from tui.app.widgets.move_panel import OutcomePanel
from tui.app.widgets.phase_indicator import phase_line
from tui.core.inventory import (
    ServerEntry,
    ServiceConfig,
    add_server,
    load_inventory,
    set_data_path,
    update_server,
)
from tui.core.moves_log import MoveRecord
from tui.core.protocol import (
    DataState,
    Event,
    Phase,
    PlanEvent,
    ProgressEvent,
    ServicePlan,
    ServiceRunsFrom,
)
from tui.core.wording import DOWNTIME_FORECAST_NOTE

NAME, SRC, DST = "game", "/srv/game/world", "/data/game/world"
SERVERS = [ServerEntry(NAME, "admin@game.example.com", SRC)]
MOVE_ID = "20261202-game-1"
STOP_AT = 40.0  # mover seconds into the move when the stop command begins
SERVICE = ServicePlan(stop="systemctl stop game", start="systemctl start game",
                      check="systemctl is-active --quiet game", cutover="symlink")


def service_plan() -> PlanEvent:
    base = plan(NAME, SRC, DST)
    return PlanEvent(**{**{f: getattr(base, f) for f in base.__slots__}, "dry_run": False,
                        "service": SERVICE, "seq": 1, "move_id": MOVE_ID})


def step(phase: Phase, ts: float, seq: int, *, pass_number: int | None = None,
         done: int = 0, files: int = 0, total: int = 300_000_000, files_total: int = 3000,
         forecast: float | None = None, down: bool = False, verified: int = 0,
         **terminal: object) -> ProgressEvent:
    event = progress(NAME, phase, done=done, files=files, total=total, files_total=files_total,
                     ts=ts, seq=seq, verified=verified,
                     current_file="world/region/r.0.0.mca" if done else None,
                     error=terminal.pop("error", None), data_state=terminal.pop("data_state", None))
    event.move_id = MOVE_ID  # the moves log keeps a move by its id
    event.pass_number = pass_number
    event.forecast_downtime = forecast
    event.down_since = FIXED_NOW - 100 + STOP_AT if down else None
    event.downtime = terminal.pop("downtime", None)
    event.service_runs_from = terminal.pop("runs_from", None)
    return event


def live_passes() -> list[Event]:
    """calculating, pass 1 (everything), pass 2 (what changed) with a forecast."""
    return [service_plan(),
            step(Phase.CALCULATING, 0, 2),
            step(Phase.SYNCING, 5, 3, pass_number=1, done=120_000_000, files=1200),
            step(Phase.SYNCING, 30, 4, pass_number=1, done=300_000_000, files=3000,
                 forecast=4.8),
            step(Phase.SYNCING, 33, 5, pass_number=2, done=2_000_000, files=40,
                 total=5_000_000, files_total=90, forecast=4.8)]


def service_down() -> list[Event]:
    """The stop, then the final delta half copied, 2.6 s after the stop began."""
    return [step(Phase.SYNCING, 36, 6, pass_number=2, done=5_000_000, files=90,
                 total=5_000_000, files_total=90, forecast=2.1),
            step(Phase.STOPPING, STOP_AT, 7, down=True, total=0, files_total=0),
            step(Phase.COPYING, STOP_AT + 2.6, 8, pass_number=3, done=400_000, files=6,
                 total=800_000, files_total=12, down=True)]


def after_switch(seq: int) -> list[Event]:
    return [step(Phase.VERIFYING, STOP_AT + 3, seq, pass_number=3, total=800_000,
                 files_total=12, verified=800_000, done=800_000, files=12, down=True),
            step(Phase.SWITCHING, STOP_AT + 3.2, seq + 1, down=True, total=0, files_total=0),
            step(Phase.STARTING, STOP_AT + 3.3, seq + 2, down=True, total=0, files_total=0),
            step(Phase.CHECKING, STOP_AT + 3.5, seq + 3, down=True, total=0, files_total=0)]


def completed() -> list[Event]:
    return [*live_passes(), *service_down(), *after_switch(9),
            step(Phase.CLEANING, STOP_AT + 4, 13, total=0, files_total=0),
            step(Phase.COMPLETE, STOP_AT + 5, 14, total=0, files_total=0,
                 data_state=DataState.DESTINATION, downtime=3.7,
                 runs_from=ServiceRunsFrom.DESTINATION)]


WHY = f"the check did not pass within 60 s after the start on {DST}"
# The mover's words after a rollback (remote/mover.py, ServiceRun's rollback).
ROLLBACK_ERROR = (f"{WHY}; the service runs from the old path {SRC} again; the new copy is at "
                  f"{DST} (not used; the service may have written to it while it ran from there)")


def rolled_back() -> list[Event]:
    return [*live_passes(), *service_down(), *after_switch(9),
            step(Phase.ERROR, STOP_AT + 70, 13, total=0, files_total=0, error=ROLLBACK_ERROR,
                 data_state=DataState.BOTH, downtime=68.4, runs_from=ServiceRunsFrom.SOURCE)]


class SteppedHandle:
    """A mover whose events the test hands over one at a time."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self.exit_status = 0
        self.stderr_text = ""

    async def events(self) -> AsyncIterator[Event]:
        while (event := await self.queue.get()) is not None:
            yield event

    async def cancel(self) -> None:
        await self.queue.put(None)

    async def wait(self) -> int:
        return self.exit_status

    def close(self) -> None:
        pass


def screen_text(app) -> dict[str, str]:
    screen = app.screen
    assert isinstance(screen, ServerDetailScreen)
    status = screen.query_one("#service-status", Label)
    return {"phases": phase_line(app.fleet.get(NAME).progress).plain,
            "bar": str(screen.query_one("#bytes-label", Label).render()),
            "service": str(status.render()) if status.display else "",
            "down": "yes" if status.has_class("-down") else "no",
            "outcome": str(screen.query_one(OutcomePanel).render())
            if screen.query_one(OutcomePanel).display else ""}


async def test_a_service_move_is_shown_through_every_phase(tmp_path: Path) -> None:
    handle = SteppedHandle()
    app = make_app(tmp_path, SERVERS, start_move=ScriptedMover(lambda request: handle),
                   open_server=NAME)
    seen: list[dict[str, str]] = []
    async with app.run_test(size=(120, 40)) as pilot:
        app.start_move(NAME, DST)
        for event in completed():
            await handle.queue.put(event)
            await wait_for(pilot, lambda event=event: app.fleet.get(NAME).progress.last_seq
                           == event.seq, what=f"event {event.seq}")
            await settle(pilot)
            seen.append(screen_text(app))
        await handle.queue.put(None)
        await settle(pilot)
        ended = screen_text(app)
    by_seq = dict(enumerate(seen, 1))
    assert "▶ syncing (pass 1)" in by_seq[3]["phases"] and by_seq[3]["bar"] == "Pass 1"
    assert by_seq[3]["service"] == ("service running  ·  forecast downtime: measured after the "
                                    "first pass")
    assert by_seq[4]["service"] == "service running  ·  forecast downtime 4.8 s"
    assert "▶ syncing (pass 2)" in by_seq[5]["phases"] and by_seq[5]["bar"] == "Pass 2"
    assert by_seq[6]["service"] == "service running  ·  forecast downtime 2.1 s"
    # The stop: the downtime clock, in the error colour, counts from the stop command.
    assert "▶ stopping" in by_seq[7]["phases"] and "✔ syncing" in by_seq[7]["phases"]
    assert (by_seq[7]["service"], by_seq[7]["down"]) == ("service down for 0.0 s", "yes")
    assert by_seq[8]["bar"] == "Final" and by_seq[8]["service"] == "service down for 2.6 s"
    for seq, phase in [(9, "verifying"), (10, "switching"), (11, "starting"), (12, "checking"),
                       (13, "cleaning")]:
        assert f"▶ {phase}" in by_seq[seq]["phases"], (seq, by_seq[seq])
    assert by_seq[12]["service"] == "service down for 3.5 s"
    assert by_seq[13]["down"] == "no" and by_seq[13]["service"].startswith("service running")
    assert by_seq[14]["service"] == ""
    assert f"The service runs from {DST}. It was down for 3.7 s." in ended["outcome"]


async def test_the_downtime_clock_ticks_between_events(tmp_path: Path) -> None:
    # The mover is silent while the stop command runs: the clock goes on from the app's clock.
    now = [FIXED_NOW]
    handle = SteppedHandle()
    app = make_app(tmp_path, SERVERS, start_move=ScriptedMover(lambda request: handle),
                   open_server=NAME, clock=lambda: now[0])
    async with app.run_test(size=(120, 40)) as pilot:
        app.start_move(NAME, DST)
        for event in [*live_passes(), *service_down()[:2]]:
            await handle.queue.put(event)
        await wait_for(pilot, lambda: app.fleet.get(NAME).progress.last_seq == 7)
        await settle(pilot)
        assert screen_text(app)["service"] == "service down for 0.0 s"
        now[0] += 1.5
        await wait_for(pilot, lambda: screen_text(app)["service"] == "service down for 1.5 s",
                       what="the clock to tick without an event")
        await handle.queue.put(None)
        await settle(pilot)


async def test_a_rollback_says_the_service_runs_from_the_old_path_and_why(tmp_path: Path) -> None:
    app = make_app(tmp_path, SERVERS, open_server=NAME, start_move=ScriptedMover(
        lambda request: ScriptedHandle(rolled_back(), exit_status=1)))
    async with app.run_test(size=(120, 40)) as pilot:
        app.start_move(NAME, DST)
        await wait_for(pilot, lambda: not app.fleet.is_active(NAME))
        await settle(pilot)
        outcome = app.screen.query_one(OutcomePanel)
        text = str(outcome.render())
    assert outcome.border_title == "Move failed while checking"
    assert text.startswith(f"The service runs from the old path {SRC} again. It was down for "
                           f"1:08.\nWhy: {WHY}; the new copy is at {DST} (not used;")


# -- snapshots ------------------------------------------------------------------------------------

def hold_after(events: list[Event]):
    def script(request) -> ScriptedHandle:
        return ScriptedHandle(events, hold=asyncio.Event())
    return script


SCENES = {"live-pass": (hold_after(live_passes()), 5),
          "downtime-clock": (hold_after([*live_passes(), *service_down()]), 8),
          "rollback": (lambda request: ScriptedHandle(rolled_back(), exit_status=1), 13)}


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
@pytest.mark.parametrize("scene", list(SCENES))
def test_service_move_snapshot(snap_compare, snapshot_dir: Path, scene: str,
                               size: tuple[int, int]) -> None:
    script, last_seq = SCENES[scene]
    app = make_app(snapshot_dir, SERVERS, start_move=ScriptedMover(script), open_server=NAME)

    async def run_before(pilot) -> None:
        pilot.app.start_move(NAME, DST)
        await wait_for(pilot, lambda: pilot.app.fleet.get(NAME).progress.last_seq == last_seq)
        await settle(pilot)
        await steady(pilot)  # the new path's free space is asked for after a pause: shown
    assert snap_compare(app, terminal_size=size, run_before=run_before)


# -- the confirmation -----------------------------------------------------------------------------

SERVICE_TOML = f"""# the game server
[{NAME}]
target = "admin@game.example.com"
data_path = "{SRC}"
service = "systemd:game"   # stop, start and check by systemctl
cutover = "symlink"
"""


def dry_run_then_hold(request) -> ScriptedHandle:
    if request.dry_run:
        return ScriptedHandle([service_plan()])
    return ScriptedHandle(live_passes(), hold=asyncio.Event())


async def test_the_confirmation_lists_the_steps_and_offers_a_downtime_limit(
        tmp_path: Path) -> None:
    (tmp_path / "servers.toml").write_text(SERVICE_TOML)
    mover = ScriptedMover(dry_run_then_hold)
    app = make_app(tmp_path, [], start_move=mover, open_server=NAME, new_path=DST)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        await open_confirmation(pilot)
        dialog = app.screen
        body = str(dialog.query_one(".dialog-body", Static).render())
        assert DOWNTIME_FORECAST_NOTE in body
        assert ("1. Copy while the service runs (live passes)\n"
                "2. Stop the service: systemctl stop game\n") in body
        assert f"4. Switch by symlink: {SRC} becomes a link to {DST}\n" in body
        limit = dialog.query_one("#max-downtime", Input)
        limit.value = "soon"
        await pilot.pause()
        assert dialog.query_one("#yes", Button).disabled
        assert str(dialog.query_one("#max-downtime-problem", Label).render()) == (
            "the downtime limit is a number of seconds, e.g. 10")
        limit.value = "10"
        await pilot.pause()
        await dry_run_again(pilot, dialog)
        assert app.screen.query_one("#max-downtime", Input).value == "10"
        await pilot.click("#yes")
        await wait_for(pilot, lambda: len(mover.requests) == 3, what="the move")
        app.exit()
    first, again, move = mover.requests
    assert (first.max_downtime, again.max_downtime, move.max_downtime) == (None, 10.0, 10.0)
    assert not move.dry_run and move.service["cutover"] == "symlink"


# -- the server's screen --------------------------------------------------------------------------

async def test_the_servers_screen_shows_its_service_cutover_and_last_downtime(
        tmp_path: Path) -> None:
    (tmp_path / "servers.toml").write_text(SERVICE_TOML)
    app = make_app(tmp_path, [], open_server=NAME, start_move=ScriptedMover(
        lambda request: ScriptedHandle(completed())))
    checked = time.strftime("%H:%M:%S", time.localtime(FIXED_NOW))

    def shown(selector: str) -> str:
        return str(app.screen.query_one(selector, Label).render())

    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        await wait_for(pilot, lambda: shown("#service-state").startswith("running"),
                       what="the service's check")
        assert shown("#service-state") == f"running (checked at {checked}: its check passed)"
        assert shown("#service-cutover") == (f"switch by symlink: {SRC} becomes a link to the "
                                             "new path")
        assert shown("#service-downtime") == "last downtime: no service move yet"
        app.start_move(NAME, DST)
        await wait_for(pilot, lambda: not app.fleet.is_active(NAME))
        await settle(pilot)
        await wait_for(pilot, lambda: shown("#service-downtime").startswith(
            "last downtime: 3.7 s (the move of "), what="the last downtime")
        # After the move the service's data path is the new one, and so is the cutover's.
        assert shown("#service-cutover").startswith(f"switch by symlink: {DST} becomes")


# -- the moves log --------------------------------------------------------------------------------

def test_the_moves_log_finds_service_moves_and_tells_their_downtime_passes_cutover() -> None:
    service = MoveRecord(moveId="m-game", server=NAME, target="local", source=SRC,
                         destination=DST, phase="complete", downtimeSeconds=3.7, passes=3,
                         cutover="symlink", serviceRunsFrom="destination")
    plain = MoveRecord(moveId="m-web", server="web1", target="web1.example.com",
                       source="/var/lib/app", destination="/srv/app", phase="error",
                       error="ssh: Could not resolve hostname: Name or service not known")
    assert matches_text(service, "service") and matches_text(service, "SERVICE")
    assert not matches_text(plain, "service")  # a word in its error is not a service move
    assert matches_text(service, "symlink") and not matches_text(plain, "symlink")
    assert matches_text(plain, "not known")
    rows = shown_rows(summary_table(service))
    assert rows["Service"] == ("service down for 3.7 s; 3 passes; cutover symlink; runs from "
                               "the destination")
    assert "Service" not in shown_rows(summary_table(plain))


def shown_rows(table) -> dict[str, str]:
    labels, values = (list(column.cells) for column in table.columns)
    return {str(label): str(value) for label, value in zip(labels, values, strict=True)}


# -- servers.toml ---------------------------------------------------------------------------------

def test_a_servers_service_is_written_to_servers_toml_and_a_shorthand_keeps_its_comment(
        tmp_path: Path) -> None:
    path = tmp_path / "servers.toml"
    service = ServiceConfig(stop=("game", "stop"), start="game start --world w",
                            check=("game", "check"), check_timeout=30, cutover="symlink")
    add_server(ServerEntry("new", "local", "/srv/new", service=service), path)
    assert load_inventory(path).get("new").service == service
    assert 'stop = ["game", "stop"]\nstart = "game start --world w"\n' in path.read_text()
    with path.open("a") as toml:
        toml.write(SERVICE_TOML)
    set_data_path(NAME, DST, path)  # what a completed move does
    text = path.read_text()
    assert 'service = "systemd:game"   # stop, start and check by systemctl\n' in text
    assert "stop =" not in text.split(f"[{NAME}]")[1]
    moved = load_inventory(path).get(NAME)
    assert moved.data_path == DST and moved.service.cutover == "symlink"
    # Edited to other commands: written out key by key, the shorthand gone.
    update_server(NAME, replace(moved, service=service), path)
    assert load_inventory(path).get(NAME).service == service
    assert "systemd:game" not in path.read_text()


# -- the server form ------------------------------------------------------------------------------

async def test_the_server_form_edits_the_service_and_tests_its_check(tmp_path: Path) -> None:
    path = tmp_path / "servers.toml"
    path.write_text(SERVICE_TOML)
    app = make_app(tmp_path, [])
    checked = time.strftime("%H:%M:%S", time.localtime(FIXED_NOW))
    async with app.run_test(size=(120, 50)) as pilot:
        app.edit_server(NAME)
        await wait_for(pilot, lambda: isinstance(app.screen, ServerFormScreen)
                       and bool(app.screen.query("#service-cutover")))
        await pilot.pause()
        form = app.screen
        fields = {key: form.query_one(f"#service-{key}", Input) for key in
                  ("service", "stop", "start", "check", "cutover")}
        assert fields["stop"].value == "systemctl stop game"
        assert fields["check"].value == "systemctl is-active --quiet game"
        assert fields["cutover"].value == "symlink"
        fields["stop"].value = ""
        await press(pilot, "#save")
        assert str(form.query_one("#problem", Static).render()).startswith(
            "service: has no stop command")
        assert isinstance(app.screen, ServerFormScreen)  # nothing saved
        fields["stop"].value = "/usr/local/bin/game-ctl stop"
        fields["cutover"].value = "config:etc/game.conf"
        await press(pilot, "#save")
        assert str(form.query_one("#problem", Static).render()) == (
            "service: cutover config file must be an absolute path (starting with /)")
        fields["cutover"].value = "symlink"
        await press(pilot, "#test-check")
        result = form.query_one("#check-result", Static)
        await wait_for(pilot, lambda: str(result.render()).startswith("running"),
                       what="the check's result")
        assert str(result.render()) == f"running (checked at {checked}: its check passed)"
        await press(pilot, "#save")
        await wait_for(pilot, lambda: not isinstance(app.screen, ServerFormScreen))
    text = path.read_text()
    assert text.startswith("# the game server\n")
    assert 'stop = "/usr/local/bin/game-ctl stop"' in text
    service = load_inventory(path).get(NAME).service
    assert service.stop == "/usr/local/bin/game-ctl stop"
    assert service.check == ("systemctl", "is-active", "--quiet", "game")  # still an array


async def press(pilot, selector: str) -> None:
    """Press a button of the form, wherever its scroll has it."""
    await pilot.pause()
    pilot.app.screen.query_one(selector, Button).press()
    await pilot.pause()
