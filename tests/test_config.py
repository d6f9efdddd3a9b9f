"""Configuration schema, template, loading, overrides and every kind of config problem."""

from pathlib import Path

import pytest
import yaml

from dataclasses import fields, is_dataclass

import models
from datasets.settings import data_settings
from datasets.transforms import config_problems as data_config_problems
from utils.config import Config, ConfigError, load_config, parse_overrides, save_config, tracked_params
from utils.config.loading import apply_overrides, override_origins
from utils.config.template import key_rows, key_table_markdown, template_text

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "config_template.yml"
CHECKS = (data_config_problems, models.config_problems)


def write(tmp_path: Path, data: dict, name: str = "config.yml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def problems_of(path: Path, overrides=(), checks=CHECKS) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, parse_overrides(overrides), checks)
    return caught.value.problems


def test_template_keys_are_the_schema_keys_in_order():
    raw = yaml.safe_load(TEMPLATE.read_text())
    assert list(raw) == [item.name for item in fields(Config)]
    defaults = Config()
    for item in fields(Config):
        value = getattr(defaults, item.name)
        if is_dataclass(value):
            assert list(raw[item.name]) == [child.name for child in fields(value)]


def test_template_is_the_schema_defaults_and_every_key_has_a_comment():
    assert load_config(TEMPLATE, checks=CHECKS) == Config()
    assert TEMPLATE.read_text() == template_text(), "config_template.yml differs: python -m utils.config.template"
    for line in TEMPLATE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert " # " in line, f"template line without a comment: {line!r}"
    assert "image_size: &img_size [227, 227]" in TEMPLATE.read_text()


def test_schema_rows_cover_every_key_with_default_and_comment():
    rows = key_rows()
    keys = [key for key, _, _ in rows]
    assert keys[:2] == ["loglevel", "logging_dir"]
    assert "normalization_params_rgb.mean" in keys and "seed" in keys and "pretrained_weights" in keys
    assert all(comment for _, _, comment in rows)
    assert dict((k, d) for k, d, _ in rows)["lr_scheduler_params"] == "{gamma: 0.1, milestones: [67, 82, 95, 107]}"
    table = key_table_markdown()
    assert table.count("\n") == len(rows) + 2 and "| `batch_size` | `64` |" in table


def test_missing_keys_take_defaults_and_missing_config_explains_the_template(tmp_path):
    cfg = load_config(write(tmp_path, {"batch_size": 8}))
    assert cfg.batch_size == 8 and cfg.seed == 42 and cfg.normalization_params_grayscale.std == [0.2545]
    with pytest.raises(ConfigError, match="cp config_template.yml"):
        load_config(tmp_path / "nowhere" / "config.yml")


def test_unknown_keys_get_a_suggestion_with_their_path(tmp_path):
    path = write(tmp_path, {"batch_sise": 8, "normalization_params_rgb": {"mean": [0.5], "sdt": [0.2]}})
    problems = problems_of(path)
    assert "batch_sise: unknown key; did you mean batch_size?" in problems
    assert "normalization_params_rgb.sdt: unknown key; did you mean std?" in problems


def test_wrong_types_are_reported_with_the_key(tmp_path):
    path = write(tmp_path, {"batch_size": "64", "image_size": [227], "normalize": "yes", "dropout": True,
                            "tags": "one", "precision": "17", "normalization_params_rgb": {"mean": ["a"]}})
    problems = "\n".join(problems_of(path))
    for fragment in ("batch_size: expected integer, got str '64'", "image_size: expected 2 values",
                     "normalize: expected boolean", "dropout: expected number, got bool", "tags: expected list",
                     "precision: '17' is not one of", "normalization_params_rgb.mean: expected a list of number"):
        assert fragment in problems


def test_out_of_range_numbers_and_wrong_lengths_are_reported_with_the_bounds(tmp_path):
    path = write(tmp_path, {"batch_size": 0, "num_epochs": -1, "image_size": [0, 227], "dropout": 1.5,
                            "early_stopping_patience": -2, "seed": -1, "num_workers": -1, "prefetch_factor": 0,
                            "num_nodes": 0, "normalization_params_rgb": {"mean": [0.5, 0.5], "std": [0.2, 0, 0.2]},
                            "normalization_params_grayscale": {"std": [-0.1]}})
    problems = problems_of(path)
    expected = ("batch_size: 0 is out of range; value must be at least 1",
                "num_epochs: -1 is out of range; value must be at least 1",
                "image_size: [0, 227] is out of range; values must be at least 1",
                "dropout: 1.5 is out of range; value must be at least 0 and below 1",
                "early_stopping_patience: -2 is out of range; value must be at least 0",
                "seed: -1 is out of range; value must be at least 0 and at most 4294967295",
                "num_workers: -1 is out of range", "prefetch_factor: 0 is out of range", "num_nodes: 0 is out of range",
                "normalization_params_rgb.mean: expected 3 values, got 2",
                "normalization_params_rgb.std: [0.2, 0, 0.2] is out of range; values must be above 0",
                "normalization_params_grayscale.std: [-0.1] is out of range")
    for fragment in expected:
        assert any(fragment in problem for problem in problems), fragment
    assert len(problems) == len(expected)


def test_bounds_accept_their_edges_and_null(tmp_path):
    path = write(tmp_path, {"batch_size": 1, "num_epochs": 1, "dropout": 0, "early_stopping_patience": 0,
                            "seed": 4294967295, "num_workers": 0, "prefetch_factor": None})
    cfg = load_config(path, (), CHECKS)
    assert (cfg.dropout, cfg.seed, cfg.num_workers) == (0, 4294967295, 0)


def test_key_table_states_the_bounds():
    rows = {key: comment for key, _, comment in key_rows()}
    assert rows["batch_size"].endswith("; at least 1 and at most 4096")
    assert rows["seed"].endswith("; at least 0 and at most 4294967295")
    assert rows["normalization_params_rgb.std"].endswith("; each above 0")


def test_bad_names_list_valid_ones_and_every_problem_comes_together(tmp_path):
    path = write(tmp_path, {"architecture": "ghostnet", "optimizer": "Adamw", "lr_scheduler": "MultiStep",
                            "loss_function": "CrossEntropy", "image_augmentations": {"RandomFlip": {"p": 0.5}},
                            "batch_sise": 3, "num_epochs": "many"})
    problems = problems_of(path)
    text = "\n".join(problems)
    assert len(problems) >= 7
    assert "optimizer: unknown name 'Adamw'; did you mean AdamW" in text
    assert "lr_scheduler: unknown name 'MultiStep'; did you mean MultiStepLR" in text
    assert "loss_function: unknown name 'CrossEntropy'" in text and "CrossEntropyLoss" in text
    assert "ghostnet" in text and "RandomFlip" in text and "batch_sise" in text and "num_epochs" in text


@pytest.mark.parametrize("settings, fragment", [
    ({"lr_scheduler": "LambdaLR", "lr_scheduler_params": {"lr_lambda": "1 / (epoch - 3)"}, "num_epochs": 5},
     "lr_scheduler_params.lr_lambda: '1 / (epoch - 3)': cannot be evaluated at epoch 3: ZeroDivisionError: float "
     "division by zero"),
    ({"lr_scheduler": "LambdaLR", "lr_scheduler_params": {"lr_lambda": "-1"}},
     "LambdaLR sets the learning rate to -0.001 at epoch 1"),
    ({"lr_scheduler": "OneCycleLR", "lr_scheduler_params": {"max_lr": 0.01, "total_steps": 2}, "num_epochs": 3},
     "OneCycleLR fails at epoch 3 of num_epochs 3"),
    ({"lr_scheduler": "ReduceLROnPlateau", "lr_scheduler_params": {"patience": "abc"}},
     "ReduceLROnPlateau fails at epoch 1"),
    ({"lr_scheduler_params": {"gamma": 0.1, "milestones": ["a", 5]}}, "milestones: ['a', 5] must be epoch numbers"),
    ({"loss_function": "MSELoss"}, "loss_function: MSELoss with these loss_params does not turn logits"),
    ({"loss_function": "CrossEntropyLoss", "loss_params": {"reduction": "none"}}, "into one number (it gives (2,))"),
])
def test_schedules_are_stepped_through_the_run_and_losses_tried_on_logits(tmp_path, settings, fragment):
    problems = problems_of(write(tmp_path, settings))
    assert len(problems) == 1 and fragment in problems[0], problems


def test_bad_parameters_of_optimizer_scheduler_and_loss(tmp_path):
    path = write(tmp_path, {"optimizer_params": {"lr": 0.001, "weight_decy": 0.1},
                            "lr_scheduler": "StepLR", "lr_scheduler_params": {"gama": 0.5},
                            "loss_params": {"epsilon": 1.5}})
    text = "\n".join(problems_of(path))
    assert "optimizer_params: AdamW: unknown argument(s) weight_decy" in text
    assert "did you mean weight_decay" in text
    assert "lr_scheduler_params: StepLR: unknown argument(s) gama (gama -> did you mean gamma?); missing required " \
           "argument(s) step_size" in text
    assert "loss_params: LabelSmoothingCrossEntropy rejects them: epsilon must lie in [0, 1]" in text


@pytest.mark.parametrize("expression, fragment", [
    ("__import__('os').system('true')", "only min(...), max(...) and pow(x, y)"),
    ("lambda x: 0.9 ** x", "exactly one argument, epoch"),
    ("lambda epoch, step=1: 0.9 ** epoch", "exactly one argument, epoch"),
    ("lambda epoch: __import__('os')", "only min(...), max(...) and pow(x, y)"),
    ("pow(2, epoch, 5)", "pow(...) takes 2 arguments"),
    ("epoch.real", "Attribute is not allowed"),
    ("1 / epoch", "division by zero"),
    ("lr * 2", "unknown name 'lr'"),
    ("0.9 **", "not an arithmetic expression"),
])
def test_lr_lambda_expressions_are_checked_safely(tmp_path, expression, fragment):
    path = write(tmp_path, {"lr_scheduler": "LambdaLR", "lr_scheduler_params": {"lr_lambda": expression}})
    assert any(fragment in problem for problem in problems_of(path))


def test_overrides_are_yaml_typed_and_nested(tmp_path):
    path = write(tmp_path, {"lr_scheduler_params": None})
    cfg = load_config(path, parse_overrides([
        "optimizer_params.lr=0.003", "image_size=[64, 64]", "tags=[a, b]", "description=two words",
        "lr_scheduler=StepLR", "lr_scheduler_params.step_size=2", "early_stopping_patience=null"]), CHECKS)
    assert cfg.optimizer_params == {"lr": 0.003, "weight_decay": 0.6}
    assert cfg.image_size == [64, 64] and cfg.tags == ["a", "b"] and cfg.description == "two words"
    assert cfg.lr_scheduler_params == {"step_size": 2} and cfg.early_stopping_patience is None
    overridden = apply_overrides({}, parse_overrides(["normalization_params_rgb.mean=[0.5, 0.5, 0.5]"]))
    assert overridden["normalization_params_rgb"] == {"mean": [0.5, 0.5, 0.5], "std": [0.2594, 0.2585, 0.2635]}
    assert "optimizer_parms.lr: unknown key" not in problems_of(path, ["optimizer_parms.lr=1"])[0]
    assert problems_of(path, ["optimizer_parms.lr=1"])[0].startswith("optimizer_parms: unknown key; did you mean")
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, parse_overrides(["batch_size"]))


def test_neptune_needs_its_settings_and_the_token_never_reaches_disk(tmp_path, monkeypatch):
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    path = write(tmp_path, {"log_to_neptune": True})
    text = "\n".join(problems_of(path))
    assert "neptune_username" in text and "neptune_project_name" in text and "NEPTUNE_API_TOKEN" in text
    cfg = load_config(path, parse_overrides(["neptune_username=me", "neptune_project_name=cars",
                                             "neptune_api_token=SECRET-123"]))
    save_config(cfg, tmp_path / "saved.yml")
    saved = (tmp_path / "saved.yml").read_text()
    assert "SECRET-123" not in saved and yaml.safe_load(saved)["neptune_username"] == "me"
    assert "neptune_api_token" not in tracked_params(cfg)


def test_config_maps_to_settings_and_plain_keyword_arguments():
    cfg = load_config(TEMPLATE, parse_overrides(["convert_to_grayscale=true"]))
    data = data_settings(cfg)
    preprocessing = data.preprocessing
    assert preprocessing.mean == (0.4627,) and preprocessing.std == (0.2545,) and preprocessing.image_size == (227, 227)
    assert data.data_path == "input/stanford" and data.loading.seed == 42
    assert data.augmentation.tensor is None and list(data.augmentation.image) == ["RandomHorizontalFlip",
                                                                                  "RandomAffine", "ColorJitter"]
    assert (cfg.architecture, cfg.dropout, cfg.output_channels, cfg.pretrained_weights) == ("ghost", 0.2, 320, None)
    assert cfg.lr_scheduler_params["milestones"] == [67, 82, 95, 107]
    params = tracked_params(cfg)
    assert params["optimizer_params.weight_decay"] == 0.6 and params["image_size"] == "[227, 227]"
    assert "loglevel" not in params and params["lr_scheduler"] == "MultiStepLR"


def test_a_key_given_twice_is_a_problem_not_a_silent_override(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("batch_size: 8\nnum_epochs: 3\noptimizer_params:\n  lr: 0.1\n  lr: 0.2\n", encoding="utf-8")
    (problem,) = problems_of(path)
    assert "key 'lr' appears twice (lines 4 and 5)" in problem


def test_a_problem_with_a_key_set_on_the_command_line_is_named_by_the_option_as_typed(tmp_path):
    path = write(tmp_path, {"dropout": 2.0, "image_size": [32, 32]})
    texts = ["optimizer_params.lr=abc", "batch_size=0"]
    origins = override_origins(texts, data_path="elsewhere/stanford")
    assert origins == {"optimizer_params.lr": "--set optimizer_params.lr=abc", "batch_size": "--set batch_size=0",
                       "stanford_data_path": "-d elsewhere/stanford"}
    with pytest.raises(ConfigError) as caught:
        load_config(path, parse_overrides(texts), CHECKS, origins)
    error = caught.value
    assert str(error).startswith(f"{path}: 3 configuration problems")  # dropout is the file's
    starts = ["dropout: ", "--set batch_size=0: 0 is out of range",
              # a check of the whole mapping the set key is in: the option, then the key the check names
              "--set optimizer_params.lr=abc: optimizer_params: AdamW rejects them"]
    assert all(any(problem.startswith(start) for problem in error.problems) for start in starts), error.problems
    with pytest.raises(ConfigError) as caught:  # every problem from the command line: the heading names the options
        load_config(write(tmp_path, {}, "empty.yml"), [("batch_size", 0)], origins={"batch_size": "--set batch_size=0"})
    assert str(caught.value).startswith("--set: 1 configuration problem:\n  - --set batch_size=0: 0 is out of range")


def test_a_missing_file_names_the_path_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config("configs/mine.yml")
    assert caught.value.problems == [f"configuration file not found (looked for {tmp_path / 'configs' / 'mine.yml'})"]
