#!/usr/bin/env python3
"""The live shape: a service's downtime when its data moves, servermove against the by-hand ways.

    sudo .venv/bin/python bench/live.py [--size-mib 1024] [--files 20000] [--rate 0.01]
                                        [--runs 3] [--out FILE]

A tree of --files files (--size-mib in all) on one tmpfs, a service (live_service.py) rewriting
about --rate of its files a second, started and stopped by commands; moved to another tmpfs by:

- servermove: `mover.py move --service … --verify checksum` with `cutover = symlink`; its
  downtime is the mover's own `downtimeSeconds` (stop command → first passing check);
- stop; mv; start and stop; rsync -a; start: the wall clock from the stop command to the first
  passing check, with a symlink at the old path as the cutover (rsync's source removed after).

Each round builds the tree fresh and lets the service run 2 s first. Figures: medians over the
rounds, and servermove's live passes. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench import remove_tree, tmpfs_mounts  # noqa: E402

SERVICE = REPO / "bench" / "live_service.py"
MOVER = REPO / "remote" / "mover.py"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def build(root: str, files: int, size: int) -> None:
    per_file = size // files
    chunk = os.urandom(per_file)
    for n in range(files):
        parent = os.path.join(root, f"d{n % 200:03}")
        os.makedirs(parent, exist_ok=True)
        with open(os.path.join(parent, f"f{n:06}"), "wb") as handle:
            handle.write(chunk[n % 97:] + chunk[:n % 97])
    subprocess.run(["sync"], check=True)


def commands(data: str, pidfile: str, rate: float) -> dict[str, list[str]]:
    return {"stop": [PYTHON, str(SERVICE), "stop", pidfile],
            "start": [PYTHON, str(SERVICE), "start", data, pidfile, str(rate)],
            "check": [PYTHON, str(SERVICE), "check", pidfile]}


def service_up(cmds: dict[str, list[str]]) -> None:
    subprocess.run(cmds["start"], check=True)
    time.sleep(2)


def until_healthy(cmds: dict[str, list[str]]) -> None:
    while subprocess.run(cmds["check"], capture_output=True).returncode != 0:
        time.sleep(0.05)


def by_hand(tool: str, src: str, dst: str, cmds: dict[str, list[str]]) -> float:
    """stop; mv|rsync; start (the old path a symlink to the new): seconds down."""
    began = time.perf_counter()
    subprocess.run(cmds["stop"], check=True)
    if tool == "mv":
        subprocess.run(["mv", src, dst], check=True)
    else:
        subprocess.run(["rsync", "-a", src + "/", dst + "/"], check=True)
        os.rename(src, src + ".old")
    os.symlink(dst, src)
    subprocess.run(cmds["start"], check=True)
    until_healthy(cmds)
    return time.perf_counter() - began


def servermove(src: str, dst: str, cmds: dict[str, list[str]]) -> tuple[float, int]:
    """The mover's downtime and its number of live passes."""
    spec = json.dumps({**cmds, "cutover": "symlink"})
    proc = subprocess.run([PYTHON, str(MOVER), "move", "--verify", "checksum", "--service", spec,
                           src, dst], capture_output=True, text=True, check=False)
    events = [json.loads(line)["data"] for line in proc.stdout.splitlines()]
    end = events[-1]
    if proc.returncode != 0:
        raise RuntimeError(end.get("error"))
    live = max(e.get("pass") or 0 for e in events if e.get("phase") == "syncing")
    return end["downtimeSeconds"], live


def one_round(tool: str, a: str, b: str, args: argparse.Namespace) -> dict[str, float]:
    src, dst, pidfile = os.path.join(a, "src"), os.path.join(b, "dst"), os.path.join(a, "pid")
    build(src, args.files, args.size_mib * 1024 * 1024)
    cmds = commands(src, pidfile, args.rate)
    service_up(cmds)
    try:
        if tool == "servermove":
            seconds, passes = servermove(src, dst, cmds)
            return {"downtime": seconds, "passes": passes}
        return {"downtime": by_hand(tool, src, dst, cmds)}
    finally:
        subprocess.run(cmds["stop"], capture_output=True)
        for path in (src, src + ".old", dst, pidfile):
            if os.path.islink(path):
                os.unlink(path)
            remove_tree(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=0.01)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", default="/var/tmp")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "live.json"))
    args = parser.parse_args()
    samples: dict[str, list[dict[str, float]]] = {"servermove": [], "mv": [], "rsync": []}
    size = f"{args.size_mib * 2 + 512}m"
    with tmpfs_mounts(args.workdir, size) as (tmp_a, tmp_b, _disk):
        for rnd in range(args.runs):
            for tool in list(samples)[rnd % 3:] + list(samples)[:rnd % 3]:
                sample = one_round(tool, tmp_a, tmp_b, args)
                samples[tool].append(sample)
                print(f"round {rnd + 1} {tool:10} {sample}", file=sys.stderr, flush=True)
    result = {tool: {"downtime_median_s": round(statistics.median(
        s["downtime"] for s in runs), 3), "samples": runs} for tool, runs in samples.items()}
    mv = result["mv"]["downtime_median_s"]
    result["servermove"]["ratio_to_stop_mv_start"] = round(
        result["servermove"]["downtime_median_s"] / mv, 3)
    result["rsync"]["ratio_to_stop_mv_start"] = round(result["rsync"]["downtime_median_s"] / mv, 3)
    result["shape"] = {"size_mib": args.size_mib, "files": args.files, "rate": args.rate,
                       "runs": args.runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
