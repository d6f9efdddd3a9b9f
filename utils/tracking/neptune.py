"""Neptune: a Lightning logger on neptune-client 1.x (the hosted service has ended; offline mode still writes
runs to .neptune/offline/), and the import of those offline runs into MLflow."""

from __future__ import annotations

import json
import math
import os
from argparse import Namespace
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from utils.checks import is_number
from utils.output_files import links_problem
from utils.tracking.mlflow_store import NOTE_TAG, log_recorded_run, tagged_run_exists

NEPTUNE_RUN_TAG = "neptune_offline_run"


class NeptuneRunError(ValueError):
    """A Neptune offline folder that cannot be read safely; the message names the file or link at fault."""

NEPTUNE_MODES = ("async", "offline", "debug")


class NeptuneLogger(Logger):
    """A Lightning Logger on neptune-client 1.x (Lightning 2.6 dropped its own): parameters to parameters/,
    per-epoch metrics to metrics/ (step = epoch) and best values to summary/."""

    def __init__(self, project: str, api_token: str | None = None, mode: str = "async",
                 tags: Iterable[str] = (), description: str = "", name: str | None = None):
        super().__init__()
        if mode not in NEPTUNE_MODES:
            raise ValueError(f"neptune mode must be one of {', '.join(NEPTUNE_MODES)}, got {mode!r}")
        self._project = project
        self._api_token = api_token
        self._mode = mode
        self._tags = list(tags)
        self._description = description or ""
        self._run_name = name
        self._run: Any = None
        self._best: dict[str, float] = {}
        self._last_epoch: int | None = None

    @property
    def name(self) -> str:
        return self._project

    @property
    def version(self) -> str:
        return self._run_name or ""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The neptune Run, started on first use."""
        if self._run is None:
            import neptune

            self._run = neptune.init_run(
                project=self._project, api_token=self._api_token, mode=self._mode, tags=self._tags or None,
                description=self._description, name=self._run_name, capture_stdout=False,
                capture_stderr=False, capture_hardware_metrics=False, source_files=[])
        return self._run

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Assign flat 'a.b' parameters under parameters/a/b (lists and null as text)."""
        values = vars(params) if isinstance(params, Namespace) else params
        for key, value in values.items():
            self.experiment[f"parameters/{key.replace('.', '/')}"] = _scalar(value)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Append each metric under metrics/, stepped by epoch when Lightning gives one."""
        values = dict(metrics)
        epoch = values.pop("epoch", None)
        at = int(epoch) if epoch is not None else step
        for key, value in values.items():
            value = float(value)
            self.experiment[f"metrics/{key}"].append(value, step=at)
            self._remember(key, value)
        if epoch is not None:
            self._last_epoch = int(epoch)

    def _remember(self, key: str, value: float) -> None:
        if math.isnan(value):
            return
        if "loss" in key:
            self._best[f"{key}_min"] = min(value, self._best.get(f"{key}_min", math.inf))
        elif "acc" in key:
            self._best[f"{key}_max"] = max(value, self._best.get(f"{key}_max", -math.inf))

    @rank_zero_only
    def log_summary(self, values: Mapping[str, Any]) -> None:
        """Assign values under summary/ (epochs run, best metrics, stop reason, ...)."""
        for key, value in values.items():
            self.experiment[f"summary/{key}"] = _scalar(value)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Write the best values seen and the epochs run, then stop the run."""
        if self._run is None:
            return
        summary: dict[str, Any] = dict(self._best)
        if self._last_epoch is not None:
            summary["epochs_last"] = self._last_epoch + 1
        summary["status"] = status
        self.log_summary(summary)
        self._run.stop()
        self._run = None


def _scalar(value: Any) -> bool | int | float | str:
    if isinstance(value, (bool, int, float, str)):
        return value
    return "None" if value is None else str(value)



def neptune_run_dirs(roots: Iterable[str | os.PathLike]) -> list[Path]:
    """Neptune offline run folders (run__*) given, or under the given folders or their offline/ folder."""
    found: set[Path] = set()
    for root in map(Path, roots):
        for candidate in (root, *root.glob("run__*"), *root.glob("offline/run__*")):
            if candidate.name.startswith("run__") and any(candidate.glob("data-*.log")):
                found.add(candidate)
    return sorted(found)


def _apply_neptune_operation(operation: Mapping[str, Any], values: dict[str, Any],
                             series: dict[str, list[tuple[int, float]]]) -> None:
    path = "/".join(operation.get("path", []))
    if "value" in operation:
        values[path] = operation["value"]
    elif operation["type"] == "AddStrings":
        values[path] = list(dict.fromkeys([*values.get(path, []), *operation["values"]]))
    elif operation["type"] == "LogFloats":
        points = series.setdefault(path, [])
        for item in operation["values"]:
            step = item.get("step")
            points.append((int(step) if step is not None else len(points), float(item["value"])))


def read_neptune_offline(run_dir: Path) -> tuple[dict[str, Any], dict[str, list[tuple[int, float]]]]:
    """(assigned values, appended float series) of a Neptune offline run, keyed by 'a/b' paths; NeptuneRunError
    names a line that is no Neptune operation, or a link leading outside the folder."""
    problem = links_problem(run_dir, "Neptune offline folder")
    if problem:
        raise NeptuneRunError(problem)
    values: dict[str, Any] = {}
    series: dict[str, list[tuple[int, float]]] = {}
    logs = [path for path in run_dir.glob("data-*.log") if path.stem.removeprefix("data-").isdigit()]
    for log_file in sorted(logs, key=lambda path: int(path.stem.removeprefix("data-"))):
        number = 0
        try:
            for number, line in enumerate(log_file.read_text(encoding="utf-8").splitlines(), start=1):
                _apply_neptune_operation(json.loads(line)["obj"], values, series)
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as error:
            where = f"{log_file}, line {number}" if number else str(log_file)
            raise NeptuneRunError(f"{where}: not a Neptune offline operation ({type(error).__name__}: {error})") \
                from None
    return values, series


def readable_neptune_runs(run_dirs: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """The Neptune offline runs that can be read, and one problem line for each of the others."""
    readable, problems = [], []
    for run_dir in run_dirs:
        try:
            read_neptune_offline(run_dir)
            readable.append(run_dir)
        except NeptuneRunError as error:
            problems.append(f"{error} (skipped)")
    return readable, problems


def import_neptune_run(client: Any, experiment_id: str, run_dir: Path) -> str | None:
    """Log one Neptune offline run (parameters, tags, description, per-epoch series, summary numbers) as an MLflow
    run; None when the store already has it."""
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    if tagged_run_exists(client, experiment_id, NEPTUNE_RUN_TAG, run_dir.name):
        return None
    values, series = read_neptune_offline(run_dir)
    params = {key.removeprefix("parameters/").replace("/", "."): value
              for key, value in values.items() if key.startswith("parameters/")}
    summary = {key.removeprefix("summary/"): float(value) for key, value in values.items()
               if key.startswith("summary/") and is_number(value)}
    metrics = {key.removeprefix("metrics/"): points for key, points in series.items() if key.startswith("metrics/")}
    tags = {MLFLOW_RUN_NAME: str(values.get("sys/name") or run_dir.name), NEPTUNE_RUN_TAG: run_dir.name,
            "tags": ", ".join(values.get("sys/tags", [])), NOTE_TAG: str(values.get("sys/description") or "")}
    return log_recorded_run(client, experiment_id, tags, params, metrics, summary, "FINISHED")
