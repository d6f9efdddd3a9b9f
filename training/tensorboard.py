"""TensorBoard events of a run, under its folder."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only


class RunTensorBoardLogger(TensorBoardLogger):
    """TensorBoardLogger that ignores empty hyper-parameter sets (Lightning's own, as modules log theirs
    with logger=False), so the run's parameters stay those shown in TensorBoard's HPARAMS tab."""

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: Mapping[str, Any] | None = None, step: int | None = None) -> None:
        if params:
            super().log_hyperparams(params, metrics, step)
