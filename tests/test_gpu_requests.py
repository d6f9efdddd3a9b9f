"""A run that asks for a CUDA GPU where torch can use none stops before any work with one explanation (exit 2);
evaluate.py, predict.py and export_model.py refuse --device cuda the same way."""

import warnings
from dataclasses import replace

import pytest
import torch

import evaluate
import export_model
import predict
import train
from utils.config import Config
from utils.devices import cuda_problems, cuda_requests, resolve_accelerator

from tests.test_speed_precision import args_for, speed_prepared  # noqa: F401 (a fixture)

DRIVER_TOO_OLD = ("CUDA initialization: The NVIDIA driver on your system is too old (found version 11040). Please "
                  "update your GPU driver by downloading and installing a new version from the URL: "
                  "http://www.nvidia.com/Download/index.aspx Alternatively, go to: https://pytorch.org to install a "
                  "PyTorch version that has been compiled with your version of the CUDA driver.")
pytestmark = pytest.mark.filterwarnings("ignore:CUDA initialization:UserWarning")  # the patched check's warning
no_cuda_here = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a usable CUDA GPU")


@pytest.fixture
def old_driver(monkeypatch):
    """torch.cuda.is_available() as on a machine whose NVIDIA driver is older than the CUDA torch was built for."""

    def is_available():
        warnings.warn(DRIVER_TOO_OLD, UserWarning)
        return False

    monkeypatch.setattr(torch.cuda, "is_available", is_available)


def refused(speed_prepared, tmp_path, capsys, *settings):
    """train.py's exit status and stderr for settings; nothing may have been written."""
    code = train.main(args_for(speed_prepared, tmp_path, *settings))
    err = capsys.readouterr().err
    assert not (tmp_path / "output").exists() or not any((tmp_path / "output").iterdir())
    return code, err


def assert_explains(err, request):
    assert "1 configuration problem:" in err
    assert f"  - {request} for a CUDA GPU, but torch can use no CUDA GPU on this machine." in err
    assert f"Installed: torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}" in err
    assert "On Colab: keep Colab's preinstalled torch and torchvision" in err
    assert "Runtime > Change runtime type > GPU" in err and "install a torch build that matches" in err
    assert "No supported gpu backend" not in err and "can not run on your system" not in err


@no_cuda_here
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_accelerator_without_cuda_stops_with_the_reason(speed_prepared, tmp_path, capsys, accelerator):
    code, err = refused(speed_prepared, tmp_path, capsys, f"accelerator={accelerator}")
    assert code == 2
    assert_explains(err, f"--set accelerator={accelerator}: {accelerator} asks")  # named by the option as typed
    assert "Reason: " in err and "set accelerator: cpu to train on the CPU" in err


def test_an_old_driver_is_named_with_torch_and_its_cuda_version(speed_prepared, tmp_path, capsys, old_driver):
    code, err = refused(speed_prepared, tmp_path, capsys, "accelerator=gpu")
    assert code == 2
    assert_explains(err, "--set accelerator=gpu: gpu asks")
    assert f"Reason: {DRIVER_TOO_OLD}" in err and "found version 11040" in err


def test_gpu_indices_and_fp16_with_accelerator_auto_ask_for_cuda(speed_prepared, tmp_path, capsys, old_driver):
    code, err = refused(speed_prepared, tmp_path, capsys, "accelerator=auto", "devices=[0, 1]",
                        "precision=16-mixed")
    assert code == 2
    assert_explains(err, "--set devices=[0, 1]: [0, 1] (GPU indices) and precision: 16-mixed (float16 mixed precision runs on "
                         "CUDA GPUs) ask")
    assert "set devices: 1 (or another count of CPU processes) and precision: bf16-mixed or 32" in err


def test_what_asks_for_cuda():
    base = Config(accelerator="auto", devices=1, precision=32)
    assert cuda_requests(base) == {}
    assert cuda_requests(replace(base, precision="bf16-mixed", devices=2)) == {}
    assert cuda_requests(replace(base, accelerator="gpu", precision="16-mixed")) == {"accelerator": "gpu"}
    assert cuda_requests(replace(base, accelerator="cpu", precision="16-mixed", devices=[0])) == {}
    assert list(cuda_requests(replace(base, devices="0,1"))) == ["devices"]
    assert list(cuda_requests(replace(base, precision=16))) == ["precision"]


def test_auto_falls_back_to_the_cpu_and_a_gpu_request_never_does(old_driver, caplog):
    cfg = Config(accelerator="auto", devices=1, precision="bf16-mixed")
    assert cuda_problems(cfg) == []
    assert resolve_accelerator(cfg) == "cpu" and "training on the CPU" in caplog.text
    with pytest.raises(RuntimeError, match="(?s)accelerator: cuda asks for a CUDA GPU.*found version 11040"):
        resolve_accelerator(replace(cfg, accelerator="cuda"))


@pytest.mark.parametrize("script, extra", [(evaluate, []), (predict, ["photo.jpg"]),
                                           (export_model, ["--format", "onnx"])])
def test_device_cuda_is_refused_with_the_reason(script, extra, capsys, old_driver):
    with pytest.raises(SystemExit) as exited:
        script.main(["some_run", *extra, "--device", "cuda"])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert f"--device cuda: torch can use no CUDA GPU on this machine ({DRIVER_TOO_OLD}; torch {torch.__version__}" \
           in err and "use --device cpu" in err


@pytest.mark.parametrize("script, extra", [(evaluate, []), (predict, ["photo.jpg"]),
                                           (export_model, ["--format", "onnx"])])
def test_device_must_be_a_torch_device(script, extra, capsys):
    for device, message in (("banana", "not a torch device"), ("meta", "expected cpu, cuda, cuda:N or mps")):
        with pytest.raises(SystemExit) as exited:
            script.main(["some_run", *extra, "--device", device])
        assert exited.value.code == 2 and message in capsys.readouterr().err
