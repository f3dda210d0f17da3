"""DFR (docs/METHODS.md §A.12; Kirichenko et al. 2023): ERM, then the last layer refit by L1
logistic regression on group-balanced held-out (or training) data."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_algorithms_multistage import Planted, context, make

from domainbed_sc.algorithms.dfr import Feats, balanced_subset, fit_linear, predict_linear
from domainbed_sc.errors import UserError
from domainbed_sc.hparams import seed_hash


def planted(n=120, seed=0, balanced_val=False):
    """2×4×4 images: a weak core feature of y in channel 0, a strong one of s in channel 1;
    train s = y for 90 %, val and test s independent of y (val exactly balanced if asked)."""
    gen = torch.Generator().manual_seed(seed)

    def split(n, p_agree):
        y = torch.arange(n) % 2
        s = torch.where(torch.rand(n, generator=gen) < p_agree, y, 1 - y)
        if balanced_val and p_agree == 0.5:
            s = (torch.arange(n) // 2) % 2
        x = torch.randn(n, 2, 4, 4, generator=gen)
        x[:, 0] += 0.5 * (2 * y - 1).float()[:, None, None]
        x[:, 1] += 2.0 * (2 * s - 1).float()[:, None, None]
        return x, y, s

    ds = Planted(*split(n, 0.9), val=split(n, 0.5), test=split(n, 0.5))
    ds.val_split = "val"
    return ds


def dfr(**overrides):
    return make("DFR", input_shape=(2, 4, 4), **overrides)


def test_balanced_subset_cuts_every_group_to_the_smallest():
    rng = np.random.default_rng(0)
    g = np.repeat([0, 1, 3, -1], [50, 7, 20, 5])
    rng.shuffle(g)
    picks = [balanced_subset(g, np.random.default_rng(seed)) for seed in (1, 2)]
    for idx in picks:
        assert len(set(idx.tolist())) == len(idx)  # no example twice
        assert np.bincount(g[idx], minlength=4).tolist() == [7, 7, 0, 7]  # empty groups stay so
    assert not np.array_equal(picks[0], picks[1])  # a fresh draw each time


def test_stage2_changes_only_the_last_layer_and_fits_a_balanced_set():
    alg, ds = dfr(dfr_num_retrains=3), planted()
    ctx = context(ds, final=True)
    before = {k: v.clone() for k, v in alg.state_dict().items()}
    alg.on_epoch(ctx)
    after = alg.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"classifier.weight", "classifier.bias", "network.1.weight", "network.1.bias"}
    assert alg.stage == 2
    counts = np.array(ctx.extra["dfr_fit_group_counts"])
    val_counts = torch.bincount(ds.splits["val"].g, minlength=4).numpy()
    assert (counts == val_counts.min()).all() and ctx.extra["dfr_fit_size"] == 4 * val_counts.min()
    scores = ctx.extra["dfr_tune_wga"]
    assert set(scores) == {str(c) for c in alg.hparams["dfr_C"]}
    assert scores[str(ctx.extra["dfr_C"])] == max(scores.values())
    alg.on_epoch(context(ds, final=True))  # a second final hook (a resumed run) refits nothing
    assert all(torch.equal(v, alg.state_dict()[k]) for k, v in after.items())


def test_the_train_variant_fits_balanced_training_subsets():
    alg, ds = dfr(dfr_data="train", dfr_C=[0.3]), planted()
    ctx = context(ds, final=True)
    alg.on_epoch(ctx)
    train_counts = torch.bincount(ds.splits["train"].g, minlength=4)
    assert ctx.extra["dfr_fit_group_counts"] == [int(train_counts.min())] * 4
    assert ctx.extra["dfr_tune_wga"] == {} and ctx.extra["dfr_C"] == 0.3


def test_the_last_layer_is_scikit_learns_l1_logistic_regression():
    """One fit at one C on an exactly balanced val (the subset is the whole split): the torch
    forward's logit difference is the fitted model's decision function on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    alg, ds = dfr(dfr_C=[0.1], dfr_num_retrains=1, dfr_scaler="balanced"), planted(balanced_val=True)
    alg.eval()
    with torch.no_grad():
        z_val, z_test = (alg.featurizer(ds.splits[n].x).double().numpy() for n in ("val", "test"))
    alg.on_epoch(context(ds, final=True))
    scaler = StandardScaler().fit(z_val)
    l1 = {"l1_ratio": 1.0} if LogisticRegression().penalty == "deprecated" else {"penalty": "l1"}
    seed = seed_hash("DFR", 0)  # the trial seed of ``context``'s run
    ref = LogisticRegression(C=0.1, solver="liblinear", random_state=seed, **l1)
    ref.fit(scaler.transform(z_val), ds.splits["val"].y.numpy())
    assert (ref.coef_ == 0).any()  # the L1 penalty zeroes some weights at this C
    with torch.no_grad():
        logits = alg.predict(ds.splits["test"].x).double()
    expected = ref.decision_function(scaler.transform(z_test))
    np.testing.assert_allclose((logits[:, 1] - logits[:, 0]).numpy(), expected, atol=1e-4)


def test_folding_the_scaler_keeps_the_decision_function():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) * 4 + 3
    y = (x[:, 0] + x[:, 1] > 6).astype(np.int64)
    w, b = fit_linear(Feats(x, y, y), None, 1.0, 0)
    assert (predict_linear(w, b, x) == y).mean() > 0.95


def test_dfr_needs_group_labels_on_a_validation_split():
    ds = planted()
    ds.val_split = None
    with pytest.raises(UserError, match="needs a validation split"):
        dfr().on_epoch(context(ds))
    dfr(dfr_data="train", dfr_C=[1.0]).on_epoch(context(ds))  # needs no val split
    with pytest.raises(UserError, match="needs a validation split"):
        dfr(dfr_data="train").on_epoch(context(ds))  # tuning C scores on val
    ds = planted()
    ds.splits["val"].g[:3] = -1
    with pytest.raises(UserError, match="group labels on every example"):
        dfr().on_epoch(context(ds))


def test_dfr_beats_erm_worst_group_on_toy(run_toy):
    """Toy: the spurious channel agrees with y 90 % of the time in training, 10 % in test, the core
    channel is weak.  ERM leans on s; refitting the last layer on balanced data (either variant)
    recovers test worst-group accuracy, beyond ERM's and beyond DFR's own stage-1 (ERM) model."""
    kw = dict(epochs=2, dataset_args={"n_train": 1024, "n_test": 512})
    _, erm = run_toy("ERM", name="erm", **kw)
    erm_wga = erm[-1]["metrics"]["test"]["wga"]
    for variant in ("val", "train"):
        _, ours = run_toy("DFR", name=variant, hparams={"dfr_data": variant}, **kw)
        assert [r["stage"] for r in ours] == [1, 2]
        stage1_wga, dfr_wga = (r["metrics"]["test"]["wga"] for r in ours)
        assert dfr_wga > max(erm_wga, stage1_wga) + 0.2, (variant, erm_wga, stage1_wga, dfr_wga)
