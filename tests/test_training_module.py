"""ClassifierModule, the loss, schedulers stepping per epoch, early stopping and run-record helpers on a tiny problem."""

import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from models.classifier_module import ClassifierModule
from models.optimization import LabelSmoothingCrossEntropy, LrLambda, build_scheduler
from training.run import RunParts, fit_run
from training.trainer import early_stopping_patience
from utils.config import Config
from utils.runs.folders import plan_runs, resume_target, unused_path
from utils.runs.records import read_metrics
from utils.runs.seeds import aggregate_seeds, format_seed_table

NUM_CLASSES = 4


class TinyData(pl.LightningDataModule):
    """32 random 3x8x8 images of 4 classes; the same data for training and validation."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(32, 3, 8, 8, generator=generator)
        self.targets = torch.randint(0, NUM_CLASSES, (32,), generator=generator)

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.images, self.targets), batch_size=8, shuffle=True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.images, self.targets), batch_size=8)


def fit(tmp_path, callbacks=(), **settings):
    cfg = Config(**{**dict(num_epochs=3, log_to_tensorboard=False, log_to_mlflow=False, accelerator="cpu",
                                optimizer="SGD", output_path=str(tmp_path), optimizer_params={"lr": 0.1},
                                lr_scheduler=None, lr_scheduler_params=None, seed=1), **settings})
    pl.seed_everything(cfg.seed, workers=True)
    network = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, NUM_CLASSES))
    module = ClassifierModule(network, NUM_CLASSES, optimizer=cfg.optimizer, optimizer_params=cfg.optimizer_params,
                              lr_scheduler=cfg.lr_scheduler, lr_scheduler_params=cfg.lr_scheduler_params,
                              loss_function=cfg.loss_function, loss_params=cfg.loss_params)
    run_dir = tmp_path / "run"
    parts = RunParts(TinyData(), module, {"architecture": "tiny"}, {"tiny": True})
    summary = fit_run(cfg, parts, run_dir, callbacks=callbacks)
    return summary, read_metrics(run_dir)


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.35])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_label_smoothing_ce_is_the_thesis_formula(epsilon, reduction):
    logits = torch.randn(16, 7, generator=torch.Generator().manual_seed(3))
    targets = torch.randint(0, 7, (16,), generator=torch.Generator().manual_seed(4))
    ours = LabelSmoothingCrossEntropy(epsilon=epsilon, reduction=reduction)(logits, targets)
    log_probs = logits.log_softmax(dim=-1)
    per_image = -(1 - epsilon) * log_probs[torch.arange(16), targets] - epsilon * log_probs.mean(dim=-1)
    reference = {"mean": per_image.mean(), "sum": per_image.sum(), "none": per_image}[reduction]
    torch.testing.assert_close(ours, reference)
    assert LabelSmoothingCrossEntropy().epsilon == 0.1


def test_lr_lambda_evaluates_arithmetic_and_keeps_plain_state(tmp_path):
    function = LrLambda("max(0.1, 0.975 ** epoch) * (1 + 0 % 3) - -0.0")
    assert function(0) == 1.0 and function(4) == pytest.approx(0.975**4) and function(1000) == 0.1
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler("LambdaLR", optimizer, {"lr_lambda": "0.5 ** epoch"})
    torch.save(scheduler.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["lr_lambdas"] == [{"expression": "0.5 ** epoch"}]
    with pytest.raises(ValueError):
        LrLambda("(lambda: 1)()")


def test_the_theses_lambda_sources_are_parsed_not_run():
    """Runs C-63 .. C-66 wrote lr_lambda as Python lambda source."""
    assert LrLambda("lambda epoch: 0.955 ** epoch")(3) == pytest.approx(0.955**3)
    annealed = LrLambda("lambda epoch: pow(0.0001/0.001, 1/67) ** epoch")
    assert annealed(0) == 1.0 and annealed(67) == pytest.approx(0.1)


def test_module_logs_every_metric_per_epoch(tmp_path):
    summary, rows = fit(tmp_path, num_epochs=2)
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        assert all(not math.isnan(value) for value in row.values())
        assert row["valid_acc_top5"] == 1.0 and 0.0 <= row["valid_acc"] <= 1.0
    assert summary["state"] == "finished" and summary["stop_reason"] == "max_epochs"
    assert summary["best"]["valid_loss"] == min(row["valid_loss"] for row in rows)
    assert (tmp_path / "run" / "best.ckpt").is_file() and (tmp_path / "run" / "last.ckpt").is_file()


class TrainingSteps(pl.Callback):
    """Each training step's (epoch, loss, images, correct predictions), and which step is running."""

    def __init__(self):
        self.steps = []
        self.current = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.current = (trainer.current_epoch, batch_idx)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        images, targets = batch
        with torch.no_grad():
            correct = int((pl_module(images).argmax(1) == targets).sum())
        self.steps.append((trainer.current_epoch, float(outputs["loss"]), len(targets), correct))


def test_training_metrics_are_logged_once_an_epoch_as_the_epochs_means(tmp_path, monkeypatch):
    """Lightning's self.log costs the host about 0.5 ms a call: the training step only updates the metrics."""
    steps = TrainingSteps()
    logged = []
    original_log = ClassifierModule.log

    def recording_log(self, name, *args, **kwargs):
        if self.trainer.training:
            logged.append((*steps.current, name))
        return original_log(self, name, *args, **kwargs)

    monkeypatch.setattr(ClassifierModule, "log", recording_log)
    _, rows = fit(tmp_path, callbacks=[steps], num_epochs=2, optimizer_params={"lr": 0.0})  # lr 0: fixed weights
    assert logged == [(epoch, 3, name) for epoch in (0, 1) for name in ("train_loss", "train_acc", "lr")]
    for epoch, row in enumerate(rows):
        of_epoch = [step for step in steps.steps if step[0] == epoch]
        images = sum(step[2] for step in of_epoch)
        assert row["train_loss"] == pytest.approx(sum(step[1] * step[2] for step in of_epoch) / images, rel=1e-6)
        assert row["train_acc"] == pytest.approx(sum(step[3] for step in of_epoch) / images)
        assert row["lr"] == 0.0


def test_multistep_lr_drops_at_its_milestones(tmp_path):
    _, rows = fit(tmp_path, lr_scheduler="MultiStepLR", lr_scheduler_params={"milestones": [1, 2], "gamma": 0.1})
    assert [row["lr"] for row in rows] == pytest.approx([0.1, 0.01, 0.001])


def test_lambda_lr_follows_its_expression(tmp_path):
    _, rows = fit(tmp_path, lr_scheduler="LambdaLR", lr_scheduler_params={"lr_lambda": "0.5 ** epoch"})
    assert [row["lr"] for row in rows] == pytest.approx([0.1, 0.05, 0.025])


def test_reduce_on_plateau_watches_valid_loss(tmp_path):
    _, rows = fit(tmp_path, optimizer_params={"lr": 1e-4}, early_stopping_patience=10, lr_scheduler="ReduceLROnPlateau",
                  lr_scheduler_params={"factor": 0.5, "patience": 0, "threshold": 0.9})
    assert [row["lr"] for row in rows] == pytest.approx([1e-4, 1e-4, 5e-5])


def test_early_stopping_ends_a_run_without_progress(tmp_path):
    summary, rows = fit(tmp_path, num_epochs=10, optimizer_params={"lr": 0.0}, early_stopping_patience=1)
    assert len(rows) == 2 and summary["epochs_run"] == 2
    assert summary["stop_reason"] == "early_stopping" and summary["state"] == "finished"


def test_early_stopping_patience_rule():
    assert early_stopping_patience(Config(**{"lr_scheduler": "MultiStepLR", "early_stopping_patience": None})) == 15
    assert early_stopping_patience(Config(**{"lr_scheduler": "ReduceLROnPlateau", "lr_scheduler_params": {"patience": 5},
                                    "early_stopping_patience": None})) == 15
    assert early_stopping_patience(Config(**{"lr_scheduler": "ReduceLROnPlateau", "lr_scheduler_params": {"patience": 2},
                                    "early_stopping_patience": None})) == 6
    assert early_stopping_patience(Config(**{"lr_scheduler": "ReduceLROnPlateau", "lr_scheduler_params": None,
                                    "early_stopping_patience": None})) == 30
    assert early_stopping_patience(Config(**{"lr_scheduler": None, "early_stopping_patience": 4})) == 4


def test_run_folders_are_never_reused(tmp_path):
    (tmp_path / "ghost_20260101-000000").mkdir()
    assert unused_path(tmp_path / "ghost_20260101-000000").name == "ghost_20260101-000000_2"
    from datetime import datetime
    plan = plan_runs(tmp_path, "ghost", [7, 7], datetime(2026, 1, 1))
    assert [entry["run_dir"].rsplit("/", 1)[1] for entry in plan] == ["ghost_20260101-000000_seed7",
                                                                      "ghost_20260101-000000_seed7_2"]
    with pytest.raises(FileNotFoundError, match="last.ckpt"):
        resume_target(tmp_path / "ghost_20260101-000000")


def test_concurrent_plans_never_share_a_folder_and_empty_ones_are_released(tmp_path):
    from datetime import datetime

    from utils.runs.folders import release_unused

    same_second = datetime(2026, 1, 1)
    plans = []
    for _ in range(2):  # two train.py processes starting in the same second
        plans.append(plan_runs(tmp_path, "ghost", [42], same_second))
    folders = [Path(plan[0]["run_dir"]) for plan in plans]
    assert folders[0] != folders[1] and all(folder.is_dir() for folder in folders)
    (folders[0] / "metrics.csv").write_text("epoch\n")
    release_unused(plans[0] + plans[1])
    assert folders[0].is_dir() and not folders[1].exists()


def test_resume_needs_a_checkpoint_inside_a_run_folder(tmp_path):
    run_dir = tmp_path / "ghost_run"
    run_dir.mkdir()
    (run_dir / "config.yml").write_text("seed: 1\n")
    torch.save({"state_dict": {}}, run_dir / "last.ckpt")
    with pytest.raises(FileNotFoundError, match="not a run folder of train.py \\(no summary.json\\)"):
        resume_target(run_dir)
    (run_dir / "summary.json").write_text("{}")
    assert resume_target(run_dir) == (run_dir, run_dir / "last.ckpt")
    with pytest.raises(FileNotFoundError, match="config.yml is not a checkpoint"):
        resume_target(run_dir / "config.yml")


def test_seed_statistics():
    runs = [{"seed": s, "run_dir": f"r{s}", "best_valid_acc": v} for s, v in [(1, 0.5), (2, 0.7), (3, 0.6)]]
    aggregate = aggregate_seeds(runs)
    assert aggregate["best_valid_acc_mean"] == pytest.approx(0.6)
    assert aggregate["best_valid_acc_std"] == pytest.approx(0.1)
    assert (aggregate["best_valid_acc_min"], aggregate["best_valid_acc_max"], aggregate["count"]) == (0.5, 0.7, 3)
    assert "std 0.1000" in format_seed_table(aggregate)


class Explode(pl.Callback):
    """Fails like a full disk at the end of the second epoch."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("disk full")


def test_a_failing_run_records_its_error(tmp_path):
    with pytest.raises(RuntimeError, match="disk full"):
        fit(tmp_path, callbacks=[Explode()])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["state"] == "failed" and summary["stop_reason"] == "error"
    assert summary["error"] == "RuntimeError: disk full" and summary["epochs_run"] == 2
