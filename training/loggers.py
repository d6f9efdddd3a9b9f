"""The loggers of a run from its Config: TensorBoard, Neptune and the MLflow logger (the run's name, tags and
parent run), and the dashboard line printed on rank zero after training."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger

from training.mlflow_logger import RunMLFlowLogger, existing_run_id
from training.neptune_logger import NeptuneLogger
from training.tensorboard import RunTensorBoardLogger
from utils.config import Config
from utils.config.loading import neptune_api_token
from utils.runs.dashboard import dashboard_line, open_dashboard_experiment
from utils.runs.trackers import mlflow_tracking_uri, run_tags
from utils.tracking.mlflow_store import mlflow_uri_problems

logger = logging.getLogger(__name__)


def make_mlflow_logger(config: Config, run_dir: Path, summary: Mapping[str, Any]) -> RunMLFlowLogger | None:
    """The run's MLflow logger (log_to_mlflow), continuing summary.json's MLflow run when the store has it; call
    on rank zero only, as it opens (and first creates) the tracking store and experiment."""
    if not config.log_to_mlflow:
        return None
    uri = mlflow_tracking_uri(config)
    try:
        open_dashboard_experiment(uri, config.mlflow_experiment)
        return RunMLFlowLogger(uri, config.mlflow_experiment,
                               run_tags(summary, config.tags, config.description, run_dir),
                               existing_run_id(uri, summary.get("mlflow_run_id")))
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


def announce_dashboard(config: Config) -> None:
    """With log_to_mlflow, print (on rank zero) the line with the URL of the run's experiment on the dashboard."""
    from pytorch_lightning.utilities import rank_zero_only

    if not config.log_to_mlflow or rank_zero_only.rank != 0:
        return
    uri = mlflow_tracking_uri(config)
    problems = mlflow_uri_problems(uri)  # a server gone during the run (warned about then) is not waited for
    if problems:
        logger.info("no dashboard URL: %s", problems[0])
        return
    try:
        line = dashboard_line(uri, config.mlflow_experiment)
    except Exception as error:  # the store failed just now: the records have it all
        logger.warning("no dashboard URL: the MLflow store at %s failed: %s", uri, error)
        return
    print(line, flush=True)
