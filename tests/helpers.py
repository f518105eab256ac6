"""Helpers the tests share: test images, JSONL rows, reports. (Fixtures are in conftest.py.)"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
SEED_EXAMPLE = REPO.parent / "shared" / "examples" / "dataflow"


def draw_photo(size: tuple[int, int] = (96, 64), seed: int = 0) -> Image.Image:
    """A small RGB picture with structure (gradient, shapes) so edits change pixels visibly."""
    w, h = size
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    for x in range(w):
        draw.line([(x, 0), (x, h)], fill=((x * 255) // max(1, w - 1), (seed * 37) % 256, 128))
    draw.rectangle([w // 4, h // 4, w // 2, h // 2], fill=(250, 220, 30))
    draw.ellipse([w // 2, h // 3, w - 4, h - 4], fill=(20, 90 + seed % 100, 200))
    return img


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def dataflow_row(instruction: str, *images: str) -> dict:
    return {"conversations": [{"content": instruction, "role": "user"}], "images": list(images),
            "edited_images": [""]}


def read_report(output_dir: Path) -> dict:
    return json.loads((output_dir / "report.json").read_text())
