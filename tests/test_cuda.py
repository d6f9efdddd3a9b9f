"""The CUDA group: train.py on a GPU in each speed setting, a resumed run, and evaluate.py, predict.py and
export_model.py with --device cuda against --device cpu, on generated Stanford-sized images at 227x227.

Marked cuda: skipped where torch can use no CUDA GPU (tests/conftest.py); on a GPU machine `pytest -m cuda`.
CARS_CUDA_TESTS_DEVICE=cpu runs the same bodies on the CPU to check the test code itself (a dry run; what only
CUDA can run, such as 16-mixed, is skipped there).
"""

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import Callback

import evaluate
import export_model
import predict
import train
from utils.runs.records import is_run_dir
from utils.runs.records import read_metrics

pytestmark = pytest.mark.cuda
ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "config_template.yml"
DEVICE = os.environ.get("CARS_CUDA_TESTS_DEVICE", "cuda")  # "cpu" only for a dry run of this file
ON_CUDA = DEVICE == "cuda"
ACCELERATOR = "gpu" if ON_CUDA else "cpu"
COMPARED = (("device", DEVICE), ("cpu", "cpu"))  # (file name, --device) of the after-training commands
RESUMED = "bf16_channels_last"  # the run resumed and then evaluated, predicted and exported
FAST = ["cache_images=true", "augmentation_device=gpu", "data_on_device=true", "validation_batch_size=64",
        "precision=bf16-mixed", "channels_last=true", "compile_model=true", "compile_mode=reduce-overhead",
        "cudnn_benchmark=true"]
SETTINGS = {
    "fp32": [],
    "cache": ["cache_images=true"],
    "cache_gpu_aug": ["cache_images=true", "augmentation_device=gpu"],
    "bf16_channels_last": ["precision=bf16-mixed", "channels_last=true"],
    "compile": ["compile_model=true"],
    "fp16": ["precision=16-mixed"],
    "fast": FAST,
}
OUTPUT_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


class Placement(Callback):
    """Where and how training runs: parameter devices, and the network's inputs and outputs in training steps."""

    def __init__(self):
        self.parameter_devices: set[str] = set()
        self.steps: list[tuple[str, torch.dtype, bool, torch.dtype]] = []  # input device, dtype, channels-last, output
        self.cudnn_benchmark: set[bool] = set()

    def on_fit_start(self, trainer, pl_module):
        # outside torch.compile's graph (a graph break), so it sees the real tensors and keeps none of them
        pl_module.network.register_forward_hook(torch.compiler.disable(self._record))

    def _record(self, module, inputs, output):
        if module.training and len(self.steps) < 4:
            images = inputs[0]
            self.steps.append((images.device.type, images.dtype,
                               images.is_contiguous(memory_format=torch.channels_last), output.dtype))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.parameter_devices |= {parameter.device.type for parameter in pl_module.parameters()}
        self.cudnn_benchmark.add(torch.backends.cudnn.benchmark)


@dataclass
class Run:
    code: int
    run_dir: Path
    placement: Placement
    settings: list = field(default_factory=list)


@pytest.fixture(scope="module")
def stanford(make_prepared):
    """6 classes, 16 generated Stanford-sized images each (480-900 px wide), about half of them validation."""
    return make_prepared("cuda_data", num_classes=6, images_per_class=16, min_width=480, max_width=900)


def args_for(data, folder, settings):
    base = ["image_size=[227, 227]", "num_epochs=2", "batch_size=16", "num_workers=4", f"accelerator={ACCELERATOR}",
            "log_to_tensorboard=false", f"output_path={folder / 'output'}", f"logging_dir={folder / 'logs'}",
            f"cache_path={folder / 'cache'}", *settings]
    return ["-c", str(TEMPLATE), "-d", str(data)] + [part for s in base for part in ("--set", s)]


@pytest.fixture(scope="module")
def trained(stanford, tmp_path_factory):
    """Trains a setting once per module (tests share its run): name -> Run."""
    runs: dict[str, Run] = {}

    def train_setting(name):
        if name not in runs:
            folder = tmp_path_factory.mktemp(f"cuda_{name}")
            placement = Placement()
            code = train.main(args_for(stanford, folder, SETTINGS[name]), extra_callbacks=[placement])
            run_dirs = [p for p in (folder / "output").iterdir() if is_run_dir(p)] if (folder / "output").is_dir() else []
            assert len(run_dirs) == 1, f"{name}: expected one run folder, found {run_dirs}"
            runs[name] = Run(code, run_dirs[0], placement, SETTINGS[name])
        return runs[name]

    return train_setting


def finite(rows, keys=("train_loss", "train_acc", "valid_loss", "valid_acc", "lr")):
    return all(math.isfinite(row[key]) for row in rows for key in keys)


def assert_trained_on_the_device(run, epochs):
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["state"] == "finished" and summary["epochs_run"] == epochs, summary.get("error")
    assert summary["device"]["type"] == DEVICE
    rows = read_metrics(run.run_dir)
    assert [row["epoch"] for row in rows] == list(range(1, epochs + 1)) and finite(rows)
    assert run.placement.parameter_devices == {DEVICE}
    precision = next((s.split("=", 1)[1] for s in run.settings if s.startswith("precision=")), "32")
    channels_last = "channels_last=true" in run.settings
    assert run.placement.steps, "no training step reached the network"
    assert run.placement.cudnn_benchmark == {ON_CUDA and "cudnn_benchmark=true" in run.settings}
    for device, dtype, is_channels_last, output_dtype in run.placement.steps:
        assert (device, dtype) == (DEVICE, torch.float32)
        assert is_channels_last or not channels_last
        assert output_dtype == OUTPUT_DTYPES.get(precision, torch.float32)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_training_runs_on_the_gpu(trained, name):
    if name == "fp16" and not ON_CUDA:
        pytest.skip("16-mixed (float16 autocast) needs CUDA")
    run = trained(name)
    assert run.code == 0
    assert_trained_on_the_device(run, epochs=2)


def test_a_resumed_run_goes_on_on_the_gpu(trained):
    run = trained(RESUMED)
    assert run.code == 0
    placement = Placement()
    assert train.main(["--resume", str(run.run_dir), "--set", "num_epochs=3"], extra_callbacks=[placement]) == 0
    assert_trained_on_the_device(Run(0, run.run_dir, placement, run.settings), epochs=3)
    assert len(json.loads((run.run_dir / "summary.json").read_text())["resumed"]) == 1


def script_output(script, argv, capsys):
    code = script.main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def predictions(path):
    """image file name -> (predicted class, its probability) of an evaluate.py --out file."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {row["image_fname"]: (row["predicted_class"], float(row["probability"])) for row in rows}


def top1(text):
    return float(re.search(r"top-1 accuracy: ([\d.]+)", text).group(1))


def assert_close_predictions(on_device, on_cpu):
    """Same classes but for at most one image (TF32 and kernel choice), probabilities within 0.02."""
    assert on_device.keys() == on_cpu.keys() and len(on_cpu) >= 40
    differing = [name for name in on_cpu if on_device[name][0] != on_cpu[name][0]]
    assert len(differing) <= 1, differing
    assert all(abs(on_device[name][1] - on_cpu[name][1]) <= 2e-2 for name in on_cpu if name not in differing)


def test_evaluate_on_the_gpu_agrees_with_the_cpu(trained, tmp_path, capsys):
    run = trained(RESUMED)
    outputs = {}
    for role, device in COMPARED:
        text = script_output(evaluate, [run.run_dir, "--device", device, "--out", tmp_path / f"{role}.csv"], capsys)
        outputs[role] = (top1(text), predictions(tmp_path / f"{role}.csv"))
    assert_close_predictions(outputs["device"][1], outputs["cpu"][1])
    assert abs(outputs["device"][0] - outputs["cpu"][0]) <= 1 / len(outputs["cpu"][1]) + 1e-4


def printed_predictions(text, images):
    """image name -> (class, probability) of the first line of each predict.py block."""
    found = re.findall(r"^(\S+)\n  1\.\s+([\d.]+)%  .* \(class (\d+)\)$", text, flags=re.MULTILINE)
    assert len(found) == len(images)
    return {Path(path).name: (cls, float(probability) / 100) for path, probability, cls in found}


def test_predict_on_the_gpu_agrees_with_the_cpu(trained, stanford, capsys):
    run = trained(RESUMED)
    images = sorted((stanford / "test").iterdir())
    printed = {role: printed_predictions(script_output(predict, [run.run_dir, *images, "--top", 1, "--device", device],
                                                       capsys), images)
               for role, device in COMPARED}
    assert_close_predictions(printed["device"], printed["cpu"])


def test_export_checks_against_pytorch_on_the_gpu(trained, tmp_path, capsys):
    run = trained(RESUMED)
    for role, device in COMPARED:
        out = script_output(export_model, [run.run_dir, "--format", "onnx", "--out", tmp_path / f"{role}.onnx",
                                           "--device", device], capsys)
        assert re.search(r"max \|exported - PyTorch on (cpu|cuda:\d \(.+\))\| = \S+ \(tolerance 0\.0001\) OK", out)
        shown = r"cuda:\d \(.+\)" if device == "cuda" else r"CPU \(\d+ threads?\)"
        assert re.search(rf"PyTorch on {shown} [\d.]+ ms, onnx on CPU", out), out
    assert (tmp_path / "device.onnx").read_bytes() == (tmp_path / "cpu.onnx").read_bytes()
