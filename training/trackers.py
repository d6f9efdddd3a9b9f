"""The trackers of a run: its record mirrored onto MLflow after each epoch and at its end (rank zero), the
TensorBoard and Neptune loggers with the run's parameters and best values, and the dashboard line printed after
training."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from training.neptune_logger import NeptuneLogger
from training.recorder import RunRecorder
from training.tensorboard import RunTensorBoardLogger
from utils.config import Config
from utils.config.loading import neptune_api_token
from utils.mlflow.dashboard import dashboard_line, open_dashboard_experiment
from utils.mlflow.mirror import changed_params, mirror_record
from utils.mlflow.store import mlflow_tracking_uri, mlflow_uri_problems, run_exists

logger = logging.getLogger(__name__)

NEPTUNE_SUMMARY = ("epochs_run", "stop_reason", "state", "duration_s", "multiply_adds", "parameters")


class RunTrackers(Callback):
    """What the trackers get of a run once its RunRecorder, the callback before this one, has written the records
    (rank zero only): the record mirrored onto MLflow after each epoch and at the run's end (log_to_mlflow), and
    the run's parameters and best values for the TensorBoard and Neptune loggers. A failing MLflow store is warned
    about once and then left alone: training goes on, and the records keep everything."""

    def __init__(self, config: Config, recorder: RunRecorder, params: Mapping[str, Any]):
        self.uri = mlflow_tracking_uri(config) if config.log_to_mlflow else None
        self.experiment = config.mlflow_experiment
        self.recorder = recorder
        self.params = dict(params)
        self.client: Any = None
        self.experiment_id: str | None = None
        self.run_id: str | None = None

    def open_mlflow(self) -> str | None:
        """Mirror the record onto its MLflow run as training starts (rank zero): summary.json's MLflow run when the
        store holds it (a resume), else a new one; its id (None without MLflow, or with a failing store)."""
        if self.uri is None:
            return None
        known = self.recorder.summary.get("mlflow_run_id")
        try:
            self.client, self.experiment_id = open_dashboard_experiment(self.uri, self.experiment)
            if known and not run_exists(self.client, known):
                logger.warning("MLflow run %s not found at %s: resuming into a new MLflow run", known, self.uri)
            elif known and (changed := changed_params(self.client, known, self.recorder.record())):
                logger.warning("MLflow keeps a run's first parameter values; changed on resume (see config.yml): %s",
                               ", ".join(changed))
        except Exception as error:  # any failure of the store or its connection
            self._stop_mirroring(error)
            return None
        self.run_id = known
        self.mirror()
        return self.run_id if self.uri else None

    def mirror(self) -> None:
        """Mirror the run's record as it is now onto its MLflow run (mirror_record), once it is open."""
        if self.uri is None or self.client is None:
            return
        try:
            self.run_id = mirror_record(self.client, self.experiment_id, self.recorder.record(), self.run_id)
        except Exception as error:  # any failure of the store or its connection
            self._stop_mirroring(error)

    def _stop_mirroring(self, error: Exception) -> None:
        logger.warning("MLflow tracking at %s failed, so this run logs no more to MLflow (training goes on; "
                       "metrics.csv and summary.json keep the records): %s", self.uri, error)
        self.uri = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for run_logger in trainer.loggers:
            if isinstance(run_logger, TensorBoardLogger):
                run_logger.log_hyperparams(self.params, metrics={"best_valid_acc": 0.0, "best_valid_loss": 0.0})
            else:
                run_logger.log_hyperparams(self.params)
        run_id = self.open_mlflow()  # the store is opened (first created) on rank zero only
        if run_id:
            self.recorder.note(mlflow_run_id=run_id)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.is_global_zero:
            self.mirror()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        summary = self.recorder.summary
        best = summary.get("best_valid_acc", {}).get("value")
        for run_logger in trainer.loggers:
            if isinstance(run_logger, TensorBoardLogger) and best is not None:
                best_loss = (summary.get("best") or {}).get("valid_loss")
                run_logger.log_metrics({"best_valid_acc": best, "best_valid_loss": best_loss}, trainer.global_step)
            if isinstance(run_logger, NeptuneLogger):
                run_logger.log_summary({key: summary.get(key) for key in NEPTUNE_SUMMARY})
        self.mirror()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.is_global_zero:
            self.mirror()


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
