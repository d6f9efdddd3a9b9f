"""Images/s of the data pipeline in one process, on Stanford-sized synthetic JPEGs (480-900 px wide).

Measures: bare decode + resize (PIL, full-scale decode), the training pipeline with the thesis's
transforms (bbox crop, background erasing, flip, affine, colour jitter, to tensor, random erasing,
normalise; 227x227) and the validation pipeline (decode, resize, to tensor, normalise), and prints a
markdown table. Use ``--threads 1`` for per-core figures.

    python -m benchmarks.data_pipeline [--images 300] [--threads 1] [--work DIR] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import platform
import pstats
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from datasets.preparation import prepare_stanford_dataset
from datasets.settings import Augmentation, Preprocessing, preprocessing_settings
from datasets.stanford_data import StanfordCarsDataset
from datasets.synthetic import generate_synthetic_stanford
from utils.config import Config

IMAGE_SIZE = (227, 227)
REFERENCE_PER_CORE = 120.0  # the original project at full dataset size (FACTS.md)
THESIS_TEXT_ERASING = {"RandomErasing": {"p": 0.5, "scale": [0.02, 0.25]}}  # the thesis text's template (not C-50)


def thesis_text_pipeline(augmentation_device: str = "cpu") -> tuple[Preprocessing, Augmentation]:
    """The thesis text's training pipeline: box crop, background erasing, the schema's transforms and RandomErasing."""
    preprocessing = replace(preprocessing_settings(Config()), image_size=IMAGE_SIZE, crop_to_bboxes=True,
                            erase_background=True)
    augmentation = Augmentation(Config().image_augmentations, THESIS_TEXT_ERASING, augmentation_device)
    return preprocessing, augmentation


def make_data(work: Path, images: int, workers: int = 1) -> Path:
    """Generate (with ``workers`` processes) and prepare a Stanford-sized synthetic set (reused when present)."""
    prepared = work / "stanford"
    if not prepared.exists():
        per_class = max(2, images // 4)  # 8 classes, half of each class is train
        generate_synthetic_stanford(work / "raw", num_classes=8, images_per_class=per_class,
                                    min_width=480, max_width=900, seed=1, overwrite=True, archives=False,
                                    workers=workers)
        prepare_stanford_dataset(work / "raw", prepared, progress=False)
    return prepared


def rate(step: Callable[[int], object], count: int, repeats: int) -> float:
    """Best-of-repeats images/s of calling step on items 0..count-1."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for index in range(count):
            step(index)
        best = max(best, count / (time.perf_counter() - start))
    return best


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300, help="images per split (approximately)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: per-core figures)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, help="folder for the generated data (default: a temporary one)")
    parser.add_argument("--profile", action="store_true", help="print the top functions of the training pipeline")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        data = make_data(work, args.images)
        preprocessing, augmentation = thesis_text_pipeline()
        train = StanfordCarsDataset(data, "train", True, preprocessing, augmentation)
        valid = StanfordCarsDataset(data, "train", False, preprocessing)
        count = len(train)
        torch.manual_seed(0)

        def bare(index: int) -> object:
            with Image.open(train.paths[index]) as image:
                return image.convert("RGB").resize(IMAGE_SIZE, Image.BILINEAR)

        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(lambda: [train[i] for i in range(count)])
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
        rows = [
            ("bare decode + resize (full-scale decode)", rate(bare, count, args.repeats)),
            ("validation pipeline (decode, resize, to tensor, normalise)", rate(valid.__getitem__, count, args.repeats)),
            ("training pipeline, thesis transforms", rate(train.__getitem__, count, args.repeats)),
        ]
    base = rows[0][1]
    print(f"{count} JPEGs 480-900 px wide, 227x227 output, one process, torch threads: {args.threads}; "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}\n")
    print("| pipeline | images/s | ms/image | vs bare decode | vs reference 120 img/s |")
    print("|---|---:|---:|---:|---:|")
    for name, value in rows:
        print(f"| {name} | {value:.0f} | {1000 / value:.2f} | {value / base:.2f}x | {value / REFERENCE_PER_CORE:.2f}x |")


if __name__ == "__main__":
    main()
