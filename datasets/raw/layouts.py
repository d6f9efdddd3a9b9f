"""Which of the three raw layouts a folder holds, and its annotations and class names read and checked."""

from __future__ import annotations

import os
from pathlib import Path

from datasets.raw.class_folders_layout import class_folder_root, class_folder_zips, read_class_folders
from datasets.raw.files import (CLASS_FOLDER_CSVS, CLASS_FOLDER_FILES, ORIGINAL_FILES, UPDATED_FILES,
                                DataPreparationError, RawDataMissing, RawDataset, download_copies, examples,
                                find_entry)
from datasets.raw.original_layout import read_original
from datasets.raw.updated_layout import read_updated


def detect_layout(raw_path: str | os.PathLike) -> str:
    """'updated', 'original' or 'class_folders', from the files present; raises DataPreparationError naming what
    is missing."""
    raw = Path(raw_path)
    if not raw.is_dir():
        state = "is a file, not a folder" if raw.exists() else "does not exist"
        raise RawDataMissing(f"raw data folder {raw} {state}")
    unused: list[str] = []
    has_annotations = bool(download_copies(raw, "cars_annos.mat"))
    has_updated = find_entry(raw, "car_ims.tgz", unused) is not None or has_annotations
    has_original = any(find_entry(raw, n, unused) is not None for n in ("cars_train.tgz", "cars_test.tgz"))
    if has_updated and not has_original:
        return "updated"
    if has_original and not has_updated:
        return "original"
    if has_updated and has_original:
        complete_updated = find_entry(raw, "car_ims.tgz", unused) and has_annotations
        return "updated" if complete_updated else "original"
    kaggle_csvs = any(download_copies(raw, name) for name in CLASS_FOLDER_CSVS)
    if class_folder_root(raw) or class_folder_zips(raw) or kaggle_csvs:
        return "class_folders"
    raise RawDataMissing(
        f"no Stanford Cars raw files found in {raw}. Expected the updated layout ({', '.join(UPDATED_FILES)}), "
        f"the original layout ({', '.join(ORIGINAL_FILES)}) or Kaggle's class-folder layout "
        f"({', '.join(CLASS_FOLDER_FILES)}, or a .zip of them); archives may also be extracted into folders "
        "car_ims/, cars_train/, cars_test/, devkit/"
    )


def read_raw_dataset(raw_path: str | os.PathLike) -> RawDataset:
    """Detect the layout and read annotations and class names (not the images); validates class ids."""
    raw = Path(raw_path)
    layout = detect_layout(raw)
    notes: list[str] = []
    reader = {"updated": read_updated, "original": read_original, "class_folders": read_class_folders}[layout]
    dataset = reader(raw, notes)
    dataset.notes = notes
    check_annotations(dataset)
    return dataset


def check_annotations(dataset: RawDataset) -> None:
    """Refuse class ids outside the class-name list and an image annotated twice in one source."""
    n = len(dataset.class_names)
    bad = [f"{a.source_name} (class {a.class_id})" for a in dataset.annotations if not 1 <= a.class_id <= n]
    if bad:
        raise DataPreparationError(
            f"{len(bad)} annotation(s) have a class id outside 1..{n} (the class-name list has {n} names): "
            + examples(bad)
        )
    for source, annotations in dataset.sources:
        seen: set[str] = set()
        duplicates = [a.source_name for a in annotations if a.source_name in seen or seen.add(a.source_name)]
        if duplicates:
            raise DataPreparationError(
                f"annotations for {source.path.name} name {len(duplicates)} image(s) twice: {examples(duplicates)}"
            )
