"""Study files for sweep.py: reading, checking (every problem at once) and expanding into configurations and units.

A study file has a ``base`` (a config file and overrides) and one of ``runs:`` (named override sets), ``grid:``
(key -> list of values, the product) or ``search:`` (key -> distribution, sampled by Optuna), plus ``seeds``,
``objective``, ``name`` and ``reference``. A configuration is one set of overrides; a unit is one configuration
trained with one seed, one train.py run in its own folder.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from utils.checks import did_you_mean, is_integer, is_number
from utils.configuration import MAX_SEED, ConfigError, load_config, read_yaml, yaml_inline

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

Check = Callable[[Mapping[str, Any]], list[str]]


@dataclass(frozen=True)
class Configuration:
    """One set of overrides of the base: its id (e.g. C-50), description and overrides (dotted key -> value)."""

    id: str
    description: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class Unit:
    """One configuration with one seed: one train.py run."""

    config_id: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.config_id}/seed{self.seed}"


@dataclass
class Study:
    """A checked study file."""

    path: Path
    name: str
    kind: str
    base_config: str
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

    def units(self, only: Sequence[str] = ()) -> list[Unit]:
        """Every configuration (or those named in only) with every seed, in study order."""
        return [Unit(config.id, seed) for config in self.configurations if not only or config.id in only
                for seed in self.seeds]

    def configuration(self, config_id: str) -> Configuration:
        """The listed configuration of that id."""
        return next(config for config in self.configurations if config.id == config_id)


def override_text(key: str, value: Any) -> str:
    """A train.py --set argument: key=value with the value as inline YAML (read back as the same value)."""
    return f"{key}={yaml_inline(value)}"


def override_texts(overrides: Mapping[str, Any]) -> list[str]:
    """train.py --set arguments of an override mapping."""
    return [override_text(key, value) for key, value in overrides.items()]


def unit_config(study: Study, overrides: Mapping[str, Any], seed: int, cli_overrides: Sequence[str] = (),
                checks: Iterable[Check] = ()) -> dict[str, Any]:
    """The resolved configuration of one unit: base file, base overrides, --set, the unit's overrides, seed."""
    texts = [*override_texts(study.base_overrides), *cli_overrides, *override_texts(overrides), f"seed={seed}"]
    return load_config(study.base_config, texts, checks)


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


def _distribution_problems(where: str, spec: Any) -> list[str]:
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
        problems += _distribution_problems(f"search.space.{key}", spec)
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
    raw = read_yaml(path)
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
    study = Study(path, name, kinds[0] if kinds else "runs", base_config, dict(base_overrides), metric, direction,
                  reference)
    if "runs" in kinds:
        study.configurations = _runs(raw["runs"], problems)
    elif "grid" in kinds:
        study.configurations = _grid(raw["grid"], problems)
    elif "search" in kinds:
        study.space, study.trials, study.sampler, study.pruner = _search(raw["search"], problems)
    study.seeds, study.seed_count = (seeds, len(seeds)) if isinstance(seeds, list) else ([], seeds)
    return study, problems


# ---- configurations against the schema and train.py's checks -------------------------------------------------


def search_probes(space: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(label, overrides) to check a search space: each key at its low and high, or at each choice."""
    probes = []
    for key, spec in space.items():
        if _distribution_problems(key, spec):
            continue
        values = spec["choices"] if spec["type"] == "categorical" else [spec["low"], spec["high"]]
        probes += [(f"search.space.{key}={value!r}", {key: value}) for value in values]
    return probes


def resolve_seeds(study: Study, base_seed: int | None) -> list[str]:
    """Turn a seed count into seeds from the base configuration's seed; problems when that seed is null."""
    if study.seeds:
        return []
    if base_seed is None:
        return ["seeds: a count needs a fixed base seed (the base has seed: null, drawn anew by each worker); "
                "set seed in the base or list the seeds, e.g. seeds: [0, 1]"]
    study.seeds = [base_seed + offset for offset in range(study.seed_count)]
    if study.seeds[-1] > MAX_SEED:
        return [f"seeds: {study.seeds[0]}..{study.seeds[-1]} go past the largest seed, {MAX_SEED}"]
    return []


def _targets(study: Study, only: Sequence[str]) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """(label, overrides) of every configuration to check, and problems with --only."""
    if study.kind == "search":
        return [("base", {})] + search_probes(study.space), []
    known = [config.id for config in study.configurations]
    problems = [f"--only {run_id}: no such configuration (ids: {', '.join(known)})"
                for run_id in only if run_id not in known]
    return [(f"{study.kind} {config.id}", config.overrides) for config in study.configurations
            if not only or config.id in only], problems


def configuration_problems(study: Study, cli_overrides: Sequence[str] = (), checks: Iterable[Check] = (),
                           only: Sequence[str] = ()) -> list[str]:
    """Every problem of the base and of each configuration (or probe of the search space) under checks.

    A problem shared by every configuration is reported once.
    """
    checks = list(checks)
    try:
        base = base_settings(study, cli_overrides)
    except ConfigError as error:
        return [f"base ({error.source} with base.overrides and --set): {problem}" for problem in error.problems]
    problems = resolve_seeds(study, base["seed"])
    targets, found = _targets(study, only)
    problems += found
    seed = study.seeds[0] if study.seeds else 0
    per_target: list[tuple[str, list[str]]] = []
    for label, overrides in targets:
        try:
            unit_config(study, overrides, seed, cli_overrides, checks)
            per_target.append((label, []))
        except ConfigError as error:
            per_target.append((label, error.problems))
    shared = set.intersection(*(set(found) for _, found in per_target)) if len(per_target) > 1 else set()
    problems += [f"every configuration: {problem}" for problem in sorted(shared)]
    for label, found in per_target:
        problems += [f"{label}: {problem}" for problem in found if problem not in shared]
    return problems


def base_settings(study: Study, cli_overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The base configuration alone (its output_path, logging and seed)."""
    return load_config(study.base_config, [*override_texts(study.base_overrides), *cli_overrides])


def load_study(path: str | Path, cli_overrides: Sequence[str] = (), checks: Iterable[Check] = (),
               only: Sequence[str] = (), base_config: str | None = None,
               study_checks: Iterable[Callable[[Study], list[str]]] = ()) -> Study:
    """Read a study file and check it and every configuration; raise ConfigError naming the file with every problem.

    base_config (sweep.py -c) replaces the file's base.config; study_checks see the whole study.
    """
    study, problems = parse_study(path)
    study.base_config = base_config or study.base_config
    problems += configuration_problems(study, cli_overrides, checks, only)
    for check in study_checks:
        problems += check(study)
    if only and study.kind == "search":
        problems.append("--only: names configurations of runs: and grid: studies; a search: study samples its own")
    if problems:
        raise ConfigError(str(path), problems)
    return study
