"""Study files for sweep.py: reading, checking (every problem at once) and expanding into configurations and units.

A study file has a ``base`` (a config file, read from the study file's folder when relative, and overrides) and
one of ``runs:`` (named override sets), ``grid:`` (key -> list of values, the product) or ``search:`` (key ->
distribution, sampled by Optuna), plus ``seeds``, ``objective``, ``name`` and ``reference``. A configuration is one set of overrides; a study run is one
configuration trained with one seed, one training run in its own folder. The configurations are checked against
Config in sweeps.configurations.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from utils.checks import did_you_mean, is_integer, is_number
from utils.config import MAX_SEED, Config, ConfigError
from utils.config.loading import Override, read_yaml

TOP_KEYS = ("name", "base", "runs", "grid", "search", "seeds", "objective", "reference")
KINDS = ("runs", "grid", "search")
RUN_KEYS = ("id", "description", "overrides")
SEARCH_KEYS = ("space", "trials", "sampler", "pruner")
DISTRIBUTION_KEYS = {"float": ("type", "low", "high", "log", "step"), "int": ("type", "low", "high", "log", "step"),
                     "categorical": ("type", "choices")}
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "threshold", "none")
METRICS = ("best_valid_acc", "train_loss", "train_acc", "valid_loss", "valid_acc", "valid_acc_top5")
DIRECTIONS = ("maximize", "minimize")
REFERENCES = ("thesis",)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEFAULT_CONFIG = "config.yml"


@dataclass(frozen=True)
class Configuration:
    """One set of overrides of the base: its id (e.g. C-50), description and overrides (dotted key -> value)."""

    id: str
    description: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class StudyRun:
    """One configuration with one seed: one training run of the study."""

    config_id: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.config_id}/seed{self.seed}"


@dataclass
class Study:
    """A study file's content; sweeps.configurations adds its base configuration (``base_raw``, ``base``:
    the base file read once, with base.overrides and --set) and its checked configurations (``checked``)."""

    path: Path
    name: str
    kind: str
    base_config: str  # base.config, relative to the study file's folder (or sweep.py -c as given)
    base_overrides: dict[str, Any]
    metric: str
    direction: str
    reference: str | None
    seeds: list[int] = field(default_factory=list)
    seed_count: int = 1
    configurations: list[Configuration] = field(default_factory=list)
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    trials: int = 0
    sampler: dict[str, Any] = field(default_factory=dict)
    pruner: dict[str, Any] = field(default_factory=dict)
    base_raw: dict[str, Any] = field(default_factory=dict)
    cli_overrides: list[Override] = field(default_factory=list)
    base: Config | None = None
    checked: dict[str, Config] = field(default_factory=dict)

    def runs(self, only: Sequence[str] = ()) -> list[StudyRun]:
        """Every configuration (or those named in only) with every seed, in study order."""
        return [StudyRun(config.id, seed) for config in self.configurations if not only or config.id in only
                for seed in self.seeds]

    def configuration(self, config_id: str) -> Configuration:
        """The listed configuration of that id."""
        return next(config for config in self.configurations if config.id == config_id)

    def run_name(self, study_run: StudyRun) -> str:
        """A run's name and folder name: its configuration's id, with _seed<N> when the study has several seeds."""
        return study_run.config_id if len(self.seeds) == 1 else f"{study_run.config_id}_seed{study_run.seed}"


# ---- reading and checking ----------------------------------------------------------------------------------


def _unknown(where: str, keys: Iterable[Any], known: Sequence[str]) -> list[str]:
    return [f"{where}{key}: unknown key; {did_you_mean(key, known, most=2) or 'valid: ' + ', '.join(known)}"
            for key in keys if key not in known]


def _mapping(value: Any, where: str, problems: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return {}
    return value


def _override_problems(where: str, overrides: Mapping[Any, Any]) -> list[str]:
    return [f"{where}.{key!r}: override keys are config keys as text (nested with dots, e.g. optimizer_params.lr)"
            for key in overrides if not isinstance(key, str) or not key.strip()]


def _base(raw: Any, problems: list[str]) -> tuple[str, dict[str, Any]]:
    base = _mapping(raw, "base", problems)
    problems += _unknown("base.", base, ("config", "overrides"))
    config = base.get("config", DEFAULT_CONFIG)
    if not isinstance(config, str) or not config.strip():
        problems.append(f"base.config: expected the path of a config file, got {config!r}")
        config = DEFAULT_CONFIG
    overrides = _mapping(base.get("overrides"), "base.overrides", problems)
    problems += _override_problems("base.overrides", overrides)
    return config, overrides


def _runs(raw: Any, problems: list[str]) -> list[Configuration]:
    if not isinstance(raw, list) or not raw:
        problems.append(f"runs: expected a non-empty list of runs (id, description, overrides), got {raw!r}")
        return []
    configurations, seen = [], set()
    for index, entry in enumerate(raw):
        where = f"runs[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a mapping with id, description, overrides, got {entry!r}")
            continue
        problems += _unknown(f"{where}.", entry, RUN_KEYS)
        run_id = entry.get("id")
        if not isinstance(run_id, str) or not NAME_PATTERN.match(run_id):
            problems.append(f"{where}.id: {run_id!r} is not a run id (letters, digits, '-', '_', '.'; e.g. C-50)")
            continue
        if run_id in seen:
            problems.append(f"{where}.id: {run_id} is listed twice; ids name run folders and must be unique")
        seen.add(run_id)
        description = entry.get("description") or ""
        if not isinstance(description, str):
            problems.append(f"{where}.description: expected text, got {description!r}")
        overrides = _mapping(entry.get("overrides"), f"{where}.overrides", problems)
        problems += _override_problems(f"{where}.overrides", overrides)
        configurations.append(Configuration(run_id, str(description), dict(overrides)))
    return configurations


def _grid(raw: Any, problems: list[str]) -> list[Configuration]:
    grid = _mapping(raw, "grid", problems)
    if not grid:
        problems.append("grid: expected a mapping of config key -> list of values, e.g. dropout: [0.2, 0.3]")
        return []
    problems += _override_problems("grid", grid)
    bad = [key for key, values in grid.items() if not isinstance(values, list) or not values]
    problems += [f"grid.{key}: expected a non-empty list of values, got {grid[key]!r}" for key in bad]
    if bad:
        return []
    width = len(str(math.prod(len(values) for values in grid.values())))
    configurations = []
    for number, values in enumerate(itertools.product(*grid.values()), start=1):
        overrides = dict(zip(grid, values))
        description = ", ".join(f"{key}={value}" for key, value in overrides.items())
        configurations.append(Configuration(f"G-{number:0{width}d}", description, overrides))
    return configurations


def distribution_problems(where: str, spec: Any) -> list[str]:
    if not isinstance(spec, dict) or spec.get("type") not in DISTRIBUTION_KEYS:
        return [f"{where}: expected a distribution: {{type: float|int, low: L, high: H[, log: true]}} or "
                f"{{type: categorical, choices: [...]}}, got {spec!r}"]
    kind = spec["type"]
    problems = _unknown(f"{where}.", spec, DISTRIBUTION_KEYS[kind])
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            problems.append(f"{where}.choices: expected a non-empty list of values, got {choices!r}")
        return problems
    low, high, log = spec.get("low"), spec.get("high"), spec.get("log", False)
    wanted = int if kind == "int" else float
    for name, value in (("low", low), ("high", high)):
        if not (is_number(value) and math.isfinite(value)) or (wanted is int and not isinstance(value, int)):
            problems.append(f"{where}.{name}: expected {'an integer' if wanted is int else 'a number'}, got {value!r}")
    if not isinstance(log, bool):
        problems.append(f"{where}.log: expected true or false, got {log!r}")
    if problems:
        return problems
    if low >= high:
        problems.append(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        problems.append(f"{where}: log: true needs low > 0, got low {low}")
    if log and spec.get("step") is not None:
        problems.append(f"{where}: step cannot be used with log: true")
    return problems


def _named_option(where: str, raw: Any, names: Sequence[str], default: str) -> tuple[dict[str, Any], list[str]]:
    """'name' or {type: name, option: value, ...} -> ({'type': name, ...}, problems)."""
    spec = {"type": raw} if isinstance(raw, str) else ({"type": default} if raw is None else raw)
    if not isinstance(spec, dict) or spec.get("type") not in names:
        return {"type": default}, [f"{where}: {raw!r} is not one of {', '.join(names)} "
                                   f"(or {{type: NAME, option: value}})"]
    return dict(spec), []


def _search(raw: Any, problems: list[str]) -> tuple[dict[str, Any], int, dict[str, Any], dict[str, Any]]:
    search = _mapping(raw, "search", problems)
    problems += _unknown("search.", search, SEARCH_KEYS)
    space = _mapping(search.get("space"), "search.space", problems)
    if not space:
        problems.append("search.space: expected config key -> distribution, e.g. "
                        "optimizer_params.lr: {type: float, low: 0.0003, high: 0.003, log: true}")
    problems += _override_problems("search.space", space)
    for key, spec in space.items():
        problems += distribution_problems(f"search.space.{key}", spec)
    trials = search.get("trials")
    if not is_integer(trials) or trials < 1:
        problems.append(f"search.trials: expected the number of configurations to try (>= 1), got {trials!r}")
        trials = 0
    sampler, found = _named_option("search.sampler", search.get("sampler"), SAMPLERS, "tpe")
    problems += found
    pruner, found = _named_option("search.pruner", search.get("pruner"), PRUNERS, "median")
    problems += found
    return space, trials, sampler, pruner


def _seeds(raw: Any, problems: list[str]) -> list[int] | int:
    """A list of seeds, or a count N (seeds base seed .. base seed + N - 1, resolved later)."""
    if raw is None:
        return 1
    if is_integer(raw) and raw >= 1:
        return raw
    if isinstance(raw, list) and raw and all(is_integer(seed) and 0 <= seed <= MAX_SEED for seed in raw):
        if len(set(raw)) == len(raw):
            return list(raw)
    problems.append(f"seeds: expected a count N >= 1 (the base seed and the N - 1 after it) or a list of distinct "
                    f"seeds between 0 and {MAX_SEED}, got {raw!r}")
    return 1


def _objective(raw: Any, problems: list[str]) -> tuple[str, str]:
    objective = _mapping(raw, "objective", problems)
    problems += _unknown("objective.", objective, ("metric", "direction"))
    metric = objective.get("metric", "best_valid_acc")
    direction = objective.get("direction", "minimize" if "loss" in str(metric) else "maximize")
    if metric not in METRICS:
        problems.append(f"objective.metric: {metric!r} is not one of {', '.join(METRICS)}")
    if direction not in DIRECTIONS:
        problems.append(f"objective.direction: {direction!r} is not one of {', '.join(DIRECTIONS)}")
    return str(metric), str(direction)


def read_study(path: str | Path) -> Study:
    """Read and check a study file's structure (not yet the configurations); raise ConfigError with every problem."""
    study, problems = parse_study(path)
    if problems:
        raise ConfigError(str(path), problems)
    return study


def parse_study(path: str | Path) -> tuple[Study, list[str]]:
    """A study file's content and the problems of its structure."""
    path = Path(path)
    raw = read_yaml(path, "study file")
    problems = _unknown("", raw, TOP_KEYS)
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.append(f"name: {name!r} is not a study name (letters, digits, '-', '_', '.'); it names the "
                        "study's folder and its Optuna study")
        name = "study"
    base_config, base_overrides = _base(raw.get("base"), problems)
    kinds = [kind for kind in KINDS if kind in raw]
    if len(kinds) != 1:
        problems.append(f"expected exactly one of runs:, grid:, search:, found {', '.join(kinds) or 'none'}")
    seeds = _seeds(raw.get("seeds"), problems)
    metric, direction = _objective(raw.get("objective"), problems)
    reference = raw.get("reference")
    if reference is not None and reference not in REFERENCES:
        problems.append(f"reference: {reference!r} is not one of {', '.join(REFERENCES)}")
    study = Study(path, name, kinds[0] if kinds else "runs", str(path.parent / base_config), dict(base_overrides),
                  metric, direction, reference)
    if "runs" in kinds:
        study.configurations = _runs(raw["runs"], problems)
    elif "grid" in kinds:
        study.configurations = _grid(raw["grid"], problems)
    elif "search" in kinds:
        study.space, study.trials, study.sampler, study.pruner = _search(raw["search"], problems)
    study.seeds, study.seed_count = (seeds, len(seeds)) if isinstance(seeds, list) else ([], seeds)
    return study, problems
