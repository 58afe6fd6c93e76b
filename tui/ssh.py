"""The SSH connection: asyncssh with the user's own ssh config, agent, keys and known_hosts.

`connect_target` is the one door to a server. It turns asyncssh's and the OS's exceptions into the
typed errors of tui.errors, never accepts a host key silently, and limits how many handshakes run
at once (sshd's MaxStartups drops the excess, which would look like a flaky network).

Headless: nothing here imports Textual.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncssh

from tui.errors import (
    AuthFailed,
    HostKeyChanged,
    HostKeyUnknown,
    HostUnreachable,
    ServermoveError,
)
from tui.targets import Target

KEEPALIVE_INTERVAL_S = 15  # with 3 missed answers, a dead link is noticed in about 45 s
KEEPALIVE_COUNT_MAX = 3
CONNECT_TIMEOUT_S = 20
MAX_CONCURRENT_HANDSHAKES = 8  # below OpenSSH's default MaxStartups of 10


class Prompter(Protocol):
    """Questions only the user can answer. The CLI asks on the terminal, the TUI in a modal."""

    async def confirm_host_key(self, host: str, port: int, key_type: str,
                               fingerprint: str) -> bool: ...

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
    """Record an accepted host key the way OpenSSH does (asyncssh never writes known_hosts)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{_known_host_pattern(host, port)} {key.export_public_key('openssh').decode().strip()}"
    with open(path, "a", encoding="utf-8") as handle:
        if handle.tell() and not path.read_bytes().endswith(b"\n"):
            handle.write("\n")
        handle.write(line + "\n")


def _describe(target: Target) -> str:
    return target.label


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
                raise HostKeyChanged(f"{_describe(target)}: host key not accepted ({exc.reason}); "
                                     "check known_hosts") from None
            host, addr, port, key = witness.offered
            files = _known_hosts_files(options)
            fingerprint = key.get_fingerprint("sha256")
            key_type = key.get_algorithm()
            if _has_known_key(files, host, addr, port):
                raise HostKeyChanged(
                    f"WARNING: the host key of {_describe(target)} ({host}:{port}) has CHANGED: "
                    f"it now offers {key_type} {fingerprint}, which matches none of the keys in "
                    f"{', '.join(map(str, files))}. This may be an attack; refused. If the server "
                    f"was really reinstalled, remove its old line with "
                    f"ssh-keygen -R '{_known_host_pattern(host, port)}'") from None
            unknown = HostKeyUnknown(
                f"{_describe(target)} ({host}:{port}) is not a known host: it offers {key_type} "
                f"{fingerprint}. Check the fingerprint with the server's admin, then accept it "
                f"by running servermove in a terminal, or with "
                f"ssh -o StrictHostKeyChecking=ask -p {port} {host}",
                host=host, port=port, key_type=key_type, fingerprint=fingerprint)
            if not (settings.interactive and prompter is not None):
                raise unknown from None
            if not await prompter.confirm_host_key(host, port, key_type, fingerprint):
                raise HostKeyUnknown(f"host key of {_describe(target)} rejected; nothing was done",
                                     host=host, port=port, key_type=key_type,
                                     fingerprint=fingerprint) from None
            append_known_host(files[0], host, port, key)
        except asyncssh.PermissionDenied:
            user = options.username or os.environ.get("USER", "")
            raise AuthFailed(f"{_describe(target)}: authentication failed as {user!r}: check the "
                             "key (IdentityFile), your ssh-agent, or the user name") from None
        except asyncssh.Error as exc:
            raise HostUnreachable(f"{_describe(target)}: SSH failed: {exc.reason}") from None
        except TimeoutError:
            raise HostUnreachable(f"{_describe(target)}: no answer from {options.host}:"
                                  f"{options.port} within {settings.connect_timeout:g} s") from None
        except OSError as exc:
            raise HostUnreachable(f"{_describe(target)}: cannot reach {options.host}:"
                                  f"{options.port}: {exc.strerror or exc}") from None
    raise ServermoveError(f"{_describe(target)}: host key still not accepted after adding it")
