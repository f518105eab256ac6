"""`data=demo`: a small input the package draws itself, so the default job runs offline.

The images are synthetic scenes (sky gradient, sun, hills, a house) drawn deterministically, written
once as PNG files with a DataFlow JSONL beside them, then read like any DataFlow input.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from PIL import Image, ImageDraw

from imgedit_ds.edit.base import ConfigError
from imgedit_ds.read.inputs import DataflowJsonl, InputReader

DEMO_INSTRUCTIONS = (
    "Make the image black and white.",
    "Rotate the image 90 degrees clockwise.",
    "Make the colors warmer.",
    "Change the house's roof to blue.",
)


def draw_scene(seed: int, size: int) -> Image.Image:
    rng = random.Random(seed)
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    top, bottom = (rng.randint(40, 120), rng.randint(100, 180), 255), (255, rng.randint(170, 230), 150)
    for y in range(size):
        t = y / size
        draw.line([(0, y), (size, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom)))
    sun = rng.randint(size // 10, size // 5)
    sx, sy = rng.randint(sun, size - sun), rng.randint(sun, size // 3)
    draw.ellipse([sx - sun, sy - sun, sx + sun, sy + sun], fill=(255, 220, 60))
    for k in range(3):
        cx, r = rng.randint(0, size), rng.randint(size // 3, size // 2)
        green = (30 + 25 * k, 110 + rng.randint(0, 60), 40)
        draw.ellipse([cx - r, size - r // 2 - k * size // 12, cx + r, size + r], fill=green)
    hx, hw = rng.randint(size // 8, size // 2), size // 4
    hy = size - size // 3
    draw.rectangle([hx, hy, hx + hw, hy + hw // 1.3], fill=(200, 80 + rng.randint(0, 80), 60))
    draw.polygon([(hx - 8, hy), (hx + hw // 2, hy - hw // 2), (hx + hw + 8, hy)], fill=(120, 40, 30))
    return img


def write_demo(folder: Path, rows: int, size: int) -> Path:
    """Write `rows` demo images and prompts.jsonl under `folder` (once) and return the JSONL path."""
    jsonl = folder / "prompts.jsonl"
    if jsonl.is_file():
        return jsonl
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(rows):
        name = f"images/scene{i:03d}.png"
        draw_scene(i, size).save(folder / name)
        instruction = DEMO_INSTRUCTIONS[i % len(DEMO_INSTRUCTIONS)]
        lines.append({"conversations": [{"content": instruction, "role": "user"}],
                      "images": [f"./{name}"], "edited_images": [""]})
    tmp = jsonl.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(line) + "\n" for line in lines))
    os.replace(tmp, jsonl)
    return jsonl


@dataclass
class DemoInput(InputReader):
    """Options: `rows` and `size` of the demo; `folder` defaults to a cache folder."""

    rows: int = 12
    size: int = 384
    folder: str | None = None

    def check(self) -> None:
        super().check()
        if self.rows < 1 or self.size < 16:
            raise ConfigError("data.rows must be >= 1 and data.size >= 16")

    def label(self) -> str:
        return "demo"

    def load(self, cache_dir: Path) -> Dataset:
        default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "imgedit_ds"
        folder = Path(self.folder) if self.folder else default / f"demo-{self.rows}x{self.size}"
        jsonl = write_demo(folder, self.rows, self.size)
        return DataflowJsonl(path=str(jsonl), limit=self.limit, max_pixels=self.max_pixels).load(cache_dir)
