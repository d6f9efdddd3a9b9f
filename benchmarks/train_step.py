"""Training-step throughput of our GhostNet beside timm's ghostnet_100 (AdamW, synthetic batch).

Usage: python -m benchmarks.train_step [--device cuda] [--bf16] [--channels-last] [--threads 2]
Prints a markdown table: model, parameters (M), training images/s (batch size / median step time).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from models.arch_dict import build_network
from models.sizes import count_parameters


def timm_ghostnet(num_classes: int) -> nn.Module:
    """timm's ghostnet_100 (random init), the reference implementation to compare with."""
    import timm

    return timm.create_model("ghostnet_100", pretrained=False, num_classes=num_classes)


def contenders(num_classes: int) -> dict[str, Callable[[], nn.Module]]:
    """Name -> builder of every network the benchmark times."""
    return {
        "ours ghost, output_channels=320": lambda: build_network("ghost", num_classes, output_channels=320),
        "ours ghost, output_channels=1280": lambda: build_network("ghost", num_classes, output_channels=1280),
        "timm ghostnet_100": lambda: timm_ghostnet(num_classes),
    }


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that timings are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trainer:
    """One network with its AdamW optimizer and a fixed synthetic batch; times single training steps."""

    def __init__(self, network: nn.Module, args: argparse.Namespace, device: torch.device):
        memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        self.network = network.to(device, memory_format=memory_format).train()
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=1e-3)
        self.loss_function = nn.CrossEntropyLoss()
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator)
        self.images = images.to(device, memory_format=memory_format)
        self.labels = torch.randint(0, args.num_classes, (args.batch_size,), generator=generator).to(device)
        self.device = device
        self.bf16 = args.bf16

    def step(self) -> float:
        """Run one training step and return its duration in seconds."""
        synchronize(self.device)
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.loss_function(self.network(self.images), self.labels)
        loss.backward()
        self.optimizer.step()
        synchronize(self.device)
        return time.perf_counter() - start


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=227)
    parser.add_argument("--num-classes", type=int, default=196)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model before timing")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the models take turns each round")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Time every contender and print the table."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    trainers = {name: Trainer(build(), args, device) for name, build in contenders(args.num_classes).items()}
    step_times: dict[str, list[float]] = {name: [] for name in trainers}
    for trainer in trainers.values():
        for _ in range(args.warmup):
            trainer.step()
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            step_times[name] += [trainer.step() for _ in range(args.steps)]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"{where}; {platform.processor() or platform.machine()}; torch {torch.__version__}; batch "
          f"{args.batch_size}, {args.image_size}x{args.image_size}, {args.num_classes} classes, AdamW, "
          f"bf16={args.bf16}, channels_last={args.channels_last}; "
          f"median step of {args.rounds} interleaved rounds x {args.steps} steps")
    print("| model | params (M) | train images/s |\n|---|---:|---:|")
    for name, trainer in trainers.items():
        speed = args.batch_size / statistics.median(step_times[name])
        print(f"| {name} | {count_parameters(trainer.network) / 1e6:.2f} | {speed:.1f} |")


if __name__ == "__main__":
    main()
