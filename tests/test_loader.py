"""remote/loader.py: the mover run from a cache of its compiled code, started as servermove starts
it (the bootstrap, real interpreters, real files, the real unprivileged user for a planted cache).
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest

from tests.harness import TEST_USER, mounted_tmpfs, run
from tests.test_mover import MOVER, interpreter
from tui.core.runner import BOOTSTRAP, PYTHON_FLAGS, program_input

LOADER = MOVER.parent / "loader.py"
MOVER_A = b"print('mover A')\n"
MOVER_B = b"print('mover B')\n"
PLANTED = "print('planted')"


def start(python: str, journal: Path, source: bytes | None = None,
          argv: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The bootstrap, as servermove starts it, with the loader, header and `source` on stdin."""
    env = {"PATH": "/usr/bin:/bin", "SERVERMOVE_JOURNAL_DIR": str(journal)}
    return subprocess.run([python, *PYTHON_FLAGS, "-c", BOOTSTRAP],
                          input=program_input(list(argv), source), capture_output=True,
                          env=env, timeout=60, cwd="/")


def cache_file(python: str, journal: Path, source: bytes) -> Path:
    """Where `python`'s loader keeps `source`'s compiled code."""
    name = run(python, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import loader; "
               "print(loader.cache_name(open(sys.argv[2], 'rb').read()))",
               LOADER.parent, write_source(journal.parent, source)).stdout.strip()
    return journal / "code" / name


def write_source(where: Path, source: bytes) -> Path:
    path = where / "source.py"
    path.write_bytes(source)
    return path


def plant(python: str, path: Path, program: str = PLANTED, user: str | None = None) -> None:
    """Write `program`, compiled and marshalled by `python`, where the loader looks for code."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run(python, "-c", "import marshal, sys; open(sys.argv[1], 'wb').write(marshal.dumps("
        "compile(sys.argv[2], 'x', 'exec')))", path, program)
    path.chmod(0o600)
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


@pytest.fixture(params=["default", "py3.6", "py3.13"])
def python(request: pytest.FixtureRequest) -> str:
    return interpreter(request.param)


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    path = tmp_path / "journal"
    path.mkdir()
    return path


def test_a_cache_hit_runs_the_same_mover(python, journal, tmp_path):
    for round_no in range(2):
        src, dst = tmp_path / f"src{round_no}", tmp_path / f"dst{round_no}"
        src.mkdir()
        (src / "f").write_bytes(b"x" * 4096)
        result = start(python, journal, argv=("move", str(src), str(dst)))
        assert result.returncode == 0, result.stderr
        assert b'"phase":"complete"' in result.stdout
        assert (dst / "f").read_bytes() == b"x" * 4096 and not src.exists()
        cached = cache_file(python, journal, MOVER.read_bytes())
        assert [p.name for p in cached.parent.iterdir()] == [cached.name]
        if round_no == 0:
            first = cached.stat()
    again = cached.stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # read, kept
    assert again.st_mode & 0o777 == 0o600 and cached.parent.stat().st_mode & 0o777 == 0o700


def test_the_cached_code_is_what_runs(python, journal):
    plant(python, cache_file(python, journal, MOVER_A))
    assert start(python, journal, MOVER_A).stdout == b"planted\n"


def test_a_changed_mover_does_not_run_the_old_cache(python, journal):
    old = cache_file(python, journal, MOVER_A)
    plant(python, old)
    result = start(python, journal, MOVER_B)
    assert result.stdout == b"mover B\n", result.stderr
    new = cache_file(python, journal, MOVER_B)
    assert [p.name for p in new.parent.iterdir()] == [new.name]  # the old one cleared


def group_writable_dir(path: Path) -> None:
    path.parent.chmod(0o770)


def other_writable_dir(path: Path) -> None:
    path.parent.chmod(0o702)


def group_writable_file(path: Path) -> None:
    path.chmod(0o620)


def owned_by_another_user(path: Path) -> None:
    entry = pwd.getpwnam(TEST_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def dir_owned_by_another_user(path: Path) -> None:
    entry = pwd.getpwnam(TEST_USER)
    os.chown(path.parent, entry.pw_uid, entry.pw_gid)


def file_is_a_symlink(path: Path) -> None:
    real = path.with_name("real")
    path.rename(real)
    path.symlink_to(real)


def dir_is_a_symlink(path: Path) -> None:
    real = path.parent.with_name("real-code")
    path.parent.rename(real)
    path.parent.symlink_to(real)


def file_has_another_link(path: Path) -> None:
    os.link(path, path.parent.parent / "other-link")


@pytest.mark.parametrize("spoil", [group_writable_dir, other_writable_dir, group_writable_file,
                                   owned_by_another_user, dir_owned_by_another_user,
                                   file_is_a_symlink, dir_is_a_symlink, file_has_another_link])
def test_a_cache_someone_else_could_write_is_ignored(spoil, journal):
    python = interpreter("default")
    path = cache_file(python, journal, MOVER_A)
    plant(python, path)
    assert start(python, journal, MOVER_A).stdout == b"planted\n"  # trusted as it was
    spoil(path)
    result = start(python, journal, MOVER_A)
    assert result.returncode == 0 and result.stdout == b"mover A\n", result.stderr


@pytest.mark.parametrize("content", [b"", b"\xff\x00garbage", b"truncate", b"not code"])
def test_a_corrupt_cache_falls_back_to_compiling(python, journal, content):
    path = cache_file(python, journal, MOVER_A)
    plant(python, path)
    whole = path.read_bytes()
    if content == b"truncate":
        content = whole[:len(whole) // 2]
    elif content == b"not code":  # whole marshal data, but a tuple
        run(python, "-c", "import marshal, sys; open(sys.argv[1], 'wb').write("
            "marshal.dumps((1, 'a')))", path)
        content = path.read_bytes()
    path.write_bytes(content)
    result = start(python, journal, MOVER_A)
    assert result.returncode == 0 and result.stdout == b"mover A\n", result.stderr
    assert start(python, journal, MOVER_A).stdout == b"mover A\n"  # and was written anew
    assert path.read_bytes() != content


@pytest.mark.parametrize("trouble", ["read-only", "full"])
def test_a_cache_that_cannot_be_written_still_moves(journal, tmp_path, trouble):
    python = interpreter("default")
    (journal / "code").mkdir(mode=0o700)
    with mounted_tmpfs("64k" if trouble == "full" else "1m", parent=tmp_path,
                       mode="0700") as mount:
        run("mount", "--bind", mount, journal / "code")
        try:
            if trouble == "read-only":
                run("mount", "-o", "remount,bind,ro", journal / "code")
            src, dst = tmp_path / "src", tmp_path / "dst"
            src.mkdir()
            (src / "f").write_bytes(b"x" * 4096)
            result = start(python, journal, argv=("move", str(src), str(dst)))
            assert result.returncode == 0, result.stderr
            assert b'"phase":"complete"' in result.stdout and (dst / "f").exists()
            assert list((journal / "code").iterdir()) == []  # no part of a cache left behind
        finally:
            run("umount", journal / "code")


@pytest.mark.parametrize("environment", [
    {"SERVERMOVE_JOURNAL_DIR": "/srv/journal"},
    {"XDG_STATE_HOME": "/home/someone/.state"},
    {"HOME": "/home/someone"},
])
def test_the_loader_and_the_mover_agree_on_the_journal_root(monkeypatch, environment):
    """The loader keeps its code cache under the mover's journal root and repeats the rule (it
    runs before the mover exists): the two must name the same directory."""
    from remote import loader, mover

    for name in ("SERVERMOVE_JOURNAL_DIR", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    for euid in (0, 1000):
        monkeypatch.setattr(os, "geteuid", lambda euid=euid: euid)
        assert loader.journal_root() == mover.journal_root()
