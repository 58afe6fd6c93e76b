"""The moves log: every move started from this machine (and any merged from servers' journals).

Stored as JSON lines in the user's data dir (`moves.jsonl`). Each line is a whole record of one
move; a later line for the same moveId replaces an earlier one. Appending a line and fsyncing it
is the only write on the hot path, so a client killed at any moment leaves a readable file: at
worst the last line is torn, and a torn line is skipped with a warning while every other entry
survives. When the file holds many superseded lines it is compacted by an atomic rewrite.

Headless: no Textual here.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tui.core import locations
from tui.core.formatting import parse_iso
from tui.core.progress import MoveProgress
from tui.core.protocol import TERMINAL_PHASES, Event, ListedEvent, PlanEvent, ProgressEvent

COMPACT_AFTER_LINES = 2000
Warn = Callable[[str], None]
HERE, ELSEWHERE = "here", "elsewhere"  # the `started by` filters besides a USER@HOST


def this_machine() -> str:
    """USER@HOST of this client, as a move's journal records who started it."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no name for our uid: say the uid
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def started_by_matches(started_by: str | None, wanted: str) -> bool:
    """Whether a move started by `started_by` (None: not known) passes the filter `wanted`."""
    if wanted == HERE:
        return started_by == this_machine()
    if wanted == ELSEWHERE:
        return started_by is not None and started_by != this_machine()
    return started_by == wanted


def iso_utc(timestamp: float | None) -> str | None:
    """To the millisecond, as the mover's `ts`: a time shown as an offset from another (the
    timeline) must round the same way as the duration between them."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _from_iso(text: str | None) -> float | None:
    moment = parse_iso(text)
    return moment.timestamp() if moment else None


@dataclass
class MoveRecord:
    """One move as the log shows it. Field names are the JSON names (`servermove log --json`)."""

    moveId: str
    server: str
    target: str
    source: str
    destination: str
    phase: str
    bytesTotal: int = 0
    bytesCopied: int = 0
    filesTotal: int = 0
    filesCopied: int = 0
    verify: str = "checksum"
    startedAt: str | None = None
    finishedAt: str | None = None
    duration: float | None = None
    averageRate: float | None = None
    error: str | None = None
    dataState: str | None = None
    method: str | None = None
    timeline: list[dict[str, Any]] = field(default_factory=list)
    startedBy: str | None = None  # USER@HOST of the client that started it; None: not known
    # A service move's (None for any other move): seconds the service was down, the number of
    # the last pass, how it was repointed, and where it runs from at the end.
    downtimeSeconds: float | None = None
    passes: int | None = None
    cutover: str | None = None
    serviceRunsFrom: str | None = None

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def started_ts(self) -> float:
        return _from_iso(self.startedAt) or 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MoveRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class MovesLog:
    """The moves log file. Cheap to construct; reads and writes on demand."""

    def __init__(self, path: Path | None = None, *, warn: Warn | None = None) -> None:
        self.path = path or locations.data_dir() / "moves.jsonl"
        self.warn = warn or (lambda message: None)

    def _read_lines(self) -> tuple[dict[str, MoveRecord], int]:
        records: dict[str, MoveRecord] = {}
        count = 0
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return records, 0
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            count += 1
            try:
                record = MoveRecord.from_dict(json.loads(line))
            except (ValueError, TypeError) as exc:
                self.warn(f"{self.path}:{number}: skipped an unreadable entry ({exc})")
                continue
            records[record.moveId] = record
        return records, count

    def records(self, *, server: str | None = None, limit: int | None = None,
                started_by: str | None = None) -> list[MoveRecord]:
        """Newest first. `started_by`: HERE, ELSEWHERE or a USER@HOST."""
        records = sorted(self._read_lines()[0].values(), key=lambda r: r.started_ts,
                         reverse=True)
        if server is not None:
            records = [r for r in records if r.server == server]
        if started_by is not None:
            records = [r for r in records if started_by_matches(r.startedBy, started_by)]
        return records[:limit] if limit is not None else records

    def get(self, move_id: str) -> MoveRecord | None:
        return self._read_lines()[0].get(move_id)

    def save(self, record: MoveRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write of one whole line, then fsync: the line is there or (torn) skipped on read.
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            line = (record.to_json() + "\n").encode("utf-8")
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # after a line torn by a crash: never glue onto it
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._compact_if_large()

    def merge(self, incoming: Iterable[MoveRecord]) -> list[MoveRecord]:
        """Take in records from a server's journal; returns those that were new or changed."""
        known = self._read_lines()[0]
        changed = []
        for record in incoming:
            mine = known.get(record.moveId)
            if mine is None or (not mine.finished and record.finished) or (
                    mine.finished == record.finished and record.timeline != mine.timeline
                    and len(record.timeline) > len(mine.timeline)) or (
                    record.startedBy and not mine.startedBy):
                if mine is not None:
                    record.target = mine.target or record.target
                    record.server = mine.server or record.server
                self.save(record)
                changed.append(record)
        return changed

    def _compact_if_large(self) -> None:
        records, lines = self._read_lines()
        if lines <= COMPACT_AFTER_LINES or lines <= 2 * len(records):
            return
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".moves-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                for record in sorted(records.values(), key=lambda r: r.started_ts):
                    handle.write(record.to_json() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def record_from_listed(listed: ListedEvent, target: str) -> MoveRecord:
    """A server journal's view of a move, as a log entry."""
    duration = (listed.finished_at - listed.started_at
                if listed.finished_at is not None and listed.started_at is not None else None)
    rate = listed.bytes_copied / duration if duration and listed.bytes_copied else None
    timeline = [{"at": iso_utc(entry.get("ts")), "phase": entry.get("phase"),
                 **({"error": entry["error"]} if entry.get("error") else {})}
                for entry in listed.timeline]
    return MoveRecord(
        moveId=listed.move_id, server=listed.server_name or target, target=target,
        source=listed.src, destination=listed.dst, phase=listed.phase.value,
        bytesTotal=listed.bytes_total, bytesCopied=listed.bytes_copied,
        filesTotal=listed.files_total, filesCopied=listed.files_copied, verify=listed.verify,
        startedAt=iso_utc(listed.started_at), finishedAt=iso_utc(listed.finished_at),
        duration=round(duration, 3) if duration is not None else None,
        averageRate=round(rate, 1) if rate else None, error=listed.error,
        dataState=listed.data_state.value if listed.data_state else None, method=listed.method,
        timeline=timeline, startedBy=listed.started_by, downtimeSeconds=listed.downtime,
        passes=listed.passes, cutover=listed.cutover,
        serviceRunsFrom=listed.service_runs_from.value if listed.service_runs_from else None)


class MoveRecorder:
    """Keeps the log entry of one running move up to date from its event stream.

    It writes when the move starts (its plan arrives), on every phase change and error, and when
    it ends — never on plain progress ticks, so a 10-events-a-second stream costs no disk writes.
    """

    def __init__(self, moves_log: MovesLog, *, server: str, target: str, source: str,
                 destination: str, verify: str, clock: Callable[[], float] = time.time,
                 started_by: str | None = None) -> None:
        self.moves_log = moves_log
        self.clock = clock
        self.started_by = started_by  # set once known (the start, or the server's journal)
        self.record: MoveRecord | None = None
        self._base = dict(server=server, target=target, source=source, destination=destination,
                          verify=verify)
        self._last_phase: str | None = None

    def observe(self, event: Event | Any, model: MoveProgress) -> None:
        if isinstance(event, PlanEvent) and event.dry_run:
            return
        if not isinstance(event, PlanEvent | ProgressEvent) or not model.move_id:
            return
        at = event.ts if isinstance(event, ProgressEvent) and event.ts else self.clock()
        if isinstance(event, PlanEvent):
            # The mover's own (absolute, normalised) paths: right even when attaching to a move
            # that another machine started.
            self._base.update(source=event.src, destination=event.dst, verify=event.verify)
        elif self.record is None:
            return  # no plan yet: a move refused at its checks (a typo) is not a move to log
        if self.record is None:
            self.record = MoveRecord(moveId=model.move_id, phase="calculating",
                                     startedAt=iso_utc(model.first_ts or at),
                                     startedBy=self.started_by, **self._base)
            self.record.timeline.append({"at": iso_utc(model.first_ts or at),
                                         "phase": "calculating"})
        phase = model.phase.value if model.phase else "calculating"
        changed = isinstance(event, PlanEvent) or phase != self._last_phase
        if not changed:
            return
        self._last_phase = phase
        self._update(model, at)
        if isinstance(event, ProgressEvent) and self.record.timeline[-1]["phase"] != phase:
            entry: dict[str, Any] = {"at": iso_utc(at), "phase": phase}
            if event.error:
                entry["error"] = event.error
            self.record.timeline.append(entry)
        self.moves_log.save(self.record)

    def _update(self, model: MoveProgress, at: float) -> None:
        assert self.record is not None
        record = self.record
        record.source, record.destination = self._base["source"], self._base["destination"]
        record.verify = self._base["verify"]
        record.phase = model.phase.value if model.phase else record.phase
        record.bytesTotal, record.bytesCopied = model.bytes_total, model.bytes_copied
        record.filesTotal, record.filesCopied = model.files_total, model.files_copied
        record.error = model.error
        record.method = model.method
        record.dataState = model.data_state.value if model.data_state else None
        if model.service_move:
            service = model.plan.service if model.plan else None
            record.cutover = service.cutover if service else record.cutover
            record.passes = model.pass_number or record.passes
            record.downtimeSeconds = model.downtime
            record.serviceRunsFrom = (model.service_runs_from.value if model.service_runs_from
                                      else record.serviceRunsFrom)
        if model.finished:
            record.finishedAt = iso_utc(at)
            record.duration = round(model.elapsed, 3)
            record.averageRate = round(model.average_rate, 1) if model.average_rate else None

    def connection_lost(self, model: MoveProgress, message: str) -> None:
        """Note in the log that we stopped seeing the move (it may go on on the server)."""
        if self.record is None:
            return
        self.record.timeline.append({"at": iso_utc(self.clock()), "phase": "connection-lost",
                                     "error": message})
        self._update(model, self.clock())
        self.moves_log.save(self.record)
