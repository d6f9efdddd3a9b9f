"""The home of a training run: from a checked Config to a trained run folder.

It builds the data module (datasets/), the network and its LightningModule (models/), the Trainer with the run's
checkpoints and early stopping, the records (metrics.csv, summary.json, config.yml) and the trackers.
train.py, sweep.py's workers and the benchmarks train through ``train_run`` and ``train_seeds``.
"""

from __future__ import annotations

import logging
import shlex
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.exceptions import SIGTERMException

from datasets.settings import data_settings
from datasets.prepared import prepared_data_problems
from datasets.stanford_data_module import StanfordCarsDataModule
from datasets.transforms import config_problems as data_problems
from models import config_problems as model_problems
from models.arch_dict import build_network, weights_normalization
from models.classifier_module import ClassifierModule
from models.sizes import count_multiply_adds, count_parameters
from training.memory import memory_problems
from training.process_group import is_rank_zero, join_process_group, rank_zero_value
from training.recorder import RunRecorder, write_run_config
from training.trackers import RunTrackers, make_loggers
from training.trainer import (checkpoint_callbacks, git_commit, runtime_name, trainer_kwargs, trainer_problems,
                              training_callbacks)
from utils.config import Config, config_for_records, tracked_params
from utils.config.schema import GrayscaleNormalization, RGBNormalization
from utils.mlflow.mirror import SEED_GROUP_TAG, close_group_run, open_group_run
from utils.mlflow.store import RUN_NAME_TAG, mlflow_problems, mlflow_tracking_uri
from utils.output_files import place_problem
from utils.runs.folders import TIMESTAMP, announce_run_folder, folder_label, plan_runs, release_unused
from utils.runs.records import is_run_dir, read_run, write_json
from utils.runs.seeds import aggregate_seeds, seed_group_state
from utils.runs.table import group_rows_by_seed, mlflow_values
from utils.timing import log_execution_time

logger = logging.getLogger(__name__)
REPO_DIR = Path(__file__).resolve().parents[1]
FOLDER_KEYS = ("output_path", "logging_dir", "cache_path")
RUN_NAME_TIME = "%Y-%m-%d %H:%M:%S"


def folder_problems(config: Config) -> list[str]:
    """Config keys naming a folder that is a file or cannot be created or written."""
    problems = []
    for name in FOLDER_KEYS:
        value = getattr(config, name)
        problem = place_problem(Path(value)) if value is not None else None
        if problem:
            problems.append(f"{name}: {value} cannot be used as a folder: {problem}")
    return problems


# Every check a configuration passes before any data or model work; all problems are reported together.
RUN_CHECKS = (data_problems, prepared_data_problems, model_problems, trainer_problems, folder_problems,
              mlflow_problems, memory_problems)


def module_settings(config: Config) -> dict[str, Any]:
    """ClassifierModule's keyword arguments from a configuration (all but the network and the classes)."""
    names = ("optimizer", "optimizer_params", "lr_scheduler", "lr_scheduler_params", "loss_function", "loss_params",
             "channels_last", "warmup_epochs", "warmup_start_factor", "mixup_alpha", "cutmix_alpha",
             "backbone_lr_scale", "freeze_backbone_epochs")
    return {name: getattr(config, name) for name in names}


def with_weights_normalization(config: Config) -> Config:
    """With pretrained weights and normalisation left at the schema's values (Stanford Cars' statistics), the
    configuration normalising with the weights' own mean/std; otherwise the configuration as it is."""
    default = replace(Config(), convert_to_grayscale=config.convert_to_grayscale).normalization()
    if not (config.pretrained_weights and config.normalize) or config.normalization() != default:
        return config
    mean, std = weights_normalization(config.architecture, config.pretrained_weights,
                                      1 if config.convert_to_grayscale else 3)
    if config.convert_to_grayscale:
        return replace(config, normalization_params_grayscale=GrayscaleNormalization(mean, std))
    return replace(config, normalization_params_rgb=RGBNormalization(mean, std))


def normalization_record(config: Config) -> dict[str, Any]:
    """What the run normalises with and where it comes from (summary.json): the pretrained weights' own
    statistics, the configured ones, or none."""
    if not config.normalize:
        return {"source": "none", "mean": None, "std": None}
    values = config.normalization()
    source = "config"
    if config.pretrained_weights:
        channels = 1 if config.convert_to_grayscale else 3
        weights = weights_normalization(config.architecture, config.pretrained_weights, channels)
        source = "pretrained weights" if weights == (list(values.mean), list(values.std)) else source
    return {"source": source, "mean": list(values.mean), "std": list(values.std)}


class RunStopped(SystemExit):
    """A run stopped by SIGTERM (its summary.json says interrupted, stop_reason SIGTERM); the message is one line
    saying how to resume it, and the exit status 143 (128 + SIGTERM), as a shell reports a process ended by it."""

    def __init__(self, run_dir: Path):
        super().__init__(f"run {run_dir} stopped by SIGTERM; its last.ckpt keeps the last finished epoch. Resume it "
                         f"with: python train.py --resume {shlex.quote(str(run_dir))}")
        self.exit_status = 143


@dataclass
class RunParts:
    """What a run trains: the data module, the network's module, and what the records say about them."""

    datamodule: StanfordCarsDataModule
    module: ClassifierModule
    info: dict[str, Any]
    params: dict[str, Any]


def train_run_name(architecture: str, started: datetime, seeds: Sequence[int] = ()) -> str:
    """A train.py run's MLflow name, '<architecture> <time>', with its seed in a group ('seed 43') or, for the
    group's parent run, the group's seeds ('seeds 42, 43, 44')."""
    name = f"{architecture} {started:{RUN_NAME_TIME}}"
    if not seeds:
        return name
    return f"{name} seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


@dataclass(frozen=True)
class RunLabels:
    """How the trackers show a run: its name, its seed group, and the MLflow run of its group (study or seeds)."""

    name: str | None = None
    seed_group: str | None = None
    parent_run_id: str | None = None

    def info(self) -> dict[str, str]:
        """The labels given, as summary.json keeps them (a resumed run keeps the ones it had)."""
        values = {"run_name": self.name, "seed_group": self.seed_group, "mlflow_parent_run_id": self.parent_run_id}
        return {key: value for key, value in values.items() if value}


def build_run(config: Config, run_dir: Path, labels: RunLabels = RunLabels()) -> RunParts:
    """The data module, network and LightningModule of a run, and its records' description of them."""
    pl.seed_everything(config.seed, workers=True)
    with log_execution_time("preparing data", quiet_below_s=1.0):
        datamodule = StanfordCarsDataModule(data_settings(config))
    channels = datamodule.img_channels
    network = build_network(config.architecture, datamodule.num_classes, channels, config.dropout,
                            config.output_channels, config.pretrained_weights)
    module = ClassifierModule(network, datamodule.num_classes, **module_settings(config))
    parameters = count_parameters(network)
    multiply_adds = count_multiply_adds(network, config.image_size, channels)
    if config.compile_model:
        network.compile(mode=config.compile_mode)  # in place: checkpoints keep the plain parameter names
    info = {"architecture": config.architecture, "parameters": parameters, "multiply_adds": multiply_adds,
            "image_size": list(config.image_size), "num_classes": datamodule.num_classes,
            "class_names": list(datamodule.class_names), "seed": config.seed, "runtime": runtime_name(),
            "git_commit": git_commit(REPO_DIR), "tags": list(config.tags), "description": config.description,
            "run_dir": str(run_dir), "normalization": normalization_record(config), **labels.info()}
    params = {**tracked_params(config), "runtime": info["runtime"], "parameters": parameters,
              "multiply_adds": multiply_adds, "num_classes": datamodule.num_classes,
              "normalization_source": info["normalization"]["source"]}
    logger.info("%s: %d parameters, %d multiply-adds at %s", config.architecture, parameters, multiply_adds,
                config.image_size)
    return RunParts(datamodule, module, info, params)


def train_run(config: Config, run_dir: Path, checkpoint: Path | None = None, callbacks: Iterable[Callback] = (),
              labels: RunLabels = RunLabels(), trust_checkpoint: bool = False,
              progress_bar: bool = True) -> dict[str, Any]:
    """Train one run in run_dir (from checkpoint when given) with its records, checkpoints and trackers; return
    its summary (summary.json's content)."""
    run_dir = Path(run_dir)
    join_process_group(config)
    if is_rank_zero():
        announce_run_folder(run_dir)
    config = with_weights_normalization(config)  # config.yml records the values used
    parts = build_run(config, run_dir, labels)
    return fit_run(config, parts, run_dir, checkpoint, callbacks, trust_checkpoint, progress_bar)


def fit_run(config: Config, parts: RunParts, run_dir: Path, checkpoint: Path | None = None,
            callbacks: Iterable[Callback] = (), trust_checkpoint: bool = False,
            progress_bar: bool = True) -> dict[str, Any]:
    """Fit a run's module on its data module with the run's records, checkpoints and trackers; its summary.

    Lightning loads ``checkpoint`` with weights_only (tensors and plain values) unless ``trust_checkpoint``.
    Without ``progress_bar`` (sweep workers, whose output goes to a log file) the epochs show as log lines only.
    """
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # pytorch_lightning 2.6.6's own utilities/_pytree.py builds torch's LeafSpec, which the pinned torch 2.14
    # deprecates; the call is Lightning's (its data loaders), not this project's, so only that warning is dropped
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"pytorch_lightning\.utilities\._pytree")
    recorder = RunRecorder(run_dir, parts.info, resumed_from=checkpoint, config=config_for_records(config))
    trackers = RunTrackers(config, recorder, parts.params)  # after the recorder: they mirror what it wrote
    run_callbacks = [recorder, trackers, *checkpoint_callbacks(config, run_dir), *training_callbacks(config),
                     *callbacks]
    trainer = pl.Trainer(**trainer_kwargs(config, run_dir, run_callbacks, make_loggers(config, run_dir)),
                         enable_progress_bar=progress_bar)
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_config(config, run_dir)
        recorder.start()
    try:
        trainer.fit(parts.module, datamodule=parts.datamodule, ckpt_path=str(checkpoint) if checkpoint else None,
                    weights_only=not trust_checkpoint)
    except SIGTERMException:  # Lightning's handler stops at the next batch; summary.json says interrupted
        raise RunStopped(run_dir) from None
    if recorder.summary.get("state") == "running":  # Lightning returned without training (no batches)
        recorder.end_untrained("no training batches: the training set is smaller than one batch per process",
                               trainer)
        if trainer.is_global_zero:
            trackers.mirror()
    summary = recorder.summary
    if not trainer.is_global_zero:  # its recorder saw only its own part: rank 0 reports the run
        return summary
    best = summary.get("best_valid_acc") or {}
    logger.info("run %s after %s epochs (%s): best valid_acc %.4f at epoch %s; records in %s",
                summary.get("state"), summary.get("epochs_run"), summary.get("stop_reason"),
                best.get("value", float("nan")), best.get("epoch"), run_dir)
    return summary


@dataclass
class SeedResults:
    """train_seeds' outcome: each run's seed, folder and best accuracy; the seed statistics and their file."""

    runs: list[dict[str, Any]]
    failed: str | None = None
    aggregate: dict[str, Any] | None = None
    aggregate_path: Path | None = None


@contextmanager
def seed_group_run(config: Config, plan: list[dict[str, Any]], started: datetime,
                   seed_group: str | None) -> Iterator[str | None]:
    """The MLflow parent run of a --seeds group (log_to_mlflow, rank zero): its runs are nested under it, and it
    ends with the group's row of the run table (settings, results as means over seeds), however the group ends."""
    if seed_group is None or not is_rank_zero():
        yield None
        return
    name = train_run_name(config.architecture, started, [entry["seed"] for entry in plan])
    run_id = open_group_run(config, {RUN_NAME_TAG: name, SEED_GROUP_TAG: seed_group})
    try:
        yield run_id
    finally:
        records = [read_run(entry["run_dir"]) for entry in plan if is_run_dir(Path(entry["run_dir"]))]
        rows = group_rows_by_seed(records)
        row = rows[0] if len(rows) == 1 else {}
        state = seed_group_state([record.summary.get("state") for record in records], len(plan))
        close_group_run(mlflow_tracking_uri(config), run_id, state,
                        {**tracked_params(config), **mlflow_values(row, "params")}, mlflow_values(row, "metrics"),
                        mlflow_values(row, "tags"))


def _plan_seed_runs(config: Config, seeds: list[int]) -> tuple[datetime, list[dict[str, Any]]]:
    started = datetime.now()
    return started, plan_runs(config.output_path, config.architecture, seeds, started)


def train_seeds(config: Config, seeds: list[int], callbacks: Iterable[Callback] = ()) -> SeedResults:
    """Train the config once per seed, each in a new run folder; with several seeds, their statistics (written
    as <output_path>/<architecture>_<time>_seeds.json) and an MLflow parent run. Stops at the first failed run."""
    join_process_group(config)
    started, plan = rank_zero_value(lambda: _plan_seed_runs(config, seeds))
    several = len(plan) > 1
    seed_group = f"{folder_label(config.architecture)}_{started:{TIMESTAMP}}_seeds" if several else None
    results = SeedResults([])
    with seed_group_run(config, plan, started, seed_group) as parent_run_id:
        for entry in plan:
            labels = RunLabels(train_run_name(config.architecture, started, [entry["seed"]] if several else []),
                               seed_group, parent_run_id)
            try:
                summary = train_run(replace(config, seed=entry["seed"]), Path(entry["run_dir"]), None, callbacks,
                                    labels)
            except FileNotFoundError:  # e.g. data removed after the checks: before the run wrote anything
                release_unused(plan)
                raise
            if summary.get("state") == "failed":
                results.failed = f"run {entry['run_dir']} failed: {summary.get('stop_reason')}"
                return results
            best = (summary.get("best_valid_acc") or {}).get("value", float("nan"))
            results.runs.append({"seed": entry["seed"], "run_dir": entry["run_dir"], "best_valid_acc": best})
    if several and is_rank_zero():
        results.aggregate = aggregate_seeds(results.runs)
        results.aggregate_path = Path(config.output_path) / f"{seed_group}.json"
        write_json(results.aggregate_path, results.aggregate)
    return results
