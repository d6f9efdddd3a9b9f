"""torchvision's networks as arch_dict entries: ImageNet weights (a name or a file), first convolution, classifier."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from models.pretrained import IMAGENET, download_problem, grayscale_normalization

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
    """torchvision's weights enum member names for a model (aliases such as DEFAULT included), and imagenet."""
    return [IMAGENET, *torchvision.models.get_model_weights(model_name).__members__]


def named_weights(model_name: str, name: str) -> torchvision.models.WeightsEnum:
    """torchvision's weights of a model by enum name; imagenet is its DEFAULT weights."""
    return torchvision.models.get_model_weights(model_name)["DEFAULT" if name == IMAGENET else name]


def cached_weights_path(weights: torchvision.models.WeightsEnum) -> Path:
    """Where torch.hub keeps a downloaded weights file ($TORCH_HOME/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def load_pretrained(network: nn.Module, model_name: str, pretrained_weights: str) -> None:
    """Load torchvision's weights by enum name (downloaded if not cached) or a local state dict file."""
    if pretrained_weights in weight_names(model_name):
        weights = named_weights(model_name, pretrained_weights)
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


def weights_problem(model_name: str, value: str) -> str:
    """The problem text for a pretrained_weights value that is neither a weights name nor a file."""
    return (f"pretrained_weights: {value!r} is neither a torchvision weights name for {model_name} "
            f"(valid: {', '.join(weight_names(model_name))}) nor an existing file")


def pretrained_weights_problems(model_name: str, weights: str) -> list[str]:
    """Problems with a pretrained_weights value for torchvision's `model_name`: a weights name whose file is cached
    or can be downloaded now, or a fitting file."""
    if weights in weight_names(model_name):
        named = named_weights(model_name, weights)
        path = cached_weights_path(named)
        problem = None if path.is_file() else download_problem(
            f"torchvision's {model_name} {weights} weights", named.url, str(path.parent))
        return [problem] if problem else []
    if not Path(weights).is_file():
        return [weights_problem(model_name, weights)]
    return weights_file_problems(model_name, weights)


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


def torchvision_normalization(model_name: str, weights: str, img_channels: int) -> tuple[list[float], list[float]]:
    """The mean/std torchvision's weights were trained with (a file: those of the DEFAULT weights), one
    luminance-weighted value each for grayscale."""
    name = weights if weights in weight_names(model_name) else IMAGENET
    transform = named_weights(model_name, name).transforms()
    return grayscale_normalization(transform.mean, transform.std, img_channels)
