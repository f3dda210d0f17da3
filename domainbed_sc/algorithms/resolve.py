"""A run's algorithm resolved: its hyperparameters and the training-time labels it needs.

One place for both, so that ``train``, sweep validation and pack grouping agree: they all draw
through ``resolve_hparams`` and refuse missing labels through ``check_labels``.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..datasets.base import DatasetArgs, GroupDataset
from ..errors import UserError
from ..hparams import draw, seed_hash
from ..training.records import RunArgs
from . import ALGORITHMS
from .base import Algorithm

LABEL_NAMES = {"s": "spurious-attribute labels (s)", "g": "group labels (g)", "e": "environment labels (e)"}


def draw_seed(args: RunArgs) -> int:
    """The seed ``hparams.draw`` takes: 0 (the defaults) for hparams_seed 0, in both searches.

    Shared search (the default, a design choice of the suite): ``seed_hash(dataset, algorithm,
    hparams_seed)``, so a draw is the same for every trial seed and selection compares draws on
    their score averaged over the seeds.  ``hparams_per_trial`` (DomainBed's train.py):
    ``seed_hash(hparams_seed, trial_seed)``, DomainBed's ``random_hparams`` seed, and ``draw``
    seeds each name with ``seed_hash(seed, name)`` as DomainBed's registry does, so a name our
    space shares with DomainBed's, with the same sampler, gets DomainBed's value for the same
    (hparams_seed, trial_seed).  Checked against DomainBed's registry on ColoredMNIST (ERM, IRM,
    GroupDRO, DANN; hparams seeds 1-19, trial seeds 0-2): every shared name matches but
    resnet_dropout, which small-image datasets fix at 0 here (MNIST_CNN has no dropout, so it
    changes nothing).  Left different: names only one space has -- our groupdro_C (a no-op in
    groupdro_mode env), optimizer and sampler names; DomainBed's backbone switches.
    """
    if not args.hparams_seed:
        return 0
    if args.hparams_per_trial:
        return seed_hash(args.hparams_seed, args.trial_seed)
    return seed_hash(args.dataset, args.algorithm, args.hparams_seed)


def resolve_hparams(args: RunArgs, dataset: type[GroupDataset] | GroupDataset
                    ) -> tuple[type[Algorithm], dict[str, Any]]:
    """The run's algorithm class and hyperparameters: its draw (``draw_seed``), then the
    dataset's defaults, then the run's overrides (checked by type and range).  Uses only class
    attributes of the dataset, so a dataset class does as well as a loaded dataset."""
    cls = ALGORITHMS.get(args.algorithm)
    hparams = draw(cls.space(), draw_seed(args), dataset.small_images, dataset.default_hparams,
                   args.hparams)
    return cls, hparams


def check_labels(cls: type[Algorithm], hparams: dict[str, Any], dataset: str,
                 dataset_args: DatasetArgs, provides: frozenset[str],
                 others: Mapping[str, str] | None = None) -> None:
    """Refuse a run whose dataset lacks a label it needs, in one line naming what needs it.

    The algorithm needs ``cls.required_labels(hparams)`` (in the mode ``label_reason`` names);
    ``others`` maps further labels the run needs (its sampler's) to what needs them."""
    reason = cls.label_reason(hparams)
    cause = f"algorithm {cls.name}" + (f" with {reason}" if reason else "")
    needs = {**(others or {}), **{label: cause for label in cls.required_labels(hparams)}}
    for label in sorted(set(needs) - set(provides)):
        configured = f" {json.dumps(dataset_args.changed())}" if dataset_args.changed() else ""
        raise UserError(f"{needs[label]} needs {LABEL_NAMES[label]}, which dataset {dataset}"
                        f"{configured} does not provide")
