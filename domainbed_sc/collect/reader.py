"""Load every run under some directories into a DataFrame, one row per checkpoint record.

Only finished runs count: their ``done`` file exists and, for multi-stage methods, a checkpoint
of the final stage does (docs/METHODS.md §P.4).  Nothing found in the tree makes the reader fail:
runs without ``done``, finished runs without (readable) results, torn or corrupt lines, JSON lines
that are not records, records of another run (args hash unlike the run's), repeated steps, other
``*.jsonl`` files and second copies of a run are counted in ``Skipped`` and reported under the
tables.  Runs with a ``diverged`` marker (the trainer stopped them on a non-finite loss) are
listed, with the step, and left out of the tables.  Metrics written as ``null`` (strict JSON for
NaN) read as NaN.

Columns: run identity (``run``, ``name``, ``run_id``, ``dataset``, ``algorithm``, seeds,
``epochs``, ``steps``, ``checkpoint_freq``, ``hparams_per_trial``), ``sweep_selection`` (the comma-separated selection
methods the run's sweep files name, from ``.sweeps/*.json`` beside the run; "" for none), ``step``, ``epoch``, ``stage`` and
``num_stages`` (1 and 1 for records written before records named their stage), the grid ``cell`` (a hash of dataset,
resolved dataset args, algorithm, fixed hparam overrides, those three and the search), ``arg:<k>`` for
each resolved dataset argument and ``hp:<k>`` for each hparam override, and per split role
(``val``, ``oracle``, ``id``, ``ood``) the split name ``<role>_split`` and ``<role>_<field>``
for each registered metric (``domainbed_sc.metrics``; NaN where the split or field is missing,
as in records written before a metric was registered); ``id_group_acc`` /
``ood_group_acc`` keep the per-group accuracies (dicts) for heatmaps.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..cache import stable_hash
from ..errors import UserError
from ..metrics import METRICS
from ..training.records import CONFIG, DONE, RESULTS, SWEEPS, RunArgs, decode_config

ROLES = ("val", "oracle", "id", "ood")
GROUP_ROLES = ("id", "ood")
#: run arguments that set how long a run trains and how often it is evaluated (part of a cell)
LENGTH = ("epochs", "steps", "checkpoint_freq")
#: the trainer's marker of a run stopped on a non-finite loss (JSON {"step": ..., "losses": ...})
DIVERGED = "diverged"
_DIR_HASH = re.compile(r"-([0-9a-f]{16})$")  # RunArgs.dir_name(): <readable>-<run_id>


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
    foreign_records: dict[str, int] = field(default_factory=dict)  # another run's args, per run
    repeated_steps: dict[str, int] = field(default_factory=dict)  # a step's second record, per run
    diverged: list[str] = field(default_factory=list)  # "<run dir> (step N)"

    def summary(self) -> str:
        """One line, e.g. "skipped: 2 runs without done (a, b); 1 corrupt line (in c)", then
        "; diverged: 1 run (d (step 40))" where runs diverged."""
        parts = [_count(self.not_done, "run", "without done"),
                 _count(self.no_final_stage, "multi-stage run", "without a final-stage checkpoint"),
                 _count(self.unreadable, "finished run", "with no readable record"),
                 _count(self.duplicates, "duplicate run", "(same arguments)"),
                 _count(self.foreign_files, "foreign file", "")]
        for lines, one, many in ((self.corrupt_lines, "corrupt line", "corrupt lines"),
                                 (self.foreign_lines, "foreign line", "foreign lines"),
                                 (self.foreign_records, "record of another run", "records of another run"),
                                 (self.repeated_steps, "repeated step", "repeated steps")):
            total = sum(lines.values())
            if total:
                parts.append(f"{total} {one if total == 1 else many} (in {', '.join(sorted(lines))})")
        parts = [p for p in parts if p]
        text = "skipped: " + ("; ".join(parts) if parts else "nothing")
        if self.diverged:
            text += f"; diverged (not in the tables): {_count(self.diverged, 'run', '')}"
        return text


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
    manifests: dict[Path, dict[str, Named]] = {}  # per output root: run dir → selection
    files, marked = scan(dirs)
    for run_dir in marked:
        if (run_dir / DIVERGED).exists():
            skipped.diverged.append(f"{run_dir}{diverged_at(run_dir / DIVERGED)}")
        elif not (run_dir / RESULTS).exists():
            skipped.unreadable.append(run_dir.name)  # done, but results.jsonl is gone
    for path in files:
        if path.name != RESULTS:
            skipped.foreign_files.append(str(path))
            continue
        run_dir = path.parent
        if (run_dir / DIVERGED).exists():
            continue  # listed above
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
            named = manifests[run_dir.parent].get(run_dir.name, Named())
            rows.extend({**r, "sweep_selection": ",".join(named.methods),
                         "sweep_patience": named.patience} for r in run_rows)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values(["run", "step"], kind="stable").reset_index(drop=True)
    return Collection(frame, skipped)


@dataclass
class Named:
    """What the sweep files that launched a run name for its selection."""

    methods: list[str] = field(default_factory=list)
    patience: float = float("nan")  # early-stopping patience in epochs; NaN: none


def sweep_selections(root: Path, skipped: Skipped) -> dict[str, Named]:
    """Run dir name → the selection methods (and patience) named by the sweeps that launched it in
    ``root`` (in file order; a run in two sweeps gets both).  Unreadable manifests count as foreign."""
    named: dict[str, Named] = {}
    for path in sorted((root / SWEEPS).glob("*.json")):
        try:
            manifest = json.loads(path.read_text())
            runs, selection = list(manifest["runs"]), [str(s) for s in manifest["selection"]]
            patience = float(manifest.get("patience") or "nan")
        except (OSError, ValueError, KeyError, TypeError):
            skipped.foreign_files.append(str(path))
            continue
        for name in map(str, runs):
            entry = named.setdefault(name, Named())
            entry.methods += [s for s in selection if s not in entry.methods]
            if patience == patience:
                entry.patience = patience
    return named


def diverged_at(marker: Path) -> str:
    """" (step N)" from a diverged marker; "" where it cannot be read."""
    try:
        return f" (step {int(json.loads(marker.read_bytes())['step'])})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def scan(dirs: list[str | Path]) -> tuple[list[Path], list[Path]]:
    """Every ``*.jsonl`` file under the given directories, and every directory holding a
    ``done`` or ``diverged`` marker, each once, in a stable order."""
    found: dict[Path, None] = {}
    marked: dict[Path, None] = {}
    for d in map(Path, dirs):
        if not d.is_dir():
            raise UserError(f"not a directory: {d}")
        for root, subdirs, files in os.walk(d):  # os.walk skips directories it cannot list
            subdirs.sort()
            if DONE in files or DIVERGED in files:
                marked.setdefault(Path(root).resolve(), None)
            for name in sorted(files):
                if name.endswith(".jsonl"):
                    found.setdefault((Path(root) / name).resolve(), None)
    return list(found), list(marked)


def read_run(path: Path, skipped: Skipped) -> list[dict[str, Any]]:
    """The rows of one results.jsonl; bad lines are counted in ``skipped`` when others are good.
    Records of another run (their args hash is neither the directory's nor most records') and
    a step's second record are left out and counted."""
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
    rows, others, repeated = own_rows(rows, path.parent.name)
    if rows:  # a file with no record at all is reported once, as unreadable
        name = path.parent.name
        for counts, n in ((skipped.corrupt_lines, corrupt), (skipped.foreign_lines, foreign),
                          (skipped.foreign_records, others), (skipped.repeated_steps, repeated)):
            if n:
                counts[name] = n
    return rows


def own_rows(rows: list[dict[str, Any]], dir_name: str) -> tuple[list[dict[str, Any]], int, int]:
    """(the run's own rows, each step once; how many were another run's; how many repeated a
    step).  The run is the one the directory name's hash names, else the most common one."""
    if not rows:
        return rows, 0, 0
    ids = Counter(r["run_id"] for r in rows)
    named = _DIR_HASH.search(dir_name)
    own = named.group(1) if named and named.group(1) in ids else ids.most_common(1)[0][0]
    kept, steps = [], set()
    for r in rows:
        if r["run_id"] == own and r["step"] not in steps:
            steps.add(r["step"])
            kept.append(r)
    others = len(rows) - ids[own]
    return kept, others, ids[own] - len(kept)


def record_row(rec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The flat row of one record; raises KeyError / TypeError on anything that is not one."""
    # an infinite hparam (RCL's m = inf) is stored encoded; its column and hash want the float
    rec = {k: decode_config(v) if k in CONFIG else v for k, v in rec.items()}
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
        row.update({f"{role}_{f}": _number(m.get(f)) for f in METRICS})
        if role in GROUP_ROLES:  # null accuracies (strict JSON NaN) dropped: no such group
            groups = m.get("group_acc")
            row[f"{role}_group_acc"] = None if groups is None else \
                {g: float(a) for g, a in groups.items() if a is not None}
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
