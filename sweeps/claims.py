"""Claiming a study's trials: a waiting trial (a lost run's retry first), else a new search configuration."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import optuna
import yaml
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from sweeps.storage import LIVE, run_of, trials_by_run
from sweeps.study_file import Study
from utils.config.loading import yaml_inline


def suggest(trial: optuna.Trial, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
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
    values = suggest(trial, study.space)
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
    """Take a waiting trial, a lost run's retry before a new run (only one worker can move it to RUNNING), else
    sample a new search configuration."""
    study_id = storage.get_study_id_from_name(study.name)
    for frozen in waiting_trials(optuna_study, only):
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


def waiting_trials(optuna_study: optuna.Study, only: Iterable[str] = ()) -> list[FrozenTrial]:
    """The waiting trials (of the configurations in only, when given) in the order workers take them: the retries
    of lost or interrupted runs first (queued again by storage.queue_again), then in trial order."""
    only = list(only)
    trials = [trial for trial in optuna_study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
              if not only or trial.user_attrs.get("config") in only]
    return sorted(trials, key=lambda trial: ("failed_trial" not in trial.system_attrs, trial.number))


def work_left(study: Study, optuna_study: optuna.Study, only: Iterable[str] = ()) -> bool:
    """Whether a trial waits to be claimed, or search trials remain to be sampled."""
    if waiting_trials(optuna_study, only):
        return True
    return study.kind == "search" and _configurations_started(optuna_study) < study.trials
