"""Export a trained run for deployment (ONNX, optionally int8, or a torch.export .pt2 program) with its class names
and every preprocessing step from a photo to the network's input written beside it."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from datasets.settings import data_settings, preprocessing_settings
from models.export_formats import FORMATS, QUANTIZATIONS, ExportError
from utils.checkpoint_safety import TRUST_HELP, TRUST_OPTION, CheckpointError
from utils.config import Config, ConfigError
from utils.cpu_threads import default_loader_workers, use_cpu_threads
from utils.runs.folders import load_run_config, run_files
from utils.runs.records import RunRecordError, run_class_names

if TYPE_CHECKING:
    import numpy as np
    import torch

    from datasets.evaluation_data import EvaluationData
    from models.export import ExportReport
    from models.quantization import Int8Export
    from models.run_loading import TrainedModel

CHECK_IMAGES = 4
CALIBRATION_BATCH, EVALUATION_BATCH = 16, 32


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", metavar="RUN_DIR_OR_CKPT", help="run folder (uses its best.ckpt) or a checkpoint in one")
    parser.add_argument(TRUST_OPTION, action="store_true", help=TRUST_HELP)
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="export format")
    parser.add_argument("--quantize", choices=QUANTIZATIONS,
                        help="int8: onnxruntime static quantization of the ONNX model (needs --format onnx)")
    parser.add_argument("--calibration-images", type=int, default=200, metavar="N",
                        help="training images (preprocessed as validation images) the int8 ranges are calibrated "
                             "on (default 200)")
    parser.add_argument("--max-drop", type=float, default=1.0, metavar="POINTS",
                        help="largest int8 top-1 loss on the validation set, in percentage points, that is written "
                             "(default 1)")
    parser.add_argument("--out", metavar="PATH",
                        help="model file (default: RUN_DIR/model.onnx, model.int8.onnx or model.pt2)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite an existing export; with --quantize, also write an int8 model that loses "
                             "more than --max-drop")
    parser.add_argument("-d", "--data", metavar="DATA_PATH",
                        help="prepared data for class names, check and calibration images (default: the run's)")
    parser.add_argument("--device", default="cpu",
                        help="torch device of the PyTorch reference outputs and latency, e.g. cpu or cuda "
                             "(default: cpu); the file is exported from a CPU copy either way")
    args = parser.parse_args(argv)
    problems = []
    if args.device != "cpu":  # checking another device loads torch
        from utils.devices import device_problem

        problems += [problem] if (problem := device_problem(args.device)) else []
    if args.quantize and args.format != "onnx":
        problems.append(f"--quantize {args.quantize} quantizes an ONNX model: use it with --format onnx")
    if args.calibration_images < 1:
        problems.append(f"--calibration-images {args.calibration_images}: need at least 1")
    if not (math.isfinite(args.max_drop) and args.max_drop >= 0):
        problems.append(f"--max-drop {args.max_drop}: need a number of percentage points >= 0")
    if problems:
        parser.error("; ".join(problems))
    return args


def default_name(args: argparse.Namespace) -> str:
    return f"model.{args.quantize}.onnx" if args.quantize else f"model{FORMATS[args.format]}"


def data_or_none(config: Config, workers: int = 0) -> tuple[EvaluationData | None, str | None]:
    """The run's prepared data, or None and the reason it is unavailable."""
    from datasets.evaluation_data import EvaluationData

    try:
        return EvaluationData(data_settings(config).for_evaluation(workers, EVALUATION_BATCH)), None
    except (FileNotFoundError, ValueError) as error:
        return None, str(error)


def check_images(data: EvaluationData | None, config: Config) -> torch.Tensor:
    """A few validation images, or seeded random inputs of the right shape when there is no data."""
    import torch

    if data is not None:
        count = min(CHECK_IMAGES, len(data.val_dataset))
        return torch.stack([data.val_dataset[index][0] for index in range(count)])
    return torch.randn(CHECK_IMAGES, preprocessing_settings(config).channels, *config.image_size,
                       generator=torch.Generator().manual_seed(0))


def calibration_batches(data: EvaluationData, count: int) -> Iterator[np.ndarray]:
    """`count` training images spread evenly over the split, preprocessed as validation images, in small batches."""
    import numpy as np
    from torch.utils.data import DataLoader, Subset

    from datasets.stanford_data import StanfordCarsDataset

    images = StanfordCarsDataset(data.data_path, "train", train=False, preprocessing=data.settings.preprocessing,
                                 records=data.records["train"])
    picked = sorted({int(i) for i in np.linspace(0, len(images) - 1, min(count, len(images)))})
    loader = DataLoader(Subset(images, picked), batch_size=CALIBRATION_BATCH, num_workers=data.num_workers)
    return (batch.numpy() for batch, _ in loader)


def evaluation_batches(data: EvaluationData) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The validation set as (images, labels) arrays."""
    return ((images.numpy(), labels.numpy()) for images, labels in data.val_dataloader())


@dataclass
class Export:
    """What an export is made from, every input checked."""

    out: Path
    trained: TrainedModel
    config: Config
    data: EvaluationData | None
    reason: str | None                  # why there is no data
    metadata: dict[str, Any]
    warning: str | None


def load(args: argparse.Namespace) -> Export:
    """The run, its data and the metadata to write, every input checked before any export work."""
    run_dir, checkpoint, config = load_run_config(args.run, args.data)
    workers = default_loader_workers() if args.quantize else 0
    use_cpu_threads(config.cpu_threads, workers)
    from datasets.stanford_data import input_contract
    from models.export import export_problems
    from models.run_loading import load_trained_model

    out = Path(args.out) if args.out else run_dir / default_name(args)
    problems = export_problems(out, args.format, args.force, run_files(run_dir, checkpoint))
    if problems:
        raise ExportError("; ".join(problems))
    trained = load_trained_model(checkpoint, config.architecture, preprocessing_settings(config).channels,
                                 config.dropout, config.output_channels, args.trust_checkpoint)
    data, reason = data_or_none(config, workers)
    if data is None and args.data is not None:
        raise ExportError(f"{args.data}: {reason}")
    if data is None and args.quantize:
        raise ExportError(f"--quantize {args.quantize} calibrates on the run's training images and measures top-1 "
                          f"on its validation images, but its prepared data is not there ({reason}); pass -d with "
                          "the prepared data folder")
    class_names, warning = run_class_names(run_dir, trained.num_classes, (lambda: data.class_names) if data else None,
                                           prefer_data=args.data is not None)
    metadata = {
        "architecture": config.architecture, "run": run_dir.name, "checkpoint": checkpoint.name,
        "checkpoint_epoch": trained.epoch, "num_classes": trained.num_classes,
        "class_names": class_names, "class_ids": list(range(1, trained.num_classes + 1)),
        "input_name": "images", "output_name": "logits", "output": "logits; apply softmax for probabilities",
        "preprocessing": input_contract(preprocessing_settings(config)),
    }
    return Export(out, trained, config, data, reason, metadata, warning)


def report_int8(result: Int8Export, args: argparse.Namespace) -> int:
    """Print the fp32/int8 table and what was written; the exit status."""
    from models.quantization import figures_table

    fp32 = result.fp32
    print(f"check of the float export on {fp32.checked_images} validation images: max |exported - PyTorch on "
          f"{fp32.device}| = {fp32.max_abs_difference:.2e} (tolerance {fp32.tolerance:g}) OK")
    print(f"int8: onnxruntime static quantization, calibrated on {result.calibration_images} training images "
          "(preprocessed as validation images)")
    print("\n".join(figures_table(result.figures)))
    print(f"int8 top-1 change: {0.0 - result.drop_points:+.2f} points (--max-drop {args.max_drop:g})")
    if not result.written:
        print(f"export_model.py: error: int8 loses {result.drop_points:.2f} points of top-1, more than --max-drop "
              f"{args.max_drop:g}; nothing written. Pass --force to write it anyway, or a larger --max-drop",
              file=sys.stderr)
        return 1
    if result.drop_points > result.max_drop_points:
        print(f"warning: written with --force although int8 loses {result.drop_points:.2f} points", file=sys.stderr)
    print(f"exported onnx int8: {result.model_path} ({result.figures['int8'].size_bytes / 1e6:.2f} MB)")
    print(f"metadata: {result.model_path.with_name(result.model_path.name + '.json')}")
    return 0


def report_export(report: ExportReport, fmt: str, source: str) -> None:
    print(f"exported {fmt}: {report.model_path} ({report.size_bytes / 1e6:.2f} MB)")
    print(f"metadata: {report.metadata_path}")
    print(f"check on {report.checked_images} {source}: max |exported - PyTorch on {report.device}| = "
          f"{report.max_abs_difference:.2e} (tolerance {report.tolerance:g}) OK")
    if report.latency is not None:
        print(report.latency.line(fmt))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        job = load(args)
    except (RunRecordError, ConfigError, CheckpointError, ExportError) as error:
        print(f"export_model.py: error: {error}", file=sys.stderr)
        return 2
    if job.data is None:
        print(f"note: no prepared data ({job.reason}); checking on {CHECK_IMAGES} generated random inputs "
              "and taking class names from the run's records")
    if job.warning:
        print(f"warning: {job.warning}", file=sys.stderr)
    from models.export import export_model
    from models.quantization import export_int8

    network, images = job.trained.network, check_images(job.data, job.config)
    try:
        if args.quantize:
            return report_int8(export_int8(network, job.out, images, job.metadata,
                                           calibration_batches(job.data, args.calibration_images),
                                           evaluation_batches(job.data), args.max_drop, args.force, args.device),
                               args)
        report = export_model(network, job.out, args.format, images, job.metadata, force=args.force,
                              device=args.device)
    except ExportError as error:
        print(f"export_model.py: error: {error}", file=sys.stderr)
        return 1
    report_export(report, args.format, "validation images" if job.data else "generated inputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
