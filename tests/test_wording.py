"""The CLI and the TUI say the same thing about a move: their words come from tui.core.wording."""

from __future__ import annotations

import json

from rich.console import Console

from tui.cli import RichMoveDisplay
from tui.core.fleet import MoveState, ServerMove, status_text
from tui.core.inventory import ServerEntry
from tui.core.progress import MoveProgress
from tui.core.protocol import parse_line
from tui.core.wording import bar_counts


def progress_line(phase: str, **fields: object) -> str:
    data = {"serverName": "s", "phase": phase, "bytesTotal": 100_000, "bytesCopied": 100_000,
            "filesTotal": 10, "filesCopied": 10, **fields}
    return json.dumps({"subject": "move.progress", "data": data})


def cli_lines(model: MoveProgress) -> str:
    console = Console(record=True, width=100)
    console.print(RichMoveDisplay(model, console))
    return console.export_text()


def test_the_cli_bar_counts_what_the_tui_bar_counts_while_verifying() -> None:
    model = MoveProgress()
    for line in (progress_line("copying"),
                 progress_line("verifying", bytesVerified=25_000, filesVerified=3)):
        model.apply(parse_line(line))
    assert bar_counts(model) == (25_000, 100_000, 3, 10)  # what the TUI's bars show
    shown = cli_lines(model)
    assert "25.0 kB of 100.0 kB" in shown and " 25.0%" in shown
    assert "3 of 10" in shown


def test_a_move_that_ended_before_any_phase_stopped_while_starting() -> None:
    # The dashboard once said "error while start" here, where the move panel said "starting".
    move = ServerMove(ServerEntry("s", "local", "/a"), "/b", MoveProgress(),
                      state=MoveState.FINISHED)
    assert status_text(move) == "error while starting"


def test_one_file_and_one_directory_are_singular_in_both_front_ends() -> None:
    from tui.core.wording import outcome_words, plan_line, summary_line

    model = MoveProgress()
    plan = {"subject": "move.plan", "data": {
        "moveId": "m", "serverName": "s", "src": "/a", "dst": "/b", "method": "copy",
        "bytesTotal": 5, "filesTotal": 1, "dirsTotal": 1, "verify": "checksum",
        "counted": True}}
    for line in (json.dumps(plan), progress_line("complete", filesTotal=1, filesCopied=1)):
        model.apply(parse_line(line))
    assert "5 bytes in 1 file and 1 directory, verify checksum" in plan_line(model.plan)
    assert summary_line(model).startswith("moved 100.0 kB in 1 file in ")
    title, lines, kind = outcome_words(model, server_name="s", new_path="/b")
    assert (title, kind) == ("Move complete", "complete")
    assert lines[0].startswith("Moved 100.0 kB in 1 file in ")
