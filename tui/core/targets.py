"""Where a move runs: the local machine, or a server reached over SSH.

Headless: no Textual here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tui.core.errors import BadInput

LOCAL = "local"
_HOST_RE = re.compile(r"^[A-Za-z0-9_.%-]+$")


@dataclass(frozen=True)
class Target:
    """A server to run the mover on. `host` None means this machine, without SSH."""

    label: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    sudo: bool = False
    python: str | None = None

    @property
    def is_local(self) -> bool:
        return self.host is None

    def __str__(self) -> str:
        return self.label



def parse_target(text: str, *, sudo: bool = False, python: str | None = None) -> Target:
    """Parse `local`, an ssh config alias, or `[user@]host[:port]` (IPv6 as `[addr]:port`).

    An alias and a host name look the same here; asyncssh resolves aliases through the ssh config.
    """
    spec = text.strip()
    if spec == LOCAL:
        return Target(label=LOCAL, sudo=sudo, python=python)
    user: str | None = None
    rest = spec
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        if not user or any(c.isspace() for c in user):
            raise BadInput(f"bad target {text!r}: the user name before '@' is empty or has spaces")
    port: int | None = None
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep:
            raise BadInput(f"bad target {text!r}: missing ']' after the IPv6 address")
        port_text = tail[1:] if tail.startswith(":") else tail
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
    else:
        host, port_text = rest, ""
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise BadInput(f"bad target {text!r}: port {port_text!r} is not a number 1-65535")
        port = int(port_text)
    # A leading '-' could be read as an option by tools further down; no real host starts so.
    if not host or host.startswith("-") or not (_HOST_RE.match(host) or ":" in host):
        raise BadInput(f"bad target {text!r}: expected 'local', an ssh alias or "
                       "[user@]host[:port]")
    return Target(label=spec, host=host, port=port, user=user, sudo=sudo, python=python)
