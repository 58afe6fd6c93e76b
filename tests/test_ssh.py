"""The SSH layer against a real OpenSSH sshd; an in-process asyncssh server for a dropped link."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import asyncssh
import pytest

from tests.cli_support import (
    make_tree,
    on_a_terminal,
    read_tree,
    servermove,
    start_json_move,
    wait_for_copying,
)
from tests.harness import NO_PYTHON_USER, NOISY_USER, SshServer, run
from tui.core.errors import HostKeyUnknown, PythonMissing
from tui.core.progress import MoveProgress
from tui.core.protocol import LinkEvent, MalformedLine, Phase, ProgressEvent
from tui.core.runner import BOOTSTRAP, MoveRequest, SshSettings, start_move
from tui.core.ssh import connect_target
from tui.core.targets import parse_target


def test_bootstrap_fits_on_any_command_line():
    assert len(BOOTSTRAP) < 400


def test_bad_target_is_one_line_and_touches_nothing(public_tmp):
    src = public_tmp / "src"
    src.mkdir()
    result = servermove("move", "-bad host", src, public_tmp / "dst")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "bad target" in result.stderr
    assert not (public_tmp / "dst").exists()


def test_missing_ssh_config_file_is_a_clear_error(public_tmp):
    result = servermove("move", "--ssh-config", public_tmp / "nope", "host", "/a", "/b")
    assert result.returncode == 2
    assert result.stderr.strip() == f"servermove: ssh config file {public_tmp / 'nope'} not found"


def test_local_move_json_is_exactly_the_movers_lines(public_tmp, tmpfs):
    contents = make_tree(public_tmp / "src")
    result = servermove("move", "--json", "local", public_tmp / "src", tmpfs / "dst")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    messages = [json.loads(line) for line in lines]  # every stdout line is JSON
    assert messages[0]["subject"] == "mover.hello"
    progress = [m["data"] for m in messages if m["subject"] == "move.progress"]
    assert progress[-1]["phase"] == "complete"
    assert progress[-1]["filesCopied"] == len(contents)
    assert read_tree(tmpfs / "dst") == contents
    assert not (public_tmp / "src").exists()


def test_full_move_across_filesystems_over_ssh(sshd: SshServer, public_tmp, tmpfs):
    contents = make_tree(public_tmp / "src", files=40)
    result = servermove("move", "--json", "--ssh-config", sshd.config_file, sshd.alias,
                        public_tmp / "src", tmpfs / "moved")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line)["data"] for line in result.stdout.splitlines()
              if json.loads(line)["subject"] == "move.progress"]
    assert [e["phase"] for e in events][-1] == "complete"
    assert "copying" in {e["phase"] for e in events}
    assert read_tree(tmpfs / "moved") == contents
    assert not (public_tmp / "src").exists()
    owners = {p.stat().st_uid for p in (tmpfs / "moved").rglob("*")}
    assert owners == {sshd_uid()}  # moved as the unprivileged login user


def test_a_json_py_in_the_login_home_is_never_imported(sshd: SshServer, public_tmp, tmpfs):
    # The bootstrap runs in the login's home: a json.py lying there (or on PYTHONPATH) must not
    # be what it imports; under sudo it would run as root.
    import pwd

    trap = Path(pwd.getpwnam("smtest").pw_dir) / "json.py"
    marker = public_tmp / "the-trap-ran"
    trap.write_text(f"open({str(marker)!r}, 'w').close()\n")
    run("chown", "smtest", trap)
    try:
        contents = make_tree(public_tmp / "src", files=3)
        result = servermove("move", "--json", "--ssh-config", sshd.config_file, sshd.alias,
                            public_tmp / "src", tmpfs / "moved")
        assert not marker.exists()
        assert result.returncode == 0, result.stderr
        assert read_tree(tmpfs / "moved") == contents
    finally:
        trap.unlink()


def sshd_uid() -> int:
    import pwd

    return pwd.getpwnam("smtest").pw_uid


def test_rich_display_ends_with_a_summary_line(sshd: SshServer, public_tmp, tmpfs):
    make_tree(public_tmp / "src", files=5)
    result = servermove("move", "--ssh-config", sshd.config_file, sshd.alias,
                        public_tmp / "src", tmpfs / "moved")
    assert result.returncode == 0, result.stderr
    assert "plan: copy across filesystems" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("moved ")


def _known_hosts_config(sshd: SshServer, tmp: Path, known: str) -> Path:
    known_hosts = tmp / "known_hosts"
    known_hosts.write_text(known)
    return sshd.write_config(tmp / "ssh_config", known_hosts=known_hosts)


def test_unknown_host_key_refused_at_once_without_a_terminal(sshd, public_tmp, tmp_path):
    make_tree(public_tmp / "src", files=3)
    before = read_tree(public_tmp / "src")
    config = _known_hosts_config(sshd, tmp_path, "")
    started = time.monotonic()
    result = servermove("move", "--ssh-config", config, sshd.alias, public_tmp / "src",
                        public_tmp / "dst", timeout=30)
    assert time.monotonic() - started < 15  # refused, not waiting for an answer
    assert result.returncode != 0
    fingerprint = run("ssh-keygen", "-lf", sshd.host_key.with_suffix(".pub")).stdout.split()[1]
    assert fingerprint in result.stderr
    assert "not a known host" in result.stderr
    assert result.stderr.count("\n") == 1
    assert read_tree(public_tmp / "src") == before and not (public_tmp / "dst").exists()
    assert (tmp_path / "known_hosts").read_text() == ""  # nothing accepted silently


def test_changed_host_key_refused_loudly(sshd, public_tmp, tmp_path):
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "other")
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    config = _known_hosts_config(sshd, tmp_path, f"[127.0.0.1]:{sshd.port} {other}\n")
    make_tree(public_tmp / "src", files=3)
    result = servermove("move", "--ssh-config", config, sshd.alias, public_tmp / "src",
                        public_tmp / "dst")
    assert result.returncode != 0
    assert "has CHANGED" in result.stderr and "ssh-keygen -R" in result.stderr
    assert not (public_tmp / "dst").exists()


class ScriptedPrompter:
    def __init__(self, accept: bool) -> None:
        self.accept = accept
        self.asked: list[tuple[str, int, str, str]] = []

    async def confirm_host_key(self, question) -> bool:
        self.asked.append((question.host, question.port, question.key_type, question.fingerprint))
        return self.accept

    async def ask_sudo_password(self, target) -> str | None:
        raise AssertionError("no sudo in this test")


async def test_accepted_host_key_is_remembered(sshd, tmp_path):
    config = _known_hosts_config(sshd, tmp_path, "")
    settings = SshSettings(config_files=[config])
    target = parse_target(sshd.alias)
    prompter = ScriptedPrompter(accept=True)
    conn = await connect_target(target, settings, prompter)
    conn.close()
    fingerprint = run("ssh-keygen", "-lf", sshd.host_key.with_suffix(".pub")).stdout.split()[1]
    assert prompter.asked == [("127.0.0.1", sshd.port, "ssh-ed25519", fingerprint)]
    assert (tmp_path / "known_hosts").read_text().split() == [
        f"[127.0.0.1]:{sshd.port}", *sshd.host_public_key.split()]
    # OpenSSH itself now trusts it too, and we do not ask again.
    assert run("ssh", "-F", config, "-o", "BatchMode=yes", sshd.alias, "true").returncode == 0
    conn = await connect_target(target, settings, ScriptedPrompter(accept=False))
    conn.close()


async def test_rejected_host_key_is_not_written(sshd, tmp_path):
    config = _known_hosts_config(sshd, tmp_path, "")
    with pytest.raises(HostKeyUnknown, match="rejected"):
        await connect_target(parse_target(sshd.alias), SshSettings(config_files=[config]),
                             ScriptedPrompter(accept=False))
    assert (tmp_path / "known_hosts").read_text() == ""


async def test_no_python3_on_the_server(sshd, public_tmp, tmp_path):
    config = sshd.write_config(tmp_path / "cfg", user=NO_PYTHON_USER)
    with pytest.raises(PythonMissing, match="python3 not found on smtest-host"):
        await start_move(parse_target(sshd.alias), MoveRequest(str(public_tmp), "/x"),
                         settings=SshSettings(config_files=[config]))


def test_no_python3_is_one_line_from_the_cli(sshd, public_tmp, tmp_path):
    config = sshd.write_config(tmp_path / "cfg", user=NO_PYTHON_USER)
    result = servermove("move", "--ssh-config", config, sshd.alias, public_tmp, "/x")
    assert result.returncode != 0
    assert result.stderr.startswith("servermove: python3 not found on smtest-host")
    assert result.stderr.count("\n") == 1


async def test_login_noise_does_not_break_the_stream(sshd, public_tmp, tmp_path):
    noisy_home = public_tmp / "noisy"
    noisy_home.mkdir()
    (noisy_home / "src").mkdir()
    (noisy_home / "src" / "f").write_text("data")
    run("chown", "-R", f"{NOISY_USER}:{NOISY_USER}", noisy_home)
    config = sshd.write_config(tmp_path / "cfg", user=NOISY_USER)
    mover = await start_move(parse_target(sshd.alias),
                             MoveRequest(str(noisy_home / "src"), str(noisy_home / "dst")),
                             settings=SshSettings(config_files=[config]))
    events = [e async for e in mover.events()]
    assert not [e for e in events if isinstance(e, MalformedLine)]
    assert isinstance(events[-1], ProgressEvent) and events[-1].phase is Phase.COMPLETE
    assert (noisy_home / "dst" / "f").read_text() == "data"


async def test_cancel_over_ssh_leaves_the_source_whole(sshd, public_tmp, tmpfs):
    contents = make_tree(public_tmp / "src", files=10, size=400_000)
    mover = await start_move(
        parse_target(sshd.alias),
        MoveRequest(str(public_tmp / "src"), str(tmpfs / "dst"), bwlimit="1M"),
        settings=SshSettings(config_files=[sshd.config_file]))
    model = MoveProgress()
    async for event in mover.events():
        model.apply(event)
        if model.phase is Phase.COPYING and model.bytes_copied > 0:
            await mover.cancel()
    assert model.phase is Phase.CANCELLED
    assert mover.exit_status == 3
    assert read_tree(public_tmp / "src") == contents
    assert list(tmpfs.iterdir()) == []  # staging removed, nothing at the destination


async def test_many_concurrent_moves_to_one_host(sshd, public_tmp, tmpfs):
    count = 12
    trees = {}
    for i in range(count):
        trees[i] = make_tree(public_tmp / f"src{i}", files=5, size=2000)
    settings = SshSettings(config_files=[sshd.config_file])

    async def one(i: int) -> tuple[Phase | None, str | None]:
        mover = await start_move(parse_target(sshd.alias),
                                 MoveRequest(str(public_tmp / f"src{i}"), str(tmpfs / f"dst{i}"),
                                             server_name=f"s{i}"), settings=settings)
        model = MoveProgress()
        async for event in mover.events():
            model.apply(event)
        mover.close()
        return model.phase, model.error

    outcomes = await asyncio.gather(*(one(i) for i in range(count)))
    assert outcomes == [(Phase.COMPLETE, None)] * count
    for i in range(count):
        assert read_tree(tmpfs / f"dst{i}") == trees[i]


# -- a server that drops the link mid-stream (OpenSSH cannot be made to do that on cue) ---------


class _OpenServer(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # no authentication needed: this server only exists for the test


async def test_dropped_link_reattaches_with_no_gap_or_duplicate(tmp_path):
    """A server whose network drops mid-stream: the client says so, dials again, re-attaches
    from the last sequence number it saw, and the model sees every event exactly once."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    journal = [json.dumps({"subject": "move.progress", "data": {
        "serverName": "x", "phase": phase, "bytesTotal": 100, "bytesCopied": copied,
        "filesTotal": 2, "filesCopied": 2 if phase == "complete" else 0, "seq": seq,
        "moveId": "feedc0ffee00", "ts": 1000.0 + seq, "dataState": (
            "destination" if phase == "complete" else None)}}).encode() + b"\n"
        for seq, (phase, copied) in enumerate(
            [("calculating", 0), ("copying", 10), ("copying", 40), ("copying", 70),
             ("verifying", 100), ("cleaning", 100), ("complete", 100)], 1)]
    attaches: list[int] = []

    async def journal_server(process: asyncssh.SSHServerProcess) -> None:
        await process.stdin.readexactly(int(await process.stdin.readline()))  # the loader
        header = json.loads(await process.stdin.readline())
        await process.stdin.readexactly(header["size"])
        argv = header["argv"]
        process.stdout.write(b'{"subject":"mover.hello","data":{"version":1}}\n')
        if argv[0] == "start":
            process.stdout.write(b'{"subject":"move.started","data":{"moveId":"feedc0ffee00"}}\n')
            process.exit(0)
            return
        assert argv[:2] == ["attach", "feedc0ffee00"]
        from_seq = int(argv[argv.index("--from-seq") + 1])
        attaches.append(from_seq)
        stop = 3 if len(attaches) == 1 else len(journal)  # the first link dies after seq 3
        for line in journal[from_seq - 1:stop]:
            process.stdout.write(line)
        await process.stdout.drain()
        if len(attaches) == 1:
            await asyncio.sleep(0.1)
            process.channel.get_connection().abort()  # the network goes away
        else:
            process.exit(0)

    server = await asyncssh.create_server(_OpenServer, "127.0.0.1", 0,
                                          server_host_keys=[host_key],
                                          process_factory=journal_server, encoding=None)
    port = server.sockets[0].getsockname()[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} "
                     f"{host_key.export_public_key('openssh').decode().strip()}\n")
    config = tmp_path / "cfg"
    config.write_text(f"Host flaky\n  HostName 127.0.0.1\n  Port {port}\n  User any\n"
                      f"  UserKnownHostsFile {known}\n")
    try:
        move = await start_move(parse_target("flaky"), MoveRequest("/a", "/b"),
                                settings=SshSettings(config_files=[config]))
        model = MoveProgress()
        links = []
        seqs = []
        async for event in move.events():
            model.apply(event)
            if isinstance(event, LinkEvent):
                links.append((event.lost, model.phase))
            else:
                seqs.append(event.seq)
        assert attaches == [1, 4]  # re-attached right after the last line seen
        assert seqs == list(range(1, 8))
        assert (model.seq_gaps, model.duplicates) == (0, 0)
        assert links == [(True, Phase.COPYING), (False, Phase.COPYING)]
        assert model.phase is Phase.COMPLETE and not model.link_lost
        assert move.exit_status == 0
    finally:
        server.close()
        await server.wait_closed()


def test_ctrl_c_cancels_the_move_and_waits_for_cancelled(sshd, public_tmp, tmpfs):
    contents = make_tree(public_tmp / "src", files=10, size=400_000)
    process = start_json_move("--bwlimit", "1M", "--ssh-config", sshd.config_file, sshd.alias,
                              public_tmp / "src", tmpfs / "dst")
    lines: list[dict] = []
    wait_for_copying(process, lines)
    process.send_signal(signal.SIGINT)
    rest, stderr = process.communicate(timeout=30)
    lines += [json.loads(line) for line in rest.splitlines()]
    assert process.returncode == 3, stderr
    assert lines[-1]["data"]["phase"] == "cancelled"
    assert lines[-1]["data"]["dataState"] == "source"
    assert "cancelled" in stderr and "the source is untouched" in stderr
    assert read_tree(public_tmp / "src") == contents
    assert list(tmpfs.iterdir()) == []


async def test_proxyjump_from_the_ssh_config_is_honoured(sshd, public_tmp, tmpfs, tmp_path):
    make_tree(public_tmp / "src", files=3)
    config = sshd.write_config(tmp_path / "cfg", alias="jumphost")
    inner = sshd.write_config(tmp_path / "inner", alias="behind-jump",
                              extra="    ProxyJump jumphost\n")
    config.write_text(config.read_text() + inner.read_text())
    log = sshd.root / "sshd.log"
    logins_before = log.read_text().count("Accepted publickey")
    mover = await start_move(parse_target("behind-jump"),
                             MoveRequest(str(public_tmp / "src"), str(tmpfs / "dst")),
                             settings=SshSettings(config_files=[config]))
    events = [event async for event in mover.events()]
    assert events[-1].phase is Phase.COMPLETE
    mover.close()
    # Two logins for one move: one to the jump host, one through it to the target.
    assert log.read_text().count("Accepted publickey") - logins_before == 2


def test_unknown_host_key_asked_on_a_terminal_and_remembered(sshd, public_tmp, tmpfs,
                                                             tmp_path):
    """The real CLI on a real terminal (a pty): it shows the fingerprint, asks, and on 'yes'
    writes known_hosts itself and goes on with the move."""
    contents = make_tree(public_tmp / "src", files=3)
    config = _known_hosts_config(sshd, tmp_path, "")
    fingerprint = run("ssh-keygen", "-lf", sshd.host_key.with_suffix(".pub")).stdout.split()[1]
    status, text = on_a_terminal(["move", "--ssh-config", str(config), sshd.alias,
                                  str(public_tmp / "src"), str(tmpfs / "dst")], [b"yes\n"])
    assert "continue connecting (yes/no/[fingerprint])?" in text, text
    assert fingerprint in text and "ssh-ed25519" in text
    assert status == 0, text
    assert (tmp_path / "known_hosts").read_text().split() == [
        f"[127.0.0.1]:{sshd.port}", *sshd.host_public_key.split()]
    assert read_tree(tmpfs / "dst") == contents
