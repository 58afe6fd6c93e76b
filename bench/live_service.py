#!/usr/bin/env python3
"""The service of the benchmark's live shape: rewrites about RATE of its files a second, in place,
spread over the second, until it is stopped. Started and stopped by commands, like a service:

    live_service.py start DIR PIDFILE RATE   start it detached (RATE: a fraction, 0.01 = 1 %)
    live_service.py stop PIDFILE             SIGTERM; returns once it has exited
    live_service.py check PIDFILE            exit 0 while it runs
"""

import os
import random
import signal
import subprocess
import sys
import time

SLICE = 0.05


def files_of(data_dir: str) -> list[str]:
    found = []
    for parent, _dirs, names in os.walk(data_dir):
        found.extend(os.path.join(parent, name) for name in names)
    return sorted(found)


def run(data_dir: str, rate: str) -> None:
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    files = files_of(data_dir)
    per_slice = max(1, round(len(files) * float(rate) * SLICE))
    rng = random.Random(1)
    while not stopping:
        began = time.monotonic()
        for path in rng.sample(files, per_slice):
            with open(path, "r+b") as handle:
                size = os.fstat(handle.fileno()).st_size
                handle.write(os.urandom(min(size, 4096)))
        time.sleep(max(0.0, SLICE - (time.monotonic() - began)))


def read_pid(pidfile: str) -> int | None:
    try:
        with open(pidfile) as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return None


def alive(pid: int | None) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start(data_dir: str, pidfile: str, rate: str) -> None:
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "run", data_dir, rate],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    with open(pidfile, "w") as handle:
        handle.write(str(process.pid))


def stop(pidfile: str) -> None:
    pid = read_pid(pidfile)
    if not alive(pid):
        sys.exit("not running")
    os.kill(pid, signal.SIGTERM)
    while alive(pid):
        time.sleep(0.01)


def check(pidfile: str) -> None:
    if not alive(read_pid(pidfile)):
        sys.exit("not running")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"run": run, "start": start, "stop": stop, "check": check}[command](*args)
