"""The moves log's cells as rich `Text`, shared by `servermove log` and the TUI's Moves Log; the
column rules themselves (which columns, which fold first) are headless, in `tui.core.formatting`."""

from __future__ import annotations

from rich.text import Text

from tui.core.formatting import (
    FINISHED_RESULTS,
    LOG_NUMBER_COLUMNS,
    human_count,
    human_duration,
    human_rate,
    human_size,
    local_time,
)
from tui.core.moves_log import MoveRecord, this_machine

RESULT_STYLES = {"complete": "green", "error": "red", "cancelled": "yellow"}
STARTED_HERE = "here"  # a move started from this machine, in the `started by` column


def result_text(phase: str) -> Text:
    """A move's result in a word: `complete`, `error`, `cancelled`, or `unfinished` for a move
    the log never saw end (still running, or its client stopped watching it)."""
    if phase in FINISHED_RESULTS:
        return Text(phase, style=RESULT_STYLES[phase])
    return Text("unfinished", style="italic")


def log_cells(record: MoveRecord) -> dict[str, Text]:
    """The cells of one moves-log row, keyed by LOG_COLUMNS. Paths are plain text, never markup:
    they come from servers."""
    cells = {
        "started": Text(local_time(record.startedAt)),
        "server": Text(record.server),
        "started by": started_by_text(record.startedBy),
        "result": result_text(record.phase),
        "size": Text(human_size(record.bytesTotal)),
        "files": Text(human_count(record.filesTotal)),
        "time": Text(human_duration(record.duration)),
        "avg rate": Text(human_rate(record.averageRate)),
        "from → to": Text(f"{record.source} → {record.destination}"),
    }
    for name in LOG_NUMBER_COLUMNS:
        cells[name].justify = "right"
    return cells


def started_by_text(started_by: str | None) -> Text:
    """`here` for a move started from this machine, else its USER@HOST; `—` when not known (an
    entry older than the journal's record of it)."""
    if started_by is None:
        return Text("—")
    if started_by == this_machine():
        return Text(STARTED_HERE)
    return Text(started_by, style="italic")


def log_header(name: str) -> Text:
    """A moves-log column's heading, aligned like its cells."""
    return Text(name, justify="right" if name in LOG_NUMBER_COLUMNS else "left")
