"""What a set of runs cost (finished or not: an unfinished run counts its work so far): run count, summed per-run wall time, first start, last end.

Usage: python scripts/run_cost.py RUN_DIR [RUN_DIR ...]   (or a parent dir holding run dirs)

A run's wall time is its last record's ``wall_time`` (the trainer's own clock, resumes included);
its end is results.jsonl's modification time and its start that minus its wall time. With one
1-thread worker per core the summed wall time bounds the CPU time from above (a shared core
stretches wall time, not CPU time).
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path


def runs(paths: list[str]) -> list[Path]:
    found = []
    for p in map(Path, paths):
        found += [p] if (p / "results.jsonl").exists() else sorted(q.parent for q in p.glob("*/results.jsonl"))
    return found


def last_wall_time(path: Path) -> float:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return float(json.loads(lines[-1])["wall_time"])


def main(argv: list[str]) -> int:
    dirs = runs(argv)
    if not dirs:
        print("run_cost: no results.jsonl under the given paths", file=sys.stderr)
        return 2
    walls = [last_wall_time(d / "results.jsonl") for d in dirs]
    ends = [(d / "results.jsonl").stat().st_mtime for d in dirs]
    stamp = lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{len(dirs)} runs; summed per-run wall time {sum(walls) / 3600:.2f} h "
          f"(per run {min(walls):.0f}-{max(walls):.0f} s); first start {stamp(min(e - w for e, w in zip(ends, walls)))}, "
          f"last end {stamp(max(ends))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
