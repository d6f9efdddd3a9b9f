"""Head and backbone of a network, for backbone_lr_scale (two learning rates) and freeze_backbone_epochs.

The head is the classifier every run makes new for its classes (timm's ``get_classifier()``, else ``classifier``
or ``fc``) and any layer the builder made fresh besides it (a resized timm ``conv_head``: ``fresh_layers``); the
backbone is every other parameter, the part pretrained weights fill.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

FRESH_LAYERS = "fresh_layers"  # attribute of a network: names of layers made fresh besides the classifier
HEAD, BACKBONE = "head", "backbone"


def classifier_module(network: nn.Module) -> nn.Module:
    """The classifier made for the run's classes: timm's get_classifier(), else `classifier` or `fc`."""
    if callable(getattr(network, "get_classifier", None)):
        return network.get_classifier()
    for name in ("classifier", "fc"):
        module = getattr(network, name, None)
        if isinstance(module, nn.Module):
            return module
    raise ValueError(f"{type(network).__name__} has no classifier (get_classifier(), classifier or fc), so "
                     "backbone_lr_scale and freeze_backbone_epochs cannot tell its head from its backbone")


def split_parameters(network: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone, head) parameters, each in the network's order."""
    head = {id(p) for p in classifier_module(network).parameters()}
    for name in getattr(network, FRESH_LAYERS, ()):
        head |= {id(p) for p in network.get_submodule(name).parameters()}
    backbone = [p for p in network.parameters() if id(p) not in head]
    return backbone, [p for p in network.parameters() if id(p) in head]


def parameter_groups(network: nn.Module) -> list[dict[str, Any]]:
    """The head's and the backbone's parameters as two named optimizer groups (head first)."""
    backbone, head = split_parameters(network)
    return [{"params": head, "name": HEAD}, {"params": backbone, "name": BACKBONE}]


def build_grouped_optimizer(build: Callable[[Iterable[Any]], torch.optim.Optimizer], network: nn.Module,
                            backbone_lr_scale: float) -> torch.optim.Optimizer:
    """`build(groups)` with the backbone's learning rate `backbone_lr_scale` times the head's (the optimizer's lr,
    configured or its default); the other optimizer arguments are shared."""
    optimizer = build(parameter_groups(network))
    for group in optimizer.param_groups:
        if group["name"] == BACKBONE:
            group["lr"] = group["lr"] * backbone_lr_scale
    return optimizer


def set_backbone_trainable(network: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze the backbone's parameters. A frozen parameter gets no gradient, and torch's optimizers
    skip a parameter without one, so it stays exactly as it is (BatchNorm statistics still follow the data)."""
    backbone, _ = split_parameters(network)
    for parameter in backbone:
        parameter.requires_grad_(trainable)


def group_learning_rates(optimizer: torch.optim.Optimizer) -> Mapping[str, float]:
    """The learning rate of each named group ('lr' for the head or the only group, 'lr_backbone')."""
    return {("lr" if group.get("name", HEAD) == HEAD else f"lr_{group['name']}"): float(group["lr"])
            for group in optimizer.param_groups}
