"""DomainBed's per-environment holdout (``misc.split_dataset``), shared by the image datasets."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..hparams import seed_hash


def domainbed_holdout(n: int, fraction: float, data_seed: int, env: int) -> tuple[Tensor, Tensor]:
    """(kept, held out) positions of one environment of ``n`` examples.

    DomainBed shuffles the keys with ``RandomState(seed_hash(seed, env))`` and holds out the
    first ``int(n · fraction)`` of them.
    """
    keys = torch.from_numpy(np.random.RandomState(seed_hash(data_seed, env)).permutation(n))
    n_out = int(n * fraction)
    return keys[n_out:], keys[:n_out]
