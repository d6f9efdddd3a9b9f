"""The thesis's 56 recorded runs: they load, pass train.py's checks, size `ghost` exactly, and C-50 is the template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import train
from datasets.preparation import prepare_stanford_dataset
from datasets.synthetic import generate_synthetic_stanford
from models.arch_dict import build_network
from models.sizes import count_parameters
from utils.config import config_dict, load_config
from utils.runs.thesis import THESIS_RUNS_PATH, load_thesis_runs, reference_record, thesis_config

TEMPLATE = Path(__file__).resolve().parents[1] / "config_template.yml"
RUNS = load_thesis_runs()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("thesis_records")
    generate_synthetic_stanford(root / "raw", num_classes=3, images_per_class=4, min_width=40, max_width=64)
    prepare_stanford_dataset(root / "raw", root / "stanford", progress=False)
    return root


def test_records_hold_the_56_runs_with_the_thesis_figures():
    assert len(RUNS) == 56 and list(RUNS)[0] == "C-1" and list(RUNS)[-1] == "C-66"
    assert [record["id"] for record in json.loads(THESIS_RUNS_PATH.read_text())] == list(RUNS)
    best = reference_record(RUNS["C-50"])
    assert max(row["valid_acc"] for row in best.metrics) == pytest.approx(0.8379, abs=5e-5)
    assert max(row["train_acc"] for row in best.metrics) == pytest.approx(0.9894, abs=5e-5)
    assert min(row["valid_loss"] for row in best.metrics) == pytest.approx(1.521, abs=5e-4)
    assert [row["epoch"] for row in best.metrics] == list(range(1, 131))
    assert max(row["valid_acc"] for row in RUNS["C-1"].metrics) == pytest.approx(0.0815, abs=5e-5)


def test_recorded_settings_take_this_projects_key_names():
    config = thesis_config(RUNS["C-63"])
    assert config["architecture"] == "ghost" and config["image_size"] == [227, 227]
    assert config["num_epochs"] == 200 and config["output_channels"] == 320 and config["batch_size"] == 64
    assert config["lr_scheduler_params"] == {"lr_lambda": "lambda epoch: pow(0.0001/0.001, 1/67) ** epoch"}
    assert thesis_config(RUNS["C-8"])["convert_to_grayscale"] is True
    assert "normalization_params_rgb" not in thesis_config(RUNS["C-1"])


@pytest.mark.parametrize("run_id", list(RUNS))
def test_every_recorded_configuration_passes_train_py_checks(run_id, prepared, capsys):
    config = {**thesis_config(RUNS[run_id]), "stanford_data_path": str(prepared / "stanford"),
              "output_path": str(prepared / "output"), "logging_dir": str(prepared / "logs")}
    path = prepared / f"{run_id}.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert train.main(["-c", str(path), "--check"]) == 0, capsys.readouterr().err
    assert not (prepared / "output").exists()


def test_check_reports_a_configuration_the_thesis_could_not_have_run(prepared, capsys):
    config = {**thesis_config(RUNS["C-64"]), "stanford_data_path": str(prepared / "stanford"),
              "lr_scheduler_params": {"lr_lambda": "lambda step: 0.955 ** step"}}
    path = prepared / "changed.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert train.main(["-c", str(path), "--check"]) == 2
    assert "lr_lambda" in capsys.readouterr().err


@pytest.mark.parametrize("run_id", list(RUNS))
def test_ghost_has_the_parameter_count_each_run_recorded(run_id):
    config = thesis_config(RUNS[run_id])
    with torch.device("meta"):
        network = build_network(config["architecture"], num_classes=196,
                                img_channels=1 if config["convert_to_grayscale"] else 3,
                                dropout=config["dropout"], output_channels=config["output_channels"])
    assert count_parameters(network) == RUNS[run_id].parameters


def test_template_is_run_c50_on_every_training_key():
    template = config_dict(load_config(TEMPLATE))
    recorded = thesis_config(RUNS["C-50"])
    assert {key: template[key] for key in recorded} == recorded
