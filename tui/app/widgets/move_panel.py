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
from tui.core.formatting import of_total
from tui.core.progress import MoveProgress
from tui.core.wording import (
    bar_counts,
    bar_label,
    outcome_words,
    service_status,
    stats_line,
)

DOWN_CLOCK_TICK_S = 0.1  # the downtime clock's refresh between two events


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
    """(title, lines, css class) of a move that ended: the words are wording's."""
    title, lines, kind = outcome_words(
        move.progress, server_name=move.server.name, new_path=move.new_path,
        problem=move.problem, start_failed=move.state is MoveState.FAILED_TO_START,
        link_lost=move.state is MoveState.CONNECTION_LOST)
    return title, lines, f"-{kind}"


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
