"""Optimizer, learning-rate scheduler and loss chosen by name: the valid names, the factories and their checks."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn
from torch.optim import lr_scheduler as schedulers

from models.lr_lambda import LrLambda, shorten
from utils.checks import did_you_mean, is_integer, keyword_problem

if TYPE_CHECKING:
    from utils.config import Config

LAMBDA_SCHEDULERS = ("LambdaLR", "MultiplicativeLR")
LABEL_SMOOTHING = "LabelSmoothingCrossEntropy"
SEQUENTIAL = "SequentialLR"  # by name: lr_scheduler_params {schedulers: [{Name: {kwargs}}, ...], milestones: [...]}
PLATEAU = "ReduceLROnPlateau"
_NOT_CONFIGURABLE = ("LRScheduler", "_LRScheduler", "ChainedScheduler")


class LabelSmoothingCrossEntropy(nn.CrossEntropyLoss):
    """The thesis's loss (Szegedy et al. 2016) under its name: torch's cross-entropy with label_smoothing=epsilon."""

    def __init__(self, epsilon: float = 0.1, reduction: str = "mean"):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
        super().__init__(reduction=reduction, label_smoothing=epsilon)
        self.epsilon = epsilon


def optimizer_names() -> list[str]:
    """Class names of torch.optim optimizers."""
    base = torch.optim.Optimizer
    return sorted(name for name, obj in vars(torch.optim).items()
                  if inspect.isclass(obj) and issubclass(obj, base) and obj is not base)


def scheduler_names() -> list[str]:
    """Class names of torch.optim.lr_scheduler schedulers configurable by name and keyword arguments."""
    bases = (schedulers.LRScheduler, schedulers.ReduceLROnPlateau)
    return sorted(name for name, obj in vars(schedulers).items()
                  if inspect.isclass(obj) and issubclass(obj, bases) and name not in _NOT_CONFIGURABLE)


def loss_names() -> list[str]:
    """LabelSmoothingCrossEntropy and the torch.nn loss class names."""
    names = [name for name, obj in vars(nn).items()
             if inspect.isclass(obj) and issubclass(obj, nn.modules.loss._Loss) and not name.startswith("_")]
    return sorted(names + [LABEL_SMOOTHING])


def _scheduler_kwargs(name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    kwargs = dict(params or {})
    if name in LAMBDA_SCHEDULERS and isinstance(kwargs.get("lr_lambda"), str):
        kwargs["lr_lambda"] = LrLambda(kwargs["lr_lambda"])
    return kwargs


def build_optimizer(name: str, parameters: Iterable[Any], params: Mapping[str, Any] | None) -> torch.optim.Optimizer:
    """A torch.optim optimizer by class name."""
    if name not in optimizer_names():
        raise ValueError(f"unknown optimizer {name!r}")
    return getattr(torch.optim, name)(parameters, **dict(params or {}))


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, params: Mapping[str, Any] | None) -> Any:
    """A torch.optim.lr_scheduler scheduler by class name (lr_lambda expressions parsed safely); SequentialLR
    takes its schedulers as a list of {Name: {kwargs}} mappings."""
    if name not in scheduler_names():
        raise ValueError(f"unknown lr_scheduler {name!r}")
    if name == SEQUENTIAL:
        kwargs = dict(params or {})
        parts = [build_scheduler(part, optimizer, part_params)
                 for item in kwargs.pop("schedulers", None) or [] for part, part_params in item.items()]
        return schedulers.SequentialLR(optimizer, parts, **kwargs)
    return getattr(schedulers, name)(optimizer, **_scheduler_kwargs(name, params))


def build_lr_schedulers(optimizer: torch.optim.Optimizer, name: str | None, params: Mapping[str, Any] | None,
                        warmup_epochs: int = 0, warmup_start_factor: float = 0.1) -> list[Any]:
    """The run's schedulers, stepped once per epoch: lr_scheduler, after warmup_epochs of linear warmup when asked.

    The warmup and the configured scheduler are one SequentialLR (the scheduler counts its epochs from the end of
    the warmup); ReduceLROnPlateau, which SequentialLR refuses, follows the warmup as a second scheduler.
    """
    main = build_scheduler(name, optimizer, params) if name is not None else None
    if not warmup_epochs:
        return [main] if main is not None else []
    warmup = schedulers.LinearLR(optimizer, start_factor=warmup_start_factor, total_iters=warmup_epochs)
    if main is None:
        return [warmup]
    if isinstance(main, schedulers.ReduceLROnPlateau):
        return [warmup, main]
    return [schedulers.SequentialLR(optimizer, [warmup, main], milestones=[warmup_epochs])]


def step_scheduler(scheduler: Any, monitored: float) -> None:
    """One epoch's step, as Lightning takes it (ReduceLROnPlateau with the monitored value)."""
    if isinstance(scheduler, schedulers.ReduceLROnPlateau):
        scheduler.step(monitored)
    else:
        scheduler.step()


def build_loss(name: str, params: Mapping[str, Any] | None) -> nn.Module:
    """LabelSmoothingCrossEntropy or a torch.nn loss by class name."""
    if name == LABEL_SMOOTHING:
        return LabelSmoothingCrossEntropy(**dict(params or {}))
    if name not in loss_names():
        raise ValueError(f"unknown loss_function {name!r}")
    return getattr(nn, name)(**dict(params or {}))


def _name_problem(key: str, name: Any, valid: list[str]) -> str | None:
    if not isinstance(name, str):
        return None  # a wrong type is reported by the schema check
    if name in valid:
        return None
    hint = did_you_mean(name, valid, cutoff=0.5, ignore_case=True)
    return f"{key}: unknown name {name!r}; {hint + ' ' if hint else ''}valid: {', '.join(valid)}"


def _binding_problem(key: str, name: str, target: Callable[..., Any], params: Any, positional: int) -> str | None:
    if params is not None and not isinstance(params, Mapping):
        return None  # a wrong type is reported by the schema check
    return keyword_problem(f"{key}: {name}", target, dict(params or {}), positional,
                           hidden=("self", "params", "optimizer"))


def _dummy_parameters() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(1))]


def _optimizer_problems(config: Config) -> tuple[list[str], torch.optim.Optimizer | None]:
    name, params = config.optimizer, config.optimizer_params
    problem = _name_problem("optimizer", name, optimizer_names())
    if problem or not isinstance(name, str):
        return [problem] if problem else [], None
    problem = _binding_problem("optimizer_params", name, getattr(torch.optim, name), params, 1)
    if problem:
        return [problem], None
    try:
        return [], build_optimizer(name, _dummy_parameters(), params)
    except Exception as error:
        return [f"optimizer_params: {name} rejects them: {error}"], None


def _one_scheduler_problem(name_key: str, key: str, name: Any, params: Any, epochs: int,
                           valid: list[str]) -> str | None:
    """Name, arguments, lr_lambda and milestones of one scheduler (`name_key`/`key`: where name and arguments are)."""
    problem = _name_problem(name_key, name, valid)
    if problem or not isinstance(name, str):
        return problem
    problem = _binding_problem(key, name, getattr(schedulers, name), params, 1)
    if problem:
        return problem
    if name in LAMBDA_SCHEDULERS:
        expression = (params or {}).get("lr_lambda")
        if not isinstance(expression, str):
            return f"{key}.lr_lambda: {name} needs an expression in epoch, e.g. '0.975 ** epoch'"
        try:
            function = LrLambda(expression)
            for epoch in range(epochs):
                function(epoch)
        except ValueError as error:  # LrLambda turns every error of an expression into a ValueError
            return f"{key}.lr_lambda: {shorten(expression)}: {error}"
    milestones = (params or {}).get("milestones")
    if milestones is not None and not (isinstance(milestones, list) and all(is_integer(m) for m in milestones)):
        return f"{key}.milestones: {milestones!r} must be epoch numbers (integers, in a list)"
    return None


def _sequential_problems(params: Any, epochs: int) -> list[str]:
    """SequentialLR's schedulers: a list of {Name: {kwargs}} mappings, each checked as a scheduler of its own."""
    items = (params or {}).get("schedulers") if isinstance(params, Mapping) else None
    example = "e.g. [{LinearLR: {start_factor: 0.1, total_iters: 5}}, {CosineAnnealingLR: {T_max: 195}}]"
    if not (isinstance(items, list) and items and all(isinstance(item, Mapping) and len(item) == 1
                                                      for item in items)):
        return [f"lr_scheduler_params.schedulers: SequentialLR needs a list of one-key mappings {{Name: {{kwargs}}}}, "
                f"{example}; got {items!r}"]
    valid = [name for name in scheduler_names() if name not in (SEQUENTIAL, PLATEAU)]
    problems = []
    for index, item in enumerate(items):
        ((name, part_params),) = item.items()
        key = f"lr_scheduler_params.schedulers[{index}]"
        if part_params is not None and not isinstance(part_params, Mapping):
            problems.append(f"{key}.{name}: expected a mapping of keyword arguments, got {part_params!r}")
        elif problem := _one_scheduler_problem(key, key, name, part_params, epochs, valid):
            problems.append(problem)
    return problems


def _scheduler_problems(config: Config, optimizer: torch.optim.Optimizer | None) -> list[str]:
    name, params, epochs = config.lr_scheduler, config.lr_scheduler_params, config.num_epochs
    problems = _warmup_problems(config)
    if name is None or problems:
        return problems
    if name == SEQUENTIAL:
        problems = _sequential_problems(params, epochs)
        milestones = (params or {}).get("milestones") if isinstance(params, Mapping) else None
        if not (isinstance(milestones, list) and all(is_integer(m) for m in milestones)):
            problems.append(f"lr_scheduler_params.milestones: SequentialLR needs the epochs at which each scheduler "
                            f"after the first starts (a list of integers), got {milestones!r}")
    elif problem := _one_scheduler_problem("lr_scheduler", "lr_scheduler_params", name, params, epochs,
                                           scheduler_names()):
        problems = [problem]
    if problems:
        return problems
    optimizer = optimizer or torch.optim.SGD(_dummy_parameters(), lr=0.1, momentum=0.9)
    try:
        built = build_lr_schedulers(optimizer, name, params, config.warmup_epochs, config.warmup_start_factor)
    except Exception as error:
        return [f"lr_scheduler_params: {name} rejects them: {error}"]
    problem = _stepping_problem(name, built, optimizer, epochs)
    return [problem] if problem else []


def _warmup_problems(config: Config) -> list[str]:
    """warmup_epochs must leave epochs to the scheduler, and goes inside a SequentialLR given by name."""
    warmup = config.warmup_epochs
    if not warmup:
        return []
    if warmup >= config.num_epochs:
        return [f"warmup_epochs: {warmup} leaves no epoch after the warmup (num_epochs {config.num_epochs}); it must "
                "be below num_epochs"]
    if config.lr_scheduler == SEQUENTIAL:
        return ["warmup_epochs: lr_scheduler SequentialLR lists its own schedulers; put the warmup there (a LinearLR "
                "first) or use warmup_epochs with a single scheduler"]
    return []


def _stepping_problem(name: str | None, built: list[Any], optimizer: torch.optim.Optimizer,
                      epochs: int) -> str | None:
    """Step the schedulers once per epoch of the run, as training does, on a parameter without gradients."""
    epoch = 0
    label = name or "the warmup"
    try:
        for epoch in range(1, epochs + 1):
            optimizer.step()
            for scheduler in built:
                step_scheduler(scheduler, 1.0)
            lr = optimizer.param_groups[0]["lr"]
            if not (math.isfinite(lr) and lr >= 0):
                return f"lr_scheduler_params: {label} sets the learning rate to {lr} at epoch {epoch}"
    except Exception as error:
        return f"lr_scheduler_params: {label} fails at epoch {epoch} of num_epochs {epochs}: {error}"
    return None


def _loss_problems(config: Config) -> list[str]:
    name, params = config.loss_function, config.loss_params
    problem = _name_problem("loss_function", name, loss_names())
    if problem or not isinstance(name, str):
        return [problem] if problem else []
    target = LabelSmoothingCrossEntropy if name == LABEL_SMOOTHING else getattr(nn, name)
    problem = _binding_problem("loss_params", name, target, params, 0)
    if problem:
        return [problem]
    try:
        loss = build_loss(name, params)
    except Exception as error:
        return [f"loss_params: {name} rejects them: {error}"]
    try:
        value = loss(torch.zeros(2, 3), torch.tensor([0, 2]))
        single = isinstance(value, torch.Tensor) and value.numel() == 1
        detail = "" if single else f"it gives {tuple(value.shape) if isinstance(value, torch.Tensor) else value!r}"
    except Exception as error:
        single, detail = False, str(error)
    if not single:
        return [f"loss_function: {name} with these loss_params does not turn logits [batch, classes] and class "
                f"indices [batch] into one number ({detail})"]
    return _soft_target_problems(config, name, loss)


def _soft_target_problems(config: Config, name: str, loss: nn.Module) -> list[str]:
    """MixUp and CutMix train on class probabilities: the loss must take them."""
    mixing = [key for key in ("mixup_alpha", "cutmix_alpha") if getattr(config, key)]
    if not mixing:
        return []
    try:
        value = loss(torch.zeros(2, 3), torch.full((2, 3), 1 / 3))
        fine = isinstance(value, torch.Tensor) and value.numel() == 1
    except Exception:  # the losses that want class indices raise several types
        fine = False
    if fine:
        return []
    return [f"{' and '.join(mixing)}: mixed batches have class probabilities as targets, which {name} does not take; "
            f"use {LABEL_SMOOTHING} or CrossEntropyLoss"]


def optimization_problems(config: Config) -> list[str]:
    """Every problem of the optimizer, lr_scheduler and loss_function keys and their parameters."""
    problems, optimizer = _optimizer_problems(config)
    return problems + _scheduler_problems(config, optimizer) + _loss_problems(config)
