"""Neptune offline runs: the folders neptune-client writes under .neptune/offline/, found and read safely (their
import into MLflow: utils.mlflow.mirror)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from utils.output_files import links_problem


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
