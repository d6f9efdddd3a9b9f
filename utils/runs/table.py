"""The run table: the thesis's dashboard columns of a run record, in order, with how each is shown, sorted,
grouped over seeds and written as CSV; and where MLflow keeps each column, with the values MLflow gets for them.
compare_runs.py, the sweep report and the MLflow dashboard's view all use these columns."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.checks import is_number
from utils.config.loading import training_settings
from utils.printable import escape_control
from utils.runs.records import RunRecord
from utils.runs.seeds import Stat, stat_of
from utils.timing import format_duration

RUN_NAME = "tags.mlflow.runName"  # as MLflow's search_runs names it; the UI's Run Name column
DURATION = "attributes.duration"  # the run's end time minus its start time; the UI's Duration column


def _values(run: RunRecord, name: str) -> list[float]:
    return [row[name] for row in run.metrics if is_number(row.get(name)) and not math.isnan(row[name])]


def _best(name: str, pick: Callable[[list[float]], float]) -> Callable[[RunRecord], float | None]:
    def best(run: RunRecord) -> float | None:
        values = _values(run, name)
        return pick(values) if values else None
    return best


def run_state_text(run: RunRecord) -> str:
    """The summary's state: running, finished, interrupted or failed (unknown without summary.json)."""
    state = run.summary.get("state")
    return str(state) if state else "unknown (no summary.json)"


def _duration(run: RunRecord) -> float | None:
    value = run.summary.get("duration_s")
    return float(value) if is_number(value) else None


def _epochs_run(run: RunRecord) -> int | None:
    epochs = {row["epoch"] for row in run.metrics}
    if epochs:
        return len(epochs)
    value = run.summary.get("epochs_run")
    return int(value) if is_number(value) else None


def _parameters(run: RunRecord) -> int | None:
    value = run.summary.get("parameters")
    return value if isinstance(value, int) else None


def _runtime(run: RunRecord) -> str | None:
    """Where the run ran (local or colab) and on what device type, e.g. local/cuda."""
    device = run.summary.get("device")
    device_type = device.get("type") if isinstance(device, Mapping) else None
    parts = [str(part) for part in (run.summary.get("runtime"), device_type) if part]
    return "/".join(parts) or None


def _augmentations(switch: str, key: str) -> Callable[[RunRecord], str]:
    def names(run: RunRecord) -> str:
        if not run.config:
            return ""
        spec = run.config.get(key) or {}
        return "+".join(spec) if run.config.get(switch, False) and spec else "off"
    return names


def _setting(key: str) -> Callable[[RunRecord], Any]:
    return lambda run: run.config.get(key)


def _argument(group: str, name: str) -> Callable[[RunRecord], Any]:
    def value(run: RunRecord) -> Any:
        params = run.config.get(group)
        return params.get(name) if isinstance(params, Mapping) else None
    return value


def run_tags(run: RunRecord) -> list[str]:
    return list(map(str, run.config.get("tags") or run.summary.get("tags") or []))


def _image_size(run: RunRecord) -> str | None:
    size = run.config.get("image_size")
    return "x".join(map(str, size)) if isinstance(size, list) else None


@dataclass(frozen=True)
class Column:
    """One column: its name, its value in a run record, and where MLflow keeps it (as search_runs names it:
    params., metrics., tags., or the run's name and duration, which the UI's own columns show).

    ``stat`` columns are results: a seed group shows them as mean ± std [min, max]. ``dashboard`` columns are
    the dashboard's view, in this order.
    """

    name: str
    value: Callable[[RunRecord], Any]
    mlflow: str
    stat: bool = False
    dashboard: bool = True


COLUMNS: tuple[Column, ...] = (
    Column("run_id", lambda run: run.run_id, RUN_NAME),
    Column("state", run_state_text, "tags.state"),
    Column("duration", _duration, DURATION, stat=True),
    Column("runtime", _runtime, "params.runtime"),
    Column("architecture", _setting("architecture"), "params.architecture"),
    Column("image_size", _image_size, "params.image_size"),
    Column("batch_size", _setting("batch_size"), "params.batch_size"),
    Column("parameters", _parameters, "params.parameters"),
    Column("grayscale", _setting("convert_to_grayscale"), "params.convert_to_grayscale"),
    Column("normalize", _setting("normalize"), "params.normalize", dashboard=False),
    Column("image_augmentations", _augmentations("augment_images", "image_augmentations"),
           "params.image_augmentations"),
    Column("tensor_augmentations", _augmentations("augment_tensors", "tensor_augmentations"),
           "params.tensor_augmentations"),
    Column("crop_to_bboxes", _setting("crop_to_bboxes"), "params.crop_to_bboxes"),
    Column("erase_background", _setting("erase_background"), "params.erase_background"),
    Column("loss", _setting("loss_function"), "params.loss_function"),
    Column("optimizer", _setting("optimizer"), "params.optimizer"),
    Column("lr", _argument("optimizer_params", "lr"), "params.optimizer_params.lr"),
    Column("weight_decay", _argument("optimizer_params", "weight_decay"), "params.optimizer_params.weight_decay"),
    Column("lr_scheduler", _setting("lr_scheduler"), "params.lr_scheduler"),
    Column("dropout", _setting("dropout"), "params.dropout"),
    Column("output_channels", _setting("output_channels"), "params.output_channels"),
    Column("seed", _setting("seed"), "params.seed"),
    Column("epochs", _epochs_run, "metrics.epochs_last", stat=True),
    Column("stop_reason", lambda run: run.summary.get("stop_reason"), "tags.stop_reason"),
    Column("train_loss_min", _best("train_loss", min), "metrics.train_loss_min", stat=True),
    Column("valid_loss_min", _best("valid_loss", min), "metrics.valid_loss_min", stat=True),
    Column("train_acc_max", _best("train_acc", max), "metrics.train_acc_max", stat=True),
    Column("valid_acc_max", _best("valid_acc", max), "metrics.valid_acc_max", stat=True),
    Column("tags", lambda run: ", ".join(run_tags(run)), "tags.tags"),
    Column("description", lambda run: run.config.get("description") or run.summary.get("description") or "",
           "tags.mlflow.note.content", dashboard=False),
)
COLUMN_NAMES = tuple(column.name for column in COLUMNS)
DASHBOARD_SOURCES = tuple(column.mlflow for column in COLUMNS if column.dashboard)  # the dashboard view's columns


def column_problems(columns: Iterable[str], available: Iterable[str] = COLUMN_NAMES) -> list[str]:
    """One problem per unknown column name, listing the valid ones."""
    available = list(available)
    return [f"unknown column {name!r}; valid columns: {', '.join(available)}"
            for name in columns if name not in available]


def run_row(run: RunRecord) -> dict[str, Any]:
    """The table row of one run: column name -> raw value."""
    return {column.name: column.value(run) for column in COLUMNS}


def filter_runs(runs: Iterable[RunRecord], tags: Sequence[str] = (),
                architectures: Sequence[str] = ()) -> list[RunRecord]:
    """Runs having every tag in `tags` and, when given, one of `architectures`."""
    return [run for run in runs if set(tags) <= set(run_tags(run))
            and (not architectures or run.config.get("architecture") in architectures)]


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, Stat):
        value = value.mean
    if value is None or value == "":
        return (2, "")
    if is_number(value):
        return (0, float(value))
    return (1, str(value))


def sort_rows(rows: list[dict[str, Any]], column: str, descending: bool = False) -> list[dict[str, Any]]:
    """Rows sorted by one column (numbers by value, text alphabetically); empty values last either way."""
    filled = [row for row in rows if _sort_key(row.get(column))[0] < 2]
    empty = [row for row in rows if _sort_key(row.get(column))[0] == 2]
    return sorted(filled, key=lambda row: _sort_key(row.get(column)), reverse=descending) + empty


def seed_group_key(run: RunRecord) -> str:
    """Runs with equal keys differ only by seed (and settings of where and how they ran)."""
    if not run.config:
        return f"run:{run.path}"
    return json.dumps(training_settings(run.config), sort_keys=True, default=str)


def _joined(values: list[Any]) -> Any:
    distinct = list(dict.fromkeys("" if v is None else str(v) for v in values))
    return values[0] if len(distinct) == 1 else ",".join(distinct)


def group_rows_by_seed(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per seed group: result columns as Stat (mean ± std, min, max), the others joined if they differ."""
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(seed_group_key(run), []).append(run)
    rows = []
    for members in groups.values():
        member_rows = [run_row(run) for run in members]
        row = {column.name: (stat_of if column.stat else _joined)([r[column.name] for r in member_rows])
               for column in COLUMNS}
        rows.append({**row, "runs": len(members)})
    return rows


def mlflow_values(row: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """A table row's values of the columns MLflow keeps as kind (params, tags or metrics), by their MLflow names,
    as the table shows them: parameters and tags as text, results rounded (a seed group's: their mean). Empty
    values are left out."""
    values = {}
    for column in COLUMNS:
        source_kind, _, name = column.mlflow.partition(".")
        if column.mlflow == RUN_NAME:  # the run's name, given when the run is created
            continue
        value = row.get(column.name) if source_kind == kind else None
        value = value.mean if isinstance(value, Stat) else value
        if kind == "metrics" and is_number(value) and not math.isnan(value):
            values[name] = rounded(value)
        elif kind != "metrics" and value is not None:
            values[name] = str(value)
    return values


def rounded(value: float) -> float:
    """A result as the table shows it (short_number), so that MLflow's cells, which print every digit of a
    float, read as the table's: 0.8333333134651184 -> 0.8333."""
    return float(short_number(float(value)))


def short_number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and (abs(value) >= 1 or value == 0):
        return str(int(value))
    if abs(value) < 0.01:
        return f"{value:.3g}"
    return f"{value:.4f}"


def display_value(column: str, value: Any) -> str:
    """How a value is shown in a printed table (control characters of texts escaped: one row, one line)."""
    return escape_control(_display_value(column, value))


def _display_value(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Stat):
        return value.format(format_duration if column == "duration" else short_number)
    if column == "duration" and is_number(value):
        return format_duration(float(value))
    if column == "parameters" and isinstance(value, int):
        return f"{value / 1e6:.2f}M"
    if isinstance(value, float):
        return short_number(value)
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table with aligned columns."""
    cells = [[display_value(name, row.get(name)) for name in columns] for row in rows]
    widths = [max([len(name)] + [len(line[i]) for line in cells]) for i, name in enumerate(columns)]
    lines = ["  ".join(name.ljust(width) for name, width in zip(columns, widths)).rstrip(),
             "  ".join("-" * width for width in widths)]
    lines += ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(lines)


def _csv_cells(column: str, value: Any) -> dict[str, Any]:
    if isinstance(value, Stat):
        return {f"{column}_{part}": getattr(value, part) for part in ("mean", "std", "min", "max")}
    return {column: "" if value is None else value}


def write_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], path: str | os.PathLike) -> None:
    """Write the table as CSV with raw values; a seed-group column becomes _mean, _std, _min, _max columns."""
    records = [{k: v for name in columns for k, v in _csv_cells(name, row.get(name)).items()} for row in rows]
    header = list(dict.fromkeys(key for record in records for key in record)) or list(columns)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(records)
