"""End to end: synthetic raw files -> prepared data -> train.py runs (records, TensorBoard, Neptune offline,
seeds, interruption and resume (one MLflow run), DDP on two CPU processes, config errors)."""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from models.arch_dict import build_network
from models.classifier_module import ClassifierModule
from models.sizes import count_parameters
from utils.checkpoint_safety import load_checkpoint
from utils.runs.folders import announced_run_folders
from utils.runs.records import is_run_dir, read_metrics
from utils.runs.seeds import seeds_to_run
from utils.timing import log_execution_time

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "config_template.yml"
TOKEN = "SECRET-TOKEN-do-not-write-me"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids OpenMP spinning when the test machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prepared(make_prepared):
    return make_prepared("training_data", num_classes=4, images_per_class=10, min_width=40, max_width=64)


def base_args(prepared, tmp_path, epochs=2, mlflow=False):
    """A tiny run of the template; MLflow only where a test reads it (a new store costs seconds)."""
    settings = ["image_size=[32, 32]", f"num_epochs={epochs}", "batch_size=8", "num_workers=0",
                "output_channels=64", f"output_path={tmp_path / 'output'}", f"logging_dir={tmp_path / 'logs'}",
                f"log_to_mlflow={str(mlflow).lower()}"]
    args = ["-c", str(TEMPLATE), "-d", str(prepared)]
    for setting in settings:
        args += ["--set", setting]
    return args


def run_dirs(tmp_path):
    return sorted(path for path in (tmp_path / "output").iterdir() if is_run_dir(path))


def neptune_store(directory: Path) -> tuple[dict, dict]:
    """Assigned values and appended series of the offline run under directory/offline/."""
    (run_folder,) = (directory / "offline").iterdir()
    values, series = {}, {}
    for line in (run_folder / "data-1.log").read_text().splitlines():
        operation = json.loads(line)["obj"]
        path = "/".join(operation["path"])
        if "value" in operation:
            values[path] = operation["value"]
        elif operation["type"] == "AddStrings":
            values[path] = operation["values"]
        elif operation["type"] == "LogFloats":
            series.setdefault(path, []).extend((item["step"], item["value"]) for item in operation["values"])
    return values, series


def test_run_records_tensorboard_and_neptune_agree(prepared, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEPTUNE_API_TOKEN", TOKEN)
    monkeypatch.setenv("NEPTUNE_DATA_DIRECTORY", str(tmp_path / "neptune"))
    args = base_args(prepared, tmp_path) + [
        "--set", "log_to_neptune=true", "--set", "neptune_username=me", "--set", "neptune_project_name=cars",
        "--set", "neptune_mode=offline", "--set", "tags=[smoke, C-50]", "--set", "description=tiny run"]
    assert train.main(args) == 0

    (run_dir,) = run_dirs(tmp_path)
    assert re.fullmatch(r"ghost_\d{8}-\d{6}", run_dir.name)
    rows = read_metrics(run_dir)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert list(rows[0]) == ["epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "valid_acc_top5", "lr"]

    summary = json.loads((run_dir / "summary.json").read_text())
    network = build_network("ghost", 4, 3, dropout=0.2, output_channels=64)
    assert summary["state"] == "finished" and summary["stop_reason"] == "max_epochs"
    assert summary["epochs_run"] == 2 and summary["last"] == rows[-1]
    best = min(rows, key=lambda row: row["valid_loss"])
    assert summary["best"] == best
    assert summary["parameters"] == count_parameters(network) and summary["multiply_adds"] > 0
    assert summary["runtime"] == "local" and summary["seed"] == 42 and summary["device"]["type"] == "cpu"
    assert summary["tags"] == ["smoke", "C-50"] and summary["description"] == "tiny run"
    assert summary["duration_s"] > 0 and "started" in summary and "git_commit" in summary

    best_ckpt, last_ckpt = (load_checkpoint(run_dir / name) for name in ("best.ckpt", "last.ckpt"))  # weights_only
    assert best_ckpt["epoch"] == best["epoch"] - 1 and last_ckpt["epoch"] == 1
    checkpoint_state = next(v for k, v in last_ckpt["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert float(checkpoint_state["best_model_score"]) == pytest.approx(best["valid_loss"])
    ClassifierModule.load_from_checkpoint(run_dir / "best.ckpt", network=network)

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    logged = [event.value for event in events.Scalars("valid_loss")]
    assert logged == pytest.approx([row["valid_loss"] for row in rows])
    assert [event.value for event in events.Scalars("lr")] == pytest.approx([row["lr"] for row in rows])
    assert events.Scalars("best_valid_acc")[-1].value == pytest.approx(summary["best_valid_acc"]["value"])
    hparams = (run_dir / "tensorboard" / "hparams.yaml").read_text()
    assert "architecture: ghost" in hparams and "optimizer_params.weight_decay: 0.6" in hparams

    values, series = neptune_store(tmp_path / "neptune")
    assert values["parameters/architecture"] == "ghost" and values["parameters/optimizer_params/lr"] == 0.001
    assert values["parameters/parameters"] == summary["parameters"] and values["parameters/runtime"] == "local"
    assert values["parameters/lr_scheduler_params/milestones"] == "[67, 82, 95, 107]"
    assert sorted(values["sys/tags"]) == ["C-50", "smoke"] and values["sys/description"] == "tiny run"
    assert series["metrics/valid_acc"] == [(0, rows[0]["valid_acc"]), (1, rows[1]["valid_acc"])]
    assert values["summary/epochs_last"] == 2 and values["summary/stop_reason"] == "max_epochs"
    assert values["summary/valid_loss_min"] == pytest.approx(best["valid_loss"])

    written = [p for p in [*run_dir.rglob("*"), *(tmp_path / "neptune").rglob("*"), *(tmp_path / "logs").rglob("*")]
               if p.is_file()]
    assert all(TOKEN.encode() not in path.read_bytes() for path in written)
    (log_file,) = (tmp_path / "logs").iterdir()
    log_text = log_file.read_text()
    assert re.fullmatch(r"\d{8}\.log", log_file.name)
    assert "epoch 2 took" in log_text
    # Lightning's INFO lines (devices, the model summary, once) in the log file only; its adverts nowhere
    assert "GPU available: False" in log_text and log_text.count("Total params") == 1 and "Tip" not in log_text
    console = capsys.readouterr().err
    assert "epoch 2 took" in console and "run finished" in console
    for noise in ("GPU available", "Total params", "Tip", "preparing data took", "Creating initial MLflow database",
                  "Experiment with name"):
        assert noise not in console, noise


def test_a_quick_step_is_timed_at_debug_only(caplog):
    caplog.set_level(logging.DEBUG, logger="utils.timing")
    with log_execution_time("reading labels", quiet_below_s=60):
        pass
    with log_execution_time("building the cache", quiet_below_s=0):
        pass
    assert [(record.levelno, record.getMessage().split(" took ")[0]) for record in caplog.records] == [
        (logging.DEBUG, "reading labels"), (logging.INFO, "building the cache")]


def test_same_seed_gives_the_same_metrics_and_seed_statistics(prepared, tmp_path, capsys):
    assert train.main(base_args(prepared, tmp_path) + ["--seeds", "5", "5"]) == 0
    first, second = run_dirs(tmp_path)
    assert first.name.endswith("_seed5") and second.name.endswith("_seed5_2")
    assert read_metrics(first) == read_metrics(second)
    (stats_file,) = (tmp_path / "output").glob("ghost_*_seeds.json")
    stats = json.loads(stats_file.read_text())
    best = max(row["valid_acc"] for row in read_metrics(first))
    assert stats["count"] == 2 and stats["best_valid_acc_std"] == 0.0
    assert stats["best_valid_acc_mean"] == pytest.approx(best) and stats["best_valid_acc_max"] == pytest.approx(best)
    out = capsys.readouterr().out
    assert "mean" in out
    assert announced_run_folders(out.splitlines()) == [first, second]  # what the Colab notebook reads
    assert seeds_to_run(10, [3]) == [10, 11, 12] and seeds_to_run(10, [4, 2]) == [4, 2]
    assert seeds_to_run(10, None) == [10]


class InterruptAt(Callback):
    """Presses Ctrl-C at the first batch of a training epoch (0-based)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


def test_interrupted_run_keeps_records_and_resumes_at_the_next_epoch(prepared, tmp_path):
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):
            train.main(base_args(prepared, tmp_path, epochs=3, mlflow=True), extra_callbacks=[InterruptAt(2)])
    finally:
        signal.signal(signal.SIGINT, handler)
    (run_dir,) = run_dirs(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "interrupted" and summary["stop_reason"] == "interrupted"
    before = read_metrics(run_dir)
    assert [row["epoch"] for row in before] == [1, 2]
    assert load_checkpoint(run_dir / "last.ckpt")["epoch"] == 1
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'output' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cars").experiment_id
    (interrupted,) = client.search_runs([experiment])
    assert interrupted.info.status == "KILLED" and interrupted.data.metrics["epochs_last"] == 2
    assert interrupted.data.tags["state"] == "interrupted" == interrupted.data.tags["stop_reason"]

    assert train.main(["--resume", str(run_dir), "--set", "num_workers=0"]) == 0
    assert run_dirs(tmp_path) == [run_dir]
    after = read_metrics(run_dir)
    assert [row["epoch"] for row in after] == [1, 2, 3] and after[:2] == before
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "finished" and summary["epochs_run"] == 3 and len(summary["resumed"]) == 1
    (resumed,) = client.search_runs([experiment])  # the same MLflow run, continued
    assert resumed.info.run_id == interrupted.info.run_id == summary["mlflow_run_id"]
    assert resumed.info.status == "FINISHED" and resumed.data.metrics["epochs_last"] == 3
    assert resumed.data.tags["state"] == "finished" and resumed.data.tags["stop_reason"] == "max_epochs"
    assert [metric.step for metric in client.get_metric_history(resumed.info.run_id, "valid_acc")] == [1, 2, 3]
    last = load_checkpoint(run_dir / "last.ckpt")
    assert last["epoch"] == 2 and last["global_step"] == 3 * 3  # 3 epochs of 3 batches (20 images, batch 8)


def test_two_process_cpu_ddp_run_completes(prepared, tmp_path):
    args = base_args(prepared, tmp_path, epochs=1, mlflow=True) + [
        "--set", "strategy=ddp", "--set", "devices=2", "--set", "accelerator=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "finished" and summary["device"]["devices"] == 2
    assert summary["device"]["strategy"] == "DDPStrategy" and len(read_metrics(run_dir)) == 1
    assert (run_dir / "best.ckpt").is_file() and (run_dir / "last.ckpt").is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'output' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("cars").experiment_id])  # rank zero's only
    assert run.info.status == "FINISHED" and run.info.run_name == summary["run_name"]


def test_config_problems_stop_training_before_any_work(prepared, tmp_path, capsys):
    """The configuration's own problems come first, all together, before torch is imported; the problems only the
    checks that need torch find (names of optimizers and architectures) come next, all together too."""
    names = ["--set", "optimizer=Adamw", "--set", "architecture=ghostnet"]
    assert train.main(base_args(prepared, tmp_path) + names + ["--set", "batch_sise=3"]) == 2
    error = capsys.readouterr().err
    assert "1 configuration problem" in error and "did you mean batch_size" in error
    assert train.main(base_args(prepared, tmp_path) + names) == 2
    error = capsys.readouterr().err
    assert "2 configuration problems" in error and "did you mean AdamW" in error and "ghostnet" in error
    assert not (tmp_path / "output").exists()
    assert train.main(["-c", str(tmp_path / "config.yml")]) == 2
    assert "cp config_template.yml" in capsys.readouterr().err


def test_unprepared_data_is_explained(tmp_path, capsys):
    args = base_args(tmp_path / "not_prepared", tmp_path)
    assert train.main(args) == 2
    assert "prepare_stanford_dataset.py" in capsys.readouterr().err
    assert not (tmp_path / "output").exists()


@pytest.mark.parametrize("seeds", [["0"], ["3", "-1"], ["1", "4294967296"]])
def test_bad_seed_lists_are_refused_before_any_work(tmp_path, capsys, seeds):
    with pytest.raises(SystemExit) as exited:
        train.main(base_args(tmp_path / "not_prepared", tmp_path) + ["--seeds", *seeds])
    assert exited.value.code == 2
    assert "--seeds" in capsys.readouterr().err
    assert not (tmp_path / "output").exists()


def test_trainer_data_and_folder_settings_are_checked_with_the_rest_before_any_work(prepared, tmp_path, capsys):
    (tmp_path / "a_file").write_text("mine")
    later = ["--set", "strategy=dpp", "--set", f"cache_path={tmp_path / 'a_file'}"]
    none = tmp_path / "none"
    args = base_args(prepared, tmp_path) + ["--set", "batch_size=0", *later, "-d", str(none)]
    assert train.main(args) == 2
    error = capsys.readouterr().err
    # each problem of a key set on the command line is named by the option as typed; the configuration's own
    # problems and the data folder come first (before torch is imported), the Trainer's and the folders' next
    assert error.startswith("--set, -d: 2 configuration problems")
    for fragment in ("--set batch_size=0: 0 is out of range", f"-d {none}: stanford_data_path: {none} does not exist"):
        assert fragment in error
    assert train.main(base_args(prepared, tmp_path) + later) == 2
    error = capsys.readouterr().err
    # the Trainer's settings are checked together (strategy with accelerator, devices, ...), so that one is the file's
    assert error.startswith(f"{TEMPLATE}: 2 configuration problems")
    for fragment in ("invalid strategy name", f"--set cache_path={tmp_path / 'a_file'}: ", "a_file is a file"):
        assert fragment in error
    assert not (tmp_path / "output").exists()
    assert train.main(base_args(prepared, tmp_path) + ["--set", "num_nodes=2"]) == 2
    assert "multi-machine launch" in capsys.readouterr().err


def test_a_fit_without_training_batches_is_recorded_as_failed(prepared, tmp_path, capsys):
    tiny = tmp_path / "one_training_image"
    shutil.copytree(prepared, tiny)
    lines = (tiny / "train_labels.csv").read_text().splitlines()
    (tiny / "train_labels.csv").write_text("\n".join(lines[:2]) + "\n")  # one image: dropped, as BatchNorm needs two
    assert train.main(base_args(tiny, tmp_path, epochs=1)) == 1
    assert "no training batches" in capsys.readouterr().err
    (run_dir,) = run_dirs(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "failed" and summary["stop_reason"].startswith("no training batches")


def test_the_profiler_key_writes_its_report_in_the_run_folder(prepared, tmp_path):
    assert train.main(base_args(prepared, tmp_path, epochs=1) + ["--set", "profiler=simple"]) == 0
    (report,) = (run_dirs(tmp_path)[0] / "profile").glob("*profile*.txt")
    assert "training_step" in report.read_text()
    assert train.main(base_args(prepared, tmp_path, epochs=1) + ["--set", "profiler=cprofile"]) == 2
