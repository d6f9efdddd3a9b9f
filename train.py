"""Train a network on prepared Stanford Cars data as config.yml says.

python train.py [-c CONFIG] [-d DATA_PATH] [--set key.path=value ...] [--resume RUN_DIR_OR_CKPT [--trust-checkpoint]]
                [--seeds N | --seeds S1 S2 ...] [--check]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from datasets.prepared import prepared_data_problems
from datasets.settings import preprocessing_settings
from utils.checkpoint_safety import TRUST_HELP, TRUST_OPTION, CheckpointError, check_resume_checkpoint
from utils.config import MAX_SEED, Config, ConfigError, load_config, parse_overrides
from utils.config.loading import check_config, override_origins
from utils.cpu_threads import default_loader_workers, use_cpu_threads
from utils.logger import setup_logging
from utils.output_files import FileWriteError
from utils.runs.folders import resume_target
from utils.runs.records import RunRecordError
from utils.runs.seeds import format_seed_table, seeds_to_run

if TYPE_CHECKING:
    from pytorch_lightning.callbacks import Callback

logger = logging.getLogger("train")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default=None, help="configuration file (default: config.yml)")
    parser.add_argument("-d", "--data", dest="data_path", help="prepared data folder (overrides stanford_data_path)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key, YAML-typed; nested keys with dots: --set optimizer_params.lr=0.003")
    parser.add_argument("--resume", metavar="RUN_DIR_OR_CKPT",
                        help="continue a run from its folder (last.ckpt) or a checkpoint, with its config.yml")
    parser.add_argument(TRUST_OPTION, action="store_true", help=f"with --resume: {TRUST_HELP}")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="N",
                        help="one number N: N runs with seeds seed, seed+1, ...; several numbers: those seeds")
    parser.add_argument("--check", action="store_true",
                        help="run every pre-run check of the configuration and the data, then stop")
    args = parser.parse_args(argv)
    if args.resume and (args.seeds or args.config):
        parser.error("--resume uses the run's own config.yml and seed: leave out -c and --seeds")
    if args.trust_checkpoint and not args.resume:
        parser.error(f"{TRUST_OPTION} goes with --resume (a new run reads no checkpoint)")
    if args.seeds and len(args.seeds) == 1 and args.seeds[0] < 1:
        parser.error("--seeds N needs N >= 1")
    if args.seeds and len(args.seeds) > 1 and not all(0 <= seed <= MAX_SEED for seed in args.seeds):
        parser.error(f"--seeds S1 S2 ...: each seed must be between 0 and {MAX_SEED}")
    return args


def load_checked_config(args: argparse.Namespace) -> tuple[Config, Path | None, Path | None]:
    """The run's Config with every check passed, and the run folder and checkpoint to resume (or None, None).

    The configuration's own checks and the data folder come first, before torch is imported, so that a wrong key,
    value or folder is named at once; then torch's threads are set and the checks of the network and the Trainer run.
    """
    overrides = parse_overrides(args.overrides) + ([("stanford_data_path", args.data_path)] if args.data_path else [])
    run_dir, checkpoint = resume_target(args.resume) if args.resume else (None, None)
    path = run_dir / "config.yml" if run_dir else args.config or "config.yml"
    origins = override_origins(args.overrides, args.data_path)
    config = load_config(path, overrides, (prepared_data_problems,), origins)
    use_cpu_threads(config.cpu_threads, default_loader_workers() if config.num_workers is None else config.num_workers)
    from training.run import RUN_CHECKS

    index = check_resume_checkpoint(checkpoint, run_dir, args.trust_checkpoint) if checkpoint else None
    check_config(config, str(path), RUN_CHECKS, origins)
    if index is not None:  # its weights fit the run's network, and it holds no more than that network allows
        from models.run_loading import check_fits

        check_fits(checkpoint, index.content, index, config.architecture, preprocessing_settings(config).channels,
                   config.dropout, config.output_channels)
    return config, run_dir, checkpoint


def main(argv: Sequence[str] | None = None, extra_callbacks: Iterable[Callback] = ()) -> int:
    args = parse_args(argv)
    try:
        config, run_dir, checkpoint = load_checked_config(args)
    except (ConfigError, FileNotFoundError, RunRecordError, CheckpointError) as error:
        print(error, file=sys.stderr)
        return 2
    from training.memory import memory_report
    from training.run import RunStopped

    if args.check:
        print(f"{args.resume or args.config or 'config.yml'}: every pre-run check passed")
        print(memory_report(config))
        return 0
    try:
        return train(config, args, run_dir, checkpoint, extra_callbacks)
    except RunStopped as stopped:  # SIGTERM: one line saying how to resume the run
        print(stopped, file=sys.stderr)
        return stopped.exit_status
    except FileWriteError as error:  # e.g. a full disk: summary.json says failed, naming the file
        print(f"run failed: {error}", file=sys.stderr)
        return 1


def train(config: Config, args: argparse.Namespace, run_dir: Path | None, checkpoint: Path | None,
          extra_callbacks: Iterable[Callback]) -> int:
    """Train the checked run (resumed, one seed or several); the exit status."""
    from training.process_group import is_rank_zero, join_process_group, rank_zero_value
    from training.run import train_run, train_seeds
    from training.trackers import announce_dashboard

    log_file = setup_logging(config.loglevel, config.logging_dir, is_rank_zero())
    logger.info("logging to %s", log_file)
    if run_dir:
        logger.info("resuming %s from %s", run_dir, checkpoint)
        try:
            train_run(config, run_dir, checkpoint, extra_callbacks, trust_checkpoint=args.trust_checkpoint)
        except (CheckpointError, RunRecordError) as error:  # a checkpoint state or record train.py does not write
            print(error, file=sys.stderr)
            return 2
        announce_dashboard(config)
        return 0
    join_process_group(config)  # torchrun, srun or Lightning's launcher: rank 0 draws a null seed for every rank
    seeds = rank_zero_value(lambda: seeds_to_run(config.seed, args.seeds))
    if max(seeds) > MAX_SEED:
        print(f"--seeds: seeds {seeds[0]}..{seeds[-1]} go past the largest seed, {MAX_SEED}", file=sys.stderr)
        return 2
    try:
        results = train_seeds(config, seeds, extra_callbacks)
    except FileNotFoundError as error:  # e.g. data removed after the checks: before the run wrote anything
        print(error, file=sys.stderr)
        return 2
    if results.aggregate:
        print(format_seed_table(results.aggregate))
        logger.info("seed statistics written to %s", results.aggregate_path)
    announce_dashboard(config)
    if results.failed:
        print(results.failed, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
