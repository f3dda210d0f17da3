"""Sweep files: a YAML file that stands for a list of runs (one ``RunArgs`` per job).

Layout (every key optional except ``datasets`` and ``algorithms``; an unknown key is an error)::

    selection: best_val_acc         # the paper's model selection (a name or a list; see collect)
    patience: 10                    # the paper's early stopping, in epochs, replayed by collect
    datasets:                       # a name, or a mapping with name / dataset_args / grid / hparams
      - name: mnist_cifar
        dataset_args: {mask_threshold: 0.5}
        grid: {n_backgrounds: [1, 2, 4]}      # grid over dataset arguments
        hparams: {lr: 0.005}                  # fixed hparams for this dataset
    algorithms:                     # a name, or a mapping with name / hparams / grid / n_hparams
      - ERM
      - {name: DL, grid: {dl_lambda: [0.75, 1.25]}}
    hparams: {batch_size: 64}       # fixed for every job
    grid: {lr: [0.001, 0.005]}      # grid over hparams for every job
    n_hparams: 1                    # random draws per point; hparams_seed 0 = the defaults
    hparams_per_trial: false        # true: DomainBed's search, each trial seed its own draws
    trial_seeds: [42, 8, 777]
    data_seeds: trial               # or a list; "trial" = data seed equals trial seed
    epochs: 10                      # or steps: 5001
    checkpoint_freq: 100
    resources: {partition: gpu, time: "2:00:00", gpus: 1, cpus: 4, mem: 16G, max_requeues: 100}

Fixed hparams merge global < dataset < algorithm; grid values override fixed ones (an
algorithm's grid over a global grid's name).  Expansion is the cartesian product in file order,
with duplicates (same run id) removed.  ``validate`` checks every name and value early, without
loading any data, so a typo fails before a thousand jobs are submitted.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from ..collect.methods import parse_methods
from ..errors import UserError
from ..training.records import RunArgs, positive_int


class _Loader(yaml.SafeLoader):
    """safe_load, plus YAML 1.2 floats: PyYAML reads ``5e-3`` (no dot) as a string otherwise."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                              list("-+0123456789."))


@dataclass(frozen=True)
class Resources:
    """What a SLURM job asks for; the CLI's flags override the sweep file's values."""

    partition: str | None = None
    time: int = 60  # minutes
    gpus: int = 0
    cpus: int = 1
    mem: str | None = None  # sbatch --mem syntax, e.g. 16G
    array_parallelism: int = 256
    signal_delay_s: int = 90  # USR2 this long before the time limit: checkpoint and requeue
    max_requeues: int = 100  # after time limits: submitit's max_num_timeout (its default: 3)
    sbatch: dict[str, Any] = field(default_factory=dict)  # extra #SBATCH options

    @classmethod
    def parse(cls, raw: Any, where: str) -> "Resources":
        raw = _mapping(raw, where)
        _check_keys(raw, {f for f in cls.__dataclass_fields__}, where)
        values = dict(raw)
        if "time" in values:
            values["time"] = parse_minutes(values["time"])
        if "mem" in values:
            values["mem"] = str(values["mem"])
        for key in ("cpus", "array_parallelism", "signal_delay_s"):
            if key in values:
                positive_int(values[key], f"{where}.{key}")
        for key in ("gpus", "max_requeues"):  # 0 allowed
            if key in values and values[key] != 0:
                positive_int(values[key], f"{where}.{key}")
        values["sbatch"] = _mapping(values.get("sbatch"), f"{where}.sbatch")
        return cls(**values)


def parse_minutes(value: Any) -> int:
    """Minutes from a number or sbatch's time syntax: MM[:SS], H:MM:SS or D-HH[:MM[:SS]]."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return math.ceil(value)
    text = str(value)
    days, _, rest = text.rpartition("-")
    parts = rest.split(":")
    if (days and not days.isdigit()) or len(parts) > 3 or not all(p.isdigit() for p in parts):
        raise UserError(f"resources.time: cannot read {value!r} (use minutes or D-HH:MM:SS)")
    nums = [int(p) for p in parts]
    if days or len(nums) == 3:  # D-HH[:MM[:SS]] or H:MM:SS
        hours, minutes, seconds = (nums + [0, 0])[:3]
    else:  # MM[:SS]
        hours, minutes, seconds = 0, nums[0], (nums + [0])[1]
    return max(1, math.ceil(int(days or 0) * 1440 + hours * 60 + minutes + seconds / 60))


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    dataset_args: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)

    def points(self) -> Iterator[dict[str, Any]]:
        for point in grid_points(self.grid):
            yield {**self.dataset_args, **point}


@dataclass(frozen=True)
class AlgorithmEntry:
    name: str
    hparams: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    n_hparams: int | None = None  # overrides the sweep's n_hparams for this algorithm


@dataclass(frozen=True)
class Sweep:
    name: str
    datasets: list[DatasetEntry]
    algorithms: list[AlgorithmEntry]
    hparams: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    n_hparams: int = 1
    trial_seeds: list[int] = field(default_factory=lambda: [0])
    data_seeds: list[int] | str = field(default_factory=lambda: [0])
    #: the ``RUN_KEYS`` the file sets (steps, epochs, ...): the same ``RunArgs`` field of every job
    run: dict[str, Any] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    selection: list[str] = field(default_factory=list)  # collect's methods for these runs
    patience: int | None = None  # collect's early-stopping replay (epochs) for these runs

    def seed_pairs(self) -> list[tuple[int, int]]:
        if self.data_seeds == "trial":
            return [(t, t) for t in self.trial_seeds]
        return list(itertools.product(self.trial_seeds, self.data_seeds))

    def count(self) -> int:
        """How many jobs ``runs`` expands to (before duplicates are dropped), without expanding."""
        seeds = len(self.trial_seeds) * (1 if self.data_seeds == "trial" else len(self.data_seeds))
        per_dataset = sum((self.n_hparams if alg.n_hparams is None else alg.n_hparams)
                          * grid_size({**self.grid, **alg.grid}) * seeds for alg in self.algorithms)
        return sum(grid_size(ds.grid) for ds in self.datasets) * per_dataset

    def runs(self) -> list[RunArgs]:
        """Every job: datasets × dataset grid × algorithms × hparam grid × draws × seeds."""
        out: dict[str, RunArgs] = {}
        for ds in self.datasets:
            for ds_args in ds.points():
                for alg in self.algorithms:
                    draws = self.n_hparams if alg.n_hparams is None else alg.n_hparams
                    for point in grid_points({**self.grid, **alg.grid}):
                        hparams = {**self.hparams, **ds.hparams, **alg.hparams, **point}
                        for hseed, (trial, data) in itertools.product(range(draws), self.seed_pairs()):
                            args = RunArgs(dataset=ds.name, algorithm=alg.name,
                                           dataset_args=dict(ds_args), hparams=dict(hparams),
                                           hparams_seed=hseed, trial_seed=trial, data_seed=data,
                                           **self.run)
                            out.setdefault(args.run_id(), args)
        return list(out.values())


def grid_size(grid: dict[str, list[Any]]) -> int:
    return math.prod(len(values) for values in grid.values())


def grid_points(grid: dict[str, list[Any]]) -> Iterator[dict[str, Any]]:
    names = list(grid)
    for values in itertools.product(*(grid[n] for n in names)):
        yield dict(zip(names, values))


# -- parsing ---------------------------------------------------------------------------------
#: ``RunArgs`` fields a sweep sets once for all its jobs, under the field's own name
RUN_KEYS = {f.name: f.metadata["run"] for f in dataclasses.fields(RunArgs) if f.metadata["run"].per_sweep}
TOP_KEYS = {"datasets", "algorithms", "hparams", "grid", "n_hparams", "trial_seeds", "data_seeds",
            "resources", "selection", "patience", *RUN_KEYS}
DATASET_KEYS = {"name", "dataset_args", "grid", "hparams"}
ALGORITHM_KEYS = {"name", "hparams", "grid", "n_hparams"}


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"sweep file {path} is a directory, not a YAML file")
    if not path.is_file():
        raise UserError(f"sweep file {path} not found")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a text (UTF-8) file: byte {exc.start} cannot be read") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {yaml_fault(exc)}") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        return parse_sweep(raw, path.stem)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def yaml_fault(exc: yaml.YAMLError) -> str:
    """PyYAML's problem and where it is, in one line ("mapping values are not allowed here
    (line 3, column 9)")."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"


def parse_sweep(raw: Any, name: str) -> Sweep:
    raw = _mapping(raw, "the sweep")
    _check_keys(raw, TOP_KEYS, "the sweep")
    for key in ("datasets", "algorithms"):
        if not raw.get(key):
            raise UserError(f"the sweep needs a non-empty {key!r} list")
    data_seeds = raw.get("data_seeds", [0])
    if data_seeds != "trial":
        data_seeds = _int_list(data_seeds, "data_seeds")
    return Sweep(
        name=name,
        datasets=[_dataset_entry(e, i) for i, e in enumerate(_list(raw["datasets"], "datasets"))],
        algorithms=[_algorithm_entry(e, i) for i, e in enumerate(_list(raw["algorithms"], "algorithms"))],
        hparams=_mapping(raw.get("hparams"), "hparams"),
        grid=_grid(raw.get("grid"), "grid"),
        n_hparams=positive_int(raw.get("n_hparams", 1), "n_hparams"),
        trial_seeds=_int_list(raw.get("trial_seeds", [0]), "trial_seeds"),
        data_seeds=data_seeds,
        run=_run_keys(raw),
        resources=Resources.parse(raw.get("resources"), "resources"),
        selection=_selection(raw.get("selection")),
        patience=_optional(raw, "patience", positive_int),
    )


def _run_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """The ``RUN_KEYS`` the file gives (null = not given), each checked by its field's own check,
    and at most one of each ``exclusive`` set (steps or epochs)."""
    given = {key: raw[key] for key in RUN_KEYS if raw.get(key) is not None}
    for key, value in given.items():
        if RUN_KEYS[key].check is not None:
            RUN_KEYS[key].check(value, key)
    exclusive: dict[str, list[str]] = {}
    for key in given:
        if RUN_KEYS[key].exclusive is not None:
            exclusive.setdefault(RUN_KEYS[key].exclusive, []).append(key)
    for keys in exclusive.values():
        if len(keys) > 1:
            raise UserError(f"give {' or '.join(keys)}, not both")
    return given


def _selection(raw: Any) -> list[str]:
    """Selection method names (a comma-separated string or a list), each one collect knows."""
    if raw is None:
        return []
    names = raw if isinstance(raw, list) else [raw]
    if not names or not all(isinstance(n, str) for n in names):
        raise UserError(f"selection must be a method name or a list of them, got {raw!r}")
    try:
        return [m.name for m in parse_methods(",".join(names))]
    except UserError as exc:
        raise UserError(f"selection: {exc}") from None


def _entry(raw: Any, keys: set[str], where: str) -> dict[str, Any]:
    if isinstance(raw, str):
        return {"name": raw}
    raw = _mapping(raw, where)
    _check_keys(raw, keys, where)
    if not isinstance(raw.get("name"), str):
        raise UserError(f"{where} needs a 'name'")
    return raw


def _dataset_entry(raw: Any, i: int) -> DatasetEntry:
    where = f"datasets[{i}]"
    e = _entry(raw, DATASET_KEYS, where)
    return DatasetEntry(e["name"], _mapping(e.get("dataset_args"), f"{where}.dataset_args"),
                        _grid(e.get("grid"), f"{where}.grid"), _mapping(e.get("hparams"), f"{where}.hparams"))


def _algorithm_entry(raw: Any, i: int) -> AlgorithmEntry:
    where = f"algorithms[{i}]"
    e = _entry(raw, ALGORITHM_KEYS, where)
    n = None if e.get("n_hparams") is None else positive_int(e["n_hparams"], f"{where}.n_hparams")
    return AlgorithmEntry(e["name"], _mapping(e.get("hparams"), f"{where}.hparams"),
                          _grid(e.get("grid"), f"{where}.grid"), n)


def _check_keys(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in raw:
        if key not in allowed:
            raise UserError(f"unknown key {key!r} in {where}; known: {', '.join(sorted(allowed))}")


def _mapping(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a mapping, got {raw!r}")
    return dict(raw)


def _list(raw: Any, where: str) -> list[Any]:
    if not isinstance(raw, list):
        raise UserError(f"{where} must be a list, got {raw!r}")
    return raw


def _grid(raw: Any, where: str) -> dict[str, list[Any]]:
    grid = _mapping(raw, where)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}.{key} must be a non-empty list of values, got {values!r}")
    return grid


def _optional(raw: dict[str, Any], key: str, check: Callable[[Any, str], Any]) -> Any:
    return None if raw.get(key) is None else check(raw[key], key)


def _int_list(raw: Any, where: str) -> list[int]:
    values = _list(raw, where)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise UserError(f"{where} must be a non-empty list of integers, got {raw!r}")
    return values


# -- validation ------------------------------------------------------------------------------
def validate(runs: list[RunArgs]) -> None:
    """Names, dataset args, hparam names/types/values and label requirements, without data:
    ``trainer.check_run`` (what ``train`` checks first) once per distinct configuration."""
    from ..training.trainer import check_run

    seen: set[str] = set()
    for args in runs:
        key = repr((args.dataset, sorted(args.dataset_args.items()), args.algorithm,
                    sorted(args.hparams.items())))
        if key in seen:
            continue
        seen.add(key)
        try:
            check_run(args)
        except UserError as exc:
            raise UserError(f"{args.algorithm} on {args.dataset}: {exc}") from None
