"""Small checks every config check uses: numbers that are not booleans, and the nearest valid names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


def is_number(value: Any) -> bool:
    """True for int and float values, False for bool (which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_integer(value: Any) -> bool:
    """True for int values, False for bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def did_you_mean(name: Any, choices: Iterable[str], cutoff: float = 0.6, ignore_case: bool = False,
                 most: int = 3) -> str:
    """'did you mean a, b?' for the valid names nearest to `name`, or '' when none is near."""
    choices = list(choices)
    if ignore_case:
        lowered = {choice.lower(): choice for choice in choices}
        close = [lowered[item] for item in difflib.get_close_matches(str(name).lower(), list(lowered), most, cutoff)]
    else:
        close = difflib.get_close_matches(str(name), choices, most, cutoff)
    return f"did you mean {', '.join(close)}?" if close else ""
