#!/usr/bin/env python3
"""A game-server-like process for the service tests: a real program that keeps its data busy.

While it runs it rewrites world files in place every 50 ms and keeps its log open for writing,
as a game server does. It is started and stopped by commands, like a service:

    game_server.py start DIR PIDFILE   start it detached; returns once it has written its first tick
    game_server.py stop PIDFILE        SIGTERM; returns once it has saved and exited
    game_server.py check PIDFILE       exit 0 while it runs
    game_server.py run DIR             the server itself (what start runs)

DIR is used as given, so a server started on a symlink writes wherever the symlink points.
"""

import os
import signal
import subprocess
import sys
import time

TICK_SECONDS = 0.05
REGIONS = 4
WAIT_SECONDS = 15


def run(data_dir):
    os.makedirs(os.path.join(data_dir, "world"), exist_ok=True)
    os.makedirs(os.path.join(data_dir, "logs"), exist_ok=True)
    log = open(os.path.join(data_dir, "logs", "console.log"), "a", buffering=1)  # noqa: SIM115
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    log.write(f"started pid={os.getpid()}\n")
    tick = 0
    while not stopping:
        tick += 1
        region = os.path.join(data_dir, "world", f"region-{tick % REGIONS}.dat")
        with open(region, "wb") as handle:
            handle.write(f"tick {tick}\n".encode() + b"\0" * 4096)
        log.write(f"tick {tick}\n")
        time.sleep(TICK_SECONDS)
    with open(os.path.join(data_dir, "world", "level.dat"), "w") as handle:
        handle.write(f"saved at tick {tick}\n")
        handle.flush()
        os.fsync(handle.fileno())
    log.write(f"stopped at tick {tick}\n")
    log.close()


def running(pid):
    """True while `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def read_pid(pidfile):
    try:
        with open(pidfile) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def start(data_dir, pidfile):
    pid = read_pid(pidfile)
    if pid and running(pid):
        sys.exit(f"already running (pid {pid})")
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "run", data_dir],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    with open(pidfile, "w") as handle:
        handle.write(f"{process.pid}\n")
    log = os.path.join(data_dir, "logs", "console.log")
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with open(log) as handle:
                if f"started pid={process.pid}\ntick" in handle.read():
                    print(f"started pid {process.pid}")
                    return
        except OSError:
            pass
        time.sleep(TICK_SECONDS)
    sys.exit(f"the server did not start (see {log})")


def stop(pidfile):
    pid = read_pid(pidfile)
    if not pid or not running(pid):
        sys.exit("not running")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + WAIT_SECONDS
    while running(pid):
        if time.monotonic() > deadline:
            sys.exit(f"pid {pid} did not stop")
        time.sleep(TICK_SECONDS)
    os.unlink(pidfile)
    print(f"stopped pid {pid}")


def check(pidfile):
    pid = read_pid(pidfile)
    if not pid or not running(pid):
        sys.exit("not running")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"run": run, "start": start, "stop": stop, "check": check}[command](*args)
