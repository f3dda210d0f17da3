"""Coloured MNIST (docs/METHODS.md §D.3; Chroma-VAE choices §C.10), two variants.

Common recipe: label y = 1[digit < 5] flipped with probability 0.25; colour = y flipped with
probability p; the image is the digit in 2 channels with the channel that is not ``colour``
zeroed (colour 0 = channel 0 "red", colour 1 = channel 1 "green"), 2×28×28, stored uint8 and
scaled /255 on fetch.  s = colour (2 attributes), so the 4 groups are (y, colour).

``variant="domainbed"`` (Variant A, DomainBed ``ColoredMNIST``):
MNIST train+test (70k) shuffled by ``torch.randperm``; environment i = images [i::3] with
p_e = 0.1, 0.2, 0.9 ("+90%", "+80%", "-90%").  The random draws follow DomainBed's order and use
a CPU ``torch.Generator`` seeded with ``data_seed``, and each environment is split in/out by
DomainBed's ``split_dataset(env, int(len·holdout_fraction), seed_hash(data_seed, i))`` (the
first part of a ``RandomState`` shuffle is "out").  So a data seed s reproduces DomainBed's
environments for ``--seed s --trial_seed s`` exactly.  Splits:
``train`` = in-parts of the training environments (e = 0, 1, … in environment order),
``val`` = their out-parts (training-domain validation), ``oracle_val`` = the out-part of
``test_env``, ``test`` = its in-part.  The test environment's e is the next id (the number of
training environments), so e tells all three environments apart in every split.

``variant="chroma"`` (Variant C, Chroma-VAE's CMNIST, §C.10): a single training environment
from MNIST-train with p_c = 0.1, of which a seeded ``val_fraction`` (10 %) is held out as ``val``
(same distribution); ``test_in`` (p_c = 0.1) and ``test_out`` (p_c = 0.9) are built from the same
10k MNIST-test digits with the same label noise and the same uniform draw deciding colour flips
(paired, like MNIST-CIFAR's ID/OOD tests).  No environments: e = -1.

The original MNIST digit of every example is kept as ``digit`` (cache and dataset attribute), so
the label noise can be checked.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from . import register_dataset, sources
from ..checks import between, one_of
from .base import DatasetArgs, arg
from .cached import CachedTensorDataset
from .holdout import domainbed_holdout

ENV_P = (0.1, 0.2, 0.9)  # DomainBed's environments "+90%", "+80%", "-90%"
LABEL_NOISE = 0.25
CHROMA_P_IN, CHROMA_P_OUT = 0.1, 0.9
VARIANTS = ("domainbed", "chroma")


@dataclass(frozen=True)
class CMNISTArgs(DatasetArgs):
    variant: str = arg("domainbed", str, one_of(*VARIANTS))
    holdout_fraction: float = arg(0.2, float, between(0, 1))  # domainbed: out-part of every env
    test_env: int = arg(2, int, one_of(*range(len(ENV_P))))  # domainbed: the held-out environment
    val_fraction: float = arg(0.1, float, between(0, 1))  # chroma: part of MNIST-train held out


def torch_seed(seed: int) -> int:
    """torch generators take seeds in [0, 2**64); wrap negatives the way torch itself does."""
    return seed % 2**64


def noisy_binary_labels(labels: Tensor, gen: torch.Generator) -> Tensor:
    """y = 1[digit < 5] XOR Bernoulli(0.25), drawn as DomainBed does: ``torch.rand(n) < p``."""
    return (labels < 5).long() ^ (torch.rand(len(labels), generator=gen) < LABEL_NOISE).long()


def coloured(digits: Tensor, colour: Tensor) -> Tensor:
    """uint8 [N, 2, 28, 28]: the digit in both channels, the one not named by colour zeroed."""
    x = torch.stack([digits, digits], dim=1)
    x[torch.arange(len(x)), 1 - colour] = 0
    return x


def colour_digits(digits: Tensor, labels: Tensor, p: float, gen: torch.Generator) -> dict:
    """DomainBed's ``color_dataset`` for one environment (label draws first, then colour draws)."""
    y = noisy_binary_labels(labels, gen)
    colour = y ^ (torch.rand(len(y), generator=gen) < p).long()
    return {"x": coloured(digits, colour), "y": y, "s": colour, "digit": labels}


def _take(d: dict[str, Tensor], idx: Tensor, env: int) -> dict[str, Tensor]:
    out = {k: v[idx] for k, v in d.items()}
    out["e"] = torch.full((len(idx),), env, dtype=torch.long)
    return out


def _cat(parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def generate_domainbed(data_dir: Path, args: CMNISTArgs, seed: int) -> dict[str, dict]:
    (tr_x, tr_y), (te_x, te_y) = (sources.mnist(data_dir, train) for train in (True, False))
    gen = torch.Generator().manual_seed(torch_seed(seed))
    shuffle = torch.randperm(len(tr_y) + len(te_y), generator=gen)
    images, labels = torch.cat([tr_x, te_x])[shuffle], torch.cat([tr_y, te_y])[shuffle]
    envs = [colour_digits(images[i::3], labels[i::3], p, gen) for i, p in enumerate(ENV_P)]
    train_envs = [i for i in range(len(ENV_P)) if i != args.test_env]
    in_idx, out_idx = zip(*(domainbed_holdout(len(env["y"]), args.holdout_fraction, seed, i)
                            for i, env in enumerate(envs)))
    e_of = {i: k for k, i in enumerate(train_envs + [args.test_env])}
    return {
        "train": _cat([_take(envs[i], in_idx[i], e_of[i]) for i in train_envs]),
        "val": _cat([_take(envs[i], out_idx[i], e_of[i]) for i in train_envs]),
        "oracle_val": _take(envs[args.test_env], out_idx[args.test_env], e_of[args.test_env]),
        "test": _take(envs[args.test_env], in_idx[args.test_env], e_of[args.test_env]),
    }


def generate_chroma(data_dir: Path, args: CMNISTArgs, seed: int) -> dict[str, dict]:
    (tr_x, tr_y), (te_x, te_y) = (sources.mnist(data_dir, train) for train in (True, False))
    gen = torch.Generator().manual_seed(torch_seed(seed))
    train = colour_digits(tr_x, tr_y, CHROMA_P_IN, gen)
    order = torch.randperm(len(tr_y), generator=gen)
    n_val = int(len(order) * args.val_fraction)
    # D_in and D_out share digits, noisy labels and the uniforms deciding colour flips (paired)
    y = noisy_binary_labels(te_y, gen)
    u = torch.rand(len(y), generator=gen)

    def test_set(p: float) -> dict[str, Tensor]:
        colour = y ^ (u < p).long()
        return {"x": coloured(te_x, colour), "y": y.clone(), "s": colour, "digit": te_y}

    return {"train": {k: v[order[n_val:]] for k, v in train.items()},
            "val": {k: v[order[:n_val]] for k, v in train.items()},
            "test_in": test_set(CHROMA_P_IN), "test_out": test_set(CHROMA_P_OUT)}


@register_dataset("cmnist")
class CMNIST(CachedTensorDataset):
    Args = CMNISTArgs
    num_classes = 2
    input_shape = (2, 28, 28)
    provides = frozenset({"s", "g", "e"})
    val_split = "val"
    oracle_split = "oracle_val"
    id_split = "val"
    ood_split = "test"
    default_hparams = {"arch": "mnist_cnn"}
    files = (sources.MNIST,)
    #: the original MNIST digit of every example, per split, for checking the label noise
    digit: dict[str, Tensor]

    @classmethod
    def variant_provides(cls, args: CMNISTArgs) -> frozenset[str]:
        return frozenset({"s", "g"}) if args.variant == "chroma" else cls.provides

    def configure(self) -> None:
        self.num_attributes = 2
        if self.args.variant == "chroma":  # one environment, D_in / D_out tests (per instance)
            self.oracle_split, self.id_split, self.ood_split = None, "test_in", "test_out"

    def generate(self) -> dict[str, dict]:
        build = generate_chroma if self.args.variant == "chroma" else generate_domainbed
        return build(self.data_dir, self.args, self.data_seed)
