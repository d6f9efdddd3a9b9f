"""Archive members that are safe to read or extract: regular files and folders inside the archive's folder."""

from __future__ import annotations

import tarfile
from pathlib import PurePosixPath


def unsafe_member_reason(member: tarfile.TarInfo) -> str | None:
    """Why extracting or reading this tar member would be unsafe (absolute, '..', link, device), or None."""
    path = PurePosixPath(member.name.replace("\\", "/"))
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        return "absolute path"
    if ".." in path.parts:
        return "path outside the archive folder ('..')"
    if member.issym() or member.islnk():
        return "link"
    if not (member.isfile() or member.isdir()):
        return "device, FIFO or other special file"
    return None
