"""Launching a study's workers: what must be ready before they start (free run folders, the MLflow store), one
process per worker on its own GPU or CPU threads, and waiting for them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

import optuna

from utils.runs.trackers import mlflow_tracking_uri, prepare_mlflow_experiment
from utils.sweeps.configurations import run_configs
from utils.sweeps.report import study_records
from utils.sweeps.storage import unfinished_runs
from utils.sweeps.study_file import Study
from utils.sweeps.tracking import close_study_runs, open_study_runs
from utils.sweeps.worker import folder_conflict, run_folder

logger = logging.getLogger(__name__)


def folder_conflicts(study: Study, only: Sequence[str] = ()) -> list[str]:
    """Run folders of the study's runs that hold runs of other settings (checked before any trial starts)."""
    problems = []
    for study_run, config in run_configs(study, only):
        conflict = folder_conflict(run_folder(study, config, study_run), config)
        problems += [f"{study_run.config_id}: {conflict}"] if conflict else []
    return problems


def prepare_tracking(study: Study, only: Sequence[str] = (), optuna_study: optuna.Study | None = None) -> None:
    """Create the MLflow store and experiment of every run once, before workers start and race to create them;
    with the Optuna study, open the study's parent run in each (its id kept in the study for the workers)."""
    configs = [study.base] if study.kind == "search" else [config for _, config in run_configs(study, only)]
    prepared = set()
    for config in configs:
        store = (mlflow_tracking_uri(config), config.mlflow_experiment)
        if not config.log_to_mlflow or store in prepared:
            continue
        prepared.add(store)
        try:
            prepare_mlflow_experiment(config)
        except Exception as error:  # the runs then try themselves, and train on without MLflow if they fail
            logger.warning("could not prepare MLflow experiment %r at %s: %s", store[1], store[0], error)
    if optuna_study is not None:
        open_study_runs(study, optuna_study, configs)


def finish_tracking(study: Study, optuna_study: optuna.Study, only: Sequence[str] = ()) -> None:
    """End the study's parent runs: finished when every run is done, else interrupted (a later launch resumes)."""
    state = "interrupted" if unfinished_runs(study, optuna_study, only) else "finished"
    close_study_runs(study, optuna_study, study_records(optuna_study), state)


def worker_environments(workers: int, devices: Sequence[str] | None, gpus_visible: int) -> list[dict[str, str]]:
    """Per-worker environment: its own GPU (round robin over devices, or over the visible GPUs), else the CPU."""
    if devices is None:
        devices = [str(index) for index in range(gpus_visible)] or ["cpu"]
    environments = []
    for index in range(workers):
        device = devices[index % len(devices)]
        if device == "cpu":
            threads = max(1, (os.cpu_count() or 1) // workers)
            environments.append({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads)})
        else:
            environments.append({"CUDA_VISIBLE_DEVICES": device})
    return environments


def start_workers(command: Sequence[str], environments: Sequence[Mapping[str, str]]) -> list[subprocess.Popen]:
    """Start one worker process per environment."""
    processes = []
    for environment in environments:
        processes.append(subprocess.Popen(list(command), env={**os.environ, **environment}))
        logger.info("worker %d started (%s)", processes[-1].pid,
                    ", ".join(f"{key}={value!r}" for key, value in environment.items()))
    return processes


def wait_for_workers(processes: Sequence[subprocess.Popen]) -> list[int]:
    """Wait for every worker; on Ctrl-C (which the workers get too) wait for their graceful stop."""
    codes = []
    for process in processes:
        while True:
            try:
                codes.append(process.wait())
                break
            except KeyboardInterrupt:
                print("stopping: the workers finish their current step and hand their trials back", file=sys.stderr)
    return codes
