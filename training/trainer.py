"""The Lightning Trainer of a run: its settings, their checks, checkpoints and early stopping."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import Logger
from pytorch_lightning.profilers import AdvancedProfiler, Profiler, PyTorchProfiler, SimpleProfiler

from training.checkpoint_io import AtomicCheckpointIO
from training.ema import ExponentialMovingAverage
from utils.config import Config
from utils.devices import cuda_problems, resolve_accelerator
from utils.runs.folders import BEST_CHECKPOINT, LAST_CHECKPOINT

DEFAULT_PATIENCE = 15
# Set by the launchers that start one process per machine (torchrun, SLURM, LSF, manual multi-node DDP).
MULTI_NODE_ENV = ("MASTER_ADDR", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "LSB_JOBID")


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


def early_stopping_patience(config: Config) -> int:
    """early_stopping_patience, else 3x the ReduceLROnPlateau patience (torch default 10), else 15."""
    if config.early_stopping_patience is not None:
        return config.early_stopping_patience
    if config.lr_scheduler == "ReduceLROnPlateau":
        return 3 * int((config.lr_scheduler_params or {}).get("patience", 10))
    return DEFAULT_PATIENCE


def trainer_problems(config: Config) -> list[str]:
    """What Lightning would refuse at the start of training: accelerator, devices, strategy, precision, nodes, and
    the combinations of training options it would stop at."""
    return _lightning_problems(config) + training_option_problems(config)


def _lightning_problems(config: Config) -> list[str]:
    """The Trainer's settings on this machine.

    A request for a CUDA GPU that torch cannot serve gets one explanation (cuda_problems). Otherwise it builds
    (and discards) a Trainer of these settings: it checks them against this machine and the installed packages
    without touching any data.
    """
    problems = cuda_problems(config)
    if problems:  # instead of Lightning's "No supported gpu backend found!"
        return problems
    if config.num_nodes > 1 and not any(os.environ.get(name) for name in MULTI_NODE_ENV):
        return [f"num_nodes: {config.num_nodes} machines need a multi-machine launch (torchrun, SLURM, or "
                "MASTER_ADDR/MASTER_PORT/NODE_RANK set on each machine); on one machine use num_nodes: 1"]
    settings = {"accelerator": config.accelerator, "devices": config.devices, "strategy": config.strategy,
                "num_nodes": config.num_nodes, "precision": config.precision}
    try:
        with quiet_lightning():
            pl.Trainer(**settings, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                       enable_model_summary=False)
    except Exception as error:  # Lightning raises several types, each naming the setting
        shown = ", ".join(f"{key}={value!r}" for key, value in settings.items())
        return [f"accelerator/devices/strategy/num_nodes/precision ({shown}): {error}"]
    return []


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's messages below ERROR and every warning silenced inside, both as they were after."""
    lightning_log = logging.getLogger("pytorch_lightning")
    level = lightning_log.level
    lightning_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        lightning_log.setLevel(level)


def training_option_problems(config: Config) -> list[str]:
    """Combinations of the training options that Lightning or torch would refuse only once training has started."""
    problems = []
    fused = bool((config.optimizer_params or {}).get("fused"))
    if config.gradient_clip_val and fused and str(config.precision).startswith("16"):
        problems.append(f"gradient_clip_val: a fused optimizer (optimizer_params.fused: true) unscales the gradients "
                        f"of precision {config.precision} inside its step, after clipping would have to happen "
                        "(Lightning stops at the first step); set optimizer_params.fused: false, precision "
                        "bf16-mixed, or gradient_clip_val: null")
    ddp = config.strategy.startswith("ddp") and "find_unused_parameters_true" not in config.strategy
    if config.freeze_backbone_epochs and ddp:
        problems.append(f"freeze_backbone_epochs: DDP stops at the first step when parameters get no gradient (a "
                        f"frozen backbone); use strategy: ddp_find_unused_parameters_true instead of "
                        f"{config.strategy}")
    if config.freeze_backbone_epochs and config.freeze_backbone_epochs >= config.num_epochs:
        problems.append(f"freeze_backbone_epochs: {config.freeze_backbone_epochs} freezes the backbone for the whole "
                        f"run (num_epochs {config.num_epochs}); it must be below num_epochs")
    return problems


def trainer_kwargs(config: Config, run_dir: Path, callbacks: Sequence[Callback],
                   loggers: Sequence[Logger]) -> dict[str, Any]:
    """Keyword arguments of pl.Trainer for a run."""
    accelerator = resolve_accelerator(config)
    return {
        "max_epochs": config.num_epochs, "accelerator": accelerator, "devices": config.devices,
        "strategy": config.strategy, "num_nodes": config.num_nodes, "precision": config.precision,
        "deterministic": "warn" if accelerator == "cpu" else None,
        "benchmark": config.cudnn_benchmark if accelerator != "cpu" else None,
        "callbacks": list(callbacks), "logger": list(loggers) if loggers else False,
        "default_root_dir": str(run_dir), "log_every_n_steps": 1, "profiler": make_profiler(config, run_dir),
        "gradient_clip_val": config.gradient_clip_val or None,
        "accumulate_grad_batches": config.accumulate_grad_batches,
        "plugins": [AtomicCheckpointIO()],  # checkpoints written whole or not at all
    }


PROFILE_FOLDER = "profile"


def make_profiler(config: Config, run_dir: Path) -> Profiler | None:
    """The run's Lightning profiler (profiler key), writing its reports to <run_dir>/profile/."""
    folder, name = run_dir / PROFILE_FOLDER, "profile"
    if config.profiler == "simple":
        return SimpleProfiler(dirpath=folder, filename=name)
    if config.profiler == "advanced":
        return AdvancedProfiler(dirpath=folder, filename=name)
    if config.profiler == "pytorch":
        import torch

        steps = torch.profiler.schedule(skip_first=10, wait=0, warmup=5, active=20, repeat=1)
        return PyTorchProfiler(dirpath=folder, filename=name, schedule=steps, row_limit=30)
    return None


def checkpoint_callbacks(config: Config, run_dir: Path) -> list[Callback]:
    """best.ckpt (min valid_loss) + last.ckpt, and early stopping on valid_loss."""
    best = ModelCheckpoint(dirpath=str(run_dir), filename=Path(BEST_CHECKPOINT).stem, monitor="valid_loss",
                           mode="min", save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False)
    # a second checkpoint for every epoch: Lightning 2.6's save_last only saves when the best one changed
    last = ModelCheckpoint(dirpath=str(run_dir), filename=Path(LAST_CHECKPOINT).stem, monitor=None, save_top_k=1,
                           auto_insert_metric_name=False, enable_version_counter=False)
    stopper = EarlyStopping(monitor="valid_loss", mode="min", patience=early_stopping_patience(config))
    return [best, last, stopper]


def training_callbacks(config: Config) -> list[Callback]:
    """The callbacks of the training options: the weights' moving average (ema_decay)."""
    return [ExponentialMovingAverage(config.ema_decay)] if config.ema_decay else []
