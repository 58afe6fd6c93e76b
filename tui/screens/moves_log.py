"""The Moves Log: every recorded move, newest first, filtered by server and result; and one move
in full with its timeline.

Reads the moves log (tui.history) when shown and again whenever a move ends. Paths and errors come
from servers, so they are shown as plain text, never as markup.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Select, Static

from tui.formatting import (
    FINISHED_RESULTS,
    LOG_COLUMNS,
    RESULT_STYLES,
    human_duration,
    human_rate,
    local_time,
    log_cells,
    log_header,
    of_total,
    parse_iso,
)
from tui.history import MoveHistory, MoveRecord
from tui.messages import JournalMerged, MoveFinished
from tui.protocol import DataState

ALL = ""  # the "all" choice of a filter; no server is named "" and no result is ""
UNFINISHED = "unfinished"
RESULT_CHOICES = [("all results", ALL), *((name, name) for name in FINISHED_RESULTS),
                  (UNFINISHED, UNFINISHED)]
TIME_WITH_ZONE = "%Y-%m-%d %H:%M:%S %Z"
ROUTE = LOG_COLUMNS[-1]
MIN_ROUTE_WIDTH = 24  # narrower than this, the table scrolls sideways instead

VERIFY_WORDS = {
    "checksum": "checksum: every file's contents compared with the source",
    "size": "sizes only: every file's size compared with the source",
    "none": "none: the copy was not checked",
}
METHOD_WORDS = {
    "rename": "rename: the destination is on the same filesystem, so nothing is copied",
    "copy": "copy: the destination is on another filesystem",
}


def matches_result(record: MoveRecord, result: str) -> bool:
    if result == ALL:
        return True
    if result == UNFINISHED:
        return record.phase not in FINISHED_RESULTS
    return record.phase == result


def middle_ellipsis(text: str, width: int) -> str:
    """`/srv/postgres/16/main → /data/postgres/16/main` in `width` cells: both ends kept."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head):]}"


def both_times(iso: str | None) -> str:
    """`2026-03-01 14:02:11 CET (2026-03-01 13:02:11 UTC)`: local first, UTC to compare with
    servers' logs."""
    moment = parse_iso(iso)
    if moment is None:
        return "—"
    utc = f"{moment.strftime('%Y-%m-%d %H:%M:%S')} UTC"
    if not moment.astimezone().utcoffset():
        return utc  # local time is UTC: once is enough
    return f"{local_time(iso, TIME_WITH_ZONE)} ({utc})"


def phase_words(phase: str | None) -> str:
    return (phase or "starting").replace("-", " ")


def last_step(record: MoveRecord) -> str:
    """The phase a move was in when it ended or was last seen: where an error struck."""
    steps = [entry.get("phase") for entry in record.timeline
             if entry.get("phase") not in (*FINISHED_RESULTS, "connection-lost")]
    return phase_words(steps[-1] if steps else None)


def result_words(record: MoveRecord) -> str:
    if record.phase == "complete":
        return "Complete"
    if record.phase == "error":
        return f"Failed while {last_step(record)}"
    if record.phase == "cancelled":
        return f"Cancelled while {last_step(record)}"
    lost = bool(record.timeline) and record.timeline[-1].get("phase") == "connection-lost"
    return (f"Unfinished: last seen {phase_words(record.phase)}"
            + ("; then the connection was lost, and the move may have gone on on the server"
               if lost else "; it may still be running"))


def data_state_words(record: MoveRecord) -> str:
    if record.dataState:
        try:
            return DataState(record.dataState).explain().capitalize()
        except ValueError:
            return record.dataState  # a newer mover's word: still better than nothing
    if record.finished:
        return "The mover did not say: check both paths"
    return "Not known until the move ends"


def summary_table(record: MoveRecord) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(ratio=1)
    result = Text(result_words(record), style=RESULT_STYLES.get(record.phase, "italic"))
    rows: list[tuple[str, Text | str]] = [
        ("Result", result),
        ("Server", Text(record.server if record.server == record.target
                        else f"{record.server} ({record.target})")),
        ("From", Text(record.source)),
        ("To", Text(record.destination)),
        ("Data", data_state_words(record)),
    ]
    if record.error:
        rows.append(("Error", Text(record.error, style="red")))
    rows += [
        ("Started", both_times(record.startedAt)),
        ("Finished", both_times(record.finishedAt)),
        ("Time taken", human_duration(record.duration)),
        ("Size", f"{of_total(record.bytesCopied, record.bytesTotal, sizes=True)} copied"),
        ("Files", f"{of_total(record.filesCopied, record.filesTotal, sizes=False)} copied"),
        ("Average rate", human_rate(record.averageRate)),
        ("Verify", Text(VERIFY_WORDS.get(record.verify, record.verify))),
        ("Method", Text(METHOD_WORDS.get(record.method or "", record.method or "—"))),
        ("Move id", Text(record.moveId)),
    ]
    for label, value in rows:
        table.add_row(label, value)
    return table


def timeline_table(record: MoveRecord) -> Table:
    """One row per phase change: local time, time since the start, the phase, its error."""
    table = Table(box=None, header_style="bold", pad_edge=False, expand=True)
    table.add_column("at", no_wrap=True)
    table.add_column("after", no_wrap=True, justify="right")
    table.add_column("phase", no_wrap=True)
    table.add_column("error", ratio=1, overflow="fold")
    start = parse_iso(record.startedAt)
    for entry in record.timeline:
        at = entry.get("at")
        phase = entry.get("phase") or "?"
        moment = parse_iso(at)
        offset = (moment - start).total_seconds() if moment and start else None
        table.add_row(local_time(at, "%Y-%m-%d %H:%M:%S"), human_duration(offset),
                      Text(phase_words(phase), style=RESULT_STYLES.get(phase, "")),
                      Text(entry.get("error") or "", style="red"))
    return table


class MovesLogScreen(Screen):
    """Every recorded move; opened from the dashboard (all servers) or a server (its moves)."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("enter", "open_move", "Details", show=False),
        Binding("s", "focus_filter('server-filter')", "Server filter"),
        Binding("r", "focus_filter('result-filter')", "Result filter"),
        Binding("question_mark", "app.help", "Help"),
    ]

    def __init__(self, server: str | None = None) -> None:
        super().__init__()
        self.initial_server = server
        self.records: list[MoveRecord] = []
        self._warned: set[str] = set()
        self._server_choices: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="filters"):
            yield Label("Server", classes="filter-label")
            yield Select([("all servers", ALL)], value=ALL, allow_blank=False, compact=True,
                         id="server-filter")
            yield Label("Result", classes="filter-label")
            yield Select(RESULT_CHOICES, value=ALL, allow_blank=False, compact=True,
                         id="result-filter")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="moves")
        yield Static("", id="empty-hint", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "servermove"
        self.sub_title = "moves log"
        table = self.query_one(DataTable)
        for name in LOG_COLUMNS:
            table.add_column(log_header(name), key=name)
        self.load()
        if self.initial_server:
            self.query_one("#server-filter", Select).value = self.initial_server
        table.focus()

    def on_move_finished(self, _: MoveFinished) -> None:
        self.load()

    def on_journal_merged(self, _: JournalMerged) -> None:
        self.load()

    # -- reading the log -----------------------------------------------------------------------

    def load(self) -> None:
        """Read the log again, keep the filters, and show the rows they let through."""
        warnings: list[str] = []
        self.records = MoveHistory(warn=warnings.append).records()
        new = [warning for warning in warnings if warning not in self._warned]
        if new:
            self._warned.update(new)
            self.notify("\n".join(new[:3]) + (f"\n…and {len(new) - 3} more" if len(new) > 3
                                               else ""),
                        title="Some entries of the moves log could not be read",
                        severity="warning", markup=False, timeout=10)
        self.update_server_choices()
        self.show_records()

    def update_server_choices(self) -> None:
        select = self.query_one("#server-filter", Select)
        names = {record.server for record in self.records if record.server}
        # The server this screen was opened for is a choice even before it has any moves.
        names.update(name for name in (self.initial_server, select.value)
                     if isinstance(name, str) and name)
        if sorted(names) == self._server_choices:
            return
        self._server_choices = sorted(names)
        value = select.value
        with select.prevent(Select.Changed):
            select.set_options([("all servers", ALL),
                                *((Text(name), name) for name in self._server_choices)])
            select.value = value

    @property
    def server_filter(self) -> str:
        value = self.query_one("#server-filter", Select).value
        return value if isinstance(value, str) else ALL

    @property
    def result_filter(self) -> str:
        value = self.query_one("#result-filter", Select).value
        return value if isinstance(value, str) else ALL

    @property
    def shown(self) -> list[MoveRecord]:
        return [record for record in self.records
                if self.server_filter in (ALL, record.server)
                and matches_result(record, self.result_filter)]

    def on_resize(self) -> None:
        self.show_records()  # the routes get the width there is

    @on(Select.Changed)
    def show_records(self) -> None:
        table = self.query_one(DataTable)
        selected = self.selected_move_id
        table.clear()
        shown = self.shown
        rows = [log_cells(record) for record in shown]
        route_width = self.route_width(rows)
        for record, cells in zip(shown, rows, strict=True):
            route = cells[ROUTE]
            if route.cell_len > route_width:
                cells[ROUTE] = Text(middle_ellipsis(route.plain, route_width))
            table.add_row(*(cells[name] for name in LOG_COLUMNS), key=record.moveId)
        if selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected))
        table.display = bool(shown)
        if not self.records:
            hint = ("No moves recorded yet. Every move you start, here or with "
                    "`servermove move`, is listed here.")
        elif self.server_filter and not any(r.server == self.server_filter for r in self.records):
            hint = f"No moves recorded for {self.server_filter} yet."
        elif not shown:
            hint = "No moves match these filters."
        else:
            hint = ""
        self.query_one("#empty-hint", Static).update(hint)

    def route_width(self, rows: list[dict[str, Text]]) -> int:
        """The width left for the route once the other columns have theirs: a long route is
        shortened in the middle (the detail shows it whole) rather than scrolled out of view."""
        table = self.query_one(DataTable)
        padding = 2 * table.cell_padding
        others = sum(padding + max([len(name), *(cells[name].cell_len for cells in rows)])
                     for name in LOG_COLUMNS if name != ROUTE)
        width = table.size.width - table.styles.border.spacing.width
        if len(rows) + table.header_height > table.size.height:
            width -= table.styles.scrollbar_size_vertical
        return max(MIN_ROUTE_WIDTH, width - others - padding)

    # -- actions -------------------------------------------------------------------------------

    @property
    def selected_move_id(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    @on(DataTable.RowSelected)
    def action_open_move(self) -> None:
        record = next((r for r in self.records if r.moveId == self.selected_move_id), None)
        if record is not None:
            self.app.push_screen(MoveDetailScreen(record))

    def action_focus_filter(self, filter_id: str) -> None:
        self.query_one(f"#{filter_id}", Select).focus()

    def action_back(self) -> None:
        self.dismiss()


class MoveDetailScreen(Screen):
    """One move in plain words, and its timeline of phase changes."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("question_mark", "app.help", "Help"),
    ]

    def __init__(self, record: MoveRecord) -> None:
        super().__init__()
        self.record = record

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="move-detail"):
            yield Static(id="summary")
            yield Label("Timeline", classes="section-title")
            yield Static(id="timeline")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "servermove"
        self.show_record()

    def on_move_finished(self, message: MoveFinished) -> None:
        if message.server_name == self.record.server:
            self.record = MoveHistory().get(self.record.moveId) or self.record
            self.show_record()

    def show_record(self) -> None:
        self.sub_title = f"move on {self.record.server}"
        self.query_one("#summary", Static).update(summary_table(self.record))
        self.query_one("#timeline", Static).update(
            timeline_table(self.record) if self.record.timeline
            else Text("No phase changes were recorded.", style="italic"))

    def action_back(self) -> None:
        self.dismiss()
