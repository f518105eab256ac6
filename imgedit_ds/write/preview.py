"""`preview.png`: a contact sheet of the first rows — source | edited | instruction and status."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

THUMB = 192
TEXT_WIDTH = 360
STATUS_COLORS = {"ok": (30, 130, 60), "failed": (190, 40, 40), "refused": (200, 120, 0), "unsupported": (110, 110, 110)}


def _thumb(ref: dict | None) -> Image.Image:
    tile = Image.new("RGB", (THUMB, THUMB), (235, 235, 235))
    if ref and ref.get("bytes"):
        try:
            img = Image.open(io.BytesIO(ref["bytes"])).convert("RGB")
            img.thumbnail((THUMB, THUMB))
            tile.paste(img, ((THUMB - img.width) // 2, (THUMB - img.height) // 2))
        except Exception:
            pass  # an undecodable image shows as an empty tile; the row's error tells why
    return tile


def write_preview(sample: list[dict[str, Any]], path: Path) -> None:
    """Draw rows of an edited dataset (as raw dicts: images are {bytes, path}) into `path`."""
    font = ImageFont.load_default(size=15)
    small = ImageFont.load_default(size=12)
    row_h = THUMB + 8
    sheet = Image.new("RGB", (2 * THUMB + TEXT_WIDTH + 24, max(1, len(sample)) * row_h + 8), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(sample):
        y = 4 + i * row_h
        sources = row["source_images"] or []
        sheet.paste(_thumb(sources[0] if sources else None), (4, y))
        sheet.paste(_thumb(row["edited_image"]), (THUMB + 12, y))
        x = 2 * THUMB + 20
        status = row["status"]
        extra = f"  (+{len(sources) - 1} more sources)" if len(sources) > 1 else ""
        draw.text((x, y + 2), f"{status}{extra}", fill=STATUS_COLORS.get(status, (0, 0, 0)), font=font)
        text = textwrap.fill(row["instruction"] or "(no instruction)", 40)
        draw.multiline_text((x, y + 24), text, fill=(20, 20, 20), font=font, spacing=3)
        if row["error"]:
            draw.multiline_text((x, y + THUMB - 48), textwrap.fill(row["error"], 52)[:160],
                                fill=(120, 120, 120), font=small)
    tmp = path.with_suffix(".tmp.png")
    sheet.save(tmp)
    tmp.replace(path)
