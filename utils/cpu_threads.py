"""How many threads torch computes with on the CPU this process gets, and OpenMP threads that wait without spinning.

OpenMP's threads spin while they wait for work by default. On cores shared with the DataLoader's workers or with
anything else the machine runs, spinning threads take the cores from the threads with work, and a step can take many
times longer than with one thread. So every script that computes with torch calls ``use_cpu_threads`` first, before
torch is imported: it sets ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP reads it once, when torch loads it) and
``OMP_NUM_THREADS`` to the count chosen here. A user's own ``OMP_NUM_THREADS`` or ``OMP_WAIT_POLICY`` wins, then the
config's ``cpu_threads``; otherwise the count is the CPUs this process may use (its affinity and its cgroup's CPU
quota) less room for the loader workers. This module imports no torch.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
MAX_DEFAULT_WORKERS = 8


def cgroup_cpu_limit(path: Path = CGROUP_CPU_MAX) -> float | None:
    """The CPUs the cgroup's quota allows (cgroup v2 ``cpu.max``: "QUOTA PERIOD" or "max PERIOD"), None if unlimited."""
    try:
        quota, period = path.read_text(encoding="ascii").split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):  # no cgroup v2 file here, or one this code cannot read
        return None


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may run on: its affinity mask, capped by the cgroup's CPU quota (rounded up), >= 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cpu_max)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def default_loader_workers(cpus: int | None = None) -> int:
    """The loader processes a run uses when ``num_workers`` is null: the usable CPUs, at most 8."""
    return max(1, min(available_cpus() if cpus is None else cpus, MAX_DEFAULT_WORKERS))


def auto_threads(cpus: int, loader_workers: int) -> int:
    """Compute threads for ``cpus`` CPUs beside ``loader_workers`` loader processes: one CPU kept free for every
    two workers (they decode and augment part of the time), at least one thread."""
    return max(1, cpus - math.ceil(loader_workers / 2))


def chosen_threads(requested: int | None = None, loader_workers: int = 0) -> tuple[int, str]:
    """The intra-op thread count and where it comes from: OMP_NUM_THREADS, the config's cpu_threads, or auto."""
    explicit = os.environ.get("OMP_NUM_THREADS", "").strip()
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit), "OMP_NUM_THREADS"
    if requested is not None:
        return requested, "cpu_threads"
    cpus = available_cpus()
    return auto_threads(cpus, loader_workers), f"{cpus} usable CPU(s), {loader_workers} loader worker(s)"


def use_cpu_threads(requested: int | None = None, loader_workers: int = 0) -> tuple[int, str]:
    """Make torch use the chosen threads, waiting passively; returns the count and its origin.

    Called before torch is imported, it sets the environment that torch and OpenMP read when they load (and that
    this process's children inherit). Once torch is loaded (a test or notebook calling a script's main), that
    process has chosen its threads: only the config's cpu_threads changes them, and the environment stays as it is.
    """
    threads, origin = chosen_threads(requested, loader_workers)
    torch = sys.modules.get("torch")
    if torch is None:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        return threads, origin
    if origin == "cpu_threads":
        torch.set_num_threads(threads)
        return threads, origin
    return torch.get_num_threads(), "set before torch was loaded in this process"


def worker_threads_environment(workers: int) -> dict[str, str]:
    """The environment of one of ``workers`` processes sharing this machine's CPUs (sweep workers): an equal share
    of the usable CPUs each, waiting passively."""
    return {"OMP_NUM_THREADS": str(max(1, available_cpus() // workers)), "OMP_WAIT_POLICY": "PASSIVE"}
