"""The parts of a raw Stanford Cars download and where they are: annotations, image sources, the raw dataset, and
the raw files found in a folder (also as a browser renames repeated downloads, and as extracted folders)."""

from __future__ import annotations

import filecmp
import glob
import re
from dataclasses import dataclass, field
from pathlib import Path

from datasets.prepared import BOX_FIELDS

SPLITS = ("train", "test")
UPDATED_FILES = ("car_ims.tgz", "cars_annos.mat", "car_devkit.tgz")
ORIGINAL_FILES = ("cars_train.tgz", "cars_test.tgz", "car_devkit.tgz", "cars_test_annos_withlabels.mat")
CLASS_FOLDER_CSVS = ("anno_train.csv", "anno_test.csv", "names.csv")
CLASS_FOLDER_FILES = ("car_data/car_data/train/<class name>/", "car_data/car_data/test/<class name>/",
                      *CLASS_FOLDER_CSVS)
LAYOUT_FILES = {"updated": UPDATED_FILES, "original": ORIGINAL_FILES, "class_folders": CLASS_FOLDER_FILES}


class DataPreparationError(Exception):
    """Raw data cannot be turned into prepared data; the message says why and what would help."""


class RawDataMissing(DataPreparationError):
    """The raw data folder does not exist, or holds no file of any of the three layouts."""


@dataclass
class Annotation:
    """One annotated image of the raw files."""

    source_name: str  # file name of the image inside its archive / folder
    split: str
    class_id: int
    box: tuple[int, int, int, int]


@dataclass
class ImageSource:
    """Where images come from: a .tgz or .zip archive or a folder of JPEGs (or of class folders of JPEGs)."""

    path: Path
    is_archive: bool
    split: str | None = None  # class-folder layout: the split whose class folders hold the images


@dataclass
class RawDataset:
    """Everything read from the raw files except the images themselves."""

    layout: str
    class_names: list[str]
    annotations: list[Annotation]
    # image source -> annotations whose image lies in it
    sources: list[tuple[ImageSource, list[Annotation]]]
    notes: list[str] = field(default_factory=list)  # which raw files were used, where that needs saying


def examples(items: list[str], count: int = 5) -> str:
    shown = ", ".join(items[:count])
    return shown + (", ..." if len(items) > count else "")


def download_copies(raw: Path, name: str) -> list[Path]:
    """``raw/name`` and the names a browser gives repeated downloads of it (``name (1).ext``, ...), in that order."""
    stem, dot, suffix = name.partition(".")
    pattern = re.compile(rf"{re.escape(stem)} \((\d+)\){re.escape(dot + suffix)}")
    numbered = {int(m.group(1)): p for p in raw.glob(f"{glob.escape(stem)} (*){glob.escape(dot + suffix)}")
                if (m := pattern.fullmatch(p.name)) and p.is_file()}
    exact = [raw / name] if (raw / name).is_file() else []
    return exact + [numbered[number] for number in sorted(numbered)]


def one_copy(raw: Path, copies: list[Path], what: str, notes: list[str]) -> Path:
    """The one file among copies of the same download; DataPreparationError naming them when they differ."""
    different = [p for p in copies[1:] if not filecmp.cmp(copies[0], p, shallow=False)]
    if different:
        raise DataPreparationError(
            f"{raw} holds different files that could each be {what}: {copies[0].name}, "
            f"{', '.join(p.name for p in different)}; keep the right one and move the other(s) away"
        )
    if len(copies) > 1:
        notes.append(f"{', '.join(p.name for p in copies[1:])}: the same bytes as {copies[0].name}, which was used")
    return copies[0]


def raw_file(raw: Path, name: str, notes: list[str]) -> Path | None:
    """The raw file ``name``, or the only browser-renamed copy of it (``name (1).ext``, said in notes); identical
    copies are one file; different ones raise DataPreparationError naming them."""
    found = download_copies(raw, name)
    if not found:
        return None
    chosen = one_copy(raw, found, name, notes)
    if chosen.name != name:
        notes.append(f"used {chosen.name} as {name} (a browser's name for a repeated download)")
    return chosen


def find_entry(raw: Path, archive_name: str, notes: list[str]) -> ImageSource | None:
    """The archive ``<name>.tgz`` (or a browser-renamed copy) or its extracted folder (also the doubled Kaggle
    folder ``x/x/``)."""
    archive = raw_file(raw, archive_name, notes)
    if archive is not None:
        return ImageSource(archive, True)
    folder = raw / archive_name.removesuffix(".tgz")
    if folder.is_dir():
        return ImageSource(folder, False)
    return None


def find_devkit(raw: Path, notes: list[str]) -> ImageSource | None:
    archive = raw_file(raw, "car_devkit.tgz", notes)
    if archive is not None:
        return ImageSource(archive, True)
    for folder in (raw / "devkit", raw / "car_devkit" / "devkit", raw / "car_devkit"):
        if (folder / "cars_meta.mat").is_file() or (folder / "cars_train_annos.mat").is_file():
            return ImageSource(folder, False)
    return None


def image_folder(folder: Path) -> Path:
    """The folder that holds the JPEGs: ``x/`` itself or the doubled ``x/x/`` of the Kaggle mirror."""
    doubled = folder / folder.name
    if doubled.is_dir() and not any(p.suffix.lower() == ".jpg" for p in folder.iterdir()):
        return doubled
    return folder


def find_file(raw: Path, name: str, notes: list[str]) -> Path | None:
    """``raw/name`` (or a browser-renamed copy), or ``raw/<stem>/name`` as some mirrors have it."""
    for folder in (raw, raw / name.removesuffix(".mat")):
        found = raw_file(folder, name, notes) if folder.is_dir() else None
        if found is not None:
            return found
    return None


def missing_error(raw: Path, layout: str, missing: list[str]) -> DataPreparationError:
    return DataPreparationError(
        f"{raw} looks like the {layout} Stanford Cars layout ({', '.join(LAYOUT_FILES[layout])}) but lacks: "
        + ", ".join(missing)
    )
