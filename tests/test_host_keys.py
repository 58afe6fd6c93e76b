"""Unknown and changed host keys against a real sshd: one question per key per run, one line in
known_hosts, and hints that work with the alias's own config."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import pytest

from tests.cli_support import make_tree, on_a_terminal, servermove
from tests.harness import SshServer, run
from tui.core.errors import HostKeyUnknown
from tui.core.runner import SshSettings
from tui.core.ssh import connect_target
from tui.core.targets import parse_target


def _config_with_empty_known_hosts(sshd: SshServer, tmp: Path) -> tuple[Path, Path]:
    known_hosts = tmp / "known_hosts"
    known_hosts.write_text("")
    return sshd.write_config(tmp / "ssh_config", known_hosts=known_hosts), known_hosts


class SlowPrompter:
    """Answers after a while, so that every connection of a burst meets the open question."""

    def __init__(self, accept: bool) -> None:
        self.accept = accept
        self.asked: list[tuple] = []

    async def confirm_host_key(self, *question) -> bool:
        self.asked.append(question)
        await asyncio.sleep(0.5)
        return self.accept

    async def ask_sudo_password(self, target) -> str | None:
        raise AssertionError("no sudo here")


def _fingerprint(sshd: SshServer) -> str:
    return run("ssh-keygen", "-lf", sshd.host_key.with_suffix(".pub")).stdout.split()[1]


async def test_two_connections_at_once_ask_once_and_write_one_line(sshd, tmp_path):
    config, known_hosts = _config_with_empty_known_hosts(sshd, tmp_path)
    settings = SshSettings(config_files=[config])
    prompter = SlowPrompter(accept=True)
    target = parse_target(sshd.alias)
    conns = await asyncio.gather(*(connect_target(target, settings, prompter) for _ in range(3)))
    for conn in conns:
        conn.close()
    assert len(prompter.asked) == 1
    (question,) = prompter.asked[0]
    assert question.alias == sshd.alias and question.known_hosts == known_hosts
    assert question.fingerprint == _fingerprint(sshd)
    assert sshd.alias in question.explanation and str(known_hosts) in question.explanation
    assert known_hosts.read_text().splitlines() == [
        f"[127.0.0.1]:{sshd.port} {sshd.host_public_key.strip()}"]


async def test_a_rejected_key_is_not_asked_about_again_in_the_same_run(sshd, tmp_path):
    config, known_hosts = _config_with_empty_known_hosts(sshd, tmp_path)
    settings = SshSettings(config_files=[config])
    prompter = SlowPrompter(accept=False)
    target = parse_target(sshd.alias)
    results = await asyncio.gather(*(connect_target(target, settings, prompter)
                                     for _ in range(2)), return_exceptions=True)
    assert all(isinstance(r, HostKeyUnknown) and "rejected" in r.message for r in results)
    with pytest.raises(HostKeyUnknown, match="rejected"):
        await connect_target(target, settings, prompter)
    assert len(prompter.asked) == 1
    assert known_hosts.read_text() == ""


async def test_an_accepted_key_already_written_is_not_written_twice(sshd, tmp_path):
    from tui.core.ssh import append_known_host

    config, known_hosts = _config_with_empty_known_hosts(sshd, tmp_path)
    conn = await connect_target(parse_target(sshd.alias), SshSettings(config_files=[config]),
                                SlowPrompter(accept=True))
    key = conn.get_server_host_key()
    conn.close()
    append_known_host(known_hosts, "127.0.0.1", sshd.port, key)
    assert len(known_hosts.read_text().splitlines()) == 1


def test_no_terminal_hint_reaches_the_alias_through_its_config(sshd, public_tmp, tmp_path):
    config, _ = _config_with_empty_known_hosts(sshd, tmp_path)
    result = servermove("moves", "--ssh-config", config, sshd.alias)
    assert result.returncode != 0 and "not a known host" in result.stderr
    hint = result.stderr.strip().rsplit(" or with ", 1)[1]
    assert shlex.split(hint) == ["ssh", "-o", "StrictHostKeyChecking=ask", "-F", str(config),
                                 sshd.alias]


def test_changed_key_hint_removes_the_line_from_the_aliass_own_known_hosts(sshd, tmp_path):
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "other")
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    config = sshd.write_config(tmp_path / "ssh_config", known_hosts=known_hosts)
    result = servermove("moves", "--ssh-config", config, sshd.alias)
    assert result.returncode != 0 and "has CHANGED" in result.stderr
    hint = shlex.split(result.stderr.strip().rsplit("remove its old line with ", 1)[1])
    assert hint[:2] == ["ssh-keygen", "-R"] and hint[-2:] == ["-f", str(known_hosts)]
    run(*hint)  # the hint as the user would run it: the stale line goes
    assert other not in known_hosts.read_text()


def test_the_cli_wants_yes_not_y_and_names_alias_and_file(sshd, public_tmp, tmp_path):
    make_tree(public_tmp / "src", files=1)
    config, known_hosts = _config_with_empty_known_hosts(sshd, tmp_path)
    status, text = on_a_terminal(
        ["moves", "--ssh-config", str(config), sshd.alias], [b"y\n", b"yes\n"])
    assert "Please type 'yes', 'no' or the fingerprint" in text, text
    assert sshd.alias in text and str(known_hosts) in text.replace("\r\n", "")
    assert status == 0, text
    assert known_hosts.read_text().splitlines() == [
        f"[127.0.0.1]:{sshd.port} {sshd.host_public_key.strip()}"]


def test_the_cli_takes_no_for_an_answer(sshd, tmp_path):
    config, known_hosts = _config_with_empty_known_hosts(sshd, tmp_path)
    status, text = on_a_terminal(
        ["moves", "--ssh-config", str(config), sshd.alias], [b"no\n"])
    assert status != 0 and "rejected" in text, text
    assert known_hosts.read_text() == ""
