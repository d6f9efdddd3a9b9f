"""augmentation_device: gpu: torchvision names and arguments mapped to kornia, one draw per image (CPU tensors)."""

from __future__ import annotations

import kornia.augmentation as K
import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from datasets.stanford_data_module import StanfordCarsDataModule
from datasets import transforms
from utils.config import Config
from datasets.gpu_transforms import GPU_COUNTERPARTS, build_batch_augmentation, kornia_transform
from tests.flat_settings import THESIS_IMAGE, THESIS_TENSOR, augmentation, flat_settings
from utils.config.validation import validate


def config_problems(values: dict) -> list[str]:
    """datasets.transforms' checks of a Config with these values (the others the schema's defaults)."""
    return transforms.config_problems(Config(**values))


def smooth_images(batch=1, channels=3, height=40, width=56):
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    image = torch.stack([x, y, x * y][:channels])
    image[:, 8:16, 30:44] = 1.0
    return image.expand(batch, -1, -1, -1).contiguous()


def test_thesis_transforms_map_to_kornia_classes_with_their_arguments():
    augmentation = build_batch_augmentation(THESIS_IMAGE, THESIS_TENSOR, 3, (0.5, 0.4, 0.3), (0.2, 0.25, 0.5))
    flip, affine, jitter, erasing = augmentation.transforms
    assert [type(t) for t in augmentation.transforms] == [K.RandomHorizontalFlip, K.RandomAffine, K.ColorJitter,
                                                          K.RandomErasing]
    assert flip.p == 0.5 and affine.p == 1.0 and jitter.p == 1.0 and erasing.p == 0.5
    generator = affine._param_generator
    assert (generator.degrees, generator.translate, generator.scale, generator.shear) == (
        25, (0.1, 0.1), (0.9, 1.1), 8)
    assert affine.flags["resample"].name == "NEAREST"  # torchvision's RandomAffine default
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == (0.2, 0.2, 0.2, 0.1)
    assert (erasing.scale, erasing.value) == ((0.02, 0.25), 0.0)
    assert torch.equal(augmentation.mean.flatten(), torch.tensor([0.5, 0.4, 0.3]))


def test_other_mappings_convert_conventions():
    blur = kornia_transform("image_augmentations", "GaussianBlur", {"kernel_size": [3, 5], "sigma": 1.5})
    assert isinstance(blur, K.RandomGaussianBlur) and blur.p == 1.0
    assert blur.flags["kernel_size"] == (5, 3)  # torchvision (x, y) -> kornia (y, x)
    affine = kornia_transform("image_augmentations", "RandomAffine", {"degrees": 0, "fill": 255})
    assert torch.equal(affine.flags["fill_value"], torch.ones(3)) and affine.flags["padding_mode"].name == "FILL"
    erasing = kornia_transform("tensor_augmentations", "RandomErasing", {"value": 0.5})
    assert erasing.value == 0.5  # tensors are in [0, 1] already
    crop = kornia_transform("image_augmentations", "RandomResizedCrop", {"size": 32, "scale": [0.5, 1.0]})
    assert crop._param_generator.output_size == (32, 32) and crop._param_generator.scale == (0.5, 1.0)
    rotation = kornia_transform("image_augmentations", "RandomRotation",
                                {"degrees": 10, "interpolation": InterpolationMode.BILINEAR})
    assert rotation.flags["resample"].name == "BILINEAR"
    assert kornia_transform("image_augmentations", "RandomGrayscale", {"p": 0.3}, channels=1) is None
    gray_jitter = kornia_transform("image_augmentations", "ColorJitter", {"brightness": 0.1, "hue": 0.1}, channels=1)
    assert gray_jitter.hue == 0.0 and gray_jitter.saturation == 0.0 and gray_jitter.brightness == 0.1
    assert set(GPU_COUNTERPARTS) >= {"RandomHorizontalFlip", "RandomAffine", "ColorJitter", "RandomErasing",
                                     "RandomRotation", "RandomPerspective", "RandomResizedCrop",
                                     "RandomGrayscale", "GaussianBlur"}


@pytest.mark.parametrize("name, kornia_kwargs, reference", [
    ("RandomAffine", {"degrees": [20, 20], "interpolation": "bilinear"},
     lambda x: TF.affine(x, 20, [0, 0], 1.0, [0.0, 0.0], InterpolationMode.BILINEAR)),
    ("RandomAffine", {"degrees": 0, "shear": [10, 10, -6, -6], "interpolation": "bilinear"},
     lambda x: TF.affine(x, 0, [0, 0], 1.0, [10.0, -6.0], InterpolationMode.BILINEAR)),
    ("RandomAffine", {"degrees": 0, "scale": [1.2, 1.2], "interpolation": "bilinear"},
     lambda x: TF.affine(x, 0, [0, 0], 1.2, [0.0, 0.0], InterpolationMode.BILINEAR)),
    ("RandomRotation", {"degrees": [-15, -15], "interpolation": "bilinear"},
     lambda x: TF.rotate(x, -15, InterpolationMode.BILINEAR)),
    ("ColorJitter", {"hue": [0.1, 0.1]}, lambda x: TF.adjust_hue(x, 0.1)),
    ("ColorJitter", {"brightness": [1.3, 1.3]}, lambda x: TF.adjust_brightness(x, 1.3)),
    ("ColorJitter", {"saturation": [0.5, 0.5]}, lambda x: TF.adjust_saturation(x, 0.5)),
    ("RandomHorizontalFlip", {"p": 1.0}, TF.hflip),
])
def test_fixed_draws_match_torchvision(name, kornia_kwargs, reference):
    images = smooth_images()
    result = kornia_transform("image_augmentations", name, kornia_kwargs)(images)
    assert (result[0] - reference(images[0])).abs().mean() < 1e-4


def test_each_image_of_a_batch_gets_its_own_draw():
    torch.manual_seed(0)
    augmentation = build_batch_augmentation(THESIS_IMAGE, THESIS_TENSOR, 3)
    images = (smooth_images(batch=8) * 255).to(torch.uint8)
    result = augmentation(images)
    assert result.shape == (8, 3, 40, 56) and result.dtype == torch.float32
    for first in range(8):
        for second in range(first + 1, 8):
            assert not torch.equal(result[first], result[second]), (first, second)
    flips = kornia_transform("image_augmentations", "RandomHorizontalFlip", {"p": 0.5})(smooth_images(batch=64))
    flipped = sum(torch.equal(image, TF.hflip(smooth_images()[0])) for image in flips)
    assert 10 < flipped < 54


def test_unsupported_transforms_and_arguments_are_config_problems():
    problems = config_problems({
        "augmentation_device": "gpu", "image_size": [32, 32],
        "image_augmentations": {**THESIS_IMAGE, "RandomPosterize": {"bits": 4},
                                "RandomRotation": {"degrees": 5, "center": [1, 1]}},
        "tensor_augmentations": {"RandomErasing": {"value": "random"}},
    })
    assert len(problems) == 3
    assert problems[0].startswith("image_augmentations.RandomPosterize: no GPU counterpart for "
                                  "augmentation_device: gpu (supported there: RandomHorizontalFlip,")
    assert problems[1].startswith("image_augmentations.RandomRotation: argument center=[1, 1] (only None")
    assert problems[2].startswith("tensor_augmentations.RandomErasing: argument value='random'")
    cpu = {"augmentation_device": "cpu", "image_augmentations": {"RandomPosterize": {"bits": 4}}}
    assert config_problems(cpu) == []
    assert config_problems({"augmentation_device": "gpu", "image_augmentations": THESIS_IMAGE,
                            "tensor_augmentations": THESIS_TENSOR, "convert_to_grayscale": True}) == []
    assert validate({"augmentation_device": "tpu"})[1] == [
        "augmentation_device: 'tpu' is not one of cpu, gpu; did you mean gpu, cpu?"]


@pytest.fixture(scope="module")
def speed_gpu_data(make_prepared):
    return make_prepared("speed_gpu", num_classes=3, images_per_class=6, seed=5)


@pytest.mark.parametrize("cache_images", [False, True])
def test_gpu_mode_batches_are_uint8_and_equal_the_cpu_path_without_augmentation(speed_gpu_data, cache_images):
    settings = dict(image_size=(32, 40), batch_size=4, num_workers=0, seed=1, mean=(0.5, 0.4, 0.3),
                    std=(0.2, 0.25, 0.5), crop_to_bboxes=True, erase_background=True)
    cpu = StanfordCarsDataModule(flat_settings(speed_gpu_data, **settings), show_progress=False)
    gpu = StanfordCarsDataModule(flat_settings(speed_gpu_data, device="gpu", cache_images=cache_images, **settings),
                                 show_progress=False)
    assert gpu.batch_augmentation is not None and len(gpu.batch_augmentation.transforms) == 0
    for cpu_batch, gpu_batch in zip(cpu.train_dataloader(), gpu.train_dataloader(), strict=True):
        assert gpu_batch[0].dtype == torch.uint8
        images, labels = gpu.on_after_batch_transfer(gpu_batch, 0)
        assert torch.equal(images, cpu_batch[0]) and torch.equal(labels, cpu_batch[1])
    for cpu_batch, gpu_batch in zip(cpu.val_dataloader(), gpu.val_dataloader(), strict=True):
        assert torch.equal(gpu.on_after_batch_transfer(gpu_batch, 0)[0], cpu_batch[0])  # validation: untouched


def test_gpu_mode_augments_training_batches(speed_gpu_data):
    data_module = StanfordCarsDataModule(flat_settings(
        speed_gpu_data, image_size=(32, 32), batch_size=8, num_workers=0, crop_to_bboxes=True, erase_background=True,
        device="gpu", image=THESIS_IMAGE, tensor=THESIS_TENSOR))
    assert [type(t).__name__ for t in data_module.batch_augmentation.transforms] == [
        "RandomHorizontalFlip", "RandomAffine", "ColorJitter", "RandomErasing"]
    uint8_images, labels = next(iter(data_module.train_dataloader()))
    plain = data_module.batch_augmentation.__class__([], data_module.batch_augmentation.mean.flatten().tolist(),
                                                     data_module.batch_augmentation.std.flatten().tolist())
    images, _ = data_module.on_after_batch_transfer((uint8_images, labels), 0)
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert not torch.equal(images, plain(uint8_images))
    with pytest.raises(ValueError, match="augmentation_device must be one of cpu, gpu, not 'cuda'"):
        augmentation(device="cuda")
