"""Does the fast GPU path learn like the default path? Run C-50 both ways over several seeds and compare.

Trains run C-50 (config_template.yml) through ``train.main`` on a
generated set, with the default path (per-image CPU augmentation, fp32) and with the fast path (cached images
held in the training device's memory, kornia batch augmentation, bf16, channels_last, fused AdamW, validation
batches of 512, optionally CUDA graphs), each over ``--seeds`` seeds. Prints the mean valid_acc per epoch of
each path and the best valid_acc per seed, mean and standard deviation, with Welch's t-test of the difference.

    python -m benchmarks.learning_curve [--classes 24] [--per-class 40] [--epochs 15] [--seeds 3]
                                        [--image-size 227] [--compile] [--precision bf16-mixed] [--work DIR]
                                        [--workers N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

from scipy import stats

from datasets.preparation import prepare_stanford_dataset
from datasets.synthetic import generate_synthetic_stanford
from training.run import RUN_CHECKS, train_seeds
from utils.config import load_config, parse_overrides
from utils.runs.records import read_metrics, read_summary

ROOT = Path(__file__).resolve().parents[1]
C50 = ("early_stopping_patience=null", "log_to_tensorboard=false")
FAST = ("cache_images=true", "augmentation_device=gpu", "data_on_device=true", "channels_last=true",
        "validation_batch_size=512", "optimizer_params.fused=true")
COMPILED = ("compile_model=true", "compile_mode=reduce-overhead")


def make_set(work: Path, classes: int, per_class: int, workers: int) -> Path:
    """Generate and prepare Stanford-sized synthetic data (reused when present)."""
    prepared = work / "stanford"
    if not prepared.exists():
        generate_synthetic_stanford(work / "raw", num_classes=classes, images_per_class=per_class, min_width=480,
                                    max_width=900, seed=3, archives=False, overwrite=True, workers=max(1, workers))
        prepare_stanford_dataset(work / "raw", prepared, progress=False)
    return prepared


def run(data: Path, work: Path, settings: tuple[str, ...], seed: int, epochs: int, size: int,
        workers: int) -> list[dict[str, float]]:
    """One training run, as train.py runs it; its metrics.csv rows."""
    output = work / "output" / f"{len(settings)}_{seed}"
    base = (*C50, f"image_size=[{size}, {size}]", f"num_epochs={epochs}", f"seed={seed}",
            f"num_workers={workers}", f"output_path={output}", f"logging_dir={work / 'logs'}",
            f"cache_path={work / 'cache'}", *settings)
    config = load_config(ROOT / "config_template.yml", [("stanford_data_path", str(data)), *parse_overrides(base)],
                         RUN_CHECKS)
    results = train_seeds(config, [seed])
    if results.failed:
        raise RuntimeError(f"training failed for seed {seed} with {settings}: {results.failed}")
    run_dir = Path(results.runs[0]["run_dir"])
    summary = read_summary(run_dir)
    if summary["state"] != "finished":
        raise RuntimeError(f"{run_dir}: {summary['state']}")
    return read_metrics(run_dir)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=24)
    parser.add_argument("--per-class", type=int, default=40, help="images per class, half of them test")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=227)
    parser.add_argument("--compile", action="store_true", help="the fast path with CUDA graphs (reduce-overhead)")
    parser.add_argument("--precision", default="bf16-mixed", help="the fast path's precision (32 on CPUs)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--work", type=Path)
    args = parser.parse_args(argv)
    fast = FAST + (f"precision={args.precision}",) + (COMPILED if args.compile else ())
    paths = {"default (CPU aug, fp32)": (),
             f"fast (data on device, {args.precision}{', CUDA graphs' if args.compile else ''})": fast}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        data = make_set(work, args.classes, args.per_class, args.workers)
        curves = {name: [run(data, work, settings, seed, args.epochs, args.image_size, args.workers)
                         for seed in range(args.seeds)] for name, settings in paths.items()}
    print(f"C-50 on {args.classes} generated classes, {args.per_class} images each (half test), "
          f"{args.image_size}x{args.image_size}, {args.epochs} epochs, seeds 0..{args.seeds - 1}\n")
    names = list(curves)
    print("| epoch | " + " | ".join(f"mean valid_acc, {name}" for name in names) + " |")
    print("|---:|" + "---:|" * len(names))
    for epoch in range(args.epochs):
        values = [statistics.mean(rows[epoch]["valid_acc"] for rows in curves[name]) for name in names]
        print(f"| {epoch + 1} | " + " | ".join(f"{value:.3f}" for value in values) + " |")
    best = {name: [max(row["valid_acc"] for row in rows) for rows in curves[name]] for name in names}
    print("\n| path | best valid_acc per seed | mean | std |\n|---|---|---:|---:|")
    for name in names:
        values = best[name]
        spread = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"| {name} | {', '.join(f'{v:.3f}' for v in values)} | {statistics.mean(values):.3f} | {spread:.3f} |")
    if args.seeds > 1:
        test = stats.ttest_ind(best[names[0]], best[names[1]], equal_var=False)
        print(f"\nWelch's t-test of the best valid_acc: t = {test.statistic:.2f}, p = {test.pvalue:.2f}")


if __name__ == "__main__":
    main()
