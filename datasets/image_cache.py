"""Cache of the deterministic prefix of a dataset's pipeline (decode, box crop, background erasing, resize, mode).

One uint8 ``.npy`` array [N, H, W, C] per split and settings, memory-mapped when read, named by a hash of
everything that determines its pixels (see ``cache_settings``). A cache is used only when its metadata JSON,
written last, matches: the array is written to a temporary file, synced and renamed first, so an interrupted
build leaves nothing that would be used, and the next build starts over. Settings that change (image size,
crop, erase, grayscale, labels, image files) give another name, so a cache is never used for other settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset

CACHE_FORMAT = 2  # bump when the prefix function (stanford_data.load_image) changes its pixels
CACHE_DIR_NAME = ".cache"


class PrefixSource(Protocol):
    """What a dataset offers the cache: its settings and the deterministic prefix of an item."""

    def __len__(self) -> int: ...

    def prefix_settings(self) -> dict[str, Any]: ...

    def load(self, index: int) -> Image.Image: ...


def default_cache_dir(data_path: str | os.PathLike) -> Path:
    """``<prepared data>/.cache``."""
    return Path(data_path) / CACHE_DIR_NAME


def file_fingerprint(paths: Sequence[Path]) -> str:
    """sha256 of the name, size and modification time of each file (cheap: no file is read)."""
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_settings(dataset: PrefixSource) -> dict[str, Any]:
    """Everything that determines the cached pixels, with the format version."""
    return {"cache_format": CACHE_FORMAT, **dataset.prefix_settings()}


def cache_key(settings: dict[str, Any]) -> str:
    """Short hash of the settings."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def cache_files(dataset: PrefixSource, cache_dir: str | os.PathLike) -> tuple[Path, Path, dict[str, Any]]:
    """(array file, metadata file, settings) of a dataset's cache in cache_dir."""
    settings = cache_settings(dataset)
    height, width = settings["image_size"]
    stem = f"{settings['split']}_{height}x{width}_{settings['mode']}_{cache_key(settings)}"
    return Path(cache_dir) / f"{stem}.npy", Path(cache_dir) / f"{stem}.json", settings


def _cache_shape(dataset: PrefixSource, settings: dict[str, Any]) -> tuple[int, int, int, int]:
    """[N, H, W, C] of a dataset's cache array."""
    height, width = settings["image_size"]
    return len(dataset), height, width, 1 if settings["mode"] == "L" else 3


def find_cache(dataset: PrefixSource, cache_dir: str | os.PathLike) -> Path | None:
    """The array file of a complete cache with the dataset's settings, or None."""
    array_path, meta_path, settings = cache_files(dataset, cache_dir)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        array = np.load(array_path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if meta.get("settings") != settings or array.shape != _cache_shape(dataset, settings) or array.dtype != np.uint8:
        return None
    return array_path


class _Prefixes(Dataset):
    """Items (index, uint8 [H, W, C] array) of a dataset's prefix, for building with loader workers."""

    def __init__(self, dataset: PrefixSource) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray]:
        return index, image_array(self.dataset.load(index))


def image_array(image: Image.Image) -> np.ndarray:
    """A PIL image as uint8 [H, W, C]."""
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def array_image(array: np.ndarray) -> Image.Image:
    """uint8 [H, W, C] (C = 1 or 3) as a PIL image (mode L or RGB)."""
    return Image.fromarray(np.ascontiguousarray(array[:, :, 0] if array.shape[2] == 1 else array))


def _collate(items: list[tuple[int, np.ndarray]]) -> list[tuple[int, np.ndarray]]:
    return items


def _sync_dir(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # not possible on every platform
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_abandoned(array_path: Path) -> None:
    """Delete temporary files of builds of this cache whose process no longer runs."""
    for partial in array_path.parent.glob(f"{array_path.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            partial.unlink(missing_ok=True)
        except OSError:  # running under another user, or not checkable: leave it
            continue


def build_cache(dataset: PrefixSource, cache_dir: str | os.PathLike, num_workers: int = 0,
                progress: bool = True) -> Path:
    """Write the dataset's prefix for every item to its cache file (atomically) and return the file."""
    from tqdm.auto import tqdm

    array_path, meta_path, settings = cache_files(dataset, cache_dir)
    array_path.parent.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # whatever was there is not trusted any more
    _remove_abandoned(array_path)
    shape = _cache_shape(dataset, settings)
    partial = array_path.with_name(f"{array_path.name}.partial-{os.getpid()}")
    try:
        array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
        loader = DataLoader(_Prefixes(dataset), batch_size=16, num_workers=num_workers, collate_fn=_collate)
        with tqdm(total=len(dataset), desc=f"caching {settings['split']} images", unit="img",
                  disable=not progress) as bar:
            for items in loader:
                for index, pixels in items:
                    array[index] = pixels
                bar.update(len(items))
        array.flush()
        del array
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, array_path)
    finally:
        partial.unlink(missing_ok=True)
    meta_partial = meta_path.with_name(meta_path.name + ".partial")
    meta_partial.write_text(json.dumps({"settings": settings, "shape": list(shape)}, indent=1), encoding="utf-8")
    with open(meta_partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(meta_partial, meta_path)
    _sync_dir(array_path.parent)
    return array_path


def ensure_cache(dataset: PrefixSource, cache_dir: str | os.PathLike, num_workers: int = 0,
                 progress: bool = True) -> Path:
    """The dataset's complete cache file, built first when missing or stale."""
    return find_cache(dataset, cache_dir) or build_cache(dataset, cache_dir, num_workers, progress)


class CachedImages:
    """Read access to a cache file, opened (memory-mapped) on first use in each process; pickles as its path."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._array: np.ndarray | None = None

    def array(self) -> np.ndarray:
        """The memory-mapped uint8 [N, H, W, C] array."""
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        return len(self.array())

    def __getitem__(self, index: int) -> np.ndarray:
        return self.array()[index]

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_array": None}
