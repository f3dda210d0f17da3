"""Hyperparameter spaces: each algorithm declares its own beside its class (``HPARAMS``).

A space maps names to ``HParam``: a default and, for random search, a sampler.  DomainBed
distinguishes "small image" (MNIST-like) from large-image datasets; ``large`` holds the other
default/sampler where they differ.  Draws follow DomainBed: hparams_seed 0 gives the defaults,
any other seed draws each name from ``RandomState(seed_hash(seed, name))``.  The trainer picks
the seed (``trainer.draw_seed``): from (dataset, algorithm, hparams_seed) by default, or from
(hparams_seed, trial_seed) as DomainBed does when a run sets ``hparams_per_trial``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from .errors import UserError

Sampler = Callable[[np.random.RandomState], Any]


def seed_hash(*args: Any) -> int:
    """DomainBed's seed_hash: a stable 31-bit integer from any printable arguments."""
    return int(hashlib.md5(str(args).encode()).hexdigest(), 16) % (2**31)


# -- samplers -------------------------------------------------------------------------------
def log_uniform(lo: float, hi: float) -> Sampler:
    return lambda r: float(10 ** r.uniform(lo, hi))


def uniform(lo: float, hi: float) -> Sampler:
    return lambda r: float(r.uniform(lo, hi))


def pow2_int(lo: float, hi: float) -> Sampler:
    return lambda r: int(2 ** r.uniform(lo, hi))


def log_int(lo: float, hi: float) -> Sampler:
    return lambda r: int(10 ** r.uniform(lo, hi))


def choice(values: list[Any]) -> Sampler:
    return lambda r: values[r.randint(len(values))]


# -- checks ---------------------------------------------------------------------------------
def positive(v: Any) -> bool:
    return v > 0


def non_negative(v: Any) -> bool:
    return v >= 0


def one_of(*values: Any) -> Callable[[Any], bool]:
    return lambda v: v in values


@dataclass(frozen=True)
class HParam:
    default: Any
    sample: Sampler | None = None  # None: fixed during random search
    check: Callable[[Any], bool] | None = None
    doc: str = ""
    #: (default, sample) on large-image datasets, where DomainBed's values differ
    large: tuple[Any, Sampler | None] | None = None

    def resolve(self, small_images: bool) -> tuple[Any, Sampler | None]:
        if self.large is not None and not small_images:
            return self.large
        return self.default, self.sample


def draw(space: Mapping[str, HParam], hparams_seed: int, small_images: bool,
         dataset_defaults: Mapping[str, Any] | None = None,
         overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults (seed 0) or a random draw, then dataset defaults for fixed names, then overrides."""
    out: dict[str, Any] = {}
    dataset_defaults = dataset_defaults or {}
    for name, hp in space.items():
        default, sample = hp.resolve(small_images)
        if name in dataset_defaults:
            default = dataset_defaults[name]
        if hparams_seed == 0 or sample is None:
            out[name] = default
        else:
            out[name] = sample(np.random.RandomState(seed_hash(hparams_seed, name)))
    for name, value in (overrides or {}).items():
        out[name] = value
    validate(space, out)
    return out


def validate(space: Mapping[str, HParam], values: Mapping[str, Any]) -> None:
    unknown = sorted(set(values) - set(space))
    if unknown:
        raise UserError(f"unknown hyperparameter(s) {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(space))}")
    for name, hp in space.items():
        value = values[name]
        if hp.default is not None and value is not None and not _same_kind(hp.default, value):
            raise UserError(f"hyperparameter {name}={value!r} has the wrong type "
                            f"(expected {type(hp.default).__name__})")
        if hp.check is not None and not hp.check(value):
            raise UserError(f"invalid value for hyperparameter {name}: {value!r}"
                            + (f" ({hp.doc})" if hp.doc else ""))


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) == isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))
