"""The project's benchmarks, each run as a module (python -m benchmarks.<name>), and what their headings share."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    try:
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")] if cpuinfo.is_file() else []
    except OSError:
        names = []
    return names[0] if names else (platform.processor() or platform.machine() or "unknown CPU")
