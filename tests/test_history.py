"""The moves log: what `servermove move` records, and `servermove log` shows."""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime
from pathlib import Path

from tests.cli_support import make_tree, servermove, start_json_move, wait_for_copying
from tests.harness import fill_up
from tui.core.moves_log import MoveRecord, MovesLog

REQUIRED = {"moveId", "server", "target", "source", "destination", "phase", "bytesTotal",
            "bytesCopied", "filesTotal", "filesCopied", "verify", "startedAt", "finishedAt",
            "duration", "averageRate", "error", "timeline"}


def log_json(*args: str) -> list[dict]:
    result = servermove("log", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _iso(text: str) -> datetime:
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert stamp.utcoffset().total_seconds() == 0  # UTC
    return stamp


def test_complete_move_is_recorded_with_every_field(public_tmp, tmpfs):
    make_tree(public_tmp / "src", files=6, size=1000)
    result = servermove("move", "--verify", "size", "local", public_tmp / "src", tmpfs / "dst")
    assert result.returncode == 0, result.stderr
    [entry] = log_json()
    assert entry.keys() >= REQUIRED
    assert entry["phase"] == "complete" and entry["error"] is None
    assert (entry["server"], entry["target"]) == ("local", "local")
    assert (entry["source"], entry["destination"]) == (str(public_tmp / "src"), str(tmpfs / "dst"))
    assert entry["filesTotal"] == entry["filesCopied"] == 6
    assert entry["bytesTotal"] == entry["bytesCopied"] == sum(1000 + i for i in range(6))
    assert entry["verify"] == "size"
    assert _iso(entry["finishedAt"]) >= _iso(entry["startedAt"])
    assert entry["duration"] >= 0
    assert [step["phase"] for step in entry["timeline"]] == [
        "calculating", "copying", "verifying", "cleaning", "complete"]


def test_failed_disk_full_move_is_recorded_with_its_error(public_tmp, tiny_fs):
    (public_tmp / "src").mkdir()
    for i in range(6):
        (public_tmp / "src" / f"part-{i}").write_bytes(os.urandom(100 * 1024))
    process = start_json_move("--bwlimit", "200K", "local", public_tmp / "src", tiny_fs / "dst")
    wait_for_copying(process)
    fill_up(tiny_fs / "filler")  # someone else fills the disk: a real ENOSPC, mid-copy
    process.communicate(timeout=30)
    assert process.returncode == 1
    [entry] = log_json()
    assert entry["phase"] == "error"
    assert "no space left" in entry["error"] and "part-" in entry["error"]
    assert entry["dataState"] == "source"
    assert entry["timeline"][-1]["phase"] == "error"
    assert entry["timeline"][-1]["error"] == entry["error"]
    assert entry["finishedAt"] is not None and 0 < entry["bytesCopied"] < entry["bytesTotal"]


def test_a_move_refused_at_its_checks_is_not_logged(public_tmp):
    result = servermove("move", "local", public_tmp / "missing", public_tmp / "dst")
    assert result.returncode == 2
    assert result.stderr == (f"servermove: source {public_tmp / 'missing'} does not exist — "
                             "check the path\n")
    assert log_json() == []


def test_cancelled_move_is_recorded(public_tmp, tmpfs):
    make_tree(public_tmp / "src", files=10, size=300_000)
    process = start_json_move("--bwlimit", "1M", "local", public_tmp / "src", tmpfs / "dst")
    wait_for_copying(process)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    assert process.returncode == 3
    [entry] = log_json()
    assert entry["phase"] == "cancelled"
    assert 0 < entry["bytesCopied"] < entry["bytesTotal"]
    assert [s["phase"] for s in entry["timeline"]][-2:] == ["copying", "cancelled"]


def test_torn_and_corrupt_lines_are_skipped_and_the_rest_kept(tmp_path):
    path = tmp_path / "moves.jsonl"
    good = [MoveRecord(moveId=f"m{i}", server="s", target="t", source="/a", destination="/b",
                       phase="complete", startedAt=f"2026-01-0{i + 1}T00:00:00Z")
            for i in range(3)]
    lines = [good[0].to_json(), "{not json", good[1].to_json(), '{"moveId": 5}',
             good[2].to_json(), good[2].to_json()[:30]]  # the last one torn by a crash
    path.write_text("\n".join(lines))
    warnings: list[str] = []
    history = MovesLog(path, warn=warnings.append)
    assert [r.moveId for r in history.records()] == ["m2", "m1", "m0"]
    assert len(warnings) == 3
    assert all(str(path) in w for w in warnings)
    # Appending after a torn line still yields a readable entry.
    history.save(MoveRecord(moveId="m9", server="s", target="t", source="/a",
                            destination="/b", phase="error", startedAt="2026-02-01T00:00:00Z"))
    assert history.records(limit=1)[0].moveId == "m9"


def test_log_filters_by_server_and_limits(tmp_path, monkeypatch):
    history = MovesLog()
    for i, server in enumerate(["web1", "db1", "web1"]):
        history.save(MoveRecord(moveId=f"m{i}", server=server, target=server, source="/a",
                                destination="/b", phase="complete",
                                startedAt=f"2026-01-0{i + 1}T00:00:00Z"))
    assert [e["moveId"] for e in log_json("--server", "web1")] == ["m2", "m0"]
    assert [e["moveId"] for e in log_json("--limit", "1")] == ["m2"]
    table = servermove("log")
    assert table.returncode == 0
    assert "web1" in table.stdout and "db1" in table.stdout and "complete" in table.stdout


def test_history_lives_in_the_data_dir(isolated_user_dirs: Path):
    assert MovesLog().path == isolated_user_dirs / "data" / "moves.jsonl"
