"""Seeds of a run or a group of runs, and the statistics of results over seeds (mean ± std, min, max)."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from utils.checks import is_number


@dataclass(frozen=True)
class Stat:
    """Mean ± standard deviation, min and max of one value over a seed group."""

    mean: float
    std: float
    min: float
    max: float
    n: int

    def format(self, show: Callable[[float], str]) -> str:
        """'mean ± std [min, max]' with each number written by show."""
        return f"{show(self.mean)} ± {show(self.std)} [{show(self.min)}, {show(self.max)}]"


def stat_of(values: Sequence[Any]) -> Stat | None:
    """Mean, standard deviation (n-1; 0 for one value), min and max of the numbers among values (None without any)."""
    numbers = [float(v) for v in values if is_number(v)]
    if not numbers:
        return None
    std = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
    return Stat(statistics.fmean(numbers), std, min(numbers), max(numbers), len(numbers))


def draw_seed() -> int:
    """A fresh seed for runs configured with seed: null."""
    return random.SystemRandom().randrange(2**31)


def seeds_to_run(seed: int | None, requested: Sequence[int] | None) -> list[int]:
    """The configured seed (drawn when null), N consecutive seeds from it, or the listed seeds."""
    base = draw_seed() if seed is None else seed
    if not requested:
        return [base]
    if len(requested) == 1:
        return [base + offset for offset in range(requested[0])]
    return list(requested)


def aggregate_seeds(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation (n-1), min and max of the best validation accuracy over seeded runs."""
    stat = stat_of([float(result["best_valid_acc"]) for result in results])
    return {
        "runs": [dict(result) for result in results], "count": stat.n,
        "best_valid_acc_mean": stat.mean, "best_valid_acc_std": stat.std,
        "best_valid_acc_min": stat.min, "best_valid_acc_max": stat.max,
    }


def format_seed_table(aggregate: Mapping[str, Any]) -> str:
    """A console table of the seeded runs and their statistics."""
    lines = [f"{'seed':>10}  {'best valid_acc':>14}  run", f"{'-' * 10}  {'-' * 14}  {'-' * 3}"]
    lines += [f"{run['seed']:>10}  {run['best_valid_acc']:>14.4f}  {run['run_dir']}" for run in aggregate["runs"]]
    lines.append(f"mean {aggregate['best_valid_acc_mean']:.4f}  std {aggregate['best_valid_acc_std']:.4f}  "
                 f"min {aggregate['best_valid_acc_min']:.4f}  max {aggregate['best_valid_acc_max']:.4f}  "
                 f"({aggregate['count']} seeds)")
    return "\n".join(lines)


def seed_group_state(states: Sequence[Any], runs: int) -> str:
    """A --seeds group's state from its runs' states: failed or interrupted when one is, finished when all are."""
    for state in ("failed", "interrupted"):
        if state in states:
            return state
    return "finished" if len(states) == runs and all(state == "finished" for state in states) else "interrupted"
