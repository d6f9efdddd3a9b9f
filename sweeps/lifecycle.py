"""A worker's life: it stops when the process that started it ends, beats while it trains, and leaves when no work
is left for it."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from optuna.storages import RDBStorage

from sweeps.groups import PARENT_PID_ENV

logger = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_with_parent() -> None:
    """Have the kernel send this process SIGTERM when the process that started it ends (Linux's
    PR_SET_PDEATHSIG): a worker never trains on unsupervised after its launcher (or its group's rank 0) died.

    The starting process's pid comes in CARS_PARENT_PID; when it has ended already (before this call), exit now.
    Then this process becomes the parent its own children (the other ranks of its group) stop with.
    """
    expected = os.environ.get(PARENT_PID_ENV)
    if expected is None:
        return
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            logger.warning("could not ask to stop with process %s (errno %d)", expected, ctypes.get_errno())
    else:
        threading.Thread(target=_watch_parent, args=(int(expected),), daemon=True).start()
    if os.getppid() != int(expected):
        logger.error("worker %d: the process that started it (%s) has ended; stopping", os.getpid(), expected)
        sys.exit(1)
    os.environ[PARENT_PID_ENV] = str(os.getpid())


def _watch_parent(parent_pid: int, interval_s: float = 1.0) -> None:
    """Where prctl is missing: SIGTERM to this process once its parent has changed (the parent ended)."""
    while os.getppid() == parent_pid:
        time.sleep(interval_s)
    os.kill(os.getpid(), signal.SIGTERM)


class Heartbeat:
    """Records the trial's heartbeat every interval seconds in a thread, from start() until stop()."""

    def __init__(self, storage: RDBStorage, trial_id: int, interval_s: float):
        self.storage, self.trial_id, self.interval_s = storage, trial_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.storage.record_heartbeat(self.trial_id)

    def start(self) -> "Heartbeat":
        self.storage.record_heartbeat(self.trial_id)  # before any work, not when the thread first runs
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> "Heartbeat":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
