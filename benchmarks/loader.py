"""The training loader alone (no model): ms per image of the thesis text's pipeline (box crop, background erasing,
the template's transforms, RandomErasing) reference-like and with the image cache, with 0 and N loader workers.

    python -m benchmarks.loader [--images 400] [--workers N] [--generate-workers N] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path

import torch

from benchmarks.data_pipeline import make_data, thesis_text_pipeline
from benchmarks.epoch_time import REFERENCE_MS_PER_IMAGE, cpu_pressure, machine
from datasets.settings import DataSettings, data_settings
from datasets.stanford_data_module import StanfordCarsDataModule
from utils.cpu_threads import default_loader_workers
from utils.config import Config


def data_module(data: Path, workers: int, cache_dir: Path, cache_images: bool,
                augmentation_device: str = "cpu") -> StanfordCarsDataModule:
    """The training data of the loader-alone table: box crop, background erasing, the schema's transforms."""
    preprocessing, augmentation = thesis_text_pipeline(augmentation_device)
    loading = replace(data_settings(Config()).loading, batch_size=64, num_workers=workers, seed=0,
                      cache_images=cache_images, cache_path=str(cache_dir))
    return StanfordCarsDataModule(DataSettings(data, preprocessing, augmentation, loading), show_progress=False)


def loader_ms_per_image(datamodule: StanfordCarsDataModule, augment_batches: bool,
                        passes: int = 2) -> tuple[float, float]:
    """(wall, this process's CPU) ms per image of the best of some passes over the training loader.

    A first pass starts the workers and warms the page cache. CPU time counts this process only (all of the
    work with 0 workers); with workers, the wall time is the cost an epoch sees.
    """
    loader = datamodule.train_dataloader()
    for _ in loader:
        pass
    best = (float("inf"), float("inf"))
    for _ in range(passes):
        images = 0
        start, cpu = time.perf_counter(), time.process_time()
        for batch in loader:
            if augment_batches:
                datamodule.on_after_batch_transfer(batch, 0)
            images += len(batch[1])
        wall, cpu = (time.perf_counter() - start) / images * 1000, (time.process_time() - cpu) / images * 1000
        best = min(best, (wall, cpu))
    return best


LOADER_PIPELINES = (
    ("reference-like: decode + crop + erase + resize + CPU aug", dict(cache_images=False), False),
    ("cache + CPU aug (torchvision, per image)", dict(cache_images=True), False),
    ("cache, loader only (uint8 batches; aug on the device)", dict(cache_images=True, augmentation_device="gpu"),
     False),
    ("cache + batch aug on this CPU (kornia)", dict(cache_images=True, augmentation_device="gpu"), True),
)


def data_only(data: Path, workers: int, cache_dir: Path) -> list[tuple[str, int, float, float]]:
    """Training-loader cost per image: reference-like vs cache (vs cache + batch augmentation on this device)."""
    rows = []
    for count in sorted({0, workers}):
        for name, settings, augment in LOADER_PIPELINES:
            torch.manual_seed(0)
            module = data_module(data, count, cache_dir, **settings)
            wall, cpu = loader_ms_per_image(module, augment)
            rows.append((name, count, wall, cpu))
            print(f"  data only, {name}, workers {count}: {wall:.2f} ms/image wall, {cpu:.2f} CPU", file=sys.stderr)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=400, help="training images")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: the machine's cores)")
    parser.add_argument("--generate-workers", type=int, default=None,
                        help="processes generating the JPEGs (default: the machine's cores)")
    parser.add_argument("--work", type=Path, help="folder for the generated data and caches (default: temporary)")
    args = parser.parse_args(argv)
    workers = default_loader_workers() if args.workers is None else args.workers
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        data = make_data(work / f"set_{args.images}_{args.images}", args.images,
                         args.generate_workers or os.cpu_count() or 1)
        rows = data_only(data, workers, work / "cache")
    print(f"Machine: {machine()}; date {date.today().isoformat()}; CPU pressure from other load: {cpu_pressure()}")
    print(f"Training loader alone (no model), {args.images} generated Stanford-sized training images, best of 2 "
          "passes; the original project's pipeline: ~8 ms an image in one process:\n")
    print("| pipeline | loader workers | wall ms/image | CPU ms/image (this process) | reference's 8 ms / wall |")
    print("|---|---:|---:|---:|---:|")
    for name, count, wall, cpu in rows:
        print(f"| {name} | {count} | {wall:.2f} | {cpu:.2f} | {REFERENCE_MS_PER_IMAGE / wall:.1f}x |")


if __name__ == "__main__":
    main()
