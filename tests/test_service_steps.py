"""The service steps of remote/mover.py (stop, start, check, cutover and its undo) and the service
keys of servers.toml, with real processes, real files and a real PostgreSQL cluster.

The mover is imported as a module for these unit-level steps; one test runs them under the
oldest and newest CPython the servers have. This machine has no systemd as PID 1 and no docker
daemon: the systemd and docker shorthands are tested by the commands they produce, not run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import TEST_USER, PgCluster, drop_cluster, run
from tests.test_mover import interpreter
from tui.core.inventory import InventoryError, ServiceConfig, load_inventory

MOVER = Path(__file__).resolve().parent.parent / "remote" / "mover.py"
GAME_SERVER = Path(__file__).resolve().parent / "game_server.py"
MOVE_ID = "0123456789abcdef"


def load_mover():
    spec = importlib.util.spec_from_file_location("servermove_mover_service", MOVER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mover = load_mover()


def running(pid: int) -> bool:
    """True while `pid` runs; a zombie (killed, not yet reaped by init) does not."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def gone(pid: int) -> bool:
    """Wait (a few seconds at most) for a killed process to be gone: SIGKILL lands when the
    kernel next schedules it."""
    deadline = time.monotonic() + 5
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not running(pid)


def wait_for_file(path: Path) -> str:
    deadline = time.monotonic() + 10
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.02)
    return path.read_text().strip()


def cancel_after(calls: int):
    """A cancel_check that raises Cancelled on its `calls`-th call, as a cancel request would."""
    seen = []

    def check() -> None:
        seen.append(1)
        if len(seen) >= calls:
            raise mover.Cancelled()

    return check


@pytest.fixture
def stray_pids() -> Iterator[list[int]]:
    """Pids of processes a test's commands leave behind on purpose; killed at the end."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


# --- service commands ---------------------------------------------------------------------------

def test_a_string_runs_in_a_shell_and_a_list_runs_without_one() -> None:
    assert mover.run_service_command("stop", 'echo "$((1 + 2))"; echo done', 30) == "3\ndone\n"
    literal = mover.run_service_command("stop", ["printf", "%s\\n", "$HOME; echo x"], 30)
    assert literal == "$HOME; echo x\n"


@pytest.mark.parametrize(("command", "message"), [
    ("echo starting; echo 'the disk is busy' >&2; exit 3",
     "the stop command `echo starting; echo 'the disk is busy' >&2; exit 3` failed (exit 3): "
     "the disk is busy"),
    ("exit 4", "the stop command `exit 4` failed (exit 4) without any output"),
    (["/nonexistent/servermove-stop", "now please"],
     "the stop command `/nonexistent/servermove-stop 'now please'` failed (exit 127): "
     "cannot run /nonexistent/servermove-stop: not found"),
    ("kill -9 $$", "the stop command `kill -9 $$` was killed by signal 9 without any output"),
])
def test_a_failed_command_says_which_how_and_its_last_line(command, message) -> None:
    with pytest.raises(mover.Failure) as failure:
        mover.run_service_command("stop", command, 30)
    assert str(failure.value) == message


def test_a_timeout_kills_the_command_and_everything_in_its_group(tmp_path, stray_pids) -> None:
    pidfile = tmp_path / "background.pid"
    # The path goes in as $1: never into the shell string.
    command = ["/bin/sh", "-c", 'sleep 300 & echo $! > "$1"; sleep 300', "sh", str(pidfile)]
    with pytest.raises(mover.Failure) as failure:
        mover.run_service_command("start", command, timeout=1)
    background = int(wait_for_file(pidfile))
    stray_pids.append(background)
    assert "did not finish within 1 second: it was killed" in str(failure.value)
    assert gone(background), "the command's child outlived the timeout"


def test_a_daemon_that_keeps_the_output_open_does_not_hold_the_start(tmp_path,
                                                                     stray_pids) -> None:
    pidfile = tmp_path / "daemon.pid"
    command = ["/bin/sh", "-c", 'sleep 300 & echo $! > "$1"; echo started', "sh", str(pidfile)]
    try:
        output = mover.run_service_command("start", command, timeout=20)
    finally:
        stray_pids.append(int(wait_for_file(pidfile)))
    assert output == "started\n"
    assert running(stray_pids[0]), "a daemon the start command left must go on running"


def test_a_cancel_kills_the_running_command(tmp_path, stray_pids) -> None:
    pidfile = tmp_path / "command.pid"
    command = ["/bin/sh", "-c", 'echo $$ > "$1"; exec sleep 300', "sh", str(pidfile)]
    with pytest.raises(mover.Cancelled):
        mover.run_service_command("stop", command, timeout=60, cancel_check=cancel_after(20))
    pid = int(wait_for_file(pidfile))
    stray_pids.append(pid)
    assert gone(pid)


# --- the health check ---------------------------------------------------------------------------

COUNTING_CHECK = textwrap.dedent("""
    import sys
    path, healthy_at, healthy_output = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    try:
        count = int(open(path).read()) + 1
    except OSError:
        count = 1
    open(path, "w").write(str(count))
    if healthy_output == "-":
        sys.exit(0 if count >= healthy_at else 2)
    print(healthy_output if count >= healthy_at else "false")
""")


def counting_check(counter: Path, healthy_at: int, output: str = "-") -> list[str]:
    return [sys.executable, "-c", COUNTING_CHECK, str(counter), str(healthy_at), output]


def test_the_check_is_retried_until_it_passes(tmp_path) -> None:
    counter = tmp_path / "tries"
    took = mover.wait_until_healthy(counting_check(counter, 3), timeout=60)
    assert counter.read_text() == "3"
    assert took > 0


def test_a_check_that_never_passes_fails_after_its_timeout_in_plain_words() -> None:
    with pytest.raises(mover.Failure) as failure:
        mover.wait_until_healthy("echo not ready yet; exit 2", timeout=1)
    assert re.fullmatch(
        r"the service did not pass its check `echo not ready yet; exit 2` within 1 second "
        r"\(\d+ tries; the last one failed \(exit 2\): not ready yet\)", str(failure.value))


def test_a_check_with_an_expected_output_passes_only_when_it_prints_it(tmp_path) -> None:
    counter = tmp_path / "tries"
    mover.wait_until_healthy(counting_check(counter, 2, "true"), timeout=60,
                             expect_output="true")
    assert counter.read_text() == "2"
    with pytest.raises(mover.Failure) as failure:
        mover.wait_until_healthy(["echo", "false"], timeout=0.5, expect_output="true")
    assert "the last one printed `false`, not `true`" in str(failure.value)


def test_the_check_can_be_cancelled(tmp_path) -> None:
    counter = tmp_path / "tries"
    with pytest.raises(mover.Cancelled):
        mover.wait_until_healthy(counting_check(counter, 10_000), timeout=60,
                                 cancel_check=cancel_after(30))


# --- cutover "symlink" --------------------------------------------------------------------------

def make_tree(root: Path) -> Path:
    (root / "world").mkdir(parents=True)
    (root / "world" / "level.dat").write_bytes(b"level")
    (root / "server.properties").write_text("motd=hello\n")
    return root


def test_symlink_cutover_renames_the_old_dir_aside_and_undo_puts_it_back(tmp_path) -> None:
    old = make_tree(tmp_path / "srv" / "data")
    new = tmp_path / "big" / "data"
    shutil.copytree(old, new, symlinks=True)
    inode = old.stat().st_ino
    cutover = mover.cutover_from_text("symlink")
    [preview] = cutover.plan(bytes(old), bytes(new), MOVE_ID)
    assert str(new) in preview["change"]

    record = cutover.apply(bytes(old), bytes(new), MOVE_ID)
    aside = Path(record["aside"])
    assert aside.parent == old.parent and aside.name == f".data.servermove-old-{MOVE_ID}"
    assert old.is_symlink() and os.readlink(old) == str(new)
    assert aside.stat().st_ino == inode
    (old / "written-after").write_text("goes to the new dir")
    assert (new / "written-after").exists()
    assert json.loads(json.dumps(record)) == record  # it can go into the journal as it is

    mover.undo_cutover(record)
    assert not old.is_symlink() and old.stat().st_ino == inode
    assert not aside.exists()
    assert sorted(p.name for p in old.iterdir()) == ["server.properties", "world"]
    mover.undo_cutover(record)  # a second undo (a retried rollback) changes nothing
    assert old.stat().st_ino == inode and not old.is_symlink()
    assert sorted(p.name for p in old.parent.iterdir()) == ["data"]


def test_symlink_undo_leaves_a_symlink_that_is_no_longer_ours(tmp_path) -> None:
    old = make_tree(tmp_path / "srv" / "data")
    new = tmp_path / "big" / "data"
    shutil.copytree(old, new)
    record = mover.SymlinkCutover().apply(bytes(old), bytes(new), MOVE_ID)
    old.unlink()
    old.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(mover.Failure) as failure:
        mover.undo_cutover(record)
    assert str(failure.value) == (
        f"{old} is no longer the symlink servermove made: left it as it is; the old directory "
        f"is at {record['aside']}")
    assert os.readlink(old) == str(tmp_path / "elsewhere")
    assert Path(record["aside"], "world", "level.dat").read_bytes() == b"level"


def test_symlink_cutover_is_refused_for_what_is_not_a_directory(tmp_path) -> None:
    plain = tmp_path / "file"
    plain.write_text("x")
    with pytest.raises(mover.Refused, match="it is not a directory"):
        mover.SymlinkCutover().plan(bytes(plain), bytes(tmp_path / "new"), MOVE_ID)
    with pytest.raises(mover.Refused, match=r"it does not exist$"):
        mover.SymlinkCutover().plan(bytes(tmp_path / "missing"), bytes(tmp_path / "new"),
                                    MOVE_ID)


# --- cutover "config:FILE" ----------------------------------------------------------------------

OLD, NEW = b"/srv/data", b"/mnt/big/data"


@pytest.mark.parametrize(("line", "after"), [
    (b"data_directory = '/srv/data'", b"data_directory = '/mnt/big/data'"),
    (b'dir="/srv/data"', b'dir="/mnt/big/data"'),
    (b"wal = /srv/data/pg_wal  # inside the old dir", b"wal = /mnt/big/data/pg_wal  # inside "
     b"the old dir"),
    (b"path=/bin:/srv/data:/usr/bin", b"path=/bin:/mnt/big/data:/usr/bin"),
    (b"/srv/data", b"/mnt/big/data"),
    (b"a /srv/data b /srv/data/", b"a /mnt/big/data b /mnt/big/data/"),
    # Not the old path as a whole: another directory, or the old path inside a longer one.
    (b"x = /srv/data2", None),
    (b"x = /srv/data.old", None),
    (b"x = /srv/data-backup", None),
    (b"x = /srv/data_1", None),
    (b"x = /srv/database", None),
    (b"x = /mnt/srv/data", None),
    (b"x = rel/srv/data", None),
    (b"x = /srv/data\xc3\xa9", None),
    (b"x = /srv/dat", None),
])
def test_the_config_cutover_replaces_the_old_path_only_as_a_whole_path(line, after) -> None:
    content, changes = mover.repointed(b"# top\n" + line + b"\n", OLD, NEW)
    if after is None:
        assert changes == [] and content == b"# top\n" + line + b"\n"
    else:
        assert changes == [(2, line, after)] and content == b"# top\n" + after + b"\n"


def config_file(directory: Path) -> tuple[Path, bytes]:
    """A config file owned by the test user, mode 0640, with an xattr and bytes that are not
    UTF-8, naming the old path twice."""
    original = (b"# \xe9t\xe9 latin-1, not UTF-8: \xff\xfe\n"
                b"data_directory = '/srv/data'\t\t# moved by servermove\n"
                b"other = '/srv/data2'\n"
                b"wal = '/srv/data/pg_wal' \x80\n"
                b"no newline at the end")
    path = directory / "app.conf"
    path.write_bytes(original)
    user = pwd.getpwnam(TEST_USER)
    os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(0o640)
    os.setxattr(path, "user.servermove-test", b"kept")
    return path, original


def test_config_cutover_rewrites_atomically_keeps_owner_mode_bytes_and_undo(tmp_path) -> None:
    path, original = config_file(tmp_path)
    before = path.stat()
    cutover = mover.cutover_from_text(f"config:{path}")
    preview = cutover.plan(OLD, NEW, MOVE_ID)
    assert [(p["line"], p["after"]) for p in preview] == [
        (2, "data_directory = '/mnt/big/data'\t\t# moved by servermove"),
        (4, "wal = '/mnt/big/data/pg_wal' \udc80")]

    record = cutover.apply(OLD, NEW, MOVE_ID)
    after = path.stat()
    assert after.st_ino != before.st_ino  # a new file renamed into place, not an in-place write
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid,
                                                           before.st_mode)
    assert os.getxattr(path, "user.servermove-test") == b"kept"
    assert path.read_bytes() == original.replace(b"'/srv/data'", b"'/mnt/big/data'").replace(
        b"'/srv/data/pg_wal'", b"'/mnt/big/data/pg_wal'")
    backup = Path(record["backup"])
    assert backup == tmp_path / f"app.conf.servermove-{MOVE_ID}"
    assert backup.read_bytes() == original
    assert (backup.stat().st_uid, backup.stat().st_mode) == (before.st_uid, before.st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.conf", backup.name]

    mover.undo_cutover(record)
    restored = path.stat()
    assert path.read_bytes() == original
    assert (restored.st_uid, restored.st_gid, restored.st_mode) == (before.st_uid, before.st_gid,
                                                                    before.st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.conf"]
    mover.undo_cutover(record)  # a second undo changes nothing
    assert path.read_bytes() == original


def test_config_cutover_is_refused_up_front_when_the_file_does_not_name_the_old_path(
        tmp_path) -> None:
    path = tmp_path / "app.conf"
    path.write_bytes(b"data = '/srv/data2'\nx = /srv/data.old\n")
    cutover = mover.cutover_from_text(f"config:{path}")
    with pytest.raises(mover.Refused) as refusal:
        cutover.plan(OLD, NEW, MOVE_ID)
    assert str(refusal.value) == (
        f"{path} does not mention /srv/data as a whole path: servermove cannot repoint the "
        "service there — check cutover in servers.toml")
    with pytest.raises(mover.Failure):
        cutover.apply(OLD, NEW, MOVE_ID)
    assert path.read_bytes() == b"data = '/srv/data2'\nx = /srv/data.old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.conf"]
    with pytest.raises(mover.Refused, match=r"cannot read the cutover's config file .*: it does "
                       r"not exist$"):
        mover.cutover_from_text(f"config:{tmp_path / 'missing.conf'}").plan(OLD, NEW, MOVE_ID)


def test_config_cutover_through_a_symlinked_file_rewrites_the_real_file(tmp_path) -> None:
    real = tmp_path / "real.conf"
    real.write_bytes(b"dir = /srv/data\n")
    link = tmp_path / "link.conf"
    link.symlink_to(real)
    record = mover.cutover_from_text(f"config:{link}").apply(OLD, NEW, MOVE_ID)
    assert link.is_symlink() and real.read_bytes() == b"dir = /mnt/big/data\n"
    mover.undo_cutover(record)
    assert link.is_symlink() and real.read_bytes() == b"dir = /srv/data\n"


def test_config_undo_leaves_a_file_someone_else_changed_since(tmp_path) -> None:
    path, original = config_file(tmp_path)
    record = mover.cutover_from_text(f"config:{path}").apply(OLD, NEW, MOVE_ID)
    path.write_bytes(b"edited by the admin\n")
    with pytest.raises(mover.Failure) as failure:
        mover.undo_cutover(record)
    assert str(failure.value) == (
        f"{path} was changed by something else after servermove rewrote it: left it as it is; "
        f"its original content is in {record['backup']}")
    assert path.read_bytes() == b"edited by the admin\n"
    assert Path(record["backup"]).read_bytes() == original


# --- the service description the client sends -----------------------------------------------------

def test_the_service_spec_is_parsed() -> None:
    spec = mover.parse_service_spec(json.dumps({
        "stop": ["pg_ctlcluster", "15", "main", "stop"], "start": "pg_ctlcluster 15 main start",
        "check": "pg_isready -q", "checkTimeout": 30, "cutover": "config:/etc/pg.conf"}))
    assert spec.stop == ["pg_ctlcluster", "15", "main", "stop"]
    assert spec.start == "pg_ctlcluster 15 main start"
    assert (spec.check_timeout, spec.check_output) == (30, None)
    assert isinstance(spec.cutover, mover.ConfigCutover) and spec.cutover.path == b"/etc/pg.conf"
    spec = mover.parse_service_spec(b'{"stop": "a", "start": "b", "check": "c"}')
    assert (spec.check_timeout, spec.cutover.name) == (60, "none")


GOOD = {"stop": "a", "start": "b", "check": "c"}


@pytest.mark.parametrize(("payload", "message"), [
    ("{", "the service description is not valid JSON"),
    ("[]", "the service description must be a JSON object"),
    ({**GOOD, "stopp": "x"}, 'the service description has an unknown key "stopp"'),
    ({"start": "b", "check": "c"}, "the service has no stop command"),
    ({**GOOD, "start": "  "}, "the service's start must be a command"),
    ({**GOOD, "check": []}, "the service's check must be a command"),
    ({**GOOD, "check": ["ok", 3]}, "the service's check must be a command"),
    ({**GOOD, "checkTimeout": 0}, "the service's checkTimeout must be a number of seconds"),
    ({**GOOD, "checkTimeout": True}, "the service's checkTimeout must be a number of seconds"),
    ({**GOOD, "checkTimeout": 99999}, "the service's checkTimeout must be a number of seconds"),
    ({**GOOD, "checkOutput": "a\nb"}, "the service's checkOutput must be the one line"),
    ({**GOOD, "cutover": "link"},
     'the service\'s cutover must be "none", "symlink" or "config:FILE"'),
    ({**GOOD, "cutover": "config:etc/pg.conf"}, "the cutover's config file must be an absolute"),
])
def test_a_bad_service_spec_is_refused_in_one_line(payload, message) -> None:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    with pytest.raises(mover.Refused) as refusal:
        mover.parse_service_spec(text)
    assert str(refusal.value).startswith(message) and "\n" not in str(refusal.value)


# --- servers.toml -------------------------------------------------------------------------------
# This machine has no systemd as PID 1 and no docker daemon: the shorthands are checked by the
# commands they produce (and that the mover takes them), not by running them.

def inventory(tmp_path: Path, table: str) -> Path:
    path = tmp_path / "servers.toml"
    path.write_text('[db1]\ntarget = "db1"\ndata_path = "/var/lib/postgresql/15/main"\n' + table)
    return path


def service_of(tmp_path: Path, table: str) -> ServiceConfig | None:
    return load_inventory(inventory(tmp_path, table)).get("db1").service


def test_a_server_without_service_keys_has_no_service(tmp_path) -> None:
    assert service_of(tmp_path, "sudo = true\n") is None


def test_the_service_keys_are_read_and_given_to_the_mover(tmp_path) -> None:
    service = service_of(tmp_path, textwrap.dedent("""\
        stop = "pg_ctlcluster 15 main stop"
        start = ["pg_ctlcluster", "15", "main", "start"]
        check = "pg_isready -q"
        check_timeout = 90
        cutover = "config:/etc/postgresql/15/main/postgresql.conf"
        """))
    assert service == ServiceConfig(
        "pg_ctlcluster 15 main stop", ("pg_ctlcluster", "15", "main", "start"), "pg_isready -q",
        90, "config:/etc/postgresql/15/main/postgresql.conf")
    wire = service.to_mover()
    assert wire == {"stop": "pg_ctlcluster 15 main stop",
                    "start": ["pg_ctlcluster", "15", "main", "start"], "check": "pg_isready -q",
                    "checkTimeout": 90,
                    "cutover": "config:/etc/postgresql/15/main/postgresql.conf"}
    spec = mover.parse_service_spec(json.dumps(wire))  # the mover takes what the client sends
    assert (spec.stop, spec.start, spec.check_timeout) == (wire["stop"], wire["start"], 90)


def test_the_systemd_shorthand_gives_systemctl_commands(tmp_path) -> None:
    service = service_of(tmp_path, 'service = "systemd:postgresql@15-main.service"\n')
    assert service.to_mover() == {
        "stop": ["systemctl", "stop", "postgresql@15-main.service"],
        "start": ["systemctl", "start", "postgresql@15-main.service"],
        "check": ["systemctl", "is-active", "--quiet", "postgresql@15-main.service"],
        "checkTimeout": 60, "cutover": "none"}
    mover.parse_service_spec(json.dumps(service.to_mover()))


def test_the_docker_shorthand_checks_that_inspect_prints_true(tmp_path) -> None:
    service = service_of(tmp_path, 'service = "docker:minecraft_1"\ncutover = "symlink"\n')
    assert service.to_mover() == {
        "stop": ["docker", "stop", "minecraft_1"], "start": ["docker", "start", "minecraft_1"],
        "check": ["docker", "inspect", "-f", "{{.State.Running}}", "minecraft_1"],
        "checkOutput": "true", "checkTimeout": 60, "cutover": "symlink"}
    spec = mover.parse_service_spec(json.dumps(service.to_mover()))
    assert spec.check_output == "true" and spec.cutover.name == "symlink"


def test_explicit_keys_override_the_shorthand(tmp_path) -> None:
    service = service_of(tmp_path, 'service = "docker:web"\ncheck = "curl -fs localhost"\n'
                                   'stop = ["docker", "stop", "-t", "60", "web"]\n')
    assert service.to_mover() == {
        "stop": ["docker", "stop", "-t", "60", "web"], "start": ["docker", "start", "web"],
        "check": "curl -fs localhost", "checkTimeout": 60, "cutover": "none"}


@pytest.mark.parametrize(("table", "problem"), [
    ('service = "systemd:"\n', 'service must be "systemd:UNIT" or "docker:NAME"'),
    ('service = "docker:-rm"\n', 'service must be "systemd:UNIT" or "docker:NAME"'),
    ('service = "systemd:a b"\n', 'service must be "systemd:UNIT" or "docker:NAME"'),
    ('service = "upstart:x"\n', 'service must be "systemd:UNIT" or "docker:NAME"'),
    ('stop = "a"\nstart = "b"\n', "has no check command"),
    ('check_timeout = 5\n', "has no stop command"),
    ('service = "systemd:x"\nstop = []\n', "stop must be a command in quotes"),
    ('service = "systemd:x"\nstart = ["ok", 1]\n', "start must be a command in quotes"),
    ('service = "systemd:x"\ncheck = " "\n', "check must be a command in quotes"),
    ('service = "systemd:x"\ncheck_timeout = 0\n', "check_timeout must be a number of seconds"),
    ('service = "systemd:x"\ncheck_timeout = "60"\n', "check_timeout must be a number"),
    ('service = "systemd:x"\ncutover = "link"\n', 'cutover must be "none", "symlink" or '),
    ('service = "systemd:x"\ncutover = "config:etc/x.conf"\n',
     "cutover config file must be an absolute path"),
])
def test_a_bad_service_key_names_the_file_line_server_and_key(tmp_path, table, problem) -> None:
    path = inventory(tmp_path, table)
    with pytest.raises(InventoryError) as error:
        load_inventory(path)
    assert str(error.value).startswith(f"{path}, line 1: server [db1] {problem}")
    assert "\n" not in str(error.value)


# --- the steps together, on real services -------------------------------------------------------

def game_server(action: str, *args: Path) -> list[str]:
    return [sys.executable, str(GAME_SERVER), action, *map(str, args)]


def log_of(data_dir: Path) -> str:
    return (data_dir / "logs" / "console.log").read_text()


def wait_for_ticks(data_dir: Path, starts: int) -> None:
    """Until the server's `starts`-th run has written a few ticks into its log."""
    deadline = time.monotonic() + 30
    while True:
        runs = log_of(data_dir).split("started pid=")[1:]
        if len(runs) >= starts and runs[-1].count("\ntick ") >= 3:
            return
        assert time.monotonic() < deadline, "the game server did not tick"
        time.sleep(0.05)


def test_a_game_server_is_repointed_by_symlink_and_rolled_back(tmp_path) -> None:
    old, new, pidfile = tmp_path / "srv" / "world", tmp_path / "big" / "world", tmp_path / "pid"
    old.mkdir(parents=True)
    new.parent.mkdir()
    stop, start = game_server("stop", pidfile), game_server("start", old, pidfile)
    check = game_server("check", pidfile)
    try:
        mover.run_service_command("start", start)
        mover.wait_until_healthy(check, 30)
        wait_for_ticks(old, 1)
        mover.run_service_command("stop", stop)
        assert re.search(r"stopped at tick \d+\n$", log_of(old))
        run("cp", "-a", old, new)
        inode, log_at_stop = old.stat().st_ino, log_of(old)
        record = mover.SymlinkCutover().apply(bytes(old), bytes(new), MOVE_ID)
        mover.run_service_command("start", start)
        mover.wait_until_healthy(check, 30)
        wait_for_ticks(new, 2)  # started on the old path, it runs from the new directory
        assert log_of(Path(record["aside"])) == log_at_stop  # the old copy is left alone

        mover.run_service_command("stop", stop)
        log_of_new = log_of(new)
        mover.undo_cutover(record)
        mover.run_service_command("start", start)
        mover.wait_until_healthy(check, 30)
        wait_for_ticks(old, 2)
        assert old.stat().st_ino == inode and not old.is_symlink()
        assert log_of(old).startswith(log_at_stop) and log_of(new) == log_of_new
        mover.run_service_command("stop", stop)
    finally:
        pid = pidfile.exists() and int(pidfile.read_text())
        if pid and running(pid):
            os.kill(pid, signal.SIGTERM)
            assert gone(pid)


def test_postgres_moves_by_config_cutover_and_rolls_back(pg_cluster: PgCluster,
                                                         public_root: Path) -> None:
    pg = pg_cluster
    pg.psql("CREATE TABLE moved (id int PRIMARY KEY, note text); "
            "INSERT INTO moved SELECT g, 'row ' || g FROM generate_series(1, 1000) g")
    old, original_conf = pg.data_dir, pg.config_file.read_bytes()
    new_home = Path(tempfile.mkdtemp(prefix="sm-pg-new-", dir=public_root))
    new_home.chmod(0o755)
    new = new_home / "data"
    is_ready = ["pg_isready", "-p", str(pg.port)]
    try:
        mover.run_service_command("stop", pg.ctl("stop"))
        run("cp", "-a", old, new)
        cutover = mover.cutover_from_text(f"config:{pg.config_file}")
        [change] = cutover.plan(bytes(old), bytes(new), MOVE_ID)
        assert change["before"].startswith(f"data_directory = '{old}'")
        assert change["after"].startswith(f"data_directory = '{new}'")
        record = cutover.apply(bytes(old), bytes(new), MOVE_ID)
        mover.run_service_command("start", pg.ctl("start"))
        mover.wait_until_healthy(is_ready, 60)
        assert pg.psql("SHOW data_directory") == str(new)
        assert pg.psql("SELECT count(*), sum(id) FROM moved") == "1000|500500"

        mover.run_service_command("stop", pg.ctl("stop"))
        mover.undo_cutover(record)
        mover.run_service_command("start", pg.ctl("start"))
        mover.wait_until_healthy(is_ready, 60)
        assert pg.psql("SHOW data_directory") == str(old)
        assert pg.psql("SELECT count(*), sum(id) FROM moved") == "1000|500500"
        assert pg.config_file.read_bytes() == original_conf
        assert not Path(record["backup"]).exists()
    finally:
        drop_cluster(pg)  # before its data goes: a server left running from `new` is stopped
        shutil.rmtree(new_home, ignore_errors=True)


# --- the oldest and newest CPython the servers have -----------------------------------------------

ON_OTHER_PYTHON = textwrap.dedent(r"""
    import importlib.util, json, os, sys
    spec = importlib.util.spec_from_file_location("mover", sys.argv[1])
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    base = sys.argv[2].encode()
    conf = base + b"/app.conf"
    with open(conf, "wb") as handle:
        handle.write(b"dir = '/srv/data' \xff\nother = /srv/data2\n")
    record = m.cutover_from_text("config:" + conf.decode()).apply(b"/srv/data", b"/mnt/new", "ab")
    after = open(conf, "rb").read()
    m.undo_cutover(record)
    old, new = base + b"/old", base + b"/new"
    os.mkdir(old)
    os.mkdir(new)
    link = m.SymlinkCutover().apply(old, new, "ab")
    was_link = os.readlink(old) == new
    m.undo_cutover(link)
    try:
        m.run_service_command("start", ["sh", "-c", "echo no port >&2; exit 3"], 10)
    except m.Failure as err:
        failure = str(err)
    m.wait_until_healthy(["true"], 5)
    spec = m.parse_service_spec('{"stop": "a", "start": ["b"], "check": "c", "cutover": "symlink"}')
    print(json.dumps({
        "after": after.decode("latin-1"), "restored": open(conf, "rb").read().decode("latin-1"),
        "wasLink": was_link, "back": os.path.isdir(old) and not os.path.islink(old),
        "shell": m.run_service_command("stop", "echo $((2 + 3))", 10), "failure": failure,
        "cutover": spec.cutover.name}))
""")


@pytest.mark.parametrize("python", ["py3.6", "py3.13"])
def test_the_service_steps_run_on_the_servers_pythons(python, tmp_path) -> None:
    result = run(interpreter(python), "-c", ON_OTHER_PYTHON, MOVER, tmp_path, timeout=60)
    assert json.loads(result.stdout) == {
        "after": "dir = '/mnt/new' \xff\nother = /srv/data2\n",
        "restored": "dir = '/srv/data' \xff\nother = /srv/data2\n", "wasLink": True,
        "back": True, "shell": "5\n",
        "failure": "the start command `sh -c 'echo no port >&2; exit 3'` failed (exit 3): no port",
        "cutover": "symlink"}
