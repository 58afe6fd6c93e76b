"""The `servermove` command: move a server's data directory to a new disk or path over SSH, safely,
with live progress.

    servermove                          the TUI (fleet dashboard)
    servermove demo                     the TUI on a generated demo server, no SSH needed
    servermove move TARGET SRC DST      one move with a rich progress display (or --json lines)
    servermove attach TARGET [MOVE_ID]  follow (or replay) a move running on TARGET
    servermove moves TARGET             the moves in TARGET's journal
    servermove clean TARGET             remove the old copies kept aside (keep_old) once due
    servermove log                      the moves log: moves started here, and those merged from
                                        servers' journals

A user mistake gets one line on stderr, `servermove: <what is wrong and what to do>`, and a
non-zero exit; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tui.app.log_table import log_cells, log_header
from tui.core.errors import BadInput, ConnectionLost, ExitStatus, ServermoveError
from tui.core.follow import MoveHandle
from tui.core.follow import follow as follow_move
from tui.core.formatting import (
    LOG_COLUMNS,
    fit_log_columns,
    human_duration,
    human_eta,
    human_rate,
    of_total,
)
from tui.core.moves_log import MoveRecord, MoveRecorder, MovesLog, record_from_listed
from tui.core.progress import MoveProgress
from tui.core.protocol import TERMINAL_PHASES, LinkEvent, Phase, PlanEvent, display_path
from tui.core.runner import (
    HostKeyQuestion,
    MoveRequest,
    SshSettings,
    attach_move,
    clean_kept,
    list_target_moves,
    start_move,
)
from tui.core.targets import Target, parse_target
from tui.core.wording import (
    bar_counts,
    clean_summary,
    down_clock,
    kept_copy_line,
    phase_words,
    plan_line,
    record_service_note,
    summary_line,
)

VERIFY_MODES = ("checksum", "size", "none")
REFRESH_PER_SECOND = 10
ROUTE_MIN_WIDTH = 24  # `servermove log`: the route folds below this rather than vanish
DESCRIPTION = """\
Move a server's data directory (a game world, a database, an uploads folder) to a
new disk or path over SSH, safely and with live progress. With no command: the
terminal UI. 'servermove COMMAND --help' tells more about each command."""
TARGET_HELP = "'local', a server in servers.toml, an ssh alias or [user@]host[:port]"
EXIT_STATUSES = """exit status:
  0    moved (or the dry run found nothing wrong)
  1    the move failed (the message says where the data is)
  2    refused before anything was touched: bad input, no space, an unknown or changed
       host key, a failed login, no python3 or sudo on the server
  3    cancelled
  4    no connection: the server could not be reached, or the link was lost (a started move
       goes on on the server: servermove attach follows it again)
  130  Ctrl-C twice: servermove stopped waiting for the cancel; the mover goes on cancelling"""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage dump
        raise BadInput(f"{message} (see 'servermove {self.prog.split()[-1]} --help')"
                       if " " in self.prog else f"{message} (see 'servermove --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="servermove", description=DESCRIPTION, epilog=EXIT_STATUSES,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"servermove {_version()}")
    commands = parser.add_subparsers(dest="command", parser_class=_ArgumentParser,
                                     metavar="COMMAND")
    tui = commands.add_parser("tui", help="the fleet dashboard (the default)")
    tui.add_argument("--ssh-config", metavar="FILE", type=Path,
                     help="use this ssh config file instead of ~/.ssh/config (like ssh -F)")
    commands.add_parser("demo", help="move a generated demo directory on this machine, in the TUI")

    move = commands.add_parser("move", help="move SRC to DST on TARGET, headless")
    move.add_argument("target", metavar="TARGET", help=TARGET_HELP)
    move.add_argument("src", metavar="SRC", help="absolute path of the data directory")
    move.add_argument("dst", metavar="DST", help="absolute path to move it to")
    _add_connection_options(move)
    move.add_argument("--sudo", action="store_true", help="run the mover with sudo")
    move.add_argument("--verify", choices=VERIFY_MODES, default="checksum",
                      help="how to check the copy before the source is removed (default checksum)")
    move.add_argument("--bwlimit", metavar="RATE",
                      help="copy at most RATE bytes a second (40M, 1G)")
    move.add_argument("--dry-run", action="store_true", help="check and plan, change nothing")
    move.add_argument("--no-service", action="store_true",
                      help="TARGET's service in servers.toml is not stopped, repointed or "
                           "started: move the data alone")
    move.add_argument("--max-downtime", metavar="SECONDS", type=_positive_seconds,
                      help="a service move stops the service only once the forecast downtime "
                           "is under SECONDS (else it ends with the service untouched)")

    attach = commands.add_parser("attach", help="follow a move running (or finished) on TARGET")
    attach.add_argument("target", metavar="TARGET", help=TARGET_HELP)
    attach.add_argument("move_id", metavar="MOVE_ID", nargs="?",
                        help="the move to follow (default: the newest on TARGET)")
    _add_connection_options(attach)

    moves = commands.add_parser("moves", help="the moves in TARGET's journal, newest first")
    moves.add_argument("target", metavar="TARGET", help=TARGET_HELP)
    _add_connection_options(moves)

    clean = commands.add_parser("clean", help="remove the old copies that moves kept aside on "
                                "TARGET (keep_old in servers.toml) once they are due")
    clean.add_argument("target", metavar="TARGET", help=TARGET_HELP)
    clean.add_argument("--dry-run", action="store_true",
                       help="list the old copies kept and say which are due; remove nothing")
    clean.add_argument("--now", action="store_true",
                       help="remove the old copies kept even if they are not due yet")
    _add_connection_options(clean)

    log = commands.add_parser("log", help="the moves log: moves started from this machine and "
                              "those merged from servers' journals, newest first")
    log.add_argument("--json", action="store_true", help="one JSON object a line")
    log.add_argument("--server", metavar="NAME", help="only this server's moves")
    log.add_argument("--started-by", metavar="WHO",
                     help="only moves started by WHO: 'here' (from this machine), 'elsewhere' "
                          "(from another machine), or USER@HOST")
    log.add_argument("--limit", metavar="N", type=_positive_int, default=None,
                     help="at most N moves (default: all with --json, 20 in the table)")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("servermove")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds more than 0")
    return seconds


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the mover's JSON lines on stdout, nothing else")
    parser.add_argument("--ssh-config", metavar="FILE", type=Path,
                        help="use this ssh config file instead of ~/.ssh/config (like ssh -F)")
    if parser.prog.split()[-1] != "move":
        parser.add_argument("--sudo", action="store_true", help="run the mover with sudo")


def resolve_target(text: str, *, sudo: bool = False) -> Target:
    """A servers.toml name wins over an ssh alias of the same name, as in the TUI."""
    from tui.core.inventory import load_inventory

    inventory = load_inventory()
    if text in inventory:
        entry = inventory.get(text)
        # Named as in the inventory (messages, the moves log), reached as its target says.
        return replace(parse_target(entry.target, sudo=sudo or entry.sudo, python=entry.python),
                       label=entry.name)
    return parse_target(text, sudo=sudo)


def service_of(args: argparse.Namespace) -> dict[str, object] | None:
    """The service a `move` stops, repoints and starts: TARGET's in servers.toml, unless
    --no-service. It belongs to the server's data_path, so moving another directory with it is
    refused; raises BadInput in one line (nothing touched)."""
    from tui.core.inventory import load_inventory

    inventory = load_inventory()
    entry = inventory.get(args.target) if args.target in inventory else None
    service = entry.service if entry is not None and not args.no_service else None
    if service is None:
        if args.max_downtime is not None:
            raise BadInput("--max-downtime is for a service move: "
                           + ("it cannot go with --no-service" if args.no_service else
                              f"{args.target} has no service in servers.toml"))
        return None
    assert entry is not None
    if os.path.normpath(args.src) != os.path.normpath(entry.data_path):
        raise BadInput(f"{entry.name}'s service uses {entry.data_path}, not {args.src}: move "
                       f"{entry.data_path}, or add --no-service to move {args.src} alone")
    return service.to_mover()


def keep_old_of(args: argparse.Namespace) -> int | None:
    """The seconds TARGET's keep_old in servers.toml keeps the old copy aside; None without."""
    from tui.core.inventory import keep_old_seconds, load_inventory

    inventory = load_inventory()  # a bad keep_old was refused here already, naming the server
    if args.target not in inventory:
        return None
    keep_old = inventory.get(args.target).keep_old
    return keep_old_seconds(keep_old) if keep_old else None


def _settings(args: argparse.Namespace) -> SshSettings:
    config_files = None
    if args.ssh_config is not None:
        if not args.ssh_config.is_file():
            raise BadInput(f"ssh config file {args.ssh_config} not found")
        config_files = [args.ssh_config]
    return SshSettings(config_files=config_files,
                       interactive=not args.json and sys.stdin.isatty())


class TerminalPrompter:
    """Asks on the terminal. Only used when stdin is a TTY and --json is off."""

    def __init__(self, console: Console) -> None:
        self.console = console

    async def confirm_host_key(self, question: HostKeyQuestion) -> bool:
        self.console.print(Text.assemble(
            f"{question.explanation}\n{question.key_type} key fingerprint is ",
            (question.fingerprint, "bold"), "."))
        prompt = "Are you sure you want to continue connecting (yes/no/[fingerprint])? "
        while True:  # as OpenSSH: only "yes" (or the fingerprint itself) trusts a key
            try:
                answer = (await asyncio.to_thread(input, prompt)).strip()
            except EOFError:
                return False
            if answer.lower() == "yes" or answer == question.fingerprint:
                return True
            if answer.lower() == "no":
                return False
            prompt = "Please type 'yes', 'no' or the fingerprint: "

    async def ask_sudo_password(self, target: Target) -> str | None:
        # getpass reads from /dev/tty without echo; the password only ever goes to sudo's stdin.
        return await asyncio.to_thread(getpass.getpass, f"[sudo] password on {target.label}: ")


class RichMoveDisplay:
    """The live progress lines of `servermove move`, drawn from MoveProgress."""

    def __init__(self, model: MoveProgress, console: Console) -> None:
        self.model = model
        self.console = console

    def __rich__(self) -> Table:
        model = self.model
        width = max(20, self.console.width - 16)
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", justify="right")
        grid.add_column()
        grid.add_row("phase", Text(phase_words(model)))
        down = down_clock(model)
        if down is not None:  # the service is stopped: the clock an admin watches
            grid.add_row("service", Text(down, style="bold red"))
        bar_width = max(10, min(50, width - 30))
        # The same counts as the TUI's bars: verified bytes and files while verifying.
        bytes_done, bytes_total, files_done, files_total = bar_counts(model)
        fraction = min(1.0, bytes_done / bytes_total) if bytes_total > 0 else model.fraction
        filled = int(fraction * bar_width)
        grid.add_row("bytes", Text(
            f"{'█' * filled}{'░' * (bar_width - filled)} {fraction * 100:5.1f}%  "
            f"{of_total(bytes_done, bytes_total, sizes=True)}"))
        grid.add_row("files", Text(of_total(files_done, files_total, sizes=False)))
        grid.add_row("rate", Text(f"{human_rate(model.rate)}   ETA {human_eta(model.eta)}   "
                                  f"elapsed {human_duration(model.elapsed)}"))
        if model.current_file:
            grid.add_row("file", Text(display_path(model.current_file, width)))
        return grid


def exit_status_for(model: MoveProgress, dry_run: bool) -> int:
    if dry_run and model.plan is not None and model.phase is not Phase.ERROR:
        return ExitStatus.OK
    return {Phase.COMPLETE: ExitStatus.OK, Phase.CANCELLED: ExitStatus.CANCELLED}.get(
        model.phase, ExitStatus.FAILED) if model.phase else ExitStatus.FAILED


async def run_move(args: argparse.Namespace) -> int:
    err = Console(stderr=True, highlight=False)
    service = service_of(args)
    target = resolve_target(args.target, sudo=args.sudo)
    request = MoveRequest(src=args.src, dst=args.dst, server_name=target.label,
                          verify=args.verify, bwlimit=args.bwlimit, dry_run=args.dry_run,
                          service=service, max_downtime=args.max_downtime,
                          keep_old=keep_old_of(args))
    handle = await start_move(target, request, settings=_settings(args),
                              prompter=TerminalPrompter(err))
    recorder = MoveRecorder(_moves_log(), server=target.label, target=args.target,
                            source=args.src, destination=args.dst, verify=args.verify,
                            started_by=request.started_by)
    return await follow(handle, args, recorder)


async def run_attach(args: argparse.Namespace) -> int:
    err = Console(stderr=True, highlight=False)
    target = resolve_target(args.target, sudo=args.sudo)
    handle = await attach_move(target, args.move_id, settings=_settings(args),
                               prompter=TerminalPrompter(err))
    moves_log = _moves_log()
    known = moves_log.get(handle.move_id) if handle.move_id else None
    recorder = MoveRecorder(moves_log, server=target.label, target=args.target,
                            source=known.source if known else "",
                            destination=known.destination if known else "",
                            verify=known.verify if known else "checksum",
                            started_by=getattr(handle, "started_by", None) or (
                                known.startedBy if known else None))
    args.dry_run = False
    return await follow(handle, args, recorder)


async def run_moves(args: argparse.Namespace) -> int:
    err = Console(stderr=True, highlight=False)
    target = resolve_target(args.target, sudo=args.sudo)
    listed = await list_target_moves(target, settings=_settings(args),
                                     prompter=TerminalPrompter(err))
    _moves_log().merge(record_from_listed(entry, target.label) for entry in listed)
    if args.json:
        for entry in listed:
            print(json.dumps(asdict(record_from_listed(entry, target.label)),
                             ensure_ascii=False))
        return ExitStatus.OK
    print_records([record_from_listed(entry, target.label) for entry in listed],
                  empty=f"no moves recorded on {target.label}")
    return ExitStatus.OK


async def run_clean(args: argparse.Namespace) -> int:
    err = Console(stderr=True, highlight=False)
    target = resolve_target(args.target, sudo=args.sudo)
    events, status = await clean_kept(target, dry_run=args.dry_run, now=args.now,
                                      settings=_settings(args), prompter=TerminalPrompter(err))
    for event in events:
        print(json.dumps(asdict(event), ensure_ascii=False) if args.json
              else kept_copy_line(event))
    if not args.json:
        print(clean_summary(events, target.label, args.dry_run))
    return ExitStatus.OK if status == 0 else ExitStatus.FAILED


def say(message: str) -> None:
    """A diagnostic on stderr, unwrapped: one message, one line, whatever the terminal width."""
    print(message, file=sys.stderr, flush=True)


def _moves_log() -> MovesLog:
    return MovesLog(warn=lambda message: say(f"warning: {message}"))


async def follow(handle: MoveHandle, args: argparse.Namespace, recorder: MoveRecorder) -> int:
    """Show a move to its end (or the end of a dry run), recording it; returns the exit status.

    Ctrl-C or SIGTERM asks the mover to cancel and keeps following until it says `cancelled`;
    a second one stops following at once (the move, and the cancel request if it got through,
    go on on the server).
    """
    model = MoveProgress()
    loop = asyncio.get_running_loop()
    cancelling: list[asyncio.Task[None]] = []
    view = JsonView() if args.json else (LiveView(model) if Console().is_terminal
                                         else LineView(model))

    def show(event: object, _changed: bool) -> None:
        if isinstance(event, LinkEvent):
            say(f"servermove: {event.message}")
        else:
            view.show(event)

    async def show_to_the_end() -> None:
        with view:
            await follow_move(handle, model, recorder, on_event=show, on_line=view.pass_on)

    following = asyncio.ensure_future(show_to_the_end())

    def on_interrupt() -> None:
        if not cancelling:
            say("cancelling: waiting for the mover to clean up… (again to stop waiting)")
            cancelling.append(asyncio.ensure_future(handle.cancel()))
        else:
            following.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_interrupt)
    try:
        await following
    except asyncio.CancelledError:
        where = getattr(handle, "target", "the server")
        recorder.connection_lost(model, "stopped following at the user's request")
        # Only a second Ctrl-C gets here, after the first one asked the mover to cancel.
        say(f"servermove: stopped waiting for the cancel on {where}; the mover there is still "
            "cancelling (servermove attach shows how it ends)")
        return ExitStatus.STOPPED_FOLLOWING
    except ConnectionLost as exc:
        recorder.connection_lost(model, exc.message)
        raise
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        handle.close()
    return _say_how_it_ended(model, handle, args, view)


def _say_how_it_ended(model: MoveProgress, handle: MoveHandle, args: argparse.Namespace,
                      view: JsonView | LineView) -> int:
    """The warnings, the summary or the refusal once a move's stream ended; the exit status."""
    for warning in model.warnings:
        say(f"warning: {warning}")
    if not args.json and model.phase is Phase.COMPLETE:
        view.console.print(Text(summary_line(model)))
    if handle.exit_status == ExitStatus.REFUSED and model.error:
        # Refused before anything was touched: the mover's words say what to do.
        say(f"servermove: {model.error}")
        return ExitStatus.REFUSED
    if model.phase in (Phase.ERROR, Phase.CANCELLED) or (model.phase is None and not args.dry_run):
        say(f"servermove: {summary_line(model)}")
        if model.phase is None and handle.stderr_text.strip():
            say(handle.stderr_text.strip())
    return exit_status_for(model, args.dry_run)


class JsonView(contextlib.AbstractContextManager):
    """--json: the mover's lines, byte for byte, and nothing else on stdout."""

    console = Console(stderr=True)

    def __exit__(self, *exc: object) -> None:
        return None

    def show(self, event: object) -> None:
        return None

    def pass_on(self, raw: bytes) -> None:
        sys.stdout.buffer.write(raw if raw.endswith(b"\n") else raw + b"\n")
        sys.stdout.buffer.flush()


class LineView(contextlib.AbstractContextManager):
    """Into a file or a pipe: a line for the plan and one per phase, no redrawing."""

    def __init__(self, model: MoveProgress) -> None:
        self.model = model
        # soft_wrap: a long path or message stays one line, whatever the width.
        self.console = Console(highlight=False, soft_wrap=True)
        self._phase: tuple[Phase, int | None] | None = None

    def __exit__(self, *exc: object) -> None:
        return None

    pass_on = None  # the mover's raw lines are for --json only

    def show(self, event: object) -> None:
        if isinstance(event, PlanEvent):
            self.console.print(Text(plan_line(event)))
        elif self.model.phase is not None and self.model.phase not in TERMINAL_PHASES and (
                self.model.phase, self.model.pass_number) != self._phase:
            # The end is said once, by the outcome line after the move: not as "error…" here.
            # One line a phase (and a service move's live pass): the pass number, the forecast.
            self._phase = (self.model.phase, self.model.pass_number)
            self.console.print(Text(f"{phase_words(self.model)}…"))


class LiveView(LineView):
    """On a terminal: the plan line, then live progress redrawn up to 10 times a second."""

    def __init__(self, model: MoveProgress) -> None:
        super().__init__(model)
        self._live = Live(RichMoveDisplay(model, self.console), console=self.console,
                          refresh_per_second=REFRESH_PER_SECOND, redirect_stdout=False,
                          redirect_stderr=False)

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def show(self, event: object) -> None:
        if isinstance(event, PlanEvent):
            self._live.console.print(Text(plan_line(event)))


def show_log(args: argparse.Namespace) -> int:
    moves_log = _moves_log()
    if args.server is not None:
        _check_server_name(args.server, moves_log)
    limit = args.limit if args.limit is not None or args.json else 20
    records = moves_log.records(server=args.server, limit=limit, started_by=args.started_by)
    if args.json:
        for record in records:
            print(record.to_json())
        return ExitStatus.OK
    filters = [f"server {args.server}"] * bool(args.server) + [
        f"started by {args.started_by}"] * bool(args.started_by)
    print_records(records, empty=f"no moves in the log for {' and '.join(filters)}" if filters
                  else "no moves recorded yet")
    return ExitStatus.OK


def _check_server_name(name: str, moves_log: MovesLog) -> None:
    """A name in neither the moves log nor servers.toml is a typo, not a server without moves."""
    from tui.core.inventory import load_inventory

    logged = sorted({record.server for record in moves_log.records()})
    if name in logged or name in load_inventory():
        return
    known = f" (servers in the log: {', '.join(logged)})" if logged else ""
    raise BadInput(f"no server {name!r} in the moves log or in servers.toml{known}")


def print_records(records: list[MoveRecord], *, empty: str) -> None:
    if not records:
        print(empty)
        return
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 200)  # into a file: never squeeze the paths
    rows = [log_cells(record) for record in records]
    *short, route = LOG_COLUMNS
    widths = {name: 2 + max([len(name), *(cells[name].cell_len for cells in rows)])
              for name in short}
    # On a narrow terminal the least useful columns go, and the paths fold rather than vanish.
    columns = fit_log_columns(widths, console.width, ROUTE_MIN_WIDTH)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in columns[:-1]:
        table.add_column(log_header(name), no_wrap=True)
    table.add_column(route, min_width=ROUTE_MIN_WIDTH, ratio=1, overflow="fold")
    for record, cells in zip(records, rows, strict=True):
        service = record_service_note(record)
        if service:  # a service move: its downtime, passes and cutover under its route
            cells[route].append(f"\n{service}", style="bold")
        if record.error:
            cells[route].append(f"\n{record.error}", style="red")
        table.add_row(*(cells[name] for name in columns))
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command in (None, "tui"):
            from tui.app.app import DEMO_REQUESTED, run_app, run_demo

            if run_app(ssh_config=getattr(args, "ssh_config", None)) == DEMO_REQUESTED:
                return run_demo()
            return 0
        if args.command == "demo":
            from tui.app.app import run_demo

            return run_demo()
        if args.command == "move":
            return asyncio.run(run_move(args))
        if args.command == "attach":
            return asyncio.run(run_attach(args))
        if args.command == "moves":
            return asyncio.run(run_moves(args))
        if args.command == "clean":
            return asyncio.run(run_clean(args))
        if args.command == "log":
            return show_log(args)
        raise BadInput(f"unknown command {args.command!r}")
    except ServermoveError as exc:
        print(f"servermove: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("servermove: interrupted", file=sys.stderr)
        return 130
