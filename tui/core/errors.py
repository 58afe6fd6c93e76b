"""The few errors a user can meet, each with a one-line message that says what to do.

Everything the SSH layer, the mover or the OS can throw at us is turned into one of these at the
boundary, so the CLI prints `servermove: <message>` and the TUI shows the same words.
Headless: no Textual here.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """The CLI's exit statuses (README, `servermove --help`). 0 to 3 are the mover's own
    (docs/protocol.md; tests/test_protocol.py checks they agree); the others are the client's."""

    OK = 0
    FAILED = 1
    REFUSED = 2  # refused before anything was touched
    CANCELLED = 3
    NO_CONNECTION = 4  # never made, or lost
    STOPPED_FOLLOWING = 130  # a second Ctrl-C: we stopped waiting for the cancel




class ServermoveError(Exception):
    """Base class: `str(error)` is the one line shown to the user."""

    exit_code = ExitStatus.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(ServermoveError):
    """The user asked for something we refuse before touching anything."""

    exit_code = ExitStatus.REFUSED


class AuthFailed(ServermoveError):
    exit_code = ExitStatus.REFUSED  # nothing was touched: fix the key or the user name


class HostUnreachable(ServermoveError):
    exit_code = ExitStatus.NO_CONNECTION


class HostKeyUnknown(ServermoveError):
    """The server's host key is in no known_hosts file; never accepted without asking."""

    exit_code = ExitStatus.REFUSED

    def __init__(self, message: str, *, host: str, port: int, key_type: str,
                 fingerprint: str) -> None:
        super().__init__(message)
        self.host, self.port = host, port
        self.key_type, self.fingerprint = key_type, fingerprint


class HostKeyChanged(ServermoveError):
    """The server presented a key other than the one known for it: refused, always."""

    exit_code = ExitStatus.REFUSED


class PythonMissing(ServermoveError):
    exit_code = ExitStatus.REFUSED


class SudoPasswordNeeded(ServermoveError):
    exit_code = ExitStatus.REFUSED


class SudoPasswordWrong(ServermoveError):
    exit_code = ExitStatus.REFUSED


class ConnectionLost(ServermoveError):
    """The link died during a move: not the same as the move failing."""

    exit_code = ExitStatus.NO_CONNECTION
