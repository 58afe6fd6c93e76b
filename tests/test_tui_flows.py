"""Pilot tests of the TUI flows. Moves here are real: the local target runs the real mover."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from textual.widgets import Button, DataTable, Input, Static

from tests.test_tui_support import (
    ScriptedHandle,
    ScriptedMover,
    make_app,
    plan,
    progress,
    settle,
    wait_for,
)
from tui.app.app import ServerMoveApp
from tui.app.screens.dashboard import DashboardScreen
from tui.app.screens.first_run import FirstRunScreen
from tui.app.screens.inventory_error import InventoryErrorScreen
from tui.app.screens.modals import ConfirmMoveScreen, ConfirmScreen, HostKeyScreen
from tui.app.screens.server_detail import ServerDetailScreen
from tui.app.screens.server_form import ServerFormScreen
from tui.app.widgets.move_panel import OutcomePanel
from tui.core.fleet import MoveOptions
from tui.core.inventory import ServerEntry, load_inventory
from tui.core.protocol import DataState, Phase
from tui.core.ssh import HostKeyQuestion


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONFIG", "DATA", "STATE"):
        monkeypatch.setenv(f"SERVERMOVE_{name}_DIR", str(tmp_path / name.lower()))


def make_tree(root: Path, files: int = 40, size: int = 50_000) -> Path:
    root.mkdir(parents=True)
    for index in range(files):
        sub = root / f"d{index % 4}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{index}.bin").write_bytes(os.urandom(size))
    return root


def outcome(app: ServerMoveApp) -> str:
    panel = app.screen.query_one(OutcomePanel)
    return f"{panel.border_title}\n{panel.render()}"


def plan_shown(app: ServerMoveApp) -> bool:
    return isinstance(app.screen, ConfirmMoveScreen) and bool(app.screen.query("#yes"))


async def apply_and_confirm(app: ServerMoveApp, pilot, new_path: str) -> None:
    app.screen.query_one("#new-path", Input).value = new_path
    await pilot.click("#apply")
    await wait_for(pilot, lambda: plan_shown(app), what="the plan")
    await pilot.pause()  # laid out: a click lands where the button is
    await pilot.click("#yes")


async def test_apply_confirm_and_complete_updates_inventory(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "data" / "app")
    dst = tmp_path / "data" / "moved"
    app = make_app(tmp_path, [ServerEntry("box", "local", str(src))], real_runner=True,
                   open_server="box")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        app.screen.query_one("#new-path", Input).value = str(dst)
        await pilot.click("#apply")
        await wait_for(pilot, lambda: plan_shown(app), what="the plan")
        body = str(app.screen.query_one(".dialog-body", Static).render())
        assert "Rename" in body and "40 files" in body  # same filesystem: the real plan says so
        await pilot.pause()  # laid out: a click lands where the button is
        await pilot.click("#yes")
        await wait_for(pilot, lambda: app.fleet.get("box") and not app.fleet.is_active("box"),
                       timeout=60, what="the move to end")
        await settle(pilot)
        assert app.fleet.get("box").succeeded, outcome(app)
        assert "Move complete" in outcome(app)
        # A same-filesystem move is one rename: nothing copied, nothing counted.
        assert f"Renamed {src} to {dst}" in outcome(app)
        assert load_inventory(app.inventory_path).get("box").data_path == str(dst)
        assert sorted(p.name for p in dst.rglob("*.bin")) == sorted(
            f"f{i}.bin" for i in range(40))
        assert not src.exists()


async def test_cancel_asks_first_and_leaves_the_source_untouched(tmp_path: Path,
                                                                  tmpfs: Path) -> None:
    src = make_tree(tmp_path / "data" / "app", files=8, size=500_000)
    dst = tmpfs / "moved"
    app = make_app(tmp_path, [ServerEntry("box", "local", str(src))], real_runner=True,
                   open_server="box", move_options=MoveOptions(bwlimit="256K"))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        await apply_and_confirm(app, pilot, str(dst))
        await wait_for(pilot, lambda: app.fleet.get("box") is not None
                       and app.fleet.get("box").progress.phase is Phase.COPYING,
                       timeout=60, what="copying")
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen)
                       and bool(app.screen.query("#yes")))
        await pilot.click("#no")  # "Keep moving": nothing happens
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        await settle(pilot)
        assert app.fleet.is_active("box")
        await pilot.click("#cancel-move")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen)
                       and bool(app.screen.query("#yes")))
        await pilot.click("#yes")
        await wait_for(pilot, lambda: not app.fleet.is_active("box"), what="the cancel")
        await settle(pilot)
        text = outcome(app)
        assert "Move cancelled while copying" in text
        assert "source untouched; nothing was written at the destination" in text
        assert load_inventory(app.inventory_path).get("box").data_path == str(src)
        assert len(list(src.rglob("*.bin"))) == 8
        assert not dst.exists()


async def test_no_room_at_the_destination_is_refused_in_plain_words(tmp_path: Path,
                                                                     tiny_fs: Path) -> None:
    src = make_tree(tmp_path / "data" / "app", files=10, size=300_000)
    app = make_app(tmp_path, [ServerEntry("box", "local", str(src))], real_runner=True,
                   open_server="box")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        app.screen.query_one("#new-path", Input).value = str(tiny_fs / "moved")
        await pilot.click("#apply")
        status = app.screen.query_one("#action-status", Static)
        await wait_for(pilot, lambda: "Refused" in str(status.render()), what="the refusal")
        assert "space" in str(status.render()).lower()
        assert isinstance(app.screen, ServerDetailScreen)  # no confirmation for a refused move
        assert app.fleet.get("box") is None


async def test_error_during_the_move_shows_what_happened_and_where_the_data_is(
        tmp_path: Path) -> None:
    def script(request) -> ScriptedHandle:
        if request.dry_run:
            return ScriptedHandle([plan("web1", request.src, request.dst)])
        return ScriptedHandle([
            progress("web1", Phase.CALCULATING, seq=1),
            progress("web1", Phase.COPYING, done=1000, files=1, ts=1, seq=2),
            progress("web1", Phase.ERROR, done=1000, files=1, ts=2, seq=3,
                     error="No space left on device: db/big.ibd",
                     data_state=DataState.SOURCE)], exit_status=1)

    app = make_app(tmp_path, [ServerEntry("web1", "admin@web1", "/var/lib/app")],
                   start_move=ScriptedMover(script), open_server="web1")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        await apply_and_confirm(app, pilot, "/srv/app")
        await wait_for(pilot, lambda: app.fleet.get("web1") and not app.fleet.is_active("web1"))
        await settle(pilot)
        text = outcome(app)
        assert "Move failed while copying" in text
        assert "No space left on device: db/big.ibd" in text
        assert "source untouched" in text
        assert app.screen.query_one("#apply", Button).display
        assert load_inventory(app.inventory_path).get("web1").data_path == "/var/lib/app"
        await pilot.press("escape")
        await settle(pilot)
        table = app.screen.query_one(DataTable)
        assert str(table.get_cell("web1", "status")) == "error while copying"


@pytest.mark.parametrize("button, accepted", [("#accept", True), ("#reject", False)])
async def test_host_key_dialog_answers_the_ssh_layer(tmp_path: Path, button: str,
                                                     accepted: bool) -> None:
    app = make_app(tmp_path, [ServerEntry("web1", "admin@web1", "/var/lib/app")])
    async with app.run_test(size=(120, 40)) as pilot:
        question = HostKeyQuestion("web1", "web1.example.com", 2222, "ssh-ed25519",
                                   "SHA256:abcdefghijklmnop", tmp_path / "known_hosts")
        answer = app.run_worker(app.confirm_host_key(question))
        await wait_for(pilot, lambda: isinstance(app.screen, HostKeyScreen))
        shown = str(app.screen.query_one("#fingerprint", Static).render())
        assert "ssh-ed25519" in shown and "SHA256:abcdefghijklmnop" in shown
        # Enter on a surprise must not trust a key.
        await wait_for(pilot, lambda: app.screen.focused is not None)
        assert app.screen.focused.id == "reject"
        await pilot.click(button)
        await answer.wait()
        assert answer.result is accepted


async def test_sudo_password_dialog_is_masked(tmp_path: Path) -> None:
    from tui.core.targets import parse_target

    app = make_app(tmp_path, [ServerEntry("web1", "admin@web1", "/var/lib/app")])
    async with app.run_test(size=(120, 40)) as pilot:
        answer = app.run_worker(app.ask_sudo_password(parse_target("admin@web1", sudo=True)))
        await wait_for(pilot, lambda: app.screen.query("#password"))
        assert app.screen.query_one("#password", Input).password
        await pilot.press(*"hunter2", "enter")
        await answer.wait()
        assert answer.result == "hunter2"


async def test_add_a_server_from_first_run(tmp_path: Path) -> None:
    app = make_app(tmp_path, [], ssh_aliases=["web1", "db-primary"])
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, FirstRunScreen))
        await pilot.click("#add")
        await wait_for(pilot, lambda: isinstance(app.screen, ServerFormScreen))
        await pilot.click("#name")
        await pilot.press(*"web1")
        await pilot.click("#target")
        await pilot.press(*"db-primary")
        await pilot.click("#data-path")
        await pilot.press(*"var/lib/app")  # not absolute: refused with a reason
        await pilot.click("#save")
        await pilot.pause()
        assert "absolute" in str(app.screen.query_one("#problem", Static).render())
        await pilot.click("#data-path")
        await pilot.press("home", "/", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        assert load_inventory(app.inventory_path).get("web1") == ServerEntry(
            "web1", "db-primary", "/var/lib/app")
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 1)
        assert str(table.get_cell("web1", "status")) == "idle"


async def test_broken_inventory_names_the_line_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "servers.toml"
    path.write_text('[web1]\ntarget = "admin@web1"\ndata_path = "/var/lib/app\n')
    app = ServerMoveApp(inventory_path=path, ssh_aliases=[])
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, InventoryErrorScreen))
        message = str(app.screen.query_one("#inventory-error-message", Static).render())
        assert str(path) in message and "line 3" in message
        path.write_text('[web1]\ntarget = "admin@web1"\ndata_path = "/var/lib/app"\n')
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        assert app.screen.query_one(DataTable).row_count == 1
