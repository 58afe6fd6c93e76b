"""SVG snapshots of every screen, with a fixed clock and fixed data so they are stable.

Regenerate with `pytest tests/test_tui_snapshots.py --snapshot-update`, then look at the SVGs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import Input

from tests.test_tui_support import (
    ScriptedHandle,
    ScriptedMover,
    copying_sequence,
    make_app,
    plan,
    progress,
    settle,
    wait_for,
)
from tui.app.app import ServerMoveApp
from tui.app.screens.modals import HostKeyScreen
from tui.app.screens.server_detail import STAT_DEBOUNCE_S, ServerDetailScreen
from tui.core.inventory import ServerEntry
from tui.core.protocol import DataState, Phase
from tui.core.ssh import HostKeyQuestion

# Paths appear on screen, so the snapshots' inventories live at a fixed place, not in tmp_path.
SERVERS = [
    ServerEntry("web1", "admin@web1.example.com", "/var/lib/app"),
    ServerEntry("web2", "admin@web2.example.com:2222", "/var/lib/app"),
    ServerEntry("db-primary", "db-primary", "/srv/postgres/16/main", sudo=True),
    ServerEntry("files", "files.lan", "/data/share"),
]
NEW_PATH = "/srv/app"


def finished_sequence(name: str, phase: Phase) -> list:
    events = copying_sequence(name, until=1.0)
    if phase is Phase.COMPLETE:
        events += [progress(name, Phase.VERIFYING, done=300_000_000, files=3000, ts=21,
                            verified=300_000_000, seq=len(events) + 1),
                   progress(name, Phase.CLEANING, done=300_000_000, files=3000, ts=25,
                            verified=300_000_000, seq=len(events) + 2),
                   progress(name, Phase.COMPLETE, done=300_000_000, files=3000, ts=26,
                            verified=300_000_000, seq=len(events) + 3,
                            data_state=DataState.DESTINATION)]
    else:
        events = [*events[:12], progress(name, Phase.ERROR, done=165_000_000, files=1650,
                                         ts=12, seq=13, data_state=DataState.SOURCE,
                                         error="No space left on device while writing "
                                               "db/tables/table-3.db")]
    return events


def script(request) -> ScriptedHandle:
    """web1 completes, web2 fails, db-primary keeps copying, files is idle."""
    name = request.server_name
    if request.dry_run:
        return ScriptedHandle([plan(name, request.src, request.dst)])
    if name == "web1":
        return ScriptedHandle(finished_sequence(name, Phase.COMPLETE))
    if name == "web2":
        return ScriptedHandle(finished_sequence(name, Phase.ERROR), exit_status=1)
    return ScriptedHandle(copying_sequence(name, until=0.45), hold=asyncio.Event())


def app_for(config: Path, *, servers: list[ServerEntry] = SERVERS, **kwargs) -> ServerMoveApp:
    return make_app(config, servers, start_move=ScriptedMover(script), **kwargs)


async def steady(pilot) -> None:
    """Nothing left to change on its own: no blinking cursor, and the free space of a typed new
    path already shown (it is asked for a moment after the path changes)."""
    screen = pilot.app.screen
    for field in screen.query(Input):
        field.cursor_blink = False
    if isinstance(screen, ServerDetailScreen):
        # Where the focus lands when a move ends depends on timing: put it in one place.
        screen.query_one("#new-path", Input).focus()
    if screen.query("#new-free") and screen.query_one("#new-path", Input).value:
        await wait_for(pilot, lambda: "free" in str(screen.query_one("#new-free").render()),
                       what="the new path's free space")
    # A changed path asks for free space after a pause (STAT_DEBOUNCE_S): let that happen.
    await pilot.pause(STAT_DEBOUNCE_S + 0.1)
    await wait_for(pilot, lambda: all(worker.is_finished for worker in pilot.app.workers
                                      if worker.group == "stat"), what="free space")
    await pilot.pause()


def moves(*names: str) -> Callable:
    """run_before: start moves on `names` and let each reach where its script leaves it."""
    async def run_before(pilot) -> None:
        app = pilot.app
        for name in names:
            app.start_move(name, NEW_PATH)
        await wait_for(pilot, lambda: all(
            app.fleet.get(n) and (not app.fleet.is_active(n)
                                  or app.fleet.get(n).progress.files_copied >= 1350)
            for n in names))
        await settle(pilot)
        await steady(pilot)
    return run_before


def test_dashboard(snap_compare, snapshot_dir: Path) -> None:
    assert snap_compare(app_for(snapshot_dir), terminal_size=(100, 24),
                        run_before=moves("web1", "web2", "db-primary"))


def test_first_run(snap_compare, snapshot_dir: Path) -> None:
    assert snap_compare(app_for(snapshot_dir, servers=[]), terminal_size=(100, 30))


def test_server_detail_idle(snap_compare, snapshot_dir: Path) -> None:
    async def run_before(pilot) -> None:
        await steady(pilot)
    app = app_for(snapshot_dir, open_server="files", new_path="/srv/share")
    assert snap_compare(app, terminal_size=(100, 30), run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (160, 50)])
def test_move_in_progress(snap_compare, snapshot_dir: Path, size: tuple[int, int]) -> None:
    app = app_for(snapshot_dir, open_server="db-primary")
    assert snap_compare(app, terminal_size=size, run_before=moves("db-primary"))


def test_move_error(snap_compare, snapshot_dir: Path) -> None:
    app = app_for(snapshot_dir, open_server="web2")
    assert snap_compare(app, terminal_size=(100, 30), run_before=moves("web2"))


def test_move_complete(snap_compare, snapshot_dir: Path) -> None:
    app = app_for(snapshot_dir, open_server="web1")
    assert snap_compare(app, terminal_size=(100, 30), run_before=moves("web1"))


def test_host_key_dialog(snap_compare, snapshot_dir: Path) -> None:
    async def run_before(pilot) -> None:
        pilot.app.push_screen(HostKeyScreen(HostKeyQuestion(
            "web2", "web2.example.com", 2222, "ssh-ed25519",
            "SHA256:Xq3mZ0bq2n0s1kG7cC8yB8lO5vA9hT2eR4wU6iP1oJk",
            Path("/home/admin/.ssh/known_hosts"))))
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, HostKeyScreen))
        await pilot.pause()
    assert snap_compare(app_for(snapshot_dir), terminal_size=(100, 24), run_before=run_before)


def test_help(snap_compare, snapshot_dir: Path) -> None:
    async def run_before(pilot) -> None:
        await pilot.press("question_mark")
        await pilot.pause()
    assert snap_compare(app_for(snapshot_dir), terminal_size=(100, 40), run_before=run_before)
