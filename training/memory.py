"""The memory a configuration's training takes, estimated before anything is allocated.

The network is built and run on PyTorch's meta device, which gives every shape and holds no memory; the tensors
autograd keeps for the backward pass are counted, each once, beside the input batch and the weights with their
gradients and two optimizer moments. It is an order of magnitude: the backward pass's temporaries and the
allocator's caching come on top (ghost at batch 16 of 227x227: 671 MiB of kept activations, against a rise of the
peak resident size of 894 MiB in a real CPU step). The image cache is counted from the prepared data's label files:
one uint8 image of image_size per picture.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.arch_dict import build_network
from utils.config import Config
from utils.devices import CUDA_ACCELERATORS

STANFORD_CARS_CLASSES = 196  # the classifier's width, a rounding error next to the activations
HALF_PRECISIONS = (16, "16", "bf16", "16-true", "bf16-true", "16-mixed", "bf16-mixed", "transformer-engine",
                   "transformer-engine-float16")
LABEL_FILES = ("train_labels.csv", "test_labels.csv")
GIB = 2**30


def size_text(count: float) -> str:
    if count >= 1024 * GIB:
        return f"{count / 1024 / GIB:.1f} TiB"
    if count >= GIB / 10:
        return f"{count / GIB:.1f} GiB"
    return f"{count / 2**20:.0f} MiB" if count >= 2**20 else f"{count / 1024:.0f} KiB"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training process holds on its device for a training step."""

    weights: int
    activations: int
    input_batch: int
    device_images: int = 0  # data_on_device: the cached images of both splits

    @property
    def training_state(self) -> int:
        """The weights, their gradients and two optimizer moments (Adam-type; SGD with momentum keeps one)."""
        return 4 * self.weights

    @property
    def total(self) -> int:
        return self.training_state + self.activations + self.input_batch + self.device_images

    def describe(self) -> str:
        parts = [f"activations kept for the backward pass {size_text(self.activations)}",
                 f"input batch {size_text(self.input_batch)}",
                 f"weights with their gradients and optimizer moments {size_text(self.training_state)}"]
        parts += [f"cached images on the device {size_text(self.device_images)}"] if self.device_images else []
        return f"about {size_text(self.total)} per training process ({', '.join(parts)})"


def _kept_activation_bytes(network: nn.Module, batch: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps from a forward pass of batch (parameters aside, each tensor once)."""
    kept: dict[int, torch.Tensor] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        if not isinstance(tensor, nn.Parameter):
            kept[id(tensor)] = tensor
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        network(batch)
    return sum(tensor.numel() * tensor.element_size() for tensor in kept.values())


def image_count(config: Config) -> int | None:
    """Pictures in the prepared data (both splits' label files, a header line each), None without them."""
    paths = [Path(config.stanford_data_path) / name for name in LABEL_FILES]
    if not all(path.is_file() for path in paths):
        return None
    lines = 0
    for path in paths:
        with path.open("rb") as labels:
            lines += sum(1 for _ in labels) - 1
    return lines


def cache_bytes(config: Config) -> int | None:
    """The image cache's size: one uint8 image of image_size per picture of the prepared data."""
    count = image_count(config)
    channels = 1 if config.convert_to_grayscale else 3
    return None if count is None else count * channels * math.prod(config.image_size)


@functools.cache
def _network_memory(architecture: str, output_channels: int | None, shape: tuple[int, ...]) -> tuple[int, int]:
    """(weights, kept activations) in bytes at float32, for a network and an input batch shape (a sweep's
    configurations share them)."""
    with torch.device("meta"):
        network = build_network(architecture, STANFORD_CARS_CLASSES, shape[1], output_channels=output_channels,
                                pretrained_weights=None)
        network.train()
        activations = _kept_activation_bytes(network, torch.empty(shape))
    return sum(parameter.numel() * parameter.element_size() for parameter in network.parameters()), activations


def training_memory(config: Config) -> MemoryEstimate:
    """The estimate for this configuration's network, batch_size, image_size and precision (half-precision
    activations under mixed precision; half-precision weights too with *-true)."""
    shape = (config.batch_size, 1 if config.convert_to_grayscale else 3, *config.image_size)
    weights, activations = _network_memory(config.architecture, config.output_channels, shape)
    precision = str(config.precision)
    scale = 0.5 if config.precision in HALF_PRECISIONS else 2.0 if precision.startswith("64") else 1.0
    weight_scale = scale if precision.endswith("-true") or precision.startswith("64") else 1.0
    on_device = (cache_bytes(config) or 0) if config.data_on_device else 0
    return MemoryEstimate(weights=int(weights * weight_scale), activations=int(activations * scale),
                          input_batch=4 * math.prod(shape), device_images=on_device)


def training_device_memory(config: Config) -> tuple[str, int] | None:
    """(what, bytes) of the memory one training process trains in: its CUDA device's, or this machine's (on the
    CPU, shared by its processes: divided by their count); None where unknown (mps, tpu)."""
    accelerator = config.accelerator
    if accelerator in CUDA_ACCELERATORS or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            return None  # the CUDA check says why
        index = config.devices[0] if isinstance(config.devices, list) and config.devices else 0
        return f"CUDA device {index}", torch.cuda.get_device_properties(index).total_memory
    if accelerator not in ("auto", "cpu"):
        return None
    processes = config.devices if isinstance(config.devices, int) and config.devices > 0 else 1
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return ("this machine's memory" if processes == 1 else f"this machine's memory shared by {processes} "
            "processes"), total // processes


def memory_problems(config: Config) -> list[str]:
    """One problem when the estimate is larger than all the memory the run would train in."""
    try:
        estimate = training_memory(config)
    except (RuntimeError, NotImplementedError, ValueError, TypeError):  # a layer with no meta kernel; bad names
        return []
    place = training_device_memory(config)
    if place is None or estimate.total <= place[1]:
        return []
    where, available = place
    return [f"batch_size: {config.batch_size} at image_size {config.image_size}: training would hold "
            f"{estimate.describe()}, more than {where} ({size_text(available)}); lower batch_size or image_size"]


def memory_report(config: Config) -> str:
    """train.py --check's lines on memory: the training estimate, and the image cache's size when it is used."""
    try:
        lines = [f"memory while training: {training_memory(config).describe()}"]
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as error:
        lines = [f"memory while training: no estimate ({type(error).__name__}: {error})"]
    size = cache_bytes(config) if config.cache_images else None
    if size is not None:
        lines.append(f"image cache: {size_text(size)} ({image_count(config)} images of {config.image_size[0]}x"
                     f"{config.image_size[1]}, uint8)")
    return "\n".join(lines)
