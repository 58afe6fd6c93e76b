"""Shared helpers for the TUI tests: a deadline wait, synthetic move streams, and an app factory.

The synthetic mover stands in for the SSH layer only where a test is about the UI itself
(snapshots with a fixed clock, coalescing under a flood); the flow tests use the real runner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from textual.pilot import Pilot
from textual.screen import Screen

from tui.app.app import ServerMoveApp
from tui.core.fleet import Fleet, MoveOptions
from tui.core.inventory import ServerEntry, add_server
from tui.core.protocol import (
    DataState,
    Event,
    MalformedLine,
    Phase,
    PlanEvent,
    ProgressEvent,
    ServiceCheckEvent,
)

FIXED_NOW = 1_700_000_000.0  # the clock of every snapshot: nothing on screen depends on real time


def fixed_clock() -> float:
    return FIXED_NOW


async def wait_for(pilot: Pilot, condition: Callable[[], object], timeout: float = 20.0,
                   what: str = "condition") -> None:
    """Let the app run until `condition()` is true; fail after `timeout` seconds, saying what
    the fleet was doing then."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            moves = {name: (move.state.value, move.progress.phase, move.problem)
                     for name, move in pilot.app.fleet.moves.items()}
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                                 f"screen {pilot.app.screen}, moves {moves}")
        await pilot.pause(0.02)


async def open_confirmation(pilot: Pilot) -> Screen:
    """Apply on the server's screen, and the move's confirmation once it is laid out (a click
    then lands where its buttons are)."""
    from tui.app.screens.modals import ConfirmMoveScreen

    await pilot.click("#apply")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmMoveScreen),
                   what="the confirmation")
    await pilot.pause()
    return pilot.app.screen


async def dry_run_again(pilot: Pilot, dialog: Screen) -> Screen:
    """The confirmation's options changed: its button now runs the dry run again; the new
    confirmation, laid out."""
    from textual.widgets import Button

    from tui.app.screens.modals import ConfirmMoveScreen

    assert str(dialog.query_one("#yes", Button).label) == "Dry run again"
    await pilot.click("#yes")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmMoveScreen)
                   and pilot.app.screen is not dialog, what="the second plan")
    await pilot.pause()
    return pilot.app.screen


async def settle(pilot: Pilot) -> None:
    """Wait until the screen shows what the fleet knows, on conditions rather than the clock:
    every ended move's worker has finished (its last act is to post MoveFinished), no progress
    is left unpublished, and the messages those set off have been handled."""
    app = pilot.app
    await wait_for(pilot, lambda: sum(1 for worker in app.workers
                                      if worker.group == "moves" and not worker.is_finished)
                   == sum(1 for name in app.fleet.moves if app.fleet.is_active(name)),
                   what="the workers of ended moves to finish")
    await wait_for(pilot, lambda: not app.fleet._changed, what="the last progress published")
    for _ in range(3):  # the app's queue, then each screen's, then its widgets'
        await pilot.pause()


@dataclass
class FakeFsStat:
    """Shaped like tui.core.protocol.FsStatEvent."""

    path: str
    exists: bool = True
    free_bytes: int | None = 40_000_000_000
    total_bytes: int | None = 100_000_000_000
    free_inodes: int | None = 1_000_000
    mount_point: str | None = "/"
    device: int | None = 1


async def no_journal(target, **_: object) -> list:
    """The synthetic servers keep no journal of moves."""
    return []


async def fake_check_service(target, service: dict, **_: object) -> ServiceCheckEvent:
    """The synthetic servers' services are running."""
    check = service["check"]
    return ServiceCheckEvent(passed=True, checked_at=FIXED_NOW,
                             check=check if isinstance(check, str) else " ".join(check),
                             result="passed")


async def fake_stat_paths(target, paths, **_: object) -> list[FakeFsStat]:
    return [FakeFsStat(path, mount_point="/srv" if path.startswith("/srv") else "/")
            for path in paths]


def progress(name: str, phase: Phase, *, done: int = 0, files: int = 0, ts: float = 0.0,
             total: int = 300_000_000, files_total: int = 3000, seq: int | None = None,
             current_file: str | None = None, error: str | None = None,
             data_state: DataState | None = None, verified: int = 0) -> ProgressEvent:
    return ProgressEvent(server_name=name, phase=phase, bytes_total=total, bytes_copied=done,
                         files_total=files_total, files_copied=files, current_file=current_file,
                         error=error, ts=FIXED_NOW - 100 + ts, seq=seq, data_state=data_state,
                         bytes_verified=verified, files_verified=files if verified else 0)


def plan(name: str, src: str, dst: str, *, method: str = "copy") -> PlanEvent:
    return PlanEvent(server_name=name, src=src, dst=dst, method=method, bytes_total=300_000_000,
                     files_total=3000, dirs_total=120, verify="checksum", dry_run=True,
                     dst_free_bytes=40_000_000_000, src_free_bytes=1_000_000_000)


def copying_sequence(name: str, *, until: float = 0.45) -> list[ProgressEvent]:
    """A move from calculating to `until` of the copy, one event a second of mover time."""
    events = [progress(name, Phase.CALCULATING, ts=0.0, seq=1)]
    steps = 20
    for step in range(1, int(steps * until) + 1):
        events.append(progress(name, Phase.COPYING, done=15_000_000 * step, files=150 * step,
                               ts=float(step), seq=step + 1,
                               current_file=f"photos/2023/summer/IMG_{step:04d}.jpg"))
    return events


class ScriptedHandle:
    """A mover that says what it is told; `cancel()` ends it the way the real one does."""

    def __init__(self, events: Iterable[Event | MalformedLine], *, delay: float = 0.0,
                 hold: asyncio.Event | None = None, exit_status: int = 0) -> None:
        self._events = events  # read once, lazily: a generator may go on until a test stops it
        self._delay = delay
        self._hold = hold
        self._cancelled = asyncio.Event()
        self.exit_status = exit_status
        self.stderr_text = ""
        self.closed = False

    async def events(self) -> AsyncIterator[Event | MalformedLine]:
        last: ProgressEvent | None = None
        for event in self._events:
            if self._cancelled.is_set():
                break
            yield event
            last = event if isinstance(event, ProgressEvent) else last
            await asyncio.sleep(self._delay)
        if self._hold is not None and not self._cancelled.is_set():
            holding = asyncio.ensure_future(self._hold.wait())
            cancelling = asyncio.ensure_future(self._cancelled.wait())
            try:
                await asyncio.wait([holding, cancelling], return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the app quits mid-move and the worker is cancelled
                holding.cancel()
                cancelling.cancel()
        if self._cancelled.is_set() and last is not None:
            self.exit_status = 3
            yield progress(last.server_name, Phase.CANCELLED, done=last.bytes_copied,
                           files=last.files_copied, ts=(last.ts or FIXED_NOW) - FIXED_NOW + 101,
                           error="cancelled by the user", data_state=DataState.SOURCE)

    async def cancel(self) -> None:
        self._cancelled.set()

    async def wait(self) -> int:
        return self.exit_status

    def close(self) -> None:
        self.closed = True


class ScriptedMover:
    """start_move for a Fleet: each server gets the handle `script(request)` makes."""

    def __init__(self, script: Callable[[object], ScriptedHandle]) -> None:
        self.script = script
        self.requests: list[object] = []

    async def __call__(self, target, request, **_: object) -> ScriptedHandle:
        self.requests.append(request)
        return self.script(request)


def write_inventory(config_dir: Path, servers: Iterable[ServerEntry]) -> Path:
    path = config_dir / "servers.toml"
    for server in servers:
        add_server(server, path)
    return path


def make_app(config_dir: Path, servers: Iterable[ServerEntry], *,
             start_move: Callable[..., object] | None = None, real_runner: bool = False,
             clock: Callable[[], float] = fixed_clock, **kwargs: object) -> ServerMoveApp:
    path = write_inventory(config_dir, servers)
    fleet = None if real_runner else Fleet(start_move=start_move, stat_paths=fake_stat_paths,
                                           list_moves=no_journal, clock=clock,
                                           check_service=fake_check_service)
    kwargs.setdefault("ssh_aliases", ["web1", "db-primary"])
    kwargs.setdefault("move_options", MoveOptions())
    return ServerMoveApp(inventory_path=path, fleet=fleet, clock=clock, **kwargs)
