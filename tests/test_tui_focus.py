"""A dialog's first focus is its safe answer: Enter pressed on a surprise never does harm, not
even in the moment before the dialog has finished mounting (Textual's automatic focus used to
land on the first button, the dangerous one, before the dialog moved it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual import events
from textual.screen import Screen

from tests.test_tui_support import make_app, wait_for
from tui.app.screens.modals import CancelMoveScreen, ConfirmScreen
from tui.core.inventory import ServerEntry


def spying(screen_class: type[Screen]) -> type[Screen]:
    class Spy(screen_class):  # type: ignore[misc, valid-type]
        focused_ids: list[str | None]

        def on_descendant_focus(self, event: events.DescendantFocus) -> None:
            if not hasattr(self, "focused_ids"):
                self.focused_ids = []
            self.focused_ids.append(event.widget.id)
    return Spy


@pytest.mark.parametrize("make_dialog, safe", [
    (lambda: spying(ConfirmScreen)("Moves are running", "Cancel them and quit?",
                                   yes="Cancel moves and quit", no="Keep moving", danger=True),
     "no"),
    (lambda: spying(CancelMoveScreen)("web1"), "no"),
])
async def test_the_first_focus_is_the_safe_answer(tmp_path: Path, make_dialog, safe: str) -> None:
    app = make_app(tmp_path, [ServerEntry("web1", "admin@web1", "/var/lib/app")])
    async with app.run_test(size=(100, 30)) as pilot:
        dialog = make_dialog()
        app.fleet.begin(app.inventory.get("web1"), "/srv/app")  # a move to cancel
        app.push_screen(dialog)
        await wait_for(pilot, lambda: dialog.focused is not None, what="a focus")
        await pilot.pause()
        assert dialog.focused_ids == [safe]
