"""Human-readable numbers, shared by the TUI and the CLI so both say "1.2 GB" the same way.

Sizes are decimal (kB = 1000 bytes) like rich's `filesize.decimal`, df -H and most file managers.
The styled cells of the moves log (rich `Text`) are in `tui.app.log_table`.
"""

from __future__ import annotations

from datetime import datetime

from tui.core.protocol import TERMINAL_PHASES

DECIMAL_UNITS = ("kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def human_size(num_bytes: int | float | None) -> str:
    """`1234567` → `1.2 MB`; None (unknown) → an em dash. The same words as rich's
    `filesize.decimal`, written here so the core needs no rich."""
    if num_bytes is None:
        return "—"
    size = int(num_bytes)
    if size == 1:
        return "1 byte"
    if size < 1000:
        return f"{size:,} bytes"
    unit = 1000
    for power, suffix in enumerate(DECIMAL_UNITS, 2):  # noqa: B007 - the last one is kept
        unit = 1000 ** power
        if size < unit:
            break
    return f"{1000 * size / unit:,.1f} {suffix}"


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


def human_seconds(seconds: float | None) -> str:
    """A short span to a tenth of a second (a service's downtime): `2.4 s`; from a minute on, as
    a clock reading (`1:05`); None → an em dash."""
    if seconds is None:
        return "—"
    if seconds < 59.95:
        return f"{max(0.0, seconds):.1f} s"
    return human_duration(seconds)


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


PLURALS = {"directory": "directories", "entry": "entries", "copy": "copies", "pass": "passes"}


def counted(count: int, noun: str) -> str:
    """`1, "file"` → `1 file`; `12345, "directory"` → `12,345 directories`; the last word of
    `noun` takes the plural (`2, "old copy"` → `2 old copies`)."""
    if count != 1:
        head, _, last = noun.rpartition(" ")
        noun = head + _ + PLURALS.get(last, last + "s")
    return f"{human_count(count)} {noun}"


def of_total(done: int, total: int, *, sizes: bool) -> str:
    """`X of Y` for a progress line, in human sizes or counts."""
    fmt = human_size if sizes else human_count
    return f"{fmt(done)} of {fmt(total)}"


# -- the moves log: one set of cells for `servermove log` and the TUI's Moves Log -------------

FINISHED_RESULTS = tuple(phase.value for phase in TERMINAL_PHASES)
# The route last: it is the one long column, so it takes (or folds into) what width is left.
LOG_COLUMNS = ("started", "server", "started by", "result", "size", "files", "time", "avg rate",
               "from → to")
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
