"""MoveProgress: the state of one move, folded from its event stream.

Both the CLI's rich display and the TUI's ServerDetail screen read this model, so what a user sees
(percentages, rate, ETA, elapsed time) is computed in exactly one place. Headless: no Textual.

Timing comes from the mover's `ts` on each event where present, so a replayed stream (attach to
a move that ran while we were away) still yields the true rate and duration, and the laptop's clock
being off from the server's does not matter. The local clock only extends a running move's elapsed
time between two events.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tui.core import wording
from tui.core.protocol import (
    DataState,
    Event,
    LinkEvent,
    MalformedLine,
    Phase,
    PlanEvent,
    ProgressEvent,
    ServiceRunsFrom,
    WarningEvent,
)

RATE_WINDOW_S = 10.0   # throughput is measured over this rolling window
ETA_SMOOTHING_S = 5.0  # time constant of the rate the ETA is based on: steady, yet responsive
# What one file costs, in bytes' worth of copying time, until the move itself shows it: about
# 70 µs a file at 250 MB/s. A tree of many small files is bounded by this per-file cost, not by
# its bytes; the ETA counts both.
FILE_COST_PRIOR_BYTES = 16 * 1024
# Below this share of independent variation, bytes and files moved in lock-step so far (one file
# size, or only big files): the move has not yet shown what a file costs apart from its bytes.
FILE_COST_MIN_INDEPENDENCE = 0.05
FILE_COST_MIN_FILES = 64  # fewer files than this say too little about what a file costs


def _blend(smoothed: float | None, rate: float, weight: float) -> float:
    return rate if smoothed is None else smoothed + (rate - smoothed) * weight


@dataclass
class MoveProgress:
    clock: Callable[[], float] = time.time
    server_name: str = ""
    move_id: str | None = None
    phase: Phase | None = None
    method: str | None = None
    plan: PlanEvent | None = None
    bytes_total: int = 0
    bytes_copied: int = 0
    files_total: int = 0
    files_copied: int = 0
    bytes_verified: int = 0
    files_verified: int = 0
    bytes_reused: int = 0
    current_file: str | None = None
    error: str | None = None
    data_state: DataState | None = None
    # A service move's (see docs/protocol.md, "Service moves"); None for any other move.
    pass_number: int | None = None
    forecast_downtime: float | None = None
    down_since: float | None = None  # the server's Unix time the stop began, while it is down
    downtime: float | None = None  # measured: from the stop to the first passing check
    service_runs_from: ServiceRunsFrom | None = None
    old_copy_path: str | None = None  # keep_old: where the old copy is kept, and until when
    old_copy_due_at: float | None = None
    phases_reached: list[Phase] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    link_lost: bool = False  # the connection dropped; the move goes on on the server
    last_seq: int | None = None
    seq_gaps: int = 0
    duplicates: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    _last_local: float | None = None
    _samples: deque[tuple[float, int, int]] = field(default_factory=deque)
    _smoothed_rate: float | None = None
    _smoothed_at: float | None = None
    # The ETA's own rate, in "work" a second, where work = bytes + file_cost * files.
    _smoothed_work_rate: float | None = None
    _file_cost: float = FILE_COST_PRIOR_BYTES
    # Sums for fitting time = seconds_per_byte * bytes + seconds_per_file * files over the phase.
    _fit: list[float] = field(default_factory=lambda: [0.0] * 6)

    # -- feeding -------------------------------------------------------------------------------

    def apply(self, event: Event | MalformedLine | None) -> bool:
        """Fold one parsed line in. Returns whether anything a user sees changed."""
        if type(event) is ProgressEvent:  # nearly every line: tested first, by exact type
            return self._in_sequence(event) and self._apply_progress(event)
        if isinstance(event, WarningEvent):
            if not self._in_sequence(event):
                return False
            where = f" ({event.path})" if event.path else ""
            self.warnings.append(event.message + where)
            return True
        if isinstance(event, PlanEvent):
            if not self._in_sequence(event):
                return False
            self.plan = event
            self.server_name = event.server_name or self.server_name
            self.method = event.method
            self.bytes_total, self.files_total = event.bytes_total, event.files_total
            return True
        if isinstance(event, MalformedLine):
            self.warnings.append(f"unreadable line from the mover: {event.line[:200]}")
            return True
        if isinstance(event, LinkEvent):
            self.link_lost = event.lost
            return True
        return False  # nothing to show: a blank line, the hello, a stat or a listing

    def _in_sequence(self, event: PlanEvent | ProgressEvent | WarningEvent) -> bool:
        """Whether the event is news (a replayed one is not); counts gaps, keeps the move id."""
        seq = event.seq
        if seq is not None:
            last = self.last_seq
            if last is not None:
                if seq <= last:
                    self.duplicates += 1
                    return False
                if seq > last + 1:
                    self.seq_gaps += 1
            self.last_seq = seq
        if event.move_id:
            self.move_id = event.move_id
        return True

    def _apply_progress(self, event: ProgressEvent) -> bool:
        now = event.ts if event.ts is not None else self.clock()
        self._last_local = self.clock()
        if self.first_ts is None:
            self.first_ts = now
        self.last_ts = now
        new_pass = event.pass_number is not None and event.pass_number != self.pass_number
        if event.phase != self.phase or new_pass:
            if self.phase is not None and (self.phase is not event.phase or new_pass):
                self._samples.clear()
                self._smoothed_rate = self._smoothed_work_rate = None
                self._fit = [0.0] * 6
            self.phase = event.phase
            if event.phase not in self.phases_reached:
                self.phases_reached.append(event.phase)
        self.server_name = event.server_name or self.server_name
        self.method = event.method or self.method
        self.bytes_total, self.files_total = event.bytes_total, event.files_total
        if new_pass:
            # Each pass of a service move counts its copies from 0 again (verified bytes sum up).
            self.pass_number = event.pass_number
            self.bytes_copied = self.files_copied = self.bytes_reused = 0
        self._apply_service(event)
        # Counters never go back on screen, even if a confused stream says so.
        self.bytes_copied = max(self.bytes_copied, event.bytes_copied)
        self.files_copied = max(self.files_copied, event.files_copied)
        self.bytes_verified = max(self.bytes_verified, event.bytes_verified)
        self.files_verified = max(self.files_verified, event.files_verified)
        self.bytes_reused = max(self.bytes_reused, event.bytes_reused)
        self.current_file = event.current_file
        if event.error:
            self.error = event.error
        if event.data_state is not None:
            self.data_state = event.data_state
        self._sample(now)
        return True

    def _apply_service(self, event: ProgressEvent) -> None:
        self.down_since = event.down_since  # set only while the service is down
        if event.forecast_downtime is not None:
            self.forecast_downtime = event.forecast_downtime
        if event.downtime is not None:
            self.downtime = event.downtime
        if event.service_runs_from is not None:
            self.service_runs_from = event.service_runs_from
        if event.old_copy_path is not None:
            self.old_copy_path, self.old_copy_due_at = event.old_copy_path, event.old_copy_due_at

    def _sample(self, now: float) -> None:
        done, files = self.phase_bytes_done, self.phase_files_done
        samples = self._samples
        if samples:
            self._learn_file_cost(now, done, files)
        samples.append((now, done, files))
        while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW_S:
            samples.popleft()
        (t0, b0, f0) = samples[0]
        span = now - t0
        if span < 0.2:
            return  # too short a window to tell a rate
        cost = self.file_cost
        if abs(cost - self._file_cost) > 0.25 * self._file_cost:
            # Work is counted in a new unit now: the old smoothed rate no longer compares.
            self._file_cost, self._smoothed_work_rate = cost, None
        if self._smoothed_rate is None or self._smoothed_at is None:
            weight = 1.0
        else:
            # Exponential smoothing in time, not per event: bursts of events do not shake it.
            weight = min(1.0, max(0.0, now - self._smoothed_at) / ETA_SMOOTHING_S)
        self._smoothed_rate = _blend(self._smoothed_rate, max(0.0, (done - b0) / span), weight)
        work_rate = max(0.0, (done - b0 + self._file_cost * (files - f0)) / span)
        self._smoothed_work_rate = _blend(self._smoothed_work_rate, work_rate, weight)
        self._smoothed_at = now

    def _learn_file_cost(self, now: float, done: int, files: int) -> None:
        last_at, last_done, last_files = self._samples[-1]
        seconds, nbytes, nfiles = now - last_at, done - last_done, files - last_files
        if seconds <= 0 or nbytes < 0 or nfiles < 0 or not (nbytes or nfiles):
            return  # a pause teaches nothing about what a byte or a file costs
        fit = self._fit
        fit[0] += nbytes * nbytes
        fit[1] += nbytes * nfiles
        fit[2] += nfiles * nfiles
        fit[3] += seconds * nbytes
        fit[4] += seconds * nfiles
        fit[5] += nfiles

    @property
    def file_cost(self) -> float:
        """What one file costs in bytes' worth of time, fitted over this phase by least squares
        (time = a * bytes + c * files, so c / a) once bytes and files have varied apart."""
        bb, bf, ff, tb, tf, files = self._fit
        det = bb * ff - bf * bf
        if files < FILE_COST_MIN_FILES or bb <= 0 or det <= FILE_COST_MIN_INDEPENDENCE * bb * ff:
            return self._file_cost
        per_byte = (tb * ff - tf * bf) / det
        per_file = (bb * tf - bf * tb) / det
        if per_file <= 0:
            return self._file_cost  # lost in the noise: keep what we had
        if per_byte <= 0:
            return per_file * bb / max(tb, 1e-12)  # bytes nearly free: a file costs that much
        return per_file / per_byte

    # -- reading -------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.phase is not None and self.phase.is_terminal

    @property
    def failed_phase(self) -> Phase | None:
        """The phase a failed or cancelled move was in when it stopped."""
        if self.phase in (Phase.ERROR, Phase.CANCELLED):
            earlier = [p for p in self.phases_reached if not p.is_terminal]
            return earlier[-1] if earlier else Phase.CALCULATING
        return None

    @property
    def phase_bytes_done(self) -> int:
        if self.phase is Phase.VERIFYING:
            return self.bytes_verified
        # Bytes reused from a move cut short arrive at once: they are no measure of the rate.
        return self.bytes_copied - self.bytes_reused

    @property
    def phase_files_done(self) -> int:
        return self.files_verified if self.phase is Phase.VERIFYING else self.files_copied

    @property
    def fraction(self) -> float:
        """Bytes copied over bytes total, 0..1 (an empty tree is done when it is complete)."""
        if self.bytes_total <= 0:
            return 1.0 if self.phase is Phase.COMPLETE or self.files_copied else 0.0
        return min(1.0, self.bytes_copied / self.bytes_total)

    @property
    def percent(self) -> float:
        return self.fraction * 100.0

    @property
    def verify_fraction(self) -> float:
        if self.bytes_total <= 0:
            return 1.0 if self.phase in (Phase.CLEANING, Phase.COMPLETE) else 0.0
        return min(1.0, self.bytes_verified / self.bytes_total)

    @property
    def window_rate(self) -> float | None:
        """Bytes a second over the last RATE_WINDOW_S of the current phase."""
        if len(self._samples) < 2:
            return None
        (t0, b0, _), (t1, b1, _) = self._samples[0], self._samples[-1]
        if t1 - t0 < 0.2:
            return None
        return max(0.0, (b1 - b0) / (t1 - t0))

    @property
    def rate(self) -> float | None:
        if self.finished:
            return None
        return self._smoothed_rate

    @property
    def eta(self) -> float | None:
        """Seconds left in the copying or verifying phase, or in a service move's live pass
        (its bar is the pass's), or None when it cannot be told.

        Both the bytes and the files left count: each file costs time of its own (open, create,
        metadata) besides its bytes, which is what bounds a move of many small files."""
        if self.phase not in (Phase.COPYING, Phase.VERIFYING, Phase.SYNCING):
            return None
        rate = self._smoothed_work_rate
        if not rate:
            return None
        bytes_left = max(0, self.bytes_total - self.phase_bytes_done)
        files_left = max(0, self.files_total - self.phase_files_done)
        return (bytes_left + self._file_cost * files_left) / rate

    @property
    def elapsed(self) -> float:
        if self.first_ts is None or self.last_ts is None:
            return 0.0
        elapsed = self.last_ts - self.first_ts
        if not self.finished and self._last_local is not None:
            elapsed += max(0.0, self.clock() - self._last_local)
        return elapsed

    @property
    def service_move(self) -> bool:
        """Whether this move moves a running service's data (`--service`)."""
        return (self.plan is not None and self.plan.service is not None) or (
            self.pass_number is not None or Phase.SYNCING in self.phases_reached)

    @property
    def down_for(self) -> float | None:
        """How long the service has been down so far (a clock that ticks between events), or
        None while it runs. In the server's time, as `elapsed`."""
        if self.down_since is None or self.last_ts is None or self.finished:
            return None
        down = self.last_ts - self.down_since
        if self._last_local is not None:
            down += max(0.0, self.clock() - self._last_local)
        return max(0.0, down)

    @property
    def average_rate(self) -> float | None:
        """Bytes a second over the whole move (the summary's figure)."""
        elapsed = self.elapsed
        return self.bytes_copied / elapsed if elapsed > 0 and self.bytes_copied else None

    @property
    def uncounted_rename(self) -> bool:
        """A same-filesystem rename: instant, and not counted (its totals say nothing)."""
        return self.plan is not None and not self.plan.counted

    def outcome(self) -> str:
        """One line in plain words: what happened and where the data is (tui.core.wording)."""
        return wording.outcome(self)
