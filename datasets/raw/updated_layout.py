"""The updated layout (the GhostNet thesis's): car_ims.tgz with every image, cars_annos.mat, car_devkit.tgz."""

from __future__ import annotations

from pathlib import Path

from datasets.raw.files import (BOX_FIELDS, DataPreparationError, RawDataset, find_devkit, find_entry, missing_error,
                                raw_file)
from datasets.raw.matlab import annotation_fields, annotations_from_columns, load_mat, read_class_names, read_devkit


def read_updated(raw: Path, notes: list[str]) -> RawDataset:
    """The updated layout's annotations (cars_annos.mat) and class names (the devkit's cars_meta.mat)."""
    images = find_entry(raw, "car_ims.tgz", notes)
    annos_path = raw_file(raw, "cars_annos.mat", notes)
    devkit = find_devkit(raw, notes)
    parts = (("car_ims.tgz (or folder car_ims/)", images), ("cars_annos.mat", annos_path))
    missing = [name for name, found in parts if found is None]
    if missing:
        raise missing_error(raw, "updated", missing)
    mat = load_mat(annos_path, str(annos_path))
    fields = ("relative_im_path", *BOX_FIELDS, "class", "test")
    columns = annotation_fields(mat, fields, str(annos_path))
    if devkit is not None:
        meta = read_devkit(devkit, ("cars_meta.mat",))
        if "cars_meta.mat" not in meta:
            raise DataPreparationError(f"{devkit.path} has no devkit/cars_meta.mat (the class names)")
        class_names = read_class_names(meta["cars_meta.mat"], f"{devkit.path}:cars_meta.mat")
    elif "class_names" in mat:
        class_names = read_class_names(mat, str(annos_path))
    else:
        raise missing_error(raw, "updated", ["car_devkit.tgz (or folder devkit/) with cars_meta.mat"])
    splits = ["test" if t else "train" for t in columns["test"]]
    annotations = annotations_from_columns(columns, "relative_im_path", splits)
    return RawDataset("updated", class_names, annotations, [(images, annotations)])
