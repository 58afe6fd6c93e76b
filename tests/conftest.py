"""Session-wide real parts: see harness.py for what each one is."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    PgCluster,
    SshServer,
    mounted_tmpfs,
    postgres_cluster,
    start_sshd,
    user_owned_dir,
)


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory,
                       monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own config, data and state dirs and its own journal for local moves
    (inherited by the CLI subprocesses it starts), so no test reads or writes the real user's
    servers.toml, moves log or /var/lib/servermove."""
    home = tmp_path_factory.mktemp("servermove-home")
    for name in ("CONFIG", "DATA", "STATE", "JOURNAL"):
        monkeypatch.setenv(f"SERVERMOVE_{name}_DIR", str(home / name.lower()))
    return home


@pytest.fixture(scope="session")
def public_root() -> Iterator[Path]:
    """A directory every user can traverse (pytest's own tmp dirs are root-only, 0700)."""
    root = Path(tempfile.mkdtemp(prefix="servermove-tests-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def public_tmp(public_root: Path) -> Iterator[Path]:
    """A fresh directory owned by the unprivileged test user (sshd logins land as that user)."""
    path = user_owned_dir(public_root)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd(public_root: Path) -> Iterator[SshServer]:
    """A real OpenSSH sshd on 127.0.0.1: `ssh -F server.config_file server.alias`."""
    server = start_sshd(public_root / "sshd")
    yield server
    server.stop()


@pytest.fixture
def tmpfs(public_root: Path) -> Iterator[Path]:
    """A second real filesystem (tmpfs), for cross-device moves."""
    with mounted_tmpfs("512m", parent=public_root, mode="0777") as path:
        yield path


@pytest.fixture
def tiny_fs(public_root: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem, for real disk-full faults."""
    with mounted_tmpfs("1m", parent=public_root, mode="0777") as path:
        yield path


@pytest.fixture
def pg_cluster(public_root: Path) -> Iterator[PgCluster]:
    """A real throwaway PostgreSQL cluster, running, on a free port; dropped afterwards."""
    with postgres_cluster(public_root) as cluster:
        yield cluster


@pytest.fixture
def game_site(public_root: Path, tmpfs: Path, tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """(SRC, DST, pidfile) for a game-server move: SRC made where every user can reach it, DST
    on another filesystem. Afterwards the server is stopped and SRC, a link the cutover left
    there and any old copy set aside beside it are gone, whatever the test did."""
    from tests.test_service_move import remove_game

    src = public_root / f"game-{os.getpid()}"
    src.mkdir()
    pidfile = tmp_path / "pid"
    yield src, tmpfs / "dst", pidfile
    remove_game(src, pidfile)
    for left in src.parent.glob(f".{src.name}.servermove-*"):
        subprocess.run(["rm", "-rf", str(left)])


SNAPSHOT_ROOT = Path("/tmp/servermove-snapshots")  # the TUI snapshots' inventories


@pytest.fixture
def snapshot_dir(request: pytest.FixtureRequest) -> Path:
    """Paths show on screen: each snapshot's inventory lives at a fixed place, named after its
    test."""
    path = SNAPSHOT_ROOT / request.node.name.replace("[", "-").replace("]", "")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
