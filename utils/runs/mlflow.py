"""Runs in MLflow after the fact: run folders and the thesis's recorded runs imported as MLflow runs, and the run
table read back from MLflow."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from utils.config import tracked_params
from utils.runs.dashboard import open_dashboard_experiment
from utils.runs.plots import plot_runs
from utils.runs.records import RunRecord, run_times_ms
from utils.runs.table import COLUMNS, mlflow_values, run_row
from utils.runs.thesis import ThesisRun, reference_record
from utils.runs.trackers import RUN_DIR_TAG, mlflow_status, run_tags, summary_metrics
from utils.tracking.mlflow_store import RUN_NAME_TAG, log_recorded_run, run_exists, tagged_run_exists
from utils.tracking.mlflow_view import DURATION
from utils.tracking.neptune_offline import import_neptune_run

THESIS_EXPERIMENT = "thesis"
THESIS_RUN_TAG = "thesis_run"  # the recorded run's id (C-50): an imported thesis run is not imported again

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
                series.setdefault(key, []).append((int(row["epoch"]), float(value)))
    return series


def import_run_folder(client: Any, experiment_id: str, run: RunRecord) -> str | None:
    """Log one run folder as an MLflow run; None when the store already has it (logged live or imported)."""
    run_dir = str(run.path.resolve())
    if run_exists(client, run.summary.get("mlflow_run_id")) or \
            tagged_run_exists(client, experiment_id, RUN_DIR_TAG, run_dir):
        return None
    config = {**run.config, "tags": run.config.get("tags") or run.summary.get("tags") or [],
              "description": run.config.get("description") or run.summary.get("description")}
    row = run_row(run)
    params = {**tracked_params(config), **{key: run.summary[key] for key in SUMMARY_PARAMS if key in run.summary},
              **mlflow_values(row, "params")}
    tags = {**run_tags(run.summary, config["tags"], config["description"], run.path), **mlflow_values(row, "tags")}
    with tempfile.TemporaryDirectory() as scratch:
        return log_recorded_run(client, experiment_id, tags, params, _series(run), summary_metrics(run.summary),
                                mlflow_status(run.summary.get("state")), run_artifacts(run, Path(scratch)),
                                run_times_ms(run.summary))


def import_thesis_run(client: Any, experiment_id: str, run: ThesisRun) -> str | None:
    """Log one recorded thesis run: its settings as parameters, its curves stepped by the 1-based epoch, the
    table's columns; None when the experiment already has it."""
    if tagged_run_exists(client, experiment_id, THESIS_RUN_TAG, run.id):
        return None
    record = reference_record(run)
    row = run_row(record)
    recorded = {key: value for key, value in tracked_params(record.config).items()
                if key.partition(".")[0] in record.config}  # the settings the thesis recorded, no others
    params = {**recorded, **mlflow_values(row, "params")}
    tags = {RUN_NAME_TAG: run.id, THESIS_RUN_TAG: run.id, "original_run_name": run.run_name,
            **mlflow_values(row, "tags")}
    return log_recorded_run(client, experiment_id, tags, params, _series(record), mlflow_values(row, "metrics"),
                            "FINISHED")


def import_thesis_runs(runs: Sequence[ThesisRun], uri: str) -> tuple[list[str], list[str]]:
    """Import recorded thesis runs into the experiment thesis; (imported, already there) run ids."""
    client, experiment_id = open_dashboard_experiment(uri, THESIS_EXPERIMENT)
    imported, present = [], []
    for run in runs:
        (imported if import_thesis_run(client, experiment_id, run) else present).append(run.id)
    return imported, present


def import_to_mlflow(run_records: Sequence[RunRecord], neptune_dirs: Sequence[Path], uri: str,
                     experiment: str) -> tuple[list[str], list[str]]:
    """Import run folders and Neptune offline runs into an MLflow experiment; (imported, already there) names."""
    client, experiment_id = open_dashboard_experiment(uri, experiment)
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
    if {"start_time", "end_time"} <= set(frame.columns):
        frame[DURATION] = (frame["end_time"] - frame["start_time"]).dt.total_seconds()
    names = {column.mlflow: column.name for column in COLUMNS if column.mlflow in frame.columns}
    return frame[list(names)].rename(columns=names)
