"""MNIST-MP ("Missing Patterns"), the RCL paper's benchmark (docs/METHODS.md §D.2, §C.8, §C.9).

* ``train``: all 60,000 MNIST-train digits, each coloured with its class colour (no
  counter-examples, so s ≡ y and the groups collapse to the classes);
* ``val``: the 10,000 MNIST-test digits in their class colours (the paper's "validation accuracy");
* ``test``: the *same* 10,000 digits in the mean colour (127.3, 127.3, 127.3), i.e. grey.

Colourisation is multiplicative with a black background (§C.8):
x[ch] = digit/255 · colour[ch]/255.  Pixels are stored as uint8 round(digit·colour[ch]/255) and
scaled by /255 on fetch, so a stored pixel differs from the exact product by at most 0.5/255.

s is the colour id: the class (0–9) in train/val, 10 (grey) in test; num_attributes = 11.

``resolution`` is 28 (the default, matching the RCL net's 128·4·4 FC input) or 32 (2-px zero
padding, the size of the released files; §C.9).  The released files' [-1, 1] scaling is not
offered: the backbones normalise nothing, and [0, 1] keeps the contract shared by all datasets.

The data do not depend on the seed, so the cache key is the arguments alone (one entry for all
seeds).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from . import register_dataset, sources
from ..checks import one_of
from .base import DatasetArgs, arg
from .cached import CachedTensorDataset

#: class colours of the LBB coloured MNIST, RGB in 0..255 (METHODS §D.2; from the authors'
#: repository liris-tduboudin/Look-Beyond-Bias)
COLOURS = torch.tensor([
    [255, 127, 127], [0, 127, 127], [127, 255, 127], [127, 0, 127], [127, 127, 255],
    [127, 127, 0], [0, 255, 255], [255, 0, 0], [255, 0, 255], [0, 255, 0],
], dtype=torch.float64)
#: the test colour: the mean of the class colours, exactly 127.3 per channel
GREY = COLOURS.mean(0)
GREY_ID = 10
_CHUNK = 10_000  # samples per colourisation step, bounds the float temporary to ~100 MB


@dataclass(frozen=True)
class MnistMPArgs(DatasetArgs):
    resolution: int = arg(28, int, one_of(28, 32))


def colourise(digits: Tensor, colours: Tensor, resolution: int) -> Tensor:
    """uint8 [N, 3, R, R] = round(digit * colour / 255), zero-padded to R; colours [N, 3] 0..255."""
    pad = (resolution - 28) // 2
    out = torch.zeros((len(digits), 3, resolution, resolution), dtype=torch.uint8)
    for start in range(0, len(digits), _CHUNK):
        d = digits[start:start + _CHUNK].to(torch.float32).unsqueeze(1)
        c = colours[start:start + _CHUNK].to(torch.float32)[:, :, None, None]
        out[start:start + _CHUNK, :, pad:pad + 28, pad:pad + 28] = (d * c / 255).round_()
    return out


def generate(data_dir: Path, args: MnistMPArgs) -> dict[str, dict[str, Tensor]]:
    (tr_x, tr_y), (te_x, te_y) = (sources.mnist(data_dir, train) for train in (True, False))
    grey = GREY.expand(len(te_y), 3)
    r = args.resolution
    return {
        "train": {"x": colourise(tr_x, COLOURS[tr_y], r), "y": tr_y, "s": tr_y.clone()},
        "val": {"x": colourise(te_x, COLOURS[te_y], r), "y": te_y, "s": te_y.clone()},
        "test": {"x": colourise(te_x, grey, r), "y": te_y.clone(),
                 "s": torch.full_like(te_y, GREY_ID)},
    }


@register_dataset("mnist_mp")
class MnistMP(CachedTensorDataset):
    Args = MnistMPArgs
    num_classes = 10
    input_shape = (3, 28, 28)
    provides = frozenset({"s", "g"})
    val_split = "val"
    id_split = "val"
    ood_split = "test"
    default_hparams = {"arch": "rcl_cnn"}
    files = (sources.MNIST,)
    seeded = False  # module docstring: one cache entry for all seeds

    def configure(self) -> None:
        self.input_shape = (3, self.args.resolution, self.args.resolution)
        self.num_attributes = GREY_ID + 1

    def generate(self) -> dict[str, dict[str, Tensor]]:
        return generate(self.data_dir, self.args)
