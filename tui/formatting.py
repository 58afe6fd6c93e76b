"""Human-readable numbers, shared by the TUI and the CLI so both say "1.2 GB" the same way.

Sizes are decimal (kB = 1000 bytes) like rich's `filesize.decimal`, df -H and most file managers.
Headless: no Textual.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from rich.filesize import decimal
from rich.text import Text

if TYPE_CHECKING:
    from tui.history import MoveRecord
    from tui.protocol import PlanEvent


def human_size(num_bytes: int | float | None) -> str:
    """`1234567` → `1.2 MB`; None (unknown) → an em dash."""
    if num_bytes is None:
        return "—"
    return decimal(int(num_bytes), precision=1)


def human_rate(bytes_per_second: float | None) -> str:
    """`1.5e6` → `1.5 MB/s`; None (not measured yet) → an em dash."""
    if bytes_per_second is None:
        return "—"
    return f"{human_size(bytes_per_second)}/s"


def human_duration(seconds: float | None) -> str:
    """A duration as a clock reading: `0:07`, `12:34`, `1:02:03`; None → an em dash."""
    if seconds is None:
        return "—"
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def human_eta(seconds: float | None) -> str:
    """Time left, rounded so it does not flicker: `about 5 s`, `about 3 min`; None → `—`."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"about {max(1, round(seconds))} s"
    if seconds < 60:
        # Steps of 5 s: a countdown that ticks every second looks busy and promises too much.
        return f"about {round(seconds / 5) * 5} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    hours, rest = divmod(round(seconds / 60), 60)
    return f"about {hours} h {rest:02d} min"


def human_count(count: int) -> str:
    """`12345` → `12,345`."""
    return f"{count:,}"


def of_total(done: int, total: int, *, sizes: bool) -> str:
    """`X of Y` for a progress line, in human sizes or counts."""
    fmt = human_size if sizes else human_count
    return f"{fmt(done)} of {fmt(total)}"


# -- the moves log: one set of cells for `servermove log` and the TUI's Moves Log -------------

FINISHED_RESULTS = ("complete", "error", "cancelled")
RESULT_STYLES = {"complete": "green", "error": "red", "cancelled": "yellow"}
# The route last: it is the one long column, so it takes (or folds into) what width is left.
LOG_COLUMNS = ("started", "server", "started by", "result", "size", "files", "time", "avg rate",
               "from → to")
STARTED_HERE = "here"  # a move started from this machine, in the `started by` column
LOG_NUMBER_COLUMNS = frozenset({"size", "files", "time", "avg rate"})  # right-aligned
# Left out in this order, least useful first, when the route would be too narrow otherwise.
LOG_DROPPABLE_COLUMNS = ("avg rate", "files", "started by", "size", "time")


def parse_iso(iso: str | None) -> datetime | None:
    """An ISO 8601 time as the moves log writes it (`2026-03-01T13:02:11.250Z`); None stays None."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")) if iso else None


def local_time(iso: str | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """An ISO 8601 UTC time from the moves log, in this machine's time zone; None → `—`."""
    moment = parse_iso(iso)
    return moment.astimezone().strftime(fmt) if moment else "—"


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
    from tui.history import this_machine

    if started_by is None:
        return Text("—")
    if started_by == this_machine():
        return Text(STARTED_HERE)
    return Text(started_by, style="italic")


def fit_log_columns(widths: dict[str, int], room: int, route_wanted: int,
                    keep: str | None = None) -> list[str]:
    """The LOG_COLUMNS to show when `room` cells hold every column but the route, each as wide
    as `widths` says: the droppable ones are left out until the route has `route_wanted` cells
    (never `keep`, the column the rows are sorted by)."""
    columns = list(LOG_COLUMNS)
    for name in LOG_DROPPABLE_COLUMNS:
        if room - sum(widths[c] for c in columns if c in widths) >= route_wanted:
            break
        if name != keep:
            columns.remove(name)
    return columns


def log_header(name: str) -> Text:
    """A moves-log column's heading, aligned like its cells."""
    return Text(name, justify="right" if name in LOG_NUMBER_COLUMNS else "left")


def open_files_sentences(plan: PlanEvent) -> list[str]:
    """What the mover's check for programs using the source found, as sentences without a final
    period ([] from a mover without the check). A program writing there refuses the move, so a
    plan only ever reports readers."""
    if plan.open_files_check is None:
        return []
    if plan.open_files_check == "own processes only":
        scope = "only this user's own programs were checked: run as root to check all"
    elif plan.open_files_unchecked:
        scope = (f"all programs were checked but {plan.open_files_unchecked:,} that could not be "
                 "inspected")
    else:
        scope = "all programs were checked"
    sentences = [f"No program writes in the source ({scope})"]
    readers = plan.source_readers
    if readers:
        named = ", ".join(f"pid {r.pid} ({r.command}) {r.path}" for r in readers[:3])
        if len(readers) > 3:
            named += f" and {len(readers) - 3:,} more"
        them = "it" if len(readers) == 1 else "them"
        sentences.append(f"Reading from it: {named} — restart {them} after the move")
    return sentences
