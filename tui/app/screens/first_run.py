"""No inventory yet: offer the demo, or adding a server (with the ~/.ssh/config aliases)."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Label, OptionList, Static


class FirstRunScreen(Screen):
    BINDINGS = [
        Binding("d", "app.demo", "Demo"),
        Binding("a", "add_server", "Add server"),
        Binding("question_mark", "app.help", "Help"),
    ]

    def __init__(self, aliases: list[str]) -> None:
        super().__init__()
        self.aliases = aliases

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="welcome"):
            yield Label("Welcome to servermove", id="welcome-title")
            yield Static(Text(
                "servermove moves a server's data directory to a new path over SSH, with live "
                f"progress. There are no servers in {self.app.inventory.path} yet.\n\n"
                "Try the demo first: it moves a generated directory on this machine, no SSH "
                "needed. Or add your first server."))
            with Horizontal(id="welcome-buttons"):
                yield Button("Try the demo", id="demo", variant="primary")
                yield Button("Add a server", id="add")
            if self.aliases:
                yield Label("Or pick a host from ~/.ssh/config:", id="aliases-title")
                yield OptionList(*self.aliases, id="aliases")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "servermove"
        self.sub_title = "first run"

    @on(Button.Pressed, "#demo")
    def _demo(self) -> None:
        self.app.action_demo()

    @on(Button.Pressed, "#add")
    def action_add_server(self) -> None:
        self.app.edit_server(None)

    @on(OptionList.OptionSelected, "#aliases")
    def _alias_picked(self, event: OptionList.OptionSelected) -> None:
        self.app.edit_server(None, target=str(event.option.prompt))
