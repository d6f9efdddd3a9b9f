"""Train a network on prepared Stanford Cars data as config.yml says.

python train.py [-c CONFIG] [-d DATA_PATH] [--set key.path=value ...] [--resume RUN_DIR_OR_CKPT [--trust-checkpoint]]
                [--seeds N | --seeds S1 S2 ...] [--check]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

import datasets
import models
from models.net_module import NetModule
from models.settings import module_kwargs, network_kwargs
from utils.checkpoint_safety import TRUST_HELP, TRUST_OPTION, CheckpointError, check_resume_checkpoint
from utils.configuration import MAX_SEED, ConfigError, load_config, tracked_params
from utils.logger import setup_logging
from utils.output_files import folder_problems
from utils.run_folders import announce_run_folder
from utils.timing import log_execution_time
from utils.tracking import mlflow_problems
from utils.run_folders import TIMESTAMP, RunRecordError, plan_runs, release_unused, resume_target, write_json
from utils.training import (aggregate_seeds, format_seed_table, git_commit, run_training, runtime_name, seeds_to_run,
                            trainer_problems)

logger = logging.getLogger("train")
REPO_DIR = Path(__file__).resolve().parent
# Every check a configuration passes before any data or model work; all problems are reported together.
PRE_RUN_CHECKS = (datasets.config_problems, datasets.prepared_data_problems, models.config_problems,
                  trainer_problems, folder_problems, mlflow_problems)


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


def train_once(cfg: Mapping[str, Any], run_dir: Path, ckpt_path: Path | None = None,
               extra_callbacks: Iterable[Callback] = (), seed_group: str | None = None,
               trust_checkpoint: bool = False) -> dict[str, Any]:
    """Build data module, network and module from cfg and train them (from ckpt_path: resumed); return the run's
    summary."""
    if pl.utilities.rank_zero_only.rank == 0:
        announce_run_folder(run_dir)
    pl.seed_everything(cfg["seed"], workers=True)
    with log_execution_time("preparing data"):
        datamodule = datasets.StanfordCarsDataModule(datasets.data_settings(cfg))
    network = models.build_network(**network_kwargs(cfg, datamodule.num_classes, datamodule.img_channels))
    module = NetModule(network, datamodule.num_classes, **module_kwargs(cfg))
    parameters = models.count_parameters(network)
    multiply_adds = models.count_multiply_adds(network, cfg["image_size"], datamodule.img_channels)
    if cfg["compile_model"]:
        network.compile(mode=cfg["compile_mode"])  # in place: checkpoints keep the plain parameter names
    info = {"architecture": cfg["architecture"], "parameters": parameters, "multiply_adds": multiply_adds,
            "image_size": list(cfg["image_size"]), "num_classes": datamodule.num_classes,
            "class_names": list(datamodule.class_names), "seed": cfg["seed"],
            "runtime": runtime_name(), "git_commit": git_commit(REPO_DIR), "tags": list(cfg["tags"]),
            "description": cfg["description"], "run_dir": str(run_dir)}
    if seed_group:
        info["seed_group"] = seed_group
    params = {**tracked_params(cfg), "runtime": info["runtime"], "parameters": parameters,
              "multiply_adds": multiply_adds, "num_classes": datamodule.num_classes}
    logger.info("%s: %d parameters, %d multiply-adds at %s", cfg["architecture"], parameters, multiply_adds,
                cfg["image_size"])
    return run_training(cfg, datamodule, module, run_dir, info, params, ckpt_path, extra_callbacks, trust_checkpoint)


def main(argv: Sequence[str] | None = None, extra_callbacks: Iterable[Callback] = ()) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides) + ([f"stanford_data_path={args.data_path}"] if args.data_path else [])
    try:
        if args.resume:
            run_dir, ckpt_path = resume_target(args.resume)
            check_resume_checkpoint(ckpt_path, run_dir, args.trust_checkpoint)
            cfg = load_config(run_dir / "config.yml", overrides, PRE_RUN_CHECKS)
        else:
            cfg = load_config(args.config or "config.yml", overrides, PRE_RUN_CHECKS)
    except (ConfigError, FileNotFoundError, RunRecordError, CheckpointError) as error:
        print(error, file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.resume or args.config or 'config.yml'}: every pre-run check passed")
        return 0
    log_file = setup_logging(cfg["loglevel"], cfg["logging_dir"])
    logger.info("logging to %s", log_file)
    if args.resume:
        logger.info("resuming %s from %s", run_dir, ckpt_path)
        train_once(cfg, run_dir, ckpt_path, extra_callbacks, trust_checkpoint=args.trust_checkpoint)
        return 0
    started = datetime.now()
    seeds = seeds_to_run(cfg["seed"], args.seeds)
    if max(seeds) > MAX_SEED:
        print(f"--seeds: seeds {seeds[0]}..{seeds[-1]} go past the largest seed, {MAX_SEED}", file=sys.stderr)
        return 2
    plan = plan_runs(cfg["output_path"], cfg["architecture"], seeds, started)
    seed_group = f"{cfg['architecture']}_{started:{TIMESTAMP}}_seeds" if len(plan) > 1 else None
    results = []
    for entry in plan:
        try:
            summary = train_once({**cfg, "seed": entry["seed"]}, Path(entry["run_dir"]), None, extra_callbacks,
                                 seed_group)
        except FileNotFoundError as error:  # e.g. data removed after the checks: before the run wrote anything
            release_unused(plan)
            print(error, file=sys.stderr)
            return 2
        if summary.get("state") == "failed":
            print(f"run {entry['run_dir']} failed: {summary.get('stop_reason')}", file=sys.stderr)
            return 1
        best = (summary.get("best_valid_acc") or {}).get("value", float("nan"))
        results.append({"seed": entry["seed"], "run_dir": entry["run_dir"], "best_valid_acc": best})
    if len(plan) > 1 and pl.utilities.rank_zero_only.rank == 0:
        aggregate = aggregate_seeds(results)
        path = Path(cfg["output_path"]) / f"{seed_group}.json"
        write_json(path, aggregate)
        print(format_seed_table(aggregate))
        logger.info("seed statistics written to %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
