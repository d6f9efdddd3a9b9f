"""Raw Stanford Cars files (any of three layouts, archives or folders; read by datasets.raw) -> prepared data.

Prepared data: ``train/*.jpg``, ``test/*.jpg``, ``train_labels.csv``, ``test_labels.csv`` with columns
``image_fname,class,bbox_x1,bbox_y1,bbox_x2,bbox_y2,class_name`` (class ids 1..N as in the raw files,
boxes in inclusive pixel coordinates, clipped to the image).

Image names: the updated layout numbers all images ``000001.jpg`` .. ``016185.jpg`` and they keep these
names; the original layout restarts at ``00001.jpg`` in each split, and since each split has its own
folder and its own CSV the names are kept as they are (unique within their split). The JPEG bytes are
copied unchanged (no re-encoding). Work goes to a hidden folder beside the target, moved into place when complete.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tarfile
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from datasets.photos import (clear_orientation, decode_whole, open_image, orientation, size_limit_as_error,
                             unreadable_reason)
from datasets.raw.files import (BOX_FIELDS, SPLITS, Annotation, DataPreparationError, ImageSource, RawDataset,
                                examples, image_folder)
from datasets.raw.layouts import read_raw_dataset
from datasets.prepared import LABEL_COLUMNS
from datasets.raw.members import iter_source


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
class WrittenImage:
    """An image copied into the prepared data: its annotation, its file name there, its box clipped to it."""

    annotation: Annotation
    out_name: str
    box: tuple[int, int, int, int]


def _copy_images(
    source: ImageSource,
    annotations: list[Annotation],
    tmp: Path,
    written: list[WrittenImage],
    bar: tqdm,
    stats: dict[str, Any],
) -> None:
    wanted = {a.source_name: a for a in annotations}
    found: set[str] = set()
    unmatched: list[str] = []
    members = iter_source(source)
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
        written.append(WrittenImage(annotation, name, box))
        bar.update(1)
    missing = [a.source_name for a in annotations if a.source_name not in found]
    if missing:
        where = source.path if source.is_archive or source.split else image_folder(source.path)
        raise DataPreparationError(
            f"{len(missing)} of {len(annotations)} annotated image(s) were not found in {where}, e.g. "
            f"{examples(missing)}; it holds {len(unmatched)} JPEG(s) with names the annotations do not "
            f"use{', e.g. ' + examples(unmatched) if unmatched else ''}. The images and the annotation "
            "files probably come from different layouts or mirrors; refusing to prepare a partial dataset."
        )


def write_labels(path: Path, rows: list[WrittenImage], class_names: list[str]) -> None:
    """A split's labels CSV, sorted by file name."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(LABEL_COLUMNS)
        for row in sorted(rows, key=lambda r: r.out_name):
            a = row.annotation
            writer.writerow([row.out_name, a.class_id, *row.box, class_names[a.class_id - 1]])


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
            f"{out} is not prepared data (it holds {examples(foreign, 3)}); --force replaces only prepared data "
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
            + examples(summary.clipped_examples, 3),
            stacklevel=2,
        )
    return summary


def _prepare_into(dataset: RawDataset, tmp: Path, out: Path, progress: bool) -> PrepareSummary:
    for split in SPLITS:
        (tmp / split).mkdir()
    written: list[WrittenImage] = []
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
        write_labels(tmp / f"{split}_labels.csv", rows, dataset.class_names)
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
