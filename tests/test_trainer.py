"""The spine: one run's records, resume after a kill, hparam draws, samplers, metrics, errors."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from domainbed_sc.algorithms import ALGORITHMS
from domainbed_sc.algorithms.resolve import resolve_hparams
from domainbed_sc.datasets import load_dataset
from domainbed_sc.datasets.base import TensorSplit
from domainbed_sc.errors import UserError
from domainbed_sc.hparams import draw
from domainbed_sc.training.evaluation import split_metrics
from domainbed_sc.training.records import CHECKPOINT, DONE, RESULTS, RunArgs, read_records
from domainbed_sc.training.samplers import EnvSampler, RandomSampler, WeightedSampler, group_weights


def test_run_writes_one_record_per_checkpoint_and_done(run_toy):
    out, records = run_toy(epochs=3)
    assert [r["step"] for r in records] == [8, 16, 24]  # 512 examples / batch 64 = 8 steps/epoch
    assert (out / DONE).exists() and (out / CHECKPOINT).exists()
    rec = records[-1]
    assert set(rec["metrics"]) == {"train", "val", "test"}
    assert rec["hparams"]["arch"] == "mlp" and rec["args"]["algorithm"] == "ERM"
    assert rec["dataset"]["num_groups"] == 4 and rec["device"] == "cpu"
    assert "loss" in rec["losses"] and rec["wall_time"] > 0


def test_finished_run_is_not_retrained(run_toy):
    out, first = run_toy(epochs=1)
    mtime = (out / RESULTS).stat().st_mtime_ns
    _, again = run_toy(epochs=1)
    assert again == first and (out / RESULTS).stat().st_mtime_ns == mtime


def test_same_seed_same_results_different_trial_differs(run_toy):
    _, a = run_toy(epochs=2, name="a")
    _, b = run_toy(epochs=2, name="b")
    _, c = run_toy(epochs=2, name="c", trial_seed=1)
    assert a[-1]["metrics"] == b[-1]["metrics"]
    assert a[-1]["losses"] == b[-1]["losses"]
    assert a[-1]["losses"] != c[-1]["losses"]


def _train_cmd(out_dir, data_dir, steps):
    return [sys.executable, "-m", "domainbed_sc", "train", "--dataset", "toy",
            "--dataset-args", '{"n_train": 8192}', "--steps", str(steps), "--checkpoint-freq", "40",
            "--output-dir", str(out_dir), "--data-dir", str(data_dir), "--quiet", "--device", "cpu"]


def test_killed_run_resumes_bit_identical(tmp_path):
    """SIGKILL a run after its first checkpoints; the restarted run must end exactly like an
    uninterrupted one: same records (minus wall time) and the same final parameters."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    steps = 1200
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(ref, tmp_path, steps), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed, tmp_path, steps), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(read_records(killed / RESULTS))) < 2 and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(list(read_records(killed / RESULTS)))
    assert 2 <= n_before < steps // 40, "the run must be killed midway"
    assert not (killed / DONE).exists()
    subprocess.run(_train_cmd(killed, tmp_path, steps), check=True, env=env, capture_output=True)

    strip = lambda recs: [{k: v for k, v in r.items() if k != "wall_time"} for r in recs]
    assert strip(read_records(killed / RESULTS)) == strip(read_records(ref / RESULTS))
    a = torch.load(ref / CHECKPOINT, weights_only=True)["algorithm"]["module"]
    b = torch.load(killed / CHECKPOINT, weights_only=True)["algorithm"]["module"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_hparams_depend_on_seed_not_trial(tmp_path):
    ds = load_dataset("toy", {}, 0, tmp_path)
    draws = [resolve_hparams(RunArgs("toy", "ERM", hparams_seed=h, trial_seed=t), ds)[1]
             for h in (1, 2) for t in (0, 1, 2)]
    assert draws[0] == draws[1] == draws[2] and draws[3] == draws[4] == draws[5]
    assert draws[0]["lr"] != draws[3]["lr"]
    defaults = resolve_hparams(RunArgs("toy", "ERM", hparams_seed=0), ds)[1]
    assert defaults["lr"] == 1e-3 and defaults["batch_size"] == 64 and defaults["arch"] == "mlp"
    lo, hi = 10 ** -4.5, 10 ** -2.5
    assert all(lo <= d["lr"] <= hi for d in draws)


def test_large_image_defaults_differ():
    space = ALGORITHMS.get("ERM").space()
    assert draw(space, 0, small_images=False)["lr"] == 5e-5
    assert draw(space, 0, small_images=True)["lr"] == 1e-3


@pytest.mark.parametrize("override, message", [
    ({"lr": -1.0}, "invalid value for hyperparameter lr"),
    ({"nope": 1}, "unknown hyperparameter(s) nope"),
    ({"optimizer": "rmsprop"}, "invalid value for hyperparameter optimizer"),
    ({"batch_size": "big"}, "wrong type"),
])
def test_invalid_hparams_fail_early(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        draw(ALGORITHMS.get("ERM").space(), 0, True, overrides=override)


def test_random_sampler_epochs_are_permutations():
    s = RandomSampler(10, 3, seed=0)
    epoch = torch.cat([s.indices(t)[0] for t in range(s.steps_per_epoch)])
    assert s.steps_per_epoch == 3 and len(set(epoch.tolist())) == 9
    again = RandomSampler(10, 3, seed=0)
    assert torch.equal(again.indices(4)[0], s.indices(4)[0])  # pure function of the step


def test_group_sampler_is_uniform_over_groups():
    g = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    s = WeightedSampler(group_weights(g), 4096, seed=0)
    counts = torch.bincount(g[s.indices(0)[0]], minlength=3).float() / 4096
    assert torch.allclose(counts, torch.full((3,), 1 / 3), atol=0.03)


def test_env_sampler_gives_one_batch_per_env():
    e = torch.tensor([0] * 20 + [1] * 30)
    batches = EnvSampler(e, 8, seed=0).indices(0)
    assert len(batches) == 2
    assert bool((e[batches[0]] == 0).all()) and bool((e[batches[1]] == 1).all())


def test_metrics_aa_wga_and_training_weighted():
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    s = torch.tensor([0, 0, 1, 1, 1, 0])
    split = TensorSplit(torch.zeros(6, 1), y, s, num_attributes=2)  # groups 0,0,1,3,3,2
    pred = torch.tensor([0, 0, 1, 1, 0, 1])  # correct: 1,1,0,1,0,1
    m = split_metrics(pred, split, 4, train_group_counts=torch.tensor([10, 0, 0, 30]))
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["group_acc"] == {"0": 1.0, "1": 0.0, "2": 1.0, "3": 0.5}
    assert m["wga"] == 0.0 and m["acc_gmean"] == pytest.approx(2.5 / 4)
    assert m["acc_adj"] == pytest.approx((10 * 1.0 + 30 * 0.5) / 40)


def _cli(*args, data_dir):
    return subprocess.run([sys.executable, "-m", "domainbed_sc", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("args, message", [
    (["--dataset", "nope"], "unknown dataset 'nope'; known:"),
    (["--dataset", "toy", "--algorithm", "nope"], "unknown algorithm 'nope'; known: "),
    (["--dataset", "toy", "--hparams", '{"lr": 0}'], "invalid value for hyperparameter lr"),
    (["--dataset", "toy", "--dataset-args", '{"bogus": 1}'], "unknown dataset argument(s) bogus"),
    (["--dataset", "mnist_cifar"], "not found at"),
    (["--dataset", "cmnist"], "MNIST not found at"),
])
def test_cli_errors_are_one_line_without_traceback(tmp_path, args, message):
    res = _cli("train", *args, "--output-dir", str(tmp_path / "o"), data_dir=tmp_path / "empty")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr


def test_requirement_error_names_the_missing_label(tmp_path):
    res = _cli("train", "--dataset", "toy", "--hparams", '{"sampler": "uniform_env"}',
               "--dataset-args", '{"n_train": 64}', "--output-dir", str(tmp_path / "o"),
               data_dir=tmp_path)
    assert res.returncode == 0, res.stderr  # toy has environments: fine
    from domainbed_sc.datasets import DATASETS

    toy = DATASETS.get("toy")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(toy, "provides", frozenset({"s", "g"}))
        from domainbed_sc.training.trainer import RunOptions, train

        with pytest.raises(UserError, match="needs environment labels \\(e\\), which dataset toy"):
            train(RunArgs("toy", "ERM", hparams={"sampler": "uniform_env"}),
                  RunOptions(tmp_path / "p", tmp_path, "cpu", progress=False))
