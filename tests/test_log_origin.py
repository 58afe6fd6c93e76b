"""The moves log and the server's journal: a refusal is not a move, every move says who started
it, and the log filters on that. Real mover, real CLI, the local target with this test's own
journal directory (conftest)."""

from __future__ import annotations

import json
import re

from tests.cli_support import make_tree, servermove
from tui.core.moves_log import this_machine
from tui.core.runner import MoveRequest, start_move
from tui.core.targets import parse_target


def log_json(*args: str) -> list[dict]:
    result = servermove("log", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def moves_json() -> list[dict]:
    result = servermove("moves", "--json", "local")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_a_refused_start_is_not_a_move_in_the_journal_nor_replayed_by_attach(public_tmp, tmpfs):
    make_tree(public_tmp / "src", files=3)
    moved = servermove("move", "local", public_tmp / "src", tmpfs / "dst")
    assert moved.returncode == 0, moved.stderr
    [done] = moves_json()
    for _ in range(3):  # the worker's own check refuses: the source is gone
        refused = servermove("move", "local", public_tmp / "src", tmpfs / "again")
        assert refused.returncode == 2 and "does not exist" in refused.stderr, refused.stderr
    assert [entry["moveId"] for entry in moves_json()] == [done["moveId"]]
    attached = servermove("attach", "local")  # the newest move: the one that moved the data
    assert attached.returncode == 0, attached.stderr
    assert "does not exist" not in attached.stderr
    assert [entry["moveId"] for entry in log_json()] == [done["moveId"]]


async def test_a_move_says_who_started_it_and_the_log_filters_on_it(public_tmp, tmpfs):
    make_tree(public_tmp / "mine", files=2)
    make_tree(public_tmp / "theirs", files=2)
    here = servermove("move", "local", public_tmp / "mine", tmpfs / "mine")
    assert here.returncode == 0, here.stderr
    # Another machine's client starts a move on the same server (its journal says so)...
    theirs = await start_move(parse_target("local"), MoveRequest(
        str(public_tmp / "theirs"), str(tmpfs / "theirs"), started_by="alice@laptop-b"))
    async for _ in theirs.events():
        pass
    theirs.close()
    # ...and this machine learns of it from the journal.
    listed = {entry["source"]: entry["startedBy"] for entry in moves_json()}
    assert listed == {str(public_tmp / "mine"): this_machine(),
                      str(public_tmp / "theirs"): "alice@laptop-b"}
    assert [e["source"] for e in log_json("--started-by", "here")] == [str(public_tmp / "mine")]
    assert [e["source"] for e in log_json("--started-by", "elsewhere")] == [
        str(public_tmp / "theirs")]
    assert [e["source"] for e in log_json("--started-by", "alice@laptop-b")] == [
        str(public_tmp / "theirs")]
    table = servermove("log").stdout
    assert "started by" in table and "alice@laptop-b" in table and "here" in table


def test_log_for_an_unknown_server_says_so(public_tmp, tmpfs):
    make_tree(public_tmp / "src", files=1)
    assert servermove("move", "local", public_tmp / "src", tmpfs / "dst").returncode == 0
    result = servermove("log", "--server", "lcoal")
    assert result.returncode == 2
    assert result.stderr == ("servermove: no server 'lcoal' in the moves log or in servers.toml "
                             "(servers in the log: local)\n")
    assert servermove("log", "--server", "local").returncode == 0


def test_version_and_help_for_every_argument():
    from tui.cli import build_parser

    version = servermove("--version")
    assert version.returncode == 0 and version.stdout.startswith("servermove ")
    parser = build_parser()
    text = servermove("--help").stdout
    assert "for scripts and tests" not in text and "data directory" in text
    commands = next(a for a in parser._actions if a.dest == "command")
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help, f"servermove {name}: {action.dest} has no help"


def test_log_on_an_80_column_terminal_keeps_every_route_whole(public_tmp, tmpfs):
    """On a real 80-column pty the table leaves out columns rather than cut the paths."""
    import fcntl
    import os
    import pty
    import struct
    import termios
    import time

    from tests.cli_support import SERVERMOVE

    make_tree(public_tmp / "a long source directory name", files=1)
    destination = tmpfs / "a long destination directory name"
    moved = servermove("move", "local", public_tmp / "a long source directory name", destination)
    assert moved.returncode == 0, moved.stderr
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        os.execv(SERVERMOVE[0], [*SERVERMOVE, "log"])
    screen = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    os.waitpid(pid, 0)
    os.close(fd)
    text = re.sub(r"\x1b\[[0-9;]*m", "", screen.decode("utf-8", "replace")).replace("\r\n", "\n")
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), text
    column = lines[0].index("from → to")
    route = "".join(line[column:] for line in lines[1:])
    whole = f"{public_tmp}/a long source directory name → {destination}"
    assert "".join(whole.split()) in "".join(route.split()), text
    assert "…" not in text, text
