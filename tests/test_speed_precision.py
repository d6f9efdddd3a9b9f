"""Speed settings through train.py: bf16 mixed precision, channels_last, image cache, batch augmentation, compile."""

from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn

import train
from datasets.settings import data_settings
from models.classifier_module import ClassifierModule
from utils.config import Config, load_config, parse_overrides
from utils.runs.records import is_run_dir
from utils.runs.records import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "config_template.yml"


@pytest.fixture(scope="module")
def speed_prepared(make_prepared):
    return make_prepared("speed_training", num_classes=4, images_per_class=4, min_width=40, max_width=64)


def args_for(prepared, tmp_path, *settings):
    base = ["image_size=[32, 32]", "num_epochs=1", "batch_size=4", "num_workers=0", "output_channels=64",
            f"output_path={tmp_path / 'output'}", f"logging_dir={tmp_path / 'logs'}", "log_to_tensorboard=false",
            "log_to_mlflow=false", "accelerator=cpu", *settings]
    return ["-c", str(TEMPLATE), "-d", str(prepared)] + [part for s in base for part in ("--set", s)]


class Watch(Callback):
    """Records what the network sees and gives in training steps."""

    def __init__(self):
        self.inputs, self.outputs, self.steps = [], [], 0

    def on_fit_start(self, trainer, pl_module):
        def hook(module, inputs, output):
            if module.training:
                self.inputs.append(inputs[0])
                self.outputs.append(output)

        pl_module.network.register_forward_hook(hook)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps += 1


def test_bf16_channels_last_cache_and_batch_augmentation_train_on_cpu(speed_prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    watch = Watch()
    settings = ["precision=bf16-mixed", "channels_last=true", "cache_images=true", "augmentation_device=gpu",
                f"cache_path={tmp_path / 'cache'}"]
    assert train.main(args_for(speed_prepared, tmp_path, *settings), extra_callbacks=[watch]) == 0
    assert watch.steps == 2  # 8 training images, batches of 4
    assert all(x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last) for x in watch.inputs)
    assert all(abs(float(x.mean())) < 3 and float(x.std()) > 0.2 for x in watch.inputs)  # augmented, normalised
    assert all(y.dtype == torch.bfloat16 for y in watch.outputs)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    (run_dir,) = [p for p in (tmp_path / "output").iterdir() if is_run_dir(p)]
    rows = read_metrics(run_dir)
    assert len(rows) == 1 and all(torch.isfinite(torch.tensor(rows[0][k])) for k in ("train_loss", "valid_loss"))
    saved = (run_dir / "config.yml").read_text()
    assert "channels_last: true" in saved and "augmentation_device: gpu" in saved and "cache_images: true" in saved


def test_compile_model_compiles_the_network_in_place(speed_prepared, tmp_path, monkeypatch):
    """Checked before the first step: compiling itself takes about a minute on a CPU (C++ toolchain)."""
    monkeypatch.chdir(tmp_path)

    class Stop(Exception):
        pass

    class CheckCompiled(Callback):
        def on_fit_start(self, trainer, pl_module):
            self.compiled = pl_module.network._compiled_call_impl is not None
            self.names = [name for name, _ in pl_module.network.named_parameters()]
            raise Stop

    check = CheckCompiled()
    with pytest.raises(Stop):
        train.main(args_for(speed_prepared, tmp_path, "compile_model=true"), extra_callbacks=[check])
    assert check.compiled and not any("_orig_mod" in name for name in check.names)
    plain = CheckCompiled()
    with pytest.raises(Stop):
        train.main(args_for(speed_prepared, tmp_path), extra_callbacks=[plain])
    assert not plain.compiled


def test_channels_last_module_gives_the_same_logits():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(8, 4)).eval()
    images = torch.randn(2, 3, 16, 16)
    expected = network(images)
    module = ClassifierModule(network, 4, channels_last=True).eval()
    assert module.network[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(module(images), expected, atol=1e-5, rtol=1e-5)


def test_speed_keys_default_to_the_previous_behaviour_and_reach_the_modules():
    cfg = Config()
    data = data_settings(cfg)
    loading = data.loading
    assert (loading.cache_images, loading.cache_path, data.augmentation.device) == (False, None, "cpu")
    assert (loading.pin_memory, loading.persistent_workers, loading.prefetch_factor) == (None, True, None)
    assert cfg.channels_last is False and cfg.compile_model is False and cfg.precision == 32
    changed = load_config(TEMPLATE, parse_overrides([
        "cache_images=true", "cache_path=/tmp/c", "augmentation_device=gpu", "prefetch_factor=4", "pin_memory=false",
        "persistent_workers=false", "channels_last=true"]))
    data = data_settings(changed)
    assert (data.loading.cache_images, data.loading.cache_path, data.augmentation.device) == (True, "/tmp/c", "gpu")
    assert (data.loading.pin_memory, data.loading.persistent_workers, data.loading.prefetch_factor) == (False, False, 4)
    assert changed.channels_last is True
