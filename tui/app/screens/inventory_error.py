"""servers.toml could not be read: say where and why, and let the user fix it and reload."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, Static


class InventoryErrorScreen(Screen):
    BINDINGS = [Binding("r", "app.reload_inventory", "Reload")]

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="inventory-error"):
            yield Label("The server inventory cannot be read", id="inventory-error-title")
            yield Static(Text(self.message), id="inventory-error-message")
            yield Static("Fix the file in an editor, then press r to read it again.")
        yield Footer()
