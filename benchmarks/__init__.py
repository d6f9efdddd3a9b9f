"""The project's benchmarks, each run as a module (python -m benchmarks.<name>), and what their headings share."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

from utils.cpu_threads import available_cpus

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    try:
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")] if cpuinfo.is_file() else []
    except OSError:
        names = []
    return names[0] if names else (platform.processor() or platform.machine() or "unknown CPU")


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def machine_line() -> str:
    """The CPU, its cores (those this process may use) and the load average, for a benchmark's heading."""
    return f"{cpu_model()}, {os.cpu_count()} cores ({available_cpus()} usable); load average {load_average()}"


def generated_data(work: Path, classes: int, per_class: int) -> Path:
    """Generated raw data prepared as make demo prepares it, in work/stanford (reused when present)."""
    prepared = work / "stanford"
    if not prepared.is_dir():
        raw = work / "raw"
        subprocess.run([sys.executable, "-m", "datasets.synthetic", str(raw), "--overwrite", "--layout", "updated",
                        "--classes", str(classes), "--per-class", str(per_class)], cwd=ROOT, check=True,
                       capture_output=True)
        subprocess.run([sys.executable, "prepare_stanford_dataset.py", "--raw", str(raw), "--out", str(prepared)],
                       cwd=ROOT, check=True, capture_output=True)
    return prepared
