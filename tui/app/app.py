"""ServerMoveApp: the fleet dashboard, a detail screen per server, and the moves they run.

The app owns the inventory (servers.toml) and the Fleet. Moves run in workers, one per server,
and never block the UI; ten times a second the app tells the screens which servers changed, so a
chatty mover (or twenty of them) costs at most ten repaints a second each.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.screen import ModalScreen, Screen

from tui.app.messages import InventoryChanged, MoveFinished, MoveProgressed
from tui.app.screens.dashboard import DashboardScreen
from tui.app.screens.first_run import FirstRunScreen
from tui.app.screens.help import HelpScreen
from tui.app.screens.inventory_error import InventoryErrorScreen
from tui.app.screens.modals import ConfirmScreen, HostKeyScreen, SudoPasswordScreen
from tui.app.screens.moves_log import MovesLogScreen
from tui.app.screens.server_detail import ServerDetailScreen
from tui.app.screens.server_form import ServerFormScreen
from tui.core.demo import DEMO_SERVER, demo_setup
from tui.core.errors import BadInput, ServermoveError
from tui.core.fleet import (
    DEFAULT_MOVE_OPTIONS,
    Fleet,
    MoveOptions,
    MoveState,
    ServerMove,
    status_text,
)
from tui.core.inventory import (
    Inventory,
    InventoryError,
    ServerEntry,
    add_server,
    load_inventory,
    remove_server,
    set_data_path,
    ssh_host_aliases,
    update_server,
)
from tui.core.protocol import Phase
from tui.core.ssh import HostKeyQuestion, SshSettings
from tui.core.targets import Target
from tui.core.wording import clean_summary, kept_copy_line

PUBLISH_INTERVAL_S = 0.1  # at most ten repaints a second per server, however fast events come
QUIT_CANCEL_TIMEOUT_S = 30.0  # how long quitting waits for cancelled movers to clean up

DEMO_REQUESTED = "demo"  # the app's return value when the user picks the demo on first run


class ServerMoveApp(App[str | None]):
    CSS_PATH = ["app.tcss", "widgets/widgets.tcss", "screens/dashboard.tcss",
                "screens/server_detail.tcss", "screens/first_run.tcss", "screens/modals.tcss",
                "screens/moves_log.tcss"]
    TITLE = "servermove"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("f1", "help", "Help", show=False),
    ]

    def __init__(self, *, inventory_path: Path | None = None, fleet: Fleet | None = None,
                 clock: Callable[[], float] = time.time,
                 move_options: MoveOptions = DEFAULT_MOVE_OPTIONS, open_server: str | None = None,
                 new_path: str = "", ssh_aliases: list[str] | None = None,
                 offer_demo: bool = True, cancel_moves_on_quit: bool = False,
                 ssh_settings: SshSettings | None = None) -> None:
        super().__init__()
        self.inventory_path = inventory_path
        self.inventory = Inventory(inventory_path or Path("servers.toml"), [], exists=False)
        self.clock = clock
        ssh_settings = ssh_settings or SshSettings()
        self.fleet = fleet or Fleet(clock=clock, settings=ssh_settings)
        if self.fleet.prompter is None:
            self.fleet.prompter = self
        self.move_options = move_options
        self.open_server_on_start = open_server
        self.initial_new_path = new_path
        config_file = (ssh_settings.config_files or [None])[0]
        self.ssh_aliases = ssh_host_aliases(config_file) if ssh_aliases is None else ssh_aliases
        self.offer_demo = offer_demo
        # Moves run detached on their servers and outlive the app; only the demo, whose data
        # lives in a temporary directory removed on exit, cancels them when it quits.
        self.cancel_moves_on_quit = cancel_moves_on_quit
        self._leaving = False  # the user chose to quit (or the terminal went away)

    def get_default_screen(self) -> Screen:
        return DashboardScreen()

    def on_mount(self) -> None:
        self.set_interval(PUBLISH_INTERVAL_S, self.publish_progress)
        self.action_reload_inventory()
        # The demo's data is temporary: a demo move from an earlier run is gone with it.
        resumable = [] if self.cancel_moves_on_quit else self.inventory.servers
        for server, record in self.fleet.unfinished_moves(resumable):
            self.notify(f"Picking up the move on {server.name} where it was left…")
            self.fleet.begin(server, record.destination)
            self.resume_move(server, record.moveId, record.destination, record.verify)
        if self.cancel_moves_on_quit:
            # The demo's data must go with it also when its terminal window is closed.
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self.quit_on_signal, True)
            loop.add_signal_handler(signal.SIGTERM, self.quit_on_signal, False)
        if self.open_server_on_start in self.inventory:
            self.open_server(self.open_server_on_start, new_path=self.initial_new_path)

    # -- inventory -----------------------------------------------------------------------------

    def action_reload_inventory(self) -> None:
        while isinstance(self.screen, InventoryErrorScreen | FirstRunScreen):
            self.pop_screen()
        try:
            self.inventory = load_inventory(self.inventory_path)
        except InventoryError as exc:
            self.push_screen(InventoryErrorScreen(exc.message))
            return
        if not self.inventory.servers:
            self.push_screen(FirstRunScreen(self.ssh_aliases))
        self.broadcast(InventoryChanged)

    def _change_inventory(self, change: Callable[[], Inventory]) -> bool:
        try:
            self.inventory = change()
        except ServermoveError as exc:  # BadInput, InventoryError: the file is the user's too
            self.notify(exc.message, title="Inventory not changed", severity="error")
            return False
        while isinstance(self.screen, FirstRunScreen):
            self.pop_screen()
        self.broadcast(InventoryChanged)
        return True

    def edit_server(self, name: str | None, *, target: str = "") -> None:
        """Open the server form: a new server (name None) or an existing one."""
        def saved(result: ServerEntry | None) -> None:
            if result is None:
                return
            if name is None:
                self._change_inventory(lambda: add_server(result, self.inventory_path))
            elif self.fleet.is_active(name) and result.name != name:
                self.notify("A move is running on this server: rename it afterwards.",
                            severity="warning")
            elif (self._change_inventory(lambda: update_server(name, result,
                                                               self.inventory_path))
                  and result.name != name):
                self.fleet.forget(name)

        self.push_screen(ServerFormScreen(self.inventory.get(name) if name else None,
                                          target=target, taken_names=self.inventory.names,
                                          ssh_aliases=self.ssh_aliases), saved)

    def remove_server(self, name: str) -> None:
        if self.fleet.is_active(name):
            self.notify(f"A move is running on {name}: cancel it first.", severity="warning")
            return

        def answered(remove: bool | None) -> None:
            if remove and self._change_inventory(
                    lambda: remove_server(name, self.inventory_path)):
                self.fleet.forget(name)

        self.push_screen(ConfirmScreen(f"Remove {name}?",
                                       "It is removed from servers.toml only; nothing on the "
                                       "server is touched.", yes="Remove", no="Keep",
                                       danger=True), answered)

    # -- screens -------------------------------------------------------------------------------

    def open_server(self, name: str, *, new_path: str = "") -> None:
        self.push_screen(ServerDetailScreen(name, new_path=new_path))

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        sections = [("Everywhere", list(self.BINDINGS)),
                    ("Servers", DashboardScreen.BINDINGS),
                    ("A server", ServerDetailScreen.BINDINGS),
                    ("Moves log", MovesLogScreen.BINDINGS),
                    ("First run", FirstRunScreen.BINDINGS)]
        self.push_screen(HelpScreen(sections))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The app's own commands in the command palette (ctrl+p), beside Textual's."""
        yield from super().get_system_commands(screen)
        yield SystemCommand("Add a server", "Name, target and data path, saved in servers.toml",
                            lambda: self.edit_server(None))
        yield SystemCommand("Open the moves log", "Every move made from this machine",
                            lambda: self.push_screen(MovesLogScreen()))
        name = (screen.server_name if isinstance(screen, ServerDetailScreen)
                else screen.selected_server if isinstance(screen, DashboardScreen) else None)
        if name is not None:
            yield SystemCommand(f"Move the data of {name}", "Type the new path, then Apply",
                                lambda: self.move_data_of(name))
        if name is not None and name in self.inventory and self.inventory.get(name).keep_old:
            yield SystemCommand(f"Remove the old copies kept on {name}",
                                "Those due (keep_old): as 'servermove clean'",
                                lambda: self.clean_old_copies(name))

    @work(group="clean", exit_on_error=False)
    async def clean_old_copies(self, name: str) -> None:
        """`servermove clean NAME` from the command palette: the outcome as a notification."""
        try:
            events, status = await self.fleet.clean_kept(self.inventory.get(name))
        except ServermoveError as exc:
            self.notify(exc.message, title=f"{name}: old copies not cleaned", severity="error")
            return
        lines = [kept_copy_line(event) for event in events if event.action != "kept"]
        self.notify("\n".join([*lines, clean_summary(events, name, False)]),
                    title=f"{name}: old copies", severity="information" if status == 0
                    else "error", timeout=15)

    def move_data_of(self, name: str) -> None:
        """The server's screen with the cursor in its new-path field."""
        if not (isinstance(self.screen, ServerDetailScreen) and self.screen.server_name == name):
            self.open_server(name)
            return
        new_path = self.screen.query_one("#new-path")
        if not new_path.disabled:
            new_path.focus()

    def action_demo(self) -> None:
        if self.offer_demo:
            self.exit(DEMO_REQUESTED)

    def broadcast(self, make_message: Callable[[], Message]) -> None:
        """Post to every screen in the stack: one under a dialog still shows live progress."""
        for screen in self.screen_stack:
            screen.post_message(make_message())

    # -- moves ---------------------------------------------------------------------------------

    def publish_progress(self) -> None:
        """The coalescing point: tell the screens which servers changed since last time."""
        for name in sorted(self.fleet.take_changed()):
            self.broadcast(lambda name=name: MoveProgressed(name, self.fleet.get(name)))

    def start_move(self, name: str, new_path: str, options: MoveOptions | None = None) -> None:
        server = self.inventory.get(name)
        self.fleet.begin(server, new_path)
        self.run_move(server, new_path, options or self.move_options)

    @work(group="moves", exit_on_error=False)
    async def run_move(self, server: ServerEntry, new_path: str, options: MoveOptions) -> None:
        await self._moved(server, new_path, self.fleet.run_move(server, new_path, options))

    @work(group="moves", exit_on_error=False)
    async def resume_move(self, server: ServerEntry, move_id: str, new_path: str,
                          verify: str) -> None:
        await self._moved(server, new_path,
                          self.fleet.resume(server, move_id, new_path, verify))

    async def _moved(self, server: ServerEntry, new_path: str,
                     following: Awaitable[ServerMove]) -> None:
        try:
            move = await following
            if move.succeeded:
                self._change_inventory(
                    lambda: set_data_path(server.name, new_path, self.inventory_path))
        finally:
            self.post_message(MoveFinished(server.name))

    def on_move_finished(self, message: MoveFinished) -> None:
        self.publish_progress()
        # After the last progress: a screen that re-reads the moves log sees the final entry.
        self.broadcast(lambda: MoveFinished(message.server_name))
        self.tell_move_ended(message.server_name)

    def tell_move_ended(self, name: str) -> None:
        """A toast and the terminal bell, unless the user is looking at that server."""
        move = self.fleet.get(name)
        # The screen under any dialog: a question over the server's screen still shows its end.
        shown = next(screen for screen in reversed(self.screen_stack)
                     if not isinstance(screen, ModalScreen))
        watching = isinstance(shown, ServerDetailScreen) and shown.server_name == name
        if move is None or move.active or watching or self._leaving:
            return
        severity = ("information" if move.succeeded
                    else "warning" if move.progress.phase is Phase.CANCELLED
                    or move.state is MoveState.CONNECTION_LOST else "error")
        self.notify(status_text(move), title=f"{name}: the move ended", severity=severity,
                    markup=False)
        self.bell()

    def cancel_move(self, name: str) -> None:
        self.run_worker(self.fleet.cancel(name), group="cancel", exit_on_error=False)


    def active_moves(self) -> list[str]:
        return [name for name in self.inventory.names if self.fleet.is_active(name)]

    def action_quit(self) -> None:
        active = self.active_moves()
        if not active:
            self.exit()
        elif not self._leaving and not any(worker.group == "quit" and not worker.is_finished
                                           for worker in self.workers):
            self.ask_before_quitting(active)  # once, however often ctrl+q is pressed

    @work(group="quit", exit_on_error=False)
    async def ask_before_quitting(self, active: list[str]) -> None:
        # A worker, not the action itself: the app's own message loop must stay free to
        # handle the keys that answer the dialog.
        if not self.cancel_moves_on_quit:
            if await self.push_screen_wait(ConfirmScreen(
                    "Moves are running",
                    f"The moves on {', '.join(active)} go on on their servers. servermove "
                    "picks them up when you open it again (or: servermove attach SERVER).",
                    yes="Quit, leave them running", no="Stay")):
                self.exit()
            return
        if await self.push_screen_wait(ConfirmScreen(
                "Moves are running",
                f"Cancel the moves on {', '.join(active)} and quit? Each mover stops at a safe "
                "point and cleans up first.", yes="Cancel moves and quit", no="Keep moving",
                danger=True)):
            await self._cancel_all_and_exit(self.active_moves())

    def quit_on_signal(self, hung_up: bool) -> None:
        """SIGHUP (the terminal window closed) or SIGTERM: no one is there to ask."""
        if hung_up and self._driver is not None:
            # Nothing to draw on: the driver's writer thread dies on the closed terminal, and
            # frames queued for it would soon block the app before the movers are cancelled.
            self._driver.write = lambda data: None  # type: ignore[method-assign]
        if not self._leaving:
            self._leaving = True
            self.run_worker(self._cancel_all_and_exit(self.active_moves()), group="quit-now",
                            exit_on_error=False)

    async def _cancel_all_and_exit(self, names: list[str]) -> None:
        self._leaving = True  # the moves ending now are not news
        if names:
            self.notify("Cancelling: waiting for the movers to clean up…")
        await asyncio.gather(*(self.fleet.cancel(name) for name in names))
        deadline = time.monotonic() + QUIT_CANCEL_TIMEOUT_S
        while any(self.fleet.is_active(n) for n in names) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        self.exit()

    # -- the Prompter the SSH layer asks -------------------------------------------------------

    async def _ask(self, screen: Screen) -> Any:
        """Show a dialog from a worker or the SSH layer's task and wait for its answer. Never
        from one of the app's message handlers: that would block the keys that answer it."""
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def answered(result: Any) -> None:
            if not answer.done():
                answer.set_result(result)

        self.push_screen(screen, answered)
        return await answer

    async def confirm_host_key(self, question: HostKeyQuestion) -> bool:
        return bool(await self._ask(HostKeyScreen(question)))

    async def ask_sudo_password(self, target: Target) -> str | None:
        return await self._ask(SudoPasswordScreen(target.label))


def run_app(*, ssh_config: Path | None = None) -> str | None:
    """`servermove` / `servermove tui [--ssh-config FILE]`: the dashboard on the user's
    inventory. Returns DEMO_REQUESTED when the user picked the demo (the CLI then starts it)."""
    settings = SshSettings()
    if ssh_config is not None:
        if not ssh_config.is_file():  # the same words as the CLI's
            raise BadInput(f"ssh config file {ssh_config} not found")
        settings = SshSettings(config_files=[ssh_config])
    return ServerMoveApp(ssh_settings=settings).run()


def run_demo() -> int:
    """`servermove demo`: the app on a generated demo server; cleans up on exit."""
    print("servermove demo: generating about 200 MB of demo data…", flush=True)
    with demo_setup() as setup:
        app = ServerMoveApp(inventory_path=setup.inventory_path, open_server=DEMO_SERVER,
                            new_path=str(setup.new_path), offer_demo=False,
                            cancel_moves_on_quit=True,
                            move_options=MoveOptions(verify="checksum", bwlimit=setup.bwlimit))
        app.run()
    return 0
