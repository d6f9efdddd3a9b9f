"""A study in Optuna's storage: the storage (SQLite or any SQLAlchemy database), sampler and pruner, and the
study's runs as trials (queued, grouped by run, unfinished)."""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError

from sweeps.study_file import Study, StudyRun

LIVE = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
DEFAULT_HEARTBEAT_S = 20
DEFAULT_GRACE_S = 90
DEFAULT_MAX_RETRIES = 2
LOSSES = "losses"  # user attribute: how often a run's trials were lost (their worker died) since its launch
# user attributes a trial queued again starts without (and, after a new launch, without its count of losses)
RETRY_ATTRS = (LOSSES, "error", "lost", "interrupted", "worker")


class StorageError(ValueError):
    """A study storage that cannot be opened or is damaged; the message names it and says what to do."""


def default_storage(study: Study, output_path: str | os.PathLike, create_folder: bool = True) -> str:
    """A SQLite file in the study's folder under output_path (one machine)."""
    folder = Path(output_path).resolve() / study.name
    if create_folder:
        folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def sqlite_file_missing(url: str) -> bool:
    """Whether url names an SQLite file that does not exist yet (the first launch creates it)."""
    return url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists()


def _storage_error(url: str, reason: str) -> StorageError:
    if not url.startswith("sqlite:///"):
        return StorageError(f"study storage {url}: cannot be used ({reason}); check that its database server runs "
                            "and the URL, user and password are right")
    path = url.removeprefix("sqlite:///")
    return StorageError(f"{path}: the study's storage is damaged ({reason}). Restore the file from a copy, or move "
                        f"it aside (mv {path} {path}.damaged) and run the command again to start the storage anew "
                        "(the run folders stay as they are)")


def open_storage(url: str, heartbeat_s: int = DEFAULT_HEARTBEAT_S, grace_s: int = DEFAULT_GRACE_S) -> RDBStorage:
    """Optuna's SQL storage with heartbeats; a trial silent for grace_s seconds is lost (fail_lost_trials).
    A storage that cannot be opened, or an SQLite file that fails SQLite's own check, raises StorageError."""
    sqlite = url.startswith("sqlite")
    engine_kwargs = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                                 grace_period=grace_s)
        if sqlite:
            serialize_sqlite_transactions(storage.engine)
            with storage.engine.connect() as connection:  # a truncated file can open and fail a later query
                verdict = connection.exec_driver_sql("PRAGMA quick_check").scalar()
            if verdict != "ok":
                raise _storage_error(url, f"SQLite's check: {verdict}")
    except SQLAlchemyError as error:
        raise _storage_error(url, str(getattr(error, "orig", None) or error).splitlines()[0]) from None
    return storage


def serialize_sqlite_transactions(engine: Any) -> None:
    """Make every SQLite transaction take the write lock when it begins (BEGIN IMMEDIATE).

    SQLite ignores SELECT ... FOR UPDATE, so two workers could both read a trial as WAITING and both move it to
    RUNNING (both training it); with the lock taken first, the second reads it as RUNNING and leaves it.
    """
    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event below starts each transaction

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners existed are not reused


def make_sampler(study: Study) -> optuna.samplers.BaseSampler:
    """TPE or random sampling for search: studies (options passed on, e.g. seed)."""
    options = {key: value for key, value in study.sampler.items() if key != "type"}
    if study.sampler.get("type") == "random":
        return optuna.samplers.RandomSampler(**options)
    return optuna.samplers.TPESampler(**options)


def make_pruner(study: Study) -> optuna.pruners.BasePruner:
    """The search's pruner (median, hyperband, threshold, none), options passed on."""
    options = {key: value for key, value in study.pruner.items() if key != "type"}
    kind = study.pruner.get("type", "none") if study.kind == "search" else "none"
    pruners = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner,
               "threshold": optuna.pruners.ThresholdPruner}
    return pruners[kind](**options) if kind in pruners else optuna.pruners.NopPruner()


def sampler_problems(study: Study) -> list[str]:
    """Sampler and pruner options Optuna refuses (tried by building them)."""
    problems = []
    for key, build in (("search.sampler", make_sampler), ("search.pruner", make_pruner)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                build(study)
        except (TypeError, ValueError) as error:
            problems.append(f"{key}: {error}")
    return problems


def open_optuna_study(study: Study, storage: RDBStorage) -> optuna.Study:
    """The study in storage, created on first use."""
    return optuna.create_study(study_name=study.name, storage=storage, direction=study.direction,
                               sampler=make_sampler(study), pruner=make_pruner(study), load_if_exists=True)


def run_of(trial: FrozenTrial | optuna.Trial) -> StudyRun | None:
    """The study run a trial trains, from its user attributes."""
    attrs = trial.user_attrs
    return StudyRun(attrs["config"], attrs["seed"]) if "config" in attrs and "seed" in attrs else None


def trials_by_run(optuna_study: optuna.Study) -> dict[StudyRun, list[FrozenTrial]]:
    """The study's trials by run, in trial order (duplicates of a run queued twice left out)."""
    groups: dict[StudyRun, list[FrozenTrial]] = {}
    for trial in optuna_study.get_trials(deepcopy=False):
        study_run = run_of(trial)
        if study_run is not None and "duplicate_of" not in trial.user_attrs:
            groups.setdefault(study_run, []).append(trial)
    return groups


def fail_lost_trials(optuna_study: optuna.Study, storage: RDBStorage, max_retries: int = DEFAULT_MAX_RETRIES) -> None:
    """Fail each trial whose worker stopped its heartbeat (killed, out of memory, preempted), with why in its
    attributes, and queue its run again, at most max_retries times; past that the run stays failed, the reason its
    error. (Optuna's fail_stale_trials fails the trial first, after which it takes no attribute; its private
    _get_stale_trial_ids, which fail_stale_trials calls too, is used for the pinned optuna 5.0.0: a test checks the
    pin and the call, so that an upgrade fails loudly.)"""
    for trial_id in storage._get_stale_trial_ids(optuna_study._study_id):
        trial = storage.get_trial(trial_id)
        losses = int(trial.user_attrs.get(LOSSES, 0)) + 1
        cause = "its worker stopped: killed, out of memory or preempted"
        past_cap = losses > max_retries
        try:
            if past_cap:
                storage.set_trial_user_attr(trial_id, "error", f"lost {losses} times ({cause}); not retried past "
                                                               f"--max-retries {max_retries}")
            else:
                storage.set_trial_user_attr(trial_id, "lost", cause)
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first, and queued it again
        if not past_cap:
            trial.user_attrs = {**trial.user_attrs, LOSSES: losses}
            queue_again(optuna_study, trial)


def queue_again(optuna_study: optuna.Study, trial: FrozenTrial, fresh: bool = False) -> None:
    """Queue a failed or interrupted trial's run again as a new waiting trial, without the old one's error (and,
    when fresh, without its count of losses)."""
    dropped = RETRY_ATTRS if fresh else tuple(name for name in RETRY_ATTRS if name != LOSSES)
    trial = copy.deepcopy(trial)
    trial.user_attrs = {name: value for name, value in trial.user_attrs.items() if name not in dropped}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # a note for every retry otherwise
        RetryHeartbeatStaleTrialCallback()(optuna_study, trial)


def queue_runs(study: Study, optuna_study: optuna.Study, only: Sequence[str] = ()) -> int:
    """Queue every run without a live trial: new ones, and failed or interrupted ones again; return how many."""
    groups = trials_by_run(optuna_study)
    queued = 0
    for study_run in study.runs(only) if study.kind != "search" else list(groups):
        trials = groups.get(study_run, [])
        if any(trial.state in LIVE for trial in trials):
            continue
        if trials:  # a new launch retries it afresh: its earlier losses and errors stay with the old trials
            queue_again(optuna_study, trials[-1], fresh=True)
        else:
            description = study.configuration(study_run.config_id).description
            optuna_study.enqueue_trial({}, user_attrs={"config": study_run.config_id, "seed": study_run.seed,
                                                       "description": description})
        queued += 1
    return queued


def unfinished_runs(study: Study, optuna_study: optuna.Study, only: Sequence[str] = ()) -> list[StudyRun]:
    """The runs (of only, when given) with no finished or pruned trial yet."""
    groups = trials_by_run(optuna_study)
    runs = study.runs(only) if study.kind != "search" else list(groups)
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    return [study_run for study_run in runs if not any(trial.state in done for trial in groups.get(study_run, []))]
