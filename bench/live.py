#!/usr/bin/env python3
"""The live shape: a service's downtime when its data moves, servermove against the by-hand ways.

    sudo .venv/bin/python bench/live.py [--size-mib 1024] [--files 20000] [--rate 0.01]
                                        [--runs 3] [--placement tmpfs|disk] [--out FILE]
                                        [--baseline MOVER]

A tree of --files files (--size-mib in all) on one filesystem, a service (live_service.py)
rewriting about --rate of its files a second, started and stopped by commands; moved to another
filesystem of the same kind — `tmpfs` (the default: two tmpfs mounts) or `disk` (two ext4
filesystems, each an image file on the workdir's disk, loop-mounted) — by:

- servermove: `mover.py move --service … --verify checksum` with `cutover = symlink`; its
  downtime is the mover's own `downtimeSeconds` (stop command → first passing check);
- stop; mv; start and stop; rsync -a; start: the wall clock from the stop command to the first
  passing check, with a symlink at the old path as the cutover (rsync's source removed after).

Each round builds the tree fresh and lets the service run 2 s first. Figures: medians over the
rounds, servermove's live passes and where its downtime goes (seconds per phase, from the
phase changes' timestamps), for the by-hand ways the seconds `sync -f` takes right after them
(outside their downtime: servermove's includes its own flush), and the load average after each
round. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench import ext4_mounts, remove_tree, tmpfs_mounts  # noqa: E402

SERVICE = REPO / "bench" / "live_service.py"
MOVER = REPO / "remote" / "mover.py"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
# The phases a service move spends with the service down, in order; the next one starts its end.
DOWN_PHASES = ("stopping", "copying", "verifying", "switching", "starting", "checking", "cleaning")


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


def flush_seconds(path: str) -> float:
    """Seconds to write back what is still only in memory on the filesystem of `path` (syncfs)."""
    began = time.perf_counter()
    subprocess.run(["sync", "-f", path], check=True)
    return time.perf_counter() - began


def by_hand(tool: str, src: str, dst: str, cmds: dict[str, list[str]]) -> dict[str, float]:
    """stop; mv|rsync; start (the old path a symlink to the new): seconds down; then, outside the
    downtime, seconds until the copy is on the disk (servermove flushes before it switches)."""
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
    down = time.perf_counter() - began
    return {"downtime": down, "flush_after": flush_seconds(dst)}


def phase_seconds(events: list[dict]) -> dict[str, float]:
    """Seconds in each phase the service is down, from the first event of each phase to the next."""
    began: dict[str, float] = {}
    for event in events:
        if event.get("phase") in DOWN_PHASES and event.get("ts") is not None:
            began.setdefault(event["phase"], event["ts"])
    return {phase: round(began[after] - began[phase], 3)
            for phase, after in itertools.pairwise(DOWN_PHASES)
            if phase in began and after in began}


def servermove(src: str, dst: str, cmds: dict[str, list[str]], mover: Path = MOVER) -> dict:
    """The mover's downtime, its number of live passes and its seconds per phase while down."""
    spec = json.dumps({**cmds, "cutover": "symlink"})
    proc = subprocess.run([PYTHON, str(mover), "move", "--verify", "checksum", "--service", spec,
                           src, dst], capture_output=True, text=True, check=False)
    events = [json.loads(line)["data"] for line in proc.stdout.splitlines()]
    end = events[-1]
    if proc.returncode != 0:
        raise RuntimeError(end.get("error"))
    live = max(e.get("pass") or 0 for e in events if e.get("phase") == "syncing")
    return {"downtime": end["downtimeSeconds"], "passes": live, "phases": phase_seconds(events)}


@contextlib.contextmanager
def placement_mounts(placement: str, workdir: str, size_mib: int) -> Iterator[tuple[str, str]]:
    """The two filesystems a round moves between, room for the tree twice over on each."""
    if placement == "disk":
        with ext4_mounts(workdir, size_mib * 2 + 512) as (disk_a, disk_b):
            yield disk_a, disk_b
    else:
        with tmpfs_mounts(workdir, f"{size_mib * 2 + 512}m") as (tmp_a, tmp_b, _disk):
            yield tmp_a, tmp_b


def load_average() -> list[float]:
    return [round(n, 2) for n in os.getloadavg()]


def stop_on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # so the rounds' and the mounts' finally blocks clean up


def one_round(tool: str, a: str, b: str, args: argparse.Namespace) -> dict:
    src, dst, pidfile = os.path.join(a, "src"), os.path.join(b, "dst"), os.path.join(a, "pid")
    build(src, args.files, args.size_mib * 1024 * 1024)
    cmds = commands(src, pidfile, args.rate)
    service_up(cmds)
    try:
        if tool == "servermove":
            return servermove(src, dst, cmds)
        if tool == "baseline":
            return servermove(src, dst, cmds, Path(args.baseline))
        return by_hand(tool, src, dst, cmds)
    finally:
        subprocess.run(cmds["stop"], capture_output=True)
        for path in (src, src + ".old", dst, pidfile):
            if os.path.islink(path):
                os.unlink(path)
            remove_tree(path)


def run_rounds(args: argparse.Namespace) -> dict[str, list[dict]]:
    """Every tool once a round, their order turning by round, so each meets the same conditions."""
    samples: dict[str, list[dict]] = {"servermove": [], "mv": [], "rsync": []}
    if args.baseline:
        samples["baseline"] = []
    with placement_mounts(args.placement, args.workdir, args.size_mib) as (fs_a, fs_b):
        for rnd in range(args.runs):
            turn = rnd % len(samples)
            for tool in list(samples)[turn:] + list(samples)[:turn]:
                sample = one_round(tool, fs_a, fs_b, args)
                sample["load"] = load_average()
                samples[tool].append(sample)
                print(f"round {rnd + 1} {tool:10} {sample}", file=sys.stderr, flush=True)
    return samples


def summary(samples: dict[str, list[dict]]) -> dict:
    result: dict = {tool: {"downtime_median_s": round(statistics.median(
        s["downtime"] for s in runs), 3), "samples": runs} for tool, runs in samples.items()}
    mv = result["mv"]["downtime_median_s"]
    result["rsync"]["ratio_to_stop_mv_start"] = round(result["rsync"]["downtime_median_s"] / mv, 3)
    for tool in ("servermove", "baseline"):
        if tool not in samples:
            continue
        result[tool]["ratio_to_stop_mv_start"] = round(result[tool]["downtime_median_s"] / mv, 3)
        phases = [s["phases"] for s in samples[tool]]
        if tool == "baseline":  # each round's servermove over this baseline, paired
            result[tool]["servermove_over_baseline_median"] = round(statistics.median(
                new["downtime"] / old["downtime"]
                for new, old in zip(samples["servermove"], samples["baseline"],
                                    strict=True)), 3)
        result[tool]["phase_median_s"] = {
            phase: round(statistics.median(p[phase] for p in phases if phase in p), 3)
            for phase in DOWN_PHASES if any(phase in p for p in phases)}
    for tool in ("mv", "rsync"):
        result[tool]["flush_after_median_s"] = round(statistics.median(
            s["flush_after"] for s in samples[tool]), 3)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=0.01)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--placement", choices=("tmpfs", "disk"), default="tmpfs",
                        help="two tmpfs mounts, or two loop-mounted ext4 images in --workdir")
    parser.add_argument("--workdir", default="/var/tmp")
    parser.add_argument("--baseline", help="another mover.py (an earlier version, say) run as "
                        "one more way in the same rounds, for an A/B comparison")
    parser.add_argument("--out", help="default: bench/results/live.json (tmpfs), "
                        "live-disk.json (disk)")
    args = parser.parse_args()
    out = Path(args.out or REPO / "bench" / "results" / (
        "live.json" if args.placement == "tmpfs" else f"live-{args.placement}.json"))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    load_before = load_average()
    try:
        result = summary(run_rounds(args))
    except KeyboardInterrupt:
        print("interrupted: the mounts, loop devices and trees are removed", file=sys.stderr)
        return 130
    result["shape"] = {"size_mib": args.size_mib, "files": args.files, "rate": args.rate,
                       "runs": args.runs, "placement": args.placement}
    result["load_average"] = {"before": load_before, "after": load_average()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
