"""keep_old (issue 16): a move keeps the old copy read-only beside the source instead of deleting
it, and `mover.py clean-kept` / `servermove clean` removes it once due, as does the server's next
move. Real files, the real unprivileged user, the real sshd; the mover on 3.6 and 3.13 too."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.cli_support import make_tree, read_tree, servermove
from tests.harness import as_user
from tests.test_mover import USER_PYTHON, interpreter, mover
from tests.test_service_cli import write_servers
from tests.test_service_move import game, wait_ticks, world_with_data


def user_env(journal: Path) -> dict:
    """Run as the test user, with a journal of its own (kept-copy records included)."""
    kwargs = as_user()
    kwargs["env"] = {**kwargs["env"], "SERVERMOVE_JOURNAL_DIR": str(journal)}
    return kwargs


@pytest.fixture
def journal(public_tmp: Path) -> Path:
    path = public_tmp / "journal"
    path.mkdir()
    subprocess.run(["chown", "smtest:smtest", str(path)], check=True)
    return path


def aside_of(src: Path, move_id: str) -> Path:
    return src.parent / f".{src.name}.servermove-old-{move_id}"


def kept_events(result) -> list[dict]:
    return result.subjects("kept.copy")


@pytest.mark.parametrize("version", ["default", "py3.6", "py3.13"])
def test_a_kept_old_copy_is_read_only_beside_the_source_and_kept_until_due(
        version, public_tmp, tmpfs):
    # Root runs the mover here (the test user cannot reach pyenv's interpreters); the data, and
    # so the copy kept, belongs to the test user.
    python = interpreter(version)
    src, dst = public_tmp / "world", tmpfs / "world"
    src.mkdir()
    contents = make_tree(src)
    result = mover(python, "move", "--keep-old", "3600", src, dst)
    assert result.returncode == 0, result.stderr
    end = result.last["data"]
    assert end["phase"] == "complete" and end["dataState"] == "destination"
    kept = aside_of(src, end["moveId"])
    assert end["oldCopyPath"] == str(kept)
    assert 3590 < end["oldCopyDueAt"] - time.time() <= 3600
    [plan] = result.subjects("move.plan")
    assert plan["keepOldSeconds"] == 3600
    assert not src.exists()  # the old path is free; the data is whole at DST and in the copy
    assert read_tree(dst) == contents and read_tree(kept) == contents
    assert stat.S_IMODE(kept.stat().st_mode) & 0o222 == 0  # its top directory is read-only
    # Read-only for its owner too: the test user cannot add to it, nor rename or delete in it.
    refused = subprocess.run(["touch", str(kept / "new")], capture_output=True, **as_user())
    assert refused.returncode != 0 and not (kept / "new").exists()
    # Not due: clean-kept lists it (where, how big, until when) and removes nothing.
    listed = mover(python, "clean-kept")
    assert listed.returncode == 0, listed.stderr
    [entry] = kept_events(listed)
    assert entry["action"] == "kept" and entry["path"] == str(kept)
    assert entry["bytes"] == sum(map(len, contents.values()))
    assert entry["files"] == len(contents) and entry["dueAt"] == end["oldCopyDueAt"]
    assert read_tree(kept) == contents
    removed = mover(python, "clean-kept", "--now")
    assert [e["action"] for e in kept_events(removed)] == ["removed"], removed.stderr
    assert not kept.exists() and read_tree(dst) == contents
    assert kept_events(mover(python, "clean-kept")) == []


def test_a_due_copy_is_removed_by_clean_kept_and_a_dry_run_removes_nothing(public_tmp, tmpfs,
                                                                            journal):
    python = USER_PYTHON
    src, dst = public_tmp / "world", tmpfs / "world"
    src.mkdir()
    make_tree(src)
    end = mover(python, "move", "--keep-old", "1", src, dst, **user_env(journal)).last["data"]
    kept = aside_of(src, end["moveId"])
    assert kept.is_dir()
    time.sleep(max(0.0, end["oldCopyDueAt"] - time.time()) + 0.2)
    dry = mover(python, "clean-kept", "--dry-run", **user_env(journal))
    assert [e["action"] for e in kept_events(dry)] == ["would remove"] and kept.is_dir()
    done = mover(python, "clean-kept", **user_env(journal))
    assert [e["action"] for e in kept_events(done)] == ["removed"] and not kept.exists()
    assert dst.is_dir()


def test_a_later_move_removes_the_due_copies_first(public_tmp, tmpfs, journal):
    python = USER_PYTHON
    first, second = public_tmp / "first", public_tmp / "second"
    for src in (first, second):
        src.mkdir()
        make_tree(src, files=3)
    end = mover(python, "move", "--keep-old", "1", first, tmpfs / "first",
                **user_env(journal)).last["data"]
    kept = aside_of(first, end["moveId"])
    time.sleep(max(0.0, end["oldCopyDueAt"] - time.time()) + 0.2)
    later = mover(python, "move", second, tmpfs / "second", **user_env(journal))
    assert later.returncode == 0, later.stderr
    [cleaned] = kept_events(later)
    assert cleaned["action"] == "removed" and cleaned["path"] == str(kept)
    assert not kept.exists() and not second.exists()  # the later move itself removed its source
    # A copy not due is not even looked at by a move.
    third = public_tmp / "third"
    third.mkdir()
    make_tree(third, files=2)
    end = mover(python, "move", "--keep-old", "3600", third, tmpfs / "third",
                **user_env(journal)).last["data"]
    again = mover(python, "move", tmpfs / "second", public_tmp / "second", **user_env(journal))
    assert again.returncode == 0 and kept_events(again) == []
    assert aside_of(third, end["moveId"]).is_dir()


def test_a_kept_copy_replaced_by_a_symlink_is_not_followed(public_tmp, tmpfs, journal):
    python = USER_PYTHON
    src, dst, victim = public_tmp / "world", tmpfs / "world", public_tmp / "precious"
    src.mkdir()
    make_tree(src, files=3)
    victim.mkdir()
    (victim / "keep me").write_text("not the old copy")
    subprocess.run(["chown", "-R", "smtest:smtest", str(victim)], check=True)
    end = mover(python, "move", "--keep-old", "1", src, dst, **user_env(journal)).last["data"]
    kept = aside_of(src, end["moveId"])
    subprocess.run(["rm", "-rf", str(kept)], check=True)
    kept.symlink_to(victim)
    time.sleep(max(0.0, end["oldCopyDueAt"] - time.time()) + 0.2)
    result = mover(python, "clean-kept", **user_env(journal))
    [entry] = kept_events(result)
    assert entry["action"] == "left" and "symbolic link" in entry["why"]
    assert (victim / "keep me").read_text() == "not the old copy"
    assert kept.is_symlink()  # left alone, and forgotten: not listed again
    assert kept_events(mover(python, "clean-kept", **user_env(journal))) == []


def test_a_bad_keep_old_is_one_line_and_changes_nothing(public_tmp, tmpfs):
    src, dst = public_tmp / "world", tmpfs / "world"
    src.mkdir()
    contents = make_tree(src, files=3)
    write_servers(f'[web1]\ntarget = "local"\ndata_path = "{src}"\nkeep_old = "7 days"\n')
    result = servermove("move", "web1", src, dst)
    assert result.returncode != 0
    [line] = result.stderr.splitlines()
    assert "server [web1]" in line and "keep_old" in line and '"7d", "12h", "30m"' in line
    assert "'7 days'" in line and "Traceback" not in result.stderr
    assert read_tree(src) == contents and not dst.exists()
    assert not list(public_tmp.glob(".world.servermove-*"))
    # The mover refuses a bad --keep-old on its own too, before anything is written.
    refused = mover(USER_PYTHON, "move", "--keep-old", "7d", src, dst, **as_user())
    assert refused.returncode == 2 and "bad --keep-old '7d'" in refused.last["data"]["error"]
    assert read_tree(src) == contents and not dst.exists()


def test_servermove_clean_through_sshd(sshd, public_tmp, tmpfs):
    src, dst = public_tmp / "world", tmpfs / "world"
    src.mkdir()
    contents = make_tree(src)
    write_servers(f'[web1]\ntarget = "{sshd.alias}"\ndata_path = "{src}"\nkeep_old = "3s"\n')
    ssh = ("--ssh-config", sshd.config_file)
    moved = servermove("move", *ssh, "web1", src, dst)
    kept = None
    try:
        assert moved.returncode == 0, moved.stderr
        [kept] = public_tmp.glob(".world.servermove-old-*")
        assert "; keep the old copy read-only beside the source for 3 seconds, then remove it" \
            in moved.stdout  # the plan line
        assert f"the old copy is kept read-only at {kept} until " in moved.stdout
        assert "then removed by 'servermove clean web1' or the server's next move" in moved.stdout
        assert read_tree(dst) == contents and read_tree(kept) == contents
        early = servermove("clean", *ssh, "--dry-run", "web1")
        assert early.returncode == 0, early.stderr
        mine = [line for line in early.stdout.splitlines() if line.startswith(str(kept))]
        assert len(mine) == 1 and f"the old copy of {src}: kept until " in mine[0]
        assert "(200.2 kB in 20 files)" in mine[0] and kept.is_dir()
        time.sleep(3.2)
        listed = servermove("clean", *ssh, "--json", "--dry-run", "web1")
        [mine] = [e for e in map(json.loads, listed.stdout.splitlines())
                  if e["path"] == str(kept)]
        assert mine["action"] == "would remove" and kept.is_dir()
        cleaned = servermove("clean", *ssh, "web1")
        assert cleaned.returncode == 0, cleaned.stderr
        assert f"{kept} (200.2 kB in 20 files), the old copy of {src}: removed" in cleaned.stdout
        assert " removed on web1 (freed " in cleaned.stdout.splitlines()[-1]
        assert not kept.exists() and read_tree(dst) == contents
    finally:
        if kept is not None and kept.exists():
            subprocess.run(["rm", "-rf", str(kept)])


async def test_a_service_move_keeps_the_directory_its_symlink_cutover_set_aside(game_site,
                                                                                tmp_path):
    from tui.core.fleet import Fleet
    from tui.core.inventory import ServerEntry, ServiceConfig
    from tui.core.moves_log import MovesLog
    from tui.core.protocol import Phase

    src, dst, pidfile = game_site
    service = ServiceConfig(stop=tuple(game("stop", pidfile)),
                            start=tuple(game("start", src, pidfile)),
                            check=tuple(game("check", pidfile)), cutover="symlink")
    world_with_data(src)
    subprocess.run(game("start", src, pidfile), check=True)
    wait_ticks(src / "logs" / "console.log", 5)
    fleet = Fleet(moves_log=MovesLog(tmp_path / "moves.jsonl"))
    move = await fleet.run_move(ServerEntry("game", "local", str(src), service=service,
                                            keep_old="2h"), str(dst))
    progress = move.progress
    assert progress.phase is Phase.COMPLETE, (move.problem, progress.outcome())
    kept = aside_of(src, progress.move_id)
    assert progress.old_copy_path == str(kept) and src.is_symlink()
    assert os.readlink(src) == str(dst)
    assert stat.S_IMODE(kept.stat().st_mode) & 0o222 == 0
    assert (kept / "logs" / "console.log").is_file()  # the old data, whole, not removed
    assert 7190 < progress.old_copy_due_at - time.time() <= 7200
    from tui.core.wording import plan_lines, service_steps

    assert progress.plan is not None and progress.plan.service is not None
    assert service_steps(progress.plan.service, progress.plan)[-1] == (
        "Keep the old copy read-only beside the source for 2 hours, then remove it")
    assert "then keep the old copy read-only beside the source for 2 hours, then remove it." in \
        plan_lines(progress.plan)[3]
    assert progress.outcome().startswith(f"Moved; the service runs from {dst}; it was down for ")
    assert f"; the old copy is kept read-only at {kept} until " in progress.outcome()
    assert "then removed by 'servermove clean game' or the server's next move." \
        in progress.outcome()


def test_keep_old_in_servers_toml_survives_edits_and_reads_as_seconds(tmp_path):
    from tui.core.inventory import (
        keep_old_seconds,
        load_inventory,
        set_data_path,
        update_server,
    )

    path = tmp_path / "servers.toml"
    path.write_text('[web1]\ntarget = "local"\ndata_path = "/srv/a"\nkeep_old = "12h"  # a day\n')
    entry = load_inventory(path).get("web1")
    assert entry.keep_old == "12h" and keep_old_seconds(entry.keep_old) == 12 * 3600
    assert [keep_old_seconds(text) for text in ("45s", "30m", "7d")] == [45, 1800, 7 * 86400]
    # After a move the inventory's data_path changes; keep_old and its comment stay.
    set_data_path("web1", "/mnt/b", path)
    assert 'keep_old = "12h"  # a day' in path.read_text()
    update_server("web1", replace(load_inventory(path).get("web1"), keep_old=None), path)
    assert "keep_old" not in path.read_text()
    for bad in ("7", "7 days", "0d", "1w", "-1h", "99999d", 7):
        with pytest.raises(ValueError, match=r'keep_old must be a duration in quotes'):
            keep_old_seconds(bad)


async def test_the_tui_says_where_the_old_copy_is_kept_and_its_palette_cleans_it(tmp_path,
                                                                               tmpfs):
    from tests.test_tui_flows import apply_and_confirm, outcome, plan_shown
    from tests.test_tui_support import make_app, settle, wait_for
    from tui.app.screens.server_detail import ServerDetailScreen
    from tui.core.inventory import ServerEntry

    src, dst = tmp_path / "data" / "app", tmpfs / "app"
    src.mkdir(parents=True)
    contents = make_tree(src, files=5)
    app = make_app(tmp_path, [ServerEntry("box", "local", str(src), keep_old="2s")],
                   real_runner=True, open_server="box")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        await apply_and_confirm(app, pilot, str(dst))
        await wait_for(pilot, lambda: app.fleet.get("box") and not app.fleet.is_active("box"),
                       timeout=60, what="the move to end")
        await settle(pilot)
        progress = app.fleet.get("box").progress
        kept = aside_of(src, progress.move_id)
        told = " ".join(outcome(app).split())
        assert "The old copy is kept read-only at " in told and f"{kept.name} until " in told
        assert "then removed by 'servermove clean box' or the server's next move." in told
        assert read_tree(kept) == contents and read_tree(dst) == contents
        commands = {command.title: command for command in app.get_system_commands(app.screen)}
        time.sleep(max(0.0, progress.old_copy_due_at - time.time()) + 0.2)
        commands["Remove the old copies kept on box"].callback()
        await wait_for(pilot, lambda: [n for n in app._notifications
                                       if n.title == "box: old copies"], what="the notification")
        [told] = [n for n in app._notifications if n.title == "box: old copies"]
        assert f"{kept} (" in told.message and ": removed" in told.message
        assert "1 old copy removed on box (freed " in told.message
        assert not kept.exists() and read_tree(dst) == contents
    assert plan_shown  # the confirmation was laid out (apply_and_confirm waited for it)


def test_a_kept_copy_that_cannot_be_removed_fails_and_stays_recorded(public_tmp, tmpfs, journal):
    src, dst = public_tmp / "world", tmpfs / "world"
    src.mkdir()
    make_tree(src, files=3)
    end = mover(USER_PYTHON, "move", "--keep-old", "3600", src, dst,
                **user_env(journal)).last["data"]
    kept = aside_of(src, end["moveId"])
    (kept / "roots").mkdir()  # root's directory inside: the test user cannot empty it
    (kept / "roots" / "file").write_text("root's")
    result = mover(USER_PYTHON, "clean-kept", "--now", **user_env(journal))
    assert result.returncode == 1
    [entry] = kept_events(result)
    assert entry["action"] == "failed"
    assert entry["why"] in ("permission denied", "operation not permitted")
    assert (kept / "roots" / "file").exists()
    again = mover(USER_PYTHON, "clean-kept", **user_env(journal))
    assert [e["action"] for e in kept_events(again)] == ["kept"]  # still recorded
    subprocess.run(["rm", "-rf", str(kept)], check=True)


def test_a_kept_copy_with_files_newer_than_their_copies_is_not_scheduled_for_removal(
        public_tmp, tmpfs, journal):
    """A writer still at work after the copy was checked: its writes are only in the old copy,
    so keeping it until due and then removing it would lose them. The move ends in an error
    naming them, the old copy is kept aside without a due time, and clean-kept never removes
    it."""
    from tests.test_mover import rigged

    src, dst = public_tmp / "world", tmpfs / "world"
    src.mkdir()
    contents = make_tree(src)
    env = {**os.environ, "SERVERMOVE_JOURNAL_DIR": str(journal)}
    result = mover(rigged("write-after-rename"), "move", "--keep-old", "1", src, dst, env=env)
    end = result.last["data"]
    assert result.returncode == 1 and end["phase"] == "error", result.stderr
    assert end["dataState"] == "both"
    kept = aside_of(src, end["moveId"])
    assert "1 source file changed after it was copied" in end["error"]
    assert f"{kept}/d0/file 0.bin" in end["error"] and f"{kept}/d1/late.bin" in end["error"]
    assert "it will not be removed when due: delete it by hand" in end["error"]
    assert "oldCopyDueAt" not in end
    assert read_tree(dst) == contents  # the move itself is whole at DST
    assert (kept / "d0" / "file 0.bin").read_bytes() == contents["d0/file 0.bin"] + b"!"
    assert (kept / "d1" / "late.bin").exists()
    time.sleep(1.1)
    cleaned = mover(interpreter("default"), "clean-kept", "--now", env=env)
    assert kept_events(cleaned) == [] and kept.exists()
