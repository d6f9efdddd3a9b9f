"""StanfordCarsDataset / StanfordCarsDataModule on prepared synthetic data."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as F
from PIL import Image

from datasets.preparation import prepare_stanford_dataset
from tests.flat_settings import augmentation, flat_settings, preprocessing
from datasets.stanford_data import StanfordCarsDataset
from datasets.stanford_data_module import StanfordCarsDataModule
from datasets.stanford_data import load_image
from utils.cpu_threads import default_loader_workers
from datasets.synthetic import class_name
from datasets.synthetic_images import MARGIN, class_colour


def plain_module(path, batch_size=64, seed=0, **preprocessing):
    """A data module with one process, no augmentation, no normalisation, box crop and background erasing."""
    settings = {"normalize": False, "crop_to_bboxes": True, "erase_background": True, **preprocessing}
    return StanfordCarsDataModule(flat_settings(path, batch_size=batch_size, num_workers=0, seed=seed, **settings))


@pytest.fixture
def data_prepared(data_make_raw, tmp_path):
    raw, generated = data_make_raw(layout="original", classes=4, per_class=6)
    prepare_stanford_dataset(raw, tmp_path / "prepared", progress=False)
    return tmp_path / "prepared", generated


def expected_pixel(class_id: int) -> torch.Tensor:
    return torch.tensor(class_colour(class_id), dtype=torch.float32) / 255


def test_module_attributes_and_batches(data_prepared):
    path, generated = data_prepared
    module = plain_module(path, image_size=(32, 40), batch_size=5)
    assert module.num_classes == 4 and module.img_channels == 3
    assert module.class_names == [class_name(c) for c in range(1, 5)]
    images, labels = next(iter(module.train_dataloader()))
    assert images.shape == (5, 3, 32, 40) and images.dtype == torch.float32
    assert labels.dtype == torch.long and set(labels.tolist()) <= {0, 1, 2, 3}
    assert sum(len(b[1]) for b in module.val_dataloader()) == 12


@pytest.mark.parametrize("grayscale", [False, True])
def test_crop_puts_class_colour_of_label_in_training_images(data_prepared, grayscale):
    path, _ = data_prepared
    module = plain_module(path, image_size=(32, 32), batch_size=12, grayscale=grayscale, erase_background=False)
    images, labels = next(iter(module.train_dataloader()))
    assert images.shape[1] == (1 if grayscale else 3)
    for image, label in zip(images, labels):
        colour = expected_pixel(int(label) + 1)
        grey_source = (image.max(0).values - image.min(0).values).max() < 0.02
        if grayscale or grey_source:  # grayscale output, or one of the generator's grayscale images
            colour = (colour * torch.tensor([0.299, 0.587, 0.114])).sum(0, keepdim=True)
        for y, x in ((2, 2), (2, 29), (29, 2), (29, 29)):  # the plain margin of the box
            assert (image[:, y, x] - colour).abs().max() < 0.2, (label, image[:, y, x], colour)


def test_background_erasing_pastes_crop_centred_on_white(data_prepared):
    path, _ = data_prepared
    dataset = StanfordCarsDataset(path, "train", train=True, preprocessing=preprocessing(
        (64, 64), normalize=False, crop_to_bboxes=True, erase_background=True))
    for index, record in enumerate(dataset.records):
        with Image.open(dataset.paths[index]) as raw:
            width, height = raw.size
        x1, y1, x2, y2 = record.box
        pw, ph = round((x2 - x1 + 1) * 64 / width), round((y2 - y1 + 1) * 64 / height)
        left, top = (64 - pw) // 2, (64 - ph) // 2
        image, label = dataset[index]
        assert label == record.class_id - 1
        if left > 1:
            assert torch.all(image[:, :, : left - 1] == 1.0)
        if top > 1:
            assert torch.all(image[:, : top - 1, :] == 1.0)
        if ph > 16 and (image.max(0).values - image.min(0).values).max() > 0.02:  # RGB source, tall enough
            margin_pixel = image[:, top + round(ph * MARGIN / 2), left + pw // 2]
            assert (margin_pixel - expected_pixel(record.class_id)).abs().max() < 0.25


def test_validation_images_are_whole_and_unaugmented(data_prepared):
    path, _ = data_prepared
    augmentations = {"RandomVerticalFlip": {"p": 1.0}}
    dataset = StanfordCarsDataset(path, "test", train=False,
                                  preprocessing=preprocessing((24, 24), normalize=False, crop_to_bboxes=True),
                                  augmentation=augmentation(augmentations, {"RandomErasing": {"p": 1.0, "value": 0}}))
    for index in range(len(dataset)):
        with Image.open(dataset.paths[index]) as raw:
            whole = torch.from_numpy(np.array(raw.convert("RGB").resize((24, 24), Image.BILINEAR))).permute(2, 0, 1)
        assert (dataset[index][0] - whole / 255).abs().mean() < 0.06


def test_augmentations_are_applied_in_order_then_normalised(data_prepared):
    path, _ = data_prepared
    unnormalised = preprocessing((32, 32), normalize=False, crop_to_bboxes=True)
    plain = StanfordCarsDataset(path, "train", preprocessing=unnormalised)
    flipped = StanfordCarsDataset(path, "train", preprocessing=unnormalised, augmentation=augmentation(
        {"RandomVerticalFlip": {"p": 1.0}, "RandomHorizontalFlip": {"p": 1.0}},
        {"RandomErasing": {"p": 1.0, "scale": [0.2, 0.2], "value": 0}}))
    image, _ = plain[0]
    augmented, _ = flipped[0]
    rotated = torch.flip(image, dims=(1, 2))
    assert (augmented == 0).all(0).float().mean() >= 0.15  # the erased rectangle
    kept = ~(augmented == 0).all(0)
    assert torch.allclose(augmented[:, kept], rotated[:, kept], atol=1e-6)
    normalised = StanfordCarsDataset(path, "train", preprocessing=preprocessing(
        (32, 32), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5), crop_to_bboxes=True))
    expected = (image - torch.tensor([0.5, 0.4, 0.3])[:, None, None]) / torch.tensor([0.2, 0.25, 0.5])[:, None, None]
    assert torch.allclose(normalised[0][0], expected, atol=1e-5)


def test_draft_decoding_matches_full_decode(tmp_path):
    rng = np.random.default_rng(0)
    pixels = np.kron(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), np.ones((20, 20, 1), dtype=np.uint8))
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=95)  # 800x600
    box = (100, 60, 699, 459)
    for erase in (False, True):
        fast = np.asarray(load_image(tmp_path / "big.jpg", "RGB", (64, 48), box, erase), dtype=float)
        with Image.open(tmp_path / "big.jpg") as full:
            full = full.convert("RGB")
            if erase:
                canvas = Image.new("RGB", full.size, (255, 255, 255))
                crop = full.crop((100, 60, 700, 460))
                canvas.paste(crop, ((800 - 600) // 2, (600 - 400) // 2))
                reference = canvas.resize((64, 48), Image.BILINEAR)
            else:
                reference = full.resize((64, 48), Image.BILINEAR, box=(100, 60, 700, 460))
        assert np.abs(fast - np.asarray(reference, dtype=float)).mean() < 6


def test_corrupt_or_missing_image_names_the_file(data_prepared):
    path, _ = data_prepared
    dataset = StanfordCarsDataset(path, "train", preprocessing=preprocessing((16, 16), crop_to_bboxes=True))
    victim = dataset.paths[3]
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(RuntimeError, match=f"cannot read image {victim}"):
        dataset[3]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=rf"1 image\(s\) listed in .*train_labels.csv are missing.*{victim.name}"):
        plain_module(path).train_dataloader()
    with pytest.raises(FileNotFoundError, match="prepare_stanford_dataset.py"):
        StanfordCarsDataModule(flat_settings(path / "nowhere"))


def test_loader_settings_and_seeded_shuffle(data_prepared):
    path, _ = data_prepared
    module = plain_module(path, image_size=(16, 16), batch_size=12)
    assert module.pin_memory == torch.cuda.is_available() and module.persistent_workers is False
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert StanfordCarsDataModule(flat_settings(path)).num_workers == default_loader_workers() == min(cores, 8)
    assert StanfordCarsDataModule(flat_settings(path, num_workers=2)).persistent_workers is True

    def order(seed):
        module = plain_module(path, image_size=(16, 16), batch_size=12, seed=seed)
        return [torch.cat([b[1] for b in module.train_dataloader()]).tolist() for _ in range(1)][0]

    assert order(3) == order(3)
    assert order(3) != order(4) or order(3) != order(5)
    with pytest.raises(ValueError, match="mean/std need 1 value"):
        preprocessing(grayscale=True)


def test_small_cnn_learns_synthetic_classes(data_make_raw, tmp_path):
    raw, _ = data_make_raw(classes=4, per_class=20)
    prepare_stanford_dataset(raw, tmp_path / "data", progress=False)
    torch.manual_seed(0)
    module = StanfordCarsDataModule(flat_settings(
        tmp_path / "data", image_size=(24, 24), crop_to_bboxes=True, erase_background=True,
        image={"RandomHorizontalFlip": {"p": 0.5}}, batch_size=8, num_workers=0))
    network = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(32, 4),
    )
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    for _ in range(8):
        for images, labels in module.train_dataloader():
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(network(images), labels).backward()
            optimizer.step()
    with torch.no_grad():
        correct = sum((network(x).argmax(1) == y).sum().item() for x, y in module.val_dataloader())
    assert correct / 40 > 0.6, correct  # chance: 0.25


def test_training_loader_never_yields_a_single_image_batch(data_prepared):
    path, _ = data_prepared  # 12 training images
    module = plain_module(path, image_size=(16, 16), batch_size=11)
    assert [len(labels) for _, labels in module.train_dataloader()] == [11]
    assert [len(labels) for _, labels in module.val_dataloader()] == [11, 1]
    module = plain_module(path, image_size=(16, 16), batch_size=5)
    assert [len(labels) for _, labels in module.train_dataloader()] == [5, 5, 2]


def test_single_image_batches_are_counted_per_ddp_process(data_prepared):
    path, _ = data_prepared  # 12 training images: 4 per process for 3 processes, 6 for 2
    module = plain_module(path, image_size=(16, 16), batch_size=3)
    module.trainer = SimpleNamespace(world_size=3, global_rank=0)
    assert module.train_dataloader().drop_last  # each process: 3 + 1
    module.trainer = SimpleNamespace(world_size=2, global_rank=0)
    assert not module.train_dataloader().drop_last  # each process: 3 + 3
    module = plain_module(path, image_size=(16, 16), batch_size=11)
    module.trainer = SimpleNamespace(world_size=3, global_rank=0)
    assert not module.train_dataloader().drop_last  # alone, 12 images would drop 1; each process has 4


def test_sixteen_bit_grayscale_photos_are_scaled_to_eight_bits_and_float_ones_refused(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    pixels = np.asarray(load_image(tmp_path / "g16.png", "RGB", (32, 32)))
    assert pixels.min() == 0 and pixels.max() == 255
    np.testing.assert_array_equal(pixels[..., 0], (ramp >> 8).astype(np.uint8))
    Image.fromarray(ramp.astype(np.float32) / 65535).save(tmp_path / "f32.tiff")
    with pytest.raises(ValueError, match="mode F"):
        load_image(tmp_path / "f32.tiff", "L", (32, 32))


# Stored pixels that viewers turn by orientation tag t into the upright image (PIL's transposes undo each other).
UPRIGHT_TO_STORED = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                     4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
                     7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def save_with_orientation(upright, tag, path):
    """The photo as a phone stores it: turned pixels plus EXIF orientation ``tag``."""
    stored = upright.transpose(UPRIGHT_TO_STORED[tag]) if UPRIGHT_TO_STORED[tag] is not None else upright
    exif = Image.Exif()
    exif[0x0112] = tag
    stored.save(path, quality=100, subsampling=0, exif=exif.tobytes())


def test_a_users_folder_of_phone_photos_is_read_upright_with_boxes_on_the_upright_photo(tmp_path):
    """Evaluating on a folder of one's own photos: each is turned by its EXIF orientation tag (1..8)."""
    rng = np.random.default_rng(1)
    pixels = np.kron(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), np.ones((16, 16, 1), dtype=np.uint8))
    upright = Image.fromarray(pixels)  # 640x480, in 16-px blocks of one colour, which JPEG keeps exactly
    upright.save(tmp_path / "upright.jpg", quality=100, subsampling=0)
    (tmp_path / "mine" / "test").mkdir(parents=True)
    box = (96, 64, 543, 415)
    rows = ["image_fname,class,bbox_x1,bbox_y1,bbox_x2,bbox_y2,class_name"]
    for tag in range(1, 9):
        save_with_orientation(upright, tag, tmp_path / "mine" / "test" / f"{tag}.jpg")
        rows.append(f"{tag}.jpg,1,{','.join(map(str, box))},My car")
    (tmp_path / "mine" / "test_labels.csv").write_text("\n".join(rows) + "\n")
    for crop, erase in ((False, False), (True, False), (True, True)):
        settings = preprocessing((48, 64), normalize=False, crop_to_bboxes=crop, erase_background=erase)
        dataset = StanfordCarsDataset(tmp_path / "mine", "test", train=crop, preprocessing=settings)
        reference = F.to_tensor(load_image(tmp_path / "upright.jpg", "RGB", (64, 48), box if crop else None, erase))
        for index in range(8):
            assert torch.equal(dataset[index][0], reference), (dataset.paths[index].name, crop, erase)
