"""A trained run's network from its checkpoint, read once into the network the run's configuration builds.

The checkpoint's index is read first and compared with that network (built on torch's meta device: no memory), so
a file that does not fit, or holds far more than the network, is refused before torch allocates any of it. Then the
file is loaded once with ``torch.load(weights_only=True, mmap=True)``: only the network's tensors are read from it.
No LightningModule is built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.arch_dict import build_network
from utils.checkpoint_safety import (CheckpointError, CheckpointIndex, index_size_problem, load_checkpoint,
                                     read_index, weights_problems)

NETWORK_PREFIX = "network."   # the ClassifierModule's attribute holding the network, in its state_dict's names
PROBLEMS_SHOWN = 5


@dataclass
class TrainedModel:
    """A trained network (eval mode, CPU) and what its checkpoint says about itself."""

    network: nn.Module
    num_classes: int
    epoch: int          # the epoch the weights come from, counted from 1 as metrics.csv counts
    global_step: int


def _num_classes(path: str | os.PathLike, checkpoint: Mapping[str, Any]) -> int:
    hyper_parameters = checkpoint.get("hyper_parameters")
    num_classes = hyper_parameters.get("num_classes") if isinstance(hyper_parameters, Mapping) else None
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise CheckpointError(f"{path}: no num_classes (a whole number >= 1) among the saved hyperparameters")
    return num_classes


def _expected_weights(network: nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    return {NETWORK_PREFIX + name: (tuple(value.shape), str(value.dtype).removeprefix("torch."))
            for name, value in network.state_dict().items()}


def _fit_problem(path: str | os.PathLike, problems: list[str], description: str) -> CheckpointError:
    shown = "; ".join(problems[:PROBLEMS_SHOWN]) + (f"; and {len(problems) - PROBLEMS_SHOWN} more"
                                                      if len(problems) > PROBLEMS_SHOWN else "")
    return CheckpointError(f"{path}: the weights do not fit {description}: {shown}")


def check_fits(path: str | os.PathLike, checkpoint: Any, index: CheckpointIndex | None, architecture: str,
               img_channels: int, dropout: float, output_channels: int | None) -> int:
    """The checkpoint's number of classes, once its weights (from ``index``, or loaded tensors) are those of the
    network the settings build, and its records (``index``) no larger than that network allows; else CheckpointError
    naming the file and every difference. The network is built on the meta device: no memory."""
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    num_classes = _num_classes(path, checkpoint)
    with torch.device("meta"):
        shapes = build_network(architecture, num_classes, img_channels=img_channels, dropout=dropout,
                               output_channels=output_channels, pretrained_weights=None)
    problems = weights_problems(checkpoint["state_dict"], _expected_weights(shapes))
    if index is not None and not problems:
        network_bytes = sum(value.numel() * value.element_size() for value in shapes.state_dict().values())
        problems = [problem] if (problem := index_size_problem(index, network_bytes)) else []
    if problems:
        raise _fit_problem(path, problems, f"a {architecture} network with {img_channels} input channel(s) and "
                                           f"{num_classes} classes (the saved num_classes)")
    return num_classes


def load_trained_model(checkpoint_path: str | os.PathLike, architecture: str, img_channels: int = 3,
                       dropout: float = 0.2, output_channels: int | None = 320, trust: bool = False) -> TrainedModel:
    """Rebuild the run's network (no pretrained download: the checkpoint has the weights) and load its weights;
    ``trust`` (--trust-checkpoint) loads a checkpoint holding more than tensors and plain values (all of it)."""
    index = None if trust else read_index(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path, trust=True) if trust else index.content
    num_classes = check_fits(checkpoint_path, checkpoint, index, architecture, img_channels, dropout, output_channels)
    if index is not None:
        checkpoint = load_checkpoint(checkpoint_path, mmap=True)
    network = build_network(architecture, num_classes, img_channels=img_channels, dropout=dropout,
                            output_channels=output_channels, pretrained_weights=None)
    network.load_state_dict({name[len(NETWORK_PREFIX):]: value for name, value in checkpoint["state_dict"].items()})
    network.eval()
    return TrainedModel(network=network, num_classes=num_classes, epoch=int(checkpoint.get("epoch", -1)) + 1,
                        global_step=int(checkpoint.get("global_step", -1)))
