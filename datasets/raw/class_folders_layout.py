"""Kaggle's class-folder layout: car_data/car_data/{train,test}/<class name>/*.jpg with anno_train.csv,
anno_test.csv and names.csv, extracted or in one .zip."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from datasets.raw.files import (CLASS_FOLDER_CSVS, SPLITS, Annotation, DataPreparationError, ImageSource, RawDataset,
                                missing_error, one_copy, raw_file)
from datasets.raw.members import ARCHIVE_ERRORS, corrupt, safe_zip_members


@dataclass(frozen=True)
class CsvText:
    """A CSV file's bytes and where they were read (a path, or archive:member), for messages."""

    data: bytes
    where: str


def class_folder_root(raw: Path) -> Path | None:
    """The folder holding the split folders of class folders: Kaggle's ``car_data/car_data/``, or ``car_data/``."""
    for root in (raw / "car_data" / "car_data", raw / "car_data"):
        if (root / "train").is_dir() or (root / "test").is_dir():
            return root
    return None


def _holds_class_folders(path: Path) -> bool:
    """Whether a .zip looks like Kaggle's class-folder download (an unreadable one counts: reading it says why)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return True
    return any(PurePosixPath(n).name in CLASS_FOLDER_CSVS or n.startswith("car_data/") for n in names)


def class_folder_zips(raw: Path) -> list[Path]:
    """The .zip files of the class-folder layout, those without a browser's copy number (`` (1)``) first."""
    zips = [p for p in raw.glob("*.zip") if p.is_file() and _holds_class_folders(p)]
    return sorted(zips, key=lambda p: (re.search(r" \(\d+\)$", p.stem) is not None, p.name))


def _class_folder_parts(raw: Path, notes: list[str]) -> tuple[dict[str, CsvText], dict[str, ImageSource], str]:
    """The CSVs and split image sources found (extracted, or in one .zip), and how missing parts are named."""
    zips = class_folder_zips(raw)
    if not zips:
        root = class_folder_root(raw) or raw / "car_data" / "car_data"
        paths = {name: raw_file(raw, name, notes) for name in CLASS_FOLDER_CSVS}
        texts = {name: CsvText(path.read_bytes(), str(path)) for name, path in paths.items() if path is not None}
        sources = {split: ImageSource(root / split, False, split) for split in SPLITS if (root / split).is_dir()}
        return texts, sources, ""
    archive = one_copy(raw, zips, "Kaggle's class-folder archive", notes)
    try:
        with zipfile.ZipFile(archive) as opened:
            names = [member.filename for member in safe_zip_members(archive, opened)]
            members = {PurePosixPath(n).name: n for n in reversed(names) if PurePosixPath(n).name in CLASS_FOLDER_CSVS}
            texts = {base: CsvText(opened.read(n), f"{archive}:{n}") for base, n in members.items()}
    except ARCHIVE_ERRORS + (zipfile.BadZipFile,) as error:
        raise corrupt(archive, error) from error
    splits = {PurePosixPath(n).parts[-3] for n in names if len(PurePosixPath(n).parts) >= 3 and not n.endswith("/")}
    sources = {split: ImageSource(archive, True, split) for split in SPLITS if split in splits}
    return texts, sources, f" (in {archive.name})"


def _csv_rows(text: CsvText) -> Iterator[tuple[int, list[str]]]:
    """(line number, values) of the non-empty rows of a CSV file (UTF-8, with or without a byte-order mark)."""
    try:
        decoded = text.data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataPreparationError(f"{text.where} is not UTF-8 text ({error})") from error
    for line, row in enumerate(csv.reader(io.StringIO(decoded)), start=1):
        if any(value.strip() for value in row):
            yield line, row


def _class_names_csv(text: CsvText) -> list[str]:
    """Kaggle's names.csv: one class name a line, in class-id order (a name holding commas is kept whole)."""
    names = [",".join(row).strip() for _, row in _csv_rows(text)]
    if not names:
        raise DataPreparationError(f"{text.where} holds no class names")
    return names


def _annotations_csv(text: CsvText, split: str) -> list[Annotation]:
    """Kaggle's anno_train.csv / anno_test.csv: file name, x1, y1, x2, y2, class id; no header."""
    annotations = []
    for line, row in _csv_rows(text):
        try:
            if len(row) != 6:
                raise ValueError(f"{len(row)} value(s)")
            x1, y1, x2, y2, class_id = (int(value) for value in row[1:])
        except ValueError as error:
            raise DataPreparationError(
                f"{text.where}, line {line}: expected file name, x1, y1, x2, y2, class id (whole numbers), "
                f"found {','.join(row)!r} ({error})"
            ) from error
        annotations.append(Annotation(PurePosixPath(row[0].strip()).name, split, class_id, (x1, y1, x2, y2)))
    if not annotations:
        raise DataPreparationError(f"{text.where} lists no images")
    return annotations


def read_class_folders(raw: Path, notes: list[str]) -> RawDataset:
    """The class-folder layout's annotations (anno_train.csv, anno_test.csv) and class names (names.csv)."""
    texts, sources, inside = _class_folder_parts(raw, notes)
    missing = [f"car_data/car_data/{split}/ (a folder per class){inside}" for split in SPLITS if split not in sources]
    missing += [f"{name}{inside}" for name in CLASS_FOLDER_CSVS if name not in texts]
    if missing:
        raise missing_error(raw, "class_folders", missing)
    class_names = _class_names_csv(texts["names.csv"])
    train = _annotations_csv(texts["anno_train.csv"], "train")
    test = _annotations_csv(texts["anno_test.csv"], "test")
    return RawDataset("class_folders", class_names, train + test,
                      [(sources["train"], train), (sources["test"], test)])
