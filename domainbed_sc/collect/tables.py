"""Aggregation over runs, and the tables in Markdown, LaTeX or CSV.

Per selection method: one table per dataset (rows: algorithm × the grid values that differ
between its cells, such as N or λ; columns: the dataset's evaluation metrics, n runs, dead runs)
and one summary table per summary metric (rows: algorithm × hparam grid; columns: dataset ×
dataset-args grid).  Cells are mean ± std over the runs, or the 95% t interval, in percent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
from tabulate import tabulate

from ..metrics import Column, columns
from ..registry import parse_names
from .methods import Method
from .reader import LENGTH
from .selection import Selected
from .stats import summarize

#: run arguments that are part of a cell besides its dataset args and hparam overrides
GRID_RUN_ARGS = (*LENGTH, "hparams_per_trial")
#: docs/METHODS.md §P.3 (Cazacu 2026): a run is dead when its ID accuracy (at the selected
#: checkpoint) is below 20 %
DEAD_ACC = 0.2


def parse_metrics(text: str) -> list[Column]:
    """The table columns named, of those the registered metrics offer (``domainbed_sc.metrics``)."""
    return parse_names(text, columns(), "metric")


# -- aggregation ------------------------------------------------------------------------------
def identity(row: pd.Series) -> dict[str, Any]:
    """The columns that name a grid cell (and the splits, for the definitions)."""
    keys = [k for k in row.index if k.startswith(("arg:", "hp:"))]
    names = ["dataset", "algorithm", "cell", *GRID_RUN_ARGS, "val_split", "id_split", "ood_split",
             "num_stages", *keys]
    return {k: row[k] for k in names}


def aggregate(selected: Selected, metrics: list[Column], exclude_dead: bool) -> pd.DataFrame:
    """One row per grid cell: its identity, the chosen draw, n, dead, and per metric
    ``<key>_mean``, ``_std``, ``_ci95`` (half-width), ``_n`` in percent; ``fallback``: the runs
    whose checkpoint is the method's second choice; ``note`` for cells the method does not apply
    to."""
    rows = []
    for _, runs in selected.runs.groupby("cell", sort=False):
        dead = runs["id_acc"] < DEAD_ACC  # NaN (no ID split) is never dead
        kept = runs[~dead] if exclude_dead else runs
        row = {**identity(runs.iloc[0]), "hparams_seed": chosen_draws(runs),
               "draws": runs["draws"].max(), "n": len(kept),
               "dead": int(dead.sum()) if runs["id_acc"].notna().any() else math.nan,
               "fallback": int(runs["fallback"].sum()), "note": ""}
        for m in metrics:
            s = summarize(kept[m.column] * 100)
            row.update({f"{m.key}_mean": s.mean, f"{m.key}_std": s.std,
                        f"{m.key}_ci95": s.ci95, f"{m.key}_n": s.n})
        rows.append(row)
    for na in selected.not_applicable:
        rows.append({**identity(na.cell), "note": f"not applicable: {na.reason}"})
    table = pd.DataFrame(rows)
    for col in ["hparams_seed", "draws", "n", "dead", "fallback", *stat_columns(metrics)]:
        if col not in table:  # every cell not applicable
            table[col] = math.nan
    order = sorted(range(len(table)), key=lambda i: sort_key(table.iloc[i]))
    return table.iloc[order].reset_index(drop=True)


def chosen_draws(runs: pd.DataFrame) -> Any:
    """The cell's hparams_seed, or per-trial cells' seeds by trial seed ("3/7/12") if they differ."""
    seeds = runs.sort_values("trial_seed").drop_duplicates("trial_seed")["hparams_seed"]
    return seeds.iloc[0] if seeds.nunique() == 1 else "/".join(str(int(h)) for h in seeds)


def stat_columns(metrics: list[Column]) -> list[str]:
    return [f"{m.key}_{s}" for m in metrics for s in ("mean", "std", "ci95", "n")]


def sort_key(row: pd.Series) -> tuple:
    """Dataset, then dataset args (e.g. N), then algorithm, then hparam overrides."""
    args = [k for k in row.index if k.startswith("arg:")]
    hps = [k for k in row.index if k.startswith("hp:")]
    return tuple(_order(row[k]) for k in ["dataset", *args, "algorithm", *hps, *GRID_RUN_ARGS])


def _order(v: Any) -> tuple:
    if _missing(v):
        return (0, 0.0, "")
    if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
        return (1, float(v), "")
    return (2, 0.0, str(v))


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


# -- cell text --------------------------------------------------------------------------------
def value_text(v: Any) -> str:
    if _missing(v):
        return "–"
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def stat_text(row: pd.Series, key: str, ci: bool) -> str:
    """"93.2 ± 1.4" or "93.2 [90.1, 96.3]"; "(n=k)" when fewer runs have the metric than the row."""
    n = row.get(f"{key}_n")
    if _missing(n) or n == 0:
        return "n/a"
    mean, std, half = row[f"{key}_mean"], row[f"{key}_std"], row[f"{key}_ci95"]
    if n == 1:
        text = f"{mean:.1f}"
    elif ci:  # accuracies: the t interval clipped to [0, 100] (said under the table)
        text = f"{mean:.1f} [{max(mean - half, 0.0):.1f}, {min(mean + half, 100.0):.1f}]"
    else:
        text = f"{mean:.1f} ± {std:.1f}"
    return text + (f" (n={int(n)})" if n != row["n"] else "")


def grid_columns(table: pd.DataFrame, prefixes: tuple[str, ...] = ("arg:", "hp:")) -> list[str]:
    """The grid columns (and training lengths) whose values differ between the table's rows."""
    cols = [c for c in table.columns if c.startswith(prefixes)] + list(GRID_RUN_ARGS)
    return [c for c in cols if c in table and table[c].astype(str).nunique(dropna=False) > 1]


def grid_label(row: pd.Series, cols: list[str]) -> str:
    return ", ".join(f"{c.split(':')[-1]}={value_text(row[c])}" for c in cols if not _missing(row[c]))


# -- tables -----------------------------------------------------------------------------------
@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


def dataset_table(agg: pd.DataFrame, metrics: list[Column], ci: bool) -> tuple[Table, list[Column]]:
    """The table of one dataset's cells, and the metrics it shows (those the dataset has)."""
    grid = grid_columns(agg)
    shown = [m for m in metrics if agg[f"{m.key}_n"].fillna(0).sum() > 0]
    with_seed = bool(agg["draws"].fillna(1).max() > 1)
    with_dead = bool(agg["dead"].notna().any())
    headers = ["algorithm", *(c.split(":")[-1] for c in grid), *(m.label for m in shown), "n",
               *(["dead"] if with_dead else []), *(["hparams_seed"] if with_seed else [])]
    rows = []
    for _, r in agg.iterrows():
        cells = [r["algorithm"], *(value_text(r[c]) for c in grid)]
        if r["note"]:
            cells += ["n/a"] * (len(headers) - len(cells))
        else:
            cells += [stat_text(r, m.key, ci) for m in shown] + [str(int(r["n"]))]
            cells += [value_text(r["dead"])] * with_dead + [value_text(r["hparams_seed"])] * with_seed
        rows.append(cells)
    return Table(headers, rows), shown


def summary_table(agg: pd.DataFrame, metric: Column, ci: bool) -> Table | None:
    """Rows: algorithm × hparam grid; columns: dataset × its dataset-args grid (None if empty)."""
    ok = agg[agg[f"{metric.key}_n"].fillna(0) > 0]
    if ok.empty:
        return None
    row_cols = grid_columns(ok, ("hp:",))
    col_label = {}
    for _, part in ok.groupby("dataset", sort=False):
        args = grid_columns(part, ("arg:",))
        for i, r in part.iterrows():
            col_label[i] = " ".join(filter(None, [r["dataset"], grid_label(r, args)]))
    cells: dict[str, dict[str, str]] = {}
    for i, r in ok.iterrows():
        label = " ".join(filter(None, [r["algorithm"], grid_label(r, row_cols)]))
        cells.setdefault(label, {})[col_label[i]] = stat_text(r, metric.key, ci)
    columns = list(dict.fromkeys(col_label[i] for i in ok.index))
    rows = [[label, *(row.get(c, "–") for c in columns)] for label, row in cells.items()]
    return Table(["algorithm", *columns], rows)


@dataclass
class Notes:
    """The text under a document's tables: under each, which metric on which split each column
    is; each metric's definition and what the cells hold only under the first table that needs
    them, so a document defines everything once."""

    cells: str  # cells_doc, until printed
    defined: set = field(default_factory=set)  # the metric classes already defined

    def under(self, agg: pd.DataFrame, shown: list[Column]) -> str:
        new = [m for m in dict.fromkeys(c.metric for c in shown) if m not in self.defined]
        self.defined.update(new)
        docs = ["Columns: " + "; ".join(metric_doc(agg, c) for c in shown) + "."] if shown else []
        docs += [m.describe() for m in new] + [self.cells]
        self.cells = ""
        return " ".join(filter(None, docs))


def metric_doc(agg: pd.DataFrame, m: Column) -> str:
    """"WGA = WGA on test": the split each cell of the metric comes from; where the rows' splits
    differ (datasets, dataset args), each split with the rows that use it."""
    rows = agg[agg[f"{m.key}_n"].fillna(0) > 0]
    short = m.metric.short()
    names = rows[f"{m.role}_split"].fillna(m.role).astype(str)
    if names.nunique() <= 1:
        return f"{m.label} = {short} on {names.iloc[0] if len(names) else m.role}"
    cols = grid_columns(rows, ("dataset", "arg:"))
    labels = [grid_label(r, cols) for _, r in rows.iterrows()]
    where = {name: "; ".join(dict.fromkeys(l for l, n in zip(labels, names) if n == name))
             for name in names.unique()}
    return f"{m.label} = {short} on " + ", ".join(f"{k} ({v})" for k, v in where.items())


def cells_doc(ci: bool, exclude_dead: bool) -> str:
    stat = "mean [95% CI, Student t, clipped to [0, 100]]" if ci else "mean ± std"
    dead = "excluded from" if exclude_dead else "included in"
    return (f"Cells: {stat} over the n runs (trial seeds) of the selected hyperparameters, in %. "
            f"dead: runs whose ID acc is below {DEAD_ACC:.0%} at the selected checkpoint "
            f"({dead} the cells).")


# -- documents --------------------------------------------------------------------------------
@dataclass
class Format:
    """How one output format writes headings, tables and paragraphs."""

    heading: Callable[[int, str], str]
    table: Callable[[Table], str]
    text: Callable[[str], str]


def latex_escape(text: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
            "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}
    return "".join(repl.get(c, c) for c in text)


MARKDOWN = Format(
    heading=lambda level, text: f"{'#' * level} {text}",
    table=lambda t: tabulate(t.rows, t.headers, tablefmt="github", disable_numparse=True),
    text=lambda text: text,
)
LATEX = Format(  # needs \usepackage{booktabs}; "±" and "–" are UTF-8 (LaTeX >= 2018)
    heading=lambda level, text: f"\\{'sub' * (level - 1)}section*{{{latex_escape(text)}}}",
    table=lambda t: ("\\begin{center}\n" + tabulate(t.rows, t.headers, tablefmt="latex_booktabs",
                                                    disable_numparse=True) + "\n\\end{center}"),
    text=latex_escape,
)


@dataclass
class Section:
    """One selection method's results: its aggregate over all datasets."""

    selected: Selected
    agg: pd.DataFrame


def render(sections: list[Section], fmt: Format, metrics: list[Column],
           summary_metrics: list[Column], ci: bool, exclude_dead: bool, footer: str) -> str:
    blocks, notes = [], Notes(cells_doc(ci, exclude_dead))
    for sec in sections:
        method = sec.selected.method
        blocks += [fmt.heading(1, f"Selection: {method.name} — {method.label}"),
                   fmt.text(sec.selected.describe())]
        if sec.agg.empty:
            blocks.append(fmt.text("No runs."))
            continue
        for dataset, agg in sec.agg.groupby("dataset", sort=False):
            blocks += dataset_blocks(str(dataset), agg, fmt, metrics, ci, notes)
            blocks += remarks(agg, method, fmt)
        for metric in summary_metrics:
            table = summary_table(sec.agg, metric, ci)
            if table is not None and len(table.headers) > 2:  # one column repeats the table above
                blocks += [fmt.heading(2, f"Summary: {metric.label}"), fmt.table(table),
                           fmt.text(notes.under(sec.agg, [metric]))]
    blocks.append(fmt.text(footer))
    return "\n\n".join(blocks) + "\n"


def dataset_blocks(dataset: str, agg: pd.DataFrame, fmt: Format, metrics: list[Column],
                   ci: bool, notes: Notes) -> list[str]:
    blocks = [fmt.heading(2, dataset)]
    na = sorted(set(agg["note"]) - {""})
    if (agg["note"] != "").all():
        return blocks + [fmt.text(f"{'; '.join(na)} ({dataset}).")]
    table, shown = dataset_table(agg, metrics, ci)
    docs = [notes.under(agg, shown)]
    if na:
        docs.append("n/a rows: " + "; ".join(na) + ".")
    return blocks + [fmt.table(table), fmt.text(" ".join(filter(None, docs)))]


def remarks(agg: pd.DataFrame, method: Method, fmt: Format) -> list[str]:
    """Lines under a dataset's table: which checkpoints multi-stage methods were selected from,
    and the runs where the method fell back to its second choice."""
    lines = search_lines(agg)
    multi = sorted(set(agg.loc[agg["num_stages"].fillna(1) > 1, "algorithm"]))
    if multi:
        lines.append(f"Multi-stage methods ({', '.join(multi)}): only checkpoints of their final "
                     f"stage, the model the method reports, were candidates "
                     f"(docs/METHODS.md §P.4).")
    fell = agg[agg["fallback"].fillna(0) > 0]
    if not fell.empty:
        counts = ", ".join(f"{r['algorithm']}: {int(r['fallback'])}" for _, r in fell.iterrows())
        lines.append(f"Runs that {method.fallback_doc} ({counts}).")
    return [fmt.text(" ".join(lines))] if lines else []


def search_lines(agg: pd.DataFrame) -> list[str]:
    """Which hyperparameter search the rows used, where any used DomainBed's per-trial one."""
    per_trial = agg["hparams_per_trial"].fillna(False).astype(bool)
    if not per_trial.any():
        return []  # the shared search alone: the selection's description says it
    mixed = not per_trial.all()
    return [f"Hyperparameter search{' (hparams_per_trial=True rows)' if mixed else ''}: per trial "
            "seed, as DomainBed's: each trial seed drew its own hyperparameters and kept the draw "
            "best by its own score; hparams_seed gives each trial seed's choice (in trial-seed "
            "order) where they differ, and each cell summarizes the runs the trial seeds "
            "selected."] + (["Other rows: the shared search (one draw for all trial seeds, "
                                 "chosen by its score averaged over them)."] if mixed else [])


def render_csv(sections: list[Section], metrics: list[Column]) -> str:
    """One tidy row per (selection, grid cell), numbers in percent at full precision."""
    frames = [sec.agg.assign(selection=sec.selected.method.name)
              for sec in sections if not sec.agg.empty]
    if not frames:
        return ""
    table = pd.concat(frames, ignore_index=True)
    grid = [c for c in table.columns if c.startswith(("arg:", "hp:"))]
    cols = ["selection", "dataset", "algorithm", *grid, *GRID_RUN_ARGS, "hparams_seed", "draws",
            "n", "dead", *stat_columns(metrics), "note"]
    table = table.reindex(columns=cols)
    counts = ["hparams_seed", "draws", "n", "dead", *(f"{m.key}_n" for m in metrics)]
    for col in counts + [c for c in [*grid, *LENGTH] if _integral(table[c])]:
        table[col] = table[col].astype("Int64")  # 3, not 3.0, in a column that also holds NaN
    return table.to_csv(index=False)


def _integral(column: pd.Series) -> bool:
    """A float column with NaN whose other values are all whole numbers (ints that NaN turned
    into floats)."""
    values = column.dropna()
    return (column.dtype.kind == "f" and column.isna().any() and not values.empty
            and bool((values == values.round()).all()) and bool(values.abs().lt(2**53).all()))
