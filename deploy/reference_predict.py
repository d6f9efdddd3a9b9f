"""Recognise the car in photos with an exported ONNX model, following the steps of the JSON written beside it.

    python deploy/reference_predict.py model.onnx photo.jpg [photo.jpg ...] [--bbox x1,y1,x2,y2] [--top 5]

A reference for app developers: Pillow, numpy and onnxruntime only (no torch, no code of the project), giving
predict.py's probabilities for the same photos. Each preprocessing step reads its parameters from the JSON's
"preprocessing" -> "steps" list; a step this file does not know stops it, so a newer contract is never
followed halfway. Port it step by step; where your platform's JPEG decoder cannot decode at 1/2, 1/4 or 1/8 scale
(libjpeg's scaled DCT), the probabilities differ slightly from predict.py's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

STEPS = ("first_frame", "exif_orientation", "reduced_scale_decode", "exif_transpose", "sixteen_bit_gray",
         "colour_mode", "box", "resize", "scale", "normalize")
Box = tuple[int, int, int, int]


def read_metadata(model: str | Path, metadata: str | Path | None = None) -> dict[str, Any]:
    """The JSON beside the model (model.onnx -> model.onnx.json), checked to hold only steps this file knows."""
    path = Path(metadata) if metadata else Path(str(model) + ".json")
    contract = json.loads(path.read_text(encoding="utf-8"))
    unknown = [step["step"] for step in contract["preprocessing"]["steps"] if step["step"] not in STEPS]
    if unknown:
        raise ValueError(f"{path}: unknown preprocessing step(s) {', '.join(unknown)}; this file follows "
                         f"{', '.join(STEPS)}")
    return contract


def steps_of(preprocessing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The steps by name."""
    return {step["step"]: step for step in preprocessing["steps"]}


def orientation(image: Image.Image, step: dict[str, Any]) -> int:
    """The EXIF orientation 1..8, or the step's value for a missing or invalid one."""
    value = image.getexif().get(step["tag"], step["missing_or_invalid"])
    return value if value in range(1, 9) else step["missing_or_invalid"]


def draft_request(size: tuple[int, int], upright: tuple[int, int], crop: Box | None) -> tuple[int, int]:
    """The decode size asked for (upright orientation): the input size, or enough that the crop reaches it."""
    if crop is None:
        return size
    box_w, box_h = crop[2] - crop[0] + 1, crop[3] - crop[1] + 1
    return math.ceil(size[0] * upright[0] / box_w), math.ceil(size[1] * upright[1] / box_h)


def decoded_size(stored: tuple[int, int], request: tuple[int, int], scales: list[int]) -> tuple[int, int]:
    """The step's rule: q = min(W // w, H // h), s = the largest scale <= q, decoded (ceil(W / s), ceil(H / s))."""
    quotient = min(stored[0] // request[0], stored[1] // request[1])
    scale = next((s for s in sorted(scales, reverse=True) if s <= quotient), 1)
    return -(-stored[0] // scale), -(-stored[1] // scale)


def decode(path: str | Path, steps: dict[str, dict[str, Any]], box: Box | None) -> tuple[Image.Image, tuple[int, int]]:
    """Steps exif_orientation to colour_mode: the upright photo in the contract's mode, and its upright full size."""
    decode_step, mode = steps["reduced_scale_decode"], steps["colour_mode"]["mode"]
    with Image.open(path) as image:                                     # first_frame: Pillow opens frame 0
        turn = orientation(image, steps["exif_orientation"])
        swapped = turn in steps["exif_orientation"]["sides_swapped"]
        stored = image.size
        upright = stored[::-1] if swapped else stored
        if box is not None and (box[2] >= upright[0] or box[3] >= upright[1]):
            raise ValueError(f"box {box} lies outside the {upright[0]}x{upright[1]} image")
        crop = box if box is not None and steps["box"]["action"] == "crop" else None
        request = draft_request(tuple(steps["resize"]["size"]), upright, crop)
        request = request[::-1] if swapped else request
        image.draft(mode, request)
        if image.format in decode_step["applies_to"] and image.size != decoded_size(stored, request,
                                                                                     decode_step["scales"]):
            raise RuntimeError(f"Pillow decodes {path} to {image.size}, the contract's rule to "
                               f"{decoded_size(stored, request, decode_step['scales'])}: use the Pillow of the export")
        image.load()
        if turn != 1:
            image = ImageOps.exif_transpose(image)                      # exif_transpose
        if image.mode.startswith("I;16") or image.mode == "I":          # sixteen_bit_gray
            pixels = np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8
            image = Image.fromarray(pixels.astype(np.uint8), "L")
        if image.mode == "F":
            raise ValueError(f"{path}: floating-point pixels are not supported")
        if image.mode != mode:                                          # colour_mode
            image = image.convert(mode)
    return image, upright


def resized(image: Image.Image, upright: tuple[int, int], steps: dict[str, dict[str, Any]],
            box: Box | None) -> Image.Image:
    """Steps box and resize: the network's input picture."""
    size = tuple(steps["resize"]["size"])
    resample = Image.Resampling[steps["resize"]["filter"].upper()]
    if box is None:
        return image.resize(size, resample)
    sx, sy = image.size[0] / upright[0], image.size[1] / upright[1]
    x1, y1, x2, y2 = box
    region = (x1 * sx, y1 * sy, (x2 + 1) * sx, (y2 + 1) * sy)
    if steps["box"]["action"] == "crop":
        return image.resize(size, resample, box=region)
    patch_size = (max(1, round((x2 - x1 + 1) * size[0] / upright[0])),
                  max(1, round((y2 - y1 + 1) * size[1] / upright[1])))
    background = steps["box"]["background"]
    canvas = Image.new(image.mode, size, background[0] if image.mode == "L" else tuple(background))
    canvas.paste(image.resize(patch_size, resample, box=region),
                 ((size[0] - patch_size[0]) // 2, (size[1] - patch_size[1]) // 2))
    return canvas


def preprocess(path: str | Path, preprocessing: dict[str, Any], box: Box | None = None) -> np.ndarray:
    """One photo as the network's float32 input [C, H, W]."""
    steps = steps_of(preprocessing)
    image, upright = decode(path, steps, box)
    pixels = np.asarray(resized(image, upright, steps, box), dtype=np.uint8)
    pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    tensor = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(steps["scale"]["divide_by"])
    if "normalize" in steps:
        mean = np.asarray(steps["normalize"]["mean"], dtype=np.float32)[:, None, None]
        std = np.asarray(steps["normalize"]["std"], dtype=np.float32)[:, None, None]
        tensor = (tensor - mean) / std
    return tensor


def probabilities(session: Any, contract: dict[str, Any], path: str | Path, box: Box | None = None) -> np.ndarray:
    """Class probabilities [num_classes] of one photo: softmax of the model's logits."""
    batch = preprocess(path, contract["preprocessing"], box)[None]
    logits = session.run([contract["output_name"]], {contract["input_name"]: batch})[0][0]
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def parse_box(text: str) -> Box:
    """'x1,y1,x2,y2' (inclusive pixels of the upright photo) -> a box."""
    try:
        x1, y1, x2, y2 = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected four integers x1,y1,x2,y2") from None
    if not (0 <= x1 <= x2 and 0 <= y1 <= y2):
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= x1 <= x2 and 0 <= y1 <= y2")
    return x1, y1, x2, y2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="exported .onnx file")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="photo files")
    parser.add_argument("--metadata", help="its JSON (default: MODEL.json)")
    parser.add_argument("--bbox", type=parse_box, metavar="x1,y1,x2,y2", help="box around the car")
    parser.add_argument("--top", type=int, default=5, metavar="K", help="classes shown per photo (default 5)")
    args = parser.parse_args(argv)
    import onnxruntime

    contract = read_metadata(args.model, args.metadata)
    session = onnxruntime.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    names = contract.get("class_names") or []
    for path in args.images:
        found = probabilities(session, contract, path, args.bbox)
        print(path)
        for rank, index in enumerate(np.argsort(-found, kind="stable")[:args.top], start=1):
            name = names[index] if index < len(names) else f"class {index + 1}"
            print(f"  {rank}. {found[index]:7.2%}  {name} (class {index + 1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
