"""The fleet at a glance: every server with its target, data path and a live status."""

from __future__ import annotations

import contextlib

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from tui.app.messages import InventoryChanged, MoveFinished, MoveProgressed
from tui.app.screens.moves_log import MovesLogScreen
from tui.app.widgets.tables import RowTable
from tui.core.errors import ServermoveError
from tui.core.fleet import ConnectionProblem, MoveState, ServerMove, status_text
from tui.core.inventory import ServerEntry
from tui.core.protocol import Phase, display_path

COLUMNS = (("Name", "name"), ("Target", "target"), ("Data path", "path"), ("Status", "status"))
CELL_PADDING = 2  # a DataTable cell's space, left and right
SCROLLBAR = 2
MIN_PATH_WIDTH = 12


def status_cell(move: ServerMove | None, problem: ConnectionProblem | None = None) -> Text:
    text = status_text(move, problem)
    if problem is not None and (move is None or not move.active):
        return Text(text, style="red")
    if move is None:
        return Text(text, style="dim")
    if move.active:
        return Text(text, style="bold")
    if move.state is MoveState.CONNECTION_LOST or move.progress.phase is Phase.CANCELLED:
        return Text(text, style="yellow")
    return Text(text, style="green" if move.succeeded else "red")


class DashboardScreen(Screen):
    BINDINGS = [
        # priority: before the table's own (hidden) enter, so the footer shows "enter Open".
        Binding("enter", "open_server", "Open", priority=True),
        Binding("a", "add_server", "Add"),
        Binding("e", "edit_server", "Edit"),
        Binding("delete,d", "remove_server", "Remove"),
        Binding("l,ctrl+l", "moves_log", "Moves log"),
        Binding("question_mark", "app.help", "Help"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._probed: dict[str, str] = {}  # server name -> the target last checked

    def compose(self) -> ComposeResult:
        yield Header()
        yield RowTable(cursor_type="row", zebra_stripes=True, id="servers")
        yield Static("", id="empty-hint")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "servermove"
        self.sub_title = "servers"
        self.refresh_servers()

    def on_screen_resume(self) -> None:
        self.refresh_servers()

    def refresh_servers(self) -> None:
        """Rebuild the table from the inventory, keeping the cursor on the same server."""
        table = self.query_one(DataTable)
        selected = self.selected_server
        table.clear(columns=True)  # columns too: their widths only ever grow
        for label, key in COLUMNS:
            table.add_column(label, key=key)
        servers = self.app.inventory.servers
        path_width = self._path_width()
        for server in servers:
            table.add_row(Text(server.name), Text(server.target),
                          Text(display_path(server.data_path, path_width)),
                          self._status(server.name), key=server.name)
        if selected in self.app.inventory:
            table.move_cursor(row=table.get_row_index(selected))
        self.query_one("#empty-hint", Static).update(
            "" if servers else "No servers yet: press a to add one.")
        self.check_servers()

    def on_resize(self) -> None:
        self.refresh_servers()

    def _path_width(self) -> int | None:
        """Room for the data path (shortened in the middle) so that the status column stays
        in sight on a narrow terminal, or None when everything fits."""
        servers = self.app.inventory.servers
        if not servers or not self.size.width:
            return None
        others = sum(max(len(label), *(len(text) for text in texts)) + CELL_PADDING
                     for label, texts in (("Name", [s.name for s in servers]),
                                          ("Target", [s.target for s in servers]),
                                          ("Status", [str(self._status(s.name))
                                                      for s in servers])))
        room = self.size.width - others - CELL_PADDING - SCROLLBAR
        longest = max(len(display_path(server.data_path)) for server in servers)
        return None if room >= longest else max(MIN_PATH_WIDTH, room)

    def _status(self, name: str) -> Text:
        fleet = self.app.fleet
        return status_cell(fleet.get(name), fleet.problem(name))

    def check_servers(self) -> None:
        """Connect once to each server not checked yet (or whose target changed), so one that
        cannot be reached says so here rather than looking idle."""
        for server in self.app.inventory.servers:
            if (self._probed.get(server.name) != server.target
                    and not self.app.fleet.is_active(server.name)):
                self._probed[server.name] = server.target
                self.run_worker(self._check(server), group="check", exit_on_error=False)

    async def _check(self, server: ServerEntry) -> None:
        # The fleet notes a connection problem, and the status column shows it.
        with contextlib.suppress(ServermoveError):
            await self.app.fleet.stat(server, [server.data_path], ask=False)

    @property
    def selected_server(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def on_move_progressed(self, message: MoveProgressed) -> None:
        table = self.query_one(DataTable)
        if message.server_name in table.rows:
            table.update_cell(message.server_name, "status", self._status(message.server_name))

    def on_inventory_changed(self, _: InventoryChanged) -> None:
        self.refresh_servers()

    def on_move_finished(self, _: MoveFinished) -> None:
        self.refresh_servers()  # the last status may be longer: the columns share the room

    @on(DataTable.RowSelected)
    def action_open_server(self) -> None:
        if self.selected_server:
            self.app.open_server(self.selected_server)

    def action_add_server(self) -> None:
        self.app.edit_server(None)

    def action_edit_server(self) -> None:
        if self.selected_server:
            self.app.edit_server(self.selected_server)

    def action_remove_server(self) -> None:
        if self.selected_server:
            self.app.remove_server(self.selected_server)

    def action_moves_log(self) -> None:
        self.app.push_screen(MovesLogScreen())
