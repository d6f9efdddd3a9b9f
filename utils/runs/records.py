"""A run folder's records: summary.json, config.yml and metrics.csv, read (naming a damaged file) and written.

A run folder (``output/<architecture>_<timestamp>[_seed<N>]/``) holds these three records and the checkpoints.
Light on imports: the Colab notebook uses it before its install step.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from utils.bounded_files import MAX_CSV_BYTES, FileLimitError, read_bounded_text, read_json_file, read_yaml_file
from utils.checks import is_number
from utils.runs.record_types import CONFIG_TYPES, SUMMARY_TYPES, type_problem
from utils.output_files import links_problem, write_atomically

SUMMARY, CONFIG, METRICS = "summary.json", "config.yml", "metrics.csv"
RECORD_FILES = (SUMMARY, CONFIG, METRICS)
MAX_EPOCH = 10**6  # an epoch number in metrics.csv
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "valid_acc_top5", "lr")


class RunRecordError(ValueError):
    """A run record that cannot be read; the message names the file at fault."""


@dataclass
class RunRecord:
    """One run folder: its summary, recorded configuration (as config.yml holds it) and per-epoch metrics."""

    path: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    metrics: list[dict[str, float]] = field(default_factory=list)
    label: str | None = None  # how the run is named in a table: <study>/<id> for a sweep's run, else its folder

    @property
    def run_id(self) -> str:
        return self.label or self.path.name


def _read_mapping(path: Path, read: Callable[[Path], Any], kind: str, errors: tuple[type[Exception], ...],
                  expected: str) -> dict[str, Any]:
    try:
        data = read(path)  # bounded: utils/bounded_files.py
    except FileLimitError as error:
        raise RunRecordError(f"refused run record: {error}") from None
    except (OSError, UnicodeDecodeError, *errors) as error:
        raise RunRecordError(f"{path}: damaged run record, not readable {kind} ({error})") from None
    if not isinstance(data, dict):
        raise RunRecordError(f"{path}: damaged run record, expected {expected}, got {type(data).__name__}")
    return data


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a run record file; RunRecordError naming the file otherwise."""
    return _read_mapping(path, read_json_file, "JSON", (json.JSONDecodeError,), "a JSON object")


def read_recorded_config(path: Path) -> dict[str, Any]:
    """A run's config.yml as the mapping it holds (YAML's safe subset: no tags that build objects)."""
    return _read_mapping(path, read_yaml_file, "YAML", (yaml.YAMLError,), "a mapping")


def _number(text: str | None, path: Path, line: int, column: str) -> float:
    if text is None or text.strip() == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise RunRecordError(f"{path}: damaged run record, line {line} column {column}: "
                             f"{text!r} is not a number") from None


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, float]]:
    """A run's metrics.csv, one row per epoch: the epoch as int, the other columns as floats (empty cells NaN);
    [] before its first epoch."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    try:
        reader = csv.DictReader(io.StringIO(read_bounded_text(path, MAX_CSV_BYTES, "CSV"), newline=""))
        rows = [{key: _number(value, path, reader.line_num, key) for key, value in row.items()
                 if isinstance(key, str) and key} for row in reader]
    except FileLimitError as error:
        raise RunRecordError(f"refused run record: {error}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise RunRecordError(f"{path}: damaged run record, not readable CSV ({error})") from None
    if rows and "epoch" not in rows[0]:
        raise RunRecordError(f"{path}: damaged run record, no 'epoch' column")
    for row in rows:
        epoch = row.get("epoch", math.nan)
        if not (math.isfinite(epoch) and epoch == int(epoch) and 0 <= epoch <= MAX_EPOCH):
            raise RunRecordError(f"{path}: damaged run record, epoch {epoch!r} is not an epoch number")
        row["epoch"] = int(epoch)
    return rows


def write_metrics(run_dir: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write metrics.csv (one row per epoch) atomically; FileWriteError naming it when it cannot be written."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(run_dir / METRICS, lambda handle: handle.write(text.getvalue().encode("utf-8")))


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically (a crash or a full disk never leaves half a file); FileWriteError naming it."""
    text = json.dumps(data, indent=2, default=str) + "\n"
    write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def refuse_links_leaving(folder: str | os.PathLike, what: str = "run folder") -> None:
    """Raise RunRecordError naming the first symbolic link under ``folder`` that leads outside it: no command reads
    or writes a file elsewhere through a folder it was given."""
    problem = links_problem(folder, what)
    if problem:
        raise RunRecordError(problem)


def is_run_dir(path: Path) -> bool:
    """True for a folder holding any of the run-record files."""
    return path.is_dir() and any((path / name).exists() for name in RECORD_FILES)


def read_run(path: str | os.PathLike) -> RunRecord:
    """Read one run folder; raise RunRecordError naming the damaged file (or a link leading outside the folder)."""
    path = Path(path)
    refuse_links_leaving(path)
    summary_path, config_path = path / SUMMARY, path / CONFIG
    summary = read_json(summary_path) if summary_path.exists() else {}
    config = read_recorded_config(config_path) if config_path.exists() else {}
    for record_path, record, types in ((summary_path, summary, SUMMARY_TYPES), (config_path, config, CONFIG_TYPES)):
        if problem := type_problem(record, types):
            raise RunRecordError(f"{record_path}: a value of another type than train.py writes, {problem}")
    return RunRecord(path=path, summary=summary, config=config, metrics=read_metrics(path))


def _sub_folders(folder: Path) -> list[Path]:
    return sorted(child for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))


def runs_under(root: str | os.PathLike) -> list[Path]:
    """The run folders a folder names: itself when it is one, else its sub-folders that are runs and the runs
    in its other sub-folders (a sweep's study folders, <output_path>/<study>/<id>), sorted by path."""
    root = Path(root)
    if is_run_dir(root):
        return [root]
    if not root.is_dir():
        return []
    found = []
    for child in _sub_folders(root):
        found += [child] if is_run_dir(child) else [run for run in _sub_folders(child) if is_run_dir(run)]
    return found


def load_runs(roots: Iterable[str | os.PathLike]) -> tuple[list[RunRecord], list[str]]:
    """Every readable run under `roots` (a study's runs named <study>/<id>), and one problem line per damaged or
    missing record."""
    roots = [Path(root) for root in roots]
    problems = [f"{root}: no such folder" for root in roots if not root.is_dir()]
    found = {root: runs_under(root) for root in roots}
    in_studies = {run for root, under in found.items() for run in under if run.parent.parent == root}
    runs = []
    for run_dir in sorted({run for under in found.values() for run in under}):
        try:
            run = read_run(run_dir)
        except RunRecordError as error:
            problems.append(f"{error} (skipped)")
            continue
        run.label = f"{run_dir.parent.name}/{run_dir.name}" if run_dir in in_studies else None
        runs.append(run)
    return runs, problems


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run folder's summary.json ({} when absent or unreadable)."""
    path = Path(run_dir) / SUMMARY
    try:
        return read_json(path) if path.is_file() else {}
    except RunRecordError:
        return {}


def run_state(run_dir: str | os.PathLike) -> str | None:
    """The `state` recorded in a run's summary.json (None when unreadable)."""
    return read_summary(run_dir).get("state")


def metrics_at_epoch(run_dir: str | os.PathLike, epoch: int) -> dict[str, float] | None:
    """The metrics.csv row of one epoch (None when absent)."""
    return next((row for row in read_metrics(run_dir) if row.get("epoch") == epoch), None)


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
    recorded = read_summary(run_dir).get("class_names")
    if isinstance(recorded, list) and len(recorded) == num_classes:
        return [str(name) for name in recorded], None
    problem = f"{Path(run_dir) / SUMMARY} records no class names"
    if from_data is not None:
        try:
            return list(from_data()), None
        except (FileNotFoundError, ValueError) as error:
            problem = f"{problem} and the prepared data is unavailable ({error})"
    return [f"class {i}" for i in range(1, num_classes + 1)], f"{problem}; showing class ids"


def run_times_ms(summary: Mapping[str, Any]) -> tuple[int, int | None] | None:
    """(start, end) of a recorded run in ms since the epoch: summary.json's start time and duration (end None
    when no duration is recorded); None without a start time."""
    try:
        start = datetime.fromisoformat(str(summary.get("started"))).timestamp()
    except ValueError:
        return None
    duration = summary.get("duration_s")
    return int(start * 1000), int((start + duration) * 1000) if is_number(duration) else None
