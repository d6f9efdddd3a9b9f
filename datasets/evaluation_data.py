"""A run's prepared data read for the tools after training (evaluate, predict, export): the label files, class
names, the validation split and its loader, without Lightning. Training reads the same through the data module."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from datasets.settings import DataSettings
from datasets.stanford_data import LabelRecord, StanfordCarsDataset, read_labels

SPLITS = ("train", "test")


def classes_of(records: Mapping[str, list[LabelRecord]]) -> tuple[int, list[str]]:
    """(number of classes = highest class id, names by id - 1) from the label records."""
    all_records = [r for rows in records.values() for r in rows]
    if not all_records:
        raise ValueError("the prepared label files hold no rows")
    bad = sorted({r.class_id for r in all_records if r.class_id < 1})
    if bad:
        raise ValueError(f"class ids must start at 1, found {bad[:5]}")
    num_classes = max(r.class_id for r in all_records)
    names = [f"class {i}" for i in range(1, num_classes + 1)]
    for record in all_records:
        names[record.class_id - 1] = record.class_name
    return num_classes, names


class EvaluationData:
    """The prepared data of ``settings`` (DataSettings.for_evaluation: no augmentation, no cache): the labels of
    both splits, the classes, and the test split as the validation images."""

    def __init__(self, settings: DataSettings) -> None:
        self.settings = settings
        self.data_path = Path(settings.data_path)
        self.records = {split: read_labels(self.data_path / f"{split}_labels.csv") for split in SPLITS}
        self.num_classes, self.class_names = classes_of(self.records)
        self.num_workers = settings.loading.num_workers or 0
        self.val_dataset = StanfordCarsDataset(self.data_path, "test", False, settings.preprocessing,
                                               settings.augmentation, self.records["test"])

    def val_dataloader(self) -> DataLoader:
        loading = self.settings.loading
        pin_memory = torch.cuda.is_available() if loading.pin_memory is None else loading.pin_memory
        return DataLoader(self.val_dataset, batch_size=loading.validation_batch_size or loading.batch_size,
                          num_workers=self.num_workers, pin_memory=pin_memory)
