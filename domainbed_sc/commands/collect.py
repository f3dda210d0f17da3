"""``domainbed-sc collect``: model selection over finished runs, tables and plots."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_SELECTION = "last"
DEFAULT_METRICS = "id_acc,ood_acc,wga,acc_adj"
DEFAULT_SUMMARY = "ood_acc,wga"


def cmd_collect(a: argparse.Namespace) -> None:
    from ..cache import atomic_write_bytes
    from ..collect import methods, plots, reader, selection, tables
    from ..errors import UserError

    if a.selection not in (None, selection.ALL):
        methods.parse_methods(a.selection)  # a typo fails before the runs are read
    metrics = tables.parse_metrics(a.metric)
    summary_metrics = tables.parse_metrics(a.summary_metric)
    kinds = tuple(k.strip() for k in a.plot_kinds.split(",") if k.strip())
    if set(kinds) - set(plots.PLOT_KINDS):
        raise UserError(f"unknown plot kind(s) in {a.plot_kinds!r}; "
                        f"known: {', '.join(plots.PLOT_KINDS)}")
    if a.patience is not None and a.patience < 1:
        raise UserError(f"--patience must be at least 1, got {a.patience}")
    collection = reader.read_runs(a.dirs)
    records = collection.records
    if records.empty:
        raise UserError(f"no finished run under {', '.join(a.dirs)} ({collection.skipped.summary()})")
    wanted = list(dict.fromkeys(metrics + summary_metrics))
    sections = []
    for method, subset in selection.plan(records, a.selection, DEFAULT_SELECTION):
        selected = selection.select(subset, method, early_stopping(a, subset))
        sections.append(tables.Section(selected, tables.aggregate(selected, wanted, a.exclude_dead)))
    footer = (f"Collected {records['run'].nunique()} finished runs ({len(records)} checkpoint "
              f"records) from {', '.join(a.dirs)}. {collection.skipped.summary()}.")
    if a.selection is None:
        named = (records["sweep_selection"] != "").any()
        footer += (f" Selection: each sweep file's own (its `selection:`), for runs of no such "
                   f"sweep {DEFAULT_SELECTION}" if named else f" Selection: {DEFAULT_SELECTION} "
                   f"(no sweep file names one)") + "; `--selection all` shows every method."
    if a.format == "csv":
        text = tables.render_csv(sections, metrics)
        print(footer, file=sys.stderr)
    else:
        fmt = tables.LATEX if a.format == "latex" else tables.MARKDOWN
        text = tables.render(sections, fmt, metrics, summary_metrics, a.ci, a.exclude_dead, footer)
    if a.output:
        atomic_write_bytes(Path(a.output), lambda f: f.write(text.encode()))
    else:
        sys.stdout.write(text)
    if a.plots:
        paths = plots.write_plots(sections, metrics, Path(a.plots), kinds)
        print(f"wrote {len(paths)} plot files to {a.plots}", file=sys.stderr)
    if a.html:
        from ..collect import html

        report = html.Report(sections, collection, metrics, summary_metrics, a.ci, a.exclude_dead,
                             footer, kinds, a.argv)
        print(f"wrote the report {html.write_report(report, Path(a.html))}", file=sys.stderr)


def early_stopping(a: argparse.Namespace, subset):
    """--patience, else (without --selection) the patience the runs' sweep file names."""
    from ..collect import selection

    patience = a.patience
    if patience is None and a.selection is None:
        named = subset["sweep_patience"].dropna().unique()
        patience = float(named[0]) if len(named) == 1 else None
    return selection.EarlyStopping(patience, a.min_delta) if patience else None


def method_help() -> str:
    """Every registered selection method, with its label (and how to set a threshold)."""
    from ..collect.methods import METHODS, PARAMETRIC

    names = [f"{m.name} ({m.label})" for m in METHODS.values()]
    names += [f"{name}@T (the same at threshold T)" for name in PARAMETRIC]
    return ", ".join(names).replace("%", "%%")


def metric_help() -> str:
    from ..metrics import columns

    return ", ".join(f"{key} ({c.metric.short()} on the {c.role} split)"
                     for key, c in columns().items()).replace("%", "%%")


def add_parser(sub) -> None:
    # the help lists the registries (collect.methods and metrics import neither pandas nor torch)
    p = sub.add_parser("collect", help="model selection and result tables / plots over run dirs",
                       description="Read every results.jsonl under DIRs (finished runs only), "
                                   "select checkpoints and hyperparameters, print tables.")
    p.add_argument("dirs", nargs="+", metavar="DIR")
    p.add_argument("--selection",
                   help=f"comma-separated methods, applied to every run, or `all` (default: the "
                        f"methods each run's sweep file names in `selection:`, else "
                        f"{DEFAULT_SELECTION}, each shown over the runs that name it). Methods: "
                        f"{method_help()}")
    p.add_argument("--metric", default=DEFAULT_METRICS,
                   help=f"comma-separated table columns (default {DEFAULT_METRICS}): "
                        f"{metric_help()}")
    p.add_argument("--summary-metric", default=DEFAULT_SUMMARY,
                   help=f"one summary table across datasets per metric, names as --metric "
                        f"(default {DEFAULT_SUMMARY})")
    p.add_argument("--format", choices=("markdown", "latex", "csv"), default="markdown",
                   help="CSV is tidy: one row per (selection, grid cell), numbers in %%")
    p.add_argument("--ci", action="store_true", help="95%% t confidence intervals instead of ± std")
    p.add_argument("--exclude-dead", action="store_true",
                   help="leave runs with ID accuracy < 20%% out of the cells (still counted)")
    p.add_argument("--plots", metavar="OUT_DIR", help="also write figures (PNG + PDF) here")
    p.add_argument("--html", metavar="OUT_DIR",
                   help="also write a static report here (index.html: tables, figures, training "
                        "curves, dead and skipped runs, commands; images beside it)")
    p.add_argument("--plot-kinds", default="sweep,groups",
                   help="sweep (metric vs swept N / λ ...), groups (per-group accuracy heatmaps)")
    p.add_argument("--patience", type=int, metavar="P",
                   help="replay early stopping where a method picks the best checkpoint (not "
                        "last / oracle): a run stops once P epochs pass without improvement, "
                        "however often it was evaluated (eX2L: 10)")
    p.add_argument("--min-delta", type=float, default=1e-4,
                   help="the smallest gain that counts as improvement "
                        "(default 1e-4, docs/METHODS.md §C.2)")
    p.add_argument("--output", metavar="FILE", help="write the tables here instead of stdout")
    p.set_defaults(func=cmd_collect)
