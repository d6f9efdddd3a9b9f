"""Neptune offline runs (the folders neptune-client writes under .neptune/offline/) read and imported into MLflow
as runs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from utils.checks import is_number
from utils.output_files import links_problem
from utils.tracking.mlflow_store import NOTE_TAG, log_recorded_run, tagged_run_exists

NEPTUNE_RUN_TAG = "neptune_offline_run"


class NeptuneRunError(ValueError):
    """A Neptune offline folder that cannot be read safely; the message names the file or link at fault."""


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
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError,
                RecursionError) as error:  # RecursionError: a line nested deeper than Python parses
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
