"""Packed training: K vmapped runs give the records and checkpoints of K unpacked runs, resume
after a kill (also unpacked), and incompatible runs are refused."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixtures_run import killed_after
from torch import nn

from domainbed_sc.algorithms import ALGORITHMS
from domainbed_sc.algorithms.erm import ERM
from domainbed_sc.cli import main
from domainbed_sc.datasets import DATASETS
from domainbed_sc.datasets.toy import Toy
from domainbed_sc.errors import UserError
from domainbed_sc.training.packed import pack_key, train_packed
from domainbed_sc.training.records import CHECKPOINT, DONE, RESULTS, RunArgs, read_records
from domainbed_sc.training.trainer import Run, RunOptions, train


class ToyLenet(Toy):
    """The toy data upsampled to 2×32×32, so that LeNet-5 (the thesis network) fits."""

    input_shape = (2, 32, 32)
    default_hparams = {"arch": "lenet5"}

    def __init__(self, data_dir, args, data_seed):
        super().__init__(data_dir, args, data_seed)
        for split in self.splits.values():
            split.x = F.interpolate(split.x, scale_factor=4, mode="nearest")


class ERMSubclass(ERM):
    """Inherits ``packable`` but does not declare it: it may have changed ``update``."""


class ERMDropout(ERM):
    packable = True

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        self.classifier = nn.Sequential(nn.Dropout(0.5), self.classifier)


@pytest.fixture(autouse=True, scope="module")
def _registered():
    """This module's dataset and algorithms, registered while its tests run and only then."""
    with DATASETS.temporary("toy_lenet", ToyLenet), \
            ALGORITHMS.temporary("ERMSubclassForPackTest", ERMSubclass), \
            ALGORITHMS.temporary("ERMDropoutForPackTest", ERMDropout):
        yield


SEEDS = [(0, 0), (1, 0), (2, 1)]  # (trial, data): two runs share a dataset, one has its own


def members(root, dataset="toy", seeds=SEEDS, **kw):
    kw.setdefault("epochs", 3)
    return [(RunArgs(dataset=dataset, trial_seed=t, data_seed=d, **kw),
             RunOptions(root / f"t{t}d{d}", root / "data", "cpu", progress=False)) for t, d in seeds]


def unpacked(root, pack):
    return [train(args, RunOptions(root / f"ref{i}", opts.data_dir, "cpu", progress=False))
            for i, (args, opts) in enumerate(pack)]


def assert_same_run(out, ref):
    """Records equal but for wall time, metrics and losses within float tolerance, parameters
    within 1e-4, optimizer state the run's own."""
    got, want = list(read_records(out / RESULTS)), list(read_records(ref / RESULTS))
    assert [r["step"] for r in got] == [r["step"] for r in want] and got
    for g, w in zip(got, want):
        for key in ("args", "hparams", "dataset", "epoch", "device", "extra"):
            assert g[key] == w[key]
        assert g["losses"] == pytest.approx(w["losses"], abs=1e-4)
        for split, m in w["metrics"].items():
            assert g["metrics"][split]["acc"] == pytest.approx(m["acc"], abs=1e-4)
            assert g["metrics"][split].get("wga") == pytest.approx(m.get("wga"), abs=1e-4)
    a, b = (torch.load(d / CHECKPOINT, weights_only=True) for d in (out, ref))
    assert a["step"] == b["step"] and a["sampler"] == b["sampler"]
    for name, value in b["algorithm"]["module"].items():
        assert torch.allclose(a["algorithm"]["module"][name], value, atol=1e-4), name
    opt_a, opt_b = a["algorithm"]["optim"], b["algorithm"]["optim"]
    assert opt_a.keys() == opt_b.keys()
    assert opt_a["optimizer"]["param_groups"] == opt_b["optimizer"]["param_groups"]
    for i, state in opt_b["optimizer"]["state"].items():
        for k, v in state.items():
            # optimizer state sums gradients, which float noise perturbs more than parameters;
            # a wrong slice (another run's state) would be off by O(1)
            err = (opt_a["optimizer"]["state"][i][k] - v).abs().max()
            assert err <= 1e-4 + 0.1 * v.abs().max(), (i, k)


@pytest.mark.parametrize("algorithm,dataset,hparams,epochs", [
    # LeNet-5, Adam, MultiStepLR: the thesis setup, at lr 1e-3 because at its 5e-3 Adam turns
    # float noise in near-zero gradients into 1e-3 parameter differences within 24 steps, as
    # much as running one unpacked run with 1 vs 2 threads does
    ("ERM", "toy_lenet", {"optimizer": "adam", "lr_milestones": [2]}, 3),
    # DL on the toy data is chaotic after ~10 steps: there too 1 vs 2 threads make the unpacked
    # losses differ by 0.1 at step 24, so compare the first epoch only
    ("DL", "toy_lenet", {}, 1),
    ("DL", "toy_lenet", {"dl_variant": "threshold", "dl_tau": 0.5}, 1),
    ("ERM", "toy", {"arch": "mnist_cnn", "optimizer": "sgd", "weight_decay": 1e-3}, 3),
])
def test_packed_runs_equal_separate_runs(tmp_path, algorithm, dataset, hparams, epochs):
    pack = members(tmp_path, dataset, algorithm=algorithm, hparams=hparams, epochs=epochs)
    dirs = train_packed(pack)
    for out, ref in zip(dirs, unpacked(tmp_path, pack)):
        assert (out / DONE).exists()
        assert_same_run(out, ref)
    finals = [list(read_records(d / RESULTS))[-1]["losses"]["loss"] for d in dirs]
    assert len(set(finals)) == 3, "the packed runs must be distinct runs"


class Killed(Exception):
    pass


@pytest.mark.parametrize("kill_after", [4, 5])
def test_killed_pack_resumes(tmp_path, monkeypatch, kill_after):
    """Kill the pack in the middle of its checkpoint writes (3 runs, checkpoints at steps 8 and
    16): the runs are left at different steps, the pack resumes at the smallest and the others
    join at theirs.  The finished runs equal uninterrupted ones."""
    pack = members(tmp_path, hparams={"lr_milestones": [1]})
    calls = {"n": 0}
    checkpoint = Run.checkpoint

    def dying_checkpoint(self, t0):
        calls["n"] += 1
        if calls["n"] > kill_after:
            raise Killed()
        return checkpoint(self, t0)

    monkeypatch.setattr(Run, "checkpoint", dying_checkpoint)
    with pytest.raises(Killed):
        train_packed(pack)
    monkeypatch.setattr(Run, "checkpoint", checkpoint)
    steps = [[r["step"] for r in read_records(opts.output_dir / RESULTS)][-1] for _, opts in pack]
    assert steps == ([16, 8, 8] if kill_after == 4 else [16, 16, 8])
    assert not any((opts.output_dir / DONE).exists() for _, opts in pack)
    for out, ref in zip(train_packed(pack), unpacked(tmp_path, pack)):
        assert_same_run(out, ref)


def test_packed_checkpoint_resumes_unpacked(tmp_path, monkeypatch):
    pack = members(tmp_path, "toy_lenet")
    checkpoint = Run.checkpoint

    def kill_at_16(self, t0):
        if self.step >= 16:
            raise Killed()
        return checkpoint(self, t0)

    monkeypatch.setattr(Run, "checkpoint", kill_at_16)
    with pytest.raises(Killed):
        train_packed(pack)
    monkeypatch.setattr(Run, "checkpoint", checkpoint)
    (args, opts), ref = pack[2], unpacked(tmp_path, pack[2:])[0]
    out = train(args, opts)  # the unpacked trainer finishes what the pack began
    assert_same_run(out, ref)


def test_unpacked_checkpoint_resumes_packed(tmp_path):
    """An unpacked run killed after its step-8 checkpoint joins a pack whose other run starts
    from scratch: it waits in its slot until the pack reaches step 8, then trains on from its
    own checkpoint; both equal uninterrupted runs."""
    pack = members(tmp_path, seeds=SEEDS[:2], hparams={"lr_milestones": [1]})
    with killed_after(8):
        train(*pack[0])
    dirs = train_packed(pack)
    assert "resumed from step 8" in (dirs[0] / "log.txt").read_text()
    for out, ref in zip(dirs, unpacked(tmp_path, pack)):
        assert_same_run(out, ref)


def test_incompatible_runs_are_refused(tmp_path):
    mixed = members(tmp_path / "a", seeds=[(0, 0)]) + members(tmp_path / "b", seeds=[(1, 0)],
                                                             hparams={"lr": 0.01})
    with pytest.raises(UserError, match="differ in .*resolved hparams"):
        train_packed(mixed)
    longer = members(tmp_path / "c", seeds=[(0, 0)]) + members(tmp_path / "d", seeds=[(1, 0)], epochs=4)
    with pytest.raises(UserError, match="differ in epochs"):
        train_packed(longer)
    with pytest.raises(UserError, match="does not declare packable"):
        train_packed(members(tmp_path / "e", algorithm="ERMSubclassForPackTest"))
    with pytest.raises(UserError, match="dropout"):
        train_packed(members(tmp_path / "f", algorithm="ERMDropoutForPackTest"))
    with pytest.raises(UserError, match="distinct output dirs"):
        train_packed(members(tmp_path / "g", seeds=[(0, 0)]) * 2)
    assert not list(tmp_path.glob("*/*/" + RESULTS)), "a refused pack must not train anything"


def test_pack_key_groups_seeds_only():
    base = RunArgs(dataset="toy", hparams={"lr": 0.01}, epochs=2)
    same = RunArgs(dataset="toy", hparams={"lr": 0.01}, epochs=2, trial_seed=3, data_seed=4)
    assert pack_key(base) == pack_key(same) is not None
    assert pack_key(base) != pack_key(RunArgs(dataset="toy", hparams={"lr": 0.02}, epochs=2))
    assert pack_key(RunArgs(dataset="toy", algorithm="ERMSubclassForPackTest")) is None
    assert pack_key(RunArgs(dataset="toy", hparams={"arch": "resnet18"})) is None  # BatchNorm


def test_train_packed_command(tmp_path, capsys):
    argv = ["train-packed", "--dataset", "toy", "--trial-seed", "0", "1", "--epochs", "1",
            "--output-root", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"),
            "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    dirs = sorted((tmp_path / "runs").iterdir())
    assert [d.name.split("-")[0] for d in dirs] == ["toy_ERM_h0_t0_d0", "toy_ERM_h0_t1_d0"]
    assert all((d / DONE).exists() for d in dirs)
    assert main(argv + ["--data-seed", "0", "1", "2"]) == 2
    assert "as many --data-seed values" in capsys.readouterr().err
