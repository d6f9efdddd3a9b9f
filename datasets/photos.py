"""Photos as users have them: EXIF orientation, Pillow's size limit, and plain reasons for unreadable files.

A phone stores a photo taken sideways as sideways pixels plus an EXIF orientation tag (1..8) that tells
viewers how to turn it; ``upright`` applies the tag, as every viewer does. Stanford's boxes refer to the
stored pixels, so the prepare step sets the tag of its JPEGs to 1 (``clear_orientation``) instead.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

ORIENTATION_TAG = 0x0112
SIDES_SWAPPED = (5, 6, 7, 8)  # orientations whose upright image is the stored one transposed
PROGRAM_FORMATS = {"EPS": "Ghostscript"}  # formats Pillow decodes by running a program on the file's PostScript code


class UnsafeImageError(ValueError):
    """An image file that Pillow would decode by running another program on the code it holds."""


@contextmanager
def open_image(source: str | os.PathLike | BinaryIO) -> Iterator[Image.Image]:
    """Image.open, refusing (before anything is decoded) a format Pillow decodes by running another program."""
    with Image.open(source) as image:
        program = PROGRAM_FORMATS.get(image.format or "")
        if program:
            raise UnsafeImageError(f"is an {image.format} file, which Pillow decodes by running {program} on the code "
                                   "it holds; convert it to JPEG or PNG with a program you trust")
        yield image


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8) of an opened image; 1 when it has no tag or an invalid one."""
    value = image.getexif().get(ORIENTATION_TAG, 1)
    return value if value in range(1, 9) else 1


def upright(image: Image.Image) -> Image.Image:
    """The image as viewers show it, turned by its EXIF orientation (the same object when there is nothing to turn)."""
    return ImageOps.exif_transpose(image) if orientation(image) != 1 else image


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the opened image as viewers show it."""
    width, height = image.size
    return (height, width) if orientation(image) in SIDES_SWAPPED else (width, height)


def decode_whole(image: Image.Image) -> None:
    """Decode the opened image (JPEGs at 1/8 scale, which is faster) so that a truncated file shows."""
    width, height = image.size
    image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
    image.load()


@contextmanager
def size_limit_as_error() -> Iterator[None]:
    """Make Pillow's decompression-bomb warning (over Image.MAX_IMAGE_PIXELS) an error, as it is at twice that."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def unreadable_reason(error: BaseException) -> str:
    """Why a file could not be read as an image, in words (the caller names the file)."""
    if isinstance(error, UnsafeImageError):
        return str(error)
    if isinstance(error, IsADirectoryError):
        return "is a folder; pass the image files in it"
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, UnidentifiedImageError):
        return "not an image file (or one in a format Pillow cannot read)"
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return (f"over Pillow's decompression-bomb limit ({str(error).rstrip('.')}); "
                "scale the image down, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file")
    if isinstance(error, OSError) and "truncated" in str(error).lower():
        return f"truncated or damaged image file ({error})"
    return f"does not decode ({type(error).__name__}: {error})"


def clear_orientation(jpeg: bytes) -> bytes:
    """The JPEG with its EXIF orientation set to 1, every other byte unchanged; ValueError when no tag is found."""
    position = 2
    while position + 4 <= len(jpeg) and jpeg[position] == 0xFF and jpeg[position + 1] != 0xDA:
        length = int.from_bytes(jpeg[position + 2:position + 4], "big")
        if jpeg[position + 1] == 0xE1 and jpeg[position + 4:position + 10] == b"Exif\0\0":
            value = _orientation_value_offset(jpeg, position + 10, position + 2 + length)
            if value is not None:
                byte_order = "little" if jpeg[position + 10:position + 12] == b"II" else "big"
                return jpeg[:value] + (1).to_bytes(2, byte_order) + jpeg[value + 2:]
        position += 2 + length
    raise ValueError("has an EXIF orientation tag outside the JPEG's Exif segment, which cannot be set to 1 "
                     "without re-encoding the image")


def _orientation_value_offset(jpeg: bytes, tiff: int, end: int) -> int | None:
    """Offset of the orientation value in the first image directory of the TIFF block at ``tiff``."""
    order = "little" if jpeg[tiff:tiff + 2] == b"II" else "big"
    directory = tiff + int.from_bytes(jpeg[tiff + 4:tiff + 8], order)
    entries = int.from_bytes(jpeg[directory:directory + 2], order)
    for entry in range(directory + 2, min(directory + 2 + 12 * entries, end - 11), 12):
        if int.from_bytes(jpeg[entry:entry + 2], order) == ORIENTATION_TAG:
            return entry + 8
    return None
