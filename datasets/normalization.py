"""Per-channel mean and standard deviation of the prepared training images, for `normalization_params_*`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from datasets.settings import Preprocessing
from datasets.stanford_data import StanfordCarsDataset


class RunningChannelStats:
    """Per-channel mean and population variance over many images, merged one image at a time in float64.

    Each image's own mean and sum of squared deviations are merged into the totals (Chan et al.'s
    pairwise update), so precision does not degrade with the number of pixels.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.squared_deviations: torch.Tensor | None = None

    def update(self, image: torch.Tensor) -> None:
        """Add one image tensor [C, H, W]."""
        pixels = image.detach().to(torch.float64).flatten(1)
        count = pixels.shape[1]
        mean = pixels.mean(dim=1)
        squared_deviations = ((pixels - mean[:, None]) ** 2).sum(dim=1)
        if self.mean is None:
            self.count, self.mean, self.squared_deviations = count, mean, squared_deviations
            return
        if mean.shape != self.mean.shape:
            raise ValueError(f"image has {mean.shape[0]} channel(s), earlier ones had {self.mean.shape[0]}")
        total = self.count + count
        delta = mean - self.mean
        self.squared_deviations = self.squared_deviations + squared_deviations + delta**2 * self.count * count / total
        self.mean = self.mean + delta * count / total
        self.count = total

    def result(self) -> tuple[list[float], list[float]]:
        """(mean, std) per channel; std is the population standard deviation over all pixels."""
        if self.mean is None:
            raise ValueError("no images were added")
        std = torch.sqrt(self.squared_deviations / self.count)
        return self.mean.tolist(), std.tolist()


def channel_stats(images: Iterable[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per-channel (mean, population std) over an iterable of [C, H, W] tensors, consumed one at a time."""
    stats = RunningChannelStats()
    for image in images:
        stats.update(image)
    return stats.result()


def compute_normalization_params(
    data_path: str | os.PathLike,
    image_size: Sequence[int] = (227, 227),
    convert_to_grayscale: bool = False,
    crop_to_bboxes: bool = True,
    erase_background: bool = True,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) of the training images of a prepared dataset (`train/` + `train_labels.csv`).

    The statistics are those of the images as the network receives them just before normalisation:
    decoded in the colour mode (grayscale: one channel), cropped to their box and with the background
    erased when asked (as training does), resized to `image_size` (height, width) and scaled to [0, 1]
    by the to-tensor step; no augmentation. The std is the population standard deviation over all
    pixels of all images. Images are read one at a time (in `num_workers` worker processes when > 0),
    so memory use does not grow with the size of the set.
    """
    preprocessing = Preprocessing(tuple(image_size), convert_to_grayscale, normalize=False, mean=(), std=(),
                                  crop_to_bboxes=crop_to_bboxes, erase_background=erase_background)
    dataset = StanfordCarsDataset(data_path, "train", preprocessing=preprocessing)
    if len(dataset) == 0:
        raise ValueError(f"{dataset.data_path / 'train_labels.csv'} lists no images")
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers)
    images = (image for image, _ in tqdm(loader, desc="images", disable=not progress))
    return channel_stats(images)
