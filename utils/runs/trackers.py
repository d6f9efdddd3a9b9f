"""A run's MLflow values from its Config and records: the tracking URI and its checks, the run's name, tags,
status and summary metrics, and the parent run of a group of runs (a --seeds group, a study)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from utils.checks import is_number
from utils.config import Config
from utils.runs.dashboard import open_dashboard_experiment
from utils.runs.folders import MLFLOW_DB
from utils.runs.table import rounded
from utils.tracking.mlflow_store import (NOTE_TAG, PARENT_RUN_TAG, RUN_NAME_TAG, end_run, mlflow_client,
                                         mlflow_uri_problems, run_exists, start_run)

logger = logging.getLogger(__name__)

MLFLOW_STATUS = {"running": "RUNNING", "finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
RUN_DIR_TAG = "run_dir"
SEED_GROUP_TAG = "seed_group"
RUN_NAME_TIME = "%Y-%m-%d %H:%M:%S"


def mlflow_tracking_uri(config: Config) -> str:
    """mlflow_tracking_uri, or (null) the SQLite file <output_path>/mlflow.db as an absolute sqlite:/// URI."""
    if config.mlflow_tracking_uri:
        return str(config.mlflow_tracking_uri)
    return f"sqlite:///{Path(config.output_path).resolve() / MLFLOW_DB}"


def mlflow_problems(config: Config) -> list[str]:
    """With log_to_mlflow: the tracking URI's problems and an empty experiment name (checked before training)."""
    if not config.log_to_mlflow:
        return []
    problems = mlflow_uri_problems(mlflow_tracking_uri(config))
    if not config.mlflow_experiment.strip():
        problems.append("mlflow_experiment: empty; name the MLflow experiment, e.g. cars")
    return problems


def prepare_mlflow_experiment(config: Config) -> None:
    """With log_to_mlflow: create the tracking store and the experiment, with the dashboard's views, now (before
    workers race to create them)."""
    if config.log_to_mlflow:
        open_dashboard_experiment(mlflow_tracking_uri(config), config.mlflow_experiment)


def train_run_name(architecture: str, started: datetime, seeds: Sequence[int] = ()) -> str:
    """A train.py run's MLflow name, '<architecture> <time>', with its seed in a group ('seed 43') or, for the
    group's parent run, the group's seeds ('seeds 42, 43, 44')."""
    name = f"{architecture} {started:{RUN_NAME_TIME}}"
    if not seeds:
        return name
    return f"{name} seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def mlflow_status(state: Any) -> str:
    """The MLflow run status of a summary.json state."""
    return MLFLOW_STATUS.get(str(state), "FAILED")


def summary_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The table's result columns of a summary.json, as MLflow metrics rounded as the table shows them: best
    values, epochs run, duration."""
    values = {"valid_acc_max": (summary.get("best_valid_acc") or {}).get("value"),
              "train_acc_max": summary.get("best_train_acc"),
              "valid_loss_min": (summary.get("best") or {}).get("valid_loss"),
              "train_loss_min": summary.get("best_train_loss"),
              "epochs_last": summary.get("epochs_run"), "duration_s": summary.get("duration_s")}
    return {key: rounded(value) for key, value in values.items() if is_number(value) and not math.isnan(value)}


def run_tags(summary: Mapping[str, Any], tags: list[str], description: str | None, run_dir: Path) -> dict[str, str]:
    """MLflow tags of a run: its name (summary.json's run_name, else the run folder's), tags, description as the
    run's note, folder, seed group and parent run."""
    values = {RUN_NAME_TAG: str(summary.get("run_name") or run_dir.name), "tags": ", ".join(map(str, tags or [])),
              NOTE_TAG: str(description or ""), RUN_DIR_TAG: str(Path(run_dir).resolve())}
    if summary.get(SEED_GROUP_TAG):
        values[SEED_GROUP_TAG] = str(summary[SEED_GROUP_TAG])
    if summary.get("mlflow_parent_run_id"):
        values[PARENT_RUN_TAG] = str(summary["mlflow_parent_run_id"])
    return values






def open_group_run(config: Config, tags: Mapping[str, str], run_id: str | None = None) -> str | None:
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


def seed_group_state(states: Sequence[Any], runs: int) -> str:
    """A --seeds group's state from its runs' states: failed or interrupted when one is, finished when all are."""
    for state in ("failed", "interrupted"):
        if state in states:
            return state
    return "finished" if len(states) == runs and all(state == "finished" for state in states) else "interrupted"




def update_mlflow_state(config: Config, summary: Mapping[str, Any]) -> None:
    """Set an ended run's state and stop reason in MLflow after its records changed (a pruned study run)."""
    run_id = summary.get("mlflow_run_id")
    if not config.log_to_mlflow or not run_id:
        return
    uri = mlflow_tracking_uri(config)
    try:
        client = mlflow_client(uri)
        for key in ("state", "stop_reason"):
            client.set_tag(run_id, key, str(summary.get(key)))
    except Exception as error:  # any failure of the store or its connection: summary.json has it
        logger.warning("MLflow tracking at %s: run %s keeps its earlier state: %s", uri, run_id, error)
