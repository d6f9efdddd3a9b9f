"""What a mobile developer picks a network by, for every arch_dict entry: parameters, multiply-adds, PyTorch CPU
latency, and the ONNX file's size and onnxruntime CPU latency in fp32 and int8.

    python -m benchmarks.deploy [--image-size 227] [--num-classes 196] [--architectures KEY ...] [--threads 1]
                                [--repeats 30] [--calibration-images 32] [--work DIR]

Each network is built with random weights (sizes and latency do not depend on the weights); its BatchNorm
statistics are settled on generated images so that activations have realistic ranges, then it is exported with
models.export (dynamo ONNX, checked against PyTorch) and quantized to int8 with models.quantization, calibrated on
seeded random-noise images (not photos: this table's int8 column is about size and speed, not accuracy).
Latency: batch 1, median of --repeats calls after warm-up calls, --threads intra-op threads. With one thread
(the default) PyTorch and onnxruntime compute on the calling thread and the figure is that thread's CPU time, which
other jobs on a shared machine do not inflate (on an idle machine it equals wall time); with more threads it is
wall time.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
from torch import nn

from benchmarks import cpu_model
from benchmarks.epoch_time import cpu_pressure, machine
from models.arch_dict import arch_dict, build_network
from models.export import export_model, onnx_packages_problem
from models.latency import clock_for, median_latency_ms
from models.quantization import compare_models, quantize_int8
from models.sizes import count_multiply_adds, count_parameters

MEAN, STD = 0.46, 0.26            # about the Stanford Cars training images' per-channel figures
SETTLING_BATCHES, SETTLING_SIZE = 3, 4


@dataclass
class Row:
    """One table row: one architecture's figures."""

    key: str
    parameters: int
    multiply_adds: int
    pytorch_ms: float
    fp32_bytes: int
    int8_bytes: int
    fp32_ms: float
    int8_ms: float


def generated_images(count: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """Seeded uniform-noise images, normalised as the training images are."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(count, channels, size, size, generator=generator) - MEAN) / STD


def settled_network(key: str, num_classes: int, channels: int, output_channels: int, size: int) -> nn.Module:
    """A randomly initialised network whose BatchNorm running statistics come from generated images, in eval mode."""
    torch.manual_seed(0)
    network = build_network(key, num_classes, channels, output_channels=output_channels)
    norms = [module for module in network.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None                                  # a plain average over the settling batches
    network.train()
    with torch.no_grad():
        for batch in range(SETTLING_BATCHES):
            network(generated_images(SETTLING_SIZE, channels, size, seed=100 + batch))
    return network.eval()


def measure(key: str, args: argparse.Namespace, work: Path) -> Row:
    """Export, quantize and time one architecture."""
    channels, size, clock = args.img_channels, args.image_size, clock_for(args.threads)
    network = settled_network(key, args.num_classes, channels, args.output_channels, size)
    image = generated_images(1, channels, size, seed=1)
    with torch.no_grad():
        pytorch_ms = median_latency_ms(lambda: network(image), args.repeats, warmup=3, clock=clock)
    fp32, int8 = work / f"{key}.onnx", work / f"{key}.int8.onnx"
    export_model(network, fp32, "onnx", generated_images(2, channels, size, seed=2), {"architecture": key},
                 force=True, latency_repeats=0)
    calibration = generated_images(args.calibration_images, channels, size, seed=3).numpy()
    quantize_int8(fp32, int8, (calibration[i:i + 1] for i in range(len(calibration))))
    figures = compare_models({"fp32": fp32, "int8": int8}, image.numpy(), threads=(args.threads,),
                             repeats=args.repeats, clock=clock)
    return Row(key, count_parameters(network), count_multiply_adds(network, size, channels), pytorch_ms,
               figures["fp32"].size_bytes, figures["int8"].size_bytes, figures["fp32"].latency_ms[args.threads],
               figures["int8"].latency_ms[args.threads])


HEADER = ("| architecture | params (M) | multiply-adds (M) | PyTorch (ms) | ONNX fp32 (MB) | ONNX int8 (MB) | "
          "fp32 (ms) | int8 (ms) | int8 speed-up |")


def format_row(row: Row) -> str:
    """One Markdown table line."""
    return (f"| {row.key} | {row.parameters / 1e6:.2f} | {row.multiply_adds / 1e6:.0f} | {row.pytorch_ms:.1f} | "
            f"{row.fp32_bytes / 1e6:.1f} | {row.int8_bytes / 1e6:.1f} | {row.fp32_ms:.2f} | {row.int8_ms:.2f} | "
            f"{row.fp32_ms / row.int8_ms:.2f}x |")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=227, help="square input size in pixels (default 227)")
    parser.add_argument("--num-classes", type=int, default=196, help="classifier outputs (default 196)")
    parser.add_argument("--img-channels", type=int, default=3, choices=(1, 3), help="input channels")
    parser.add_argument("--output-channels", type=int, default=320, help="GhostNet head width (default 320)")
    parser.add_argument("--architectures", nargs="+", choices=list(arch_dict), default=list(arch_dict),
                        metavar="KEY", help="arch_dict keys (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of PyTorch and onnxruntime (default 1)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per model (default 30)")
    parser.add_argument("--calibration-images", type=int, default=32, help="generated images for int8 (default 32)")
    parser.add_argument("--work", type=Path,
                        help="new or empty folder to keep the exported files in (default: a temporary one)")
    args = parser.parse_args(argv)
    for name in ("image_size", "num_classes", "threads", "repeats", "calibration_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: need at least 1")
    if args.work is not None and args.work.exists() and (not args.work.is_dir() or any(args.work.iterdir())):
        parser.error(f"--work {args.work}: not a new or empty folder (the exports are written there)")
    problem = onnx_packages_problem()
    if problem:
        parser.error(problem)
    return args


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Print the table, one row as each architecture is measured; return its rows."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import onnxruntime

    print(f"Machine: {cpu_model()}; {machine()}; onnxruntime {onnxruntime.__version__}; date "
          f"{date.today().isoformat()}")
    print(f"{args.image_size}x{args.image_size}, {args.img_channels} channel(s), {args.num_classes} classes, GhostNet "
          f"output_channels={args.output_channels}; batch 1, {args.threads} thread(s), median of {args.repeats} "
          f"calls ({'CPU time of the calling thread' if args.threads == 1 else 'wall time'}); int8 calibrated on "
          f"{args.calibration_images} generated images\n", flush=True)
    print(HEADER)
    print("|---|" + "---:|" * 8, flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        for key in args.architectures:
            rows.append(measure(key, args, work))
            print(format_row(rows[-1]), flush=True)
    print(f"\nCPU pressure from other load (60 s average at the end): {cpu_pressure()}")
    return rows


if __name__ == "__main__":
    main()
