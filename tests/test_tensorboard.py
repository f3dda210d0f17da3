"""``--tensorboard``: event files beside results.jsonl hold the same losses and metrics at the
same steps, each step once across a kill and resume; off by default (training/events.py)."""
from __future__ import annotations

import sys

import pytest

from domainbed_sc.cli import main
from domainbed_sc.training.records import CHECKPOINT, RESULTS, read_records
from fixtures_run import killed_after

pytest.importorskip("tensorboard", reason="the tensorboard package is not installed")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def train(out, data_dir, *extra: str) -> int:
    return main(["train", "--dataset", "toy", "--steps", "12", "--checkpoint-freq", "4",
                 "--device", "cpu", "--quiet", "--output-dir", str(out), "--data-dir", str(data_dir),
                 *extra])


def scalars(out) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(str(out))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_events_match_records(out):
    events, records = scalars(out), list(read_records(out / RESULTS))
    steps = [r["step"] for r in records]
    assert steps == [4, 8, 12]
    for tag in ("loss/loss", "val/acc", "test/wga"):
        assert [s for s, _ in events[tag]] == steps, tag  # each step exactly once
    for r in records:
        got = {tag: dict(points)[r["step"]] for tag, points in events.items()}
        assert got["loss/loss"] == pytest.approx(r["losses"]["loss"], rel=1e-6)
        assert got["val/acc"] == pytest.approx(r["metrics"]["val"]["acc"], rel=1e-6)
        assert got["test/wga"] == pytest.approx(r["metrics"]["test"]["wga"], rel=1e-6)


def test_events_hold_each_records_losses_and_metrics(tmp_path):
    out = tmp_path / "run"
    assert train(out, tmp_path, "--tensorboard") == 0
    assert list(out.glob("events.out.tfevents.*"))
    assert_events_match_records(out)


@pytest.mark.parametrize("restart", [False, True], ids=["resumed", "restarted"])
def test_a_killed_and_resumed_run_has_each_step_once(tmp_path, restart):
    """Resumed at step 8, it keeps the first writer's points; restarted from scratch (its
    checkpoint lost), the second writer's points replace them all."""
    out = tmp_path / "run"
    with killed_after(8):
        train(out, tmp_path, "--tensorboard")
    assert [s for s, _ in scalars(out)["val/acc"]] == [4, 8]
    if restart:
        (out / CHECKPOINT).unlink()
    assert train(out, tmp_path, "--tensorboard") == 0
    assert len(list(out.glob("events.out.tfevents.*"))) == 2
    assert_events_match_records(out)


def test_off_by_default(tmp_path):
    assert train(tmp_path / "run", tmp_path) == 0
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))


def test_without_tensorboard_the_flag_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # its import fails
    assert train(tmp_path / "run", tmp_path, "--tensorboard") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install tensorboard" in err[0]
    assert not (tmp_path / "run").exists()  # refused before the run dir is made
