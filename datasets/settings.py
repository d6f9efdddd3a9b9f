"""The data settings of a run, one frozen object per concern, built once from the configuration.

``Preprocessing`` decides the pixels (the image cache's key, the export's metadata), ``Augmentation`` the random
training-time changes, ``Loading`` how batches are made. The data module and the dataset take them as they are.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

RGB_MEAN = (0.4707, 0.4602, 0.4550)
RGB_STD = (0.2594, 0.2585, 0.2635)
AUGMENTATION_DEVICES = ("cpu", "gpu")
DATA_ON_DEVICE_NEEDS = ("data_on_device: true needs cache_images: true (the images it keeps on the device are the "
                        "cache's) and augmentation_device: gpu (batches are augmented where they are)")

TransformSpec = Mapping[str, Mapping[str, Any] | None]


@dataclass(frozen=True)
class Preprocessing:
    """How a prepared image becomes the network's input, before any augmentation.

    ``crop_to_bboxes`` and ``erase_background`` apply to training images only (``validation()`` drops them).
    """

    image_size: tuple[int, int] = (227, 227)
    grayscale: bool = False
    normalize: bool = True
    mean: tuple[float, ...] = RGB_MEAN
    std: tuple[float, ...] = RGB_STD
    crop_to_bboxes: bool = False
    erase_background: bool = False

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

    def metadata(self) -> dict[str, Any]:
        """How a photo becomes the model's input, as validation images were made (written beside exports)."""
        height, width = self.image_size
        return {
            "image_size": [height, width], "input_shape": ["batch", self.channels, height, width],
            "grayscale": self.grayscale, "normalize": self.normalize,
            "mean": list(self.mean) if self.normalize else None, "std": list(self.std) if self.normalize else None,
            "steps": ["convert to grayscale (L) or RGB", f"resize the whole image to {width}x{height} (bilinear)",
                      "scale pixel values to [0, 1]"] + (["subtract mean, divide by std per channel"]
                                                          if self.normalize else []),
        }


@dataclass(frozen=True)
class Augmentation:
    """Random changes to training images: torchvision transforms by class name -> keyword arguments, in order.

    ``image``: on the resized PIL image; ``tensor``: on the tensor before normalisation. ``device="gpu"``: both
    run on whole batches on the training device (kornia counterparts) instead of in the loader processes.
    """

    image: TransformSpec | None = None
    tensor: TransformSpec | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.device not in AUGMENTATION_DEVICES:
            raise ValueError(f"augmentation_device must be one of {', '.join(AUGMENTATION_DEVICES)}, "
                             f"not {self.device!r}")


@dataclass(frozen=True)
class Loading:
    """How batches are made: sizes, loader processes, order, the image cache and device-resident data.

    ``num_workers`` None: the machine's cores, at most 8; ``pin_memory`` None: when CUDA is available;
    ``validation_batch_size`` None: ``batch_size``; ``cache_path`` None: ``<data_path>/.cache``.
    """

    batch_size: int = 64
    validation_batch_size: int | None = None
    num_workers: int | None = None
    pin_memory: bool | None = None
    persistent_workers: bool = True
    prefetch_factor: int | None = None
    seed: int = 0
    cache_images: bool = False
    cache_path: str | os.PathLike | None = None
    data_on_device: bool = False


@dataclass(frozen=True)
class DataSettings:
    """Everything the data module needs: where the prepared data is and the three settings above."""

    data_path: str | os.PathLike
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    augmentation: Augmentation = field(default_factory=Augmentation)
    loading: Loading = field(default_factory=Loading)

    def __post_init__(self) -> None:
        needs = self.loading.cache_images and self.augmentation.device == "gpu"
        if self.loading.data_on_device and not needs:
            raise ValueError(DATA_ON_DEVICE_NEEDS)

    def for_evaluation(self, num_workers: int = 0, batch_size: int | None = None) -> DataSettings:
        """Reading the validation data on the CPU: no augmentation, no cache files, `num_workers` processes;
        `batch_size`, when given, for the validation batches too."""
        sizes = {"batch_size": batch_size, "validation_batch_size": batch_size} if batch_size else {}
        loading = replace(self.loading, num_workers=num_workers, cache_images=False, data_on_device=False, **sizes)
        return replace(self, augmentation=Augmentation(), loading=loading)


def preprocessing_settings(cfg: Mapping[str, Any]) -> Preprocessing:
    """The configuration's preprocessing (normalisation parameters of its colour mode)."""
    grayscale = cfg["convert_to_grayscale"]
    params = cfg["normalization_params_grayscale" if grayscale else "normalization_params_rgb"]
    return Preprocessing(image_size=cfg["image_size"], grayscale=grayscale, normalize=cfg["normalize"],
                         mean=params["mean"], std=params["std"], crop_to_bboxes=cfg["crop_to_bboxes"],
                         erase_background=cfg["erase_background"])


def data_settings(cfg: Mapping[str, Any]) -> DataSettings:
    """A validated configuration's data settings."""
    augmentation = Augmentation(
        image=copy.deepcopy(cfg["image_augmentations"]) if cfg["augment_images"] else None,
        tensor=copy.deepcopy(cfg["tensor_augmentations"]) if cfg["augment_tensors"] else None,
        device=cfg["augmentation_device"])
    loading = Loading(batch_size=cfg["batch_size"], validation_batch_size=cfg["validation_batch_size"],
                      num_workers=cfg["num_workers"], pin_memory=cfg["pin_memory"],
                      persistent_workers=cfg["persistent_workers"], prefetch_factor=cfg["prefetch_factor"],
                      seed=cfg["seed"] if cfg["seed"] is not None else 0, cache_images=cfg["cache_images"],
                      cache_path=cfg["cache_path"], data_on_device=cfg["data_on_device"])
    return DataSettings(cfg["stanford_data_path"], preprocessing_settings(cfg), augmentation, loading)
