"""The TUI picks up a move that outlived the servermove that started it (the move was detached
on its server, and the client was killed), and shows a dropped link as 'reconnecting'."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.cli_support import (
    make_tree,
    read_tree,
    servermove,
    start_json_move,
    wait_for_copying,
)
from tests.test_tui_support import make_app, wait_for
from tui.core.fleet import MoveState, ServerMove, status_text
from tui.core.inventory import ServerEntry, add_server, load_inventory
from tui.core.moves_log import MovesLog
from tui.core.progress import MoveProgress
from tui.core.protocol import LinkEvent, Phase, parse_line


async def test_a_move_left_running_is_picked_up_at_start(tmp_path: Path, public_tmp: Path,
                                                         tmpfs: Path) -> None:
    src, dst = public_tmp / "src", tmpfs / "dst"
    contents = make_tree(src, files=8, size=200_000)
    # A servermove started the move on the inventory's "box" and was killed mid-copy: the move
    # goes on, detached.
    add_server(ServerEntry("box", "local", str(src)))
    client = start_json_move("--bwlimit", "2M", "box", src, dst)
    wait_for_copying(client)
    client.kill()
    client.wait()
    [left] = MovesLog().records()
    assert (left.server, left.phase) == ("box", "copying")

    app = make_app(tmp_path, [ServerEntry("box", "local", str(src))], real_runner=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.fleet.get("box") is not None, what="the resume")
        await wait_for(pilot, lambda: not app.fleet.is_active("box"), timeout=60,
                       what="the resumed move to end")
        assert app.fleet.get("box").succeeded
        assert load_inventory(app.inventory_path).get("box").data_path == str(dst)
    assert read_tree(dst) == contents and not src.exists()
    [done] = MovesLog().records()
    assert (done.moveId, done.phase) == (left.moveId, "complete")


def test_a_dropped_link_shows_as_reconnecting() -> None:
    progress = MoveProgress()
    progress.apply(parse_line(json.dumps({"subject": "move.progress", "data": {
        "serverName": "box", "phase": "copying", "bytesTotal": 100, "bytesCopied": 40,
        "filesTotal": 2, "filesCopied": 1, "seq": 3}})))
    move = ServerMove(ServerEntry("box", "web1", "/a"), "/b", progress, state=MoveState.RUNNING)
    assert status_text(move) == "copying 40%"
    progress.apply(LinkEvent(lost=True, message="web1: connection lost — reconnecting"))
    assert status_text(move) == "connection lost — reconnecting"
    progress.apply(LinkEvent(lost=False, message="reconnected to web1"))
    assert status_text(move) == "copying 40%" and progress.phase is Phase.COPYING


async def test_opening_a_server_merges_its_journal_into_the_log(tmp_path: Path,
                                                                public_tmp: Path,
                                                                tmpfs: Path) -> None:
    src, dst = public_tmp / "src", tmpfs / "dst"
    make_tree(src, files=3, size=1000)
    add_server(ServerEntry("box", "local", str(src)))
    # Another laptop (its own moves log) moved box's data; this one has never heard of it.
    other_laptop = {**os.environ, "SERVERMOVE_DATA_DIR": str(tmp_path / "other-laptop")}
    done = servermove("move", "--json", "box", src, dst, env=other_laptop)
    assert done.returncode == 0, done.stderr
    assert MovesLog().records() == []
    app = make_app(tmp_path, [ServerEntry("box", "local", str(dst))], real_runner=True,
                   open_server="box")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: MovesLog().records(), what="the journal merge")
    [merged] = MovesLog().records()
    assert (merged.server, merged.phase, merged.source) == ("box", "complete", str(src))
