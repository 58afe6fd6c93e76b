#!/usr/bin/env python3
"""What the mover's check for programs using the source costs on a busy server.

    sudo .venv/bin/python bench/openfiles.py [--processes 2000] [--fds 50000] [--rounds 7]
                                             [--python PYTHON]

Starts PROCESSES sleeping processes and a few that hold FDS open files between them (none under
the source: the common case, where every descriptor is looked at and none matches),
then times the whole check (mover.refuse_source_writers: every /proc/PID/fd link, maps and cwd),
as the mover runs it, in a fresh interpreter each round. Prints the processes and descriptors it
looked at and the median time. Every process it starts is killed at the end.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

HOLD_FDS = """
import os, resource, sys, time
n = int(sys.argv[1])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(n)]
print("ready", flush=True)
time.sleep(3600)
"""

TIME_CHECK = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
import mover
src = os.path.realpath(sys.argv[2]).encode()
start = time.perf_counter()
mover.refuse_source_writers(src, mover.Refused)
took = time.perf_counter() - start
pids = [p for p in os.listdir("/proc") if p.isdigit()]
fds = 0
for p in pids:
    try:
        fds += len(os.listdir("/proc/%s/fd" % p))
    except OSError:
        pass
print(len(pids), fds, took)
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=2000)
    parser.add_argument("--fds", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    per_holder = max(1, resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 100)
    started: list[subprocess.Popen] = []
    try:
        for _ in range(args.processes):
            started.append(subprocess.Popen(["sleep", "3600"]))
        for first in range(0, args.fds, per_holder):
            count = min(per_holder, args.fds - first)
            holder = subprocess.Popen([sys.executable, "-c", HOLD_FDS, str(count)],
                                      stdout=subprocess.PIPE)
            started.append(holder)
            assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"
        with tempfile.TemporaryDirectory() as src:
            rounds = []
            for _ in range(args.rounds):
                out = subprocess.run([args.python, "-c", TIME_CHECK, str(REPO / "remote"), src],
                                     capture_output=True, text=True, check=True).stdout.split()
                rounds.append(float(out[2]))
        print(f"{out[0]} processes, {out[1]} open descriptors: the check took "
              f"{statistics.median(rounds) * 1000:.0f} ms (median of {args.rounds}, "
              f"min {min(rounds) * 1000:.0f} ms, max {max(rounds) * 1000:.0f} ms)")
    finally:
        for proc in started:
            proc.kill()
        for proc in started:
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
