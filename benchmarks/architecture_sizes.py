"""Parameters, multiply-adds and CPU latency of every arch_dict entry: `python -m benchmarks.architecture_sizes`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch import nn

from models.arch_dict import arch_dict, build_network
from models.export import median_latency_ms
from models.sizes import count_multiply_adds, count_parameters, image_hw


def cpu_latency_ms(network: nn.Module, image_size: int | Sequence[int], img_channels: int = 3,
                   repeats: int = 5) -> float:
    """Median CPU forward time of one image in milliseconds, after one warm-up pass."""
    network.eval()
    image = torch.rand(1, img_channels, *image_hw(image_size))
    with torch.no_grad():
        return median_latency_ms(lambda: network(image), repeats, warmup=1)


def summary_rows(image_size: int, num_classes: int, img_channels: int = 3, output_channels: int = 320,
                 keys: Sequence[str] | None = None, repeats: int = 5) -> list[tuple[str, float, float, float]]:
    """(key, params M, multiply-adds M, CPU latency ms) for the given arch_dict entries (default: all)."""
    rows = []
    for key in keys or list(arch_dict):
        network = build_network(key, num_classes, img_channels, output_channels=output_channels)
        rows.append((key, count_parameters(network) / 1e6,
                     count_multiply_adds(network, image_size, img_channels) / 1e6,
                     cpu_latency_ms(network, image_size, img_channels, repeats)))
    return rows


def format_table(rows: list[tuple[str, float, float, float]]) -> str:
    """Markdown table of summary rows."""
    lines = ["| architecture | params (M) | multiply-adds (M) | CPU latency (ms) |", "|---|---:|---:|---:|"]
    lines += [f"| {key} | {params:.2f} | {macs:.0f} | {latency:.1f} |" for key, params, macs, latency in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the summary table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image-size", type=int, default=227, help="square input size in pixels")
    parser.add_argument("--num-classes", type=int, default=196, help="classifier outputs")
    parser.add_argument("--img-channels", type=int, default=3, choices=(1, 3), help="input channels")
    parser.add_argument("--output-channels", type=int, default=320, help="GhostNet head width")
    parser.add_argument("--architectures", nargs="+", choices=list(arch_dict), default=None,
                        help="arch_dict keys to show (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes per network")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.image_size}x{args.image_size}, {args.img_channels} channel(s), {args.num_classes} classes, "
          f"GhostNet output_channels={args.output_channels}, {torch.get_num_threads()} CPU threads")
    rows = summary_rows(args.image_size, args.num_classes, args.img_channels, args.output_channels,
                        args.architectures, args.repeats)
    print(format_table(rows))


if __name__ == "__main__":
    main()
