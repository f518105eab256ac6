"""`instructions=template`: sample an operation and a phrasing per row, deterministically.

Map function (batched) — input column: `id`; output columns: `instruction`, `category`.
The same row id and run.seed always give the same instruction, whatever the batch size,
process count or order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from imgedit_ds.schema import row_seed

# operation -> (category, phrasings). Every phrasing must be understood by backend=pil
# (tests/edit/backends/test_pil.py checks this), so template rows are never `unsupported` there.
TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "grayscale": ("color", (
        "Make the image black and white.",
        "Convert the photo to grayscale.",
        "Remove all color from the picture.",
    )),
    "sepia": ("color", (
        "Apply a sepia tone to the image.",
        "Give the photo an old sepia look.",
        "Make it look like a vintage sepia photograph.",
    )),
    "invert": ("color", (
        "Invert the colors of the image.",
        "Turn the photo into its color negative.",
        "Make a negative of this picture.",
    )),
    "rotate_90_cw": ("geometry", (
        "Rotate the image 90 degrees clockwise.",
        "Turn the picture a quarter turn to the right.",
    )),
    "rotate_180": ("geometry", (
        "Rotate the image 180 degrees.",
        "Turn the photo upside down by rotating it half a turn.",
    )),
    "rotate_90_ccw": ("geometry", (
        "Rotate the image 90 degrees counterclockwise.",
        "Turn the picture a quarter turn to the left.",
        "Rotate the photo 270 degrees clockwise.",
    )),
    "flip_horizontal": ("geometry", (
        "Flip the image horizontally.",
        "Mirror the photo left to right.",
    )),
    "flip_vertical": ("geometry", (
        "Flip the image vertically.",
        "Mirror the photo top to bottom.",
    )),
    "brighten": ("tone", (
        "Make the image brighter.",
        "Increase the brightness of the photo.",
        "Brighten the picture.",
    )),
    "darken": ("tone", (
        "Make the image darker.",
        "Decrease the brightness of the photo.",
        "Darken the picture.",
    )),
    "contrast_up": ("tone", (
        "Increase the contrast of the image.",
        "Make the photo more contrasty.",
    )),
    "contrast_down": ("tone", (
        "Decrease the contrast of the image.",
        "Make the photo look flatter with less contrast.",
    )),
    "saturate": ("color", (
        "Make the colors more saturated.",
        "Increase the color saturation of the photo.",
        "Make the colors more vivid.",
    )),
    "desaturate": ("color", (
        "Make the colors less saturated.",
        "Decrease the color saturation of the photo.",
        "Mute the colors of the picture.",
    )),
    "blur": ("filter", (
        "Blur the image.",
        "Apply a soft Gaussian blur to the photo.",
        "Make the picture blurry.",
    )),
    "sharpen": ("filter", (
        "Sharpen the image.",
        "Make the photo crisper and sharper.",
    )),
    "posterize": ("filter", (
        "Posterize the image.",
        "Reduce the photo to a few flat color levels, like a poster.",
    )),
    "warmer": ("color", (
        "Make the colors warmer.",
        "Give the photo a warmer color temperature.",
        "Add a warm golden tint to the picture.",
    )),
    "cooler": ("color", (
        "Make the colors cooler.",
        "Give the photo a cooler color temperature.",
        "Add a cool blue tint to the picture.",
    )),
    "zoom_center": ("geometry", (
        "Zoom in on the center of the image.",
        "Crop to the middle of the photo and enlarge it.",
    )),
}


@dataclass
class TemplateInstructions:
    """Writes one sampled instruction per row; `operations` narrows the choice (empty: all)."""

    operations: Sequence[str] = ()
    seed: int = 0  # set from run.seed by the pipeline

    def __post_init__(self) -> None:
        unknown = [op for op in self.operations if op not in TEMPLATES]
        if unknown:
            from imgedit_ds.edit.base import ConfigError

            raise ConfigError(
                f"instructions.operations has unknown {unknown}; choose from {sorted(TEMPLATES)}"
            )
        self._ops = sorted(self.operations or TEMPLATES)

    @property
    def writes_instructions(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        return {"kind": "template", "operations": self._ops}

    def sample(self, seed: int) -> tuple[str, str, str]:
        """(instruction, category, operation) for a row seed."""
        rng = random.Random(f"instruct:{seed}")
        op = rng.choice(self._ops)
        category, phrasings = TEMPLATES[op]
        return rng.choice(phrasings), category, op

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        sampled = [self.sample(row_seed(self.seed, row_id)) for row_id in batch["id"]]
        return {"instruction": [s[0] for s in sampled], "category": [s[1] for s in sampled]}


@dataclass
class KeepInstructions:
    """`instructions=none`: keep the data's own instructions."""

    @property
    def writes_instructions(self) -> bool:
        return False

    def describe(self) -> dict[str, Any]:
        return {"kind": "none"}
