"""Run the bundled mover on a target and stream its events back.

Agentless, in the manner of mitogen's first stage: the command line holds only a short, constant
bootstrap (`BOOTSTRAP`, well under 1 KB); the mover's arguments and its source travel over stdin.
No user data is ever part of a shell command, so no path can be misquoted, and nothing is left
installed on the server. The local target runs the very same bootstrap as a subprocess, so the
path a demo takes is the path a production move takes.

Headless: nothing here imports Textual.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

import asyncssh

from tui.core.errors import (
    BadInput,
    ConnectionLost,
    HostUnreachable,
    PythonMissing,
    ServermoveError,
    SudoPasswordNeeded,
    SudoPasswordWrong,
)
from tui.core.follow import LineHook
from tui.core.moves_log import this_machine
from tui.core.protocol import (
    Event,
    FsStatEvent,
    HelloEvent,
    KeptCopyEvent,
    LinkEvent,
    ListedEvent,
    MalformedLine,
    ProgressEvent,
    ServiceCheckEvent,
    StartedEvent,
    parse_line,
)
from tui.core.ssh import HostKeyQuestion, Prompter, SshSettings, connect_target
from tui.core.targets import Target

__all__ = ["BOOTSTRAP", "FollowedMove", "HostKeyQuestion", "MoveRequest",
           "Prompter", "SshSettings",
           "TargetSession", "attach_move", "clean_kept", "list_moves", "list_target_moves",
           "mover_source", "start_move",
           "stat_paths"]

# Exit code the bootstrap uses for an interpreter older than the mover supports. The version test
# comes first and is valid Python 2 too, so an old python3 (or a python2 behind that name) says so
# instead of failing with a syntax error.
TOO_OLD_EXIT = 97
# The interpreter runs with -E -s -S: no PYTHON* variables, no user or system site-packages, and
# the bootstrap drops the working directory from sys.path before its first import. What runs is
# the mover and the standard library, not a json.py that happens to lie in the login's home
# (under sudo, as root); and skipping site makes each start faster (docs/performance.md). Unlike
# -I, these flags exist in every python3 and python2, so a too-old interpreter still reaches the
# version test.
PYTHON_FLAGS = ("-E", "-s", "-S")
# The bootstrap runs the loader (remote/loader.py, sent first with its length on a line of its
# own), which runs the mover from a cache of its compiled code or compiles it.
BOOTSTRAP = (
    "import sys;sys.path=[p for p in sys.path if p];"
    f"sys.version_info<(3,6) and sys.exit({TOO_OLD_EXIT});i=sys.stdin.buffer;"
    "exec(compile(i.read(int(i.readline())),'servermove-loader','exec'),{'__name__':'__main__'})"
)
SHELL_NOT_FOUND_EXIT = 127


def mover_source() -> bytes:
    return resources.files("remote").joinpath("mover.py").read_bytes()


def program_input(argv: Sequence[str], source: bytes | None = None,
                  loader: bytes | None = None) -> bytes:
    """What the bootstrap reads on stdin: the loader's length and the loader, then the header
    line (the mover's arguments and its source's length) and the mover's source. (`source` and
    `loader` stand in for ours in tests and benchmarks.)"""
    if loader is None:
        loader = resources.files("remote").joinpath("loader.py").read_bytes()
    source = mover_source() if source is None else source
    header = json.dumps({"argv": list(argv), "size": len(source)}).encode()
    return b"%d\n%s%s\n%s" % (len(loader), loader, header, source)


@dataclass(frozen=True)
class MoveRequest:
    src: str
    dst: str
    server_name: str = ""
    verify: str = "checksum"
    bwlimit: str | None = None
    dry_run: bool = False
    started_by: str = field(default_factory=this_machine)  # kept in the server's journal
    # A service move: the service as the mover takes it (ServiceConfig.to_mover()), and the
    # downtime the forecast must be under before the service is stopped.
    service: dict[str, Any] | None = field(default=None, hash=False)
    max_downtime: float | None = None
    keep_old: int | None = None  # seconds: the old copy is kept aside, not removed (keep_old)

    def argv(self, command: str = "move") -> list[str]:
        args = [command, "--server-name", self.server_name, "--verify", self.verify]
        if self.bwlimit is not None:  # an empty one too: the mover refuses it, it is no limit
            args += ["--bwlimit", self.bwlimit]
        if self.service is not None:
            args += ["--service", json.dumps(self.service, separators=(",", ":"))]
            if self.max_downtime is not None:
                args += ["--max-downtime", f"{self.max_downtime:g}"]
        if self.keep_old is not None:
            args += ["--keep-old", str(self.keep_old)]
        if command == "start":
            args += ["--started-by", self.started_by]
        if self.dry_run:
            args.append("--dry-run")
        return [*args, "--", self.src, self.dst]


class _Process(Protocol):
    """What we need of a child process, local (asyncio) or remote (asyncssh) alike."""

    async def write(self, data: bytes) -> None: ...
    async def readline(self) -> bytes: ...
    async def read_stderr(self) -> bytes: ...
    async def wait(self) -> int | None: ...
    def terminate(self) -> None: ...
    def close(self) -> None: ...


class _LocalProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    async def write(self, data: bytes) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(data)
        await self._process.stdin.drain()

    async def readline(self) -> bytes:
        assert self._process.stdout is not None
        return await self._process.stdout.readline()

    async def read_stderr(self) -> bytes:
        assert self._process.stderr is not None
        return await self._process.stderr.read()

    async def wait(self) -> int | None:
        return await self._process.wait()

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._process.terminate()

    def close(self) -> None:
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()


class _RemoteProcess:
    def __init__(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self._process = process

    async def write(self, data: bytes) -> None:
        self._process.stdin.write(data)
        await self._process.stdin.drain()

    async def readline(self) -> bytes:
        return await self._process.stdout.readline()

    async def read_stderr(self) -> bytes:
        return await self._process.stderr.read()

    async def wait(self) -> int | None:
        completed = await self._process.wait(check=False)
        return completed.exit_status if completed.exit_signal is None else None

    def terminate(self) -> None:
        with contextlib.suppress(asyncssh.Error, OSError):
            self._process.send_signal("TERM")

    def close(self) -> None:
        self._process.close()


def _command(target: Target, python: str, sudo: str | None) -> list[str]:
    """The argv that starts the bootstrap. `sudo` is None, "-n" (no password) or "-S"."""
    command = [python, *PYTHON_FLAGS, "-c", BOOTSTRAP]
    if sudo == "-n":
        return ["sudo", "-n", "--", *command]
    if sudo == "-S":
        # -k: always read the password from stdin, even if sudo cached one, so what we send
        # next is never mistaken for a password (or the other way round).
        return ["sudo", "-S", "-k", "-p", "", "--", *command]
    return command


async def _spawn_local(argv: list[str]) -> _LocalProcess:
    # A session of its own: Ctrl-C in the terminal reaches us, and we decide how to cancel.
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True, cwd="/")
    return _LocalProcess(process)


class _EventSource:
    """Something that yields the mover's lines: `events()` is the one way to read them."""

    def _lines(self) -> AsyncIterator[tuple[bytes | None, Event | MalformedLine | None]]:
        raise NotImplementedError

    async def events(self, on_line: LineHook | None = None) -> AsyncIterator[Event | MalformedLine]:
        """The parsed events, without the hello and without subjects this client does not know.
        `on_line` sees every raw line the mover printed, those too (`--json` passes them on)."""
        async for raw, event in self._lines():
            if raw is not None and on_line is not None:
                on_line(raw)
            if event is not None and not isinstance(event, HelloEvent):
                yield event


class MoverProcess(_EventSource):
    """A running mover: parsed events out, cancel in."""

    def __init__(self, target: Target, process: _Process) -> None:
        self.target = target
        self._process = process
        self._stderr_task = asyncio.ensure_future(self._collect_stderr())
        self.stderr_text = ""
        self.exit_status: int | None = None
        self._said_hello = False
        self._cancel_sent = False
        self.on_close: Callable[[], None] | None = None

    async def _collect_stderr(self) -> bytes:
        # Diagnostics only: a link that dies while we read them is reported through stdout.
        try:
            return await self._process.read_stderr()
        except (asyncssh.Error, OSError):
            return b""

    async def send_program(self, argv: Sequence[str], prefix: bytes = b"") -> None:
        """Send the bootstrap the loader, the header and the mover's source, after `prefix` (a
        password)."""
        await self._process.write(prefix + program_input(argv))

    async def _lines(self) -> AsyncIterator[tuple[bytes | None, Event | MalformedLine | None]]:
        """Each raw line from the mover's hello on, with its parsed form (None: unknown subject).

        Raises ConnectionLost if the link dies before the mover has finished.
        """
        while True:
            try:
                line = await self._process.readline()
            except (asyncssh.Error, OSError, asyncio.IncompleteReadError) as exc:
                raise ConnectionLost(f"{self.target}: connection lost: {exc}") from None
            if not line:
                break
            event = parse_line(line)
            if isinstance(event, HelloEvent):
                self._said_hello = True
            elif not self._said_hello:
                continue  # login banners and shell noise before the mover started
            yield line, event
        await self._finish()

    async def _finish(self) -> None:
        try:
            self.exit_status = await self._process.wait()
        except (asyncssh.Error, OSError) as exc:
            raise ConnectionLost(f"{self.target}: connection lost: {exc}") from None
        if self.exit_status is None:
            self._stderr_task.cancel()
            raise ConnectionLost(f"{self.target}: connection lost before the mover finished")
        self.stderr_text = (await self._stderr_task).decode("utf-8", "replace")
        if not self._said_hello:
            self._raise_start_failure()

    def _raise_start_failure(self) -> None:
        python = self.target.python or "python3"
        where = "this machine" if self.target.is_local else self.target.label
        if self.exit_status == TOO_OLD_EXIT:
            raise PythonMissing(f"{python} on {where} is older than 3.6: install a newer python3 "
                                "or set this server's python path")
        if self.exit_status == SHELL_NOT_FOUND_EXIT or "not found" in self.stderr_text:
            raise PythonMissing(f"{python} not found on {where}: install python3 (3.6 or newer) "
                                "or set this server's python path")
        last = self.stderr_text.strip().splitlines()[-1:] or ["no output"]
        raise ServermoveError(f"the mover did not start on {where} (exit {self.exit_status}): "
                              f"{last[0]}")

    async def cancel(self) -> None:
        """Ask a foreground mover (a dry run, statfs) to stop: SIGTERM, which the bootstrap's
        `exec` delivers to the mover itself. Real moves are detached: see FollowedMove.cancel."""
        if not self._cancel_sent:
            self._cancel_sent = True
            self._process.terminate()

    async def wait(self) -> int | None:
        if self.exit_status is None:
            self.exit_status = await self._process.wait()
        return self.exit_status

    def close(self) -> None:
        self._stderr_task.cancel()
        self._process.close()
        if self.on_close is not None:
            self.on_close()


async def _sudo_mode(target: Target, conn: asyncssh.SSHClientConnection | None,
                     prompter: Prompter | None, settings: SshSettings) -> tuple[str, bytes]:
    """Find how to run as root: ("-n", b"") when no password is needed, else ("-S", password)."""
    probe = ["sudo", "-n", "true"]
    if await _run_quietly(conn, probe) == 0:
        return "-n", b""
    if not (settings.interactive and prompter is not None):
        raise SudoPasswordNeeded(f"sudo on {target.label} needs a password: run in a terminal to "
                                 "be asked, or allow NOPASSWD for this user")
    password = await prompter.ask_sudo_password(target)
    if not password:
        raise SudoPasswordNeeded(f"no sudo password given for {target.label}; nothing was done")
    secret = password.encode() + b"\n"
    if await _run_quietly(conn, ["sudo", "-S", "-k", "-p", "", "true"], secret) != 0:
        raise SudoPasswordWrong(f"sudo on {target.label} refused the password; nothing was done")
    return "-S", secret


async def _run_quietly(conn: asyncssh.SSHClientConnection | None, argv: list[str],
                       stdin: bytes = b"") -> int | None:
    if conn is None:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        await process.communicate(stdin)
        return process.returncode
    result = await conn.run(shlex.join(argv), input=stdin, encoding=None, check=False)
    return result.exit_status


class TargetSession:
    """One target's SSH connection and sudo mode, opened once and reused by every mover call.

    After a dropped link, `reset()` forgets the connection and the next `open()` dials again. A
    sudo password, when one is needed, is kept in memory for the session's life only, so that a
    re-attach after a network outage does not ask again; it is never written anywhere.
    """

    def __init__(self, target: Target, settings: SshSettings | None = None,
                 prompter: Prompter | None = None) -> None:
        self.target = target
        self.settings = settings or SshSettings()
        self.prompter = prompter
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sudo: tuple[str | None, bytes] | None = None

    async def open(self) -> None:
        if not self.target.is_local and self._conn is None:
            self._conn = await connect_target(self.target, self.settings, self.prompter)
        if self._sudo is None:
            self._sudo = (await _sudo_mode(self.target, self._conn, self.prompter, self.settings)
                          if self.target.sudo else (None, b""))

    async def run(self, argv: Sequence[str]) -> MoverProcess:
        """Start the mover with `argv` (local or over SSH)."""
        await self.open()
        assert self._sudo is not None
        sudo, secret = self._sudo
        python = self.target.python or (sys.executable if self.target.is_local else "python3")
        command = _command(self.target, python, sudo)
        if self._conn is None:
            process: _Process = await _spawn_local(command)
        else:
            try:
                # exec: the mover replaces the login shell, so a signal sent over the channel
                # reaches the mover itself and its exit status is the session's. cd /: the login
                # lands in its home, and sudo and the mover working there would count as
                # programs using the source when that holds the home (a move of /home).
                remote = await self._conn.create_process("cd / && exec " + shlex.join(command),
                                                         encoding=None)
            except (asyncssh.Error, OSError) as exc:
                self.reset()
                raise ConnectionLost(f"{self.target}: connection lost: {exc}") from None
            process = _RemoteProcess(remote)
        mover = MoverProcess(self.target, process)
        # If the bootstrap exits before reading everything (python3 missing, too old), writing
        # fails; its exit status then tells why, through events().
        with contextlib.suppress(asyncssh.Error, OSError, ConnectionError):
            await mover.send_program(argv, secret if sudo == "-S" else b"")
        return mover

    def reset(self) -> None:
        if self._conn is not None:
            self._conn.abort()
            self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


async def run_mover(target: Target, argv: Sequence[str], *, settings: SshSettings | None = None,
                    prompter: Prompter | None = None) -> MoverProcess:
    """One mover call on its own session, closed with the process."""
    session = TargetSession(target, settings, prompter)
    try:
        mover = await session.run(argv)
    except BaseException:
        session.close()
        raise
    mover.on_close = session.close
    return mover


async def start_move(target: Target, request: MoveRequest, *,
                     settings: SshSettings | None = None,
                     prompter: Prompter | None = None) -> MoverProcess | FollowedMove:
    """A dry run runs in the foreground; a real move is started detached on the server and
    followed, so it survives this client and its network."""
    if request.dry_run:
        return await run_mover(target, request.argv(), settings=settings, prompter=prompter)
    session = TargetSession(target, settings, prompter)
    move = FollowedMove(session)
    try:
        await move.start(request)
    except BaseException:
        session.close()
        raise
    return move


async def attach_move(target: Target, move_id: str | None = None, *,
                      settings: SshSettings | None = None,
                      prompter: Prompter | None = None) -> FollowedMove:
    """Follow a move already started on `target` (the newest one when no id is given)."""
    session = TargetSession(target, settings, prompter)
    try:
        listed = await list_moves(session)
        if move_id is None:
            if not listed:
                raise BadInput(f"no moves recorded on {target.label}")
            move_id = listed[0].move_id
    except BaseException:
        session.close()
        raise
    move = FollowedMove(session, move_id=move_id)
    move.started_by = next((m.started_by for m in listed if m.move_id == move_id), None)
    return move


async def list_moves(session: TargetSession) -> list[ListedEvent]:
    """The moves in the target's journal, newest first."""
    mover = await session.run(["list"])
    listed = [event async for event in mover.events() if isinstance(event, ListedEvent)]
    mover.close()
    return listed


async def list_target_moves(target: Target, *, settings: SshSettings | None = None,
                            prompter: Prompter | None = None) -> list[ListedEvent]:
    """`list_moves` on a session of its own."""
    session = TargetSession(target, settings, prompter)
    try:
        return await list_moves(session)
    finally:
        session.close()


RECONNECT_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


class FollowedMove(_EventSource):
    """A detached move: started once on the server, followed through dropped connections.

    `events()` attaches to the move's journal and yields its events; when the link dies it yields
    a `LinkEvent(lost=True)`, dials again with backoff, re-attaches from the last sequence number
    seen (so the model sees no gap and no duplicate), and yields `LinkEvent(lost=False)`. It ends
    when the move ends. A cancel asked for while the link is down is sent once it is back.
    """

    def __init__(self, session: TargetSession, move_id: str | None = None, *,
                 reconnect_delays: Sequence[float] = RECONNECT_DELAYS_S) -> None:
        self.session = session
        self.target = session.target
        self.move_id = move_id
        self.started_by: str | None = None  # USER@HOST that started it, when known
        self.reconnect_delays = tuple(reconnect_delays)
        self.exit_status: int | None = None
        self.stderr_text = ""
        self._refusal: list[Event | MalformedLine] = []
        self._next_seq = 1
        self._cancel_wanted = False
        self._cancel_sent = False
        self._current: MoverProcess | None = None

    async def start(self, request: MoveRequest) -> None:
        self.started_by = request.started_by
        mover = await self.session.run(request.argv("start"))
        async for event in mover.events():
            if isinstance(event, StartedEvent):
                self.move_id = event.move_id
            else:
                self._refusal.append(event)  # refused before starting: the reason comes as events
        mover.close()
        self.stderr_text = mover.stderr_text
        if self.move_id is None:
            self.exit_status = mover.exit_status

    async def _lines(self) -> AsyncIterator[tuple[bytes | None, Event | MalformedLine | None]]:
        """Raw journal lines with their parsed form, plus (raw None) the client's LinkEvents."""
        if self.move_id is None:
            for event in self._refusal:
                yield None, event
            return
        outage = 0
        said_hello = False
        while True:
            try:
                mover = await self.session.run(
                    ["attach", self.move_id, "--from-seq", str(self._next_seq)])
                self._current = mover
                if outage:
                    outage = 0
                    yield None, LinkEvent(lost=False, message=f"reconnected to {self.target}")
                if self._cancel_wanted and not self._cancel_sent:
                    await self._send_cancel()
                async for raw, event in mover._lines():
                    if isinstance(event, HelloEvent):
                        if said_hello:
                            continue  # one hello per stream, however many re-attaches
                        said_hello = True
                    seq = getattr(event, "seq", None)
                    if seq is not None:
                        self._next_seq = max(self._next_seq, seq + 1)
                    yield raw, event
                self.exit_status = mover.exit_status
                self.stderr_text = mover.stderr_text
                mover.close()
                return
            except (ConnectionLost, HostUnreachable) as exc:
                self.session.reset()
                if not outage:
                    yield None, LinkEvent(lost=True, message=f"{exc.message} — reconnecting")
                delay = self.reconnect_delays[min(outage, len(self.reconnect_delays) - 1)]
                outage += 1
                await asyncio.sleep(delay)

    async def _send_cancel(self) -> None:
        assert self.move_id is not None
        mover = await self.session.run(["cancel", self.move_id])
        async for _ in mover.events():
            pass
        mover.close()
        self._cancel_sent = True

    async def cancel(self) -> None:
        """Ask the move to stop; its `cancelled` event then arrives through events()."""
        self._cancel_wanted = True
        if self.move_id is None or self._cancel_sent:
            return
        with contextlib.suppress(ConnectionLost, HostUnreachable):
            await self._send_cancel()

    async def wait(self) -> int | None:
        return self.exit_status

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
        self.session.close()


async def collect_events(target: Target, argv: Sequence[str], kind: type, *,
                         settings: SshSettings | None = None, prompter: Prompter | None = None,
                         ) -> tuple[list[Any], MoverProcess]:
    """Run one mover command to its end: the events of `kind` and its progress events (which
    carry a refusal), in order, and the finished process (its exit status, its stderr)."""
    mover = await run_mover(target, argv, settings=settings, prompter=prompter)
    try:
        events = [event async for event in mover.events()
                  if isinstance(event, kind | ProgressEvent)]
    finally:
        mover.close()
    return events, mover


async def check_service(target: Target, service: dict[str, Any], *,
                        settings: SshSettings | None = None,
                        prompter: Prompter | None = None) -> ServiceCheckEvent:
    """Run the service's check once on the server, as a move would (`mover.py check-service`)."""
    results, mover = await collect_events(
        target, ["check-service", "--service", json.dumps(service)], ServiceCheckEvent,
        settings=settings, prompter=prompter)
    for event in results:
        if isinstance(event, ServiceCheckEvent):
            return event
        if event.error:  # refused: the mover's own words
            raise ServermoveError(event.error)
    raise ServermoveError(mover.stderr_text.strip().splitlines()[-1]
                          if mover.stderr_text.strip() else "the check did not report")


async def clean_kept(target: Target, *, dry_run: bool = False, now: bool = False,
                     settings: SshSettings | None = None,
                     prompter: Prompter | None = None) -> tuple[list[KeptCopyEvent], int | None]:
    """The old copies kept aside on the server (`mover.py clean-kept`): those due removed (any,
    with `now`; none, with `dry_run`). Returns what it said of each, and its exit status."""
    argv = ["clean-kept", *(["--now"] if now else []), *(["--dry-run"] if dry_run else [])]
    events, mover = await collect_events(target, argv, KeptCopyEvent, settings=settings,
                                         prompter=prompter)
    for event in events:
        if isinstance(event, ProgressEvent) and event.error:  # refused: the mover's own words
            raise ServermoveError(event.error)
    return [event for event in events if isinstance(event, KeptCopyEvent)], mover.exit_status


async def stat_paths(target: Target, paths: Sequence[str], *,
                     settings: SshSettings | None = None,
                     prompter: Prompter | None = None) -> list[FsStatEvent]:
    """Free space and mount point of the filesystem holding each path (or its nearest parent)."""
    mover = await run_mover(target, ["statfs", "--", *paths], settings=settings,
                            prompter=prompter)
    try:
        stats = [event async for event in mover.events() if isinstance(event, FsStatEvent)]
    finally:
        mover.close()
    if mover.exit_status != 0:
        raise ServermoveError(mover.stderr_text.strip().splitlines()[-1]
                              if mover.stderr_text.strip() else "statfs failed")
    return stats
