"""Checkpoints read without running code from them.

A checkpoint is a pickle, and a pickle can name any Python callable to call while it loads. Every checkpoint this
project reads is loaded with ``torch.load(weights_only=True)``, which builds tensors and plain values only; that is
all train.py's checkpoints hold (a LambdaLR keeps its lr_lambda as the expression's text). A file holding anything
else is refused, naming what it holds, unless the user passes --trust-checkpoint.

Before torch reads a file, its index is read without allocating a tensor (``read_index``): ``data.pkl``, the pickled
structure in which each tensor names a storage record, its element type and count, is unpickled by an unpickler that
knows only the few names such a file uses and turns each tensor into a ``TensorEntry`` (dtype, shape, declared bytes).
A file whose records are compressed or not the size its index declares, or that declares far more than the network a
run's config builds (``index_size_problem``), or whose weights do not fit that network (``weights_problems``), is
refused before torch allocates anything; torch then loads it memory-mapped, reading only what is used. A checkpoint
that training resumes from is also checked for file paths in its ModelCheckpoint state that Lightning would delete
outside the run folder. Imports torch only where it loads a file.
"""

from __future__ import annotations

import collections
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
CHECKPOINT_SIZE_FACTOR = 5                # weights, two Adam moments, a moving average, and room
CHECKPOINT_SIZE_SLACK = 16 * 2**20


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or is not safe to read; the message names the file."""


MAX_INDEX_BYTES = 16 * 2**20     # data.pkl of a ghost checkpoint: about 160 kB
MAX_MEMBERS = 100_000
STORAGE_ITEM_BYTES = {"DoubleStorage": ("float64", 8), "FloatStorage": ("float32", 4), "HalfStorage": ("float16", 2),
                      "BFloat16Storage": ("bfloat16", 2), "LongStorage": ("int64", 8), "IntStorage": ("int32", 4),
                      "ShortStorage": ("int16", 2), "CharStorage": ("int8", 1), "ByteStorage": ("uint8", 1),
                      "BoolStorage": ("bool", 1)}


class UnsafeGlobal(ValueError):
    """The index names a callable or class (module.name) beyond tensors and plain values."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the index names {name}, not a tensor or plain value")
        self.name = name


@dataclass(frozen=True)
class StorageEntry:
    key: str
    dtype: str
    nbytes: int


@dataclass(frozen=True)
class TensorEntry:
    """A tensor as the index describes it: nothing of it is read."""

    storage: StorageEntry
    shape: tuple[int, ...]

    @property
    def dtype(self) -> str:
        return self.storage.dtype


@dataclass(frozen=True)
class CheckpointIndex:
    content: Any                        # the checkpoint's structure, TensorEntry in place of each tensor
    storages: dict[str, StorageEntry]
    record_bytes: int                   # the uncompressed bytes of every record in the zip file


def _encode(text: str, encoding: str = "latin1") -> bytes:
    """How protocol 2 pickles bytes: _codecs.encode(text, 'latin1'); no other encoding is read."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("_codecs.encode with arguments other than text and 'latin1'")
    return text.encode("latin1")


def _bytearray(data: bytes = b"", *_: Any) -> bytearray:
    """bytearray of pickled bytes only: bytearray(N) would allocate N bytes that the file does not hold."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("bytearray of something other than bytes")
    return bytearray(data)


PLAIN_GLOBALS = {("collections", "OrderedDict"): collections.OrderedDict,
                 ("collections", "Counter"): collections.Counter, ("builtins", "set"): set,
                 ("builtins", "complex"): complex, ("builtins", "bytearray"): _bytearray, ("_codecs", "encode"): _encode,
                 ("torch", "Size"): tuple, ("torch", "device"): str}


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype, self.item_bytes = STORAGE_ITEM_BYTES[name]


def _rebuild_tensor(storage: StorageEntry, offset: int, size: tuple[int, ...], *_: Any) -> TensorEntry:
    return TensorEntry(storage, tuple(int(side) for side in size))


def _rebuild_parameter(data: TensorEntry, *_: Any) -> TensorEntry:
    return data


class _IndexUnpickler(pickle.Unpickler):
    """data.pkl's structure with TensorEntry for tensors; any name a plain torch.save file does not use is refused."""

    storages: dict[str, StorageEntry]

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in PLAIN_GLOBALS:
            return PLAIN_GLOBALS[module, name]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_ITEM_BYTES:
            return _StorageType(name)
        raise UnsafeGlobal(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> StorageEntry:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[4], int) and pid[4] >= 0):
            raise pickle.UnpicklingError(f"a storage reference of an unknown form: {pid!r:.200}")
        _, kind, key, _, numel = pid
        storage = StorageEntry(str(key), kind.dtype, numel * kind.item_bytes)
        self.storages[storage.key] = storage
        return storage


def _index_member(archive: zipfile.ZipFile, path: str | os.PathLike) -> zipfile.ZipInfo:
    members = [info for info in archive.infolist() if info.filename.endswith("/data.pkl")]
    if len(members) != 1:
        raise CheckpointError(f"{path}: not a torch.save checkpoint (no single data.pkl in the zip file)")
    if members[0].file_size > MAX_INDEX_BYTES:
        raise CheckpointError(f"{path}: its index data.pkl is {members[0].file_size / 2**20:.0f} MiB; "
                              f"checkpoints of this project have indexes under {MAX_INDEX_BYTES // 2**20} MiB")
    return members[0]


def _record_problems(archive: zipfile.ZipFile, prefix: str, storages: dict[str, StorageEntry]) -> list[str]:
    """Records that are compressed (torch.save never compresses) or whose size differs from what the index says."""
    problems = [f"{info.filename} is compressed (torch.save writes every record uncompressed)"
                for info in archive.infolist() if info.compress_type != zipfile.ZIP_STORED]
    for storage in storages.values():
        try:
            size = archive.getinfo(f"{prefix}data/{storage.key}").file_size
        except KeyError:
            problems.append(f"no record data/{storage.key} for a tensor the index names")
            continue
        if size != storage.nbytes:
            problems.append(f"record data/{storage.key} holds {size} bytes, the index declares {storage.nbytes}")
    return problems


def read_checkpoint_index(path: str | os.PathLike) -> CheckpointIndex:
    """The checkpoint's structure and storages, read from its index; CheckpointError if it is not a plain
    torch.save zip file of tensors and plain values, or its records are not what its index declares."""
    try:
        with zipfile.ZipFile(path) as archive:
            if len(archive.infolist()) > MAX_MEMBERS:
                raise CheckpointError(f"{path}: {len(archive.infolist())} records in the zip file; "
                                      f"at most {MAX_MEMBERS} are read")
            member = _index_member(archive, path)
            unpickler = _IndexUnpickler(archive.open(member))
            unpickler.storages = {}
            content = unpickler.load()
            problems = _record_problems(archive, member.filename[:-len("data.pkl")], unpickler.storages)
            record_bytes = sum(info.file_size for info in archive.infolist())
    except (CheckpointError, UnsafeGlobal):
        raise
    except (OSError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({error})") from None
    except Exception as error:  # a crafted or damaged pickle raises many types
        raise CheckpointError(f"{path}: its index cannot be read as tensors and plain values "
                              f"({type(error).__name__}: {str(error)[:300]})") from None
    if problems:
        raise CheckpointError(f"{path}: not a checkpoint as torch.save writes it: {'; '.join(problems[:5])}")
    return CheckpointIndex(content, unpickler.storages, record_bytes)


def _unsafe_globals(path: str | os.PathLike, error: Exception) -> list[str]:
    """The callables and classes (module.name) the file's pickle names beyond tensors and plain values."""
    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint, or one it cannot disassemble: torch's message may still name one
        names = []
    return names or _GLOBAL_IN_MESSAGE.findall(str(error))


def _unsafe_error(path: str | os.PathLike, names: list[str]) -> CheckpointError:
    kind = "an object of type" if len(names) == 1 else "objects of types"
    return CheckpointError(
        f"{path}: holds {kind} {', '.join(names)}, not only tensors and plain values: loading it would run "
        f"code from the file. Checkpoints of train.py never hold such objects. If you trust where the file "
        f"comes from (e.g. a checkpoint of an older version), pass {TRUST_OPTION} to load it anyway")


def load_checkpoint(path: str | os.PathLike, trust: bool = False, mmap: bool = False) -> Any:
    """The content of a checkpoint, on the CPU: tensors and plain values only, unless ``trust``; with ``mmap``,
    tensors stay in the file until used (read_index has checked that its records are plain)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=not trust, mmap=mmap)
    except pickle.UnpicklingError as error:
        names = _unsafe_globals(path, error)
        if trust or not names:
            last_line = (str(error).strip().splitlines() or [type(error).__name__])[-1]
            raise CheckpointError(f"{path}: not a readable checkpoint ({last_line})") from None
        raise _unsafe_error(path, names) from None
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None


def read_index(path: str | os.PathLike) -> CheckpointIndex:
    """The checkpoint's index (no tensor read), or CheckpointError naming the file and what is wrong with it."""
    try:
        index = read_checkpoint_index(path)
    except UnsafeGlobal as error:
        unsafe = _unsafe_globals(path, error)
        if unsafe:
            raise _unsafe_error(path, unsafe) from None
        raise CheckpointError(f"{path}: holds {error.name}, a kind of tensor or value that checkpoints of this project "
                              "never hold") from None
    if not isinstance(index.content, dict) or not isinstance(index.content.get("state_dict"), Mapping):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return index


def weights_problems(state: Mapping[str, Any], expected: Mapping[str, tuple[tuple[int, ...], str]]) -> list[str]:
    """How a state_dict (TensorEntry or tensors) differs from the expected {name: (shape, dtype)}: missing and
    unexpected names, other shapes or dtypes."""
    problems = [f"no {name}" for name in expected if name not in state]
    problems += [f"unexpected {name}" for name in state if name not in expected]
    for name, (shape, dtype) in expected.items():
        value = state.get(name)
        if value is None:
            continue
        if not hasattr(value, "shape") or tuple(value.shape) != tuple(shape):
            problems.append(f"{name} has shape {list(getattr(value, 'shape', []))}, the network {list(shape)}")
        elif str(value.dtype).removeprefix("torch.") != dtype:
            problems.append(f"{name} is {str(value.dtype).removeprefix('torch.')}, the network's {dtype}")
    return problems


def index_size_problem(index: CheckpointIndex, network_bytes: int) -> str | None:
    """Why the file holds too much for a network of ``network_bytes``, or None: a checkpoint holds its weights,
    the optimizer's moments and a moving average, about 4 times the network."""
    limit = CHECKPOINT_SIZE_FACTOR * network_bytes + CHECKPOINT_SIZE_SLACK
    declared = sum(storage.nbytes for storage in index.storages.values())
    largest = max(declared, index.record_bytes)
    if largest <= limit:
        return None
    return (f"it holds {largest / 2**20:.0f} MiB of records for a network of {network_bytes / 2**20:.1f} MiB "
            f"(at most {limit / 2**20:.0f} MiB are read)")


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


def check_resume_checkpoint(path: str | os.PathLike, run_dir: str | os.PathLike,
                            trust: bool = False) -> CheckpointIndex | None:
    """Raise CheckpointError unless training can resume from ``path`` in ``run_dir`` without running or deleting
    anything from the file; reads its index only, and returns it (with ``trust``, loads the whole file: None)."""
    index = None if trust else read_index(path)
    checkpoint = load_checkpoint(path, trust) if trust else index.content
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
    return index
