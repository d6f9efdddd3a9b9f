"""Each script's cold start in CPU seconds: its --help, a configuration error, and predict.py end to end.

Every command runs as a new process (``--repeats`` times; the median is shown) and is measured by the CPU time the
kernel accounts to it (user + system, os.wait4), which another job on the machine does not inflate the way it
inflates wall time. predict.py is set against the import of torch and torchvision alone, which it cannot avoid.
A tiny run is trained first for predict.py (or ``--run RUN --photo PHOTO`` are used).

    python -m benchmarks.cold_start [--repeats 3] [--run RUN --photo PHOTO] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import ROOT, generated_data, machine_line

SCRIPTS = ("train.py", "sweep.py", "predict.py", "evaluate.py", "export_model.py", "compare_runs.py",
           "prepare_stanford_dataset.py")
IMPORT_TORCH = ["-c", "import torch, torchvision"]


def cpu_seconds(arguments: list[str]) -> tuple[float, int]:
    """(user + system CPU seconds, exit status) of `python ARGUMENTS` run in the repository."""
    process = subprocess.Popen([sys.executable, *arguments], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    return usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status)


def median_cpu(arguments: list[str], repeats: int) -> tuple[float, int]:
    measured = [cpu_seconds(arguments) for _ in range(repeats)]
    return statistics.median(seconds for seconds, _ in measured), measured[-1][1]


def config_errors(work: Path) -> dict[str, list[str]]:
    """A command per kind of configuration error (each must exit 2 before any work)."""
    missing = str(work / "missing")
    template = str(ROOT / "config_template.yml")
    return {"train.py: unknown key": ["train.py", "-c", template, "--set", "batch_sise=32"],
            "train.py: bad value": ["train.py", "-c", template, "--set", "batch_size=-1"],
            "train.py: missing data folder": ["train.py", "-c", template, "-d", missing],
            "train.py: missing config file": ["train.py", "-c", missing + ".yml"],
            "sweep.py: missing study file": ["sweep.py", missing + ".yml"],
            "predict.py: missing run folder": ["predict.py", missing, missing + ".jpg"],
            "evaluate.py: missing run folder": ["evaluate.py", missing],
            "export_model.py: missing run folder": ["export_model.py", missing, "--format", "onnx"]}


def tiny_run(work: Path) -> tuple[Path, Path]:
    """A one-epoch run on generated data and a photo of it."""
    prepared, output = generated_data(work, 3, 4), work / "output"
    settings = ["image_size=[32,32]", "num_epochs=1", "batch_size=4", "num_workers=0", f"output_path={output}",
                f"logging_dir={work / 'logs'}", "log_to_mlflow=false"]
    subprocess.run([sys.executable, "train.py", "-c", "config_template.yml", "-d", str(prepared),
                    *[item for setting in settings for item in ("--set", setting)]], cwd=ROOT, check=True,
                   capture_output=True)
    return next(output.glob("ghost_*")), sorted((prepared / "test").glob("*.jpg"))[0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run", type=Path, help="a run folder for predict.py (default: train a tiny one)")
    parser.add_argument("--photo", type=Path, help="a photo for predict.py (with --run)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        run, photo = (args.run, args.photo) if args.run and args.photo else tiny_run(work)
        print(machine_line())
        print(f"CPU seconds (user + system) of a new process, median of {args.repeats}\n")
        print("| command | CPU s | exit |")
        print("|---|---|---|")
        for script in SCRIPTS:
            seconds, code = median_cpu([script, "--help"], args.repeats)
            print(f"| `{script} --help` | {seconds:.2f} | {code} |", flush=True)
        for label, arguments in config_errors(work).items():
            seconds, code = median_cpu(arguments, args.repeats)
            print(f"| {label} | {seconds:.2f} | {code} |", flush=True)
        imports, _ = median_cpu(IMPORT_TORCH, args.repeats)
        predict, code = median_cpu(["predict.py", str(run), str(photo)], args.repeats)
        print(f"| `import torch, torchvision` alone | {imports:.2f} | 0 |")
        print(f"| `predict.py RUN PHOTO` | {predict:.2f} | {code} |")
        print(f"\npredict.py beyond importing torch and torchvision: {predict - imports:+.2f} CPU s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
