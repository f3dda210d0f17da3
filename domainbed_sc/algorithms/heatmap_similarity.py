"""The eleven heatmap similarities eX2L screened (docs/METHODS.md §A.7, normalisation §C.18).

Each takes two batches of heatmaps (B×h×w: the label model's F and the confounder model's G)
and returns one similarity per sample (B,).  Higher means more similar, so eX2L *minimises* it
to push the two explanations apart.  Each function first normalises both maps: L1 (P = H/(ΣH+ε))
for kl, js and cosine; per-sample min-max to [0, 1] for mae, mse, rmse, soft_iou, soft_dice and
ssim (bounded maps: otherwise −MAE could grow without end by inflating activations); none for ncc,
which is scale-invariant.  ε = 1e-8 sits inside logs and square roots; P is clamped ≥ ε.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn.functional as F
from torch import Tensor

EPS = 1e-8
SSIM_C1 = 0.01 ** 2  # (0.01·L)², L = 1: the dynamic range after min-max normalisation
SSIM_C2 = 0.03 ** 2


# -- normalisations (rows of B×N) -----------------------------------------------------------
def l1_normalise(h: Tensor) -> Tensor:
    return (h / (h.sum(1, keepdim=True) + EPS)).clamp_min(EPS)


def minmax_normalise(h: Tensor) -> Tensor:
    lo, hi = h.min(1, keepdim=True).values, h.max(1, keepdim=True).values
    return (h - lo) / (hi - lo + EPS)


def identity(h: Tensor) -> Tensor:
    return h


# -- similarities on normalised B×N rows ---------------------------------------------------
def neg_mse(f: Tensor, g: Tensor) -> Tensor:
    return -((f - g) ** 2).mean(1)


def kl(p: Tensor, q: Tensor) -> Tensor:
    """KL(p ‖ q) per row."""
    return (p * (p.log() - q.log())).sum(1)


def js(p: Tensor, q: Tensor) -> Tensor:
    m = (p + q) / 2
    return (kl(p, m) + kl(q, m)) / 2


def soft_iou(f: Tensor, g: Tensor) -> Tensor:
    inter = (f * g).sum(1)
    return inter / (f.sum(1) + g.sum(1) - inter + EPS)


def soft_dice(f: Tensor, g: Tensor) -> Tensor:
    """The non-squared Milletari form 2Σfg / (Σf + Σg + ε)."""
    return 2 * (f * g).sum(1) / (f.sum(1) + g.sum(1) + EPS)


def ncc(f: Tensor, g: Tensor) -> Tensor:
    """Pearson correlation of the flattened maps (0 where one map is constant)."""
    return F.cosine_similarity(f - f.mean(1, keepdim=True), g - g.mean(1, keepdim=True), 1, EPS)


def ssim(f: Tensor, g: Tensor) -> Tensor:
    """Global SSIM l·c·s with α = β = γ = 1, C3 = C2/2 and 1/(N−1) (co)variances.

    With C3 = C2/2, c·s simplifies exactly to (2σ_fg + C2)/(σ_f² + σ_g² + C2), which needs no
    σ = √variance: the square root's infinite slope at 0 would turn a constant map into NaN
    gradients.
    """
    n = f.shape[1]
    mu_f, mu_g = f.mean(1), g.mean(1)
    df, dg = f - mu_f[:, None], g - mu_g[:, None]
    var_f, var_g = (df ** 2).sum(1) / (n - 1), (dg ** 2).sum(1) / (n - 1)
    cov = (df * dg).sum(1) / (n - 1)
    luminance = (2 * mu_f * mu_g + SSIM_C1) / (mu_f ** 2 + mu_g ** 2 + SSIM_C1)
    return luminance * (2 * cov + SSIM_C2) / (var_f + var_g + SSIM_C2)


@dataclass(frozen=True)
class Similarity:
    normalise: Callable[[Tensor], Tensor]
    fn: Callable[[Tensor, Tensor], Tensor]

    def __call__(self, h_f: Tensor, h_g: Tensor) -> Tensor:
        """Per-sample Sim(F, G) of B×h×w heatmaps."""
        return self.fn(self.normalise(h_f.flatten(1)), self.normalise(h_g.flatten(1)))


SIMILARITIES: dict[str, Similarity] = {
    "mae": Similarity(minmax_normalise, lambda f, g: -(f - g).abs().mean(1)),
    "mse": Similarity(minmax_normalise, neg_mse),
    "rmse": Similarity(minmax_normalise, lambda f, g: -(EPS - neg_mse(f, g)).sqrt()),
    "soft_iou": Similarity(minmax_normalise, soft_iou),
    "kl": Similarity(l1_normalise, lambda p_f, p_g: -kl(p_g, p_f)),  # the confounder map is the reference
    "js_divergence": Similarity(l1_normalise, lambda p, q: -js(p, q)),
    "js_distance": Similarity(l1_normalise, lambda p, q: -(js(p, q).clamp_min(0) + EPS).sqrt()),
    "cosine": Similarity(l1_normalise, lambda p, q: F.cosine_similarity(p, q, 1, EPS)),
    "ncc": Similarity(identity, ncc),
    "ssim": Similarity(minmax_normalise, ssim),
    "soft_dice": Similarity(minmax_normalise, soft_dice),
}
#: the five the paper kept for its random search (docs/METHODS.md §A.7 table; eX2L)
SEARCHED = ["mae", "cosine", "soft_dice", "js_distance", "ssim"]
