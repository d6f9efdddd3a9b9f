"""Run folders: creating them, the line train.py prints for each, finding a run or checkpoint, reading records.

A run folder (``output/<architecture>_<timestamp>[_seed<N>]/``) holds ``config.yml``, ``summary.json``,
``metrics.csv`` and the checkpoints. Light on imports: the Colab notebook uses it before its install step.
"""

from __future__ import annotations

import csv
import json
import os
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from utils.configuration import load_config

RUN_FOLDER_LINE = "run folder: "


def announce_run_folder(run_dir: str | Path) -> None:
    """Print the line by which a caller (the Colab notebook, a sweep) learns which folder this run writes."""
    print(f"{RUN_FOLDER_LINE}{run_dir}", flush=True)


def announced_run_folders(lines: list[str]) -> list[Path]:
    """The run folders announced among complete output lines, in order (after a progress bar's carriage return too)."""
    shown = [line.rpartition("\r")[2] for line in lines]
    return [Path(line[len(RUN_FOLDER_LINE):].strip()) for line in shown if line.startswith(RUN_FOLDER_LINE)]


RECORD_FILES = ("summary.json", "config.yml", "metrics.csv")
MLFLOW_DB = "mlflow.db"  # the MLflow store beside the run folders of an output folder (log_to_mlflow)


BEST_CHECKPOINT = "best.ckpt"


class RunRecordError(ValueError):
    """A run record that cannot be read; the message names the file at fault."""


@dataclass
class RunRecord:
    """One run folder: its summary, resolved configuration and per-epoch metrics."""

    path: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    metrics: list[dict[str, float | None]] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.path.name


def _read_mapping(path: Path, parse: Callable[[str], Any], kind: str, errors: tuple[type[Exception], ...],
                  expected: str) -> dict[str, Any]:
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, *errors) as error:
        raise RunRecordError(f"{path}: damaged run record, not readable {kind} ({error})") from None
    if not isinstance(data, dict):
        raise RunRecordError(f"{path}: damaged run record, expected {expected}, got {type(data).__name__}")
    return data


def _read_json(path: Path) -> dict[str, Any]:
    return _read_mapping(path, json.loads, "JSON", (json.JSONDecodeError,), "a JSON object")


def _read_yaml(path: Path) -> dict[str, Any]:
    return _read_mapping(path, yaml.safe_load, "YAML", (yaml.YAMLError,), "a mapping")


def _number(text: str | None, path: Path, line: int, column: str) -> float | None:
    if text is None or text.strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise RunRecordError(f"{path}: damaged run record, line {line} column {column}: "
                             f"{text!r} is not a number") from None


def read_metrics(path: Path) -> list[dict[str, float | None]]:
    """Rows of metrics.csv as floats (empty cells as None); one row per epoch."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = [{key: _number(value, path, reader.line_num, key) for key, value in row.items() if key}
                    for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise RunRecordError(f"{path}: damaged run record, not readable CSV ({error})") from None
    if rows and "epoch" not in rows[0]:
        raise RunRecordError(f"{path}: damaged run record, no 'epoch' column")
    return rows


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


def refuse_links_leaving(folder: str | os.PathLike, what: str = "run folder") -> None:
    """Raise RunRecordError naming the first symbolic link under ``folder`` that leads outside it: no command reads
    or writes a file elsewhere through a folder it was given."""
    links = links_leaving(folder)
    if links:
        link, target = links[0]
        raise RunRecordError(f"{link}: a symbolic link to {target}, outside the {what} {folder}; nothing is read or "
                             f"written through it (replace the link by a copy of the file if you trust it)"
                             + (f", and {len(links) - 1} more such link(s)" if len(links) > 1 else ""))


def is_run_dir(path: Path) -> bool:
    """True for a folder holding any of the run-record files."""
    return path.is_dir() and any((path / name).exists() for name in RECORD_FILES)


def read_run(path: str | os.PathLike) -> RunRecord:
    """Read one run folder; raise RunRecordError naming the damaged file (or a link leading outside the folder)."""
    path = Path(path)
    refuse_links_leaving(path)
    summary_path, config_path, metrics_path = (path / name for name in RECORD_FILES)
    summary = _read_json(summary_path) if summary_path.exists() else {}
    config = _read_yaml(config_path) if config_path.exists() else {}
    metrics = read_metrics(metrics_path) if metrics_path.exists() else []
    return RunRecord(path=path, summary=summary, config=config, metrics=metrics)


def find_run_dirs(roots: Iterable[str | os.PathLike]) -> list[Path]:
    """Run folders among the given folders and their direct sub-folders, sorted by path."""
    found: set[Path] = set()
    for root in map(Path, roots):
        if is_run_dir(root):
            found.add(root)
        elif root.is_dir():
            found.update(child for child in root.iterdir() if is_run_dir(child))
    return sorted(found)


def load_runs(roots: Iterable[str | os.PathLike]) -> tuple[list[RunRecord], list[str]]:
    """Every readable run under `roots`, and one problem line per damaged or missing record."""
    roots = list(roots)
    problems = [f"{root}: no such folder" for root in map(Path, roots) if not root.is_dir()]
    runs = []
    for run_dir in find_run_dirs(roots):
        try:
            runs.append(read_run(run_dir))
        except RunRecordError as error:
            problems.append(f"{error} (skipped)")
    return runs, problems


def resolve_run(path: str | os.PathLike) -> tuple[Path, Path]:
    """(run folder, checkpoint) from a run folder (its best.ckpt) or a checkpoint file inside a run folder."""
    path = Path(path)
    if path.is_dir():
        checkpoint = path / BEST_CHECKPOINT
        if not checkpoint.is_file():
            found = ", ".join(sorted(p.name for p in path.glob("*.ckpt"))) or "none"
            raise RunRecordError(f"{path}: no {BEST_CHECKPOINT} in this run folder (checkpoints found: {found}); "
                                 "pass a checkpoint file instead")
        run_dir = path
    elif path.is_file():
        checkpoint, run_dir = path, path.parent
    else:
        raise RunRecordError(f"{path}: no such run folder or checkpoint file")
    if not (run_dir / "config.yml").is_file():
        raise RunRecordError(f"{run_dir / 'config.yml'}: missing; the checkpoint must sit in its run folder "
                             "next to the config.yml that train.py wrote")
    refuse_links_leaving(run_dir)
    return run_dir, checkpoint


def run_files(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> list[Path]:
    """A run's records and checkpoints: files no command may write over."""
    run_dir = Path(run_dir)
    files = [run_dir / name for name in RECORD_FILES] + sorted(run_dir.glob("*.ckpt"))
    return files + ([Path(checkpoint)] if checkpoint is not None else [])


def metrics_at_epoch(run_dir: str | os.PathLike, epoch: int) -> dict[str, float | None] | None:
    """The metrics.csv row of one epoch (None when absent)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return None
    return next((row for row in read_metrics(path) if row.get("epoch") == epoch), None)


def load_run_config(path: str | os.PathLike, data_path: str | os.PathLike | None = None) -> tuple[Path, Path, dict]:
    """(run folder, checkpoint, validated run configuration) for a run folder or checkpoint; -d overrides the data."""
    run_dir, checkpoint = resolve_run(path)
    cfg = load_config(run_dir / "config.yml")
    if data_path is not None:
        labels = Path(data_path) / "test_labels.csv"
        if not labels.is_file():
            raise RunRecordError(f"{data_path}: not prepared data ({labels.name} not found); give the folder "
                                 "that prepare_stanford_dataset.py wrote")
        cfg["stanford_data_path"] = str(data_path)
    return run_dir, checkpoint, cfg


def run_class_names(run_dir: str | os.PathLike, num_classes: int,
                    from_data: Callable[[], Sequence[str]] | None = None,
                    prefer_data: bool = False) -> tuple[list[str], str | None]:
    """(class names, warning or None): those in the run's summary.json, else from_data(), else 'class N'.

    With ``prefer_data`` (data the user named) from_data() comes first, and its errors and a class count
    other than the network's are errors.
    """
    if prefer_data and from_data is not None:
        names = list(from_data())
        if len(names) != num_classes:
            raise RunRecordError(f"the prepared data has {len(names)} classes, the run's network {num_classes}")
        return names, None
    path = Path(run_dir) / RECORD_FILES[0]
    recorded = read_summary(run_dir).get("class_names")
    if isinstance(recorded, list) and len(recorded) == num_classes:
        return [str(name) for name in recorded], None
    problem = f"{path} records no class names"
    if from_data is not None:
        try:
            return list(from_data()), None
        except (FileNotFoundError, ValueError) as error:
            problem = f"{problem} and the prepared data is unavailable ({error})"
    return [f"class {i}" for i in range(1, num_classes + 1)], f"{problem}; showing class ids"


PLAN_ENV = "CARS_RUN_PLAN"  # run folders and seeds chosen by the launching process, read by DDP workers


TIMESTAMP = "%Y%m%d-%H%M%S"


def plan_runs(output_path: str | os.PathLike, architecture: str, seeds: Sequence[int],
              now: datetime | None = None) -> list[dict[str, Any]]:
    """New run folders (<architecture>_<timestamp>[_seed<N>]), created now, one per seed; shared with DDP workers."""
    from pytorch_lightning.utilities import rank_zero_only  # here: the Colab notebook imports this module first

    worker_plan = os.environ.get(PLAN_ENV)
    if worker_plan and rank_zero_only.rank != 0:
        return json.loads(worker_plan)
    stamp = (now or datetime.now()).strftime(TIMESTAMP)
    plan: list[dict[str, Any]] = []
    for seed in seeds:
        base = f"{architecture}_{stamp}" + (f"_seed{seed}" if len(seeds) > 1 else "")
        plan.append({"run_dir": str(reserve_folder(Path(output_path) / base)), "seed": seed})
    os.environ[PLAN_ENV] = json.dumps(plan)
    return plan


def reserve_folder(path: Path) -> Path:
    """Create path, or path_2, path_3, ...: the first that did not exist (two runs never share a folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, number = path, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            number += 1
            candidate = path.with_name(f"{path.name}_{number}")


def release_unused(plan: Sequence[Mapping[str, Any]]) -> None:
    """Remove the planned run folders that stayed empty (a run stopped before it wrote anything)."""
    for entry in plan:
        folder = Path(entry["run_dir"])
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def unused_path(path: Path, taken: Iterable[Path] = ()) -> Path:
    """path, or path_2, path_3, ... whichever does not exist yet (and is not in taken)."""
    taken = set(taken)
    candidate, number = path, 1
    while candidate.exists() or candidate in taken:
        number += 1
        candidate = path.with_name(f"{path.name}_{number}")
    return candidate


def resume_target(path: str | os.PathLike) -> tuple[Path, Path]:
    """(run folder, checkpoint) from a run folder (its last.ckpt) or a checkpoint file."""
    path = Path(path)
    ckpt = path / "last.ckpt" if path.is_dir() else path
    if not ckpt.is_file():
        raise FileNotFoundError(f"--resume {path}: no checkpoint {ckpt} (expected a run folder with last.ckpt "
                                "or a .ckpt file)")
    if not zipfile.is_zipfile(ckpt):
        raise FileNotFoundError(f"--resume {path}: {ckpt} is not a checkpoint (train.py's .ckpt files are "
                                "PyTorch zip archives)")
    run_dir = ckpt.parent
    for record in ("config.yml", "summary.json"):
        if not (run_dir / record).is_file():
            raise FileNotFoundError(f"--resume {path}: {run_dir} is not a run folder of train.py (no {record})")
    refuse_links_leaving(run_dir)
    return run_dir, ckpt


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically (a crash never leaves half a file; a link at the partial file's name is replaced)."""
    partial = path.with_suffix(path.suffix + ".partial")
    partial.unlink(missing_ok=True)
    partial.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    partial.replace(path)


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run folder's summary.json ({} when absent or unreadable)."""
    path = Path(run_dir) / RECORD_FILES[0]
    try:
        return _read_json(path) if path.is_file() else {}
    except RunRecordError:
        return {}


def run_state(run_dir: str | os.PathLike) -> str | None:
    """The `state` recorded in a run's summary.json (None when unreadable)."""
    return read_summary(run_dir).get("state")
