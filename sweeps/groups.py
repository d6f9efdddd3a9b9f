"""Worker groups: the processes of one sweep worker, all training the trial that its rank 0 claims.

A study's trial may train on several devices with DDP (``strategy: ddp``, ``devices: N``). Each worker is then a
group of N processes: the launcher starts rank 0, whose first Trainer (training.process_group) starts the other
N-1 with Lightning's launcher; rank 0 claims each trial and hands it to the others. ``--workers`` and ``--devices``
divide the GPUs into such groups (8 GPUs, ``devices: 2``: 4 workers of 2 GPUs each). What cannot be run so is
refused before any trial (``sweep.py --check`` says why).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from sweeps.configurations import run_configs
from sweeps.study_file import Study
from utils.config import Config
from utils.cpu_threads import worker_threads_environment

DEVICE_KEYS = ("accelerator", "devices", "num_nodes", "strategy")
# Lightning strategies that start processes running only the Trainer's fit, not the worker: they cannot take
# part in a worker group
SPAWNING = ("spawn", "fork", "notebook")
# The variables by which Lightning knows that another launcher (torchrun, SLURM, a rank 0) started this process:
# a worker group's rank 0 is started by the sweep launcher and is the launcher of its own group, so it gets none
LAUNCHER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK",
                      "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
PARENT_PID_ENV = "CARS_PARENT_PID"  # the process a worker stops with (sweeps.lifecycle)


def processes_per_trial(config: Config) -> int | None:
    """The processes one trial trains with on its machine: devices as a count or a list of indices; None for
    'auto' or -1 (as many as the machine has)."""
    devices = config.devices
    if isinstance(devices, list):
        return len(devices)
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:
            return len([item for item in text.split(",") if item.strip()])
        devices = int(text) if text.lstrip("-").isdigit() else -1
    return devices if devices > 0 else None


def study_group_config(study: Study) -> Config:
    """The device settings every trial of the study shares (checked by group_problems): its first run's."""
    for _, config in run_configs(study):
        return config
    return study.base


def _device_settings(config: Config) -> tuple[str, ...]:
    return tuple(str(getattr(config, key)) for key in DEVICE_KEYS)


def group_problems(study: Study, only: Sequence[str], workers: int, devices: Sequence[str] | None,
                   gpus_visible: int) -> list[str]:
    """Why the study's trials cannot run as worker groups of --workers on --devices (empty when they can)."""
    configs = [study.base] if study.kind == "search" else [config for _, config in run_configs(study, only)]
    problems = [f"search.space: {key} cannot be searched: a worker is a fixed group of processes on its devices"
                for key in DEVICE_KEYS if key in study.space]
    if len({_device_settings(config) for config in configs}) > 1:
        shown = sorted({", ".join(f"{key}={value}" for key, value in zip(DEVICE_KEYS, _device_settings(config)))
                        for config in configs})
        problems.append(f"{'/'.join(DEVICE_KEYS)}: the runs differ ({'; '.join(shown)}); every run of a study must "
                        "train on the same devices: a worker is a fixed group of processes")
    if not configs or problems:
        return problems
    config = configs[0]
    count = processes_per_trial(config)
    if config.num_nodes > 1:
        problems.append(f"num_nodes: {config.num_nodes}: a sweep's trial trains on one machine (its worker's); run "
                        "workers on every machine instead (docs/cluster.md), or train this run with train.py")
    if count is None:
        problems.append(f"devices: {config.devices} leaves the count to each machine; give a number (or a list of "
                        "indices): the workers divide --devices into groups of that many")
        return problems
    if count > 1 and any(word in config.strategy for word in SPAWNING):
        problems.append(f"strategy: {config.strategy} starts processes that run only the fit, not the worker that "
                        "claims the trial; use strategy: ddp for trials on several devices")
    gpus = list(devices) if devices is not None else [str(index) for index in range(gpus_visible)]
    if count > 1 and gpus and gpus != ["cpu"] and workers * count > len(gpus):
        problems.append(f"--workers {workers} x devices {count} needs {workers * count} GPUs, and --devices gives "
                        f"{len(gpus)} ({','.join(gpus)}); use --workers {max(1, len(gpus) // count)} or more GPUs")
    return problems


def worker_environments(workers: int, devices: Sequence[str] | None, gpus_visible: int,
                        processes: int = 1) -> list[dict[str, str]]:
    """Per-worker environment: its own group of GPUs (``processes`` each: one GPU each round robin, or consecutive
    groups), else a share of the CPU's threads for each of its processes."""
    if devices is None:
        devices = [str(index) for index in range(gpus_visible)] or ["cpu"]
    environments = []
    for index in range(workers):
        if devices == ["cpu"] or devices[0] == "cpu":
            environment = {"CUDA_VISIBLE_DEVICES": "", **worker_threads_environment(workers * processes)}
        elif processes == 1:
            environment = {"CUDA_VISIBLE_DEVICES": devices[index % len(devices)]}
        else:
            environment = {"CUDA_VISIBLE_DEVICES": ",".join(devices[index * processes:(index + 1) * processes])}
        environments.append(environment)
    return environments


def launch_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """A worker's whole environment: this one's, without another launcher's variables, with its own settings and
    the launcher's pid (the worker stops when that process ends)."""
    inherited = {key: value for key, value in os.environ.items() if key not in LAUNCHER_VARIABLES}
    return {**inherited, **environment, PARENT_PID_ENV: str(os.getpid())}
