"""Small checks every config check uses: numbers that are not booleans, nearest valid names, keyword arguments."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
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


def keyword_problem(label: str, target: Callable[..., Any], kwargs: Mapping[str, Any], positional: int = 0,
                    hidden: Iterable[str] = ("self", "args", "kwargs")) -> str | None:
    """Whether `target(<positional> values, **kwargs)` binds: unknown names (with the nearest), missing ones.

    Used for every "a torch class by name with keyword arguments" key (transforms, optimizer, scheduler, loss).
    """
    signature = inspect.signature(target)
    try:
        signature.bind(*([None] * positional), **kwargs)
    except TypeError as error:
        accepted = [name for index, name in enumerate(signature.parameters)
                    if index >= positional and name not in hidden]
        unknown = [str(key) for key in kwargs if key not in signature.parameters]
        if not unknown:
            return f"{label}: {error}; accepted: {', '.join(accepted)}"
        hints = [f"{key} -> {hint}" for key in unknown if (hint := did_you_mean(key, accepted, most=2))]
        extra = f" ({'; '.join(hints)})" if hints else ""
        missing = [name for name in accepted if name not in kwargs
                   and signature.parameters[name].default is inspect.Parameter.empty
                   and signature.parameters[name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                           inspect.Parameter.KEYWORD_ONLY)]
        extra += f"; missing required argument(s) {', '.join(missing)}" if missing else ""
        return f"{label}: unknown argument(s) {', '.join(unknown)}{extra}; accepted: {', '.join(accepted)}"
    return None
