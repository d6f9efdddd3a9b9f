"""datasets.normalization: streamed per-channel statistics checked against numpy on a small prepared set."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.normalization import RunningChannelStats, channel_stats, compute_normalization_params
from tests.flat_settings import preprocessing
from datasets.stanford_data import StanfordCarsDataset

COLUMNS = ["image_fname", "class", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class_name"]
SIZE = (24, 32)  # (height, width)
# to-tensor scales in float32 (as the network sees it): about 1e-8 from the float64 numpy reference


def _write_prepared(root: Path, count: int = 7) -> Path:
    """A prepared-layout train split of lossless PNG images of varied sizes, some of them grayscale."""
    rng = np.random.default_rng(3)
    (root / "train").mkdir(parents=True)
    rows = []
    for index in range(count):
        width, height = 40 + 7 * index, 30 + 5 * index
        if index % 3 == 2:
            pixels = rng.integers(0, 256, (height, width), dtype=np.uint8)
        else:
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            pixels[..., index % 3] //= 3  # unequal channels
        name = f"{index:05d}.png"
        Image.fromarray(pixels).save(root / "train" / name)
        rows.append([name, 1 + index % 2, 3, 4, width - 6, height - 2, f"Car {1 + index % 2}"])
    with open(root / "train_labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_prepared(tmp_path_factory.mktemp("normalization") / "stanford")


def _numpy_reference(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std per channel of all pixels of [H, W, C] arrays stacked at once."""
    stacked = np.stack(arrays).astype(np.float64)
    return stacked.mean(axis=(0, 1, 2)), stacked.std(axis=(0, 1, 2))


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_whole_images_match_numpy(prepared: Path, mode: str) -> None:
    height, width = SIZE
    arrays = []
    for path in sorted((prepared / "train").iterdir()):
        with Image.open(path) as image:
            resized = image.convert(mode).resize((width, height), Image.BILINEAR)
        arrays.append(np.asarray(resized, dtype=np.float64).reshape(height, width, -1) / 255.0)
    expected_mean, expected_std = _numpy_reference(arrays)

    mean, std = compute_normalization_params(prepared, SIZE, convert_to_grayscale=mode == "L", crop_to_bboxes=False)

    assert len(mean) == len(std) == (1 if mode == "L" else 3)
    np.testing.assert_allclose(mean, expected_mean, rtol=0, atol=1e-7)
    np.testing.assert_allclose(std, expected_std, rtol=0, atol=1e-7)


@pytest.mark.parametrize("erase_background", [False, True])
def test_box_cropping_uses_the_training_preprocessing(prepared: Path, erase_background: bool) -> None:
    dataset = StanfordCarsDataset(prepared, preprocessing=preprocessing(
        SIZE, normalize=False, crop_to_bboxes=True, erase_background=erase_background))
    arrays = [np.asarray(dataset.load(i), dtype=np.float64) / 255.0 for i in range(len(dataset))]
    expected_mean, expected_std = _numpy_reference(arrays)
    whole_mean, _ = compute_normalization_params(prepared, SIZE, crop_to_bboxes=False)

    mean, std = compute_normalization_params(prepared, SIZE, crop_to_bboxes=True, erase_background=erase_background)

    np.testing.assert_allclose(mean, expected_mean, rtol=0, atol=1e-7)
    np.testing.assert_allclose(std, expected_std, rtol=0, atol=1e-7)
    assert not np.allclose(mean, whole_mean, atol=1e-4)


def test_worker_processes_give_the_same_values(prepared: Path) -> None:
    single = compute_normalization_params(prepared, SIZE, crop_to_bboxes=False)
    workers = compute_normalization_params(prepared, SIZE, crop_to_bboxes=False, num_workers=2)
    np.testing.assert_allclose(workers, single, rtol=0, atol=1e-12)


def test_streamed_merge_matches_numpy_on_images_of_different_sizes() -> None:
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 5 + i, 9 - i, generator=generator) * (i + 1) for i in range(6)]
    pixels = torch.cat([image.flatten(1) for image in images], dim=1).double().numpy()

    consumed = []
    mean, std = channel_stats(consumed.append(image) or image for image in images)

    assert len(consumed) == len(images)
    np.testing.assert_allclose(mean, pixels.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(axis=1), rtol=1e-12)


def test_population_std_of_two_constant_images() -> None:
    mean, std = channel_stats([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
    assert mean == [0.5] and std == [0.5]


def test_channel_count_change_and_empty_input_are_errors() -> None:
    stats = RunningChannelStats()
    stats.update(torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match="1 channel"):
        stats.update(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="no images"):
        channel_stats([])


def test_missing_data_is_reported_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        compute_normalization_params(tmp_path / "nowhere", SIZE)
