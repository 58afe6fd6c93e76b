"""Numbers a user reads: exit statuses, the ETA of a move of many small files, durations."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

from tests.cli_support import servermove
from tests.harness import SshServer, free_port
from tui.core.formatting import human_duration, parse_iso
from tui.core.moves_log import MoveRecorder, MovesLog
from tui.core.progress import MoveProgress
from tui.core.protocol import Phase, parse_line

STREAMS = Path(__file__).parent / "streams"


# -- exit statuses, as README and `servermove --help` document them -----------------------------

def test_a_host_that_refuses_the_connection_exits_4(tmp_path):
    port = free_port()  # nothing listens there
    result = servermove("moves", f"127.0.0.1:{port}")
    assert result.returncode == 4, result.stderr
    assert result.stderr.count("\n") == 1 and "cannot reach" in result.stderr


def test_a_host_that_does_not_resolve_exits_4():
    result = servermove("moves", "no-such-host.invalid")
    assert result.returncode == 4, result.stderr
    assert result.stderr.startswith("servermove: no-such-host.invalid: cannot reach")


def test_a_refused_login_exits_2(sshd: SshServer, tmp_path):
    with socket.create_connection(("127.0.0.1", sshd.port), 5):
        pass  # the server is there: it is the login that fails
    config = sshd.write_config(tmp_path / "cfg", user="nobody")
    result = servermove("moves", "--ssh-config", config, sshd.alias)
    assert result.returncode == 2, result.stderr
    assert "authentication failed as 'nobody'" in result.stderr


def test_help_documents_the_exit_statuses():
    text = servermove("--help").stdout
    for line in ("0  ", "1  ", "2  ", "3  ", "4  ", "130"):
        assert line in text, text


# -- the ETA of a move bounded by its files, not its bytes --------------------------------------

def replay(name: str) -> Iterator[tuple[MoveProgress, float, float]]:
    """Feed a recorded stream to a model; after each event in copying: (model, now, true time
    left in copying). The stream: 4 files of 30 MB, then 80,000 files of 512 bytes, moved from
    tmpfs to a disk by the real mover (`servermove move --json local …`)."""
    lines = (STREAMS / name).read_text().splitlines()
    data = [json.loads(line)["data"] for line in lines]
    copy_end = next(d["ts"] for d in data if d.get("phase") == "verifying")
    now = [0.0]
    model = MoveProgress(clock=lambda: now[0])
    for line, fields in zip(lines, data, strict=True):
        now[0] = fields.get("ts", now[0])
        model.apply(parse_line(line))
        if model.phase is Phase.COPYING:
            yield model, now[0], copy_end - now[0]


def test_eta_counts_the_files_left_when_big_files_went_first():
    start = None
    checked = 0
    for model, now, truly_left in replay("many-small-files-after-big-ones.jsonl"):
        start = start if start is not None else now
        if now - start < 0.5 or model.eta is None:
            continue
        # Never a promise of less than half the time it then took.
        assert model.eta >= truly_left / 2, (model.percent, model.files_copied, model.eta,
                                             truly_left)
        if model.files_copied >= 0.38 * model.files_total and checked == 0:
            assert truly_left / 2 <= model.eta <= truly_left * 2
            checked += 1
    assert checked == 1


def test_eta_of_a_tree_of_equal_files_follows_its_bytes():
    now = [0.0]
    model = MoveProgress(clock=lambda: now[0])
    for step in range(1, 60):
        now[0] = step * 0.2
        model.apply(parse_line(json.dumps({"subject": "move.progress", "data": {
            "serverName": "s", "phase": "copying", "ts": now[0], "seq": step,
            "bytesTotal": 100_000_000, "bytesCopied": step * 1_000_000,
            "filesTotal": 100_000, "filesCopied": step * 1000}})))
    # 1 MB (and 1,000 files) every 0.2 s: 41 MB left is 8.2 s.
    assert model.eta is not None and abs(model.eta - 8.2) < 0.1


# -- one rounding rule for durations ------------------------------------------------------------

def test_a_sub_second_move_takes_the_same_time_in_its_summary_and_its_timeline(tmp_path):
    history = MovesLog(tmp_path / "moves.jsonl")
    recorder = MoveRecorder(history, server="s", target="s", source="/a", destination="/b",
                            verify="checksum")
    model = MoveProgress(clock=lambda: 1000.0)
    plan = {"subject": "move.plan", "data": {
        "moveId": "m1", "serverName": "s", "src": "/a", "dst": "/b", "method": "copy",
        "bytesTotal": 10, "filesTotal": 1, "dirsTotal": 0, "verify": "checksum", "seq": 2}}
    lines = [progress("calculating", 1, 100.9), json.dumps(plan),
             progress("copying", 3, 100.95), progress("complete", 4, 101.3)]
    for line in lines:
        event = parse_line(line)
        model.apply(event)
        recorder.observe(event, model)
    [record] = history.records()
    offset = (parse_iso(record.timeline[-1]["at"]) - parse_iso(record.startedAt)).total_seconds()
    assert human_duration(model.elapsed) == human_duration(record.duration) == "0:00"
    assert human_duration(offset) == "0:00"


def progress(phase: str, seq: int, ts: float) -> str:
    return json.dumps({"subject": "move.progress", "data": {
        "serverName": "s", "phase": phase, "moveId": "m1", "seq": seq, "ts": ts,
        "bytesTotal": 10, "bytesCopied": 10 if phase == "complete" else 0, "filesTotal": 1,
        "filesCopied": 1 if phase == "complete" else 0,
        **({"dataState": "destination"} if phase == "complete" else {})}})
