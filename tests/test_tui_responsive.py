"""Smooth under load: 20 servers flooding progress events; the UI coalesces and stays snappy."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from textual.message import Message

from tests.test_tui_support import ScriptedHandle, ScriptedMover, make_app, progress, wait_for
from tui.app import PUBLISH_INTERVAL_S
from tui.inventory import ServerEntry
from tui.messages import MoveProgressed
from tui.protocol import Phase
from tui.screens.help import HelpScreen

SERVERS = 20
EVENTS_PER_SERVER = 3000


def flood(name: str) -> ScriptedHandle:
    events = [progress(name, Phase.CALCULATING, seq=1)]
    events += [progress(name, Phase.COPYING, done=100 * i, files=i, ts=i / 1000, seq=i + 1,
                        total=100 * EVENTS_PER_SERVER, files_total=EVENTS_PER_SERVER)
               for i in range(1, EVENTS_PER_SERVER)]
    return ScriptedHandle(events, hold=asyncio.Event())  # stays "running" until cancelled


async def test_twenty_flooding_servers_get_at_most_ten_repaints_a_second(tmp_path: Path) -> None:
    servers = [ServerEntry(f"srv{i:02d}", f"host{i}", "/var/lib/app") for i in range(SERVERS)]
    received: Counter[str] = Counter()

    def hook(message: Message) -> None:
        if isinstance(message, MoveProgressed):
            received[message.server_name] += 1

    app = make_app(tmp_path, servers,
                   start_move=ScriptedMover(lambda request: flood(request.server_name)))
    async with app.run_test(size=(120, 40), message_hook=hook) as pilot:
        started = time.monotonic()
        for server in servers:
            app.start_move(server.name, "/srv/app")
        await wait_for(pilot, lambda: all(
            app.fleet.get(s.name).progress.files_copied == EVENTS_PER_SERVER - 1
            for s in servers), timeout=60, what="every event to be folded in")
        elapsed = time.monotonic() - started

        # A key press is handled at once, mid-flood.
        pressed = time.monotonic()
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), timeout=2)
        assert time.monotonic() - pressed < 0.5

        await pilot.press("escape")
        await pilot.pause(0.3)
        # The dashboard's status column shows the latest state, not a stale one.
        table = app.screen.query_one("DataTable")
        assert str(table.get_cell("srv07", "status")) == "copying 100%"

    ticks = elapsed / PUBLISH_INTERVAL_S + 3
    for server in servers:
        assert received[server.name] <= ticks, (server.name, received[server.name], ticks)
        assert received[server.name] >= 1
    total_events = SERVERS * EVENTS_PER_SERVER
    assert sum(received.values()) < total_events / 10
