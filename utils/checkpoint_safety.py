"""Checkpoints read without running code from them.

A checkpoint is a pickle, and a pickle can name any Python callable to call while it loads. Every checkpoint this
project reads is loaded with ``torch.load(weights_only=True)``, which builds tensors and plain values only; that is
all train.py's checkpoints hold (a LambdaLR keeps its lr_lambda as the expression's text). A file holding anything
else is refused, naming what it holds, unless the user passes --trust-checkpoint. A checkpoint that training resumes
from is also checked for file paths in its ModelCheckpoint state that Lightning would delete outside the run folder.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

TRUST_OPTION = "--trust-checkpoint"
TRUST_HELP = ("load the checkpoint even if it holds more than tensors and plain values, which can run code from "
              "the file: only for a checkpoint of trusted origin (e.g. one written by an older version)")
_PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")
_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)")
# What Lightning writes into train.py's checkpoints; a precision plugin's state goes under its class name
TRAINING_KEYS = frozenset({"epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops", "callbacks",
                           "optimizer_states", "lr_schedulers", "hparams_name", "hyper_parameters"})
_PRECISION_KEY = re.compile(r"\w*Precision")
# The callbacks whose state train.py's checkpoints keep (Lightning names each state by its class and settings)
TRAINING_CALLBACKS = ("ModelCheckpoint", "EarlyStopping", "ExponentialMovingAverage")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or is not safe to read; the message names the file."""


def _unsafe_globals(path: str | os.PathLike, error: pickle.UnpicklingError) -> list[str]:
    """The callables and classes (module.name) the file's pickle names beyond tensors and plain values."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint, or one it cannot disassemble: torch's message may still name one
        names = []
    return names or _GLOBAL_IN_MESSAGE.findall(str(error))


def load_checkpoint(path: str | os.PathLike, trust: bool = False) -> Any:
    """The content of a checkpoint, on the CPU: tensors and plain values only, unless ``trust``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as error:
        names = _unsafe_globals(path, error)
        if trust or not names:
            last_line = (str(error).strip().splitlines() or [type(error).__name__])[-1]
            raise CheckpointError(f"{path}: not a readable checkpoint ({last_line})") from None
        kind = "an object of type" if len(names) == 1 else "objects of types"
        raise CheckpointError(
            f"{path}: holds {kind} {', '.join(names)}, not only tensors and plain values: loading it would run "
            f"code from the file. Checkpoints of train.py never hold such objects. If you trust where the file "
            f"comes from (e.g. a checkpoint of an older version), pass {TRUST_OPTION} to load it anyway") from None
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None


def _deletion_problem(value: Any, run_dir: Path) -> str | None:
    """Why Lightning could delete something outside ``run_dir`` through this ModelCheckpoint path, or None.

    Lightning deletes a previous checkpoint that lies, as written, under the checkpoint folder, and any at a remote
    location; '..' or a link can make a path written under the folder point outside it.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return f"{value!r} is not a file path"
    if "://" in value:
        return f"{value!r} is a remote location"
    folder = Path(os.path.realpath(run_dir))
    written_inside = folder in Path(value).absolute().parents
    if written_inside and not Path(os.path.realpath(value)).is_relative_to(folder):
        return f"{value!r} leads outside the run folder {run_dir}"
    return None


def resume_problems(checkpoint: Mapping[str, Any], run_dir: str | os.PathLike) -> list[str]:
    """File paths in the checkpoint's ModelCheckpoint states that resuming in ``run_dir`` could delete outside it."""
    problems = []
    for name, state in (checkpoint.get("callbacks") or {}).items():
        if not (isinstance(name, str) and name.startswith("ModelCheckpoint") and isinstance(state, Mapping)):
            continue
        values = [state.get(key) for key in _PATH_KEYS] + list(state.get("best_k_models") or {})
        problems += [problem for value in values if (problem := _deletion_problem(value, Path(run_dir)))]
    return problems


def check_resume_checkpoint(path: str | os.PathLike, run_dir: str | os.PathLike, trust: bool = False) -> None:
    """Raise CheckpointError unless training can resume from ``path`` in ``run_dir`` without running or deleting
    anything from the file."""
    checkpoint = load_checkpoint(path, trust)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    foreign = sorted(repr(key)[:60] for key in checkpoint
                     if key not in TRAINING_KEYS and not (isinstance(key, str) and _PRECISION_KEY.fullmatch(key)))
    callbacks = checkpoint.get("callbacks") or {}
    foreign += sorted(f"callbacks[{str(name)[:40]!r}]" for name in (callbacks if isinstance(callbacks, dict) else [0])
                      if not (isinstance(name, str) and name.startswith(TRAINING_CALLBACKS)))
    if foreign:
        raise CheckpointError(f"{path}: holds {', '.join(foreign)}, which train.py never "
                              "writes into a checkpoint; refusing to resume from this file")
    problems = resume_problems(checkpoint, run_dir)
    if problems:
        raise CheckpointError(f"{path}: its ModelCheckpoint state names files for Lightning to delete when it saves "
                              f"the next checkpoint: {'; '.join(problems)}. train.py never writes such paths; "
                              "refusing to resume from this file")
