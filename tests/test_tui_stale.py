"""Words on the server screen belong to the move (or the check) they describe, and go when it
changes: no "Cancelling…" after the cancel, no old "Refused" beside a new problem, no cancel
question left open after the move ended."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.widgets import Input, Static

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
from tui.app.screens.modals import CancelMoveScreen, ConfirmScreen
from tui.app.screens.server_detail import ServerDetailScreen
from tui.core.inventory import ServerEntry
from tui.core.protocol import DataState, Phase

SERVERS = [ServerEntry("web1", "admin@web1.example.com", "/var/lib/app")]
NEW_PATH = "/srv/app"


class FinishingHandle(ScriptedHandle):
    """Copies until `finish` is set, then completes (or, if cancelled first, is cancelled)."""

    def __init__(self, name: str, finish: asyncio.Event) -> None:
        super().__init__(copying_sequence(name), hold=finish)
        self.name = name

    async def events(self):
        async for event in super().events():
            yield event
        if not self._cancelled.is_set():
            yield progress(self.name, Phase.COMPLETE, done=300_000_000, files=3000, ts=30,
                           verified=300_000_000, data_state=DataState.DESTINATION)


class SlowCancelHandle(FinishingHandle):
    """A cancel that takes until `cleaned` is set, as a real mover's cleanup does."""

    def __init__(self, name: str, finish: asyncio.Event, cleaned: asyncio.Event) -> None:
        super().__init__(name, finish)
        self.cleaned = cleaned
        self._cleanup: asyncio.Task | None = None

    async def cancel(self) -> None:
        self._cleanup = asyncio.ensure_future(self._cancel_once_cleaned())

    async def _cancel_once_cleaned(self) -> None:
        await self.cleaned.wait()
        await super().cancel()


def mover(finish: asyncio.Event, refusal: str | None = None,
          cleaned: asyncio.Event | None = None) -> ScriptedMover:
    def script(request) -> ScriptedHandle:
        if request.dry_run and refusal:
            return ScriptedHandle([progress(request.server_name, Phase.ERROR, error=refusal)],
                                  exit_status=2)
        if request.dry_run:
            return ScriptedHandle([plan(request.server_name, request.src, request.dst)])
        if cleaned is not None:
            return SlowCancelHandle(request.server_name, finish, cleaned)
        return FinishingHandle(request.server_name, finish)
    return ScriptedMover(script)


def status(app: ServerMoveApp) -> str:
    return str(app.screen.query_one("#action-status", Static).render())


async def open_with_move(pilot, app: ServerMoveApp) -> None:
    await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
    app.start_move("web1", NEW_PATH)
    await wait_for(pilot, lambda: app.fleet.get("web1").progress.phase is Phase.COPYING,
                   what="the copy")
    await settle(pilot)


async def test_cancelling_goes_when_the_cancel_is_done(tmp_path: Path) -> None:
    cleaned = asyncio.Event()
    app = make_app(tmp_path, SERVERS, start_move=mover(asyncio.Event(), cleaned=cleaned),
                   open_server="web1")
    async with app.run_test(size=(100, 30)) as pilot:
        await open_with_move(pilot, app)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CancelMoveScreen))
        await pilot.click("#yes")
        await wait_for(pilot, lambda: status(app).startswith("Cancelling"), what="Cancelling")
        cleaned.set()
        await wait_for(pilot, lambda: not app.fleet.is_active("web1"), what="the cancel")
        await settle(pilot)
        assert app.fleet.get("web1").progress.phase is Phase.CANCELLED
        assert status(app) == ""
        await pilot.press("escape")
        await pilot.pause()
        app.open_server("web1")
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        await settle(pilot)
        assert status(app) == ""


async def test_a_refusal_goes_when_the_path_changes(tmp_path: Path) -> None:
    app = make_app(tmp_path, SERVERS, start_move=mover(asyncio.Event(), "not enough space"),
                   open_server="web1", new_path=NEW_PATH)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        await pilot.click("#apply")
        await wait_for(pilot, lambda: status(app).startswith("Refused"), what="the refusal")
        assert "not enough space" in status(app)
        app.screen.query_one("#new-path", Input).value = "relative/path"
        await pilot.pause()
        assert "absolute" in str(app.screen.query_one("#new-free").render())  # inline problem
        assert status(app) == ""


async def test_the_cancel_question_goes_when_the_move_ends(tmp_path: Path) -> None:
    finish = asyncio.Event()
    app = make_app(tmp_path, SERVERS, start_move=mover(finish), open_server="web1")
    async with app.run_test(size=(100, 30)) as pilot:
        await open_with_move(pilot, app)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CancelMoveScreen))
        finish.set()  # the move completes while the question is open
        await wait_for(pilot, lambda: not app.fleet.is_active("web1"), what="the move's end")
        await settle(pilot)
        assert app.fleet.get("web1").succeeded
        assert not any(isinstance(screen, ConfirmScreen) for screen in app.screen_stack)
        assert isinstance(app.screen, ServerDetailScreen)
        # The server's screen says it ended: no toast about it on top.
        assert not [n for n in app._notifications if n.title == "web1: the move ended"]
