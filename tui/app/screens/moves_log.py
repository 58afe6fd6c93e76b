"""The Moves Log: every recorded move, newest first (or sorted by any column), filtered by server,
result, who started it and any text; and one move in full with its timeline.

Reads the moves log (tui.core.moves_log) when shown and again whenever a move ends. Paths and
errors come from servers, so they are shown as plain text, never as markup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, Select, Static

from tui.app.log_table import RESULT_STYLES, log_cells, log_header
from tui.app.messages import JournalMerged, MoveFinished
from tui.core.formatting import (
    FINISHED_RESULTS,
    LOG_COLUMNS,
    fit_log_columns,
    human_duration,
    human_rate,
    local_time,
    of_total,
    parse_iso,
)
from tui.core.moves_log import (
    ELSEWHERE,
    HERE,
    MoveRecord,
    MovesLog,
    started_by_matches,
    this_machine,
)
from tui.core.protocol import DataState
from tui.core.wording import record_service_note

ALL = ""  # the "all" choice of a filter; no server is named "" and no result is ""
UNFINISHED = "unfinished"
RESULT_CHOICES = [("all results", ALL), *((name, name) for name in FINISHED_RESULTS),
                  (UNFINISHED, UNFINISHED)]
STARTED_BY_CHOICES = [("anyone", ALL), ("this machine", HERE), ("other machines", ELSEWHERE)]
TIME_WITH_ZONE = "%Y-%m-%d %H:%M:%S %Z"
ROUTE = LOG_COLUMNS[-1]
MIN_ROUTE_WIDTH = 24  # narrower than this, the table scrolls sideways instead
ROUTE_WANTED_WIDTH = 30  # columns are left out, least useful first, to give the route this much
SORT_KEYS: dict[str, Callable[[MoveRecord], Any]] = {
    "started": lambda r: r.started_ts,
    "server": lambda r: r.server.lower(),
    "started by": lambda r: r.startedBy or "",
    "result": lambda r: r.phase,
    "size": lambda r: r.bytesTotal,
    "files": lambda r: r.filesTotal,
    "time": lambda r: r.duration or 0.0,
    "avg rate": lambda r: r.averageRate or 0.0,
    ROUTE: lambda r: (r.source, r.destination),
}

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
    """`/srv/postgres/16/main` in `width` cells: both ends kept."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head):]}"


def shorten_route(source: str, destination: str, width: int) -> str:
    """`source → destination` in `width` cells: each path shortened in its middle, the arrow
    always shown; a short path leaves its room to the other."""
    arrow = " → "
    route = f"{source}{arrow}{destination}"
    if len(route) <= width:
        return route
    room = max(2, width - len(arrow))
    source_width = min(len(source), max(room - len(destination), room // 2))
    return (f"{middle_ellipsis(source, max(1, source_width))}{arrow}"
            f"{middle_ellipsis(destination, max(1, room - source_width))}")


SERVICE_MOVES = "service"  # the text filter's word for service moves only


def matches_text(record: MoveRecord, text: str) -> bool:
    """Whether `text` (any case) is in the move's server, paths, result, starter, error or id,
    or in a service move's note (downtime, passes, cutover: "service" finds them all)."""
    if not text:
        return True
    note = record_service_note(record)
    if text.casefold() == SERVICE_MOVES:
        return note is not None  # not "Name or service not known" in some error
    haystack = " ".join(str(value) for value in (
        record.server, record.target, record.source, record.destination, record.phase,
        record.startedBy or "", record.error or "", record.moveId, note or ""))
    return text.casefold() in haystack.casefold()


def started_by_words(started_by: str | None) -> str:
    if started_by is None:
        return "not known (recorded before servermove kept it)"
    if started_by == this_machine():
        return f"this machine ({started_by})"
    return f"{started_by} (another machine)"


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
        ("Started by", Text(started_by_words(record.startedBy))),
        ("From", Text(record.source)),
        ("To", Text(record.destination)),
        ("Data", data_state_words(record)),
    ]
    service = record_service_note(record)
    if service is not None:
        rows.append(("Service", Text(service)))
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


class MovesTable(DataTable):
    """The moves, one a row: Home and End go to the first and the last."""

    BINDINGS = [
        Binding("home", "scroll_top", "First", show=False),
        Binding("end", "scroll_bottom", "Last", show=False),
    ]


class MovesLogScreen(Screen):
    """Every recorded move; opened from the dashboard (all servers) or a server (its moves)."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("enter", "open_move", "Details", show=False),
        Binding("slash", "text_filter", "Filter"),
        Binding("o", "sort_next", "Sort"),
        # Listed under ? (the footer keeps to what fits at 80 columns).
        Binding("s", "focus_filter('server-filter')", "Server filter", show=False),
        Binding("r", "focus_filter('result-filter')", "Result filter", show=False),
        Binding("b", "focus_filter('started-by-filter')", "Started-by filter", show=False),
        Binding("question_mark", "app.help", "Help"),
    ]

    def __init__(self, server: str | None = None) -> None:
        super().__init__()
        self.initial_server = server
        self.records: list[MoveRecord] = []
        self._warned: set[str] = set()
        self._server_choices: list[str] = []
        self.sort_column = "started"
        self.sort_reverse = True  # newest first

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="filters"):
            yield Label("Server", classes="filter-label")
            yield Select([("all servers", ALL)], value=ALL, allow_blank=False, compact=True,
                         id="server-filter")
            yield Label("Result", classes="filter-label")
            yield Select(RESULT_CHOICES, value=ALL, allow_blank=False, compact=True,
                         id="result-filter")
            yield Label("By", classes="filter-label")
            yield Select(STARTED_BY_CHOICES, value=ALL, allow_blank=False, compact=True,
                         id="started-by-filter")
        yield Input(placeholder="filter: any text in server, paths, result, error; "
                          f"{SERVICE_MOVES!r}: service moves only (esc clears)",
                    id="text-filter")
        yield MovesTable(cursor_type="row", zebra_stripes=True, id="moves")
        yield Static("", id="empty-hint", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "servermove"
        self.sub_title = "moves log"
        self.query_one("#text-filter", Input).display = False
        self.load()
        if self.initial_server:
            self.query_one("#server-filter", Select).value = self.initial_server
        self.query_one(DataTable).focus()

    def on_move_finished(self, _: MoveFinished) -> None:
        self.load()

    def on_journal_merged(self, _: JournalMerged) -> None:
        self.load()

    # -- reading the log -----------------------------------------------------------------------

    def load(self) -> None:
        """Read the log again, keep the filters, and show the rows they let through."""
        warnings: list[str] = []
        self.records = MovesLog(warn=warnings.append).records()
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

    def _filter_value(self, select_id: str) -> str:
        value = self.query_one(f"#{select_id}", Select).value
        return value if isinstance(value, str) else ALL

    @property
    def server_filter(self) -> str:
        return self._filter_value("server-filter")

    @property
    def result_filter(self) -> str:
        return self._filter_value("result-filter")

    @property
    def started_by_filter(self) -> str:
        return self._filter_value("started-by-filter")

    @property
    def text_filter(self) -> str:
        return self.query_one("#text-filter", Input).value.strip()

    @property
    def shown(self) -> list[MoveRecord]:
        started_by, text = self.started_by_filter, self.text_filter
        shown = [record for record in self.records
                 if self.server_filter in (ALL, record.server)
                 and matches_result(record, self.result_filter)
                 and (started_by == ALL or started_by_matches(record.startedBy, started_by))
                 and matches_text(record, text)]
        # Newest first among equals, whatever the column.
        shown.sort(key=lambda r: r.started_ts, reverse=True)
        shown.sort(key=SORT_KEYS[self.sort_column], reverse=self.sort_reverse)
        return shown

    def on_resize(self) -> None:
        self.show_records()  # the routes get the width there is

    @on(Select.Changed)
    @on(Input.Changed, "#text-filter")
    def show_records(self) -> None:
        table = self.query_one(DataTable)
        selected = self.selected_move_id
        shown = self.shown
        rows = [log_cells(record) for record in shown]
        columns, route_width = self.table_layout(rows)
        table.clear(columns=True)
        for name in columns:
            table.add_column(self.column_header(name), key=name)
        for record, cells in zip(shown, rows, strict=True):
            if cells[ROUTE].cell_len > route_width:
                cells[ROUTE] = Text(shorten_route(record.source, record.destination,
                                                  route_width))
            table.add_row(*(cells[name] for name in columns), key=record.moveId)
        if selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected))
        table.display = bool(shown)
        self.query_one("#empty-hint", Static).update(self.empty_hint(shown))

    def empty_hint(self, shown: list[MoveRecord]) -> str:
        if not self.records:
            return ("No moves recorded yet. Every move you start, here or with "
                    "`servermove move`, is listed here.")
        if self.server_filter and not any(r.server == self.server_filter for r in self.records):
            return f"No moves recorded for {self.server_filter} yet."
        if not shown:
            return "No moves match these filters."
        return ""

    def column_header(self, name: str) -> Text:
        heading = log_header(name)
        if name == self.sort_column:
            heading.append("▼" if self.sort_reverse else "▲")
        return heading

    def table_layout(self, rows: list[dict[str, Text]]) -> tuple[list[str], int]:
        """The columns to show and the width left for the route. A long route is shortened in
        the middle of each path (the detail shows it whole); where even that leaves it too
        narrow, the least useful columns are left out rather than the route scrolled away."""
        table = self.query_one(DataTable)
        padding = 2 * table.cell_padding
        width = table.size.width - table.styles.border.spacing.width
        if len(rows) + table.header_height > table.size.height:
            width -= table.styles.scrollbar_size_vertical
        widths = {name: padding + max([self.column_header(name).cell_len,
                                       *(cells[name].cell_len for cells in rows)])
                  for name in LOG_COLUMNS if name != ROUTE}
        longest = max([len(ROUTE), *(cells[ROUTE].cell_len for cells in rows)])
        columns = fit_log_columns(widths, width - padding, min(longest, ROUTE_WANTED_WIDTH),
                                  keep=self.sort_column)
        left = width - padding - sum(widths[c] for c in columns if c != ROUTE)
        return columns, max(MIN_ROUTE_WIDTH, left)

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

    @on(DataTable.HeaderSelected)
    def sort_by_header(self, event: DataTable.HeaderSelected) -> None:
        self.sort_by(str(event.column_key.value))

    def sort_by(self, column: str) -> None:
        """Sort by `column`; again by the same column reverses the order."""
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            # Times newest first and sizes biggest first; words from A.
            self.sort_column = column
            self.sort_reverse = column not in ("server", "started by", "result", ROUTE)
        self.show_records()

    def action_sort_next(self) -> None:
        """The next column shown becomes the sort column."""
        names = [str(column.key.value) for column in self.query_one(DataTable).ordered_columns]
        if not names:
            return
        index = names.index(self.sort_column) if self.sort_column in names else -1
        self.sort_by(names[(index + 1) % len(names)])

    def action_text_filter(self) -> None:
        text_filter = self.query_one("#text-filter", Input)
        text_filter.display = True
        text_filter.focus()

    @on(Input.Submitted, "#text-filter")
    def text_filter_done(self) -> None:
        self.query_one(DataTable).focus()

    def action_focus_filter(self, filter_id: str) -> None:
        self.query_one(f"#{filter_id}", Select).focus()

    def action_back(self) -> None:
        text_filter = self.query_one("#text-filter", Input)
        if text_filter.display:  # esc first clears the text filter, then leaves
            text_filter.value = ""
            text_filter.display = False
            self.query_one(DataTable).focus()
            return
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
            self.record = MovesLog().get(self.record.moveId) or self.record
            self.show_record()

    def show_record(self) -> None:
        self.sub_title = f"move on {self.record.server}"
        self.query_one("#summary", Static).update(summary_table(self.record))
        self.query_one("#timeline", Static).update(
            timeline_table(self.record) if self.record.timeline
            else Text("No phase changes were recorded.", style="italic"))

    def action_back(self) -> None:
        self.dismiss()
