"""Whole training epochs (train + validation) of the thesis's configuration in four speed settings.

GhostNet (output_channels 320, 196 outputs), AdamW (lr 0.001, weight decay 0.6), MultiStepLR, label-smoothing
cross-entropy, thesis transforms, 227x227, batch 64, on a generated Stanford-sized set (JPEGs 480-900 px wide).
Settings: reference-like (no cache, CPU augmentation, fp32), cache, cache + batch augmentation on the training
device (kornia; "GPU augmentation" when the device is a GPU), and that + bf16-mixed + channels_last.
Each setting runs ``--epochs`` epochs; the last one is reported (the first pays for worker start-up).
Also times the training loader alone (no model) for the reference-like pipeline and the cache.

    python benchmarks/epoch_time.py [--train 400] [--test 400] [--epochs 2] [--loader-train 400] [--work DIR]
                                    [--workers N] [--skip-training]

Figures are scaled to the full set (8,144 train + 8,041 test images) and to 200 epochs by the measured
per-image times.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.data_pipeline import make_data  # noqa: E402
from datasets import StanfordCarsDataModule  # noqa: E402
from datasets.stanford_data_module import default_num_workers  # noqa: E402
from models import build_network  # noqa: E402
from models.net_module import NetModule  # noqa: E402
from utils.configuration import default_config  # noqa: E402

FULL_TRAIN, FULL_TEST, FULL_EPOCHS = 8144, 8041, 200
REFERENCE_MS_PER_IMAGE = 8.0  # the original project's data pipeline at full size, one process (FACTS.md)
SETTINGS = {
    "reference-like (no cache, CPU aug, fp32)": dict(cache_images=False, augmentation_device="cpu", precision="32-true",
                                                     channels_last=False),
    "cache": dict(cache_images=True, augmentation_device="cpu", precision="32-true", channels_last=False),
    "cache + batch aug on device": dict(cache_images=True, augmentation_device="gpu", precision="32-true",
                                        channels_last=False),
    "cache + batch aug + bf16 + channels_last": dict(cache_images=True, augmentation_device="gpu",
                                                     precision="bf16-mixed", channels_last=True),
}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class GpuSampler:
    """GPU utilisation samples (torch.cuda.utilization, else nvidia-smi) every 0.2 s while running."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> float | None:
        try:
            return float(torch.cuda.utilization())
        except Exception:  # needs pynvml; fall back to nvidia-smi
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5, check=True).stdout
                return float(out.split()[0])
            except Exception:
                return None

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._read()
            if value is not None:
                self.samples.append(value)
            time.sleep(0.2)

    def start(self) -> None:
        if torch.cuda.is_available():
            self._thread.start()

    def stop(self) -> str:
        self._stop.set()
        if not self.samples:
            return "n/a"
        return f"{sum(self.samples) / len(self.samples):.0f}%"


@dataclass
class EpochTimes:
    """Per-epoch timings of the training and validation loops."""

    train_s: float = 0.0
    valid_s: float = 0.0
    train_wait_s: float = 0.0
    train_images: int = 0
    valid_images: int = 0
    gpu: str = "n/a"


class EpochTimer(Callback):
    """Epoch wall times and the time training steps wait for their batch (loader + transfer + batch augmentation)."""

    def __init__(self) -> None:
        self.epochs: list[EpochTimes] = []
        self._mark = 0.0
        self._start = 0.0
        self._sampler = GpuSampler()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sync()
        self.epochs.append(EpochTimes())
        self._sampler = GpuSampler()
        self._sampler.start()
        self._start = self._mark = time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        sync()
        self.epochs[-1].train_wait_s += time.perf_counter() - self._mark
        self.epochs[-1].train_images += len(batch[1])

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        sync()
        self._mark = time.perf_counter()

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sync()
        if self.epochs:
            self.epochs[-1].train_s = time.perf_counter() - self._start
        self._start = time.perf_counter()

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.epochs:
            self.epochs[-1].valid_images += len(batch[1])

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sync()
        if self.epochs:
            self.epochs[-1].valid_s = time.perf_counter() - self._start
            self.epochs[-1].gpu = self._sampler.stop()


@dataclass
class Result:
    name: str
    epoch: EpochTimes
    cache_build_s: float
    extra: dict[str, float] = field(default_factory=dict)

    def projected_epoch_s(self) -> float:
        e = self.epoch
        return e.train_s / e.train_images * FULL_TRAIN + e.valid_s / e.valid_images * FULL_TEST


def data_module(data: Path, workers: int, cache_dir: Path, **settings: Any) -> StanfordCarsDataModule:
    config = default_config()
    return StanfordCarsDataModule(data, image_size=(227, 227), batch_size=64, num_workers=workers, seed=0,
                                  image_augmentations=config["image_augmentations"],
                                  tensor_augmentations=config["tensor_augmentations"], cache_path=str(cache_dir),
                                  show_progress=False, **settings)


def run_setting(name: str, settings: dict[str, Any], data: Path, workers: int, epochs: int,
                cache_dir: Path) -> Result:
    """Train the thesis configuration for some epochs in one setting; the last epoch's times."""
    pl.seed_everything(0, workers=True)
    datamodule = data_module(data, workers, cache_dir, cache_images=settings["cache_images"],
                             augmentation_device=settings["augmentation_device"])
    start = time.perf_counter()
    datamodule.prepare_data()
    cache_build_s = time.perf_counter() - start
    network = build_network("ghost", num_classes=196, img_channels=3, dropout=0.2, output_channels=320)
    module = NetModule(network, 196, optimizer="AdamW", optimizer_params={"lr": 0.001, "weight_decay": 0.6},
                       lr_scheduler="MultiStepLR", lr_scheduler_params={"gamma": 0.1, "milestones": [67, 82, 95, 107]},
                       loss_function="LabelSmoothingCrossEntropy", channels_last=settings["channels_last"])
    timer = EpochTimer()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="auto", devices=1, precision=settings["precision"],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, datamodule=datamodule)
    print(f"  {name}: {timer.epochs[-1]}", file=sys.stderr)
    return Result(name, timer.epochs[-1], cache_build_s)


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
            module = data_module(data, count, cache_dir, persistent_workers=True, **settings)
            wall, cpu = loader_ms_per_image(module, augment)
            rows.append((name, count, wall, cpu))
            print(f"  data only, {name}, workers {count}: {wall:.2f} ms/image wall, {cpu:.2f} CPU", file=sys.stderr)
    return rows


def cpu_pressure() -> str:
    """Linux's share of time that runnable tasks waited for a CPU over the last 60 s (other load on the machine)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return "n/a"
    return f"{float(line.split()[2].split('=')[1]):.0f}%"


def machine() -> str:
    cores = default_num_workers()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {cores} cores, {gpu}; torch {torch.__version__}, Python {platform.python_version()}"


def print_tables(results: list[Result], loader_rows: list[tuple[str, int, float, float]], args: argparse.Namespace,
                 pressure: str) -> None:
    print(f"Machine: {machine()}; date {date.today().isoformat()}; CPU pressure from other load (60 s avg "
          f"at the end): {pressure}")
    print(f"Epochs: {args.train} train + {args.test} test generated Stanford-sized JPEGs (480-900 px wide), "
          f"scaled to {FULL_TRAIN} + {FULL_TEST} by the measured per-image times; loader workers: {args.workers}; "
          f"last of {args.epochs} epoch(s).\n")
    print("| setting | train images/s | epoch s (train + valid) | data wait ms/image | GPU busy | "
          "epoch s at full size | 200 epochs at full size | cache build s (one-off, this set) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for result in results:
        e = result.epoch
        full = result.projected_epoch_s()
        print(f"| {result.name} | {e.train_images / e.train_s:.1f} | {e.train_s + e.valid_s:.1f} "
              f"({e.train_s:.1f} + {e.valid_s:.1f}) | {e.train_wait_s / e.train_images * 1000:.1f} | {e.gpu} | "
              f"{full:.0f} | {full * FULL_EPOCHS / 3600:.1f} h | {result.cache_build_s:.1f} |")
    print(f"\nTraining loader alone (no model), {args.loader_train} training images, best of 2 passes; "
          "the reference: ~8 ms an image in one process (FACTS.md):\n")
    print("| pipeline | loader workers | wall ms/image | CPU ms/image (this process) | reference's 8 ms / wall |")
    print("|---|---:|---:|---:|---:|")
    for name, count, wall, cpu in loader_rows:
        print(f"| {name} | {count} | {wall:.2f} | {cpu:.2f} | {REFERENCE_MS_PER_IMAGE / wall:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=400, help="training images (as many test images by default)")
    parser.add_argument("--loader-train", type=int, default=None,
                        help="training images of the loader-alone table (default: --train)")
    parser.add_argument("--test", type=int, default=None, help="test (validation) images")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per setting; the last one is reported")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: the machine's cores)")
    parser.add_argument("--work", type=Path, help="folder for the generated data and caches (default: temporary)")
    parser.add_argument("--skip-training", action="store_true", help="only the loader-alone table")
    args = parser.parse_args()
    args.test = args.test or args.train
    args.loader_train = args.loader_train or args.train
    if args.workers is None:
        args.workers = default_num_workers()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        # make_data takes images per split: the set's train and test halves are equal
        data = make_data(work / f"set_{args.train}_{args.test}", (args.train + args.test) // 2)
        cache_dir = work / "cache"
        results = [] if args.skip_training else [
            run_setting(name, settings, data, args.workers, args.epochs, cache_dir)
            for name, settings in SETTINGS.items()]
        loader_data = make_data(work / f"set_{args.loader_train}_{args.loader_train}", args.loader_train)
        loader_rows = data_only(loader_data, args.workers, cache_dir)
    print_tables(results, loader_rows, args, cpu_pressure())


if __name__ == "__main__":
    main()
