"""Faults leave clear state: a run stopped by SIGTERM says so and how to resume it; a full disk leaves no partial
checkpoint and records which file could not be written; two runs creating one MLflow store both get their runs."""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import train
from fit_probes import fit_env, held
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
    gate = tmp_path / "fit_probes"
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=fit_env(gate, hold_after=2))
    wait_for(lambda: held(gate), process)
    (run_dir,) = held(gate).values()
    assert '"epochs_run": 2' in (run_dir / "summary.json").read_text()
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


RACER = """
import os, sys, time
from utils.mlflow.store import open_experiment, start_run
import mlflow  # imported before the start line, so that both processes reach the store together
uri, start = sys.argv[1], sys.argv[2]
while not os.path.exists(start):
    time.sleep(0.001)
client, experiment_id = open_experiment(uri, "cars")
print(start_run(client, experiment_id, {"process": str(os.getpid())}))
"""


def test_two_runs_creating_one_mlflow_store_at_once_both_get_their_runs(tmp_path):
    """Without the store lock, 5 of 5 tries lost one run ("duplicate column name: step")."""
    from utils.mlflow.store import mlflow_client

    start, folders = tmp_path / "start", [tmp_path / f"output{index}" for index in range(2)]
    processes = [subprocess.Popen([sys.executable, "-c", RACER, f"sqlite:///{folder / 'mlflow.db'}", str(start)],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for folder in folders for _ in range(2)]
    time.sleep(10)  # both have imported mlflow
    start.touch()
    results = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, [error[-2000:] for _, error in results]
    for folder in folders:
        client = mlflow_client(f"sqlite:///{folder / 'mlflow.db'}")
        (experiment,) = [found for found in client.search_experiments() if found.name == "cars"]
        assert len(client.search_runs([experiment.experiment_id])) == 2
        assert sorted(path.name for path in folder.iterdir()) == ["mlflow.db"]  # no lock file left


def test_a_damaged_study_storage_is_named_with_what_to_do_and_check_opens_it(data, tmp_path, capsys):
    import optuna
    import yaml

    import sweep

    base = {"config": str(TEMPLATE), "overrides": {"stanford_data_path": str(data), "output_path": str(tmp_path),
                                                   "image_size": [32, 32], "output_channels": 64}}
    study_file = tmp_path / "tiny.yml"
    study_file.write_text(yaml.safe_dump({"name": "tiny", "base": base, "runs": [{"id": "A"}]}), encoding="utf-8")
    assert sweep.main([str(study_file), "--check"]) == 0
    storage = tmp_path / "tiny" / "optuna.db"
    assert f"its storage sqlite:///{storage} will be created" in capsys.readouterr().out
    assert not (tmp_path / "tiny").exists()  # --check creates nothing
    storage.parent.mkdir()
    study = optuna.create_study(study_name="tiny", storage=f"sqlite:///{storage}")
    for index in range(30):  # a storage of a few pages, as a study's runs fill it
        study.enqueue_trial({"index": index}, user_attrs={"note": "x" * 2000})
    assert sweep.main([str(study_file), "--check"]) == 0
    assert f"its storage sqlite:///{storage} opens and holds study tiny" in capsys.readouterr().out
    storage.write_bytes(storage.read_bytes()[:40_000])  # truncated, as a full disk or a killed copy leaves it
    damaged = storage.read_bytes()
    for argv in ([str(study_file)], ["--report", str(study_file)], [str(study_file), "--check"]):
        assert sweep.main(argv) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"{storage}: the study's storage is damaged (") and "Traceback" not in error
        assert f"move it aside (mv {storage} {storage}.damaged) and run the command again" in error
        assert storage.read_bytes() == damaged and sorted(path.name for path in storage.parent.iterdir()) == [
            "optuna.db"]


@contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of this size mounted on folder (root only; skipped clearly elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("disk full: needs root to mount a small tmpfs (mount -t tmpfs); not run as root")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"disk full: cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_full_disk_leaves_no_partial_checkpoint_and_records_the_file(data, tmp_path, capsys):
    """Before: a 30 MB partial best.ckpt that did not load, summary.json left `running`, training going on, and four
    tracebacks with a message naming no file. A checkpoint here is 33 MB: the disk holds the two of epoch 1."""
    with small_disk(tmp_path / "disk", "80m") as disk:
        code = train.main(train_args(data, disk, "num_epochs=4", "log_to_mlflow=true"))
        error = capsys.readouterr().err
        (run_dir,) = [path for path in (disk / "output").iterdir() if (path / "summary.json").is_file()]
        assert code == 1 and "Traceback" not in error, error[-3000:]
        (line,) = [line for line in error.splitlines() if line.startswith("run failed: ")]
        assert f"run failed: {run_dir}/" in line and ".ckpt: could not be written (No space left on device" in line
        assert not list(disk.rglob("*.partial"))
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["state"] == "failed" and "could not be written (No space left on device" in summary["error"]
        assert summary["error"].startswith(f"FileWriteError: {run_dir}/")
        for name in ("best.ckpt", "last.ckpt"):  # the epoch-1 checkpoints survive, whole
            assert load_checkpoint(run_dir / name)["epoch"] == 0
