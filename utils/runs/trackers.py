"""The trackers of a run, from its Config: TensorBoard, Neptune and the MLflow logger, and the checks of the
MLflow settings."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger

from utils.checks import is_number
from utils.config import Config
from utils.config.loading import neptune_api_token
from utils.runs.folders import MLFLOW_DB
from utils.tracking.mlflow_logger import RunMLFlowLogger, existing_run_id
from utils.tracking.mlflow_store import NOTE_TAG, mlflow_uri_problems, open_experiment
from utils.tracking.neptune import NeptuneLogger
from utils.tracking.tensorboard import RunTensorBoardLogger

logger = logging.getLogger(__name__)

MLFLOW_STATUS = {"running": "RUNNING", "finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
RUN_DIR_TAG = "run_dir"
SEED_GROUP_TAG = "seed_group"


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
    """With log_to_mlflow: create the tracking store and the experiment now (before workers race to create them)."""
    if config.log_to_mlflow:
        open_experiment(mlflow_tracking_uri(config), config.mlflow_experiment)


def mlflow_status(state: Any) -> str:
    """The MLflow run status of a summary.json state."""
    return MLFLOW_STATUS.get(str(state), "FAILED")


def summary_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The table's result columns of a summary.json, as MLflow metrics: best values, epochs run, duration."""
    values = {"valid_acc_max": (summary.get("best_valid_acc") or {}).get("value"),
              "train_acc_max": summary.get("best_train_acc"),
              "valid_loss_min": (summary.get("best") or {}).get("valid_loss"),
              "train_loss_min": summary.get("best_train_loss"),
              "epochs_last": summary.get("epochs_run"), "duration_s": summary.get("duration_s")}
    return {key: float(value) for key, value in values.items() if is_number(value) and not math.isnan(value)}


def run_tags(tags: list[str], description: str | None, run_dir: Path, seed_group: str | None = None) -> dict[str, str]:
    """MLflow tags of a run: its name (the run folder's), tags, description as the run's note, folder, seed group."""
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    values = {MLFLOW_RUN_NAME: run_dir.name, "tags": ", ".join(map(str, tags or [])), NOTE_TAG: str(description or ""),
              RUN_DIR_TAG: str(Path(run_dir).resolve())}
    if seed_group:
        values[SEED_GROUP_TAG] = seed_group
    return values


def make_mlflow_logger(config: Config, run_dir: Path, run_id: str | None = None,
                       seed_group: str | None = None) -> RunMLFlowLogger | None:
    """The run's MLflow logger (log_to_mlflow), continuing run_id when the store has it; call on rank zero only,
    as it opens (and first creates) the tracking store."""
    if not config.log_to_mlflow:
        return None
    uri = mlflow_tracking_uri(config)
    try:
        return RunMLFlowLogger(uri, config.mlflow_experiment,
                               run_tags(config.tags, config.description, run_dir, seed_group),
                               existing_run_id(uri, run_id))
    except Exception as error:  # the store went away since the configuration check
        logger.warning("MLflow tracking at %s unavailable, training without it: %s", uri, error)
        return None


def make_loggers(config: Config, run_dir: Path) -> list[Logger]:
    """TensorBoard under <run_dir>/tensorboard (log_to_tensorboard) and Neptune (log_to_neptune)."""
    loggers: list[Logger] = []
    if config.log_to_tensorboard:
        loggers.append(RunTensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="",
                                            default_hp_metric=False))
    if config.log_to_neptune:
        loggers.append(NeptuneLogger(
            project=f"{config.neptune_username}/{config.neptune_project_name}", api_token=neptune_api_token(config),
            mode=config.neptune_mode, tags=config.tags, description=config.description or "", name=run_dir.name))
    return loggers
