"""The LightningModule that trains any arch_dict network with the optimizer, scheduler and loss named in the config,
and the training options: warmup, MixUp/CutMix, two learning rates (backbone and head), a frozen backbone."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.optim import lr_scheduler as schedulers
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from models.fine_tuning import build_grouped_optimizer, group_learning_rates, set_backbone_trainable
from models.optimization import LABEL_SMOOTHING, build_loss, build_lr_schedulers, build_optimizer
from models.resume_state import ResumeStateError, take_training_state
from utils.checkpoint_safety import CheckpointError

logger = logging.getLogger(__name__)


def batch_mixer(num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> nn.Module | None:
    """torchvision's MixUp and/or CutMix of whole batches (one of the two, drawn per batch, when both are on):
    images mixed with their neighbour in the (shuffled) batch, targets as class probabilities; None when off."""
    from torchvision.transforms import v2

    mixers = [v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)] if mixup_alpha > 0 else []
    mixers += [v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)] if cutmix_alpha > 0 else []
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def hard_targets(targets: torch.Tensor) -> torch.Tensor:
    """Class indices of targets: soft targets (class probabilities) by their largest share."""
    return targets.argmax(dim=1) if targets.dim() == 2 else targets


class ClassifierModule(pl.LightningModule):
    """Trains a classification network; logs loss, top-1 (and validation top-5) accuracy and lr per epoch."""

    def __init__(self, network: nn.Module, num_classes: int, optimizer: str = "AdamW",
                 optimizer_params: Mapping[str, Any] | None = None, lr_scheduler: str | None = None,
                 lr_scheduler_params: Mapping[str, Any] | None = None,
                 loss_function: str = LABEL_SMOOTHING, loss_params: Mapping[str, Any] | None = None,
                 channels_last: bool = False, warmup_epochs: int = 0, warmup_start_factor: float = 0.1,
                 mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, backbone_lr_scale: float = 1.0,
                 freeze_backbone_epochs: int = 0):
        super().__init__()
        self.save_hyperparameters(ignore=["network"], logger=False)
        self.channels_last = channels_last
        self.network = network.to(memory_format=torch.channels_last) if channels_last else network
        self.criterion = build_loss(loss_function, loss_params)  # class indices or probabilities (mixed batches)
        self.mixer = batch_mixer(num_classes, mixup_alpha, cutmix_alpha)
        # validate_args=False: the checks of class indices copy them to the host, a GPU sync every step
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro", validate_args=False)
        # nan_strategy="disable": a NaN loss shows as a NaN mean; the checks would copy to the host every step
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.valid_acc = MulticlassAccuracy(num_classes=num_classes, average="micro", validate_args=False)
        self.valid_acc_top5 = MulticlassAccuracy(num_classes=num_classes, top_k=min(5, num_classes),
                                                 average="micro", validate_args=False)
        self._resumed_checkpoint: dict[str, Any] | None = None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """On resume: keep the checkpoint to take its training state from once the optimizers exist (now, where
        the strategy restores checkpoints after building them)."""
        self._resumed_checkpoint = checkpoint
        if self._trainer is not None and self.trainer.optimizers:
            self.on_fit_start()

    def on_fit_start(self) -> None:
        """On resume, before Lightning restores the optimizers and schedulers: the configuration's optimizer and
        schedulers with the checkpoint's counters and tensors only; one line names the settings that differ."""
        checkpoint, self._resumed_checkpoint = self._resumed_checkpoint, None
        if checkpoint is None:
            return
        path = self.trainer.ckpt_path
        schedulers_built = [config.scheduler for config in self.trainer.lr_scheduler_configs]
        try:
            differences = take_training_state(checkpoint, self.trainer.optimizers, schedulers_built)
        except ResumeStateError as error:
            raise CheckpointError(f"{path}: {error}") from None
        if differences and self.trainer.is_global_zero:
            logger.warning("%s: the checkpoint's settings differ from the run's configuration, which wins: %s",
                           path, "; ".join(differences))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.network(images)

    def on_train_epoch_start(self) -> None:
        """freeze_backbone_epochs: only the head trains in the first epochs (decided by the epoch alone, so a resumed
        run freezes or not as an uninterrupted one)."""
        if self.hparams.freeze_backbone_epochs:
            set_backbone_trainable(self.network, self.current_epoch >= self.hparams.freeze_backbone_epochs)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        if self.mixer is not None:
            images, targets = self.mixer(images, targets)  # targets become class probabilities [batch, classes]
        logits = self(images)
        loss = self.criterion(logits, targets)
        # The metrics accumulate every step and go to self.log once, at the epoch's last batch: Lightning's logging
        # costs the host about 0.5 ms a call and step (benchmarks/host_overhead.py), time a fast GPU waits for.
        self.train_loss.update(loss.detach().expand(len(targets)))  # per image; a Python weight is a host copy
        self.train_acc.update(logits, hard_targets(targets))  # of mixed images: their larger share's class
        if self.trainer.is_last_batch:
            self.log("train_loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
            self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
            for name, lr in group_learning_rates(self.trainer.optimizers[0]).items():  # equal on every rank: their
                self.log(name, lr, on_step=False, on_epoch=True, sync_dist=True)  # mean, without Lightning's warning
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
        build = partial(build_optimizer, hp.optimizer, params=hp.optimizer_params)
        if hp.backbone_lr_scale != 1.0:
            optimizer = build_grouped_optimizer(build, self.network, hp.backbone_lr_scale)
        else:
            optimizer = build(self.parameters())
        built = build_lr_schedulers(optimizer, hp.lr_scheduler, hp.lr_scheduler_params, hp.warmup_epochs,
                                    hp.warmup_start_factor)
        if not built:
            return optimizer
        configs = []
        for scheduler in built:
            config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch", "frequency": 1}
            if isinstance(scheduler, schedulers.ReduceLROnPlateau):
                config["monitor"] = "valid_loss"
            configs.append(config)
        if len(configs) == 1:
            return {"optimizer": optimizer, "lr_scheduler": configs[0]}
        return [optimizer], configs
