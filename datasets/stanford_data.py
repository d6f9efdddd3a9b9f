"""StanfordCarsDataset: prepared Stanford Cars images with labels, boxes and the thesis's preprocessing."""

from __future__ import annotations

import csv
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image
from torch.utils.data import Dataset

from datasets.image_cache import CachedImages, array_image, file_fingerprint
from datasets.photos import (ORIENTATION_TAG, SIDES_SWAPPED, decode_whole, open_image, orientation,
                             size_limit_as_error, upright, upright_size)
from datasets.settings import NO_AUGMENTATION, Augmentation, Preprocessing
from datasets.prepared import BOX_FIELDS, LABEL_COLUMNS
from datasets.transforms import build_transforms

if TYPE_CHECKING:
    from utils.config import Config



@dataclass(frozen=True)
class LabelRecord:
    """One row of a prepared labels CSV (class id 1..N as in the file)."""

    image_fname: str
    class_id: int
    box: tuple[int, int, int, int]
    class_name: str


def read_labels(csv_path: str | os.PathLike) -> list[LabelRecord]:
    """All rows of a prepared ``*_labels.csv``; raises ValueError naming the file and row when malformed."""
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: {path.parent} is not prepared Stanford Cars data "
            "(run prepare_stanford_dataset.py, or set stanford_data_path)"
        )
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in LABEL_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks column(s) {', '.join(missing)}; prepare the data with prepare_stanford_dataset.py")
        records = []
        for line, row in enumerate(reader, start=2):
            try:
                box = tuple(int(row[c]) for c in BOX_FIELDS)
                records.append(LabelRecord(row["image_fname"], int(row["class"]), box, row["class_name"]))  # type: ignore[arg-type]
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path}, line {line}: malformed row {row}: {error}") from error
    return records


RESIZE_FILTER = Image.Resampling.BILINEAR
BACKGROUND = 255                      # the erased background: white
PIXEL_SCALE = 255                     # to_tensor's divisor
DRAFT_FORMATS = ("JPEG", "MPO")       # what Pillow's draft decodes at a reduced scale (others: full size)
DRAFT_SCALES = [8, 4, 2, 1]           # libjpeg's scale denominators, as Pillow's JpegImageFile.draft picks them
SIXTEEN_BIT_PREFIX = "I;16"           # Pillow's 16-bit grayscale modes (I;16, I;16B, ...); 32-bit I is read alike


def _draft_size(full: tuple[int, int], crop: tuple[int, int] | None, target_wh: tuple[int, int]) -> tuple[int, int]:
    """Smallest decode size that still gives the (cropped) region at least the target resolution."""
    if crop is None:
        return target_wh
    return (math.ceil(target_wh[0] * full[0] / crop[0]), math.ceil(target_wh[1] * full[1] / crop[1]))


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale (PIL modes I;16* and I) scaled to 8-bit L; PIL's own convert would clip it to white."""
    if image.mode.startswith(SIXTEEN_BIT_PREFIX) or image.mode == "I":
        pixels = np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8
        return Image.fromarray(pixels.astype(np.uint8), "L")
    if image.mode == "F":
        raise ValueError("floating-point pixels (PIL mode F) are not supported; save the image with 8 or 16 bits")
    return image


def load_image(
    path: Path,
    mode: str,
    target_wh: tuple[int, int],
    box: tuple[int, int, int, int] | None = None,
    erase_background: bool = False,
) -> Image.Image:
    """Decode (at reduced scale where the target allows), turn upright, crop to the inclusive box, resize.

    The image is turned as its EXIF orientation says (as viewers show it), and the box refers to that upright
    image; prepared Stanford images carry no orientation (the prepare step clears it). With
    ``erase_background`` the crop lands centred on a white canvas the size of the original image (then
    resized); the canvas is made directly at the target size, which gives the same picture.
    """
    with open_image(path) as image:
        swapped = orientation(image) in SIDES_SWAPPED
        full = upright_size(image)
        crop_size = None
        if box is not None and not erase_background:
            crop_size = (box[2] - box[0] + 1, box[3] - box[1] + 1)
        wanted = _draft_size(full, crop_size, target_wh)
        image.draft(mode, wanted[::-1] if swapped else wanted)
        image.load()
        image = _eight_bit(upright(image))
        sx, sy = image.size[0] / full[0], image.size[1] / full[1]
        if image.mode != mode:
            image = image.convert(mode)
    if box is None:
        return image.resize(target_wh, RESIZE_FILTER)
    x1, y1, x2, y2 = box
    region = (x1 * sx, y1 * sy, (x2 + 1) * sx, (y2 + 1) * sy)
    if not erase_background:
        return image.resize(target_wh, RESIZE_FILTER, box=region)
    fx, fy = target_wh[0] / full[0], target_wh[1] / full[1]
    width = max(1, round((x2 - x1 + 1) * fx))
    height = max(1, round((y2 - y1 + 1) * fy))
    patch = image.resize((width, height), RESIZE_FILTER, box=region)
    canvas = Image.new(mode, target_wh, BACKGROUND if mode == "L" else (BACKGROUND,) * 3)
    offset = ((target_wh[0] - width) // 2, (target_wh[1] - height) // 2)
    canvas.paste(patch, offset)
    return canvas


@dataclass(frozen=True)
class PhotoInfo:
    """What predict tells the user about a photo: its size as viewers show it, and its frames (GIF, WebP)."""

    size: tuple[int, int]
    frames: int


def photo_info(path: str | os.PathLike) -> PhotoInfo:
    """Size (as viewers show it) and frame count of a user's photo, checked to decode whole and to be within
    Pillow's size limit; raises PIL's or Python's errors otherwise (``datasets.photos.unreadable_reason``)."""
    with size_limit_as_error(), open_image(path) as image:
        info = PhotoInfo(upright_size(image), getattr(image, "n_frames", 1))
        decode_whole(image)
    return info


def preprocess_image(path: str | os.PathLike, preprocessing: Preprocessing,
                     box: tuple[int, int, int, int] | None = None, info: PhotoInfo | None = None) -> torch.Tensor:
    """One photo as the validation pipeline gives it to the network, [C, H, W] (with a box: the training crop,
    background erasing included when the preprocessing has it).

    The photo is turned upright by its EXIF orientation, and the box refers to the upright photo. Raises
    ValueError for a box outside the image, and the errors of ``photo_info`` for a file that cannot be read
    (``info``: the photo's ``photo_info`` when the caller has it, so the file is not checked twice).
    """
    width, height = (info or photo_info(path)).size
    if box is not None and (box[2] >= width or box[3] >= height):
        raise ValueError(f"box {box} lies outside the {width}x{height} image")
    target_wh = (preprocessing.image_size[1], preprocessing.image_size[0])
    erase = box is not None and preprocessing.erase_background
    tensor = F.to_tensor(load_image(Path(path), preprocessing.mode, target_wh, box, erase))
    if preprocessing.normalize:
        tensor = F.normalize(tensor, list(preprocessing.mean), list(preprocessing.std), inplace=True)
    return tensor


def input_contract(preprocessing: Preprocessing) -> dict[str, Any]:
    """Every step ``preprocess_image`` takes from a photo file to the network's input, in order and with its
    parameters, from the constants ``load_image`` uses: the contract written beside exported models."""
    height, width = preprocessing.image_size
    mode = preprocessing.mode
    return {
        "input_shape": ["batch", preprocessing.channels, height, width], "input_layout": "NCHW",
        "input_dtype": "float32", "image_size": [height, width], "grayscale": preprocessing.grayscale,
        "normalize": preprocessing.normalize, "mean": list(preprocessing.mean) if preprocessing.normalize else None,
        "std": list(preprocessing.std) if preprocessing.normalize else None,
        "box": "erase_background" if preprocessing.erase_background else "crop",
        "steps": [step for step in _input_steps(preprocessing, mode, (width, height)) if step is not None],
    }


def _input_steps(preprocessing: Preprocessing, mode: str, size: tuple[int, int]) -> list[dict[str, Any] | None]:
    box_step = {"step": "box", "optional": True, "coordinates": "x1,y1,x2,y2: inclusive pixels of the upright photo",
                "scaled_by": "decoded_size / upright_size: region = (x1 * sx, y1 * sy, (x2 + 1) * sx, (y2 + 1) * sy)"}
    if preprocessing.erase_background:
        box_step.update(action="erase_background", background=[BACKGROUND] * preprocessing.channels,
                        does="resize the region to round(box_size * size / upright_size) (at least 1 pixel), paste "
                             "it on a background canvas of `size` at ((size - patch) // 2); the canvas is the input")
    else:
        box_step.update(action="crop", does="resize only the region (Pillow resize with box=region) to `size`")
    return [
        {"step": "first_frame", "does": "open the file; animated images (GIF, WebP): the first frame only"},
        {"step": "exif_orientation", "tag": ORIENTATION_TAG, "missing_or_invalid": 1,
         "sides_swapped": list(SIDES_SWAPPED),
         "does": "read the orientation (1..8); upright_size = stored (W, H), swapped for sides_swapped"},
        {"step": "reduced_scale_decode", "applies_to": list(DRAFT_FORMATS), "mode": mode,
         "scales": list(DRAFT_SCALES),
         "request": "size; with a crop box: ceil(size * upright_size / box_size) per axis; in stored orientation "
                    "(swapped for sides_swapped)",
         "rule": "q = min(W // request_w, H // request_h); s = the largest of scales <= q (1 when none); decoded "
                 "size (ceil(W / s), ceil(H / s)), by libjpeg's scaled DCT; a grayscale mode decodes the luma plane",
         "pillow": "Image.draft(mode, request) before load()"},
        {"step": "exif_transpose", "does": "turn/flip the decoded pixels as the orientation says (Pillow "
                                           "ImageOps.exif_transpose), only when it is not 1"},
        {"step": "sixteen_bit_gray", "modes": f"Pillow modes starting with {SIXTEEN_BIT_PREFIX}, and I",
         "does": "clip to 0..65535 and shift right by 8 bits, giving 8-bit L; mode F (float) is refused"},
        {"step": "colour_mode", "mode": mode, "does": f"convert to {mode} (Pillow convert) when not already"},
        box_step,
        {"step": "resize", "filter": RESIZE_FILTER.name.lower(), "size": list(size),
         "does": "Pillow Image.resize(size, filter[, box]) (the filter widens by the reduction factor, antialiased)"},
        {"step": "scale", "divide_by": float(PIXEL_SCALE), "layout": "CHW", "dtype": "float32",
         "does": "uint8 pixels [H, W, C] to float32 [C, H, W] / divide_by"},
        {"step": "normalize", "mean": list(preprocessing.mean), "std": list(preprocessing.std),
         "does": "(x - mean[c]) / std[c] per channel, in float32"} if preprocessing.normalize else None,
    ]


class StanfordCarsDataset(Dataset):
    """Images of one prepared split; items are (float tensor [C, H, W], class 0..N-1).

    ``train=True`` applies the training preprocessing (box crop, background erasing, augmentations);
    ``train=False`` the validation one (whole image, no augmentation). ``image_size`` is (height, width).
    ``uint8_output=True`` gives the un-augmented, un-normalised uint8 tensor [C, H, W] instead (for batch
    augmentation on the device). After ``use_cache(file)`` the deterministic prefix (``load``) is read from a
    cache file of datasets.image_cache instead of decoding the JPEG: the pixels are the same.
    """

    def __init__(
        self,
        data_path: str | os.PathLike,
        split: str = "train",
        train: bool | None = None,
        preprocessing: Preprocessing | None = None,
        augmentation: Augmentation | None = None,
        records: Sequence[LabelRecord] | None = None,
        uint8_output: bool = False,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        if preprocessing is None:
            raise ValueError("preprocessing: give the Preprocessing of the images (datasets.settings)")
        augmentation = augmentation or NO_AUGMENTATION
        self.data_path = Path(data_path)
        self.image_dir = self.data_path / split
        self.train = split == "train" if train is None else train
        self.preprocessing = preprocessing if self.train else preprocessing.validation()
        self.records = list(records) if records is not None else read_labels(self.data_path / f"{split}_labels.csv")
        self._check_images_exist()
        height, width = self.preprocessing.image_size
        self.target_wh = (width, height)
        self.uint8_output = uint8_output
        augment = self.train and not uint8_output
        self.image_transforms = T.Compose(build_transforms(augmentation.image if augment else None))
        self.tensor_transforms = T.Compose(build_transforms(augmentation.tensor if augment else None))
        self.normalization = None
        if self.preprocessing.normalize and not uint8_output:
            self.normalization = (list(self.preprocessing.mean), list(self.preprocessing.std))
        self.paths = [self.image_dir / r.image_fname for r in self.records]
        self.targets = [r.class_id - 1 for r in self.records]
        self.cached: CachedImages | None = None

    def _check_images_exist(self) -> None:
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"{self.image_dir} does not exist; prepare the data with prepare_stanford_dataset.py")
        present = set(os.listdir(self.image_dir))
        missing = [r.image_fname for r in self.records if r.image_fname not in present]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} image(s) listed in {self.data_path / (self.image_dir.name + '_labels.csv')} "
                f"are missing from {self.image_dir}, e.g. {', '.join(missing[:5])}"
            )

    def __len__(self) -> int:
        return len(self.records)

    def prefix_settings(self) -> dict[str, Any]:
        """Everything that determines the pixels of ``load`` (the key of its cache)."""
        records = hashlib.sha256("".join(f"{r.image_fname}\t{r.box}\n" for r in self.records).encode())
        return {
            "data_path": str(self.data_path.resolve()), "split": self.image_dir.name,
            "image_size": list(self.preprocessing.image_size), "mode": self.preprocessing.mode,
            "crop_to_bboxes": self.preprocessing.crop_to_bboxes,
            "erase_background": self.preprocessing.erase_background,
            "records": records.hexdigest(), "image_files": file_fingerprint(self.paths),
        }

    def use_cache(self, path: str | os.PathLike | None) -> None:
        """Read the prefix from this cache file (of datasets.image_cache, built for prefix_settings); None: decode."""
        self.cached = CachedImages(path) if path is not None else None

    def load(self, index: int) -> Image.Image:
        """The PIL image of item ``index`` after decode, crop, background erasing and resize."""
        if self.cached is not None:
            return array_image(self.cached[index])
        box = self.records[index].box if self.preprocessing.crop_to_bboxes else None
        path = self.paths[index]
        try:
            return load_image(path, self.preprocessing.mode, self.target_wh, box, self.preprocessing.erase_background)
        except Exception as error:  # PIL raises many types for broken files
            raise RuntimeError(f"cannot read image {path}: {type(error).__name__}: {error}") from error

    def load_uint8(self, index: int) -> torch.Tensor:
        """The prefix of item ``index`` as a uint8 tensor [C, H, W]."""
        if self.cached is not None:
            return torch.from_numpy(np.array(self.cached[index])).permute(2, 0, 1).contiguous()
        return F.pil_to_tensor(self.load(index))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.uint8_output:
            return self.load_uint8(index), self.targets[index]
        tensor = self.tensor_transforms(F.to_tensor(self.image_transforms(self.load(index))))
        if self.normalization is not None:
            tensor = F.normalize(tensor, *self.normalization, inplace=True)
        return tensor, self.targets[index]

