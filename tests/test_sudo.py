"""sudo per target, against the real sshd and the real sudo: root-owned data is the common case."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness import NOPASSWD_USER, SUDO_PASSWORD, SUDO_USER, SshServer
from tui.core.errors import SudoPasswordNeeded, SudoPasswordWrong
from tui.core.progress import MoveProgress
from tui.core.protocol import Phase
from tui.core.runner import MoveRequest, SshSettings, start_move
from tui.core.targets import Target, parse_target


class PasswordPrompter:
    def __init__(self, password: str | None) -> None:
        self.password = password
        self.asked: list[str] = []

    async def confirm_host_key(self, *args) -> bool:
        raise AssertionError("the host key is known")

    async def ask_sudo_password(self, target: Target) -> str | None:
        self.asked.append(target.label)
        return self.password


def root_owned_tree(root: Path) -> dict[str, tuple[bytes, int, int]]:
    src = root / "rootdata"
    (src / "sub").mkdir(parents=True)
    os.chmod(src, 0o700)  # only root can even look inside
    for name in ("a", "sub/b"):
        (src / name).write_bytes(os.urandom(5000))
        os.chown(src / name, 0, 0)
    os.chown(src / "sub", 123, 456)  # an owner only root can keep
    return {str(p.relative_to(src)): (p.read_bytes() if p.is_file() else b"", p.stat().st_uid,
                                      p.stat().st_gid) for p in src.rglob("*")}


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"", p.stat().st_uid,
                                       p.stat().st_gid) for p in root.rglob("*")}


async def move_as(sshd: SshServer, tmp: Path, user: str, src: Path, dst: Path,
                  prompter: PasswordPrompter | None) -> MoveProgress:
    config = sshd.write_config(tmp / f"cfg-{user}", user=user)
    mover = await start_move(parse_target(sshd.alias, sudo=True), MoveRequest(str(src), str(dst)),
                             settings=SshSettings(config_files=[config]), prompter=prompter)
    model = MoveProgress()
    async for event in mover.events():
        model.apply(event)
    mover.close()
    return model


async def test_sudo_with_a_password_moves_root_owned_data(sshd, public_root, tmpfs, tmp_path):
    before = root_owned_tree(tmp_path)
    prompter = PasswordPrompter(SUDO_PASSWORD)
    model = await move_as(sshd, tmp_path, SUDO_USER, tmp_path / "rootdata", tmpfs / "moved",
                          prompter)
    assert model.phase is Phase.COMPLETE, model.outcome()
    assert prompter.asked == [sshd.alias]  # asked once
    assert snapshot(tmpfs / "moved") == before  # owners kept: it really ran as root
    assert not (tmp_path / "rootdata").exists()
    # The password went to sudo's stdin only: not into sshd's log, the command line, or a file.
    assert SUDO_PASSWORD not in (sshd.root / "sshd.log").read_text()


async def test_sudo_without_password_needs_no_question(sshd, tmpfs, tmp_path):
    before = root_owned_tree(tmp_path)
    model = await move_as(sshd, tmp_path, NOPASSWD_USER, tmp_path / "rootdata",
                          tmpfs / "moved", PasswordPrompter(None))
    assert model.phase is Phase.COMPLETE
    assert snapshot(tmpfs / "moved") == before


async def test_wrong_sudo_password_is_refused_and_nothing_moves(sshd, tmpfs, tmp_path):
    before = root_owned_tree(tmp_path)
    with pytest.raises(SudoPasswordWrong, match="refused the password; nothing was done"):
        await move_as(sshd, tmp_path, SUDO_USER, tmp_path / "rootdata", tmpfs / "moved",
                      PasswordPrompter("wrong"))
    assert snapshot(tmp_path / "rootdata") == before
    assert list(tmpfs.iterdir()) == []


async def test_sudo_password_needed_without_a_terminal(sshd, tmpfs, tmp_path):
    root_owned_tree(tmp_path)
    with pytest.raises(SudoPasswordNeeded, match="needs a password"):
        await move_as(sshd, tmp_path, SUDO_USER, tmp_path / "rootdata", tmpfs / "moved", None)
