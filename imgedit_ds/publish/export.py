"""Exports of a run's finished edits (ok rows) for tools that read files rather than Arrow.

- `dataflow`: OUTPUT/export/dataflow/dataflow.jsonl with `conversations`, `images` and `edited_images`
  (paths relative to the JSONL file) and the image files in `images/` and `edited/` beside it, the
  format DataFlow's image-editing pipelines read and write.
- `imagefolder`: OUTPUT/export/imagefolder/ with `metadata.jsonl` in the datasets `imagefolder`
  convention (`*_file_name` keys become image columns), so `load_dataset("<folder>")` gives the columns
  `source_image` (or `source_images` when rows have several), `edited_image` and `instruction` that
  diffusers' training scripts take.

Image files are the bytes the dataset holds, never re-encoded; names are `<row index>-<id>.<format>`.
Exporting again replaces the earlier export.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from imgedit_ds.edit.base import OK
from imgedit_ds.publish.output import RunOutput, has_single_source, image_columns, load_output
from imgedit_ds.read.columns import instruction_from

logger = logging.getLogger(__name__)

EXPORTS = ("dataflow", "imagefolder")
DATAFLOW_FILE = "dataflow.jsonl"
METADATA_FILE = "metadata.jsonl"
BATCH_ROWS = 128
# Columns that say nothing about a finished edit: exported rows are all ok.
DROPPED = ("status", "error")


def export_output(output_dir: str | Path, formats: Sequence[str]) -> dict[str, Path]:
    """Write each export in `formats` under OUTPUT/export/; returns format -> what was written."""
    unknown = sorted(set(formats) - set(EXPORTS))
    if unknown:
        raise ValueError(f"unknown export {', '.join(unknown)}: output.export takes {', '.join(EXPORTS)}")
    run = load_output(output_dir)
    writers = {"dataflow": export_dataflow, "imagefolder": export_imagefolder}
    return {name: writers[name](run) for name in formats}


def export_dataflow(output: str | Path | RunOutput, dest: Path | None = None) -> Path:
    """Write the DataFlow JSONL and its images; returns the JSONL's path."""
    run = _loaded(output)
    dest = _fresh_folder(dest or run.path / "export" / "dataflow", DATAFLOW_FILE)
    has_conversations = "conversations" in run.dataset.column_names
    count = 0
    with (dest / DATAFLOW_FILE).open("w", encoding="utf-8") as out:
        for index, row in _ok_rows(run):
            stem = _stem(index, row["id"])
            images = [_write_image(dest, f"images/{stem}-{k}", s["bytes"])
                      for k, s in enumerate(row["source_images"])]
            edited = _write_image(dest, f"edited/{stem}", row["edited_image"]["bytes"])
            conversations = row.get("conversations") if has_conversations else None
            record = {"id": row["id"], "conversations": _conversations(conversations, row["instruction"]),
                      "images": images, "edited_images": [edited], "category": row["category"]}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    logger.info("wrote %d rows to %s", count, dest / DATAFLOW_FILE)
    return dest / DATAFLOW_FILE


def export_imagefolder(output: str | Path | RunOutput, dest: Path | None = None) -> Path:
    """Write the image folder with metadata.jsonl; returns the folder (`load_dataset(folder)` reads it)."""
    run = _loaded(output)
    dest = _fresh_folder(dest or run.path / "export" / "imagefolder", METADATA_FILE)
    flat = has_single_source(run.dataset)
    images = {name for name, _ in image_columns(run.dataset.features)}
    count = 0
    with (dest / METADATA_FILE).open("w", encoding="utf-8") as out:
        for index, row in _ok_rows(run):
            stem = _stem(index, row["id"])
            sources = [_write_image(dest, f"source/{stem}-{k}", s["bytes"])
                       for k, s in enumerate(row["source_images"])]
            record: dict[str, Any] = (
                {"source_image_file_name": sources[0]} if flat else {"source_images_file_names": sources}
            )
            record["edited_image_file_name"] = _write_image(dest, f"edited/{stem}",
                                                            row["edited_image"]["bytes"])
            record.update({k: v for k, v in row.items() if k not in images and k not in DROPPED})
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    logger.info("wrote %d rows to %s", count, dest)
    return dest


def _loaded(output: str | Path | RunOutput) -> RunOutput:
    return output if isinstance(output, RunOutput) else load_output(output)


def _ok_rows(run: RunOutput) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row index, row with raw image bytes) of every ok row, in dataset order."""
    table = run.table
    for start in range(0, table.num_rows, BATCH_ROWS):
        for offset, row in enumerate(table.slice(start, BATCH_ROWS).to_pylist()):
            if row["status"] == OK and row["edited_image"] is not None:
                yield start + offset, row


def _conversations(kept: list[dict[str, Any]] | None, instruction: str) -> list[dict[str, Any]]:
    """The input's conversation when its last user turn is this row's instruction (as DataFlow reads
    it), else one user turn with the instruction (it was written by the run, or there was none)."""
    if kept and instruction_from(kept) == instruction:
        return kept
    return [{"role": "user", "content": instruction}]


def _stem(index: int, row_id: str) -> str:
    return f"{index:06d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', str(row_id))[:60]}"


def _write_image(root: Path, stem: str, data: bytes) -> str:
    """Write the bytes as they are, named after their real format; returns the path relative to root."""
    with Image.open(io.BytesIO(data)) as image:
        fmt = (image.format or "png").lower()
    relative = f"{stem}.{'jpg' if fmt == 'jpeg' else fmt}"
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / relative).write_bytes(data)
    return relative


def _fresh_folder(dest: Path, marker: str) -> Path:
    """An empty `dest`; an earlier export (it holds `marker`) is replaced, any other folder is kept."""
    if dest.exists() and any(dest.iterdir()):
        if not (dest / marker).is_file():
            raise FileExistsError(
                f"{dest} exists and is not an earlier export (no {marker}): choose another folder")
        shutil.rmtree(dest)
    dest.mkdir(parents=True, exist_ok=True)
    return dest
