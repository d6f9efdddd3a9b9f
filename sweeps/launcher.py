"""Launching a study's workers: what must be ready before they start (free run folders, the MLflow store), one
process per worker on its own GPU or CPU threads, and waiting for them."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from sweeps.claims import waiting_trials
from sweeps.configurations import run_configs
from sweeps.groups import launch_environment
from sweeps.progress import StudyProgress
from sweeps.report import study_records
from sweeps.storage import fail_lost_trials
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


def sqlite_tracking_note(study: Study, storage_url: str) -> str | None:
    """A reminder when the study's storage is a server (other machines may join it) but its runs log to an SQLite
    file (machines must not share one over a network file system)."""
    uri = mlflow_tracking_uri(study.base)
    if storage_url.startswith("sqlite") or not study.base.log_to_mlflow or not uri.startswith("sqlite"):
        return None
    return (f"note: the runs log to the SQLite file {uri.removeprefix('sqlite:///')}; machines that join this study "
            "must not share it over a network file system: give every machine mlflow_tracking_uri: http://<mlflow "
            "server>:5000 (docs/cluster.md)")


def finish_tracking(study: Study, optuna_study: optuna.Study, unfinished: Sequence[StudyRun]) -> None:
    """End the study's parent runs: finished when no run is unfinished, else interrupted (a later launch
    resumes)."""
    close_study_runs(study, optuna_study, study_records(optuna_study), "interrupted" if unfinished else "finished")


@dataclass
class WorkerSlot:
    """One worker's place on this machine: its number, environment (devices, threads), log file and process."""

    number: int
    environment: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None

    def restartable(self) -> bool:
        """Whether a worker may start again here: the last one left with no work (0) or was killed (a signal)."""
        return self.process is not None and self.process.poll() is not None and self.process.returncode <= 0


def start_worker(command: Sequence[str], slot: WorkerSlot) -> None:
    """Start a worker process in its slot, its output appended to the slot's log file."""
    with slot.log_path.open("a", encoding="utf-8") as log:
        log.write(f"\n==== {datetime.now():%Y-%m-%d %H:%M:%S} worker {slot.number}: {' '.join(command)}\n")
        log.flush()
        slot.process = subprocess.Popen(list(command), env=launch_environment(slot.environment), stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    gpu = slot.environment.get("CUDA_VISIBLE_DEVICES")
    device = f"GPU {gpu}" if gpu else f"CPU, {slot.environment.get('OMP_NUM_THREADS')} threads"
    print(f"worker {slot.number} (pid {slot.process.pid}, {device}): log in {slot.log_path}", flush=True)


def start_workers(command: Sequence[str], environments: Sequence[Mapping[str, str]],
                  log_folder: Path) -> list[WorkerSlot]:
    """Start one worker process per environment, each writing its output to its own log file in log_folder
    (worker-<host>-<n>.log, appended: machines sharing the study folder do not write to each other's)."""
    log_folder.mkdir(parents=True, exist_ok=True)
    slots = [WorkerSlot(number, dict(environment), log_folder / f"worker-{socket.gethostname()}-{number}.log")
             for number, environment in enumerate(environments, start=1)]
    for slot in slots:
        start_worker(command, slot)
    return slots


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


@dataclass
class Supervision:
    """What the launcher watches besides its workers: the study in its storage, to take lost runs back."""

    study: Study
    optuna_study: optuna.Study
    storage: RDBStorage
    only: Sequence[str]
    max_retries: int


def _study_live(watch: Supervision) -> bool:
    """Whether a run of the study (of --only) still waits or runs, on this machine or another."""
    states = (TrialState.WAITING, TrialState.RUNNING)
    return any(not watch.only or trial.user_attrs.get("config") in watch.only
               for trial in watch.optuna_study.get_trials(deepcopy=False, states=states))


def _restart_for_lost_runs(command: Sequence[str], slots: Sequence[WorkerSlot], watch: Supervision) -> None:
    """Find runs whose worker died (here or on another machine) and queue them again; for each waiting run that no
    worker of this machine is about to claim (started, not yet training), start a worker again in a free slot."""
    fail_lost_trials(watch.optuna_study, watch.storage, watch.max_retries)
    waiting = len(waiting_trials(watch.optuna_study, watch.only))
    if not waiting:
        return
    training = {trial.user_attrs.get("worker")
                for trial in watch.optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    starting = [slot for slot in slots if slot.process.poll() is None
                and f"{socket.gethostname()}:{slot.process.pid}" not in training]
    for slot in [slot for slot in slots if slot.restartable()][:max(0, waiting - len(starting))]:
        start_worker(command, slot)


def supervise(command: Sequence[str], slots: Sequence[WorkerSlot], watch: Supervision,
              progress: StudyProgress | None = None) -> list[int]:
    """Watch the workers until no run of the study waits or runs, updating the progress each second. A worker
    with nothing to claim leaves at once (its devices free); when a run is lost later, a worker starts again to take
    it back. On Ctrl-C (which the workers get too) wait for their graceful stop."""
    stopping = False
    while True:
        try:
            progress = _updated(progress)
            idle = all(slot.process.poll() is not None for slot in slots)
            if not stopping:
                _restart_for_lost_runs(command, slots, watch)
                idle = idle and all(slot.process.poll() is not None for slot in slots)
            if idle and (stopping or not _study_live(watch)
                         or any(slot.process.returncode > 0 for slot in slots)):
                break
            time.sleep(POLL_S)
        except KeyboardInterrupt:
            stopping = True
            print("stopping: the workers finish their current step and hand their trials back", file=sys.stderr)
    progress = _updated(progress)
    if progress is not None:
        progress.close()
    return [slot.process.returncode for slot in slots]
