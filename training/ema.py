"""ema_decay: an exponential moving average of the weights, on Lightning's WeightAveraging.

Lightning's callback keeps the averaged copy, validates it (swapping it in for each validation), puts it in the
checkpoints' ``state_dict`` (the raw weights in ``current_model_state``, so a resumed run continues from them) and
leaves it in the module after training. This subclass changes three things, each found on short runs:

- the decay is warmed up, ``min(decay, (1 + t) / (10 + t))`` after t updates: with a constant decay the average of
  a short run is mostly its random start, and its averaged BatchNorm statistics do not fit its averaged weights
  (the constant-decay average validated at chance for 20 epochs of a digits run, docs/recipes.md);
- the average lives on the training device (Lightning takes the module's device when the callback is set up,
  before the Trainer moves the module there);
- one update is a few foreach kernels with the decay computed on the host from a Python counter, so it never waits
  for the device (torch's ``AveragedModel.update_parameters`` reads its counter back twice a step).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging

WARMUP_OFFSET = 10  # the warmed-up decay is (1 + t) / (10 + t): 0.1 at the first update, 0.99 after 891


def warmed_up_decay(decay: float, updates: int) -> float:
    """The decay of the update after `updates` earlier ones."""
    return min(decay, (1 + updates) / (WARMUP_OFFSET + updates))


class ExponentialMovingAverage(WeightAveraging):
    """EMA of parameters and buffers (BatchNorm statistics) after every optimizer step, decay warmed up."""

    def __init__(self, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1), got {decay}")
        super().__init__(use_buffers=True)
        self.decay = decay
        self._pairs: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._device = trainer.strategy.root_device
        super().setup(trainer, pl_module, stage)

    def _tensor_pairs(self, pl_module: pl.LightningModule) -> tuple[list[torch.Tensor], ...]:
        """(averaged floats, current floats, averaged others, current others), in the module's order."""
        if self._pairs is None:
            module = self._average_model.module
            averaged = [*module.parameters(), *module.buffers()]
            current = [*pl_module.parameters(), *pl_module.buffers()]
            floating = [i for i, tensor in enumerate(averaged) if tensor.is_floating_point()]
            others = [i for i, tensor in enumerate(averaged) if not tensor.is_floating_point()]
            self._pairs = ([averaged[i].detach() for i in floating], [current[i].detach() for i in floating],
                           [averaged[i].detach() for i in others], [current[i].detach() for i in others])
        return self._pairs

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """After each optimizer step (every accumulate_grad_batches batches): average = lerp(average, weights,
        1 - decay); integer buffers (BatchNorm's batch counts) are copied."""
        if trainer.global_step <= self._latest_update_step:
            return
        updates = self._latest_update_step  # one update per optimizer step so far
        averaged, current, averaged_others, current_others = self._tensor_pairs(pl_module)
        with torch.no_grad():
            if updates == 0:
                torch._foreach_copy_(averaged, current)
            else:
                torch._foreach_lerp_(averaged, current, 1.0 - warmed_up_decay(self.decay, updates))
            if averaged_others:
                torch._foreach_copy_(averaged_others, current_others)
            self._average_model.n_averaged.add_(1)
        self._latest_update_step = trainer.global_step
