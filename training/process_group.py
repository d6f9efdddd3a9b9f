"""One run, one process group, however it was launched.

A run of several processes is started either by Lightning's own launcher (``python train.py`` with strategy ddp and
devices N: the first process starts the others) or by a launcher that starts every process itself (torchrun,
SLURM's srun, LSF, MPI). Some things only one process may decide: the run folder, the seed drawn for
``seed: null``, the sweep trial the run trains. So every process first joins the run's process group
(``join_process_group``: Lightning's launcher starts the other processes now, not at the first fit, and the group
is set up by Lightning's own cluster environment and backend); then rank 0 decides and ``rank_zero_value`` hands
its value to every rank through torch.distributed. The Trainer that trains the run later finds the processes
started and the group set up, and uses them: no process decides anything before the group exists.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import pytorch_lightning as pl
import torch.distributed as dist
from pytorch_lightning.strategies import ParallelStrategy
# pytorch_lightning 2.6.6 (pinned): the launcher of processes that run the script again, which torchrun and
# SLURM also use with the processes already started; the spawn launchers pass the Trainer to their processes
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from utils.config import Config

T = TypeVar("T")
logger = logging.getLogger(__name__)


def in_process_group() -> bool:
    """Whether this process belongs to a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_rank_zero() -> bool:
    """Whether this process is rank 0 of its run (Lightning's rank, known from the launcher's environment)."""
    return pl.utilities.rank_zero_only.rank == 0


def _group_trainer(config: Config) -> pl.Trainer:
    """A Trainer of the run's device settings only: Lightning's choice of strategy, launcher and environment (the
    settings were checked before; the run's own Trainer says which device it trains on)."""
    lightning_log = logging.getLogger("pytorch_lightning")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)  # its device lines come again with the run's own Trainer
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pl.Trainer(accelerator=config.accelerator, devices=config.devices,
                              strategy=config.strategy, num_nodes=config.num_nodes, logger=False,
                              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    finally:
        lightning_log.setLevel(level)


def join_process_group(config: Config) -> None:
    """Start the run's other processes when Lightning's launcher is the launcher, and join the run's process group
    (Lightning's backend for the device: gloo on the CPU, nccl on CUDA). Nothing for a run of one process, for a
    strategy that passes the Trainer to processes it spawns, or when this process has joined already."""
    if dist.is_available() and dist.is_initialized():
        return
    trainer = _group_trainer(config)
    strategy = trainer.strategy
    if not isinstance(strategy, ParallelStrategy) or not isinstance(strategy.launcher, _SubprocessScriptLauncher):
        return
    if strategy.num_processes * strategy.num_nodes == 1:
        return
    strategy.launcher.launch(lambda: None)
    strategy.setup_environment()
    logger.debug("rank %d of %d joined the run's process group", dist.get_rank(), dist.get_world_size())


def rank_zero_value(decide: Callable[[], T]) -> T:
    """decide() on rank 0, its value on every rank of the process group (decide() itself without a group).

    When decide raises on rank 0, every rank raises: rank 0 its own error, the others a RuntimeError naming it.
    """
    if not in_process_group():
        return decide()
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = (True, decide())
        except Exception as error:
            dist.broadcast_object_list([(False, f"{type(error).__name__}: {error}")], src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    succeeded, value = box[0]
    if not succeeded:
        raise RuntimeError(f"rank 0 failed: {value}")
    return value
