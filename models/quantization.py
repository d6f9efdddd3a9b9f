"""Static int8 quantization of an exported ONNX model with onnxruntime, and the fp32/int8 comparison (size, latency,
top-1) a deployment is chosen by.

The recipe is onnxruntime's recommended one for CNNs on CPUs: shape inference and graph optimisation
(``quant_pre_process``), then ``quantize_static`` in the QDQ format with per-channel int8 weights, uint8 activations
and min/max ranges seen on calibration images. The node that writes the logits keeps a float output, so a logit
larger than any seen in calibration is not clipped.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.export import (INPUT_NAME, OUTPUT_NAME, ExportError, ExportReport, export_model, onnx_session,
                           export_problems, put_in_place, unchecked_path)
from models.export_formats import QUANTIZATIONS
from models.latency import medians_in_turns

LATENCY_THREADS = (1, 2)


def output_op_types(model_path: str | os.PathLike) -> list[str]:
    """Op types of the nodes that write the graph's outputs (the logits), e.g. ['Gemm']."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    outputs = {output.name for output in model.graph.output}
    return sorted({node.op_type for node in model.graph.node if outputs.intersection(node.output)})


def quantize_int8(fp32_path: str | os.PathLike, int8_path: str | os.PathLike,
                  calibration: Iterable[np.ndarray]) -> int:
    """Write the int8 (QDQ, per-channel) model of `fp32_path` calibrated on `calibration` (float32 batches
    [B, C, H, W] as the model takes them); return the number of calibration images."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self, batches: Iterator[np.ndarray]) -> None:
            self.batches, self.images = batches, 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.images += len(batch)
            return {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}

    reader = Batches(iter(calibration))
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(str(prepared), str(int8_path), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"OpTypesToExcludeOutputQuantization": output_op_types(prepared)})
    return reader.images


def onnx_latency_ms(paths: Mapping[str, str | os.PathLike], image: np.ndarray, threads: int, repeats: int = 50,
                    warmup: int = 5, clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median time by `clock` of one onnxruntime CPU call on `image` (a batch) with `threads` intra-op threads,
    per model file, the models called in turns (models.latency.medians_in_turns)."""
    feed = {INPUT_NAME: np.ascontiguousarray(image, dtype=np.float32)}
    sessions = {name: onnx_session(path, threads) for name, path in paths.items()}
    calls = {name: (lambda session=session: session.run([OUTPUT_NAME], feed)) for name, session in sessions.items()}
    return medians_in_turns(calls, repeats, warmup, clock)


@dataclass
class ModelFigures:
    """What a deployment is chosen by, for one model file."""

    size_bytes: int
    latency_ms: dict[int, float]        # threads -> median batch-1 ms
    top1: float | None                  # on the evaluation images, None when none were given
    agreement: float | None             # share of evaluation images given the first model's top-1 class
    evaluated_images: int


def top1_counts(paths: Mapping[str, str | os.PathLike], batches: Iterable[tuple[np.ndarray, np.ndarray]]
                ) -> tuple[dict[str, int], dict[str, int], int]:
    """(correct top-1 predictions, predictions equal to the first model's, images) of each model file over
    (images, labels) batches."""
    sessions = {name: onnx_session(path) for name, path in paths.items()}
    correct, agreeing, images = dict.fromkeys(paths, 0), dict.fromkeys(paths, 0), 0
    for batch, labels in batches:
        feed = {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}
        predicted = {name: session.run([OUTPUT_NAME], feed)[0].argmax(axis=1) for name, session in sessions.items()}
        first = next(iter(predicted.values()))
        for name, classes in predicted.items():
            correct[name] += int((classes == labels).sum())
            agreeing[name] += int((classes == first).sum())
        images += len(labels)
    return correct, agreeing, images


def compare_models(paths: Mapping[str, str | os.PathLike], image: np.ndarray,
                   batches: Iterable[tuple[np.ndarray, np.ndarray]] | None = None,
                   threads: Iterable[int] = LATENCY_THREADS, repeats: int = 50,
                   clock: Callable[[], float] = time.perf_counter) -> dict[str, ModelFigures]:
    """Size, median batch-1 latency (by `clock`) per thread count and, with `batches`, top-1 of each model file
    and its agreement with the first."""
    correct, agreeing, images = top1_counts(paths, batches) if batches is not None else ({}, {}, 0)
    latency: dict[str, dict[int, float]] = {name: {} for name in paths}
    for count in threads:
        for name, ms in onnx_latency_ms(paths, image, count, repeats, clock=clock).items():
            latency[name][count] = ms
    return {name: ModelFigures(Path(path).stat().st_size, latency[name],
                               correct[name] / images if images else None,
                               agreeing[name] / images if images else None, images)
            for name, path in paths.items()}


def accuracy_drop_points(figures: Mapping[str, ModelFigures], reference: str = "fp32",
                         candidate: str = "int8") -> float:
    """How many percentage points of top-1 the candidate loses against the reference (negative: it gains)."""
    return 100 * figures[reference].top1 - 100 * figures[candidate].top1


def figures_table(figures: Mapping[str, ModelFigures]) -> list[str]:
    """The side-by-side table of compare_models' figures, as text lines."""
    names = list(figures)
    rows: list[tuple[str, list[str]]] = [("size (MB)", [f"{figures[n].size_bytes / 1e6:.2f}" for n in names])]
    for count in next(iter(figures.values())).latency_ms:
        label = f"latency, batch 1, {count} thread{'' if count == 1 else 's'} (ms)"
        rows.append((label, [f"{figures[n].latency_ms[count]:.2f}" for n in names]))
    if all(figures[n].top1 is not None for n in names):
        label = f"top-1 on {figures[names[0]].evaluated_images} validation images"
        rows.append((label, [f"{figures[n].top1:.4f}" for n in names]))
        rows.append((f"same top-1 class as {names[0]}", [f"{figures[n].agreement:.4f}" for n in names]))
    width = max(len(label) for label, _ in rows)
    lines = [f"{'':{width}}  " + "  ".join(f"{name:>8}" for name in names)]
    lines += [f"{label:{width}}  " + "  ".join(f"{value:>8}" for value in values) for label, values in rows]
    return lines


def figures_record(figures: Mapping[str, ModelFigures]) -> dict[str, Any]:
    """The figures as plain values for the model's JSON."""
    return {name: {"size_bytes": item.size_bytes, "top1": item.top1, "same_top1_as_first": item.agreement,
                   "evaluated_images": item.evaluated_images,
                   "latency_ms_batch1": {str(count): round(ms, 3) for count, ms in item.latency_ms.items()}}
            for name, item in figures.items()}


@dataclass
class Int8Export:
    """What export_int8 measured, and whether it wrote the model."""

    fp32: ExportReport                  # the checked float export the int8 model is made from (not kept)
    figures: dict[str, ModelFigures]    # "fp32" and "int8"
    calibration_images: int
    drop_points: float
    max_drop_points: float
    model_path: Path
    written: bool


def export_int8(network: Any, model_path: str | os.PathLike, check_images: Any, metadata: Mapping[str, Any],
                calibration: Iterable[np.ndarray], evaluation: Iterable[tuple[np.ndarray, np.ndarray]],
                max_drop_points: float = 1.0, force: bool = False, device: str = "cpu") -> Int8Export:
    """Export the network to ONNX (checked against PyTorch), quantize it to int8 on the calibration batches,
    compare both on the evaluation batches; write the int8 model and its JSON only when top-1 drops by at most
    `max_drop_points` percentage points, or with `force`."""
    model_path = Path(model_path)
    problems = export_problems(model_path, "onnx", force)
    if problems:
        raise ExportError("; ".join(problems))
    model_path.parent.mkdir(parents=True, exist_ok=True)
    unchecked = unchecked_path(model_path)
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / "model.onnx"
        report = export_model(network, fp32, "onnx", check_images, metadata, device=device, latency_repeats=0)
        try:
            count = quantize_int8(fp32, unchecked, calibration)
            figures = compare_models({"fp32": fp32, "int8": unchecked}, check_images[:1].cpu().float().numpy(),
                                     evaluation)
        except BaseException:
            unchecked.unlink(missing_ok=True)
            raise
    drop = accuracy_drop_points(figures)
    result = Int8Export(report, figures, count, drop, max_drop_points, model_path, written=False)
    if drop > max_drop_points and not force:
        unchecked.unlink()
        return result
    record = {**metadata, "quantization": {
        "type": "int8", "method": "onnxruntime quantize_static: QDQ, per-channel int8 weights, uint8 activations, "
                                  "min/max calibration; the logits stay float",
        "calibration_images": count, "top1_drop_points": round(drop, 4), **figures_record(figures)}}
    put_in_place(unchecked, model_path, "onnx", record)
    result.written = True
    return result
