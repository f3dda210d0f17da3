"""The multi-stage algorithms: JTT (docs/METHODS.md §A.5) and Chroma-VAE (§A.9, §B.5), and the
trainer's stage hook they rely on (weighted sampling switched on by a hook, restored on resume)."""
from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from domainbed_sc.algorithms import ALGORITHMS, TaskInfo
from domainbed_sc.algorithms.chroma_vae import RECONSTRUCTIONS_PNG, KNNClassifier
from domainbed_sc.algorithms.context import EpochContext
from domainbed_sc.algorithms.vae_nets import Decoder, Encoder
from domainbed_sc.collect.reader import read_runs
from domainbed_sc.collect.methods import METHODS
from domainbed_sc.collect.selection import select
from domainbed_sc.datasets.base import Batch, DatasetArgs, GroupDataset, TensorSplit
from domainbed_sc.errors import UserError
from domainbed_sc.hparams import draw
from domainbed_sc.training.records import CHECKPOINT, RESULTS, RunArgs, read_records
from domainbed_sc.training.run_dir import load_checkpoint
from domainbed_sc.training.samplers import RandomSampler, WeightedSampler, restore_sampler
from domainbed_sc.training.trainer import Run, RunOptions


# -- helpers ------------------------------------------------------------------------------
def make(name: str, input_shape=(2, 8, 8), steps_per_epoch=10, total_steps=100, **overrides):
    cls = ALGORITHMS.get(name)
    task = TaskInfo(2, 2, 4, 0, tuple(input_shape), (10, 2, 2, 10), steps_per_epoch, total_steps)
    return cls(task, draw(cls.space(), 0, True, {"arch": "mlp"}, overrides))


class Planted(GroupDataset):
    """One training split of given x, y, s (2 classes, 2 attributes); not registered."""

    name, num_classes, provides = "planted", 2, frozenset({"s", "g"})

    def __init__(self, x, y, s, **eval_splits):
        super().__init__(Path("."), DatasetArgs(), 0)
        self.input_shape = tuple(x.shape[1:])
        self.num_attributes = 2
        self.splits = {"train": TensorSplit(x, y, s, num_attributes=2),
                       **{k: TensorSplit(*v, num_attributes=2) for k, v in eval_splits.items()}}


def context(ds, epoch=0, final=False, out_dir=Path("."), eval_batch_size=7, batch_size=4,
            args=RunArgs("planted", epochs=10)):
    sampler = RandomSampler(len(ds.splits["train"]), batch_size, seed=3)
    return EpochContext(epoch, epoch * sampler.steps_per_epoch, final, ds, sampler,
                        torch.device("cpu"), eval_batch_size, out_dir, args=args)


def batch(x, y):
    minus = torch.full_like(y, -1)
    return Batch(x, y, minus, minus, minus, torch.arange(len(y)))


# -- the trainer's sampler swap -----------------------------------------------------------
def test_hook_sampler_swap_keeps_batch_and_epoch_and_is_restored():
    ds = Planted(torch.zeros(30, 1), torch.zeros(30, dtype=torch.long), torch.zeros(30, dtype=torch.long))
    ctx = context(ds, batch_size=4)
    weights = torch.arange(30).double()
    ctx.set_sample_weights(weights)
    assert isinstance(ctx.sampler, WeightedSampler)
    assert ctx.sampler.batch_size == 4 and ctx.sampler.steps_per_epoch == 7
    assert not bool((ctx.sampler.indices(5)[0] == 0).any())  # weight 0 is never drawn
    # a fresh run builds its configured RandomSampler; the checkpoint's weights turn it back
    restored = restore_sampler(RandomSampler(30, 4, seed=3), ctx.sampler.state_dict())
    assert isinstance(restored, WeightedSampler) and torch.equal(restored.weights, weights)
    assert all(torch.equal(restored.indices(t)[0], ctx.sampler.indices(t)[0]) for t in range(20))
    plain = RandomSampler(30, 4, seed=3)
    assert restore_sampler(plain, plain.state_dict()) is plain


# -- JTT ----------------------------------------------------------------------------------
def planted_jtt_data(n=50):
    """x_i = i, so a planted predictor can look predictions up; the minority groups are
    (y=0, s=1) and (y=1, s=0); the planted error set is every 7th example."""
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=gen)
    s = torch.where(torch.arange(n) % 5 == 0, 1 - y, y)
    errors = torch.arange(0, n, 7)
    ds = Planted(torch.arange(n).float()[:, None], y, s)
    return ds, errors


def plant_predictions(alg, ds, errors):
    """Eval-mode predictions are wrong exactly on ``errors``; train-mode ones are all right."""
    y = ds.splits["train"].y
    wrong = y.clone()
    wrong[errors] = 1 - wrong[errors]
    alg.predict = lambda x: F.one_hot((y if alg.training else wrong)[x[:, 0].long()], 2).float()


@pytest.mark.parametrize("mode, error_weight", [("official_1_plus", 21.0), ("spuco", 20.0)])
def test_jtt_stage2_weights_follow_the_count_mode(mode, error_weight):
    ds, errors = planted_jtt_data()
    alg = make("JTT", input_shape=(1,), jtt_T_fraction=0.2, jtt_lambda_up=20.0, jtt_count_mode=mode)
    assert alg.stage1_epochs == 2  # round(0.2 * 100 steps / 10 per epoch)
    plant_predictions(alg, ds, errors)
    for ctx in (context(ds, epoch=1), context(ds, epoch=3, final=True)):
        alg.on_epoch(ctx)  # before epoch T, and the final hook: still stage 1
        assert alg.error_set is None and isinstance(ctx.sampler, RandomSampler)
    ctx = context(ds, epoch=2)  # eval batches of 7: the whole split in several batches
    alg.on_epoch(ctx)
    assert torch.equal(alg.error_set, errors)
    expected = torch.ones(50, dtype=torch.double)
    expected[errors] = error_weight
    assert torch.equal(ctx.sampler.weights, expected)
    assert alg.training  # the eval-mode pass restored train mode
    assert alg.stage == 2


@pytest.mark.parametrize("mode, copies", [("official_1_plus", 50 + 20 * 8), ("spuco", 42 + 20 * 8)])
@pytest.mark.parametrize("args, epochs", [(RunArgs("planted", epochs=10), 10),
                                          (RunArgs("planted", epochs=2.5), 2.5),
                                          (RunArgs("planted", steps=70), None)])
def test_jtt_stage2_trains_the_whole_length_over_the_upsampled_set(mode, copies, args, epochs):
    """METHODS §A.5: a stage-2 epoch is ⌈(|D| + λ_up·|E|)/B⌉ steps (D once plus E λ_up times
    officially; SpuCo: the correct set once plus E λ_up times), for the run's --epochs, or its
    --steps in steps; 50 examples, |E| = 8, λ_up = 20, batch 4."""
    ds, errors = planted_jtt_data()
    alg = make("JTT", input_shape=(1,), jtt_lambda_up=20.0, jtt_count_mode=mode)
    plant_predictions(alg, ds, errors)
    ctx = context(ds, epoch=alg.stage1_epochs, args=args)
    alg.on_epoch(ctx)
    per_epoch = math.ceil(copies / 4)
    steps = 70 if epochs is None else round(epochs * per_epoch)
    assert len(errors) == 8 and ctx.extra["jtt_stage2_steps_per_epoch"] == per_epoch
    assert ctx.extra["jtt_stage2_steps"] == steps
    assert (ctx.schedule.total, ctx.schedule.origin_step) == (ctx.step + steps, ctx.step)
    assert ctx.schedule.epoch(ctx.step + per_epoch) == alg.stage1_epochs + 1


def test_jtt_logs_error_set_against_minority_groups():
    ds, errors = planted_jtt_data()
    alg = make("JTT", input_shape=(1,))
    plant_predictions(alg, ds, errors)
    ctx = context(ds, epoch=alg.stage1_epochs)
    alg.on_epoch(ctx)
    minority = (ds.splits["train"].s != ds.splits["train"].y)
    hits = int(minority[errors].sum())
    assert ctx.extra["jtt_error_set_size"] == len(errors)
    assert ctx.extra["jtt_stage1_train_acc"] == pytest.approx(1 - len(errors) / 50)
    assert ctx.extra["jtt_error_precision"] == pytest.approx(hits / len(errors))
    assert ctx.extra["jtt_error_recall"] == pytest.approx(hits / int(minority.sum()))
    assert 0 < hits < len(errors)  # the check distinguishes precision from recall


def test_jtt_restarts_from_the_initial_weights_with_a_fresh_optimizer():
    ds, _ = planted_jtt_data()
    alg = make("JTT", input_shape=(1,))
    initial = {k: v.clone() for k, v in alg.network.state_dict().items()}
    train = ds.splits["train"]
    for _ in range(3):
        alg.update([batch(train.fetch(torch.arange(20)).x, train.y[:20])])
    assert not torch.equal(alg.network.state_dict()["1.weight"], initial["1.weight"])
    old_optimizer = alg.optimizer
    alg.on_epoch(context(ds, epoch=alg.stage1_epochs))
    after = alg.network.state_dict()
    assert all(torch.equal(after[k], initial[k]) for k in initial)
    assert alg.optimizer is not old_optimizer and len(alg.optimizer.state) == 0


def test_jtt_plans_t_identification_epochs_before_the_final_models_length():
    """The official run: T = round(fraction · n_epochs) epochs, then n_epochs (METHODS §A.5); even
    a 1-epoch run gets its stage 2."""
    ds, _ = planted_jtt_data()  # 50 examples, batch 4: 12 steps per epoch
    alg = make("JTT", input_shape=(1,), steps_per_epoch=12, total_steps=12, jtt_T_fraction=0.4)
    assert alg.stage1_epochs == 1 and alg.stage == 1
    ctx = context(ds, epoch=0)
    alg.on_epoch(ctx)
    assert ctx.schedule.total == 12 + 12 and alg.stage == 1


class Killed(Exception):
    pass


def run_jtt(out_dir: Path, data_dir: Path, kill_at: int | None, monkeypatch) -> tuple[list, int]:
    """JTT on the toy data: 2 epochs of 8 steps, then stage 2 for 4 upsampled epochs (λ_up = 5),
    checkpoints every 4.  Returns the records (without wall times) and the step the run resumed
    from (0: none)."""
    args = RunArgs("toy", "JTT", hparams={"jtt_T_fraction": 0.5, "jtt_lambda_up": 5.0}, epochs=4,
                   checkpoint_freq=4)
    opts = RunOptions(out_dir, data_dir, "cpu", progress=False)
    if kill_at is not None:
        train_step = Run.train_step

        def dying(self, b):
            if self.step == kill_at:
                raise Killed
            train_step(self, b)

        with monkeypatch.context() as m:
            m.setattr(Run, "train_step", dying)
            with pytest.raises(Killed):
                Run(args, opts).execute()
    resumed_from = torch.load(out_dir / CHECKPOINT, weights_only=True)["step"] if kill_at else 0
    Run(args, opts).execute()
    records = [{k: v for k, v in r.items() if k != "wall_time"} for r in read_records(out_dir / RESULTS)]
    return records, resumed_from


@pytest.fixture(scope="module")
def jtt_reference(tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("jtt") / "ref"
    return out, run_jtt(out, out.parent, None, None)[0]


@pytest.mark.parametrize("kill_at, resumed_from", [(18, 16), (23, 20)])
def test_jtt_killed_run_resumes_in_the_right_stage(tmp_path, monkeypatch, jtt_reference,
                                                   kill_at, resumed_from):
    """Checkpoint 16 is the epoch boundary before the switch (the hook runs again on resume);
    checkpoint 20 is mid stage 2 (the sampler must come back weighted)."""
    ref_dir, reference = jtt_reference
    switch = next(r for r in reference if "jtt_error_set_size" in r["extra"])
    assert switch["step"] == 20 and switch["extra"]["jtt_error_set_size"] > 0

    resumed, step = run_jtt(tmp_path / "killed", tmp_path, kill_at, monkeypatch)
    assert step == resumed_from and resumed == reference
    ref_state = torch.load(ref_dir / CHECKPOINT, weights_only=True)
    state = torch.load(tmp_path / "killed" / CHECKPOINT, weights_only=True)
    error_set = state["algorithm"]["extra"]["error_set"]
    assert torch.equal(error_set, ref_state["algorithm"]["extra"]["error_set"])
    assert len(error_set) == switch["extra"]["jtt_error_set_size"]
    assert torch.equal(state["sampler"]["weights"], ref_state["sampler"]["weights"])
    assert state["sampler"]["weights"].max() == 6.0  # 1 + λ_up on E
    module, ref_module = state["algorithm"]["module"], ref_state["algorithm"]["module"]
    assert all(torch.equal(module[k], ref_module[k]) for k in module)


def test_jtt_records_name_their_stage_and_stage2_follows_the_upsampled_set(jtt_reference):
    """2 epochs of 8 steps (512 examples, batch 64), then 4 epochs of ⌈(512 + 5·|E|)/64⌉ steps."""
    _, reference = jtt_reference
    switch = next(r for r in reference if "jtt_error_set_size" in r["extra"])["extra"]
    per_epoch = math.ceil((512 + 5 * switch["jtt_error_set_size"]) / 64)
    assert switch["jtt_stage2_steps_per_epoch"] == per_epoch > 8
    assert switch["jtt_stage2_steps"] == 4 * per_epoch
    assert reference[-1]["step"] == 16 + 4 * per_epoch
    assert reference[-1]["epoch"] == pytest.approx(6.0)
    assert [(r["stage"], r["num_stages"]) for r in reference] == (
        [(1, 2)] * 4 + [(2, 2)] * (len(reference) - 4))  # checkpoints 4, 8, 12, 16 are stage 1


@pytest.mark.parametrize("method", sorted(METHODS))
def test_collect_selects_a_stage2_checkpoint_of_a_real_jtt_run(jtt_reference, method):
    ref_dir, _ = jtt_reference
    chosen = select(read_runs([ref_dir]).records, METHODS[method]).runs
    assert len(chosen) == 1 and chosen.step.iloc[0] > 16 and chosen.stage.iloc[0] == 2


# -- Chroma-VAE ---------------------------------------------------------------------------
class FixedEncoder(nn.Module):
    """Returns the given (μ, log σ²) whatever the input."""

    def __init__(self, mu, logvar):
        super().__init__()
        self.mu, self.logvar = mu, logvar

    def forward(self, x):
        return self.mu, self.logvar


class ZeroDecoder(nn.Module):
    """Logits 0 (Bernoulli means 1/2) for every latent."""

    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, z):
        return z.new_zeros(len(z), *self.shape)


@pytest.mark.parametrize("shape", [(2, 28, 28), (3, 32, 32), (1, 9, 13)])
def test_vae_nets_reconstruct_the_input_shape(shape):
    enc, dec = Encoder(shape, 6), Decoder(shape, 6)
    mu, logvar = enc(torch.rand(5, *shape))
    assert mu.shape == logvar.shape == (5, 6)
    assert dec(mu).shape == (5, *shape)
    with pytest.raises(UserError, match="at least 8×8"):
        Encoder((2, 4, 4), 6)


def test_chroma_loss_is_recon_plus_beta_kl_plus_lambda_ce():
    alg = make("ChromaVAE", chroma_zdim=4, chroma_zp=0.5, chroma_beta=0.5, chroma_lambda=10.0)
    n = 3
    mu = torch.ones(n, 4)  # KL per example: 0.5 * sum(mu² + 1 - 0 - 1) = 2
    alg.encoder = FixedEncoder(mu, torch.zeros(n, 4))
    alg.decoder = ZeroDecoder((2, 8, 8))  # p = 1/2 per pixel: BCE = log 2 each
    with torch.no_grad():
        alg.classifier.weight.zero_()
        alg.classifier.bias.copy_(torch.tensor([0.0, math.log(3)]))  # p(y=1) = 3/4
    y = torch.tensor([1, 1, 0])
    out = alg.update([batch(torch.rand(n, 2, 8, 8).round(), y)])
    recon, kl, ce = 128 * math.log(2), 2.0, -(2 * math.log(0.75) + math.log(0.25)) / 3
    assert float(out["recon"]) == pytest.approx(recon, rel=1e-5)
    assert float(out["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(out["ce"]) == pytest.approx(ce, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(recon + 0.5 * kl + 10 * ce, rel=1e-5)


def test_chroma_classifier_sees_only_z1():
    alg = make("ChromaVAE", chroma_zdim=8, chroma_zp=0.25)
    assert alg.d1 == 2
    mu = torch.randn(6, 8, requires_grad=True)
    alg.encoder = FixedEncoder(mu, torch.zeros(6, 8))
    F.cross_entropy(alg.predict(torch.zeros(6, 2, 8, 8)), torch.randint(0, 2, (6,))).backward()
    assert bool((mu.grad[:, :2] != 0).any()) and bool((mu.grad[:, 2:] == 0).all())
    # and the full stage-1 loss: its classification part never reaches μ₂
    x, y = torch.rand(6, 2, 8, 8), torch.randint(0, 2, (6,))
    alg = make("ChromaVAE", chroma_zdim=8, chroma_zp=0.25, chroma_lambda=1.0)
    mu, _ = alg.encoder(x)
    mu.retain_grad()
    F.cross_entropy(alg.classifier(mu[:, :alg.d1]), y).backward()
    assert bool((mu.grad[:, 2:] == 0).all())


def test_knn_uses_floor_sqrt_n_and_majority_vote():
    # query at 0: the nearest neighbour says 0, the 3 nearest say 1 (two votes), the 5 nearest 0
    bank = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 9.0, 9.1, 9.2, 9.3, 9.4])[:, None]
    labels = torch.tensor([0, 1, 1, 0, 0, 1, 1, 1, 1, 1])
    knn = KNNClassifier(1, 2)
    knn.fit(bank, labels)
    assert knn.k == 3  # floor(sqrt(10))
    votes = knn(torch.tensor([[0.0], [9.05]]))
    assert torch.allclose(votes, torch.tensor([[1 / 3, 2 / 3], [0.0, 1.0]]))
    # blocked distance computation gives the same votes as one block
    queries = torch.randn(50, 1) * 5
    small_blocks = KNNClassifier(1, 2, max_block=25)  # 2 queries per block
    small_blocks.fit(bank, labels)
    assert torch.equal(small_blocks(queries), knn(queries))


def chroma_data(n=40, shape=(2, 8, 8)):
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(0, 2, (n,), generator=gen)
    x = torch.rand(n, *shape, generator=gen)
    test = (torch.rand(10, *shape, generator=gen), torch.randint(0, 2, (10,), generator=gen))
    return Planted(x, y, y.clone(), test=test)


def fitted_chroma(tmp_path, kind, **overrides):
    alg = make("ChromaVAE", chroma_zdim=8, chroma_zp=0.25, chroma_stage2=kind,
               chroma_stage2_epochs=2, batch_size=16, **overrides)
    ds = chroma_data()
    train = ds.splits["train"]
    for _ in range(2):
        alg.update([batch(train.fetch(torch.arange(16)).x, train.y[:16])])
    ctx = context(ds, epoch=1, final=True, out_dir=tmp_path)
    alg.on_epoch(ctx)
    return alg, ctx


@pytest.mark.parametrize("kind", ["knn", "mlp", "xtilde"])
def test_chroma_stage2_sees_only_z2(tmp_path, kind):
    alg, ctx = fitted_chroma(tmp_path, kind)
    assert alg.stage == 2 and alg.training
    assert set(ctx.extra["chroma_z1_acc"]) == {"train", "test"}
    assert {"chroma_colour_shift_z1", "chroma_colour_shift_z2"} <= set(ctx.extra)
    alg.eval()
    mu = torch.randn(12, 8) * 3
    alg.encoder = FixedEncoder(mu, torch.zeros(12, 8))
    x = torch.zeros(12, 2, 8, 8)
    before = alg.predict(x)
    mu[:, :2] = torch.randn(12, 2) * 10  # change μ₁ only
    assert torch.equal(alg.predict(x), before)
    changed = []
    for _ in range(5):
        mu[:, 2:] = torch.randn(12, 6) * 3
        changed.append(not torch.equal(alg.predict(x), before))
    assert any(changed)  # μ₂ does matter


def test_chroma_knn_bank_is_the_training_means(tmp_path):
    alg, _ = fitted_chroma(tmp_path, "knn")
    train = chroma_data().splits["train"]
    with torch.no_grad():
        mu = alg.encoder(train.fetch(torch.arange(len(train))).x)[0]
    assert torch.allclose(alg.stage2.bank, mu[:, alg.d1:]) and torch.equal(alg.stage2.labels, train.y)
    assert alg.stage2.k == 6  # floor(sqrt(40))


def test_chroma_writes_the_partial_reconstruction_grid(tmp_path):
    fitted_chroma(tmp_path, "knn")
    image = Image.open(tmp_path / RECONSTRUCTIONS_PNG)
    # make_grid: 8 columns × 3 rows of 8×8 images with 2-px padding
    assert image.size == (8 * 10 + 2, 3 * 10 + 2) and image.mode == "RGB"
    blue = torch.tensor(list(image.getdata()))[:, 2]
    assert int(blue.max()) == 0  # CMNIST has no blue: the padded channel is zero


@pytest.mark.parametrize("kind", ["knn", "mlp"])
def test_chroma_state_round_trip(tmp_path, kind):
    alg, _ = fitted_chroma(tmp_path, kind)
    buf = io.BytesIO()
    torch.save(alg.checkpoint_state(), buf)
    buf.seek(0)
    fresh = make("ChromaVAE", chroma_zdim=8, chroma_zp=0.25, chroma_stage2=kind,
                 chroma_stage2_epochs=2, batch_size=16)
    assert fresh.stage == 1
    fresh.load_checkpoint_state(torch.load(buf, weights_only=True))
    assert fresh.stage == 2
    x = torch.rand(9, 2, 8, 8)
    alg.eval()
    fresh.eval()
    assert torch.equal(fresh.predict(x), alg.predict(x))


def test_chroma_bernoulli_rejects_pixels_outside_unit_range(tmp_path):
    alg = make("ChromaVAE")
    ds = chroma_data()
    ds.splits["train"].x -= 0.5
    with pytest.raises(UserError, match=r"pixels in \[0, 1\]"):
        alg.on_epoch(context(ds, epoch=0))
    make("ChromaVAE", chroma_likelihood="gaussian").on_epoch(context(ds, epoch=0))


def test_chroma_trains_through_the_trainer(run_toy):
    out, records = run_toy("ChromaVAE", epochs=2,
                           hparams={"chroma_likelihood": "gaussian", "chroma_zdim": 8})
    assert [r["step"] for r in records] == [4, 8]  # batch 128 on 512 examples
    assert "chroma_z1_acc" in records[-1]["extra"] and "chroma_z1_acc" not in records[0]["extra"]
    assert {"recon", "kl", "ce"} <= set(records[-1]["losses"])
    assert (out / RECONSTRUCTIONS_PNG).exists()
    state = load_checkpoint(out / CHECKPOINT, torch.device("cpu"), logging.getLogger())["algorithm"]
    assert state["extra"]["stage"] == 2 and len(state["module"]["stage2.bank"]) == 512
    assert [(r["stage"], r["num_stages"]) for r in records] == [(1, 2), (2, 2)]


def test_chroma_final_stage_record_evaluates_the_z2_classifier(run_toy):
    """The final (stage-2) record's metrics are the z2-classifier's, not C(μ₁)'s."""
    out, records = run_toy("ChromaVAE", epochs=2,
                           hparams={"chroma_likelihood": "gaussian", "chroma_zdim": 8})
    final = records[-1]
    run = Run(RunArgs(**final["args"]), RunOptions(out, out.parent / "data", "cpu", progress=False))
    run.try_resume()  # the finished run's model, in stage 2
    alg = run.algorithm.eval()
    differ = False
    for name, split in run.ds.splits.items():
        with torch.no_grad():
            mu = alg.encoder(split.x)[0]
            z2 = (alg.stage2(mu[:, alg.d1:]).argmax(1) == split.y).double().mean().item()
            z1 = (alg.classifier(mu[:, :alg.d1]).argmax(1) == split.y).double().mean().item()
        assert final["metrics"][name]["acc"] == pytest.approx(z2)
        assert final["extra"]["chroma_z1_acc"][name] == pytest.approx(z1)
        differ |= z1 != pytest.approx(z2)
    assert differ  # so the check tells the two classifiers apart


# -- real data ----------------------------------------------------------------------------
@pytest.mark.real_data
def test_jtt_on_cmnist_finds_the_minority_groups(real_data_dir, tmp_path):
    args = RunArgs("cmnist", "JTT", hparams={"arch": "mlp", "batch_size": 512}, steps=150,
                   checkpoint_freq=50)
    run = Run(args, RunOptions(tmp_path / "jtt", real_data_dir, "cpu", progress=False))
    out = run.execute()
    records = list(read_records(out / RESULTS))
    switch = next(r["extra"] for r in records if "jtt_error_set_size" in r["extra"])
    # stage 1 learns the colour: its errors are mostly the colour-label disagreeing groups
    assert switch["jtt_error_set_size"] > 1000
    assert switch["jtt_error_precision"] > 0.6 and switch["jtt_error_recall"] > 0.5
    # --steps 150: stage 2 trains 150 steps after the identification epoch(s)
    assert switch["jtt_stage2_steps"] == 150 and records[-1]["stage"] == 2
    stage1_steps = switch["jtt_stage2_epoch"] * (len(run.ds.splits["train"].y) // 512)
    assert records[-1]["step"] == stage1_steps + 150


@pytest.mark.real_data
def test_chroma_vae_on_cmnist_chroma(real_data_dir, tmp_path):
    """A short run: too short for colour to leave z2 (so no D_out claim), long enough for C to
    learn the colour from μ₁ and for the colour to sit mostly in the z1 block.  The stage-2 MLP
    keeps it short: exact kNN over 54k training means costs minutes on a CPU."""
    args = RunArgs("cmnist", "ChromaVAE", dataset_args={"variant": "chroma"}, steps=100,
                   checkpoint_freq=100, hparams={"chroma_stage2": "mlp", "chroma_stage2_epochs": 1})
    out = Run(args, RunOptions(tmp_path / "chroma", real_data_dir, "cpu", progress=False)).execute()
    final = list(read_records(out / RESULTS))[-1]
    assert final["step"] == 100 and (out / RECONSTRUCTIONS_PNG).exists()
    state = load_checkpoint(out / CHECKPOINT, torch.device("cpu"), logging.getLogger())["algorithm"]
    assert state["extra"]["stage"] == 2
    z1 = final["extra"]["chroma_z1_acc"]  # colour agrees with y on 90 % in D_in, 10 % in D_out
    assert z1["test_in"] > 0.8 and z1["test_out"] < 0.3
    assert final["extra"]["chroma_colour_shift_z1"] > 2 * final["extra"]["chroma_colour_shift_z2"]
    assert final["metrics"]["test_in"]["acc"] > 0.6 and final["metrics"]["test_out"]["n"] == 10000
