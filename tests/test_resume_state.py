"""On --resume the run's configuration decides what trains: the checkpoint gives counters and tensors only (epoch,
step, last learning rate, moments), never an lr_lambda text or another setting, and a state this project does not
write is refused, naming the file, with no traceback."""

import csv

import pytest
import torch

import train
from tests.test_checkpoint_safety import received, snapshot, train_tiny_run
from utils.checkpoint_safety import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CONFIG_LAMBDA = "lambda epoch: 0.1 ** (epoch // 30)"


@pytest.fixture(scope="module")
def lambda_run(make_prepared, tmp_path_factory, one_torch_thread):
    """(prepared data, run folder) of a one-epoch run with LambdaLR at lr 0.001."""
    data = make_prepared("resume_state_data", num_classes=3, images_per_class=6, min_width=40, max_width=64)
    return data, train_tiny_run(data, tmp_path_factory.mktemp("resume_state_run"), "num_epochs=1",
                                "log_to_tensorboard=false", "lr_scheduler=LambdaLR",
                                f"lr_scheduler_params={{lr_lambda: '{CONFIG_LAMBDA}'}}",
                                "optimizer_params={lr: 0.001, weight_decay: 0.01}")


def edit_checkpoint(run_dir, edit) -> None:
    checkpoint = load_checkpoint(run_dir / "last.ckpt")
    edit(checkpoint)
    torch.save(checkpoint, run_dir / "last.ckpt")


def learning_rates(run_dir) -> dict[int, float]:
    with open(run_dir / "metrics.csv", encoding="utf-8") as file:
        return {int(row["epoch"]): float(row["lr"]) for row in csv.DictReader(file)}


def test_the_config_decides_the_schedule_and_the_disagreement_is_named(lambda_run, tmp_path, capsys):
    _, run_dir = lambda_run
    copy = received(run_dir, tmp_path)

    def hostile_schedule(checkpoint):
        checkpoint["lr_schedulers"][0]["lr_lambdas"] = [{"expression": "lambda epoch: 1000.0"}]
        checkpoint["lr_schedulers"][0]["base_lrs"] = [1.0]
        checkpoint["optimizer_states"][0]["param_groups"][0]["weight_decay"] = 0.9

    edit_checkpoint(copy, hostile_schedule)
    assert train.main(["--resume", str(copy), "--set", "num_epochs=3"]) == 0
    assert learning_rates(copy) == pytest.approx({1: 0.001, 2: 0.001, 3: 0.001})  # not 1.0 (the checkpoint's)
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if "differ from the run's configuration" in line]
    assert len(lines) == 1 and f"{copy / 'last.ckpt'}:" in lines[0] and "which wins" in lines[0]
    assert "lambda epoch: 1000.0" in lines[0] and "weight_decay 0.9 (checkpoint) vs 0.01 (config)" in lines[0]
    resumed = load_checkpoint(copy / "last.ckpt")
    assert resumed["lr_schedulers"][0]["lr_lambdas"] == [{"expression": CONFIG_LAMBDA}]
    assert resumed["optimizer_states"][0]["param_groups"][0]["weight_decay"] == 0.01
    assert "Traceback" not in error


def test_an_unmodified_checkpoint_resumes_without_a_difference_line(lambda_run, tmp_path, capsys):
    _, run_dir = lambda_run
    copy = received(run_dir, tmp_path)
    assert train.main(["--resume", str(copy), "--set", "num_epochs=2"]) == 0
    assert "differ from the run's configuration" not in capsys.readouterr().err
    assert load_checkpoint(copy / "last.ckpt")["epoch"] == 1


def _extra_top_key(checkpoint):
    checkpoint["lr_override"] = {"lr": 5.0}


def _extra_scheduler_key(checkpoint):
    checkpoint["lr_schedulers"][0]["gamma"] = 10.0


def _text_in_moments(checkpoint):
    first = next(iter(checkpoint["optimizer_states"][0]["state"]))
    checkpoint["optimizer_states"][0]["state"][first]["exp_avg"] = "lambda epoch: 1000.0"


def _huge_moment(checkpoint):
    first = next(iter(checkpoint["optimizer_states"][0]["state"]))
    checkpoint["optimizer_states"][0]["state"][first]["exp_avg"] = torch.zeros(10_000_000, dtype=torch.uint8)


def _infinite_lr(checkpoint):
    checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] = float("inf")


def _unknown_group_key(checkpoint):
    checkpoint["optimizer_states"][0]["param_groups"][0]["lr_lambda"] = "lambda epoch: 1000.0"


def _foreign_callback(checkpoint):
    checkpoint["callbacks"]["LearningRateFinder"] = {"lr": 5.0}


def _second_scheduler(checkpoint):
    checkpoint["lr_schedulers"].append(dict(checkpoint["lr_schedulers"][0]))


FOREIGN_STATES = {
    "top-level key": (_extra_top_key, "holds 'lr_override', which train.py never writes"),
    "scheduler key": (_extra_scheduler_key, "lr scheduler holds gamma, which the configuration's scheduler does "
                                            "not write"),
    "text as a moment": (_text_in_moments, "'exp_avg' of parameter 0 is not tensors or numbers"),
    "huge moment": (_huge_moment, "'exp_avg' of parameter 0 is larger than the network's parameters"),
    "infinite lr": (_infinite_lr, "lr is inf, not a learning rate"),
    "group key": (_unknown_group_key, "optimizer group 0 holds lr_lambda, which the configuration's optimizer"),
    "callback state": (_foreign_callback, "holds callbacks['LearningRateFinder'], which train.py never writes"),
    "second scheduler": (_second_scheduler, "it holds 1 optimizer and 2 scheduler states; the configuration builds "
                                            "1 and 1"),
}


@pytest.mark.parametrize("case", FOREIGN_STATES)
def test_a_state_this_project_does_not_write_is_refused_naming_the_file(lambda_run, tmp_path, capsys, case):
    _, run_dir = lambda_run
    copy = received(run_dir, tmp_path)
    edit, message = FOREIGN_STATES[case]
    edit_checkpoint(copy, edit)
    checkpoints = {name: (copy / name).read_bytes() for name in ("last.ckpt", "best.ckpt")}
    outside = snapshot(run_dir)
    assert train.main(["--resume", str(copy), "--set", "num_epochs=2"]) == 2
    error = capsys.readouterr().err
    assert f"{copy / 'last.ckpt'}: " in error and message in error, error[-2000:]
    assert "Traceback" not in error
    assert {name: (copy / name).read_bytes() for name in checkpoints} == checkpoints  # nothing trained or saved
    assert snapshot(run_dir) == outside
