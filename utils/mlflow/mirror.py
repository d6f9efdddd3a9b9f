"""A run's record mirrored onto MLflow. One function, ``mirror_record``, gives an MLflow run the name, tags,
parameters, metric values, status and times of a run's record (config.yml, metrics.csv and summary.json, or a thesis
run's record), whether training calls it after each epoch or an import calls it afterwards. Also: Neptune offline
runs imported, the parent runs of groups (a --seeds group, a study), and the run table read back from MLflow."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.checks import is_number
from utils.config import tracked_params
from utils.mlflow.dashboard import open_dashboard_experiment
from utils.mlflow.store import (MAX_PARAM_LENGTH, NOTE_TAG, PARENT_RUN_TAG, RUN_NAME_TAG, end_run, log_in_batches,
                                mlflow_client, mlflow_tracking_uri, open_experiment, run_exists, start_run,
                                tagged_run_exists)
from utils.runs.folders import BEST_CHECKPOINT, LAST_CHECKPOINT
from utils.runs.neptune_offline import read_neptune_offline
from utils.runs.records import CONFIG, SUMMARY, RunRecord, read_run, run_times_ms
from utils.runs.table import COLUMNS, DURATION, mlflow_values, rounded, run_row
from utils.runs.thesis import THESIS_RUN, ThesisRun, reference_record

logger = logging.getLogger(__name__)

MLFLOW_STATUS = {"running": "RUNNING", "finished": "FINISHED", "pruned": "FINISHED", "failed": "FAILED",
                 "interrupted": "KILLED"}
RUN_DIR_TAG = "run_dir"
SEED_GROUP_TAG = "seed_group"
THESIS_RUN_TAG = THESIS_RUN  # the recorded run's id (C-50): an imported thesis run is not imported again
NEPTUNE_RUN_TAG = "neptune_offline_run"
IMPORTED_STATE = "imported, no duration recorded"  # the state column of a run whose record has no duration
SUMMARY_PARAMS = ("runtime", "parameters", "multiply_adds", "num_classes")
Series = dict[str, list[tuple[int, float]]]  # metric name -> (step, value) points


@dataclass
class RunValues:
    """What an MLflow run shows: its tags (its name among them), parameters, per-step metric series, summary
    metrics (stepped by the last step), status, and start and end times in ms when they are known."""

    tags: dict[str, str]
    params: dict[str, Any]
    series: Series
    metrics: dict[str, float]
    status: str
    times_ms: tuple[int, int] | None = None


def mlflow_status(state: Any) -> str:
    """The MLflow run status of a summary.json state."""
    return MLFLOW_STATUS.get(str(state), "FAILED")


def _record_tags(record: RunRecord) -> dict[str, str]:
    summary = record.summary
    tags = {RUN_NAME_TAG: str(summary.get("run_name") or record.path.name)}
    if summary.get(THESIS_RUN):
        tags.update({THESIS_RUN_TAG: str(summary[THESIS_RUN]), "original_run_name": str(summary["original_run_name"])})
    else:
        tags[RUN_DIR_TAG] = str(Path(record.path).resolve())
    if summary.get(SEED_GROUP_TAG):
        tags[SEED_GROUP_TAG] = str(summary[SEED_GROUP_TAG])
    if summary.get("mlflow_parent_run_id"):
        tags[PARENT_RUN_TAG] = str(summary["mlflow_parent_run_id"])
    return tags


def _record_params(record: RunRecord) -> dict[str, Any]:
    recorded = {key: value for key, value in tracked_params(record.config).items()
                if key.partition(".")[0] in record.config}  # a thesis record's own settings, no defaults
    sizes = {key: record.summary[key] for key in SUMMARY_PARAMS if key in record.summary}
    normalization = record.summary.get("normalization")
    if isinstance(normalization, Mapping) and normalization.get("source"):
        sizes["normalization_source"] = normalization["source"]
    return {**recorded, **sizes}


def _series(record: RunRecord) -> Series:
    series: Series = {}
    for row in record.metrics:
        for key, value in row.items():
            if key != "epoch" and is_number(value) and not math.isnan(value):
                series.setdefault(key, []).append((int(row["epoch"]), float(value)))
    return series


def record_values(record: RunRecord) -> RunValues:
    """What MLflow shows of a run record: its name, folder (or thesis run id), seed group and parent run as tags;
    its tracked settings, size and runtime as parameters; metrics.csv as series stepped by the 1-based epoch; the run
    table's columns as parameters, tags and metrics (as the table shows them), its duration; its state as status."""
    row = run_row(record)
    tags, metrics = {**_record_tags(record), **mlflow_values(row, "tags")}, mlflow_values(row, "metrics")
    duration = record.summary.get("duration_s")
    if is_number(duration):
        metrics["duration_s"] = rounded(duration)
    elif record.summary.get("state") != "running":  # a record without times of its own: not the import's
        tags["state"] = IMPORTED_STATE
    return RunValues(tags, {**_record_params(record), **mlflow_values(row, "params")}, _series(record), metrics,
                     mlflow_status(record.summary.get("state")), run_times_ms(record.summary))


def record_files(record: RunRecord) -> list[Path]:
    """The files an ended run keeps in MLflow: config.yml, summary.json, and its checkpoints when its configuration
    says mlflow_log_checkpoints."""
    names = [CONFIG, SUMMARY] + ([BEST_CHECKPOINT, LAST_CHECKPOINT] if record.config.get("mlflow_log_checkpoints")
                                 else [])
    return [record.path / name for name in names if (record.path / name).is_file()]


def _logged_steps(client: Any, run: Any, series: Series) -> set[int]:
    key = next(iter(series), None)
    if key is None or key not in run.data.metrics:
        return set()
    return {metric.step for metric in client.get_metric_history(run.info.run_id, key)}


def write_run(client: Any, experiment_id: str, values: RunValues, run_id: str | None = None,
              files: Iterable[Path] = ()) -> str:
    """Make an MLflow run show values: run_id's run when the store holds it, else a new one. It gets the parameters
    it lacks (MLflow keeps a parameter's first value), the series' steps it lacks, the summary metrics, the tags,
    the files as artifacts and the status, with the end time once ended; its id."""
    from mlflow.entities import Metric, Param, RunTag

    start_ms, end_ms = values.times_ms or (None, None)
    run = client.get_run(run_id) if run_exists(client, run_id) else \
        client.create_run(experiment_id, start_time=start_ms, tags=values.tags)
    run_id = run.info.run_id
    stamp = int(time.time() * 1000)
    params = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in values.params.items()
              if key not in run.data.params]
    logged = _logged_steps(client, run, values.series)
    metrics = [Metric(key, value, stamp, step) for key, points in values.series.items()
               for step, value in points if step not in logged]
    last = max((step for points in values.series.values() for step, _ in points), default=0)
    log_in_batches(client, run_id, params, metrics + [Metric(key, value, stamp, last)
                                                      for key, value in values.metrics.items()])
    client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in values.tags.items()])
    for path in files:
        client.log_artifact(run_id, str(path))
    if values.status != "RUNNING" and start_ms is not None and end_ms is None:  # ended, no end time recorded
        client.update_run(run_id, status=values.status)
    elif values.status != "RUNNING":
        client.set_terminated(run_id, values.status, end_time=end_ms)
    elif run.info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")
    return run_id


def mirror_record(client: Any, experiment_id: str, record: RunRecord, run_id: str | None = None) -> str:
    """Mirror a run's record onto MLflow (record_values): onto run_id's run when the store holds it, else onto a
    new one, with the record's files once the run has ended; the MLflow run's id. Training calls it after each
    epoch (rank zero), imports once: the same names, tags, parameters and values either way."""
    values = record_values(record)
    return write_run(client, experiment_id, values, run_id, record_files(record) if values.status != "RUNNING" else [])


def changed_params(client: Any, run_id: str, record: RunRecord) -> list[str]:
    """'key=value' of the record's parameters that differ from those the MLflow run keeps (a resume with changed
    settings: MLflow keeps a parameter's first value)."""
    logged = client.get_run(run_id).data.params
    texts = {key: str(value)[:MAX_PARAM_LENGTH] for key, value in record_values(record).params.items()}
    return [f"{key}={text}" for key, text in sorted(texts.items()) if key in logged and logged[key] != text]


def mirror_run_folder(config: Any, run_dir: Path) -> None:
    """Mirror a run folder onto its MLflow run again after its records changed (a pruned study run); a failing
    store is warned about (summary.json has it all)."""
    record = read_run(run_dir)
    run_id = record.summary.get("mlflow_run_id")
    if not config.log_to_mlflow or not run_id:
        return
    uri = mlflow_tracking_uri(config)
    try:
        client, experiment_id = open_experiment(uri, config.mlflow_experiment)
        mirror_record(client, experiment_id, record, run_id)
    except Exception as error:  # any failure of the store or its connection: summary.json has it
        logger.warning("MLflow tracking at %s: run %s keeps its earlier state: %s", uri, run_id, error)


def neptune_values(run_dir: Path) -> RunValues:
    """What MLflow shows of a Neptune offline run: its parameters, tags, description, per-epoch series and summary
    numbers."""
    values, series = read_neptune_offline(run_dir)
    params = {key.removeprefix("parameters/").replace("/", "."): value
              for key, value in values.items() if key.startswith("parameters/")}
    summary = {key.removeprefix("summary/"): float(value) for key, value in values.items()
               if key.startswith("summary/") and is_number(value)}
    metrics = {key.removeprefix("metrics/"): list(points) for key, points in series.items()
               if key.startswith("metrics/")}
    tags = {RUN_NAME_TAG: str(values.get("sys/name") or run_dir.name), NEPTUNE_RUN_TAG: run_dir.name,
            "tags": ", ".join(values.get("sys/tags", [])), NOTE_TAG: str(values.get("sys/description") or "")}
    return RunValues(tags, params, metrics, summary, "FINISHED")


def import_run_folder(client: Any, experiment_id: str, run: RunRecord) -> str | None:
    """Mirror one run folder onto a new MLflow run; None when the store already has it (logged live or imported)."""
    if run_exists(client, run.summary.get("mlflow_run_id")) or \
            tagged_run_exists(client, experiment_id, RUN_DIR_TAG, str(run.path.resolve())):
        return None
    return mirror_record(client, experiment_id, run)


def import_thesis_run(client: Any, experiment_id: str, run: ThesisRun) -> str | None:
    """Mirror one recorded thesis run (its record: settings, curves stepped by the 1-based epoch, the table's
    columns) onto a new MLflow run; None when the experiment already has it."""
    if tagged_run_exists(client, experiment_id, THESIS_RUN_TAG, run.id):
        return None
    return mirror_record(client, experiment_id, reference_record(run))


def import_neptune_run(client: Any, experiment_id: str, run_dir: Path) -> str | None:
    """Log one Neptune offline run as an MLflow run; None when the store already has it."""
    if tagged_run_exists(client, experiment_id, NEPTUNE_RUN_TAG, run_dir.name):
        return None
    return write_run(client, experiment_id, neptune_values(run_dir))


def import_to_mlflow(run_records: Sequence[RunRecord], neptune_dirs: Sequence[Path], thesis_runs: Sequence[ThesisRun],
                     uri: str, experiment: str) -> tuple[list[str], list[str]]:
    """Import run folders, Neptune offline runs and recorded thesis runs into one MLflow experiment, the thesis's
    beside the user's in one table; (imported, already there) names."""
    client, experiment_id = open_dashboard_experiment(uri, experiment)
    imported, present = [], []
    for run in run_records:
        (imported if import_run_folder(client, experiment_id, run) else present).append(str(run.path))
    for run_dir in neptune_dirs:
        (imported if import_neptune_run(client, experiment_id, run_dir) else present).append(str(run_dir))
    for thesis_run in thesis_runs:
        (imported if import_thesis_run(client, experiment_id, thesis_run) else present).append(thesis_run.id)
    return imported, present


def open_group_run(config: Any, tags: Mapping[str, str], run_id: str | None = None) -> str | None:
    """With log_to_mlflow: the MLflow parent run of a group of runs (a --seeds group, a study), marked running:
    run_id again when the store holds it (a resumed study), else a new run. None, with a warning, when the store
    fails: the group's runs are then logged without a parent."""
    if not config.log_to_mlflow:
        return None
    uri = mlflow_tracking_uri(config)
    try:
        client, experiment_id = open_dashboard_experiment(uri, config.mlflow_experiment)
        if run_exists(client, run_id):
            client.update_run(run_id, status="RUNNING")
            client.set_tag(run_id, "state", "running")
            return run_id
        return start_run(client, experiment_id, {**tags, "state": "running"})
    except Exception as error:  # any failure of the store or its connection
        logger.warning("MLflow tracking at %s failed to open the group's parent run; its runs are logged without "
                       "one: %s", uri, error)
        return None


def close_group_run(uri: str, run_id: str | None, state: str, params: Mapping[str, Any],
                    metrics: Mapping[str, float], tags: Mapping[str, str], end_time_ms: int | None = None) -> None:
    """End a group's parent run with its closing values and state, at end_time_ms (default: now; a failing store
    is warned about)."""
    if run_id is None:
        return
    try:
        end_run(mlflow_client(uri), run_id, mlflow_status(state), params, metrics, {**tags, "state": state},
                end_time_ms)
    except Exception as error:  # any failure of the store or its connection
        logger.warning("MLflow tracking at %s failed to close the group's parent run %s: %s", uri, run_id, error)


def store_files(uri: str, run_id: str, files: Iterable[Path]) -> None:
    """Store files as artifacts of an MLflow run (a study's report files; a failing store is warned about)."""
    try:
        client = mlflow_client(uri)
        for path in files:
            client.log_artifact(run_id, str(path))
    except Exception as error:  # any failure of the store or its connection: the files are on disk
        logger.warning("MLflow tracking at %s: the files were not stored with run %s: %s", uri, run_id, error)


def runs_table(uri: str, experiment: str) -> Any:
    """The run table of an MLflow experiment as a pandas DataFrame (for notebooks), newest run first."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    frame = mlflow.search_runs(experiment_names=[experiment], order_by=["start_time DESC"])
    if {"start_time", "end_time"} <= set(frame.columns):
        frame[DURATION] = (frame["end_time"] - frame["start_time"]).dt.total_seconds()
    names = {column.mlflow: column.name for column in COLUMNS if column.mlflow in frame.columns}
    return frame[list(names)].rename(columns=names)
