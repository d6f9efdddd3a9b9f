"""Tests' shorthand: data settings from flat keyword arguments over the schema's defaults, and the thesis's
transforms."""

from __future__ import annotations

from dataclasses import fields, replace

from datasets.settings import Augmentation, DataSettings, Loading, Preprocessing, data_settings
from utils.config import Config

PARTS = {"preprocessing": Preprocessing, "augmentation": Augmentation, "loading": Loading}
# The thesis's transforms (C-50's image augmentations; RandomErasing as runs C-5, C-6 and C-48 used it).
THESIS_IMAGE = {
    "RandomHorizontalFlip": {"p": 0.5},
    "RandomAffine": {"degrees": 25, "translate": [0.1, 0.1], "scale": [0.9, 1.1], "shear": 8},
    "ColorJitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1},
}
THESIS_TENSOR = {"RandomErasing": {"p": 0.5, "scale": [0.02, 0.25]}}


def defaults(path=".") -> DataSettings:
    """The data settings of the schema's defaults, with no augmentation."""
    settings = data_settings(Config(stanford_data_path=str(path)))
    return replace(settings, augmentation=Augmentation(None, None, "cpu"))


def flat_settings(path, **values) -> DataSettings:
    """DataSettings(path, Preprocessing(...), Augmentation(...), Loading(...)) from one set of keywords; the
    others as the schema's defaults (no augmentation)."""
    unknown = set(values) - {f.name for part in PARTS.values() for f in fields(part)}
    if unknown:
        raise TypeError(f"no settings field named {', '.join(sorted(unknown))}")
    base = defaults(path)
    parts = {name: replace(getattr(base, name), **{f.name: values[f.name] for f in fields(part) if f.name in values})
             for name, part in PARTS.items()}
    return replace(base, **parts)


def preprocessing(image_size=None, **values) -> Preprocessing:
    """A Preprocessing of the schema's defaults with these values."""
    if image_size is not None:
        values["image_size"] = image_size
    return replace(defaults().preprocessing, **values)


def augmentation(image=None, tensor=None, device="cpu") -> Augmentation:
    return Augmentation(image, tensor, device)


def loading(**values) -> Loading:
    """A Loading of the schema's defaults with these values."""
    return replace(defaults().loading, **values)
