"""The SSH connection: asyncssh with the user's own ssh config, agent, keys and known_hosts.

`connect_target` is the one door to a server. It turns asyncssh's and the OS's exceptions into the
typed errors of tui.core.errors, never accepts a host key silently, and limits how many
handshakes run at once (sshd's MaxStartups drops the excess, which would look like a flaky network).

Headless: nothing here imports Textual.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncssh

from tui.core.errors import (
    AuthFailed,
    HostKeyChanged,
    HostKeyUnknown,
    HostUnreachable,
    ServermoveError,
)
from tui.core.targets import Target

KEEPALIVE_INTERVAL_S = 15  # with 3 missed answers, a dead link is noticed in about 45 s
KEEPALIVE_COUNT_MAX = 3
CONNECT_TIMEOUT_S = 20
MAX_CONCURRENT_HANDSHAKES = 8  # below OpenSSH's default MaxStartups of 10


@dataclass(frozen=True)
class HostKeyQuestion:
    """An unknown host key, as the user is asked about it: once per key per run."""

    alias: str  # the name the user gave: a servers.toml name, an ssh alias, a host
    host: str
    port: int
    key_type: str
    fingerprint: str
    known_hosts: Path  # where the key is written if the user accepts it

    @property
    def where(self) -> str:
        return _known_host_pattern(self.host, self.port)

    @property
    def explanation(self) -> str:
        return (f"{self.alias} ({self.where}) is not a known host. Check the fingerprint with "
                f"the server's admin; if you accept, its key is added to {self.known_hosts}.")


class Prompter(Protocol):
    """Questions only the user can answer. The CLI asks on the terminal, the TUI in a modal."""

    async def confirm_host_key(self, question: HostKeyQuestion) -> bool: ...

    async def ask_sudo_password(self, target: Target) -> str | None: ...


@dataclass
class SshSettings:
    """How to reach servers. `config_files` None means ssh's default (~/.ssh/config)."""

    config_files: list[Path] | None = None
    interactive: bool = True  # False: never ask (no terminal, --json): refuse at once instead
    connect_timeout: float = CONNECT_TIMEOUT_S
    extra_options: dict[str, Any] = field(default_factory=dict)

    @property
    def config_arg(self) -> list[str] | tuple[()]:
        return () if self.config_files is None else [str(p) for p in self.config_files]


_handshake_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary())


@contextlib.asynccontextmanager
async def _handshake_slot() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    slots = _handshake_slots.get(loop)
    if slots is None:
        slots = _handshake_slots[loop] = asyncio.Semaphore(MAX_CONCURRENT_HANDSHAKES)
    async with slots:
        yield


class _HostKeyWitness(asyncssh.SSHClient):
    """Remembers the host key a server offered when it matched no known_hosts entry.

    asyncssh calls this only for keys it could not verify; saying no makes the connection fail
    with HostKeyNotVerifiable, after which we know which key to show the user.
    """

    def __init__(self) -> None:
        self.offered: tuple[str, str, int, asyncssh.SSHKey] | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int,
                                 key: asyncssh.SSHKey) -> bool:
        self.offered = (host, addr, port, key)
        return False


def _known_hosts_files(options: asyncssh.SSHClientConnectionOptions) -> list[Path]:
    configured = options.known_hosts
    if isinstance(configured, str | Path):
        return [Path(configured).expanduser()]
    if isinstance(configured, list | tuple) and configured:
        return [Path(str(p)).expanduser() for p in configured]
    return [Path("~/.ssh/known_hosts").expanduser()]


def _known_host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _has_known_key(files: list[Path], host: str, addr: str, port: int) -> bool:
    existing = [str(f) for f in files if f.is_file()]
    if not existing:
        return False
    known = asyncssh.read_known_hosts(existing)
    trusted = asyncssh.match_known_hosts(known, host, addr, port)
    return bool(trusted[0] or trusted[1])


def append_known_host(path: Path, host: str, port: int, key: asyncssh.SSHKey) -> None:
    """Record an accepted host key the way OpenSSH does (asyncssh never writes known_hosts).

    A line that is already there is not written again."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{_known_host_pattern(host, port)} {key.export_public_key('openssh').decode().strip()}"
    wanted = line.split()[:3]
    with contextlib.suppress(FileNotFoundError):
        if any(known.split()[:3] == wanted
               for known in path.read_text(encoding="utf-8", errors="replace").splitlines()):
            return
    with open(path, "a", encoding="utf-8") as handle:
        if handle.tell() and not path.read_bytes().endswith(b"\n"):
            handle.write("\n")
        handle.write(line + "\n")


# One answer per unknown host key per run (per event loop): every connection that meets the key
# while the question is open waits for that one answer, and later ones get it without asking.
_host_key_answers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str, int, str], asyncio.Future[bool]]] = (
    weakref.WeakKeyDictionary())


async def _ask_once(question: HostKeyQuestion, key: asyncssh.SSHKey, prompter: Prompter) -> bool:
    """The user's answer about `key`; asked at most once per run, the key written on yes."""
    loop = asyncio.get_running_loop()
    answers = _host_key_answers.setdefault(loop, {})
    which = (str(question.known_hosts), question.host, question.port, question.fingerprint)
    pending = answers.get(which)
    if pending is not None:
        return await asyncio.shield(pending)
    pending = answers[which] = loop.create_future()
    try:
        accepted = await prompter.confirm_host_key(question)
        if accepted:
            _remember_host_key(question, key)
    except BaseException as exc:
        del answers[which]  # never answered: the next connection may ask again
        pending.set_exception(exc if isinstance(exc, ServermoveError) else HostKeyUnknown(
            f"the question about the host key of {question.alias} was not answered",
            host=question.host, port=question.port, key_type=question.key_type,
            fingerprint=question.fingerprint))
        pending.exception()  # retrieved: nobody else may be waiting
        raise
    pending.set_result(accepted)
    return accepted


def _remember_host_key(question: HostKeyQuestion, key: asyncssh.SSHKey) -> None:
    try:
        append_known_host(question.known_hosts, question.host, question.port, key)
    except OSError as exc:
        raise ServermoveError(f"cannot write the host key of {question.alias} to "
                              f"{question.known_hosts}: {exc.strerror or exc}") from None


def _ssh_command_hint(target: Target, settings: SshSettings) -> str:
    """The OpenSSH command that reaches `target` through the same config (alias, port, user)."""
    assert target.host is not None
    argv = ["ssh", "-o", "StrictHostKeyChecking=ask"]
    for config in settings.config_files or ():
        argv += ["-F", str(config)]
    if target.port:
        argv += ["-p", str(target.port)]
    argv.append(f"{target.user}@{target.host}" if target.user else target.host)
    return shlex.join(argv)


def _file_holding(files: list[Path], host: str, addr: str, port: int) -> Path:
    """The known_hosts file whose line for the host no longer matches its key."""
    return next((f for f in files if _has_known_key([f], host, addr, port)), files[0])


async def _settle_unknown_key(target: Target, settings: SshSettings, prompter: Prompter | None,
                              options: asyncssh.SSHClientConnectionOptions,
                              offered: tuple[str, str, int, asyncssh.SSHKey]) -> None:
    """Return once the offered key is trusted (the user said yes); raise when it is not."""
    host, addr, port, key = offered
    files = _known_hosts_files(options)
    fingerprint = key.get_fingerprint("sha256")
    key_type = key.get_algorithm()
    if _has_known_key(files, host, addr, port):
        stale = shlex.join(["ssh-keygen", "-R", _known_host_pattern(host, port), "-f",
                            str(_file_holding(files, host, addr, port))])
        raise HostKeyChanged(
            f"WARNING: the host key of {target.label} ({host}:{port}) has CHANGED: "
            f"it now offers {key_type} {fingerprint}, which matches none of the keys in "
            f"{', '.join(map(str, files))}. This may be an attack; refused. If the server "
            f"was really reinstalled, remove its old line with {stale}")
    if not (settings.interactive and prompter is not None):
        raise HostKeyUnknown(
            f"{target.label} ({host}:{port}) is not a known host: it offers "
            f"{key_type} {fingerprint}. Check the fingerprint with the server's admin, "
            f"then accept it by running servermove in a terminal, or with "
            f"{_ssh_command_hint(target, settings)}",
            host=host, port=port, key_type=key_type, fingerprint=fingerprint)
    question = HostKeyQuestion(alias=target.label, host=host, port=port,
                               key_type=key_type, fingerprint=fingerprint,
                               known_hosts=files[0])
    if not await _ask_once(question, key, prompter):
        raise HostKeyUnknown(f"host key of {target.label} rejected; nothing was done "
                             "(servermove asks again the next time it starts)",
                             host=host, port=port, key_type=key_type,
                             fingerprint=fingerprint)


async def connect_target(target: Target, settings: SshSettings,
                         prompter: Prompter | None = None) -> asyncssh.SSHClientConnection:
    """Open an SSH connection to `target`, asking about an unknown host key when allowed."""
    assert target.host is not None, "the local target needs no connection"
    config = settings.config_arg
    options = asyncssh.SSHClientConnectionOptions(
        config=config, host=target.host, port=target.port or (),
        username=target.user or ())
    keepalive = options.keepalive_interval or KEEPALIVE_INTERVAL_S
    for _ in range(2):  # a second round only after the user accepted the host key
        witness = _HostKeyWitness()
        try:
            async with _handshake_slot():
                return await asyncssh.connect(
                    target.host, port=target.port or (), username=target.user or (),
                    config=config, client_factory=lambda w=witness: w,
                    keepalive_interval=keepalive,
                    keepalive_count_max=options.keepalive_count_max or KEEPALIVE_COUNT_MAX,
                    connect_timeout=settings.connect_timeout, **settings.extra_options)
        except asyncssh.HostKeyNotVerifiable as exc:
            if witness.offered is None:
                raise HostKeyChanged(f"{target.label}: host key not accepted ({exc.reason}); "
                                     "check known_hosts") from None
        except asyncssh.PermissionDenied:
            user = options.username or os.environ.get("USER", "")
            raise AuthFailed(f"{target.label}: authentication failed as {user!r}: check the "
                             "key (IdentityFile), your ssh-agent, or the user name") from None
        except asyncssh.Error as exc:
            raise HostUnreachable(f"{target.label}: SSH failed: {exc.reason}") from None
        except TimeoutError:
            raise HostUnreachable(f"{target.label}: no answer from {options.host}:"
                                  f"{options.port} within {settings.connect_timeout:g} s") from None
        except OSError as exc:
            raise HostUnreachable(f"{target.label}: cannot reach {options.host}:"
                                  f"{options.port}: {exc.strerror or exc}") from None
        # Not known: asked about (outside the except, so no error drags this one along).
        assert witness.offered is not None
        await _settle_unknown_key(target, settings, prompter, options, witness.offered)
    raise ServermoveError(f"{target.label}: host key still not accepted after adding it")
