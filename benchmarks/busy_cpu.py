"""make demo's training on a quiet CPU and beside CPU-bound processes: does training hold up on a busy machine?

Generates the demo's data (``--classes`` x ``--per-class`` images, prepared as ``make demo`` does), then runs
``train.py`` with the demo's settings (64x64 px, batch 32, 2 loader workers, ``--epochs``) as a new process, once on
the machine as it is and once beside ``--hogs`` processes that spin on the CPU, and reports the training time
(summary.json's duration_s) of each and their ratio. Each setting is a thread choice:

- ``auto``: train.py as it is, choosing its threads and waiting passively (utils/cpu_threads.py);
- ``spinning``: all usable CPUs as threads with OpenMP spinning while it waits (OMP_WAIT_POLICY=ACTIVE), what a
  busy machine suffered before train.py chose them.

    python -m benchmarks.busy_cpu [--epochs 12] [--settings auto spinning] [--hogs 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import ROOT, generated_data, load_average, machine_line
from utils.cpu_threads import available_cpus

HOG = "while True: pass"


def setting_environment(setting: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("OMP_", "GOMP_"))}
    if setting == "spinning":
        environment.update(OMP_NUM_THREADS=str(available_cpus()), OMP_WAIT_POLICY="ACTIVE")
    return environment


def train_seconds(data: Path, output: Path, epochs: int, size: int, setting: str) -> float:
    """One demo training as a new process; its summary.json's training time."""
    settings = [f"image_size=[{size},{size}]", f"num_epochs={epochs}", "batch_size=32", "num_workers=2",
                f"output_path={output}", f"logging_dir={output / 'logs'}", "early_stopping_patience=null",
                "lr_scheduler=null", "lr_scheduler_params=null", "optimizer_params.lr=0.003", "log_to_mlflow=false"]
    command = [sys.executable, "train.py", "-c", "config_template.yml", "-d", str(data)]
    command += [item for setting_text in settings for item in ("--set", setting_text)]
    subprocess.run(command, cwd=ROOT, env=setting_environment(setting), check=True, capture_output=True)
    (run_dir,) = sorted(path for path in output.iterdir() if path.name.startswith("ghost_"))[-1:]
    return float(json.loads((run_dir / "summary.json").read_text())["duration_s"])


def beside_hogs(hogs: int, measure):
    """measure() while `hogs` processes spin on the CPU."""
    processes = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(hogs)]
    try:
        return measure()
    finally:
        for process in processes:
            process.kill()
            process.wait()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12, help="epochs per training (make demo: 12)")
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--settings", nargs="+", default=["auto"], choices=["auto", "spinning"])
    parser.add_argument("--hogs", type=int, default=2, help="CPU-bound processes beside the busy training")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        data = generated_data(work, args.classes, args.per_class)
        print(f"{machine_line()} (before)")
        print(f"make demo's training: {args.classes} classes x {args.per_class} images, {args.image_size} px, "
              f"{args.epochs} epochs, batch 32, 2 loader workers; busy = beside {args.hogs} spinning processes\n")
        print("| threads | quiet (s) | busy (s) | busy / quiet |")
        print("|---|---|---|---|")
        for index, setting in enumerate(args.settings):
            def run(kind: str, setting: str = setting) -> float:
                return train_seconds(data, work / f"output-{index}-{kind}", args.epochs, args.image_size, setting)
            quiet = run("quiet")
            busy = beside_hogs(args.hogs, lambda: run("busy"))
            print(f"| {setting} | {quiet:.1f} | {busy:.1f} | {busy / quiet:.2f}x |", flush=True)
        print(f"\nload average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
