"""The DomainBed-family baselines: GroupDRO, IRM, DANN/CDANN, CORAL and MMD (and CDAN, whose
own properties are in test_algorithms_cdan.py).

Each defining property is checked on tiny hand-made batches (2×8×8 inputs, the MLP backbone),
then every algorithm runs through the trainer on the toy dataset and, briefly, on real CMNIST.
"""
from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from domainbed_sc.algorithms import ALGORITHMS, TaskInfo
from domainbed_sc.algorithms.coral_mmd import coral_discrepancy, mmd_discrepancy
from domainbed_sc.algorithms.irm import irm_penalty
from domainbed_sc.datasets.base import Batch
from domainbed_sc.datasets.toy import Toy
from domainbed_sc.errors import UserError
from domainbed_sc.hparams import draw
from domainbed_sc.training.records import RESULTS, RunArgs, read_records
from domainbed_sc.training.trainer import RunOptions, train

ALL = ["GroupDRO", "IRM", "DANN", "CDANN", "CDAN", "CORAL", "MMD"]
SHAPE = (2, 8, 8)


def task(num_envs=2, group_counts=(40, 10, 10, 40)) -> TaskInfo:
    return TaskInfo(num_classes=2, num_attributes=2, num_groups=4, num_envs=num_envs,
                    input_shape=SHAPE, train_group_counts=group_counts, steps_per_epoch=10,
                    total_steps=100)


def make(name, info=None, **overrides):
    cls = ALGORITHMS.get(name)
    hparams = draw(cls.space(), 0, True, {"arch": "mlp"}, overrides)
    torch.manual_seed(0)
    return cls(info or task(), hparams)


def batch(groups, env=0, scale=1.0, seed=0) -> Batch:
    """One example per entry of ``groups`` (g = 2y + s), random inputs times ``scale``."""
    g = torch.as_tensor(groups)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(g), *SHAPE, generator=gen) * torch.as_tensor(scale).reshape(-1, 1, 1, 1)
    return Batch(x, g // 2, g % 2, g, torch.full_like(g, env), torch.arange(len(g)))


def env_batches(n=16, seeds=(0, 1)) -> list[Batch]:
    return [batch(torch.arange(n) % 4, env=k, seed=s) for k, s in enumerate(seeds)]


def params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before, module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


# -- GroupDRO ---------------------------------------------------------------------------------
def group_losses_now(alg, b: Batch, ids, n) -> torch.Tensor:
    with torch.no_grad():
        losses = F.cross_entropy(alg.predict(b.x), b.y, reduction="none")
    return torch.stack([losses[ids == k].mean() if (ids == k).any() else losses.new_zeros(())
                        for k in range(n)])


def test_group_dro_q_moves_to_the_high_loss_group_as_exp_of_summed_losses():
    # a negligible lr keeps the network fixed, so q after k steps is softmax(η·k·ℓ)
    alg = make("GroupDRO", lr=1e-12, groupdro_eta=0.1)
    groups = torch.arange(32) % 4
    b = batch(groups, scale=torch.where(groups == 3, 30.0, 0.1))  # huge logits: group 3 pays
    ell = group_losses_now(alg, b, b.g, 4)
    assert int(ell.argmax()) == 3 and ell[3] > 2 * ell[:3].max()
    for _ in range(5):
        alg.update([b])
    assert int(alg.q.argmax()) == 3 and alg.q[3] > 0.25
    torch.testing.assert_close(alg.q, torch.softmax(0.1 * 5 * ell, 0), rtol=1e-4, atol=1e-6)


def test_group_dro_loss_is_q_weighted_group_losses_with_absent_groups_at_zero():
    alg = make("GroupDRO", groupdro_eta=0.5)
    b = batch([0, 0, 1, 3, 3, 3, 1, 0])  # group 2 absent
    ell = group_losses_now(alg, b, b.g, 4)
    q = torch.full((4,), 0.25) * torch.exp(0.5 * ell)
    q = q / q.sum()
    out = alg.update([b])
    assert ell[2] == 0
    torch.testing.assert_close(alg.q, q)
    torch.testing.assert_close(out["loss"], (q * ell).sum())


def test_group_dro_adjustment_favours_small_groups():
    counts = (1000, 10, 10, 1000)
    b = batch(torch.arange(16) % 4)
    plain = make("GroupDRO", task(group_counts=counts), groupdro_eta=0.1)
    adjusted = make("GroupDRO", task(group_counts=counts), groupdro_eta=0.1, groupdro_C=3)
    plain.update([b])
    adjusted.update([b])
    ratio = adjusted.q / plain.q  # same network, same losses: only the adjustment differs
    bonus = torch.exp(0.1 * 3 / torch.tensor(counts, dtype=torch.float).sqrt())
    torch.testing.assert_close(ratio / ratio[0], bonus / bonus[0])
    assert ratio[1] > ratio[0] and ratio[2] > ratio[3]


def test_group_dro_env_mode_weights_environments():
    alg = make("GroupDRO", task(num_envs=3), groupdro_mode="env", sampler="uniform_env",
               groupdro_eta=0.1)
    groups = torch.arange(8) % 4
    envs = [batch(groups, env=0, scale=30.0), batch(groups, env=1, seed=1, scale=0.1),
            batch(groups, env=2, seed=2, scale=0.1)]
    ell = torch.stack([F.cross_entropy(alg.predict(b.x), b.y) for b in envs]).detach()
    out = alg.update(envs)
    assert alg.q.shape == (3,) and int(alg.q.argmax()) == 0
    q = torch.softmax(0.1 * ell, 0)  # DomainBed: q starts at 1, q_m *= exp(η loss_m), normalise
    torch.testing.assert_close(alg.q, q)
    torch.testing.assert_close(out["loss"], (q * ell).sum())


def test_group_dro_requirements_follow_the_mode():
    cls = ALGORITHMS.get("GroupDRO")
    assert cls.required_labels({"groupdro_mode": "group"}) == {"g"}
    assert cls.required_labels({"groupdro_mode": "env"}) == {"e"}
    with pytest.raises(UserError, match="sampler=uniform_env"):
        make("GroupDRO", groupdro_mode="env")  # the group-mode default sampler would not fit


# -- IRM --------------------------------------------------------------------------------------
def test_irm_penalty_vanishes_at_the_optimal_scale_only():
    # logits (0, log 3): p(y=1) = 3/4, and each half has 3 of 4 labels = 1, so dR/dw = 0 there
    logits = torch.tensor([[0.0, math.log(3)]] * 8, requires_grad=True)
    y = torch.tensor([1, 1, 1, 1, 1, 1, 0, 0])
    penalty = lambda z, labels: float(irm_penalty(z, labels).detach())
    assert abs(penalty(logits, y)) < 1e-7
    for factor in (0.3, 3.0):  # under- and over-confident: both halves want the same rescaling
        assert penalty(logits * factor, y) > 1e-3
    # a product of the halves' gradients, not a square: halves pulling apart give a negative value
    assert penalty(logits, torch.tensor([1, 0, 1, 0, 1, 0, 1, 1])) < -1e-3
    irm_penalty(logits * 3.0, y).backward()  # the penalty is trainable through the logits
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_irm_loss_weight_anneals_and_optimizer_is_recreated_exactly_then():
    alg = make("IRM", irm_penalty_anneal_iters=3, irm_lambda=50.0)
    envs = env_batches()
    ids, outs = [], []
    for _ in range(5):
        outs.append(alg.update(envs))
        ids.append(id(alg.optimizer))
    assert ids[0] == ids[1] == ids[2] != ids[3] == ids[4]  # new at update_count == 3
    for i, out in enumerate(outs):
        weight = 50.0 if i >= 3 else 1.0
        torch.testing.assert_close(out["loss"], out["nll"] + weight * out["penalty"])
    steps = [float(s["step"]) for s in alg.optimizer.state.values()]
    assert steps and all(s == 2 for s in steps)  # fresh Adam state at the switch
    assert int(alg.update_count) == 5


def test_irm_splits_a_single_batch_by_environment():
    """With another sampler than uniform_env, per-environment risks come from the e labels."""
    a, b = make("IRM"), make("IRM")
    envs = env_batches()
    out_envs = a.update(envs)
    out_single = b.update([Batch.cat(envs)])
    torch.testing.assert_close(out_envs["penalty"], out_single["penalty"])


# -- DANN / CDANN -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["DANN", "CDANN"])
def test_dann_alternation_follows_domainbed(name):
    alg = make(name, d_steps_per_g_step=2)
    kinds = [alg.update(env_batches())["disc_step"] for _ in range(6)]
    # DomainBed increments the counter first: t = 1..6, disc iff t % 3 < 2
    assert kinds == [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    assert int(alg.update_count) == 6


@pytest.mark.parametrize("name", ["DANN", "CDANN"])
def test_dann_each_step_moves_only_its_side(name):
    alg = make(name, d_steps_per_g_step=1)  # t=1 generator, t=2 discriminator
    disc = [alg.discriminator] + ([alg.class_embeddings] if name == "CDANN" else [])
    gen = [alg.featurizer, alg.classifier]
    for expect_disc in (0.0, 1.0):
        before = {m: params(m) for m in disc + gen}
        out = alg.update(env_batches())
        assert out["disc_step"] == expect_disc
        moved, still = (disc, gen) if expect_disc else (gen, disc)
        assert all(changed(before[m], m) for m in moved)
        assert not any(changed(before[m], m) for m in still)


def test_dann_discriminator_loss_includes_the_gradient_penalty():
    plain = make("DANN", grad_penalty=0.0)
    penalised = make("DANN", grad_penalty=10.0)
    assert plain.update(env_batches())["disc_loss"] < penalised.update(env_batches())["disc_loss"]


def test_dann_rejects_settings_it_cannot_honour():
    with pytest.raises(UserError, match="lr_milestones"):
        make("DANN", lr_milestones=[1])


# -- CORAL / MMD ------------------------------------------------------------------------------
@pytest.mark.parametrize("discrepancy", [coral_discrepancy, mmd_discrepancy])
def test_discrepancy_is_zero_for_equal_distributions_positive_otherwise(discrepancy):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(64, 5, generator=gen)
    assert abs(float(discrepancy(a, a))) < 1e-6
    assert abs(float(discrepancy(a, a[torch.randperm(64, generator=gen)]))) < 1e-6
    assert float(discrepancy(a, a + 1.0)) > 1e-3  # shifted mean
    centred = a - a.mean(0)
    assert float(discrepancy(centred, 3 * centred)) > 1e-3  # same mean, larger covariance


@pytest.mark.parametrize("name", ["CORAL", "MMD"])
def test_mmd_family_penalty_through_update(name):
    same = make(name).update([batch(torch.arange(16) % 4, env=k) for k in range(2)])
    assert abs(float(same["penalty"])) < 1e-6  # identical inputs in both environments
    differ = make(name).update([batch(torch.arange(16) % 4, env=k, scale=1 + 3 * k, seed=k)
                                for k in range(2)])
    assert float(differ["penalty"]) > 1e-4


# -- all: checkpoints, the trainer, real data -------------------------------------------------
def round_trip(alg):
    buf = io.BytesIO()
    torch.save(alg.checkpoint_state(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("name", ALL)
def test_state_survives_a_checkpoint_round_trip(name):
    extra = {"IRM": {"irm_penalty_anneal_iters": 2}}.get(name, {})
    alg = make(name, **extra)
    for _ in range(3):
        alg.update(env_batches())
    state = round_trip(alg)
    fresh = make(name, **extra)
    fresh.load_checkpoint_state(state)
    for key, value in alg.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key  # q, update_count, weights
    torch.manual_seed(1)
    out_a = alg.update(env_batches(seeds=(5, 6)))
    torch.manual_seed(1)
    out_b = fresh.update(env_batches(seeds=(5, 6)))
    assert {k: float(v) for k, v in out_a.items()} == {k: float(v) for k, v in out_b.items()}
    assert all(torch.equal(p, q) for p, q in zip(alg.parameters(), fresh.parameters()))


@pytest.mark.parametrize("name", ALL)
def test_runs_end_to_end_on_toy(run_toy, name):
    _, records = run_toy(name, epochs=2)
    # batch 64: uniform_group draws from all 512 examples, uniform_env from 256 per environment
    steps_per_epoch = 8 if name == "GroupDRO" else 4
    assert [r["step"] for r in records] == [steps_per_epoch, 2 * steps_per_epoch]
    last = records[-1]
    assert last["args"]["algorithm"] == name
    assert last["hparams"]["sampler"] == ("uniform_group" if name == "GroupDRO" else "uniform_env")
    assert all(math.isfinite(v) for v in last["losses"].values())
    assert last["metrics"]["test"]["n"] == 256  # the whole toy test split was evaluated


def test_domainbed_erm_trains_on_one_minibatch_per_environment_concatenated(run_toy, monkeypatch):
    """DomainBed's ERM (sampler uniform_env): 64 examples from each environment, one step on all."""
    erm = ALGORITHMS.get("ERM")
    per_step, predict = [], erm.predict

    def spy_update(self, batches):
        per_step.append(sorted(int(b.e.unique()) for b in batches))
        return update(self, batches)

    def spy_predict(self, x):
        if self.training:
            per_step[-1].append(len(x))
        return predict(self, x)

    update = erm.update
    monkeypatch.setattr(erm, "update", spy_update)
    monkeypatch.setattr(erm, "predict", spy_predict)
    _, records = run_toy("ERM", epochs=1, hparams={"sampler": "uniform_env"})
    assert records[-1]["step"] == 4 == len(per_step)  # 256 examples per environment / 64
    assert all(s == [0, 1, 128] for s in per_step)


@pytest.fixture
def toy_without(monkeypatch):
    def _remove(label):
        monkeypatch.setattr(Toy, "provides", Toy.provides - {label})
    return _remove


@pytest.mark.parametrize("name, label, hparams, message", [
    ("GroupDRO", "g", {}, "group labels"),
    ("GroupDRO", "e", {"groupdro_mode": "env", "sampler": "uniform_env"}, "environment labels"),
    ("IRM", "e", {}, "environment labels"),
    ("DANN", "e", {}, "environment labels"),
    ("CORAL", "e", {}, "environment labels"),
])
def test_missing_labels_are_user_errors(run_toy, toy_without, name, label, hparams, message):
    toy_without(label)
    with pytest.raises(UserError, match=f"{name} .*needs {message}"):
        run_toy(name, epochs=1, hparams=hparams)


@pytest.mark.real_data
@pytest.mark.parametrize("name", ALL)
def test_short_cmnist_run(real_data_dir, tmp_path, name):
    # the MLP backbone: evaluating all 70k images with mnist_cnn takes minutes on a CPU
    args = RunArgs(dataset="cmnist", algorithm=name, steps=20, checkpoint_freq=20,
                   hparams={"arch": "mlp"})
    out = train(args, RunOptions(tmp_path / name, real_data_dir, "cpu", progress=False))
    (record,) = read_records(out / RESULTS)
    assert record["step"] == 20
    assert record["dataset"]["num_envs"] == 2
    assert set(record["metrics"]) == {"train", "val", "oracle_val", "test"}
    assert all(math.isfinite(v) for v in record["losses"].values())
