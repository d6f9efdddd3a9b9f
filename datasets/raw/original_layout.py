"""The original layout (torchvision's and most mirrors'): cars_train.tgz, cars_test.tgz, car_devkit.tgz and
cars_test_annos_withlabels.mat for the test split's classes."""

from __future__ import annotations

from pathlib import Path

from datasets.raw.files import (BOX_FIELDS, UPDATED_FILES, DataPreparationError, RawDataset, find_devkit, find_entry,
                                find_file, missing_error)
from datasets.raw.matlab import annotation_fields, annotations_from_columns, load_mat, read_class_names, read_devkit


def read_original(raw: Path, notes: list[str]) -> RawDataset:
    """The original layout's annotations (the devkit's train annotations, the labelled test annotations)."""
    train_images = find_entry(raw, "cars_train.tgz", notes)
    test_images = find_entry(raw, "cars_test.tgz", notes)
    devkit = find_devkit(raw, notes)
    labels_path = find_file(raw, "cars_test_annos_withlabels.mat", notes)
    missing = [
        name
        for name, found in (
            ("cars_train.tgz (or folder cars_train/)", train_images),
            ("cars_test.tgz (or folder cars_test/)", test_images),
            ("car_devkit.tgz (or folder devkit/)", devkit),
        )
        if found is None
    ]
    if missing:
        raise missing_error(raw, "original", missing)
    if labels_path is None:
        raise DataPreparationError(
            f"{raw}: cars_test_annos_withlabels.mat is missing. The original layout needs it for the test "
            "split's classes: the devkit's cars_test_annos.mat has boxes but no 'class' field, and some "
            "mirrors (e.g. the Kaggle one) ship no test labels. Download cars_test_annos_withlabels.mat "
            f"into {raw}, or use the updated layout ({', '.join(UPDATED_FILES)})."
        )
    devkit_mats = read_devkit(devkit, ("cars_meta.mat", "cars_train_annos.mat"))
    for name in ("cars_meta.mat", "cars_train_annos.mat"):
        if name not in devkit_mats:
            raise DataPreparationError(f"{devkit.path} lacks devkit/{name}, which the original layout needs")
    class_names = read_class_names(devkit_mats["cars_meta.mat"], f"{devkit.path}:cars_meta.mat")
    fields = (*BOX_FIELDS, "class", "fname")
    train_where = f"{devkit.path}:cars_train_annos.mat"
    train_columns = annotation_fields(devkit_mats["cars_train_annos.mat"], fields, train_where)
    test_mat = load_mat(labels_path, str(labels_path))
    test_columns = annotation_fields(test_mat, fields, str(labels_path))
    train = annotations_from_columns(train_columns, "fname", ["train"] * len(train_columns["fname"]))
    test = annotations_from_columns(test_columns, "fname", ["test"] * len(test_columns["fname"]))
    return RawDataset("original", class_names, train + test, [(train_images, train), (test_images, test)])

