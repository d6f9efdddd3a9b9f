"""Architecture names a config can use, the network builders and the checks of the model keys."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from models.architectures import ghostnet, hardnet, squeezenext23

# arch_dict key -> torchvision model name, for the entries torchvision implements.
TORCHVISION_MODELS: dict[str, str] = {
    "sq_10": "squeezenet1_0",
    "sq_11": "squeezenet1_1",
    "mob_v2": "mobilenet_v2",
    **{f"eff_b{i}": f"efficientnet_b{i}" for i in range(8)},
    "shuff_v2_x05": "shufflenet_v2_x0_5",
    "shuff_v2_x10": "shufflenet_v2_x1_0",
    "shuff_v2_x15": "shufflenet_v2_x1_5",
    "shuff_v2_x20": "shufflenet_v2_x2_0",
}


def first_conv_name(network: nn.Module) -> str:
    """Dotted name of the network's first convolution (the one that reads the image)."""
    return next(name for name, module in network.named_modules() if isinstance(module, nn.Conv2d))


def adapt_first_conv(network: nn.Module, img_channels: int) -> None:
    """Give the first convolution `img_channels` inputs; for one channel, sum its weights over RGB."""
    name = first_conv_name(network)
    conv = network.get_submodule(name)
    if conv.in_channels == img_channels:
        return
    if img_channels != 1:
        raise ValueError(f"img_channels must be 1 or 3, got {img_channels}")
    gray = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     conv.dilation, conv.groups, conv.bias is not None, device=conv.weight.device)
    with torch.no_grad():
        gray.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            gray.bias.copy_(conv.bias)
    parent_name, _, attribute = name.rpartition(".")
    setattr(network.get_submodule(parent_name), attribute, gray)


def replace_head(network: nn.Module, model_name: str, num_classes: int, dropout: float) -> None:
    """Replace the 1000-class classifier by one for `num_classes` with the given dropout."""
    if model_name.startswith("shufflenet"):
        network.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(network.fc.in_features, num_classes))
    elif model_name.startswith("squeezenet"):
        final = nn.Conv2d(network.classifier[1].in_channels, num_classes, 1)
        nn.init.normal_(final.weight, mean=0.0, std=0.01)
        nn.init.zeros_(final.bias)
        network.classifier[0] = nn.Dropout(dropout)
        network.classifier[1] = final
    else:
        network.classifier[0] = nn.Dropout(dropout)
        network.classifier[1] = nn.Linear(network.classifier[1].in_features, num_classes)


def weight_names(model_name: str) -> list[str]:
    """torchvision's weights enum member names for a model (aliases such as DEFAULT included)."""
    return list(torchvision.models.get_model_weights(model_name).__members__)


def load_pretrained(network: nn.Module, model_name: str, pretrained_weights: str) -> None:
    """Load torchvision's weights by enum name (downloaded if not cached) or a local state dict file."""
    if pretrained_weights in weight_names(model_name):
        weights = torchvision.models.get_model_weights(model_name)[pretrained_weights]
        try:
            state_dict = weights.get_state_dict(progress=True)
        except OSError as error:  # no network, proxy, disk full
            raise ValueError(f"pretrained_weights: cannot download {model_name} {pretrained_weights} ({error}); "
                             f"download {weights.url} elsewhere and set pretrained_weights to the file's "
                             "path") from None
    else:
        path = Path(pretrained_weights)
        if not path.is_file():
            raise ValueError(weights_problem(model_name, pretrained_weights))
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    try:
        network.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(f"pretrained_weights: {pretrained_weights} does not fit torchvision's {model_name} "
                         f"(3-channel stem, 1000-class head): {error}") from error


def torchvision_network(
    model_name: str, num_classes: int, img_channels: int = 3, dropout: float = 0.2,
    pretrained_weights: str | None = None,
) -> nn.Module:
    """torchvision's `model_name`, optionally with ImageNet weights, adapted to channels and classes."""
    network = torchvision.models.get_model(model_name, weights=None)
    if pretrained_weights:
        load_pretrained(network, model_name, pretrained_weights)
    adapt_first_conv(network, img_channels)
    replace_head(network, model_name, num_classes, dropout)
    return network


arch_dict: dict[str, Callable[..., nn.Module]] = {
    "ghost": ghostnet,
    "sq_10": partial(torchvision_network, "squeezenet1_0"),
    "sq_11": partial(torchvision_network, "squeezenet1_1"),
    "sqnxt_1": partial(squeezenext23, width=1.0, v5=False),
    "sqnxt_1v5": partial(squeezenext23, width=1.0, v5=True),
    "sqnxt_2": partial(squeezenext23, width=2.0, v5=False),
    "sqnxt_2v5": partial(squeezenext23, width=2.0, v5=True),
    "mob_v2": partial(torchvision_network, "mobilenet_v2"),
    **{f"eff_b{i}": partial(torchvision_network, f"efficientnet_b{i}") for i in range(8)},
    "hard_39": partial(hardnet, depth=39, depthwise=False),
    "hard_39dw": partial(hardnet, depth=39, depthwise=True),
    "hard_68": partial(hardnet, depth=68, depthwise=False),
    "hard_68dw": partial(hardnet, depth=68, depthwise=True),
    "hard_85": partial(hardnet, depth=85, depthwise=False),
    "hard_85dw": partial(hardnet, depth=85, depthwise=True),
    "shuff_v2_x05": partial(torchvision_network, "shufflenet_v2_x0_5"),
    "shuff_v2_x10": partial(torchvision_network, "shufflenet_v2_x1_0"),
    "shuff_v2_x15": partial(torchvision_network, "shufflenet_v2_x1_5"),
    "shuff_v2_x20": partial(torchvision_network, "shufflenet_v2_x2_0"),
}

# Smallest height and width of the input, for the entries whose unpadded pooling fails on smaller images
# (every other entry takes any size); tests/test_models_architectures.py checks each on the meta device.
MIN_INPUT_SIZE: dict[str, int] = {
    "sq_10": 21,
    "sq_11": 17,
    **{name: 7 for name in ("sqnxt_1", "sqnxt_1v5", "sqnxt_2", "sqnxt_2v5")},
    **{name: 29 for name in ("hard_39", "hard_68", "hard_85")},
}


def weights_problem(model_name: str, value: str) -> str:
    """The problem text for a pretrained_weights value that is neither a weights name nor a file."""
    return (f"pretrained_weights: {value!r} is neither a torchvision weights name for {model_name} "
            f"(valid: {', '.join(weight_names(model_name))}) nor an existing file")


def architecture_problem(architecture: Any) -> str | None:
    """The problem with an architecture name, or None if arch_dict has it."""
    if isinstance(architecture, str) and architecture in arch_dict:
        return None
    close = difflib.get_close_matches(str(architecture), list(arch_dict), n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"architecture: unknown architecture {architecture!r}{hint} (valid: {', '.join(arch_dict)})"


def is_number(value: Any) -> bool:
    """True for int and float values, False for bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def architecture_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Problems with the keys architecture, pretrained_weights, dropout, output_channels and image_size."""
    problems = []
    architecture = cfg.get("architecture")
    if "architecture" in cfg:
        problem = architecture_problem(architecture)
        if problem:
            problems.append(problem)
    if "dropout" in cfg and not (is_number(cfg["dropout"]) and 0 <= cfg["dropout"] < 1):
        problems.append(f"dropout: {cfg['dropout']!r} must be a number in [0, 1)")
    output_channels = cfg.get("output_channels", 1)
    if not (isinstance(output_channels, int) and not isinstance(output_channels, bool) and output_channels > 0):
        problems.append(f"output_channels: {output_channels!r} must be a positive integer")
    smallest = MIN_INPUT_SIZE.get(architecture, 1) if isinstance(architecture, str) else 1
    image_size = cfg.get("image_size")
    if isinstance(image_size, list) and any(is_number(side) and side < smallest for side in image_size):
        problems.append(f"image_size: {image_size} is too small for {architecture}; "
                        f"height and width must be at least {smallest}")
    weights = cfg.get("pretrained_weights")
    if weights:
        if not isinstance(weights, str):
            problems.append(f"pretrained_weights: {weights!r} must be a weights name or a file path")
        elif architecture in arch_dict and architecture not in TORCHVISION_MODELS:
            problems.append(f"pretrained_weights: architecture {architecture!r} is written in this project and has "
                            f"no ImageNet weights; only {', '.join(TORCHVISION_MODELS)} can take them")
        elif architecture in TORCHVISION_MODELS:
            model_name = TORCHVISION_MODELS[architecture]
            if weights not in weight_names(model_name) and not Path(weights).is_file():
                problems.append(weights_problem(model_name, weights))
            elif weights not in weight_names(model_name):
                problems.extend(weights_file_problems(model_name, weights))
    return problems


def weights_file_problems(model_name: str, path: str) -> list[str]:
    """A weights file must be a state dict that fits torchvision's model (compared on the meta device)."""
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for files that are not tensors
        return [f"pretrained_weights: {path} is not a PyTorch weights file ({type(error).__name__})"]
    if not isinstance(state_dict, dict):
        return [f"pretrained_weights: {path} holds a {type(state_dict).__name__}, not a state dict"]
    with torch.device("meta"):
        expected = torchvision.models.get_model(model_name, weights=None).state_dict()
    wrong = [key for key, tensor in expected.items()
             if key not in state_dict or getattr(state_dict[key], "shape", None) != tensor.shape]
    if wrong:
        return [f"pretrained_weights: {path} does not fit torchvision's {model_name} (3-channel stem, "
                f"1000-class head): {len(wrong)} of its {len(expected)} tensors missing or of another shape, "
                f"e.g. {', '.join(wrong[:3])}"]
    return []


def build_network(
    architecture: str, num_classes: int, img_channels: int = 3, dropout: float = 0.2,
    output_channels: int = 320, pretrained_weights: str | None = None,
) -> nn.Module:
    """Build an arch_dict network; raises ValueError naming every problem with the arguments."""
    problems = architecture_problems({"architecture": architecture, "dropout": dropout,
                                      "output_channels": output_channels, "pretrained_weights": pretrained_weights})
    if img_channels not in (1, 3):
        problems.append(f"img_channels: {img_channels!r} must be 1 or 3")
    if not (isinstance(num_classes, int) and num_classes > 0):
        problems.append(f"num_classes: {num_classes!r} must be a positive integer")
    if problems:
        raise ValueError("\n".join(problems))
    builder = arch_dict[architecture]
    if architecture == "ghost":
        return builder(num_classes, img_channels, dropout, output_channels=output_channels)
    if architecture in TORCHVISION_MODELS:
        return builder(num_classes, img_channels, dropout, pretrained_weights=pretrained_weights)
    return builder(num_classes, img_channels, dropout)
