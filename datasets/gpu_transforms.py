"""Configured torchvision augmentations as kornia batch augmentations on the training device.

With ``augmentation_device: gpu`` the training loader yields un-augmented uint8 batches; the data module
turns them into floats in [0, 1], applies the kornia counterparts of ``image_augmentations`` and then
``tensor_augmentations`` (same class names and torchvision arguments, one random draw per image) and
normalises, all on the device the batch was moved to. kornia is imported only on this path.

Differences from the CPU path, by construction of kornia: ``ColorJitter`` draws one order of its four steps per
batch (its factors per image); ``RandomAffine`` translates by fractional pixels (torchvision rounds to whole
pixels); ``RandomResizedCrop`` does not antialias when it shrinks a crop.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torchvision.transforms import InterpolationMode

KEYS = ("image_augmentations", "tensor_augmentations")
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


class UnsupportedArgument(ValueError):
    """A torchvision argument value that the kornia counterpart cannot reproduce."""


def _interpolation(kwargs: Mapping[str, Any], default: str) -> str:
    value = kwargs.get("interpolation", default)
    name = value.value if isinstance(value, InterpolationMode) else str(value).lower()
    if name not in _INTERPOLATIONS:
        raise UnsupportedArgument(f"interpolation={value!r} (supported: {', '.join(_INTERPOLATIONS)})")
    return name.upper()


def _range(value: Any) -> Any:
    """YAML lists as tuples (kornia takes numbers or tuples)."""
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else value


def _zero_fill(kwargs: Mapping[str, Any], name: str = "fill") -> None:
    value = kwargs.get(name, 0)
    values = value if isinstance(value, (list, tuple)) else [value]
    if any(v != 0 for v in values):
        raise UnsupportedArgument(f"{name}={value!r} (only 0 on the GPU path)")


def _fill_value(kwargs: Mapping[str, Any], fill_scale: float, channels: int) -> torch.Tensor | None:
    """RandomAffine's fill in [0, 1] units per channel, or None for zeros."""
    value = kwargs.get("fill", 0)
    values = list(value) if isinstance(value, (list, tuple)) else [value] * channels
    if len(values) != channels:
        raise UnsupportedArgument(f"fill={value!r} (give one value or {channels})")
    if all(v == 0 for v in values):
        return None
    return torch.tensor([float(v) / fill_scale for v in values])


def _none_or_not(kwargs: Mapping[str, Any], name: str, allowed: Any) -> None:
    if kwargs.get(name, allowed) != allowed:
        raise UnsupportedArgument(f"{name}={kwargs[name]!r} (only {allowed!r} on the GPU path)")


def _flip(kornia_name: str) -> Callable[..., nn.Module]:
    def build(kwargs: Mapping[str, Any], fill_scale: float, channels: int) -> nn.Module:
        import kornia.augmentation as K

        return getattr(K, kornia_name)(p=float(kwargs.get("p", 0.5)))

    return build


def _affine(kwargs: Mapping[str, Any], fill_scale: float, channels: int) -> nn.Module:
    import kornia.augmentation as K

    _none_or_not(kwargs, "center", None)
    fill = _fill_value(kwargs, fill_scale, channels)
    return K.RandomAffine(
        degrees=_range(kwargs["degrees"]), translate=_range(kwargs.get("translate")),
        scale=_range(kwargs.get("scale")), shear=_range(kwargs.get("shear")),
        resample=_interpolation(kwargs, "nearest"), padding_mode="fill" if fill is not None else "zeros",
        fill_value=fill, p=1.0,
    )


def _rotation(kwargs: Mapping[str, Any], fill_scale: float, channels: int) -> nn.Module:
    import kornia.augmentation as K

    _none_or_not(kwargs, "expand", False)
    _none_or_not(kwargs, "center", None)
    _zero_fill(kwargs)
    return K.RandomRotation(degrees=_range(kwargs["degrees"]), resample=_interpolation(kwargs, "nearest"),
                            align_corners=False, p=1.0)


def _perspective(kwargs: Mapping[str, Any], fill_scale: float, channels: int) -> nn.Module:
    import kornia.augmentation as K

    _zero_fill(kwargs)
    return K.RandomPerspective(distortion_scale=float(kwargs.get("distortion_scale", 0.5)),
                               resample=_interpolation(kwargs, "bilinear"), p=float(kwargs.get("p", 0.5)))


def _resized_crop(kwargs: Mapping[str, Any], fill_scale: float, channels: int) -> nn.Module:
    import kornia.augmentation as K

    size = kwargs["size"]
    size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in (list(size) * 2)[:2])
    return K.RandomResizedCrop(size=size, scale=_range(kwargs.get("scale", (0.08, 1.0))),
                               ratio=_range(kwargs.get("ratio", (3 / 4, 4 / 3))),
                               resample=_interpolation(kwargs, "bilinear"), align_corners=False, p=1.0)


def _color_jitter(kwargs: Mapping[str, Any], fill_scale: float, channels: int) -> nn.Module | None:
    import kornia.augmentation as K

    ranges = {name: _range(kwargs.get(name, 0)) for name in ("brightness", "contrast", "saturation", "hue")}
    if channels == 1:  # torchvision leaves saturation and hue of grayscale images alone
        ranges["saturation"], ranges["hue"] = 0.0, 0.0
    if all(value in (0, None) for value in ranges.values()):
        return None
    return K.ColorJitter(**{k: (0.0 if v is None else v) for k, v in ranges.items()}, p=1.0)


def _grayscale(kwargs: Mapping[str, Any], fill_scale: float, channels: int) -> nn.Module | None:
    import kornia.augmentation as K

    if channels == 1:  # already grayscale: torchvision's RandomGrayscale changes nothing
        return None
    return K.RandomGrayscale(p=float(kwargs.get("p", 0.1)))


def _gaussian_blur(kwargs: Mapping[str, Any], fill_scale: float, channels: int) -> nn.Module:
    import kornia.augmentation as K

    size = kwargs["kernel_size"]
    kx, ky = (size, size) if isinstance(size, int) else (list(size) * 2)[:2]  # torchvision: (x, y)
    sigma = kwargs.get("sigma", (0.1, 2.0))
    sigma = (float(sigma), float(sigma)) if isinstance(sigma, (int, float)) else _range((list(sigma) * 2)[:2])
    return K.RandomGaussianBlur(kernel_size=(int(ky), int(kx)), sigma=sigma, border_type="reflect", p=1.0)


def _erasing(kwargs: Mapping[str, Any], fill_scale: float, channels: int) -> nn.Module:
    import kornia.augmentation as K

    value = kwargs.get("value", 0)
    if isinstance(value, (list, tuple)) and len(set(value)) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnsupportedArgument(f"value={value!r} (only one number on the GPU path)")
    return K.RandomErasing(scale=_range(kwargs.get("scale", (0.02, 0.33))),
                           ratio=_range(kwargs.get("ratio", (0.3, 3.3))), value=float(value) / fill_scale,
                           p=float(kwargs.get("p", 0.5)))


def _invert(kwargs: Mapping[str, Any], fill_scale: float, channels: int) -> nn.Module:
    import kornia.augmentation as K

    return K.RandomInvert(max_val=1.0, p=float(kwargs.get("p", 0.5)))


# torchvision.transforms name -> builder of its kornia.augmentation counterpart (the same name, except
# GaussianBlur -> RandomGaussianBlur applied with p=1, as torchvision always blurs).
GPU_COUNTERPARTS: dict[str, Callable[[Mapping[str, Any], float, int], nn.Module | None]] = {
    "RandomHorizontalFlip": _flip("RandomHorizontalFlip"),
    "RandomVerticalFlip": _flip("RandomVerticalFlip"),
    "RandomAffine": _affine,
    "RandomRotation": _rotation,
    "RandomPerspective": _perspective,
    "RandomResizedCrop": _resized_crop,
    "ColorJitter": _color_jitter,
    "RandomGrayscale": _grayscale,
    "GaussianBlur": _gaussian_blur,
    "RandomErasing": _erasing,
    "RandomInvert": _invert,
}


def kornia_transform(key: str, name: str, kwargs: Mapping[str, Any] | None, channels: int = 3) -> nn.Module | None:
    """The kornia counterpart of one configured transform (None where it is a no-op for these images).

    Values in pixel units of PIL images (fill under image_augmentations) are scaled to [0, 1].
    Raises KeyError for a name without counterpart, UnsupportedArgument for an argument value it cannot match.
    """
    fill_scale = 255.0 if key == "image_augmentations" else 1.0
    return GPU_COUNTERPARTS[name](dict(kwargs or {}), fill_scale, channels)


class BatchAugmentation(nn.Module):
    """uint8 [B, C, H, W] batch -> float in [0, 1] -> kornia augmentations (one draw per image) -> normalised."""

    def __init__(self, transforms: Sequence[nn.Module], mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)
        self.normalize = mean is not None and std is not None
        self.register_buffer("mean", torch.tensor(list(mean or [0.0]), dtype=torch.float32)[:, None, None])
        self.register_buffer("std", torch.tensor(list(std or [1.0]), dtype=torch.float32)[:, None, None])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"BatchAugmentation expects uint8 images, got {images.dtype}")
        batch = images.to(torch.float32).div(255)
        for transform in self.transforms:
            batch = transform(batch)
        if self.normalize:
            batch = batch.sub_(self.mean.to(batch.device)).div_(self.std.to(batch.device))
        return batch


def build_batch_augmentation(
    image_augmentations: Mapping[str, Mapping[str, Any] | None] | None,
    tensor_augmentations: Mapping[str, Mapping[str, Any] | None] | None,
    channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> BatchAugmentation:
    """The batch augmentation of checked config mappings (image ones, then tensor ones), then normalisation."""
    transforms = []
    for key, spec in zip(KEYS, (image_augmentations, tensor_augmentations)):
        for name, kwargs in (spec or {}).items():
            transform = kornia_transform(key, name, kwargs, channels)
            if transform is not None:
                transforms.append(transform)
    return BatchAugmentation(transforms, mean, std)


def gpu_problem(key: str, name: str, kwargs: Mapping[str, Any] | None, image_size: tuple[int, int],
                channels: int) -> str | None:
    """Why a (CPU-valid) transform cannot run with augmentation_device: gpu, or None."""
    if name not in GPU_COUNTERPARTS:
        return (f"{key}.{name}: no GPU counterpart for augmentation_device: gpu (supported there: "
                f"{', '.join(GPU_COUNTERPARTS)}); remove it or set augmentation_device: cpu")
    try:
        transform = kornia_transform(key, name, kwargs, channels)
    except UnsupportedArgument as error:
        return f"{key}.{name}: argument {error} has no GPU counterpart; change it or set augmentation_device: cpu"
    except (TypeError, ValueError) as error:
        return f"{key}.{name}: the GPU counterpart rejects {dict(kwargs or {})}: {error}"
    if transform is None:
        return None
    height, width = image_size
    try:
        transform(torch.zeros(2, channels, height, width))
    except Exception as error:  # any failure here would stop training later
        return f"{key}.{name}: the GPU counterpart fails on a {height}x{width} batch with these arguments: {error}"
    return None
