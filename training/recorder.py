"""The run's records kept up to date while it trains: metrics.csv, summary.json and config.yml (the trackers
mirror them: training.trackers)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.exceptions import SIGTERMException

from utils.config import Config, config_for_records, save_config
from utils.output_files import FileWriteError
from utils.runs.folders import TIMESTAMP, unused_path
from utils.runs.record_types import SUMMARY_TYPES, type_problem
from utils.runs.records import (CONFIG, METRIC_COLUMNS, SUMMARY, RunRecord, RunRecordError, read_json, read_metrics,
                                read_recorded_config, write_json, write_metrics)
from utils.timing import format_duration

logger = logging.getLogger(__name__)


def write_run_config(config: Config, run_dir: Path) -> None:
    """Write config.yml (no token); on resume with changed settings keep the previous file beside it."""
    path = run_dir / CONFIG
    if path.is_file():
        previous = read_recorded_config(path)
        if previous == config_for_records(config):
            return
        kept = unused_path(run_dir / f"config.before_resume_{datetime.now():{TIMESTAMP}}.yml")
        path.rename(kept)
        logger.info("settings changed on resume: previous configuration kept as %s", kept)
    save_config(config, path)


def _metric(metrics: Mapping[str, Any], key: str) -> float:
    value = metrics.get(key)
    return float(value) if value is not None else math.nan


class RunRecorder(Callback):
    """Keeps metrics.csv and summary.json of a run up to date after every epoch, and on its end or interruption."""

    def __init__(self, run_dir: Path, info: Mapping[str, Any], resumed_from: Path | None = None,
                 config: Mapping[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        self.config = dict(config or {})  # as config.yml records it
        self.resumed_from = resumed_from
        self.rows: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = self._initial_summary(dict(info))
        self._session_start = time.time()
        self._previous_duration = float(self.summary.get("duration_s") or 0.0)
        self._epoch_start = 0.0

    def _initial_summary(self, info: dict[str, Any]) -> dict[str, Any]:
        path = self.run_dir / SUMMARY
        if self.resumed_from is not None and path.is_file():
            summary = read_json(path)
            if problem := type_problem(summary, SUMMARY_TYPES):
                raise RunRecordError(f"{path}: a value of another type than train.py writes, {problem}")
            summary.update(info)
            summary.setdefault("resumed", []).append(
                {"at": datetime.now().isoformat(timespec="seconds"), "checkpoint": str(self.resumed_from)})
            return summary
        return {**info, "started": datetime.now().isoformat(timespec="seconds"), "duration_s": 0.0}

    def start(self) -> None:
        """Write the first summary.json before any data or model work (call on the rank-zero process)."""
        self.summary.update(state="running", stop_reason=None)
        self._save_summary()

    def note(self, **values: Any) -> None:
        """Add values to summary.json (the run's MLflow run id) and write it (rank zero)."""
        self.summary.update(values)
        self._save_summary()

    def record(self) -> RunRecord:
        """The run's record as the files hold it now."""
        return RunRecord(self.run_dir, dict(self.summary), self.config, list(self.rows))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = trainer.strategy.root_device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        self.summary["device"] = {"type": device.type, "name": name, "devices": trainer.num_devices,
                                  "nodes": trainer.num_nodes, "strategy": type(trainer.strategy).__name__,
                                  "precision": str(trainer.precision)}
        if trainer.is_global_zero:
            self._save_summary()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:  # after a resume, current_epoch is the number of epochs done
            self.rows = [row for row in read_metrics(self.run_dir) if row["epoch"] <= trainer.current_epoch]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1, **{key: _metric(metrics, key) for key in METRIC_COLUMNS[1:]}}
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        write_metrics(self.run_dir, self.rows)
        self._update_results()
        self._save_summary()
        logger.info("epoch %d took %s: %s", row["epoch"], format_duration(time.perf_counter() - self._epoch_start),
                    ", ".join(f"{key} {row[key]:.4g}" for key in METRIC_COLUMNS[1:]))

    def _update_results(self) -> None:
        rows = [row for row in self.rows if not math.isnan(row["valid_loss"])]
        if not rows:
            return
        best = min(rows, key=lambda row: row["valid_loss"])
        best_acc = max(rows, key=lambda row: row["valid_acc"])
        self.summary.update(
            epochs_run=self.rows[-1]["epoch"], best=dict(best), last=dict(self.rows[-1]),
            best_valid_acc={"value": best_acc["valid_acc"], "epoch": best_acc["epoch"]},
            best_train_acc=max(row["train_acc"] for row in rows),
            best_train_loss=min(row["train_loss"] for row in rows))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stopper = trainer.early_stopping_callback
        stopped = stopper is not None and stopper.stopped_epoch > 0
        self.summary.update(state="finished", stop_reason="early_stopping" if stopped else "max_epochs")
        if trainer.is_global_zero:
            self._save_summary()

    def end_untrained(self, reason: str, trainer: pl.Trainer) -> None:
        """Record a fit that returned without training an epoch (state failed, with the reason)."""
        self.summary.update(state="failed", stop_reason=reason)
        logger.error("run %s: %s", self.run_dir, reason)
        if trainer.is_global_zero:
            self._save_summary()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        interrupted = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        reason = "SIGTERM" if isinstance(exception, SIGTERMException) else "interrupted"
        self.summary.update(state="interrupted" if interrupted else "failed",
                            stop_reason=reason if interrupted else "error")
        if not interrupted:
            self.summary["error"] = f"{type(exception).__name__}: {exception}"
        if trainer.is_global_zero:
            try:
                self._save_summary()
            except FileWriteError as error:  # the disk is still full: the run's own error says the rest
                logger.error("%s", error)

    def _save_summary(self) -> None:
        self.summary["duration_s"] = round(self._previous_duration + time.time() - self._session_start, 3)
        self.summary["duration"] = format_duration(self.summary["duration_s"])
        write_json(self.run_dir / SUMMARY, self.summary)
