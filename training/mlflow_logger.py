"""The MLflow logger of a training run (Lightning's, adapted to the thesis's table and to failing stores)."""

from __future__ import annotations

import logging
import time
from argparse import Namespace
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from utils.tracking.mlflow_store import MAX_PARAM_LENGTH, artifact_location, log_in_batches, mlflow_client, run_exists

logger = logging.getLogger(__name__)

LIGHTNING_STATUS = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED"}


class RunMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger for the thesis's table: parameters up to MLflow's 6,000 characters (Lightning's
    logger cuts them at 250), metrics stepped by the 1-based epoch of metrics.csv, the run's own end state.

    A failing tracking store (a server gone mid-run) is reported once and then left alone: training goes on.
    """

    def __init__(self, tracking_uri: str, experiment_name: str, tags: Mapping[str, str], run_id: str | None = None):
        super().__init__(experiment_name=experiment_name, tracking_uri=tracking_uri, tags=dict(tags),
                         artifact_location=artifact_location(tracking_uri), run_id=run_id)
        self.resumed = run_id is not None
        self.failed = False
        self._status: str | None = None

    def _safely(self, action: Callable[[], Any]) -> None:
        if self.failed:
            return
        try:
            action()
        except Exception as error:  # any failure of the store or its connection
            self.failed = True
            logger.warning("MLflow tracking at %s failed, so this run logs no more to MLflow (training goes on; "
                           "metrics.csv and summary.json keep the records): %s", self._tracking_uri, error)

    def start(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> str | None:
        """Create (or, on resume, reopen) the MLflow run with its parameters and tags; return its id (None on
        failure)."""
        self._safely(lambda: self._start(params, tags))
        return None if self.failed else self.run_id

    def _start(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        client = self.experiment
        if self.resumed:
            client.update_run(self.run_id, status="RUNNING")
        self._log_params(params)
        self._log_tags(tags)

    def _log_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        if tags:
            self.experiment.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Namespace) -> None:
        values = vars(params) if isinstance(params, Namespace) else dict(params)
        if values:
            self._safely(lambda: self._log_params(values))

    def _log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters the run lacks; MLflow keeps a logged value, so a changed one on resume is only warned."""
        from mlflow.entities import Param

        logged = self.experiment.get_run(self.run_id).data.params
        texts = {key: str(value)[:MAX_PARAM_LENGTH] for key, value in params.items()}
        changed = sorted(key for key, text in texts.items() if key in logged and logged[key] != text)
        if changed:
            logger.warning("MLflow keeps a run's first parameter values; changed on resume (see config.yml): %s",
                           ", ".join(f"{key}={texts[key]}" for key in changed))
        log_in_batches(self.experiment, self.run_id, params=[Param(key, text) for key, text in texts.items()
                                                             if key not in logged])

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = dict(metrics)
        epoch = values.pop("epoch", None)
        at = int(epoch) + 1 if epoch is not None else step
        self._safely(lambda: MLFlowLogger.log_metrics(self, values, at))

    def log_summary(self, values: Mapping[str, float]) -> None:
        """Log the summary columns (valid_acc_max, ..., epochs_last, duration_s), stepped by the epochs run."""
        from mlflow.entities import Metric

        stamp, step = int(time.time() * 1000), int(values.get("epochs_last", 0))
        metrics = [Metric(key, value, stamp, step) for key, value in values.items()]
        self._safely(lambda: self.experiment.log_batch(self.run_id, metrics=metrics))

    def end(self, status: str, summary: Mapping[str, float], tags: Mapping[str, str], files: Iterable[Path]) -> None:
        """Log the summary columns, the closing tags (state, stop reason) and the files as artifacts, then mark the
        run with status (FINISHED, ...)."""
        self._status = status
        self.log_summary(summary)
        self._safely(lambda: self._log_tags(tags))
        for path in files:
            self._safely(lambda path=path: self.experiment.log_artifact(self.run_id, str(path)))
        self._safely(lambda: self.experiment.set_terminated(self.run_id, self._status))

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Mark the run with Lightning's status unless end() has already marked it with the summary's state."""
        if self._initialized and self._status is None:
            final = LIGHTNING_STATUS.get(status, "FAILED")
            self._safely(lambda: self.experiment.set_terminated(self.run_id, final))


def existing_run_id(uri: str, run_id: str | None) -> str | None:
    """run_id when the tracking store holds that run (a resume continues it), else None (a new run)."""
    if not run_id:
        return None
    if run_exists(mlflow_client(uri), run_id):
        return run_id
    logger.warning("MLflow run %s not found at %s: resuming into a new MLflow run", run_id, uri)
    return None
