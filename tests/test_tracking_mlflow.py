"""MLflow, the runs dashboard, for real: a SQLite store and an `mlflow server` on 127.0.0.1, read back with
MlflowClient (parameters, per-epoch metrics, summary columns, tags, note, status, artifacts); resume, imports of run
folders and Neptune offline runs, bad tracking URIs, and a server killed mid-run."""

import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime

import pytest
from mlflow.tracking import MlflowClient
from pytorch_lightning.callbacks import Callback

import compare_runs
import train
from tests.test_training_run import base_args, one_thread, prepared, run_dirs  # noqa: F401 (fixtures)
from utils.runs.records import read_metrics
from utils.runs.table import rounded

LONG_DESCRIPTION = "longer than the 250 characters of Lightning's logger " + "x" * 300


def sqlite_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'output' / 'mlflow.db'}"


def only_run(client, experiment="cars"):
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


def history(client, run, key):
    return [(metric.step, metric.value) for metric in client.get_metric_history(run.info.run_id, key)]


def artifacts(client, run):
    return sorted(item.path for item in client.list_artifacts(run.info.run_id))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(server: subprocess.Popen, signal_number: int) -> None:
    """Signal the server's whole process group (mlflow server runs uvicorn as a child) and wait for it."""
    os.killpg(server.pid, signal_number)
    server.wait(timeout=60)


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with a SQLite store (no job runner); (process, URI); stopped at the end."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server_artifacts")], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, start_new_session=True)
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                break
        except OSError:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.5)
    yield server, uri
    if server.poll() is None:
        stop(server, signal.SIGTERM)
    log.close()


def test_a_run_logs_the_thesis_table_to_sqlite_in_the_output_folder(prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = base_args(prepared, tmp_path, mlflow=True) + ["--set", "tags=[smoke, C-50]",
                                                         "--set", f"description={LONG_DESCRIPTION}"]
    assert train.main(args + ["--seeds", "2"]) == 0
    first, second = run_dirs(tmp_path)
    client = MlflowClient(sqlite_uri(tmp_path))
    everything = client.search_runs([client.get_experiment_by_name("cars").experiment_id],
                                     order_by=["tags.run_dir ASC"])
    runs = [run for run in everything if "run_dir" in run.data.tags]
    (group,) = [run for run in everything if "run_dir" not in run.data.tags]
    summary = json.loads((first / "summary.json").read_text())
    time = f"{datetime.strptime(first.name.split('_')[1], '%Y%m%d-%H%M%S'):%Y-%m-%d %H:%M:%S}"  # the folder's
    assert [run.info.run_name for run in runs] == [f"ghost {time} seed 42", f"ghost {time} seed 43"]
    run, rows = runs[0], read_metrics(first)
    assert summary["mlflow_run_id"] == run.info.run_id and run.info.status == "FINISHED"

    params = run.data.params
    assert params["architecture"] == "ghost" and params["optimizer_params.lr"] == "0.001"
    assert params["lr_scheduler_params.milestones"] == "[67, 82, 95, 107]" and params["image_size"] == "32x32"
    assert params["runtime"] == "local/cpu" and params["parameters"] == str(summary["parameters"])
    assert params["multiply_adds"] == str(summary["multiply_adds"]) and params["description"] == LONG_DESCRIPTION
    assert params["image_augmentations"] == "RandomHorizontalFlip+RandomAffine+ColorJitter"
    assert params["tensor_augmentations"] == "off"
    for key in ("valid_acc", "valid_loss", "train_loss", "train_acc", "lr"):
        assert history(client, run, key) == [(row["epoch"], pytest.approx(row[key])) for row in rows]
    metrics = run.data.metrics  # the table's results, rounded as the table prints them
    assert metrics["valid_acc_max"] == rounded(max(row["valid_acc"] for row in rows))
    assert metrics["valid_loss_min"] == rounded(min(row["valid_loss"] for row in rows))
    assert metrics["train_acc_max"] == rounded(max(row["train_acc"] for row in rows))
    assert metrics["train_loss_min"] == rounded(min(row["train_loss"] for row in rows))
    assert metrics["epochs_last"] == 2 and metrics["duration_s"] == pytest.approx(summary["duration_s"], rel=0.5)

    tags = run.data.tags
    assert tags["tags"] == "smoke, C-50" and tags["mlflow.note.content"] == LONG_DESCRIPTION
    assert tags["run_dir"] == str(first.resolve()) and tags["state"] == "finished"
    assert tags["stop_reason"] == "max_epochs" and tags["mlflow.parentRunId"] == group.info.run_id
    assert tags["seed_group"] == runs[1].data.tags["seed_group"] == summary["seed_group"]
    assert (tmp_path / "output" / f"{summary['seed_group']}.json").is_file()
    assert artifacts(client, run) == ["config.yml", "summary.json"]  # MLflow charts the curves itself
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlartifacts").exists()

    # the same record imported afterwards into another store: one mirror, so the same MLflow run
    other_uri = f"sqlite:///{tmp_path / 'imported.db'}"
    assert compare_runs.main(["--to-mlflow", str(first), "--mlflow-uri", other_uri]) == 0
    other = MlflowClient(other_uri)
    imported = only_run(other)
    assert [(r.info.run_name, r.info.status, r.info.start_time, r.info.end_time) for r in (imported, run)] == \
        [(run.info.run_name, "FINISHED", int(datetime.fromisoformat(summary["started"]).timestamp() * 1000),
          run.info.end_time)] * 2
    assert (imported.data.params, imported.data.tags, imported.data.metrics) == \
        (run.data.params, run.data.tags, run.data.metrics)
    for key in ("valid_acc", "valid_loss", "train_loss", "train_acc", "lr", "valid_acc_top5"):
        assert history(other, imported, key) == history(client, run, key)
    assert artifacts(other, imported) == artifacts(client, run)

    # the --seeds group: a parent run holding the group's row (results: means over the seeds)
    assert group.info.run_name == f"ghost {time} seeds 42, 43" and group.info.status == "FINISHED"
    assert runs[1].data.tags["mlflow.parentRunId"] == group.info.run_id and group.data.tags["state"] == "finished"
    assert group.data.params["seed"] == "42,43" and group.data.params["image_size"] == "32x32"
    assert group.data.metrics["valid_acc_max"] == rounded(
        statistics.fmean(other.data.metrics["valid_acc_max"] for other in runs))


def test_import_of_run_folders_and_neptune_offline_runs_adds_nothing_the_second_time(
        prepared, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NEPTUNE_DATA_DIRECTORY", str(tmp_path / ".neptune"))
    args = base_args(prepared, tmp_path, mlflow=True) + [
        "--set", "log_to_mlflow=false", "--set", "log_to_neptune=true", "--set", "neptune_username=me",
        "--set", "neptune_project_name=cars", "--set", "neptune_mode=offline", "--set", "tags=[old]",
        "--set", "description=before MLflow"]
    assert train.main(args) == 0
    (run_dir,) = run_dirs(tmp_path)
    assert not (tmp_path / "output" / "mlflow.db").exists()
    uri = f"sqlite:///{tmp_path / 'imported.db'}"
    command = ["--to-mlflow", str(tmp_path / "output"), str(tmp_path / ".neptune"), "--mlflow-uri", uri]
    assert compare_runs.main(command) == 0
    assert "2 run(s) imported" in capsys.readouterr().out
    assert compare_runs.main(command) == 0
    out = capsys.readouterr().out
    assert "0 run(s) imported" in out and "2 already there" in out

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("cars").experiment_id
    folder_run, neptune_run = sorted(client.search_runs([experiment]), key=lambda run: "run_dir" not in run.data.tags)
    rows = read_metrics(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert folder_run.info.run_name == summary["run_name"] and folder_run.info.status == "FINISHED"
    assert folder_run.data.params["optimizer_params.lr"] == "0.001"
    assert folder_run.data.params["runtime"] == "local/cpu" and folder_run.data.tags["state"] == "finished"
    started = datetime.fromisoformat(summary["started"]).timestamp() * 1000
    assert folder_run.info.start_time == int(started)  # the UI's Duration: the run's, not the import's
    assert folder_run.info.end_time == pytest.approx(started + summary["duration_s"] * 1000, abs=1)
    assert folder_run.data.tags["tags"] == "old" and folder_run.data.tags["mlflow.note.content"] == "before MLflow"
    assert history(client, folder_run, "valid_acc") == [(row["epoch"], pytest.approx(row["valid_acc"])) for row in rows]
    assert folder_run.data.metrics["epochs_last"] == 2
    assert artifacts(client, folder_run) == ["config.yml", "summary.json"]  # the files a live run keeps

    assert neptune_run.info.run_name == run_dir.name and neptune_run.data.tags["tags"] == "old"
    assert neptune_run.data.tags["mlflow.note.content"] == "before MLflow"
    assert neptune_run.data.params["architecture"] == "ghost" and neptune_run.data.params["optimizer_params.lr"] == "0.001"
    assert history(client, neptune_run, "valid_acc") == [(0, pytest.approx(rows[0]["valid_acc"])),
                                                         (1, pytest.approx(rows[1]["valid_acc"]))]
    assert neptune_run.data.metrics["epochs_last"] == 2


def test_bad_tracking_uris_are_config_problems_before_any_work(prepared, tmp_path, capsys):
    (tmp_path / "a_file").write_text("mine")
    unreachable = f"http://127.0.0.1:{free_port()}"
    cases = {unreachable: "no MLflow server answers", "localhost:5000": "not a tracking URI",
             f"sqlite:///{tmp_path / 'a_file' / 'mlflow.db'}": "a_file is a file",
             f"sqlite:///{tmp_path / 'a_file'}": "not an SQLite database", "http://": "names no host"}
    for uri, reason in cases.items():
        assert train.main(base_args(prepared, tmp_path, mlflow=True) + ["--set", f"mlflow_tracking_uri={uri}"]) == 2
        error = capsys.readouterr().err
        assert f"--set mlflow_tracking_uri={uri}: " in error and reason in error  # named as typed
    assert not (tmp_path / "output").exists() and (tmp_path / "a_file").read_text() == "mine"


class KillServerAt(Callback):
    """Kills the MLflow server (SIGKILL) at the start of a training epoch (0-based)."""

    def __init__(self, server, epoch: int):
        self.server, self.epoch = server, epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            stop(self.server, signal.SIGKILL)


def test_a_shared_server_gets_the_run_and_its_death_mid_run_leaves_training_and_records_intact(
        prepared, tmp_path, mlflow_server, monkeypatch, caplog):
    server, uri = mlflow_server
    args = base_args(prepared, tmp_path, mlflow=True) + [
        "--set", f"mlflow_tracking_uri={uri}", "--set", "tags=[shared]", "--set", "mlflow_log_checkpoints=true"]
    assert train.main(args) == 0
    (run_dir,) = run_dirs(tmp_path)
    client = MlflowClient(uri)
    run = only_run(client)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert run.info.run_name == summary["run_name"] and run.info.status == "FINISHED"
    assert run.data.tags["tags"] == "shared"
    assert [step for step, _ in history(client, run, "valid_loss")] == [1, 2]
    assert artifacts(client, run) == ["best.ckpt", "config.yml", "last.ckpt", "summary.json"]
    assert not (tmp_path / "output" / "mlflow.db").exists()

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once instead of retrying for minutes
    with caplog.at_level(logging.WARNING, logger="training.trackers"):
        args = base_args(prepared, tmp_path, epochs=3, mlflow=True) + ["--set", f"mlflow_tracking_uri={uri}"]
        assert train.main(args, extra_callbacks=[KillServerAt(server, 1)]) == 0
    killed_run_dir = run_dirs(tmp_path)[-1]
    assert [row["epoch"] for row in read_metrics(killed_run_dir)] == [1, 2, 3]
    summary = json.loads((killed_run_dir / "summary.json").read_text())
    assert summary["state"] == "finished" and summary["epochs_run"] == 3 and summary["mlflow_run_id"]
    assert (killed_run_dir / "best.ckpt").is_file() and (killed_run_dir / "last.ckpt").is_file()
    warnings = [record.message for record in caplog.records if "MLflow tracking at" in record.getMessage()]
    assert len(warnings) == 1


def test_to_mlflow_writes_into_the_store_of_the_runs_it_compares_with_the_thesis_beside_them(
        prepared, tmp_path, monkeypatch, capsys):
    assert train.main(base_args(prepared, tmp_path, mlflow=True)) == 0
    elsewhere = tmp_path / "elsewhere"  # no output/ here: nothing may be made here
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert compare_runs.main(["--to-mlflow", str(tmp_path / "output"), "--reference", "C-50"]) == 0
    out = capsys.readouterr().out
    assert f"at {sqlite_uri(tmp_path)}, 1 already there" in out and "1 run(s) imported" in out  # C-50; the run: live
    assert f"make dashboard DASHBOARD_DB={tmp_path / 'output' / 'mlflow.db'}" in out  # the dashboard of that store
    client = MlflowClient(sqlite_uri(tmp_path))
    runs = client.search_runs([client.get_experiment_by_name("cars").experiment_id])
    assert sorted(run.info.run_name for run in runs)[0] == "C-50" and len(runs) == 2  # one table
    assert compare_runs.main(["--to-mlflow", "--reference", "C-50"]) == 2  # no runs folder: no store to guess
    assert "--mlflow-uri" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []
