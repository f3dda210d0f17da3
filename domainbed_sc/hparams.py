"""Hyperparameter spaces: each algorithm declares its own beside its class (``HPARAMS``).

A space maps names to ``HParam``: a default and, for random search, a sampler.  DomainBed
distinguishes "small image" (MNIST-like) from large-image datasets; ``large`` holds the other
default/sampler where they differ.  Draws follow DomainBed: hparams_seed 0 gives the defaults,
any other seed draws each name from ``RandomState(seed_hash(seed, name))``.  The trainer picks
the seed (``algorithms.resolve.draw_seed``): from (dataset, algorithm, hparams_seed) by default, or from
(hparams_seed, trial_seed) as DomainBed does when a run sets ``hparams_per_trial``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from .checks import Check, Spec, check_mapping, check_value
# the range checks, re-exported: the algorithms declare their spaces with them
from .checks import at_least, between, non_negative, one_of, positive  # noqa: F401
from .errors import UserError

Sampler = Callable[[np.random.RandomState], Any]


def seed_hash(*args: Any) -> int:
    """DomainBed's seed_hash: a stable 31-bit integer from any printable arguments."""
    return int(hashlib.md5(str(args).encode()).hexdigest(), 16) % (2**31)


# -- samplers -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dist:
    """A random-search sampler and the words for it (``domainbed-sc list --hparams`` prints them)."""

    sample: Sampler
    text: str

    def __call__(self, r: np.random.RandomState) -> Any:
        return self.sample(r)

    def __str__(self) -> str:
        return self.text


def log_uniform(lo: float, hi: float) -> Dist:
    return Dist(lambda r: float(10 ** r.uniform(lo, hi)), f"10^U({lo:g}, {hi:g})")


def uniform(lo: float, hi: float) -> Dist:
    return Dist(lambda r: float(r.uniform(lo, hi)), f"U({lo:g}, {hi:g})")


def pow2_int(lo: float, hi: float) -> Dist:
    return Dist(lambda r: int(2 ** r.uniform(lo, hi)), f"int(2^U({lo:g}, {hi:g}))")


def log_int(lo: float, hi: float) -> Dist:
    return Dist(lambda r: int(10 ** r.uniform(lo, hi)), f"int(10^U({lo:g}, {hi:g}))")


def choice(values: list[Any]) -> Dist:
    return Dist(lambda r: values[r.randint(len(values))], f"one of {values}")


@dataclass(frozen=True)
class HParam:
    default: Any
    sample: Sampler | None = None  # None: fixed during random search
    check: Check | None = None
    doc: str = ""
    #: (default, sample) on large-image datasets, where DomainBed's values differ
    large: tuple[Any, Sampler | None] | None = None
    #: the type (default: the default's; an int default means integers only, a float any number)
    kind: type | None = None
    item: type | None = None  # lists: the element type, and their range
    item_check: Check | None = None
    nullable: bool = False

    def spec(self) -> Spec:
        kind = self.kind or (list if isinstance(self.default, (list, tuple)) else type(self.default))
        return Spec(kind, self.check, self.item, self.item_check, self.nullable)

    def resolve(self, small_images: bool) -> tuple[Any, Sampler | None]:
        if self.large is not None and not small_images:
            return self.large
        return self.default, self.sample


def draw(space: Mapping[str, HParam], hparams_seed: int, small_images: bool,
         dataset_defaults: Mapping[str, Any] | None = None,
         overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults (seed 0) or a random draw, then dataset defaults for fixed names, then overrides."""
    out: dict[str, Any] = {}
    overrides = check_mapping("hparams", overrides)
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
    """Every name known and every value of its declared type and range (``checks.check_value``)."""
    unknown = sorted(set(values) - set(space))
    if unknown:
        raise UserError(f"unknown hyperparameter(s) {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(space))}")
    for name, hp in space.items():
        check_value("hyperparameter", name, values[name], hp.spec())
