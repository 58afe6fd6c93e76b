#!/usr/bin/env python3
"""A service for the live-pass tests that changes its tree in every way a pass must follow:
rewrites, deletions, new files, a file turned into a directory or a symlink, new hard links,
chmods. Started and stopped by commands; its stop command also snapshots the tree it leaves
(tests/fstree.py), so a test can compare the moved copy with the source as it was at the stop.

    churn_service.py start DIR PIDFILE
    churn_service.py stop PIDFILE DIR SNAPSHOT
    churn_service.py check PIDFILE
"""

import os
import pickle
import random
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def entries(data_dir):
    found = []
    for parent, _dirs, names in os.walk(data_dir):
        found.extend(os.path.join(parent, name) for name in names)
    return [path for path in found if os.path.isfile(path) and not os.path.islink(path)]


def churn_once(data_dir, rng, counter):
    files = entries(data_dir)
    if not files:
        return
    path = rng.choice(files)
    new = os.path.join(os.path.dirname(path), f"new-{counter}")
    action = rng.randrange(8)
    if action <= 1:
        with open(path, "r+b") as handle:
            handle.write(os.urandom(64))
    elif action == 2:
        os.unlink(path)
    elif action == 3:
        with open(new, "wb") as handle:
            handle.write(os.urandom(rng.randrange(1, 100_000)))
    elif action == 4:
        os.unlink(path)
        os.mkdir(path)
        with open(os.path.join(path, "inside"), "wb") as handle:
            handle.write(b"was a file")
    elif action == 5:
        os.link(path, new)
    elif action == 6:
        os.chmod(path, rng.choice((0o600, 0o640, 0o644, 0o755)))
    else:
        os.unlink(path)
        os.symlink(f"target-{counter}", path)


def run(data_dir):
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    rng = random.Random(os.getpid())
    counter = 0
    while not stopping:
        counter += 1
        churn_once(data_dir, rng, counter)
        time.sleep(0.005)


def read_pid(pidfile):
    try:
        with open(pidfile) as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return None


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, TypeError):
        return False


def start(data_dir, pidfile):
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "run", data_dir],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    with open(pidfile, "w") as handle:
        handle.write(str(process.pid))


def stop(pidfile, data_dir, snapshot):
    pid = read_pid(pidfile)
    if not alive(pid):
        sys.exit("not running")
    os.kill(pid, signal.SIGTERM)
    while alive(pid):
        time.sleep(0.01)
    sys.path.insert(0, REPO)
    from tests.fstree import snapshot_tree

    with open(snapshot, "wb") as handle:
        pickle.dump(snapshot_tree(data_dir), handle)


def check(pidfile):
    if not alive(read_pid(pidfile)):
        sys.exit("not running")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"run": run, "start": start, "stop": stop, "check": check}[command](*args)
