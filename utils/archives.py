"""Archive members that are safe to read or extract: regular files and folders inside the archive's folder."""

from __future__ import annotations

import stat
import tarfile
import zipfile
from pathlib import PurePosixPath


def _unsafe_name_reason(name: str) -> str | None:
    """Why a member name could land outside the archive's folder (absolute, drive letter, '..'), or None."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        return "absolute path"
    if ".." in path.parts:
        return "path outside the archive folder ('..')"
    return None


def unsafe_member_reason(member: tarfile.TarInfo) -> str | None:
    """Why extracting or reading this tar member would be unsafe (absolute, '..', link, device), or None."""
    reason = _unsafe_name_reason(member.name)
    if reason is not None:
        return reason
    if member.issym() or member.islnk():
        return "link"
    if not (member.isfile() or member.isdir()):
        return "device, FIFO or other special file"
    return None


def unsafe_zip_member_reason(member: zipfile.ZipInfo) -> str | None:
    """Why extracting or reading this zip member would be unsafe (absolute, '..', a Unix link), or None."""
    reason = _unsafe_name_reason(member.filename)
    if reason is not None:
        return reason
    if stat.S_ISLNK(member.external_attr >> 16):
        return "link"
    return None
