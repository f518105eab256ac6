"""Output sizes and multi-image canvases for the diffusers backend.

Editing models render at a fixed pixel budget (about 1024x1024 for FLUX.1-Kontext and Qwen-Image-Edit,
512x512 for InstructPix2Pix) and need sides that are multiples of the VAE factor times the patch size.
`fit_area` keeps the source's aspect ratio inside that budget; `grid` puts several sources on one
canvas for models that take a single image.
"""

from __future__ import annotations

import math

from PIL import Image

SIZE_MULTIPLE = 16
# Aspect ratios (width / height) outputs snap to when sizes are bucketed: the common photo and
# screen formats, so a compiled model sees a handful of shapes and batches group more rows.
DEFAULT_BUCKETS = (1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 16 / 9, 9 / 16)
GRID_BACKGROUND = (255, 255, 255)


def fit_area(aspect: float, max_area: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """The (width, height) in multiples of `multiple`, with width * height <= max_area, whose
    aspect ratio is closest to `aspect` (the larger area wins a tie)."""
    ideal_w, ideal_h = math.sqrt(max_area * aspect), math.sqrt(max_area / aspect)
    widths = {
        max(multiple, math.floor(ideal_w / multiple) * multiple),
        math.ceil(ideal_w / multiple) * multiple,
    }
    heights = {
        max(multiple, math.floor(ideal_h / multiple) * multiple),
        math.ceil(ideal_h / multiple) * multiple,
    }
    fitting = [(w, h) for w in widths for h in heights if w * h <= max_area]
    if not fitting:  # max_area below multiple**2 per side: the smallest legal size
        fitting = [(min(widths), min(heights))]
    return min(fitting, key=lambda wh: (abs(math.log(wh[0] / wh[1] / aspect)), -wh[0] * wh[1]))


def snap_aspect(aspect: float, buckets: tuple[float, ...]) -> float:
    """The bucket aspect ratio nearest to `aspect`, on a log scale (2:1 and 1:2 are as far from 1:1)."""
    return min(buckets, key=lambda bucket: abs(math.log(aspect / bucket)))


def output_size(
    image: Image.Image, max_area: int, buckets: tuple[float, ...] | None = None, multiple: int = SIZE_MULTIPLE
) -> tuple[int, int]:
    """The output (width, height) for a source image: its aspect ratio (or the nearest bucket's)
    at the largest size within `max_area`."""
    aspect = image.width / image.height
    if buckets:
        aspect = snap_aspect(aspect, buckets)
    return fit_area(aspect, max_area, multiple)


def grid(images: list[Image.Image]) -> Image.Image:
    """Several images on one canvas, left to right then top to bottom, in a near-square grid.

    Every cell has the first image's size; other images are scaled to fit their cell with their
    aspect ratio kept and centred on a white background.
    """
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    cell_w, cell_h = images[0].size
    canvas = Image.new("RGB", (cols * cell_w, rows * cell_h), GRID_BACKGROUND)
    for index, image in enumerate(images):
        scale = min(cell_w / image.width, cell_h / image.height)
        fitted = image.convert("RGB").resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.LANCZOS,
        )
        col, row = index % cols, index // cols
        left = col * cell_w + (cell_w - fitted.width) // 2
        top = row * cell_h + (cell_h - fitted.height) // 2
        canvas.paste(fitted, (left, top))
    return canvas
