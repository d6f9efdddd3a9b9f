"""Raw Stanford Cars files (any of three layouts, archives or folders) -> prepared data.

Prepared data: ``train/*.jpg``, ``test/*.jpg``, ``train_labels.csv``, ``test_labels.csv`` with columns
``image_fname,class,bbox_x1,bbox_y1,bbox_x2,bbox_y2,class_name`` (class ids 1..N as in the raw files,
boxes in inclusive pixel coordinates, clipped to the image).

Image names: the updated layout numbers all images ``000001.jpg`` .. ``016185.jpg`` and they keep these
names; the original layout restarts at ``00001.jpg`` in each split, and since each split has its own
folder and its own CSV the names are kept as they are (unique within their split). The JPEG bytes are
copied unchanged (no re-encoding).
"""

from __future__ import annotations

import csv
import filecmp
import glob
import io
import os
import re
import shutil
import tarfile
import uuid
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

import numpy as np
import scipy.io
from tqdm import tqdm

from datasets.photos import (clear_orientation, decode_whole, open_image, orientation, size_limit_as_error,
                             unreadable_reason)
from utils.archives import unsafe_member_reason, unsafe_zip_member_reason

LABEL_COLUMNS = ("image_fname", "class", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class_name")
SPLITS = ("train", "test")
BOX_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")

UPDATED_FILES = ("car_ims.tgz", "cars_annos.mat", "car_devkit.tgz")
ORIGINAL_FILES = ("cars_train.tgz", "cars_test.tgz", "car_devkit.tgz", "cars_test_annos_withlabels.mat")
CLASS_FOLDER_CSVS = ("anno_train.csv", "anno_test.csv", "names.csv")
CLASS_FOLDER_FILES = ("car_data/car_data/train/<class name>/", "car_data/car_data/test/<class name>/",
                      *CLASS_FOLDER_CSVS)
LAYOUT_FILES = {"updated": UPDATED_FILES, "original": ORIGINAL_FILES, "class_folders": CLASS_FOLDER_FILES}


class DataPreparationError(Exception):
    """Raw data cannot be turned into prepared data; the message says why and what would help."""


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


@dataclass
class PrepareSummary:
    """What prepare_stanford_dataset wrote."""

    layout: str
    out_path: Path
    num_train: int
    num_test: int
    num_classes: int
    clipped_boxes: int
    grayscale_images: int
    oriented_images: int  # JPEGs whose EXIF orientation tag was set to 1 in the copy (boxes refer to stored pixels)
    clipped_examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # which raw files were used, where that needs saying


# ----------------------------------------------------------------------------------------------
# Locating raw files


def _copies(raw: Path, name: str) -> list[Path]:
    """``raw/name`` and the names a browser gives repeated downloads of it (``name (1).ext``, ...), in that order."""
    stem, dot, suffix = name.partition(".")
    pattern = re.compile(rf"{re.escape(stem)} \((\d+)\){re.escape(dot + suffix)}")
    numbered = {int(m.group(1)): p for p in raw.glob(f"{glob.escape(stem)} (*){glob.escape(dot + suffix)}")
                if (m := pattern.fullmatch(p.name)) and p.is_file()}
    exact = [raw / name] if (raw / name).is_file() else []
    return exact + [numbered[number] for number in sorted(numbered)]


def _one_copy(raw: Path, copies: list[Path], what: str, notes: list[str]) -> Path:
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


def _raw_file(raw: Path, name: str, notes: list[str]) -> Path | None:
    """The raw file ``name``, or the only browser-renamed copy of it (``name (1).ext``, said in notes); identical
    copies are one file; different ones raise DataPreparationError naming them."""
    copies = _copies(raw, name)
    if not copies:
        return None
    chosen = _one_copy(raw, copies, name, notes)
    if chosen.name != name:
        notes.append(f"used {chosen.name} as {name} (a browser's name for a repeated download)")
    return chosen


def _find_entry(raw: Path, archive_name: str, notes: list[str]) -> ImageSource | None:
    """The archive ``<name>.tgz`` (or a browser-renamed copy) or its extracted folder (also the doubled Kaggle
    folder ``x/x/``)."""
    archive = _raw_file(raw, archive_name, notes)
    if archive is not None:
        return ImageSource(archive, True)
    folder = raw / archive_name.removesuffix(".tgz")
    if folder.is_dir():
        return ImageSource(folder, False)
    return None


def _find_devkit(raw: Path, notes: list[str]) -> ImageSource | None:
    archive = _raw_file(raw, "car_devkit.tgz", notes)
    if archive is not None:
        return ImageSource(archive, True)
    for folder in (raw / "devkit", raw / "car_devkit" / "devkit", raw / "car_devkit"):
        if (folder / "cars_meta.mat").is_file() or (folder / "cars_train_annos.mat").is_file():
            return ImageSource(folder, False)
    return None


def _image_folder(folder: Path) -> Path:
    """The folder that holds the JPEGs: ``x/`` itself or the doubled ``x/x/`` of the Kaggle mirror."""
    doubled = folder / folder.name
    if doubled.is_dir() and not any(p.suffix.lower() == ".jpg" for p in folder.iterdir()):
        return doubled
    return folder


def _find_file(raw: Path, name: str, notes: list[str]) -> Path | None:
    """``raw/name`` (or a browser-renamed copy), or ``raw/<stem>/name`` as some mirrors have it."""
    for folder in (raw, raw / name.removesuffix(".mat")):
        found = _raw_file(folder, name, notes) if folder.is_dir() else None
        if found is not None:
            return found
    return None


def detect_layout(raw_path: str | os.PathLike) -> str:
    """'updated', 'original' or 'class_folders', from the files present; raises DataPreparationError naming what
    is missing."""
    raw = Path(raw_path)
    if not raw.is_dir():
        state = "is a file, not a folder" if raw.exists() else "does not exist"
        raise DataPreparationError(f"raw data folder {raw} {state}")
    unused: list[str] = []
    has_updated = _find_entry(raw, "car_ims.tgz", unused) is not None or bool(_copies(raw, "cars_annos.mat"))
    has_original = any(_find_entry(raw, n, unused) is not None for n in ("cars_train.tgz", "cars_test.tgz"))
    if has_updated and not has_original:
        return "updated"
    if has_original and not has_updated:
        return "original"
    if has_updated and has_original:
        complete_updated = _find_entry(raw, "car_ims.tgz", unused) and _copies(raw, "cars_annos.mat")
        return "updated" if complete_updated else "original"
    if _class_folder_root(raw) or _class_folder_zips(raw) or any(_copies(raw, n) for n in CLASS_FOLDER_CSVS):
        return "class_folders"
    raise DataPreparationError(
        f"no Stanford Cars raw files found in {raw}. Expected the updated layout ({', '.join(UPDATED_FILES)}), "
        f"the original layout ({', '.join(ORIGINAL_FILES)}) or Kaggle's class-folder layout "
        f"({', '.join(CLASS_FOLDER_FILES)}, or a .zip of them); archives may also be extracted into folders "
        "car_ims/, cars_train/, cars_test/, devkit/"
    )


def _missing_error(raw: Path, layout: str, missing: list[str]) -> DataPreparationError:
    return DataPreparationError(
        f"{raw} looks like the {layout} Stanford Cars layout ({', '.join(LAYOUT_FILES[layout])}) but lacks: "
        + ", ".join(missing)
    )


# ----------------------------------------------------------------------------------------------
# Reading .mat files


def _load_mat(data: bytes | Path, where: str) -> dict[str, Any]:
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        return scipy.io.loadmat(source)
    except Exception as error:  # scipy raises several types for malformed files
        raise DataPreparationError(f"{where} is not a readable MATLAB .mat file: {error}") from error


def _mat_variable(mat: dict[str, Any], name: str, where: str) -> np.ndarray:
    if name not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataPreparationError(f"{where} has no variable '{name}' (found: {', '.join(found) or 'none'})")
    return mat[name]


def _annotation_fields(mat: dict[str, Any], fields: tuple[str, ...], where: str) -> dict[str, list[Any]]:
    """Fields of a loaded .mat file's 'annotations' struct array, as lists of Python values (ints from uint8/16)."""
    annos = _mat_variable(mat, "annotations", where)
    names = annos.dtype.names or ()
    missing = [f for f in fields if f not in names]
    if missing:
        raise DataPreparationError(
            f"{where}: 'annotations' lacks field(s) {', '.join(missing)} (has: {', '.join(names) or 'none'})"
        )
    columns: dict[str, list[Any]] = {}
    for name in fields:
        values = annos[name].ravel()
        try:
            if name in ("relative_im_path", "fname"):
                columns[name] = [str(v.item() if v.size == 1 else "") for v in values]
            else:
                columns[name] = [int(np.asarray(v).item()) for v in values]
        except (ValueError, TypeError) as error:
            raise DataPreparationError(f"{where}: field '{name}' holds unexpected values: {error}") from error
    return columns


def _class_names(mat: dict[str, Any], where: str) -> list[str]:
    """The 'class_names' cell array of a loaded .mat file, as strings."""
    names = []
    for cell in np.asarray(_mat_variable(mat, "class_names", where)).ravel():
        cell = np.asarray(cell)
        names.append(str(cell.ravel()[0]) if cell.size else "")
    if not names:
        raise DataPreparationError(f"{where}: 'class_names' is empty")
    return names


def _read_devkit(devkit: ImageSource, wanted: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The wanted devkit .mat files (by base name) that are present, loaded; one pass over an archive."""
    loaded: dict[str, dict[str, Any]] = {}
    if devkit.is_archive:
        for member, read in _iter_archive(devkit.path):
            base = PurePosixPath(member).name
            if base in wanted:
                loaded[base] = _load_mat(read(), f"{devkit.path}:{member}")
    else:
        for name in wanted:
            path = devkit.path / name
            if path.is_file():
                loaded[name] = _load_mat(path, str(path))
    return loaded


def _annotations_from_columns(
    columns: dict[str, list[Any]], name_field: str, splits: list[str]
) -> list[Annotation]:
    return [
        Annotation(
            source_name=PurePosixPath(columns[name_field][i]).name,
            split=splits[i],
            class_id=columns["class"][i],
            box=tuple(columns[f][i] for f in BOX_FIELDS),  # type: ignore[arg-type]
        )
        for i in range(len(splits))
    ]


def _read_updated(raw: Path, notes: list[str]) -> RawDataset:
    images = _find_entry(raw, "car_ims.tgz", notes)
    annos_path = _raw_file(raw, "cars_annos.mat", notes)
    devkit = _find_devkit(raw, notes)
    parts = (("car_ims.tgz (or folder car_ims/)", images), ("cars_annos.mat", annos_path))
    missing = [name for name, found in parts if found is None]
    if missing:
        raise _missing_error(raw, "updated", missing)
    mat = _load_mat(annos_path, str(annos_path))
    fields = ("relative_im_path", *BOX_FIELDS, "class", "test")
    columns = _annotation_fields(mat, fields, str(annos_path))
    if devkit is not None:
        meta = _read_devkit(devkit, ("cars_meta.mat",))
        if "cars_meta.mat" not in meta:
            raise DataPreparationError(f"{devkit.path} has no devkit/cars_meta.mat (the class names)")
        class_names = _class_names(meta["cars_meta.mat"], f"{devkit.path}:cars_meta.mat")
    elif "class_names" in mat:
        class_names = _class_names(mat, str(annos_path))
    else:
        raise _missing_error(raw, "updated", ["car_devkit.tgz (or folder devkit/) with cars_meta.mat"])
    splits = ["test" if t else "train" for t in columns["test"]]
    annotations = _annotations_from_columns(columns, "relative_im_path", splits)
    return RawDataset("updated", class_names, annotations, [(images, annotations)])


def _read_original(raw: Path, notes: list[str]) -> RawDataset:
    train_images = _find_entry(raw, "cars_train.tgz", notes)
    test_images = _find_entry(raw, "cars_test.tgz", notes)
    devkit = _find_devkit(raw, notes)
    labels_path = _find_file(raw, "cars_test_annos_withlabels.mat", notes)
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
        raise _missing_error(raw, "original", missing)
    if labels_path is None:
        raise DataPreparationError(
            f"{raw}: cars_test_annos_withlabels.mat is missing. The original layout needs it for the test "
            "split's classes: the devkit's cars_test_annos.mat has boxes but no 'class' field, and some "
            "mirrors (e.g. the Kaggle one) ship no test labels. Download cars_test_annos_withlabels.mat "
            f"into {raw}, or use the updated layout ({', '.join(UPDATED_FILES)})."
        )
    devkit_mats = _read_devkit(devkit, ("cars_meta.mat", "cars_train_annos.mat"))
    for name in ("cars_meta.mat", "cars_train_annos.mat"):
        if name not in devkit_mats:
            raise DataPreparationError(f"{devkit.path} lacks devkit/{name}, which the original layout needs")
    class_names = _class_names(devkit_mats["cars_meta.mat"], f"{devkit.path}:cars_meta.mat")
    fields = (*BOX_FIELDS, "class", "fname")
    train_where = f"{devkit.path}:cars_train_annos.mat"
    train_columns = _annotation_fields(devkit_mats["cars_train_annos.mat"], fields, train_where)
    test_mat = _load_mat(labels_path, str(labels_path))
    test_columns = _annotation_fields(test_mat, fields, str(labels_path))
    train = _annotations_from_columns(train_columns, "fname", ["train"] * len(train_columns["fname"]))
    test = _annotations_from_columns(test_columns, "fname", ["test"] * len(test_columns["fname"]))
    return RawDataset("original", class_names, train + test, [(train_images, train), (test_images, test)])


# ----------------------------------------------------------------------------------------------
# Kaggle's class-folder layout


def _class_folder_root(raw: Path) -> Path | None:
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


def _class_folder_zips(raw: Path) -> list[Path]:
    """The .zip files of the class-folder layout, those without a browser's copy number (`` (1)``) first."""
    zips = [p for p in raw.glob("*.zip") if p.is_file() and _holds_class_folders(p)]
    return sorted(zips, key=lambda p: (re.search(r" \(\d+\)$", p.stem) is not None, p.name))


_Text = tuple[bytes, str]  # a CSV file's bytes and where it was read (for messages)


def _class_folder_parts(raw: Path, notes: list[str]) -> tuple[dict[str, _Text], dict[str, ImageSource], str]:
    """The CSVs and split image sources found (extracted, or in one .zip), and how missing parts are named."""
    zips = _class_folder_zips(raw)
    if not zips:
        root = _class_folder_root(raw) or raw / "car_data" / "car_data"
        paths = {name: _raw_file(raw, name, notes) for name in CLASS_FOLDER_CSVS}
        texts = {name: (path.read_bytes(), str(path)) for name, path in paths.items() if path is not None}
        sources = {split: ImageSource(root / split, False, split) for split in SPLITS if (root / split).is_dir()}
        return texts, sources, ""
    archive = _one_copy(raw, zips, "Kaggle's class-folder archive", notes)
    try:
        with zipfile.ZipFile(archive) as opened:
            names = [member.filename for member in _safe_zip_members(archive, opened)]
            members = {PurePosixPath(n).name: n for n in reversed(names) if PurePosixPath(n).name in CLASS_FOLDER_CSVS}
            texts = {base: (opened.read(n), f"{archive}:{n}") for base, n in members.items()}
    except _ARCHIVE_ERRORS + (zipfile.BadZipFile,) as error:
        raise _corrupt(archive, error) from error
    splits = {PurePosixPath(n).parts[-3] for n in names if len(PurePosixPath(n).parts) >= 3 and not n.endswith("/")}
    sources = {split: ImageSource(archive, True, split) for split in SPLITS if split in splits}
    return texts, sources, f" (in {archive.name})"


def _csv_rows(text: _Text) -> Iterator[tuple[int, list[str]]]:
    """(line number, values) of the non-empty rows of a CSV file (UTF-8, with or without a byte-order mark)."""
    data, where = text
    try:
        decoded = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataPreparationError(f"{where} is not UTF-8 text ({error})") from error
    for line, row in enumerate(csv.reader(io.StringIO(decoded)), start=1):
        if any(value.strip() for value in row):
            yield line, row


def _class_names_csv(text: _Text) -> list[str]:
    """Kaggle's names.csv: one class name a line, in class-id order (a name holding commas is kept whole)."""
    names = [",".join(row).strip() for _, row in _csv_rows(text)]
    if not names:
        raise DataPreparationError(f"{text[1]} holds no class names")
    return names


def _annotations_csv(text: _Text, split: str) -> list[Annotation]:
    """Kaggle's anno_train.csv / anno_test.csv: file name, x1, y1, x2, y2, class id; no header."""
    annotations = []
    for line, row in _csv_rows(text):
        try:
            if len(row) != 6:
                raise ValueError(f"{len(row)} value(s)")
            x1, y1, x2, y2, class_id = (int(value) for value in row[1:])
        except ValueError as error:
            raise DataPreparationError(
                f"{text[1]}, line {line}: expected file name, x1, y1, x2, y2, class id (whole numbers), "
                f"found {','.join(row)!r} ({error})"
            ) from error
        annotations.append(Annotation(PurePosixPath(row[0].strip()).name, split, class_id, (x1, y1, x2, y2)))
    if not annotations:
        raise DataPreparationError(f"{text[1]} lists no images")
    return annotations


def _read_class_folders(raw: Path, notes: list[str]) -> RawDataset:
    texts, sources, inside = _class_folder_parts(raw, notes)
    missing = [f"car_data/car_data/{split}/ (a folder per class){inside}" for split in SPLITS if split not in sources]
    missing += [f"{name}{inside}" for name in CLASS_FOLDER_CSVS if name not in texts]
    if missing:
        raise _missing_error(raw, "class_folders", missing)
    class_names = _class_names_csv(texts["names.csv"])
    train = _annotations_csv(texts["anno_train.csv"], "train")
    test = _annotations_csv(texts["anno_test.csv"], "test")
    return RawDataset("class_folders", class_names, train + test,
                      [(sources["train"], train), (sources["test"], test)])


def read_raw_dataset(raw_path: str | os.PathLike) -> RawDataset:
    """Detect the layout and read annotations and class names (not the images); validates class ids."""
    raw = Path(raw_path)
    layout = detect_layout(raw)
    notes: list[str] = []
    reader = {"updated": _read_updated, "original": _read_original, "class_folders": _read_class_folders}[layout]
    dataset = reader(raw, notes)
    dataset.notes = notes
    _check_annotations(dataset)
    return dataset


def _examples(items: list[str], count: int = 5) -> str:
    shown = ", ".join(items[:count])
    return shown + (", ..." if len(items) > count else "")


def _check_annotations(dataset: RawDataset) -> None:
    n = len(dataset.class_names)
    bad = [f"{a.source_name} (class {a.class_id})" for a in dataset.annotations if not 1 <= a.class_id <= n]
    if bad:
        raise DataPreparationError(
            f"{len(bad)} annotation(s) have a class id outside 1..{n} (the class-name list has {n} names): "
            + _examples(bad)
        )
    for source, annotations in dataset.sources:
        seen: set[str] = set()
        duplicates = [a.source_name for a in annotations if a.source_name in seen or seen.add(a.source_name)]
        if duplicates:
            raise DataPreparationError(
                f"annotations for {source.path.name} name {len(duplicates)} image(s) twice: {_examples(duplicates)}"
            )


# ----------------------------------------------------------------------------------------------
# Reading images


_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def _corrupt(path: Path, error: BaseException) -> DataPreparationError:
    return DataPreparationError(f"{path} is truncated or corrupt ({type(error).__name__}: {error}); download it again")


def _iter_archive(path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """Yield (member name, reader) for each regular file of a .tgz in one streaming pass; refuse unsafe members."""

    def reader(archive: tarfile.TarFile, member: tarfile.TarInfo) -> Callable[[], bytes]:
        def read() -> bytes:
            try:
                return archive.extractfile(member).read()  # type: ignore[union-attr]
            except _ARCHIVE_ERRORS as error:
                raise _corrupt(path, error) from error

        return read

    try:
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                reason = unsafe_member_reason(member)
                if reason is not None:
                    raise DataPreparationError(f"{path}: refusing archive member '{member.name}': {reason}")
                if member.isfile():
                    yield member.name, reader(archive, member)
    except _ARCHIVE_ERRORS as error:
        raise _corrupt(path, error) from error


def _safe_zip_members(path: Path, archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The members of an opened .zip; refuses the archive if one is a link or names a place outside its folder."""
    members = archive.infolist()
    for member in members:
        reason = unsafe_zip_member_reason(member)
        if reason is not None:
            raise DataPreparationError(f"{path}: refusing archive member '{member.filename}': {reason}")
    return members


def _iter_zip(path: Path, split: str) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """Yield (member name, reader) for each file of a .zip that lies in a class folder of ``split``."""

    def reader(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> Callable[[], bytes]:
        def read() -> bytes:
            try:
                return archive.read(member)
            except _ARCHIVE_ERRORS + (zipfile.BadZipFile,) as error:
                raise _corrupt(path, error) from error

        return read

    try:
        with zipfile.ZipFile(path) as archive:
            for member in _safe_zip_members(path, archive):
                parts = PurePosixPath(member.filename).parts
                if not member.is_dir() and len(parts) >= 3 and parts[-3] == split:
                    yield member.filename, reader(archive, member)
    except _ARCHIVE_ERRORS + (zipfile.BadZipFile,) as error:
        raise _corrupt(path, error) from error


def _iter_class_folders(split_folder: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """Yield ('<class folder>/<file>', reader) for each file in the class folders of a split folder."""
    for class_folder in sorted(p for p in split_folder.iterdir() if p.is_dir()):
        for name, read in _iter_folder(class_folder):
            yield f"{class_folder.name}/{name}", read


def _iter_source(source: ImageSource) -> Iterator[tuple[str, Callable[[], bytes]]]:
    if source.split is not None:
        return _iter_zip(source.path, source.split) if source.is_archive else _iter_class_folders(source.path)
    return _iter_archive(source.path) if source.is_archive else _iter_folder(source.path)


def _iter_folder(folder: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    images = _image_folder(folder)
    for entry in sorted(os.scandir(images), key=lambda e: e.name):
        if entry.is_file():
            yield entry.name, lambda p=entry.path: Path(p).read_bytes()


MIN_IMAGE_SIDE = 8  # a smaller raw image cannot show a car: a damaged or placeholder file


@dataclass
class _ImageInfo:
    width: int
    height: int
    mode: str
    orientation: int


def _image_info(data: bytes) -> _ImageInfo:
    """Size, mode and EXIF orientation of a raw Stanford JPEG, decoding it (at reduced scale) to make sure it is
    whole; raises ValueError saying why it cannot be used."""
    try:
        with size_limit_as_error(), open_image(io.BytesIO(data)) as image:
            info = _ImageInfo(*image.size, image.mode, orientation(image))
            kind = image.format
            decode_whole(image)
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ... for broken files
        raise ValueError(unreadable_reason(error)) from error
    if kind != "JPEG":
        raise ValueError(f"is a {kind} image, not a JPEG as every Stanford Cars image is")
    if min(info.width, info.height) < MIN_IMAGE_SIDE:
        raise ValueError(f"is only {info.width}x{info.height} pixels, too small to show a car "
                         f"(under {MIN_IMAGE_SIDE} pixels a side)")
    return info


def _clip_box(box: tuple[int, int, int, int], width: int, height: int) -> tuple[tuple[int, int, int, int], bool]:
    x1, y1, x2, y2 = box
    cx1, cx2 = sorted((min(max(x1, 0), width - 1), min(max(x2, 0), width - 1)))
    cy1, cy2 = sorted((min(max(y1, 0), height - 1), min(max(y2, 0), height - 1)))
    clipped = (cx1, cy1, cx2, cy2)
    return clipped, clipped != box


@dataclass
class _Written:
    annotation: Annotation
    out_name: str
    box: tuple[int, int, int, int]


def _copy_images(
    source: ImageSource,
    annotations: list[Annotation],
    tmp: Path,
    written: list[_Written],
    bar: tqdm,
    stats: dict[str, Any],
) -> None:
    wanted = {a.source_name: a for a in annotations}
    found: set[str] = set()
    unmatched: list[str] = []
    members = _iter_source(source)
    for member, read in members:
        name = PurePosixPath(member).name
        annotation = wanted.get(name)
        if annotation is None:
            if name.lower().endswith(".jpg"):
                unmatched.append(member)
            continue
        if name in found:
            raise DataPreparationError(f"{source.path} holds two images named {name} (e.g. {member})")
        found.add(name)
        data = read()
        try:
            info = _image_info(data)
            if info.orientation != 1:
                data = clear_orientation(data)
        except ValueError as error:
            stats["unusable"].append(f"{source.path}:{member} {error}")
            continue
        stats["oriented"] += info.orientation != 1
        box, clipped = _clip_box(annotation.box, info.width, info.height)
        if clipped:
            stats["clipped"].append(
                f"{annotation.split}/{name} {annotation.box} -> {box} in {info.width}x{info.height}")
        stats["grayscale"] += info.mode == "L"
        (tmp / annotation.split / name).write_bytes(data)
        written.append(_Written(annotation, name, box))
        bar.update(1)
    missing = [a.source_name for a in annotations if a.source_name not in found]
    if missing:
        where = source.path if source.is_archive or source.split else _image_folder(source.path)
        raise DataPreparationError(
            f"{len(missing)} of {len(annotations)} annotated image(s) were not found in {where}, e.g. "
            f"{_examples(missing)}; it holds {len(unmatched)} JPEG(s) with names the annotations do not "
            f"use{', e.g. ' + _examples(unmatched) if unmatched else ''}. The images and the annotation "
            "files probably come from different layouts or mirrors; refusing to prepare a partial dataset."
        )


def _write_labels(path: Path, rows: list[_Written], class_names: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(LABEL_COLUMNS)
        for row in sorted(rows, key=lambda r: r.out_name):
            a = row.annotation
            writer.writerow([row.out_name, a.class_id, *row.box, class_names[a.class_id - 1]])


# ----------------------------------------------------------------------------------------------
# Atomic output


def _sibling(path: Path, purpose: str) -> Path:
    """An unused hidden name next to path, for work in progress (same file system, so os.replace works)."""
    return path.parent / f".{path.name}.{purpose}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _move_into_place(tmp: Path, out: Path) -> None:
    """Replace ``out`` by the complete ``tmp``; an existing ``out`` is removed only after the swap."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = _sibling(out, "old")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old)


PREPARED_PARTS = ("train", "test", "train_labels.csv", "test_labels.csv")
# What --force may replace besides the prepared parts: the default image cache folder (datasets.image_cache).
_REPLACEABLE = {*PREPARED_PARTS, ".cache"}


def _check_target(out: Path, force: bool, raw: Path | None = None) -> None:
    """Refuse an output folder that holds the raw files, is a file, is not empty (without force), or holds
    anything but prepared data (with force: only prepared data is ever replaced)."""
    if raw is not None and (out.resolve() == raw.resolve() or out.resolve() in raw.resolve().parents):
        raise DataPreparationError(f"output folder {out} holds the raw data folder {raw}; choose another output folder")
    if not out.exists():
        return
    if not out.is_dir():
        raise DataPreparationError(f"{out} exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not force:
        raise DataPreparationError(
            f"{out} already exists; refusing to overwrite a prepared dataset (use --force to replace it)"
        )
    foreign = sorted(entry.name for entry in out.iterdir() if entry.name not in _REPLACEABLE)
    if foreign:
        raise DataPreparationError(
            f"{out} is not prepared data (it holds {_examples(foreign, 3)}); --force replaces only prepared data "
            f"({', '.join(PREPARED_PARTS)}): choose another output folder or empty it yourself"
        )


def check_archive_target(archive_path: str | os.PathLike, force: bool = False) -> None:
    """Refuse an archive path that is a folder, or exists without force (checked before preparing)."""
    archive = Path(archive_path)
    if archive.is_dir():
        raise DataPreparationError(f"{archive} is a folder; the archive needs a file name")
    if archive.exists() and not force:
        raise DataPreparationError(f"{archive} already exists; refusing to overwrite it (use --force)")


def prepare_stanford_dataset(
    raw_path: str | os.PathLike, out_path: str | os.PathLike, force: bool = False, progress: bool = True
) -> PrepareSummary:
    """Turn raw Stanford Cars files (any layout, archives or folders) into prepared data at out_path."""
    out = Path(out_path)
    _check_target(out, force, Path(raw_path))
    dataset = read_raw_dataset(raw_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out, "partial")
    tmp.mkdir()
    try:
        summary = _prepare_into(dataset, tmp, out, progress)
        summary.notes = dataset.notes
        _check_target(out, force)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if summary.clipped_boxes:
        warnings.warn(
            f"{summary.clipped_boxes} bounding box(es) reached outside their image and were clipped, e.g. "
            + _examples(summary.clipped_examples, 3),
            stacklevel=2,
        )
    return summary


def _prepare_into(dataset: RawDataset, tmp: Path, out: Path, progress: bool) -> PrepareSummary:
    for split in SPLITS:
        (tmp / split).mkdir()
    written: list[_Written] = []
    stats: dict[str, Any] = {"clipped": [], "grayscale": 0, "oriented": 0, "unusable": []}
    with tqdm(total=len(dataset.annotations), unit="img", desc="preparing", disable=not progress) as bar:
        for source, annotations in dataset.sources:
            _copy_images(source, annotations, tmp, written, bar, stats)
    if stats["unusable"]:
        raise DataPreparationError(
            f"{len(stats['unusable'])} raw image(s) cannot be used (the others were read and are fine):\n  "
            + "\n  ".join(stats["unusable"][:20]) + ("\n  ..." if len(stats["unusable"]) > 20 else "")
            + "\nDownload them again; refusing to prepare a partial dataset."
        )
    counts: dict[str, int] = {}
    for split in SPLITS:
        rows = [w for w in written if w.annotation.split == split]
        _write_labels(tmp / f"{split}_labels.csv", rows, dataset.class_names)
        counts[split] = len(rows)
    return PrepareSummary(
        layout=dataset.layout,
        out_path=out,
        num_train=counts["train"],
        num_test=counts["test"],
        num_classes=len(dataset.class_names),
        clipped_boxes=len(stats["clipped"]),
        grayscale_images=stats["grayscale"],
        oriented_images=stats["oriented"],
        clipped_examples=stats["clipped"][:10],
    )


def default_archive_path(data_path: str | os.PathLike) -> Path:
    """``input/stanford`` -> ``input/stanford.tar.gz`` (the thesis's Colab archive, next to the data)."""
    data = Path(data_path)
    return data.parent / f"{data.name}.tar.gz"


def make_data_archive(data_path: str | os.PathLike, archive_path: str | os.PathLike, force: bool = False) -> Path:
    """Pack train/, test/ and both label CSVs of prepared data into a .tar.gz (for copying to Colab)."""
    data, archive = Path(data_path), Path(archive_path)
    parts = PREPARED_PARTS
    missing = [p for p in parts if not (data / p).exists()]
    if missing:
        raise DataPreparationError(f"{data} is not prepared data: it lacks {', '.join(missing)}")
    check_archive_target(archive, force)
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = _sibling(archive, "partial")
    try:
        with tarfile.open(tmp_name, "w:gz", compresslevel=1) as tar:
            for part in parts:
                tar.add(data / part, arcname=part)
        os.replace(tmp_name, archive)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return archive
