"""Export of a trained network to ONNX (torch.onnx's dynamo exporter) or a torch.export program (.pt2), with an
output check against PyTorch and latency timings.

The file is always exported from a CPU copy (it runs anywhere); the PyTorch reference outputs and latency come from
the chosen device, on CUDA in full float32 (TF32 off) so that the check's tolerance keeps its meaning.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.export_formats import FORMATS, ExportError
from models.latency import REPEATS, WARMUP, Latency, clock_for, clock_name, medians_in_turns
from models.onnx_graph import means_to_global_pools
from utils.output_files import new_file_problems

TOLERANCE = 1e-4
INPUT_NAME, OUTPUT_NAME = "images", "logits"
ONNX_OPSET = 18            # what the dynamo exporter writes natively; onnxruntime runs it from 1.14 on
EXPORT_REQUIREMENTS = "export_requirements.txt"
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript", "onnx_ir")
MAX_BATCH = 4096


@dataclass
class ExportReport:
    """What export_model wrote and measured."""

    model_path: Path
    metadata_path: Path
    size_bytes: int
    max_abs_difference: float
    tolerance: float
    checked_images: int
    latency: Latency | None             # None when export_model was asked for no timed calls
    device: str                         # where the PyTorch reference and latency ran, e.g. "cpu", "cuda:0 (H100)"


def metadata_path_for(model_path: str | os.PathLike) -> Path:
    """The JSON written beside an exported model: its file name + .json (model.onnx -> model.onnx.json)."""
    path = Path(model_path)
    return path.with_name(path.name + ".json")


def install_command() -> str:
    """The pip command that installs the export requirements into the running interpreter's environment."""
    requirements = Path(__file__).resolve().parents[1] / EXPORT_REQUIREMENTS
    return f"{sys.executable} -m pip install -r {requirements}"


def missing_onnx_package() -> str | None:
    """The first ONNX export package that cannot be imported, or None."""
    for name in ONNX_PACKAGES:
        try:
            __import__(name)
        except ImportError:
            return name
    return None


def onnx_packages_problem() -> str | None:
    """Why ONNX export or int8 quantization cannot run here (a package missing, with the command that installs
    it), or None."""
    missing = missing_onnx_package()
    if missing is None:
        return None
    return (f"ONNX export needs the packages of {EXPORT_REQUIREMENTS} (onnx, onnxruntime, onnxscript, onnx-ir; "
            f"missing: {missing.replace('_', '-')}); install them with: {install_command()}")


def onnx_session(path: str | os.PathLike, threads: int = 0) -> Any:
    """An onnxruntime CPU session of a model file; `threads` intra-op threads (0: onnxruntime's choice)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_opset(path: str | os.PathLike) -> int:
    """The default-domain opset an ONNX file declares."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def batch_dimension() -> Any:
    """The dynamic batch axis of both exporters (named 'batch' in the ONNX graph)."""
    return torch.export.Dim("batch", min=1, max=MAX_BATCH)


def example_batch(check_images: torch.Tensor) -> torch.Tensor:
    """Two images of the checked shape: a batch of 1 would let torch.export fix the batch axis at 1."""
    return check_images[:1].expand(2, *check_images.shape[1:]).contiguous()


def export_onnx(network: nn.Module, path: str | os.PathLike,
                example: torch.Tensor) -> Callable[[np.ndarray], np.ndarray]:
    """Write one self-contained ONNX file (opset ONNX_OPSET, dynamic batch axis) with torch.onnx's dynamo
    exporter, its spatial means as GlobalAveragePool (models.onnx_graph); return a runner of it on onnxruntime's
    CPU provider with PyTorch's number of CPU threads (export_problems checks its packages first)."""
    import onnx

    program = torch.onnx.export(network, (example,), dynamo=True, opset_version=ONNX_OPSET,
                                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                dynamic_shapes=({0: batch_dimension()},), verbose=False)
    model = program.model_proto
    means_to_global_pools(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    session = onnx_session(path, torch.get_num_threads())
    return lambda images: session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def export_pt2(network: nn.Module, path: str | os.PathLike,
               example: torch.Tensor) -> Callable[[np.ndarray], np.ndarray]:
    """Write a torch.export program with a dynamic batch axis; return a runner of the file reloaded from disk."""
    program = torch.export.export(network, (example,), dynamic_shapes=({0: batch_dimension()},))
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(images)).numpy()

    return run


@contextmanager
def tf32_disabled() -> Iterator[None]:
    """Full float32 CUDA convolutions and matrix products inside the block (TF32 off); restores the settings after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def device_name(device: torch.device) -> str:
    """'cpu', or 'cuda:0 (NVIDIA H100 80GB HBM3)' for a CUDA device."""
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def reference_outputs(network: nn.Module, images: torch.Tensor, device: torch.device) -> np.ndarray:
    """The network's float32 outputs for images computed on device (TF32 off on CUDA), as a CPU array."""
    with torch.no_grad(), tf32_disabled():
        return network(images.to(device)).float().cpu().numpy()


def measure_latency(network: nn.Module, runner: Callable[[np.ndarray], np.ndarray], image: torch.Tensor,
                    device: torch.device, repeats: int = REPEATS, warmup: int = WARMUP) -> Latency:
    """Batch-1 latency of the network on `device` and of the export's runner on the CPU, both with PyTorch's number
    of CPU threads, called in turns; the clock is the calling thread's CPU time for one CPU thread, else wall time
    (waiting for CUDA to finish each call)."""
    threads, clock = torch.get_num_threads(), clock_for(torch.get_num_threads(), device.type == "cpu")
    on_device, on_cpu = image.to(device), image.cpu().numpy()

    def pytorch() -> None:
        network(on_device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.no_grad():
        medians = medians_in_turns({"pytorch": pytorch, "exported": lambda: runner(on_cpu)}, repeats, warmup, clock)
    return Latency(medians["pytorch"], medians["exported"], device_name(device), threads, repeats, warmup,
                   clock_name(clock))


def float32_rounding(network: nn.Module, images: torch.Tensor, outputs: np.ndarray) -> float:
    """How far the network's own float32 CPU outputs are from exact (float64) arithmetic on the same images."""
    exact = copy.deepcopy(network).cpu().double()
    with torch.no_grad():
        return float(np.abs(exact(images.cpu().double()).numpy() - outputs).max()) if outputs.size else 0.0


def check_tolerance(network: nn.Module, images: torch.Tensor, tolerance: float = TOLERANCE) -> float:
    """The check's tolerance: `tolerance`, or twice PyTorch's own float32 rounding on these images when that is
    larger (deep random-weight networks, whose exports differ from PyTorch by rounding alone)."""
    with torch.no_grad():
        outputs = network.cpu()(images.cpu()).numpy()
    return max(tolerance, 2 * float32_rounding(network, images, outputs))


def output_problem(expected: np.ndarray, actual: np.ndarray, tolerance: float = TOLERANCE) -> tuple[float, str | None]:
    """(max absolute difference, problem text or None) between PyTorch and exported outputs."""
    if expected.shape != actual.shape:
        return float("inf"), f"output shape {actual.shape} differs from PyTorch's {expected.shape}"
    difference = float(np.abs(expected - actual).max()) if expected.size else 0.0
    if not difference <= tolerance:
        return difference, f"outputs differ from PyTorch's by up to {difference:.3g} (tolerance {tolerance:g})"
    return difference, None


def export_problems(model_path: str | os.PathLike, fmt: str, force: bool = False,
                    protected: Iterable[Path] = ()) -> list[str]:
    """Problems with exporting to the model file and its JSON, found before any work: existing without `force`, a
    folder, a protected file, a name ending in another format's extension, or (ONNX) an export package missing."""
    protected = list(protected)
    problems = [problem for path in (Path(model_path), metadata_path_for(model_path))
                for problem in new_file_problems(path, force, protected)]
    suffix = Path(model_path).suffix.lower()
    other = [name for name, extension in FORMATS.items() if extension == suffix and name != fmt]
    if other:
        problems.append(f"{model_path}: {suffix} is the {other[0]} extension; a {fmt} export should end in "
                        f"{FORMATS[fmt]}")
    packages = onnx_packages_problem() if fmt == "onnx" else None
    return problems + [packages] if packages else problems


def unchecked_path(model_path: Path) -> Path:
    """Where a new export waits for its check: NAME.unchecked.EXT beside the target."""
    return model_path.with_name(f"{model_path.stem}.unchecked{model_path.suffix}")


def put_in_place(unchecked: Path, model_path: Path, fmt: str, metadata: Mapping[str, Any]) -> Path:
    """Move a checked export to its target and write its JSON beside it (the old JSON removed first, so a model
    never sits beside another model's JSON); return the JSON's path."""
    metadata_path = metadata_path_for(model_path)
    metadata_path.unlink(missing_ok=True)
    os.replace(unchecked, model_path)
    record = {"format": fmt, "model_file": model_path.name, **metadata}
    if fmt == "onnx":
        record["opset"] = onnx_opset(model_path)
    metadata_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return metadata_path


def export_model(network: nn.Module, model_path: str | os.PathLike, fmt: str, check_images: torch.Tensor,
                 metadata: Mapping[str, Any], force: bool = False, tolerance: float = TOLERANCE,
                 latency_repeats: int = REPEATS, device: str | torch.device = "cpu") -> ExportReport:
    """Export from a CPU copy, write the metadata JSON beside the model, check outputs on `check_images` against
    PyTorch's on `device` (within `tolerance`, or twice PyTorch's own float32 rounding when larger), and time
    `latency_repeats` batch-1 calls of each (PyTorch on `device`, the export on the CPU; none with 0)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    problems = export_problems(model_path, fmt, force)
    if problems:
        raise ExportError("; ".join(problems))
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    network = network.cpu().eval()
    reference = network if device.type == "cpu" else copy.deepcopy(network).to(device)
    check_images = check_images.cpu().float()
    exporter = export_onnx if fmt == "onnx" else export_pt2
    unchecked = unchecked_path(model_path)
    runner = exporter(network, unchecked, example_batch(check_images))
    expected, actual = reference_outputs(reference, check_images, device), runner(check_images.numpy())
    difference, problem = output_problem(expected, actual, tolerance)
    if problem:                         # a float64 run tells whether float32 rounding alone explains it
        tolerance = check_tolerance(network, check_images, tolerance)
        difference, problem = output_problem(expected, actual, tolerance)
    if problem:
        raise ExportError(f"{model_path}: {problem} (PyTorch on {device_name(device)}); the export is kept for "
                          f"inspection as {unchecked}, {model_path} and its JSON are unchanged")
    metadata_path = put_in_place(unchecked, model_path, fmt, metadata)
    latency = measure_latency(reference, runner, check_images[:1], device, latency_repeats) if latency_repeats else None
    return ExportReport(model_path=model_path, metadata_path=metadata_path, size_bytes=model_path.stat().st_size,
                        max_abs_difference=difference, tolerance=tolerance, checked_images=len(check_images),
                        latency=latency, device=device_name(device))
