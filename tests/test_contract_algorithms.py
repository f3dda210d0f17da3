"""The algorithm contract, for every registered algorithm (timm-style tests over the registry).

Each algorithm is matched with a tiny configuration from what it declares, never from a list
kept here: the first dataset of TINY and the first backbone (the dataset's default, then the
smallest first) that the trainer accepts for it, i.e. a run starts (its labels, ``requires`` /
``required_labels`` and its sampler's, are provided; its constructor takes the backbone) and
its first epoch hook passes (e.g. ChromaVAE's Bernoulli likelihood wants pixels in [0, 1]).  A
new algorithm gets these tests without writing any; one that matches no configuration fails.
"""
from __future__ import annotations

import functools
import io
import math

import pytest
import torch
from fixtures_run import killed_after

from domainbed_sc.algorithms import ALGORITHMS
from domainbed_sc.algorithms.erm import ERM
from domainbed_sc.datasets import DATASETS
from domainbed_sc.datasets.toy import Toy
from domainbed_sc.errors import UserError
from domainbed_sc.networks import FEATURIZERS, build_featurizer
from domainbed_sc.training.records import RunArgs
from domainbed_sc.training.trainer import Run, RunOptions, split_envs


class ToyUnitRange(Toy):
    """The toy data squashed into [0, 1] (a sigmoid), for methods that model pixels as
    probabilities (ChromaVAE's Bernoulli likelihood); registered only while these tests run."""

    def __init__(self, data_dir, args, data_seed):
        super().__init__(data_dir, args, data_seed)
        for split in self.splits.values():
            split.x = torch.sigmoid(split.x)


@pytest.fixture(autouse=True, scope="module")
def _toy_unit_range():
    with DATASETS.temporary("toy_unit_range", ToyUnitRange):
        yield


#: datasets that build in a blink, with the arguments that keep them tiny, in order of preference
TINY = {"toy": {"n_train": 64, "n_test": 32}, "toy_unit_range": {"n_train": 64, "n_test": 32}}
#: shrinks every algorithm that has it (most steps per second on CPU)
SMALL_HPARAMS = {"batch_size": 16}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def archs_by_size(input_shape: tuple[int, ...]) -> tuple[str, ...]:
    """The backbones that accept ``input_shape``, fewest parameters first."""
    sizes = {}
    for arch in FEATURIZERS.names():
        try:
            net = build_featurizer(arch, input_shape)
        except RuntimeError:  # too small an input for its convolutions
            continue
        sizes[arch] = sum(p.numel() for p in net.parameters())
    return tuple(sorted(sizes, key=sizes.get))


def run_args(name: str, dataset: str, hparams: dict, epochs: int = 1) -> RunArgs:
    return RunArgs(dataset=dataset, algorithm=name, dataset_args=TINY[dataset],
                   hparams=hparams, epochs=epochs)


def tiny_config(name: str, tmp_path) -> tuple[str, dict]:
    """(dataset, hparams overrides) of the first tiny configuration ``name`` trains on."""
    space = ALGORITHMS.get(name).space()
    small = {k: v for k, v in SMALL_HPARAMS.items() if k in space}
    refusals = []
    for dataset in TINY:
        cls = DATASETS.get(dataset)
        archs = [cls.default_hparams.get("arch", "mlp")]
        archs += [a for a in archs_by_size(cls.input_shape) if a not in archs]
        for arch in archs:
            hparams = {**small, "arch": arch}
            try:  # the checks of a run's start, its first epoch hook's included
                Run(run_args(name, dataset, hparams),
                    RunOptions(tmp_path, tmp_path / "data", "cpu")).epoch_hook(final=False)
                return dataset, hparams
            except UserError as exc:
                refusals.append(f"{dataset}/{arch}: {exc}")
    pytest.fail(f"algorithm {name} matches no tiny dataset of {sorted(TINY)}: {'; '.join(refusals)}")


def build(name: str, tmp_path) -> Run:
    dataset, hparams = tiny_config(name, tmp_path)
    return Run(run_args(name, dataset, hparams), RunOptions(tmp_path, tmp_path / "data", DEVICE))


def first_batches(run: Run, step: int = 0):
    return split_envs(next(run.batch_stream(step)).to(run.device), run.sampler.batch_sizes())


def update(run: Run, step: int = 0) -> dict:
    torch.manual_seed(step)  # dropout, reparametrisation: the same draws for both instances
    return run.algorithm.update(first_batches(run, step))


def predict(run: Run):
    x = run.ds.splits["val"].fetch(torch.arange(10)).x.to(run.device)
    run.algorithm.eval()
    with torch.no_grad():
        out = run.algorithm.predict(x)
    run.algorithm.train()
    return out


NAMES = ALGORITHMS.names()


@pytest.mark.parametrize("name", NAMES)
def test_update_returns_finite_scalar_losses(name, tmp_path):
    losses = update(build(name, tmp_path))
    assert isinstance(losses, dict) and losses
    for key, value in losses.items():
        value = torch.as_tensor(value)
        assert value.dim() == 0 and math.isfinite(float(value)), (key, value)


@pytest.mark.parametrize("name", NAMES)
def test_predict_gives_logits_per_class_on_the_run_device(name, tmp_path):
    run = build(name, tmp_path)
    logits = predict(run)
    assert logits.shape == (10, run.ds.num_classes)
    assert logits.device.type == torch.device(DEVICE).type
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_update_changes_parameters(name, tmp_path):
    run = build(name, tmp_path)
    before = {k: v.detach().clone() for k, v in run.algorithm.named_parameters()}
    update(run)
    changed = [k for k, v in run.algorithm.named_parameters() if not torch.equal(v, before[k])]
    assert changed, f"{name}.update changed no parameter"


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_state_round_trip(name, tmp_path):
    """state → bytes (as checkpoint.pt, weights_only) → a fresh instance: the same predictions
    now and after the next update, which must give the same losses."""
    run, fresh = build(name, tmp_path / "a"), build(name, tmp_path / "b")
    update(run)
    buf = io.BytesIO()
    torch.save(run.algorithm.checkpoint_state(), buf)
    buf.seek(0)
    fresh.algorithm.load_checkpoint_state(torch.load(buf, weights_only=True))
    assert torch.equal(predict(fresh), predict(run))
    a, b = update(run, 1), update(fresh, 1)
    assert {k: float(v) for k, v in a.items()} == {k: float(v) for k, v in b.items()}
    assert torch.equal(predict(fresh), predict(run))


def key(records):
    return [(r["step"], r["losses"], r["metrics"], r["stage"]) for r in records]


@pytest.mark.parametrize("name", NAMES)
def test_resumed_toy_run_equals_an_uninterrupted_one(name, run_toy, tmp_path):
    """A 2-epoch run killed after its last checkpoint but one (epoch 1; for a method whose
    stages lengthen the run, one in its final stage, so that resuming must restore that stage),
    then run again, gives the records of one never stopped; every method reaches its final stage."""
    dataset, hparams = tiny_config(name, tmp_path / "probe")
    kw = dict(dataset=dataset, dataset_args=TINY[dataset], hparams=hparams, epochs=2)
    _, whole = run_toy(name, name="whole", **kw)
    assert len(whole) >= 2
    with killed_after(whole[-2]["step"]):
        run_toy(name, name="cut", **kw)
    out, resumed = run_toy(name, name="cut", **kw)
    assert f"resumed from step {whole[-2]['step']}" in (out / "log.txt").read_text()
    assert key(resumed) == key(whole)
    assert whole[-1]["stage"] == whole[-1]["num_stages"] == ALGORITHMS.get(name).num_stages


def test_an_algorithm_no_tiny_dataset_fits_fails_by_name(tmp_path):
    class NoBackboneFits(ERM):
        def __init__(self, task, hparams):
            raise UserError("needs a backbone none of the tiny datasets has")

    with ALGORITHMS.temporary("NoBackboneFitsForContractTest", NoBackboneFits):
        with pytest.raises(pytest.fail.Exception, match="NoBackboneFitsForContractTest matches no"):
            tiny_config("NoBackboneFitsForContractTest", tmp_path)


def test_temporary_registrations_end_with_their_scope():
    with ALGORITHMS.temporary("ScopedForContractTest", ERM):
        assert "ScopedForContractTest" in ALGORITHMS.names()
    assert "ScopedForContractTest" not in ALGORITHMS and ERM.name == "ERM"
    with pytest.raises(UserError, match="unknown algorithm"):
        ALGORITHMS.get("ScopedForContractTest")
    with pytest.raises(KeyError), ALGORITHMS.temporary("ScopedForContractTest", ERM):
        raise KeyError("a failing test body")
    assert "ScopedForContractTest" not in ALGORITHMS


def test_test_modules_register_nothing_at_import():
    """test_packed's toy_lenet and ERM variants exist only while its own tests run."""
    import test_packed  # noqa: F401

    assert "toy_lenet" not in DATASETS
    assert not [n for n in ALGORITHMS.names() if n.endswith("ForPackTest")]
