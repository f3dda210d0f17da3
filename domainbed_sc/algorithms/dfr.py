"""DFR, Deep Feature Reweighting (docs/METHODS.md §A.12; Kirichenko, Izmailov, Wilson, ICLR 2023,
"Last Layer Re-Training is Sufficient for Robustness to Spurious Correlations").

Stage 1 is ERM.  Stage 2 runs in the final epoch hook, after the last step, following the
authors' ``dfr_evaluate_spurious.py``: embeddings of the frozen featurizer (eval mode, no
augmentation), then L1-regularised logistic regression (scikit-learn, liblinear) on a
group-balanced set, every non-empty group subsampled at random to the smallest one's size:
  dfr_data=val    DFR^Val_Tr: balanced subsets of the validation split (needs g there);
  dfr_data=train  DFR^Tr_Tr:  balanced subsets of the training split.
Features are standardised (StandardScaler) with the statistics of the whole training split's
embeddings (``dfr_scaler=train``, as the official final fits do) or of the set being fit
(``balanced``, as the paper describes and the official val tuning does).
C is tuned over ``dfr_C`` by worst-group accuracy (a single value skips tuning): for val, fit on
a balanced subset of a random half of the validation split, score on the other half; for train,
fit on one balanced training subset, score on the whole validation split.  The final layer is
the mean of ``dfr_num_retrains`` fits at that C on fresh balanced subsets of the whole split.
Each fit's scaler is folded into its weights (w/σ, b − w·μ/σ) before averaging, so ``predict``
stays the ERM network's torch forward; a binary fit's logit w·z + b becomes the two rows ∓w/2,
∓b/2 (the same softmax).  Only the last layer changes; the record after stage 2 is stage 2, the
model DFR reports (METHODS §P.4).  All draws come from a generator seeded by the trial seed.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from ..checks import Check
from ..datasets.base import GroupDataset, Split
from ..errors import UserError
from ..hparams import HParam, one_of, positive, seed_hash
from . import register_algorithm
from .base import TaskInfo
from .erm import ERM

#: the official C grid (dfr_evaluate_spurious.py, Waterbirds)
C_GRID = [1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01]
DATA = ("val", "train")
SCALERS = ("train", "balanced")


class Feats(NamedTuple):
    """Embeddings and labels of a set of examples (numpy)."""

    x: np.ndarray
    y: np.ndarray
    g: np.ndarray

    def take(self, idx: np.ndarray) -> "Feats":
        return Feats(self.x[idx], self.y[idx], self.g[idx])


def balanced_subset(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions of a random subset with every non-empty group cut to the smallest one's size
    (a group absent from ``g`` cannot be balanced: it stays absent)."""
    members = [np.flatnonzero(g == k) for k in np.unique(g[g >= 0])]
    n_min = min(len(m) for m in members)
    return np.sort(np.concatenate([rng.choice(m, n_min, replace=False) for m in members]))


def fit_linear(fit: Feats, stats: Feats | None, C: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(W [k, d], b [k]) on raw features of one L1 logistic regression on standardised ``fit``
    (statistics of ``stats``, else of ``fit``); binary fits give one row, as scikit-learn does."""
    from sklearn.linear_model import LogisticRegression  # lazy: only DFR needs scikit-learn
    from sklearn.preprocessing import StandardScaler

    # scikit-learn 1.8 deprecates ``penalty`` for ``l1_ratio``; older versions need ``penalty``
    l1 = {"l1_ratio": 1.0} if LogisticRegression().penalty == "deprecated" else {"penalty": "l1"}
    scaler = StandardScaler().fit((stats or fit).x)
    model = LogisticRegression(C=C, solver="liblinear", random_state=seed, **l1)
    x = scaler.transform(fit.x)
    if len(np.unique(fit.y)) > 2:  # one-vs-rest, what liblinear did itself before 1.8
        from sklearn.multiclass import OneVsRestClassifier

        models = OneVsRestClassifier(model).fit(x, fit.y).estimators_
        coef = np.concatenate([m.coef_ for m in models])
        intercept = np.concatenate([m.intercept_ for m in models])
    else:
        coef, intercept = model.fit(x, fit.y).coef_, model.intercept_
    w = coef / scaler.scale_
    return w, intercept - w @ scaler.mean_


def predict_linear(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    scores = x @ w.T + b
    return (scores[:, 0] > 0).astype(np.int64) if w.shape[0] == 1 else scores.argmax(1)


def worst_group_acc(pred: np.ndarray, data: Feats) -> float:
    correct = pred == data.y
    return min(float(correct[data.g == k].mean()) for k in np.unique(data.g[data.g >= 0]))


@register_algorithm("DFR")
class DFR(ERM):
    requires = frozenset({"g"})
    num_stages = 2
    HPARAMS = {
        "dfr_data": HParam("val", None, one_of(*DATA),
                           "retrain on balanced validation (val) or training (train) subsets"),
        "dfr_C": HParam(list(C_GRID), None, Check(lambda v: len(v) > 0, "a non-empty list"),
                        "inverse L1 strength; a list is tuned by worst-group accuracy",
                        item=float, item_check=positive),
        "dfr_num_retrains": HParam(10, None, positive, "balanced subsets the weights average over"),
        "dfr_scaler": HParam("train", None, one_of(*SCALERS),
                             "standardise with the whole training split or the set being fit"),
    }

    def __init__(self, task: TaskInfo, hparams):
        super().__init__(task, hparams)
        self.stage = 1

    def on_epoch(self, ctx) -> None:
        if ctx.step == 0 and not ctx.final:  # refuse at the start, not after stage 1
            self.check_data(ctx.dataset)
        elif ctx.final and self.stage == 1:
            self.retrain_last_layer(ctx)
            self.stage = 2

    def needs_val(self) -> bool:
        return self.hparams["dfr_data"] == "val" or len(self.hparams["dfr_C"]) > 1

    def check_data(self, ds: GroupDataset) -> None:
        if not self.needs_val():
            return
        why = "dfr_data=val" if self.hparams["dfr_data"] == "val" else "tuning dfr_C"
        if ds.val_split is None:
            raise UserError(f"DFR with {why} needs a validation split; dataset {ds.name} has none "
                            "(use dfr_data=train with a single dfr_C)")
        if bool((ds.splits[ds.val_split].g < 0).any()):
            raise UserError(f"DFR with {why} needs group labels on every example of split "
                            f"{ds.val_split} of dataset {ds.name}")

    @torch.no_grad()
    def features(self, split: Split, batch_size: int, device: torch.device) -> Feats:
        was_training = self.training
        self.eval()
        x = torch.cat([self.featurizer(b.x.to(device)) for b in split.eval_batches(batch_size)])
        self.train(was_training)
        return Feats(x.double().cpu().numpy(), split.y.cpu().numpy(), split.g.cpu().numpy())

    def retrain_last_layer(self, ctx) -> None:
        hp, ds = self.hparams, ctx.dataset
        embed = lambda name: self.features(ds.splits[name], ctx.eval_batch_size, ctx.device)  # noqa: E731
        needs_train = hp["dfr_data"] == "train" or hp["dfr_scaler"] == "train"
        train = embed("train") if needs_train else None
        val = embed(ds.val_split) if self.needs_val() else None
        pool = val if hp["dfr_data"] == "val" else train
        stats = train if hp["dfr_scaler"] == "train" else None
        seed = seed_hash("DFR", ctx.args.trial_seed if ctx.args else 0)
        rng = np.random.default_rng(seed)
        C, scores = self.tune(pool, val, stats, rng, seed)
        fits = []
        for _ in range(hp["dfr_num_retrains"]):
            subset = pool.take(balanced_subset(pool.g, rng))
            self.check_classes(subset)
            fits.append(fit_linear(subset, stats, C, seed))
        self.set_last_layer(np.mean([w for w, _ in fits], 0), np.mean([b for _, b in fits], 0))
        ctx.extra.update({"dfr_C": C, "dfr_tune_wga": scores, "dfr_fit_size": len(subset.y),
                          "dfr_fit_group_counts": np.bincount(subset.g, minlength=ds.num_groups)
                          .tolist()})

    def tune(self, pool: Feats, val: Feats | None, stats: Feats | None,
             rng: np.random.Generator, seed: int) -> tuple[float, dict[str, float]]:
        """(the C of the best worst-group accuracy, the score of every C); the first C of the
        grid wins ties, as the official ``np.argmax`` does."""
        grid = self.hparams["dfr_C"]
        if len(grid) == 1:
            return float(grid[0]), {}
        if self.hparams["dfr_data"] == "val":  # fit on one half, score on the other
            perm = rng.permutation(len(val.y))
            score, half = val.take(perm[:len(perm) // 2]), val.take(perm[len(perm) // 2:])
            fit = half.take(balanced_subset(half.g, rng))
        else:
            fit, score = pool.take(balanced_subset(pool.g, rng)), val
        self.check_classes(fit)
        scores = {}
        for C in grid:
            w, b = fit_linear(fit, stats, C, seed)
            scores[str(C)] = worst_group_acc(predict_linear(w, b, score.x), score)
        best = max(scores, key=scores.get)  # the first maximum, in grid order
        return float(best), scores

    def check_classes(self, fit: Feats) -> None:
        if len(np.unique(fit.y)) != self.task.num_classes:
            raise UserError(f"DFR's balanced fitting set holds classes {np.unique(fit.y).tolist()} "
                            f"of {self.task.num_classes}: it needs every class")

    def set_last_layer(self, w: np.ndarray, b: np.ndarray) -> None:
        """Copy a fitted linear model into the classifier (binary: the rows ∓w/2, ∓b/2)."""
        if w.shape[0] == 1:
            w, b = np.concatenate([-w / 2, w / 2]), np.concatenate([-b / 2, b / 2])
        layer = self.classifier
        layer.weight.data.copy_(torch.as_tensor(w, dtype=layer.weight.dtype))
        layer.bias.data.copy_(torch.as_tensor(b, dtype=layer.bias.dtype))

    def extra_state(self) -> dict[str, Any]:
        return {"stage": self.stage}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.stage = state["stage"]
