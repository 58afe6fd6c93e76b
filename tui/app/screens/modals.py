"""Small dialogs: yes/no questions, the move plan, an unknown host key, a sudo password."""

from __future__ import annotations

from dataclasses import dataclass, replace

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from tui.app.messages import MoveFinished, MoveProgressed
from tui.core.fleet import DEFAULT_MOVE_OPTIONS, MoveOptions
from tui.core.protocol import PlanEvent
from tui.core.ssh import HostKeyQuestion
from tui.core.wording import parse_max_downtime, plan_lines


class Dialog(ModalScreen):
    """A framed box in the middle of the screen; escape answers with `ESCAPE_RESULT`."""

    BINDINGS = [Binding("escape", "dismiss_default", "Back")]
    ESCAPE_RESULT: object = None
    # Not Textual's "first focusable widget": in some dialogs that is the dangerous button.
    # Each dialog names what gets the focus (or focuses it itself on mount).
    AUTO_FOCUS = ""

    def on_mount(self) -> None:
        # The focused answer in sight, also when the dialog is taller than the terminal.
        if self.focused is not None:
            self.call_after_refresh(self.focused.scroll_visible, animate=False)

    def action_dismiss_default(self) -> None:
        self.dismiss(self.ESCAPE_RESULT)


class ConfirmScreen(Dialog):
    """A yes/no question with plain-text body (it may quote paths and hosts)."""

    ESCAPE_RESULT = False

    def __init__(self, title: str, body: str, *, yes: str = "Yes", no: str = "No",
                 danger: bool = False) -> None:
        super().__init__()
        self.title_text, self.body, self.yes, self.no = title, body, yes, no
        self.danger = danger
        # The safe answer has the focus: Enter on a surprise dialog must not do harm.
        self.AUTO_FOCUS = "#no" if danger else "#yes"

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            yield Static(Text(self.body), classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes, id="yes", variant="error" if self.danger else "primary")
                yield Button(self.no, id="no")

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(False)


class CancelMoveScreen(ConfirmScreen):
    """"Cancel the move?" about one server's move; it goes away by itself if that move ends
    while the question is open, since there is then nothing left to cancel."""

    def __init__(self, server_name: str) -> None:
        super().__init__("Cancel the move?",
                         "The mover stops at the next safe point, cleans up what it can, and "
                         "says where the data is.", yes="Cancel move", no="Keep moving",
                         danger=True)
        self.server_name = server_name

    def on_mount(self) -> None:
        self._dismiss_if_ended()

    def on_move_progressed(self, message: MoveProgressed) -> None:
        if message.server_name == self.server_name:
            self._dismiss_if_ended()

    def on_move_finished(self, message: MoveFinished) -> None:
        if message.server_name == self.server_name:
            self._dismiss_if_ended()

    def _dismiss_if_ended(self) -> None:
        if not self.app.fleet.is_active(self.server_name) and self.is_current:
            self.dismiss(False)


VERIFY_CHOICES = [("checksum: every byte", "checksum"), ("size only", "size"),
                  ("none", "none")]


@dataclass(frozen=True)
class MoveChoice:
    """The answer to the move's confirmation: start with these options, or (start False) dry
    run again with them first, since the plan shown was checked with other ones."""

    options: MoveOptions
    start: bool


class ConfirmMoveScreen(Dialog):
    """"Apply Changes": the plan from a dry run, how to verify and how fast to copy, and the
    last chance to say no. Returns a MoveChoice, or None for Back."""

    ESCAPE_RESULT = None
    AUTO_FOCUS = "#yes"

    def __init__(self, server_name: str, plan: PlanEvent,
                 options: MoveOptions = DEFAULT_MOVE_OPTIONS) -> None:
        super().__init__()
        self.server_name, self.plan, self.options = server_name, plan, options

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Move the data of {self.server_name}?", classes="dialog-title",
                        markup=False)
            yield Label("Dry run: nothing has been changed yet.", classes="dry-run-note")
            yield Static(Text("\n".join(plan_lines(self.plan))), classes="dialog-body")
            with Horizontal(classes="move-options"):
                yield Label("Verify", classes="option-label")
                yield Select(VERIFY_CHOICES, value=self.options.verify, allow_blank=False,
                             id="verify")
                yield Label("Limit", classes="option-label")
                yield Input(self.options.bwlimit or "", placeholder="none, e.g. 40M",
                            id="bwlimit")
            if self.plan.service is not None:
                with Horizontal(classes="move-options"):
                    yield Label("Max downtime", classes="option-label")
                    yield Input(_seconds_text(self.options.max_downtime),
                                placeholder="none: stop after the live passes, e.g. 10",
                                id="max-downtime")
                yield Label("", id="max-downtime-problem", classes="field-problem",
                            markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start move", id="yes", variant="primary")
                yield Button("Back", id="no")

    def chosen(self) -> MoveOptions:
        limit = self.query_one("#bwlimit", Input).value.strip()
        max_downtime, _ = self._max_downtime()
        return replace(self.options, verify=str(self.query_one("#verify", Select).value),
                       bwlimit=limit or None, max_downtime=max_downtime)

    def _max_downtime(self) -> tuple[float | None, str | None]:
        """The downtime limit typed, and what is wrong with it (None: fine)."""
        fields = self.query("#max-downtime")
        if not fields:
            return self.options.max_downtime, None
        return parse_max_downtime(fields.first(Input).value)

    @on(Select.Changed)
    @on(Input.Changed)
    def _options_changed(self) -> None:
        same = self.chosen() == self.options
        self.query_one("#yes", Button).label = "Start move" if same else "Dry run again"
        problem = self._max_downtime()[1]
        self.query_one("#yes", Button).disabled = problem is not None
        for label in self.query("#max-downtime-problem"):
            label.update(problem or "")

    @on(Input.Submitted)
    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        if self._max_downtime()[1] is not None:
            return  # the line under the field says what is wrong
        options = self.chosen()
        self.dismiss(MoveChoice(options, start=options == self.options))

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(None)


def _seconds_text(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:g}"


class HostKeyScreen(Dialog):
    """An unknown host key: show the fingerprint, let the user accept or reject it."""

    ESCAPE_RESULT = False

    def __init__(self, question: HostKeyQuestion) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Unknown host key", classes="dialog-title")
            yield Static(Text(self.question.explanation), classes="dialog-body")
            yield Static(Text(f"{self.question.key_type}  {self.question.fingerprint}",
                              style="bold"), id="fingerprint")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Accept and remember", id="accept", variant="warning")
                yield Button("Reject", id="reject", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#reject", Button).focus()

    @on(Button.Pressed, "#accept")
    def _accept(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#reject")
    def _reject(self) -> None:
        self.dismiss(False)


class SudoPasswordScreen(Dialog):
    """sudo needs a password: ask for it, masked. None means the user declined."""

    ESCAPE_RESULT = None
    AUTO_FOCUS = "#password"

    def __init__(self, target_label: str) -> None:
        super().__init__()
        self.target_label = target_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("sudo password", classes="dialog-title")
            yield Static(Text(f"sudo on {self.target_label} needs your password. It is sent to "
                              "sudo only, never stored."), classes="dialog-body")
            yield Input(password=True, placeholder="password", id="password")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        self.dismiss(self.query_one("#password", Input).value or None)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
