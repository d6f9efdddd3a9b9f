"""Checks on the files a command is asked to write, made before any work, so nothing a user made is lost."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any
from pathlib import Path


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


FOLDER_KEYS = ("output_path", "logging_dir", "cache_path")


def folder_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Config keys naming a folder that is a file or cannot be created."""
    problems = []
    for key in FOLDER_KEYS:
        value = cfg.get(key)
        if value is None:
            continue
        folder = Path(value)
        existing = _nearest_existing(folder)
        if not existing.is_dir():
            problems.append(f"{key}: {value} cannot be a folder: {existing} is a file")
        elif existing != folder and not os.access(existing, os.W_OK | os.X_OK):
            problems.append(f"{key}: {value} cannot be created: no permission to write in {existing}")
        elif existing == folder and not os.access(folder, os.W_OK | os.X_OK):
            problems.append(f"{key}: {value}: no permission to write in this folder")
    return problems


def new_file_problems(path: str | os.PathLike, force: bool = False, protected: Iterable[Path] = ()) -> list[str]:
    """Problems with writing a file at ``path``: one of the ``protected`` files (never overwritten, even with
    force), a folder, an existing file without ``force``, or a place where no file can be created."""
    path = Path(path)
    if any(_same_file(path, other) for other in protected):
        return [f"{path}: is the run's own {path.name}; choose another file name"]
    if path.is_dir():
        return [f"{path}: is a folder; give a file name"]
    if path.exists() and not force:
        return [f"{path}: already exists; pass --force to overwrite it"]
    folder = _nearest_existing(path.parent)
    if not folder.is_dir():
        return [f"{path}: {folder} is a file, not a folder"]
    if not os.access(folder, os.W_OK | os.X_OK):
        return [f"{path}: cannot create files in {folder} (permission denied)"]
    return []
