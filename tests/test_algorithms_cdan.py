"""CDAN (docs/METHODS.md §A.10): the multilinear map, CDAN+E's entropy weights and the generator
loss, each against a hand-written reference on a tiny fixed batch, and the alternating steps'
sides."""
from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from domainbed_sc.algorithms import ALGORITHMS, TaskInfo
from domainbed_sc.algorithms.cdan import entropy_weights, multilinear_map
from domainbed_sc.datasets.base import Batch
from domainbed_sc.hparams import draw

SHAPE = (2, 4, 4)


def make(**overrides):
    cls = ALGORITHMS.get("CDAN")
    hp = draw(cls.space(), 0, True, {"arch": "mlp"}, {"mlp_width": 16, **overrides})
    torch.manual_seed(0)
    task = TaskInfo(num_classes=2, num_attributes=2, num_groups=4, num_envs=2, input_shape=SHAPE,
                    train_group_counts=(1, 1, 1, 1), steps_per_epoch=10, total_steps=100)
    return cls(task, hp)


def fixed_batch() -> Batch:
    """6 examples, environments of unequal size (4 and 2), so per-environment weights matter."""
    gen = torch.Generator().manual_seed(3)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    e = torch.tensor([0, 0, 0, 0, 1, 1])
    return Batch(torch.randn(6, *SHAPE, generator=gen), y, y, 2 * y, e, torch.arange(6))


def softmax_rows(logits):
    out = []
    for row in logits:
        exps = [math.exp(v) for v in row.tolist()]
        out.append([v / sum(exps) for v in exps])
    return out


def entropy_weights_by_hand(probs, envs):
    w = [1 + math.exp(sum(p * math.log(p + 1e-5) for p in row)) for row in probs]
    env_ids = sorted(set(envs))
    totals = {k: sum(wi for wi, ei in zip(w, envs) if ei == k) for k in env_ids}
    return [wi / totals[ei] / len(env_ids) for wi, ei in zip(w, envs)]


def captured_disc_inputs(alg):
    seen = []
    alg.discriminator.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    return seen


def test_multilinear_map_is_the_outer_product_by_hand():
    f = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
    g = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    expected = [[gc * fj for gc in row_g for fj in row_f] for row_f, row_g in zip(f.tolist(), g.tolist())]
    assert multilinear_map(f, g).tolist() == expected


def test_the_discriminator_sees_f_outer_g():
    alg = make()
    b = fixed_batch()
    with torch.no_grad():
        f = alg.featurizer(b.x)
        probs = softmax_rows(alg.classifier(f))
    seen = captured_disc_inputs(alg)
    alg.update([b])
    by_hand = torch.tensor([[pc * fj for pc in p for fj in row] for p, row in zip(probs, f.tolist())])
    assert alg.discriminator[0].in_features == 2 * alg.featurizer.n_outputs
    assert torch.allclose(seen[0], by_hand, atol=1e-6)


def test_randomized_map_by_hand_and_its_matrices_are_fixed():
    alg = make(cdan_random_dim=8)
    b = fixed_batch()
    r_f, r_g = alg.random_f.clone(), alg.random_g.clone()
    with torch.no_grad():
        f = alg.featurizer(b.x)
        probs = torch.tensor(softmax_rows(alg.classifier(f)))
    seen = captured_disc_inputs(alg)
    alg.update([b])
    by_hand = torch.tensor([[sum(f[i, j] * r_f[j, k] for j in range(f.shape[1]))
                             * sum(probs[i, c] * r_g[c, k] for c in range(2)) / math.sqrt(8)
                             for k in range(8)] for i in range(6)])
    assert alg.discriminator[0].in_features == 8
    assert torch.allclose(seen[0], by_hand, atol=1e-5)
    alg.update([b])
    assert torch.equal(alg.random_f, r_f) and torch.equal(alg.random_g, r_g)
    assert {"random_f", "random_g"} <= set(alg.state_dict())  # checkpointed with the model


def test_entropy_weights_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.99, 0.01], [0.3, 0.7], [0.6, 0.4]])
    e = torch.tensor([0, 0, 0, 1, 1])
    weights = entropy_weights(probs, e)
    assert weights.tolist() == pytest.approx(entropy_weights_by_hand(probs.tolist(), e.tolist()), rel=1e-6)
    assert float(weights[e == 1].sum()) == pytest.approx(0.5)
    assert weights[2] > weights[0] > weights[1]  # confident predictions weigh more


def generator_loss_by_hand(alg, b, lam):
    """CE − λ·Σ_i w_i CE_D,i with g detached in T and w (entropy weights) kept in the graph."""
    f = alg.featurizer(b.x)
    logits = alg.classifier(f)
    log_p = logits.log_softmax(1)
    probs = log_p.exp()
    ce = -sum(log_p[i, b.y[i]] for i in range(len(b))) / len(b)
    rows = [torch.stack([probs[i, c].detach() * f[i, j] for c in range(2) for j in range(f.shape[1])])
            for i in range(len(b))]
    log_d = alg.discriminator(torch.stack(rows)).log_softmax(1)
    w = [1 + torch.exp((probs[i] * torch.log(probs[i] + 1e-5)).sum()) for i in range(len(b))]
    totals = {k: sum(float(w[i].detach()) for i in range(len(b)) if b.e[i] == k) for k in (0, 1)}
    disc = sum(w[i] / (2 * totals[int(b.e[i])]) * -log_d[i, b.e[i]] for i in range(len(b)))
    return ce - lam * disc


def test_generator_loss_value_and_featurizer_gradient_match_a_hand_written_reference():
    alg = make(cdan_entropy=True, **{"lambda": 0.7})
    reference = copy.deepcopy(alg)
    b = fixed_batch()
    passed = []
    alg.step = passed.append  # the generator step's loss, before any parameter moves
    out = alg.update([b])
    assert out["disc_step"] == 0.0 and len(passed) == 1
    expected = generator_loss_by_hand(reference, b, 0.7)
    assert passed[0].item() == pytest.approx(expected.item(), rel=1e-5)
    passed[0].backward()
    expected.backward()
    for p, q in zip(alg.featurizer.parameters(), reference.featurizer.parameters()):
        assert p.grad.abs().sum() > 0 and torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("detach", [True, False])
def test_detach_g_decides_whether_the_adversary_reaches_the_classifier(detach):
    alg = make(cdan_detach_g=detach)
    _, disc_loss = alg.losses(fixed_batch(), disc_step=False)
    disc_loss.backward()
    reached = any(p.grad is not None and p.grad.abs().sum() > 0 for p in alg.classifier.parameters())
    assert reached == (not detach)


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_discriminator_step_moves_only_the_discriminator():
    alg = make(cdan_entropy=True, cdan_random_dim=8, d_steps_per_g_step=1)
    b = fixed_batch()
    alg.update([b])  # t = 1: generator step
    before = {m: params(m) for m in (alg.featurizer, alg.classifier, alg.discriminator)}
    buffers = [alg.random_f.clone(), alg.random_g.clone()]
    assert alg.update([b])["disc_step"] == 1.0
    moved = {m: any(not torch.equal(x, y) for x, y in zip(before[m], m.parameters())) for m in before}
    assert moved == {alg.featurizer: False, alg.classifier: False, alg.discriminator: True}
    assert torch.equal(alg.random_f, buffers[0]) and torch.equal(alg.random_g, buffers[1])


def test_randomized_state_round_trip():
    alg = make(cdan_random_dim=8, cdan_entropy=True)
    alg.update([fixed_batch()])
    buf = io.BytesIO()
    torch.save(alg.checkpoint_state(), buf)
    buf.seek(0)
    torch.manual_seed(9)  # other random matrices and weights, which the checkpoint replaces
    fresh = ALGORITHMS.get("CDAN")(alg.task, alg.hparams)
    assert not torch.equal(fresh.random_f, alg.random_f)
    fresh.load_checkpoint_state(torch.load(buf, weights_only=True))
    alg.update([fixed_batch()])
    fresh.update([fixed_batch()])
    assert all(torch.equal(p, q) for p, q in zip(alg.state_dict().values(), fresh.state_dict().values()))
