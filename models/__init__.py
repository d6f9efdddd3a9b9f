"""Networks a config can name, their builders, size counters and the model config checks."""

from collections.abc import Mapping
from typing import Any

from models.arch_dict import arch_dict, architecture_problems, build_network
from models.sizes import count_multiply_adds, count_parameters


def config_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Problems with the architecture keys and the optimizer / lr_scheduler / loss keys."""
    from models.optimization import optimization_problems

    return architecture_problems(cfg) + optimization_problems(cfg)


__all__ = ["arch_dict", "architecture_problems", "build_network", "config_problems",
           "count_multiply_adds", "count_parameters"]
