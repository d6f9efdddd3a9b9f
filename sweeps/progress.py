"""What the launcher's terminal shows while its workers train (their own output goes to their log files): a line
when a run starts and when it ends (finished with its objective, pruned, failed with the reason, lost and queued
again), and one progress bar over the study's runs that names the running ones with their epoch."""

from __future__ import annotations

import sys
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from sweeps.storage import LOSSES, trials_by_run
from sweeps.study_file import Study, StudyRun

ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class StudyProgress:
    """Reads the study's trials from its storage on each update(), so it shows the runs of every machine."""

    def __init__(self, study: Study, optuna_study: optuna.Study, only: list[str], stream: TextIO | None = None):
        self.study, self.optuna_study, self.only = study, optuna_study, list(only)
        total = study.trials * len(study.seeds) if study.kind == "search" else len(study.runs(only))
        # the bar only on a terminal (disable=None); the lines always, each ended one with the count of runs done
        self.stream = stream or sys.stderr
        self.bar = tqdm(total=total, desc=f"study {study.name}", unit="run", file=self.stream,
                        dynamic_ncols=True, disable=None,
                        bar_format="{desc}: {n}/{total} runs done |{bar}| {elapsed}{postfix}")
        self.total = total
        # trial number -> the state last written as a line; trials that ended before this launch get none
        self.shown = {trial.number: trial.state for trial in optuna_study.get_trials(deepcopy=False, states=ENDED)}

    def _epochs(self, study_run: StudyRun) -> str:
        config = self.study.checked.get(study_run.config_id, self.study.base)
        return f"/{config.num_epochs}" if config is not None and self.study.kind != "search" else ""

    def _ended_line(self, trial: FrozenTrial, name: str) -> str:
        """The line of a trial that ended."""
        epochs = max(trial.intermediate_values, default=0)
        if trial.state == TrialState.COMPLETE:
            return f"{name}: finished, {self.study.metric} {trial.value:.4f} after {epochs} epoch{'s' * (epochs != 1)}"
        if trial.state == TrialState.PRUNED:
            return f"{name}: pruned after epoch {epochs}"
        if trial.user_attrs.get("interrupted"):
            return f"{name}: interrupted after epoch {epochs}; queued again"
        if "lost" in trial.user_attrs:
            return f"{name}: lost after epoch {epochs} ({trial.user_attrs['lost']}); queued again"
        return f"{name}: failed: {trial.user_attrs.get('error', 'no reason recorded')}"

    @staticmethod
    def _started_line(trial: FrozenTrial, name: str) -> str:
        retry = f" (retry {trial.user_attrs[LOSSES]} after a lost worker)" if trial.user_attrs.get(LOSSES) else ""
        return f"{name}: started{retry}"

    def _line(self, trial: FrozenTrial, name: str) -> str | None:
        if trial.state == TrialState.RUNNING:
            return self._started_line(trial, name)
        return self._ended_line(trial, name) if trial.state in ENDED else None

    def update(self) -> None:
        """Write a line for each trial that started or ended since the last update; move the bar."""
        groups = {study_run: trials for study_run, trials in trials_by_run(self.optuna_study).items()
                  if not self.only or study_run.config_id in self.only}
        done = sum(trials[-1].state in (TrialState.COMPLETE, TrialState.PRUNED) or "error" in trials[-1].user_attrs
                   for trials in groups.values())
        running = []
        for study_run, trials in groups.items():
            name = self.study.run_name(study_run)
            for trial in trials:
                if trial.state in ENDED and trial.number not in self.shown:  # started and ended between two updates
                    self.bar.write(self._started_line(trial, name), file=self.stream)
                if self.shown.get(trial.number) != trial.state:
                    line = self._line(trial, name)
                    if line:
                        self.bar.write(line if trial.state == TrialState.RUNNING else
                                       f"{line} [{done}/{self.total} runs done]", file=self.stream)
                        self.shown[trial.number] = trial.state
                if trial.state == TrialState.RUNNING:
                    running.append(f"{name} epoch {max(trial.intermediate_values, default=0)}{self._epochs(study_run)}")
        self.bar.n = done
        self.bar.set_postfix_str(", ".join(running), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()

