"""What a resumed run takes from its checkpoint: counters and tensors, never settings.

The run's configuration builds the optimizer, the schedulers and the loss. From the checkpoint's optimizer and
scheduler states a resumed run takes only what training counts or accumulates: epochs and steps, the last learning
rates, the optimizer's moments, ReduceLROnPlateau's best value and its counters. Every other value saved there (an
lr_lambda text, the base learning rates, a weight decay, milestones, ...) is compared with the configuration's and
replaced by it; the differences are reported. A state with keys or values that the configuration's optimizer or
schedulers do not write is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

# What a scheduler counts: the epoch and step counters, the last learning rates, ReduceLROnPlateau's running values,
# CosineAnnealingWarmRestarts' position in its period.
SCHEDULER_COUNTERS = frozenset({"last_epoch", "_step_count", "_is_initial", "_get_lr_called_within_step", "_last_lr",
                                "best", "num_bad_epochs", "cooldown_counter", "T_cur", "T_i"})
NESTED_SCHEDULERS = "_schedulers"  # SequentialLR's parts
GROUP_COUNTERS = frozenset({"lr", "params"})  # a parameter group's current learning rate and its parameter indices
_Number = (int, float)


class ResumeStateError(ValueError):
    """A checkpoint's optimizer or scheduler state that this project's training does not write."""


def _is_counter_value(value: Any) -> bool:
    """A number, a flag, or a list of numbers (e.g. the last learning rate of each parameter group)."""
    if isinstance(value, (list, tuple)):
        return all(isinstance(item, _Number) for item in value)
    return isinstance(value, (*_Number, bool, torch.Tensor)) and (not isinstance(value, torch.Tensor)
                                                                  or value.numel() == 1)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _setting_differences(saved: Mapping[str, Any], fresh: Mapping[str, Any], where: str,
                         counters: frozenset[str]) -> list[str]:
    """The settings (not counters) whose saved value differs from the configuration's."""
    return [f"{where}{key} {_short(saved[key])} (checkpoint) vs {_short(fresh[key])} (config)"
            for key in saved if key not in counters and key != NESTED_SCHEDULERS and saved[key] != fresh[key]]


def merge_scheduler_state(saved: Any, fresh: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """The configuration's scheduler state with the checkpoint's counters; the settings that differ."""
    if not isinstance(saved, Mapping) or not set(saved) <= set(fresh):
        extra = sorted(map(str, set(saved) - set(fresh))) if isinstance(saved, Mapping) else [type(saved).__name__]
        raise ResumeStateError(f"its {where.strip(' .')} holds {', '.join(extra)}, which the configuration's "
                               "scheduler does not write; resume with the run's own lr_scheduler and warmup_epochs, "
                               "or start a new run")
    merged = dict(fresh)
    differences = _setting_differences(saved, fresh, where, SCHEDULER_COUNTERS)
    for key in SCHEDULER_COUNTERS & set(saved):
        if not _is_counter_value(saved[key]):
            raise ResumeStateError(f"its {where}{key} is {_short(saved[key])}, not a number")
        merged[key] = saved[key]
    if NESTED_SCHEDULERS in fresh:
        parts, fresh_parts = saved.get(NESTED_SCHEDULERS), fresh[NESTED_SCHEDULERS]
        if not isinstance(parts, list) or len(parts) != len(fresh_parts):
            raise ResumeStateError(f"its {where}schedulers are not the configuration's")
        merged[NESTED_SCHEDULERS] = []
        for index, (part, fresh_part) in enumerate(zip(parts, fresh_parts)):
            state, part_differences = merge_scheduler_state(part, fresh_part, f"{where}schedulers[{index}].")
            merged[NESTED_SCHEDULERS].append(state)
            differences += part_differences
    return merged, differences


def _check_learning_rate(value: Any, where: str) -> None:
    if not isinstance(value, _Number) or isinstance(value, bool) or not (math.isfinite(value) and value >= 0):
        raise ResumeStateError(f"its {where}lr is {_short(value)}, not a learning rate")


def _merge_groups(saved: Any, fresh: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    if not isinstance(saved, list) or len(saved) != len(fresh):
        raise ResumeStateError(f"its optimizer has other parameter groups than the configuration's ({len(fresh)})")
    groups, differences = [], []
    for index, (group, fresh_group) in enumerate(zip(saved, fresh)):
        where = f"optimizer group {index} "
        if not isinstance(group, Mapping) or not set(group) <= set(fresh_group):
            keys = sorted(map(str, set(group) - set(fresh_group))) if isinstance(group, Mapping) else [str(group)]
            raise ResumeStateError(f"its {where}holds {', '.join(keys)}, which the configuration's optimizer does "
                                   "not write")
        params = group.get("params")
        if not (isinstance(params, list) and len(params) == len(fresh_group["params"])
                and all(isinstance(item, int) for item in params)):
            raise ResumeStateError(f"its {where}is not for the network the configuration builds")
        _check_learning_rate(group.get("lr"), where)
        differences += _setting_differences(group, fresh_group, where, GROUP_COUNTERS)
        groups.append({**fresh_group, "lr": group["lr"], "params": params})
    return groups, differences


def _check_moments(state: Any, groups: list[dict[str, Any]], optimizer: torch.optim.Optimizer) -> None:
    """Each parameter's state: tensors and numbers, for a parameter of the optimizer, no larger than its group."""
    sizes = {}
    for group, live in zip(groups, optimizer.param_groups):
        total = sum(parameter.numel() for parameter in live["params"])
        sizes.update({index: total for index in group["params"]})
    if not isinstance(state, Mapping):
        raise ResumeStateError("its optimizer state is not a mapping of parameters")
    for index, values in state.items():
        if index not in sizes or not isinstance(values, Mapping):
            raise ResumeStateError(f"its optimizer state names parameter {_short(index)}, which has no group")
        for key, value in values.items():
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(item, (torch.Tensor, *_Number, bool)) or item is None for item in items):
                raise ResumeStateError(f"its optimizer state {key!r} of parameter {index} is not tensors or numbers")
            if any(isinstance(item, torch.Tensor) and item.numel() > sizes[index] for item in items):
                raise ResumeStateError(f"its optimizer state {key!r} of parameter {index} is larger than the "
                                       "network's parameters")


def merge_optimizer_state(saved: Any, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], list[str]]:
    """The configuration's optimizer settings with the checkpoint's learning rates and moments; the settings that
    differ."""
    fresh = optimizer.state_dict()
    if not isinstance(saved, Mapping) or set(saved) != {"state", "param_groups"}:
        raise ResumeStateError("its optimizer state is not a torch optimizer's")
    groups, differences = _merge_groups(saved["param_groups"], fresh["param_groups"])
    _check_moments(saved["state"], groups, optimizer)
    return {"state": saved["state"], "param_groups": groups}, differences


def take_training_state(checkpoint: dict[str, Any], optimizers: Sequence[torch.optim.Optimizer],
                        schedulers: Sequence[Any]) -> list[str]:
    """Replace the checkpoint's optimizer and scheduler states (in place) by the configuration's optimizers and
    schedulers with the checkpoint's counters and tensors; return the settings where the two differ."""
    saved_optimizers = checkpoint.get("optimizer_states") or []
    saved_schedulers = checkpoint.get("lr_schedulers") or []
    if len(saved_optimizers) != len(optimizers) or len(saved_schedulers) != len(schedulers):
        raise ResumeStateError(f"it holds {len(saved_optimizers)} optimizer and {len(saved_schedulers)} scheduler "
                               f"states; the configuration builds {len(optimizers)} and {len(schedulers)}: resume "
                               "with the run's own lr_scheduler and warmup_epochs, or start a new run")
    differences: list[str] = []
    merged_optimizers = []
    for saved, optimizer in zip(saved_optimizers, optimizers):
        state, found = merge_optimizer_state(saved, optimizer)
        merged_optimizers.append(state)
        differences += found
    merged_schedulers = []
    for index, (saved, scheduler) in enumerate(zip(saved_schedulers, schedulers)):
        state, found = merge_scheduler_state(saved, scheduler.state_dict(), f"lr scheduler {index} " if
                                             len(schedulers) > 1 else "lr scheduler ")
        merged_schedulers.append(state)
        differences += found
    checkpoint["optimizer_states"], checkpoint["lr_schedulers"] = merged_optimizers, merged_schedulers
    return differences
