"""Messages between the app and its screens. Names say what happened (past tense).

The app posts the fleet's messages to every screen in the stack (a modal on top must not freeze the
progress behind it), so they do not bubble back up to the app."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from tui.core.fleet import ServerMove


@dataclass
class MoveProgressed(Message, bubble=False):
    """A server's move changed, with the move to show (None: no move on it). Posted at most about
    ten times a second per server; a flood for one server that the screen has not caught up with
    collapses to the latest."""

    server_name: str
    move: ServerMove | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, MoveProgressed) and message.server_name == self.server_name


@dataclass
class MoveFinished(Message, bubble=False):
    """A server's move ended: complete, failed, cancelled, or its connection lost."""

    server_name: str


@dataclass
class JournalMerged(Message, bubble=False):
    """Moves from a server's journal (started elsewhere, or finished while we were away) were
    added to the moves log."""

    server_name: str


@dataclass
class InventoryChanged(Message, bubble=False):
    """servers.toml was written (a server added, edited, removed, or its data path moved)."""
