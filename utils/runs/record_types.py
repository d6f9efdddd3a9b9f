"""The types of a run record's values that the commands after training read (summary.json, config.yml).

A record from someone else can hold anything JSON or YAML can write; a value of another type than train.py writes
would otherwise end in a traceback far from the file (``tags: 5``, ``duration_s: NaN``). The run table skips such a
run with a warning that names the file and the key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from utils.checks import is_integer, is_number

Check = Callable[[Any], bool]


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _count(value: Any) -> bool:
    return is_integer(value) and value >= 0


def _finite(value: Any) -> bool:
    return is_number(value) and math.isfinite(value)


def _metric(value: Any) -> bool:  # a loss or an accuracy: NaN when training diverged
    return is_number(value) and not math.isinf(value)


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


def _optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _list_of(check: Check) -> Check:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def _mapping_of(check: Check) -> Check:
    return lambda value: isinstance(value, Mapping) and all(isinstance(key, str) and check(item)
                                                            for key, item in value.items())


def _best_value(value: Any) -> bool:
    return (isinstance(value, Mapping) and _metric(value.get("value"))
            and _optional(_count)(value.get("epoch")))


def _any(value: Any) -> bool:
    return True


_OPTIONAL_TEXT = _optional(_text)
# (check, what it should be) of each summary.json key the commands after training read
SUMMARY_TYPES: dict[str, tuple[Check, str]] = {
    "state": (_text, "a text"), "stop_reason": (_OPTIONAL_TEXT, "a text"), "error": (_text, "a text"),
    "duration_s": (_finite, "a finite number of seconds"), "epochs_run": (_count, "a whole number"),
    "parameters": (_count, "a whole number"), "num_classes": (_count, "a whole number"),
    "seed": (is_integer, "a whole number"), "runtime": (_OPTIONAL_TEXT, "a text"),
    "architecture": (_text, "a text"), "started": (_text, "a date and time"),
    "device": (_mapping_of(_any), "a mapping"), "tags": (_list_of(_text), "a list of texts"),
    "description": (_OPTIONAL_TEXT, "a text"), "class_names": (_list_of(_text), "a list of texts"),
    "image_size": (_list_of(_count), "a list of whole numbers"),
    "best": (_mapping_of(_metric), "a mapping of metrics"), "last": (_mapping_of(_metric), "a mapping of metrics"),
    "best_valid_acc": (_best_value, "a mapping with value and epoch"),
    "best_train_acc": (_metric, "a number"), "best_train_loss": (_metric, "a number"),
    "run_name": (_text, "a text"), "seed_group": (_text, "a text"), "mlflow_run_id": (_text, "a text"),
    "mlflow_parent_run_id": (_text, "a text"), "resumed": (_list_of(_mapping_of(_any)), "a list of mappings"),
}
_SETTING = (_OPTIONAL_TEXT, "a text")
# (check, what it should be) of each config.yml key the run table shows
CONFIG_TYPES: dict[str, tuple[Check, str]] = {
    "architecture": _SETTING, "loss_function": _SETTING, "optimizer": _SETTING, "lr_scheduler": _SETTING,
    "description": _SETTING, "tags": (_optional(_list_of(_text)), "a list of texts"),
    "image_size": (_list_of(_count), "a list of whole numbers"),
    "batch_size": (_optional(_count), "a whole number"), "output_channels": (_optional(_count), "a whole number"),
    "seed": (_optional(is_integer), "a whole number"), "dropout": (_optional(_finite), "a number"),
    "convert_to_grayscale": (_flag, "true or false"), "normalize": (_flag, "true or false"),
    "augment_images": (_flag, "true or false"), "augment_tensors": (_flag, "true or false"),
    "crop_to_bboxes": (_flag, "true or false"), "erase_background": (_flag, "true or false"),
    "image_augmentations": (_optional(_mapping_of(_any)), "a mapping of transforms"),
    "tensor_augmentations": (_optional(_mapping_of(_any)), "a mapping of transforms"),
    "optimizer_params": (_optional(_mapping_of(_any)), "a mapping"),
    "lr_scheduler_params": (_optional(_mapping_of(_any)), "a mapping"),
}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def type_problem(record: Mapping[str, Any], types: Mapping[str, tuple[Check, str]]) -> str | None:
    """'key: value is not what it should be' for the first value of a wrong type, else None."""
    for key, (check, expected) in types.items():
        if key in record and not check(record[key]):
            return f"{key}: {_short(record[key])} is not {expected}"
    return None
