"""Checks on the files and folders a command is given or asked to write, made before any work, so nothing a user
made is lost and nothing outside a given folder is read or written through it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


def place_problem(path: Path) -> str | None:
    """Why nothing can be created at or under ``path`` (its nearest existing ancestor is a file or not
    writable), or None."""
    existing = _nearest_existing(path)
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"no permission to write in {existing}"
    return None


def links_leaving(folder: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(link, target) of each symbolic link under ``folder`` (links are listed, never entered) that leads outside it."""
    root = Path(folder).resolve()
    found = []
    for current, folders, files in os.walk(folder):
        for entry in (Path(current) / name for name in folders + files):
            if not entry.is_symlink():
                continue
            try:
                target = entry.resolve()
            except (OSError, RuntimeError):  # a loop of links: opening it fails, it leads nowhere
                continue
            if not target.is_relative_to(root):
                found.append((entry, target))
    return found


def links_problem(folder: str | os.PathLike, what: str) -> str | None:
    """The first symbolic link under ``folder`` that leads outside it, as a problem naming it, or None."""
    links = links_leaving(folder)
    if not links:
        return None
    link, target = links[0]
    more = f", and {len(links) - 1} more such link(s)" if len(links) > 1 else ""
    return (f"{link}: a symbolic link to {target}, outside the {what} {folder}; nothing is read or written through "
            f"it (replace the link by a copy of the file if you trust it){more}")


def new_file_problems(path: str | os.PathLike, force: bool = False, protected: Iterable[Path] = ()) -> list[str]:
    """Problems with writing a file at ``path``: one of the ``protected`` files (never overwritten, even with
    force), a folder, an existing file without ``force``, or a place where no file can be created."""
    path = Path(path)
    if any(path.resolve() == other.resolve() for other in protected):
        return [f"{path}: is the run's own {path.name}; choose another file name"]
    if path.is_dir():
        return [f"{path}: is a folder; give a file name"]
    if path.exists() and not force:
        return [f"{path}: already exists; pass --force to overwrite it"]
    problem = place_problem(path.parent)
    return [f"{path}: {problem}"] if problem else []
