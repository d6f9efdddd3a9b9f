"""The LightningModule that trains any arch_dict network with the optimizer, scheduler and loss named in the config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.optim import lr_scheduler as schedulers
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from models.optimization import LABEL_SMOOTHING, build_loss, build_optimizer, build_scheduler


class ClassifierModule(pl.LightningModule):
    """Trains a classification network; logs loss, top-1 (and validation top-5) accuracy and lr per epoch."""

    def __init__(self, network: nn.Module, num_classes: int, optimizer: str = "AdamW",
                 optimizer_params: Mapping[str, Any] | None = None, lr_scheduler: str | None = None,
                 lr_scheduler_params: Mapping[str, Any] | None = None,
                 loss_function: str = LABEL_SMOOTHING, loss_params: Mapping[str, Any] | None = None,
                 channels_last: bool = False):
        super().__init__()
        self.save_hyperparameters(ignore=["network"], logger=False)
        self.channels_last = channels_last
        self.network = network.to(memory_format=torch.channels_last) if channels_last else network
        self.criterion = build_loss(loss_function, loss_params)
        # validate_args=False: the checks of class indices copy them to the host, a GPU sync every step
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro", validate_args=False)
        # nan_strategy="disable": a NaN loss shows as a NaN mean; the checks would copy to the host every step
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.valid_acc = MulticlassAccuracy(num_classes=num_classes, average="micro", validate_args=False)
        self.valid_acc_top5 = MulticlassAccuracy(num_classes=num_classes, top_k=min(5, num_classes),
                                                 average="micro", validate_args=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.network(images)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        loss = self.criterion(logits, targets)
        # The metrics accumulate every step and go to self.log once, at the epoch's last batch: Lightning's logging
        # costs the host about 0.5 ms a call and step (benchmarks/host_overhead.py), time a fast GPU waits for.
        self.train_loss.update(loss.detach().expand(len(targets)))  # per image; a Python weight is a host copy
        self.train_acc.update(logits, targets)
        if self.trainer.is_last_batch:
            self.log("train_loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
            self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
            self.log("lr", float(self.trainer.optimizers[0].param_groups[0]["lr"]), on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, targets = batch
        logits = self(images)
        loss = self.criterion(logits, targets)
        self.valid_acc(logits, targets)
        self.valid_acc_top5(logits, targets)
        size = len(targets)
        self.log("valid_loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=size)
        self.log("valid_acc", self.valid_acc, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("valid_acc_top5", self.valid_acc_top5, on_epoch=True, batch_size=size)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = build_optimizer(hp.optimizer, self.parameters(), hp.optimizer_params)
        if hp.lr_scheduler is None:
            return optimizer
        scheduler = build_scheduler(hp.lr_scheduler, optimizer, hp.lr_scheduler_params)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch", "frequency": 1}
        if isinstance(scheduler, schedulers.ReduceLROnPlateau):
            config["monitor"] = "valid_loss"
        return {"optimizer": optimizer, "lr_scheduler": config}
