"""Detached moves survive the client: against the real sshd, as the unprivileged user."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli_support import (
    make_tree,
    read_tree,
    servermove,
    start_json_move,
    wait_for_copying,
)
from tests.fstree import build_everything_tree, snapshot_tree
from tests.harness import SshServer, run
from tests.test_mover import interpreter, mover
from tui.core.progress import MoveProgress
from tui.core.protocol import LinkEvent, Phase, ProgressEvent
from tui.core.runner import MoveRequest, SshSettings, attach_move, start_move
from tui.core.targets import parse_target


def ssh_cli(sshd: SshServer, *args: object, **kwargs) -> subprocess.CompletedProcess:
    return servermove(*args[:1], "--ssh-config", sshd.config_file, *args[1:], **kwargs)


def test_killed_client_the_move_goes_on_and_attach_replays_it(sshd, public_tmp, tmpfs):
    contents = make_tree(public_tmp / "src", files=8, size=250_000)
    client = start_json_move("--bwlimit", "2M", "--ssh-config", sshd.config_file, sshd.alias,
                             public_tmp / "src", tmpfs / "dst")
    seen = wait_for_copying(client)
    client.kill()  # SIGKILL: no goodbye, no cancel
    client.wait()
    # The log on this machine has the move, unfinished: the client died mid-copy.
    [entry] = [json.loads(line) for line in servermove("log", "--json").stdout.splitlines()]
    assert entry["moveId"] == seen["moveId"] and entry["phase"] == "copying"

    replay = ssh_cli(sshd, "attach", "--json", sshd.alias, timeout=60)
    assert replay.returncode == 0, replay.stderr
    events = [json.loads(line)["data"] for line in replay.stdout.splitlines()]
    progress = [e for e in events if "phase" in e]
    assert progress[0]["phase"] == "calculating" and progress[0]["seq"] == 1  # from the start
    assert progress[-1]["phase"] == "complete" and progress[-1]["moveId"] == seen["moveId"]
    seqs = [e["seq"] for e in events if "seq" in e]
    assert seqs == list(range(1, len(seqs) + 1))
    assert read_tree(tmpfs / "dst") == contents
    assert not (public_tmp / "src").exists()
    # ...and the log entry was finished from the server's journal.
    [entry] = [json.loads(line) for line in servermove("log", "--json").stdout.splitlines()]
    assert entry["phase"] == "complete" and entry["finishedAt"]
    assert entry["bytesCopied"] == entry["bytesTotal"] == sum(contents_sizes(contents))


def contents_sizes(contents: dict[str, bytes]) -> list[int]:
    return [len(data) for data in contents.values()]


def test_moves_lists_the_servers_journal_and_merges_it_into_the_log(sshd, public_tmp, tmpfs,
                                                                    tmp_path):
    make_tree(public_tmp / "src", files=3, size=1000)
    # Another laptop (its own data dir) makes the move...
    other_laptop = {**os.environ, "SERVERMOVE_DATA_DIR": str(tmp_path / "other-laptop")}
    done = ssh_cli(sshd, "move", "--json", sshd.alias, public_tmp / "src", tmpfs / "dst",
                   env=other_laptop)
    assert done.returncode == 0, done.stderr
    move_id = json.loads(done.stdout.splitlines()[-1])["data"]["moveId"]
    assert servermove("log", "--json").stdout == ""  # ...so this one knows nothing of it
    listed = ssh_cli(sshd, "moves", "--json", sshd.alias)
    assert listed.returncode == 0, listed.stderr
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    mine = next(e for e in entries if e["moveId"] == move_id)
    assert mine["phase"] == "complete" and mine["source"] == str(public_tmp / "src")
    assert [step["phase"] for step in mine["timeline"]] == [
        "calculating", "copying", "verifying", "cleaning", "complete"]
    logged = [json.loads(line) for line in servermove("log", "--json").stdout.splitlines()]
    assert [(e["moveId"], e["phase"]) for e in logged if e["moveId"] == move_id] == [
        (move_id, "complete")]
    table = ssh_cli(sshd, "moves", sshd.alias)
    assert str(public_tmp / "src") in table.stdout and "complete" in table.stdout


async def start_and_walk_away(sshd: SshServer, src: Path, dst: Path,
                              settings: SshSettings) -> str:
    """Start a throttled move, wait until it copies, and drop this client: the move goes on."""
    move = await start_move(parse_target(sshd.alias), MoveRequest(str(src), str(dst),
                                                                  bwlimit="1M"),
                            settings=settings)
    async for event in move.events():
        if isinstance(event, ProgressEvent) and event.bytes_copied:
            break
    move.close()
    assert move.move_id is not None
    return move.move_id


async def test_cancel_after_reattach(sshd, public_tmp, tmpfs):
    contents = make_tree(public_tmp / "src", files=8, size=250_000)
    settings = SshSettings(config_files=[sshd.config_file])
    target = parse_target(sshd.alias)
    move_id = await start_and_walk_away(sshd, public_tmp / "src", tmpfs / "dst", settings)
    again = await attach_move(target, move_id, settings=settings)
    model = MoveProgress()
    async for event in again.events():
        model.apply(event)
        if model.phase is Phase.COPYING and model.bytes_copied:
            await again.cancel()
    assert model.phase is Phase.CANCELLED
    assert again.exit_status == 3
    assert "cancelled by the user (Ctrl-C, or Cancel in the TUI)" in model.error
    assert read_tree(public_tmp / "src") == contents
    assert list(tmpfs.iterdir()) == []


async def test_two_moves_of_one_source_the_second_is_refused(sshd, public_tmp, tmpfs):
    contents = make_tree(public_tmp / "src", files=8, size=250_000)
    settings = SshSettings(config_files=[sshd.config_file])
    target = parse_target(sshd.alias)
    first = await start_move(target, MoveRequest(str(public_tmp / "src"), str(tmpfs / "a"),
                                                  bwlimit="2M"), settings=settings)
    second = await start_move(target, MoveRequest(str(public_tmp / "src"), str(tmpfs / "b")),
                              settings=settings)
    refusal = [event async for event in second.events()]
    assert second.exit_status == 2
    assert refusal[-1].phase is Phase.ERROR
    assert f"already being moved (move {first.move_id})" in refusal[-1].error
    model = MoveProgress()
    async for event in first.events():
        model.apply(event)
    assert model.phase is Phase.COMPLETE
    assert read_tree(tmpfs / "a") == contents and not (tmpfs / "b").exists()


async def test_sigkilled_worker_is_reported_failed_with_the_data_intact(sshd, public_tmp,
                                                                         tmpfs):
    contents = make_tree(public_tmp / "src", files=8, size=250_000)
    settings = SshSettings(config_files=[sshd.config_file])
    target = parse_target(sshd.alias)
    move_id = await start_and_walk_away(sshd, public_tmp / "src", tmpfs / "dst", settings)
    state_dir = f"/home/{sshd.user}/.local/state/servermove/moves/{move_id}"
    pid = json.loads(Path(state_dir, "state.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)  # as a reboot or the OOM killer would
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    again = await attach_move(target, move_id, settings=settings)
    model = MoveProgress()
    async for event in again.events():
        model.apply(event)
    assert model.phase is Phase.ERROR and again.exit_status == 1
    assert model.data_state.value == "source"
    assert "stopped without finishing" in model.error and "untouched" in model.error
    assert (model.seq_gaps, model.duplicates) == (0, 0)
    assert read_tree(public_tmp / "src") == contents  # the source is whole
    staging = [p for p in tmpfs.iterdir() if p.name.startswith(".servermove-staging-")]
    assert staging and str(staging[0]) in model.error  # named so it can be cleaned
    run("rm", "-rf", staging[0])


@pytest.mark.parametrize("name", ["default", "py3.6", "py3.13"])
def test_journal_commands_on_every_interpreter(name, public_tmp, tmpfs):
    """start / attach / list / cancel on the oldest and newest CPython a server may have."""
    python = interpreter(name)
    build_everything_tree(public_tmp / "src")
    before = snapshot_tree(public_tmp / "src")
    started = mover(python, "start", public_tmp / "src", tmpfs / "dst")
    assert started.returncode == 0, started.stderr
    move_id = started.subjects("move.started")[0]["moveId"]
    attached = mover(python, "attach", move_id)
    assert attached.returncode == 0, attached.stderr
    assert attached.progress()[-1]["phase"] == "complete"
    assert snapshot_tree(tmpfs / "dst") == before
    [listed] = mover(python, "list").subjects("move.listed")
    assert (listed["moveId"], listed["phase"], listed["alive"]) == (move_id, "complete", False)
    cancel = mover(python, "cancel", move_id)
    assert cancel.subjects("move.cancel-requested")[0]["running"] is False
    unknown = mover(python, "attach", "0123456789ab")
    assert unknown.returncode == 2 and "no move 0123456789ab" in unknown.progress()[-1]["error"]


class FlakyLink:
    """A TCP relay to the real sshd whose open connections can be made to go silent, as when
    Wi-Fi drops or a laptop sleeps: no FIN, no RST, just nothing. New connections get through."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: asyncio.base_events.Server | None = None
        self.silenced: list[asyncio.Event] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        silent = asyncio.Event()
        self.silenced.append(silent)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                if not silent.is_set():
                    dst.write(data)
                    await dst.drain()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer),
                             return_exceptions=True)
        for w in (writer, up_writer):
            w.close()

    def go_silent(self) -> None:
        for silent in self.silenced:
            silent.set()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.silenced:
            w.set()


async def test_a_silent_network_is_noticed_by_keepalive_and_the_move_picked_up(
        sshd, public_tmp, tmpfs, tmp_path):
    contents = make_tree(public_tmp / "src", files=8, size=250_000)
    link = FlakyLink(sshd.port)
    port = await link.start()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {sshd.host_public_key}\n")
    config = sshd.write_config(tmp_path / "cfg", known_hosts=known, extra=(
        # ServerAlive* from the ssh config are honoured: a dead link is noticed in ~2 s.
        "    ServerAliveInterval 1\n    ServerAliveCountMax 2\n"))
    config.write_text(config.read_text().replace(f"Port {sshd.port}", f"Port {port}"))
    try:
        move = await start_move(parse_target(sshd.alias),
                                MoveRequest(str(public_tmp / "src"), str(tmpfs / "dst"),
                                            bwlimit="1M"),
                                settings=SshSettings(config_files=[config]))
        model = MoveProgress()
        links: list[bool] = []
        async for event in move.events():
            model.apply(event)
            if isinstance(event, LinkEvent):
                links.append(event.lost)
            elif not links and model.phase is Phase.COPYING and model.bytes_copied:
                link.go_silent()
        assert links == [True, False]
        assert model.phase is Phase.COMPLETE and move.exit_status == 0
        assert (model.seq_gaps, model.duplicates) == (0, 0)
        assert read_tree(tmpfs / "dst") == contents
    finally:
        await link.close()
