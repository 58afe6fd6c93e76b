"""The demo in a real terminal (tmux): quitting mid-move answers and ends, and closing the
terminal window mid-move (SIGHUP) still removes the demo's data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SERVERMOVE = Path(sys.executable).parent / "servermove"
DEMO_DESTINATIONS = Path("/dev/shm")


class Terminal:
    """One tmux server of our own (its own socket), running one command."""

    def __init__(self, socket: str) -> None:
        self.socket = socket
        self.pid: int | None = None

    def tmux(self, *args: str, check: bool = True) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=check, text=True,
                              capture_output=True).stdout

    def start(self, command: str) -> int:
        self.tmux("new-session", "-d", "-x", "120", "-y", "40", "-s", "demo", command)
        self.pid = int(self.tmux("display-message", "-p", "-t", "demo", "#{pane_pid}").strip())
        return self.pid

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "demo", check=False)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "demo", *keys)

    def wait_for_text(self, text: str, timeout: float = 120.0) -> None:
        wait_until(lambda: text in self.screen(), timeout, f"{text!r} on screen:\n{{}}",
                   self.screen)


def wait_until(condition: Callable[[], object], timeout: float, what: str,
               show: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what.format(show()))
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def demo_destinations() -> set[Path]:
    return set(DEMO_DESTINATIONS.glob("servermove-demo-dst-*"))


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(f"servermove-test-{os.getpid()}")
    try:
        yield term
    finally:
        term.tmux("kill-server", check=False)
        if term.pid is not None and alive(term.pid):  # a demo that hung: do not leave it
            os.kill(term.pid, signal.SIGKILL)


def start_demo_move(terminal: Terminal,
                    tmp_path: Path) -> tuple[int, Path, set[Path], int]:
    """Start `servermove demo`, Apply, Start move; return (pid, its TMPDIR, destinations made,
    the pid of its service)."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    before = demo_destinations()
    pid = terminal.start(f"TMPDIR={tmpdir} exec {SERVERMOVE} demo")
    terminal.wait_for_text("Apply Changes")
    made = demo_destinations() - before
    assert list(tmpdir.glob("servermove-demo-*")) and made  # the demo's data is there
    # Its service: a process writing into the data, which must be gone with the demo too.
    [pidfile] = tmpdir.glob("servermove-demo-*/service.pid")
    service_pid = int(pidfile.read_text())
    assert alive(service_pid)
    terminal.keys("Enter")  # the new path is filled in and focused: Enter applies
    terminal.wait_for_text("Start move")
    terminal.keys("Enter")
    terminal.wait_for_text("copying")
    return pid, tmpdir, made, service_pid


def assert_demo_data_gone(pid: int, tmpdir: Path, made: set[Path], service_pid: int) -> None:
    wait_until(lambda: not alive(pid), 60, "the demo to end")
    assert not alive(service_pid)  # the demo's service was stopped
    assert not list(tmpdir.glob("servermove-demo-*"))
    assert not any(path.exists() for path in made)


def test_ctrl_q_mid_move_is_answered_and_the_demo_ends(terminal: Terminal,
                                                        tmp_path: Path) -> None:
    pid, tmpdir, made, service_pid = start_demo_move(terminal, tmp_path)
    terminal.keys("C-q")
    terminal.wait_for_text("Cancel moves and quit")
    terminal.keys("BTab")  # from the focused "Keep moving" to "Cancel moves and quit"
    terminal.keys("Enter")
    assert_demo_data_gone(pid, tmpdir, made, service_pid)


@pytest.mark.parametrize("how", ["window closed", "SIGTERM"])
def test_ending_the_demo_mid_move_removes_its_data(terminal: Terminal, tmp_path: Path,
                                                   how: str) -> None:
    pid, tmpdir, made, service_pid = start_demo_move(terminal, tmp_path)
    if how == "window closed":
        terminal.tmux("kill-server")  # the demo gets SIGHUP from its closed terminal
    else:
        os.kill(pid, signal.SIGTERM)
    assert_demo_data_gone(pid, tmpdir, made, service_pid)
