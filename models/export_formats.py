"""The export formats and quantizations export_model.py offers, and the error of an export: no torch here, so that
its arguments and the run's files are checked before torch is imported."""

from __future__ import annotations

FORMATS = {"onnx": ".onnx", "pt2": ".pt2"}
QUANTIZATIONS = ("int8",)


class ExportError(RuntimeError):
    """An export that cannot be written or whose outputs do not match PyTorch's."""
