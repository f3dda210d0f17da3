"""The two hyperparameter searches: shared draws (the default) and DomainBed's per-trial draws."""
from __future__ import annotations

import numpy as np
import pytest

from domainbed_sc.algorithms.resolve import resolve_hparams
from domainbed_sc.cli import build_parser
from domainbed_sc.datasets import DATASETS
from domainbed_sc.errors import UserError
from domainbed_sc.hparams import seed_hash
from domainbed_sc.training.packed import pack_key
from domainbed_sc.training.records import RunArgs

CMNIST = {"variant": "domainbed", "test_env": 2}


def drawn(algorithm: str, hparams_seed: int, trial_seed: int, per_trial: bool) -> dict:
    args = RunArgs("cmnist", algorithm, CMNIST, {}, hparams_seed, trial_seed, trial_seed,
                   hparams_per_trial=per_trial)
    return resolve_hparams(args, DATASETS.get("cmnist"))[1]


@pytest.mark.parametrize("algorithm", ["ERM", "IRM", "DANN"])
def test_per_trial_draws_differ_across_trial_seeds_and_shared_draws_do_not(algorithm):
    shared = [drawn(algorithm, 3, t, False) for t in (0, 1, 2)]
    per_trial = [drawn(algorithm, 3, t, True) for t in (0, 1, 2)]
    assert shared[0] == shared[1] == shared[2]
    assert len({p["lr"] for p in per_trial}) == 3
    assert shared[0]["lr"] not in {p["lr"] for p in per_trial}


def test_hparams_seed_zero_is_the_defaults_in_both_searches():
    assert drawn("IRM", 0, 1, True) == drawn("IRM", 0, 2, True) == drawn("IRM", 0, 1, False)


def test_per_trial_draw_is_domainbeds_random_hparams_seed():
    """DomainBed's train.py: random_hparams(alg, ds, seed_hash(hparams_seed, trial_seed)), each
    name from RandomState(seed_hash(that seed, name)); lr on small images 10**U(-4.5, -2.5),
    irm_lambda 10**U(-1, 5), batch_size int(2**U(3, 9)) (hparams_registry.py)."""
    for h, t in [(1, 0), (5, 2), (19, 1)]:
        seed = seed_hash(h, t)
        rng = lambda name: np.random.RandomState(seed_hash(seed, name))  # noqa: E731
        hp = drawn("IRM", h, t, True)
        assert hp["lr"] == 10 ** rng("lr").uniform(-4.5, -2.5)
        assert hp["irm_lambda"] == 10 ** rng("irm_lambda").uniform(-1, 5)
        assert hp["batch_size"] == int(2 ** rng("batch_size").uniform(3, 9))


def test_default_runs_keep_their_dict_id_and_name():
    args = RunArgs("cmnist", "IRM", CMNIST, {"sampler": "uniform_env"}, 3, 1, 1, 5001, None, 100)
    # the id this run had before hparams_per_trial existed (computed on the earlier code)
    assert args.run_id() == "510f9cbf5db70bdb"
    assert "hparams_per_trial" not in args.as_dict()
    assert args.readable_name() == "cmnist_test_env2_variantdomainbed_IRM_sampleruniform_env_h3_t1_d1"
    per_trial = RunArgs(**{**args.as_dict(), "hparams_per_trial": True})
    assert per_trial.as_dict()["hparams_per_trial"] is True
    assert per_trial.run_id() != args.run_id() and per_trial.readable_name().endswith("_pertrial")
    assert RunArgs(**per_trial.as_dict()) == per_trial  # a record's args read back


def test_hparams_per_trial_must_be_a_bool():
    with pytest.raises(UserError, match="hparams_per_trial must be true or false"):
        RunArgs("toy", hparams_per_trial="yes")


def test_per_trial_runs_of_different_trial_seeds_never_share_a_pack():
    """A pack trains its members with one set of hparams; per-trial draws differ by trial seed."""
    def key(trial, per_trial):
        return pack_key(RunArgs("toy", hparams_seed=2, trial_seed=trial, data_seed=0, epochs=1,
                                hparams_per_trial=per_trial))
    assert key(0, False) == key(1, False) is not None
    assert key(0, True) != key(1, True)
    assert key(0, True) == pack_key(RunArgs("toy", hparams_seed=2, trial_seed=0, data_seed=5,
                                            epochs=1, hparams_per_trial=True))


def test_train_flag_sets_it():
    parser = build_parser()
    base = ["train", "--dataset", "toy"]
    assert parser.parse_args(base + ["--hparams-per-trial"]).hparams_per_trial is True
    assert parser.parse_args(base).hparams_per_trial is False
