"""Human-readable numbers, shared by the TUI and the CLI so both say "1.2 GB" the same way.

Sizes are decimal (kB = 1000 bytes) like rich's `filesize.decimal`, df -H and most file managers.
Headless: no Textual.
"""

from __future__ import annotations

from rich.filesize import decimal


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
