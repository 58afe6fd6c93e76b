"""The benchmark runs end to end (tiny shapes, one round): every tool on every shape, checked.

A benchmark is not a test: no timing thresholds here, only that it works and its JSON is whole.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench import PLAN, rounds_for, shapes  # noqa: E402


def test_quick_bench_measures_every_tool_on_every_shape(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench.py"), "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["interrupted"] is False
    rows = {(r["placement"], r["shape"], r["tool"]): r for r in result["results"]}
    expected = {(p, s, t) for p, s, tools in PLAN for t in tools}
    assert set(rows) == expected
    for key, row in rows.items():
        assert row["ok_runs"] == row["runs"] == 1, (key, row["problems"])
        assert row["problems"] == [], key
        assert row["median_s"] > 0, key
        assert row["ratio_to_mv"] > 0 and row["paired_ratio_to_mv"] > 0, key
        if key[2].startswith("mover"):
            # hello, plan, a progress line per phase at least, complete
            assert row["events_median"] >= 3, key
            assert row["max_rss_kib"] > 0, key
        if key[2] == "mover metered":
            assert row["reporting_cpu_pct"] > 0, key  # the reporter ran and was metered
    assert all(n > 0 for n in result["shape_entries"].values())
    assert result["parse_rate"]["parse_and_model_per_s"] > 0
    machine = result["machine"]
    assert machine["cores"] and machine["kernel"] and machine["rsync"]
    assert {t["target"] for t in result["targets"]}  # every target is evaluated
    assert "servermove bench" in proc.stdout


@pytest.mark.parametrize(("shape", "placement"), [("small", "cross"), ("one-file", "disks")])
def test_phases_compares_two_movers_phase_by_phase(shape: str, placement: str) -> None:
    """bench/phases.py, the A/B tool: the mover at HEAD (from git) against the working tree's,
    with mv, on a tiny shape; every phase of a copy is timed for both (between two tmpfs, and
    between two loop-mounted ext4 images)."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "phases.py"), "--quick",
                           "--rounds", "2", "--shape", shape, "--placement", placement,
                           "--verify", "size", "git:HEAD", str(REPO / "remote" / "mover.py")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    table, paired = proc.stdout.split("medians of 2\n", 1)[1].split("\n\n", 1)
    table = table.splitlines()
    header, rows = table[0].split(), {line.split()[0]: line.split()[1:] for line in table[1:]}
    assert header == ["wall", "start-up", "calculating", "copying", "verifying", "cleaning"]
    assert set(rows) == {"mv", "git:HEAD", str(REPO / "remote" / "mover.py")}
    assert rows["mv"][0].endswith("s") and rows["mv"][1:] == ["-"] * 5
    for mover in ("git:HEAD", str(REPO / "remote" / "mover.py")):
        assert all(cell.endswith("s") and float(cell[:-1]) >= 0 for cell in rows[mover]), rows
    # Round by round ratios: each mover over mv, the second also over the first.
    ratios = {line.split()[0]: line.split()[1:] for line in paired.splitlines()[1:]}
    assert ratios["git:HEAD"][1:] == ["x", "mv"], ratios
    mine = ratios[str(REPO / "remote" / "mover.py")]
    assert mine[1:3] == ["x", "mv"] and mine[4:] == ["x", "git:HEAD"], ratios
    assert float(ratios["git:HEAD"][0]) > 0 and float(mine[0]) > 0 and float(mine[3]) > 0


def test_rounds_are_capped_for_the_slowest_shape_and_raised_for_the_cheap_ones() -> None:
    full, quick = shapes(False), shapes(True)
    assert rounds_for(full["big"], 7) == 7
    assert rounds_for(full["empty-1m"], 7) == 3
    assert [rounds_for(full[name], 7) for name in ("small", "mixed", "empty-10k")] == [15] * 3
    assert rounds_for(full["small"], 20) == 20
    assert all(rounds_for(shape, 1) == 1 for shape in quick.values())
