"""The convolution-BatchNorm unit and the weight initialisation the hand-written architectures share."""

from __future__ import annotations

from torch import nn


def conv_bn(
    in_channels: int, out_channels: int, kernel: int | tuple[int, int], stride: int = 1, groups: int = 1,
    activation: type[nn.Module] | None = nn.ReLU, bias: bool = False, padding: int | tuple[int, int] | None = None,
) -> nn.Sequential:
    """Convolution, BatchNorm and an in-place `activation` (None: none); padding defaults to kernel // 2."""
    if padding is None:
        padding = tuple(size // 2 for size in kernel) if isinstance(kernel, tuple) else kernel // 2
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding, groups=groups, bias=bias),
        nn.BatchNorm2d(out_channels),
    ]
    if activation is not None:
        layers.append(activation(inplace=True))
    return nn.Sequential(*layers)


def init_conv_weights(network: nn.Module) -> None:
    """Kaiming-normal convolution weights (fan_out, ReLU gain) and zero convolution biases."""
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
