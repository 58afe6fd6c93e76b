"""The `servermove` command: the TUI by default, and headless subcommands for scripts and tests.

    servermove                          the TUI (fleet dashboard)
    servermove demo                     the TUI on a generated demo server, no SSH needed
    servermove move TARGET SRC DST      one move with a rich progress display (or --json lines)

A user mistake gets one line on stderr, `servermove: <what is wrong and what to do>`, and a
non-zero exit; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tui.errors import BadInput, ServermoveError
from tui.formatting import human_duration, human_eta, human_rate, human_size, of_total
from tui.progress import MoveProgress
from tui.protocol import Phase, PlanEvent, display_path
from tui.runner import MoveRequest, MoverProcess, SshSettings, start_move
from tui.targets import Target, parse_target

VERIFY_MODES = ("checksum", "size", "none")
# Exit statuses mirror the mover's (docs/protocol.md), plus one for a lost connection.
EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_CANCELLED, EXIT_CONNECTION_LOST = 0, 1, 2, 3, 4
REFRESH_PER_SECOND = 10


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage dump
        raise BadInput(f"{message} (see 'servermove {self.prog.split()[-1]} --help')"
                       if " " in self.prog else f"{message} (see 'servermove --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="servermove", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", parser_class=_ArgumentParser)
    commands.add_parser("tui", help="the fleet dashboard (the default)")
    commands.add_parser("demo", help="move a generated demo directory on this machine, in the TUI")

    move = commands.add_parser("move", help="move SRC to DST on TARGET, headless")
    move.add_argument("target", metavar="TARGET",
                      help="'local', a server in servers.toml, an ssh alias or [user@]host[:port]")
    move.add_argument("src", metavar="SRC", help="absolute path of the data directory")
    move.add_argument("dst", metavar="DST", help="absolute path to move it to")
    _add_connection_options(move)
    move.add_argument("--verify", choices=VERIFY_MODES, default="checksum",
                      help="how to check the copy before the source is removed (default checksum)")
    move.add_argument("--bwlimit", metavar="RATE",
                      help="copy at most RATE bytes a second (40M, 1G)")
    move.add_argument("--sudo", action="store_true", help="run the mover with sudo")
    move.add_argument("--dry-run", action="store_true", help="check and plan, change nothing")
    return parser


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the mover's JSON lines on stdout, nothing else")
    parser.add_argument("--ssh-config", metavar="FILE", type=Path,
                        help="use this ssh config file instead of ~/.ssh/config (like ssh -F)")


def resolve_target(text: str, *, sudo: bool = False) -> Target:
    """A servers.toml name wins over an ssh alias of the same name, as in the TUI."""
    from tui.inventory import load_inventory

    inventory = load_inventory()
    if text in inventory:
        entry = inventory.get(text)
        return parse_target(entry.target, sudo=sudo or entry.sudo, python=entry.python)
    return parse_target(text, sudo=sudo)


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

    async def confirm_host_key(self, host: str, port: int, key_type: str,
                               fingerprint: str) -> bool:
        self.console.print(f"The authenticity of host [bold]{host}:{port}[/] can't be "
                           f"established.\n{key_type} key fingerprint is [bold]{fingerprint}[/].")
        answer = await asyncio.to_thread(
            input, "Are you sure you want to continue connecting (yes/no)? ")
        return answer.strip().lower() in ("yes", "y")

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
        phase = model.phase.value if model.phase else "connecting"
        grid.add_row("phase", Text(phase + _phase_trail(model)))
        bar_width = max(10, min(50, width - 30))
        filled = int(model.fraction * bar_width)
        bytes_done = of_total(model.bytes_copied, model.bytes_total, sizes=True)
        grid.add_row("bytes", Text(f"{'█' * filled}{'░' * (bar_width - filled)} "
                                   f"{model.percent:5.1f}%  {bytes_done}"))
        grid.add_row("files", Text(of_total(model.files_copied, model.files_total, sizes=False)))
        grid.add_row("rate", Text(f"{human_rate(model.rate)}   ETA {human_eta(model.eta)}   "
                                  f"elapsed {human_duration(model.elapsed)}"))
        if model.current_file:
            grid.add_row("file", Text(display_path(model.current_file, width)))
        return grid


def _phase_trail(model: MoveProgress) -> str:
    if model.phase is Phase.VERIFYING:
        return f" ({of_total(model.bytes_verified, model.bytes_total, sizes=True)})"
    return ""


def _plan_line(plan: PlanEvent) -> str:
    how = "rename (same filesystem)" if plan.method == "rename" else "copy across filesystems"
    text = (f"plan: {how}, {human_size(plan.bytes_total)} in {plan.files_total:,} files and "
            f"{plan.dirs_total:,} directories, verify {plan.verify}")
    if plan.dst_free_bytes is not None and plan.method == "copy":
        text += f"; {human_size(plan.dst_free_bytes - plan.bytes_total)} free after"
    return text


def summary_line(model: MoveProgress) -> str:
    if model.phase is Phase.COMPLETE:
        rate = human_rate(model.average_rate) if model.average_rate else "—"
        return (f"moved {human_size(model.bytes_total)} in {model.files_total:,} files in "
                f"{human_duration(model.elapsed)} ({rate})")
    return model.outcome()


def exit_status_for(model: MoveProgress, dry_run: bool) -> int:
    if dry_run and model.plan is not None and model.phase is not Phase.ERROR:
        return EXIT_OK
    return {Phase.COMPLETE: EXIT_OK, Phase.CANCELLED: EXIT_CANCELLED}.get(
        model.phase, EXIT_FAILED) if model.phase else EXIT_FAILED


async def run_move(args: argparse.Namespace) -> int:
    err = Console(stderr=True, highlight=False)
    settings = _settings(args)
    target = resolve_target(args.target, sudo=args.sudo)
    request = MoveRequest(src=args.src, dst=args.dst, server_name=target.label,
                          verify=args.verify, bwlimit=args.bwlimit, dry_run=args.dry_run)
    mover = await start_move(target, request, settings=settings, prompter=TerminalPrompter(err))
    model = MoveProgress()
    loop = asyncio.get_running_loop()
    cancelling: list[asyncio.Task[None]] = []

    def on_interrupt() -> None:
        if not cancelling:
            err.print("cancelling: waiting for the mover to clean up…")
            cancelling.append(asyncio.ensure_future(mover.cancel()))

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_interrupt)
    try:
        if args.json:
            await _stream_json(mover, model)
        else:
            await _stream_rich(mover, model, err)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        mover.close()
    for warning in model.warnings:
        err.print(Text(f"warning: {warning}"))
    if model.phase in (Phase.ERROR, Phase.CANCELLED) or (model.phase is None and not args.dry_run):
        err.print(Text(f"servermove: {summary_line(model)}"))
        if model.phase is None and mover.stderr_text.strip():
            err.print(Text(mover.stderr_text.strip()))
    status = exit_status_for(model, args.dry_run)
    return EXIT_REFUSED if mover.exit_status == EXIT_REFUSED else status


async def _stream_json(mover: MoverProcess, model: MoveProgress) -> None:
    out = sys.stdout.buffer
    async for raw, event in mover.records():
        out.write(raw if raw.endswith(b"\n") else raw + b"\n")
        out.flush()
        model.apply(event)


async def _stream_rich(mover: MoverProcess, model: MoveProgress, err: Console) -> None:
    out = Console(highlight=False)
    if not out.is_terminal:
        # Into a file or a pipe: a line per phase, no redrawing.
        async for event in mover.events():
            before = model.phase
            model.apply(event)
            if isinstance(event, PlanEvent):
                out.print(Text(_plan_line(event)))
            elif model.phase is not before and model.phase is not None:
                out.print(Text(f"{model.phase.value}…"))
    else:
        with Live(RichMoveDisplay(model, out), console=out, transient=False,
                  refresh_per_second=REFRESH_PER_SECOND, redirect_stdout=False,
                  redirect_stderr=False) as live:
            async for event in mover.events():
                model.apply(event)
                if isinstance(event, PlanEvent):
                    live.console.print(Text(_plan_line(event)))
    if model.phase is Phase.COMPLETE:
        out.print(Text(summary_line(model)))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command in (None, "tui"):
            from tui.app import run_app

            return run_app() or 0
        if args.command == "demo":
            from tui.demo import run_demo

            return run_demo() or 0
        if args.command == "move":
            return asyncio.run(run_move(args))
        raise BadInput(f"unknown command {args.command!r}")
    except ServermoveError as exc:
        print(f"servermove: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("servermove: interrupted", file=sys.stderr)
        return 130
