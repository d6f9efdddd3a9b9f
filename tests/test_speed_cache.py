"""The image cache of the deterministic prefix: same pixels as decoding, keyed by settings, never half-written."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

import datasets.image_cache as image_cache
import datasets.stanford_data as stanford_data
from datasets.stanford_data import StanfordCarsDataset
from datasets.stanford_data_module import StanfordCarsDataModule
from datasets.image_cache import build_cache, cache_files, ensure_cache, find_cache
from tests.flat_settings import THESIS_IMAGE, THESIS_TENSOR, flat_settings, preprocessing


@pytest.fixture(scope="module")
def speed_data(make_prepared):
    """Prepared synthetic data: 4 classes, 8 train and 8 test images of 48-96 px (7th images grayscale)."""
    return make_prepared("speed_cache", num_classes=4, images_per_class=4, seed=3)


@pytest.fixture
def data_copy(speed_data, tmp_path):
    """A private copy of the prepared data (its caches land in its own .cache folder)."""
    return shutil.copytree(speed_data, tmp_path / "prepared")


def module(path, **kwargs):
    settings = dict(image_size=(40, 48), batch_size=4, num_workers=0, seed=7, crop_to_bboxes=True,
                    erase_background=True, image=THESIS_IMAGE, tensor=THESIS_TENSOR)
    return StanfordCarsDataModule(flat_settings(path, **{**settings, **kwargs}), show_progress=False)


def dataset_of(path, split, records=None, **values):
    """A dataset of the split with box crop and background erasing unless the preprocessing values say otherwise."""
    settings = preprocessing(**{"crop_to_bboxes": True, "erase_background": True, **values})
    return StanfordCarsDataset(path, split, preprocessing=settings, records=records)


def all_batches(data_module, seed=0):
    torch.manual_seed(seed)
    train = [batch for _ in range(2) for batch in data_module.train_dataloader()]
    return train, list(data_module.val_dataloader())


@pytest.mark.parametrize("options", [{}, {"grayscale": True, "mean": (0.5,), "std": (0.25,)},
                                     {"erase_background": False}, {"crop_to_bboxes": False}])
def test_cached_batches_equal_uncached_ones_pixel_for_pixel(data_copy, monkeypatch, options):
    plain_train, plain_valid = all_batches(module(data_copy, **options))
    cached_module = module(data_copy, cache_images=True, **options)
    cached_module.prepare_data()
    assert len(list((data_copy / ".cache").glob("*.json"))) == 2  # train and test caches built
    monkeypatch.setattr(stanford_data, "load_image", None)  # built: no JPEG is decoded any more
    cached_train, cached_valid = all_batches(cached_module)
    for plain, cached in zip(plain_train + plain_valid, cached_train + cached_valid, strict=True):
        assert torch.equal(plain[0], cached[0]) and torch.equal(plain[1], cached[1])
    dataset = cached_module.train_dataset
    assert dataset.cached is not None
    monkeypatch.undo()
    uncached = dataset_of(data_copy, "train", image_size=(40, 48),
                          **{k: v for k, v in options.items() if k not in ("mean", "std")}, normalize=False)
    for index in range(len(dataset)):
        assert np.array_equal(np.asarray(dataset.load(index)), np.asarray(uncached.load(index)))
        assert torch.equal(dataset.load_uint8(index), uncached.load_uint8(index))


def test_cache_is_keyed_by_settings_and_rebuilt_when_they_change(data_copy):
    base = dict(image_size=(40, 48), normalize=False)
    dataset = dataset_of(data_copy, "train", **base)
    cache_dir = data_copy / "cache_here"
    built = build_cache(dataset, cache_dir, progress=False)
    assert find_cache(dataset, cache_dir) == built
    assert find_cache(dataset_of(data_copy, "train", **base), cache_dir) == built  # same settings
    changes = [{"image_size": (40, 40)}, {"crop_to_bboxes": False}, {"erase_background": False},
               {"grayscale": True, "normalize": False}]
    files = {built}
    for change in changes:
        other = dataset_of(data_copy, "train", **{**base, **change})
        assert find_cache(other, cache_dir) is None, change
        path = ensure_cache(other, cache_dir, progress=False)
        assert path not in files and find_cache(other, cache_dir) == path
        files.add(path)
    assert find_cache(dataset_of(data_copy, "test", **base), cache_dir) is None  # the other split
    assert find_cache(dataset, cache_dir) == built  # earlier caches stay usable
    image = dataset.paths[0]
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))  # an image file changed
    assert find_cache(dataset_of(data_copy, "train", **base), cache_dir) is None
    records = list(dataset.records)
    records[0] = type(records[0])(records[0].image_fname, records[0].class_id, (0, 0, 5, 5), records[0].class_name)
    assert find_cache(dataset_of(data_copy, "train", records=records, **base), cache_dir) is None


def test_stale_or_foreign_files_are_not_used(data_copy):
    dataset = dataset_of(data_copy, "test", image_size=(24, 24))
    cache_dir = data_copy / ".cache"
    array_path, meta_path, _ = cache_files(dataset, cache_dir)
    build_cache(dataset, cache_dir, progress=False)
    np.save(array_path, np.zeros((len(dataset) - 1, 24, 24, 3), dtype=np.uint8))  # wrong length
    assert find_cache(dataset, cache_dir) is None
    build_cache(dataset, cache_dir, progress=False)
    meta_path.write_text(meta_path.read_text().replace('"mode": "RGB"', '"mode": "L"'))  # other settings
    assert find_cache(dataset, cache_dir) is None


def test_interrupted_build_leaves_no_cache_that_would_be_used(data_copy, monkeypatch):
    data_module = module(data_copy, cache_images=True, image=None, tensor=None)
    dataset = dataset_of(data_copy, "train", image_size=(40, 48))
    cache_dir = data_copy / ".cache"
    array_path, meta_path, _ = cache_files(dataset, cache_dir)
    real = image_cache.image_array
    calls = []

    def failing_after_five(image):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt("interrupted")
        return real(image)

    monkeypatch.setattr(image_cache, "image_array", failing_after_five)
    with pytest.raises(KeyboardInterrupt):
        data_module.prepare_data()
    assert find_cache(dataset, cache_dir) is None
    assert not meta_path.exists() and not array_path.exists() and not list(cache_dir.glob("*.partial*"))
    monkeypatch.setattr(image_cache, "image_array", real)

    real_dumps = image_cache.json.dumps

    def failing_metadata(value, **kwargs):
        if "shape" in value:
            raise OSError("disk full")
        return real_dumps(value, **kwargs)

    monkeypatch.setattr(image_cache.json, "dumps", failing_metadata)  # array renamed, metadata never written
    with pytest.raises(OSError, match="disk full"):
        build_cache(dataset, cache_dir, progress=False)
    monkeypatch.undo()
    assert array_path.exists() and not meta_path.exists()
    assert find_cache(dataset, cache_dir) is None
    data_module.prepare_data()  # the next build succeeds
    assert find_cache(dataset, cache_dir) == array_path
    cached = np.load(array_path)
    assert all(np.array_equal(cached[i], np.asarray(dataset.load(i))) for i in range(len(dataset)))


def test_abandoned_partial_files_are_removed(data_copy):
    dataset = dataset_of(data_copy, "test", image_size=(24, 24))
    cache_dir = data_copy / ".cache"
    array_path, _, _ = cache_files(dataset, cache_dir)
    cache_dir.mkdir()
    dead = array_path.with_name(f"{array_path.name}.partial-{2**22 + 12345}")  # above Linux's default pid_max
    alive = array_path.with_name(f"{array_path.name}.partial-{os.getppid()}")
    dead.write_bytes(b"x")
    alive.write_bytes(b"x")
    build_cache(dataset, cache_dir, progress=False)
    assert not dead.exists() and alive.exists()


def test_cache_path_and_workers(data_copy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    data_module = module(data_copy, cache_images=True, cache_path=str(elsewhere), num_workers=2,
                         image=None, tensor=None)
    data_module.setup("fit")
    assert len(list(elsewhere.glob("*.npy"))) == 2 and not (data_copy / ".cache").exists()
    assert data_module.prefetch_factor is None
    assert module(data_copy, num_workers=2, prefetch_factor=4).train_dataloader().prefetch_factor == 4
    labels = [batch[1] for batch in data_module.val_dataloader()]  # read by two worker processes
    assert torch.cat(labels).tolist() == data_module.val_dataset.targets
