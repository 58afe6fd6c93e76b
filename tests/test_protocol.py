"""The shared parser and the MoveProgress model, fed real mover lines and hostile ones."""

from __future__ import annotations

import ast
import contextlib
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tui.core.errors import ExitStatus
from tui.core.progress import MoveProgress
from tui.core.protocol import (
    PHASE_ORDER,
    SERVICE_PHASE_ORDER,
    TERMINAL_PHASES,
    DataState,
    MalformedLine,
    Phase,
    PlanEvent,
    ProgressEvent,
    WarningEvent,
    display_path,
    parse_line,
)

MOVER = Path(__file__).resolve().parents[1] / "remote" / "mover.py"


def progress(phase: str = "copying", seq: int | None = None, ts: float | None = None,
             **fields) -> str:
    data = {"serverName": "s", "phase": phase, "bytesTotal": 1000, "bytesCopied": 0,
            "filesTotal": 10, "filesCopied": 0, **fields}
    if seq is not None:
        data["seq"] = seq
    if ts is not None:
        data["ts"] = ts
    return json.dumps({"subject": "move.progress", "data": data})


def test_seed_message_without_any_added_field_parses():
    event = parse_line(progress(bytesCopied=10, currentFile="a/b"))
    assert event == ProgressEvent(server_name="s", phase=Phase.COPYING, bytes_total=1000,
                                  bytes_copied=10, files_total=10, files_copied=0,
                                  current_file="a/b")


def test_unknown_subjects_and_fields_are_ignored():
    assert parse_line('{"subject": "move.future", "data": {"x": 1}}') is None
    event = parse_line(progress(newField={"nested": True}, dataState="elsewhere"))
    assert isinstance(event, ProgressEvent) and event.data_state is None


def test_malformed_lines_are_reported_not_raised():
    for line in ["Welcome to web1!", '{"subject": "move.progress", "data": {"phase": "copyin',
                 '{"subject": "move.progress", "data": {"phase": "teleporting"}}',
                 '{"subject": "move.progress", "data": {"phase": "copying", "bytesTotal": "x"}}',
                 "[1, 2]", '{"data": {}}', '{"subject": "move.plan", "data": []}', "\x00\xff"]:
        assert isinstance(parse_line(line), MalformedLine), line
    assert parse_line("   \n") is None
    assert isinstance(parse_line(b"\xff\xfe{"), MalformedLine)


@pytest.mark.parametrize("field, value", [("filesVerified", 1.5), ("bytesCopied", True),
                                          ("filesTotal", None), ("seq", "7")])
def test_a_bad_counter_is_named(field: str, value: object) -> None:
    event = parse_line(progress(**{field: value}))
    assert isinstance(event, MalformedLine)
    assert event.reason == f"bad move.progress message: {field} is not an integer"


def test_a_stream_with_noise_keeps_flowing():
    lines = [progress("calculating", 1), "garbage", progress("copying", 2, bytesCopied=5),
             '{"subject":', progress("copying", 3, bytesCopied=50)]
    model = MoveProgress()
    for line in lines:
        model.apply(parse_line(line))
    assert model.bytes_copied == 50 and model.phase is Phase.COPYING
    assert len(model.warnings) == 2


def test_non_utf8_and_control_characters_are_shown_safely():
    name = b"caf\xe9\nline".decode("utf-8", "surrogateescape")
    event = parse_line(progress(currentFile=name))
    assert isinstance(event, ProgressEvent)
    assert display_path(event.current_file) == "caf\\xe9\\nline"
    assert display_path("a" * 50 + "/" + "b" * 50, 21) == "a" * 10 + "…" + "b" * 10


def test_model_counters_never_go_back_and_duplicates_are_dropped():
    model = MoveProgress()
    model.apply(parse_line(progress(seq=1, bytesCopied=500)))
    assert not model.apply(parse_line(progress(seq=1, bytesCopied=100)))  # replayed line
    model.apply(parse_line(progress(seq=2, bytesCopied=400)))  # a confused stream
    assert model.bytes_copied == 500 and model.duplicates == 1
    model.apply(parse_line(progress(seq=5, bytesCopied=600)))
    assert model.seq_gaps == 1


def test_rate_and_eta_are_steady_under_a_bursty_stream():
    # 100 bytes/s on average, but events arrive in bursts of tiny steps and big jumps.
    model = MoveProgress(clock=lambda: 0.0)
    done, etas = 0, []
    for second in range(30):
        for offset, step_bytes in ((0.05, 10), (0.9, 80), (0.95, 10)):
            now = second + offset
            done += step_bytes
            # Files of 10 bytes: the files move with the bytes, as in a real stream.
            model.apply(parse_line(progress(ts=now, bytesCopied=done, bytesTotal=10_000,
                                            filesCopied=done // 10, filesTotal=1000)))
        if second > 12:
            etas.append(model.eta)
    assert all(e is not None for e in etas)
    assert 90 <= model.rate <= 110
    # While the true remaining time falls by 1 s a second, the ETA never jumps by more than 3 s.
    assert max(abs(b - a) for a, b in itertools.pairwise(etas)) < 3


def test_replayed_stream_uses_the_movers_clock_for_elapsed_and_rate():
    model = MoveProgress(clock=lambda: 1e9)  # our clock is far off: it must not matter
    model.apply(parse_line(progress("copying", 1, ts=100.0, bytesCopied=0)))
    model.apply(parse_line(progress("copying", 2, ts=110.0, bytesCopied=500)))
    model.apply(parse_line(progress("complete", 3, ts=120.0, bytesCopied=1000,
                                    dataState="destination")))
    assert model.elapsed == 20.0
    assert model.average_rate == 50.0
    assert model.outcome() == "Move complete."
    assert model.data_state is DataState.DESTINATION


def test_outcome_names_the_phase_and_where_the_data_is():
    model = MoveProgress()
    model.apply(parse_line(progress("copying", 1)))
    model.apply(parse_line(progress("error", 2, error="disk full writing a/b; the source is "
                                    "untouched", dataState="source")))
    assert model.failed_phase is Phase.COPYING
    assert model.outcome() == ("Move failed while copying: disk full writing a/b; the source is "
                               "untouched.")
    silent = MoveProgress()
    silent.apply(parse_line(progress("cancelled", 1, dataState="both")))
    assert silent.outcome() == ("Move cancelled while calculating (the destination is complete "
                                "and verified and the source is still whole).")


def test_real_mover_output_parses_completely(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"x" * 1000)
    (src / "link").symlink_to("d/f")
    result = subprocess.run([sys.executable, str(MOVER), "move", "--dry-run", str(src),
                             str(tmp_path / "dst")], capture_output=True, text=True, check=True)
    events = [parse_line(line) for line in result.stdout.splitlines()]
    assert not [e for e in events if isinstance(e, MalformedLine)]
    plan = next(e for e in events if isinstance(e, PlanEvent))
    assert (plan.method, plan.bytes_total, plan.files_total, plan.dry_run) == (
        "rename", 1000, 2, True)


def test_warning_events_reach_the_model():
    model = MoveProgress()
    line = json.dumps({"subject": "move.warning", "data": {"message": "owner not kept",
                                                           "path": "a", "seq": 1}})
    assert isinstance(parse_line(line), WarningEvent)
    model.apply(parse_line(line))
    assert model.warnings == ["owner not kept (a)"]


def test_the_mover_and_the_client_agree_on_phases_and_data_states():
    # The mover is standalone (stdlib only, shipped as one file), so it spells these out itself;
    # this keeps the two spellings from drifting apart.
    from remote import mover

    phases = (mover.CALCULATING, mover.SYNCING, mover.STOPPING, mover.COPYING, mover.VERIFYING,
              mover.SWITCHING, mover.STARTING, mover.CHECKING, mover.CLEANING, mover.COMPLETE,
              mover.ERROR, mover.CANCELLED)
    assert list(phases) == [phase.value for phase in Phase]
    assert set(mover.TERMINAL) == {"complete", "error", "cancelled"}
    assert {mover.STATE_SOURCE, mover.STATE_DESTINATION, mover.STATE_BOTH} == {
        state.value for state in DataState}
    assert mover.PROTOCOL_VERSION == 1


def mover_constants() -> dict[str, object]:
    """The mover's module-level constants, read from its source (not imported: what is checked
    is the file that ships). A tuple of names, like TERMINAL, is resolved to their values."""
    values: dict[str, object] = {}
    for node in ast.parse(MOVER.read_text()).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            continue
        value = node.value
        if isinstance(value, ast.Tuple) and all(isinstance(e, ast.Name) for e in value.elts):
            if all(e.id in values for e in value.elts):
                values[node.targets[0].id] = tuple(values[e.id] for e in value.elts)
            continue
        with contextlib.suppress(ValueError, TypeError, SyntaxError):
            values[node.targets[0].id] = ast.literal_eval(value)
    return values


def test_the_mover_and_the_client_agree_on_the_phases_of_a_service_move():
    # Read from the file that ships: each of the client's service phases is one of the mover's
    # constants, spelled the same, and a move without a service keeps its own four steps.
    constants = mover_constants()
    for phase in SERVICE_PHASE_ORDER:
        assert constants[phase.name] == phase.value
    assert [p for p in SERVICE_PHASE_ORDER if p not in PHASE_ORDER] == [
        Phase.SYNCING, Phase.STOPPING, Phase.SWITCHING, Phase.STARTING, Phase.CHECKING]
    assert set(PHASE_ORDER) <= set(SERVICE_PHASE_ORDER)


def test_the_mover_and_the_client_agree_on_terminal_phases_and_exit_statuses():
    constants = mover_constants()
    assert constants["TERMINAL"] == tuple(phase.value for phase in TERMINAL_PHASES)
    mover_statuses = {name.removeprefix("EXIT_"): value for name, value in constants.items()
                      if name.startswith("EXIT_")}
    assert mover_statuses == {"OK": 0, "FAILED": 1, "REFUSED": 2, "CANCELLED": 3}
    assert mover_statuses == {name: ExitStatus[name].value for name in mover_statuses}


def test_a_live_pass_has_an_eta_of_its_own():
    """A service move's first pass copies the whole tree while the service runs: its bar is the
    pass's, and so is the ETA beside it (it used to say — for the longest part of the move)."""
    model = MoveProgress(clock=lambda: 0.0)
    for second in range(1, 6):
        model.apply(parse_line(progress(phase="syncing", ts=second, **{"pass": 1},
                                        bytesCopied=second * 1_000_000, bytesTotal=10_000_000,
                                        filesCopied=second * 10, filesTotal=100)))
    assert model.eta is not None and 3 <= model.eta <= 7  # 5 MB left at 1 MB/s
