"""A one-line label for a remote path: ellipsised in the middle to fit whatever width it gets,
never wrapping, and never read as markup."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.core.protocol import display_path


class PathLabel(Widget):
    path: reactive[str | None] = reactive(None)

    def __init__(self, prefix: str = "", *, placeholder: str = "", id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.prefix = prefix
        self.placeholder = placeholder

    def render(self) -> Text:
        # Rendered at the widget's current width on every refresh, so a resize re-ellipsises.
        if self.path is None:
            return Text(self.placeholder, style="dim", no_wrap=True)
        room = max(1, self.size.width - len(self.prefix))
        return Text.assemble((self.prefix, "dim"), display_path(self.path, room), no_wrap=True)
