"""Training runs: Trainer settings and their checks, the run-record callback, seeds.

Works on plain objects handed over by train.py (a configuration dict, a LightningDataModule, a LightningModule),
so it never imports datasets/ or models/.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from utils.configuration import config_for_records, save_config
from utils.devices import cuda_problems, resolve_accelerator
from utils.run_comparison import stat_of
from utils.run_folders import TIMESTAMP, unused_path, write_json
from utils.run_folders import read_metrics as read_metrics_file
from utils.timing import format_duration
from utils.tracking import NeptuneLogger, RunMLFlowLogger, end_mlflow_run, make_loggers, make_mlflow_logger

logger = logging.getLogger(__name__)

METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "valid_acc_top5", "lr")
DEFAULT_PATIENCE = 15


def runtime_name() -> str:
    """'colab' inside Google Colab, else 'local'."""
    return "colab" if "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ else "local"


def git_commit(repo_dir: str | os.PathLike) -> str | None:
    """The checked-out commit of repo_dir, or None outside a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True,
                                timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def early_stopping_patience(cfg: Mapping[str, Any]) -> int:
    """early_stopping_patience, else 3x the ReduceLROnPlateau patience (torch default 10), else 15."""
    if cfg.get("early_stopping_patience") is not None:
        return int(cfg["early_stopping_patience"])
    if cfg.get("lr_scheduler") == "ReduceLROnPlateau":
        return 3 * int((cfg.get("lr_scheduler_params") or {}).get("patience", 10))
    return DEFAULT_PATIENCE


# Set by the launchers that start one process per machine (torchrun, SLURM, LSF, manual multi-node DDP).
MULTI_NODE_ENV = ("MASTER_ADDR", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "LSB_JOBID")


def trainer_problems(cfg: Mapping[str, Any]) -> list[str]:
    """What Lightning would refuse at the start of training: accelerator, devices, strategy, precision, nodes.

    A request for a CUDA GPU that torch cannot serve gets one explanation (cuda_problems). Otherwise it builds
    (and discards) a Trainer of these settings: it checks them against this machine and the installed packages
    without touching any data.
    """
    problems = cuda_problems(cfg)
    if problems:  # instead of Lightning's "No supported gpu backend found!"
        return problems
    if cfg["num_nodes"] > 1 and not any(os.environ.get(name) for name in MULTI_NODE_ENV):
        return [f"num_nodes: {cfg['num_nodes']} machines need a multi-machine launch (torchrun, SLURM, or "
                "MASTER_ADDR/MASTER_PORT/NODE_RANK set on each machine); on one machine use num_nodes: 1"]
    settings = {key: cfg[key] for key in ("devices", "strategy", "num_nodes", "precision")}
    lightning_log = logging.getLogger("pytorch_lightning")
    level = lightning_log.level
    lightning_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pl.Trainer(accelerator=cfg["accelerator"], **settings, logger=False, enable_checkpointing=False,
                       enable_progress_bar=False, enable_model_summary=False)
    except Exception as error:  # Lightning raises several types, each naming the setting
        shown = ", ".join(f"{key}={value!r}" for key, value in {"accelerator": cfg["accelerator"], **settings}.items())
        return [f"accelerator/devices/strategy/num_nodes/precision ({shown}): {error}"]
    finally:
        lightning_log.setLevel(level)
    return []


def trainer_kwargs(cfg: Mapping[str, Any], run_dir: Path, callbacks: Sequence[Callback],
                   loggers: Sequence[Logger]) -> dict[str, Any]:
    """Keyword arguments of pl.Trainer for a run."""
    accelerator = resolve_accelerator(cfg)
    return {
        "max_epochs": cfg["num_epochs"], "accelerator": accelerator, "devices": cfg["devices"],
        "strategy": cfg["strategy"], "num_nodes": cfg["num_nodes"], "precision": cfg["precision"],
        "deterministic": "warn" if accelerator == "cpu" else None,
        "benchmark": cfg["cudnn_benchmark"] if accelerator != "cpu" else None,
        "callbacks": list(callbacks), "logger": list(loggers) if loggers else False,
        "default_root_dir": str(run_dir), "log_every_n_steps": 1,
    }


def draw_seed() -> int:
    """A fresh seed for runs configured with seed: null."""
    return random.SystemRandom().randrange(2**31)


def seeds_to_run(seed: int | None, requested: Sequence[int] | None) -> list[int]:
    """The configured seed (drawn when null), N consecutive seeds from it, or the listed seeds."""
    base = draw_seed() if seed is None else seed
    if not requested:
        return [base]
    if len(requested) == 1:
        return [base + offset for offset in range(requested[0])]
    return list(requested)


def write_run_config(cfg: Mapping[str, Any], run_dir: Path) -> None:
    """Write config.yml (no token); on resume with changed settings keep the previous file beside it."""
    path = run_dir / "config.yml"
    if path.is_file():
        previous = yaml.safe_load(path.read_text(encoding="utf-8"))
        if previous == config_for_records(cfg):
            return
        kept = unused_path(run_dir / f"config.before_resume_{datetime.now():{TIMESTAMP}}.yml")
        path.rename(kept)
        logger.info("settings changed on resume: previous configuration kept as %s", kept)
    save_config(cfg, path)


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a run's metrics.csv as numbers (epoch as int, empty cells as NaN); [] before its first epoch."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return []
    return [{key: int(value) if key == "epoch" else (math.nan if value is None else value)
             for key, value in row.items()} for row in read_metrics_file(path)]


def write_metrics(run_dir: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write metrics.csv (one row per epoch) atomically (a link at the partial file's name is replaced)."""
    path = run_dir / "metrics.csv"
    partial = path.with_suffix(".csv.partial")
    partial.unlink(missing_ok=True)
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(path)


def _metric(metrics: Mapping[str, Any], key: str) -> float:
    value = metrics.get(key)
    return float(value) if value is not None else math.nan


class RunRecorder(Callback):
    """Keeps metrics.csv and summary.json of a run up to date after every epoch, and on its end or interruption."""

    def __init__(self, run_dir: Path, info: Mapping[str, Any], params: Mapping[str, Any] | None = None,
                 resumed_from: Path | None = None, mlflow_checkpoints: bool = False):
        self.run_dir = Path(run_dir)
        self.params = dict(params or {})
        self.resumed_from = resumed_from
        self.mlflow_checkpoints = mlflow_checkpoints
        self.rows: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = self._initial_summary(dict(info))
        self._session_start = time.time()
        self._previous_duration = float(self.summary.get("duration_s") or 0.0)
        self._epoch_start = 0.0

    def _initial_summary(self, info: dict[str, Any]) -> dict[str, Any]:
        path = self.run_dir / "summary.json"
        if self.resumed_from is not None and path.is_file():
            summary = json.loads(path.read_text(encoding="utf-8"))
            summary.update(info)
            summary.setdefault("resumed", []).append(
                {"at": datetime.now().isoformat(timespec="seconds"), "checkpoint": str(self.resumed_from)})
            return summary
        return {**info, "started": datetime.now().isoformat(timespec="seconds"), "duration_s": 0.0}

    def start(self) -> None:
        """Write the first summary.json before any data or model work (call on the rank-zero process)."""
        self.summary.update(state="running", stop_reason=None)
        self._save_summary()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = trainer.strategy.root_device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        self.summary["device"] = {"type": device.type, "name": name, "devices": trainer.num_devices,
                                  "nodes": trainer.num_nodes, "strategy": type(trainer.strategy).__name__,
                                  "precision": str(trainer.precision)}
        if trainer.is_global_zero:
            self._log_params(trainer)
            self._save_summary()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:  # after a resume, current_epoch is the number of epochs done
            self.rows = [row for row in read_metrics(self.run_dir) if row["epoch"] <= trainer.current_epoch]

    def _log_params(self, trainer: pl.Trainer) -> None:
        for run_logger in trainer.loggers:
            if isinstance(run_logger, RunMLFlowLogger):
                self.summary["mlflow_run_id"] = run_logger.start(self.params) or self.summary.get("mlflow_run_id")
            elif isinstance(run_logger, TensorBoardLogger):
                run_logger.log_hyperparams(self.params, metrics={"best_valid_acc": 0.0, "best_valid_loss": 0.0})
            else:
                run_logger.log_hyperparams(self.params)

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
        for run_logger in _mlflow_loggers(trainer):
            run_logger.log_summary(self.summary)
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
        if not trainer.is_global_zero:
            return
        self._save_summary()
        self._report_to_loggers(trainer)
        self._end_mlflow(trainer)

    def end_untrained(self, reason: str, trainer: pl.Trainer) -> None:
        """Record a fit that returned without training an epoch (state failed, with the reason)."""
        self.summary.update(state="failed", stop_reason=reason)
        logger.error("run %s: %s", self.run_dir, reason)
        if trainer.is_global_zero:
            self._save_summary()
            self._end_mlflow(trainer)

    def _end_mlflow(self, trainer: pl.Trainer) -> None:
        for run_logger in _mlflow_loggers(trainer):
            end_mlflow_run(run_logger, self.summary, self.run_dir, self.mlflow_checkpoints)

    def _report_to_loggers(self, trainer: pl.Trainer) -> None:
        best = self.summary.get("best_valid_acc", {}).get("value")
        best_loss = (self.summary.get("best") or {}).get("valid_loss")
        for run_logger in trainer.loggers:
            if isinstance(run_logger, TensorBoardLogger) and best is not None:
                run_logger.log_metrics({"best_valid_acc": best, "best_valid_loss": best_loss}, trainer.global_step)
            if isinstance(run_logger, NeptuneLogger):  # MLflow gets the whole summary when its run ends
                run_logger.log_summary({key: self.summary.get(key) for key in (
                    "epochs_run", "stop_reason", "state", "duration_s", "multiply_adds", "parameters")})

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        interrupted = isinstance(exception, KeyboardInterrupt)
        self.summary.update(state="interrupted" if interrupted else "failed",
                            stop_reason="interrupted" if interrupted else "error")
        if not interrupted:
            self.summary["error"] = f"{type(exception).__name__}: {exception}"
        if trainer.is_global_zero:
            self._save_summary()
            self._end_mlflow(trainer)

    def _save_summary(self) -> None:
        self.summary["duration_s"] = round(self._previous_duration + time.time() - self._session_start, 3)
        self.summary["duration"] = format_duration(self.summary["duration_s"])
        write_json(self.run_dir / "summary.json", self.summary)


def _mlflow_loggers(trainer: pl.Trainer) -> list[RunMLFlowLogger]:
    return [run_logger for run_logger in trainer.loggers if isinstance(run_logger, RunMLFlowLogger)]


def make_callbacks(cfg: Mapping[str, Any], run_dir: Path, recorder: RunRecorder) -> list[Callback]:
    """Run records, best.ckpt (min valid_loss) + last.ckpt, early stopping on valid_loss."""
    best = ModelCheckpoint(dirpath=str(run_dir), filename="best", monitor="valid_loss", mode="min",
                           save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False)
    # a second checkpoint for every epoch: Lightning 2.6's save_last only saves when the best one changed
    last = ModelCheckpoint(dirpath=str(run_dir), filename="last", monitor=None, save_top_k=1,
                           auto_insert_metric_name=False, enable_version_counter=False)
    stopper = EarlyStopping(monitor="valid_loss", mode="min", patience=early_stopping_patience(cfg))
    return [recorder, best, last, stopper]


def run_training(cfg: Mapping[str, Any], datamodule: pl.LightningDataModule, module: pl.LightningModule,
                 run_dir: Path, info: Mapping[str, Any], params: Mapping[str, Any],
                 ckpt_path: Path | None = None, extra_callbacks: Iterable[Callback] = (),
                 trust_checkpoint: bool = False) -> dict[str, Any]:
    """Fit module on datamodule with the run's records, checkpoints and loggers; return summary.json's content.

    Lightning loads ``ckpt_path`` with weights_only (tensors and plain values) unless ``trust_checkpoint``.
    """
    run_dir = Path(run_dir)
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    recorder = RunRecorder(run_dir, info, params, resumed_from=ckpt_path,
                           mlflow_checkpoints=cfg["mlflow_log_checkpoints"])
    callbacks = make_callbacks(cfg, run_dir, recorder) + list(extra_callbacks)
    loggers = make_loggers(cfg, run_dir)
    trainer = pl.Trainer(**trainer_kwargs(cfg, run_dir, callbacks, loggers))
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_config(cfg, run_dir)
        recorder.start()
        # on rank zero only: the MLflow logger opens (and first creates) the tracking store
        mlflow_logger = make_mlflow_logger(cfg, run_dir, recorder.summary.get("mlflow_run_id"),
                                           recorder.summary.get("seed_group"))
        trainer.loggers = [*trainer.loggers, *([mlflow_logger] if mlflow_logger else [])]
    logger.info("run folder: %s", run_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None,
                weights_only=not trust_checkpoint)
    if recorder.summary.get("state") == "running":  # Lightning returned without training (no batches)
        recorder.end_untrained("no training batches: the training set is smaller than one batch per process",
                               trainer)
    summary = recorder.summary
    best = summary.get("best_valid_acc") or {}
    logger.info("run %s after %s epochs (%s): best valid_acc %.4f at epoch %s; records in %s",
                summary.get("state"), summary.get("epochs_run"), summary.get("stop_reason"),
                best.get("value", float("nan")), best.get("epoch"), run_dir)
    return summary


def aggregate_seeds(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation (n-1), min and max of the best validation accuracy over seeded runs."""
    stat = stat_of([float(result["best_valid_acc"]) for result in results])
    return {
        "runs": [dict(result) for result in results], "count": stat.n,
        "best_valid_acc_mean": stat.mean, "best_valid_acc_std": stat.std,
        "best_valid_acc_min": stat.min, "best_valid_acc_max": stat.max,
    }


def format_seed_table(aggregate: Mapping[str, Any]) -> str:
    """A console table of the seeded runs and their statistics."""
    lines = [f"{'seed':>10}  {'best valid_acc':>14}  run", f"{'-' * 10}  {'-' * 14}  {'-' * 3}"]
    lines += [f"{run['seed']:>10}  {run['best_valid_acc']:>14.4f}  {run['run_dir']}" for run in aggregate["runs"]]
    lines.append(f"mean {aggregate['best_valid_acc_mean']:.4f}  std {aggregate['best_valid_acc_std']:.4f}  "
                 f"min {aggregate['best_valid_acc_min']:.4f}  max {aggregate['best_valid_acc_max']:.4f}  "
                 f"({aggregate['count']} seeds)")
    return "\n".join(lines)
