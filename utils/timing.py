"""Execution-time measurement that logs how long a step took."""

from __future__ import annotations

import logging
import time
from contextlib import ContextDecorator
from typing import Any

logger = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """12.3 s, 4 min 05.0 s or 2 h 03 min 04 s."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {secs:04.1f} s"
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours} h {minutes:02d} min {int(secs):02d} s"


class log_execution_time(ContextDecorator):  # noqa: N801 - used as a decorator
    """Decorator or context manager logging '<label> took <duration>'; `seconds` holds the last duration.

    A step quicker than quiet_below_s is logged at DEBUG only (no 'took 0.0 s' lines at INFO).
    """

    def __init__(self, label: str, level: int = logging.INFO, log: logging.Logger | None = None,
                 quiet_below_s: float = 0.0):
        self.label = label
        self.level = level
        self.log = log or logger
        self.quiet_below_s = quiet_below_s
        self.seconds: float | None = None
        self._start = 0.0

    def __enter__(self) -> "log_execution_time":
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._start
        level = self.level if self.seconds >= self.quiet_below_s else logging.DEBUG
        self.log.log(level, "%s took %s", self.label, format_duration(self.seconds))
