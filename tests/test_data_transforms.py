"""datasets.config_problems and transform building."""

from __future__ import annotations

import torchvision.transforms as T

from datasets import transforms
from datasets.transforms import build_transforms, transform_names, valid_names
from utils.config import Config


def config_problems(values: dict) -> list[str]:
    """datasets.transforms' checks of a Config with these values (the others the schema's defaults)."""
    return transforms.config_problems(Config(**values))


THESIS = {
    "image_size": [227, 227],
    "image_augmentations": {
        "RandomHorizontalFlip": {"p": 0.5},
        "RandomAffine": {"degrees": 25, "translate": [0.1, 0.1], "scale": [0.9, 1.1], "shear": 8},
        "ColorJitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1},
    },
    "tensor_augmentations": {"RandomErasing": {"p": 0.5, "scale": [0.02, 0.25]}},
}


def test_thesis_config_is_fine_and_builds_in_order():
    assert config_problems(THESIS) == []
    assert config_problems({}) == [] and config_problems({"image_augmentations": None}) == []
    built = build_transforms(THESIS["image_augmentations"])
    assert [type(t).__name__ for t in built] == ["RandomHorizontalFlip", "RandomAffine", "ColorJitter"]
    assert isinstance(build_transforms({"RandomGrayscale": None})[0], T.RandomGrayscale)


def test_unknown_names_suggest_nearest():
    problems = config_problems({"image_augmentations": {"RandomFlip": None, "ColourJitter": {}, "Blur": {}}})
    assert problems == [
        "image_augmentations.RandomFlip: unknown transform; did you mean RandomHorizontalFlip, RandomVerticalFlip?",
        "image_augmentations.ColourJitter: unknown transform; did you mean ColorJitter?",
        "image_augmentations.Blur: unknown transform; see torchvision.transforms for valid names",
    ]


def test_bad_arguments_name_transform_and_argument():
    problems = config_problems({
        "image_size": [64, 64],
        "image_augmentations": {
            "RandomAffine": {"degree": 25},
            "ColorJitter": {"brightness": -1},
            "RandomCrop": {"size": 100},
            "RandomRotation": None,
            "Pad": [1, 2],
        },
        "tensor_augmentations": {"RandomErasing": {"p": 2}},
    })
    assert len(problems) == 6
    assert problems[0].startswith("image_augmentations.RandomAffine: unknown argument(s) degree (degree -> did you mean "
                                  "degrees?); missing required argument(s) degrees; accepted: degrees,")
    assert problems[1].startswith("image_augmentations.ColorJitter: invalid argument(s) {'brightness': -1}")
    assert problems[2].startswith("image_augmentations.RandomCrop: fails on a 64x64 image")
    assert problems[3].startswith("image_augmentations.RandomRotation: missing a required argument: 'degrees'")
    assert problems[4].startswith("image_augmentations.Pad: arguments must be a mapping")
    assert problems[5].startswith("tensor_augmentations.RandomErasing: p 2 must be a probability between 0 and 1")


def test_transforms_in_the_wrong_place_are_rejected():
    problems = config_problems({
        "image_augmentations": {"RandomErasing": {}, "ToTensor": None, "Compose": None},
        "tensor_augmentations": {"Normalize": {"mean": [0.5], "std": [0.5]}, "RandAugment": None, "RandomVerticalFlip": None},
    })
    assert problems == [
        "image_augmentations.RandomErasing: works on tensors only; put it under tensor_augmentations",
        "image_augmentations.ToTensor: is a conversion the pipeline does itself (see normalize / the to-tensor step), "
        "not an augmentation",
        "image_augmentations.Compose: takes other transforms or returns several images; list the transforms "
        "themselves instead",
        "tensor_augmentations.Normalize: is a conversion the pipeline does itself (see normalize / the to-tensor "
        "step), not an augmentation",
        "tensor_augmentations.RandAugment: needs uint8 images; put it under image_augmentations",
    ]
    assert config_problems({"tensor_augmentations": ["RandomErasing"]}) == [
        "tensor_augmentations: expected a mapping of torchvision.transforms names to keyword arguments, got list"
    ]


def test_name_lists():
    assert "ColorJitter" in valid_names("image_augmentations") and "RandomErasing" not in valid_names("image_augmentations")
    assert "RandomErasing" in valid_names("tensor_augmentations") and "ToTensor" not in transform_names()


def test_rare_failures_size_changes_and_bad_probabilities_are_caught():
    cases = {
        ("tensor_augmentations", "RandomErasing", (("p", 0.02), ("scale", (0.5, 0.1)))): "fails on a 32x32 image",
        ("image_augmentations", "Grayscale", (("num_output_channels", 1),)): "into a 32x32 L image",
        ("image_augmentations", "Pad", (("padding", 4),)): "into a 40x40 RGB image",
        ("image_augmentations", "RandomResizedCrop", (("size", (64, 64)),)): "into a 64x64 RGB image",
        ("image_augmentations", "RandomHorizontalFlip", (("p", 5),)): "p 5 must be a probability",
    }
    for (key, name, kwargs), fragment in cases.items():
        problems = config_problems({"image_size": [32, 32], key: {name: dict(kwargs)}})
        assert len(problems) == 1 and problems[0].startswith(f"{key}.{name}:") and fragment in problems[0], problems
    size_kept = {"image_augmentations": {"RandomResizedCrop": {"size": [32, 32]}, "RandomGrayscale": {"p": 0.3}}}
    assert config_problems({"image_size": [32, 32], **size_kept}) == []
