"""Recognise the car model in photos: top-K classes with probabilities, preprocessed as validation images."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torchvision.transforms.functional as F
from PIL import Image, UnidentifiedImageError

from datasets import StanfordCarsDataModule
from datasets.stanford_data import load_image
from models.evaluation import class_label, predict_top_k
from models.run_loading import CheckpointError, load_trained_model
from utils.configuration import ConfigError, normalization_params
from utils.run_comparison import RunRecordError, evaluation_data_kwargs, load_run_config


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
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="photo files")
    parser.add_argument("--top", type=int, default=5, metavar="K", help="classes shown per photo (default 5)")
    parser.add_argument("--bbox", type=parse_box, metavar="x1,y1,x2,y2",
                        help="box around the car (inclusive pixels), used as in training (crop or erased background)")
    parser.add_argument("-d", "--data", metavar="DATA_PATH",
                        help="prepared data folder for class names (default: the run's)")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top {args.top}: need at least 1")
    return args


def photo_tensor(path: str | os.PathLike, cfg: Mapping[str, Any],
                 box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """A photo as the network's validation input [C, H, W]; with a box, the training box treatment."""
    with Image.open(path) as image:
        image.verify()
        width, height = image.size
    if box is not None and (box[2] >= width or box[3] >= height):
        raise ValueError(f"box {box} lies outside the {width}x{height} image")
    mode = "L" if cfg["convert_to_grayscale"] else "RGB"
    target_wh = (cfg["image_size"][1], cfg["image_size"][0])
    erase = bool(cfg["crop_to_bboxes"] and cfg["erase_background"])
    tensor = F.to_tensor(load_image(path, mode, target_wh, box, erase and box is not None))
    if cfg["normalize"]:
        mean, std = normalization_params(cfg)
        tensor = F.normalize(tensor, list(mean), list(std))
    return tensor


def class_names_of(cfg: Mapping[str, Any], num_classes: int) -> list[str]:
    """Class names from the run's prepared data; generic names (with a warning) when it is missing."""
    try:
        return StanfordCarsDataModule(**evaluation_data_kwargs(cfg)).class_names
    except (FileNotFoundError, ValueError) as error:
        print(f"warning: no class names ({error}); showing class ids", file=sys.stderr)
        return [f"class {i}" for i in range(1, num_classes + 1)]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        _, checkpoint, cfg = load_run_config(args.run, args.data)
        channels = 1 if cfg["convert_to_grayscale"] else 3
        trained = load_trained_model(checkpoint, cfg["architecture"], channels, cfg["dropout"], cfg["output_channels"])
    except (RunRecordError, ConfigError, CheckpointError) as error:
        print(f"predict.py: error: {error}", file=sys.stderr)
        return 2
    class_names = class_names_of(cfg, trained.num_classes)
    failed = []
    for path in args.images:
        try:
            tensor = photo_tensor(path, cfg, args.bbox)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
            reason = ("not an image file" if isinstance(error, UnidentifiedImageError) else
                      "no such file" if isinstance(error, FileNotFoundError) else str(error))
            print(f"predict.py: error: {path}: {reason}", file=sys.stderr)
            failed.append(path)
            continue
        probabilities, indices = predict_top_k(trained.module.network, tensor.unsqueeze(0), args.top)
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
