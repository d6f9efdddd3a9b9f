"""The data settings of a run, one frozen object per concern, built once from the configuration.

``Preprocessing`` decides the pixels (the image cache's key, the input contract written beside exports), ``Augmentation`` the random
training-time changes, ``Loading`` how batches are made. The data module and the dataset take them as they are.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from utils.config import Config

AUGMENTATION_DEVICES = ("cpu", "gpu")
DATA_ON_DEVICE_NEEDS = ("data_on_device: true needs cache_images: true (the images it keeps on the device are the "
                        "cache's) and augmentation_device: gpu (batches are augmented where they are)")

TransformSpec = Mapping[str, Mapping[str, Any] | None]


@dataclass(frozen=True)
class Preprocessing:
    """How a prepared image becomes the network's input, before any augmentation.

    ``crop_to_bboxes`` and ``erase_background`` apply to training images only (``validation()`` drops them).
    """

    image_size: tuple[int, int]
    grayscale: bool
    normalize: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_to_bboxes: bool
    erase_background: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", tuple(int(side) for side in self.image_size))
        object.__setattr__(self, "mean", tuple(float(value) for value in self.mean))
        object.__setattr__(self, "std", tuple(float(value) for value in self.std))
        object.__setattr__(self, "erase_background", self.crop_to_bboxes and self.erase_background)
        if self.normalize and not len(self.mean) == len(self.std) == self.channels:
            raise ValueError(f"mean/std need {self.channels} value(s) for {self.mode} images, "
                             f"got {list(self.mean)}/{list(self.std)}")

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    @property
    def mode(self) -> str:
        """The PIL mode images are converted to."""
        return "L" if self.grayscale else "RGB"

    def validation(self) -> Preprocessing:
        """The validation images' preprocessing: the whole image, no box crop."""
        return replace(self, crop_to_bboxes=False, erase_background=False)


@dataclass(frozen=True)
class Augmentation:
    """Random changes to training images: torchvision transforms by class name -> keyword arguments, in order.

    ``image``: on the resized PIL image; ``tensor``: on the tensor before normalisation. ``device="gpu"``: both
    run on whole batches on the training device (kornia counterparts) instead of in the loader processes.
    """

    image: TransformSpec | None
    tensor: TransformSpec | None
    device: str

    def __post_init__(self) -> None:
        if self.device not in AUGMENTATION_DEVICES:
            raise ValueError(f"augmentation_device must be one of {', '.join(AUGMENTATION_DEVICES)}, "
                             f"not {self.device!r}")


NO_AUGMENTATION = Augmentation(image=None, tensor=None, device="cpu")


@dataclass(frozen=True)
class Loading:
    """How batches are made: sizes, loader processes, order, the image cache and device-resident data.

    ``num_workers`` None: the machine's cores, at most 8; ``pin_memory`` None: when CUDA is available;
    ``validation_batch_size`` None: ``batch_size``; ``cache_path`` None: ``<data_path>/.cache``.
    """

    batch_size: int
    validation_batch_size: int | None
    num_workers: int | None
    pin_memory: bool | None
    persistent_workers: bool
    prefetch_factor: int | None
    seed: int
    cache_images: bool
    cache_path: str | os.PathLike | None
    data_on_device: bool


@dataclass(frozen=True)
class DataSettings:
    """Everything the data module needs: where the prepared data is and the three settings above."""

    data_path: str | os.PathLike
    preprocessing: Preprocessing
    augmentation: Augmentation
    loading: Loading

    def __post_init__(self) -> None:
        needs = self.loading.cache_images and self.augmentation.device == "gpu"
        if self.loading.data_on_device and not needs:
            raise ValueError(DATA_ON_DEVICE_NEEDS)

    def for_evaluation(self, num_workers: int = 0, batch_size: int | None = None) -> DataSettings:
        """Reading the validation data on the CPU: no augmentation, no cache files, `num_workers` processes;
        `batch_size`, when given, for the validation batches too."""
        sizes = {"batch_size": batch_size, "validation_batch_size": batch_size} if batch_size else {}
        loading = replace(self.loading, num_workers=num_workers, cache_images=False, data_on_device=False, **sizes)
        return replace(self, augmentation=NO_AUGMENTATION, loading=loading)


def preprocessing_settings(config: Config) -> Preprocessing:
    """The configuration's preprocessing (normalisation parameters of its colour mode)."""
    normalization = config.normalization()
    return Preprocessing(image_size=tuple(config.image_size), grayscale=config.convert_to_grayscale,
                         normalize=config.normalize, mean=tuple(normalization.mean), std=tuple(normalization.std),
                         crop_to_bboxes=config.crop_to_bboxes, erase_background=config.erase_background)


def data_settings(config: Config) -> DataSettings:
    """A checked configuration's data settings."""
    augmentation = Augmentation(
        image=copy.deepcopy(config.image_augmentations) if config.augment_images else None,
        tensor=copy.deepcopy(config.tensor_augmentations) if config.augment_tensors else None,
        device=config.augmentation_device)
    loading = Loading(batch_size=config.batch_size, validation_batch_size=config.validation_batch_size,
                      num_workers=config.num_workers, pin_memory=config.pin_memory,
                      persistent_workers=config.persistent_workers, prefetch_factor=config.prefetch_factor,
                      seed=config.seed if config.seed is not None else 0, cache_images=config.cache_images,
                      cache_path=config.cache_path, data_on_device=config.data_on_device)
    return DataSettings(config.stanford_data_path, preprocessing_settings(config), augmentation, loading)
