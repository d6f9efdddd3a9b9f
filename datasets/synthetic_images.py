"""The synthetic images: each class a coloured pattern filling its box on a noisy background.

A main generator plans every image (class, split, size, colour mode and a seed of its own); each image is then
rendered from ``np.random.default_rng(its seed)``, in a pool of fresh processes when asked, so the images are the
same for any number of workers. A margin of the box (``MARGIN`` of its width/height on each side) is plain class
colour.
"""

from __future__ import annotations

import io
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

MARGIN = 0.2  # wide enough that JPEG chroma subsampling leaves its middle the class colour in 48-px images
PALETTE = (
    (220, 30, 30), (30, 160, 40), (40, 60, 220), (240, 220, 40), (160, 40, 200), (30, 200, 210),
    (250, 140, 20), (120, 70, 30), (240, 120, 170), (20, 90, 90), (150, 200, 60), (90, 90, 90),
)
PATTERNS = ("hstripes", "vstripes", "disc", "cross", "checker", "diagonal", "ring", "dots")
SIZES = {"small": ((48, 96), (0.6, 0.8)), "stanford": ((480, 900), (0.6, 0.75))}


@dataclass(frozen=True)
class ImagePlan:
    """What the main generator decides for one image before rendering: split, class, size, mode, own seed."""

    split: str
    class_id: int
    width: int
    height: int
    grayscale: bool
    seed: int


def class_colour(class_id: int) -> tuple[int, int, int]:
    """The RGB colour that fills the box of an image of class ``class_id`` (1-based)."""
    return PALETTE[(class_id - 1) % len(PALETTE)]


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    coarse = rng.integers(40, 215, size=(max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
    fine = rng.integers(-20, 21, size=(height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + fine, 0, 255).astype(np.uint8))


def _draw_pattern(draw: ImageDraw.ImageDraw, pattern: str, box: tuple[int, int, int, int], ink: tuple[int, int, int]) -> None:
    x1, y1, x2, y2 = box
    w, h = x2 - x1 + 1, y2 - y1 + 1
    step_x, step_y = max(2, w // 6), max(2, h // 6)
    if pattern == "hstripes":
        for y in range(y1, y2, step_y * 2):
            draw.rectangle((x1, y, x2, min(y + step_y - 1, y2)), fill=ink)
    elif pattern == "vstripes":
        for x in range(x1, x2, step_x * 2):
            draw.rectangle((x, y1, min(x + step_x - 1, x2), y2), fill=ink)
    elif pattern == "disc":
        draw.ellipse(box, fill=ink)
    elif pattern == "cross":
        draw.rectangle((x1 + w // 3, y1, x2 - w // 3, y2), fill=ink)
        draw.rectangle((x1, y1 + h // 3, x2, y2 - h // 3), fill=ink)
    elif pattern == "checker":
        for i, x in enumerate(range(x1, x2, step_x)):
            for j, y in enumerate(range(y1, y2, step_y)):
                if (i + j) % 2 == 0:
                    draw.rectangle((x, y, min(x + step_x - 1, x2), min(y + step_y - 1, y2)), fill=ink)
    elif pattern == "diagonal":
        draw.polygon([(x1, y2), (x2, y1), (x2, y2)], fill=ink)
    elif pattern == "ring":
        draw.ellipse(box, outline=ink, width=max(1, min(w, h) // 6))
    else:
        radius = max(1, min(step_x, step_y) // 2)
        for x in range(x1 + step_x // 2, x2, step_x * 2):
            for y in range(y1 + step_y // 2, y2, step_y * 2):
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=ink)


def render_image(
    rng: np.random.Generator, class_id: int, width: int, height: int, grayscale: bool
) -> tuple[bytes, tuple[int, int, int, int]]:
    """JPEG bytes of one synthetic image of class_id and its inclusive bounding box."""
    image = _background(rng, width, height)
    bw = int(width * rng.uniform(0.45, 0.85))
    bh = int(height * rng.uniform(0.45, 0.85))
    x1 = int(rng.integers(0, width - bw + 1))
    y1 = int(rng.integers(0, height - bh + 1))
    box = (x1, y1, x1 + bw - 1, y1 + bh - 1)
    colour = class_colour(class_id)
    ink = (255, 255, 255) if sum(colour) < 380 else (0, 0, 0)
    draw = ImageDraw.Draw(image)
    draw.rectangle(box, fill=colour)
    mx, my = max(1, round(bw * MARGIN)), max(1, round(bh * MARGIN))
    inner = (x1 + mx, y1 + my, box[2] - mx, box[3] - my)
    _draw_pattern(draw, PATTERNS[(class_id - 1) % len(PATTERNS)], inner, ink)
    if grayscale:
        image = image.convert("L")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), box


def plan_images(
    rng: np.random.Generator,
    num_classes: int,
    images_per_class: int,
    min_width: int,
    max_width: int,
    grayscale_every: int,
) -> list[ImagePlan]:
    """Every image's split, class, size, colour mode and seed, drawn in order from the main generator."""
    ratio_low, ratio_high = SIZES["stanford"][1] if min_width >= 200 else SIZES["small"][1]
    pairs = [(c, i) for c in range(1, num_classes + 1) for i in range(images_per_class)]
    plans = []
    for position in rng.permutation(len(pairs)):
        class_id, index = pairs[position]
        width = int(rng.integers(min_width, max_width + 1))
        height = max(8, int(width * rng.uniform(ratio_low, ratio_high)))
        grayscale = grayscale_every > 0 and len(plans) % grayscale_every == grayscale_every - 1
        seed = int(rng.integers(2**63))
        plans.append(ImagePlan("test" if index % 2 else "train", class_id, width, height, grayscale, seed))
    return plans


def render_planned(plan: ImagePlan) -> tuple[bytes, tuple[int, int, int, int]]:
    """JPEG bytes and box of one planned image, from its own generator (runs in the worker processes)."""
    return render_image(np.random.default_rng(plan.seed), plan.class_id, plan.width, plan.height, plan.grayscale)


def render_all(plans: Sequence[ImagePlan], workers: int = 1) -> list[tuple[bytes, tuple[int, int, int, int]]]:
    """Render the planned images in order, in a pool of ``workers`` processes when more than one."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if workers == 1 or len(plans) < 2:
        return [render_planned(plan) for plan in plans]
    chunksize = max(1, len(plans) // (workers * 16))
    with ProcessPoolExecutor(max_workers=min(workers, len(plans)), mp_context=_worker_context()) as pool:
        return list(pool.map(render_planned, plans, chunksize=chunksize))


def _worker_context() -> multiprocessing.context.BaseContext:
    """Fresh worker processes (forkserver, else spawn): forking a process that runs threads (torch) can hang."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
