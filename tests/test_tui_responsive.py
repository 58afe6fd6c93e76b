"""Smooth under load: 20 servers flooding progress events; the UI coalesces and stays snappy.

Nothing here asserts how fast the machine is. The flood does not end until a key pressed in the
middle of it has been handled, so a UI that the flood starves never gets there; and the number of
repaints is bounded by the time the flood actually took.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from textual._context import active_message_pump
from textual.message import Message

from tests.test_tui_support import ScriptedHandle, ScriptedMover, make_app, progress, wait_for
from tui.app.app import PUBLISH_INTERVAL_S
from tui.app.messages import MoveProgressed
from tui.app.screens.dashboard import DashboardScreen
from tui.app.screens.help import HelpScreen
from tui.core.inventory import ServerEntry
from tui.core.protocol import Event, Phase

SERVERS = 20
FILES = 1_000_000_000  # more than any flood reaches: the last event jumps to it
EVENTS_BEFORE_THE_KEY = 1000  # per server, so the key lands in a flood well under way


class Flood:
    """Progress events for as long as `key_handled` is unset, then one that completes the copy."""

    def __init__(self) -> None:
        self.key_handled = asyncio.Event()
        self.yielded: Counter[str] = Counter()

    def events(self, name: str) -> Iterator[Event]:
        yield progress(name, Phase.CALCULATING, seq=1)
        files = 0
        while not self.key_handled.is_set():
            files += 1
            self.yielded[name] += 1
            yield progress(name, Phase.COPYING, done=100 * files, files=files, ts=files / 1000,
                           seq=files + 1, total=100 * FILES, files_total=FILES)
        self.yielded[name] += 1
        yield progress(name, Phase.COPYING, done=100 * FILES, files=FILES, ts=files / 1000 + 1,
                       seq=files + 2, total=100 * FILES, files_total=FILES)

    def handle(self, name: str) -> ScriptedHandle:
        return ScriptedHandle(self.events(name), hold=asyncio.Event())  # "running" until cancelled


async def test_twenty_flooding_servers_get_at_most_ten_repaints_a_second(tmp_path: Path) -> None:
    servers = [ServerEntry(f"srv{i:02d}", f"host{i}", "/var/lib/app") for i in range(SERVERS)]
    flood = Flood()
    received: Counter[str] = Counter()

    def hook(message: Message) -> None:
        # Counted where the dashboard handles it: the help screen gets its own copy of each.
        if isinstance(message, MoveProgressed) and isinstance(active_message_pump.get(None),
                                                              DashboardScreen):
            received[message.server_name] += 1

    app = make_app(tmp_path, servers,
                   start_move=ScriptedMover(lambda request: flood.handle(request.server_name)))
    async with app.run_test(size=(120, 40), message_hook=hook) as pilot:
        started = time.monotonic()
        for server in servers:
            app.start_move(server.name, "/srv/app")
        await wait_for(pilot, lambda: all(
            app.fleet.get(s.name).progress.files_copied >= EVENTS_BEFORE_THE_KEY
            for s in servers), timeout=60, what="every server's flood to be well under way")

        # A key pressed mid-flood is handled while the flood goes on.
        yielded_at_press = sum(flood.yielded.values())
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), timeout=30,
                       what="the help screen, with the flood still running")
        assert sum(flood.yielded.values()) > yielded_at_press, "the flood stopped for the key"
        flood.key_handled.set()

        await wait_for(pilot, lambda: all(
            app.fleet.get(s.name).progress.files_copied == FILES for s in servers),
            timeout=60, what="every flood's last event to be folded in")
        elapsed = time.monotonic() - started

        await pilot.press("escape")
        # The dashboard's status column comes to show the latest state, not a stale one.
        await wait_for(pilot, lambda: str(app.screen.query_one("DataTable").get_cell(
            "srv07", "status")) == "copying 100%", what="srv07's status to read copying 100%")

    ticks = elapsed / PUBLISH_INTERVAL_S + 3
    for server in servers:
        assert received[server.name] <= ticks, (server.name, received[server.name], ticks)
        assert received[server.name] >= 1
    assert sum(received.values()) < sum(flood.yielded.values()) / 10
