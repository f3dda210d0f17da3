"""Backbones (docs/METHODS.md §B), each split into a featurizer and a linear classifier.

A featurizer is ``neck(body(x))``: ``body`` ends at the last convolutional feature map (Grad-CAM
for eX2L reads it, RCL reads it flattened) and ``neck`` turns the map into the embedding vector
(DL reads it, e.g. LeNet-5's 84-d post-ReLU fc2 output).  ``n_outputs`` is the embedding size.
``input_resize`` (any backbone) puts a bilinear upsampling in front of the body, so small images
reach a network built for large ones (METHODS §C.13: CMNIST 28×28 → 224×224 for ResNet-50, whose
layer4 map is then 7×7 instead of a Grad-CAM-useless 1×1).

ImageNet backbones: torchvision's ResNet-18/50, AlexNet and ConvNeXt-Base (METHODS §B.4, §B.7)
and any timm model as ``timm:<name>`` (§B.8, the optional ``timm`` extra).  Pretrained weights
(the ``pretrained`` hyperparameter) are read from the local caches only: a missing file is a
one-line error naming the path it was looked for at, never a download.
"""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

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


def hub_checkpoint(url: str) -> Path:
    """Where torch hub keeps the file of ``url``: $TORCH_HOME/hub/checkpoints (default
    ~/.cache/torch/hub/checkpoints), the cache torchvision's and timm's URL weights go to."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlsplit(url).path)


def not_cached(arch: str, pretrained: str, where: str) -> UserError:
    return UserError(f"{arch} weights {pretrained} are not in the local cache ({where}); copy them "
                     "there (building a network never downloads) or use pretrained: none")


def _torchvision_net(arch: str, ctor: Callable[..., nn.Module], enum, pretrained: str | None,
                     **kw) -> nn.Module:
    """torchvision's ``arch``, with the weights named ``pretrained`` (e.g. IMAGENET1K_V2) read from
    the torch hub cache only, or random weights for ``none`` (docs/METHODS.md §B.7)."""
    net = ctor(weights=None, **kw)
    if pretrained in ("none", None, ""):
        return net
    if pretrained not in enum.__members__:
        raise UserError(f"unknown pretrained weights {pretrained!r} for {arch}; "
                        f"known: none, {', '.join(enum.__members__)}")
    path = hub_checkpoint(enum[pretrained].url)
    if not path.is_file():
        raise not_cached(arch, pretrained, f"{path}; $TORCH_HOME/hub is the torch hub cache")
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # a truncated or foreign file
        raise UserError(f"could not load {arch} weights from {path} ({exc.__class__.__name__}: "
                        f"{' '.join(str(exc).split())[:200]}); delete the file and copy it again") from None
    return net


def adapt_conv(conv: nn.Conv2d, channels: int) -> nn.Conv2d:
    """``conv`` rebuilt for ``channels`` input channels, input channel i copying the weights of
    channel i mod 3 (DomainBed's rule for 2-channel CMNIST on ImageNet networks)."""
    if channels == conv.in_channels:
        return conv
    new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    with torch.no_grad():
        for i in range(channels):
            new.weight[:, i] = conv.weight[:, i % conv.in_channels]
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _resnet(depth: int, input_shape: tuple[int, ...], pretrained: str = "none",
            dropout: float = 0.0, **_) -> Featurizer:
    from torchvision import models

    net = _torchvision_net(f"resnet{depth}", {18: models.resnet18, 50: models.resnet50}[depth],
                           {18: models.ResNet18_Weights, 50: models.ResNet50_Weights}[depth],
                           pretrained)
    net.conv1 = adapt_conv(net.conv1, input_shape[0])
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


@FEATURIZERS.register("alexnet")
def alexnet(input_shape: tuple[int, ...], pretrained: str = "none", **_) -> Featurizer:
    """torchvision's AlexNet (eX2L App. E): body = conv1 … conv5 + ReLU (256×13×13 at 224, the
    last conv map), neck = the last max-pool, 6×6 average pool and the classifier's two 4096-wide
    layers with their own dropout 0.5; inputs must be at least 63×63."""
    from torchvision import models

    net = _torchvision_net("alexnet", models.alexnet, models.AlexNet_Weights, pretrained)
    net.features[0] = adapt_conv(net.features[0], input_shape[0])
    neck = nn.Sequential(net.features[-1], net.avgpool, nn.Flatten(), *net.classifier[:-1])
    return Featurizer(net.features[:-1], neck, net.classifier[-1].in_features)


@FEATURIZERS.register("convnext_base")
def convnext_base(input_shape: tuple[int, ...], pretrained: str = "none", dropout: float = 0.0,
                  **_) -> Featurizer:
    """torchvision's ConvNeXt-Base [Liu et al. 2022] (88.6 M parameters; torchvision's stochastic
    depth 0.5): body = stem and the four stages (1024×7×7 at 224), neck = average pool, the
    classifier's LayerNorm, flatten, dropout(``resnet_dropout``)."""
    from torchvision import models

    net = _torchvision_net("convnext_base", models.convnext_base, models.ConvNeXt_Base_Weights,
                           pretrained)
    net.features[0][0] = adapt_conv(net.features[0][0], input_shape[0])
    neck = nn.Sequential(net.avgpool, net.classifier[0], nn.Flatten(), nn.Dropout(dropout))
    return Featurizer(net.features, neck, net.classifier[-1].in_features)


TIMM = "timm:"  # arch prefix: any timm model by name, e.g. timm:convnext_tiny.fb_in1k
TIMM_PRETRAINED = "timm"  # the `pretrained` value that loads the model tag's weights


class TimmBody(nn.Module):
    """A timm model up to its last feature map (``forward_features``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_features(x)


class TimmNeck(nn.Module):
    """timm's own pooling and pre-logits (``forward_head(pre_logits=True)``) of the body's model,
    then dropout.  The model is held in a tuple, outside the module tree: the body owns it, so
    its parameters are counted, moved and saved once."""

    def __init__(self, model: nn.Module, dropout: float):
        super().__init__()
        self._model = (model,)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self._model[0].forward_head(x, pre_logits=True))


def _import_timm():
    try:
        import timm
    except ImportError:
        raise UserError("timm: architectures need the optional timm package: "
                        "pip install 'domainbed_sc[timm]'") from None
    return timm


def timm_weights_file(name: str) -> Path:
    """The cached file of timm model ``name``'s pretrained weights: the Hugging Face hub cache
    ($HF_HOME/hub) where its weights live on the hub, else the torch hub cache; never fetched."""
    from huggingface_hub import constants, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise UserError(f"timm knows no pretrained weights for {name!r}")
    places = []
    if cfg.hf_hub_id:
        for filename in (cfg.hf_hub_filename or "model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=constants.HF_HUB_CACHE)
            if isinstance(found, str):
                return Path(found)
        places.append(f"{cfg.hf_hub_id} in {constants.HF_HUB_CACHE}")
    if cfg.url:
        path = hub_checkpoint(cfg.url)
        if path.is_file():
            return path
        places.append(f"{path} ($TORCH_HOME/hub)")
    raise not_cached(f"{TIMM}{name}", TIMM_PRETRAINED, " or ".join(places) or "no source known")


def timm_featurizer(name: str, input_shape: tuple[int, ...], pretrained: str = "none",
                    dropout: float = 0.0, **_) -> Featurizer:
    """Any timm model by name (docs/METHODS.md §B.8), its classifier removed; with
    ``pretrained: timm`` the weights of its tag, read from the local caches only."""
    timm = _import_timm()
    if pretrained not in ("none", None, "", TIMM_PRETRAINED):
        raise UserError(f"pretrained for {TIMM}{name} must be none or {TIMM_PRETRAINED} (the "
                        f"weights of the model's tag), got {pretrained!r}")
    weights = {}
    if pretrained == TIMM_PRETRAINED:
        weights = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(timm_weights_file(name))}}
    try:
        model = timm.create_model(name, num_classes=0, in_chans=input_shape[0], **weights)
    except RuntimeError as exc:  # an unknown name, or weights that do not fit
        raise UserError(f"timm cannot build {name!r}: {' '.join(str(exc).split())[:200]}") from None
    n_out = getattr(model, "head_hidden_size", None) or model.num_features
    return Featurizer(TimmBody(model), TimmNeck(model, dropout), n_out)


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
    ctor = partial(timm_featurizer, arch[len(TIMM):]) if arch.startswith(TIMM) else FEATURIZERS.get(arch)
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
