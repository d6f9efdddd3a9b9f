"""A sweep worker: claims a waiting trial (or samples a search configuration), trains its run with a heartbeat,
and tells Optuna the result, until nothing is left to claim.

Every study run (configuration x seed) is one Optuna trial and one training run in its own folder,
``<output_path>/<study>/<id>[_seed<N>]``. A worker claims a waiting trial by moving it to RUNNING (one storage
update only one worker can win). A trial whose heartbeat stops (a killed worker) is failed by the next worker or
launcher that looks and queued again, ahead of new runs; the run folder's last.ckpt makes the retry continue where
the killed one stopped. A worker of trials on several devices is a group of processes (sweeps.groups): its rank 0
claims, and every rank trains the claimed trial.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import pytorch_lightning as pl
from optuna.trial import TrialState
from pytorch_lightning.callbacks import Callback

from sweeps.claims import claim_trial, duplicate_of, suggest
from sweeps.configurations import run_config
from sweeps.groups import study_group_config
from sweeps.lifecycle import Heartbeat, stop_with_parent
from sweeps.storage import (DEFAULT_GRACE_S, DEFAULT_HEARTBEAT_S, DEFAULT_MAX_RETRIES, fail_lost_trials, make_pruner,
                            make_sampler, open_storage, queue_again, run_of)
from sweeps.study_file import Study, StudyRun
from sweeps.tracking import parent_run_id, study_run_name
from training.process_group import is_rank_zero, join_process_group, rank_zero_value
from training.run import RunLabels, train_run
from utils.checkpoint_safety import CheckpointError, check_resume_checkpoint
from utils.config import Config, config_for_records
from utils.config.loading import training_settings
from utils.mlflow.mirror import mirror_run_folder
from utils.output_files import FileWriteError
from utils.runs.folders import LAST_CHECKPOINT
from utils.runs.records import (CONFIG, RunRecordError, read_metrics, read_recorded_config, read_summary,
                                refuse_links_leaving, write_json)

logger = logging.getLogger(__name__)

DONE_STATES = ("finished", "pruned")  # run-folder states (summary.json) of a run that needs no more training


@dataclass
class WorkerSettings:
    """What a worker needs besides the study: --only ids, heartbeat timing and the retries of a lost run."""

    only: list[str] = field(default_factory=list)
    heartbeat_s: int = DEFAULT_HEARTBEAT_S
    grace_s: int = DEFAULT_GRACE_S
    max_retries: int = DEFAULT_MAX_RETRIES


class TrialCallback(Callback):
    """Reports the objective's per-epoch metric to Optuna and stops the run when the pruner says so.

    optuna_integration's PyTorchLightningPruningCallback is built on the ``lightning`` package, not on the
    ``pytorch_lightning`` this project trains with, and raises inside fit (the run would be recorded as failed);
    this one stops after the epoch, so the run ends with its records and checkpoints and is then marked pruned.
    """

    def __init__(self, trial: optuna.Trial | None, metric: str, claimed_at: float):
        self.trial = trial  # None on the ranks above 0 of a worker group: rank 0 reports, and all stop together
        self.metric = "valid_acc" if metric == "best_valid_acc" else metric
        self.claimed_at = claimed_at
        self.pruned_epoch: int | None = None
        self._started = False

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if not self._started and self.trial is not None:
            self._started = True
            self.trial.set_user_attr("startup_s", round(time.perf_counter() - self.claimed_at, 3))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.metric)
        if trainer.sanity_checking or value is None:
            return
        epoch = trainer.current_epoch + 1
        prune = False
        if self.trial is not None:
            self.trial.report(float(value), step=epoch)
            prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune, src=0):  # every rank of the trial stops after the same epoch
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


def resume_point(config: Config, run_dir: Path) -> tuple[Path | None, dict[str, Any] | None]:
    """Where a study run starts: (its last.ckpt when an earlier attempt left one, loaded weights_only and checked
    first, else None; its summary when it is done already, else None). Raises when its folder holds another run."""
    if run_dir.is_dir():
        refuse_links_leaving(run_dir)
    summary = read_summary(run_dir)
    if summary.get("state") in DONE_STATES:
        logger.info("%s is already %s: nothing to train", run_dir, summary["state"])
        return None, summary
    conflict = folder_conflict(run_dir, config)
    if conflict:
        raise RunRecordError(conflict)
    checkpoint = run_dir / LAST_CHECKPOINT
    run_dir.mkdir(parents=True, exist_ok=True)
    if not checkpoint.is_file():
        return None, None
    try:
        check_resume_checkpoint(checkpoint, run_dir)
    except CheckpointError as error:
        raise CheckpointError(f"{error}. sweep.py has no such option: continue that run with train.py --resume "
                              f"{run_dir} (and the option), or move {checkpoint.name} away to train the run "
                              "afresh") from None
    logger.info("resuming %s from %s", run_dir, checkpoint)
    return checkpoint, None


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
    overrides = suggest(trial, study.space) if study.kind == "search" else study.configuration(
        study_run.config_id).overrides
    config = run_config(study, overrides, study_run.seed)
    return replace(config, tags=[*config.tags, f"study:{study.name}", f"trial:{study_run.config_id}"],
                   description=trial.user_attrs.get("description") or config.description)


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


@dataclass
class TrialJob:
    """A claimed trial as every rank of the worker trains it: rank 0 prepares it, the other ranks are handed it."""

    number: int
    config: Config
    run_dir: Path
    checkpoint: Path | None
    labels: RunLabels


class Claims:
    """Rank 0's side of a worker: the study's storage, the trial it claimed and that trial's heartbeat."""

    def __init__(self, study: Study, storage_url: str, settings: WorkerSettings):
        self.study, self.settings = study, settings
        self.storage = open_storage(storage_url, settings.heartbeat_s, settings.grace_s)
        self.optuna_study = optuna.load_study(study_name=study.name, storage=self.storage,
                                              sampler=make_sampler(study), pruner=make_pruner(study))
        self.trial: optuna.Trial | None = None
        self.heartbeat: Heartbeat | None = None
        self.claimed_at = 0.0

    def trial_id(self, trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
        study_id = self.storage.get_study_id_from_name(self.study.name)
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)

    def next_job(self) -> TrialJob | None:
        """The next trial to train, claimed and prepared (its heartbeat beating); None when nothing is left to
        claim: the worker leaves (the launcher starts one again if a lost run is queued later)."""
        while True:
            fail_lost_trials(self.optuna_study, self.storage, self.settings.max_retries)
            trial = claim_trial(self.study, self.optuna_study, self.storage, self.settings.only)
            if trial is None:
                logger.info("no run of study %s is waiting: worker %d stops", self.study.name, os.getpid())
                return None
            earlier = duplicate_of(self.optuna_study, trial)
            if earlier is not None:
                trial.set_user_attr("duplicate_of", earlier)
                self.optuna_study.tell(trial, state=TrialState.FAIL)
                continue
            job = self._prepare(trial)
            if job is not None:
                return job

    def _prepare(self, trial: optuna.Trial) -> TrialJob | None:
        """The claimed trial's job, its heartbeat started; None when there is nothing to train (done already, or
        its folder refused: the trial is told so)."""
        self.trial, self.claimed_at = trial, time.perf_counter()
        self.heartbeat = Heartbeat(self.storage, self.trial_id(trial), self.settings.heartbeat_s).start()
        try:
            config = trial_config(self.study, trial)
            study_run = run_of(trial)
            run_dir = run_folder(self.study, config, study_run)
            trial.set_user_attr("run_dir", str(run_dir.resolve()))
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            logger.info("trial %d: %s (%s) in %s", trial.number, study_run.key, trial.user_attrs.get("description"),
                        run_dir)
            trial.set_user_attr("sweep_s", round(time.perf_counter() - self.claimed_at, 3))
            labels = RunLabels(study_run_name(self.study, study_run, trial.user_attrs.get("description")),
                               parent_run_id=parent_run_id(self.optuna_study, config))
            checkpoint, done = resume_point(config, run_dir)
            if done is None:
                return TrialJob(trial.number, config, run_dir, checkpoint, labels)
            self.finish(config, run_dir, done, None)
        except Exception as error:
            self.fail(error)
        return None

    def finish(self, config: Config, run_dir: Path, summary: dict[str, Any], pruned_epoch: int | None) -> None:
        """Tell Optuna the trained trial's result and stop its heartbeat."""
        try:
            _finish(self.optuna_study, self.trial, self.study, config, run_dir, summary, pruned_epoch)
        finally:
            self.heartbeat.stop()

    def fail(self, error: Exception) -> None:
        """A trial that failed: its error recorded, the trial failed (the worker goes on: the next may be fine)."""
        self.heartbeat.stop()
        if isinstance(error, (RunRecordError, CheckpointError, FileWriteError)):  # its message says it all
            logger.error("trial %d failed: %s", self.trial.number, error)
        else:
            logger.error("trial %d failed", self.trial.number, exc_info=error)
        self.storage.set_trial_user_attr(self.trial_id(self.trial), "error", f"{type(error).__name__}: {error}")
        self.optuna_study.tell(self.trial, state=TrialState.FAIL, skip_if_finished=True)

    def hand_back(self) -> None:
        """Give an interrupted trial back (Ctrl-C): failed, and queued again for the next free worker."""
        self.heartbeat.stop()
        trial_id = self.trial_id(self.trial)
        self.storage.set_trial_user_attr(trial_id, "interrupted", True)
        self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        queue_again(self.optuna_study, self.storage.get_trial(trial_id))


def train_job(job: TrialJob, claims: Claims | None, metric: str) -> None:
    """Every rank: train the job's run; rank 0 (with the claims) tells Optuna the result."""
    callback = TrialCallback(claims.trial if claims else None, metric, claims.claimed_at if claims else 0.0)
    try:
        summary = train_run(job.config, job.run_dir, job.checkpoint, [callback], job.labels, progress_bar=False)
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into SystemExit after its graceful stop
        if claims:
            claims.hand_back()
        raise KeyboardInterrupt from None
    except Exception as error:  # a failed run must not stop the worker: the next run may be fine
        if claims:
            claims.fail(error)
        else:
            logger.error("trial %d failed on this rank", job.number, exc_info=error)
        return
    if claims:
        claims.finish(job.config, job.run_dir, summary, callback.pruned_epoch)


def run_worker(study: Study, storage_url: str, settings: WorkerSettings) -> int:
    """Claim and train trials until none is left to claim; return 0, or 130 after Ctrl-C.

    A worker of trials on several devices is a group of processes (sweeps.groups): this process joins its
    group first; rank 0 alone opens the storage and claims, and hands each trial to every rank.
    """
    stop_with_parent()
    join_process_group(study_group_config(study))
    claims = Claims(study, storage_url, settings) if is_rank_zero() else None
    try:
        while True:
            job = rank_zero_value(claims.next_job if claims else lambda: None)
            if job is None:
                return 0
            train_job(job, claims, study.metric)
    except KeyboardInterrupt:
        logger.warning("worker %d stopped by Ctrl-C; its trial, if any, is queued again", os.getpid())
        return 130
