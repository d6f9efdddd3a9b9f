"""Host time of one training step outside the network: Lightning's loop, the metrics and logging, AdamW.

On a fast GPU the host must issue each step's work sooner than the GPU runs it (about 14 ms a step for C-50's
GhostNet at batch 64 with CUDA graphs on an H100), or the GPU waits. This measures the part of the host's time that
does not depend on the network: a linear layer (8 -> 196 classes) stands in for it, on the CPU, so almost all of a
step is Python and dispatch. Compared, on the same batches:

- a plain PyTorch loop (forward, label-smoothing loss, backward, AdamW step): the floor;
- ``ClassifierModule`` under ``pl.Trainer`` as train.py runs it (metrics updated every step, logged once an epoch);
- the same with ``self.log`` called every step for loss, accuracy and lr (how ClassifierModule logged before).

    python -m benchmarks.host_overhead [--steps 400] [--rounds 5] [--batch-size 64]

Reported: median ms per step over the rounds (each round a one-epoch fit of --steps batches).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from models.classifier_module import ClassifierModule
from training.trainer import quiet_lightning

NUM_CLASSES = 196
OPTIMIZER_PARAMS = {"lr": 0.001, "weight_decay": 0.6}


class PerStepLogging(ClassifierModule):
    """ClassifierModule as it logged before: self.log of loss, accuracy and lr in every training step."""

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        loss = self.criterion(logits, targets)
        self.train_acc(logits, targets)
        size = len(targets)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=size)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=False, on_epoch=True,
                 batch_size=size)
        return loss


class Batches:
    """The same prepared batches every epoch (a loader with nothing to load)."""

    def __init__(self, steps: int, batch_size: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.batches = [(torch.randn(batch_size, 8, generator=generator),
                         torch.randint(0, NUM_CLASSES, (batch_size,), generator=generator)) for _ in range(steps)]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.batches)


def plain_loop(batches: Batches) -> float:
    """Seconds per step of the loop without Lightning."""
    network = nn.Linear(8, NUM_CLASSES)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    optimizer = torch.optim.AdamW(network.parameters(), **OPTIMIZER_PARAMS)
    start = time.perf_counter()
    for images, targets in batches:
        loss = criterion(network(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / len(batches)


def lightning_fit(module_class: type[ClassifierModule], batches: Batches) -> float:
    """Seconds per step of a one-epoch fit of module_class around the same linear layer."""
    module = module_class(nn.Linear(8, NUM_CLASSES), NUM_CLASSES, optimizer="AdamW",
                          optimizer_params=OPTIMIZER_PARAMS)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=batches)
    return (time.perf_counter() - start) / len(batches)


def measure(steps: int, batch_size: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per step of each loop, one list of rounds per loop, on one thread."""
    torch.set_num_threads(1)
    batches = Batches(steps, batch_size)
    timings: dict[str, list[float]] = {"plain PyTorch loop": [], "ClassifierModule (metrics logged once an epoch)": [],
                                       "self.log every step (before)": []}
    for _ in range(rounds):
        timings["plain PyTorch loop"].append(plain_loop(batches))
        timings["ClassifierModule (metrics logged once an epoch)"].append(lightning_fit(ClassifierModule, batches))
        timings["self.log every step (before)"].append(lightning_fit(PerStepLogging, batches))
    return timings


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    with quiet_lightning():  # and as it was after: main() runs in-process too (the tests)
        timings = measure(args.steps, args.batch_size, args.rounds)
    floor = statistics.median(timings["plain PyTorch loop"])
    print(f"torch {torch.__version__}, Lightning {pl.__version__}, {args.steps} steps of batch {args.batch_size}, "
          f"median of {args.rounds} rounds, 1 thread\n")
    print("| loop | ms/step | over the plain loop, ms |\n|---|---:|---:|")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"| {name} | {median * 1e3:.2f} | {(median - floor) * 1e3:.2f} |")


if __name__ == "__main__":
    main()
