"""A study's report: one row per configuration, with the run table's result columns as mean ± std over seeds
(and the thesis's figures beside them), as a printed table, CSV and plot; for a search, Optuna's plots too. The
files are also stored with the study's MLflow parent run."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeps.storage import trials_by_run
from sweeps.study_file import Study, StudyRun
from sweeps.tracking import log_study_files
from utils.runs.plots import plot_runs
from utils.runs.records import RunRecord, is_run_dir, read_run
from utils.runs.seeds import Stat, stat_of
from utils.runs.table import format_table, run_row, write_csv
from utils.runs.thesis import load_thesis_runs, reference_record

SEARCH_PLOTS = {"optimization_history": "plot_optimization_history", "param_importances": "plot_param_importances",
                "intermediate_values": "plot_intermediate_values"}  # file name -> optuna.visualization.matplotlib
RESULT_COLUMNS = ("epochs", "train_acc_max", "valid_acc_max")  # the run table's, over each configuration's seeds
COLUMNS = ("id", "description", "state", "seeds", *RESULT_COLUMNS, "objective", "reason")  # reason: why it failed
THESIS_COLUMNS = tuple(f"thesis_{name}" for name in RESULT_COLUMNS)
# Which trial of a study run speaks for it, and the state the report shows.
STATE_ORDER = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL)
STATE_NAMES = {TrialState.COMPLETE: "finished", TrialState.PRUNED: "pruned", TrialState.RUNNING: "running",
               TrialState.WAITING: "waiting", TrialState.FAIL: "failed"}


@dataclass
class RunResult:
    """Where a study run stands: its deciding trial's state, its run records when they exist, the objective value."""

    state: str
    run: RunRecord | None
    value: float | None
    reason: str | None = None


def run_result(trials: Sequence[FrozenTrial]) -> RunResult:
    """The result of a study run from its trials: a finished trial first, then pruned, running, waiting, failed
    (with its error: what went wrong, or that it was lost more often than --max-retries allows)."""
    trial = min(trials, key=lambda item: (STATE_ORDER.index(item.state), -item.number))
    run_dir = trial.user_attrs.get("run_dir")
    run = read_run(run_dir) if run_dir and is_run_dir(Path(run_dir)) else None
    value = trial.value if trial.state == TrialState.COMPLETE else None
    reason = trial.user_attrs.get("error") if trial.state == TrialState.FAIL else None
    return RunResult(STATE_NAMES[trial.state], run, value, reason)


def study_records(optuna_study: optuna.Study) -> list[RunRecord]:
    """The run records of the study's runs that have them (each run's deciding trial's folder)."""
    results = [run_result(trials) for trials in trials_by_run(optuna_study).values()]
    return [result.run for result in results if result.run is not None]


def _configurations(study: Study, groups: Mapping[StudyRun, Sequence[FrozenTrial]]) -> list[tuple[str, str]]:
    """(id, description) of each configuration, in the study's order (search: in sampling order)."""
    if study.kind != "search":
        return [(config.id, config.description) for config in study.configurations]
    descriptions = {run.config_id: trials[0].user_attrs.get("description", "") for run, trials in groups.items()}
    return sorted(descriptions.items())


def _state_text(states: Sequence[str]) -> str:
    counts = Counter(states)
    if len(counts) == 1:
        return states[0]
    return ", ".join(f"{state} {count}" for state, count in counts.items())


def _thesis_cells(config_id: str, thesis_runs: Mapping[str, Any]) -> dict[str, Any]:
    run = thesis_runs.get(config_id)
    if run is None:
        return {}
    recorded = run_row(reference_record(run))
    return {f"thesis_{name}": recorded[name] for name in RESULT_COLUMNS}


def report_rows(study: Study, optuna_study: optuna.Study,
                thesis_runs: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[RunRecord]]:
    """One row per configuration (results as Stat over its seeds, the thesis's figures from thesis_runs) and the
    run records behind them."""
    groups = trials_by_run(optuna_study)
    rows, records = [], []
    for config_id, description in _configurations(study, groups):
        study_runs = [StudyRun(config_id, seed) for seed in study.seeds]
        results = [run_result(groups[run]) if run in groups else RunResult("not queued", None, None)
                   for run in study_runs]
        runs = [result.run for result in results if result.run is not None]
        records += runs
        run_rows = [run_row(run) for run in runs]
        row = {"id": config_id, "description": description, "state": _state_text([r.state for r in results]),
               "seeds": len(runs)}
        row.update({name: stat_of([item[name] for item in run_rows]) for name in RESULT_COLUMNS})
        row["objective"] = stat_of([result.value for result in results])
        row["reason"] = "; ".join(dict.fromkeys(result.reason for result in results if result.reason))
        rows.append({**row, **_thesis_cells(config_id, thesis_runs)})
    return rows, records


def _cell(value: Any) -> Any:
    """mean ± std over seeds; one seed's value alone."""
    if not isinstance(value, Stat):
        return value
    if value.n == 1:
        return value.mean
    return f"{value.mean:.4g} ± {value.std:.2g}"


def report_columns(study: Study) -> list[str]:
    """The report's columns: the thesis's figures too for a study of the thesis's runs."""
    return [*COLUMNS, *THESIS_COLUMNS] if study.reference == "thesis" else list(COLUMNS)


def write_search_plots(optuna_study: optuna.Study, folder: Path) -> tuple[list[Path], list[str]]:
    """Optuna's optimization history, parameter importances and intermediate values, drawn with matplotlib into
    PNG files in folder; (files written, why each other plot was left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    written, skipped = [], []
    for name, plot in SEARCH_PLOTS.items():
        path = folder / f"{name}.png"
        # Optuna sets its ggplot style globally: within this context, the settings come back afterwards
        with warnings.catch_warnings(), plt.style.context("ggplot"):
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                axes = getattr(optuna_plots, plot)(optuna_study)
            except (ValueError, RuntimeError, ZeroDivisionError) as error:  # e.g. too few finished trials
                skipped.append(f"{path.name}: not drawn ({error})")
                continue
            figure = axes.figure
            figure.set_size_inches(9, 5)
            figure.tight_layout()
            figure.savefig(path, dpi=100)
            plt.close(figure)
        written.append(path)
    return written, skipped


def write_report(study: Study, optuna_study: optuna.Study, folder: Path) -> tuple[str, list[Path]]:
    """The printed table, and the files written in the study's folder: report.csv, report.png and, for a
    search, Optuna's plots; the files are stored with the study's MLflow parent runs too."""
    thesis_runs = load_thesis_runs() if study.reference == "thesis" else {}
    rows, records = report_rows(study, optuna_study, thesis_runs)
    columns = report_columns(study)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, plot_path = folder / "report.csv", folder / "report.png"
    write_csv(rows, columns, csv_path)
    shown = {row["id"] for row in rows if row["seeds"]}
    references = [reference_record(run) for run_id, run in thesis_runs.items() if run_id in shown]
    plot_runs(records, plot_path, references)
    table = format_table([{name: _cell(row.get(name)) for name in columns} for row in rows], columns)
    files, skipped = [csv_path, plot_path], []
    if study.kind == "search":
        plots, skipped = write_search_plots(optuna_study, folder)
        files += plots
    log_study_files(optuna_study, files)
    return "\n".join([table, *skipped]), files
