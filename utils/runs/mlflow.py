"""Runs in MLflow after the fact: run folders imported as MLflow runs, and the run table read back from MLflow."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from utils.config import tracked_params
from utils.runs.plots import plot_runs
from utils.runs.records import RunRecord
from utils.runs.table import COLUMNS
from utils.runs.trackers import RUN_DIR_TAG, SEED_GROUP_TAG, mlflow_status, run_tags, summary_metrics
from utils.tracking.mlflow_store import log_recorded_run, open_experiment, run_exists, tagged_run_exists
from utils.tracking.neptune import import_neptune_run

SUMMARY_PARAMS = ("runtime", "parameters", "multiply_adds", "num_classes")


def run_artifacts(run: RunRecord, scratch: Path) -> list[Path]:
    """A run's files for MLflow: config.yml, summary.json and curves.png (drawn into scratch)."""
    curves = scratch / "curves.png"
    plot_runs([run], curves)
    files = [run.path / "config.yml", run.path / "summary.json", curves]
    return [path for path in files if path.is_file()]


def _series(run: RunRecord) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for row in run.metrics:
        for key, value in row.items():
            if key != "epoch" and value == value:  # NaN: an empty cell
                series.setdefault(key, []).append((row["epoch"], float(value)))
    return series


def import_run_folder(client: Any, experiment_id: str, run: RunRecord) -> str | None:
    """Log one run folder as an MLflow run; None when the store already has it (logged live or imported)."""
    run_dir = str(run.path.resolve())
    if run_exists(client, run.summary.get("mlflow_run_id")) or \
            tagged_run_exists(client, experiment_id, RUN_DIR_TAG, run_dir):
        return None
    config = {**run.config, "tags": run.config.get("tags") or run.summary.get("tags") or [],
              "description": run.config.get("description") or run.summary.get("description")}
    params = {**tracked_params(config), **{key: run.summary[key] for key in SUMMARY_PARAMS if key in run.summary}}
    tags = run_tags(config["tags"], config["description"], run.path, run.summary.get(SEED_GROUP_TAG))
    with tempfile.TemporaryDirectory() as scratch:
        return log_recorded_run(client, experiment_id, tags, params, _series(run), summary_metrics(run.summary),
                                mlflow_status(run.summary.get("state")), run_artifacts(run, Path(scratch)))


def import_to_mlflow(run_records: Sequence[RunRecord], neptune_dirs: Sequence[Path], uri: str,
                     experiment: str) -> tuple[list[str], list[str]]:
    """Import run folders and Neptune offline runs into an MLflow experiment; (imported, already there) names."""
    client, experiment_id = open_experiment(uri, experiment)
    imported, present = [], []
    for run in run_records:
        (imported if import_run_folder(client, experiment_id, run) else present).append(str(run.path))
    for run_dir in neptune_dirs:
        (imported if import_neptune_run(client, experiment_id, run_dir) else present).append(str(run_dir))
    return imported, present


def runs_table(uri: str, experiment: str) -> Any:
    """The run table of an MLflow experiment as a pandas DataFrame (for notebooks), newest run first."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    frame = mlflow.search_runs(experiment_names=[experiment], order_by=["start_time DESC"])
    names = {column.mlflow: column.name for column in COLUMNS if column.mlflow in frame.columns}
    return frame[list(names)].rename(columns=names)
