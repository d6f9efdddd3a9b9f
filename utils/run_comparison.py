"""The thesis's dashboard table of run records: columns, filters, sorting, seed groups, CSV and curves."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.checks import is_number
from utils.run_folders import RunRecord
from utils.timing import format_duration

# Keys that say where or how a run was logged, not what was trained: runs differing only in these
# (and the seed) form one seed group.
NOT_TRAINING_KEYS = frozenset({
    "seed", "loglevel", "logging_dir", "log_to_neptune", "neptune_username", "neptune_project_name",
    "neptune_api_token", "neptune_mode", "log_to_tensorboard", "tags", "description",
    "stanford_raw_data_path", "output_path", "num_workers",
    "log_to_mlflow", "mlflow_tracking_uri", "mlflow_experiment", "mlflow_log_checkpoints",
})


@dataclass(frozen=True)
class Stat:
    """Mean ± standard deviation, min and max of one column over a seed group."""

    mean: float
    std: float
    min: float
    max: float
    n: int

    def __str__(self) -> str:
        return self.format(_short)

    def format(self, show: Callable[[float], str]) -> str:
        """'mean ± std [min, max]' with each number written by show."""
        return f"{show(self.mean)} ± {show(self.std)} [{show(self.min)}, {show(self.max)}]"


# ---- columns -------------------------------------------------------------------------------------------


def _column_values(run: RunRecord, name: str) -> list[float]:
    return [row[name] for row in run.metrics if row.get(name) is not None and not math.isnan(row[name])]


def _best(run: RunRecord, name: str, pick: Callable[[list[float]], float]) -> float | None:
    values = _column_values(run, name)
    return pick(values) if values else None


def _state(run: RunRecord) -> str:
    """The summary's state: running, finished, interrupted or failed (unknown without summary.json)."""
    state = run.summary.get("state")
    return str(state) if state else "unknown (no summary.json)"


def _duration(run: RunRecord) -> float | None:
    value = run.summary.get("duration_s")
    return float(value) if is_number(value) else None


def _epochs_run(run: RunRecord) -> int | None:
    epochs = {row["epoch"] for row in run.metrics if row.get("epoch") is not None}
    if epochs:
        return len(epochs)
    value = run.summary.get("epochs_run")
    return int(value) if isinstance(value, (int, float)) else None


def _parameters(run: RunRecord) -> int | None:
    value = run.summary.get("parameters")
    return value if isinstance(value, int) else None


def _runtime(run: RunRecord) -> str | None:
    """Where the run ran (local or colab) and on what device type, e.g. local/cuda."""
    device = run.summary.get("device")
    device_type = device.get("type") if isinstance(device, Mapping) else None
    parts = [str(part) for part in (run.summary.get("runtime"), device_type) if part]
    return "/".join(parts) or None


def _augmentations(run: RunRecord, switch: str, key: str) -> str:
    if not run.config:
        return ""
    spec = run.config.get(key) or {}
    if not run.config.get(switch, False) or not spec:
        return "off"
    return "+".join(spec)


def _param(run: RunRecord, group: str, name: str) -> Any:
    params = run.config.get(group)
    return params.get(name) if isinstance(params, Mapping) else None


def _tags(run: RunRecord) -> list[str]:
    return list(map(str, run.config.get("tags") or run.summary.get("tags") or []))


def _image_size(run: RunRecord) -> str | None:
    size = run.config.get("image_size")
    return "x".join(map(str, size)) if isinstance(size, list) else None


COLUMNS: dict[str, Callable[[RunRecord], Any]] = {
    "run_id": lambda run: run.run_id,
    "state": _state,
    "duration": _duration,
    "runtime": _runtime,
    "architecture": lambda run: run.config.get("architecture"),
    "image_size": _image_size,
    "batch_size": lambda run: run.config.get("batch_size"),
    "parameters": _parameters,
    "grayscale": lambda run: run.config.get("convert_to_grayscale"),
    "normalize": lambda run: run.config.get("normalize"),
    "image_augmentations": lambda run: _augmentations(run, "augment_images", "image_augmentations"),
    "tensor_augmentations": lambda run: _augmentations(run, "augment_tensors", "tensor_augmentations"),
    "crop_to_bboxes": lambda run: run.config.get("crop_to_bboxes"),
    "erase_background": lambda run: run.config.get("erase_background"),
    "loss": lambda run: run.config.get("loss_function"),
    "optimizer": lambda run: run.config.get("optimizer"),
    "lr": lambda run: _param(run, "optimizer_params", "lr"),
    "weight_decay": lambda run: _param(run, "optimizer_params", "weight_decay"),
    "lr_scheduler": lambda run: run.config.get("lr_scheduler"),
    "dropout": lambda run: run.config.get("dropout"),
    "output_channels": lambda run: run.config.get("output_channels"),
    "seed": lambda run: run.config.get("seed"),
    "epochs": _epochs_run,
    "stop_reason": lambda run: run.summary.get("stop_reason"),
    "train_loss_min": lambda run: _best(run, "train_loss", min),
    "valid_loss_min": lambda run: _best(run, "valid_loss", min),
    "train_acc_max": lambda run: _best(run, "train_acc", max),
    "valid_acc_max": lambda run: _best(run, "valid_acc", max),
    "tags": lambda run: ",".join(_tags(run)),
    "description": lambda run: run.config.get("description") or run.summary.get("description") or "",
}
# Columns summarised as mean ± std, min, max over a seed group.
STAT_COLUMNS = ("duration", "epochs", "train_loss_min", "valid_loss_min", "train_acc_max", "valid_acc_max")


def column_problems(columns: Iterable[str], available: Iterable[str] = COLUMNS) -> list[str]:
    """One problem per unknown column name, listing the valid ones."""
    available = list(available)
    return [f"unknown column {name!r}; valid columns: {', '.join(available)}"
            for name in columns if name not in available]


def run_row(run: RunRecord) -> dict[str, Any]:
    """The dashboard row of one run: column name -> raw value."""
    return {name: getter(run) for name, getter in COLUMNS.items()}


def filter_runs(runs: Iterable[RunRecord], tags: Sequence[str] = (),
                architectures: Sequence[str] = ()) -> list[RunRecord]:
    """Runs having every tag in `tags` and, when given, one of `architectures`."""
    selected = []
    for run in runs:
        if not set(tags) <= set(_tags(run)):
            continue
        if architectures and run.config.get("architecture") not in architectures:
            continue
        selected.append(run)
    return selected


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


# ---- seed groups ---------------------------------------------------------------------------------------


def seed_group_key(run: RunRecord) -> str:
    """Runs with equal keys differ only by seed (and logging settings)."""
    if not run.config:
        return f"run:{run.path}"
    training = {key: value for key, value in run.config.items() if key not in NOT_TRAINING_KEYS}
    return json.dumps(training, sort_keys=True, default=str)


def stat_of(values: Sequence[Any]) -> Stat | None:
    """Mean, standard deviation (n-1; 0 for one value), min and max of the numbers among values (None without any)."""
    numbers = [float(v) for v in values if is_number(v)]
    if not numbers:
        return None
    std = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
    return Stat(statistics.fmean(numbers), std, min(numbers), max(numbers), len(numbers))


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
        row = {name: _joined([r[name] for r in member_rows]) for name in COLUMNS}
        row.update({name: stat_of([r[name] for r in member_rows]) for name in STAT_COLUMNS})
        row["runs"] = len(members)
        rows.append(row)
    return rows


# ---- output --------------------------------------------------------------------------------------------


def _short(value: float) -> str:
    if value == int(value) and (abs(value) >= 1 or value == 0):
        return str(int(value))
    if abs(value) < 0.01:
        return f"{value:.3g}"
    return f"{value:.4f}"


def display_value(column: str, value: Any) -> str:
    """How a value is shown in the printed table."""
    if value is None:
        return ""
    if isinstance(value, Stat):
        return value.format(format_duration if column == "duration" else _short)
    if column == "duration" and isinstance(value, (int, float)):
        return format_duration(float(value))
    if column == "parameters" and isinstance(value, int):
        return f"{value / 1e6:.2f}M"
    if isinstance(value, float):
        return _short(value)
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


def plot_path_problem(path: str | os.PathLike) -> str | None:
    """The problem with an image path for plot_runs: its extension must be a format matplotlib writes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = FigureCanvasAgg.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in formats:
        return f"{path}: the plot needs an image file name ending in one of .{', .'.join(sorted(formats))}"
    return None


def _validation_curves(run: RunRecord) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    points = [row for row in run.metrics if row.get("epoch") is not None]
    acc = [(row["epoch"], row["valid_acc"]) for row in points if row.get("valid_acc") is not None]
    loss = [(row["epoch"], row["valid_loss"]) for row in points if row.get("valid_loss") is not None]
    return acc, loss


def draw_runs(runs: Sequence[RunRecord], references: Sequence[RunRecord] = ()) -> tuple[Any, int]:
    """A figure of valid_acc and valid_loss per epoch (1-based) of every run, references dashed; (figure, drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, (acc_axis, loss_axis) = plt.subplots(1, 2, figsize=(13, 5), sharex=True)
    drawn = 0
    for run, style in [(run, {"marker": "."}) for run in runs] + [(run, {"linestyle": "--"}) for run in references]:
        acc, loss = _validation_curves(run)
        if not acc and not loss:
            continue
        label = f"{run.run_id} ({_state(run)})" if "marker" in style else f"thesis {run.run_id}"
        for axis, curve in ((acc_axis, acc), (loss_axis, loss)):
            if curve:
                axis.plot(*zip(*curve), label=label, **style)
        drawn += 1
    for axis, title in ((acc_axis, "valid_acc"), (loss_axis, "valid_loss")):
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    if drawn:
        acc_axis.legend(fontsize="small")
    figure.tight_layout()
    return figure, drawn


def plot_runs(runs: Sequence[RunRecord], path: str | os.PathLike, references: Sequence[RunRecord] = ()) -> int:
    """Draw the runs' validation curves (references dashed) into an image file; return how many were drawn."""
    import matplotlib.pyplot as plt

    figure, drawn = draw_runs(runs, references)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return drawn
