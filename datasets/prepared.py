"""The prepared data folder's format: its label files and their columns, and the check that a folder holds them.

Reading prepared data needs only this module, not the raw-download readers of ``datasets/raw`` and
``datasets/preparation.py`` that write it. It imports no torch, so a wrong data folder is named at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from utils.config import Config

BOX_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")
LABEL_COLUMNS = ("image_fname", "class", *BOX_FIELDS, "class_name")
LABEL_FILES = ("train_labels.csv", "test_labels.csv")


def prepared_data_problems(config: Config) -> list[str]:
    """The config's stanford_data_path must hold prepared data (both label files)."""
    data = Path(config.stanford_data_path)
    if not data.exists():
        return [f"stanford_data_path: {data} does not exist; prepare the data there with prepare_stanford_dataset.py, "
                "or give the prepared folder (-d)"]
    missing = [name for name in LABEL_FILES if not (data / name).is_file()]
    if not missing:
        return []
    return [f"stanford_data_path: {data} is not prepared Stanford Cars data (no {' or '.join(missing)}); "
            "run prepare_stanford_dataset.py, or give the prepared folder (-d)"]
