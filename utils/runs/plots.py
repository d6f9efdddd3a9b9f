"""Validation curves of runs (and of the thesis's runs, dashed) drawn with matplotlib into an image file."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from utils.runs.records import RunRecord
from utils.runs.table import run_state_text


def plot_path_problem(path: str | os.PathLike) -> str | None:
    """The problem with an image path for plot_runs: its extension must be a format matplotlib writes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = FigureCanvasAgg.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in formats:
        return f"{path}: the plot needs an image file name ending in one of .{', .'.join(sorted(formats))}"
    return None


def _curve(run: RunRecord, name: str) -> list[tuple[float, float]]:
    return [(row["epoch"], row[name]) for row in run.metrics
            if row.get(name) is not None and not math.isnan(row[name])]


def draw_runs(runs: Sequence[RunRecord], references: Sequence[RunRecord] = ()) -> tuple[Any, int]:
    """A figure of valid_acc and valid_loss per epoch (1-based) of every run, references dashed; (figure, drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, (acc_axis, loss_axis) = plt.subplots(1, 2, figsize=(13, 5), sharex=True)
    drawn = 0
    for run, style in [(run, {"marker": "."}) for run in runs] + [(run, {"linestyle": "--"}) for run in references]:
        acc, loss = _curve(run, "valid_acc"), _curve(run, "valid_loss")
        if not acc and not loss:
            continue
        label = f"{run.run_id} ({run_state_text(run)})" if "marker" in style else f"thesis {run.run_id}"
        for axis, curve in ((acc_axis, acc), (loss_axis, loss)):
            if curve:
                axis.plot(*zip(*curve), label=label, **style)
        drawn += 1
    for axis, title in ((acc_axis, "valid_acc"), (loss_axis, "valid_loss")):
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    if drawn:
        acc_axis.legend(fontsize="small")
    figure.tight_layout()
    return figure, drawn


def plot_runs(runs: Sequence[RunRecord], path: str | os.PathLike, references: Sequence[RunRecord] = ()) -> int:
    """Draw the runs' validation curves (references dashed) into an image file; return how many were drawn."""
    import matplotlib.pyplot as plt

    figure, drawn = draw_runs(runs, references)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return drawn
