"""Stanford's MATLAB annotation files (cars_annos.mat and the devkit's .mat files) read with scipy.io."""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import scipy.io

from datasets.raw.files import BOX_FIELDS, Annotation, DataPreparationError, ImageSource
from datasets.raw.members import iter_archive


def load_mat(data: bytes | Path, where: str) -> dict[str, Any]:
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        return scipy.io.loadmat(source)
    except Exception as error:  # scipy raises several types for malformed files
        raise DataPreparationError(f"{where} is not a readable MATLAB .mat file: {error}") from error


def mat_variable(mat: dict[str, Any], name: str, where: str) -> np.ndarray:
    if name not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataPreparationError(f"{where} has no variable '{name}' (found: {', '.join(found) or 'none'})")
    return mat[name]


def annotation_fields(mat: dict[str, Any], fields: tuple[str, ...], where: str) -> dict[str, list[Any]]:
    """Fields of a loaded .mat file's 'annotations' struct array, as lists of Python values (ints from uint8/16)."""
    annos = mat_variable(mat, "annotations", where)
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


def read_class_names(mat: dict[str, Any], where: str) -> list[str]:
    """The 'class_names' cell array of a loaded .mat file, as strings."""
    names = []
    for cell in np.asarray(mat_variable(mat, "class_names", where)).ravel():
        cell = np.asarray(cell)
        names.append(str(cell.ravel()[0]) if cell.size else "")
    if not names:
        raise DataPreparationError(f"{where}: 'class_names' is empty")
    return names


def read_devkit(devkit: ImageSource, wanted: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The wanted devkit .mat files (by base name) that are present, loaded; one pass over an archive."""
    loaded: dict[str, dict[str, Any]] = {}
    if devkit.is_archive:
        for member, read in iter_archive(devkit.path):
            base = PurePosixPath(member).name
            if base in wanted:
                loaded[base] = load_mat(read(), f"{devkit.path}:{member}")
    else:
        for name in wanted:
            path = devkit.path / name
            if path.is_file():
                loaded[name] = load_mat(path, str(path))
    return loaded


def annotations_from_columns(
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
