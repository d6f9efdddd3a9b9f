"""Checkpoints written whole or not at all: write, check, rename.

Lightning's own writer serialises a checkpoint into memory and copies it to its place through fsspec, which on a
full disk leaves a partial best.ckpt that does not load. This writer streams torch.save into <name>.partial beside
the checkpoint, syncs it to disk, checks its size, and renames it over the previous file; on any failure the partial
file is removed and FileWriteError names the checkpoint (utils/output_files.py), which stops the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from utils.output_files import write_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose save_checkpoint writes, checks and renames (local files)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # a remote location: Lightning's own writer
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda handle: torch.save(checkpoint, handle))
