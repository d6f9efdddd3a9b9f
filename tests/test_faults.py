"""Faults leave clear state: a run stopped by SIGTERM says so and how to resume it; a full disk leaves no partial
checkpoint and records which file could not be written; two runs creating one MLflow store both get their runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import train
from tests.test_checkpoint_safety import TEMPLATE
from utils.checkpoint_safety import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(make_prepared):
    return make_prepared("faults_data", num_classes=3, images_per_class=8, min_width=40, max_width=64)


def train_args(data: Path, folder: Path, *settings: str) -> list[str]:
    args = ["-c", str(TEMPLATE), "-d", str(data)]
    for setting in ["image_size=[32, 32]", "batch_size=4", "num_workers=0", "output_channels=64", "accelerator=cpu",
                    f"output_path={folder / 'output'}", f"logging_dir={folder / 'logs'}", "log_to_mlflow=false",
                    "log_to_tensorboard=false", *settings]:
        args += ["--set", setting]
    return args


def wait_for(condition, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.05)


def test_sigterm_stops_the_run_with_a_resume_command_and_a_non_zero_status(data, tmp_path):
    command = [sys.executable, "train.py", *train_args(data, tmp_path, "num_epochs=500")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    output = tmp_path / "output"
    wait_for(lambda: any(output.glob("*/last.ckpt")), process)
    (run_dir,) = [path for path in output.iterdir() if path.is_dir()]
    wait_for(lambda: '"epochs_run": 2' in (run_dir / "summary.json").read_text(), process)
    process.send_signal(signal.SIGTERM)
    _, error = process.communicate(timeout=300)
    assert process.returncode == 143
    resume = f"python train.py --resume {run_dir}"
    lines = [line for line in error.splitlines() if "stopped by SIGTERM" in line]
    assert lines == [f"run {run_dir} stopped by SIGTERM; its last.ckpt keeps the last finished epoch. Resume it "
                     f"with: {resume}"]
    assert "Traceback" not in error and "SIGTERMException" not in error
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "interrupted" and summary["stop_reason"] == "SIGTERM" and "error" not in summary
    done = load_checkpoint(run_dir / "last.ckpt")["epoch"] + 1
    assert train.main([*resume.split()[2:], "--set", f"num_epochs={done + 1}"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "finished" and summary["epochs_run"] == done + 1
