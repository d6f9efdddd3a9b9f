"""Networks a config can name, their builders, size counters and the model config checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from utils.config import Config


def config_problems(config: Config) -> list[str]:
    """Problems with the architecture keys and the optimizer / lr_scheduler / loss keys."""
    from models.arch_dict import architecture_problems
    from models.optimization import optimization_problems

    channels = 1 if config.convert_to_grayscale else 3
    return architecture_problems(config.architecture, config.image_size, config.pretrained_weights,
                                 config.output_channels, channels) + optimization_problems(config)
