"""Batches drawn from images held in the training device's memory (``data_on_device: true``).

The cached uint8 images of a split (datasets.image_cache, [N, H, W, C]) are copied once to the device. Every
epoch the training indices are shuffled as ``DataLoader(shuffle=True, generator=...)`` shuffles them (the same
order for the same seed), split between DDP processes as ``DistributedSampler`` splits
them (padded to equal shares), and gathered on the device. No loader process and no host-to-device copy of
images remain in the training loop.

Batch augmentation (kornia, one random draw per image) runs on chunks of several batches at once: the same
draws per image, far fewer launches of its many small kernels. The batches of a chunk share what kornia draws
once per call (the order of ColorJitter's four steps).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import RandomSampler

AUGMENT_CHUNK_IMAGES = 512  # images augmented per call (whole batches); 512 x 3 x 227 x 227 floats: 317 MB
COPY_CHUNK_IMAGES = 1024  # images copied to the device at a time (bounds the host memory of the copy)


def load_to_device(cache_file: str | os.PathLike, device: torch.device) -> torch.Tensor:
    """A uint8 cache file [N, H, W, C] as a tensor on ``device``, copied in chunks."""
    array = np.load(cache_file, mmap_mode="r")
    images = torch.empty(array.shape, dtype=torch.uint8, device=device)
    for start in range(0, len(array), COPY_CHUNK_IMAGES):
        chunk = torch.from_numpy(np.array(array[start:start + COPY_CHUNK_IMAGES]))
        images[start:start + len(chunk)].copy_(chunk, non_blocking=False)
    return images


class DeviceBatches:
    """(images, targets) batches gathered from device tensors; images go through ``transform`` (uint8 -> float).

    ``images`` is uint8 [N, H, W, C] (the cache layout); batches are [B, C, H, W] in channels-last memory.
    ``shuffle`` draws a new order each epoch from ``generator``; ``rank``/``world_size`` give each DDP process
    its share. ``chunk_images``: at most this many images (whole batches) are transformed per call.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, batch_size: int,
                 transform: Callable[[torch.Tensor], torch.Tensor], shuffle: bool = False,
                 generator: torch.Generator | None = None, drop_last: bool = False, rank: int = 0,
                 world_size: int = 1, chunk_images: int = AUGMENT_CHUNK_IMAGES) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 images [N, H, W, C], got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = targets.to(images.device)
        self.batch_size = batch_size
        self.transform = transform
        self.shuffle = shuffle
        self.generator = generator
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.batches_per_chunk = max(1, chunk_images // batch_size)

    def share(self) -> int:
        """Images of this process per epoch (every process gets as many, as with DistributedSampler)."""
        return math.ceil(len(self.images) / self.world_size)

    def __len__(self) -> int:
        share = self.share()
        return share // self.batch_size if self.drop_last else math.ceil(share / self.batch_size)

    def epoch_indices(self) -> torch.Tensor:
        """This process's indices for one epoch, in order (a new permutation per call when shuffling)."""
        count = len(self.images)
        if self.shuffle:  # as DataLoader(shuffle=True, generator=...): its workers' base seed is drawn first
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)
            order = torch.tensor(list(RandomSampler(range(count), generator=self.generator)), dtype=torch.long)
        else:
            order = torch.arange(count)
        padding = self.share() * self.world_size - count
        if padding:
            order = torch.cat([order, order[:padding]])
        return order[self.rank::self.world_size].to(self.images.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self.epoch_indices()
        batches = len(self)
        for first in range(0, batches, self.batches_per_chunk):
            last = min(first + self.batches_per_chunk, batches)
            chunk = indices[first * self.batch_size:last * self.batch_size]
            images = self.transform(self.images[chunk].permute(0, 3, 1, 2))
            targets = self.targets[chunk]
            for start in range(0, len(chunk), self.batch_size):
                yield images[start:start + self.batch_size], targets[start:start + self.batch_size]
