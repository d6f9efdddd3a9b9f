"""Polling helper for tests that watch real processes."""

import time


def wait_for(condition, timeout=300, what="condition", interval=0.05):
    """The first truthy value of condition(), polled every interval seconds; AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
