"""Recognise the car model in photos: top-K classes with probabilities, preprocessed as validation images."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from datasets.settings import data_settings, preprocessing_settings
from utils.checkpoint_safety import TRUST_HELP, TRUST_OPTION, CheckpointError
from utils.config import Config, ConfigError
from utils.cpu_threads import use_cpu_threads
from utils.runs.folders import load_run_config
from utils.runs.records import RunRecordError, run_class_names

if TYPE_CHECKING:
    import torch

    from datasets.stanford_data import PhotoInfo
    from models.run_loading import TrainedModel


def parse_box(text: str) -> tuple[int, int, int, int]:
    """'x1,y1,x2,y2' (inclusive pixels) -> a box; argparse type."""
    try:
        x1, y1, x2, y2 = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected four integers x1,y1,x2,y2") from None
    if not (0 <= x1 <= x2 and 0 <= y1 <= y2):
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= x1 <= x2 and 0 <= y1 <= y2")
    return x1, y1, x2, y2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", metavar="RUN_DIR_OR_CKPT", help="run folder (uses its best.ckpt) or a checkpoint in one")
    parser.add_argument(TRUST_OPTION, action="store_true", help=TRUST_HELP)
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="photo files")
    parser.add_argument("--top", type=int, default=5, metavar="K", help="classes shown per photo (default 5)")
    parser.add_argument("--bbox", type=parse_box, metavar="x1,y1,x2,y2",
                        help="box around the car (inclusive pixels of the photo as viewers show it), "
                             "used as in training (crop or erased background)")
    parser.add_argument("-d", "--data", metavar="DATA_PATH",
                        help="prepared data folder whose class names to show (default: the run's records)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top {args.top}: need at least 1")
    if args.device != "cpu":  # checking another device loads torch
        from utils.devices import device_problem

        if problem := device_problem(args.device):
            parser.error(problem)
    return args


def photo_tensor(path: str | os.PathLike, config: Config, box: tuple[int, int, int, int] | None = None,
                 info: PhotoInfo | None = None) -> torch.Tensor:
    """A photo as the run's network sees validation images [C, H, W]; with a box, the training box treatment."""
    from datasets.stanford_data import preprocess_image

    return preprocess_image(path, preprocessing_settings(config), box, info)


def photo_notes(info: PhotoInfo, config: Config) -> list[str]:
    """What the user should know about how a readable photo was used: enlarged, or only its first frame."""
    notes = []
    height, width = config.image_size
    if info.size[0] < width or info.size[1] < height:
        notes.append(f"only {info.size[0]}x{info.size[1]} pixels, enlarged to the network's {width}x{height} "
                     "input: the answer can be no better than the photo")
    if info.frames > 1:
        notes.append(f"animated ({info.frames} frames); the first frame is used")
    return notes


def load(args: argparse.Namespace) -> tuple[Config, TrainedModel, list[str], str | None]:
    """The run's config, its trained network and class names (and a warning about them), every input checked;
    torch is imported only once the run's folder and config are read."""
    run_dir, checkpoint, config = load_run_config(args.run, args.data)
    use_cpu_threads(config.cpu_threads)
    from datasets.evaluation_data import EvaluationData
    from models.run_loading import load_trained_model

    trained = load_trained_model(checkpoint, config.architecture, preprocessing_settings(config).channels,
                                 config.dropout, config.output_channels, args.trust_checkpoint)
    class_names, warning = run_class_names(
        run_dir, trained.num_classes, lambda: EvaluationData(data_settings(config).for_evaluation()).class_names,
        prefer_data=args.data is not None)
    return config, trained, class_names, warning


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config, trained, class_names, warning = load(args)
    except (RunRecordError, ConfigError, CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"predict.py: error: {error}", file=sys.stderr)
        return 2
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    import torch

    from datasets.photos import unreadable_reason
    from datasets.stanford_data import photo_info
    from models.evaluation import class_label, predict_top_k

    device = torch.device(args.device)
    network = trained.network.to(device)
    failed = []
    for path in args.images:
        try:
            info = photo_info(path)
            tensor = photo_tensor(path, config, args.bbox, info)
        except Exception as error:  # PIL raises many types for broken files; each is worded, never a traceback
            reason = str(error) if type(error) is ValueError else unreadable_reason(error)
            print(f"predict.py: error: {path}: {reason}", file=sys.stderr)
            failed.append(path)
            continue
        for note in photo_notes(info, config):
            print(f"predict.py: warning: {path}: {note}", file=sys.stderr)
        probabilities, indices = predict_top_k(network, tensor.unsqueeze(0).to(device), args.top)
        print(path)
        for rank, (probability, index) in enumerate(zip(probabilities[0].tolist(), indices[0].tolist()), start=1):
            print(f"  {rank}. {probability:7.2%}  {class_label(class_names, index)} (class {index + 1})")
    if failed:
        print(f"predict.py: {len(failed)} of {len(args.images)} file(s) could not be predicted: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
