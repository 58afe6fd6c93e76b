"""The mover's JSON-lines protocol: event types and the one parser the CLI and the TUI share.

The wire format is written down in docs/protocol.md. The rule that keeps old clients and new movers
(and the other way round) working: a reader ignores subjects and fields it does not know, and a line
it cannot read becomes a `MalformedLine` the caller may warn about. Nothing here raises on input.

This module is headless: it must never import Textual.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

PROTOCOL_VERSION = 1


class Phase(StrEnum):
    CALCULATING = "calculating"
    SYNCING = "syncing"  # a service move's phases: live passes, then the service's own steps
    STOPPING = "stopping"
    COPYING = "copying"
    VERIFYING = "verifying"
    SWITCHING = "switching"
    STARTING = "starting"
    CHECKING = "checking"
    CLEANING = "cleaning"
    COMPLETE = "complete"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_PHASES


# The order a successful move walks through; error and cancelled can happen at any step.
PHASE_ORDER: tuple[Phase, ...] = (Phase.CALCULATING, Phase.COPYING, Phase.VERIFYING,
                                  Phase.CLEANING, Phase.COMPLETE)
# The order a successful service move walks through (`--service`): copy while the service runs,
# stop it, copy the final delta, switch, start and check it, then remove the old copy.
SERVICE_PHASE_ORDER: tuple[Phase, ...] = (
    Phase.CALCULATING, Phase.SYNCING, Phase.STOPPING, Phase.COPYING, Phase.VERIFYING,
    Phase.SWITCHING, Phase.STARTING, Phase.CHECKING, Phase.CLEANING, Phase.COMPLETE)
# The phases a move ends in, in the order the moves log lists results; the mover's own list is
# checked against this one (tests/test_protocol.py).
TERMINAL_PHASES: tuple[Phase, ...] = (Phase.COMPLETE, Phase.ERROR, Phase.CANCELLED)


class DataState(StrEnum):
    """Where the whole data is when a move ends: the answer an admin needs first after a failure."""

    SOURCE = "source"            # source untouched; nothing left at the destination
    DESTINATION = "destination"  # destination complete and verified; source removed (or partly)
    BOTH = "both"                # destination complete and verified; source still whole

    def explain(self) -> str:
        return {
            DataState.SOURCE: "source untouched; nothing was written at the destination",
            DataState.DESTINATION: "the destination is complete and verified",
            DataState.BOTH: ("the destination is complete and verified and the source is "
                             "still whole"),
        }[self]


@dataclass(frozen=True, slots=True)
class HelloEvent:
    """`mover.hello`: the first line a mover prints; anything before it is login noise."""

    version: int
    python: str
    pid: int | None


@dataclass(frozen=True, slots=True)
class SourceReader:
    """A program that had a file under the source open for reading (`openFilesReaders`)."""

    pid: int
    command: str
    path: str


class ServiceRunsFrom(StrEnum):
    """Where a service move's service runs when the move ends (`serviceRunsFrom`)."""

    DESTINATION = "destination"  # moved: it runs on the new copy
    SOURCE = "source"            # never stopped, or put back on the old copy
    NOWHERE = "nowhere"          # it could not be started again on either copy


@dataclass(frozen=True, slots=True)
class CutoverChange:
    """One thing a service move's cutover changes: a sentence (`change`, for a symlink), or one
    line of a config file, before and after."""

    change: str | None = None
    file: str | None = None
    line: int | None = None
    before: str | None = None
    after: str | None = None


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """`move.plan`'s `service`: the steps of a service move as the admin wrote them."""

    stop: str
    start: str
    check: str
    cutover: str = "none"  # "none", "symlink" or "config:FILE"
    cutover_changes: tuple[CutoverChange, ...] = ()
    max_downtime_seconds: float | None = None

    @property
    def config_file(self) -> str | None:
        """FILE of a `config:FILE` cutover; None for the others."""
        kind, _, path = self.cutover.partition(":")
        return path or None if kind == "config" else None


@dataclass(frozen=True, slots=True)
class PlanEvent:
    """`move.plan`: what the mover is about to do (or, with --dry-run, would do)."""

    server_name: str
    src: str
    dst: str
    method: str  # "rename" (same filesystem) or "copy"
    bytes_total: int
    files_total: int
    dirs_total: int
    verify: str
    dry_run: bool
    dst_free_bytes: int | None = None
    dst_free_inodes: int | None = None
    src_free_bytes: int | None = None
    bwlimit: int | None = None
    move_id: str | None = None
    seq: int | None = None
    counted: bool = True  # False: a rename, done without walking the tree (totals are 0)
    # Which programs the open-files check could see: "all processes" or "own processes only";
    # None from a mover without the check.
    open_files_check: str | None = None
    open_files_unchecked: int = 0  # processes it could not inspect
    source_readers: tuple[SourceReader, ...] = ()
    created_parents: tuple[str, ...] = ()  # DST's missing parents the move makes
    bytes_needed: int | None = None  # space the copy takes (allocated blocks: sparse files)
    resumes: str | None = None  # the id of a move cut short that this one takes over
    finishes: bool = False  # True: only that move's cleaning was left, and this move does it
    service: ServicePlan | None = None  # only for a service move (`--service`)
    keep_old_seconds: float | None = None  # `--keep-old`: the old copy is kept, not removed

    @property
    def space_needed(self) -> int:
        """What the copy takes at the destination: older movers only give the file sizes."""
        return self.bytes_needed if self.bytes_needed is not None else self.bytes_total


@dataclass(slots=True)
class ProgressEvent:
    """`move.progress`: the seed's message, plus optional fields newer movers add.

    Read-only by convention, not `frozen`: a frozen dataclass sets each field through
    object.__setattr__, which made building one several times slower, a large share of what the
    client may spend on a line (docs/performance.md, bench.py's parse rate)."""

    server_name: str
    phase: Phase
    bytes_total: int
    bytes_copied: int
    files_total: int
    files_copied: int
    current_file: str | None = None
    error: str | None = None
    move_id: str | None = None
    seq: int | None = None
    ts: float | None = None
    bytes_verified: int = 0
    files_verified: int = 0
    data_state: DataState | None = None
    method: str | None = None
    bytes_reused: int = 0  # of bytes_copied: taken over from a move cut short, not copied again
    # A service move's (None from any other move, and from a mover without service moves):
    pass_number: int | None = None  # `pass`: the live pass while syncing, then the final one
    forecast_downtime: float | None = None  # `forecastDowntimeSeconds`, after each live pass
    down_since: float | None = None  # `downSince`: Unix time the stop began, while it is down
    downtime: float | None = None  # `downtimeSeconds`, on the terminal event
    service_runs_from: ServiceRunsFrom | None = None  # `serviceRunsFrom`, on the terminal event
    # keep_old's (on the terminal event of a move that kept the old copy aside):
    old_copy_path: str | None = None  # `oldCopyPath`: where it is kept, read-only
    old_copy_due_at: float | None = None  # `oldCopyDueAt`: Unix time it may be removed from


@dataclass(frozen=True, slots=True)
class WarningEvent:
    """`move.warning`: something the mover could not do that does not stop the move."""

    message: str
    path: str | None = None
    move_id: str | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class FsStatEvent:
    """`fs.stat` (from `mover.py statfs`): the filesystem that holds a path, or its nearest
    existing ancestor when the path does not exist yet."""

    path: str
    exists: bool
    free_bytes: int | None = None
    total_bytes: int | None = None
    free_inodes: int | None = None
    mount_point: str | None = None
    device: str | None = None
    fs_type: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceCheckEvent:
    """`service.check` (from `mover.py check-service`): the service's check, run once."""

    passed: bool
    checked_at: float | None = None  # the server's Unix time the check began
    check: str = ""  # the command, as the admin wrote it
    result: str = ""  # "passed", or how it failed in one line


@dataclass(frozen=True, slots=True)
class StartedEvent:
    """`move.started` (from `mover.py start`): a detached move is running under this id."""

    move_id: str
    journal: str | None = None


@dataclass(frozen=True, slots=True)
class ListedEvent:
    """`move.listed` (from `mover.py list`): one move in the server's journal, newest first."""

    move_id: str
    server_name: str
    src: str
    dst: str
    phase: Phase
    bytes_total: int = 0
    bytes_copied: int = 0
    files_total: int = 0
    files_copied: int = 0
    verify: str = "checksum"
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    data_state: DataState | None = None
    alive: bool = False
    method: str | None = None
    timeline: tuple[dict[str, Any], ...] = ()
    started_by: str | None = None  # USER@HOST of the client that started it, when it said
    # A service move's (None for any other move):
    cutover: str | None = None
    passes: int | None = None
    downtime: float | None = None
    service_runs_from: ServiceRunsFrom | None = None


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """Not from the mover: the client's own news that the link to the server went or came back.

    The move itself goes on on the server either way."""

    lost: bool
    message: str
    seq: None = None
    move_id: None = None


@dataclass(frozen=True, slots=True)
class MalformedLine:
    """A line that is not a protocol event: login banners, shell noise, a truncated write."""

    line: str
    reason: str


@dataclass(frozen=True, slots=True)
class KeptCopyEvent:
    """`kept.copy` (from `mover.py clean-kept`, and before a move): one old copy kept aside by
    keep_old, and what was done with it."""

    path: str
    action: str  # "kept", "removed", "would remove", "gone", "left" or "failed"
    due_at: float | None = None
    kept_at: float | None = None
    src: str = ""
    move_id: str | None = None
    size: int | None = None  # `bytes` of its files, None when it could not be read
    files: int | None = None
    why: str | None = None  # for "left" and "failed"


Event = (HelloEvent | PlanEvent | ProgressEvent | WarningEvent | FsStatEvent | StartedEvent
         | ListedEvent | LinkEvent | ServiceCheckEvent | KeptCopyEvent)


# The parser is on the hot path of every progress line (the client must take well over 50,000
# a second): plain dict look-ups instead of Enum(value) calls, `type(x) is int` (which also keeps
# out bools) instead of isinstance chains.
_PHASES = {phase.value: phase for phase in Phase}
_DATA_STATES = {state.value: state for state in DataState}
_RUNS_FROM = {where.value: where for where in ServiceRunsFrom}


def _int(data: dict[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key, default)
    if type(value) is not int:
        raise ValueError(f"{key} is not an integer")
    return value


def _opt_int(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None or type(value) is int:
        return value
    raise ValueError(f"{key} is not an integer")


def _text(value: Any) -> str | None:
    return value if value is None or type(value) is str else str(value)


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    return _text(data.get(key))


def _data_state(value: Any) -> DataState | None:
    return _DATA_STATES.get(value) if isinstance(value, str) else None


_PROGRESS_COUNTERS = ("bytesTotal", "bytesCopied", "filesTotal", "filesCopied", "bytesVerified",
                      "filesVerified", "bytesReused")


def _progress(data: dict[str, Any]) -> ProgressEvent:
    # Nearly every line is one of these, so it is built without a helper call per field: all the
    # counters are checked in one expression, and only a bad line pays to find which was wrong.
    get = data.get
    bytes_total, bytes_copied = get("bytesTotal", 0), get("bytesCopied", 0)
    files_total, files_copied = get("filesTotal", 0), get("filesCopied", 0)
    bytes_verified, files_verified = get("bytesVerified", 0), get("filesVerified", 0)
    bytes_reused = get("bytesReused", 0)
    seq = get("seq")
    if not (type(bytes_total) is type(bytes_copied) is type(files_total) is type(files_copied)
            is type(bytes_verified) is type(files_verified) is type(bytes_reused) is int
            and (seq is None or type(seq) is int)):
        for key in _PROGRESS_COUNTERS:
            _int(data, key)
        _opt_int(data, "seq")
    ts = get("ts")
    return ProgressEvent(
        server_name=_text(get("serverName", "")) or "",
        phase=_PHASES[data["phase"]],
        bytes_total=bytes_total,
        bytes_copied=bytes_copied,
        files_total=files_total,
        files_copied=files_copied,
        current_file=_text(get("currentFile")),
        error=_text(get("error")),
        move_id=_text(get("moveId")),
        seq=seq,
        ts=float(ts) if type(ts) is float or type(ts) is int else None,
        bytes_verified=bytes_verified,
        files_verified=files_verified,
        data_state=_data_state(get("dataState")),
        method=_text(get("method")),
        bytes_reused=bytes_reused,
        **(_service_progress(data) if "pass" in data or "downSince" in data
           or "serviceRunsFrom" in data else {}),
        **(_kept_old(data) if "oldCopyPath" in data else {}),
    )


def _kept_old(data: dict[str, Any]) -> dict[str, Any]:
    """keep_old's fields of a terminal event; a value of the wrong type is left out."""
    return {"old_copy_path": _text(data.get("oldCopyPath")),
            "old_copy_due_at": _opt_float(data, "oldCopyDueAt")}


def _service_progress(data: dict[str, Any]) -> dict[str, Any]:
    """A service move's progress fields; a value of the wrong type is left out, not fatal."""
    number = data.get("pass")
    return {"pass_number": number if type(number) is int else None,
            "forecast_downtime": _opt_float(data, "forecastDowntimeSeconds"),
            "down_since": _opt_float(data, "downSince"),
            "downtime": _opt_float(data, "downtimeSeconds"),
            "service_runs_from": _runs_from(data.get("serviceRunsFrom"))}


def _runs_from(value: Any) -> ServiceRunsFrom | None:
    return _RUNS_FROM.get(value) if isinstance(value, str) else None


def _service_plan(value: Any) -> ServicePlan | None:
    if not isinstance(value, dict):
        return None
    changes = tuple(
        CutoverChange(change=_text(c.get("change")), file=_text(c.get("file")),
                      line=c["line"] if type(c.get("line")) is int else None,
                      before=_text(c.get("before")), after=_text(c.get("after")))
        for c in value.get("cutoverChanges") or () if isinstance(c, dict))
    return ServicePlan(stop=_command_text(value.get("stop")),
                       start=_command_text(value.get("start")),
                       check=_command_text(value.get("check")),
                       cutover=str(value.get("cutover") or "none"), cutover_changes=changes,
                       max_downtime_seconds=_opt_float(value, "maxDowntimeSeconds"))


def _command_text(value: Any) -> str:
    """A command as the admin wrote it: the mover sends text; an argv list is shown joined."""
    if isinstance(value, list):
        return " ".join(str(word) for word in value)
    return "" if value is None else str(value)


def _plan(data: dict[str, Any]) -> PlanEvent:
    return PlanEvent(
        server_name=str(data.get("serverName", "")),
        src=str(data["src"]),
        dst=str(data["dst"]),
        method=str(data["method"]),
        bytes_total=_int(data, "bytesTotal"),
        files_total=_int(data, "filesTotal"),
        dirs_total=_int(data, "dirsTotal"),
        verify=str(data.get("verify", "checksum")),
        dry_run=bool(data.get("dryRun", False)),
        dst_free_bytes=_opt_int(data, "dstFreeBytes"),
        dst_free_inodes=_opt_int(data, "dstFreeInodes"),
        src_free_bytes=_opt_int(data, "srcFreeBytes"),
        bwlimit=_opt_int(data, "bwlimit"),
        move_id=_opt_str(data, "moveId"),
        seq=_opt_int(data, "seq"),
        counted=data.get("counted") is not False,
        open_files_check=_opt_str(data, "openFilesCheck"),
        open_files_unchecked=_opt_int(data, "openFilesUnchecked") or 0,
        source_readers=tuple(SourceReader(pid=r["pid"], command=str(r.get("command", "")),
                                          path=str(r.get("path", "")))
                             for r in data.get("openFilesReaders") or ()
                             if isinstance(r, dict) and type(r.get("pid")) is int),
        created_parents=tuple(str(p) for p in data.get("createdParents") or ()
                              if isinstance(p, str)),
        bytes_needed=_opt_int(data, "bytesNeeded"),
        **_resumes(data.get("resumes")),
        service=_service_plan(data.get("service")),
        keep_old_seconds=_opt_float(data, "keepOldSeconds"),
    )


def _resumes(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {}
    return {"resumes": _text(value.get("moveId")), "finishes": value.get("finishes") is True}


def _hello(data: dict[str, Any]) -> HelloEvent:
    return HelloEvent(version=_int(data, "version", PROTOCOL_VERSION),
                      python=str(data.get("python", "")), pid=_opt_int(data, "pid"))


def _warning(data: dict[str, Any]) -> WarningEvent:
    return WarningEvent(message=str(data["message"]), path=_opt_str(data, "path"),
                        move_id=_opt_str(data, "moveId"), seq=_opt_int(data, "seq"))


def _fs_stat(data: dict[str, Any]) -> FsStatEvent:
    return FsStatEvent(
        path=str(data["path"]), exists=bool(data.get("exists")),
        free_bytes=_opt_int(data, "freeBytes"), total_bytes=_opt_int(data, "totalBytes"),
        free_inodes=_opt_int(data, "freeInodes"), mount_point=_opt_str(data, "mountPoint"),
        device=_opt_str(data, "device"), fs_type=_opt_str(data, "fsType"),
        error=_opt_str(data, "error"))


def _service_check(data: dict[str, Any]) -> ServiceCheckEvent:
    return ServiceCheckEvent(passed=data["passed"] is True,
                             checked_at=_opt_float(data, "checkedAt"),
                             check=str(data.get("check", "")), result=str(data.get("result", "")))


def _started(data: dict[str, Any]) -> StartedEvent:
    return StartedEvent(move_id=str(data["moveId"]), journal=_opt_str(data, "journal"))


def _opt_float(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _listed(data: dict[str, Any]) -> ListedEvent:
    timeline = data.get("timeline") or []
    return ListedEvent(
        move_id=str(data["moveId"]), server_name=str(data.get("serverName", "")),
        src=str(data.get("src", "")), dst=str(data.get("dst", "")), phase=_PHASES[data["phase"]],
        bytes_total=_int(data, "bytesTotal"), bytes_copied=_int(data, "bytesCopied"),
        files_total=_int(data, "filesTotal"), files_copied=_int(data, "filesCopied"),
        verify=str(data.get("verify", "checksum")), started_at=_opt_float(data, "startedAt"),
        finished_at=_opt_float(data, "finishedAt"), error=_opt_str(data, "error"),
        data_state=_data_state(data.get("dataState")), alive=bool(data.get("alive")),
        method=_opt_str(data, "method"),
        timeline=tuple(entry for entry in timeline if isinstance(entry, dict)),
        started_by=_opt_str(data, "startedBy"), cutover=_opt_str(data, "cutover"),
        passes=data["passes"] if type(data.get("passes")) is int else None,
        downtime=_opt_float(data, "downtimeSeconds"),
        service_runs_from=_runs_from(data.get("serviceRunsFrom")))


def _kept_copy(data: dict[str, Any]) -> KeptCopyEvent:
    return KeptCopyEvent(path=str(data["path"]), action=str(data["action"]),
                         due_at=_opt_float(data, "dueAt"), kept_at=_opt_float(data, "keptAt"),
                         src=str(data.get("src", "")), move_id=_opt_str(data, "moveId"),
                         size=_opt_int(data, "bytes"), files=_opt_int(data, "files"),
                         why=_opt_str(data, "why"))


_DECODERS = {
    "kept.copy": _kept_copy,
    "move.started": _started,
    "move.listed": _listed,
    "fs.stat": _fs_stat,
    "service.check": _service_check,
    "move.progress": _progress,
    "move.plan": _plan,
    "move.warning": _warning,
    "mover.hello": _hello,
}


def parse_line(line: str | bytes) -> Event | MalformedLine | None:
    """Turn one line of mover output into an event.

    Returns None for blank lines and for well-formed messages of a subject this client does not
    know (newer movers may send more); a `MalformedLine` for anything else that is not an event.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    text = line.strip()
    if not text:
        return None
    if not text.startswith("{"):
        return MalformedLine(text, "not a JSON object")
    try:
        message = json.loads(text)
    except ValueError as exc:
        return MalformedLine(text, f"invalid JSON: {exc}")
    if not isinstance(message, dict) or not isinstance(message.get("subject"), str):
        return MalformedLine(text, "no subject")
    decoder = _DECODERS.get(message["subject"])
    if decoder is None:
        return None
    data = message.get("data")
    if not isinstance(data, dict):
        return MalformedLine(text, "no data object")
    try:
        return decoder(data)
    except (KeyError, ValueError, TypeError) as exc:
        return MalformedLine(text, f"bad {message['subject']} message: {exc}")


def display_path(path: str, width: int | None = None) -> str:
    """A remote path made safe to show: undecodable bytes and control characters escaped, and
    ellipsised in the middle to `width` so the start (the directory) and the end (the file name)
    both stay visible."""
    # The mover sends non-UTF-8 names as lone surrogates (Python's surrogateescape).
    raw = path.encode("utf-8", "surrogateescape")
    text = raw.decode("utf-8", "backslashreplace")
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)
    if width is not None and len(text) > width:
        if width <= 1:
            return "…"[:width]
        keep = width - 1
        head = keep // 2
        tail = keep - head
        text = text[:head] + "…" + text[len(text) - tail:]
    return text
