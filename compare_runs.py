"""Compare training runs: the thesis's dashboard table of every run record under output/.

--to-mlflow imports the run folders, Neptune offline runs (.neptune/offline/run__*) and the --reference runs of the
thesis (or all of them: --reference all) into MLflow instead: into the store and experiment of the runs compared,
the thesis's runs in the same table as yours.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from utils.config import ConfigError
from utils.config.loading import configured_output_path
from utils.output_files import new_file_problems
from utils.printable import escape_control
from utils.runs.folders import MLFLOW_DB, run_files
from utils.runs.plots import plot_path_problem, plot_runs
from utils.runs.records import RunRecord, is_run_dir, load_runs
from utils.runs.table import (COLUMN_NAMES, column_problems, filter_runs, format_table, group_rows_by_seed, run_row,
                              sort_rows, write_csv)
from utils.runs.thesis import ThesisRun, load_thesis_runs, reference_record, unknown_run_problems

ALL_REFERENCES = "all"  # --reference all: every recorded thesis run

DEMO_OUTPUT = "demo/output"  # where make demo's runs go (the Makefile's DEMO_OUTPUT)
DEFAULT_EXPERIMENT = "cars"  # the schema's mlflow_experiment


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog=f"columns: {', '.join(COLUMN_NAMES)} (with --seeds also: runs)")
    parser.add_argument("folders", nargs="*",
                        help="output folders holding run folders (and sweeps' study folders), or run folders "
                             f"(default: output_path of the config file, else output, else {DEMO_OUTPUT})")
    parser.add_argument("-c", "--config",
                        help="config file whose output_path is the default folder (default: config.yml, if present)")
    parser.add_argument("--reference", nargs="+", action="extend", default=[], metavar="RUN_ID",
                        help="add recorded thesis runs (e.g. C-50, or all) to the table and, dashed, to the plot; "
                             "with --to-mlflow, import them beside your runs, into the same MLflow experiment")
    parser.add_argument("--tag", action="append", default=[],
                        help="keep runs having this tag (repeatable: all of them)")
    parser.add_argument("--architecture", "-a", action="append", default=[],
                        help="keep runs of this architecture (repeatable: any of them)")
    parser.add_argument("--sort", default="run_id", help="column to sort by (default: run_id)")
    parser.add_argument("--descending", action="store_true", help="sort from the largest value")
    parser.add_argument("--columns", help="comma-separated columns to show, in order (default: all)")
    parser.add_argument("--seeds", action="store_true",
                        help="one row per group of runs differing only by seed: mean ± std [min, max]")
    parser.add_argument("--csv", metavar="FILE.csv", help="also write the table as CSV")
    parser.add_argument("--plot", metavar="FILE.png", help="draw valid_acc and valid_loss per epoch of the runs shown")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --csv or --plot file")
    parser.add_argument("--to-mlflow", action="store_true",
                        help="import the runs (and Neptune offline runs under the folders) into MLflow; "
                             "runs already there are skipped")
    parser.add_argument("--mlflow-uri",
                        help="MLflow tracking URI for --to-mlflow (default: the store of the runs compared: the "
                             f"mlflow_tracking_uri their config.yml names, else {MLFLOW_DB} in the first folder)")
    parser.add_argument("--mlflow-experiment",
                        help=f"MLflow experiment for --to-mlflow (default: the runs' mlflow_experiment, else "
                             f"{DEFAULT_EXPERIMENT})")
    return parser.parse_args(argv)


def default_runs_folder(config_path: str | None) -> str:
    """output_path of the config file (-c, else config.yml); with neither file nor output/ yet, make demo's
    output folder when it exists (with a note)."""
    folder = configured_output_path(config_path)
    if config_path is None and not Path("config.yml").is_file() and not Path(folder).is_dir() \
            and Path(DEMO_OUTPUT).is_dir():
        print(f"no config.yml and no {folder}/ yet: showing the runs of make demo in {DEMO_OUTPUT}", file=sys.stderr)
        return DEMO_OUTPUT
    return folder


def output_problems(args: argparse.Namespace, protected: list[Path]) -> list[str]:
    """Problems with the --csv and --plot files, checked before anything is written."""
    problems = []
    for path in (args.csv, args.plot):
        if path:
            problems += new_file_problems(path, args.force, protected)
    if args.plot and not problems and (problem := plot_path_problem(args.plot)):
        problems.append(problem)
    return problems


def runs_store(folders: Sequence[str], runs: Sequence[RunRecord]) -> str | None:
    """The MLflow store of the runs compared: the mlflow_tracking_uri their config.yml names when they all name the
    same one, else the SQLite file that train.py logs to by default, mlflow.db in the first folder (a run
    folder's: in its parent); None without a folder."""
    recorded = {str(run.config.get("mlflow_tracking_uri") or "") for run in runs}
    if len(recorded) == 1 and (uri := recorded.pop()):
        return uri
    if not folders:
        return None
    folder = Path(folders[0])
    return f"sqlite:///{(folder.parent if is_run_dir(folder) else folder).resolve() / MLFLOW_DB}"


def runs_experiment(runs: Sequence[RunRecord]) -> str:
    """The MLflow experiment of the runs compared: the mlflow_experiment their config.yml names when they all name
    the same one, else cars."""
    recorded = {str(run.config.get("mlflow_experiment") or "") for run in runs} - {""}
    return recorded.pop() if len(recorded) == 1 else DEFAULT_EXPERIMENT


def to_mlflow(args: argparse.Namespace, runs: list[RunRecord], references: list[ThesisRun]) -> int:
    """Import run folders, Neptune offline runs and thesis runs into one experiment of the runs' MLflow store; runs
    already there are left as they are."""
    from utils.mlflow.dashboard import dashboard_line
    from utils.mlflow.mirror import import_to_mlflow
    from utils.mlflow.store import mlflow_uri_problems
    from utils.runs.neptune_offline import neptune_run_dirs, readable_neptune_runs

    uri = args.mlflow_uri or runs_store(args.folders, runs)
    if uri is None:
        print("compare_runs.py: error: --to-mlflow: no runs folder to find the MLflow store in; name the folder of "
              "your runs, or the store: --mlflow-uri sqlite:///path/to/mlflow.db", file=sys.stderr)
        return 2
    problems = mlflow_uri_problems(uri, "--mlflow-uri" if args.mlflow_uri else "the runs' MLflow store")
    if problems:
        print("compare_runs.py: error: " + "; ".join(problems), file=sys.stderr)
        return 2
    neptune_runs, skipped = readable_neptune_runs(neptune_run_dirs(args.folders))
    for problem in skipped:
        print(f"warning: {escape_control(problem)}", file=sys.stderr)
    experiment = args.mlflow_experiment or runs_experiment(runs)
    imported, present = import_to_mlflow(runs, neptune_runs, references, uri, experiment)
    for name in imported:
        print(f"imported {name}")
    print(f"{len(imported)} run(s) imported into MLflow experiment {experiment!r} at {uri}, {len(present)} already "
          f"there; {dashboard_line(uri, experiment)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.folders:
        try:
            default_folder = default_runs_folder(args.config)
        except ConfigError as error:
            print(f"compare_runs.py: error: {error}", file=sys.stderr)
            return 2
        # the thesis runs alone can be shown before any training
        args.folders = [default_folder] if Path(default_folder).is_dir() or not args.reference else []
    available = [*COLUMN_NAMES, "runs"] if args.seeds else list(COLUMN_NAMES)
    columns = [name.strip() for name in args.columns.split(",") if name.strip()] if args.columns else list(COLUMN_NAMES)
    if args.seeds and not args.columns:
        columns.insert(1, "runs")
    problems = column_problems([*columns, args.sort], available) if columns else ["--columns: no column names given"]
    problems += [f"{folder}: no such folder" for folder in args.folders if not Path(folder).is_dir()]
    thesis_runs = load_thesis_runs() if args.reference else {}
    args.reference = list(thesis_runs) if ALL_REFERENCES in args.reference else args.reference
    problems += unknown_run_problems(args.reference, thesis_runs)
    if problems:
        print("compare_runs.py: error: " + "; ".join(dict.fromkeys(problems)), file=sys.stderr)
        return 2
    runs, record_problems = load_runs(args.folders)
    problems = output_problems(args, [path for run in runs for path in run_files(run.path)])
    if problems:
        print("compare_runs.py: error: " + "; ".join(problems), file=sys.stderr)
        return 2
    for problem in record_problems:
        print(f"warning: {escape_control(problem)}", file=sys.stderr)
    runs = filter_runs(runs, tags=args.tag, architectures=args.architecture)
    if args.to_mlflow:
        return to_mlflow(args, runs, [thesis_runs[run_id] for run_id in dict.fromkeys(args.reference)])
    rows = group_rows_by_seed(runs) if args.seeds else [run_row(run) for run in runs]
    rows = sort_rows(rows, args.sort, args.descending)
    references = [reference_record(thesis_runs[run_id]) for run_id in dict.fromkeys(args.reference)]
    rows += group_rows_by_seed(references) if args.seeds else [run_row(run) for run in references]
    if not rows:
        print("no runs found" + (" matching the filters" if args.tag or args.architecture else ""))
        if args.csv or args.plot:
            print("nothing written", file=sys.stderr)
            return 1
        return 0
    print(format_table(rows, columns))
    if args.csv:
        write_csv(rows, columns, args.csv)
        print(f"table written to {args.csv}")
    if args.plot:
        drawn = plot_runs(runs, args.plot, references)
        print(f"curves of {drawn} run(s) drawn to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
