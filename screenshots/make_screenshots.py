"""Regenerate the README's screenshots: `.venv/bin/python screenshots/make_screenshots.py`.

Same fixed data and clock as the snapshot tests (tests/test_tui_snapshots.py), saved as SVG with
App.save_screenshot: dashboard.svg, move-in-progress.svg, move-error.svg, move-complete.svg.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

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
        app.save_screenshot(name, path=str(HERE))
    print(f"wrote {HERE / name}")


async def main() -> None:
    for shot in SHOTS:
        await shoot(*shot)


if __name__ == "__main__":
    asyncio.run(main())
