"""Architecture names a config can use, the network builders and the checks of the model keys."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from models.architectures import ghostnet, hardnet, squeezenext23
from models.pretrained import IMAGENET
from models.timm_networks import (build_timm_network, head_width_problem, meta_model, own_head_width, timm_name,
                                  timm_name_problem, timm_normalization)
from models.timm_networks import weights_problems as timm_weights_problems
from models.torchvision_networks import (TORCHVISION_MODELS, pretrained_weights_problems, torchvision_network,
                                         torchvision_normalization)
from utils.checks import did_you_mean, is_number

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

GHOSTNET_OWN_HEAD = 1280  # the GhostNet paper's head width (the thesis's C-1 used it; C-50 used 320)

# Smallest height and width of the input, for the entries whose unpadded pooling fails on smaller images
# (every other entry takes any size); tests/test_models_architectures.py checks each on the meta device.
MIN_INPUT_SIZE: dict[str, int] = {
    "sq_10": 21,
    "sq_11": 17,
    **{name: 7 for name in ("sqnxt_1", "sqnxt_1v5", "sqnxt_2", "sqnxt_2v5")},
    **{name: 29 for name in ("hard_39", "hard_68", "hard_85")},
}


def architecture_problem(architecture: Any) -> str | None:
    """The problem with an architecture name, or None if arch_dict or timm (``timm:<name>``) has it."""
    if isinstance(architecture, str) and architecture in arch_dict:
        return None
    if (name := timm_name(architecture)) is not None:
        return timm_name_problem(name)
    hint = did_you_mean(architecture, arch_dict)
    return f"architecture: unknown architecture {architecture!r}{'; ' + hint if hint else ''} " \
           f"(valid: {', '.join(arch_dict)}, or timm:<name> for any of timm's models)"


def architecture_problems(architecture: Any, image_size: Any = None, pretrained_weights: Any = None,
                          output_channels: Any = 320, img_channels: int = 3) -> list[str]:
    """Problems with the keys architecture, pretrained_weights, output_channels and image_size (the schema bounds
    the numbers)."""
    problem = architecture_problem(architecture)
    if problem:
        return [problem]
    problems = []
    smallest = MIN_INPUT_SIZE.get(architecture, 1)
    if isinstance(image_size, list) and any(is_number(side) and side < smallest for side in image_size):
        problems.append(f"image_size: {image_size} is too small for {architecture}; "
                        f"height and width must be at least {smallest}")
    if (name := timm_name(architecture)) is not None and isinstance(output_channels, int):
        if own_head_width(meta_model(name)) is None:
            problems.append(head_width_problem(name))
    if pretrained_weights:
        problems += weights_problems(architecture, pretrained_weights, img_channels)
    return problems


def weights_problems(architecture: str, weights: Any, img_channels: int = 3) -> list[str]:
    """Problems with pretrained_weights for this architecture: imagenet, a weights name, or a file that fits."""
    if not isinstance(weights, str):
        return [f"pretrained_weights: {weights!r} must be {IMAGENET}, a weights name or a file path"]
    if (name := timm_name(architecture)) is not None:
        return timm_weights_problems(name, weights, img_channels)
    if architecture in TORCHVISION_MODELS:
        return pretrained_weights_problems(TORCHVISION_MODELS[architecture], weights)
    return [hand_written_weights_problem(architecture)]


def hand_written_weights_problem(architecture: str) -> str:
    """pretrained_weights given for a network written in this project."""
    return (f"pretrained_weights: architecture {architecture!r} is written in this project and has "
            f"no ImageNet weights; only timm:<name> and {', '.join(TORCHVISION_MODELS)} can take them "
            "(timm:ghostnet_100 is the published GhostNet)")


def head_width(architecture: str, output_channels: int | None) -> int | None:
    """The head width a network is built with: output_channels, or for null the architecture's own (GhostNet's
    paper head, 1280, for ghost; timm's model's own; None where the architecture has no such setting)."""
    if output_channels is not None or timm_name(architecture) is not None:
        return output_channels
    return GHOSTNET_OWN_HEAD if architecture == "ghost" else None


def build_network(
    architecture: str, num_classes: int, img_channels: int = 3, dropout: float = 0.2,
    output_channels: int | None = 320, pretrained_weights: str | None = None,
) -> nn.Module:
    """Build an arch_dict (or timm:<name>) network; raises ValueError naming every problem with the arguments.

    A pretrained_weights file is read once, when it is loaded (config checks read it before any work).
    ``output_channels`` sets the head width of ghost and of timm models (null: the architecture's own).
    """
    problems = [problem] if (problem := architecture_problem(architecture)) else []
    if pretrained_weights and architecture in arch_dict and architecture not in TORCHVISION_MODELS:
        problems.append(hand_written_weights_problem(architecture))
    if img_channels not in (1, 3):
        problems.append(f"img_channels: {img_channels!r} must be 1 or 3")
    if not (isinstance(num_classes, int) and num_classes > 0):
        problems.append(f"num_classes: {num_classes!r} must be a positive integer")
    if problems:
        raise ValueError("\n".join(problems))
    if (name := timm_name(architecture)) is not None:
        return build_timm_network(name, num_classes, img_channels, dropout, output_channels, pretrained_weights)
    builder = arch_dict[architecture]
    if architecture == "ghost":
        return builder(num_classes, img_channels, dropout, output_channels=head_width(architecture, output_channels))
    if architecture in TORCHVISION_MODELS:
        return builder(num_classes, img_channels, dropout, pretrained_weights=pretrained_weights)
    return builder(num_classes, img_channels, dropout)


def weights_normalization(architecture: str, pretrained_weights: str,
                          img_channels: int) -> tuple[list[float], list[float]]:
    """The mean/std the architecture's pretrained weights were trained with (for a file: those of its ImageNet
    weights), with one luminance-weighted value each for grayscale."""
    if (name := timm_name(architecture)) is not None:
        return timm_normalization(name, img_channels)
    if architecture in TORCHVISION_MODELS:
        return torchvision_normalization(TORCHVISION_MODELS[architecture], pretrained_weights, img_channels)
    raise ValueError(hand_written_weights_problem(architecture))
