"""The dashboard for real: a real `mlflow server` on 127.0.0.1 that train.py, sweep.py (a search study and its
report) and compare_runs.py (the thesis's C-50) log to, read back with MlflowClient and in headless Chromium with
a new profile (the printed URL, the study's row expanding, C-50's 130 epochs); `make dashboard`'s module serving
the same store with a real `mlflow ui` until Ctrl-C. The browser tests skip, naming what to install, without
Debian's chromium and chromium-driver."""

from __future__ import annotations

import base64
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from tests.mlflow_browser import (assistant_panel_open, browser_missing, column_cells, column_headers, expand_group,
                                  open_runs_table, run_names, start_browser)
from utils.mlflow.dashboard import (GROUPS_VIEW, TABLE_VIEW, VIEW_TAG_PREFIX, encode_view, open_dashboard_experiment,
                                   view_state, write_views)
from utils.mlflow.server import free_port, port_problem, start_server
from utils.mlflow.store import mlflow_client
from utils.runs.table import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "config_template.yml"
# The issue's column list, in its order, as the run table names the columns ...
DASHBOARD_COLUMNS = ["run_id", "state", "duration", "runtime", "architecture", "image_size", "batch_size",
                     "parameters", "grayscale", "image_augmentations", "tensor_augmentations", "crop_to_bboxes",
                     "erase_background", "loss", "optimizer", "lr", "weight_decay", "lr_scheduler", "dropout",
                     "output_channels", "seed", "epochs", "stop_reason", "train_loss_min", "valid_loss_min",
                     "train_acc_max", "valid_acc_max", "tags"]
# ... and as MLflow's runs table heads them (Created: the UI's own column, always shown beside the name)
HEADERS = ["Run Name", "Created", "state", "Duration", "runtime", "architecture", "image_size", "batch_size",
           "parameters", "convert_to_grayscale", "image_augmentations", "tensor_augmentations", "crop_to_bboxes",
           "erase_background", "loss_function", "optimizer", "optimizer_params.lr", "optimizer_params.weight_decay",
           "lr_scheduler", "dropout", "output_channels", "seed", "epochs_last", "stop_reason", "train_loss_min",
           "valid_loss_min", "train_acc_max", "valid_acc_max", "tags"]
NOISE = ("Creating initial MLflow database tables", "Updating database tables", "alembic", "not found. Creating it",
         "Deprecat", "View run")
URL = re.compile(r"http://\S+")


def ui_state(tag_value: str) -> dict:
    """A view's state read as MLflow's UI reads it: a JSON envelope, its state deflate;base64(zlib(JSON))."""
    envelope = json.loads(tag_value)
    assert envelope["state"].startswith("deflate;")
    return json.loads(zlib.decompress(base64.b64decode(envelope["state"].removeprefix("deflate;"))))


def test_the_view_is_the_issues_columns_best_first_written_once_and_again_when_the_columns_change(tmp_path):
    assert [column.name for column in COLUMNS if column.dashboard] == DASHBOARD_COLUMNS
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, experiment_id = open_dashboard_experiment(uri, "cars")
    tag = VIEW_TAG_PREFIX + TABLE_VIEW.key
    first = client.get_experiment(experiment_id).tags[tag]
    state = ui_state(first)
    assert [column.split("`")[1] if "`" in column else column for column in state["columnOrder"]] == [
        "Run Name", "runDateAndNestInfo", "state", "duration", *HEADERS[4:]]
    assert state["orderByKey"] == "metrics.`valid_acc_max`" and state["orderByAsc"] is False
    assert json.loads(first)["name"] == "Runs table: best valid_acc first"
    assert ui_state(client.get_experiment(experiment_id).tags[VIEW_TAG_PREFIX + GROUPS_VIEW.key])[
        "orderByKey"] == "attributes.start_time"  # the only sort under which the UI nests a group's runs

    assert write_views(client, experiment_id) == []  # the same view: left as it is
    assert client.get_experiment(experiment_id).tags[tag] == first
    older = view_state(["tags.mlflow.runName", "metrics.valid_acc_max"], "metrics.valid_acc_max")
    client.set_experiment_tag(experiment_id, tag, encode_view(TABLE_VIEW.name, older, 1000, 1000))
    assert write_views(client, experiment_id) == [TABLE_VIEW.key]  # an older column list: written again
    rewritten = json.loads(client.get_experiment(experiment_id).tags[tag])
    assert ui_state(client.get_experiment(experiment_id).tags[tag]) == state and rewritten["createdAt"] == 1000


@dataclass
class Store:
    """The server's store after the module's runs, and what each command printed."""

    server_url: str
    db: Path
    train_output: str
    sweep_output: str
    report_output: str
    import_outputs: list[str]


def run(command: list[str], cwd: Path = ROOT, timeout: int = 900) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    return output


def search_study(tmp: Path, prepared: Path, uri: str) -> Path:
    """A search study of two one-epoch runs on the tiny data, logging to uri."""
    base = {"config": str(TEMPLATE), "overrides": {
        "stanford_data_path": str(prepared), "output_path": str(tmp / "output"), "logging_dir": str(tmp / "logs"),
        "image_size": [32, 32], "num_epochs": 1, "batch_size": 8, "num_workers": 0, "output_channels": 64,
        "log_to_tensorboard": False, "mlflow_tracking_uri": uri}}
    body = {"name": "lr", "base": base, "search": {"trials": 2, "sampler": {"type": "random", "seed": 0},
                                                   "space": {"optimizer_params.lr": {"type": "categorical",
                                                                                     "choices": [0.001, 0.01]}}}}
    path = tmp / "lr.yml"
    path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def store(make_prepared, tmp_path_factory):
    """A real `mlflow server` with the runs of train.py, of a search study (and its report) and the thesis's C-50,
    each logged by its command-line tool as a user runs it."""
    prepared = make_prepared("dashboard_data", num_classes=3, images_per_class=8, min_width=40, max_width=64)
    tmp = tmp_path_factory.mktemp("dashboard")
    db = tmp / "server.db"
    with (tmp / "server.log").open("w") as log:
        server = start_server(f"sqlite:///{db}", free_port(), command="server",
                              artifacts_destination=tmp / "artifacts", output=log)
        try:
            train = run([sys.executable, "train.py", "-c", str(TEMPLATE), "-d", str(prepared),
                         *[item for setting in ("image_size=[32, 32]", "num_epochs=1", "batch_size=8",
                                                "num_workers=0", "output_channels=64", "tags=[mine]",
                                                f"output_path={tmp / 'output'}", f"logging_dir={tmp / 'logs'}",
                                                f"mlflow_tracking_uri={server.url}") for item in ("--set", setting)]])
            study = search_study(tmp, prepared, server.url)
            sweep = run([sys.executable, "sweep.py", str(study), "--heartbeat", "2", "--grace", "10"])
            report = run([sys.executable, "sweep.py", "--report", str(study)])
            elsewhere = tmp / "elsewhere"  # a folder without output/: only the thesis's run is imported
            elsewhere.mkdir()
            imports = [run([sys.executable, str(ROOT / "compare_runs.py"), "--to-mlflow", "--reference", "C-50",
                            "--mlflow-uri", server.url], cwd=elsewhere) for _ in range(2)]
            yield Store(server.url, db, train, sweep, report, imports)
        finally:
            server.stop()


def runs_by_name(client, experiment: str) -> dict:
    return {run.info.run_name: run for run in client.search_runs(
        [client.get_experiment_by_name(experiment).experiment_id])}


def test_runs_are_named_for_what_they_are_a_study_is_their_parent_and_nothing_noisy_is_printed(store):
    for output in (store.train_output, store.sweep_output, *store.import_outputs):
        assert not [noise for noise in NOISE if noise in output], output[-3000:]
    client = mlflow_client(store.server_url)
    runs = runs_by_name(client, "cars")
    (mine,) = [name for name in runs if re.fullmatch(r"ghost \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", name)]
    study_runs = sorted(name for name in runs if name.startswith("lr/"))
    assert [name.split()[0] for name in study_runs] == ["lr/T-000", "lr/T-001"]
    for name in study_runs:
        assert name.split()[1] == f"optimizer_params.lr={runs[name].data.params['optimizer_params.lr']}"
    parent = runs["lr"]
    assert {runs[name].data.tags["mlflow.parentRunId"] for name in study_runs} == {parent.info.run_id}
    assert "mlflow.parentRunId" not in runs[mine].data.tags
    assert parent.data.tags["state"] == "finished" and parent.info.status == "FINISHED"
    assert parent.data.params["image_size"] == "32x32" and "optimizer_params.lr" not in parent.data.params
    assert parent.data.metrics["valid_acc_max"] == max(runs[name].data.metrics["valid_acc_max"] for name in study_runs)
    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id)}
    assert {"report.csv", "report.png", "optimization_history.png", "param_importances.png",
            "intermediate_values.png"} <= artifacts
    for name in (mine, *study_runs):
        run = runs[name]
        assert run.data.tags["state"] == "finished" and run.data.tags["stop_reason"] == "max_epochs"
        assert run.data.params["image_size"] == "32x32" and run.data.params["tensor_augmentations"] == "off"
        for key in ("valid_acc_max", "train_acc_max", "valid_loss_min", "train_loss_min"):
            value = run.data.metrics[key]
            assert value == round(value, 4), (key, value)  # shown as the table shows it, no float32 noise
    assert "1 run(s) imported" in store.import_outputs[0] and "1 already there" in store.import_outputs[1]


@pytest.fixture(scope="module")
def browser():
    missing = browser_missing()
    if missing:
        pytest.skip(f"no browser to look at the dashboard with ({missing})")
    browser = start_browser()
    yield browser.driver
    browser.close()


def printed_url(output: str) -> str:
    """The URL of the one "dashboard: <URL>" in a command's output."""
    (url,) = re.findall(r"dashboard: (http://\S+)", output)
    return url


def test_the_url_train_py_prints_opens_the_thesis_table_best_valid_acc_first(browser, store):
    url = printed_url(store.train_output)
    assert url.startswith(store.server_url + "/#/experiments/") and "workflowType=machine_learning" in url
    open_runs_table(browser, url, "valid_acc_max")
    assert [text for _, text in column_headers(browser)] == HEADERS
    accuracies = [float(text) for text in column_cells(browser, "metrics.`valid_acc_max`")]
    assert len(accuracies) == 5 and accuracies == sorted(accuracies, reverse=True)  # 3 runs, the study's row, C-50


def test_a_study_is_one_row_that_expands_to_its_runs(browser, store):
    url = printed_url(store.train_output).replace(TABLE_VIEW.key, GROUPS_VIEW.key)
    open_runs_table(browser, url, "Created")
    folded = run_names(browser)
    assert "lr" in folded and not [name for name in folded if name.startswith("lr/")]
    expand_group(browser, "lr")
    names = run_names(browser)
    start = names.index("lr")
    assert sorted(names[start + 1:start + 3]) == sorted(name for name in names if name.startswith("lr/"))
    assert len(names) == len(folded) + 2


def test_the_thesis_import_lists_c50_beside_your_runs_with_its_130_epochs_and_marked_as_imported(browser, store):
    url = printed_url(store.import_outputs[0])
    assert url == printed_url(store.train_output)  # the same table: the thesis's best run beside yours
    open_runs_table(browser, url, "valid_acc_max")
    names = run_names(browser)
    assert names[0] == "C-50" and len(names) == 5  # the best valid_acc first
    assert column_cells(browser, "metrics.`epochs_last`")[0] == "130"
    assert column_cells(browser, "metrics.`valid_acc_max`")[0] == "0.8379"
    assert column_cells(browser, "tags.`state`")[0] == "imported, no duration recorded"
    client = mlflow_client(store.server_url)
    (c50,) = [run for run in runs_by_name(client, "cars").values() if run.info.run_name == "C-50"]
    assert c50.info.start_time == int(datetime(2020, 9, 22, 6, 8, 10).timestamp() * 1000)  # its record's
    assert c50.info.end_time is None and c50.info.status == "FINISHED"  # no duration recorded, none made up


def test_mlflow_opens_its_assistant_panel_at_a_first_visit_as_docs_tracking_md_says(store):
    """MLflow 3.17.2 opens its Assistant panel by itself at the first visit of a browser to a local server, with no
    setting to keep it closed: docs/tracking.md says so, and the screenshots show the page with it."""
    fresh = start_browser(1600, 1000)
    try:
        open_runs_table(fresh.driver, printed_url(store.train_output), "valid_acc_max", close_assistant=False)
        assert assistant_panel_open(fresh.driver)
    finally:
        fresh.close()
    assert "Assistant" in (ROOT / "docs" / "tracking.md").read_text(encoding="utf-8")


class Output:
    """A process's output lines, read as they come (in a thread: the process runs on meanwhile)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: queue.Queue = queue.Queue()
        self.read: list[str] = []
        self.thread = threading.Thread(target=lambda: [self.lines.put(line) for line in process.stdout], daemon=True)
        self.thread.start()

    def until(self, first: str, timeout_s: float = 300) -> list[str]:
        """The lines up to the first that starts with first (stripped); fails after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while not self.read or not self.read[-1].strip().startswith(first):
            try:
                self.read.append(self.lines.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"no line starting with {first!r} in {timeout_s} s: {''.join(self.read)}")
        return self.read

    def all(self) -> str:
        """Every line, once the process has closed its output."""
        self.thread.join(timeout=60)
        while not self.lines.empty():
            self.read.append(self.lines.get())
        return "".join(self.read)


def test_the_dashboard_module_serves_a_store_with_mlflow_ui_quietly_until_ctrl_c(browser, store):
    port = free_port()
    command = [sys.executable, "-m", "utils.mlflow.dashboard", "--db", str(store.db), "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(process)
    try:
        lines = output.until("cars:")
        urls = {line.split(":")[0].strip(): URL.search(line).group(0) for line in lines if URL.search(line)}
        assert list(urls) == ["cars"] and urls["cars"].startswith(f"http://127.0.0.1:{port}/#/exp"), lines
        open_runs_table(browser, urls["cars"], "valid_acc_max")  # the server answers the UI's requests ...
        assert [text for _, text in column_headers(browser)] == HEADERS
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    printed = output.all()  # ... and prints nothing about them, nor when it stops
    assert process.returncode == 0 and not [noise for noise in NOISE if noise in printed], printed
    assert printed.strip().endswith("dashboard stopped"), printed
    assert port_problem("127.0.0.1", port) is None  # the server and its worker are gone


def test_sigterm_stops_the_dashboard_and_its_server_too(store):
    port = free_port()
    command = [sys.executable, "-m", "utils.mlflow.dashboard", "--db", str(store.db), "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(process)
    try:
        output.until("cars:")
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert process.returncode == 0 and output.all().strip().endswith("dashboard stopped")
    assert port_problem("127.0.0.1", port) is None  # mlflow ui, in its own process group, stopped as well


def test_the_dashboard_module_names_a_missing_store_and_a_port_in_use(tmp_path, store, capsys):
    from utils.mlflow import dashboard

    assert dashboard.main(["--db", str(tmp_path / "none.db")]) == 2
    assert f"{tmp_path / 'none.db'}: no MLflow store there yet" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert dashboard.main(["--db", str(store.db), "--port", str(port)]) == 2
    assert f"127.0.0.1:{port} cannot be used" in capsys.readouterr().err


def test_make_demos_last_lines_name_the_url_and_how_to_serve_it_and_start_nothing(store, capsys):
    from utils.mlflow import dashboard

    port = free_port()
    assert dashboard.main(["--db", str(store.db), "--port", str(port), "--url-only"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"make dashboard DASHBOARD_DB={store.db} DASHBOARD_PORT={port}, then open"), lines
    client = mlflow_client(store.server_url)
    assert lines[1:] == [f"  {name}: http://127.0.0.1:{port}/#/experiments/"
                         f"{client.get_experiment_by_name(name).experiment_id}/runs?viewStateShareKey=runs-table"
                         "&workflowType=machine_learning" for name in ("cars",)]
    assert port_problem("127.0.0.1", port) is None  # nothing serves it
