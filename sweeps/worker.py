"""A sweep worker: claims a waiting trial (or samples a search configuration), trains its run with a heartbeat,
and tells Optuna the result, until no work is left.

Every study run (configuration x seed) is one Optuna trial and one training run in its own folder,
``<output_path>/<study>/<id>[_seed<N>]``. A worker claims a waiting trial by moving it to RUNNING (one storage
update only one worker can win). A trial whose heartbeat stops (a killed worker) is failed by the next worker that
looks and queued again; the run folder's last.ckpt makes the retry continue where the killed one stopped.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import pytorch_lightning as pl
import yaml
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from pytorch_lightning.callbacks import Callback

from sweeps.configurations import run_config
from sweeps.storage import (DEFAULT_GRACE_S, DEFAULT_HEARTBEAT_S, DEFAULT_MAX_RETRIES, LIVE, fail_lost_trials,
                            make_pruner, make_sampler, open_storage, queue_again, run_of, trials_by_run)
from sweeps.study_file import Study, StudyRun
from sweeps.tracking import parent_run_id, study_run_name
from training.run import RunLabels, train_run
from utils.checkpoint_safety import CheckpointError, check_resume_checkpoint
from utils.config import Config, config_for_records
from utils.config.loading import training_settings, yaml_inline
from utils.mlflow.mirror import mirror_run_folder
from utils.output_files import FileWriteError
from utils.runs.folders import LAST_CHECKPOINT
from utils.runs.records import (CONFIG, RunRecordError, read_metrics, read_recorded_config, read_summary,
                                refuse_links_leaving, write_json)

logger = logging.getLogger(__name__)

DONE_STATES = ("finished", "pruned")  # run-folder states (summary.json) of a run that needs no more training


IDLE_POLL_S = 1.0  # how often an idle worker looks for work (or the study's end) while others train


@dataclass
class WorkerSettings:
    """What a worker needs besides the study: --only ids, heartbeat timing and the retries of a lost run."""

    only: list[str] = field(default_factory=list)
    heartbeat_s: int = DEFAULT_HEARTBEAT_S
    grace_s: int = DEFAULT_GRACE_S
    max_retries: int = DEFAULT_MAX_RETRIES


def _suggest(trial: optuna.Trial, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Each search key's value for this trial (categorical choices travel as their YAML text)."""
    values = {}
    for key, spec in space.items():
        if spec["type"] == "categorical":
            texts = [yaml_inline(choice) for choice in spec["choices"]]
            values[key] = yaml.safe_load(trial.suggest_categorical(key, texts))
        elif spec["type"] == "float":
            values[key] = trial.suggest_float(key, spec["low"], spec["high"], log=spec.get("log", False),
                                              step=spec.get("step"))
        else:
            values[key] = trial.suggest_int(key, spec["low"], spec["high"], log=spec.get("log", False),
                                            step=spec.get("step", 1))
    return values


def _sample_configuration(study: Study, optuna_study: optuna.Study, storage: RDBStorage,
                          study_id: int) -> optuna.Trial:
    """A new search configuration (its first seed); its other seeds are queued with the same values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's note that heartbeats are meant for Study.optimize
        trial = optuna_study.ask()
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))
    if run_of(trial) is not None:  # a trial queued meanwhile was handed out instead
        return trial
    values = _suggest(trial, study.space)
    attrs = {"config": f"T-{trial.number:03d}", "description": ", ".join(f"{k}={v}" for k, v in values.items())}
    for name, value in {**attrs, "seed": study.seeds[0]}.items():
        trial.set_user_attr(name, value)
    for seed in study.seeds[1:]:
        optuna_study.enqueue_trial(trial.params, user_attrs={**attrs, "seed": seed})
    return trial


def _configurations_started(optuna_study: optuna.Study) -> int:
    return len({study_run.config_id for study_run in trials_by_run(optuna_study)})


def claim_trial(study: Study, optuna_study: optuna.Study, storage: RDBStorage,
                only: Iterable[str] = ()) -> optuna.Trial | None:
    """Take a waiting trial (only one worker can move it to RUNNING), else sample a new search configuration."""
    only = list(only)
    study_id = storage.get_study_id_from_name(study.name)
    for frozen in optuna_study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if only and frozen.user_attrs.get("config") not in only:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        storage.record_heartbeat(trial_id)  # before the claim: Optuna never counts a RUNNING trial with no beat lost
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return optuna.Trial(optuna_study, trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    if study.kind == "search" and _configurations_started(optuna_study) < study.trials:
        return _sample_configuration(study, optuna_study, storage, study_id)
    return None


def duplicate_of(optuna_study: optuna.Study, trial: optuna.Trial) -> int | None:
    """The number of an earlier live trial of the same run (queued twice by two launches at once), else None."""
    study_run = run_of(trial)
    numbers = [other.number for other in optuna_study.get_trials(deepcopy=False, states=LIVE)
               if run_of(other) == study_run and "duplicate_of" not in other.user_attrs]
    first = min(numbers, default=trial.number)
    return first if first < trial.number else None


def work_left(study: Study, optuna_study: optuna.Study, only: Iterable[str] = ()) -> bool:
    """Whether any trial waits or runs (a killed worker's too, until it is queued again), or search trials remain."""
    only = list(only)
    for trial in optuna_study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)):
        if not only or trial.user_attrs.get("config") in only:
            return True
    return study.kind == "search" and _configurations_started(optuna_study) < study.trials


class Heartbeat:
    """Records the trial's heartbeat every interval seconds in a thread while the trial trains."""

    def __init__(self, storage: RDBStorage, trial_id: int, interval_s: float):
        self.storage, self.trial_id, self.interval_s = storage, trial_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.storage.record_heartbeat(self.trial_id)

    def __enter__(self) -> "Heartbeat":
        self.storage.record_heartbeat(self.trial_id)  # before any work, not when the thread first runs
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join()


class TrialCallback(Callback):
    """Reports the objective's per-epoch metric to Optuna and stops the run when the pruner says so.

    optuna_integration's PyTorchLightningPruningCallback is built on the ``lightning`` package, not on the
    ``pytorch_lightning`` this project trains with, and raises inside fit (the run would be recorded as failed);
    this one stops after the epoch, so the run ends with its records and checkpoints and is then marked pruned.
    """

    def __init__(self, trial: optuna.Trial, metric: str, claimed_at: float):
        self.trial = trial
        self.metric = "valid_acc" if metric == "best_valid_acc" else metric
        self.claimed_at = claimed_at
        self.pruned_epoch: int | None = None
        self._started = False

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if not self._started:
            self._started = True
            self.trial.set_user_attr("startup_s", round(time.perf_counter() - self.claimed_at, 3))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.metric)
        if trainer.sanity_checking or value is None:
            return
        epoch = trainer.current_epoch + 1
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            self.pruned_epoch = epoch
            trainer.should_stop = True


def run_folder(study: Study, config: Config, study_run: StudyRun) -> Path:
    """<output_path>/<study>/<id>, with _seed<N> when the study has several seeds."""
    return Path(config.output_path) / study.name / study.run_name(study_run)


def folder_conflict(run_dir: Path, config: Config) -> str | None:
    """Why a run cannot use its run folder: a link in it leads outside, or it holds a run of other (or unreadable)
    training settings."""
    if run_dir.is_dir():
        try:
            refuse_links_leaving(run_dir)
        except RunRecordError as error:
            return str(error)
    path = run_dir / CONFIG
    if not path.is_file():
        return None
    try:
        recorded = read_recorded_config(path)
    except RunRecordError as error:
        return f"{error}; move that folder away or give the study another name"
    if isinstance(recorded, dict) and training_settings(recorded, True) == training_settings(
            config_for_records(config), True):
        return None
    return (f"{run_dir} holds a run of other settings (its config.yml differs from this configuration's); "
            "move that folder away or give the study another name")


def train_study_run(config: Config, run_dir: Path, callbacks: Iterable[Callback],
                    labels: RunLabels = RunLabels()) -> dict[str, Any]:
    """Train a study run in its folder: from its last.ckpt when an earlier attempt left one (loaded weights_only,
    checked first); nothing when it is done."""
    if run_dir.is_dir():
        refuse_links_leaving(run_dir)
    summary = read_summary(run_dir)
    if summary.get("state") in DONE_STATES:
        logger.info("%s is already %s: nothing to train", run_dir, summary["state"])
        return summary
    conflict = folder_conflict(run_dir, config)
    if conflict:
        raise RunRecordError(conflict)
    checkpoint = run_dir / LAST_CHECKPOINT
    run_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint.is_file():
        try:
            check_resume_checkpoint(checkpoint, run_dir)
        except CheckpointError as error:
            raise CheckpointError(f"{error}. sweep.py has no such option: continue that run with train.py --resume "
                                  f"{run_dir} (and the option), or move {checkpoint.name} away to train the run "
                                  "afresh") from None
        logger.info("resuming %s from %s", run_dir, checkpoint)
        return train_run(config, run_dir, checkpoint, callbacks, labels, progress_bar=False)
    return train_run(config, run_dir, None, callbacks, labels, progress_bar=False)


def mark_pruned(run_dir: Path, summary: dict[str, Any], epoch: int) -> dict[str, Any]:
    """Record in summary.json that Optuna pruned the run after epoch."""
    summary = {**summary, "state": "pruned", "stop_reason": f"pruned by Optuna after epoch {epoch}"}
    write_json(run_dir / "summary.json", summary)
    return summary


def objective_value(summary: Mapping[str, Any], run_dir: Path, metric: str, direction: str) -> float | None:
    """The objective of a finished run: best_valid_acc from summary.json, else the best epoch of metrics.csv."""
    if metric == "best_valid_acc":
        value = (summary.get("best_valid_acc") or {}).get("value")
        return float(value) if value is not None else None
    values = [row[metric] for row in read_metrics(run_dir) if row[metric] == row[metric]]  # not NaN
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


def trial_config(study: Study, trial: optuna.Trial) -> Config:
    """The trial's Config, tagged with the study name and the configuration's id."""
    study_run = run_of(trial)
    overrides = _suggest(trial, study.space) if study.kind == "search" else study.configuration(
        study_run.config_id).overrides
    config = run_config(study, overrides, study_run.seed)
    return replace(config, tags=[*config.tags, f"study:{study.name}", f"trial:{study_run.config_id}"],
                   description=trial.user_attrs.get("description") or config.description)


def hand_back(optuna_study: optuna.Study, storage: RDBStorage, trial_id: int) -> None:
    """Give an interrupted trial back: failed, and queued again for the next free worker."""
    storage.set_trial_user_attr(trial_id, "interrupted", True)
    storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    queue_again(optuna_study, storage.get_trial(trial_id))


def _finish(optuna_study: optuna.Study, trial: optuna.Trial, study: Study, config: Config, run_dir: Path,
            summary: dict[str, Any], pruned_epoch: int | None) -> None:
    if pruned_epoch is not None and summary.get("state") == "finished":
        summary = mark_pruned(run_dir, summary, pruned_epoch)
        mirror_run_folder(config, run_dir)
    if summary.get("state") == "pruned":
        optuna_study.tell(trial, state=TrialState.PRUNED)
        return
    value = objective_value(summary, run_dir, study.metric, study.direction)
    if summary.get("state") != "finished" or value is None:
        trial.set_user_attr("error", f"run {summary.get('state')}: {summary.get('stop_reason')}")
        optuna_study.tell(trial, state=TrialState.FAIL)
        return
    optuna_study.tell(trial, value)


def run_trial(study: Study, optuna_study: optuna.Study, storage: RDBStorage, trial: optuna.Trial,
              settings: WorkerSettings) -> None:
    """Train a claimed trial's run and tell Optuna the result; Ctrl-C hands the trial back and stops."""
    claimed_at = time.perf_counter()
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.name),
                                                               trial.number)
    try:
        with Heartbeat(storage, trial_id, settings.heartbeat_s):
            config = trial_config(study, trial)
            run_dir = run_folder(study, config, run_of(trial))
            trial.set_user_attr("run_dir", str(run_dir.resolve()))
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            logger.info("trial %d: %s (%s) in %s", trial.number, run_of(trial).key,
                        trial.user_attrs.get("description"), run_dir)
            callback = TrialCallback(trial, study.metric, claimed_at)
            trial.set_user_attr("sweep_s", round(time.perf_counter() - claimed_at, 3))
            labels = RunLabels(study_run_name(study, run_of(trial), trial.user_attrs.get("description")),
                               parent_run_id=parent_run_id(optuna_study, config))
            summary = train_study_run(config, run_dir, [callback], labels)
            _finish(optuna_study, trial, study, config, run_dir, summary, callback.pruned_epoch)
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into SystemExit after its graceful stop
        hand_back(optuna_study, storage, trial_id)
        raise KeyboardInterrupt from None
    except Exception as error:  # a failed run must not stop the worker: the next run may be fine
        if isinstance(error, (RunRecordError, CheckpointError, FileWriteError)):  # its message says it all
            logger.error("trial %d failed: %s", trial.number, error)
        else:
            logger.exception("trial %d failed", trial.number)
        storage.set_trial_user_attr(trial_id, "error", f"{type(error).__name__}: {error}")
        optuna_study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def run_worker(study: Study, storage_url: str, settings: WorkerSettings) -> int:
    """Claim and train trials until none is left; return 0, or 130 after Ctrl-C."""
    storage = open_storage(storage_url, settings.heartbeat_s, settings.grace_s)
    optuna_study = optuna.load_study(study_name=study.name, storage=storage, sampler=make_sampler(study),
                                     pruner=make_pruner(study))
    try:
        while True:
            fail_lost_trials(optuna_study, storage, settings.max_retries)
            trial = claim_trial(study, optuna_study, storage, settings.only)
            if trial is None:
                if not work_left(study, optuna_study, settings.only):
                    logger.info("no run of study %s is waiting or running: worker %d stops", study.name, os.getpid())
                    return 0
                time.sleep(IDLE_POLL_S)  # the study is done as soon as its last trial is
                continue
            earlier = duplicate_of(optuna_study, trial)
            if earlier is not None:
                trial.set_user_attr("duplicate_of", earlier)
                optuna_study.tell(trial, state=TrialState.FAIL)
                continue
            run_trial(study, optuna_study, storage, trial, settings)
    except KeyboardInterrupt:
        logger.warning("worker %d stopped by Ctrl-C; its trial, if any, is queued again", os.getpid())
        return 130
