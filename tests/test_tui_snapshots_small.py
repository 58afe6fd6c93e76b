"""Every screen and dialog of the app at 80x24, a laptop's small terminal, as SVG snapshots with
a fixed clock (the moves log's screens are in test_tui_moves_log.py).

Regenerate with `pytest tests/test_tui_snapshots_small.py --snapshot-update`, then look."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable

from tests.test_tui_snapshots import (
    SERVERS,
    app_for,
    moves,
    script,
    steady,
)
from tests.test_tui_support import (
    ScriptedMover,
    fake_stat_paths,
    fixed_clock,
    no_journal,
    open_confirmation,
    wait_for,
    write_inventory,
)
from tui.app.app import ServerMoveApp
from tui.app.screens.modals import (
    CancelMoveScreen,
    ConfirmScreen,
    SudoPasswordScreen,
)
from tui.app.screens.server_form import ServerFormScreen
from tui.core.errors import HostUnreachable
from tui.core.fleet import Fleet, MoveOptions

SMALL = (80, 24)


UNREACHABLE = "files: cannot reach files.lan:22: Name or service not known"


async def stat_unless_files(target, paths, **kwargs):
    """files.lan does not resolve; every other server answers."""
    if target.host == "files.lan":
        raise HostUnreachable(UNREACHABLE)
    return await fake_stat_paths(target, paths, **kwargs)


def app_with_unreachable_files(config: Path, **kwargs) -> ServerMoveApp:
    fleet = Fleet(start_move=ScriptedMover(script), stat_paths=stat_unless_files,
                  list_moves=no_journal, clock=fixed_clock)
    return ServerMoveApp(inventory_path=write_inventory(config, SERVERS), fleet=fleet,
                         clock=fixed_clock, ssh_aliases=["web1", "db-primary"],
                         move_options=MoveOptions(), **kwargs)


def test_dashboard_small(snap_compare, snapshot_dir: Path) -> None:
    async def run_before(pilot) -> None:
        await moves("web1", "web2", "db-primary")(pilot)
        await wait_for(pilot, lambda: str(pilot.app.screen.query_one(DataTable).get_cell(
            "files", "status")) == "unreachable", what="files unreachable")
        await pilot.pause()
    assert snap_compare(app_with_unreachable_files(snapshot_dir), terminal_size=SMALL,
                        run_before=run_before)


def test_server_unreachable_small(snap_compare, snapshot_dir: Path) -> None:
    async def run_before(pilot) -> None:
        await steady(pilot)
        await wait_for(pilot, lambda: "unreachable" in str(
            pilot.app.screen.query_one("#current-free").render()), what="unreachable")
    app = app_with_unreachable_files(snapshot_dir, open_server="files")
    assert snap_compare(app, terminal_size=SMALL, run_before=run_before)


def test_first_run_small(snap_compare, snapshot_dir: Path) -> None:
    assert snap_compare(app_for(snapshot_dir, servers=[]), terminal_size=SMALL)


def test_inventory_error_small(snap_compare, snapshot_dir: Path) -> None:
    inventory = snapshot_dir / "servers.toml"
    inventory.write_text("[servers.web1\ntarget = 'web1'\n")
    app = ServerMoveApp(inventory_path=inventory, ssh_aliases=[])
    assert snap_compare(app, terminal_size=SMALL)


def test_server_detail_idle_small(snap_compare, snapshot_dir: Path) -> None:
    app = app_for(snapshot_dir, open_server="files", new_path="/srv/share")
    assert snap_compare(app, terminal_size=SMALL, run_before=steady)


def test_move_complete_small(snap_compare, snapshot_dir: Path) -> None:
    app = app_for(snapshot_dir, open_server="web1")
    assert snap_compare(app, terminal_size=SMALL, run_before=moves("web1"))


def test_move_error_small(snap_compare, snapshot_dir: Path) -> None:
    app = app_for(snapshot_dir, open_server="web2")
    assert snap_compare(app, terminal_size=SMALL, run_before=moves("web2"))


def test_confirm_move_small(snap_compare, snapshot_dir: Path) -> None:
    async def run_before(pilot) -> None:
        await steady(pilot)
        await open_confirmation(pilot)
    app = app_for(snapshot_dir, open_server="files", new_path="/srv/share")
    assert snap_compare(app, terminal_size=SMALL, run_before=run_before)


def test_cancel_question_small(snap_compare, snapshot_dir: Path) -> None:
    async def run_before(pilot) -> None:
        await moves("db-primary")(pilot)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, CancelMoveScreen))
        await pilot.pause()
    app = app_for(snapshot_dir, open_server="db-primary")
    assert snap_compare(app, terminal_size=SMALL, run_before=run_before)


def test_quit_question_small(snap_compare, snapshot_dir: Path) -> None:
    async def run_before(pilot) -> None:
        await moves("db-primary")(pilot)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen))
        await pilot.pause()
    assert snap_compare(app_for(snapshot_dir), terminal_size=SMALL, run_before=run_before)


def test_help_small(snap_compare, snapshot_dir: Path) -> None:
    async def run_before(pilot) -> None:
        await pilot.press("question_mark")
        await pilot.pause()
    assert snap_compare(app_for(snapshot_dir), terminal_size=SMALL, run_before=run_before)


def test_help_scrolled_to_the_end_small(snap_compare, snapshot_dir: Path) -> None:
    async def run_before(pilot) -> None:
        await pilot.press("question_mark")
        await pilot.pause()
        await pilot.press("end")
        await pilot.pause()
    assert snap_compare(app_for(snapshot_dir), terminal_size=SMALL, run_before=run_before)


def test_server_form_small(snap_compare, snapshot_dir: Path) -> None:
    async def run_before(pilot) -> None:
        await pilot.press("e")  # edit web1, the first row
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ServerFormScreen))
        await steady(pilot)
    assert snap_compare(app_for(snapshot_dir), terminal_size=SMALL, run_before=run_before)


def test_sudo_password_small(snap_compare, snapshot_dir: Path) -> None:
    async def run_before(pilot) -> None:
        pilot.app.push_screen(SudoPasswordScreen("db-primary"))
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, SudoPasswordScreen))
        await steady(pilot)
    assert snap_compare(app_for(snapshot_dir), terminal_size=SMALL, run_before=run_before)

