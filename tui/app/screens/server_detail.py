"""One server: its data path, the new path, free space, Apply, and the move as it happens."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Button, Footer, Header, Input, Label, Static

from tui.app.messages import InventoryChanged, JournalMerged, MoveFinished, MoveProgressed
from tui.app.screens.modals import CancelMoveScreen, ConfirmMoveScreen
from tui.app.screens.moves_log import MovesLogScreen
from tui.app.screens.server_form import DataPathValidator
from tui.app.widgets.move_panel import MoveProgressPanel, OutcomePanel
from tui.app.widgets.path_label import PathLabel
from tui.core.errors import ServermoveError
from tui.core.fleet import MoveState, ServerMove, connection_problem
from tui.core.inventory import ServerEntry
from tui.core.protocol import ServiceCheckEvent
from tui.core.wording import cutover_summary, free_space_text, last_downtime, service_state

STAT_DEBOUNCE_S = 0.6  # ask the server for free space once the user pauses typing
# Below this many rows, a running move's bars, rate, ETA and downtime take the place of the
# lines about free space and the cutover (80x24 left three rows for the move otherwise).
SHORT_ROWS = 30


class ServerDetailScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("c", "cancel_move", "Cancel move"),
        # ctrl+l, not l: the new-path field has the focus here and takes plain letters.
        Binding("ctrl+l", "moves_log", "Moves log"),
        Binding("question_mark", "app.help", "Help"),
    ]

    def __init__(self, server_name: str, *, new_path: str = "") -> None:
        super().__init__()
        self.server_name = server_name
        self.initial_new_path = new_path
        self._stat_timer: Timer | None = None
        # Who wrote the status line beside Apply: "move" (connecting, cancelling) or "plan"
        # (the dry run's check or refusal). Each goes when what it describes changes.
        self._status_owner: str | None = None
        # Whether a move was running when Apply was last checked: a progress tick re-checks the
        # new path only when that changes (the path's own changes re-check it as they happen).
        self._apply_checked_for_active: bool | None = None

    @property
    def server(self) -> ServerEntry:
        return self.app.inventory.get(self.server_name)

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="detail"):
            with Horizontal(classes="field"):
                yield Label("Data path", classes="field-label")
                yield PathLabel(id="current-path")
            yield Label("", id="current-free", classes="free", markup=False)
            # The service whose data this is (only for a server with one).
            with Horizontal(classes="field", id="service-row"):
                yield Label("Service", classes="field-label")
                yield Label("", id="service-state", markup=False)
            yield Label("", id="service-cutover", classes="free", markup=False)
            yield Label("", id="service-downtime", classes="free", markup=False)
            with Horizontal(classes="field"):
                yield Label("New path", classes="field-label -beside-input")
                # valid_empty: an empty field (e.g. after a move) is not a mistake to show.
                yield Input(self.initial_new_path, placeholder="/new/absolute/path",
                            validators=[DataPathValidator()], valid_empty=True, id="new-path")
            yield Label("", id="new-free", classes="free", markup=False)
            with Horizontal(id="actions"):
                yield Button("Apply Changes", id="apply", variant="primary")
                yield Button("Cancel move", id="cancel-move", variant="error")
                yield Static("", id="action-status", markup=False)
            # The outcome first: once a move ends, what happened and where the data is must
            # be in sight on a small terminal too, above the bars that led there.
            yield OutcomePanel(id="outcome")
            yield MoveProgressPanel(clock=self.app.clock, id="move")
        yield Footer()

    def on_mount(self) -> None:
        self.title = self.server_name
        self.sub_title = self.server.target
        self.show_server()
        self.show_move(self.app.fleet.get(self.server_name))
        self.check_new_path()
        self.stat_free_space()
        self.merge_journal()
        self.check_service()
        new_path = self.query_one("#new-path", Input)
        if not new_path.disabled:
            new_path.focus()

    # -- what is shown -------------------------------------------------------------------------

    def show_server(self) -> None:
        server = self.server
        self.query_one("#current-path", PathLabel).path = server.data_path
        self.set_class(server.service is None, "-no-service")
        if server.service is None:
            return
        self.show_service_state(self.app.fleet.service_checks.get(self.server_name))
        self.query_one("#service-cutover", Label).update(
            "switch " + cutover_summary(server.service.cutover, server.data_path))
        self.query_one("#service-downtime", Label).update(
            "last downtime: " + last_downtime(
                self.app.fleet.moves_log.records(server=self.server_name)))

    def show_service_state(self, check: ServiceCheckEvent | None,
                           problem: str | None = None) -> None:
        label = self.query_one("#service-state", Label)
        label.update(service_state(check, problem))
        label.set_class(check is not None and not check.passed, "-problem")

    @work(exclusive=True, group="service-check", exit_on_error=False)
    async def check_service(self) -> None:
        """Run the service's check once: is it running now? (Not while it is being moved.)"""
        server = self.server
        if server.service is None or self.app.fleet.is_active(self.server_name):
            return
        self.query_one("#service-state", Label).update("checking…")
        try:
            check = await self.app.fleet.check_service(server)
        except ServermoveError as exc:
            self.show_service_state(None, exc.message)
            return
        self.show_service_state(check)

    def on_resize(self) -> None:
        self.set_class(self.size.height < SHORT_ROWS, "-short")

    def show_move(self, move: ServerMove | None) -> None:
        active = move is not None and move.active
        self.set_class(active, "-moving")
        panel = self.query_one(MoveProgressPanel)
        panel.display = move is not None
        if move is not None:
            panel.show(move.progress)
        outcome = self.query_one(OutcomePanel)
        was_shown = outcome.display
        outcome.show(move)
        if outcome.display and not was_shown:  # scrolled away, on a small terminal
            self.call_after_refresh(outcome.scroll_visible, animate=False)
        new_path = self.query_one("#new-path", Input)
        new_path.disabled = active
        if active and move is not None and new_path.value != move.new_path:
            new_path.value = move.new_path  # e.g. opened from the dashboard mid-move
        self.query_one("#cancel-move", Button).display = active
        self.query_one("#cancel-move", Button).disabled = bool(move and move.cancel_requested)
        self.query_one("#apply", Button).display = not active
        if active:
            assert move is not None
            self.set_status("Cancelling: the mover is cleaning up…" if move.cancel_requested
                            else "connecting…" if move.state is MoveState.CONNECTING else "",
                            owner="move")
        elif self._status_owner == "move":
            self.set_status("")  # the move it described has ended
        self.refresh_bindings()
        if active != self._apply_checked_for_active:
            self._apply_checked_for_active = active
            self.update_apply()

    def set_status(self, text: str, *, owner: str | None = None) -> None:
        self._status_owner = owner if text else None
        self.query_one("#action-status", Static).update(Text(text))

    def check_new_path(self) -> str | None:
        """The new path if it can be applied; else show why not and return None."""
        new_path = self.query_one("#new-path", Input).value.strip()
        result = DataPathValidator().validate(new_path)
        problem = None if result.is_valid else result.failure_descriptions[0]
        if problem is None and new_path.rstrip("/") == self.server.data_path.rstrip("/"):
            problem = "that is the current path"
        if not new_path:
            problem = ""  # nothing typed yet: nothing to complain about
        label = self.query_one("#new-free", Label)
        label.set_class(bool(problem), "-problem")
        if problem is not None:
            # Also when the field was just emptied: an old complaint must not linger.
            label.update(problem)
        return None if problem is not None else new_path

    def update_apply(self) -> None:
        self.query_one("#apply", Button).disabled = (self.check_new_path() is None
                                                     or self.app.fleet.is_active(self.server_name))

    def on_move_progressed(self, message: MoveProgressed) -> None:
        if message.server_name == self.server_name:
            self.show_move(message.move)

    def on_move_finished(self, message: MoveFinished) -> None:
        if message.server_name == self.server_name and self.server_name in self.app.inventory:
            self.show_server()  # its downtime is in the moves log now
            self.check_service()

    def on_journal_merged(self, message: JournalMerged) -> None:
        if message.server_name == self.server_name:
            self.show_server()

    def on_inventory_changed(self, _: InventoryChanged) -> None:
        if self.server_name not in self.app.inventory:
            self.dismiss()
            return
        new_path = self.query_one("#new-path", Input)
        if new_path.value.strip().rstrip("/") == self.server.data_path.rstrip("/"):
            new_path.value = ""  # the move to it is done
        self.show_server()
        self.update_apply()
        self.stat_free_space()

    # -- free space ----------------------------------------------------------------------------

    @on(Input.Changed, "#new-path")
    def _new_path_changed(self) -> None:
        if self._status_owner == "plan" and not self._checking():
            self.set_status("")  # a refusal of another path
        self.update_apply()
        if self._stat_timer is not None:
            self._stat_timer.stop()
        self._stat_timer = self.set_timer(STAT_DEBOUNCE_S, self.stat_free_space)

    @work(exclusive=True, group="stat", exit_on_error=False)
    async def stat_free_space(self) -> None:
        new_path = self.check_new_path()
        paths = [self.server.data_path] + ([new_path] if new_path else [])
        current_free = self.query_one("#current-free", Label)
        try:
            stats = await self.app.fleet.stat(self.server, paths)
        except ServermoveError as exc:
            problem = connection_problem(exc)
            # Plain words first: "unreachable", "host key changed", "auth failed".
            current_free.set_class(problem is not None, "-problem")
            current_free.update(f"{problem.value if problem else 'free space unknown'}: "
                                f"{exc.message}")
            return
        current_free.remove_class("-problem")
        current_free.update(free_space_text(stats[0]))
        if new_path and len(stats) > 1 and self.check_new_path() == new_path:
            self.query_one("#new-free", Label).update(free_space_text(stats[1]))

    @work(exclusive=True, group="journal", exit_on_error=False)
    async def merge_journal(self) -> None:
        # Best effort: the free-space line already says when the server cannot be reached.
        try:
            merged = await self.app.fleet.merge_journal(self.server)
        except ServermoveError:
            return
        if merged:
            self.app.broadcast(lambda: JournalMerged(self.server_name))

    # -- apply ---------------------------------------------------------------------------------

    @on(Input.Submitted, "#new-path")
    @on(Button.Pressed, "#apply")
    def action_apply(self) -> None:
        new_path = self.check_new_path()
        if new_path is not None and not self.app.fleet.is_active(self.server_name):
            self.plan_and_confirm(new_path)

    @work(exclusive=True, group="plan", exit_on_error=False)
    async def plan_and_confirm(self, new_path: str) -> None:
        apply = self.query_one("#apply", Button)
        apply.disabled = True
        options = self.app.move_options
        while True:  # again when the user changed the options in the confirmation
            self.set_status("Checking: dry run on the server…", owner="plan")
            try:
                plan = await self.app.fleet.dry_run(self.server, new_path, options)
            except ServermoveError as exc:
                self.set_status(f"Refused: {exc.message}", owner="plan")
                self.update_apply()
                return
            self.set_status("")
            choice = await self.app.push_screen_wait(
                ConfirmMoveScreen(self.server_name, plan, options))
            if choice is None or choice.start:
                break
            options = choice.options
        if choice is not None:
            self.app.start_move(self.server_name, new_path, choice.options)
        self.show_move(self.app.fleet.get(self.server_name))

    def _checking(self) -> bool:
        return any(worker.group == "plan" and not worker.is_finished for worker in self.workers)

    # -- cancel --------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_move":
            return self.app.fleet.is_active(self.server_name)
        return True

    @on(Button.Pressed, "#cancel-move")
    def action_cancel_move(self) -> None:
        if not self.app.fleet.is_active(self.server_name):
            return

        def answered(cancel: bool | None) -> None:
            if cancel:
                self.app.cancel_move(self.server_name)

        self.app.push_screen(CancelMoveScreen(self.server_name), answered)

    def action_moves_log(self) -> None:
        self.app.push_screen(MovesLogScreen(self.server_name))

    def action_back(self) -> None:
        self.dismiss()
