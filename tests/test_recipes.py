"""The training options (docs/recipes.md), each checked by what it does in a tiny run, and their refused values."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from models.classifier_module import ClassifierModule, batch_mixer
from training.ema import warmed_up_decay
from training.run import RunParts, fit_run, module_settings
from training.trainer import trainer_problems
from utils.config import Config, ConfigError, load_config, parse_overrides
import models

from tests.test_config import TEMPLATE
from tests.test_training_module import NUM_CLASSES, TinyData
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TinyNet(nn.Module):
    """A backbone (linear + BatchNorm) and a classifier, like the arch_dict networks."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.classifier = nn.Linear(16, NUM_CLASSES)

    def forward(self, images):
        return self.classifier(self.features(images))


def fit(tmp_path, callbacks=(), checkpoint=None, **settings):
    """A run of TinyNet through fit_run (the run's Trainer settings and callbacks) with these config values."""
    config = Config(**{**dict(num_epochs=2, log_to_tensorboard=False, log_to_mlflow=False, accelerator="cpu",
                              optimizer="SGD", output_path=str(tmp_path), optimizer_params={"lr": 0.1},
                              lr_scheduler=None, lr_scheduler_params=None, seed=1), **settings})
    pl.seed_everything(config.seed, workers=True)
    module = ClassifierModule(TinyNet(), NUM_CLASSES, **module_settings(config))
    summary = fit_run(config, RunParts(TinyData(), module, {"architecture": "tiny"}, {}), tmp_path / "run",
                      checkpoint, callbacks=callbacks)
    assert summary["state"] == "finished", summary
    return module


def state(module, prefix=""):
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items() if name.startswith(prefix)}


class Watch(pl.Callback):
    """The module's weights after every optimizer step, at every validation, and the learning rates per epoch."""

    def __init__(self):
        self.after_steps, self.validated, self.groups, self.steps, self.epoch_starts = [], [], [], [], []

    def on_train_epoch_start(self, trainer, pl_module):
        self.groups.append([(group.get("name"), group["lr"]) for group in trainer.optimizers[0].param_groups])
        self.epoch_starts.append(state(pl_module.network))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after_steps.append(state(pl_module.network))
        self.steps.append(trainer.global_step)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and not trainer.sanity_checking:
            self.validated.append(state(pl_module.network))


def test_ema_validates_and_saves_the_warmed_up_average_of_the_weights(tmp_path):
    watch = Watch()
    module = fit(tmp_path, [watch], ema_decay=0.5)
    expected = None
    for updates, raw in enumerate(watch.after_steps):  # one update per optimizer step
        decay = warmed_up_decay(0.5, updates)
        expected = dict(raw) if expected is None else {
            name: (value * decay + raw[name] * (1 - decay)) if value.is_floating_point() else raw[name]
            for name, value in expected.items()}
        if updates + 1 == 4:  # the first epoch's 4 steps, then its validation
            first_epoch = dict(expected)
    for name, value in first_epoch.items():
        torch.testing.assert_close(watch.validated[0][name], value)
    assert not torch.equal(watch.validated[0]["classifier.weight"], watch.after_steps[3]["classifier.weight"])
    checkpoint = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    for name, value in expected.items():
        torch.testing.assert_close(checkpoint["state_dict"][f"network.{name}"], value)
        torch.testing.assert_close(checkpoint["current_model_state"][f"network.{name}"], watch.after_steps[-1][name])
    torch.testing.assert_close(module.network.classifier.weight, expected["classifier.weight"])


def test_mixup_and_cutmix_give_mixed_images_and_soft_targets():
    images = torch.rand(6, 3, 8, 8)
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    torch.manual_seed(3)
    mixed, soft = batch_mixer(NUM_CLASSES, mixup_alpha=0.4)(images, targets)
    assert soft.shape == (6, NUM_CLASSES) and torch.allclose(soft.sum(1), torch.ones(6))
    share = soft[0, 0]  # image 0 is mixed with image 5 (its neighbour in the batch), targets likewise
    assert 0 < share < 1 and soft[0, 1] == pytest.approx(1 - share)
    torch.testing.assert_close(mixed[0], share * images[0] + (1 - share) * images[5])
    torch.manual_seed(4)
    cut, soft = batch_mixer(NUM_CLASSES, cutmix_alpha=1.0)(images, targets)
    pasted = (cut[0] == images[5]).all(0) & (cut[0] != images[0]).any(0)
    assert 0 < soft[0, 1] < 1 and soft[0, 1] == pytest.approx(pasted.float().mean().item(), abs=1e-6)
    assert batch_mixer(NUM_CLASSES) is None


def test_mixed_batches_train_with_soft_targets_and_count_accuracy_on_their_larger_share(tmp_path):
    from utils.runs.records import read_metrics

    fit(tmp_path, mixup_alpha=0.4, cutmix_alpha=1.0, num_epochs=1)
    (row,) = read_metrics(tmp_path / "run")
    assert row["train_loss"] > 0
    assert row["train_acc"] > 0  # torchmetrics' accuracy of soft targets is silently 0; their argmax is counted


def test_warmup_starts_at_the_asked_fraction_then_hands_over_to_the_scheduler(tmp_path):
    from utils.runs.records import read_metrics

    fit(tmp_path, num_epochs=5, warmup_epochs=2, warmup_start_factor=0.25, lr_scheduler="MultiStepLR",
        lr_scheduler_params={"milestones": [2], "gamma": 0.1})
    lrs = [row["lr"] for row in read_metrics(tmp_path / "run")]
    # warmup 0.025, 0.0625; MultiStepLR counts from the end of the warmup: its epoch 2 is the run's epoch 5
    assert lrs == pytest.approx([0.025, 0.0625, 0.1, 0.1, 0.01])


def test_sequential_lr_by_name_gives_the_same_schedule_as_warmup_epochs(tmp_path):
    from utils.runs.records import read_metrics

    fit(tmp_path / "a", num_epochs=4, warmup_epochs=2, warmup_start_factor=0.5, lr_scheduler="ExponentialLR",
        lr_scheduler_params={"gamma": 0.5})
    fit(tmp_path / "b", num_epochs=4, lr_scheduler="SequentialLR", lr_scheduler_params={
        "schedulers": [{"LinearLR": {"start_factor": 0.5, "total_iters": 2}}, {"ExponentialLR": {"gamma": 0.5}}],
        "milestones": [2]})
    first, second = ([row["lr"] for row in read_metrics(tmp_path / name / "run")] for name in "ab")
    assert first == pytest.approx(second) and first == pytest.approx([0.05, 0.075, 0.1, 0.05])


def test_warmup_before_reduce_on_plateau(tmp_path):
    from utils.runs.records import read_metrics

    fit(tmp_path, num_epochs=3, warmup_epochs=2, warmup_start_factor=0.5, lr_scheduler="ReduceLROnPlateau",
        lr_scheduler_params={"patience": 5})
    assert [row["lr"] for row in read_metrics(tmp_path / "run")] == pytest.approx([0.05, 0.075, 0.1])


def test_a_frozen_backbone_keeps_its_weights_while_the_classifier_trains(tmp_path):
    watch = Watch()
    fit(tmp_path, [watch], freeze_backbone_epochs=1, optimizer="AdamW",
        optimizer_params={"lr": 0.05, "weight_decay": 0.5})
    start, first_epoch_end = watch.epoch_starts[0], watch.after_steps[3]
    for name in ("features.1.weight", "features.1.bias", "features.2.weight", "features.2.bias"):
        assert torch.equal(first_epoch_end[name], start[name])
    assert not torch.equal(first_epoch_end["classifier.weight"], start["classifier.weight"])
    assert not torch.equal(watch.after_steps[-1]["features.1.weight"], first_epoch_end["features.1.weight"])


def test_backbone_lr_scale_gives_the_backbone_its_share_of_the_head_learning_rate(tmp_path):
    watch = Watch()
    fit(tmp_path, [watch], backbone_lr_scale=0.1, lr_scheduler="StepLR", lr_scheduler_params={"step_size": 1,
                                                                                               "gamma": 0.5})
    assert watch.groups == [[("head", 0.1), ("backbone", pytest.approx(0.01))],
                            [("head", 0.05), ("backbone", pytest.approx(0.005))]]


def test_gradient_clipping_bounds_the_step_and_accumulation_sums_batches(tmp_path):
    watch = Watch()
    fit(tmp_path / "clip", [watch], num_epochs=1, optimizer_params={"lr": 1.0}, gradient_clip_val=0.001)
    steps = watch.after_steps
    moves = [torch.sqrt(sum(((steps[i + 1][n] - steps[i][n]) ** 2).sum() for n in steps[i]
                            if n.endswith(("weight", "bias")))) for i in range(len(steps) - 1)]
    assert all(move <= 0.001 * 1.0001 for move in moves)
    unclipped = Watch()
    fit(tmp_path / "plain", [unclipped], num_epochs=1, optimizer_params={"lr": 1.0})
    steps = unclipped.after_steps
    assert torch.dist(steps[1]["classifier.weight"], steps[0]["classifier.weight"]) > 0.01
    accumulated = Watch()
    fit(tmp_path / "accumulate", [accumulated], num_epochs=1, accumulate_grad_batches=2)
    assert accumulated.steps == [0, 1, 1, 2]  # optimizer steps after each of the 4 batches


@pytest.mark.parametrize("settings, expected", [
    (["mixup_alpha=-0.2"], "mixup_alpha: -0.2 is out of range"),
    (["accumulate_grad_batches=0"], "accumulate_grad_batches: 0 is out of range"),
    (["gradient_clip_val=-1"], "gradient_clip_val: -1 is out of range"),
    (["ema_decay=1"], "ema_decay: 1 is out of range"),
    (["backbone_lr_scale=0"], "backbone_lr_scale: 0 is out of range"),
    (["warmup_start_factor=0"], "warmup_start_factor: 0 is out of range"),
    (["warmup_epochs=200"], "warmup_epochs: 200 leaves no epoch after the warmup"),
    (["freeze_backbone_epochs=200"], "freeze_backbone_epochs: 200 freezes the backbone for the whole run"),
    (["cutmix_alpha=1.0", "loss_function=NLLLoss"], "cutmix_alpha: mixed batches have class probabilities"),
    (["warmup_epochs=3", "lr_scheduler=SequentialLR",
      "lr_scheduler_params={schedulers: [{StepLR: {step_size: 2}}], milestones: []}"],
     "warmup_epochs: lr_scheduler SequentialLR lists its own schedulers"),
    (["lr_scheduler=SequentialLR", "lr_scheduler_params={schedulers: [{StepLR: {step_sise: 2}}], milestones: []}"],
     "lr_scheduler_params.schedulers[0]: StepLR: unknown argument(s) step_sise"),
    (["lr_scheduler=SequentialLR", "lr_scheduler_params={schedulers: StepLR, milestones: []}"],
     "lr_scheduler_params.schedulers: SequentialLR needs a list of one-key mappings"),
    (["lr_scheduler=SequentialLR",
      "lr_scheduler_params={schedulers: [{ReduceLROnPlateau: null}, {StepLR: {step_size: 2}}], milestones: [3]}"],
     "lr_scheduler_params.schedulers[0]: unknown name 'ReduceLROnPlateau'"),
    (["gradient_clip_val=1", "precision=16-mixed", "optimizer_params.fused=true"],
     "gradient_clip_val: a fused optimizer"),
    (["freeze_backbone_epochs=2", "strategy=ddp"], "freeze_backbone_epochs: DDP stops at the first step"),
])
def test_bad_values_and_refused_combinations_are_reported_before_any_work(settings, expected):
    checks = (models.config_problems, trainer_problems)
    with pytest.raises(ConfigError) as error:
        load_config(TEMPLATE, parse_overrides(settings), checks)
    assert any(problem.startswith(expected) for problem in error.value.problems), error.value.problems


def test_the_template_has_every_option_off():
    config = load_config(TEMPLATE)
    assert (config.warmup_epochs, config.ema_decay, config.mixup_alpha, config.cutmix_alpha) == (0, 0.0, 0.0, 0.0)
    assert (config.gradient_clip_val, config.accumulate_grad_batches) == (None, 1)
    assert (config.backbone_lr_scale, config.freeze_backbone_epochs) == (1.0, 0)


@pytest.fixture(scope="module")
def device_data(make_prepared):
    return make_prepared("recipes_device_data", num_classes=4, images_per_class=5, min_width=40, max_width=64, seed=5)


def test_the_options_on_device_data_never_wait_for_the_device(device_data, tmp_path, monkeypatch):
    """On the device-resident path a step reads nothing back from the batch's device: the EMA update, clipping,
    accumulation and the parameter groups add no read-back; torchvision's MixUp/CutMix (and RandomChoice between
    them) read only their own random draws, which they make on the host (CPU tensors on any device)."""
    import train
    from tests.test_speed_device_data import HostTrips, SteadySteps
    from tests.test_speed_precision import args_for

    monkeypatch.chdir(tmp_path)
    trips = HostTrips()
    settings = ["cache_images=true", "augmentation_device=gpu", "data_on_device=true", f"cache_path={tmp_path / 'c'}",
                "num_epochs=3", "batch_size=2", "optimizer_params.fused=true", "ema_decay=0.9", "mixup_alpha=0.2",
                "cutmix_alpha=1.0", "warmup_epochs=1", "gradient_clip_val=1.0", "accumulate_grad_batches=2",
                "backbone_lr_scale=0.5", "freeze_backbone_epochs=1"]
    with trips:
        assert train.main(args_for(device_data, tmp_path, *settings), extra_callbacks=[SteadySteps(trips)]) == 0
    outside = [call for call in trips.calls if "torchvision/transforms/v2/" not in call]
    assert outside == [] and trips.calls, trips.calls


def test_a_resumed_ema_run_continues_from_the_raw_weights_and_the_saved_average(tmp_path):
    fit(tmp_path, num_epochs=1, ema_decay=0.5)
    checkpoint = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    watch = Watch()
    module = fit(tmp_path, [watch], tmp_path / "run" / "last.ckpt", ema_decay=0.5)
    for name, value in watch.epoch_starts[0].items():  # training goes on from the raw weights
        assert torch.equal(value, checkpoint["current_model_state"][f"network.{name}"])
    expected = {name[len("network."):]: value for name, value in checkpoint["state_dict"].items()
                if name.startswith("network.")}
    for updates, raw in enumerate(watch.after_steps, start=4):  # 4 updates before the checkpoint
        decay = warmed_up_decay(0.5, updates)
        expected = {name: value * decay + raw[name] * (1 - decay) if value.is_floating_point() else raw[name]
                    for name, value in expected.items()}
    for name, value in expected.items():
        torch.testing.assert_close(module.network.state_dict()[name], value)
