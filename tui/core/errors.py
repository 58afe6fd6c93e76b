"""The few errors a user can meet, each with a one-line message that says what to do.

Everything the SSH layer, the mover or the OS can throw at us is turned into one of these at the
boundary, so the CLI prints `servermove: <message>` and the TUI shows the same words.
Headless: no Textual here.
"""

from __future__ import annotations

# The CLI's exit statuses (README, `servermove --help`): 1 a failure, 2 refused before anything
# was touched, 4 no connection (never made, or lost).
EXIT_FAILED, EXIT_REFUSED, EXIT_NO_CONNECTION = 1, 2, 4


class ServermoveError(Exception):
    """Base class: `str(error)` is the one line shown to the user."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(ServermoveError):
    """The user asked for something we refuse before touching anything."""

    exit_code = EXIT_REFUSED


class AuthFailed(ServermoveError):
    exit_code = EXIT_REFUSED  # nothing was touched: fix the key or the user name


class HostUnreachable(ServermoveError):
    exit_code = EXIT_NO_CONNECTION


class HostKeyUnknown(ServermoveError):
    """The server's host key is in no known_hosts file; never accepted without asking."""

    exit_code = EXIT_REFUSED

    def __init__(self, message: str, *, host: str, port: int, key_type: str,
                 fingerprint: str) -> None:
        super().__init__(message)
        self.host, self.port = host, port
        self.key_type, self.fingerprint = key_type, fingerprint


class HostKeyChanged(ServermoveError):
    """The server presented a key other than the one known for it: refused, always."""

    exit_code = EXIT_REFUSED


class PythonMissing(ServermoveError):
    exit_code = EXIT_REFUSED


class SudoPasswordNeeded(ServermoveError):
    exit_code = EXIT_REFUSED


class SudoPasswordWrong(ServermoveError):
    exit_code = EXIT_REFUSED


class ConnectionLost(ServermoveError):
    """The link died during a move: not the same as the move failing."""

    exit_code = EXIT_NO_CONNECTION
