"""Sweeps on Optuna: a study's units as Optuna trials in shared storage, workers that claim and train them.

Every unit (configuration x seed) is one Optuna trial and one train.py run (``train_once``) in its own folder,
``<output_path>/<study>/<id>[_seed<N>]``. Trials of ``runs:`` and ``grid:`` studies are queued when a study is
launched; a ``search:`` study's workers sample new configurations. A worker claims a waiting trial by moving it to
RUNNING (one storage update that only one worker can win), keeps a heartbeat while it trains, and tells the result.
A trial whose heartbeat stops (a killed worker) is failed by the next worker that looks and queued again; the run
folder's last.ckpt makes the retry continue where the killed one stopped.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytorch_lightning as pl
import yaml
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from pytorch_lightning.callbacks import Callback

from utils.checkpoint_safety import CheckpointError, check_resume_checkpoint
from utils.configuration import ConfigError, config_for_records, yaml_inline
from utils.run_comparison import NOT_TRAINING_KEYS
from utils.run_folders import RunRecordError, read_summary, refuse_links_leaving, write_json
from utils.study_file import Study, Unit, unit_config
from utils.tracking import mlflow_tracking_uri, prepare_mlflow_experiment
from utils.training import read_metrics

logger = logging.getLogger(__name__)

LIVE = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
DONE_STATES = ("finished", "pruned")  # run-folder states (summary.json) of a unit that needs no more training
DEFAULT_HEARTBEAT_S = 20
DEFAULT_GRACE_S = 90
TrainFn = Callable[[Mapping[str, Any], Path, "Path | None", Iterable[Callback]], dict[str, Any]]


@dataclass
class WorkerSettings:
    """What a worker needs besides the study: --set overrides, --only ids, heartbeat timing, the training call."""

    train_fn: TrainFn
    cli_overrides: list[str] = field(default_factory=list)
    only: list[str] = field(default_factory=list)
    heartbeat_s: int = DEFAULT_HEARTBEAT_S
    grace_s: int = DEFAULT_GRACE_S


# ---- storage and study ------------------------------------------------------------------------------------


def default_storage(study: Study, output_path: str | os.PathLike) -> str:
    """A SQLite file in the study's folder under output_path (one machine)."""
    folder = Path(output_path).resolve() / study.name
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def open_storage(url: str, heartbeat_s: int = DEFAULT_HEARTBEAT_S, grace_s: int = DEFAULT_GRACE_S) -> RDBStorage:
    """Optuna's SQL storage with heartbeats; a trial silent for grace_s seconds is failed and queued again."""
    sqlite = url.startswith("sqlite")
    engine_kwargs = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s, grace_period=grace_s,
                             heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback())
    if sqlite:
        serialize_sqlite_transactions(storage.engine)
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


def open_study(study: Study, storage: RDBStorage) -> optuna.Study:
    """The study in storage, created on first use."""
    return optuna.create_study(study_name=study.name, storage=storage, direction=study.direction,
                               sampler=make_sampler(study), pruner=make_pruner(study), load_if_exists=True)


def unit_of(trial: FrozenTrial | optuna.Trial) -> Unit | None:
    """The unit a trial trains, from its user attributes."""
    attrs = trial.user_attrs
    return Unit(attrs["config"], attrs["seed"]) if "config" in attrs and "seed" in attrs else None


def trials_by_unit(optuna_study: optuna.Study) -> dict[Unit, list[FrozenTrial]]:
    """The study's trials by unit, in trial order (duplicates of a unit queued twice left out)."""
    groups: dict[Unit, list[FrozenTrial]] = {}
    for trial in optuna_study.get_trials(deepcopy=False):
        unit = unit_of(trial)
        if unit is not None and "duplicate_of" not in trial.user_attrs:
            groups.setdefault(unit, []).append(trial)
    return groups


def queue_units(study: Study, optuna_study: optuna.Study, only: Sequence[str] = ()) -> int:
    """Queue every unit without a live trial: new ones, and failed or interrupted ones again; return how many."""
    groups = trials_by_unit(optuna_study)
    queued = 0
    for unit in study.units(only) if study.kind != "search" else list(groups):
        trials = groups.get(unit, [])
        if any(trial.state in LIVE for trial in trials):
            continue
        if trials:
            RetryHeartbeatStaleTrialCallback()(optuna_study, trials[-1])
        else:
            description = study.configuration(unit.config_id).description
            optuna_study.enqueue_trial({}, user_attrs={"config": unit.config_id, "seed": unit.seed,
                                                       "description": description})
        queued += 1
    return queued


def unfinished_units(study: Study, optuna_study: optuna.Study, only: Sequence[str] = ()) -> list[Unit]:
    """The units (of only, when given) with no finished or pruned trial yet."""
    groups = trials_by_unit(optuna_study)
    units = study.units(only) if study.kind != "search" else list(groups)
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    return [unit for unit in units if not any(trial.state in done for trial in groups.get(unit, []))]


# ---- claiming a trial ---------------------------------------------------------------------------------------


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


def _sample_configuration(study: Study, optuna_study: optuna.Study) -> optuna.Trial:
    """A new search configuration (its first seed); its other seeds are queued with the same values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's note that heartbeats are meant for Study.optimize
        trial = optuna_study.ask()
    if unit_of(trial) is not None:  # a trial queued meanwhile was handed out instead
        return trial
    values = _suggest(trial, study.space)
    attrs = {"config": f"T-{trial.number:03d}", "description": ", ".join(f"{k}={v}" for k, v in values.items())}
    for name, value in {**attrs, "seed": study.seeds[0]}.items():
        trial.set_user_attr(name, value)
    for seed in study.seeds[1:]:
        optuna_study.enqueue_trial(trial.params, user_attrs={**attrs, "seed": seed})
    return trial


def _configurations_started(optuna_study: optuna.Study) -> int:
    return len({unit.config_id for unit in trials_by_unit(optuna_study)})


def claim_trial(study: Study, optuna_study: optuna.Study, storage: RDBStorage,
                only: Sequence[str] = ()) -> optuna.Trial | None:
    """Take a waiting trial (only one worker can move it to RUNNING), else sample a new search configuration."""
    study_id = storage.get_study_id_from_name(study.name)
    for frozen in optuna_study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if only and frozen.user_attrs.get("config") not in only:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return optuna.Trial(optuna_study, trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    if study.kind == "search" and _configurations_started(optuna_study) < study.trials:
        return _sample_configuration(study, optuna_study)
    return None


def duplicate_of(optuna_study: optuna.Study, trial: optuna.Trial) -> int | None:
    """The number of an earlier live trial of the same unit (queued twice by two launches at once), else None."""
    unit = unit_of(trial)
    numbers = [other.number for other in optuna_study.get_trials(deepcopy=False, states=LIVE)
               if unit_of(other) == unit and "duplicate_of" not in other.user_attrs]
    first = min(numbers, default=trial.number)
    return first if first < trial.number else None


def work_left(study: Study, optuna_study: optuna.Study, only: Sequence[str] = ()) -> bool:
    """Whether any trial waits or runs (a killed worker's too, until it is queued again), or search trials remain."""
    for trial in optuna_study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)):
        if not only or trial.user_attrs.get("config") in only:
            return True
    return study.kind == "search" and _configurations_started(optuna_study) < study.trials


# ---- one trial ------------------------------------------------------------------------------------------------


class Heartbeat:
    """Records the trial's heartbeat every interval seconds in a thread while the trial trains."""

    def __init__(self, storage: RDBStorage, trial_id: int, interval_s: float):
        self.storage, self.trial_id, self.interval_s = storage, trial_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            self.storage.record_heartbeat(self.trial_id)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> "Heartbeat":
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


def run_folder(study: Study, cfg: Mapping[str, Any], unit: Unit) -> Path:
    """<output_path>/<study>/<id>, with _seed<N> when the study has several seeds."""
    name = unit.config_id if len(study.seeds) == 1 else f"{unit.config_id}_seed{unit.seed}"
    return Path(cfg["output_path"]) / study.name / name


def _training_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in cfg.items() if key == "seed" or key not in NOT_TRAINING_KEYS}


def folder_conflict(run_dir: Path, cfg: Mapping[str, Any]) -> str | None:
    """Why a unit cannot use its run folder: a link in it leads outside, or it holds a run of other (or unreadable)
    training settings."""
    if run_dir.is_dir():
        try:
            refuse_links_leaving(run_dir)
        except RunRecordError as error:
            return str(error)
    path = run_dir / "config.yml"
    if not path.is_file():
        return None
    try:
        recorded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        return f"{path}: not readable YAML ({error}); move that folder away or give the study another name"
    if isinstance(recorded, dict) and _training_settings(recorded) == _training_settings(config_for_records(cfg)):
        return None
    return (f"{run_dir} holds a run of other settings (its config.yml differs from this configuration's); "
            "move that folder away or give the study another name")


def unit_configs(study: Study, cli_overrides: Sequence[str] = (),
                 only: Sequence[str] = ()) -> Iterator[tuple[Unit, dict[str, Any]]]:
    """Each unit of a runs: or grid: study (or those of --only) with its configuration. Units whose configuration
    fails are left out (the configuration checks report them); a search study has none until it draws them."""
    for unit in study.units(only):
        try:
            cfg = unit_config(study, study.configuration(unit.config_id).overrides, unit.seed, cli_overrides)
        except ConfigError:
            continue
        yield unit, cfg


def folder_conflicts(study: Study, cli_overrides: Sequence[str] = (), only: Sequence[str] = ()) -> list[str]:
    """Run folders of the study's units that hold runs of other settings (checked before any trial starts)."""
    problems = []
    for unit, cfg in unit_configs(study, cli_overrides, only):
        conflict = folder_conflict(run_folder(study, cfg, unit), cfg)
        problems += [f"{unit.config_id}: {conflict}"] if conflict else []
    return problems


def prepare_tracking(study: Study, cli_overrides: Sequence[str] = (), only: Sequence[str] = ()) -> None:
    """Create the MLflow store and experiment of every unit once, before workers start and race to create them."""
    if study.kind == "search":
        configs = [unit_config(study, {}, study.seeds[0], cli_overrides)]
    else:
        configs = [cfg for _, cfg in unit_configs(study, cli_overrides, only)]
    prepared = set()
    for cfg in configs:
        store = (mlflow_tracking_uri(cfg), cfg["mlflow_experiment"])
        if cfg["log_to_mlflow"] is not True or store in prepared:
            continue
        prepared.add(store)
        try:
            prepare_mlflow_experiment(cfg)
        except Exception as error:  # the runs then try themselves, and train on without MLflow if they fail
            logger.warning("could not prepare MLflow experiment %r at %s: %s", store[1], store[0], error)


def train_unit(cfg: Mapping[str, Any], run_dir: Path, train_fn: TrainFn,
               callbacks: Iterable[Callback]) -> dict[str, Any]:
    """Train a unit in its folder: from its last.ckpt when an earlier attempt left one (loaded weights_only, checked
    first); nothing when it is done."""
    if run_dir.is_dir():
        refuse_links_leaving(run_dir)
    summary = read_summary(run_dir)
    if summary.get("state") in DONE_STATES:
        logger.info("%s is already %s: nothing to train", run_dir, summary["state"])
        return summary
    conflict = folder_conflict(run_dir, cfg)
    if conflict:
        raise RunRecordError(conflict)
    checkpoint = run_dir / "last.ckpt"
    run_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint.is_file():
        try:
            check_resume_checkpoint(checkpoint, run_dir)
        except CheckpointError as error:
            raise CheckpointError(f"{error}. sweep.py has no such option: continue that run with train.py --resume "
                                  f"{run_dir} (and the option), or move {checkpoint.name} away to train the unit "
                                  "afresh") from None
        logger.info("resuming %s from %s", run_dir, checkpoint)
        return train_fn(cfg, run_dir, checkpoint, callbacks)
    return train_fn(cfg, run_dir, None, callbacks)


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
    values = [row[metric] for row in read_metrics(run_dir) if not math.isnan(row[metric])]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


def trial_config(study: Study, trial: optuna.Trial, cli_overrides: Sequence[str]) -> dict[str, Any]:
    """The trial's resolved configuration, tagged with the study name and the configuration's id."""
    unit = unit_of(trial)
    overrides = _suggest(trial, study.space) if study.kind == "search" else study.configuration(
        unit.config_id).overrides
    cfg = unit_config(study, overrides, unit.seed, cli_overrides)
    cfg["tags"] = [*cfg["tags"], f"study:{study.name}", f"trial:{unit.config_id}"]
    cfg["description"] = trial.user_attrs.get("description") or cfg["description"]
    return cfg


def hand_back(optuna_study: optuna.Study, storage: RDBStorage, trial_id: int) -> None:
    """Give an interrupted trial back: failed, and queued again for the next free worker."""
    storage.set_trial_user_attr(trial_id, "interrupted", True)
    storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    RetryHeartbeatStaleTrialCallback()(optuna_study, storage.get_trial(trial_id))


def _finish(optuna_study: optuna.Study, trial: optuna.Trial, study: Study, run_dir: Path,
            summary: dict[str, Any], pruned_epoch: int | None) -> None:
    if pruned_epoch is not None and summary.get("state") == "finished":
        summary = mark_pruned(run_dir, summary, pruned_epoch)
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
    """Train a claimed trial's unit and tell Optuna the result; Ctrl-C hands the trial back and stops."""
    claimed_at = time.perf_counter()
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.name),
                                                               trial.number)
    try:
        with Heartbeat(storage, trial_id, settings.heartbeat_s):
            cfg = trial_config(study, trial, settings.cli_overrides)
            run_dir = run_folder(study, cfg, unit_of(trial))
            trial.set_user_attr("run_dir", str(run_dir.resolve()))
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            logger.info("trial %d: %s (%s) in %s", trial.number, unit_of(trial).key,
                        trial.user_attrs.get("description"), run_dir)
            callback = TrialCallback(trial, study.metric, claimed_at)
            trial.set_user_attr("sweep_s", round(time.perf_counter() - claimed_at, 3))
            summary = train_unit(cfg, run_dir, settings.train_fn, [callback])
            _finish(optuna_study, trial, study, run_dir, summary, callback.pruned_epoch)
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into SystemExit after its graceful stop
        hand_back(optuna_study, storage, trial_id)
        raise KeyboardInterrupt from None
    except Exception as error:  # a failed run must not stop the worker: the next unit may be fine
        if isinstance(error, (RunRecordError, CheckpointError)):  # its message says it all: no traceback
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
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(optuna_study)
            trial = claim_trial(study, optuna_study, storage, settings.only)
            if trial is None:
                if not work_left(study, optuna_study, settings.only):
                    return 0
                time.sleep(settings.heartbeat_s)
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


# ---- launching workers ------------------------------------------------------------------------------------------


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
