"""Quitting while moves run: the question is answered with keys and the app then ends (the
question used to be awaited inside the app's own message handler, which froze every key)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.widgets import Button

from tests.test_tui_support import (
    ScriptedHandle,
    ScriptedMover,
    copying_sequence,
    make_app,
    plan,
    wait_for,
)
from tui.app.app import ServerMoveApp
from tui.app.screens.modals import ConfirmScreen
from tui.core.inventory import ServerEntry
from tui.core.protocol import Phase

SERVERS = [ServerEntry("web1", "admin@web1.example.com", "/var/lib/app")]


def held_move(request) -> ScriptedHandle:
    """A move that copies until it is cancelled."""
    if request.dry_run:
        return ScriptedHandle([plan(request.server_name, request.src, request.dst)])
    return ScriptedHandle(copying_sequence(request.server_name), hold=asyncio.Event())


async def ask_to_quit(pilot, app: ServerMoveApp) -> ConfirmScreen:
    app.start_move("web1", "/srv/app")
    await wait_for(pilot, lambda: app.fleet.get("web1").progress.phase is Phase.COPYING,
                   what="the copy")
    await pilot.press("ctrl+q")
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
    await pilot.pause()
    return app.screen


async def test_quit_with_a_running_move_leaves_it_running_when_answered(tmp_path: Path) -> None:
    app = make_app(tmp_path, SERVERS, start_move=ScriptedMover(held_move))
    async with app.run_test(size=(100, 30)) as pilot:
        dialog = await ask_to_quit(pilot, app)
        assert dialog.focused is dialog.query_one("#yes", Button)  # leaving them running is safe
        await pilot.press("tab")  # the keys work: focus moves to Stay...
        assert dialog.focused is dialog.query_one("#no", Button)
        await pilot.press("enter")  # ...and Stay keeps the app open
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen),
                       what="the question to close")
        assert app.fleet.is_active("web1") and not app._exit
        dialog = await ask_to_quit_again(pilot, app)
        await pilot.press("enter")  # Quit, leave them running
        await wait_for(pilot, lambda: app._exit, what="the app to exit")
    assert app.return_code == 0


async def ask_to_quit_again(pilot, app: ServerMoveApp) -> ConfirmScreen:
    await pilot.press("ctrl+q")
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
    await pilot.pause()
    return app.screen


async def test_demo_quit_focuses_keep_moving_and_cancels_before_exit(tmp_path: Path) -> None:
    app = make_app(tmp_path, SERVERS, start_move=ScriptedMover(held_move),
                   cancel_moves_on_quit=True)
    async with app.run_test(size=(100, 30)) as pilot:
        dialog = await ask_to_quit(pilot, app)
        # The dangerous answer does not have the focus: Enter keeps the move going.
        assert dialog.focused is dialog.query_one("#no", Button)
        await pilot.press("ctrl+q")  # asked once, however often ctrl+q is pressed
        await pilot.pause()
        assert sum(isinstance(screen, ConfirmScreen) for screen in app.screen_stack) == 1
        await pilot.press("shift+tab", "enter")  # Cancel moves and quit
        await wait_for(pilot, lambda: app._exit, what="the app to exit")
        move = app.fleet.get("web1")
        assert move.progress.phase is Phase.CANCELLED and not move.active
