"""Training curves of each collected run: its losses and split accuracies over steps.

The curves come from the run's ``results.jsonl`` (one record per checkpoint, docs/METHODS.md
§P.4), restricted to the records the collector kept: the run's own (by its arguments hash) and
each step once, so a curve shows exactly the checkpoints selection chose among.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..errors import UserError
from ..training.records import RESULTS, RunArgs, read_records
from .plots import save


def run_records(run_dir: Path, run_id: str, steps: set[int]) -> list[dict[str, Any]]:
    """The records of ``run_dir`` the reader kept: those of ``run_id`` at ``steps``, each once."""
    kept: dict[int, dict[str, Any]] = {}
    for rec in read_records(run_dir / RESULTS):
        step = rec["step"]
        if step in steps and step not in kept and record_run_id(rec) == run_id:
            kept[step] = rec
    return [kept[s] for s in sorted(kept)]


def record_run_id(rec: dict[str, Any]) -> str | None:
    """The run id a record names, computed as the reader does (None: not a run's arguments)."""
    try:
        return RunArgs(**rec["args"]).run_id()
    except (KeyError, TypeError, UserError):
        return None


def series(records: list[dict[str, Any]], key: str, value) -> dict[str, tuple[list, list]]:
    """Name → (steps, values) over the records' ``key`` dict (losses or metrics), where
    ``value`` maps one entry to a number (None: left out)."""
    out: dict[str, tuple[list, list]] = {}
    for rec in records:
        for name, entry in (rec.get(key) or {}).items():
            v = value(entry)
            if v is not None:
                steps, values = out.setdefault(name, ([], []))
                steps.append(rec["step"])
                values.append(v)
    return out


def number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def accuracy(split: Any) -> float | None:
    acc = number(split.get("acc")) if isinstance(split, dict) else None
    return None if acc is None else 100 * acc


def curve_figure(records: list[dict[str, Any]], title: str) -> Figure:
    """Losses (left) and each split's accuracy in % (right) against the step; dotted vertical
    lines where a multi-stage method starts a new stage (JTT's stage 2, METHODS §A.5).  The
    losses panel holds everything the algorithm logs (DL also its pair count, DANN its
    discriminator step); where their scales differ widely it is drawn on a symlog axis."""
    fig = Figure(figsize=(8, 2.6))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax, key, value, label in ((loss_ax, "losses", number, "loss"),
                                  (acc_ax, "metrics", accuracy, "accuracy (%)")):
        for name, (steps, values) in series(records, key, value).items():
            ax.plot(steps, values, marker="o", markersize=2.5, label=name)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        for prev, rec in zip(records, records[1:]):
            if rec.get("stage", 1) != prev.get("stage", 1):
                ax.axvline(rec["step"], color="grey", linestyle=":", linewidth=1)
    acc_ax.set_ylim(-2, 102)
    peaks = [max(abs(v) for v in line.get_ydata()) for line in loss_ax.lines]
    if peaks and min(peaks) > 0 and max(peaks) / min(peaks) > 20:  # e.g. DL's pair count vs CE
        loss_ax.set_yscale("symlog", linthresh=1e-2)
        loss_ax.set_ylabel("logged value (symlog)")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig


def write_curve(records: list[dict[str, Any]], title: str, stem: Path) -> Path:
    """The run's curves as ``<stem>.png`` (a page shows PNGs; one PDF per run would double the
    cost of a large sweep's report)."""
    return save(curve_figure(records, title), stem, ("png",))[0]
