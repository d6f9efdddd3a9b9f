"""Stanford Cars data: raw files -> prepared data, synthetic raw data, datasets and data module.

Names are imported on first use, so that light tools (``prepare_stanford_dataset.py``,
``python -m datasets.synthetic``) do not pay for importing torch and Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "StanfordCarsDataset": "datasets.stanford_data",
    "read_labels": "datasets.stanford_data",
    "prepared_data_problems": "datasets.stanford_data",
    "StanfordCarsDataModule": "datasets.stanford_data_module",
    "Augmentation": "datasets.settings",
    "DataSettings": "datasets.settings",
    "Loading": "datasets.settings",
    "Preprocessing": "datasets.settings",
    "data_settings": "datasets.settings",
    "preprocessing_settings": "datasets.settings",
    "DataPreparationError": "datasets.preparation",
    "PrepareSummary": "datasets.preparation",
    "check_archive_target": "datasets.preparation",
    "default_archive_path": "datasets.preparation",
    "make_data_archive": "datasets.preparation",
    "prepare_stanford_dataset": "datasets.preparation",
    "generate_synthetic_stanford": "datasets.synthetic",
    "compute_normalization_params": "datasets.normalization",
    "config_problems": "datasets.transforms",
    "transform_names": "datasets.transforms",
    "valid_names": "datasets.transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'datasets' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
