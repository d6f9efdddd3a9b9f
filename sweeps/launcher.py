"""Launching a study's workers: what must be ready before they start (free run folders, the MLflow store), one
process per worker on its own GPU or CPU threads, and waiting for them."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import optuna

from sweeps.configurations import run_configs
from sweeps.progress import StudyProgress
from sweeps.report import study_records
from sweeps.study_file import Study, StudyRun
from sweeps.tracking import close_study_runs, open_study_runs
from sweeps.worker import folder_conflict, run_folder
from utils.mlflow.dashboard import prepare_mlflow_experiment
from utils.mlflow.store import mlflow_tracking_uri

logger = logging.getLogger(__name__)
POLL_S = 1.0  # how often the launcher reads the study's progress


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


def finish_tracking(study: Study, optuna_study: optuna.Study, unfinished: Sequence[StudyRun]) -> None:
    """End the study's parent runs: finished when no run is unfinished, else interrupted (a later launch
    resumes)."""
    close_study_runs(study, optuna_study, study_records(optuna_study), "interrupted" if unfinished else "finished")


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


def start_workers(command: Sequence[str], environments: Sequence[Mapping[str, str]],
                  log_folder: Path) -> list[tuple[subprocess.Popen, Path]]:
    """Start one worker process per environment, each writing its output to its own log file in log_folder
    (worker-<host>-<n>.log, appended: machines sharing the study folder do not write to each other's)."""
    log_folder.mkdir(parents=True, exist_ok=True)
    workers = []
    for index, environment in enumerate(environments, start=1):
        log_path = log_folder / f"worker-{socket.gethostname()}-{index}.log"
        with log_path.open("a", encoding="utf-8") as log:
            log.write(f"\n==== {datetime.now():%Y-%m-%d %H:%M:%S} worker {index}: {' '.join(command)}\n")
            log.flush()
            process = subprocess.Popen(list(command), env={**os.environ, **environment}, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        workers.append((process, log_path))
        gpu = environment.get("CUDA_VISIBLE_DEVICES")
        device = f"GPU {gpu}" if gpu else f"CPU, {environment.get('OMP_NUM_THREADS')} threads"
        print(f"worker {index} (pid {process.pid}, {device}): log in {log_path}", flush=True)
    return workers


def _updated(progress: StudyProgress | None) -> StudyProgress | None:
    """Update the progress; a failure to read it (the storage busy or gone) leaves the workers to finish unseen."""
    if progress is not None:
        try:
            progress.update()
        except Exception as error:  # the progress is a view: nothing depends on it
            print(f"the study's progress cannot be read ({error}); the workers go on, see their logs",
                  file=sys.stderr)
            return None
    return progress


def wait_for_workers(processes: Sequence[subprocess.Popen], progress: StudyProgress | None = None) -> list[int]:
    """Wait for every worker, updating the progress each second; on Ctrl-C (which the workers get too) wait for
    their graceful stop."""
    while any(process.poll() is None for process in processes):
        try:
            progress = _updated(progress)
            time.sleep(POLL_S)
        except KeyboardInterrupt:
            print("stopping: the workers finish their current step and hand their trials back", file=sys.stderr)
    progress = _updated(progress)
    if progress is not None:
        progress.close()
    return [process.returncode for process in processes]
