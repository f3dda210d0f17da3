"""The loss each DomainBed-family algorithm and JTT steps on, against references written here
from the papers' formulas (harness: ``loss_reference.py``).

ERM [DB], GroupDRO (group mode [GDRO ``loss.py``], env mode [DB]), IRMv1 [IRM, DB], DANN and
CDANN [DB ``AbstractDANN``], CORAL and MMD [DB ``AbstractMMD``], JTT's two stages [JTT].
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import autograd

from domainbed_sc.algorithms import TaskInfo
from loss_reference import SGD, ce, check_update, make, make_batch
from test_algorithms_multistage import Planted, context

SHAPE = (2, 4, 4)


def task(classes=2, attributes=2, envs=2, counts=None) -> TaskInfo:
    groups = classes * attributes
    return TaskInfo(classes, attributes, groups, envs, SHAPE, counts or (10,) * groups, 10, 100)


def inputs(n: int, seed: int, scale=1.0, shift=0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=gen) * scale + shift


def logits(m, x):
    return m.classifier(m.featurizer(x))


# -- ERM --------------------------------------------------------------------------------------
def test_erm_steps_on_the_mean_cross_entropy():
    alg = make("ERM", task(), **SGD)
    b = make_batch(inputs(8, 0, scale=3.0), [0, 1, 1, 0, 1, 1, 1, 0])
    check_update(alg, [b], lambda m: {"ce": ce(logits(m, b.x), b.y).mean()})


@pytest.mark.parametrize("wrong, message", [
    (lambda loss: {"ce": -loss}, "stepped loss's value"),
    (lambda loss: {"ce": loss, "nothing": 0 * loss}, "term nothing does not matter"),
])
def test_the_check_rejects_a_wrong_reference(wrong, message):
    """The harness itself can fail: a flipped loss, or a term that changes nothing."""
    alg = make("ERM", task(), **SGD)
    b = make_batch(inputs(8, 0, scale=3.0), [0, 1, 1, 0, 1, 1, 1, 0])
    with pytest.raises(AssertionError, match=message):
        check_update(alg, [b], lambda m: wrong(ce(logits(m, b.x), b.y).mean()))


# -- GroupDRO ---------------------------------------------------------------------------------
@pytest.mark.parametrize("C", [0, 2])
def test_group_dro_steps_on_the_updated_q_times_the_group_losses(C):
    """GDRO ``loss.py``: q_g ∝ q_g·exp(η(ℓ_g + C/√n_g)) with ℓ_g = 0 for absent groups, then
    L = Σ_g q_g ℓ_g; the adjustment moves q only."""
    counts, eta = (40, 10, 4, 40), 0.7
    alg = make("GroupDRO", task(counts=counts), groupdro_eta=eta, groupdro_C=C, **SGD)
    y, s = torch.tensor([0, 0, 1, 1, 1, 0, 0, 1, 1]), torch.tensor([0, 1, 1, 1, 1, 0, 1, 1, 1])
    b = make_batch(inputs(9, 1, scale=4.0), y, s)  # group 2 (y=1, s=0) is absent

    def reference(m):
        per = ce(logits(m, b.x), b.y)
        ell = [per[b.g == k].mean() if (b.g == k).any() else per.new_zeros(()) for k in range(4)]
        q = [0.25 * math.exp(eta * (ell[k].item() + C / math.sqrt(counts[k]))) for k in range(4)]
        return {f"group {k}": q[k] / sum(q) * ell[k] for k in (0, 1, 3)}

    check_update(alg, [b], reference)


def test_group_dro_env_mode_steps_on_domainbeds_environment_weights():
    """DomainBed ``GroupDRO``: q = 1, q_m *= exp(η·loss_m), q /= Σq, loss = q·losses."""
    eta = 0.5
    alg = make("GroupDRO", task(envs=3), groupdro_mode="env", sampler="uniform_env",
               groupdro_eta=eta, **SGD)
    envs = [make_batch(inputs(6, 10 + k, scale=1 + 2 * k), [0, 1, 1, 0, 0, 1], e=[k] * 6)
            for k in range(3)]

    def reference(m):
        losses = [ce(logits(m, b.x), b.y).mean() for b in envs]
        q = [math.exp(eta * loss.item()) for loss in losses]
        return {f"env {k}": q[k] / sum(q) * losses[k] for k in range(3)}

    check_update(alg, envs, reference)


# -- IRM --------------------------------------------------------------------------------------
def risk_slope(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d/dw of mean CE(w·z, y) at w = 1, by hand: mean_i (Σ_c softmax(z_i)_c z_ic − z_{i,y_i})."""
    return ((z.softmax(1) * z).sum(1) - z.gather(1, y[:, None])[:, 0]).mean()


@pytest.mark.parametrize("anneal, weight", [(5, 1.0), (0, 30.0)])
def test_irm_steps_on_risk_plus_weighted_half_batch_gradient_products(anneal, weight):
    """IRMv1 as DomainBed: mean_e R^e + λ_t·mean_e ∂R^e_even/∂w·∂R^e_odd/∂w; λ_t = 1 before
    the anneal step, irm_lambda from it on."""
    alg = make("IRM", task(), irm_lambda=30.0, irm_penalty_anneal_iters=anneal, **SGD)
    envs = [make_batch(inputs(8, 20 + k, scale=3.0 - k), [0, 1, 1, 0, 1, 0, 0, 0], e=[k] * 8)
            for k in range(2)]

    def reference(m):
        terms = {}
        for k, b in enumerate(envs):
            z = logits(m, b.x)
            terms[f"risk {k}"] = ce(z, b.y).mean() / 2
            slopes = risk_slope(z[::2], b.y[::2]) * risk_slope(z[1::2], b.y[1::2])
            terms[f"penalty {k}"] = weight * slopes / 2
        return terms

    check_update(alg, envs, reference)


# -- DANN / CDANN -----------------------------------------------------------------------------
LAMBDA, GAMMA = 0.7, 0.5


def dann_reference(m, b, conditional: bool, generator: bool):
    """DomainBed ``AbstractDANN``: L_D = CE(D(φ(x) [+ emb(y)]), e) (CDANN: each class weighs
    the same) + γ·mean_i ‖∂ΣCE/∂input_i‖²; generator CE(h(φ(x)), y) − λ·L_D."""
    z = m.featurizer(b.x)
    if not generator:
        z = z.detach().requires_grad_()
    disc_in = z + m.class_embeddings(b.y) if conditional else z
    per = ce(m.discriminator(disc_in), b.e)
    if conditional:  # the mean over classes of each class's mean loss
        classes = b.y.unique()
        disc = sum(per[b.y == k].mean() for k in classes) / len(classes)
    else:
        disc = per.mean()
    grad, = autograd.grad(per.sum(), disc_in, create_graph=True)
    penalty = grad.pow(2).sum(1).mean()
    if generator:
        return {"class": ce(m.classifier(z), b.y).mean(), "disc": -LAMBDA * disc,
                "penalty": -LAMBDA * GAMMA * penalty}
    return {"disc": disc, "penalty": GAMMA * penalty}


@pytest.mark.parametrize("name", ["DANN", "CDANN"])
@pytest.mark.parametrize("generator", [True, False], ids=["generator", "discriminator"])
def test_dann_steps_on_domainbeds_losses(name, generator):
    # update 1 is a generator step with d_steps_per_g_step = 1, a discriminator step with 2
    alg = make(name, task(envs=3), d_steps_per_g_step=1 if generator else 2, grad_penalty=GAMMA,
               mlp_width=16, mlp_depth=3, mlp_dropout=0.0, lr_g=0.01, lr_d=0.02,
               **{"lambda": LAMBDA})
    # y imbalanced (CDANN's weights matter) and unrelated to e (a target mix-up shows)
    ys = [[0, 0, 1, 0, 0, 0], [1, 0, 0, 0, 1, 0], [0, 0, 0, 1, 0, 0]]
    envs = [make_batch(inputs(6, 30 + k, scale=2.0), ys[k], e=[k] * 6) for k in range(3)]
    b = make_batch(torch.cat([x.x for x in envs]), sum(ys, []), e=torch.arange(3).repeat_interleave(6))
    stepped = ("featurizer.", "classifier.") if generator else ("discriminator.", "class_embeddings.")
    check_update(alg, envs, lambda m: dann_reference(m, b, name == "CDANN", generator), stepped)


# -- CORAL / MMD ------------------------------------------------------------------------------
def coral(a, b):
    """Deep CORAL as DomainBed: mean squared difference of the means and of the covariances."""
    return (a.mean(0) - b.mean(0)).pow(2).mean() + (torch.cov(a.T) - torch.cov(b.T)).pow(2).mean()


def mmd(a, b):
    """Biased MMD² with DomainBed's kernel Σ_γ exp(−γ‖u − v‖²), γ ∈ {1e-3, ..., 1e3}."""
    def k(u, v):
        d = (u[:, None] - v[None]).pow(2).sum(-1)
        return sum(torch.exp(-g * d) for g in (1e-3, 1e-2, 1e-1, 1, 10, 100, 1000)).mean()
    return k(a, a) + k(b, b) - 2 * k(a, b)


@pytest.mark.parametrize("name, discrepancy", [("CORAL", coral), ("MMD", mmd)])
def test_coral_mmd_step_on_risk_plus_gamma_times_mean_pair_discrepancy(name, discrepancy):
    gamma = 3.0
    alg = make(name, task(envs=3), mmd_gamma=gamma, **SGD)
    envs = [make_batch(inputs(6, 40 + k, scale=1 + k, shift=k), [0, 1, 0, 1, 1, 0], e=[k] * 6)
            for k in range(3)]

    def reference(m):
        feats = [m.featurizer(b.x) for b in envs]
        terms = {f"risk {k}": ce(m.classifier(f), b.y).mean() / 3
                 for k, (f, b) in enumerate(zip(feats, envs))}
        for i, j in ((0, 1), (0, 2), (1, 2)):
            terms[f"pair {i}{j}"] = gamma * discrepancy(feats[i], feats[j]) / 3
        return terms

    check_update(alg, envs, reference)


# -- JTT --------------------------------------------------------------------------------------
def test_jtt_both_stages_step_on_erm_from_the_same_initial_weights():
    """JTT: stage 1 is ERM; stage 2 is ERM again from the initial weights (the upsampling is
    in the sampler, not the loss)."""
    alg = make("JTT", task(), jtt_T_fraction=0.2, jtt_lambda_up=5.0, **SGD)  # T = 2 epochs
    initial = {n: p.detach().clone() for n, p in alg.named_parameters()}
    x, y = inputs(12, 50, scale=3.0), torch.tensor([0, 1] * 6)
    ds = Planted(x, y, torch.tensor([0, 0, 1] * 4))
    b = make_batch(x[:8], y[:8])
    erm = lambda m: {"ce": ce(logits(m, b.x), b.y).mean()}
    check_update(alg, [b], erm)
    check_update(alg, [b], erm)
    alg.float()  # the split's x is float32; the restart loads the (float) initial weights anyway
    alg.on_epoch(context(ds, epoch=2))
    alg.double()
    assert all(torch.equal(p, initial[n]) for n, p in alg.named_parameters())
    check_update(alg, [b], erm)
