#!/usr/bin/env python3
"""Where a mover's time goes, phase by phase, and two versions of it side by side with mv.

    sudo .venv/bin/python bench/phases.py [--shape small] [--verify none] [--placement cross]
                                          [--rounds 7] [--quick] MOVER [MOVER ...]

MOVER is a path to a mover script, or `git:REV` for remote/mover.py at a revision (`git:HEAD~1`).
Each mover starts as servermove starts it: the bootstrap with the mover on stdin, the bootstrap and
the loader (remote/loader.py, with its code cache) those of the revision (a path: the working
tree's). Each has a journal, and so a code cache, of its own, filled by one untimed run first.
Each round builds the shape fresh, syncs, and runs mv and every mover once, in an order that
rotates; the figures are medians over the rounds: the wall time (the process, start-up
included) and each phase, timed from the `ts` of the mover's own progress events. `start-up` is
the wall time before the first event: the interpreter starting and loading the mover.

bench.py is the verdict on the targets; this is for A/B tests of a change, on the same shapes and
mounts.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench import REPO, ext4_mounts, remove_tree, shapes, tmpfs_mounts
from tui.core.runner import BOOTSTRAP, PYTHON_FLAGS, program_input

PHASES = ("calculating", "copying", "verifying", "cleaning")


def git_show(rev: str, path: str) -> bytes | None:
    proc = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], capture_output=True)
    return proc.stdout if proc.returncode == 0 else None


def bootstrap_at(rev: str) -> str:
    """The BOOTSTRAP of tui/core/runner.py at `rev` (its assignments run alone)."""
    text = git_show(rev, "tui/core/runner.py")
    assert text is not None, f"no tui/core/runner.py at {rev}"
    wanted = [node for node in ast.parse(text).body if isinstance(node, ast.Assign)
              and isinstance(node.targets[0], ast.Name)
              and node.targets[0].id in ("TOO_OLD_EXIT", "BOOTSTRAP")]
    names: dict[str, object] = {}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), "runner", "exec"), names)
    return str(names["BOOTSTRAP"])


class Started:
    """A mover started as servermove starts it at one revision: its bootstrap, and its input."""

    def __init__(self, spec: str) -> None:
        if spec.startswith("git:"):
            rev = spec[4:]
            source = git_show(rev, "remote/mover.py")
            assert source is not None, f"no remote/mover.py at {rev}"
            self.source, self.loader = source, git_show(rev, "remote/loader.py")
            self.bootstrap = bootstrap_at(rev)
        else:
            self.source, self.bootstrap = Path(spec).read_bytes(), BOOTSTRAP
            self.loader = (REPO / "remote" / "loader.py").read_bytes()

    def command(self, python: str) -> list[str]:
        return [python, *PYTHON_FLAGS, "-c", self.bootstrap]

    def input(self, argv: list[str]) -> bytes:
        if self.loader is None:  # before the loader: the header line, then the mover
            header = json.dumps({"argv": argv, "size": len(self.source)}).encode()
            return header + b"\n" + self.source
        return program_input(argv, self.source, self.loader)


def run_once(command: list[str], is_mover: bool, stdin: bytes | None = None,
             env: dict[str, str] | None = None) -> dict[str, float]:
    started_wall = time.time()
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, input=stdin, env=env)
    timings = {"wall": time.monotonic() - started}
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)[:60]} failed ({proc.returncode}): "
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
    parser.add_argument("--placement", default="cross", choices=("cross", "disk", "disks"),
                        help="tmpfs to tmpfs, the root disk to tmpfs, or between two ext4 "
                        "images on the root disk")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workdir", default="/var/tmp")
    parser.add_argument("--mover-python", default="/usr/bin/python3")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: it mounts two tmpfs (run it with sudo)")
    shape = shapes(args.quick)[args.shape]
    with contextlib.ExitStack() as stack:
        tmpfs_a, tmpfs_b, disk = stack.enter_context(tmpfs_mounts(args.workdir, "6g"))
        if args.placement == "disks":
            tmpfs_a, tmpfs_b = stack.enter_context(ext4_mounts(args.workdir,
                                                               256 if args.quick else 3072))
        src = os.path.join(disk if args.placement == "disk" else tmpfs_a, "src")
        dst = os.path.join(tmpfs_b, "dst")
        commands = {"mv": (["mv", src, dst], False, None, None)}
        for number, spec in enumerate(args.movers):
            started = Started(spec)
            env = {**os.environ, "SERVERMOVE_JOURNAL_DIR": os.path.join(disk, f"journal{number}")}
            argv = ["move", "--verify", args.verify, src, dst]
            commands[spec] = (started.command(args.mover_python), True, started.input(argv), env)
            run_once(started.command(args.mover_python), False, started.input(["statfs", "/"]),
                     env)  # fills its code cache
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
    first, *others = names[1:]
    for name in others:  # round by round, so a machine that slows down tilts neither
        ratios = [b["wall"] / a["wall"] for a, b in zip(results[first], results[name],
                                                        strict=True)]
        print(f"{name} / {first}, wall, paired median: {statistics.median(ratios):.2f}")
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
