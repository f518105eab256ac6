"""Build a finished run's OUTPUT folder by hand: a real dataset on disk plus report, config and preview.

The rows cover every status, two image formats, two categories and a carried input column
(`conversations`), so publishing, exports and the gallery see what a real run writes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import yaml
from datasets import Dataset, Features, List, Value
from PIL import Image, ImageDraw

from imgedit_ds.schema import output_features
from imgedit_ds.write.report import build_report, write_report

INPUT_FEATURES = Features({"conversations": List({"content": Value("string"), "role": Value("string")})})


def image_bytes(seed: int, size: tuple[int, int] = (32, 24), fmt: str = "PNG") -> bytes:
    """A small picture that differs for every seed: a coloured background and a bar."""
    image = Image.new("RGB", size, ((seed * 53) % 256, (seed * 97) % 256, (seed * 29) % 256))
    ImageDraw.Draw(image).rectangle([2, 2, 2 + seed % 20, size[1] - 3], fill=(255 - seed % 256, 40, 200))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def make_row(i: int, status: str = "ok", category: str = "color", sources: int = 1,
             error: str = "", edited_format: str = "PNG") -> dict[str, Any]:
    instruction = f"Make object {i} {'red' if i % 2 else 'blue'}"
    return {
        "conversations": [{"content": instruction, "role": "user"}],
        "id": f"row-{i}",
        # A local absolute path, as a reader leaves it: it must not reach the Hub.
        "source_images": [{"bytes": image_bytes(100 + 10 * i + k),
                           "path": f"/home/alice/photos/src{i}_{k}.png"} for k in range(sources)],
        "instruction": instruction,
        "category": category,
        "edited_image": ({"bytes": image_bytes(i, fmt=edited_format), "path": f"{i}.png"}
                         if status == "ok" else None),
        "status": status,
        "error": error,
        "seed": 1000 + i,
        "backend": "openai",
        "model": "gpt-image-1",
        "params": json.dumps({"size": "1024x1024", "quality": "high"}),
        "usage": json.dumps({"input_tokens": 10 + i, "cost_usd": 0.01} if status == "ok" else {}),
    }


def default_rows() -> list[dict[str, Any]]:
    return [
        make_row(0, category="color"),
        make_row(1, category="color", edited_format="JPEG"),
        make_row(2, category="style"),
        make_row(3, category="object"),
        make_row(4, "failed", "style", error="timeout: no answer in 60s"),
        make_row(5, "refused", "object", error="content_policy: the service refused the request"),
        make_row(6, "unsupported", "color", error="unsupported: the model takes one image"),
    ]


def default_config() -> dict[str, Any]:
    return {
        "data": {"path": "prompts.jsonl", "format": "dataflow"},
        "instructions": {"system_prompt": "You write one image edit instruction.",
                         "template": "Write an edit for a {category} change."},
        "backend": {"_target_": "imgedit_ds.edit.backends.openai_images.OpenAIImages", "model": "gpt-image-1",
                    "api_key": "${oc.env:OPENAI_API_KEY}", "quality": "high"},
        "run": {"seed": 1234, "batch_size": 4},
        "output": {"dir": "outputs/run", "license": "cc-by-4.0"},
    }


def make_output_folder(root: Path, rows: list[dict[str, Any]] | None = None,
                       config: dict[str, Any] | None = None) -> Path:
    """Write OUTPUT under `root` and return it."""
    rows = default_rows() if rows is None else rows
    features = output_features(INPUT_FEATURES)
    dataset = Dataset.from_list(rows, features=features)
    root.mkdir(parents=True, exist_ok=True)
    dataset.save_to_disk(str(root / "dataset"))
    ok = sum(r["status"] == "ok" for r in rows)
    report = build_report(dataset.data, computed=len(rows), computed_ok=ok, reused=0, wall_s=12.5, output_dir=root,
                          backend="openai", model="gpt-image-1")
    write_report(report, root / "report.json")
    (root / "config.yaml").write_text(yaml.safe_dump(config or default_config(), sort_keys=False))
    Image.new("RGB", (64, 32), (200, 200, 200)).save(root / "preview.png")
    return root
