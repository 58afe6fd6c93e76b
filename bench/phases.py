#!/usr/bin/env python3
"""Where a mover's time goes, phase by phase, and two versions of it side by side with mv.

    sudo .venv/bin/python bench/phases.py [--shape small] [--verify none] [--placement cross]
                                          [--rounds 7] [--quick] MOVER [MOVER ...]

MOVER is a path to a mover script, or `git:REV` for remote/mover.py at a revision (`git:HEAD~1`).
Each round builds the shape fresh, syncs, and runs mv and every mover once, in an order that
rotates; the figures are medians over the rounds: the wall time (the process, start-up
included) and each phase, timed from the `ts` of the mover's own progress events. `start-up` is
the wall time before the first event: the interpreter starting and compiling the mover.

bench.py is the verdict on the targets; this is for A/B tests of a change, on the same shapes and
mounts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench import REPO, remove_tree, shapes, tmpfs_mounts
from tui.core.runner import PYTHON_FLAGS

PHASES = ("calculating", "copying", "verifying", "cleaning")


def mover_file(spec: str, workdir: str) -> str:
    if not spec.startswith("git:"):
        return spec
    rev = spec[4:]
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:remote/mover.py"],
                            capture_output=True, check=True).stdout
    path = os.path.join(workdir, f"mover-{rev.replace('/', '_')}.py")
    with open(path, "wb") as f:
        f.write(source)
    return path


def run_once(command: list[str], is_mover: bool) -> dict[str, float]:
    started_wall = time.time()
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True)
    timings = {"wall": time.monotonic() - started}
    if proc.returncode != 0:
        raise SystemExit(f"{command[-3]} failed ({proc.returncode}): "
                         f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
    if not is_mover:
        return timings
    marks = []  # (phase, ts) at each change of phase
    for line in proc.stdout.splitlines():
        data = json.loads(line).get("data", {})
        phase, ts = data.get("phase"), data.get("ts")
        if phase and ts and (not marks or marks[-1][0] != phase):
            marks.append((phase, ts))
    timings["start-up"] = marks[0][1] - started_wall
    for (phase, ts), (_next, next_ts) in itertools.pairwise(marks):
        timings[phase] = timings.get(phase, 0.0) + next_ts - ts
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("movers", nargs="+", metavar="MOVER")
    parser.add_argument("--shape", default="small", choices=sorted(shapes(False)))
    parser.add_argument("--quick", action="store_true", help="the tiny shapes (for CI)")
    parser.add_argument("--verify", default="checksum", choices=("checksum", "size", "none"))
    parser.add_argument("--placement", default="cross", choices=("cross", "disk"),
                        help="tmpfs to tmpfs, or the root disk to tmpfs")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workdir", default="/var/tmp")
    parser.add_argument("--mover-python", default="/usr/bin/python3")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: it mounts two tmpfs (run it with sudo)")
    shape = shapes(args.quick)[args.shape]
    with tmpfs_mounts(args.workdir, "6g") as (tmpfs_a, tmpfs_b, disk), \
            tempfile.TemporaryDirectory() as scratch:
        movers = [mover_file(spec, scratch) for spec in args.movers]
        src = os.path.join(disk if args.placement == "disk" else tmpfs_a, "src")
        dst = os.path.join(tmpfs_b, "dst")
        commands = {"mv": (["mv", src, dst], False)}
        for spec, path in zip(args.movers, movers, strict=True):
            commands[spec] = ([args.mover_python, *PYTHON_FLAGS, path, "move", "--verify",
                               args.verify, src, dst], True)
        names = list(commands)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for round_no in range(args.rounds):
            order = names[round_no % len(names):] + names[:round_no % len(names)]
            for name in order:
                remove_tree(src)
                remove_tree(dst)
                shape.build(src)
                os.sync()
                results[name].append(run_once(*commands[name]))
            print(f"round {round_no + 1}/{args.rounds}: " + ", ".join(
                f"{name} {results[name][-1]['wall']:.3f}s" for name in names), flush=True)
        remove_tree(src)
        remove_tree(dst)
    print(f"\n{shape.title}, {args.placement}, --verify {args.verify}, medians of {args.rounds}")
    columns = ["wall", "start-up", *PHASES]
    print(f"{'':<28}" + "".join(f"{c:>13}" for c in columns))
    for name in names:
        cells = []
        for column in columns:
            values = [r[column] for r in results[name] if column in r]
            cells.append(f"{statistics.median(values):>12.3f}s" if values else f"{'-':>13}")
        print(f"{name:<28}" + "".join(cells))
    # Round by round, each mover over mv and over the first mover: a machine that speeds up or
    # slows down during the run (other work on it) tilts these less than the medians above.
    print("\npaired (median of the per-round ratios of wall times)")
    for name in names[1:]:
        line = f"{name:<28}{paired(results, name, 'mv'):>8.3f} x mv"
        if name != names[1]:
            line += f"{paired(results, name, names[1]):>8.3f} x {names[1]}"
        print(line)
    return 0


def paired(results: dict[str, list[dict[str, float]]], name: str, base: str) -> float:
    return statistics.median(mine["wall"] / theirs["wall"]
                             for mine, theirs in zip(results[name], results[base], strict=True))


if __name__ == "__main__":
    sys.exit(main())
