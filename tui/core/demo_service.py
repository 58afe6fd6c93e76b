#!/usr/bin/env python3
"""The demo's service: a small "server" that keeps writing into its data directory while it runs,
so `servermove demo` moves a live service (copy while it runs, stop, final copy, symlink, start,
check). Stdlib only; run as a script by the demo's stop, start and check commands:

    demo_service.py start DIR PIDFILE   start it detached; returns once it has written
    demo_service.py stop PIDFILE        SIGTERM; returns once it has saved and exited
    demo_service.py check PIDFILE       exit 0 while it runs
    demo_service.py run DIR             the server itself (what start runs)

DIR is used as given: after a symlink cutover it writes wherever the link points.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

TICK_SECONDS = 0.1
SESSIONS = 20  # the files it rewrites in turn, as a server keeps its state
WAIT_SECONDS = 15


def run(data_dir: str) -> None:
    os.makedirs(os.path.join(data_dir, "sessions"), exist_ok=True)
    os.makedirs(os.path.join(data_dir, "logs"), exist_ok=True)
    log = open(os.path.join(data_dir, "logs", "service.log"), "a", buffering=1)  # noqa: SIM115
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    log.write(f"started pid={os.getpid()}\n")
    tick = 0
    while not stopping:
        tick += 1
        with open(os.path.join(data_dir, "sessions", f"session-{tick % SESSIONS:02d}.json"),
                  "w") as handle:
            handle.write(f'{{"tick": {tick}, "at": {time.time():.3f}}}\n')
        log.write(f"tick {tick}\n")
        time.sleep(TICK_SECONDS)
    log.write(f"stopped at tick {tick}\n")
    log.close()


def running(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def read_pid(pidfile: str) -> int | None:
    try:
        with open(pidfile) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def start(data_dir: str, pidfile: str) -> None:
    pid = read_pid(pidfile)
    if pid and running(pid):
        sys.exit(f"already running (pid {pid})")
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "run", data_dir],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True, cwd="/")
    with open(pidfile, "w") as handle:
        handle.write(f"{process.pid}\n")
    log = os.path.join(data_dir, "logs", "service.log")
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with open(log) as handle:
                if f"started pid={process.pid}\ntick" in handle.read():
                    return
        except OSError:
            pass
        time.sleep(TICK_SECONDS)
    sys.exit(f"the demo service did not start (see {log})")


def stop(pidfile: str) -> None:
    pid = read_pid(pidfile)
    if not pid or not running(pid):
        sys.exit("not running")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + WAIT_SECONDS
    while running(pid):
        if time.monotonic() > deadline:
            sys.exit(f"pid {pid} did not stop")
        time.sleep(TICK_SECONDS / 5)
    os.unlink(pidfile)


def check(pidfile: str) -> None:
    pid = read_pid(pidfile)
    if not pid or not running(pid):
        sys.exit("not running")


if __name__ == "__main__":
    {"run": run, "start": start, "stop": stop, "check": check}[sys.argv[1]](*sys.argv[2:])
