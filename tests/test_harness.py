"""The harness itself: real sshd, real user, real filesystems."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import asyncssh
import pytest

from tests.harness import TEST_USER, as_user, mounted_tmpfs


def test_openssh_client_logs_in_as_the_test_user(sshd):
    result = sshd.ssh("id", "-un")
    assert result.stdout.strip() == TEST_USER
    assert sshd.ssh("true").returncode == 0


async def test_asyncssh_connects_with_the_same_config(sshd):
    async with asyncssh.connect(sshd.alias, config=[str(sshd.config_file)]) as conn:
        result = await conn.run("id -un; echo $HOME", check=True)
    lines = result.stdout.split()
    assert lines[0] == TEST_USER
    assert lines[1] == pwd.getpwnam(TEST_USER).pw_dir


async def test_asyncssh_refuses_a_host_key_it_does_not_know(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = sshd.write_config(tmp_path / "ssh_config", known_hosts=empty)
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        async with asyncssh.connect(sshd.alias, config=[str(config)]):
            pass


def test_tmpfs_is_a_second_filesystem_and_is_unmounted(tmp_path):
    with mounted_tmpfs("1m", parent=tmp_path) as mount:
        assert os.stat(mount).st_dev != os.stat(tmp_path).st_dev
        assert str(mount) in Path("/proc/mounts").read_text()
    assert str(mount) not in Path("/proc/mounts").read_text()
    assert not mount.exists()


def test_tiny_fs_really_fills_up(tiny_fs):
    with pytest.raises(OSError) as raised, open(tiny_fs / "big", "wb") as handle:
        for _ in range(4):
            handle.write(b"\0" * (512 * 1024))
            handle.flush()
            os.fsync(handle.fileno())
    assert raised.value.errno == 28  # ENOSPC


def test_unprivileged_user_is_really_unprivileged(public_tmp):
    root_only = public_tmp / "root-only"
    root_only.mkdir(mode=0o700)
    os.chown(root_only, 0, 0)
    result = subprocess.run(["ls", str(root_only)], capture_output=True, text=True,
                            **as_user())
    assert result.returncode != 0
    assert "Permission denied" in result.stderr
