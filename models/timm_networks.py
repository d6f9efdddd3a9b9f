"""timm's networks as ``architecture: timm:<name>``: names, head width, ImageNet weights or a file, and checks.

timm builds the model for the run's classes and channels (with ImageNet weights its ``load_pretrained`` sums the
stem's RGB weights for one channel and drops the 1000-class classifier). ``output_channels`` resizes the 1x1
convolution before the classifier (``conv_head``) after any weights are loaded, so the resized layer starts
fresh, like the classifier. timm is imported only when a ``timm:`` architecture is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.fine_tuning import FRESH_LAYERS
from models.pretrained import IMAGENET, download_problem, grayscale_normalization
from utils.checks import did_you_mean

PREFIX = "timm:"
HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm downloads from the hub, in its order
NORM_AFTER_HEAD = ("norm_head", "bn2")  # the BatchNorm after conv_head: MobileNetV3/V4, EfficientNet
PROJECT_PREFIX = "network."  # this project's checkpoints name the network's tensors network.*


def timm_name(architecture: Any) -> str | None:
    """The timm model name of a ``timm:<name>`` architecture, else None."""
    if isinstance(architecture, str) and architecture.startswith(PREFIX):
        return architecture[len(PREFIX):]
    return None


def timm_name_problem(name: str) -> str | None:
    """Why `name` is not a timm model, with timm's nearest names, or None."""
    import timm

    if timm.is_model(name):
        return None
    hint = did_you_mean(PREFIX + name, [PREFIX + known for known in timm.list_models()])
    return (f"architecture: timm has no model {name!r}{'; ' + hint if hint else ''} (timm's names: "
            "python -c \"import timm; print(timm.list_models())\")")


def head_conv(model: nn.Module) -> nn.Conv2d | None:
    """The 1x1 convolution whose output width the classifier reads (timm's ``conv_head``), or None."""
    conv = getattr(model, "conv_head", None)
    width = getattr(model, "head_hidden_size", getattr(model, "num_features", None))
    if isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.groups == 1 and conv.out_channels == width:
        return conv
    return None


def own_head_width(model: nn.Module) -> int | None:
    """The width of the model's head convolution, or None when it has none."""
    conv = head_conv(model)
    return conv.out_channels if conv is not None else None


def _resize_batchnorm(norm: nn.BatchNorm2d, width: int) -> None:
    """Fresh `width`-channel parameters and statistics for a BatchNorm2d (timm's BatchNormAct2d keeps its act)."""
    device = norm.weight.device if norm.weight is not None else None
    norm.num_features = width
    if norm.affine:
        norm.weight = nn.Parameter(torch.ones(width, device=device))
        norm.bias = nn.Parameter(torch.zeros(width, device=device))
    if norm.track_running_stats:
        norm.running_mean = torch.zeros(width, device=device)
        norm.running_var = torch.ones(width, device=device)
        norm.num_batches_tracked = torch.tensor(0, dtype=torch.long, device=device)


def set_head_width(model: nn.Module, width: int, name: str) -> None:
    """Replace conv_head (and the BatchNorm after it) by a fresh one of `width` channels and renew the classifier."""
    conv = head_conv(model)
    if conv is None:
        raise ValueError(head_width_problem(name))
    old = conv.out_channels
    model.conv_head = nn.Conv2d(conv.in_channels, width, 1, bias=conv.bias is not None, device=conv.weight.device)
    fresh = ["conv_head"]
    for attribute in NORM_AFTER_HEAD:
        norm = getattr(model, attribute, None)
        if isinstance(norm, nn.BatchNorm2d) and norm.num_features == old:
            _resize_batchnorm(norm, width)
            fresh.append(attribute)
    setattr(model, FRESH_LAYERS, tuple(fresh))  # part of the head for backbone_lr_scale and freezing
    if getattr(model, "num_features", None) == old:
        model.num_features = width  # EfficientNet: conv_head comes before pooling, num_features is its width
    model.head_hidden_size = width
    model.reset_classifier(model.num_classes)


def head_width_problem(name: str) -> str:
    return (f"output_channels: timm:{name} has no 1x1 head convolution before its classifier, so its head width "
            "cannot be set; set output_channels: null (the model's own head)")


def meta_model(name: str) -> nn.Module:
    """timm's model `name` (1000 classes, 3 channels) on the meta device: its shapes, no memory, no weights."""
    import timm

    with torch.device("meta"):
        return timm.create_model(name)


def read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors/.pth/.ckpt file, tensors only (timm unwraps state_dict/model keys and a
    'module.' prefix; this project's checkpoints lose their 'network.' prefix)."""
    import timm

    state = timm.models.load_state_dict(str(path), weights_only=True)
    if state and all(key.startswith(PROJECT_PREFIX) for key in state):
        state = {key[len(PROJECT_PREFIX):]: value for key, value in state.items()}
    return state


def checked_weights_file(name: str, path: str, img_channels: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The file's tensors and the problems with them: the file must fit timm's `name` apart from its classifier,
    every tensor present with the same shape (({}, why) when it cannot be read).

    timm's own loading ignores missing tensors whenever the classifier is replaced, so a file of another model
    would leave the network untrained without an error; this check compares every key and shape first.
    """
    if not Path(path).is_file():
        return {}, [f"pretrained_weights: {path!r} is neither {IMAGENET!r} nor an existing file"]
    try:
        state = read_weights_file(path)
    except Exception as error:  # torch, safetensors and timm raise several types for foreign files
        return {}, [f"pretrained_weights: {path} is not a weights file ({type(error).__name__}: {error})"]
    model = meta_model(name)
    classifier = model.pretrained_cfg.get("classifier") or "classifier"
    first_conv = f"{model.pretrained_cfg.get('first_conv') or 'conv_stem'}.weight"
    expected = model.state_dict()
    wrong = [key for key, tensor in expected.items()
             if not key.startswith(f"{classifier}.") and key != first_conv
             and (key not in state or getattr(state[key], "shape", None) != tensor.shape)]
    if wrong:
        return state, [f"pretrained_weights: {path} does not fit timm:{name}: {len(wrong)} of its {len(expected)} "
                       f"tensors missing or of another shape, e.g. {', '.join(wrong[:3])}"]
    stem = state.get(first_conv)
    if stem is None or stem.dim() != 4 or stem.shape[1] not in (3, img_channels):
        found = "missing" if stem is None else f"of shape {tuple(stem.shape)}"
        return state, [f"pretrained_weights: {path}: the first convolution {first_conv} is {found}; it needs 3 "
                       f"(RGB) or {img_channels} input channel(s)"]
    return state, []


def imagenet_problem(name: str) -> str | None:
    """None when timm's ImageNet weights of `name` are in the Hugging Face cache or can be downloaded now."""
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        family = name.split("_")[0]
        related = sorted({tag.split(".")[0] for tag in timm.list_pretrained(f"{family}*")})
        shown = f" (models of that family with weights: {', '.join(PREFIX + n for n in related)})" if related else ""
        return f"pretrained_weights: timm has no ImageNet weights for timm:{name}{shown}"
    if not cfg.hf_hub_id:  # an old-style URL: torch.hub's checkpoint folder
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        return None if (cache / os.path.basename(cfg.url)).is_file() else download_problem(
            f"the ImageNet weights of timm:{name}", cfg.url, str(cache))
    repo, _, revision = cfg.hf_hub_id.partition("@")
    if any(isinstance(try_to_load_from_cache(repo, file, revision=revision or None), str) for file in HF_FILES):
        return None
    offline = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else None
    return download_problem(f"the ImageNet weights of timm:{name} ({repo})", f"{constants.ENDPOINT}/{repo}",
                            constants.HF_HUB_CACHE, offline)


def weights_problems(name: str, weights: str, img_channels: int) -> list[str]:
    """Problems with pretrained_weights (imagenet or a file) for timm's `name`."""
    if weights == IMAGENET:
        return [problem] if (problem := imagenet_problem(name)) else []
    return checked_weights_file(name, weights, img_channels)[1]


def build_timm_network(name: str, num_classes: int, img_channels: int = 3, dropout: float = 0.2,
                       output_channels: int | None = None, pretrained_weights: str | None = None) -> nn.Module:
    """timm's `name` for `num_classes` classes and `img_channels` channels, with the dropout before its classifier,
    optionally ImageNet weights or a weights file, and optionally another head width."""
    import timm

    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": img_channels, "drop_rate": dropout}
    if pretrained_weights == IMAGENET:
        try:
            network = timm.create_model(name, pretrained=True, **kwargs)
        except OSError as error:  # the hub's errors (offline, not found) are OSErrors
            raise ValueError(f"pretrained_weights: cannot load the ImageNet weights of timm:{name}: {error}") from None
    elif pretrained_weights:
        state, problems = checked_weights_file(name, pretrained_weights, img_channels)
        if problems:
            raise ValueError("\n".join(problems))
        overlay = {"state_dict": state}
        network = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    else:
        network = timm.create_model(name, **kwargs)
    if output_channels is not None and output_channels != own_head_width(network):
        set_head_width(network, output_channels, name)
    return network


def timm_normalization(name: str, img_channels: int) -> tuple[list[float], list[float]]:
    """The mean/std timm's weights of `name` were trained with (one luminance-weighted value for grayscale)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    return grayscale_normalization(cfg.mean, cfg.std, img_channels)
