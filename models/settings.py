"""A validated configuration as the keyword arguments of build_network and NetModule."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def network_kwargs(cfg: Mapping[str, Any], num_classes: int, img_channels: int) -> dict[str, Any]:
    """Keyword arguments of models.build_network."""
    return {"architecture": cfg["architecture"], "num_classes": num_classes, "img_channels": img_channels,
            "dropout": cfg["dropout"], "output_channels": cfg["output_channels"],
            "pretrained_weights": cfg["pretrained_weights"]}


def module_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of models.net_module.NetModule besides network and num_classes."""
    return {"optimizer": cfg["optimizer"], "optimizer_params": copy.deepcopy(cfg["optimizer_params"]),
            "lr_scheduler": cfg["lr_scheduler"], "lr_scheduler_params": copy.deepcopy(cfg["lr_scheduler_params"]),
            "loss_function": cfg["loss_function"], "loss_params": copy.deepcopy(cfg["loss_params"]),
            "channels_last": cfg["channels_last"]}
