"""The Chroma-VAE encoder and decoder (docs/METHODS.md §B.5; our choice, §C.14).

Encoder: three 4×4 stride-2 convolutions with 32, 64 and 128 channels and ReLU, then a linear
layer to (μ, log σ²).  Each convolution halves the side (floor), so 28 → 14 → 7 → 3 and
32 → 16 → 8 → 4.  The decoder mirrors it: a linear layer back to the 128-channel map, then
transposed convolutions whose output padding restores the odd sides exactly.  The decoder
returns unbounded values: Bernoulli logits or Gaussian means, as the likelihood decides.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..errors import UserError

CHANNELS = (32, 64, 128)


def side_lengths(side: int) -> list[int]:
    """The side of every feature map, input first: each 4×4 stride-2 pad-1 conv floors side/2."""
    sides = [side]
    for _ in CHANNELS:
        sides.append(sides[-1] // 2)
    return sides


def check_image_shape(input_shape: tuple[int, ...]) -> tuple[int, list[int], list[int]]:
    if len(input_shape) != 3 or min(input_shape[1:]) < 2 ** len(CHANNELS):
        raise UserError(f"ChromaVAE needs images of at least 8×8 (C×H×W), got input shape "
                        f"{tuple(input_shape)}")
    c, h, w = input_shape
    return c, side_lengths(h), side_lengths(w)


class Encoder(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], dim_z: int):
        super().__init__()
        c, hs, ws = check_image_shape(input_shape)
        layers: list[nn.Module] = []
        for c_in, c_out in zip((c, *CHANNELS[:-1]), CHANNELS):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Linear(CHANNELS[-1] * hs[-1] * ws[-1], 2 * dim_z)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(μ, log σ²), each of shape (batch, dim_z)."""
        mu, logvar = self.fc(self.body(x)).chunk(2, dim=1)
        return mu, logvar


class Decoder(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], dim_z: int):
        super().__init__()
        c, hs, ws = check_image_shape(input_shape)
        self.map_shape = (CHANNELS[-1], hs[-1], ws[-1])
        self.fc = nn.Sequential(nn.Linear(dim_z, CHANNELS[-1] * hs[-1] * ws[-1]), nn.ReLU())
        outs = (c, *CHANNELS[:-1])
        layers: list[nn.Module] = []
        for i in reversed(range(len(CHANNELS))):  # map i+1 -> map i
            layers.append(nn.ConvTranspose2d(CHANNELS[i], outs[i], 4, 2, 1,
                                             output_padding=(hs[i] % 2, ws[i] % 2)))
            if i > 0:
                layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(self.fc(z).view(-1, *self.map_shape))
