"""Checking a configuration mapping against Config's types, choices, lengths and bounds, every problem at once."""

from __future__ import annotations

import copy
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from utils.checks import did_you_mean, is_integer, is_number
from utils.config.schema import Config, KeyInfo, key_info

NoneType = type(None)
TYPE_NAMES = {NoneType: "null", dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer",
              float: "number"}


@dataclass(frozen=True)
class KeyType:
    """What a key's annotation accepts: YAML types (a dataclass for a nested mapping) and a list's item type."""

    types: tuple[type, ...]
    item_type: type | None = None

    @property
    def nested(self) -> type | None:
        return next((kind for kind in self.types if is_dataclass(kind)), None)


def _key_type(hint: Any) -> KeyType:
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    accepted, item_type = [], None
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is list:
            item_type = typing.get_args(option)[0]
        accepted.append(origin)
    return KeyType(tuple(accepted), item_type)


@functools.cache
def key_types(cls: type) -> dict[str, KeyType]:
    """Each field of a config dataclass and what its annotation accepts."""
    return {name: _key_type(hint) for name, hint in typing.get_type_hints(cls).items()}


def type_names(kinds: Iterable[type]) -> str:
    return " or ".join(TYPE_NAMES.get(kind, "mapping" if is_dataclass(kind) else kind.__name__) for kind in kinds)


def _matches(value: Any, wanted: type) -> bool:
    if wanted is float:
        return is_number(value)
    if wanted is int:
        return is_integer(value)
    return isinstance(value, wanted)


def bound_text(info: KeyInfo) -> str:
    """'at least 0 and below 1': a key's bounds in words ('' without any)."""
    parts = [f"at least {info.at_least}" if info.at_least is not None else "",
             f"above {info.above}" if info.above is not None else "",
             f"at most {info.at_most}" if info.at_most is not None else "",
             f"below {info.below}" if info.below is not None else ""]
    return " and ".join(part for part in parts if part)


def _bound_problems(info: KeyInfo, value: Any, path: str) -> list[str]:
    """Numbers (or the numbers of a list) outside the key's bounds."""
    numbers = value if isinstance(value, list) else [value]
    outside = [number for number in numbers if is_number(number) and (
        (info.at_least is not None and number < info.at_least)
        or (info.above is not None and number <= info.above)
        or (info.at_most is not None and number > info.at_most)
        or (info.below is not None and number >= info.below))]
    if not outside:
        return []
    subject = "values" if isinstance(value, list) else "value"
    return [f"{path}: {value!r} is out of range; {subject} must be {bound_text(info)}"]


def value_problems(info: KeyInfo, kind: KeyType, value: Any, path: str) -> list[str]:
    """A value's problems against its key: type, choices, list items and length, bounds."""
    if not any(_matches(value, wanted) for wanted in kind.types):
        return [f"{path}: expected {type_names(kind.types)}, got {type(value).__name__} {value!r}"]
    if info.choices is not None and value not in info.choices and not (value is None and NoneType in kind.types):
        return [f"{path}: {value!r} is not one of {', '.join(map(str, info.choices))}"]
    if isinstance(value, list) and kind.item_type is not None:
        if not all(_matches(item, kind.item_type) for item in value):
            return [f"{path}: expected a list of {type_names([kind.item_type])} values, got {value!r}"]
        if info.length is not None and len(value) != info.length:
            return [f"{path}: expected {info.length} values, got {len(value)} ({value!r})"]
    return _bound_problems(info, value, path)


def unknown_key_problem(prefix: str, name: Any, known: Iterable[str]) -> str:
    known = list(known)
    hint = did_you_mean(name, known) or f"valid keys: {', '.join(sorted(known))}"
    return f"{prefix}{name}: unknown key; {hint}"


def _checked_fields(cls: type, raw: Mapping[str, Any], prefix: str) -> tuple[dict[str, Any], list[str]]:
    """The valid values of raw for the fields of cls (nested dataclasses built), and every problem."""
    known = {item.name: item for item in fields(cls)}
    problems = [unknown_key_problem(prefix, name, known) for name in raw if name not in known]
    values: dict[str, Any] = {}
    for name, item in known.items():
        if name not in raw:
            continue
        kind, value, path = key_types(cls)[name], raw[name], f"{prefix}{name}"
        if kind.nested is not None:
            if not isinstance(value, dict):
                children = ", ".join(child.name for child in fields(kind.nested))
                problems.append(f"{path}: expected a mapping with keys {children}, got {value!r}")
                continue
            child_values, found = _checked_fields(kind.nested, value, f"{path}.")
            values[name] = kind.nested(**child_values)
            problems += found
            continue
        found = value_problems(key_info(item), kind, value, path)
        problems += found
        if not found:
            values[name] = copy.deepcopy(value)
    return values, problems


def validate(raw: Mapping[str, Any]) -> tuple[Config, list[str]]:
    """The Config of a raw mapping (defaults for missing keys and for values with problems) and every problem."""
    values, problems = _checked_fields(Config, raw, "")
    return Config(**values), problems
