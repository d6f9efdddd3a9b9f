"""Which device a run trains on: the settings that ask for a CUDA GPU, whether torch can use one, and why not."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import torch

logger = logging.getLogger(__name__)

CUDA_ACCELERATORS = ("gpu", "cuda")
FP16_PRECISIONS = (16, "16", "16-mixed")  # float16 autocast: Lightning replaces it with bfloat16 on the CPU
CPU_SETTING = {"accelerator": "accelerator: cpu", "devices": "devices: 1 (or another count of CPU processes)",
               "precision": "precision: bf16-mixed or 32"}
COLAB_ADVICE = ("On Colab: keep Colab's preinstalled torch and torchvision (do not install the pinned ones over them; "
                "train_colab.ipynb installs the other requirements only; if they were replaced, use Runtime > "
                "Disconnect and delete runtime) and pick a GPU runtime (Runtime > Change runtime type > GPU).")


def cuda_requests(config: Any) -> dict[str, str]:
    """{key: shown value} of the settings (a Config's accelerator, devices, precision) that ask for a CUDA GPU;
    with accelerator auto, GPU indices and fp16."""
    accelerator = config.accelerator
    if accelerator in CUDA_ACCELERATORS:
        return {"accelerator": accelerator}
    if accelerator != "auto":
        return {}
    requests = {}
    devices = config.devices
    if isinstance(devices, list) or (isinstance(devices, str) and "," in devices):
        requests["devices"] = f"{devices} (GPU indices)"
    if config.precision in FP16_PRECISIONS:
        requests["precision"] = f"{config.precision} (float16 mixed precision runs on CUDA GPUs)"
    return requests


def cuda_status() -> tuple[bool, str]:
    """(whether torch can use a CUDA GPU, why not: torch's own warning or error text when it gives one)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        return True, ""
    reasons = [str(warning.message) for warning in caught]
    if reasons:
        return False, " ".join(reasons)
    if torch.version.cuda is None:
        return False, "this torch build has no CUDA support (a CPU-only build)"
    try:  # torch warns only at the first check of a process; initialising CUDA says why every time
        torch.cuda.init()
    except Exception as error:  # RuntimeError, or AssertionError from torch's own checks
        return False, str(error)
    return False, "torch.cuda.is_available() is False and torch gives no reason"


def torch_build() -> str:
    """'torch 2.14.1+cu130, built for CUDA 13.0': the installed torch and the CUDA version it was built for."""
    return f"torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none (a CPU-only build)'}"


def cuda_device_line() -> str:
    """'GPU: <name of CUDA device 0> (<torch build>)', for a machine where cuda_status() found one."""
    return f"GPU: {torch.cuda.get_device_name(0)} ({torch_build()})"


def cuda_unavailable_message(requests: Mapping[str, str], reason: str) -> str:
    """The one explanation of a CUDA request on a machine where torch can use no CUDA GPU."""
    asked = " and ".join(f"{key}: {value}" for key, value in requests.items())
    cpu_settings = " and ".join(CPU_SETTING[key] for key in requests)
    verb = "asks" if len(requests) == 1 else "ask"
    return (f"{asked} {verb} for a CUDA GPU, but torch can use no CUDA GPU on this machine.\n"
            f"    Reason: {reason}\n"
            f"    Installed: {torch_build()}.\n"
            f"    {COLAB_ADVICE}\n"
            "    Locally: install a torch build that matches the NVIDIA driver (nvidia-smi shows the newest CUDA "
            f"it supports; https://pytorch.org/get-started/locally/), or set {cpu_settings} to train on the CPU.")


def cuda_problems(config: Any) -> list[str]:
    """One problem when the config asks for a CUDA GPU (cuda_requests) and torch can use none; never a silent
    CPU run."""
    requests = cuda_requests(config)
    if not requests:
        return []
    available, reason = cuda_status()
    return [] if available else [cuda_unavailable_message(requests, reason)]


def resolve_accelerator(config: Any) -> str:
    """'auto' becomes CUDA when available, else CPU with a warning; a CUDA request without CUDA raises RuntimeError."""
    problems = cuda_problems(config)
    if problems:
        raise RuntimeError(problems[0])
    accelerator = config.accelerator
    if accelerator != "auto":
        return accelerator
    if torch.cuda.is_available():
        return "cuda"
    logger.warning("CUDA is not available: training on the CPU, which is slow for full-size runs")
    return "cpu"


def device_problem(text: str) -> str | None:
    """Why `--device TEXT` cannot run here (not a torch device, CUDA unusable, no such GPU), or None."""
    try:
        device = torch.device(text)
    except RuntimeError:
        return f"--device {text!r}: not a torch device (e.g. cpu, cuda, cuda:1)"
    if device.type == "mps":
        return None if torch.backends.mps.is_available() else f"--device {text}: MPS is not available; use --device cpu"
    if device.type != "cuda":
        return None if device.type == "cpu" else f"--device {text}: expected cpu, cuda, cuda:N or mps"
    available, reason = cuda_status()
    if not available:
        return (f"--device {text}: torch can use no CUDA GPU on this machine ({reason}; {torch_build()}); "
                "use --device cpu")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        return f"--device {text}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
    return None
