"""Add or edit a server: name, target (ssh aliases offered), data path, sudo, python, and its
service (stop, start, check, cutover, or a systemd/docker shorthand) with "Test check now"."""

from __future__ import annotations

from collections.abc import Sequence

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.suggester import SuggestFromList
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Checkbox, Collapsible, Input, Label, Static

from tui.app.screens.modals import Dialog
from tui.core.errors import BadInput, ServermoveError
from tui.core.inventory import (
    ServerEntry,
    ServiceConfig,
    absolute_path_problem,
    command_words,
    service_from_form,
    validate_entry,
)
from tui.core.targets import LOCAL, parse_target
from tui.core.wording import service_state

# The service's fields: (key in servers.toml, label, placeholder).
SERVICE_FIELDS = (
    ("service", "Shorthand", "systemd:UNIT or docker:NAME (gives stop, start and check)"),
    ("stop", "Stop", "e.g. pg_ctlcluster 15 main stop (run by /bin/sh on the server)"),
    ("start", "Start", "e.g. pg_ctlcluster 15 main start"),
    ("check", "Check", "healthy when it exits 0, e.g. pg_isready -q"),
    ("cutover", "Cutover", "none, symlink or config:/path/to/its/config/file"),
)


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
            service = entry.service if entry else None
            with Collapsible(title="Service (optional): moved with its data",
                             collapsed=service is None, id="service"):
                for key, label, placeholder in SERVICE_FIELDS:
                    with Horizontal(classes="form-field"):
                        yield Label(label, classes="form-label")
                        yield Input(_shown(service, key), placeholder=placeholder,
                                    id=f"service-{key}")
                with Horizontal(classes="form-field"):
                    yield Button("Test check now", id="test-check")
                    yield Static("", id="check-result", markup=False)
            yield Static("", classes="field-problem", id="problem", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", id="save", variant="primary")
                yield Button("Cancel", id="cancel")

    def _entry(self) -> ServerEntry:
        def value(widget_id: str) -> str:
            return self.query_one(f"#{widget_id}", Input).value.strip()

        service = service_from_form(
            {key: value(f"service-{key}") for key, _, _ in SERVICE_FIELDS},
            self.entry.service if self.entry else None)
        entry = ServerEntry(name=value("name"), target=value("target"),
                            data_path=value("data-path"),
                            sudo=self.query_one("#sudo", Checkbox).value,
                            python=value("python") or None, service=service,
                            # not in the form: kept as servers.toml says
                            keep_old=self.entry.keep_old if self.entry else None)
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

    @on(Button.Pressed, "#test-check")
    def _test_check(self) -> None:
        result = self.query_one("#check-result", Static)
        try:
            entry = self._entry()
        except BadInput as exc:
            result.update(exc.message)
            return
        if entry.service is None:
            result.update("no service to check: give a shorthand or stop, start and check")
            return
        result.update("checking on the server…")
        self.run_check(entry)

    @work(exclusive=True, group="test-check", exit_on_error=False)
    async def run_check(self, entry: ServerEntry) -> None:
        """The service's check, run once on the server through the mover (never awaited in a
        handler: the form stays live while it runs)."""
        result = self.query_one("#check-result", Static)
        try:
            check = await self.app.fleet.check_service(entry, entry.service)
        except ServermoveError as exc:
            result.update(service_state(None, exc.message))
            return
        result.update(service_state(check))

    @on(Checkbox.Changed, "#sudo")
    def _sudo_changed(self, event: Checkbox.Changed) -> None:
        event.checkbox.label = sudo_label(event.value)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


def _shown(service: ServiceConfig | None, key: str) -> str:
    """A service field's text in the form: the commands as written, the cutover; the shorthand
    is not kept apart from the commands it gives, so it starts blank."""
    if service is None or key == "service":
        return ""
    if key == "cutover":
        return "" if service.cutover == "none" else service.cutover
    return command_words(getattr(service, key))
