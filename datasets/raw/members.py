"""The image files of a raw source, read one at a time: members of a .tgz (one streaming pass) or of a .zip, files
of a folder or of class folders. Unsafe archive members (outside the archive's folder, links) are refused."""

from __future__ import annotations

import os
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from datasets.raw.files import DataPreparationError, ImageSource, image_folder
from utils.archives import unsafe_member_reason, unsafe_zip_member_reason

ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def corrupt(path: Path, error: BaseException) -> DataPreparationError:
    return DataPreparationError(f"{path} is truncated or corrupt ({type(error).__name__}: {error}); download it again")


def iter_archive(path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """Yield (member name, reader) for each regular file of a .tgz in one streaming pass; refuse unsafe members."""

    def reader(archive: tarfile.TarFile, member: tarfile.TarInfo) -> Callable[[], bytes]:
        def read() -> bytes:
            try:
                return archive.extractfile(member).read()  # type: ignore[union-attr]
            except ARCHIVE_ERRORS as error:
                raise corrupt(path, error) from error

        return read

    try:
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                reason = unsafe_member_reason(member)
                if reason is not None:
                    raise DataPreparationError(f"{path}: refusing archive member '{member.name}': {reason}")
                if member.isfile():
                    yield member.name, reader(archive, member)
    except ARCHIVE_ERRORS as error:
        raise corrupt(path, error) from error


def safe_zip_members(path: Path, archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
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
            except ARCHIVE_ERRORS + (zipfile.BadZipFile,) as error:
                raise corrupt(path, error) from error

        return read

    try:
        with zipfile.ZipFile(path) as archive:
            for member in safe_zip_members(path, archive):
                parts = PurePosixPath(member.filename).parts
                if not member.is_dir() and len(parts) >= 3 and parts[-3] == split:
                    yield member.filename, reader(archive, member)
    except ARCHIVE_ERRORS + (zipfile.BadZipFile,) as error:
        raise corrupt(path, error) from error


def _iter_class_folders(split_folder: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """Yield ('<class folder>/<file>', reader) for each file in the class folders of a split folder."""
    for class_folder in sorted(p for p in split_folder.iterdir() if p.is_dir()):
        for name, read in _iter_folder(class_folder):
            yield f"{class_folder.name}/{name}", read


def iter_source(source: ImageSource) -> Iterator[tuple[str, Callable[[], bytes]]]:
    if source.split is not None:
        return _iter_zip(source.path, source.split) if source.is_archive else _iter_class_folders(source.path)
    return iter_archive(source.path) if source.is_archive else _iter_folder(source.path)


def _iter_folder(folder: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    images = image_folder(folder)
    for entry in sorted(os.scandir(images), key=lambda e: e.name):
        if entry.is_file():
            yield entry.name, lambda p=entry.path: Path(p).read_bytes()
