"""Per-environment minibatches for the DomainBed methods that compare environments."""
from __future__ import annotations

from ..datasets.base import Batch


def per_env(batches: list[Batch]) -> list[Batch]:
    """One batch per environment: the uniform_env sampler's own, or the single batch another
    sampler gives split by its e labels (so a sampler override never silently drops the penalty)."""
    if len(batches) > 1:
        return batches
    (b,) = batches
    masks = [b.e == k for k in b.e.unique().tolist()]
    return [Batch(*(t[m] for t in vars(b).values())) for m in masks]
