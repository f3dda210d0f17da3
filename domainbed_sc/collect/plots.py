"""Figures (PNG + PDF): a metric against a swept grid value, and per-group accuracy heatmaps.

Figures are drawn on ``matplotlib.figure.Figure`` objects, which render through the Agg (PNG)
and PDF backends without pyplot, so nothing here changes the process-wide matplotlib backend.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .stats import summarize
from ..metrics import Column
from .tables import Section, grid_columns, grid_label, value_text

FORMATS = ("png", "pdf")


def save(fig: Figure, stem: Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(f"{stem.name}.{ext}") for ext in formats]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    return paths


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text).strip("-")


def metric_vs(runs: pd.DataFrame, x: str, metric: Column, hue: list[str], stem: Path,
              title: str = "") -> list[Path]:
    """Mean of ``metric`` (in %) against column ``x``, one line per algorithm × ``hue`` values,
    with a 95% t confidence band over runs (clipped to [0, 100]).  Lines whose ``x`` is missing
    (e.g. ERM in a λ sweep) are drawn as a horizontal reference with their band."""
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    xs = pd.to_numeric(runs[x], errors="coerce")
    finite = xs[np.isfinite(xs)]
    for (alg, *_), line in runs.groupby(["algorithm", *hue], sort=True, dropna=False):
        label = " ".join(filter(None, [str(alg), grid_label(line.iloc[0], hue)]))
        by_x = [(xv, summarize(group[metric.column] * 100))
                for xv, group in line.groupby(xs[line.index], dropna=False)]
        style = {"marker": "o"}
        if all(math.isnan(xv) for xv, _ in by_x):  # a reference across the x range
            by_x = [(xv, by_x[0][1]) for xv in (finite.min(), finite.max())]
            style = {"linestyle": "--"}
            label += f" (no {x.split(':')[-1]})"
        points = sorted(((xv, s) for xv, s in by_x if not math.isnan(xv) and s.n > 0),
                        key=lambda p: p[0])
        px = np.array([p[0] for p in points])
        mean = np.array([p[1].mean for p in points])
        half = np.nan_to_num(np.array([p[1].ci95 for p in points]))
        # with few seeds the t interval can leave [0, 100]; an accuracy band is drawn inside it
        lo, hi = np.clip(mean - half, 0, 100), np.clip(mean + half, 0, 100)
        if len(points) == 1:  # a band needs two x values; one point gets an error bar
            ax.errorbar(px, mean, yerr=[mean - lo, hi - mean], capsize=3, label=label, **style)
            continue
        (drawn,) = ax.plot(px, mean, label=label, **style)
        ax.fill_between(px, lo, hi, color=drawn.get_color(), alpha=0.2)
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() >= 8:
        ax.set_xscale("log", base=2)
        ticks = sorted(set(finite))
        ax.set_xticks(ticks, [value_text(t) for t in ticks])
    ax.set_xlabel(x.split(":")[-1])
    ax.set_ylabel(f"{metric.label} (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, stem)


def group_accuracy_matrix(runs: pd.DataFrame, role: str) -> np.ndarray:
    """Per-group accuracy (in %) averaged over runs, as [num_classes, num_attributes] (NaN:
    no such group); g = y * num_attributes + s."""
    k, a = int(runs["num_classes"].iloc[0]), int(runs["num_attributes"].iloc[0])
    total, count = np.zeros(k * a), np.zeros(k * a)
    for group_acc in runs[f"{role}_group_acc"]:
        for g, acc in (group_acc or {}).items():
            total[int(g)] += acc
            count[int(g)] += 1
    with np.errstate(invalid="ignore"):
        return (100 * total / count).reshape(k, a)


def group_heatmap(runs: pd.DataFrame, role: str, stem: Path, title: str = "") -> list[Path]:
    """Heatmap of the per-group accuracy of split ``role`` (y × s), averaged over ``runs``."""
    matrix = group_accuracy_matrix(runs, role)
    k, a = matrix.shape
    fig = Figure(figsize=(min(3 + 0.5 * a, 14), 1.5 + 0.4 * k))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(matrix), vmin=0, vmax=100, cmap="viridis",
                      aspect="auto", interpolation="nearest")
    if a * k <= 64:  # numbers and ticks only where they stay readable
        ax.set_xticks(range(a))
        ax.set_yticks(range(k))
        for (y, s), v in np.ndenumerate(matrix):
            if not math.isnan(v):
                ax.text(s, y, f"{v:.0f}", ha="center", va="center", fontsize=7,
                        color="k" if v > 60 else "w")  # viridis is light at the top
    ax.set_xlabel("s (spurious attribute)")
    ax.set_ylabel("y (class)")
    ax.set_title(title or f"per-group accuracy on {runs[f'{role}_split'].iloc[0]} (n={len(runs)})",
                 fontsize=9)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    return save(fig, stem)


PLOT_KINDS = ("sweep", "groups")


def write_plots(sections: list[Section], metrics: list[Column], out_dir: Path,
                kinds: tuple[str, ...] = PLOT_KINDS) -> list[Path]:
    """Per selection method and dataset: each metric against each numeric grid value that is
    swept (N, λ, ...) ("sweep"), and a per-group accuracy heatmap per grid cell ("groups")."""
    paths: list[Path] = []
    for sec in sections:
        name = sec.selected.method.name
        for dataset, runs in sec.selected.runs.groupby("dataset", sort=False):
            prefix = f"{name}-{dataset}"
            title = f"{dataset}, selection: {name}"
            if "sweep" in kinds:
                paths += sweep_plots(runs, metrics, out_dir, prefix, title)
            if "groups" in kinds:
                paths += group_plots(runs, out_dir, prefix, title)
    return paths


def sweep_plots(runs: pd.DataFrame, metrics: list[Column], out_dir: Path, prefix: str,
                title: str) -> list[Path]:
    paths: list[Path] = []
    grid = grid_columns(runs)
    for x in grid:
        if pd.to_numeric(runs[x], errors="coerce").nunique() < 2:
            continue
        hue = [c for c in grid if c != x]
        for m in metrics:
            if runs[m.column].notna().any():
                stem = out_dir / slug(f"{prefix}-{m.key}-vs-{x.split(':')[-1]}")
                paths += metric_vs(runs, x, m, hue, stem, title)
    return paths


def group_plots(runs: pd.DataFrame, out_dir: Path, prefix: str, title: str) -> list[Path]:
    """One heatmap per grid cell, on the OOD split if it has groups, else the ID split."""
    paths: list[Path] = []
    grid = grid_columns(runs)
    for _, cell in runs.groupby("cell", sort=False):
        role = next((r for r in ("ood", "id") if cell[f"{r}_group_acc"].notna().any()), None)
        if role is None:
            continue
        cell = cell[cell[f"{role}_group_acc"].notna()]
        first = cell.iloc[0]
        label = " ".join(filter(None, [first["algorithm"], grid_label(first, grid)]))
        split = first[f"{role}_split"]
        paths += group_heatmap(cell, role, out_dir / slug(f"{prefix}-{label}-groups-{split}"),
                               f"{title}, {label}: per-group accuracy on {split} (n={len(cell)})")
    return paths
