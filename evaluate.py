"""Evaluate a trained run on the test split: top-1/top-5 accuracy, loss, per-class accuracy, confused pairs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from datasets.settings import data_settings, preprocessing_settings
from utils.checkpoint_safety import TRUST_HELP, TRUST_OPTION, CheckpointError
from utils.config import Config, ConfigError
from utils.cpu_threads import use_cpu_threads
from utils.output_files import new_file_problems
from utils.runs.folders import load_run_config, run_files
from utils.runs.records import RunRecordError, metrics_at_epoch

if TYPE_CHECKING:
    from pathlib import Path

    from datasets.evaluation_data import EvaluationData
    from models.run_loading import TrainedModel


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", metavar="RUN_DIR_OR_CKPT", help="run folder (uses its best.ckpt) or a checkpoint in one")
    parser.add_argument(TRUST_OPTION, action="store_true", help=TRUST_HELP)
    parser.add_argument("-d", "--data", metavar="DATA_PATH", help="prepared data folder (default: the run's)")
    parser.add_argument("--out", metavar="FILE.csv", help="write per-image predictions to this CSV")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    parser.add_argument("--batch-size", type=int, help="images per batch (default: the run's)")
    parser.add_argument("--workers", type=int, default=0, help="data loader processes (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--classes", type=int, default=10, help="worst classes and confused pairs shown (default 10)")
    args = parser.parse_args(argv)
    for option, value, least in (("--batch-size", args.batch_size, 1), ("--classes", args.classes, 1),
                                 ("--workers", args.workers, 0)):
        if value is not None and value < least:
            parser.error(f"{option} {value}: need at least {least}")
    if args.device != "cpu":  # checking another device loads torch
        from utils.devices import device_problem

        if problem := device_problem(args.device):
            parser.error(problem)
    return args


def load(args: argparse.Namespace) -> tuple[Path, Path, Config, TrainedModel, EvaluationData]:
    """The run (folder, checkpoint, config), its trained network and its validation data, every input checked;
    torch is imported only once the run's folder and config are read."""
    run_dir, checkpoint, config = load_run_config(args.run, args.data)
    problems = new_file_problems(args.out, args.force, run_files(run_dir, checkpoint)) if args.out else []
    if problems:
        raise ValueError("; ".join(problems))
    use_cpu_threads(config.cpu_threads, args.workers)
    from datasets.evaluation_data import EvaluationData
    from models.run_loading import load_trained_model

    trained = load_trained_model(checkpoint, config.architecture, preprocessing_settings(config).channels,
                                 config.dropout, config.output_channels, args.trust_checkpoint)
    data = EvaluationData(data_settings(config).for_evaluation(args.workers, args.batch_size))
    if len(data.val_dataset) == 0:
        raise ValueError(f"{data.data_path / 'test_labels.csv'} lists no images to evaluate")
    if trained.num_classes != data.num_classes:
        raise ValueError(f"{checkpoint} was trained on {trained.num_classes} classes, {data.data_path} has "
                         f"{data.num_classes}")
    return run_dir, checkpoint, config, trained, data


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run_dir, checkpoint, config, trained, data = load(args)
    except (RunRecordError, ConfigError, CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"evaluate.py: error: {error}", file=sys.stderr)
        return 2
    import torch

    from models.evaluation import class_label, evaluate_network, write_predictions_csv
    from models.optimization import build_loss

    print(f"run {run_dir}, checkpoint {checkpoint.name} (epoch {trained.epoch}), data {data.data_path}")
    result = evaluate_network(trained.network, data.val_dataloader(), data.num_classes,
                              build_loss(config.loss_function, config.loss_params), torch.device(args.device))
    print(f"images: {result.num_samples}")
    print(f"top-1 accuracy: {result.top1:.4f}")
    print(f"top-{result.top_k} accuracy: {result.top5:.4f}")
    print(f"validation loss ({config.loss_function}): {result.loss:.4f}")
    logged = metrics_at_epoch(run_dir, trained.epoch)
    if logged and logged.get("valid_acc") is not None:
        print(f"logged at epoch {trained.epoch}: valid_acc {logged['valid_acc']:.4f}, "
              f"valid_loss {logged['valid_loss']:.4f}")
    worst = result.worst_classes()
    shown = f"worst {args.classes} classes first" if args.classes < len(worst) else \
        f"all {len(worst)} classes, worst first"
    print(f"\nper-class accuracy, {shown}:")
    for index, accuracy, count in worst[:args.classes]:
        print(f"  {accuracy:7.2%}  ({count:3d} images)  {class_label(data.class_names, index)}")
    pairs = result.confused_pairs(args.classes)
    print("\nmost confused pairs (true -> predicted: images):" if pairs else "\nno confused pairs: every image right")
    for true, predicted, count in pairs:
        print(f"  {class_label(data.class_names, true)} -> {class_label(data.class_names, predicted)}: {count}")
    if args.out:
        names = [record.image_fname for record in data.val_dataset.records]
        write_predictions_csv(result, args.out, data.class_names, names)
        print(f"\nper-image predictions written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
