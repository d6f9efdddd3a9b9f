"""SqueezeNext-23 (plain and v5 block distributions) at any width.

Gholami, Kwon, Wu, Tai, Yue, Jin, Zhao, Keutzer: "SqueezeNext: Hardware-Aware Neural Network
Design", CVPRW 2018 (arXiv:1803.10615). 7x7/2 convolution with 64 channels and a 3x3/2 max pool,
four stages of SqueezeNext blocks with 32, 64, 128 and 256 output channels (blocks per stage
[6, 6, 8, 1] for SqNxt-23, [2, 4, 14, 1] for SqNxt-23v5), a 1x1 convolution to 128 channels,
global average pooling and a fully connected layer. Every channel count scales with the width.
Each block: two 1x1 bottleneck convolutions halving the channels twice, a 1x3 and a 3x1
convolution, a 1x1 expansion, and a shortcut (1x1 projection where the shape changes). Convolutions keep
their bias before BatchNorm, as in the authors' Caffe release.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

from models.architectures.layers import ClassifierNetwork, init_conv_weights

STAGE_CHANNELS = (32, 64, 128, 256)
BLOCKS_23 = (6, 6, 8, 1)
BLOCKS_23V5 = (2, 4, 14, 1)
STEM_CHANNELS = 64
FINAL_CHANNELS = 128


class SqueezeNextBlock(nn.Module):
    """SqueezeNext block (paper Fig. 2): 1x1, 1x1, 1x3, 3x1, 1x1 plus shortcut, ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if stride == 2:
            reduced = in_channels
        elif in_channels > out_channels:
            reduced = in_channels // 4
        else:
            reduced = in_channels // 2
        self.body = nn.Sequential(
            Conv2dNormActivation(in_channels, reduced, 1, stride, bias=True),
            Conv2dNormActivation(reduced, reduced // 2, 1, bias=True),
            Conv2dNormActivation(reduced // 2, reduced, (1, 3), bias=True),
            Conv2dNormActivation(reduced, reduced, (3, 1), bias=True),
            Conv2dNormActivation(reduced, out_channels, 1, bias=True),
        )
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = Conv2dNormActivation(in_channels, out_channels, 1, stride, bias=True)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class SqueezeNext(ClassifierNetwork):
    """SqueezeNext with the given blocks per stage and width multiplier."""

    def __init__(
        self,
        num_classes: int,
        img_channels: int = 3,
        dropout: float = 0.2,
        width: float = 1.0,
        blocks: tuple[int, ...] = BLOCKS_23,
    ):
        super().__init__()
        channels = int(STEM_CHANNELS * width)
        self.stem = nn.Sequential(
            Conv2dNormActivation(img_channels, channels, 7, stride=2, bias=True, padding=1),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
        )
        stages = []
        for index, (stage_channels, count) in enumerate(zip(STAGE_CHANNELS, blocks)):
            out_channels = int(stage_channels * width)
            layers = []
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                layers.append(SqueezeNextBlock(channels, out_channels, stride))
                channels = out_channels
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        final_channels = int(FINAL_CHANNELS * width)
        self.final_conv = Conv2dNormActivation(channels, final_channels, 1, bias=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(final_channels, num_classes)
        init_conv_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(self.stages(self.stem(x)))


def squeezenext23(
    num_classes: int, img_channels: int = 3, dropout: float = 0.2, width: float = 1.0, v5: bool = False
) -> SqueezeNext:
    """SqueezeNext-23 (blocks [6, 6, 8, 1]) or SqueezeNext-23v5 (blocks [2, 4, 14, 1])."""
    return SqueezeNext(num_classes, img_channels, dropout, width, BLOCKS_23V5 if v5 else BLOCKS_23)
