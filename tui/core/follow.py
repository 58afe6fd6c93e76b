"""Following a move: the one loop that folds a mover's events into a `MoveProgress` and the moves
log, used by the fleet (the TUI) and by `servermove move` / `attach` alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol

from tui.core.moves_log import MoveRecorder
from tui.core.progress import MoveProgress
from tui.core.protocol import Event, MalformedLine

LineHook = Callable[[bytes], None]  # sees each raw line from the mover, as it arrives


class MoveHandle(Protocol):
    """A started or followed move (tui.core.runner's MoverProcess or FollowedMove, or a test's
    scripted one): its events out, a cancel in."""

    stderr_text: str
    exit_status: int | None

    def events(self, on_line: LineHook | None = None) -> AsyncIterator[Event | MalformedLine]: ...
    async def cancel(self) -> None: ...
    async def wait(self) -> int | None: ...
    def close(self) -> None: ...


async def follow(handle: MoveHandle, progress: MoveProgress, recorder: MoveRecorder | None, *,
                 on_event: Callable[[Event | MalformedLine, bool], None] | None = None,
                 on_line: LineHook | None = None) -> int | None:
    """Fold each event of `handle` into `progress`, the recorder writing the moves log, until the
    stream ends; returns the mover's exit status. `on_event(event, changed)` comes after each
    event is folded in (`changed`: whether anything a user sees changed). A lost link raises
    ConnectionLost: what that means is the caller's to say."""
    events = handle.events(on_line) if on_line is not None else handle.events()
    async for event in events:
        changed = progress.apply(event)
        if recorder is not None:
            recorder.observe(event, progress)
        if on_event is not None:
            on_event(event, changed)
    return await handle.wait()
