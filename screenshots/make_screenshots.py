"""Regenerate the README's screenshots: `.venv/bin/python screenshots/make_screenshots.py [NAME…]`.

Same fixed data and clock as the snapshot tests (tests/test_tui_snapshots.py), saved as SVG with
App.save_screenshot: dashboard.svg, move-in-progress.svg, move-error.svg, move-complete.svg,
moves-log.svg (the sample moves log of tests/test_tui_moves_log.py, times in UTC), and a service
move's downtime clock and rollback (service-move-down.svg, service-move-rollback.svg: the
synthetic streams of tests/test_tui_service.py).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests import test_tui_moves_log as moves_log  # noqa: E402
from tests import test_tui_service as service_move  # noqa: E402
from tests.test_tui_snapshots import SNAPSHOT_ROOT, app_for, moves  # noqa: E402

SHOTS = [
    # (file name, server to open or None for the dashboard, moves to run, terminal size)
    ("dashboard.svg", None, ("web1", "web2", "db-primary"), (100, 24)),
    ("move-in-progress.svg", "db-primary", ("db-primary",), (100, 30)),
    ("move-error.svg", "web2", ("web2",), (100, 30)),
    ("move-complete.svg", "web1", ("web1",), (100, 30)),
]


async def shoot(name: str, server: str | None, names: tuple[str, ...],
                size: tuple[int, int]) -> None:
    config = SNAPSHOT_ROOT / f"screenshot-{name}"
    config.mkdir(parents=True, exist_ok=True)
    for old in config.glob("*"):
        old.unlink()
    app = app_for(config, open_server=server)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        await moves(*names)(pilot)
        app.clear_notifications()  # the toasts of moves ending elsewhere would hide the table
        await pilot.pause()
        app.save_screenshot(name, path=str(HERE))
    print(f"wrote {HERE / name}")


async def shoot_moves_log(name: str = "moves-log.svg", size: tuple[int, int] = (120, 24)) -> None:
    home = SNAPSHOT_ROOT / f"screenshot-{name}"
    shutil.rmtree(home, ignore_errors=True)
    (home / "config").mkdir(parents=True)
    os.environ["SERVERMOVE_DATA_DIR"] = str(home / "data")  # the sample log, and only it
    moves_log.write_sample_log()
    app = moves_log.app_for(home / "config")
    async with app.run_test(size=size) as pilot:
        await moves_log.open_log(app, pilot)
        app.save_screenshot(name, path=str(HERE))
    print(f"wrote {HERE / name}")


SERVICE_SHOTS = [("service-move-down.svg", "downtime-clock", (100, 30)),
                 ("service-move-rollback.svg", "rollback", (100, 30))]


async def shoot_service(name: str, scene: str, size: tuple[int, int]) -> None:
    config = SNAPSHOT_ROOT / f"screenshot-{name}"
    shutil.rmtree(config, ignore_errors=True)
    config.mkdir(parents=True)
    script, last_seq = service_move.SCENES[scene]
    app = service_move.make_app(config, service_move.SERVERS, open_server=service_move.NAME,
                                start_move=service_move.ScriptedMover(script))
    async with app.run_test(size=size) as pilot:
        app.start_move(service_move.NAME, service_move.DST)
        await service_move.wait_for(
            pilot, lambda: app.fleet.get(service_move.NAME).progress.last_seq == last_seq)
        await service_move.settle(pilot)
        await service_move.steady(pilot)
        app.save_screenshot(name, path=str(HERE))
    print(f"wrote {HERE / name}")


def isolate() -> None:
    """Never read or write the user's own servermove files (the fleet logs every move it runs),
    and show times in UTC so a picture is the same wherever it is made."""
    home = SNAPSHOT_ROOT / "screenshot-home"
    shutil.rmtree(home, ignore_errors=True)
    for name in ("CONFIG", "DATA", "STATE", "JOURNAL"):
        os.environ[f"SERVERMOVE_{name}_DIR"] = str(home / name.lower())
    os.environ["TZ"] = "UTC"
    time.tzset()


async def main(only: list[str]) -> None:
    isolate()
    for shot in SHOTS:
        if not only or shot[0] in only:
            await shoot(*shot)
    if not only or "moves-log.svg" in only:
        await shoot_moves_log()
    for shot in SERVICE_SHOTS:
        if not only or shot[0] in only:
            await shoot_service(*shot)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))  # names of pictures to make; none: all of them
