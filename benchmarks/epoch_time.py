"""Whole training epochs (train + validation) of the thesis's best run, C-50, through train.py in several settings.

C-50 (config_template.yml, which is that run as its record lists it):
GhostNet (output_channels 320), AdamW (lr 0.001, weight decay 0.6), MultiStepLR, label-smoothing cross-entropy,
flip + affine + colour jitter, 227x227, batch 64, on a generated Stanford-sized set (JPEGs 480-900 px wide).
Every setting is a real run of training.run, as train.py runs it (checkpoints and records every epoch):

- reference-like: no cache, CPU augmentation, fp32;
- cache; cache + batch augmentation on the training device (kornia; "GPU augmentation" on a GPU);
  that + bf16-mixed + channels_last;
- data on device: the cached images held in GPU memory, batches drawn and augmented there, bf16,
  channels_last, validation batches of 512, fused AdamW; that + CUDA graphs (``compile_mode:
  reduce-overhead``); that + ``cudnn_benchmark``; and ``compile_mode: max-autotune`` (Triton's convolution
  and matmul templates timed per shape, with CUDA graphs) + ``cudnn_benchmark``. Settings 7 and 8 are for CUDA:
  on a CPU they only add compilation.

Each setting runs ``--epochs`` epochs; the last one is reported (earlier ones pay for worker start-up and
compilation, reported as the first epoch's extra seconds). ``--profile N`` runs setting N with the run's
``profiler: pytorch`` (operator tables and a trace, copied to ``--out``) and reports the share of the profiled
steps during which GPU kernels run.
The training loader alone (no model) is timed by ``python -m benchmarks.loader``.

    python -m benchmarks.epoch_time [--train 400] [--test 400] [--epochs 2] [--work DIR] [--workers N]
                                    [--generate-workers N] [--settings 1,2,...] [--profile N] [--out DIR]

Figures are scaled to the full set (8,144 train + 8,041 test images) and to 200 epochs by the measured
per-image times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from benchmarks.data_pipeline import make_data
from datasets.settings import data_settings
from datasets.stanford_data_module import StanfordCarsDataModule
from training.run import RUN_CHECKS, train_seeds
from training.trainer import PROFILE_FOLDER
from utils.config import Config, load_config, parse_overrides
from utils.cpu_threads import default_loader_workers

ROOT = Path(__file__).resolve().parents[1]
FULL_TRAIN, FULL_TEST, FULL_EPOCHS = 8144, 8041, 200
REFERENCE_MS_PER_IMAGE = 8.0  # the original project's data pipeline at full size, one process (FACTS.md)
DEVICE_DATA = ("cache_images=true", "augmentation_device=gpu", "data_on_device=true", "precision=bf16-mixed",
               "channels_last=true", "validation_batch_size=512", "optimizer_params.fused=true")
SETTINGS = {
    "reference-like (no cache, CPU aug, fp32)": ("cache_images=false", "augmentation_device=cpu"),
    "cache": ("cache_images=true", "augmentation_device=cpu"),
    "cache + batch aug on device": ("cache_images=true", "augmentation_device=gpu"),
    "cache + batch aug + bf16 + channels_last": ("cache_images=true", "augmentation_device=gpu",
                                                 "precision=bf16-mixed", "channels_last=true"),
    "data on device + bf16 + channels_last + valid batch 512 + fused AdamW": DEVICE_DATA,
    "that + CUDA graphs (compile reduce-overhead)": DEVICE_DATA + ("compile_model=true",
                                                                   "compile_mode=reduce-overhead"),
    "that + cuDNN autotuning (cudnn_benchmark)": DEVICE_DATA + ("compile_model=true", "compile_mode=reduce-overhead",
                                                                "cudnn_benchmark=true"),
    "data on device + max-autotune + cudnn_benchmark": DEVICE_DATA + ("compile_model=true", "compile_mode=max-autotune",
                                                                      "cudnn_benchmark=true"),
}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class GpuSampler:
    """GPU utilisation samples (torch.cuda.utilization, else nvidia-smi) every 0.1 s while running."""

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
            time.sleep(0.1)

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
    """Per-epoch timings of the training and validation loops (no synchronisation inside the loops)."""

    train_s: float = 0.0
    valid_s: float = 0.0
    fetch_s: float = 0.0
    train_images: int = 0
    valid_images: int = 0
    gpu: str = "n/a"


class EpochTimer(Callback):
    """Epoch wall times, and the host time spent between training steps getting the next batch.

    The GPU is synchronised at the start and end of each loop only, so asynchronous work stays asynchronous.
    """

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
        self.epochs[-1].fetch_s += time.perf_counter() - self._mark
        self.epochs[-1].train_images += len(batch[1])

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._mark = time.perf_counter()

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self.epochs:
            return
        sync()
        self.epochs[-1].train_s = time.perf_counter() - self._start
        self._start = time.perf_counter()

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.epochs and not trainer.sanity_checking:
            self.epochs[-1].valid_images += len(batch[1])

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self.epochs:
            return
        sync()
        self.epochs[-1].valid_s = time.perf_counter() - self._start
        self.epochs[-1].gpu = self._sampler.stop()


def kernel_busy(profile_dir: Path) -> str:
    """The share of the profiled training steps during which GPU kernels ran, from the chrome trace that the
    run's pytorch profiler (profiler: pytorch) wrote; 'n/a' without GPU kernels."""
    traces = sorted(profile_dir.glob("*.pt.trace.json"))
    if not traces:
        return "n/a (no trace)"
    events = json.loads(traces[-1].read_text(encoding="utf-8")).get("traceEvents", [])
    steps = [e for e in events if str(e.get("name", "")).startswith("ProfilerStep#") and "dur" in e]
    kernels = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "kernel" and "dur" in e)
    if not steps or not kernels:
        return "n/a (no GPU kernels)"
    wall_us = max(e["ts"] + e["dur"] for e in steps) - min(e["ts"] for e in steps)
    busy_us, end = 0.0, float("-inf")
    for start, stop in kernels:
        busy_us += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return f"{busy_us / wall_us:.0%} of {wall_us / 1000 / len(steps):.2f} ms/step over {len(steps)} steps"


@dataclass
class Result:
    name: str
    epoch: EpochTimes
    first_epoch_s: float
    cache_build_s: float
    best_valid_acc: float

    def projected_epoch_s(self) -> float:
        e = self.epoch
        return e.train_s / e.train_images * FULL_TRAIN + e.valid_s / e.valid_images * FULL_TEST

    def one_off_s(self) -> float:
        """What the first epoch took beyond a steady one (worker start, compilation), scaled like an epoch."""
        e = self.epoch
        return max(0.0, self.first_epoch_s - (e.train_s + e.valid_s))


def c50_config(data: Path, work: Path, workers: int, epochs: int, settings: tuple[str, ...]) -> Config:
    """Run C-50 (config_template.yml) for this benchmark, with the setting's --set overrides."""
    base = ("image_size=[227, 227]", "batch_size=64", f"num_epochs={epochs}", f"num_workers={workers}", "seed=0",
            f"output_path={work / 'output'}", f"logging_dir={work / 'logs'}", f"cache_path={work / 'cache'}",
            "log_to_tensorboard=false", "early_stopping_patience=null", *settings)
    return load_config(ROOT / "config_template.yml",
                       [("stanford_data_path", str(data)), *parse_overrides(base)], RUN_CHECKS)


def cache_build_s(config: Config) -> float:
    """Seconds to build the setting's image caches (0 when present or not used)."""
    if not config.cache_images:
        return 0.0
    start = time.perf_counter()
    StanfordCarsDataModule(data_settings(config), show_progress=False).prepare_data()
    return time.perf_counter() - start


def run_setting(name: str, settings: tuple[str, ...], data: Path, work: Path, workers: int, epochs: int,
                profile_to: Path | None = None) -> Result:
    """Train C-50 as train.py does for some epochs in one setting; the last epoch's times. With profile_to, the
    run's pytorch profiler (profiler: pytorch) writes operator tables and a trace, copied into profile_to."""
    profiling = ("profiler=pytorch",) if profile_to else ()
    config = c50_config(data, work, workers, epochs, (*settings, *profiling))
    build_s = cache_build_s(config)
    timer = EpochTimer()
    start = time.perf_counter()
    results = train_seeds(config, [config.seed], [timer])
    if results.failed:
        raise RuntimeError(f"{name}: {results.failed}")
    if profile_to:
        profile_dir = shutil.copytree(Path(results.runs[0]["run_dir"]) / PROFILE_FOLDER, profile_to / PROFILE_FOLDER,
                                      dirs_exist_ok=True)
        print(f"  {name}: profile in {profile_dir}: GPU kernels running {kernel_busy(profile_dir)}", file=sys.stderr)
    print(f"  {name}: {timer.epochs[-1]} ({time.perf_counter() - start:.1f} s in all)", file=sys.stderr)
    first = timer.epochs[0].train_s + timer.epochs[0].valid_s
    best = results.runs[0]["best_valid_acc"]
    return Result(name, timer.epochs[-1], first, build_s, best)


def cpu_pressure() -> str:
    """Linux's share of time that runnable tasks waited for a CPU over the last 60 s (other load on the machine)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return "n/a"
    return f"{float(line.split()[2].split('=')[1]):.0f}%"


def machine() -> str:
    cores = default_loader_workers()
    gpu = "no GPU"
    if torch.cuda.is_available():
        driver = "n/a"
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
        gpu = f"{torch.cuda.get_device_name(0)}, driver {driver}, CUDA {torch.version.cuda}"
    return (f"{platform.machine()}, {os.cpu_count()} cores ({cores} loader workers by default), {gpu}; "
            f"torch {torch.__version__}, Lightning {pl.__version__}, Python {platform.python_version()}")


def print_tables(results: list[Result], args: argparse.Namespace, pressure: str) -> None:
    print(f"Machine: {machine()}; date {date.today().isoformat()}; CPU pressure from other load (60 s avg "
          f"at the end): {pressure}")
    print(f"Run C-50 through train.py on {args.train} train + {args.test} test generated Stanford-sized JPEGs "
          f"(480-900 px wide), per-image times scaled to {FULL_TRAIN} + {FULL_TEST}; loader workers: "
          f"{args.workers}; last of {args.epochs} epoch(s).\n")
    print("| setting | train images/s | epoch s (train + valid) | batch fetch ms/image (host) | GPU busy (sampled) | "
          "epoch s at full size | 200 epochs at full size | first epoch extra s | cache build s (one-off) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for result in results:
        e = result.epoch
        full = result.projected_epoch_s()
        total = full * FULL_EPOCHS
        shown = f"{total / 3600:.1f} h" if total >= 3600 else f"{total / 60:.1f} min"
        print(f"| {result.name} | {e.train_images / e.train_s:.0f} | {e.train_s + e.valid_s:.2f} "
              f"({e.train_s:.2f} + {e.valid_s:.2f}) | {e.fetch_s / e.train_images * 1000:.2f} | {e.gpu} | "
              f"{full:.2f} | {shown} | {result.one_off_s():.0f} | {result.cache_build_s:.1f} |")


def selected(spec: str | None) -> dict[str, tuple[str, ...]]:
    """The settings chosen by --settings (1-based numbers), all by default."""
    names = list(SETTINGS)
    if not spec:
        return dict(SETTINGS)
    return {names[int(part) - 1]: SETTINGS[names[int(part) - 1]] for part in spec.split(",")}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=400, help="training images (as many test images by default)")
    parser.add_argument("--test", type=int, default=None, help="test (validation) images")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per setting; the last one is reported")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: the machine's cores)")
    parser.add_argument("--generate-workers", type=int, default=None,
                        help="processes generating the JPEGs (default: the machine's cores)")
    parser.add_argument("--work", type=Path, help="folder for the generated data and caches (default: temporary)")
    parser.add_argument("--settings", help="comma-separated numbers of the settings to run (default: all): "
                        + "; ".join(f"{i} {name}" for i, name in enumerate(SETTINGS, 1)))
    parser.add_argument("--profile", type=int, metavar="N",
                        help="profile setting number N with its run's pytorch profiler (profiler: pytorch; its "
                             "timings then include the profiler's cost)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder the profile is copied to")
    args = parser.parse_args(argv)
    args.test = args.test or args.train
    if args.workers is None:
        args.workers = default_loader_workers()
    generate_workers = args.generate_workers or os.cpu_count() or 1
    chosen = selected(args.settings)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        # make_data takes images per split: the set's train and test halves are equal
        data = make_data(work / f"set_{args.train}_{args.test}", (args.train + args.test) // 2, generate_workers)
        profiled = list(SETTINGS)[args.profile - 1] if args.profile else None
        results = [run_setting(name, settings, data, work, args.workers, args.epochs,
                               args.out if name == profiled else None) for name, settings in chosen.items()]
    print_tables(results, args, cpu_pressure())


if __name__ == "__main__":
    main()
