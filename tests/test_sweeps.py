"""sweep.py: study files checked before any trial, workers as real processes on SQLite and on a PostgreSQL server,
a worker killed with SIGKILL, Ctrl-C, pruning, the report and the thesis's study file."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

import sweep
from sweeps.configurations import load_study, open_study, run_config
from sweeps.groups import launch_environment, worker_environments
from sweeps.launcher import prepare_tracking
from sweeps.progress import StudyProgress
from sweeps.storage import fail_lost_trials, open_optuna_study, open_storage, queue_runs, run_of
from sweeps.claims import claim_trial
from sweeps.study_file import read_study
from utils.runs.thesis import load_thesis_runs, thesis_config
from sweeps.thesis_study import thesis_study
from utils.cpu_threads import available_cpus
from utils.runs.records import read_metrics
from tests.waiting import wait_for
from fit_probes import fit_env, held, release

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "config_template.yml"
FAST = ["--heartbeat", "1", "--grace", "8"]
pytestmark = pytest.mark.serial  # worker heartbeats of 1 s, grace periods, signals: one at a time


@pytest.fixture(scope="module")
def prepared(make_prepared):
    return make_prepared("sweep_data", num_classes=3, images_per_class=8, min_width=40, max_width=64)


def write_study(tmp_path, prepared, body, epochs=2, name="tiny"):
    """A study file on the tiny data: base = the template at 32x32, a few epochs, outputs under tmp_path."""
    base = {"config": str(TEMPLATE), "overrides": {
        "stanford_data_path": str(prepared), "output_path": str(tmp_path / "output"),
        "logging_dir": str(tmp_path / "logs"), "image_size": [32, 32], "num_epochs": epochs, "batch_size": 8,
        "num_workers": 0, "output_channels": 64, "log_to_tensorboard": False}}
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump({"name": name, "base": base, **body}, sort_keys=False), encoding="utf-8")
    return path


def sweep_command(*args):
    return [sys.executable, str(ROOT / "sweep.py"), *map(str, args)]


def run_sweep(*args, timeout=600):
    """sweep.py as a process (it starts worker processes and handles signals); a --report, which reads the storage
    and writes the report's files, in-process through sweep.main."""
    if args[:1] == ("--report",):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            code = sweep.main([str(arg) for arg in args])
        return code, printed.getvalue()
    result = subprocess.run(sweep_command(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def load(url, name="tiny"):
    return optuna.load_study(study_name=name, storage=open_storage(url))


def sqlite_url(tmp_path, name="tiny"):
    return f"sqlite:///{tmp_path / 'output' / name / 'optuna.db'}"


THREE_RUNS = {"seeds": 2, "runs": [
    {"id": "A", "description": "weight decay 0.1", "overrides": {"optimizer_params.weight_decay": 0.1}},
    {"id": "B", "description": "dropout 0.3", "overrides": {"dropout": 0.3}},
    {"id": "C", "description": "learning rate 0.003", "overrides": {"optimizer_params": {"lr": 0.003}}}]}


def assert_each_run_finished_once(study, configs, seeds, output):
    complete = [trial for trial in study.get_trials() if trial.state == TrialState.COMPLETE]
    runs = sorted((run_of(trial).config_id, run_of(trial).seed) for trial in complete)
    assert runs == sorted((config, seed) for config in configs for seed in seeds)
    for config in configs:
        for seed in seeds:
            run_dir = output / f"{config}_seed{seed}"
            summary = json.loads((run_dir / "summary.json").read_text())
            assert summary["state"] == "finished" and summary["seed"] == seed
            assert f"study:{study.study_name}" in summary["tags"] and f"trial:{config}" in summary["tags"]
            assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2]


def assert_terminal_and_worker_logs(output, study_folder, logs, study):
    """The launcher's terminal: a line per worker, one when each run starts and ends (with its objective and the
    count of runs done), no training output; each worker's output in its own log file in the study folder."""
    worker_logs = sorted(study_folder.glob("worker-*.log"))
    assert [log.name for log in worker_logs] == [f"worker-{socket.gethostname()}-{n}.log" for n in (1, 2)]
    for number, log in enumerate(worker_logs, start=1):
        assert f"log in {log}" in output and f"worker {number} (pid " in output
        text = log.read_text()
        assert "run folder: " in text and "Epoch 1" not in text  # its runs' log lines, no progress bar
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    for trial in complete:
        name = f"{run_of(trial).config_id}_seed{run_of(trial).seed}"
        assert f"{name}: started\n" in output and f"{name}: finished, best_valid_acc {trial.value:.4f} after 2 " \
            "epochs [" in output
    assert f"[{len(complete)}/{len(complete)} runs done]" in output
    for noise in ("Epoch 1", "run folder:", "GPU available", "A new study created", "Total params"):
        assert noise not in output, noise
    (daily,) = logs.glob("*.log")  # the workers' log records, with Lightning's model summary once per run
    assert daily.read_text().count("Total params") == len(complete)


def test_two_workers_on_sqlite_train_each_configuration_once_per_seed_and_report_it(prepared, tmp_path):
    path = write_study(tmp_path, prepared, THREE_RUNS)
    code, output = run_sweep(path, "--workers", "2", *FAST)
    assert code == 0, output
    study = load(sqlite_url(tmp_path))
    assert_each_run_finished_once(study, "ABC", [42, 43], tmp_path / "output" / "tiny")
    assert_terminal_and_worker_logs(output, tmp_path / "output" / "tiny", tmp_path / "logs", study)
    assert {trial.state for trial in study.get_trials()} == {TrialState.COMPLETE}
    assert len({trial.user_attrs["worker"] for trial in study.get_trials()}) <= 2
    assert "MLflow tracking" not in output, output  # both workers logged every run to the one mlflow.db
    client = MlflowClient(f"sqlite:///{tmp_path / 'output' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cars")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [run for run in runs if run.info.run_name == "tiny"]  # the study: its runs nested under it
    assert sorted(run.info.run_name for run in runs if run is not parent) == sorted(
        f"tiny/{config} {description} seed {seed}" for config, description in
        (("A", "weight decay 0.1"), ("B", "dropout 0.3"), ("C", "learning rate 0.003")) for seed in (42, 43))
    assert {run.data.tags.get("mlflow.parentRunId") for run in runs if run is not parent} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and parent.data.tags["state"] == "finished"
    shared = parent.data.params  # the table's settings all the runs share, not those the study varies
    assert shared["architecture"] == "ghost" and shared["image_size"] == "32x32" and shared["batch_size"] == "8"
    assert not {"dropout", "optimizer_params.weight_decay", "optimizer_params.lr", "seed"} & set(shared), shared

    code, output = run_sweep(path, *FAST)  # a finished study: nothing queued, nothing trained again
    assert code == 0 and "0 runs queued" in output, output
    assert len(load(sqlite_url(tmp_path)).get_trials()) == 6
    assert len(client.search_runs([experiment.experiment_id])) == 7  # the study's parent run reused
    again = client.get_run(parent.info.run_id).info  # ... and left ended with the study's last run
    assert again.status == "FINISHED" and again.end_time == parent.info.end_time
    last_end = max(run.info.end_time for run in runs if run is not parent)
    assert parent.info.end_time == pytest.approx(last_end, abs=30_000)

    code, output = run_sweep("--report", path)
    assert code == 0, output
    with (tmp_path / "output" / "tiny" / "report.csv").open() as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["A", "B", "C"] and (tmp_path / "output" / "tiny" / "report.png").is_file()
    for config in "ABC":
        best = [max(row["valid_acc"] for row in read_metrics(tmp_path / "output" / "tiny" / f"{config}_seed{seed}"))
                for seed in (42, 43)]
        assert float(rows[config]["valid_acc_max_mean"]) == pytest.approx(statistics.fmean(best))
        assert float(rows[config]["valid_acc_max_std"]) == pytest.approx(statistics.stdev(best))
        assert rows[config]["state"] == "finished" and rows[config]["seeds"] == "2"
    assert "learning rate 0.003" in output and "±" in output


def test_two_workers_share_a_grid_study_on_a_postgresql_server(prepared, tmp_path, postgres_url):
    path = write_study(tmp_path, prepared, {"seeds": [5, 6], "grid": {"dropout": [0.1, 0.2, 0.3]}})
    code, output = run_sweep(path, "--workers", "2", "--storage", postgres_url, *FAST)
    assert code == 0, output
    study = load(postgres_url)
    assert_each_run_finished_once(study, ["G-1", "G-2", "G-3"], [5, 6], tmp_path / "output" / "tiny")
    assert yaml.safe_load((tmp_path / "output" / "tiny" / "G-3_seed6" / "config.yml").read_text())["dropout"] == 0.3
    assert not (tmp_path / "output" / "tiny" / "optuna.db").exists()
    code, output = run_sweep("--report", path, "--storage", postgres_url)
    assert code == 0 and "dropout=0.3" in output, output



def held_trial(url, gate):
    """A running trial whose run the gate holds after its second epoch: (trial, run folder)."""
    run_dirs = set(held(gate).values())
    trials = load(url).get_trials(states=(TrialState.RUNNING,)) if run_dirs else []
    return next(((trial, Path(trial.user_attrs["run_dir"])) for trial in trials
                 if Path(trial.user_attrs.get("run_dir", "/nonexistent")) in run_dirs), None)


def test_a_worker_killed_mid_trial_is_noticed_and_its_trial_resumes_from_last_ckpt(prepared, tmp_path):
    path = write_study(tmp_path, prepared, {"runs": [{"id": "A"}, {"id": "B", "overrides": {"dropout": 0.3}}]},
                       epochs=8)
    gate = tmp_path / "fit_probes"
    launcher = subprocess.Popen(sweep_command(path, "--workers", "2", *FAST), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=fit_env(gate, hold_after=2))
    trial, run_dir = wait_for(lambda: held_trial(sqlite_url(tmp_path), gate), what="a run held after 2 epochs")
    os.kill(int(trial.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    epochs_at_kill = len(read_metrics(run_dir))
    release(gate)
    output, _ = launcher.communicate(timeout=600)
    assert launcher.returncode == 0, output
    assert epochs_at_kill == 2
    study = load(sqlite_url(tmp_path))
    study_run = run_of(trial)
    trials = [item for item in study.get_trials() if run_of(item) == study_run]
    assert [item.state for item in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].system_attrs["failed_trial"] == trial.number
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "finished" and summary["resumed"][0]["checkpoint"] == str(run_dir / "last.ckpt")
    assert [row["epoch"] for row in read_metrics(run_dir)] == list(range(1, 9))
    assert sorted(run_of(item).config_id for item in study.get_trials(states=(TrialState.COMPLETE,))) == ["A", "B"]


def ctrl_c_as_in_a_terminal():
    """SIGINT's default action in the launcher's process: a suite started in the background by a shell without job
    control (a CI script, `cmd &` in a script) inherits SIGINT ignored, and so would every process it starts."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_hands_the_trial_back_and_the_same_command_resumes_it(prepared, tmp_path):
    path = write_study(tmp_path, prepared, {"runs": [{"id": "A"}]}, epochs=8)
    gate = tmp_path / "fit_probes"
    launcher = subprocess.Popen(sweep_command(path, *FAST), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                env=fit_env(gate, hold_after=2), preexec_fn=ctrl_c_as_in_a_terminal)
    _, run_dir = wait_for(lambda: held_trial(sqlite_url(tmp_path), gate), what="a run held after 2 epochs")
    os.killpg(launcher.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the launcher and its worker
    output, _ = launcher.communicate(timeout=300)
    assert launcher.returncode == 130, output
    assert json.loads((run_dir / "summary.json").read_text())["state"] == "interrupted"
    states = [trial.state for trial in load(sqlite_url(tmp_path)).get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING]

    code, output = run_sweep(path, *FAST)
    assert code == 0, output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "finished" and len(summary["resumed"]) == 1
    assert [row["epoch"] for row in read_metrics(run_dir)] == list(range(1, 9))


def test_a_study_ends_when_its_last_run_does_not_a_heartbeat_later(prepared, tmp_path):
    """The idle worker of two must not wait out its heartbeat (60 s here) after the last run ends."""
    path = write_study(tmp_path, prepared, {"runs": [{"id": "A"}]}, epochs=1)
    code, output = run_sweep(path, "--workers", "2", "--heartbeat", "60", "--grace", "120")
    ended = time.time()
    assert code == 0, output
    (trial,) = load(sqlite_url(tmp_path)).get_trials()
    assert trial.state == TrialState.COMPLETE
    assert ended - trial.datetime_complete.timestamp() < 30, output


def test_a_run_lost_more_often_than_max_retries_ends_failed_with_the_reason(prepared, tmp_path):
    """Its worker killed each time it trains (as by the kernel when out of memory): trained twice with
    --max-retries 1, then failed, with the reason in the launcher's output and in the report."""
    path = write_study(tmp_path, prepared, {"runs": [{"id": "A", "overrides": {"num_epochs": 100,
                                                                                "early_stopping_patience": 100}}]})
    launcher = subprocess.Popen(sweep_command(path, "--workers", "3", "--max-retries", "1", "--heartbeat", "1",
                                              "--grace", "4"), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    killed = []
    try:
        for attempt in range(2):
            trial = wait_for(lambda: next((t for t in trials_if_created(tmp_path) if t.state == TrialState.RUNNING
                                           and t.user_attrs.get("worker") not in (None, *killed)), None),
                             what=f"attempt {attempt + 1} running")
            os.kill(int(trial.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
            killed.append(trial.user_attrs["worker"])
        output, _ = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:  # the test failed: stop the launcher and its workers
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode == 1, output
    trials = load(sqlite_url(tmp_path)).get_trials()
    assert [trial.state for trial in trials] == [TrialState.FAIL, TrialState.FAIL]
    reason = "lost 2 times (its worker stopped: killed, out of memory or preempted); not retried past --max-retries 1"
    assert trials[1].user_attrs["error"] == reason
    assert "A: lost after epoch" in output and "queued again" in output
    assert f"A: failed: {reason} [1/1 runs done]" in output and "1 runs unfinished (A/seed42" in output
    code, report = run_sweep("--report", path)
    assert code == 0 and reason in report, report
    with (tmp_path / "output" / "tiny" / "report.csv").open() as handle:
        (row,) = csv.DictReader(handle)
    assert row["state"] == "failed" and row["reason"] == reason


def trials_if_created(tmp_path):
    """The study's trials once the launcher has made its storage and started the workers (opening the storage
    while the launcher creates its tables would race with it)."""
    if not any((tmp_path / "output" / "tiny").glob("worker-*.log")):
        return []
    return load(sqlite_url(tmp_path)).get_trials()


def test_base_config_is_read_from_the_study_files_folder_and_a_missing_one_names_the_path(prepared, tmp_path,
                                                                                          monkeypatch, capsys):
    studies = tmp_path / "experiments"
    studies.mkdir()
    shutil.copy(TEMPLATE, tmp_path / "config.yml")
    body = {"name": "relative", "base": {"config": "../config.yml", "overrides": {
        "stanford_data_path": str(prepared), "output_path": str(tmp_path / "output")}}, "runs": [{"id": "A"}]}
    (studies / "relative.yml").write_text(yaml.safe_dump(body))
    monkeypatch.chdir(studies.parent.parent)  # elsewhere: the study file's folder decides, not this one
    assert sweep.main([str(studies / "relative.yml"), "--check"]) == 0, capsys.readouterr().err
    body["base"]["config"] = "config.yml"
    (studies / "relative.yml").write_text(yaml.safe_dump(body))
    assert sweep.main([str(studies / "relative.yml"), "--check"]) == 2
    assert (f"base.config: configuration file not found: {studies / 'config.yml'} (a relative base.config is read "
            "from the study file's folder)") in capsys.readouterr().err
    assert sweep.main([str(studies / "relative.yml"), "-c", "nowhere.yml", "--check"]) == 2
    assert f"-c nowhere.yml: configuration file not found: {Path.cwd() / 'nowhere.yml'}" in capsys.readouterr().err
    assert sweep.main([str(studies / "missing.yml"), "--check"]) == 2
    assert "study file not found" in capsys.readouterr().err


def test_pruned_trials_are_recorded_as_pruned(prepared, tmp_path):
    body = {"search": {"trials": 2, "sampler": {"type": "random", "seed": 0},
                       "pruner": {"type": "threshold", "lower": 1.01},  # no accuracy reaches it: pruned at epoch 1
                       "space": {"dropout": {"type": "float", "low": 0.1, "high": 0.4},
                                 "lr_scheduler_params.milestones": {"type": "categorical",
                                                                    "choices": [[1, 2], [2, 3]]}}}}
    path = write_study(tmp_path, prepared, body, epochs=3)
    code, output = run_sweep(path, *FAST)
    assert code == 0, output
    trials = load(sqlite_url(tmp_path)).get_trials()
    assert [trial.state for trial in trials] == [TrialState.PRUNED] * 2
    assert all(list(trial.intermediate_values) == [1] for trial in trials)
    for trial in trials:
        summary = json.loads((Path(trial.user_attrs["run_dir"]) / "summary.json").read_text())
        assert summary["state"] == "pruned" and summary["epochs_run"] == 1
        config = yaml.safe_load((Path(trial.user_attrs["run_dir"]) / "config.yml").read_text())
        assert config["lr_scheduler_params"]["milestones"] in ([1, 2], [2, 3])
    code, output = run_sweep("--report", path)
    assert code == 0 and output.count("pruned") >= 2 and "T-000" in output, output


BAD_STUDIES = {
    "unknown keys": ({"seed": 3, "runs": [{"id": "A", "overrides": {"dropuot": 0.3}, "note": 1}]},
                     ["seed: unknown key; did you mean seeds?", "runs[0].note: unknown key",
                      "runs A: dropuot: unknown key; did you mean dropout?"]),
    "one kind": ({"runs": [{"id": "A"}], "grid": {"dropout": [0.1]}},
                 ["expected exactly one of runs:, grid:, search:, found runs, grid"]),
    "runs": ({"runs": [{"id": "A"}, {"id": "A"}, {"id": "b c"}, "C-1"]},
             ["runs[1].id: A is listed twice", "runs[2].id: 'b c' is not a run id", "runs[3]: expected a mapping"]),
    "pre-run checks": ({"runs": [{"id": "A", "overrides": {"optimizer": "Adamm"}},
                                 {"id": "B", "overrides": {"image_augmentations": {"RandomFlip": {}}}},
                                 {"id": "C", "overrides": {"stanford_data_path": "/nonexistent"}}]},
                      ["runs A: optimizer: ", "runs B: image_augmentations.RandomFlip: unknown transform",
                       "runs C: stanford_data_path: /nonexistent does not exist"]),
    "grid": ({"grid": {"dropout": 0.3, "batch_size": []}},
             ["grid.dropout: expected a non-empty list", "grid.batch_size: expected a non-empty list"]),
    "search": ({"search": {"trials": 0, "sampler": "grid", "pruner": {"type": "median", "n_startup_trials": -1},
                           "space": {"dropout": {"type": "float", "low": 0.5, "high": 0.1},
                                     "optimizer_params.lr": {"type": "float", "low": 0, "high": 0.1, "log": True},
                                     "batch_size": {"type": "int", "low": 8.5, "high": 16},
                                     "optimizer": {"type": "categorical", "choices": []},
                                     "output_channels": {"type": "uniform"}}}},
               ["search.trials: expected the number of configurations", "search.sampler: 'grid' is not one of tpe",
                "search.space.dropout: low (0.5) must be below high (0.1)",
                "search.space.optimizer_params.lr: log: true needs low > 0",
                "search.space.batch_size.low: expected an integer", "search.space.optimizer.choices: expected a non-empty",
                "search.space.output_channels: expected a distribution"]),
    "search values fail checks": ({"search": {"trials": 2, "pruner": {"type": "median", "n_startup_trials": -1},
                                              "space": {"dropout": {"type": "categorical", "choices": [0.2, "x"]}}}},
                                  ["search.space.dropout='x': dropout: expected number", "search.pruner: "]),
    "seeds and objective": ({"seeds": 0, "objective": {"metric": "valid_f1", "direction": "up"},
                             "reference": "paper", "runs": [{"id": "A"}]},
                            ["seeds: expected a count N >= 1", "objective.metric: 'valid_f1' is not one of",
                             "objective.direction: 'up' is not one of", "reference: 'paper' is not one of"]),
}


@pytest.mark.parametrize("case", list(BAD_STUDIES))
def test_every_problem_of_a_study_file_is_reported_before_any_trial(case, prepared, tmp_path, capsys):
    body, messages = BAD_STUDIES[case]
    path = write_study(tmp_path, prepared, body)
    assert sweep.main([str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"{path}: ") and " configuration problem" in error
    for message in messages:
        assert message in error
    assert not (tmp_path / "output").exists()


def test_only_names_listed_configurations_and_a_folder_of_other_settings_is_refused(prepared, tmp_path, capsys):
    path = write_study(tmp_path, prepared, THREE_RUNS)
    assert sweep.main([str(path), "--only", "A", "D", "--check"]) == 2
    assert "--only D: no such configuration (ids: A, B, C)" in capsys.readouterr().err
    run_dir = tmp_path / "output" / "tiny" / "A_seed42"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yml").write_text("dropout: 0.9\n")
    assert sweep.main([str(path), "--only", "A", "--check"]) == 2
    assert f"A: {run_dir} holds a run of other settings" in capsys.readouterr().err
    (run_dir / "config.yml").write_text("dropout: !!python/object/apply:os.system ['true']\n")
    assert sweep.main([str(path), "--only", "A", "--check"]) == 2
    assert f"A: {run_dir / 'config.yml'}: damaged run record, not readable YAML" in capsys.readouterr().err
    (run_dir / "config.yml").unlink()
    (run_dir / "metrics.csv").symlink_to(tmp_path / "elsewhere.csv")
    assert sweep.main([str(path), "--only", "A", "--check"]) == 2
    assert f"A: {run_dir / 'metrics.csv'}: a symbolic link to {tmp_path / 'elsewhere.csv'}" in capsys.readouterr().err
    assert sweep.main([str(path), "--only", "B", "C", "--check"]) == 0


def test_thesis_study_is_the_56_records_with_the_thesis_descriptions(prepared, tmp_path, capsys):
    study = read_study(ROOT / "experiments" / "thesis.yml")
    runs = load_thesis_runs()
    raw = yaml.safe_load((ROOT / "experiments" / "thesis.yml").read_text())
    descriptions = {run["id"]: run["description"] for run in raw["runs"]}
    assert raw == thesis_study(descriptions)
    assert [config.id for config in study.configurations] == list(runs)
    assert all(config.overrides == thesis_config(runs[config.id]) for config in study.configurations)
    assert descriptions["C-50"] == "LR scheduler adjustment: milestones = [67, 82, 95, 107]"
    settings = ["--set", f"stanford_data_path={prepared}", "--set", f"output_path={tmp_path / 'output'}"]
    assert sweep.main([str(ROOT / "experiments" / "thesis.yml"), "-c", str(TEMPLATE), *settings, "--check"]) == 0
    search = ROOT / "experiments" / "c50_search.yml"
    assert sweep.main([str(search), "-c", str(TEMPLATE), *settings, "--check"]) == 0, capsys.readouterr().err


def test_a_runs_configuration_keeps_the_order_of_its_transforms(prepared, tmp_path):
    """Transforms apply in the order listed: C-18's record puts the flip before the affine and the jitter."""
    study = open_study(ROOT / "experiments" / "thesis.yml", [("stanford_data_path", str(prepared))], str(TEMPLATE))
    recorded = study.configuration("C-18").overrides["image_augmentations"]
    assert list(recorded)[:2] == ["RandomHorizontalFlip", "RandomAffine"]
    cfg = run_config(study, study.configuration("C-18").overrides, 0)
    assert list(cfg.image_augmentations) == list(recorded)


def test_each_worker_gets_its_own_gpu_round_robin_or_a_share_of_the_cpu():
    assert [env["CUDA_VISIBLE_DEVICES"] for env in worker_environments(3, ["0", "1"], 0)] == ["0", "1", "0"]
    assert [env["CUDA_VISIBLE_DEVICES"] for env in worker_environments(2, None, 4)] == ["0", "1"]
    on_cpu = worker_environments(2, None, 0)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in on_cpu] == ["", ""]
    assert on_cpu[0]["OMP_NUM_THREADS"] == str(max(1, available_cpus() // 2))
    assert on_cpu[0]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert worker_environments(1, ["cpu"], 8)[0]["CUDA_VISIBLE_DEVICES"] == ""
    groups = worker_environments(4, None, 8, processes=2)  # 8 GPUs as 4 workers of 2
    assert [env["CUDA_VISIBLE_DEVICES"] for env in groups] == ["0,1", "2,3", "4,5", "6,7"]
    assert worker_environments(2, ["cpu"], 0, processes=2)[0]["OMP_NUM_THREADS"] == str(max(1, available_cpus() // 4))


def test_a_worker_starts_without_another_launchers_variables_and_knows_its_launcher(monkeypatch):
    """Inside a SLURM batch job or torchrun, the workers must not take themselves for that launcher's tasks."""
    for name, value in {"SLURM_NTASKS": "8", "SLURM_PROCID": "3", "RANK": "1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    environment = launch_environment({"CUDA_VISIBLE_DEVICES": "2,3"})
    assert not {"SLURM_NTASKS", "SLURM_PROCID", "RANK", "MASTER_PORT"} & set(environment)
    assert environment["CUDA_VISIBLE_DEVICES"] == "2,3" and environment["CARS_PARENT_PID"] == str(os.getpid())


def test_the_launcher_creates_the_mlflow_store_and_experiment_before_the_workers_start(prepared, tmp_path):
    path = write_study(tmp_path, prepared, {"runs": [
        {"id": "A", "overrides": {"mlflow_experiment": "first"}},
        {"id": "B", "overrides": {"mlflow_experiment": "second"}},
        {"id": "C", "overrides": {"mlflow_experiment": "third", "log_to_mlflow": False}}]})
    prepare_tracking(load_study(path))
    client = MlflowClient(f"sqlite:///{tmp_path / 'output' / 'mlflow.db'}")
    names = {experiment.name for experiment in client.search_experiments()}
    assert {"first", "second"} <= names and "third" not in names


def test_a_run_that_starts_and_ends_between_two_updates_still_gets_its_started_line(prepared, tmp_path):
    """The launcher's lines come from polling the storage: a run quicker than a poll is seen only as ended."""
    study = open_study(write_study(tmp_path, prepared, THREE_RUNS))
    optuna_study = optuna.create_study(direction="maximize")
    stream = io.StringIO()
    progress = StudyProgress(study, optuna_study, [], stream=stream)
    trial = optuna_study.ask()
    trial.set_user_attr("config", "A")
    trial.set_user_attr("seed", 42)
    trial.report(0.5, 1)
    optuna_study.tell(trial, 0.5)
    progress.update()
    progress.close()
    name = study.run_name(run_of(optuna_study.trials[0]))
    assert stream.getvalue().splitlines()[-2:] == [f"{name}: started",
                                                   f"{name}: finished, best_valid_acc 0.5000 after 1 epoch [1/6 runs done]"]


def test_a_worker_killed_right_after_claiming_a_trial_is_noticed(prepared, tmp_path):
    """Killed between its claim and the first beat of its heartbeat thread, its trial is still lost and queued
    again (Optuna never counts a RUNNING trial that has no heartbeat as lost: the study would wait forever)."""
    study = open_study(write_study(tmp_path, prepared, {"runs": [{"id": "A", "overrides": {}}]}))
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_s=1, grace_s=1)
    optuna_study = open_optuna_study(study, storage)
    queue_runs(study, optuna_study)
    assert claim_trial(study, optuna_study, storage) is not None  # and its worker dies here
    time.sleep(2.5)
    fail_lost_trials(optuna_study, storage, max_retries=1)
    assert [trial.state for trial in optuna_study.get_trials()] == [TrialState.FAIL, TrialState.WAITING]


def test_a_lost_run_is_taken_back_before_new_ones_and_the_private_optuna_call_still_finds_it(prepared, tmp_path):
    """Stale trials are found by RDBStorage._get_stale_trial_ids (Optuna's own fail_stale_trials calls it; it has
    no public equivalent that lets the trial be given its reason before it fails). Optuna is pinned in
    prod_requirements.txt; an upgrade that changes the call fails here first."""
    pinned = next(line.split("==")[1].strip() for line in (ROOT / "prod_requirements.txt").read_text().splitlines()
                  if line.startswith("optuna=="))
    assert optuna.__version__ == pinned, f"optuna {optuna.__version__} is not the pinned {pinned}: recheck " \
                                         "sweeps/storage.py's use of RDBStorage._get_stale_trial_ids"
    study = open_study(write_study(tmp_path, prepared, {"runs": [{"id": "A"}, {"id": "B"}, {"id": "C"}]}))
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_s=1, grace_s=1)
    optuna_study = open_optuna_study(study, storage)
    queue_runs(study, optuna_study)
    first = claim_trial(study, optuna_study, storage)
    assert run_of(first).config_id == "A" and storage._get_stale_trial_ids(optuna_study._study_id) == []
    time.sleep(2.5)  # its worker died: no heartbeat for longer than the grace period
    assert storage._get_stale_trial_ids(optuna_study._study_id) == [first._trial_id]
    fail_lost_trials(optuna_study, storage)
    retry = claim_trial(study, optuna_study, storage)
    assert run_of(retry).config_id == "A" and retry.number == 3  # the retry, queued after B and C, goes first
    assert run_of(claim_trial(study, optuna_study, storage)).config_id == "B"
