"""What a sweep adds to each run: a worker's start-up and each trial's start-up to its first training step.

Runs a ``runs:`` study of ``--runs`` one-epoch configurations on generated data with one worker on the CPU (or
``--devices 0`` on a GPU) through ``sweep.py``, then reads the study's storage:

- worker start-up: the launcher's start to the first trial's start (importing torch and Lightning, opening the
  storage, checking every run before any trial);
- trial start-up: a trial's claim to its first training step (reading the configuration, building the data module,
  network and Trainer, the sanity check), recorded per trial as its ``startup_s`` user attribute; of it, the
  sweep's own share (claim to the call of train.py's ``train_once``) is ``sweep_s``.

    python -m benchmarks.sweep_overhead [--runs 6] [--size 64] [--devices cpu|0] [--work DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import optuna
import yaml

ROOT = Path(__file__).resolve().parents[1]
from datasets.preparation import prepare_stanford_dataset
from datasets.synthetic import generate_synthetic_stanford
from sweeps.storage import open_storage


def write_study(work: Path, runs: int, size: int) -> Path:
    base = {"config": str(ROOT / "config_template.yml"), "overrides": {
        "stanford_data_path": str(work / "stanford"), "output_path": str(work / "output"),
        "logging_dir": str(work / "logs"), "image_size": [size, size], "num_epochs": 1, "batch_size": 16,
        "num_workers": 0}}
    body = {"name": "overhead", "base": base,
            "runs": [{"id": f"R-{index}", "overrides": {"dropout": 0.1 + 0.01 * index}} for index in range(runs)]}
    path = work / "overhead.yml"
    path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--devices", default="cpu")
    parser.add_argument("--work", type=Path)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="sweep_overhead_"))
    if not (work / "stanford").is_dir():
        generate_synthetic_stanford(work / "raw", num_classes=4, images_per_class=16)
        prepare_stanford_dataset(work / "raw", work / "stanford", progress=False)
    study_path = write_study(work, args.runs, args.size)
    started = time.time()
    subprocess.run([sys.executable, str(ROOT / "sweep.py"), str(study_path), "--devices", args.devices], cwd=ROOT,
                   check=True, capture_output=True)
    url = f"sqlite:///{work / 'output' / 'overhead' / 'optuna.db'}"
    trials = optuna.load_study(study_name="overhead", storage=open_storage(url)).get_trials()
    first = min(trial.datetime_start.timestamp() for trial in trials)
    startups = [trial.user_attrs["startup_s"] for trial in trials]
    sweep_share = [trial.user_attrs["sweep_s"] for trial in trials]
    print(f"{len(trials)} trials, images {args.size}x{args.size}, devices {args.devices}")
    print(f"worker start-up (launch to first trial): {first - started:.1f} s")
    print(f"trial start-up (claim to first training step): median {statistics.median(startups):.2f} s, "
          f"min {min(startups):.2f} s, max {max(startups):.2f} s")
    print(f"  of which the sweep's own (claim to train_once): median {statistics.median(sweep_share) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
