"""Tests' shorthand: DataSettings from flat keyword arguments, each given to the settings object with that field."""

from __future__ import annotations

from dataclasses import fields

from datasets import Augmentation, DataSettings, Loading, Preprocessing

PARTS = (Preprocessing, Augmentation, Loading)


def flat_settings(path, **values) -> DataSettings:
    """DataSettings(path, Preprocessing(...), Augmentation(...), Loading(...)) from one set of keywords."""
    unknown = set(values) - {f.name for part in PARTS for f in fields(part)}
    if unknown:
        raise TypeError(f"no settings field named {', '.join(sorted(unknown))}")
    parts = [part(**{f.name: values[f.name] for f in fields(part) if f.name in values}) for part in PARTS]
    return DataSettings(path, *parts)
