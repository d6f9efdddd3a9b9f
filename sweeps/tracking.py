"""A study in MLflow: its parent run in each store its runs log to (opened by the launcher, its id kept in the
study's storage for the workers and for resumed studies), its runs' names, and the parent's closing values and
report files."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import optuna

from sweeps.study_file import Study, StudyRun
from utils.config import Config
from utils.mlflow.mirror import close_group_run, open_group_run, store_files
from utils.mlflow.store import NOTE_TAG, RUN_NAME_TAG, mlflow_tracking_uri
from utils.runs.records import RunRecord, run_times_ms
from utils.runs.table import mlflow_values, run_row

PARENT_RUNS = "mlflow_parent_runs"  # study user attribute: [[tracking URI, experiment, parent run id], ...]


def study_run_name(study: Study, study_run: StudyRun, description: str | None) -> str:
    """'<study>/<id> <description>', with ' seed <N>' when the study has several seeds."""
    name = f"{study.name}/{study_run.config_id}" + (f" {description}" if description else "")
    return name + (f" seed {study_run.seed}" if len(study.seeds) > 1 else "")


def _store(config: Config) -> tuple[str, str]:
    return mlflow_tracking_uri(config), config.mlflow_experiment


def parent_runs(optuna_study: optuna.Study) -> dict[tuple[str, str], str]:
    """The study's parent run id by (tracking URI, experiment)."""
    return {(uri, experiment): run_id for uri, experiment, run_id in optuna_study.user_attrs.get(PARENT_RUNS, [])}


def parent_run_id(optuna_study: optuna.Study, config: Config) -> str | None:
    """The parent run that a study run of this configuration nests under (None without MLflow)."""
    return parent_runs(optuna_study).get(_store(config)) if config.log_to_mlflow else None


def open_study_runs(study: Study, optuna_study: optuna.Study, configs: Iterable[Config]) -> None:
    """Open the study's parent run in the store of each configuration logging to MLflow: the one the study's
    storage names when the store still holds it (a resumed study), else a new one."""
    known = parent_runs(optuna_study)
    tags = {RUN_NAME_TAG: study.name, "tags": f"study:{study.name}",
            NOTE_TAG: f"{study.kind} study {study.path.name}: its runs are nested under this run"}
    opened = set()
    for config in configs:
        store = _store(config)
        if not config.log_to_mlflow or store in opened:
            continue
        opened.add(store)
        run_id = open_group_run(config, tags, known.get(store))
        if run_id:
            known[store] = run_id
    optuna_study.set_user_attr(PARENT_RUNS, [[uri, experiment, run_id] for (uri, experiment), run_id in known.items()])


def _best(records: Sequence[RunRecord]) -> RunRecord | None:
    scored = [(row["valid_acc_max"], record) for record in records
              if (row := run_row(record))["valid_acc_max"] is not None]
    return max(scored, key=lambda item: item[0])[1] if scored else None


def varied_keys(study: Study) -> set[str]:
    """The settings a study varies: its search space's keys and the keys its configurations override."""
    return set(study.space) | {key for configuration in study.configurations for key in configuration.overrides}


def shared_params(study: Study, records: Sequence[RunRecord]) -> dict[str, str]:
    """The run table's parameters that all the runs share (architecture, image size, ...), as MLflow keeps them;
    the settings the study varies are left out, even where its runs happen to agree."""
    varied = varied_keys(study)
    rows = [mlflow_values(run_row(record), "params") for record in records]
    return {key: value for key, value in (rows[0] if rows else {}).items()
            if all(row.get(key) == value for row in rows)
            and not any(key == name or key.startswith(f"{name}.") or name.startswith(f"{key}.") for name in varied)}


def close_study_runs(study: Study, optuna_study: optuna.Study, records: Sequence[RunRecord], state: str) -> None:
    """End each parent run with its best run's results (by valid_acc_max) and the study's settings: once the
    study is finished, the table's settings its runs share too (MLflow keeps a parameter's first value)."""
    params = {"study_file": str(study.path), "kind": study.kind, "seeds": ", ".join(map(str, study.seeds)),
              "objective": f"{study.direction} {study.metric}"}
    for (uri, _), run_id in parent_runs(optuna_study).items():
        runs = [record for record in records if record.summary.get("mlflow_parent_run_id") == run_id]
        best = _best(runs)
        metrics = mlflow_values(run_row(best), "metrics") if best else {}
        tags = {"best_run": str(best.summary.get("run_name") or best.run_id)} if best else {}
        shared = shared_params(study, runs) if state == "finished" else {}
        ends = [times[1] for record in runs if (times := run_times_ms(record.summary)) and times[1] is not None]
        # ended with its last run: a later launch that finds nothing to do leaves its duration as it was
        close_group_run(uri, run_id, state, {**shared, **params}, metrics, tags, max(ends, default=None))


def log_study_files(optuna_study: optuna.Study, files: Iterable[Path]) -> None:
    """Store report files as artifacts of the study's parent runs (a failing store is warned about)."""
    files = list(files)
    for (uri, _), run_id in parent_runs(optuna_study).items():
        store_files(uri, run_id, files)
