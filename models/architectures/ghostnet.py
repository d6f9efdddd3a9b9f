"""GhostNet with the thesis's classifier head.

Han, Wang, Tian, Guo, Xu, Xu: "GhostNet: More Features from Cheap Operations", CVPR 2020
(arXiv:1911.11907), Table 1. The paper's table gives expansion size, output channels, SE and stride
of every Ghost bottleneck; the depthwise kernel sizes (3 or 5) are those of the authors' release,
which the paper's 5.2 M parameters and 141 M multiply-adds imply. The squeeze-and-excitation unit is the
one of the authors' early release that the thesis trained: `channels // 4` reduced channels, ReLU, and
the gate clamp(x, 0, 1) (later releases round the reduction to a multiple of 4 and gate with a hard
sigmoid; with 196 classes that network has 772 more parameters than the thesis's 3,041,412). The head
follows the GhostNet thesis (Warsaw University of Technology, 2020), section 2.2 and its config: 1x1 conv to 960,
global average pooling, Linear(960 -> output_channels, no bias), BatchNorm, ReLU, Dropout, Linear.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation

from models.architectures.layers import ClassifierNetwork, init_conv_weights


class BottleneckSpec(NamedTuple):
    """One row of the paper's Table 1 (G-bneck) with the depthwise kernel size."""

    kernel: int
    expansion: int
    out_channels: int
    se: bool
    stride: int


# Stages of Table 1: each stage ends where the next strided bottleneck begins.
GHOSTNET_STAGES: tuple[tuple[BottleneckSpec, ...], ...] = (
    (BottleneckSpec(3, 16, 16, False, 1),),
    (BottleneckSpec(3, 48, 24, False, 2), BottleneckSpec(3, 72, 24, False, 1)),
    (BottleneckSpec(5, 72, 40, True, 2), BottleneckSpec(5, 120, 40, True, 1)),
    (
        BottleneckSpec(3, 240, 80, False, 2),
        BottleneckSpec(3, 200, 80, False, 1),
        BottleneckSpec(3, 184, 80, False, 1),
        BottleneckSpec(3, 184, 80, False, 1),
        BottleneckSpec(3, 480, 112, True, 1),
        BottleneckSpec(3, 672, 112, True, 1),
    ),
    (
        BottleneckSpec(5, 672, 160, True, 2),
        BottleneckSpec(5, 960, 160, False, 1),
        BottleneckSpec(5, 960, 160, True, 1),
        BottleneckSpec(5, 960, 160, False, 1),
        BottleneckSpec(5, 960, 160, True, 1),
    ),
)
STEM_CHANNELS = 16
LAST_CONV_CHANNELS = 960


def make_divisible(value: float, divisor: int = 4) -> int:
    """Round `value` to the nearest multiple of `divisor`, never going below 90 % of it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class GhostModule(nn.Module):
    """Ghost module (paper Fig. 2b): a 1x1 conv makes half the maps, a 3x3 depthwise conv the rest."""

    def __init__(self, in_channels: int, out_channels: int, relu: bool, ratio: int = 2, dw_kernel: int = 3):
        super().__init__()
        self.out_channels = out_channels
        primary = math.ceil(out_channels / ratio)
        cheap = primary * (ratio - 1)
        self.needs_slice = primary + cheap != out_channels
        activation = nn.ReLU if relu else None
        self.primary_conv = Conv2dNormActivation(in_channels, primary, 1, activation_layer=activation)
        self.cheap_operation = Conv2dNormActivation(primary, cheap, dw_kernel, groups=primary,
                                                    activation_layer=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.primary_conv(x)
        out = torch.cat((base, self.cheap_operation(base)), dim=1)
        return out[:, : self.out_channels] if self.needs_slice else out


def thesis_squeeze_excitation(channels: int) -> SqueezeExcitation:
    """The early release's SE unit: channels -> channels // 4 -> channels, ReLU, gate clamp(x, 0, 1)."""
    return SqueezeExcitation(channels, channels // 4, scale_activation=partial(nn.Hardtanh, 0.0, 1.0))


class GhostBottleneck(nn.Module):
    """Ghost bottleneck (paper Fig. 3): expand, [stride-2 depthwise], [SE], project, plus shortcut."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, kernel: int, stride: int, se: bool):
        super().__init__()
        self.ghost1 = GhostModule(in_channels, mid_channels, relu=True)
        self.conv_dw = (
            Conv2dNormActivation(mid_channels, mid_channels, kernel, stride, groups=mid_channels,
                                 activation_layer=None)
            if stride > 1
            else nn.Identity()
        )
        self.se = thesis_squeeze_excitation(mid_channels) if se else nn.Identity()
        self.ghost2 = GhostModule(mid_channels, out_channels, relu=False)
        if in_channels == out_channels and stride == 1:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                Conv2dNormActivation(in_channels, in_channels, kernel, stride, groups=in_channels,
                                     activation_layer=None),
                Conv2dNormActivation(in_channels, out_channels, 1, activation_layer=None),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ghost2(self.se(self.conv_dw(self.ghost1(x))))
        out += self.shortcut(x)
        return out


class GhostNet(ClassifierNetwork):
    """GhostNet (Table 1) with the thesis head; `width` scales every channel count except the head."""

    def __init__(
        self,
        num_classes: int,
        img_channels: int = 3,
        dropout: float = 0.2,
        output_channels: int = 320,
        width: float = 1.0,
    ):
        super().__init__()
        channels = make_divisible(STEM_CHANNELS * width)
        self.stem = Conv2dNormActivation(img_channels, channels, 3, stride=2)
        stages = []
        for stage in GHOSTNET_STAGES:
            blocks = []
            for spec in stage:
                out_channels = make_divisible(spec.out_channels * width)
                mid_channels = make_divisible(spec.expansion * width)
                blocks.append(GhostBottleneck(channels, mid_channels, out_channels, spec.kernel, spec.stride, spec.se))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        last_channels = make_divisible(LAST_CONV_CHANNELS * width)
        self.last_conv = Conv2dNormActivation(channels, last_channels, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Linear(last_channels, output_channels, bias=False),
            nn.BatchNorm1d(output_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.classifier = nn.Linear(output_channels, num_classes)
        init_conv_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_conv(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head(torch.flatten(self.pool(x), 1))
        return x if pre_logits else self.classifier(x)


def ghostnet(
    num_classes: int, img_channels: int = 3, dropout: float = 0.2, output_channels: int = 320, width: float = 1.0
) -> GhostNet:
    """GhostNet 1.0x (or `width`x) with the thesis head."""
    return GhostNet(num_classes, img_channels, dropout, output_channels, width)
