"""The Moves Log screen and one move's detail: Pilot tests on a written moves log, and snapshots.

Times are shown in local time: every test here runs with TZ=UTC so they read the same anywhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from textual.widget import Widget
from textual.widgets import DataTable, Select, Static
from textual.widgets._select import SelectOverlay

from tests.test_tui_snapshots import finished_sequence
from tests.test_tui_support import (
    ScriptedHandle,
    ScriptedMover,
    make_app,
    plan,
    settle,
    wait_for,
)
from tui.app.app import ServerMoveApp
from tui.app.messages import MoveFinished
from tui.app.screens.dashboard import DashboardScreen
from tui.app.screens.moves_log import (
    MoveDetailScreen,
    MovesLogScreen,
    both_times,
    middle_ellipsis,
)
from tui.app.screens.server_detail import ServerDetailScreen
from tui.core.formatting import local_time
from tui.core.inventory import ServerEntry
from tui.core.moves_log import MoveRecord, MovesLog, this_machine
from tui.core.protocol import Phase

# db-primary is in the log but no longer in the inventory: the log keeps a removed server's moves,
# and the app does not try to pick up its unfinished move when it starts.
SERVERS = [
    ServerEntry("web1", "admin@web1.example.com", "/srv/app"),
    ServerEntry("web2", "admin@web2.example.com:2222", "/var/lib/app"),
    ServerEntry("files", "files.lan", "/data/[new] share"),
]
DISK_FULL = "No space left on device while writing db/tables/table-3.db"


def timeline(*steps: tuple[str, str] | tuple[str, str, str]) -> list[dict[str, str]]:
    return [{"at": step[0], "phase": step[1], **({"error": step[2]} if len(step) > 2 else {})}
            for step in steps]


SAMPLE_RECORDS = [
    MoveRecord(
        moveId="m-web1-cancelled", server="web1", target="admin@web1.example.com",
        source="/var/lib/app", destination="/mnt/old-disk/app", phase="cancelled",
        bytesTotal=300_000_000, bytesCopied=45_000_000, filesTotal=3000, filesCopied=450,
        startedAt="2026-02-27T10:00:00Z", finishedAt="2026-02-27T10:00:09Z", duration=9.0,
        averageRate=5_000_000.0, error="cancelled by the user", dataState="source",
        method="copy",
        timeline=timeline(("2026-02-27T10:00:00Z", "calculating"),
                          ("2026-02-27T10:00:01Z", "copying"),
                          ("2026-02-27T10:00:09Z", "cancelled", "cancelled by the user"))),
    MoveRecord(
        moveId="m-files-rename", server="files", target="files.lan", source="/data/share",
        destination="/data/[new] share", phase="complete", bytesTotal=1_200_000_000,
        bytesCopied=1_200_000_000, filesTotal=48_000, filesCopied=48_000, verify="size",
        startedAt="2026-02-28T16:30:00Z", finishedAt="2026-02-28T16:30:02Z", duration=2.0,
        dataState="destination", method="rename",
        timeline=timeline(("2026-02-28T16:30:00Z", "calculating"),
                          ("2026-02-28T16:30:02Z", "complete"))),
    MoveRecord(
        moveId="m-web2-error", server="web2", target="admin@web2.example.com:2222",
        source="/srv/app", destination="/var/lib/app", phase="error",
        bytesTotal=300_000_000, bytesCopied=165_000_000, filesTotal=3000, filesCopied=1650,
        startedAt="2026-03-01T22:40:05Z", finishedAt="2026-03-01T22:40:17Z", duration=12.0,
        averageRate=13_750_000.0, error=DISK_FULL, dataState="source", method="copy",
        startedBy="alice@laptop-b",
        timeline=timeline(("2026-03-01T22:40:05Z", "calculating"),
                          ("2026-03-01T22:40:06Z", "copying"),
                          ("2026-03-01T22:40:17Z", "error", DISK_FULL))),
    MoveRecord(
        moveId="m-web1-complete", server="web1", target="admin@web1.example.com",
        source="/var/lib/app", destination="/srv/app", phase="complete",
        bytesTotal=300_000_000, bytesCopied=300_000_000, filesTotal=3000, filesCopied=3000,
        startedAt="2026-03-02T09:15:00Z", finishedAt="2026-03-02T09:15:26Z", duration=26.0,
        averageRate=11_538_461.5, dataState="destination", method="copy",
        startedBy=this_machine(),
        timeline=timeline(("2026-03-02T09:15:00Z", "calculating"),
                          ("2026-03-02T09:15:01Z", "copying"),
                          ("2026-03-02T09:15:21Z", "verifying"),
                          ("2026-03-02T09:15:25Z", "cleaning"),
                          ("2026-03-02T09:15:26Z", "complete"))),
    MoveRecord(
        moveId="m-db-unfinished", server="db-primary", target="db-primary",
        source="/srv/postgres/16/main", destination="/data/postgres/16/main", phase="copying",
        bytesTotal=80_000_000_000, bytesCopied=21_000_000_000, filesTotal=5210,
        filesCopied=1400, startedAt="2026-03-02T11:00:00Z", method="copy",
        timeline=timeline(("2026-03-02T11:00:00Z", "calculating"),
                          ("2026-03-02T11:00:04Z", "copying"),
                          ("2026-03-02T11:31:40Z", "connection-lost",
                           "ssh: connection to db-primary reset"))),
]
NEWEST_FIRST = ["m-db-unfinished", "m-web1-complete", "m-web2-error", "m-files-rename",
                "m-web1-cancelled"]


def write_sample_log(records: list[MoveRecord] = SAMPLE_RECORDS) -> MovesLog:
    """The sample moves into the moves log of this test's data dir (also used for the README
    screenshot)."""
    history = MovesLog()
    for record in records:
        history.save(record)
    return history


@pytest.fixture(autouse=True)
def utc_local_time() -> Iterator[None]:
    """Local time is UTC here, so the times on screen do not depend on where tests run."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_times_are_local_with_utc_beside_them() -> None:
    os.environ["TZ"] = "CET-1"  # a POSIX zone one hour east of UTC; the fixture puts TZ back
    time.tzset()
    assert local_time("2026-03-01T22:40:05Z") == "2026-03-01 23:40"
    assert both_times("2026-03-01T22:40:05Z") == "2026-03-01 23:40:05 CET (2026-03-01 22:40:05 UTC)"
    assert both_times(None) == "—"


def test_a_long_route_is_shortened_in_the_middle() -> None:
    route = "/srv/postgres/16/main → /data/postgres/16/main"
    assert middle_ellipsis(route, 100) == route
    assert middle_ellipsis(route, 24) == "/srv/postgr…gres/16/main"


def app_for(config: Path, **kwargs: object) -> ServerMoveApp:
    return make_app(config, SERVERS, **kwargs)


def rows(app: ServerMoveApp) -> list[str]:
    table = app.screen.query_one("#moves", DataTable)
    return [row.key.value for row in table.ordered_rows] if table.display else []


def cells(app: ServerMoveApp, move_id: str) -> dict[str, str]:
    table = app.screen.query_one("#moves", DataTable)
    return {str(column.key.value): str(cell) for column, cell in
            zip(table.ordered_columns, table.get_row(move_id), strict=True)}


def hint(app: ServerMoveApp) -> str:
    return str(app.screen.query_one("#empty-hint", Static).render())


def shown_text(*widgets: Widget) -> str:
    """What widgets show, as plain text lines at their width."""
    return "\n".join(strip.text.rstrip() for widget in widgets
                     for strip in widget.render_lines(widget.region.reset_offset))


def detail_text(app: ServerMoveApp) -> str:
    screen = app.screen
    assert isinstance(screen, MoveDetailScreen)
    return shown_text(screen.query_one("#summary"), screen.query_one("#timeline"))


async def server_choices(pilot, screen: MovesLogScreen) -> list[str]:
    """The server filter's choices, as its drop-down list shows them."""
    server_filter = screen.query_one("#server-filter", Select)
    server_filter.expanded = True
    await pilot.pause()
    choices = [str(option.prompt) for option in screen.query_one(SelectOverlay).options]
    server_filter.expanded = False
    await pilot.pause()
    return choices


async def open_log(app: ServerMoveApp, pilot, key: str = "l") -> MovesLogScreen:
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(app.screen, MovesLogScreen), what="the moves log")
    await pilot.pause()
    return app.screen


async def test_table_shows_newest_first_in_plain_words(tmp_path: Path) -> None:
    write_sample_log()
    app = app_for(tmp_path)
    async with app.run_test(size=(160, 50)) as pilot:
        await open_log(app, pilot)
        assert rows(app) == NEWEST_FIRST
        assert cells(app, "m-web2-error") == {
            "started": "2026-03-01 22:40", "server": "web2", "result": "error",
            "from → to": "/srv/app → /var/lib/app", "size": "300.0 MB", "files": "3,000",
            "time": "0:12", "avg rate": "13.8 MB/s", "started by": "alice@laptop-b"}
        assert cells(app, "m-web1-complete")["started by"] == "here"
        assert cells(app, "m-db-unfinished")["started by"] == "—"
        assert cells(app, "m-db-unfinished")["result"] == "unfinished"
        # A path with brackets is a path, not markup.
        assert cells(app, "m-files-rename")["from → to"] == "/data/share → /data/[new] share"
        assert hint(app) == ""
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))


async def test_filter_by_server_and_by_result(tmp_path: Path) -> None:
    write_sample_log()
    app = app_for(tmp_path)
    async with app.run_test(size=(160, 50)) as pilot:
        screen = await open_log(app, pilot)
        server_filter = screen.query_one("#server-filter", Select)
        result_filter = screen.query_one("#result-filter", Select)
        # The server choices are the servers in the log, plus all.
        assert await server_choices(pilot, screen) == [
            "all servers", "db-primary", "files", "web1", "web2"]

        server_filter.value = "web1"
        await wait_for(pilot, lambda: rows(app) == ["m-web1-complete", "m-web1-cancelled"],
                       what="web1's moves")
        result_filter.value = "cancelled"
        await wait_for(pilot, lambda: rows(app) == ["m-web1-cancelled"], what="web1 cancelled")
        result_filter.value = "error"
        await wait_for(pilot, lambda: rows(app) == [], what="no rows")
        assert hint(app) == "No moves match these filters."
        server_filter.value = ""
        await wait_for(pilot, lambda: rows(app) == ["m-web2-error"], what="the failed move")
        result_filter.value = "unfinished"
        await wait_for(pilot, lambda: rows(app) == ["m-db-unfinished"], what="unfinished")
        result_filter.value = "complete"
        await wait_for(pilot, lambda: rows(app) == ["m-web1-complete", "m-files-rename"],
                       what="complete moves")

        # By keyboard: r focuses the result filter; pick "all results" from its list.
        await pilot.press("r")
        assert app.focused is result_filter
        await pilot.press("enter", "home", "enter")
        await wait_for(pilot, lambda: rows(app) == NEWEST_FIRST, what="all moves again")


async def test_opening_a_row_shows_the_move_and_its_timeline(tmp_path: Path) -> None:
    write_sample_log()
    app = app_for(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_log(app, pilot)
        table = screen.query_one("#moves", DataTable)
        table.move_cursor(row=table.get_row_index("m-web2-error"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MoveDetailScreen),
                       what="the detail")
        await pilot.pause()
        text = detail_text(app)
        for words in ("Failed while copying",
                      "web2 (admin@web2.example.com:2222)",
                      "From          /srv/app", "To            /var/lib/app",
                      "Source untouched; nothing was written at the destination",
                      DISK_FULL,
                      "Started       2026-03-01 22:40:05 UTC\nFinished",
                      "165.0 MB of 300.0 MB copied", "1,650 of 3,000 copied",
                      "13.8 MB/s", "checksum: every file's contents compared",
                      "copy: the destination is on another filesystem"):
            assert words in text, f"{words!r} not in:\n{text}"
        timeline_lines = [line.strip() for line in text.splitlines()
                          if line.startswith("2026-03-01 22:40")]
        assert [line.split()[2:4] for line in timeline_lines] == [
            ["0:00", "calculating"], ["0:01", "copying"], ["0:12", "error"]]
        assert timeline_lines[-1].endswith(DISK_FULL)

        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MovesLogScreen))

        # A click highlights a row (as on the dashboard); a click on the highlighted row opens it.
        row_offset = (5, 1 + NEWEST_FIRST.index("m-db-unfinished"))  # below the header
        await pilot.click("#moves", offset=row_offset)
        await pilot.pause()
        assert isinstance(app.screen, MovesLogScreen)
        assert app.screen.selected_move_id == "m-db-unfinished"
        await pilot.click("#moves", offset=row_offset)
        await wait_for(pilot, lambda: isinstance(app.screen, MoveDetailScreen),
                       what="the detail after a click")
        await pilot.pause()
        text = detail_text(app)
        assert "Unfinished: last seen copying; then the connection was lost" in text
        assert "Not known until the move ends" in text
        assert "ssh: connection to db-primary reset" in text


async def test_from_a_server_the_log_shows_that_servers_moves(tmp_path: Path) -> None:
    write_sample_log()
    app = app_for(tmp_path, open_server="web1")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        # The new-path field has the focus: ctrl+l works from there.
        screen = await open_log(app, pilot, key="ctrl+l")
        assert screen.query_one("#server-filter", Select).value == "web1"
        assert rows(app) == ["m-web1-complete", "m-web1-cancelled"]
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))


async def test_a_server_with_no_moves_yet_says_so(tmp_path: Path) -> None:
    write_sample_log([record for record in SAMPLE_RECORDS if record.server != "files"])
    app = app_for(tmp_path, open_server="files")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        screen = await open_log(app, pilot, key="ctrl+l")
        assert screen.query_one("#server-filter", Select).value == "files"
        assert rows(app) == []
        assert hint(app) == "No moves recorded for files yet."
        assert await server_choices(pilot, screen) == [
            "all servers", "db-primary", "files", "web1", "web2"]


async def test_a_corrupt_line_is_a_notification_and_the_rest_is_shown(tmp_path: Path) -> None:
    history = write_sample_log(SAMPLE_RECORDS[:2])
    with history.path.open("a", encoding="utf-8") as log:
        log.write('{"moveId": "torn", "server": [oops\n')
    write_sample_log(SAMPLE_RECORDS[2:])
    app = app_for(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_log(app, pilot)
        assert rows(app) == NEWEST_FIRST
        [notification] = app._notifications
        assert notification.severity == "warning"
        assert "could not be read" in notification.title
        assert f"{history.path}:3: skipped an unreadable entry" in notification.message
        # Read again (a move ended): the same bad line is not announced twice.
        app.post_message(MoveFinished("web1"))
        await settle(pilot)
        assert len(app._notifications) == 1


async def test_the_log_reads_again_when_a_move_ends(tmp_path: Path) -> None:
    write_sample_log(SAMPLE_RECORDS[:1])
    app = app_for(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_log(app, pilot)
        assert rows(app) == ["m-web1-cancelled"]
        assert await server_choices(pilot, screen) == ["all servers", "web1"]
        write_sample_log(SAMPLE_RECORDS[2:3])
        app.post_message(MoveFinished("web2"))  # what the app's move worker posts at its end
        await wait_for(pilot, lambda: rows(app) == ["m-web2-error", "m-web1-cancelled"],
                       what="the new move in the table")
        # web2 is a choice now.
        assert await server_choices(pilot, screen) == ["all servers", "web1", "web2"]


async def test_an_empty_log_says_so(tmp_path: Path) -> None:
    app = app_for(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_log(app, pilot)
        assert rows(app) == []
        assert hint(app) == ("No moves recorded yet. Every move you start, here or with "
                             "`servermove move`, is listed here.")
        assert [n.message for n in app._notifications] == []


async def test_help_lists_the_moves_log_keys(tmp_path: Path) -> None:
    app = app_for(tmp_path)
    async with app.run_test(size=(100, 50)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        text = shown_text(app.screen.query_one("VerticalScroll Static"))
        assert "l / ctrl+l  Moves log" in text and "r           Result filter" in text


# -- snapshots -----------------------------------------------------------------------------


async def show_log(pilot) -> None:
    """What a log snapshot shows: the sample log, opened from the dashboard."""
    await open_log(pilot.app, pilot)


async def show_move_detail(pilot) -> None:
    """What a move-detail snapshot shows: the failed move of the sample log, opened."""
    screen = await open_log(pilot.app, pilot)
    table = screen.query_one("#moves", DataTable)
    table.move_cursor(row=table.get_row_index("m-web2-error"))
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, MoveDetailScreen))
    await pilot.pause()


def test_moves_log_snapshot(snap_compare, tmp_path: Path) -> None:
    write_sample_log()
    assert snap_compare(app_for(tmp_path), terminal_size=(120, 24), run_before=show_log)


def test_move_detail_snapshot(snap_compare, tmp_path: Path) -> None:
    write_sample_log()
    assert snap_compare(app_for(tmp_path), terminal_size=(100, 30), run_before=show_move_detail)


async def test_a_move_run_in_the_app_appears_in_the_open_log(tmp_path: Path) -> None:
    """End to end: the fleet records the move, the app says it finished, the open log re-reads."""
    def script(request) -> ScriptedHandle:
        name = request.server_name
        if request.dry_run:
            return ScriptedHandle([plan(name, request.src, request.dst)])
        # A real mover names its move in every event (the log keys its entries by that name)
        # and states its plan right after calculating (the log starts an entry with it).
        events = [replace(event, move_id="m-in-app")
                  for event in finished_sequence(name, Phase.COMPLETE)]
        events.insert(1, replace(plan(name, request.src, request.dst), dry_run=False,
                                 move_id="m-in-app"))
        return ScriptedHandle(events)

    app = app_for(tmp_path, start_move=ScriptedMover(script))
    async with app.run_test(size=(160, 50)) as pilot:
        await open_log(app, pilot)
        assert rows(app) == []
        app.start_move("web2", "/srv/app")
        await wait_for(pilot, lambda: len(rows(app)) == 1, what="the move in the log")
        assert rows(app) == ["m-in-app"]
        assert cells(app, "m-in-app")["result"] == "complete"
        assert cells(app, "m-in-app")["from → to"] == "/var/lib/app → /srv/app"
