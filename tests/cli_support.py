"""The real `servermove` CLI as tests drive it, and small trees to move with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import run

SERVERMOVE = [sys.executable, "-m", "tui"]


def servermove(*args: object, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """The real CLI, as a user runs it, with stdin that is not a terminal."""
    return subprocess.run([*SERVERMOVE, *map(str, args)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, **kwargs)


def start_json_move(*args: object) -> subprocess.Popen:
    """`servermove move --json ARGS…` running in the background, its lines readable as they come."""
    return subprocess.Popen([*SERVERMOVE, "move", "--json", *map(str, args)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_copying(process: subprocess.Popen, seen: list[dict] | None = None) -> dict:
    """Read the move's lines until bytes are being copied; the data of that event. Every message
    read is appended to `seen`, if given."""
    assert process.stdout is not None
    for line in process.stdout:
        message = json.loads(line)
        if seen is not None:
            seen.append(message)
        data = message["data"]
        if data.get("phase") == "copying" and data["bytesCopied"] > 0:
            return data
    raise AssertionError(f"never saw copying: {process.stderr.read() if process.stderr else ''}")


def make_tree(root: Path, files: int = 20, size: int = 10_000) -> dict[str, bytes]:
    """A small tree owned by the test user (who moves it over SSH)."""
    contents = {}
    for i in range(files):
        rel = f"d{i % 3}/file {i}.bin"
        data = os.urandom(size + i)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        contents[rel] = data
    run("chown", "-R", "smtest:smtest", root)
    return contents


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def on_a_terminal(argv: list[str], answers: list[bytes]) -> tuple[int, str]:
    """Run the real CLI on a pty (a real terminal), answering each host-key prompt in turn:
    (its exit status, all it wrote)."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:
        os.execv(SERVERMOVE[0], [*SERVERMOVE, *argv])
    screen = b""
    deadline = time.monotonic() + 30
    prompts = (b"(yes/no/[fingerprint])? ", b"Please type 'yes', 'no' or the fingerprint: ")
    given = 0
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the pty: it has exited
            break
        screen += chunk
        if given < len(answers) and sum(screen.count(p) for p in prompts) > given:
            os.write(fd, answers[given])
            given += 1
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), screen.decode("utf-8", "replace")
