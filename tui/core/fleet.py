"""The fleet: every server's current (or last) move, run side by side, for the TUI to show.

Headless (no Textual): the app runs `Fleet.run_move` in a worker per server and, about ten times
a second, asks `take_changed()` which servers changed since it last looked. However fast a mover
talks, the screen then repaints each server at most that often, and nothing here ever blocks the
UI: every SSH round trip is awaited inside the worker.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tui.core import runner, wording
from tui.core.errors import (
    AuthFailed,
    BadInput,
    ConnectionLost,
    HostKeyChanged,
    HostUnreachable,
    ServermoveError,
)
from tui.core.follow import MoveHandle, follow
from tui.core.inventory import ServerEntry, ServiceConfig, keep_old_seconds
from tui.core.moves_log import MoveRecorder, MovesLog, record_from_listed
from tui.core.progress import MoveProgress
from tui.core.protocol import Phase, PlanEvent, ProgressEvent, ServiceCheckEvent
from tui.core.ssh import Prompter, SshSettings
from tui.core.targets import Target, parse_target

# start_move(target, request, *, settings, prompter) and stat_paths(target, paths, ...), as in
# tui.core.runner; injectable so tests can feed synthetic streams for many servers at once.
StartMove = Callable[..., Awaitable[MoveHandle]]
AttachMove = Callable[..., Awaitable[MoveHandle]]
ListMoves = Callable[..., Awaitable[list[Any]]]
StatPaths = Callable[..., Awaitable[list[Any]]]
CheckService = Callable[..., Awaitable[ServiceCheckEvent]]


@dataclass(frozen=True)
class MoveOptions:
    verify: str = "checksum"
    bwlimit: str | None = None
    # A server with a service gets a service move (stop, final copy, switch, start, check)
    # unless with_service is False; max_downtime: the forecast the stop waits for.
    with_service: bool = True
    max_downtime: float | None = None


DEFAULT_MOVE_OPTIONS = MoveOptions()

class MoveState(StrEnum):
    CONNECTING = "connecting"
    RUNNING = "running"
    CONNECTION_LOST = "connection lost"
    FAILED_TO_START = "could not start"
    FINISHED = "finished"


class ConnectionProblem(StrEnum):
    """Why a server cannot be reached, as its status says."""

    UNREACHABLE = "unreachable"
    HOST_KEY_CHANGED = "host key changed"
    AUTH_FAILED = "auth failed"


def connection_problem(error: ServermoveError) -> ConnectionProblem | None:
    """The problem an SSH error shows, or None for an error that says nothing about the
    connection (a host key not accepted yet, a missing python, a refused path)."""
    if isinstance(error, HostKeyChanged):
        return ConnectionProblem.HOST_KEY_CHANGED
    if isinstance(error, AuthFailed):
        return ConnectionProblem.AUTH_FAILED
    if isinstance(error, HostUnreachable):
        return ConnectionProblem.UNREACHABLE
    return None


@dataclass
class ServerMove:
    """One server's move as the UI shows it."""

    server: ServerEntry
    new_path: str
    progress: MoveProgress
    state: MoveState = MoveState.CONNECTING
    problem: str | None = None  # why the move could not start or was lost, in plain words
    exit_status: int | None = None
    cancel_requested: bool = False
    handle: MoveHandle | None = field(default=None, repr=False)
    recorder: MoveRecorder | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.state in (MoveState.CONNECTING, MoveState.RUNNING)

    @property
    def succeeded(self) -> bool:
        return self.state is MoveState.FINISHED and self.progress.phase is Phase.COMPLETE


def target_of(server: ServerEntry) -> Target:
    return parse_target(server.target, sudo=server.sudo, python=server.python)


def phase_fraction(progress: MoveProgress) -> float | None:
    """How far the current phase is, 0..1, or None for phases without a measure."""
    if progress.phase is Phase.COPYING:
        return progress.fraction
    if progress.phase is Phase.VERIFYING:
        return progress.verify_fraction
    return None


def status_text(move: ServerMove | None, problem: ConnectionProblem | None = None) -> str:
    """The dashboard's status column: idle, the phase with its percentage, connection lost,
    error, the last result, or why the server cannot be reached now."""
    if problem is not None and (move is None or not move.active):
        return problem.value
    if move is None:
        return "idle"
    progress = move.progress
    if move.state is MoveState.CONNECTING:
        return "cancelling…" if move.cancel_requested else "connecting…"
    if move.state is MoveState.CONNECTION_LOST:
        return "connection lost"
    if move.state is MoveState.FAILED_TO_START:
        return f"error: {move.problem}"
    if move.state is MoveState.RUNNING:
        if progress.link_lost:
            return "connection lost — reconnecting"
        if move.cancel_requested:
            return "cancelling…"
        fraction = phase_fraction(progress)
        phase = progress.phase.value if progress.phase else "starting"
        return phase if fraction is None else f"{phase} {fraction * 100:.0f}%"
    if progress.phase is Phase.COMPLETE:
        return f"moved to {move.new_path}"
    if progress.phase is Phase.CANCELLED:
        return "cancelled"
    return f"error while {wording.stopped_while(progress)}"


class Fleet:
    """Runs moves (one at a time per server, any number of servers) and keeps their state."""

    def __init__(self, *, start_move: StartMove | None = None, stat_paths: StatPaths | None = None,
                 attach_move: AttachMove | None = None, list_moves: ListMoves | None = None,
                 check_service: CheckService | None = None, settings: SshSettings | None = None,
                 prompter: Prompter | None = None, moves_log: MovesLog | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._start_move = start_move
        self._stat_paths = stat_paths
        self._attach_move = attach_move
        self._list_moves = list_moves
        self._check_service = check_service
        self.moves_log = moves_log if moves_log is not None else MovesLog()
        self.settings = settings
        self.prompter = prompter
        self.clock = clock
        self.moves: dict[str, ServerMove] = {}
        # Why a server could not be reached the last time we tried (absent: no problem known).
        self.problems: dict[str, tuple[ConnectionProblem, str]] = {}
        self._changed: set[str] = set()
        # The last check of each server's service (check_service), for its screen.
        self.service_checks: dict[str, ServiceCheckEvent] = {}

    # -- the runner (tui.core.runner), unless a test gave another ------------------------------

    @staticmethod
    def _request(server: ServerEntry, new_path: str, options: MoveOptions,
                 dry_run: bool) -> runner.MoveRequest:
        service = server.service.to_mover() if server.service and options.with_service else None
        return runner.MoveRequest(src=server.data_path, dst=new_path,
                                  server_name=server.name, verify=options.verify,
                                  bwlimit=options.bwlimit, dry_run=dry_run, service=service,
                                  max_downtime=options.max_downtime if service else None,
                                  keep_old=keep_old_seconds(server.keep_old)
                                  if server.keep_old else None)

    async def _start(self, server: ServerEntry, new_path: str, options: MoveOptions,
                     dry_run: bool) -> MoveHandle:
        start = self._start_move or runner.start_move
        request = self._request(server, new_path, options, dry_run)
        return await start(target_of(server), request, settings=self.settings,
                           prompter=self.prompter)

    # -- state the UI reads --------------------------------------------------------------------

    def get(self, name: str) -> ServerMove | None:
        return self.moves.get(name)

    def is_active(self, name: str) -> bool:
        move = self.moves.get(name)
        return move is not None and move.active

    def take_changed(self) -> set[str]:
        """Servers whose move changed since the last call (the UI's coalescing point)."""
        changed, self._changed = self._changed, set()
        return changed

    def _touch(self, name: str) -> None:
        self._changed.add(name)

    def problem(self, name: str) -> ConnectionProblem | None:
        known = self.problems.get(name)
        return known[0] if known else None

    def _note_reach(self, name: str, error: ServermoveError | None) -> None:
        """Remember whether the last connection to a server worked (error None) or why not."""
        problem = connection_problem(error) if error is not None else None
        if error is not None and problem is None:
            return  # this failure says nothing about whether the server can be reached
        if problem is None:
            changed = self.problems.pop(name, None) is not None
        else:
            assert error is not None
            changed = self.problems.get(name) != (problem, error.message)
            self.problems[name] = (problem, error.message)
        if changed:
            self._touch(name)

    def forget(self, name: str) -> None:
        """Drop a finished move (the server was removed or renamed)."""
        if not self.is_active(name):
            self.moves.pop(name, None)
            self._touch(name)

    # -- doing ---------------------------------------------------------------------------------

    def begin(self, server: ServerEntry, new_path: str) -> ServerMove:
        """Register a move about to start, so the UI shows it at once."""
        if self.is_active(server.name):
            raise ServermoveError(f"a move is already running on {server.name}")
        move = ServerMove(server, new_path, MoveProgress(clock=self.clock,
                                                         server_name=server.name))
        self.moves[server.name] = move
        self._touch(server.name)
        return move

    async def run_move(self, server: ServerEntry, new_path: str,
                       options: MoveOptions = DEFAULT_MOVE_OPTIONS) -> ServerMove:
        """Run a move to its end. Never raises for the failures a user can meet: they end up in
        the returned ServerMove (state, problem, progress.outcome())."""
        return await self._follow(server, new_path, options.verify,
                                  lambda: self._start(server, new_path, options, dry_run=False))

    async def resume(self, server: ServerEntry, move_id: str, new_path: str,
                     verify: str = "checksum") -> ServerMove:
        """Pick up a move that is (or was) running on the server: one this app started before
        it was closed, or one another machine started. The server's journal replays it."""
        attach = self._attach_move or runner.attach_move
        return await self._follow(server, new_path, verify,
                                  lambda: attach(target_of(server), move_id,
                                                 settings=self.settings, prompter=self.prompter))

    async def _follow(self, server: ServerEntry, new_path: str, verify: str,
                      open_handle: Callable[[], Awaitable[MoveHandle]]) -> ServerMove:
        move = self.moves.get(server.name)
        if move is None or not move.active:
            move = self.begin(server, new_path)
        name = server.name
        move.recorder = MoveRecorder(self.moves_log, server=name, target=server.target,
                                     source=server.data_path, destination=new_path,
                                     verify=verify, clock=self.clock)
        try:
            move.handle = await open_handle()
            move.recorder.started_by = getattr(move.handle, "started_by", None)
            self._note_reach(name, None)
            if move.cancel_requested:
                await move.handle.cancel()
            move.state = MoveState.RUNNING
            self._touch(name)
            move.exit_status = await follow(
                move.handle, move.progress, move.recorder,
                on_event=lambda _event, changed: self._touch(name) if changed else None)
            move.state = MoveState.FINISHED
            if not move.progress.finished:
                move.problem = self._died_without_saying(move)
        except ConnectionLost as exc:
            move.state = MoveState.CONNECTION_LOST
            move.problem = exc.message
        except ServermoveError as exc:
            move.state = (MoveState.CONNECTION_LOST if move.state is MoveState.RUNNING
                          else MoveState.FAILED_TO_START)
            move.problem = exc.message
            if move.state is MoveState.FAILED_TO_START:
                self._note_reach(name, exc)
        finally:
            if move.active:  # the app quit while following: the move goes on on the server
                move.state = MoveState.CONNECTION_LOST
                move.problem = move.problem or "servermove stopped following the move"
            if move.state is MoveState.CONNECTION_LOST:
                move.recorder.connection_lost(move.progress, move.problem or "")
            if move.handle is not None:
                move.handle.close()
            self._touch(name)
        return move

    async def merge_journal(self, server: ServerEntry) -> int:
        """Take the server's journal into the moves log: moves another machine started, and
        the true end of moves this one stopped watching. Returns how many entries changed."""
        list_moves = self._list_moves or runner.list_target_moves
        listed = await list_moves(target_of(server), settings=self.settings,
                                  prompter=self.prompter)
        return len(self.moves_log.merge(record_from_listed(entry, server.target)
                                      for entry in listed))

    def unfinished_moves(self, servers: Sequence[ServerEntry]) -> list[tuple[ServerEntry, Any]]:
        """(server, log record) for each server whose last logged move never told us its end."""
        found = []
        for server in servers:
            last = self.moves_log.records(server=server.name, limit=1)
            if last and not last[0].finished and not self.is_active(server.name):
                found.append((server, last[0]))
        return found

    @staticmethod
    def _died_without_saying(move: ServerMove) -> str:
        stderr = (move.handle.stderr_text if move.handle else "").strip().splitlines()
        last = f": {stderr[-1]}" if stderr else ""
        return f"the mover stopped without a result (exit status {move.exit_status}){last}"

    async def cancel(self, name: str) -> None:
        """Ask a running move to stop; the mover cleans up and reports `cancelled`."""
        move = self.moves.get(name)
        if move is None or not move.active or move.cancel_requested:
            return
        move.cancel_requested = True
        self._touch(name)
        if move.handle is not None:
            await move.handle.cancel()

    async def dry_run(self, server: ServerEntry, new_path: str,
                      options: MoveOptions = DEFAULT_MOVE_OPTIONS) -> PlanEvent:
        """The mover's plan for this move, with nothing written. Raises ServermoveError with
        the mover's own words when it refuses."""
        handle = await self._start(server, new_path, options, dry_run=True)
        plan: PlanEvent | None = None
        refusal: str | None = None
        try:
            async for event in handle.events():
                if isinstance(event, PlanEvent):
                    plan = event
                elif isinstance(event, ProgressEvent) and event.error:
                    refusal = event.error
            status = await handle.wait()
        finally:
            handle.close()
        if plan is not None and status == 0:
            return plan
        stderr = handle.stderr_text.strip().splitlines()
        raise ServermoveError(refusal or (stderr[-1] if stderr else
                                          f"the dry run failed (exit status {status})"))

    async def check_service(self, server: ServerEntry,
                            service: ServiceConfig | None = None) -> ServiceCheckEvent:
        """Run the service's check once on the server (`service`: one not yet saved, from the
        server form; else the server's own)."""
        service = service or server.service
        if service is None:
            raise BadInput(f"{server.name} has no service to check")
        check = self._check_service or runner.check_service
        result = await check(target_of(server), service.to_mover(), settings=self.settings,
                             prompter=self.prompter)
        if service == server.service:  # what the server's screen shows as its service's state
            self.service_checks[server.name] = result
        return result

    async def clean_kept(self, server: ServerEntry, *, dry_run: bool = False
                         ) -> tuple[list[Any], int | None]:
        """The old copies kept aside on the server (keep_old), those due removed: what was said
        of each (KeptCopyEvent) and the exit status (`servermove clean`)."""
        return await runner.clean_kept(target_of(server), dry_run=dry_run,
                                       settings=self.settings, prompter=self.prompter)

    async def stat(self, server: ServerEntry, paths: Sequence[str], *,
                   ask: bool = True) -> list[Any]:
        """Free space on the filesystems holding `paths` (FsStatEvent each). With ask False
        nothing is asked (an unknown host key is refused): a check in the background."""
        stat = self._stat_paths or runner.stat_paths
        try:
            stats = await stat(target_of(server), list(paths), settings=self.settings,
                               prompter=self.prompter if ask else None)
        except ServermoveError as exc:
            self._note_reach(server.name, exc)
            raise
        self._note_reach(server.name, None)
        return stats
