"""Neptune's Lightning logger on neptune-client 1.x (the hosted service has ended; offline mode still writes
runs to .neptune/offline/, which utils.runs.neptune_offline imports into MLflow)."""

from __future__ import annotations

import math
from argparse import Namespace
from collections.abc import Iterable, Mapping
from typing import Any

from pytorch_lightning.loggers import Logger
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

NEPTUNE_MODES = ("async", "offline", "debug")


class NeptuneLogger(Logger):
    """A Lightning Logger on neptune-client 1.x (Lightning 2.6 dropped its own): parameters to parameters/,
    per-epoch metrics to metrics/ (step = epoch) and best values to summary/."""

    def __init__(self, project: str, api_token: str | None = None, mode: str = "async",
                 tags: Iterable[str] = (), description: str = "", name: str | None = None):
        super().__init__()
        if mode not in NEPTUNE_MODES:
            raise ValueError(f"neptune mode must be one of {', '.join(NEPTUNE_MODES)}, got {mode!r}")
        self._project = project
        self._api_token = api_token
        self._mode = mode
        self._tags = list(tags)
        self._description = description or ""
        self._run_name = name
        self._run: Any = None
        self._best: dict[str, float] = {}
        self._last_epoch: int | None = None

    @property
    def name(self) -> str:
        return self._project

    @property
    def version(self) -> str:
        return self._run_name or ""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The neptune Run, started on first use."""
        if self._run is None:
            import neptune

            self._run = neptune.init_run(
                project=self._project, api_token=self._api_token, mode=self._mode, tags=self._tags or None,
                description=self._description, name=self._run_name, capture_stdout=False,
                capture_stderr=False, capture_hardware_metrics=False, source_files=[])
        return self._run

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Assign flat 'a.b' parameters under parameters/a/b (lists and null as text)."""
        values = vars(params) if isinstance(params, Namespace) else params
        for key, value in values.items():
            self.experiment[f"parameters/{key.replace('.', '/')}"] = _scalar(value)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Append each metric under metrics/, stepped by epoch when Lightning gives one."""
        values = dict(metrics)
        epoch = values.pop("epoch", None)
        at = int(epoch) if epoch is not None else step
        for key, value in values.items():
            value = float(value)
            self.experiment[f"metrics/{key}"].append(value, step=at)
            self._remember(key, value)
        if epoch is not None:
            self._last_epoch = int(epoch)

    def _remember(self, key: str, value: float) -> None:
        if math.isnan(value):
            return
        if "loss" in key:
            self._best[f"{key}_min"] = min(value, self._best.get(f"{key}_min", math.inf))
        elif "acc" in key:
            self._best[f"{key}_max"] = max(value, self._best.get(f"{key}_max", -math.inf))

    @rank_zero_only
    def log_summary(self, values: Mapping[str, Any]) -> None:
        """Assign values under summary/ (epochs run, best metrics, stop reason, ...)."""
        for key, value in values.items():
            self.experiment[f"summary/{key}"] = _scalar(value)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Write the best values seen and the epochs run, then stop the run."""
        if self._run is None:
            return
        summary: dict[str, Any] = dict(self._best)
        if self._last_epoch is not None:
            summary["epochs_last"] = self._last_epoch + 1
        summary["status"] = status
        self.log_summary(summary)
        self._run.stop()
        self._run = None


def _scalar(value: Any) -> bool | int | float | str:
    if isinstance(value, (bool, int, float, str)):
        return value
    return "None" if value is None else str(value)
