"""The thesis's 56 published run records (experiments/thesis_runs.json): settings in this project's keys, curves."""

from __future__ import annotations

import ast
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from utils.checks import did_you_mean
from utils.runs.records import RunRecord

THESIS_RUNS_PATH = Path(__file__).resolve().parents[2] / "experiments" / "thesis_runs.json"

# Recorded parameter name -> this project's config key; the records' values are Python literals as text.
RECORDED_KEYS = {
    "architecture": "architecture",
    "img_size": "image_size",
    "grayscale": "convert_to_grayscale",
    "normalize": "normalize",
    "norm_params_rgb": "normalization_params_rgb",
    "norm_params_gray": "normalization_params_grayscale",
    "crop_to_bboxes": "crop_to_bboxes",
    "erase_background": "erase_background",
    "augment_images": "augment_images",
    "image_augmentations": "image_augmentations",
    "augment_tensors": "augment_tensors",
    "tensor_augmentations": "tensor_augmentations",
    "batch_size": "batch_size",
    "max_num_epochs": "num_epochs",
    "dropout": "dropout",
    "out_channels": "output_channels",
    "optimizer": "optimizer",
    "all_optimizer_params": "optimizer_params",
    "lr_scheduler": "lr_scheduler",
    "lr_scheduler_params": "lr_scheduler_params",
    "loss_function": "loss_function",
    "loss_params": "loss_params",
}
# Recorded alongside the settings, not settings themselves: copies of optimizer parameters, the network's
# size and where it ran.
NOT_SETTINGS = frozenset({"learning_rate", "weight_decay", "num_params", "runtime"})
RECORDED_ARCHITECTURES = {"GhostNet": "ghost"}
INTEGER_KEYS = ("batch_size", "num_epochs", "output_channels")
THESIS_RUN = "thesis_run"  # a thesis record's summary key: the recorded run's id


@dataclass(frozen=True)
class ThesisRun:
    """One recorded thesis run: its id (C-1 .. C-66), the original run name, parameters and per-epoch figures."""

    id: str
    run_name: str
    params: dict[str, Any]
    metrics: list[dict[str, float]]

    @property
    def parameters(self) -> int:
        """The network's parameter count as the run recorded it."""
        return int(self.params["num_params"])


def load_thesis_runs(path: str | os.PathLike = THESIS_RUNS_PATH) -> dict[str, ThesisRun]:
    """Every recorded run by id, in the thesis's order."""
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    return {record["id"]: ThesisRun(record["id"], record["run_name"], record["params"], record["metrics"])
            for record in records}


def _value(text: Any) -> Any:
    """A recorded value: numbers as they are, literals as what they say ('None', "{'lr': 0.001}"), names as text."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def thesis_config(run: ThesisRun) -> dict[str, Any]:
    """The run's recorded settings under this project's config keys (unset where the record says None)."""
    unknown = set(run.params) - set(RECORDED_KEYS) - NOT_SETTINGS
    if unknown:
        raise ValueError(f"{run.id}: recorded parameters with no config key: {', '.join(sorted(unknown))}")
    config: dict[str, Any] = {}
    for recorded, key in RECORDED_KEYS.items():
        value = _value(run.params[recorded])
        if value is None and key.startswith("normalization_params"):
            continue
        config[key] = value
    config["architecture"] = RECORDED_ARCHITECTURES[config["architecture"]]
    for key in INTEGER_KEYS:
        config[key] = int(config[key])
    return config


def unknown_run_problems(run_ids: list[str], runs: dict[str, ThesisRun]) -> list[str]:
    """One problem per id that is not a recorded run, with the nearest ids."""
    problems = []
    for run_id in run_ids:
        if run_id not in runs:
            hint = did_you_mean(run_id, runs)
            hint = f"; {hint}" if hint else ""
            problems.append(f"--reference {run_id}: not a thesis run (recorded: {', '.join(runs)}){hint}")
    return problems


def started(run: ThesisRun) -> str | None:
    """When the run started, as its original name records it (ghost_20200922060810: 2020-09-22T06:08:10)."""
    try:
        return datetime.strptime(run.run_name.rpartition("_")[2], "%Y%m%d%H%M%S").isoformat()
    except ValueError:
        return None


def reference_record(run: ThesisRun) -> RunRecord:
    """The run as a record beside this project's runs: its settings, size and curves on the 1-based epoch axis, its
    start time (no duration is recorded)."""
    config = {**thesis_config(run), "tags": ["thesis"], "description": f"thesis run {run.id} as recorded"}
    summary = {"state": "finished", "parameters": run.parameters, "runtime": run.params.get("runtime"),
               "run_name": run.id, THESIS_RUN: run.id, "original_run_name": run.run_name, "started": started(run)}
    metrics = [{**row, "epoch": row["epoch"] + 1} for row in run.metrics]
    return RunRecord(Path("thesis") / run.id, summary, config, metrics)
