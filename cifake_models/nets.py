"""The neural architectures, each with a new two-class head.

``weights="imagenet"`` gives the paper's transfer learning from torchvision's ImageNet
weights, read from ``$TORCH_HOME/hub/checkpoints/`` or downloaded; ``weights="none"`` gives
a random initialisation, the only one possible without internet access.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn
from torchvision import models

WEIGHT_CHOICES = ("none", "imagenet")


class ImageNetWeightsUnavailable(RuntimeError):
    """The ImageNet weights are neither cached nor downloadable."""


def paper_cnn(in_channels: int = 1, num_classes: int = 2, hidden: int = 128) -> nn.Module:
    """The paper's small CNN: one 32@3x3 convolution, a 2x2 max-pool, two dense layers."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, kernel_size=3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 15 * 15, hidden),  # a 32x32 input gives 30x30, pooled to 15x15
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


def _imagenet(builder: Callable[..., nn.Module], weights_enum, weights: str) -> nn.Module:
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, not {weights!r}")
    if weights == "none":
        return builder(weights=None)
    chosen = weights_enum.IMAGENET1K_V1
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(chosen.url))
    try:
        return builder(weights=chosen)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad file a RuntimeError
        raise ImageNetWeightsUnavailable(
            f"ImageNet weights {chosen} could not be loaded: place {os.path.basename(chosen.url)} "
            f"in {os.path.dirname(cached)} (from {chosen.url}) or allow the download; "
            f"or train with --weights none. Cause: {error}"
        ) from error


def resnet50(weights: str = "none", num_classes: int = 2) -> nn.Module:
    model = _imagenet(models.resnet50, models.ResNet50_Weights, weights)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def vgg16_bn(weights: str = "none", num_classes: int = 2) -> nn.Module:
    """VGG-16 with batch norm; the 7x7x4096 classifier replaced by global pooling and one layer.

    At 32x32 the last feature map is 1x1, which torchvision's pooling would copy 49 times into
    a 25088x4096 layer (120M weights, 240 MB in half precision) that sees no more information;
    batch norm because plain VGG-16 trains unreliably from scratch (Simonyan & Zisserman 2015
    trained it in stages).
    """
    model = _imagenet(models.vgg16_bn, models.VGG16_BN_Weights, weights)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Linear(512, num_classes)
    return model


def densenet121(weights: str = "none", num_classes: int = 2) -> nn.Module:
    model = _imagenet(models.densenet121, models.DenseNet121_Weights, weights)
    model.classifier = nn.Linear(model.classifier.in_features, num_classes)
    return model


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResidualStage(nn.Module):
    """Two 3x3 conv-BN-ReLU layers, a residual connection over the second, then an optional 2x max-pool."""

    def __init__(self, cin: int, cout: int, pool: bool):
        super().__init__()
        self.first, self.second = _conv_bn_relu(cin, cout), _conv_bn_relu(cout, cout)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        return self.pool(x + self.second(x))


def native32(weights: str = "none", num_classes: int = 2, width: int = 48) -> nn.Module:
    """A network designed for 32x32 inputs: full resolution until the first pooling.

    The paper's ImageNet networks downsample by 4 in their stem, so at 32x32 their blocks never
    see single pixels, where the traces of generation (and of CIFAR's own camera pipeline)
    live. Here the first stage's 3x3 convolutions run on all 32x32 pixels, as in He et al.
    2016's CIFAR networks (sec. 4.2) and the fast CIFAR-10 line (Page's ResNet-9, Jordan's
    airbench): three :class:`ResidualStage` at ``width``, 2x and 4x that many channels (32x32,
    16x16, 8x8), then global average pooling and one linear layer. There are no pretrained weights.
    """
    if weights != "none":
        raise ValueError("native32 has no pretrained weights; use --weights none")
    return nn.Sequential(
        ResidualStage(3, width, pool=True),
        ResidualStage(width, 2 * width, pool=True),
        ResidualStage(2 * width, 4 * width, pool=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )
