"""data_on_device: cached images held on the training device, batches drawn there; validation_batch_size."""

from __future__ import annotations

import shutil
import traceback

import pytest
import torch
from pytorch_lightning.callbacks import Callback
from torch.overrides import TorchFunctionMode

import train
from datasets.stanford_data_module import StanfordCarsDataModule
from datasets.device_batches import DeviceBatches
from datasets.settings import DATA_ON_DEVICE_NEEDS
from datasets.transforms import config_problems
from utils.config import ConfigError, load_config, parse_overrides
from utils.runs.records import is_run_dir
from utils.runs.records import read_metrics

from tests.flat_settings import THESIS_IMAGE, flat_settings
from tests.test_speed_precision import TEMPLATE, args_for


@pytest.fixture(scope="module")
def device_data(make_prepared):
    """Prepared synthetic data: 4 classes, 12 train and 8 test images of 40-64 px."""
    return make_prepared("device_data", num_classes=4, images_per_class=5, min_width=40, max_width=64, seed=5)


@pytest.fixture
def data_copy(device_data, tmp_path):
    return shutil.copytree(device_data, tmp_path / "prepared")


def module(path, **kwargs):
    settings = dict(image_size=(24, 32), batch_size=5, num_workers=0, seed=11, crop_to_bboxes=True,
                    erase_background=True, image=THESIS_IMAGE)
    return StanfordCarsDataModule(flat_settings(path, **{**settings, **kwargs}), show_progress=False)


def on_device(path, **kwargs):
    data = module(path, cache_images=True, device="gpu", data_on_device=True, **kwargs)
    data.prepare_data()
    return data


def test_training_order_is_the_data_loaders_for_the_same_seed(data_copy):
    plain = module(data_copy, image=None, normalize=False, device="gpu", cache_images=True)
    plain.prepare_data()
    device = on_device(data_copy, image=None, normalize=False)
    plain_loader, device_loader = plain.train_dataloader(), device.train_dataloader()
    assert isinstance(device_loader, DeviceBatches) and len(device_loader) == len(plain_loader) == 3
    for _ in range(2):  # two epochs: a new order each, the same on both paths
        plain_batches, device_batches = list(plain_loader), list(device_loader)
        assert [len(t) for _, t in device_batches] == [5, 5, 2]
        for (plain_images, plain_targets), (images, targets) in zip(plain_batches, device_batches):
            torch.testing.assert_close(targets, plain_targets)
            torch.testing.assert_close(images, plain_images.float() / 255)


def test_an_evaluation_batch_size_also_sizes_the_validation_batches(data_copy):
    """evaluate.py --batch-size reads the validation loader: it must win over the run's validation_batch_size."""
    settings = flat_settings(data_copy, image_size=(24, 32), batch_size=5, validation_batch_size=6, num_workers=0)
    assert settings.for_evaluation().loading.validation_batch_size == 6
    data = StanfordCarsDataModule(settings.for_evaluation(batch_size=3), show_progress=False)
    data.prepare_data()
    data.setup("validate")
    assert [len(targets) for _, targets in data.val_dataloader()] == [3, 3, 2]  # 8 test images


def test_validation_batches_equal_the_cpu_pipeline_and_follow_validation_batch_size(data_copy):
    cpu = module(data_copy, validation_batch_size=6)
    device = on_device(data_copy, validation_batch_size=6)
    cpu_batches, device_batches = list(cpu.val_dataloader()), list(device.val_dataloader())
    assert [len(t) for _, t in cpu_batches] == [len(t) for _, t in device_batches] == [6, 2]
    for (cpu_images, cpu_targets), (images, targets) in zip(cpu_batches, device_batches):
        assert torch.equal(cpu_targets, targets)
        torch.testing.assert_close(images, cpu_images, atol=1e-5, rtol=1e-5)


def test_training_batches_are_augmented_per_image_in_chunks_of_batches(data_copy):
    torch.manual_seed(0)
    device = on_device(data_copy)
    loader = device.train_dataloader()
    calls = []
    transform = loader.transform
    loader.transform = lambda images: calls.append(len(images)) or transform(images)
    loader.batches_per_chunk = 2
    batches = list(loader)
    assert calls == [10, 2] and [len(t) for _, t in batches] == [5, 5, 2]
    images = torch.cat([b for b, _ in batches])
    plain = device.batch_normalization(loader.images[loader.epoch_indices()].permute(0, 3, 1, 2))
    assert images.dtype == torch.float32 and images.shape == plain.shape
    assert not torch.allclose(images, plain, atol=1e-3)  # augmented (affine and jitter always change pixels)


def test_processes_get_equal_shares_covering_every_image():
    images, targets = torch.zeros(10, 2, 2, 3, dtype=torch.uint8), torch.arange(10)
    shares = [DeviceBatches(images, targets, 2, lambda x: x.float(), shuffle=True,
                            generator=torch.Generator().manual_seed(3), rank=rank, world_size=3)
              for rank in range(3)]
    indices = [share.epoch_indices() for share in shares]
    assert [len(i) for i in indices] == [4, 4, 4] and [len(share) for share in shares] == [2, 2, 2]
    assert set(torch.cat(indices).tolist()) == set(range(10))
    single = DeviceBatches(images, targets, 3, lambda x: x.float(), drop_last=True)
    assert len(single) == 3 and [len(t) for _, t in single] == [3, 3, 3]


def test_data_on_device_needs_the_cache_and_batch_augmentation(data_copy):
    with pytest.raises(ValueError, match="cache_images"):
        module(data_copy, data_on_device=True, device="gpu")
    with pytest.raises(ConfigError) as error:
        load_config(TEMPLATE, parse_overrides(["data_on_device=true", "cache_images=true"]), [config_problems])
    assert DATA_ON_DEVICE_NEEDS in error.value.problems


def test_train_py_trains_with_data_on_device(device_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    class Inputs(Callback):
        def __init__(self):
            self.devices, self.sizes = set(), []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.devices.add(batch[0].device.type)

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            self.sizes.append(len(batch[1]))

    inputs = Inputs()
    settings = ["cache_images=true", "augmentation_device=gpu", "data_on_device=true", "validation_batch_size=6",
                f"cache_path={tmp_path / 'cache'}", "num_epochs=2", "precision=bf16-mixed", "channels_last=true"]
    assert train.main(args_for(device_data, tmp_path, *settings), extra_callbacks=[inputs]) == 0
    (run_dir,) = [p for p in (tmp_path / "output").iterdir() if is_run_dir(p)]
    rows = read_metrics(run_dir)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert all(torch.isfinite(torch.tensor(row["valid_loss"])) for row in rows)
    assert inputs.devices == {"cpu"} and inputs.sizes[-2:] == [6, 2]  # 8 test images in batches of 6


HOST_READS = {"item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy", "nonzero"}


class HostTrips(TorchFunctionMode):
    """Tensor calls that make a CUDA host wait for the GPU: values read back, or Python values copied to a device."""

    def __init__(self):
        super().__init__()
        self.active = False
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        creates_on_device = name in ("tensor", "as_tensor") and (kwargs or {}).get("device") is not None
        if self.active and (name in HOST_READS or creates_on_device):
            caller = traceback.extract_stack(limit=2)[0]
            self.calls.append(f"{name} at {caller.filename}:{caller.lineno}")
        return func(*args, **(kwargs or {}))


class SteadySteps(Callback):
    """Records the second epoch from its second training step (the first augments the chunk) until its last step
    starts (that one hands the epoch's metrics to the loggers), the fetching of batches in between included."""

    def __init__(self, trips):
        self.trips = trips

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.trips.active = trainer.current_epoch == 1 and 1 <= batch_idx < trainer.num_training_batches - 1

    def on_train_epoch_end(self, trainer, pl_module):
        self.trips.active = False


def test_training_steps_on_device_data_never_wait_for_the_device(device_data, tmp_path, monkeypatch):
    """Between augmentation chunks a step reads nothing back and copies no Python value to the device (a per-step
    self.log of the learning rate did: a blocking copy, so on a GPU the host waited for every step to finish)."""
    monkeypatch.chdir(tmp_path)
    trips = HostTrips()
    settings = ["cache_images=true", "augmentation_device=gpu", "data_on_device=true", f"cache_path={tmp_path / 'c'}",
                "num_epochs=2", "batch_size=2", "optimizer_params.fused=true"]
    with trips:
        assert train.main(args_for(device_data, tmp_path, *settings), extra_callbacks=[SteadySteps(trips)]) == 0
    assert trips.calls == []
