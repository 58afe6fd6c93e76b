"""The few errors a user can meet, each with a one-line message that says what to do.

Everything the SSH layer, the mover or the OS can throw at us is turned into one of these at the
boundary, so the CLI prints `servermove: <message>` and the TUI shows the same words.
Headless: no Textual here.
"""

from __future__ import annotations


class ServermoveError(Exception):
    """Base class: `str(error)` is the one line shown to the user."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(ServermoveError):
    """The user asked for something we refuse before touching anything."""

    exit_code = 2


class AuthFailed(ServermoveError):
    pass


class HostUnreachable(ServermoveError):
    pass


class HostKeyUnknown(ServermoveError):
    """The server's host key is in no known_hosts file; never accepted without asking."""

    def __init__(self, message: str, *, host: str, port: int, key_type: str,
                 fingerprint: str) -> None:
        super().__init__(message)
        self.host, self.port = host, port
        self.key_type, self.fingerprint = key_type, fingerprint


class HostKeyChanged(ServermoveError):
    """The server presented a key other than the one known for it: refused, always."""


class PythonMissing(ServermoveError):
    pass


class SudoPasswordNeeded(ServermoveError):
    pass


class SudoPasswordWrong(ServermoveError):
    pass


class ConnectionLost(ServermoveError):
    """The link died during a move: not the same as the move failing."""

    exit_code = 4
