"""Load every run under some directories into a DataFrame, one row per checkpoint record.

Only finished runs count: their ``done`` file exists and, for multi-stage methods, a checkpoint
of the final stage does (SPEC §8.1).  Nothing found in the tree makes the reader
fail: runs without ``done``, empty or unreadable results files, torn or corrupt lines, JSON lines
that are not records, other ``*.jsonl`` files and second copies of a run are counted in
``Skipped`` and reported under the tables.

Columns: run identity (``run``, ``name``, ``run_id``, ``dataset``, ``algorithm``, seeds,
``epochs``, ``steps``, ``checkpoint_freq``, ``hparams_per_trial``), ``sweep_selection`` (the comma-separated selection
methods the run's sweep files name, from ``.sweeps/*.json`` beside the run; "" for none), ``step``, ``epoch``, ``stage`` and
``num_stages`` (1 and 1 for records written before records named their stage), the grid ``cell`` (a hash of dataset,
resolved dataset args, algorithm, fixed hparam overrides, those three and the search), ``arg:<k>`` for
each resolved dataset argument and ``hp:<k>`` for each hparam override, and per split role
(``val``, ``oracle``, ``id``, ``ood``) the split name ``<role>_split`` and ``<role>_<field>``
for acc, wga, acc_gmean, acc_adj (NaN where the split or field is missing); ``id_group_acc`` /
``ood_group_acc`` keep the per-group accuracies (dicts) for heatmaps.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..cache import stable_hash
from ..errors import UserError
from ..training.records import DONE, RESULTS, SWEEPS, RunArgs

ROLES = ("val", "oracle", "id", "ood")
FIELDS = ("acc", "wga", "acc_gmean", "acc_adj")
GROUP_ROLES = ("id", "ood")
#: run arguments that set how long a run trains and how often it is evaluated (part of a cell)
LENGTH = ("epochs", "steps", "checkpoint_freq")


@dataclass
class Skipped:
    """What the reader left out, by kind; names are run directory names or file paths."""

    not_done: list[str] = field(default_factory=list)
    no_final_stage: list[str] = field(default_factory=list)  # done, yet no final-stage checkpoint
    unreadable: list[str] = field(default_factory=list)  # finished, but no record could be read
    duplicates: list[str] = field(default_factory=list)  # same arguments as a run already read
    foreign_files: list[str] = field(default_factory=list)  # *.jsonl files not named results.jsonl
    corrupt_lines: dict[str, int] = field(default_factory=dict)  # torn / not JSON, per run
    foreign_lines: dict[str, int] = field(default_factory=dict)  # JSON, but not a record, per run

    def summary(self) -> str:
        """One line, e.g. "skipped: 2 runs without done (a, b); 1 corrupt line (in c)"."""
        parts = [_count(self.not_done, "run", "without done"),
                 _count(self.no_final_stage, "multi-stage run", "without a final-stage checkpoint"),
                 _count(self.unreadable, "finished run", "with no readable record"),
                 _count(self.duplicates, "duplicate run", "(same arguments)"),
                 _count(self.foreign_files, "foreign file", "")]
        for lines, what in ((self.corrupt_lines, "corrupt line"), (self.foreign_lines, "foreign line")):
            total = sum(lines.values())
            if total:
                parts.append(f"{total} {what}{'s' * (total != 1)} (in {', '.join(sorted(lines))})")
        parts = [p for p in parts if p]
        return "skipped: " + ("; ".join(parts) if parts else "nothing")


def _count(names: list[str], noun: str, what: str) -> str:
    if not names:
        return ""
    words = [f"{len(names)} {noun}{'s' * (len(names) != 1)}", what, f"({', '.join(sorted(names))})"]
    return " ".join(w for w in words if w)


@dataclass
class Collection:
    records: pd.DataFrame
    skipped: Skipped


def read_runs(dirs: list[str | Path]) -> Collection:
    """Every record of every finished run under ``dirs`` (recursively), and what was skipped."""
    skipped = Skipped()
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    manifests: dict[Path, dict[str, list[str]]] = {}  # per output root: run dir → selection
    for path in find_jsonl(dirs):
        if path.name != RESULTS:
            skipped.foreign_files.append(str(path))
            continue
        run_dir = path.parent
        if not (run_dir / DONE).exists():
            skipped.not_done.append(run_dir.name)
            continue
        run_rows = read_run(path, skipped)
        if not run_rows:
            skipped.unreadable.append(run_dir.name)
        elif not any(r["stage"] == r["num_stages"] for r in run_rows):
            skipped.no_final_stage.append(run_dir.name)
        elif run_rows[0]["run_id"] in seen:
            skipped.duplicates.append(str(run_dir))
        else:
            seen.add(run_rows[0]["run_id"])
            if run_dir.parent not in manifests:
                manifests[run_dir.parent] = sweep_selections(run_dir.parent, skipped)
            named = ",".join(manifests[run_dir.parent].get(run_dir.name, []))
            rows.extend({**r, "sweep_selection": named} for r in run_rows)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values(["run", "step"], kind="stable").reset_index(drop=True)
    return Collection(frame, skipped)


def sweep_selections(root: Path, skipped: Skipped) -> dict[str, list[str]]:
    """Run dir name → the selection methods named by the sweeps that launched it in ``root``
    (in file order; a run in two sweeps gets both).  Unreadable manifests count as foreign."""
    named: dict[str, list[str]] = {}
    for path in sorted((root / SWEEPS).glob("*.json")):
        try:
            manifest = json.loads(path.read_text())
            runs, selection = list(manifest["runs"]), [str(s) for s in manifest["selection"]]
        except (OSError, ValueError, KeyError, TypeError):
            skipped.foreign_files.append(str(path))
            continue
        for name in map(str, runs):
            methods = named.setdefault(name, [])
            methods += [s for s in selection if s not in methods]
    return named


def find_jsonl(dirs: list[str | Path]) -> list[Path]:
    """Every ``*.jsonl`` file under the given directories, each once, in a stable order."""
    found: dict[Path, None] = {}
    for d in map(Path, dirs):
        if not d.is_dir():
            raise UserError(f"not a directory: {d}")
        for root, subdirs, files in os.walk(d):  # os.walk skips directories it cannot list
            subdirs.sort()
            for name in sorted(files):
                if name.endswith(".jsonl"):
                    found.setdefault((Path(root) / name).resolve(), None)
    return list(found)


def read_run(path: Path, skipped: Skipped) -> list[dict[str, Any]]:
    """The rows of one results.jsonl; bad lines are counted in ``skipped`` when others are good."""
    rows, corrupt, foreign = [], 0, 0
    try:
        with open(path, "rb") as f:
            lines = f.readlines()
    except OSError:
        return []
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError (binary data)
            corrupt += 1
            continue
        try:
            rows.append(record_row(rec, path.parent))
        except (KeyError, TypeError, ValueError, AttributeError):
            foreign += 1
    if rows:  # a file with no record at all is reported once, as unreadable
        name = path.parent.name
        if corrupt:
            skipped.corrupt_lines[name] = corrupt
        if foreign:
            skipped.foreign_lines[name] = foreign
    return rows


def record_row(rec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The flat row of one record; raises KeyError / TypeError on anything that is not one."""
    args = RunArgs(**rec["args"])
    ds, metrics = rec["dataset"], rec["metrics"]
    data_args = dict(ds.get("args") or args.dataset_args)
    length = {k: getattr(args, k) for k in LENGTH}
    row: dict[str, Any] = {
        "run": str(run_dir), "name": run_dir.name, "run_id": args.run_id(),
        "dataset": args.dataset, "algorithm": args.algorithm,
        "hparams_seed": args.hparams_seed, "trial_seed": args.trial_seed,
        "data_seed": args.data_seed, **length, "hparams_per_trial": args.hparams_per_trial,
        "cell": stable_hash([args.dataset, data_args, args.algorithm, args.hparams, length,
                             *(["per_trial"] if args.hparams_per_trial else [])]),
        "step": int(rec["step"]), "epoch": _number(rec.get("epoch")),
        "stage": int(rec.get("stage", 1)), "num_stages": int(rec.get("num_stages", 1)),
        "wall_time": _number(rec.get("wall_time")),
        "num_classes": int(ds["num_classes"]), "num_attributes": int(ds["num_attributes"]),
        "hparams": dict(rec.get("hparams") or {}),
    }
    row.update({f"arg:{k}": _scalar(v) for k, v in data_args.items()})
    row.update({f"hp:{k}": _scalar(v) for k, v in args.hparams.items()})
    for role in ROLES:
        split = role_split(ds, role)
        m = (metrics.get(split) or {}) if split else {}
        row[f"{role}_split"] = split
        row.update({f"{role}_{f}": _number(m.get(f)) for f in FIELDS})
        if role in GROUP_ROLES:
            row[f"{role}_group_acc"] = m.get("group_acc")
    return row


def role_split(dataset: dict[str, Any], role: str) -> str | None:
    """The split playing ``role``; the oracle falls back to the OOD/test split (DomainBed)."""
    if role == "oracle":
        return dataset.get("oracle_split") or dataset.get("ood_split")
    return dataset.get(f"{role}_split")


def _number(v: Any) -> float:
    return math.nan if v is None else float(v)


def _scalar(v: Any) -> Any:
    """Grid values must be hashable and comparable: lists and dicts become their JSON text."""
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v
