"""The training options on the digits proxy: each alone, then the best together, over seeds, through utils.runs.

The proxy: scikit-learn's digits (1,797 8x8 images of 10 classes) upscaled to 64x64 RGB JPEGs, split 50/50 per
class (899 train, 898 validation), written in Kaggle's class-folder Stanford layout and prepared by
``prepare_stanford_dataset``. Every run is the project's own training (``training.run.train_seeds``, as
train.py runs it) with the recipe of docs/recipes.md's table: AdamW lr 0.002 weight decay 0.05, CosineAnnealingLR
over the run, label smoothing 0.1, batch 64, normalised with the digits' statistics, no image augmentation.

Arms: ``ghost`` (the thesis's network), ``timm:ghostnet_100`` from scratch with the thesis's head width (320), then
each training option alone on ``timm:ghostnet_100`` (320), then the options whose mean beat that base, together
(``--arms`` also offers ``timm:ghostnet_100`` with its own 1280-wide head). Each arm runs ``--seeds`` seeds; a run's result is kept in ``--work`` and reused.

    python -m benchmarks.recipes [--epochs 20] [--seeds 3] [--size 64] [--jobs 2] [--per-class N]
                                 [--arms a,b,...] [--work DIR] [--docs docs/recipes.md]

``--docs FILE`` writes the table, with the command and the machine, between FILE's ``<!-- digits table ...-->``
and ``<!-- end of digits table -->`` lines (a file without them is refused, before any run).

Runs use one torch thread each (``--jobs`` of them at once): more threads than cores make OpenMP spin.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks import cpu_model

ROOT = Path(__file__).resolve().parents[1]
BASE_ARM = "timm:ghostnet_100"
OWN_HEAD = "timm:ghostnet_100 own head (1280)"  # not run by default (--arms)
NETWORKS = {
    "ghost": ["architecture=ghost"],
    BASE_ARM: ["architecture=timm:ghostnet_100"],
    OWN_HEAD: ["architecture=timm:ghostnet_100", "output_channels=null"],
}
OPTIONS = {  # each alone on the base arm
    "warmup_epochs: 2": ["warmup_epochs=2"],
    "ema_decay: 0.99": ["ema_decay=0.99"],
    "mixup_alpha: 0.2": ["mixup_alpha=0.2"],
    "cutmix_alpha: 1.0": ["cutmix_alpha=1.0"],
    "gradient_clip_val: 1.0": ["gradient_clip_val=1.0"],
    "accumulate_grad_batches: 2": ["accumulate_grad_batches=2"],
    "backbone_lr_scale: 0.1": ["backbone_lr_scale=0.1"],
    "freeze_backbone_epochs: 2": ["freeze_backbone_epochs=2"],
}
BEST = "best combination"
TABLE_START, TABLE_END = "<!-- digits table: written by python -m benchmarks.recipes --docs -->", \
    "<!-- end of digits table -->"


def write_digits(raw: Path, per_class: int | None, size: int) -> None:
    """scikit-learn's digits as Kaggle's class-folder Stanford layout: car_data/car_data/<split>/<class>/*.jpg,
    anno_train.csv / anno_test.csv (file, box, class id) and names.csv."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    keep = np.concatenate([np.flatnonzero(labels == digit)[:per_class] for digit in range(10)])
    images, labels = images[keep], labels[keep]
    train, test = train_test_split(np.arange(len(labels)), test_size=0.5, stratify=labels, random_state=0)
    root = raw / "car_data" / "car_data"
    names = [f"digit {digit}" for digit in range(10)]
    for split, indices in (("train", train), ("test", test)):
        rows = []
        for number, index in enumerate(sorted(indices), start=1):
            pixels = (images[index].reshape(8, 8) * 255 / 16).astype(np.uint8)
            picture = Image.fromarray(pixels, "L").resize((size, size), Image.BILINEAR).convert("RGB")
            name, folder = f"{number:05d}.jpg", root / split / names[labels[index]]
            folder.mkdir(parents=True, exist_ok=True)
            picture.save(folder / name, quality=95)
            rows.append(f"{name},0,0,{size - 1},{size - 1},{labels[index] + 1}\n")
        (raw / f"anno_{split}.csv").write_text("".join(rows), encoding="utf-8")
    (raw / "names.csv").write_text("".join(f"{name}\n" for name in names), encoding="utf-8")


def make_digits(work: Path, per_class: int | None, size: int) -> tuple[Path, list[float], list[float]]:
    """The prepared digits (made once in work) and the mean/std of their training images."""
    from datasets.normalization import compute_normalization_params
    from datasets.preparation import prepare_stanford_dataset

    prepared = work / "digits"
    if not (prepared / "test_labels.csv").is_file():
        write_digits(work / "digits_raw", per_class, size)
        prepare_stanford_dataset(work / "digits_raw", prepared, progress=False)
    mean, std = compute_normalization_params(prepared, (size, size), crop_to_bboxes=False, erase_background=False)
    return prepared, [round(value, 4) for value in mean], [round(value, 4) for value in std]


def recipe(data: Path, mean: list[float], std: list[float], epochs: int, size: int) -> list[str]:
    """The proxy's recipe as --set overrides of config_template.yml."""
    return [f"stanford_data_path={data}", f"image_size=[{size}, {size}]", f"num_epochs={epochs}",
            f"early_stopping_patience={epochs}", "augment_images=false", "optimizer=AdamW",
            "optimizer_params={lr: 0.002, weight_decay: 0.05}", "lr_scheduler=CosineAnnealingLR",
            f"lr_scheduler_params={{T_max: {epochs}}}", "loss_params={epsilon: 0.1}", "batch_size=64",
            f"normalization_params_rgb={{mean: {mean}, std: {std}}}", "num_workers=0", "log_to_tensorboard=false",
            "log_to_mlflow=false", "accelerator=cpu"]


def train_one(task: dict[str, Any]) -> dict[str, Any]:
    """One seeded run of one arm (in a worker process with one torch thread); its result, also written to disk."""
    import torch

    from utils.config import load_config, parse_overrides
    from utils.runs.records import read_metrics, read_summary
    from training.run import RUN_CHECKS, train_seeds

    torch.set_num_threads(1)
    out = Path(task["work"]) / "output" / task["slug"]
    settings = [*task["settings"], f"output_path={out}", f"logging_dir={Path(task['work']) / 'logs'}"]
    config = load_config(ROOT / "config_template.yml", parse_overrides(settings), RUN_CHECKS)
    start, cpu = time.perf_counter(), time.process_time()
    results = train_seeds(config, [task["seed"]])
    if results.failed:
        raise RuntimeError(f"{task['arm']} seed {task['seed']}: {results.failed}")
    run_dir = Path(results.runs[0]["run_dir"])
    summary = read_summary(run_dir)
    result = {"arm": task["arm"], "seed": task["seed"], "best_valid_acc": results.runs[0]["best_valid_acc"],
              "last_valid_acc": read_metrics(run_dir)[-1]["valid_acc"], "parameters": summary.get("parameters"),
              "multiply_adds": summary.get("multiply_adds"), "seconds": time.perf_counter() - start,
              "cpu_seconds": time.process_time() - cpu, "run_dir": str(run_dir)}
    Path(task["result"]).write_text(json.dumps(result), encoding="utf-8")
    return result


def run_arms(arms: dict[str, list[str]], common: list[str], seeds: int, work: Path, jobs: int) -> list[dict]:
    """Every (arm, seed) run, reusing results already in work/results; `jobs` runs at a time."""
    (work / "results").mkdir(parents=True, exist_ok=True)
    tasks, done = [], []
    for arm, settings in arms.items():
        digest = hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:8]  # a changed arm is a new result
        slug = "".join(c if c.isalnum() else "_" for c in arm).strip("_") + f"_{digest}"
        for seed in range(seeds):
            result = work / "results" / f"{slug}_seed{seed}.json"
            if result.is_file():
                done.append(json.loads(result.read_text(encoding="utf-8")))
                continue
            tasks.append({"arm": arm, "seed": seed, "slug": slug, "work": str(work), "result": str(result),
                          "settings": [*common, *settings, f"seed={seed}"]})
    os.environ["OMP_NUM_THREADS"] = "1"
    with multiprocessing.get_context("spawn").Pool(jobs, maxtasksperchild=1) as pool:
        for result in pool.imap_unordered(train_one, tasks):
            print(f"{result['arm']} seed {result['seed']}: best valid_acc {result['best_valid_acc']:.4f} "
                  f"({result['seconds']:.0f} s)", flush=True)
            done.append(result)
    return done


def by_arm(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for result in sorted(results, key=lambda r: r["seed"]):
        grouped.setdefault(result["arm"], []).append(result)
    return grouped


def best_combination(results: list[dict[str, Any]]) -> list[str]:
    """The settings of the options whose mean best accuracy beat the base arm's."""
    grouped = by_arm(results)
    base = statistics.mean(r["best_valid_acc"] for r in grouped[BASE_ARM])
    return [setting for arm, settings in OPTIONS.items() if arm in grouped
            and statistics.mean(r["best_valid_acc"] for r in grouped[arm]) > base for setting in settings]


def table(results: list[dict[str, Any]], arms: dict[str, list[str]]) -> str:
    """The markdown table: arm, its settings (over the base arm's for the options), size, best valid_acc per seed,
    mean ± std, CPU minutes a run."""
    lines = ["| arm | settings | parameters | best valid_acc per seed | mean ± std | CPU min/run |",
             "|---|---|---:|---|---:|---:|"]
    for arm, rows in by_arm(results).items():
        values = [row["best_valid_acc"] for row in rows]
        spread = statistics.stdev(values) if len(values) > 1 else float("nan")
        own = [s for s in arms.get(arm, []) if arm in NETWORKS or s not in NETWORKS[BASE_ARM]]
        settings = ", ".join(f"`{s}`" for s in own)
        cpu = statistics.mean(row["cpu_seconds"] for row in rows) / 60
        lines.append(f"| {arm} | {settings} | {rows[0]['parameters']:,} | {', '.join(f'{v:.3f}' for v in values)} | "
                     f"{statistics.mean(values):.3f} ± {spread:.3f} | {cpu:.1f} |")
    return "\n".join(lines)


def machine() -> str:
    """The CPU's model name and core count (and the GPU's, when there is one)."""
    import torch

    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu_model()}, {os.cpu_count()} cores{gpu}"


def heading(args: argparse.Namespace) -> str:
    """What was run, where and with what: the line above the table."""
    import timm
    import torch

    data = f"at most {args.per_class} digits a class" if args.per_class else "all 1,797 digits"
    command = shlex.join(["python", "-m", "benchmarks.recipes", *sys.argv[1:]])
    return (f"Measured {date.today()} with `{command}`: {data} at {args.size}x{args.size}, {args.epochs} epochs, "
            f"seeds 0..{args.seeds - 1}; {machine()}; torch {torch.__version__}, timm {timm.__version__}; "
            f"one torch thread a run, {args.jobs} run(s) at a time.")


def with_table(text: str, block: str, path: Path) -> str:
    """`text` with the lines between its digits-table markers replaced by `block`."""
    lines = text.splitlines(keepends=True)
    marks = [i for i, line in enumerate(lines) if line.strip() in (TABLE_START, TABLE_END)]
    if len(marks) != 2 or lines[marks[0]].strip() != TABLE_START:
        raise ValueError(f"--docs: {path} needs one {TABLE_START!r} line, then one {TABLE_END!r} line")
    return "".join([*lines[:marks[0] + 1], block.rstrip("\n") + "\n", *lines[marks[1]:]])


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--size", type=int, default=64, help="image height and width")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--per-class", type=int, default=None, help="at most this many digits per class")
    parser.add_argument("--arms", default=None, help="comma-separated arms (default: all, then the best combination)")
    parser.add_argument("--work", type=Path, default=ROOT / "output" / "benchmarks" / "recipes")
    parser.add_argument("--docs", type=Path, default=None, help="a markdown file to write the table into")
    args = parser.parse_args(argv)
    arms = args.arms.split(",") if args.arms else [arm for arm in all_arms() if arm != OWN_HEAD] + [BEST]
    unknown = [arm for arm in arms if arm not in all_arms() and arm != BEST]
    if unknown:
        parser.error(f"--arms: unknown {', '.join(unknown)}; valid: {', '.join([*all_arms(), BEST])}")
    if args.docs is not None:
        if not args.docs.is_file():
            parser.error(f"--docs: {args.docs} is not a file")
        try:
            with_table(args.docs.read_text(encoding="utf-8"), "", args.docs)  # its markers, before any run
        except ValueError as error:
            parser.error(str(error))
    args.arms = arms
    return args


def all_arms() -> dict[str, list[str]]:
    return {**NETWORKS, **{arm: [*NETWORKS[BASE_ARM], *settings] for arm, settings in OPTIONS.items()}}


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments(argv)
    work = args.work / f"{args.size}px_{args.epochs}ep" / (f"{args.per_class}pc" if args.per_class else "all")
    data, mean, std = make_digits(work, args.per_class, args.size)
    common = recipe(data, mean, std, args.epochs, args.size)
    selected = {arm: settings for arm, settings in all_arms().items() if arm in args.arms}
    results = run_arms(selected, common, args.seeds, work, args.jobs)
    combined = best_combination(results) if BEST in args.arms and BASE_ARM in selected else []
    if combined:
        selected[BEST] = [*NETWORKS[BASE_ARM], *combined]
        results += run_arms({BEST: selected[BEST]}, common, args.seeds, work, args.jobs)
    block = f"{heading(args)}\n\n{table(results, selected)}\n"
    if BEST in args.arms and not combined:
        block += f"\nNo option beat {BASE_ARM} alone: no {BEST} to run.\n"
    print(f"\n{block}")
    if args.docs is not None:
        args.docs.write_text(with_table(args.docs.read_text(encoding="utf-8"), block, args.docs), encoding="utf-8")
        print(f"written into {args.docs}")


if __name__ == "__main__":
    main()
