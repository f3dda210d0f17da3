"""DL (docs/METHODS.md §A.6), RCL (§A.8) and eX2L (§A.7): their losses on hand-made tensors, their
gradients, state round trips, toy runs through the trainer (with resume), and short real-data smoke
runs."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from fixtures_run import killed_after

from domainbed_sc.algorithms import ALGORITHMS, TaskInfo
from domainbed_sc.algorithms.dissimilarity import cosine_matrix, masked_mean, pair_mask
from domainbed_sc.algorithms.gradcam import class_logits, grad_cam, target_score
from domainbed_sc.algorithms.heatmap_similarity import SIMILARITIES
from domainbed_sc.algorithms.rcl import minmax_scale, nearest_triplets, reverse_contrastive_loss
from domainbed_sc.cli import json_arg
from domainbed_sc.datasets import DATASETS
from domainbed_sc.datasets.base import Batch
from domainbed_sc.errors import UserError
from domainbed_sc.hparams import draw
from domainbed_sc.training.packed import train_packed
from domainbed_sc.training.records import DONE, RESULTS, RunArgs, read_records
from domainbed_sc.training.trainer import Run, RunOptions, train

SMALL_TOY = {"n_train": 64, "n_test": 32}


def make(name, arch="mnist_cnn", input_shape=(2, 8, 8), classes=2, attributes=2, seed=0,
         steps_per_epoch=4, **overrides):
    cls = ALGORITHMS.get(name)
    hp = draw(cls.space(), 0, True, {"arch": arch}, overrides)
    groups = classes * attributes
    task = TaskInfo(classes, attributes, groups, 0, input_shape, (1,) * groups, steps_per_epoch, 100)
    torch.manual_seed(seed)
    return cls(task, hp)


def batch(x, y, s, attributes=2):
    y, s = torch.as_tensor(y), torch.as_tensor(s)
    return Batch(x, y, s, y * attributes + s, torch.full_like(y, -1), torch.arange(len(y)))


def random_batch(n=8, shape=(2, 8, 8), seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    s = (torch.arange(n) // 2) % 2
    return batch(torch.randn(n, *shape, generator=gen), y, s)


def pairs_of(mask):
    return {(i, j) for i, j in mask.nonzero().tolist()}


# -- DL -------------------------------------------------------------------------------------
Y = torch.tensor([0, 0, 0, 1, 1, 0])
S = torch.tensor([0, 0, 1, 1, 1, 0])


def test_dl_pair_mask_supervised_and_no_bg():
    sim = torch.zeros(6, 6)
    same_y_s = {(i, j) for i in range(6) for j in range(6)
                if i != j and Y[i] == Y[j] and S[i] == S[j]}
    same_y = {(i, j) for i in range(6) for j in range(6) if i != j and Y[i] == Y[j]}
    assert pairs_of(pair_mask(sim, Y, S, "supervised", 0.001)) == same_y_s
    assert same_y_s == {(0, 1), (1, 0), (0, 5), (5, 0), (1, 5), (5, 1), (3, 4), (4, 3)}
    assert pairs_of(pair_mask(sim, Y, S, "no_bg", 0.001)) == same_y
    assert len(same_y) == 4 * 3 + 2 * 1


def test_dl_threshold_mask_keeps_same_label_pairs_above_one_minus_tau():
    sim = torch.full((6, 6), 0.5)
    sim[0, 2] = sim[2, 0] = 0.9995   # same label, above 1 - 0.001
    sim[0, 1] = sim[1, 0] = 0.998    # same label, below
    sim[0, 3] = sim[3, 0] = 0.9999   # above, but different labels
    sim.fill_diagonal_(1.0)          # self-pairs never count
    sim.requires_grad_()
    assert pairs_of(pair_mask(sim, Y, S, "threshold", 0.001)) == {(0, 2), (2, 0)}
    assert pairs_of(pair_mask(sim, Y, S, "threshold", 0.01)) == {(0, 2), (2, 0), (0, 1), (1, 0)}


def test_dl_loss_is_mean_cosine_over_pairs_by_hand():
    z = torch.randn(6, 5, generator=torch.Generator().manual_seed(1)).abs()
    sim = cosine_matrix(z)
    for variant in ("supervised", "no_bg"):
        mask = pair_mask(sim, Y, S, variant, 0.001)
        cosines = [float(z[i] @ z[j] / (z[i].norm() * z[j].norm())) for i, j in pairs_of(mask)]
        assert masked_mean(sim, mask).item() == pytest.approx(sum(cosines) / len(cosines), rel=1e-5)


def test_dl_loss_is_zero_without_pairs_and_differentiable():
    z = torch.randn(4, 3, requires_grad=True)
    y, s = torch.arange(4), torch.zeros(4, dtype=torch.long)  # all labels distinct: M is empty
    sim = cosine_matrix(z)
    loss = masked_mean(sim, pair_mask(sim, y, s, "supervised", 0.001))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(z.grad) == 0


def test_dl_gradient_reaches_the_featurizer_only_through_the_embedding():
    alg = make("DL", arch="lenet5", input_shape=(3, 32, 32), classes=2, attributes=2)
    b = batch(torch.rand(8, 3, 32, 32), [0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0, 1, 1])
    z = alg.featurizer(b.x)
    sim = cosine_matrix(z)
    masked_mean(sim, pair_mask(sim, b.y, b.s, "supervised", 0.001)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in alg.featurizer.parameters())
    assert all(p.grad is None for p in alg.classifier.parameters())


def test_dl_update_logs_pairs_and_the_threshold_variant_needs_no_s():
    cls = ALGORITHMS.get("DL")
    assert cls.required_labels({"dl_variant": "supervised"}) == {"s"}
    assert cls.required_labels({"dl_variant": "threshold"}) == set()
    assert cls.required_labels({"dl_variant": "no_bg"}) == set()
    alg = make("DL", arch="mlp")
    out = alg.update([batch(torch.randn(4, 2, 8, 8), [0, 0, 1, 1], [0, 0, 0, 1])])
    assert out["pairs"].item() == 2 and out["loss"].item() == pytest.approx(
        out["ce"].item() + 1.25 * out["dis"].item(), rel=1e-6)


def test_dl_requirement_follows_the_variant(run_toy):
    toy = DATASETS.get("toy")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(toy, "provides", frozenset({"e"}))
        with pytest.raises(UserError, match="needs spurious-attribute labels"):
            run_toy("DL", dataset_args=SMALL_TOY, epochs=1)
        _, records = run_toy("DL", name="thr", dataset_args=SMALL_TOY, epochs=1,
                             hparams={"dl_variant": "threshold"})
    assert records[-1]["hparams"]["dl_variant"] == "threshold"


def test_dl_lr_steps_down_at_epochs_5_and_8():
    alg = make("DL", arch="mlp", steps_per_epoch=2)
    b = random_batch()
    lrs = []
    for _ in range(16):
        alg.update([b])
        lrs.append(alg.optimizer.param_groups[0]["lr"])
    assert lrs[8] == pytest.approx(1e-3) and lrs[9] == pytest.approx(1e-4)  # after step 10
    assert lrs[14] == pytest.approx(1e-4) and lrs[15] == pytest.approx(1e-5)  # after step 16


# -- RCL ------------------------------------------------------------------------------------
def rcl_features():
    """Anchor 0's nearest positive is 2 by L1 (1.9 < 2.2) but 1 by L2 (1.56 < 1.9)."""
    f = torch.tensor([[0.0, 0.0],    # 0, class 0
                      [1.0, 1.2],    # 1, class 0
                      [1.9, 0.0],    # 2, class 0
                      [0.0, -2.5],   # 3, class 1
                      [5.0, 5.0],    # 4, class 1
                      [-9.0, 0.0]])  # 5, class 2: no positive
    return f, torch.tensor([0, 0, 0, 1, 1, 2])


def test_rcl_picks_nearest_l1_positive_and_negative():
    f, y = rcl_features()
    t = nearest_triplets(f, y)
    assert t.pos[:5].tolist() == [2, 2, 0, 4, 3]
    assert t.neg.tolist() == [3, 3, 3, 0, 1, 0]
    assert t.d_pos[:5].tolist() == pytest.approx([1.9, 2.1, 1.9, 12.5, 12.5])
    assert t.d_neg.tolist() == pytest.approx([2.5, 4.7, 4.4, 2.5, 7.8, 9.0])
    assert t.has_pos.tolist() == [True] * 5 + [False] and bool(t.has_neg.all())


def test_rcl_margin_condition_removes_anchors_and_inf_keeps_all():
    f, y = rcl_features()
    t = nearest_triplets(f, y)
    assert t.active(math.inf).tolist() == [True] * 5 + [False]
    # d_pos/d_neg = 0.76, 0.45, 0.43, 5.0, 1.60
    assert t.active(0.5).tolist() == [False, True, True, False, False, False]
    assert t.active(0.2).tolist() == [False] * 6
    # a negative at distance 0 must not make the unconditional push NaN (inf * 0)
    t0 = nearest_triplets(torch.zeros(4, 3), torch.tensor([0, 0, 1, 1]))
    assert t0.active(math.inf).all()


def test_rcl_positive_is_detached_gradient_flows_through_anchors_only():
    f, y = rcl_features()
    f.requires_grad_()
    loss = reverse_contrastive_loss(f, y, math.inf, "sum")
    loss.backward()
    t = nearest_triplets(f, y)
    expected = torch.zeros_like(f)
    for i in range(5):  # ℓ_i = -|f_i - sg(f_p)|_1: d/df_i = -sign(f_i - f_p) / B, nothing to f_p
        expected[i] = -torch.sign(f[i] - f[t.pos[i]]).detach() / len(f)
    assert torch.equal(f.grad, expected)
    pushes = [-(f[i] - f[t.pos[i]]).abs().sum().item() for i in range(5)]
    assert loss.item() == pytest.approx(sum(pushes) / 6)
    mean = reverse_contrastive_loss(f.detach(), y, math.inf, "mean")
    assert mean.item() == pytest.approx(loss.item() / 2)


def test_rcl_minmax_scaling_is_scalar_and_in_the_graph():
    f = torch.tensor([[1.0, 3.0], [5.0, 2.0]], requires_grad=True)
    scaled = minmax_scale(f)
    assert torch.allclose(scaled, torch.tensor([[0.0, 0.5], [1.0, 0.25]]))
    scaled[0, 1].backward()  # (3 - lo) / (hi - lo): hi = f[1,0] and lo = f[0,0] get gradient
    assert f.grad[1, 0].item() == pytest.approx(-2 / 16)
    assert f.grad[0, 0].item() == pytest.approx(-1 / 4 + 2 / 16)
    assert f.grad[0, 1].item() == pytest.approx(1 / 4) and f.grad[1, 1].item() == 0


def test_rcl_needs_a_conv_body():
    with pytest.raises(UserError, match="RCL needs a convolutional backbone"):
        make("RCL", arch="mlp")


# -- eX2L: Grad-CAM -------------------------------------------------------------------------
def test_gradcam_alpha_is_a_constant():
    """score = W_t · mean(A²): α depends on A, so a second-order graph would change dH/dA."""
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
    W = torch.randn(5, 3, generator=gen)
    target = torch.tensor([1, 4])
    out = (A ** 2).mean((2, 3)) @ W.T
    H = grad_cam(A, out, target)
    alpha = (2 * W[target] * A.detach().mean((2, 3)) / 16)[:, :, None, None]
    pre = (alpha * A.detach()).sum(1)
    assert H.shape == (2, 4, 4) and torch.allclose(H, pre.clamp_min(0), atol=1e-6)
    H.sum().backward()
    assert torch.allclose(A.grad, alpha * (pre > 0)[:, None].float(), atol=1e-6)


def test_single_logit_rule():
    z = torch.tensor([[2.0], [-1.0], [0.5]])
    t = torch.tensor([1, 1, 0])
    assert target_score(z, t).tolist() == [2.0, -1.0, -0.5]
    assert F.cross_entropy(class_logits(z), t).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(z[:, 0], t.float()).item(), rel=1e-6)
    assert class_logits(z).argmax(1).tolist() == [1, 0, 1]
    k_way = torch.tensor([[0.1, 0.7, 0.2]])
    assert target_score(k_way, torch.tensor([2])).item() == pytest.approx(0.2)
    assert class_logits(k_way) is k_way


# -- eX2L: similarity functions -------------------------------------------------------------
BINARY = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
MAXIMUM = {"mae": 0, "mse": 0, "rmse": 0, "soft_iou": 1, "kl": 0, "js_divergence": 0,
           "js_distance": 0, "cosine": 1, "ncc": 1, "ssim": 1, "soft_dice": 1}


def test_all_eleven_similarities_are_registered():
    assert set(SIMILARITIES) == set(MAXIMUM)


@pytest.mark.parametrize("name", sorted(MAXIMUM))
def test_identical_maps_give_maximal_similarity(name):
    sim = SIMILARITIES[name]
    assert sim(BINARY, BINARY).item() == pytest.approx(MAXIMUM[name], abs=2e-4)
    other = torch.tensor([[[1.0, 0.2], [0.0, 0.4]]])
    assert sim(BINARY, other).item() < sim(BINARY, BINARY).item()


@pytest.mark.parametrize("name", sorted(MAXIMUM))
def test_similarities_are_per_sample_and_scale_invariant(name):
    gen = torch.Generator().manual_seed(3)
    f, g = torch.rand(3, 5, 5, generator=gen), torch.rand(3, 5, 5, generator=gen)
    sim = SIMILARITIES[name]
    values = sim(f, g)
    assert values.shape == (3,)
    assert torch.allclose(values, torch.cat([sim(f[i:i + 1], g[i:i + 1]) for i in range(3)]))
    assert torch.allclose(sim(7 * f, 0.5 * g), values, atol=1e-5)


RAMP = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])        # min-max: 0, 1/3, 2/3, 1
REVERSED = torch.tensor([[[3.0, 2.0], [1.0, 0.0]]])    # min-max: 1, 2/3, 1/3, 0
P_F, P_G = [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]  # L1 of [1, 2, 3, 4] and [4, 3, 2, 1]


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _js(p, q):
    m = [(a + b) / 2 for a, b in zip(p, q)]
    return (_kl(p, m) + _kl(q, m)) / 2


@pytest.mark.parametrize("name, f, g, expected", [
    ("mae", RAMP, REVERSED, -2 / 3),                   # |diff| = 1, 1/3, 1/3, 1
    ("mse", RAMP, REVERSED, -5 / 9),                   # (1 + 1/9 + 1/9 + 1) / 4
    ("rmse", RAMP, REVERSED, -math.sqrt(5 / 9)),
    ("soft_iou", RAMP, REVERSED, 1 / 8),               # Σfg = 4/9 over 2 + 2 - 4/9
    ("soft_dice", RAMP, REVERSED, 2 / 9),              # 2·4/9 over 4
    ("cosine", RAMP, REVERSED, 2 / 7),                 # (0·3 + 1·2 + 2·1 + 3·0) / 14
    ("ncc", RAMP, REVERSED, -1.0),
    ("ncc", RAMP, 5 * RAMP + 2, 1.0),
    ("ssim", RAMP, REVERSED, (-10 / 27 + 9e-4) / (10 / 27 + 9e-4)),  # l = 1; σ² = 5/27 = -σ_fg
    ("kl", RAMP + 1, REVERSED + 1, -_kl(P_G, P_F)),
    ("js_divergence", RAMP + 1, REVERSED + 1, -_js(P_F, P_G)),
    ("js_distance", RAMP + 1, REVERSED + 1, -math.sqrt(_js(P_F, P_G))),
])
def test_similarity_values_by_hand(name, f, g, expected):
    assert SIMILARITIES[name](f, g).item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_similarities_have_finite_gradients_on_flat_maps():
    """An all-zero ReLU heatmap is common early on; no function may turn it into NaN."""
    for name, sim in SIMILARITIES.items():
        f = torch.zeros(2, 3, 3, requires_grad=True)
        g = torch.rand(2, 3, 3)
        sim(f, g).sum().backward()
        assert torch.isfinite(f.grad).all(), name


# -- eX2L: the algorithm --------------------------------------------------------------------
@pytest.mark.parametrize("arch, shape, hw", [("mnist_cnn", (2, 28, 28), (14, 14)),
                                             ("resnet18", (3, 64, 64), (2, 2))])
def test_ex2l_heatmaps_have_the_body_map_shape(arch, shape, hw):
    alg = make("eX2L", arch=arch, input_shape=shape)
    t = alg.objective(random_batch(4, shape))
    assert t.h_f.shape == t.h_g.shape == (4, *hw)
    assert torch.isfinite(t.sim)


def test_ex2l_on_cmnist_shaped_input_with_resnet50_upsamples_to_a_7x7_layer4_map():
    """METHODS §C.13: 28×28 into ResNet-50 gives a 1×1 layer4 map; input_resize 224 gives 7×7."""
    alg = make("eX2L", arch="resnet50", input_shape=(2, 28, 28), input_resize=224)
    assert alg.label_model.featurizer.body[1][0].in_channels == 2  # conv1 adapted to 2 channels
    t = alg.objective(random_batch(2, (2, 28, 28)))
    assert t.h_f.shape == t.h_g.shape == (2, 7, 7)
    resnet_body = alg.label_model.featurizer.body[1].eval()  # the body behind the Resize
    with torch.no_grad():
        assert resnet_body(torch.zeros(1, 2, 28, 28)).shape[-2:] == (1, 1)


@pytest.mark.parametrize("sim_grad", ["both", "label_only"])
def test_ex2l_similarity_gradient(sim_grad):
    alg = make("eX2L", input_shape=(2, 16, 16), ex2l_sim_grad=sim_grad)
    alg.objective(random_batch(8, (2, 16, 16))).sim.backward()
    grads = lambda m: [p.grad for p in m.parameters()]
    label, conf = alg.label_model, alg.confounder_model
    assert any(g is not None and g.abs().sum() > 0 for g in grads(label.featurizer))
    # α is a constant, so the heads (which enter H only through α) get nothing from Sim
    assert all(g is None for g in grads(label.head) + grads(conf.head))
    conf_moved = any(g is not None and g.abs().sum() > 0 for g in grads(conf.featurizer))
    assert conf_moved == (sim_grad == "both")


def test_ex2l_predicts_with_the_label_model_only():
    alg = make("eX2L")
    x = random_batch().x
    before = alg.predict(x)
    with torch.no_grad():
        for p in alg.confounder_model.parameters():
            p.add_(1.0)
    assert torch.equal(alg.predict(x), before) and before.shape == (8, 2)


def test_ex2l_binary_heads_have_one_logit_by_default_and_k_way_on_request():
    alg = make("eX2L")
    assert alg.label_model.head.out_features == 1 and alg.confounder_model.head.out_features == 1
    out = alg.update([random_batch()])
    assert all(math.isfinite(float(v)) for v in out.values())
    assert alg.predict(random_batch().x).shape == (8, 2)
    k_way = make("eX2L", ex2l_single_logit=False)
    assert k_way.label_model.head.out_features == 2 and k_way.confounder_model.head.out_features == 2
    assert make("eX2L", classes=3).label_model.head.out_features == 3


def _bce_by_hand(z, t):
    p = [1 / (1 + math.exp(-v)) for v in z.tolist()]
    return -sum(math.log(q) if y else math.log(1 - q) for q, y in zip(p, t.tolist())) / len(p)


def test_ex2l_single_logit_loss_is_bce_and_the_gradcam_target_is_plus_minus_z():
    alg = make("eX2L", input_shape=(2, 16, 16))
    b = random_batch(8, (2, 16, 16))
    t = alg.objective(b)
    with torch.no_grad():
        z_f, z_g = alg.label_model(b.x)[1][:, 0], alg.confounder_model(b.x)[1][:, 0]
    assert t.ce.item() == pytest.approx(_bce_by_hand(z_f, b.y), rel=1e-5)
    assert t.ce_confounder.item() == pytest.approx(_bce_by_hand(z_g, b.s), rel=1e-5)
    # Grad-CAM by hand: α from ∂z/∂A, the map's sign set by the label (z for 1, −z for 0)
    maps, out = alg.label_model(b.x)
    alpha = torch.autograd.grad(out.sum(), maps)[0].mean((2, 3), keepdim=True)
    cam_z = (alpha * maps).sum(1).detach()
    sign = (2 * b.y - 1).float()[:, None, None]
    assert torch.allclose(t.h_f, (sign * cam_z).clamp_min(0), atol=1e-6)
    flipped = alg.objective(Batch(b.x, 1 - b.y, b.s, b.g, b.e, b.idx))
    assert torch.allclose(flipped.h_f, (-sign * cam_z).clamp_min(0), atol=1e-6)
    assert (cam_z != 0).any() and not torch.allclose(flipped.h_f, t.h_f)


def test_ex2l_has_two_sgd_optimizers_with_their_own_lr_and_wd():
    alg = make("eX2L", lr=0.01, weight_decay=0.0, confounder_lr=0.002, confounder_weight_decay=0.1)
    assert isinstance(alg.optimizer, torch.optim.SGD)
    assert alg.optimizer.param_groups[0]["momentum"] == 0.9
    assert (alg.optimizer.param_groups[0]["lr"], alg.confounder_optimizer.param_groups[0]["lr"]) == (0.01, 0.002)
    assert alg.confounder_optimizer.param_groups[0]["weight_decay"] == 0.1
    assert alg.hparams["sampler"] == "uniform_group" and alg.hparams["batch_size"] == 128
    assert ALGORITHMS.get("eX2L").requires == {"s", "g"}


# -- all three: state round trip, trainer runs, resume --------------------------------------
NAMES = ["DL", "RCL", "eX2L"]


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_state_round_trip(name):
    a, b = make(name), make(name, seed=1)
    data = random_batch()
    a.update([data])
    a.update([data])
    b.load_checkpoint_state(copy.deepcopy(a.checkpoint_state()))
    a.update([data])
    b.update([data])  # equal only if the optimizers' momentum state came back too
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", NAMES)
def test_toy_run_resumes_like_an_uninterrupted_run(run_toy, name):
    kw = dict(dataset_args=SMALL_TOY, hparams={"arch": "mnist_cnn", "batch_size": 16})
    _, whole = run_toy(name, name="whole", epochs=2, **kw)
    with killed_after(4):  # stopped right after its epoch-1 checkpoint, then run again
        run_toy(name, name="cut", epochs=2, **kw)
    _, resumed = run_toy(name, name="cut", epochs=2, **kw)
    key = lambda recs: [(r["step"], r["losses"], r["metrics"]) for r in recs]
    assert key(resumed) == key(whole) and [r["step"] for r in whole] == [4, 8]
    assert {"loss", "ce"} < set(whole[-1]["losses"])
    assert all(math.isfinite(v) for v in whole[-1]["losses"].values())


def test_rcl_infinite_margin_survives_the_records_and_resumes(run_toy, tmp_path):
    """m = ∞ is a configuration value, not an undefined metric: records are strict JSON and still
    give it back as inf, and the run dir's identity (hashed with inf) lets the run resume."""
    hparams = json_arg('{"arch": "mnist_cnn", "batch_size": 32, "rcl_margin": Infinity}')
    RunArgs("toy", "RCL", hparams=hparams).dir_name()  # the run id hashes inf without error
    with killed_after(2):  # one epoch is 2 steps here
        run_toy("RCL", dataset_args=SMALL_TOY, epochs=2, hparams=hparams)
    out, records = run_toy("RCL", dataset_args=SMALL_TOY, epochs=2, hparams=hparams)
    assert [r["step"] for r in records] == [2, 4]
    assert records[-1]["hparams"]["rcl_margin"] == math.inf
    assert records[-1]["args"]["hparams"]["rcl_margin"] == math.inf
    assert "Infinity" not in (out / "results.jsonl").read_text()  # strict JSON


class _Loss(torch.nn.Module):
    """functional_call calls a module's forward; this forward is the algorithm's loss."""

    def __init__(self, alg):
        super().__init__()
        self.alg = alg

    def forward(self, b):
        return self.alg.loss([b])[0]


@pytest.mark.parametrize("name", ["DL", "RCL"])
def test_loss_is_pure_under_vmap_over_stacked_runs(name):
    """Packed training vmaps ``loss`` over runs; it must equal each run's own loss."""
    runs = [make(name, arch="lenet5", input_shape=(3, 32, 32), seed=k) for k in range(3)]
    params, _ = torch.func.stack_module_state([_Loss(a) for a in runs])
    data = [random_batch(8, (3, 32, 32), seed=k) for k in range(3)]
    stacked = Batch(*(torch.stack(ts) for ts in zip(*(vars(b).values() for b in data))))
    # ERM's network reuses the featurizer and classifier modules: no tie handling needed
    call = lambda p, *fields: torch.func.functional_call(_Loss(runs[0]), p, (Batch(*fields),),
                                                         tie_weights=False)
    packed = torch.func.vmap(call)(params, *vars(stacked).values())
    assert torch.allclose(packed, torch.stack([a.loss([b])[0] for a, b in zip(runs, data)]), atol=1e-5)


def test_rcl_trains_packed_like_separate_runs(tmp_path):
    kw = dict(dataset="toy", algorithm="RCL", dataset_args=SMALL_TOY, epochs=1,
              hparams={"arch": "mnist_cnn", "batch_size": 16})
    opts = lambda name: RunOptions(tmp_path / name, tmp_path / "data", "cpu", progress=False)
    dirs = train_packed([(RunArgs(trial_seed=t, **kw), opts(f"pack{t}")) for t in (0, 1)])
    for t, out in enumerate(dirs):
        ref = train(RunArgs(trial_seed=t, **kw), opts(f"ref{t}"))
        (got,), (want,) = read_records(out / RESULTS), read_records(ref / RESULTS)
        # rc sums |differences| over 2048 features: float noise of the packed convs shows ~1e-4
        assert got["losses"] == pytest.approx(want["losses"], rel=1e-3)
        assert got["metrics"]["test"]["acc"] == pytest.approx(want["metrics"]["test"]["acc"], abs=1e-4)


# -- real data: a few steps through the trainer's own pieces --------------------------------
def _real_steps(data_dir, tmp_path, dataset, algorithm, steps=3, **kw):
    """A few training steps of a real run, its mean losses and its logits on 64 eval images
    (a full evaluation of these splits takes minutes on CPU)."""
    run = Run(RunArgs(dataset, algorithm, steps=steps, **kw),
              RunOptions(tmp_path, data_dir, "cpu", progress=False))
    stream = run.batch_stream()
    for _ in range(steps):
        run.train_step(next(stream))
    losses = {k: float(v) / run.loss_count for k, v in run.loss_sums.items()}
    split = run.ds.splits[run.ds.eval_splits[0]]
    logits = run.algorithm.predict(next(iter(split.eval_batches(64))).x)
    assert logits.shape == (64, run.ds.num_classes) and torch.isfinite(logits).all()
    assert all(math.isfinite(v) for v in losses.values()), losses
    return losses


@pytest.mark.real_data
def test_dl_real_mnist_cifar_smoke(real_data_dir, tmp_path):
    losses = _real_steps(real_data_dir, tmp_path, "mnist_cifar", "DL",
                         dataset_args={"n_backgrounds": 2})
    # 20 equal (digit, background) groups: a batch of 64 holds about 64·63/20 ≈ 202 ordered
    # same-group pairs (same digit only: ≈ 403; a background id per image: 0)
    assert 120 < losses["pairs"] < 300


@pytest.mark.real_data
def test_rcl_real_mnist_mp_smoke(real_data_dir, tmp_path):
    _real_steps(real_data_dir, tmp_path, "mnist_mp", "RCL", hparams={"batch_size": 32})


@pytest.mark.real_data
def test_ex2l_real_cmnist_smoke(real_data_dir, tmp_path):
    _real_steps(real_data_dir, tmp_path, "cmnist", "eX2L", steps=2,
                hparams={"arch": "mnist_cnn", "batch_size": 16})
