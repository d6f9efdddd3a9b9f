"""Run a study of many train.py runs (a list, a grid or an Optuna search) on every worker given, and report it.

python sweep.py STUDY.yml [--workers N] [--devices 0,1,... | cpu] [--storage URL] [--only ID ...]
                [-c CONFIG] [--set key=value ...] [--max-retries N] [--check]
python sweep.py --report STUDY.yml [--storage URL]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna

from sweeps.configurations import load_study, open_study
from sweeps.groups import group_problems, processes_per_trial, study_group_config, worker_environments
from sweeps.progress import StudyProgress
from sweeps.report import write_report
from sweeps.storage import (DEFAULT_GRACE_S, DEFAULT_HEARTBEAT_S, DEFAULT_MAX_RETRIES, StorageError, default_storage,
                            open_optuna_study, open_storage, queue_runs, sampler_problems, sqlite_file_missing,
                            unfinished_runs)
from sweeps.study_file import Study
from utils.config import ConfigError, parse_overrides
from utils.cpu_threads import default_loader_workers, use_cpu_threads
from utils.logger import setup_logging


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", help="study file (YAML: base, and runs:, grid: or search:)")
    parser.add_argument("--report", action="store_true", help="print the study's table; write report.csv/.png")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    parser.add_argument("--devices", help="GPU indices for the workers, round robin (e.g. 0,1), or cpu "
                                          "(default: every visible GPU, else the CPU)")
    parser.add_argument("--storage", help="SQLAlchemy URL of the study's storage, shared by every machine's workers "
                                          "(default: sqlite file <output_path>/<study>/optuna.db)")
    parser.add_argument("--only", nargs="+", default=[], metavar="ID", help="run only these configurations")
    parser.add_argument("-c", "--config", help="base configuration file (replaces the study's base.config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base key for every run, as train.py --set")
    parser.add_argument("--check", action="store_true", help="check the study file and every run, then stop")
    parser.add_argument("--heartbeat", type=int, default=DEFAULT_HEARTBEAT_S, metavar="SECONDS",
                        help=f"seconds between a worker's heartbeats (default {DEFAULT_HEARTBEAT_S})")
    parser.add_argument("--grace", type=int, default=DEFAULT_GRACE_S, metavar="SECONDS",
                        help="seconds without a heartbeat before a trial is taken as lost and queued again "
                             f"(default {DEFAULT_GRACE_S})")
    parser.add_argument("--max-retries", type=int, default=DEFAULT_MAX_RETRIES, metavar="N",
                        help="times a run is queued again after its worker was lost (killed, out of memory); past "
                             f"that it ends failed (default {DEFAULT_MAX_RETRIES})")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers < 1 or args.heartbeat < 1 or args.grace <= args.heartbeat:
        parser.error("--workers and --heartbeat must be >= 1, and --grace longer than --heartbeat")
    if args.max_retries < 0:
        parser.error(f"--max-retries {args.max_retries}: need 0 or more")
    if args.devices == "cpu":
        args.overrides.append("accelerator=cpu")
    return args


def device_list(devices: str | None) -> list[str] | None:
    """--devices as a list (None: every visible GPU, else the CPU)."""
    return [item.strip() for item in devices.split(",") if item.strip()] if devices else None


def storage_url(study: Study, args: argparse.Namespace) -> str:
    return args.storage or default_storage(study, study.base.output_path)


def check_storage(study: Study, args: argparse.Namespace) -> str:
    """--check: open the study's storage (StorageError when it cannot be used); what it holds of the study."""
    url = args.storage or default_storage(study, study.base.output_path, create_folder=False)
    if sqlite_file_missing(url):
        return f"its storage {url} will be created"
    storage = open_storage(url)
    found = any(summary.study_name == study.name for summary in storage.get_all_studies())
    return f"its storage {url} opens and {'holds' if found else 'does not hold yet'} study {study.name}"


def report(args: argparse.Namespace) -> int:
    study = open_study(args.study, parse_overrides(args.overrides), args.config)
    url = storage_url(study, args)
    try:
        optuna_study = optuna.load_study(study_name=study.name, storage=open_storage(url))
    except KeyError:
        print(f"{args.study}: no study {study.name!r} in {url}; run: python sweep.py {args.study}", file=sys.stderr)
        return 2
    folder = Path(study.base.output_path) / study.name
    table, files = write_report(study, optuna_study, folder)
    print(table)
    print(f"\nwritten: {', '.join(map(str, files))}")
    return 0


def worker(args: argparse.Namespace) -> int:
    study = open_study(args.study, parse_overrides(args.overrides), args.config)
    loading = study.base.num_workers
    use_cpu_threads(study.base.cpu_threads, default_loader_workers() if loading is None else loading)
    from sweeps.worker import WorkerSettings, run_worker
    from training.process_group import is_rank_zero

    setup_logging(study.base.loglevel, study.base.logging_dir, is_rank_zero())  # ranks > 0: warnings only
    return run_worker(study, args.storage, WorkerSettings(args.only, args.heartbeat, args.grace, args.max_retries))


def worker_command(args: argparse.Namespace, url: str) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), args.study, "--worker", "--storage", url,
               "--heartbeat", str(args.heartbeat), "--grace", str(args.grace),
               "--max-retries", str(args.max_retries)]
    command += ["-c", args.config] if args.config else []
    command += [item for override in args.overrides for item in ("--set", override)]
    return command + (["--only", *args.only] if args.only else [])


def launch(args: argparse.Namespace) -> int:
    # the file and every configuration's keys and values, all reported together before torch loads
    load_study(args.study, parse_overrides(args.overrides), (), args.only, args.config, [sampler_problems])
    import torch

    from sweeps.launcher import (Supervision, finish_tracking, folder_conflicts, prepare_tracking,
                                 sqlite_tracking_note, start_workers, supervise)
    from training.run import RUN_CHECKS

    study = load_study(args.study, parse_overrides(args.overrides), RUN_CHECKS, args.only, args.config,
                       [sampler_problems, lambda study: folder_conflicts(study, args.only),
                        lambda study: group_problems(study, args.only, args.workers, device_list(args.devices),
                                                     torch.cuda.device_count())])
    if args.check:
        print(f"{args.study}: every run passed every pre-run check; {check_storage(study, args)}")
        return 0
    url = storage_url(study, args)
    storage = open_storage(url, args.heartbeat, args.grace)
    optuna_study = open_optuna_study(study, storage)
    queued = queue_runs(study, optuna_study, args.only)
    print(f"study {study.name} in {url}: {queued} runs queued; starting {args.workers} worker(s)")
    note = sqlite_tracking_note(study, url)
    if note:
        print(note)
    setup_logging(study.base.loglevel, study.base.logging_dir)  # MLflow's notes on creating its store: to the file
    prepare_tracking(study, args.only, optuna_study)
    environments = worker_environments(args.workers, device_list(args.devices), torch.cuda.device_count(),
                                       processes_per_trial(study_group_config(study)))
    command = worker_command(args, url)
    slots = start_workers(command, environments, Path(study.base.output_path) / study.name)
    watch = Supervision(study, optuna_study, storage, args.only, args.max_retries)
    codes = supervise(command, slots, watch, StudyProgress(study, optuna_study, args.only))
    left = unfinished_runs(study, optuna_study, args.only)
    finish_tracking(study, optuna_study, left)
    for slot, code in zip(slots, codes):
        if code < 0:
            print(f"worker {slot.process.pid} was ended by signal {-code} (its log: {slot.log_path})",
                  file=sys.stderr)
    if any(code == 130 for code in codes):
        print("stopped; run the same command again to resume the study", file=sys.stderr)
        return 130
    if left:
        print(f"workers stopped with {len(left)} runs unfinished ({', '.join(run.key for run in left)}; see the "
              f"report and the workers' logs); run the same command again to resume", file=sys.stderr)
        return 1
    print(f"study {study.name} done; see: python sweep.py --report {args.study}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its notes (study created, trial finished) are ours to say
    try:
        if args.report:
            return report(args)
        if args.worker:
            return worker(args)
        return launch(args)
    except (ConfigError, StorageError) as error:
        print(error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    exit_code = main()
    # Every run's records and trackers are closed and the storage's writes committed: the launcher and its workers
    # skip the interpreter's teardown of torch, Lightning and MLflow (seconds, tens of seconds on a busy machine),
    # so that a study ends when its last trial does.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
