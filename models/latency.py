"""Latency of a model measured one stated way: batch, threads, warm-up calls, median of N calls, the models called
in turns (so that a busy spell of a shared machine slows each alike) and the clock.

With one CPU thread PyTorch and onnxruntime compute on the calling thread, and the clock is that thread's CPU time,
which other jobs on a shared machine do not inflate (on an idle machine it equals the wall time); otherwise it is
wall time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

REPEATS, WARMUP = 20, 3


def clock_for(threads: int, on_cpu: bool = True) -> Callable[[], float]:
    """The calling thread's CPU time for a one-thread CPU run, wall time otherwise."""
    return time.thread_time if on_cpu and threads == 1 else time.perf_counter


def clock_name(clock: Callable[[], float]) -> str:
    """How `clock` measures, in words."""
    return "CPU time of the calling thread" if clock is time.thread_time else "wall time"


def medians_in_turns(calls: Mapping[str, Callable[[], Any]], repeats: int = REPEATS, warmup: int = WARMUP,
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median time in milliseconds of one call of each named callable: `warmup` untimed calls each, then `repeats`
    rounds in which every callable is timed once by `clock`."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = clock()
            call()
            times[name].append((clock() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def median_latency_ms(run: Callable[[], Any], repeats: int = REPEATS, warmup: int = WARMUP,
                      clock: Callable[[], float] = time.perf_counter) -> float:
    """Median time of one call in milliseconds, by `clock` (wall time by default; time.thread_time gives the
    calling thread's CPU time, which other jobs on a shared machine do not inflate, for one-thread runs)."""
    return medians_in_turns({"run": run}, repeats, warmup, clock)["run"]


@dataclass
class Latency:
    """Batch-1 latencies of PyTorch and of an exported file, measured together in turns, and how."""

    pytorch_ms: float
    exported_ms: float
    pytorch_device: str                 # "cpu" or e.g. "cuda:0 (NVIDIA H100 80GB HBM3)"
    threads: int                        # CPU intra-op threads of both (PyTorch's count applies on the CPU only)
    repeats: int
    warmup: int
    clock: str                          # clock_name's words

    def line(self, exported: str) -> str:
        """One line that gives both figures and says how they were measured."""
        threads = f"{self.threads} thread{'' if self.threads == 1 else 's'}"
        where = (f"{threads} each" if self.pytorch_device == "cpu"
                 else f"PyTorch on {self.pytorch_device}, {exported} on the CPU with {threads}")
        return (f"latency, batch 1, median of {self.repeats} calls after {self.warmup} warm-up calls, the two in "
                f"turns, {where}, {self.clock}: PyTorch {self.pytorch_ms:.2f} ms, {exported} "
                f"{self.exported_ms:.2f} ms")
