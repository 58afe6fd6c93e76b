"""On an 80x24 terminal the help can be read to its end, a move's outcome is in sight and a
long plan keeps its buttons in reach."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.containers import VerticalScroll
from textual.widgets import Button, DataTable, Label

from tests.test_tui_snapshots import SERVERS, app_for, moves, script
from tests.test_tui_support import ScriptedMover, make_app, open_confirmation, wait_for
from tui.app.screens.help import HelpScreen
from tui.app.screens.server_detail import ServerDetailScreen
from tui.app.widgets.move_panel import OutcomePanel
from tui.core.inventory import ServerEntry

SMALL = (80, 24)


def in_sight(widget, within) -> bool:
    """The whole widget is drawn inside `within` (a region of the screen)."""
    region = widget.region
    return bool(region.height) and within.contains_region(region)


async def test_help_scrolls_to_its_end_at_80x24(tmp_path: Path) -> None:
    app = app_for(tmp_path, servers=SERVERS)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.pause()
        screen = app.screen
        keys = screen.query_one(VerticalScroll)
        assert in_sight(keys, screen.region) and keys.max_scroll_y > 0
        assert in_sight(screen.query(Label).last(), screen.region)  # the line below the keys
        await pilot.press("end")
        await pilot.pause()
        assert keys.scroll_y == keys.max_scroll_y


async def test_move_outcome_in_sight_at_80x24(tmp_path: Path) -> None:
    for name in ("web1", "web2"):  # complete, failed
        app = app_for(tmp_path / name, open_server=name)
        async with app.run_test(size=SMALL) as pilot:
            await moves(name)(pilot)
            await asyncio.sleep(0)
            await pilot.pause()
            panel = app.screen.query_one(OutcomePanel)
            assert panel.display and "data" in str(panel.render()).lower()
            assert in_sight(panel, app.screen.query_one("#detail").region), name


async def test_a_long_plan_keeps_its_buttons_in_reach_at_80x24(tmp_path: Path) -> None:
    deep = "/srv/" + "/".join(f"level-{n}-of-a-deep-tree" for n in range(12))
    app = make_app(tmp_path, [ServerEntry("web1", "web1", deep)],
                   start_move=ScriptedMover(script), open_server="web1",
                   new_path=deep.replace("/srv/", "/mnt/big/"))
    async with app.run_test(size=SMALL) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        await open_confirmation(pilot)
        start = app.screen.query_one("#yes", Button)
        assert app.screen.focused is start and in_sight(start, app.screen.region)


async def test_dashboard_statuses_fit_at_80_columns(tmp_path: Path) -> None:
    app = app_for(tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await moves("web1", "web2", "db-primary")(pilot)
        table = app.screen.query_one(DataTable)
        # The data paths give up room (shortened in the middle), not the statuses.
        assert table.virtual_size.width <= table.scrollable_content_region.width
        assert "…" in str(table.get_cell("db-primary", "path"))
        assert str(table.get_cell("web1", "status")) == "moved to /srv/app"
