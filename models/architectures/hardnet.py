"""HarDNet-39/68/85, plain and depthwise-separable (DS).

Chao, Kao, Ruan, Huang, Lin: "HarDNet: A Low Memory Traffic Network", ICCV 2019
(arXiv:1909.00948). A Harmonic Dense Block's layer k takes the outputs of layers k - 2^i for every
i with 2^i dividing k (layer 0 is the block input); its width is the growth rate times the
multiplier m to the power of the number of such links beyond the first, rounded to an even number.
The block outputs the concatenation of its odd-numbered layers and its last layer. Each block is
followed by a 1x1 transition convolution and, in the stages that downsample, a 2x2/2 max pool
(DS: a 3x3/2 depthwise convolution). The DS variants replace every 3x3 convolution in the blocks
by a 1x1 convolution followed by a 3x3 depthwise convolution.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

from models.architectures.layers import ClassifierNetwork, init_conv_weights


class HarDNetSpec(NamedTuple):
    """Stem widths and, per stage, growth rate, layers, transition width and downsampling."""

    stem: tuple[int, int]
    multiplier: float
    growth: tuple[int, ...]
    layers: tuple[int, ...]
    transition: tuple[int, ...]
    downsample: tuple[bool, ...]
    dropout_before_last_transition: bool


HARDNET_SPECS: dict[int, HarDNetSpec] = {
    39: HarDNetSpec((24, 48), 1.6, (16, 20, 64, 160), (4, 16, 8, 4), (96, 320, 640, 1024),
                    (True, True, True, False), False),
    68: HarDNetSpec((32, 64), 1.7, (14, 16, 20, 40, 160), (8, 16, 16, 16, 4), (128, 256, 320, 640, 1024),
                    (True, False, True, True, False), False),
    85: HarDNetSpec((48, 96), 1.7, (24, 24, 28, 36, 48, 256), (8, 16, 16, 16, 16, 4),
                    (192, 256, 320, 480, 720, 1280), (True, False, True, False, True, False), True),
}


def dw_conv_bn(channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 depthwise convolution and BatchNorm (no activation), the DS variants' spatial convolution."""
    return Conv2dNormActivation(channels, channels, 3, stride, groups=channels, activation_layer=None)


def harmonic_links(layer: int, growth: int, multiplier: float) -> tuple[list[int], int]:
    """Indices of the earlier outputs layer `layer` reads and its number of output channels."""
    links = []
    channels = float(growth)
    power = 1
    while power <= layer:
        if layer % power == 0:
            links.append(layer - power)
            if power > 1:
                channels *= multiplier
        power *= 2
    return links, int(int(channels + 1) / 2) * 2


class HarDBlock(nn.Module):
    """Harmonic Dense Block with `n_layers` layers."""

    def __init__(self, in_channels: int, growth: int, multiplier: float, n_layers: int, depthwise: bool):
        super().__init__()
        widths = [in_channels]
        self.links: list[list[int]] = []
        layers = []
        for layer in range(1, n_layers + 1):
            links, out_channels = harmonic_links(layer, growth, multiplier)
            layer_in = sum(widths[i] for i in links)
            if depthwise:
                layers.append(nn.Sequential(Conv2dNormActivation(layer_in, out_channels, 1,
                                                                 activation_layer=nn.ReLU6),
                                            dw_conv_bn(out_channels)))
            else:
                layers.append(Conv2dNormActivation(layer_in, out_channels, 3, activation_layer=nn.ReLU6))
            self.links.append(links)
            widths.append(out_channels)
        self.layers = nn.ModuleList(layers)
        self.kept = [i for i in range(1, n_layers + 1) if i % 2 == 1 or i == n_layers]
        self.out_channels = sum(widths[i] for i in self.kept)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        for links, layer in zip(self.links, self.layers):
            inputs = [outputs[i] for i in links]
            outputs.append(layer(inputs[0] if len(inputs) == 1 else torch.cat(inputs, 1)))
        return torch.cat([outputs[i] for i in self.kept], 1)


class HarDNet(ClassifierNetwork):
    """HarDNet of the given depth (39, 68, 85); `depthwise` selects the DS variant."""

    def __init__(
        self, num_classes: int, img_channels: int = 3, dropout: float = 0.1, depth: int = 68, depthwise: bool = False
    ):
        super().__init__()
        if depth not in HARDNET_SPECS:
            raise ValueError(f"HarDNet depth {depth}: valid depths are {sorted(HARDNET_SPECS)}")
        spec = HARDNET_SPECS[depth]
        first, second = spec.stem
        layers: list[nn.Module] = [
            Conv2dNormActivation(img_channels, first, 3, stride=2, activation_layer=nn.ReLU6),
            Conv2dNormActivation(first, second, 1 if depthwise else 3, activation_layer=nn.ReLU6),
            dw_conv_bn(second, stride=2) if depthwise else nn.MaxPool2d(3, stride=2, padding=1),
        ]
        channels = second
        last = len(spec.layers) - 1
        for index, (growth, n_layers, width, down) in enumerate(
            zip(spec.growth, spec.layers, spec.transition, spec.downsample)
        ):
            block = HarDBlock(channels, growth, spec.multiplier, n_layers, depthwise)
            layers.append(block)
            if index == last and spec.dropout_before_last_transition:
                layers.append(nn.Dropout(0.1))
            layers.append(Conv2dNormActivation(block.out_channels, width, 1, activation_layer=nn.ReLU6))
            channels = width
            if down:
                layers.append(dw_conv_bn(channels, stride=2) if depthwise else nn.MaxPool2d(2, stride=2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes)
        init_conv_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def hardnet(
    num_classes: int, img_channels: int = 3, dropout: float = 0.1, depth: int = 68, depthwise: bool = False
) -> HarDNet:
    """HarDNet-39/68/85 (plain) or HarDNet-39DS/68DS/85DS (depthwise-separable)."""
    return HarDNet(num_classes, img_channels, dropout, depth, depthwise)
