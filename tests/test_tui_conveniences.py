"""What users of lazygit, k9s and htop expect: enter in the footer, Home/End in the table,
app commands in the palette, a toast and a bell when a move ends elsewhere, labelled form
fields, the confirmation's options, the focus where typing goes, and --ssh-config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from textual.widgets import Button, Checkbox, Input, Select
from textual.widgets._footer import FooterKey

from tests.test_tui_snapshots import NEW_PATH, SERVERS, app_for, script
from tests.test_tui_support import (
    ScriptedMover,
    dry_run_again,
    make_app,
    open_confirmation,
    settle,
    wait_for,
)
from tui.app.app import ServerMoveApp
from tui.app.screens.dashboard import DashboardScreen
from tui.app.screens.server_detail import ServerDetailScreen
from tui.app.screens.server_form import ServerFormScreen
from tui.core.ssh import SshSettings


def footer_keys(app: ServerMoveApp) -> set[tuple[str, str]]:
    return {(key.key, key.description) for key in app.screen.query(FooterKey)}


async def test_dashboard_footer_offers_enter_and_table_takes_home_end(tmp_path: Path) -> None:
    app = app_for(tmp_path)
    async with app.run_test(size=(100, 24)) as pilot:
        await pilot.pause()
        assert ("enter", "Open") in footer_keys(app)
        screen = app.screen
        await pilot.press("end")
        assert screen.selected_server == SERVERS[-1].name
        await pilot.press("home")
        assert screen.selected_server == SERVERS[0].name
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        assert app.screen.server_name == SERVERS[1].name


async def test_palette_has_the_app_commands(tmp_path: Path) -> None:
    app = app_for(tmp_path)
    async with app.run_test(size=(100, 24)) as pilot:
        await pilot.pause()
        await pilot.press("down")
        commands = {command.title: command for command in app.get_system_commands(app.screen)}
        assert {"Add a server", "Open the moves log", "Move the data of web2"} <= set(commands)
        commands["Move the data of web2"].callback()
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        await pilot.pause()
        assert app.screen.server_name == "web2"
        assert app.screen.focused is app.screen.query_one("#new-path", Input)
        commands = {command.title: command for command in app.get_system_commands(app.screen)}
        commands["Add a server"].callback()
        await wait_for(pilot, lambda: isinstance(app.screen, ServerFormScreen))


async def test_a_move_ending_elsewhere_is_told_with_a_toast_and_the_bell(tmp_path: Path) -> None:
    app = app_for(tmp_path)
    rung: list[bool] = []
    app.bell = lambda: rung.append(True)  # type: ignore[method-assign]
    async with app.run_test(size=(100, 24)) as pilot:
        app.start_move("web1", NEW_PATH)  # on the dashboard: told
        await wait_for(pilot, lambda: not app.fleet.is_active("web1"), what="web1's move")
        await settle(pilot)
        told = [n for n in app._notifications if n.title == "web1: the move ended"]
        assert told and told[0].message == f"moved to {NEW_PATH}" and rung == [True]
        app.open_server("web2")
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        app.start_move("web2", NEW_PATH)  # watching it: the screen says it, no toast
        await wait_for(pilot, lambda: not app.fleet.is_active("web2"), what="web2's move")
        await settle(pilot)
        assert not [n for n in app._notifications if n.title == "web2: the move ended"]
        assert rung == [True]


async def test_form_fields_have_labels_and_sudo_says_on_or_off(tmp_path: Path) -> None:
    app = app_for(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ServerFormScreen))
        await pilot.pause()
        labels = {str(label.render()) for label in app.screen.query(".form-label")}
        assert {"Name", "Target", "Data path", "Python"} <= labels
        sudo = app.screen.query_one("#sudo", Checkbox)
        assert str(sudo.label) == "sudo: off"
        sudo.toggle()
        await pilot.pause()
        assert str(sudo.label) == "sudo: on"
        await pilot.click("#save")  # the form still fits and works at 80x24
        assert "name" in str(app.screen.query_one("#problem").render())


async def test_new_path_focused_when_a_server_with_a_finished_move_is_reopened(
        tmp_path: Path) -> None:
    app = app_for(tmp_path, open_server="web1")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        app.start_move("web1", NEW_PATH)
        await wait_for(pilot, lambda: not app.fleet.is_active("web1"), what="the move")
        await settle(pilot)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        await settle(pilot)
        assert app.screen.focused is app.screen.query_one("#new-path", Input)


async def test_confirmation_offers_verify_limit_and_a_new_dry_run(tmp_path: Path) -> None:
    mover = ScriptedMover(script)
    app = make_app(tmp_path, SERVERS, start_move=mover, open_server="files",
                   new_path="/srv/share")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        await open_confirmation(pilot)
        dialog = app.screen
        dialog.query_one("#verify", Select).value = "size"
        dialog.query_one("#bwlimit", Input).value = "40M"
        await pilot.pause()
        await dry_run_again(pilot, dialog)
        assert str(app.screen.query_one("#yes", Button).label) == "Start move"
        await pilot.click("#yes")
        await wait_for(pilot, lambda: len(mover.requests) == 3, what="the move")
        first, again, move = mover.requests
        assert (first.dry_run, first.verify, first.bwlimit) == (True, "checksum", None)
        assert (again.dry_run, again.verify, again.bwlimit) == (True, "size", "40M")
        assert (move.dry_run, move.verify, move.bwlimit) == (False, "size", "40M")


async def test_the_tui_takes_an_ssh_config(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host alpha\n    HostName 10.0.0.1\nHost beta\n    HostName 10.0.0.2\n")
    app = ServerMoveApp(inventory_path=tmp_path / "servers.toml",
                        ssh_settings=SshSettings(config_files=[config]))
    assert app.ssh_aliases == ["alpha", "beta"]
    assert app.fleet.settings.config_files == [config]
    missing = subprocess.run([sys.executable, "-m", "tui", "tui", "--ssh-config",
                              str(tmp_path / "nope")], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"servermove: ssh config file {tmp_path / 'nope'} not found"
