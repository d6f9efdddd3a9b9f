"""StanfordCarsDataModule: training and validation loaders over prepared Stanford Cars data."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from datasets.device_batches import DeviceBatches, load_to_device
from datasets.evaluation_data import SPLITS, classes_of
from datasets.gpu_transforms import BatchAugmentation, build_batch_augmentation
from datasets.image_cache import default_cache_dir, ensure_cache
from datasets.settings import DataSettings
from datasets.stanford_data import StanfordCarsDataset, read_labels
from utils.cpu_threads import default_loader_workers


class StanfordCarsDataModule(pl.LightningDataModule):
    """Train loader over the prepared train split, validation loader over the test split (as the thesis).

    ``cache_images``: the deterministic prefix of both splits (decode, box crop, background erasing, resize,
    colour mode) is computed once into uint8 cache files under ``cache_path`` (default
    ``<data_path>/.cache``) in ``prepare_data`` and read from there: same pixels, no JPEG decoding.
    ``augmentation_device="gpu"``: the training loader yields un-augmented uint8 batches, and
    ``on_after_batch_transfer`` applies the configured augmentations (kornia counterparts, one draw per image)
    and normalisation to whole batches on the device they were moved to.
    ``data_on_device=True`` (with both of the above): the cached images of both splits are copied once to the
    training device, and the loaders are datasets.device_batches.DeviceBatches that gather, augment and
    normalise batches there (no loader processes). ``validation_batch_size``: None means ``batch_size``.
    """

    def __init__(self, settings: DataSettings, show_progress: bool = True) -> None:
        super().__init__()
        self.settings = settings
        preprocessing, augmentation, loading = settings.preprocessing, settings.augmentation, settings.loading
        self.data_path = Path(settings.data_path)
        self.records = {split: read_labels(self.data_path / f"{split}_labels.csv") for split in SPLITS}
        self.num_classes, self.class_names = classes_of(self.records)
        self.img_channels = preprocessing.channels
        self.batch_size = loading.batch_size
        self.validation_batch_size = loading.validation_batch_size or loading.batch_size
        self.num_workers = default_loader_workers() if loading.num_workers is None else loading.num_workers
        self.pin_memory = torch.cuda.is_available() if loading.pin_memory is None else loading.pin_memory
        self.persistent_workers = loading.persistent_workers and self.num_workers > 0
        self.prefetch_factor = loading.prefetch_factor if self.num_workers > 0 else None
        self.cache_dir = Path(loading.cache_path) if loading.cache_path else default_cache_dir(self.data_path)
        self.show_progress = show_progress
        self.batch_augmentation: BatchAugmentation | None = None
        self.batch_normalization: BatchAugmentation | None = None
        if augmentation.device == "gpu":
            mean, std = (preprocessing.mean, preprocessing.std) if preprocessing.normalize else (None, None)
            self.batch_augmentation = build_batch_augmentation(augmentation.image, augmentation.tensor,
                                                               self.img_channels, mean, std)
            self.batch_normalization = build_batch_augmentation(None, None, self.img_channels, mean, std)
        self.train_dataset: StanfordCarsDataset | None = None
        self.val_dataset: StanfordCarsDataset | None = None

    def _dataset(self, split: str, train: bool) -> StanfordCarsDataset:
        uint8_output = train and self.batch_augmentation is not None
        dataset = StanfordCarsDataset(self.data_path, split, train, self.settings.preprocessing,
                                      self.settings.augmentation, self.records[split], uint8_output)
        if self.settings.loading.cache_images:
            dataset.use_cache(ensure_cache(dataset, self.cache_dir, self.num_workers, self.show_progress))
        return dataset

    def prepare_data(self) -> None:
        """Build the image caches when cache_images is on (Lightning calls this once per node, before setup)."""
        if self.settings.loading.cache_images:
            self._dataset("train", True)
            self._dataset("test", False)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets (labels were read once in __init__), reading complete caches when cache_images is on."""
        if self.train_dataset is None:
            self.train_dataset = self._dataset("train", True)
        if self.val_dataset is None:
            self.val_dataset = self._dataset("test", False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With augmentation_device="gpu": augment and normalise uint8 training batches where they now are."""
        images, targets = batch
        if self.batch_augmentation is not None and images.dtype == torch.uint8:
            images = self.batch_augmentation.to(images.device)(images)
        return images, targets

    def _processes(self) -> tuple[int, int]:
        """(this process's rank, number of processes) of the attached Trainer, else (0, 1)."""
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _drop_last(self, dataset_size: int, shuffle: bool) -> bool:
        """A last training batch of one image would break BatchNorm: drop it (only then), counting the share
        of each process when DDP splits the set between processes."""
        return shuffle and math.ceil(dataset_size / self._processes()[1]) % self.batch_size == 1

    def _loader(self, dataset: StanfordCarsDataset, shuffle: bool) -> DataLoader | DeviceBatches:
        if self.settings.loading.data_on_device:
            return self._device_loader(dataset, shuffle)
        generator = torch.Generator().manual_seed(self.settings.loading.seed) if shuffle else None
        return DataLoader(
            dataset, batch_size=self.batch_size if shuffle else self.validation_batch_size, shuffle=shuffle,
            num_workers=self.num_workers, pin_memory=self.pin_memory, persistent_workers=self.persistent_workers,
            generator=generator, drop_last=self._drop_last(len(dataset), shuffle),
            prefetch_factor=self.prefetch_factor,
        )

    def _device_loader(self, dataset: StanfordCarsDataset, shuffle: bool) -> DeviceBatches:
        """Batches gathered from the split's cached images, copied once to the training device."""
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        rank, processes = self._processes()
        images = load_to_device(dataset.cached.path, device)
        targets = torch.tensor(dataset.targets, dtype=torch.long, device=device)
        transform = self.batch_augmentation if shuffle else self.batch_normalization
        return DeviceBatches(
            images, targets, self.batch_size if shuffle else self.validation_batch_size, transform.to(device),
            shuffle=shuffle, generator=torch.Generator().manual_seed(self.settings.loading.seed) if shuffle else None,
            drop_last=self._drop_last(len(dataset), shuffle), rank=rank, world_size=processes)

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        self.setup("fit")
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        self.setup("validate")
        return self._loader(self.val_dataset, shuffle=False)

