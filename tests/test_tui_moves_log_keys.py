"""The Moves Log as lazygit and k9s users expect it: `/` to filter, sortable columns, Home/End,
who started each move, and a route column that stays readable at 80x24 and 120 columns."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, Input, Select

from tests.test_tui_moves_log import (
    NEWEST_FIRST,
    SAMPLE_RECORDS,
    app_for,
    cells,
    open_log,
    rows,
    show_log,
    show_move_detail,
    utc_local_time,  # noqa: F401 - the autouse fixture: times on screen in UTC
    write_sample_log,
)
from tests.test_tui_support import wait_for
from tui.app.screens.dashboard import DashboardScreen
from tui.app.screens.moves_log import MoveDetailScreen, shorten_route
from tui.core.moves_log import HERE, MoveRecord

LONG = MoveRecord(
    moveId="m-long", server="files", target="files.lan",
    source="/tmp/servermove-demo-x8k2/data/srv/world",
    destination="/dev/shm/servermove-demo-new-q1p7/world", phase="complete",
    bytesTotal=200_000_000, bytesCopied=200_000_000, filesTotal=2406, filesCopied=2406,
    startedAt="2026-03-02T12:00:00Z", finishedAt="2026-03-02T12:00:15Z", duration=15.0,
    averageRate=13_333_333.3, dataState="destination", method="copy",
    timeline=[{"at": "2026-03-02T12:00:00Z", "phase": "calculating"},
              {"at": "2026-03-02T12:00:15Z", "phase": "complete"}])


def test_a_shortened_route_keeps_its_arrow_and_both_ends():
    route = shorten_route("/srv/postgres/16/main", "/data/postgres/16/main", 24)
    assert len(route) == 24 and " → " in route
    source, destination = route.split(" → ")
    assert source.startswith("/srv") and source.endswith("main")
    assert destination.startswith("/data") and destination.endswith("main")
    # A short side leaves its room to the other.
    assert shorten_route("/a", "/data/postgres/16/main/and/more", 20) == "/a → /data/p…nd/more"


async def test_at_80_columns_every_route_is_readable(tmp_path: Path) -> None:
    write_sample_log([*SAMPLE_RECORDS, LONG])
    app = app_for(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_log(app, pilot)
        route = cells(app, "m-long")["from → to"]
        assert " → " in route and len(route) >= 30, route
        source, destination = route.split(" → ")
        assert source.startswith("/tmp/s") and source.endswith("/world")
        assert destination.startswith("/dev/s") and destination.endswith("/world")
        table = app.screen.query_one("#moves", DataTable)
        assert table.max_scroll_x == 0  # nothing hidden to the right
        assert {"started", "server", "result"} <= {str(c.key.value) for c in
                                                   table.ordered_columns}


async def test_at_120_columns_the_arrow_is_never_hidden(tmp_path: Path) -> None:
    write_sample_log([*SAMPLE_RECORDS, LONG])
    app = app_for(tmp_path)
    async with app.run_test(size=(120, 24)) as pilot:
        await open_log(app, pilot)
        for move_id in rows(app):
            assert " → " in cells(app, move_id)["from → to"]


async def test_slash_filters_on_any_text_and_esc_clears_it(tmp_path: Path) -> None:
    write_sample_log()
    app = app_for(tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        await open_log(app, pilot)
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"postgres")
        await wait_for(pilot, lambda: rows(app) == ["m-db-unfinished"])
        await pilot.press("escape")
        await wait_for(pilot, lambda: rows(app) == NEWEST_FIRST)
        assert isinstance(app.focused, DataTable)
        await pilot.press("slash", *"no space")  # the error text counts too
        await wait_for(pilot, lambda: rows(app) == ["m-web2-error"])
        await pilot.press("enter")  # back to the table, the filter kept
        assert isinstance(app.focused, DataTable) and rows(app) == ["m-web2-error"]
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MoveDetailScreen))


async def test_columns_sort_by_key_and_by_click(tmp_path: Path) -> None:
    write_sample_log()
    app = app_for(tmp_path)
    async with app.run_test(size=(160, 30)) as pilot:
        screen = await open_log(app, pilot)
        await pilot.press("o")  # the next column: server, A to Z
        assert screen.sort_column == "server"
        servers = [cells(app, move_id)["server"] for move_id in rows(app)]
        assert servers == sorted(servers)
        await pilot.press("o")
        await pilot.press("o")
        assert screen.sort_column == "result"
        await pilot.click("#moves", offset=(2, 0))  # the "started" header: newest first again
        await pilot.pause()
        assert screen.sort_column == "started" and rows(app) == NEWEST_FIRST
        await pilot.click("#moves", offset=(2, 0))  # again: oldest first
        await pilot.pause()
        assert rows(app) == NEWEST_FIRST[::-1]


async def test_home_and_end_go_to_the_first_and_last_move(tmp_path: Path) -> None:
    write_sample_log()
    app = app_for(tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await open_log(app, pilot)
        await pilot.press("end")
        assert screen.selected_move_id == NEWEST_FIRST[-1]
        await pilot.press("home")
        assert screen.selected_move_id == NEWEST_FIRST[0]


async def test_filter_on_who_started_the_move(tmp_path: Path) -> None:
    write_sample_log()
    app = app_for(tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await open_log(app, pilot)
        screen.query_one("#started-by-filter", Select).value = HERE
        await wait_for(pilot, lambda: rows(app) == ["m-web1-complete"])
        screen.query_one("#started-by-filter", Select).value = "elsewhere"
        await wait_for(pilot, lambda: rows(app) == ["m-web2-error"])
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))


# -- snapshots at 80x24 ------------------------------------------------------------------------

def test_moves_log_snapshot_80x24(snap_compare, tmp_path: Path) -> None:
    write_sample_log()
    assert snap_compare(app_for(tmp_path), terminal_size=(80, 24), run_before=show_log)


def test_move_detail_snapshot_80x24(snap_compare, tmp_path: Path) -> None:
    write_sample_log()
    assert snap_compare(app_for(tmp_path), terminal_size=(80, 24), run_before=show_move_detail)
