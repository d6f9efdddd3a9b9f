"""Runs of several processes, with real processes on 127.0.0.1: torchrun, Lightning's own launcher killed and
resumed, sweep trials of 2 processes each, and two sweep launchers on a PostgreSQL server logging to an `mlflow
server`, one launcher killed with SIGKILL. Each rank's view is recorded by tests/fit_probes.py (callbacks that
Lightning loads through its entry points), whose gate holds a run after some epochs until the test has killed it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

import sweep
from fit_probes import fit_env, held, read_probes, release
from tests.test_sweeps import held_trial
from sweeps.storage import open_storage, run_of
from utils.mlflow.server import free_port, start_server
from utils.runs.records import read_metrics
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "config_template.yml"
DDP = ["accelerator=cpu", "strategy=ddp", "devices=2"]


@pytest.fixture(scope="module")
def prepared(make_prepared):
    return make_prepared("ddp_data", num_classes=3, images_per_class=8, min_width=40, max_width=64)


def tiny(tmp_path, prepared, epochs=1, mlflow=False):
    """The template's settings for a tiny run on the prepared data, outputs under tmp_path."""
    return {"stanford_data_path": str(prepared), "output_path": str(tmp_path / "output"),
            "logging_dir": str(tmp_path / "logs"), "image_size": [32, 32], "num_epochs": epochs, "batch_size": 4,
            "num_workers": 0, "output_channels": 64, "log_to_tensorboard": False, "log_to_mlflow": mlflow}


def set_args(settings):
    return [item for key, value in settings.items() for item in ("--set", f"{key}={json.dumps(value)}")]


def probe_env(tmp_path, hold_after=None):
    """The environment of the test's processes: one thread each, and the rank probe loaded by Lightning."""
    probes = tmp_path / "probes"
    return fit_env(tmp_path / "fit_probes", probes, hold_after), probes


def run_dirs(tmp_path):
    return sorted(path for path in (tmp_path / "output").iterdir() if path.is_dir() and path.name != "mlartifacts")


def test_torchrun_two_processes_train_one_run_with_one_seed_drawn_by_rank_zero(prepared, tmp_path):
    env, probes = probe_env(tmp_path)
    args = ["-c", str(TEMPLATE), *set_args({**tiny(tmp_path, prepared, mlflow=True), "seed": None}),
            *[item for setting in DDP for item in ("--set", setting)]]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(ROOT / "train.py"), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    (run_dir,) = run_dirs(tmp_path)  # no stray folder of rank 1
    summary = json.loads((run_dir / "summary.json").read_text())
    ranks = read_probes(probes)
    assert sorted(probe["rank"] for probe in ranks) == [0, 1] and {probe["world_size"] for probe in ranks} == {2}
    assert {probe["run_dir"] for probe in ranks} == {str(run_dir.resolve())}
    assert {probe["seed"] for probe in ranks} == {str(summary["seed"])}  # null: drawn once, by rank 0
    assert {probe["sampler"] for probe in ranks} == {"DistributedSampler"}
    assert {probe["sampler_seed"] for probe in ranks} == {summary["seed"]}
    assert len(read_metrics(run_dir)) == 1 and summary["state"] == "finished"
    assert output.count("run folder: ") == 1 and "None epochs" not in output and "nan" not in output
    assert "It is recommended to use" not in output
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'output' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("cars").experiment_id])
    assert run.info.run_id == summary["mlflow_run_id"] and run.info.status == "FINISHED"



def test_a_two_process_run_killed_with_sigkill_resumes_from_its_last_epoch(prepared, tmp_path):
    env, probes = probe_env(tmp_path, hold_after=2)  # rank 0 waits before epoch 3 until killed
    args = ["-c", str(TEMPLATE), *set_args(tiny(tmp_path, prepared, epochs=4)),
            *[item for setting in DDP for item in ("--set", setting)]]
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        ((_, run_dir),) = wait_for(lambda: held(tmp_path / "fit_probes").items(), what="two epochs")
        os.kill(process.pid, signal.SIGKILL)  # rank 0, the process Lightning's launcher started rank 1 from
        process.wait(timeout=60)
        wait_for(lambda: not any(probe["pid"] != process.pid and Path(f"/proc/{probe['pid']}").exists()
                                 for probe in read_probes(probes)), timeout=120, what="rank 1 to end")
    finally:
        os.killpg(process.pid, signal.SIGKILL) if process.poll() is None else None
    done = len(read_metrics(run_dir))
    assert done == 2
    for probe in probes.glob("*.json"):
        probe.unlink()
    release(tmp_path / "fit_probes")
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", str(run_dir)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2, 3, 4]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "finished" and len(summary["resumed"]) == 1 and summary["device"]["devices"] == 2
    ranks = read_probes(probes)
    assert sorted(probe["rank"] for probe in ranks) == [0, 1]
    (resumed_at,) = {probe["epoch"] for probe in ranks}  # both ranks from last.ckpt's epoch
    assert resumed_at == done and {probe["run_dir"] for probe in ranks} == {str(run_dir.resolve())}
    assert [path for path in run_dirs(tmp_path) if path != run_dir] == []


def write_study(tmp_path, prepared, body, name="tiny", **settings):
    base = {"config": str(TEMPLATE), "overrides": {**tiny(tmp_path, prepared), **settings}}
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump({"name": name, "base": base, **body}, sort_keys=False), encoding="utf-8")
    return path


LEARNING_RATES = {"runs": [{"id": "A", "overrides": {"optimizer_params.lr": 0.001}},
                           {"id": "B", "overrides": {"optimizer_params.lr": 0.002}},
                           {"id": "C", "overrides": {"optimizer_params.lr": 0.003}}]}


def test_sweep_trials_of_two_processes_each_train_their_own_trial_on_every_rank(prepared, tmp_path):
    env, probes = probe_env(tmp_path)
    path = write_study(tmp_path, prepared, LEARNING_RATES, log_to_mlflow=True)
    command = [sys.executable, str(ROOT / "sweep.py"), str(path), "--workers", "1", "--devices", "cpu",
               "--heartbeat", "1", "--grace", "8", "--set", "strategy=ddp", "--set", "devices=2"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    study = optuna.load_study(study_name="tiny", storage=open_storage(
        f"sqlite:///{tmp_path / 'output' / 'tiny' / 'optuna.db'}"))
    assert sorted(run_of(trial).config_id for trial in study.get_trials(states=(TrialState.COMPLETE,))) == list("ABC")
    assert len(study.get_trials()) == 3
    ranks = read_probes(probes)
    for config_id, lr in (("A", 0.001), ("B", 0.002), ("C", 0.003)):
        run_dir = tmp_path / "output" / "tiny" / config_id
        recorded = yaml.safe_load((run_dir / "config.yml").read_text())
        assert recorded["optimizer_params"]["lr"] == lr and recorded["devices"] == 2
        trained = [probe for probe in ranks if probe["run_dir"] == str(run_dir.resolve())]
        assert sorted(probe["rank"] for probe in trained) == [0, 1], ranks
        assert {probe["lr"] for probe in trained} == {lr}  # every rank: this trial's settings
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["state"] == "finished" and summary["device"]["devices"] == 2
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'output' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cars").experiment_id])
    assert len(runs) == 4  # the study's parent run and one run per trial: rank 0's only


def test_check_refuses_worker_groups_that_cannot_be_run_as_asked(prepared, tmp_path, capsys):
    path = write_study(tmp_path, prepared, LEARNING_RATES)
    ddp = ["--set", "accelerator=cpu", "--set", "strategy=ddp", "--set", "devices=2"]
    assert sweep.main([str(path), "--check", "--workers", "2", "--devices", "0,1,2", *ddp]) == 2
    assert "--workers 2 x devices 2 needs 4 GPUs, and --devices gives 3 (0,1,2)" in capsys.readouterr().err
    assert sweep.main([str(path), "--check", *ddp[:4], "--set", "strategy=ddp_spawn", "--set", "devices=2"]) == 2
    assert "strategy: ddp_spawn starts processes that run only the fit" in capsys.readouterr().err
    mixed = write_study(tmp_path, prepared, {"runs": [{"id": "A"}, {"id": "B", "overrides": {"devices": 2,
                                                                                              "strategy": "ddp"}}]},
                        name="mixed", accelerator="cpu")
    assert sweep.main([str(mixed), "--check"]) == 2
    assert "the runs differ" in capsys.readouterr().err
    assert sweep.main([str(path), "--check", "--workers", "4", "--devices", "0,1,2,3,4,5,6,7", *ddp]) == 0


def test_every_study_file_in_experiments_passes_check_against_a_top_level_config(prepared, tmp_path, capsys):
    """As the README sets a clone up (cp config_template.yml config.yml): each study file finds that config.yml."""
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    shutil.copy(TEMPLATE, tmp_path / "config.yml")
    settings = ["--set", f"stanford_data_path={prepared}", "--set", f"output_path={tmp_path / 'output'}"]
    studies = sorted((tmp_path / "experiments").glob("*.yml"))
    assert [study.name for study in studies] == ["beyond_c50.yml", "c50_search.yml", "thesis.yml"]
    for study in studies:
        code = sweep.main([str(study), "--check", *settings])
        output = capsys.readouterr()
        if code == 0:
            assert "every run passed every pre-run check" in output.out
            continue
        problems = [line for line in output.err.splitlines() if line.startswith("  - ")]
        assert problems and study.name == "beyond_c50.yml", output.err  # only its ImageNet weights may be missing
        assert all("pretrained_weights: the ImageNet weights" in line for line in problems), output.err


def rest(server_url, method, body):
    request = urllib.request.Request(f"{server_url}/api/2.0/mlflow/{method}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def parent_pid(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def test_two_launchers_on_postgresql_one_killed_every_run_trains_once_and_mlflow_server_nests_them(
        prepared, tmp_path, postgres_url):
    server = start_server(f"sqlite:///{tmp_path / 'mlflow.db'}", free_port(), command="server",
                          artifacts_destination=tmp_path / "artifacts",
                          output=(tmp_path / "mlflow.log").open("w"))
    try:
        path = write_study(tmp_path, prepared, {"runs": LEARNING_RATES["runs"][:2]}, num_epochs=6,
                           log_to_mlflow=True, mlflow_tracking_uri=server.url)
        command = [sys.executable, str(ROOT / "sweep.py"), str(path), "--storage", postgres_url, "--heartbeat", "1",
                   "--grace", "6"]
        env = fit_env(tmp_path / "fit_probes", hold_after=2)  # each run waits after epoch 2 until the kill
        logs = [tmp_path / "launcher1.log", tmp_path / "launcher2.log"]  # files: a full pipe would stop a launcher
        outputs = [log.open("w") for log in logs]
        launchers = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=outputs[0], stderr=subprocess.STDOUT,
                                      start_new_session=True)]
        time.sleep(5)  # the first launcher creates the study; the second joins it
        launchers.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=outputs[1], stderr=subprocess.STDOUT,
                                          start_new_session=True))
        try:
            trial, run_dir = wait_for(lambda: held_trial(postgres_url, tmp_path / "fit_probes"),
                                      what="a run held after its second epoch")
            worker = int(trial.user_attrs["worker"].rsplit(":", 1)[1])
            (killed,) = [launcher for launcher in launchers if launcher.pid == parent_pid(worker)]
            os.kill(killed.pid, signal.SIGKILL)
            killed.wait(timeout=60)
            release(tmp_path / "fit_probes")
            wait_for(lambda: not Path(f"/proc/{worker}").exists() or "zombie" in Path(
                f"/proc/{worker}/status").read_text(), timeout=60, what="its worker to stop with it")
            (survivor,) = [launcher for launcher in launchers if launcher is not killed]
            survivor.wait(timeout=600)
        finally:
            for launcher in launchers:
                if launcher.poll() is None:
                    os.killpg(launcher.pid, signal.SIGKILL)
            for output in outputs:
                output.close()
            print("\n".join(f"--- {log.name}:\n{log.read_text(errors='replace')[-3000:]}" for log in logs))
        assert survivor.returncode == 0
        study = optuna.load_study(study_name="tiny", storage=open_storage(postgres_url))
        trials = [item for item in study.get_trials() if run_of(item) == run_of(trial)]
        assert [item.state for item in trials] == [TrialState.FAIL, TrialState.COMPLETE]
        assert sorted(run_of(item).config_id for item in study.get_trials(states=(TrialState.COMPLETE,))) == ["A", "B"]
        assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2, 3, 4, 5, 6]  # each epoch once
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["state"] == "finished" and summary["resumed"][0]["checkpoint"] == str(run_dir / "last.ckpt")

        experiments = rest(server.url, "experiments/search", {"max_results": 10})["experiments"]
        (cars,) = [item for item in experiments if item["name"] == "cars"]
        runs = rest(server.url, "runs/search", {"experiment_ids": [cars["experiment_id"]]})["runs"]
        tags = [{tag["key"]: tag["value"] for tag in run["data"].get("tags", [])} for run in runs]
        (parent,) = [run for run, tag in zip(runs, tags) if tag.get("mlflow.runName") == "tiny"]
        nested = [run for run, tag in zip(runs, tags) if tag.get("mlflow.parentRunId") == parent["info"]["run_id"]]
        assert len(runs) == 3 and len(nested) == 2  # one MLflow run per study run, the resumed one continued
        assert {run["info"]["status"] for run in nested} == {"FINISHED"}
        assert summary["mlflow_run_id"] in {run["info"]["run_id"] for run in nested}
        assert parent["info"]["status"] == "FINISHED"
    finally:
        server.stop()
