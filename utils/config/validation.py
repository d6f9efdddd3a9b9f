"""Checking a configuration mapping against Config with pydantic, and its errors in the project's words.

pydantic finds every problem at once (strict types, choices, lengths, bounds, unknown keys); each key's errors
become one line naming the key, the value and what would be valid: the nearest names for an unknown key or a
choice, the whole range for a number out of it.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import is_dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from utils.checks import did_you_mean
from utils.config.schema import Config, key_fields, key_info

TYPE_NAMES = {type(None): "null", dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer",
              float: "number"}
BOUND_WORDS = {"ge": "at least", "gt": "above", "le": "at most", "lt": "below"}
BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
LENGTH_ERRORS = ("too_short", "too_long")
UNKNOWN_KEY_ERRORS = ("extra_forbidden", "unexpected_keyword_argument", "invalid_key")


@functools.cache
def config_adapter() -> TypeAdapter[Config]:
    return TypeAdapter(Config)


def _is_group(option: Any) -> bool:
    """A nested group of keys (a dataclass such as RGBNormalization)."""
    return isinstance(option, type) and is_dataclass(option)


def _options(annotation: Any) -> tuple[Any, ...]:
    """The members of a union annotation (itself when not a union), Annotated's extras set aside."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(option for member in typing.get_args(annotation) for option in _options(member))
    return (annotation,)


def _plain(option: Any) -> Any:
    return typing.get_origin(option) or option


def type_names(annotation: Any) -> str:
    """'integer or null': what an annotation accepts, in YAML's words."""
    names = ["mapping" if _is_group(option) else TYPE_NAMES.get(_plain(option), str(option))
             for option in _options(annotation) if _plain(option) is not typing.Literal]
    return " or ".join(dict.fromkeys(names))


def choices(annotation: Any) -> tuple[Any, ...]:
    """The values a Literal annotation (or a union with one) allows."""
    return tuple(value for option in _options(annotation) if _plain(option) is typing.Literal
                 for value in typing.get_args(option))


def _list_item(annotation: Any) -> Any:
    return next((typing.get_args(option)[0] for option in _options(annotation) if _plain(option) is list), None)


def _annotated_rules(annotation: Any) -> list[Any]:
    """The constraints Annotated types carry in an annotation: its union's members and a list's items."""
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    members += tuple(item for item in [_list_item(annotation)] if item is not None)
    extras = [extra for member in members if typing.get_origin(member) is typing.Annotated
              for extra in typing.get_args(member)[1:]]
    return [rule for extra in extras for rule in getattr(extra, "metadata", [extra])]


def bounds(field: FieldInfo) -> dict[str, float]:
    """A key's bounds (ge, gt, le, lt) as pydantic holds them: of the number, or of each number of a list."""
    constraints = list(field.metadata) + _annotated_rules(field.annotation)
    return {name: getattr(rule, name) for rule in constraints for name in BOUND_WORDS if hasattr(rule, name)}


def bound_text(field: FieldInfo) -> str:
    """'at least 0 and below 1': a key's bounds in words ('' without any)."""
    found = bounds(field)
    return " and ".join(f"{words} {found[name]}" for name, words in BOUND_WORDS.items() if name in found)


def _field_at(path: Sequence[str]) -> FieldInfo | None:
    """The pydantic field of a dotted key path (None for a key inside a free mapping such as optimizer_params)."""
    cls, field = Config, None
    for part in path:
        if cls is None or part not in key_fields(cls):
            return None
        field = key_fields(cls)[part]
        cls = next((option for option in _options(field.annotation) if _is_group(option)), None)
    return field


def _key_path(loc: Sequence[Any], raw: Any) -> tuple[str, ...]:
    """The key path of an error's location: the mapping keys it passes in the raw configuration (a list index or
    the tag pydantic gives a union's member ends it)."""
    path, node = [], raw
    for part in loc:
        if not isinstance(part, str) or not isinstance(node, Mapping) or part not in node:
            break
        path.append(part)
        node = node[part]
    return tuple(path)


def _value_at(raw: Mapping[str, Any], path: Sequence[str]) -> Any:
    node: Any = raw
    for part in path:
        node = node[part]
    return node


def unknown_key_problem(path: Sequence[str]) -> str:
    parent = _field_at(path[:-1]) if path[:-1] else None
    cls = next((option for option in _options(parent.annotation) if _is_group(option)), None) \
        if parent else Config
    known = list(key_fields(cls)) if cls is not None else []
    hint = did_you_mean(path[-1], known) or f"valid keys: {', '.join(sorted(known))}"
    return f"{'.'.join(path)}: unknown key; {hint}"


def _choice_problem(name: str, value: Any, allowed: tuple[Any, ...]) -> str:
    shown = list(dict.fromkeys(str(choice) for choice in allowed))
    hint = did_you_mean(value, shown, ignore_case=True) if isinstance(value, str) else ""
    return f"{name}: {value!r} is not one of {', '.join(shown)}" + (f"; {hint}" if hint else "")


def _bound_problem(name: str, value: Any, field: FieldInfo) -> str:
    subject = "values" if isinstance(value, list) else "value"
    limit = key_info(field).limit
    return f"{name}: {value!r} is out of range; {subject} must be {bound_text(field)}" + (
        f" ({limit})" if limit and "le" in bounds(field) and _above_upper(value, bounds(field)["le"]) else "")


def _above_upper(value: Any, upper: float) -> bool:
    numbers = value if isinstance(value, list) else [value]
    return any(isinstance(number, (int, float)) and number > upper for number in numbers)


def _type_problem(name: str, value: Any, field: FieldInfo | None, deeper: bool) -> str:
    if deeper and isinstance(value, Mapping):
        return f"{name}: expected a mapping with string keys (keyword argument names), got {value!r}"
    if field is None:  # a transform's arguments inside image_augmentations / tensor_augmentations
        return f"{name}: expected mapping or null, got {type(value).__name__} {value!r}"
    nested = next((option for option in _options(field.annotation) if _is_group(option)), None)
    if nested is not None:
        return f"{name}: expected a mapping with keys {', '.join(key_fields(nested))}, got {value!r}"
    if deeper and isinstance(value, list) and (item := _list_item(field.annotation)) is not None:
        return f"{name}: expected a list of {type_names(item)} values, got {value!r}"
    return f"{name}: expected {type_names(field.annotation)}, got {type(value).__name__} {value!r}"


def key_problem(path: tuple[str, ...], errors: list[dict[str, Any]], raw: Mapping[str, Any]) -> str:
    """One line for every pydantic error of one key: the key, its value and what would be valid."""
    kinds = {error["type"] for error in errors}
    if kinds & set(UNKNOWN_KEY_ERRORS):
        return unknown_key_problem(path)
    name, value, field = ".".join(path), _value_at(raw, path), _field_at(path)
    # an error inside the value (a list's item, a mapping's key), not a union member's mismatch of the whole
    deeper = any(not isinstance(part, str) for error in errors for part in error["loc"][len(path):])
    if field is not None and "literal_error" in kinds:
        return _choice_problem(name, value, choices(field.annotation))
    if field is not None and kinds & set(LENGTH_ERRORS):
        length = next(rule.min_length for rule in field.metadata if hasattr(rule, "min_length"))
        return f"{name}: expected {length} values, got {len(value)} ({value!r})"
    item_type_error = deeper and not kinds <= set(BOUND_ERRORS)
    if field is not None and kinds & set(BOUND_ERRORS) and not item_type_error:
        return _bound_problem(name, value, field)
    return _type_problem(name, value, field, deeper)


def problems_of(error: ValidationError, raw: Mapping[str, Any]) -> list[str]:
    """pydantic's errors grouped by key, one problem line each, in the order of the keys in the file."""
    by_key: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for item in error.errors():
        unknown = item["type"] in UNKNOWN_KEY_ERRORS
        path = tuple(map(str, item["loc"])) if unknown else _key_path(item["loc"], raw)
        by_key.setdefault(path, []).append(item)
    order = {str(name): index for index, name in enumerate(raw)}
    return [key_problem(path, by_key[path], raw) for path in sorted(by_key, key=lambda path: order.get(path[:1] and path[0], 0))]


def validate(raw: Mapping[str, Any]) -> tuple[Config, list[str]]:
    """The Config of a raw mapping (defaults for the top-level keys with problems) and every problem."""
    try:
        return config_adapter().validate_python(raw), []
    except ValidationError as error:
        problems = problems_of(error, raw)
        failed = {item["loc"][0] for item in error.errors()}
        kept = {name: value for name, value in raw.items() if name not in failed}
        return config_adapter().validate_python(kept), problems
