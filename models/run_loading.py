"""Loading a trained ClassifierModule from a checkpoint, rebuilding its network from plain configuration values."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from models.arch_dict import build_network
from models.classifier_module import ClassifierModule
from utils.checkpoint_safety import CheckpointError, load_checkpoint
from utils.devices import cuda_status, torch_build

DETAIL_LIMIT = 600  # characters of torch's state_dict mismatch report kept in the error (it lists every key)


@dataclass
class TrainedModel:
    """A loaded ClassifierModule (eval mode, CPU) and what its checkpoint says about itself."""

    module: ClassifierModule
    num_classes: int
    epoch: int          # the epoch the weights come from, counted from 1 as metrics.csv counts
    global_step: int


def device_problem(text: str) -> str | None:
    """Why `--device TEXT` cannot run here (not a torch device, CUDA unusable, no such GPU), or None."""
    try:
        device = torch.device(text)
    except RuntimeError:
        return f"--device {text!r}: not a torch device (e.g. cpu, cuda, cuda:1)"
    if device.type == "mps":
        return None if torch.backends.mps.is_available() else f"--device {text}: MPS is not available; use --device cpu"
    if device.type != "cuda":
        return None if device.type == "cpu" else f"--device {text}: expected cpu, cuda, cuda:N or mps"
    available, reason = cuda_status()
    if not available:
        return (f"--device {text}: torch can use no CUDA GPU on this machine ({reason}; {torch_build()}); "
                "use --device cpu")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        return f"--device {text}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
    return None


def read_checkpoint(path: str | os.PathLike, trust: bool = False) -> dict[str, Any]:
    """The checkpoint dictionary, loaded on CPU: tensors and plain values only, unless ``trust``."""
    checkpoint = load_checkpoint(path, trust)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return checkpoint


def load_trained_model(checkpoint_path: str | os.PathLike, architecture: str, img_channels: int = 3,
                       dropout: float = 0.2, output_channels: int | None = 320, trust: bool = False) -> TrainedModel:
    """Rebuild the run's network (no pretrained download: the checkpoint has the weights) and load the module;
    ``trust`` (--trust-checkpoint) loads a checkpoint holding more than tensors and plain values."""
    checkpoint = read_checkpoint(checkpoint_path, trust)
    num_classes = checkpoint.get("hyper_parameters", {}).get("num_classes")
    if not isinstance(num_classes, int):
        raise CheckpointError(f"{checkpoint_path}: no num_classes among the saved hyperparameters")
    network = build_network(architecture, num_classes, img_channels=img_channels, dropout=dropout,
                            output_channels=output_channels, pretrained_weights=None)
    try:
        module = ClassifierModule.load_from_checkpoint(checkpoint_path, map_location="cpu", network=network,
                                                weights_only=not trust)
    except (TypeError, ValueError) as error:  # hyperparameters that ClassifierModule does not take
        raise CheckpointError(f"{checkpoint_path}: its saved hyperparameters do not build the module: "
                              f"{type(error).__name__}: {error}") from None
    except RuntimeError as error:
        detail = str(error)
        detail = detail if len(detail) <= DETAIL_LIMIT else detail[:DETAIL_LIMIT] + " ..."
        raise CheckpointError(f"{checkpoint_path}: the weights do not fit a {architecture} network with "
                              f"{img_channels} input channel(s) and {num_classes} classes: {detail}") from None
    module.eval()
    return TrainedModel(module=module, num_classes=num_classes, epoch=int(checkpoint.get("epoch", -1)) + 1,
                        global_step=int(checkpoint.get("global_step", -1)))
