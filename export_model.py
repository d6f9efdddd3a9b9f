"""Export a trained run for deployment (ONNX or TorchScript) with its class names and preprocessing beside it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from datasets.settings import data_settings, preprocessing_settings
from datasets.stanford_data_module import StanfordCarsDataModule
from models.export import FORMATS, ExportError, export_model, output_problems
from models.run_loading import CheckpointError, device_problem, load_trained_model
from utils.checkpoint_safety import TRUST_HELP, TRUST_OPTION
from utils.config import Config, ConfigError
from utils.runs.folders import load_run_config, run_files
from utils.runs.records import RunRecordError, run_class_names

CHECK_IMAGES = 4


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", metavar="RUN_DIR_OR_CKPT", help="run folder (uses its best.ckpt) or a checkpoint in one")
    parser.add_argument(TRUST_OPTION, action="store_true", help=TRUST_HELP)
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="export format")
    parser.add_argument("--out", metavar="PATH", help="model file (default: RUN_DIR/model.onnx or RUN_DIR/model.pt)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing export")
    parser.add_argument("-d", "--data", metavar="DATA_PATH",
                        help="prepared data for class names and check images (default: the run's, if present)")
    parser.add_argument("--device", default="cpu",
                        help="torch device of the PyTorch reference outputs and latency, e.g. cpu or cuda "
                             "(default: cpu); the file is exported from a CPU copy either way")
    args = parser.parse_args(argv)
    problem = device_problem(args.device)
    if problem:
        parser.error(problem)
    return args


def data_or_none(config: Config) -> tuple[StanfordCarsDataModule | None, str | None]:
    """The run's prepared data, or None and the reason it is unavailable."""
    try:
        return StanfordCarsDataModule(data_settings(config).for_evaluation(), show_progress=False), None
    except (FileNotFoundError, ValueError) as error:
        return None, str(error)


def check_images(data: StanfordCarsDataModule | None, config: Config) -> torch.Tensor:
    """A few validation images, or seeded random inputs of the right shape when there is no data."""
    if data is not None:
        data.setup("validate")
        count = min(CHECK_IMAGES, len(data.val_dataset))
        return torch.stack([data.val_dataset[index][0] for index in range(count)])
    return torch.randn(CHECK_IMAGES, preprocessing_settings(config).channels, *config.image_size,
                       generator=torch.Generator().manual_seed(0))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run_dir, checkpoint, config = load_run_config(args.run, args.data)
        out = Path(args.out) if args.out else run_dir / f"model{FORMATS[args.format]}"
        problems = output_problems(out, args.format, args.force, run_files(run_dir, checkpoint))
        if problems:
            raise ExportError("; ".join(problems))
        trained = load_trained_model(checkpoint, config.architecture, preprocessing_settings(config).channels,
                                     config.dropout, config.output_channels, args.trust_checkpoint)
        data, reason = data_or_none(config)
        if data is None and args.data is not None:
            raise ExportError(f"{args.data}: {reason}")
        class_names, warning = run_class_names(run_dir, trained.num_classes,
                                               (lambda: data.class_names) if data else None,
                                               prefer_data=args.data is not None)
    except (RunRecordError, ConfigError, CheckpointError, ExportError) as error:
        print(f"export_model.py: error: {error}", file=sys.stderr)
        return 2
    if data is None:
        print(f"note: no prepared data ({reason}); checking on {CHECK_IMAGES} generated random inputs "
              "and taking class names from the run's records")
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    metadata = {
        "architecture": config.architecture, "run": run_dir.name, "checkpoint": checkpoint.name,
        "checkpoint_epoch": trained.epoch, "num_classes": trained.num_classes,
        "class_names": class_names, "class_ids": list(range(1, trained.num_classes + 1)),
        "input_name": "images", "output_name": "logits", "output": "logits; apply softmax for probabilities",
        "preprocessing": preprocessing_settings(config).metadata(),
    }
    try:
        report = export_model(trained.module.network, out, args.format, check_images(data, config), metadata,
                              force=args.force, device=args.device)
    except ExportError as error:
        print(f"export_model.py: error: {error}", file=sys.stderr)
        return 1
    source = "validation images" if data else "generated inputs"
    print(f"exported {args.format}: {report.model_path} ({report.size_bytes / 1e6:.2f} MB)")
    print(f"metadata: {report.metadata_path}")
    print(f"check on {report.checked_images} {source}: max |exported - PyTorch on {report.device}| = "
          f"{report.max_abs_difference:.2e} (tolerance {report.tolerance:g}) OK")
    threads = torch.get_num_threads()
    cpu = f"CPU ({threads} thread{'' if threads == 1 else 's'})"
    print(f"latency, batch 1, median of 20 calls: PyTorch on {cpu if report.device == 'cpu' else report.device} "
          f"{report.latency_ms_pytorch:.2f} ms, {args.format} on {cpu} {report.latency_ms_exported:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
