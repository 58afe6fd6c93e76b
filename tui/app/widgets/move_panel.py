"""The live view of one move: bytes and files bars, the current file, rate, ETA and elapsed
time; and, once it ends, a panel that says in plain words what happened and where the data is."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.clock import Clock
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Label, ProgressBar, Static

from tui.app.widgets.path_label import PathLabel
from tui.app.widgets.phase_indicator import PhaseIndicator
from tui.core.fleet import MoveState, ServerMove
from tui.core.formatting import (
    human_duration,
    human_eta,
    human_rate,
    of_total,
)
from tui.core.progress import MoveProgress
from tui.core.protocol import Phase
from tui.core.wording import (
    bar_counts,
    bar_label,
    kept_old_sentence,
    moved_figures,
    service_failure_lines,
    service_status,
    service_where,
    stopped_while,
)

DOWN_CLOCK_TICK_S = 0.1  # the downtime clock's refresh between two events


def stats_line(progress: MoveProgress) -> str:
    if progress.finished:
        return f"took {human_duration(progress.elapsed)}"
    if progress.link_lost:
        return (f"connection lost — reconnecting  ·  the move goes on on the server  ·  "
                f"elapsed {human_duration(progress.elapsed)}")
    return (f"{human_rate(progress.rate)}  ·  ETA {human_eta(progress.eta)}"
            f"  ·  elapsed {human_duration(progress.elapsed)}")


class MoveProgressPanel(Vertical):
    """Bars and figures for a move in progress."""

    bytes_done: reactive[int] = reactive(0)
    bytes_total: reactive[int] = reactive(1)
    files_done: reactive[int] = reactive(0)
    files_total: reactive[int] = reactive(1)

    def __init__(self, *, clock: Callable[[], float] = time.time, id: str | None = None) -> None:
        super().__init__(id=id)
        # The bars' own clock follows the app's, so a snapshot with a fixed clock is stable.
        self._clock = Clock(get_time=clock)
        self._progress: MoveProgress | None = None

    def on_mount(self) -> None:
        # The mover may say nothing for seconds while the service stops or starts: the downtime
        # clock ticks on between its events.
        self.set_interval(DOWN_CLOCK_TICK_S, self._tick_down_clock)

    def compose(self) -> ComposeResult:
        yield PhaseIndicator(id="phases")
        with Horizontal(classes="bar-row"):
            yield Label("Copied", id="bytes-label", classes="bar-label")
            yield ProgressBar(show_eta=False, clock=self._clock, id="bytes-bar").data_bind(
                total=MoveProgressPanel.bytes_total, progress=MoveProgressPanel.bytes_done)
            yield Label("", id="bytes-text", classes="bar-text", markup=False)
        with Horizontal(classes="bar-row"):
            yield Label("Files", classes="bar-label")
            yield ProgressBar(show_eta=False, clock=self._clock, id="files-bar").data_bind(
                total=MoveProgressPanel.files_total, progress=MoveProgressPanel.files_done)
            yield Label("", id="files-text", classes="bar-text", markup=False)
        yield PathLabel("Now: ", placeholder="", id="current-file")
        yield Label("", id="stats", markup=False)
        yield Label("", id="service-status", markup=False)

    def show(self, progress: MoveProgress) -> None:
        bytes_done, bytes_total, files_done, files_total = bar_counts(progress)
        # An empty tree has nothing to count: a full bar once done, an empty one before.
        self.bytes_total = bytes_total or 1
        self.bytes_done = bytes_done if bytes_total else int(progress.fraction)
        self.files_total = files_total or 1
        self.files_done = files_done if files_total else int(progress.fraction)
        self.query_one("#bytes-label", Label).update(bar_label(progress))
        self.query_one("#bytes-text", Label).update(of_total(bytes_done, bytes_total, sizes=True))
        self.query_one("#files-text", Label).update(
            of_total(files_done, files_total, sizes=False) + " files")
        self.query_one("#current-file", PathLabel).path = (
            None if progress.finished else progress.current_file)
        self.query_one("#stats", Label).update(stats_line(progress))
        self.query_one(PhaseIndicator).progress = progress
        self._progress = progress
        self._show_service(progress)

    def _show_service(self, progress: MoveProgress) -> None:
        status = service_status(progress)
        label = self.query_one("#service-status", Label)
        label.display = status is not None
        if status is not None:
            label.update(status[0])
            if status[1] and not label.has_class("-down"):
                # The service just stopped: its clock in sight, also on a small terminal.
                self.call_after_refresh(label.scroll_visible, animate=False)
            label.set_class(status[1], "-down")

    def _tick_down_clock(self) -> None:
        if self._progress is not None and self._progress.down_since is not None:
            self._show_service(self._progress)


OUTCOME_CLASSES = ("-complete", "-error", "-cancelled", "-lost")


def outcome_text(move: ServerMove) -> tuple[str, list[str], str]:
    """(title, lines, css class) saying what happened to a move that ended, in plain words."""
    progress = move.progress
    if move.state is MoveState.FAILED_TO_START:
        return ("Could not start the move",
                [move.problem or "", "Nothing was changed on the server."], "-error")
    if move.state is MoveState.CONNECTION_LOST:
        return ("Connection lost",
                [move.problem or "",
                 "The move goes on on the server, which keeps its journal: servermove picks it "
                 f"up when you open it again, or follow it with: servermove attach "
                 f"{move.server.name}"], "-lost")
    runs_from = service_where(progress)  # a service move's: where it runs, how long it was down
    if progress.phase is Phase.COMPLETE and progress.uncounted_rename:
        return ("Move complete",
                [progress.outcome(), f"The data is now at {move.new_path}; the inventory says "
                 "so too."], "-complete")
    if progress.phase is Phase.COMPLETE:
        size, files, took, average = moved_figures(progress)
        return ("Move complete",
                [f"Moved {size} in {files} files in {took}"
                 + (f" (average {average})." if average else "."),
                 *([runs_from] if runs_from else []),
                 f"The data is now at {move.new_path}; the inventory says so too.",
                 *filter(None, [kept_old_sentence(progress)])], "-complete")
    lines: list[str] = []
    where = stopped_while(progress)
    if progress.phase is Phase.CANCELLED:
        title, css = f"Move cancelled while {where}", "-cancelled"
        lines.append("The move was cancelled at your request.")
    elif progress.phase is Phase.ERROR:
        title, css = f"Move failed while {where}", "-error"
        lines.extend(service_failure_lines(progress)
                     or [progress.error or "The mover reported an error without details."])
    else:
        title, css = "The mover stopped without a result", "-error"
        lines.append(move.problem or "")
    if progress.data_state is not None:
        lines.append(f"Data: {progress.data_state.explain()}.")
    else:
        lines.append("The mover did not say where the data is: check both paths.")
    lines.extend(f"Warning: {warning}" for warning in progress.warnings[-3:])
    return title, lines, css


class OutcomePanel(Static):
    """What happened, once a move has ended. Hidden while there is nothing to say."""

    def show(self, move: ServerMove | None) -> None:
        finished = move is not None and not move.active
        self.display = finished
        self.remove_class(*OUTCOME_CLASSES)
        if not finished:
            return
        title, lines, css = outcome_text(move)
        self.add_class(css)
        self.border_title = title
        # Paths and errors come from the server: plain text, never markup.
        self.update(Text("\n".join(line for line in lines if line)))
