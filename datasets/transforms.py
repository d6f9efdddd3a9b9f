"""Building configured torchvision transforms, and the config checks for their names and arguments.

``image_augmentations`` / ``tensor_augmentations`` are ordered mappings of ``torchvision.transforms``
class names to keyword arguments (``None`` for none). Image augmentations are applied to the PIL
image after resizing; tensor augmentations to the float tensor before normalisation.
"""

from __future__ import annotations

import difflib
import enum
import inspect
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
import torchvision.transforms as T
from PIL import Image

from datasets.gpu_transforms import gpu_problem
from datasets.settings import DATA_ON_DEVICE_NEEDS
from utils.checks import keyword_problem

if TYPE_CHECKING:
    from utils.config import Config

# Not usable from a config: they take other transforms / callables, or return several images.
_NOT_CONFIGURABLE = {"Compose", "RandomApply", "RandomChoice", "RandomOrder", "Lambda", "FiveCrop", "TenCrop"}
# The pipeline's own conversions: not augmentations.
_CONVERSIONS = {"ToTensor", "PILToTensor", "ToPILImage", "ConvertImageDtype", "Normalize"}
# Work on tensors only, so they belong under tensor_augmentations.
_TENSOR_ONLY = {"RandomErasing", "LinearTransformation"}
# Need uint8 images, so they belong under image_augmentations.
_UINT8_ONLY = {"AutoAugment", "RandAugment", "TrivialAugmentWide", "AugMix", "RandomPosterize", "RandomEqualize"}

KEYS = ("image_augmentations", "tensor_augmentations")
TRIALS = 5  # random draws tried per transform
SIZE_ARGUMENTS = ("size", "padding", "max_size")  # arguments that set an output's pixels: tried only when small
SIZE_ARGUMENT_FACTOR = 4  # at most this many times image_size's larger side


@lru_cache(maxsize=None)
def transform_names() -> tuple[str, ...]:
    """Every torchvision.transforms class usable from a config (under one key or the other)."""
    return tuple(
        sorted(
            name
            for name, obj in vars(T).items()
            if inspect.isclass(obj) and not issubclass(obj, enum.Enum)
            and name not in _NOT_CONFIGURABLE and name not in _CONVERSIONS
        )
    )


@lru_cache(maxsize=None)
def valid_names(key: str) -> tuple[str, ...]:
    """The transform names valid under ``image_augmentations`` or ``tensor_augmentations``."""
    excluded = _TENSOR_ONLY if key == "image_augmentations" else _UINT8_ONLY
    return tuple(n for n in transform_names() if n not in excluded)


def build_transforms(spec: Mapping[str, Mapping[str, Any] | None] | None) -> list[Callable]:
    """Instantiate the transforms of a checked config mapping, in order."""
    return [getattr(T, name)(**dict(kwargs or {})) for name, kwargs in (spec or {}).items()]


def _wrong_key_hint(key: str, name: str) -> str | None:
    if name in _CONVERSIONS:
        return "is a conversion the pipeline does itself (see normalize / the to-tensor step), not an augmentation"
    if name in _NOT_CONFIGURABLE:
        return "takes other transforms or returns several images; list the transforms themselves instead"
    if key == "image_augmentations" and name in _TENSOR_ONLY:
        return "works on tensors only; put it under tensor_augmentations"
    if key == "tensor_augmentations" and name in _UINT8_ONLY:
        return "needs uint8 images; put it under image_augmentations"
    return None


def nearest_names(name: str, candidates: tuple[str, ...]) -> list[str]:
    """Names holding every CamelCase word of ``name`` (RandomFlip -> Random*Flip), else difflib's nearest."""
    words = [w.lower() for w in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", name)]
    containing = [c for c in candidates if len(words) > 1 and all(w in c.lower() for w in words)]
    if containing:
        return containing[:3]
    return difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)


def _name_problem(key: str, name: Any) -> str | None:
    if not isinstance(name, str):
        return f"{key}: transform names must be strings, got {name!r}"
    if name in valid_names(key):
        return None
    hint = _wrong_key_hint(key, name) if hasattr(T, name) else None
    if hint:
        return f"{key}.{name}: {hint}"
    close = nearest_names(name, valid_names(key))
    suggestion = f"did you mean {', '.join(close)}?" if close else "see torchvision.transforms for valid names"
    return f"{key}.{name}: unknown transform; {suggestion}"


def _argument_problem(key: str, name: str, kwargs: Any, image_size: tuple[int, int]) -> str | None:
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping):
        return f"{key}.{name}: arguments must be a mapping of keyword arguments, got {kwargs!r}"
    cls = getattr(T, name)
    signature = inspect.signature(cls)
    problem = keyword_problem(f"{key}.{name}", cls, kwargs)
    if problem:
        return problem
    probability = kwargs.get("p")
    if probability is not None and not (isinstance(probability, (int, float)) and 0 <= probability <= 1):
        return f"{key}.{name}: p {probability!r} must be a probability between 0 and 1"
    problem = _size_argument_problem(key, name, kwargs, image_size)
    if problem:
        return problem
    try:  # with p (already checked above) at 1, so that the trial below always applies the transform
        transform = cls(**({**kwargs, "p": 1.0} if "p" in signature.parameters else kwargs))
    except (ValueError, TypeError) as error:
        return f"{key}.{name}: invalid argument(s) {dict(kwargs)}: {error}"
    return _trial_problem(key, name, transform, image_size)


def _size_argument_problem(key: str, name: str, kwargs: Mapping[str, Any], image_size: tuple[int, int]) -> str | None:
    """A size or padding far past image_size: the trial below would allocate its output (Pad with padding 20000
    makes a 4.8 GB image of a 227x227 one) before refusing the change of size."""
    largest = SIZE_ARGUMENT_FACTOR * max(image_size)
    for argument in SIZE_ARGUMENTS:
        value = kwargs.get(argument)
        numbers = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(number, (int, float)) and number > largest for number in numbers):
            return (f"{key}.{name}: {argument} {value!r} is past {largest} ({SIZE_ARGUMENT_FACTOR} x image_size's "
                    "larger side); augmentations keep image_size (resizing is a setting of its own)")
    return None


def _trial_problem(key: str, name: str, transform: Callable, image_size: tuple[int, int]) -> str | None:
    """Apply the transform (always, p=1) to blank inputs of the configured size: catches arguments that fail
    only on use, and transforms that change the image's size or channels (the network expects image_size)."""
    height, width = image_size
    sample: Any = Image.new("RGB", (width, height)) if key == "image_augmentations" else torch.zeros(3, height, width)
    try:
        for _ in range(TRIALS):
            output = transform(sample)
    except Exception as error:  # any failure here would stop training later
        return f"{key}.{name}: fails on a {height}x{width} image with these arguments: {error}"
    shape = (output.mode, output.size) if isinstance(output, Image.Image) else getattr(output, "shape", None)
    expected = (sample.mode, sample.size) if isinstance(sample, Image.Image) else sample.shape
    if shape != expected:
        return (f"{key}.{name}: changes a {height}x{width} RGB image into {_describe(output)}; augmentations must "
                "keep image_size and the colour mode (resizing and grayscale are settings of their own)")
    return None


def _describe(output: Any) -> str:
    if isinstance(output, Image.Image):
        return f"a {output.size[1]}x{output.size[0]} {output.mode} image"
    return f"shape {tuple(output.shape)}" if hasattr(output, "shape") else type(output).__name__


def config_problems(config: Config) -> list[str]:
    """Problems with the transform names and arguments of a config (``[]`` when fine).

    With ``augmentation_device: gpu`` every transform also needs a kornia counterpart (datasets.gpu_transforms);
    ``data_on_device`` needs the image cache and ``augmentation_device: gpu``.
    """
    problems: list[str] = []
    image_size = (config.image_size[0], config.image_size[1])
    device = config.augmentation_device
    if config.data_on_device and not (config.cache_images and device == "gpu"):
        problems.append(DATA_ON_DEVICE_NEEDS)
    channels = 1 if config.convert_to_grayscale else 3
    for key in KEYS:
        spec = getattr(config, key)
        if spec is None:
            continue
        if not isinstance(spec, Mapping):
            problems.append(f"{key}: expected a mapping of torchvision.transforms names to keyword arguments, "
                            f"got {type(spec).__name__}")
            continue
        for name, kwargs in spec.items():
            problem = _name_problem(key, name)
            if problem is None:
                problem = _argument_problem(key, name, kwargs, image_size)
            if problem is None and device == "gpu":
                problem = gpu_problem(key, name, kwargs, image_size, channels)
            if problem is not None:
                problems.append(problem)
    return problems
