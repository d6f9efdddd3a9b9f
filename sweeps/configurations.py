"""A study's configurations as Configs: the base file read once, each configuration (or each probe of a search
space) checked once, and the Config of each of the study's runs, all without re-reading YAML."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from sweeps.study_file import Study, StudyRun, distribution_problems, parse_study
from utils.config import MAX_SEED, Config, ConfigError
from utils.config.loading import Check, Override, config_from_mapping, read_yaml


def run_config(study: Study, overrides: Mapping[str, Any], seed: int, checks: Iterable[Check] = ()) -> Config:
    """The Config of one run: base file, base overrides, --set, the configuration's overrides, the seed."""
    return config_from_mapping(study.base_raw, study.base_config,
                               [*study.base_overrides.items(), *study.cli_overrides, *overrides.items(),
                                ("seed", seed)], checks)


def _base_problems(study: Study, from_option: bool = False) -> list[str]:
    """Read the base file and make the base configuration; its problems, then those of resolving the seeds.
    from_option: the base file is sweep.py -c's (read from the current folder), not the study's base.config."""
    if not Path(study.base_config).is_file():
        given = f"-c {study.base_config}" if from_option else "base.config"
        where = "" if from_option else " (a relative base.config is read from the study file's folder)"
        return [f"{given}: configuration file not found: {Path(study.base_config).absolute()}{where}"]
    try:
        study.base_raw = read_yaml(study.base_config)
        study.base = config_from_mapping(study.base_raw, study.base_config,
                                         [*study.base_overrides.items(), *study.cli_overrides])
    except ConfigError as error:
        return [f"base ({error.source} with base.overrides and --set): {problem}" for problem in error.problems]
    return resolve_seeds(study, study.base.seed)


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


def search_probes(space: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(label, overrides) to check a search space: each key at its low and high, or at each choice."""
    probes = []
    for key, spec in space.items():
        if distribution_problems(key, spec):
            continue
        values = spec["choices"] if spec["type"] == "categorical" else [spec["low"], spec["high"]]
        probes += [(f"search.space.{key}={value!r}", {key: value}) for value in values]
    return probes


def _targets(study: Study, only: Sequence[str]) -> tuple[list[tuple[str, str | None, dict[str, Any]]], list[str]]:
    """(label, configuration id or None, overrides) of everything to check, and problems with --only."""
    if study.kind == "search":
        return [("base", None, {})] + [(label, None, values) for label, values in search_probes(study.space)], []
    known = [config.id for config in study.configurations]
    problems = [f"--only {run_id}: no such configuration (ids: {', '.join(known)})"
                for run_id in only if run_id not in known]
    return [(f"{study.kind} {config.id}", config.id, config.overrides) for config in study.configurations
            if not only or config.id in only], problems


def configuration_problems(study: Study, checks: Iterable[Check] = (), only: Sequence[str] = (),
                           base_from_option: bool = False) -> list[str]:
    """Every problem of the base and of each configuration (or probe of the search space) under checks; keeps each
    listed configuration's Config (with the first seed) in study.checked. A problem shared by every configuration
    is reported once."""
    problems = _base_problems(study, base_from_option)
    if study.base is None:
        return problems
    targets, found = _targets(study, only)
    problems += found
    seed = study.seeds[0] if study.seeds else 0
    per_target: list[tuple[str, list[str]]] = []
    for label, config_id, overrides in targets:
        try:
            config = run_config(study, overrides, seed, checks)
        except ConfigError as error:
            per_target.append((label, error.problems))
            continue
        per_target.append((label, []))
        if config_id is not None:
            study.checked[config_id] = config
    shared = set.intersection(*(set(found) for _, found in per_target)) if len(per_target) > 1 else set()
    problems += [f"every configuration: {problem}" for problem in sorted(shared)]
    for label, found in per_target:
        problems += [f"{label}: {problem}" for problem in found if problem not in shared]
    return problems


def run_configs(study: Study, only: Sequence[str] = ()) -> Iterator[tuple[StudyRun, Config]]:
    """Each run of a runs: or grid: study (or those of --only) with its Config, from the checked configurations;
    runs whose configuration failed its checks are left out (load_study reported them)."""
    for study_run in study.runs(only):
        if study_run.config_id in study.checked:
            yield study_run, replace(study.checked[study_run.config_id], seed=study_run.seed)


def open_study(path: str | Path, cli_overrides: Sequence[Override] = (), base_config: str | None = None) -> Study:
    """A study file with its base configuration, configurations not yet checked (sweep workers, --report);
    raise ConfigError naming the file with every problem of its structure and base."""
    study, problems = parse_study(path)
    study.base_config = base_config or study.base_config
    study.cli_overrides = list(cli_overrides)
    problems += _base_problems(study, base_config is not None)
    if problems:
        raise ConfigError(str(path), problems)
    return study


def load_study(path: str | Path, cli_overrides: Sequence[Override] = (), checks: Iterable[Check] = (),
               only: Sequence[str] = (), base_config: str | None = None,
               study_checks: Iterable[Callable[[Study], list[str]]] = ()) -> Study:
    """Read a study file and check it and every configuration once; raise ConfigError naming the file with every
    problem. base_config (sweep.py -c) replaces the file's base.config; study_checks see the whole study."""
    study, problems = parse_study(path)
    study.base_config = base_config or study.base_config
    study.cli_overrides = list(cli_overrides)
    problems += configuration_problems(study, checks, only, base_config is not None)
    for check in study_checks:
        problems += check(study)
    if only and study.kind == "search":
        problems.append("--only: names configurations of runs: and grid: studies; a search: study samples its own")
    if problems:
        raise ConfigError(str(path), problems)
    return study
