"""Add or edit a server: name, target (ssh aliases offered), data path, sudo, python."""

from __future__ import annotations

from collections.abc import Sequence

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.suggester import SuggestFromList
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Checkbox, Input, Label, Static

from tui.app.screens.modals import Dialog
from tui.core.errors import BadInput
from tui.core.inventory import ServerEntry, absolute_path_problem, validate_entry
from tui.core.targets import LOCAL, parse_target


class DataPathValidator(Validator):
    """An absolute path, checked as the user types."""

    def validate(self, value: str) -> ValidationResult:
        problem = absolute_path_problem(value)
        return self.failure(problem) if problem else self.success()


def sudo_label(on: bool) -> str:
    """The checkbox says what it is set to, not only with its mark."""
    return f"sudo: {'on' if on else 'off'}"


class ServerFormScreen(Dialog):
    """Returns the new or edited ServerEntry, or None if the user backed out."""

    ESCAPE_RESULT = None
    AUTO_FOCUS = "#name"

    def __init__(self, entry: ServerEntry | None = None, *, target: str = "",
                 taken_names: Sequence[str] = (), ssh_aliases: Sequence[str] = ()) -> None:
        super().__init__()
        self.entry = entry
        self.prefill_target = entry.target if entry else target
        self.taken_names = set(taken_names) - ({entry.name} if entry else set())
        self.ssh_aliases = list(ssh_aliases)

    def compose(self) -> ComposeResult:
        entry = self.entry
        with Vertical(classes="dialog"):
            yield Label("Edit server" if entry else "Add a server", classes="dialog-title")
            with Horizontal(classes="form-field"):
                yield Label("Name", classes="form-label")
                yield Input(entry.name if entry else "", placeholder="e.g. web1", id="name")
            hint = ", ".join(self.ssh_aliases[:6]) or "none in ~/.ssh/config"
            with Horizontal(classes="form-field"):
                yield Label("Target", classes="form-label")
                yield Input(self.prefill_target,
                            placeholder=f"ssh alias, [user@]host[:port] or {LOCAL}",
                            suggester=SuggestFromList([*self.ssh_aliases, LOCAL]), id="target")
            yield Label(f"ssh aliases: {hint}", id="aliases", markup=False)
            with Horizontal(classes="form-field"):
                yield Label("Data path", classes="form-label")
                yield Input(entry.data_path if entry else "", placeholder="e.g. /var/lib/app",
                            validators=[DataPathValidator()], id="data-path")
            with Horizontal(classes="form-field", id="form-options"):
                sudo = entry.sudo if entry else False
                yield Checkbox(sudo_label(sudo), sudo, id="sudo")
                yield Label("Python", classes="form-label -short")
                yield Input((entry.python or "") if entry else "", placeholder="python3",
                            id="python")
            yield Static("", classes="field-problem", id="problem", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", id="save", variant="primary")
                yield Button("Cancel", id="cancel")

    def _entry(self) -> ServerEntry:
        def value(widget_id: str) -> str:
            return self.query_one(f"#{widget_id}", Input).value.strip()

        entry = ServerEntry(name=value("name"), target=value("target"),
                            data_path=value("data-path"),
                            sudo=self.query_one("#sudo", Checkbox).value,
                            python=value("python") or None)
        validate_entry(entry)
        if entry.name in self.taken_names:
            raise BadInput(f"there is already a server called {entry.name}")
        parse_target(entry.target)
        return entry

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        try:
            entry = self._entry()
        except BadInput as exc:
            self.query_one("#problem", Static).update(exc.message)
            return
        self.dismiss(entry)

    @on(Checkbox.Changed, "#sudo")
    def _sudo_changed(self, event: Checkbox.Changed) -> None:
        event.checkbox.label = sudo_label(event.value)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
