"""The client side of service moves (issue 16), from synthetic mover lines: parsing, the model,
the words, the moves log, the mover's argv and the phase indicator. The real mover and real
services are in tests/test_service_cli.py."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from tests.cli_support import servermove
from tui.app.widgets.phase_indicator import phase_line
from tui.core.fleet import Fleet, MoveOptions
from tui.core.inventory import ServerEntry, ServiceConfig
from tui.core.moves_log import MoveRecorder, MovesLog, record_from_listed
from tui.core.progress import MoveProgress
from tui.core.protocol import (
    ListedEvent,
    MalformedLine,
    Phase,
    PlanEvent,
    ProgressEvent,
    ServiceRunsFrom,
    parse_line,
)
from tui.core.runner import MoveRequest
from tui.core.wording import down_clock, phase_words, plan_line, plan_lines, record_service_note

SRC, DST = "/var/lib/postgresql/15/main", "/mnt/fast/pg"
CONF = "/etc/postgresql/15/main/postgresql.conf"
SERVICE = {"stop": "pg_ctlcluster 15 main stop", "start": "pg_ctlcluster 15 main start",
           "check": "pg_isready -q", "cutover": f"config:{CONF}",
           "cutoverChanges": [{"file": CONF, "line": 42,
                               "before": f"data_directory = '{SRC}'",
                               "after": f"data_directory = '{DST}'"}],
           "maxDowntimeSeconds": None}


def line(subject: str, **data: object) -> str:
    return json.dumps({"subject": subject, "data": data})


def plan(**service: object) -> str:
    return line("move.plan", serverName="db1", src=SRC, dst=DST, method="copy", bytesTotal=1000,
                filesTotal=10, dirsTotal=2, verify="checksum", moveId="m1", seq=1,
                service={**SERVICE, **service})


SEQ = iter(range(2, 10_000))


def progress(phase: str, ts: float, **fields: object) -> str:
    data = {"serverName": "db1", "phase": phase, "bytesTotal": 1000, "bytesCopied": 0,
            "filesTotal": 10, "filesCopied": 0, "moveId": "m1", "seq": next(SEQ), "ts": ts,
            "pass": None, "forecastDowntimeSeconds": None, "downSince": None}
    return line("move.progress", **{**data, **fields})


def service_move(end: str = "complete", **terminal: object) -> list[str]:
    """A service move's lines: two live passes, the stop at t=10, the check passing at 12.4."""
    return [plan(),
            progress("calculating", 1.0),
            progress("syncing", 2.0, **{"pass": 1, "bytesCopied": 900}),
            progress("syncing", 5.0, **{"pass": 2, "bytesCopied": 30,
                                        "forecastDowntimeSeconds": 2.6}),
            progress("stopping", 10.0, **{"pass": 2, "downSince": 10.0,
                                          "forecastDowntimeSeconds": 2.6}),
            progress("copying", 10.5, **{"pass": 3, "bytesCopied": 5, "downSince": 10.0}),
            progress("verifying", 11.0, **{"pass": 3, "downSince": 10.0}),
            progress("switching", 11.5, **{"pass": 3, "downSince": 10.0}),
            progress("starting", 11.8, **{"pass": 3, "downSince": 10.0}),
            progress("checking", 12.0, **{"pass": 3, "downSince": 10.0}),
            progress("cleaning", 12.5, **{"pass": 3}),
            progress(end, 13.0, **{"pass": 3, "downtimeSeconds": 2.4,
                                   "serviceRunsFrom": "destination",
                                   "dataState": "destination", **terminal})]


def folded(lines: list[str], clock: float = 0.0) -> MoveProgress:
    model = MoveProgress(clock=lambda: clock)
    for text in lines:
        model.apply(parse_line(text))
    return model


# -- parsing -------------------------------------------------------------------------------------

def test_the_plan_and_progress_carry_the_service_fields():
    event = parse_line(plan(maxDowntimeSeconds=5))
    assert isinstance(event, PlanEvent) and event.service is not None
    assert (event.service.stop, event.service.check) == (SERVICE["stop"], "pg_isready -q")
    assert event.service.config_file == CONF and event.service.max_downtime_seconds == 5
    [change] = event.service.cutover_changes
    assert (change.line, change.after) == (42, f"data_directory = '{DST}'")
    end = parse_line(service_move()[-1])
    assert isinstance(end, ProgressEvent)
    assert (end.pass_number, end.downtime, end.service_runs_from) == (
        3, 2.4, ServiceRunsFrom.DESTINATION)


def test_a_mover_without_service_moves_and_odd_values_still_parse():
    old = parse_line(line("move.progress", phase="copying", bytesTotal=1, bytesCopied=0,
                          filesTotal=1, filesCopied=0))
    assert isinstance(old, ProgressEvent) and old.pass_number is None and old.downtime is None
    odd = parse_line(progress("syncing", 1.0, **{"pass": "two", "downSince": "soon",
                                                 "serviceRunsFrom": "mars"}))
    assert isinstance(odd, ProgressEvent) and odd.phase is Phase.SYNCING
    assert (odd.pass_number, odd.down_since, odd.service_runs_from) == (None, None, None)
    bad = parse_line(plan(cutoverChanges="lots", stop=["pg_ctlcluster", "15", "main", "stop"]))
    assert isinstance(bad, PlanEvent) and bad.service is not None
    assert bad.service.cutover_changes == () and bad.service.stop == "pg_ctlcluster 15 main stop"
    assert not isinstance(parse_line(plan(service=None)), MalformedLine)
    listed = parse_line(line("move.listed", moveId="m1", phase="complete", bytesTotal=1,
                             bytesCopied=1, filesTotal=1, filesCopied=1, cutover="symlink",
                             passes=4, downtimeSeconds=0.6, serviceRunsFrom="destination"))
    assert isinstance(listed, ListedEvent)
    assert (listed.cutover, listed.passes, listed.downtime, listed.service_runs_from) == (
        "symlink", 4, 0.6, ServiceRunsFrom.DESTINATION)


# -- the model -----------------------------------------------------------------------------------

def test_each_pass_counts_from_zero_and_the_downtime_clock_ticks_while_down():
    lines = service_move()
    model = folded(lines[:4])
    assert model.service_move and model.pass_number == 2 and model.bytes_copied == 30
    assert model.forecast_downtime == 2.6 and model.down_for is None
    assert phase_words(model) == "syncing, pass 2, forecast downtime 2.6 s"
    # Down since t=10; the last event at t=10.5 reached us at local 100, and it is now 101.2.
    model = folded(lines[:6], clock=100.0)
    model.clock = lambda: 101.2
    assert model.down_for == pytest.approx(1.7)
    assert down_clock(model) == "service down for 1.7 s"
    assert phase_words(model) == "copying (final pass 3)"
    model = folded(lines)
    assert model.down_for is None and down_clock(model) is None
    assert model.downtime == 2.4 and model.service_runs_from is ServiceRunsFrom.DESTINATION


def test_a_move_without_service_is_no_service_move():
    model = folded([line("move.progress", phase="copying", bytesTotal=10, bytesCopied=5,
                         filesTotal=1, filesCopied=0)])
    assert not model.service_move and phase_words(model) == "copying"


# -- the words -----------------------------------------------------------------------------------

def test_the_outcome_says_where_the_service_runs_and_how_long_it_was_down():
    assert folded(service_move()).outcome() == (
        f"Moved; the service runs from {DST}; it was down for 2.4 s.")


def test_a_rollback_says_the_service_runs_from_the_old_path_again_and_why():
    why = "the service did not pass its check `pg_isready -q` within 60 seconds (30 tries)"
    error = (f"{why}; the service runs from the old path {SRC} again; the new copy is at {DST} "
             "(not used; the service may have written to it while it ran from there)")
    lines = [*service_move()[:10], progress("error", 80.0, **{
        "pass": 3, "error": error, "dataState": "both", "downtimeSeconds": 30.1,
        "serviceRunsFrom": "source"})]
    assert folded(lines).outcome() == (
        f"Move failed while checking; the service runs from the old path {SRC} again: {why}; "
        f"the new copy is at {DST} (not used; the service may have written to it while it ran "
        "from there); it was down for 30.1 s.")


def test_a_service_that_runs_nowhere_is_said_loudly():
    error = ("the start command `x` failed (exit 1): no; THE SERVICE IS NOT RUNNING: putting "
             f"it back on the old path failed (…) — {SRC} holds the data")
    lines = [*service_move()[:9], progress("error", 20.0, **{
        "error": error, "dataState": "both", "serviceRunsFrom": "nowhere"})]
    text = folded(lines).outcome()
    assert text.startswith("Move failed while starting: the start command")
    assert "THE SERVICE IS NOT RUNNING" in text
    without_words = [*service_move()[:9], progress("error", 20.0, **{
        "error": "it broke", "serviceRunsFrom": "nowhere"})]
    assert folded(without_words).outcome() == (
        "Move failed while starting: THE SERVICE IS NOT RUNNING: it broke.")


def test_the_plan_lists_the_steps_in_order_with_the_lines_that_change():
    event = parse_line(plan(maxDowntimeSeconds=5))
    assert isinstance(event, PlanEvent)
    steps = plan_lines(event)[plan_lines(event).index("The service's steps, in order:") + 1:]
    assert steps == [
        "1. Copy while the service runs (live passes, until the forecast downtime is under "
        "5.0 s)",
        "2. Stop the service: pg_ctlcluster 15 main stop",
        "3. Copy what changed since the last pass and verify it (checksum)",
        f"4. Switch by editing {CONF}: line 42: \"data_directory = '{SRC}'\" → "
        f"\"data_directory = '{DST}'\"",
        "5. Start the service: pg_ctlcluster 15 main start",
        "6. Check it until it passes: pg_isready -q",
        "7. Remove the old copy"]
    assert plan_line(event).endswith(
        f"service: copy while running → stop → final copy → switch by editing {CONF} → start "
        "→ check")
    symlink = parse_line(plan(cutover="symlink", cutoverChanges=[]))
    assert isinstance(symlink, PlanEvent)
    assert f"4. Switch by symlink: {SRC} becomes a link to {DST}" in plan_lines(symlink)


# -- the moves log -------------------------------------------------------------------------------

def test_the_moves_log_keeps_downtime_passes_cutover_and_where_it_runs(tmp_path: Path):
    moves_log = MovesLog(tmp_path / "moves.jsonl")
    model = MoveProgress()
    recorder = MoveRecorder(moves_log, server="db1", target="db1", source=SRC, destination=DST,
                            verify="checksum")
    for text in service_move():
        event = parse_line(text)
        model.apply(event)
        recorder.observe(event, model)
    record = moves_log.get("m1")
    assert record is not None
    assert (record.downtimeSeconds, record.passes, record.cutover, record.serviceRunsFrom) == (
        2.4, 3, f"config:{CONF}", "destination")
    assert record_service_note(record) == (
        f"service down for 2.4 s; 3 passes; cutover config:{CONF}; runs from the destination")
    listed = parse_line(line("move.listed", moveId="m2", phase="error", bytesTotal=1,
                             bytesCopied=1, filesTotal=1, filesCopied=1, cutover="symlink",
                             passes=5, downtimeSeconds=None, serviceRunsFrom="source"))
    assert isinstance(listed, ListedEvent)
    merged = record_from_listed(listed, "db1")
    assert record_service_note(merged) == (
        "service not stopped; 5 passes; cutover symlink; runs from the source")


# -- the mover's command line and the fleet ------------------------------------------------------

SPEC = ServiceConfig(stop=("svc", "stop"), start="svc start", check="svc ok", cutover="symlink")


def test_the_argv_carries_the_service_and_the_downtime_limit():
    request = MoveRequest(SRC, DST, server_name="db1", service=SPEC.to_mover(), max_downtime=2.5)
    argv = request.argv("start")
    assert json.loads(argv[argv.index("--service") + 1]) == SPEC.to_mover()
    assert argv[argv.index("--max-downtime") + 1] == "2.5"
    assert argv[-3:] == ["--", SRC, DST]
    assert "--service" not in MoveRequest(SRC, DST).argv()


def test_the_fleet_moves_a_server_with_its_service_unless_told_not_to():
    server = ServerEntry("db1", "local", SRC, service=SPEC)
    with_service = Fleet._request(server, DST, MoveOptions(max_downtime=3), dry_run=False)
    assert with_service.service == SPEC.to_mover() and with_service.max_downtime == 3
    alone = Fleet._request(server, DST, MoveOptions(with_service=False), dry_run=False)
    assert alone.service is None and alone.max_downtime is None
    plain = Fleet._request(ServerEntry("web", "local", SRC), DST, MoveOptions(), dry_run=False)
    assert plain.service is None


# -- the CLI's refusals (nothing runs, nothing changes) ------------------------------------------

def write_servers(text: str) -> Path:
    config = Path(os.environ["SERVERMOVE_CONFIG_DIR"])
    config.mkdir(parents=True, exist_ok=True)
    (config / "servers.toml").write_text(text)
    return config / "servers.toml"


def test_a_service_move_of_another_directory_or_a_limit_without_service_is_refused(tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    (src / "f").write_text("x")
    write_servers(f'[db1]\ntarget = "local"\ndata_path = "{src}"\nstop = "false"\n'
                  'start = "false"\ncheck = "false"\n[web]\ntarget = "local"\n'
                  f'data_path = "{src}"\n')
    other = tmp_path / "other"
    other.mkdir()
    refused = servermove("move", "db1", other, tmp_path / "dst")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert refused.stderr == (f"servermove: db1's service uses {src}, not {other}: move {src}, "
                              f"or add --no-service to move {other} alone\n")
    for args in (["web"], ["db1", "--no-service"]):
        limited = servermove("move", *args, "--max-downtime", "5", src, tmp_path / "dst")
        assert limited.returncode == 2 and limited.stderr.count("\n") == 1
        assert "--max-downtime is for a service move" in limited.stderr
    bad = servermove("move", "db1", "--max-downtime", "soon", src, tmp_path / "dst")
    assert bad.returncode == 2 and "'soon' is not a number of seconds" in bad.stderr
    assert not (tmp_path / "dst").exists() and (src / "f").read_text() == "x"


# -- the phase indicator -------------------------------------------------------------------------

def test_the_phase_indicator_shows_a_service_moves_own_phases():
    model = folded(service_move()[:4])
    assert phase_line(model).plain == (
        "✔ calculating → ▶ syncing (pass 2) → ○ stopping → ○ copying → ○ verifying → "
        "○ switching → ○ starting → ○ checking → ○ cleaning → ○ complete")
    plain = folded([line("move.progress", phase="copying", bytesTotal=10, bytesCopied=5,
                         filesTotal=1, filesCopied=0)])
    assert phase_line(plain).plain == (
        "○ calculating → ▶ copying → ○ verifying → ○ cleaning → ○ complete")


# -- the CLI's displays --------------------------------------------------------------------------

def test_the_terminal_display_shows_the_pass_and_the_downtime_clock():
    from rich.console import Console

    from tui.cli import RichMoveDisplay

    model = folded(service_move()[:6], clock=100.0)
    model.clock = lambda: 101.2
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(RichMoveDisplay(model, console))
    shown = console.file.getvalue()
    assert "copying (final pass 3)" in shown and "service down for 1.7 s" in shown
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(RichMoveDisplay(folded(service_move()[:4]), console))
    shown = console.file.getvalue()
    assert "syncing, pass 2, forecast downtime 2.6 s" in shown and "service down" not in shown


def test_into_a_pipe_a_line_a_phase_and_a_live_pass(capsys):
    from tui.cli import LineView

    model = MoveProgress()
    view = LineView(model)
    for text in service_move():
        event = parse_line(text)
        model.apply(event)
        view.show(event)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == ["calculating…", "syncing, pass 1…",
                         "syncing, pass 2, forecast downtime 2.6 s…", "stopping…",
                         "copying (final pass 3)…", "verifying…", "switching…", "starting…",
                         "checking…", "cleaning…"]  # the end is the outcome line's
