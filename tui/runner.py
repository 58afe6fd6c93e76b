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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

import asyncssh

from tui.errors import (
    ConnectionLost,
    PythonMissing,
    ServermoveError,
    SudoPasswordNeeded,
    SudoPasswordWrong,
)
from tui.protocol import Event, FsStatEvent, HelloEvent, MalformedLine, parse_line
from tui.ssh import Prompter, SshSettings, connect_target
from tui.targets import Target

__all__ = ["BOOTSTRAP", "MoveHandle", "MoveRequest", "Prompter", "SshSettings", "mover_source",
           "start_move", "stat_paths"]

# Exit code the bootstrap uses for an interpreter older than the mover supports. The version test
# comes first and is valid Python 2 too, so an old python3 (or a python2 behind that name) says so
# instead of failing with a syntax error.
TOO_OLD_EXIT = 97
BOOTSTRAP = (
    "import sys;sys.version_info<(3,6) and sys.exit(97);import json;"
    "h=json.loads(sys.stdin.buffer.readline().decode());sys.argv=['servermove-mover']+h['argv'];"
    "exec(compile(sys.stdin.buffer.read(h['size']),'servermove-mover','exec'),"
    "{'__name__':'__main__'})"
)
SHELL_NOT_FOUND_EXIT = 127


def mover_source() -> bytes:
    return resources.files("remote").joinpath("mover.py").read_bytes()


@dataclass(frozen=True)
class MoveRequest:
    src: str
    dst: str
    server_name: str = ""
    verify: str = "checksum"
    bwlimit: str | None = None
    dry_run: bool = False

    def argv(self) -> list[str]:
        args = ["move", "--server-name", self.server_name, "--verify", self.verify]
        if self.bwlimit:
            args += ["--bwlimit", self.bwlimit]
        if self.dry_run:
            args.append("--dry-run")
        return [*args, "--", self.src, self.dst]


class _Process(Protocol):
    """What we need of a child process, local (asyncio) or remote (asyncssh) alike."""

    async def write(self, data: bytes) -> None: ...
    def close_stdin(self) -> None: ...
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

    def close_stdin(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()

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
    def __init__(self, conn: asyncssh.SSHClientConnection,
                 process: asyncssh.SSHClientProcess[bytes]) -> None:
        self._conn = conn
        self._process = process

    async def write(self, data: bytes) -> None:
        self._process.stdin.write(data)
        await self._process.stdin.drain()

    def close_stdin(self) -> None:
        self._process.stdin.write_eof()

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
        self._conn.close()


def _command(target: Target, python: str, sudo: str | None) -> list[str]:
    """The argv that starts the bootstrap. `sudo` is None, "-n" (no password) or "-S"."""
    command = [python, "-c", BOOTSTRAP]
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
        stderr=asyncio.subprocess.PIPE, start_new_session=True)
    return _LocalProcess(process)


class MoverProcess:
    """A running mover: parsed events out, cancel in."""

    def __init__(self, target: Target, process: _Process) -> None:
        self.target = target
        self._process = process
        self._stderr_task = asyncio.ensure_future(self._collect_stderr())
        self.stderr_text = ""
        self.exit_status: int | None = None
        self._said_hello = False
        self._cancel_sent = False

    async def _collect_stderr(self) -> bytes:
        # Diagnostics only: a link that dies while we read them is reported through stdout.
        try:
            return await self._process.read_stderr()
        except (asyncssh.Error, OSError):
            return b""

    async def _start(self, argv: Sequence[str], prefix: bytes = b"") -> None:
        source = mover_source()
        header = json.dumps({"argv": list(argv), "size": len(source)}).encode() + b"\n"
        await self._process.write(prefix + header + source)

    async def records(self) -> AsyncIterator[tuple[bytes, Event | MalformedLine | None]]:
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

    async def events(self) -> AsyncIterator[Event | MalformedLine]:
        """The parsed events, without the hello and without subjects this client does not know."""
        async for _, event in self.records():
            if event is not None and not isinstance(event, HelloEvent):
                yield event

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
        """Ask the mover to stop; it cleans up and reports `cancelled`."""
        if self._cancel_sent:
            return
        self._cancel_sent = True
        # A line on stdin reaches the mover through any sudo and any shell; the signal is for a
        # mover that does not read its stdin.
        with contextlib.suppress(asyncssh.Error, OSError, ConnectionError):
            await self._process.write(b"cancel\n")
        self._process.terminate()

    async def wait(self) -> int | None:
        if self.exit_status is None:
            self.exit_status = await self._process.wait()
        return self.exit_status

    def close(self) -> None:
        self._stderr_task.cancel()
        self._process.close()


# The TUI and CLI speak of a move handle; a dry run, a move and statfs share one process type.
MoveHandle = MoverProcess


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


async def run_mover(target: Target, argv: Sequence[str], *, settings: SshSettings | None = None,
                    prompter: Prompter | None = None) -> MoverProcess:
    """Start the mover with `argv` on `target` (local or over SSH)."""
    settings = settings or SshSettings()
    conn = None if target.is_local else await connect_target(target, settings, prompter)
    try:
        sudo, secret = (None, b"")
        if target.sudo:
            sudo, secret = await _sudo_mode(target, conn, prompter, settings)
        python = target.python or (sys.executable if target.is_local else "python3")
        command = _command(target, python, sudo)
        if conn is None:
            process: _Process = await _spawn_local(command)
        else:
            # exec: the mover replaces the login shell, so a signal sent over the channel
            # reaches the mover itself and its exit status is the session's.
            remote = await conn.create_process("exec " + shlex.join(command), encoding=None)
            process = _RemoteProcess(conn, remote)
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    mover = MoverProcess(target, process)
    # If the bootstrap exits before reading everything (python3 missing, too old), writing fails;
    # its exit status then tells why, through events().
    with contextlib.suppress(asyncssh.Error, OSError, ConnectionError):
        await mover._start(argv, secret if sudo == "-S" else b"")
    return mover


async def start_move(target: Target, request: MoveRequest, *,
                     settings: SshSettings | None = None,
                     prompter: Prompter | None = None) -> MoverProcess:
    return await run_mover(target, request.argv(), settings=settings, prompter=prompter)


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
