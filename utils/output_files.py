"""Checks on the files and folders a command is given or asked to write, made before any work, so nothing a user
made is lost and nothing outside a given folder is read or written through it; and files written whole or not at
all (write_atomically)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO


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


FULL_BELOW_BYTES = 1 << 20  # a disk with less free space is full for a write that failed without saying why


class FileWriteError(OSError):
    """A file this project could not write (a full disk, a folder made read-only); the message names it."""


def free_bytes(folder: Path) -> int:
    """The bytes a user can still write on folder's disk (-1 when unknown)."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return -1
    return stats.f_bavail * stats.f_frsize


def write_failure(path: Path, error: BaseException) -> FileWriteError:
    """A FileWriteError naming path, the reason, and the space left on its disk."""
    reason = getattr(error, "strerror", None) or (str(error).strip().splitlines() or [type(error).__name__])[-1]
    free = free_bytes(path.parent)
    left = f"; {free / 2**20:,.1f} MiB free on its disk now" if free >= 0 else ""
    return FileWriteError(f"{path}: could not be written ({reason}{left}); the previous {path.name}, if any, is "
                          "unchanged")


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file through write(handle) into <path>.partial in its folder, synced to disk and checked complete,
    then renamed over path: a crash or a full disk never leaves half a file under path (nor the partial one).
    Any failure raises FileWriteError naming path."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        partial.unlink(missing_ok=True)  # a link at the partial file's name is replaced, not followed
        with partial.open("xb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            written = handle.tell()
        if partial.stat().st_size != written:
            raise OSError(f"{written:,} bytes written, {partial.stat().st_size:,} on disk")
        os.replace(partial, path)
    except Exception as error:  # OSError, and torch's RuntimeError ("unexpected pos ...") on a full disk
        if not isinstance(error, OSError) and free_bytes(path.parent) < FULL_BELOW_BYTES:
            error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        partial.unlink(missing_ok=True)
        raise write_failure(path, error) from None
