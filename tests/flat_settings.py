"""Tests' shorthand: DataSettings from flat keyword arguments, and the thesis's transforms."""

from __future__ import annotations

from dataclasses import fields

from datasets import Augmentation, DataSettings, Loading, Preprocessing

PARTS = (Preprocessing, Augmentation, Loading)
# The thesis's transforms (C-50's image augmentations; RandomErasing as runs C-5, C-6 and C-48 used it).
THESIS_IMAGE = {
    "RandomHorizontalFlip": {"p": 0.5},
    "RandomAffine": {"degrees": 25, "translate": [0.1, 0.1], "scale": [0.9, 1.1], "shear": 8},
    "ColorJitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1},
}
THESIS_TENSOR = {"RandomErasing": {"p": 0.5, "scale": [0.02, 0.25]}}


def flat_settings(path, **values) -> DataSettings:
    """DataSettings(path, Preprocessing(...), Augmentation(...), Loading(...)) from one set of keywords."""
    unknown = set(values) - {f.name for part in PARTS for f in fields(part)}
    if unknown:
        raise TypeError(f"no settings field named {', '.join(sorted(unknown))}")
    parts = [part(**{f.name: values[f.name] for f in fields(part) if f.name in values}) for part in PARTS]
    return DataSettings(path, *parts)
