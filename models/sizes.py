"""Size counters: parameters and multiply-adds (torch.utils.flop_counter.FlopCounterMode FLOPs / 2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(network: nn.Module) -> int:
    """Number of parameters (trainable or not, buffers excluded)."""
    return sum(parameter.numel() for parameter in network.parameters())


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from an int or a [height, width] pair."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def count_multiply_adds(network: nn.Module, image_size: int | Sequence[int], img_channels: int = 3) -> int:
    """Multiply-adds of one forward pass on one image (FlopCounterMode's FLOPs / 2), in eval mode."""
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            network(torch.zeros(1, img_channels, *image_hw(image_size), device=device))
    finally:
        network.train(was_training)
    return counter.get_total_flops() // 2
