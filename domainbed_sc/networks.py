"""Backbones (docs/METHODS.md §B), each split into a featurizer and a linear classifier.

A featurizer is ``neck(body(x))``: ``body`` ends at the last convolutional feature map (Grad-CAM
for eX2L reads it, RCL reads it flattened) and ``neck`` turns the map into the embedding vector
(DL reads it, e.g. LeNet-5's 84-d post-ReLU fc2 output).  ``n_outputs`` is the embedding size.
``input_resize`` (any backbone) puts a bilinear upsampling in front of the body, so small images
reach a network built for large ones (METHODS §C.13: CMNIST 28×28 → 224×224 for ResNet-50, whose
layer4 map is then 7×7 instead of a Grad-CAM-useless 1×1).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import UserError
from .registry import Registry


class Featurizer(nn.Module):
    def __init__(self, body: nn.Module, neck: nn.Module, n_outputs: int):
        super().__init__()
        self.body = body
        self.neck = neck
        self.n_outputs = n_outputs

    def forward(self, x: Tensor) -> Tensor:
        return self.neck(self.body(x))


FEATURIZERS: Registry[Callable[..., Featurizer]] = Registry("architecture")


def _flat_size(body: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return body(torch.zeros(1, *input_shape)).numel()


@FEATURIZERS.register("lenet5")
def lenet5(input_shape: tuple[int, ...], **_) -> Featurizer:
    """LeNet-5 of the DL thesis: 62,006 parameters with its 10-way head on 3×32×32 input."""
    body = nn.Sequential(
        nn.Conv2d(input_shape[0], 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
    neck = nn.Sequential(nn.Flatten(), nn.Linear(_flat_size(body, input_shape), 120), nn.ReLU(),
                         nn.Linear(120, 84), nn.ReLU())
    return Featurizer(body, neck, 84)


@FEATURIZERS.register("rcl_cnn")
def rcl_cnn(input_shape: tuple[int, ...], **_) -> Featurizer:
    """The JiGen/Volpi MNIST net of the RCL paper: 2 convs (64, 128) then FC 1024, 1024."""
    body = nn.Sequential(
        nn.Conv2d(input_shape[0], 64, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 5), nn.ReLU(), nn.MaxPool2d(2))
    neck = nn.Sequential(nn.Flatten(), nn.Linear(_flat_size(body, input_shape), 1024), nn.ReLU(),
                         nn.Linear(1024, 1024), nn.ReLU())
    return Featurizer(body, neck, 1024)


@FEATURIZERS.register("mnist_cnn")
def mnist_cnn(input_shape: tuple[int, ...], **_) -> Featurizer:
    """DomainBed's MNIST_CNN: four 3×3 convs with ReLU + GroupNorm(8), global average pool."""
    def block(c_in, c_out, stride=1, dilation=1):
        pad = dilation
        return [nn.Conv2d(c_in, c_out, 3, stride, padding=pad, dilation=dilation), nn.ReLU(),
                nn.GroupNorm(8, c_out)]

    body = nn.Sequential(*block(input_shape[0], 64), *block(64, 128, stride=2),
                         *block(128, 128), *block(128, 128))
    neck = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Featurizer(body, neck, 128)


@FEATURIZERS.register("mlp")
def mlp(input_shape: tuple[int, ...], width: int = 256, **_) -> Featurizer:
    """A 2-hidden-layer MLP on flattened pixels (the original IRM CMNIST net; tiny test data)."""
    n_in = int(torch.tensor(input_shape).prod())
    neck = nn.Sequential(nn.Flatten(), nn.Linear(n_in, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU())
    return Featurizer(nn.Identity(), neck, width)


def _resnet(depth: int, input_shape: tuple[int, ...], pretrained: str = "none",
            dropout: float = 0.0, **_) -> Featurizer:
    from torchvision import models

    ctor = {18: models.resnet18, 50: models.resnet50}[depth]
    weights = None
    if pretrained not in ("none", None, ""):
        enum = {18: models.ResNet18_Weights, 50: models.ResNet50_Weights}[depth]
        try:
            weights = enum[pretrained]
        except KeyError:
            raise UserError(f"unknown pretrained weights {pretrained!r} for resnet{depth}; "
                            f"known: none, {', '.join(enum.__members__)}") from None
    try:
        net = ctor(weights=weights)
    except Exception as exc:  # no network, or a corrupt download
        raise UserError(f"could not load resnet{depth} weights {pretrained} ({exc.__class__.__name__}:"
                        f" {exc}); put them in the torch hub cache or pass --hparams "
                        "'{\"pretrained\": \"none\"}'") from None
    if input_shape[0] != 3:
        # DomainBed: input channel i copies pretrained channel i mod 3
        old = net.conv1
        net.conv1 = nn.Conv2d(input_shape[0], 64, 7, 2, 3, bias=False)
        with torch.no_grad():
            for i in range(input_shape[0]):
                net.conv1.weight[:, i] = old.weight[:, i % 3]
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                         net.layer1, net.layer2, net.layer3, net.layer4)
    neck = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
    return Featurizer(body, neck, net.fc.in_features)


@FEATURIZERS.register("resnet18")
def resnet18(input_shape, **kw) -> Featurizer:
    """torchvision's ResNet-18 (optionally ImageNet weights), pooled 512-d features."""
    return _resnet(18, input_shape, **kw)


@FEATURIZERS.register("resnet50")
def resnet50(input_shape, **kw) -> Featurizer:
    """torchvision's ResNet-50 (optionally ImageNet weights), pooled 2048-d features."""
    return _resnet(50, input_shape, **kw)


class Resize(nn.Module):
    """Bilinear resize to ``size``×``size`` (no parameters, so the network stays packable)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)


def build_featurizer(arch: str, input_shape: tuple[int, ...], input_resize: int = 0,
                     **kw) -> Featurizer:
    """The ``arch`` featurizer; with ``input_resize`` > 0 it is built for (C, r, r) inputs and its
    body starts by resizing whatever it gets to r×r."""
    ctor = FEATURIZERS.get(arch)
    if not input_resize:
        return ctor(tuple(input_shape), **kw)
    featurizer = ctor((input_shape[0], input_resize, input_resize), **kw)
    featurizer.body = nn.Sequential(Resize(input_resize), featurizer.body)
    return featurizer


def mlp_head(n_in: int, n_out: int, width: int, depth: int, dropout: float) -> nn.Sequential:
    """DomainBed's MLP (used by DANN's discriminator): depth-2 hidden layers of ``width``."""
    layers: list[nn.Module] = [nn.Linear(n_in, width), nn.Dropout(dropout), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.Dropout(dropout), nn.ReLU()]
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)
