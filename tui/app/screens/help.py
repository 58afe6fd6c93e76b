"""The keys, listed from the bindings themselves so the list cannot go stale."""

from __future__ import annotations

from rich.table import Table
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Static

from tui.app.screens.modals import Dialog


def _key_name(key: str) -> str:
    names = {"question_mark": "?", "escape": "esc", "delete": "del", "slash": "/"}
    return " / ".join(names.get(k.strip(), k.strip()) for k in key.split(","))


def keys_table(sections: list[tuple[str, list[Binding]]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for title, bindings in sections:
        table.add_row(f"[underline]{title}[/]", "")
        for binding in bindings:
            if binding.description:
                table.add_row(_key_name(binding.key), binding.description)
        table.add_row("", "")
    return table


class HelpScreen(Dialog):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss_default", "Close")]
    # Lines the dialog needs besides the keys: its frame, the title and the line below.
    FRAME_LINES = 6
    AUTO_FOCUS = "VerticalScroll"  # the keys scroll with the arrow keys

    def __init__(self, sections: list[tuple[str, list[Binding]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Keys", classes="dialog-title")
            with VerticalScroll():
                yield Static(keys_table(self.sections))
            yield Label("The mouse works too: click rows, buttons and fields.",
                        classes="dialog-body")

    def on_resize(self, event: events.Resize) -> None:
        # The keys scroll (arrows, pgup/pgdn, home/end) when the terminal is too short for all.
        self.query_one(VerticalScroll).styles.max_height = max(
            3, event.size.height - self.FRAME_LINES)
