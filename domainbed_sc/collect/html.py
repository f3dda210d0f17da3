"""``collect --html DIR``: the collector's results as one self-contained static page.

``DIR/index.html`` needs no server and no network: the CSS is inline, there is no script, and
every image lies beside the page (``plots/``: the sweep plots and per-group accuracy heatmaps of
``plots.py``, PNG shown and PDF linked; ``curves/``: each run's training curves).  The page holds
the tables the text output prints (same selection and aggregation, docs/METHODS.md §P.3-§P.4),
the figures per selection method, each run's losses and split accuracies over steps, the dead
runs per selection method, what the reader skipped, and the commands: the ``collect`` command
that wrote the page and a ``train`` command per run.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from tabulate import tabulate

from ..cache import atomic_write_bytes
from ..metrics import Column
from ..datasets.sources import resolve_data_dir
from ..sweep.jobs import Job, JobEnv
from ..sweep.launchers import train_command
from ..training.records import RunArgs
from . import curves, plots, tables
from .reader import Collection

PAGE = "index.html"
PLOTS = "plots"
CURVES = "curves"

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2430;
       margin: 0; background: #f4f6f9; }
header { background: #1f3a5f; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 2px 0; color: #d5e1f2; }
main { max-width: 1240px; margin: 0 auto; padding: 8px 32px 40px; }
nav { background: #fff; border: 1px solid #d8dee8; border-radius: 6px; padding: 8px 18px;
      margin: 16px 0; columns: 2; }
nav a { text-decoration: none; color: #1f5fa8; }
nav .l3 { margin-left: 18px; font-size: 13px; }
section { background: #fff; border: 1px solid #d8dee8; border-radius: 6px; padding: 4px 20px 14px;
          margin: 16px 0; }
h2 { border-bottom: 2px solid #1f3a5f; padding-bottom: 4px; }
h3 { color: #1f3a5f; margin-top: 22px; }
h4 { margin: 16px 0 4px; }
p { max-width: 1100px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #d8dee8; padding: 3px 9px; white-space: nowrap; }
th { background: #e8eef6; }
td { text-align: right; }
td:first-child { text-align: left; }
tr:nth-child(even) td { background: #f7f9fc; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 14px;
           align-items: start; }
.gallery.wide { grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); }
figure { margin: 0; border: 1px solid #e1e6ee; border-radius: 4px; padding: 6px; background: #fff; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: 12px; color: #4a5566; overflow-wrap: anywhere; margin-top: 4px; }
pre { background: #f0f3f7; border: 1px solid #d8dee8; padding: 8px; overflow-x: auto;
      font-size: 12px; white-space: pre-wrap; word-break: break-all; }
.none { color: #4a7a3a; }
.warn { color: #9a4a00; }
"""


@dataclass
class Report:
    """What the page shows: the collector's sections and what it read, and how it was run."""

    sections: list[tables.Section]
    collection: Collection
    metrics: list[Column]
    summary_metrics: list[Column]
    ci: bool
    exclude_dead: bool
    footer: str
    plot_kinds: tuple[str, ...]
    argv: list[str]  # the command line after ``domainbed-sc``


@dataclass
class Page:
    """The page's headings (for the contents) and the anchors they get."""

    toc: list[tuple[int, str, str]] = field(default_factory=list)

    def heading(self, level: int, text: str) -> str:
        anchor = f"s{len(self.toc) + 1}"
        self.toc.append((level, text, anchor))
        return f'<h{level} id="{anchor}">{escape(text)}</h{level}>'

    def format(self) -> tables.Format:
        """The tables' format; their headings sit below the page's "Results" (level 1 is h3)."""
        return tables.Format(heading=lambda level, text: self.heading(level + 2, text),
                             table=html_table, text=paragraph)

    def contents(self) -> str:
        items = [f'<div class="l{level}"><a href="#{anchor}">{escape(text)}</a></div>'
                 for level, text, anchor in self.toc if level <= 3]
        return "<nav>" + "".join(items) + "</nav>"


def html_table(table: tables.Table) -> str:
    return ('<div class="scroll">' + tabulate(table.rows, table.headers, tablefmt="html",
                                              disable_numparse=True) + "</div>")


def paragraph(text: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<p{attr}>{escape(text)}</p>"


def href(path: Path, out: Path) -> str:
    return escape(quote(path.relative_to(out).as_posix()))


def gallery(items: list[tuple[Path, str, str]], out: Path, wide: bool = False) -> str:
    """Figures: (PNG, caption, extra caption HTML such as links)."""
    figures = [f'<figure><img src="{href(png, out)}" alt="{escape(caption)}" loading="lazy">'
               f"<figcaption>{escape(caption)}{extra}</figcaption></figure>"
               for png, caption, extra in items]
    return f'<div class="gallery{" wide" * wide}">' + "".join(figures) + "</div>"


def write_report(report: Report, out: Path) -> Path:
    """Write ``out/index.html`` and its images; returns the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    page = Page()
    results = page.heading(2, "Results") + tables.render(report.sections, page.format(), report.metrics,
                            report.summary_metrics, report.ci, report.exclude_dead, report.footer)
    runs = run_pages(report.collection.records, out)
    blocks = [section(results),
              section(figures(page, report, out)),
              section(curve_blocks(page, report.collection.records, runs, out)),
              section(dead_blocks(page, report)),
              section(skipped_blocks(page, report.collection)),
              section(command_blocks(page, report, runs))]
    records = report.collection.records
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = (f"<header><h1>domainbed-sc report</h1><p>{records['run'].nunique()} finished runs, "
            f"{records['dataset'].nunique()} dataset(s), selection: "
            f"{escape(', '.join(s.selected.method.name for s in report.sections))}; "
            f"{escape(report.collection.skipped.summary())}</p>"
            f"<p>written {stamp} by <code>{escape(collect_command(report.argv))}</code></p></header>")
    text = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>domainbed-sc report</title><style>{CSS}</style></head>\n<body>{head}<main>"
            + page.contents() + "\n".join(blocks) + "</main></body></html>\n")
    path = out / PAGE
    atomic_write_bytes(path, lambda f: f.write(text.encode()))
    return path


def section(body: str) -> str:
    return f"<section>{body}</section>"


def natural_key(text: str) -> list:
    """Numbers in names in numeric order: n_backgrounds2 before n_backgrounds16."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(text))]


def figures(page: Page, report: Report, out: Path) -> str:
    """Per selection method, the figures ``collect --plots`` would write (PNG shown, PDF linked);
    heatmaps in wider cards, since a dataset with many groups (MNIST-CIFAR: 10 × 10N) draws
    them wide."""
    blocks = [page.heading(2, "Figures")]
    for sec in report.sections:
        blocks.append(page.heading(3, f"Figures, selection: {sec.selected.method.name}"))
        shown = False
        for kind in (k for k in plots.PLOT_KINDS if k in report.plot_kinds):
            paths = plots.write_plots([sec], report.metrics, out / PLOTS, (kind,))
            items = [(p, p.stem, f' · <a href="{href(p.with_suffix(".pdf"), out)}">PDF</a>')
                     for p in sorted(paths, key=lambda p: natural_key(p.stem)) if p.suffix == ".png"]
            if items:
                blocks.append(gallery(items, out, wide=kind == "groups"))
                shown = True
        if not shown:
            blocks.append(paragraph("No figures: no grid value is swept and no split has group "
                                    "labels.", "none"))
    return "".join(blocks)


@dataclass
class RunPage:
    """One run on the page: its curves, its train command and the anchor of that command."""

    name: str
    dataset: str
    image: Path
    command: str
    anchor: str


def run_pages(records: pd.DataFrame, out: Path) -> dict[str, RunPage]:
    """Per collected run (in run-dir order): its training curves and the command that runs it."""
    pages: dict[str, RunPage] = {}
    data_dir = resolve_data_dir(None)
    for i, (run, rows) in enumerate(records.groupby("run", sort=True)):
        kept = curves.run_records(Path(run), rows["run_id"].iloc[0], set(rows["step"]))
        name = rows["name"].iloc[0]  # the index keeps same-named dirs of two roots apart
        image = curves.write_curve(kept, name, out / CURVES / f"{i:04d}-{plots.slug(name)}")
        env = JobEnv(data_dir, str(kept[-1].get("device") or "auto"))
        command = train_command(Job(RunArgs(**kept[0]["args"]), Path(run)), env)
        pages[run] = RunPage(name, rows["dataset"].iloc[0], image, command, f"run{i + 1}")
    return pages


def curve_blocks(page: Page, records: pd.DataFrame, runs: dict[str, RunPage], out: Path) -> str:
    blocks = [page.heading(2, "Training curves"), paragraph(
        "Each run's training losses and the accuracy of every evaluated split at each "
        "checkpoint of results.jsonl (dotted lines: a multi-stage method starts a new stage).")]
    for dataset, rows in records.groupby("dataset", sort=True):
        blocks.append(page.heading(3, f"Training curves: {dataset}"))
        items = [(runs[r].image, runs[r].name, f' · <a href="#{runs[r].anchor}">command</a>')
                 for r in sorted(set(rows["run"]), key=natural_key)]
        blocks.append(gallery(items, out, wide=True))
    return "".join(blocks)


def dead_blocks(page: Page, report: Report) -> str:
    """Per selection method, the runs whose ID accuracy at the selected checkpoint is below the
    dead threshold (docs/METHODS.md §P.3)."""
    blocks = [page.heading(2, "Dead runs"), paragraph(
        f"Runs whose ID accuracy at the selected checkpoint is below {tables.DEAD_ACC:.0%} "
        f"({'excluded from' if report.exclude_dead else 'included in'} the tables' cells).")]
    for sec in report.sections:
        runs = sec.selected.runs
        dead = runs[runs["id_acc"] < tables.DEAD_ACC] if len(runs) else runs
        blocks.append(page.heading(3, f"Dead runs, selection: {sec.selected.method.name}"))
        if dead.empty:
            blocks.append(paragraph("No dead run.", "none"))
            continue
        grid = tables.grid_columns(runs)
        rows = [[r["name"], r["dataset"], r["algorithm"], tables.grid_label(r, grid), str(r["step"]),
                 f"{100 * r['id_acc']:.1f}", tables.value_text(round(100 * r["ood_acc"], 1))]
                for _, r in dead.iterrows()]
        blocks.append(html_table(tables.Table(
            ["run", "dataset", "algorithm", "grid", "step", "ID acc (%)", "OOD acc (%)"], rows)))
    return "".join(blocks)


def skipped_blocks(page: Page, collection: Collection) -> str:
    """What the reader left out (and the diverged runs), each kind with its runs or files."""
    skipped = collection.skipped
    blocks = [page.heading(2, "Skipped runs"), paragraph(skipped.summary())]
    for f in dataclasses.fields(skipped):
        value = getattr(skipped, f.name)
        if not value:
            continue
        entries = [f"{k} ({n})" for k, n in value.items()] if isinstance(value, dict) else value
        blocks.append(page.heading(3, f"Skipped: {f.name.replace('_', ' ')}"))
        blocks.append("<ul>" + "".join(f"<li>{escape(str(e))}</li>" for e in sorted(entries))
                      + "</ul>")
    return "".join(blocks)


def collect_command(argv: list[str]) -> str:
    return shlex.join(["domainbed-sc", *argv])


def command_blocks(page: Page, report: Report, runs: dict[str, RunPage]) -> str:
    return "".join([
        page.heading(2, "Commands"),
        page.heading(3, "This page"),
        f"<pre>cd {escape(shlex.quote(os.getcwd()))} &amp;&amp; "
        f"{escape(collect_command(report.argv))}</pre>",
        page.heading(3, "Runs"),
        paragraph("Each collected run's own training command (it resumes or re-runs the run in "
                  "its directory). --data-dir is this machine's data directory, since runs do "
                  "not record theirs; the evaluation options are the defaults."),
        *(f'<pre id="{r.anchor}"># {escape(r.name)}\n{escape(r.command)}</pre>'
          for r in runs.values()),
    ])
