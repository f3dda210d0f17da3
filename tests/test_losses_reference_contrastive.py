"""The loss DL, RCL, eX2L and Chroma-VAE (stage 1) step on, against references written here from
the papers' formulas (harness: ``loss_reference.py``).

DL [Cazacu 2026 §4; METHODS §A.6], RCL [Duboudin et al. 2021; METHODS §A.8], eX2L's Eq. 4 with
Grad-CAM at the body's map [Medina et al. 2026; METHODS §A.7; K-way heads: 3 classes, 3 confounder
values], Chroma-VAE's stage-1 objective [Yang et al. 2022 §2–3; METHODS §A.9]; METHODS is
docs/METHODS.md.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import autograd

from domainbed_sc.algorithms import TaskInfo
from loss_reference import SGD, ce, check_update, make, make_batch


def task(classes=2, attributes=2, shape=(2, 4, 4)) -> TaskInfo:
    groups = classes * attributes
    return TaskInfo(classes, attributes, groups, 0, shape, (10,) * groups, 10, 100)


def inputs(n: int, shape, seed: int, scale=1.0) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed)) * scale


def split_between(values: list[float]) -> float:
    """A cut between the two middle distinct values: some above it, some below, no ties."""
    v = sorted(set(values))
    k = len(v) // 2
    return (v[k - 1] + v[k]) / 2


# -- DL ---------------------------------------------------------------------------------------
def unit_rows(z):
    return z / (z.norm(dim=1, keepdim=True) + 1e-8)


@pytest.mark.parametrize("variant", ["supervised", "no_bg", "threshold"])
def test_dl_steps_on_ce_plus_lambda_mean_cosine_over_the_pairs(variant):
    """L = CE + λ·mean_{(i,j)∈M} ẑ_iᵀẑ_j; M: same y and s / same y / same y and S_ij > 1 − τ."""
    lam, n = 0.8, 10
    y, s = [0, 0, 0, 1, 1, 0, 1, 1, 0, 1], [0, 0, 1, 1, 1, 0, 0, 1, 1, 1]
    b = make_batch(inputs(n, (2, 4, 4), 60, scale=2.0), y, s)
    same = [(i, j) for i in range(n) for j in range(n) if i != j and y[i] == y[j]]
    with torch.no_grad():
        cos = unit_rows(make("DL", task()).featurizer(b.x))
        cos = cos @ cos.T
    tau = 1 - split_between([cos[i, j].item() for i, j in same])
    keep = {"supervised": lambda i, j: s[i] == s[j], "no_bg": lambda i, j: True,
            "threshold": lambda i, j: cos[i, j].item() > 1 - tau}[variant]
    pairs = [(i, j) for i, j in same if keep(i, j)]
    assert pairs and (len(pairs) == len(same)) == (variant == "no_bg")
    alg = make("DL", task(), dl_variant=variant, dl_lambda=lam, dl_tau=tau, lr_milestones=[], **SGD)

    def reference(m):
        z = m.featurizer(b.x)
        zh = unit_rows(z)
        dis = sum(zh[i] @ zh[j] for i, j in pairs) / len(pairs)
        return {"ce": ce(m.classifier(z), b.y).mean(), "dis": lam * dis}

    check_update(alg, [b], reference)


# -- RCL --------------------------------------------------------------------------------------
RCL_Y = [0, 0, 0, 1, 1, 1, 1, 2]  # class 2 has no positive: its anchor contributes 0


def rcl_anchors(fh: torch.Tensor, y: list[int]):
    """Per anchor with a positive and a negative: (i, nearest positive p, d(i, p), d(i, n))."""
    d = lambda i, j: (fh[i] - fh[j]).abs().sum().item()
    out = []
    for i in range(len(y)):
        pos = [j for j in range(len(y)) if j != i and y[j] == y[i]]
        neg = [j for j in range(len(y)) if y[j] != y[i]]
        if pos and neg:
            p = min(pos, key=lambda j: d(i, j))
            out.append((i, p, d(i, p), min(d(i, j) for j in neg)))
    return out


def conv_features(m, x):
    """The conv map, flattened and min-max scaled by the batch's scalar min and max."""
    f = m.featurizer.body(x).flatten(1)
    return (f - f.min()) / (f.max() - f.min() + 1e-8)


@pytest.mark.parametrize("distance, limited", [("sum", False), ("mean", False), ("sum", True)])
def test_rcl_steps_on_ce_plus_alpha_times_the_reverse_contrastive_push(distance, limited):
    """L = CE + α·(1/B)Σ_i −d(f̂_i, sg(f̂_p(i))) over anchors with d(i, p) < m·d(i, n)."""
    alpha, shape = 0.5, (2, 8, 8)
    b = make_batch(inputs(len(RCL_Y), shape, 70), RCL_Y)
    margin = math.inf
    if limited:  # an m that keeps some anchors and drops others
        with torch.no_grad():
            fh = conv_features(make("RCL", task(3, shape=shape), arch="mnist_cnn"), b.x)
        anchors = rcl_anchors(fh, RCL_Y)
        margin = split_between([dp / dn for _, _, dp, dn in anchors])
    alg = make("RCL", task(3, shape=shape), arch="mnist_cnn", rcl_alpha=alpha, rcl_margin=margin,
               rcl_distance=distance, **SGD)

    def reference(m):
        maps = m.featurizer.body(b.x)
        fh = conv_features(m, b.x)
        scale = fh.shape[1] if distance == "mean" else 1
        active = [(i, p) for i, p, dp, dn in rcl_anchors(fh, RCL_Y) if dp < margin * dn]
        assert 0 < len(active) < len(RCL_Y) - (2 if limited else 0)
        push = sum(-(fh[i] - fh[p].detach()).abs().sum() / scale for i, p in active)
        return {"ce": ce(m.classifier(m.featurizer.neck(maps)), b.y).mean(),
                "rc": alpha * push / len(RCL_Y)}

    check_update(alg, [b], reference)


# -- eX2L -------------------------------------------------------------------------------------
def grad_cam(model, x, target):
    """(logits, flattened Grad-CAM map) at the body's output A: ReLU(Σ_k sg(α_k)·A_k) with
    α_k the spatial mean of ∂(target logit)/∂A_k."""
    maps, out = model(x)
    grad, = autograd.grad(out.gather(1, target[:, None]).sum(), maps, retain_graph=True)
    alpha = grad.mean((2, 3), keepdim=True)  # a constant: autograd.grad without create_graph
    return out, F.relu((alpha * maps).sum(1)).flatten(1)


def unit_range(h):
    lo, hi = h.min(1, keepdim=True).values, h.max(1, keepdim=True).values
    return (h - lo) / (hi - lo + 1e-8)


def neg_mae(h_f, h_g):
    """−mean|Ĥ_f − Ĥ_g| of per-sample min-max normalised maps."""
    return -(unit_range(h_f) - unit_range(h_g)).abs().mean(1)


def cosine(h_f, h_g):
    """⟨P_F, P_G⟩/(‖P_F‖‖P_G‖) of L1-normalised maps P = H/(ΣH + ε), clamped ≥ ε."""
    p_f, p_g = ((h / (h.sum(1, keepdim=True) + 1e-8)).clamp_min(1e-8) for h in (h_f, h_g))
    return (p_f * p_g).sum(1) / (p_f.norm(dim=1) * p_g.norm(dim=1))


@pytest.mark.parametrize("similarity, sim_grad", [("mae", "both"), ("mae", "label_only"),
                                                  ("cosine", "both")])
def test_ex2l_steps_on_eq4(similarity, sim_grad):
    """L = CE(f(x), y) + λ_c·CE(g(x), s) + λ_s·mean_b Sim(H_f, H_g), H_f for y, H_g for s;
    label_only detaches H_g.  Both models step, each with its own lr."""
    lam_c, lam_s, shape = 0.6, 2.5, (2, 8, 8)
    y, s = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([1, 2, 0, 2, 0, 1])  # s ≠ y
    b = make_batch(inputs(6, shape, 80, scale=2.0), y, s, num_attributes=3)
    alg = make("eX2L", task(3, 3, shape), arch="mnist_cnn", ex2l_lambda_c=lam_c,
               ex2l_lambda_s=lam_s, ex2l_similarity=similarity, ex2l_sim_grad=sim_grad,
               confounder_lr=0.05, confounder_weight_decay=0.0, **SGD)

    def reference(m):
        out_f, h_f = grad_cam(m.label_model, b.x, b.y)
        out_g, h_g = grad_cam(m.confounder_model, b.x, b.s)
        if sim_grad == "label_only":
            h_g = h_g.detach()
        sim = {"mae": neg_mae, "cosine": cosine}[similarity](h_f, h_g).mean()
        return {"ce": ce(out_f, b.y).mean(), "ce_confounder": lam_c * ce(out_g, b.s).mean(),
                "sim": lam_s * sim}

    check_update(alg, [b], reference)


# -- Chroma-VAE -------------------------------------------------------------------------------
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_chroma_vae_stage1_steps_on_the_elbo_plus_lambda_ce_on_mu1(likelihood):
    """Per example −log p(x|z) + β·KL(N(μ, σ²) ‖ N(0, I)) + λ·CE(y, C(μ₁)), z = μ + σ·ε,
    d₁ = round(z_p·dim z); batch mean.  Bernoulli: BCE on the decoder's logits, summed over
    pixels; Gaussian: ½(out − x)² summed."""
    beta, lam, seed = 0.5, 3.0, 7
    x = torch.rand(6, 2, 8, 8, generator=torch.Generator().manual_seed(90))
    b = make_batch(x, [0, 1, 1, 0, 1, 0])
    alg = make("ChromaVAE", task(shape=(2, 8, 8)), chroma_zdim=6, chroma_zp=0.5,
               chroma_beta=beta, chroma_lambda=lam, chroma_likelihood=likelihood,
               chroma_stage2="knn", **SGD)
    d1 = round(0.5 * 6)

    def reference(m):
        torch.manual_seed(seed)  # the ε the update drew
        mu, logvar = m.encoder(b.x)
        out = m.decoder(mu + (logvar / 2).exp() * torch.randn(mu.shape, dtype=mu.dtype))
        nll = F.softplus(out) - b.x * out if likelihood == "bernoulli" else 0.5 * (out - b.x) ** 2
        kl = 0.5 * (mu ** 2 + logvar.exp() - logvar - 1).sum(1).mean()
        return {"recon": nll.flatten(1).sum(1).mean(), "kl": beta * kl,
                "ce": lam * ce(m.classifier(mu[:, :d1]), b.y).mean()}

    torch.manual_seed(seed)
    check_update(alg, [b], reference)
