"""The validation pass that runs before anything is published.

What it checks, and why each check is the one we can make:
- schema: every column of `imgedit_ds.schema` is there with its type (a folder from another tool or an
  older version fails here, not on the Hub);
- rows: ids are non-empty and unique, statuses are known, every row has a source image, ok rows have an
  instruction and an edited image, `params`/`usage` are JSON;
- images: every source and edited image decodes with Pillow (fully loaded, not only the header);
- each edited image belongs to its row: nothing in the row data ties an output to its input except the
  row itself, so we keep a digest per row id (sha256 of its source and edited image bytes) and check it
  again on the staged Parquet shards and on the rows read back from the Hub; rows moved, dropped or
  mixed up between validation and the Hub fail that check. Two smells that the data itself shows are
  reported as warnings: an edited image byte-identical to its own source (the backend returned the
  input), and one edited image shared by rows with different sources (outputs attached to the wrong rows,
  or a stub backend);
- secrets: no credential from the environment appears in any text column.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from datasets import Features, Image
from PIL import Image as PILImage

from imgedit_ds.edit.base import OK, STATUSES
from imgedit_ds.publish.output import RunOutput, secret_values
from imgedit_ds.schema import SCHEMA_COLUMNS, output_features

logger = logging.getLogger(__name__)

BATCH_ROWS = 256
EXAMPLES = 5


class InvalidOutputError(ValueError):
    """The OUTPUT folder fails validation; the message lists what is wrong, row by row."""


@dataclass
class Validation:
    """What the validation pass found, and the digest of every row's images by row id."""

    rows: int
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)

    def raise_for_errors(self, where: str) -> None:
        if self.errors:
            raise InvalidOutputError(f"{where} is not fit to publish:\n- " + "\n- ".join(self.errors))


class _Problems:
    """Counts problems by kind and keeps a few row ids of each, so a million bad rows make one line."""

    def __init__(self) -> None:
        self.rows: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, row_id: str) -> None:
        self.rows[kind].append(row_id)

    def lines(self) -> list[str]:
        out = []
        for kind, ids in self.rows.items():
            shown = ", ".join(repr(i) for i in ids[:EXAMPLES]) + (", ..." if len(ids) > EXAMPLES else "")
            out.append(f"{kind}: {len(ids)} row(s) ({shown})")
        return out


def image_digest(data: bytes | None) -> str:
    return hashlib.sha256(data).hexdigest() if data is not None else "-"


def row_digest(sources: list[dict[str, Any]] | None, edited: dict[str, Any] | None) -> str:
    """One digest for a row's images: its sources in order, then its edited image (or none)."""
    parts = [image_digest(s.get("bytes")) for s in sources or []]
    parts.append(image_digest(edited.get("bytes") if edited else None))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def check_schema(features: Features) -> list[str]:
    """One line per schema column that is missing or has another type."""
    expected = output_features()
    errors = []
    for name in SCHEMA_COLUMNS:
        if name not in features:
            errors.append(f"column {name!r} is missing; the folder was not written by imgedit-ds")
        elif _arrow_type(features, name) != _arrow_type(expected, name) or (
            isinstance(expected[name], Image) != isinstance(features[name], Image)
        ):
            errors.append(f"column {name!r} is {features[name]}, expected {expected[name]}")
    return errors


def _arrow_type(features: Features, name: str) -> Any:
    return Features({name: features[name]}).arrow_schema.field(name).type


def _decode_error(data: bytes | None) -> str | None:
    if not data:
        return "no bytes"
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as err:  # Pillow raises many types for broken files; the message is what matters
        return f"{type(err).__name__}: {err}"
    return None


def validate_output(run: RunOutput, workers: int | None = None) -> Validation:
    """Check OUTPUT's dataset row by row; decode every image on `workers` threads."""
    features = run.dataset.features
    result = Validation(rows=len(run.dataset), errors=check_schema(features))
    if result.errors:
        return result
    result.errors += check_secrets(run.table)
    problems, smells = _Problems(), _Problems()
    seen: set[str] = set()
    edited_owner: dict[str, tuple[str, str]] = {}
    columns = ["id", "status", "instruction", "source_images", "edited_image", "params", "usage"]
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(run.table), BATCH_ROWS):
            batch = run.table.slice(start, BATCH_ROWS).select(columns).to_pylist()
            decodes = []
            for row in batch:
                row_id = str(row["id"] or "")
                _check_row(row, row_id, seen, problems)
                sources, edited = row["source_images"] or [], row["edited_image"]
                digest = row_digest(sources, edited)
                result.digests[row_id] = digest
                images = [("source_images", s.get("bytes")) for s in sources if s]
                if edited:
                    images.append(("edited_image", edited.get("bytes")))
                    _check_provenance(row_id, sources, edited, edited_owner, smells)
                decodes += [(row_id, column, pool.submit(_decode_error, data)) for column, data in images]
            for row_id, column, future in decodes:
                if future.result() is not None:
                    problems.add(f"{column} does not decode ({future.result()})", row_id)
    result.errors += problems.lines()
    result.warnings += smells.lines()
    for line in result.warnings:
        logger.warning("validation: %s", line)
    return result


def check_secrets(table: pa.Table) -> list[str]:
    """One line per text column holding the value of a credential from the environment."""
    secrets = secret_values()
    text = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    return [
        f"column {name!r} holds the value of a credential from the environment (a *_TOKEN/*_KEY variable)"
        for name in text
        if any(pc.any(pc.match_substring(table.column(name), secret)).as_py() for secret in secrets)
    ]


def _check_row(row: dict[str, Any], row_id: str, seen: set[str], problems: _Problems) -> None:
    if not row_id:
        problems.add("empty id", f"#{len(seen)}")
    elif row_id in seen:
        problems.add("duplicate id", row_id)
    seen.add(row_id)
    if row["status"] not in STATUSES:
        problems.add(f"status {row['status']!r} is not one of {', '.join(STATUSES)}", row_id)
    if not row["source_images"] or any(s is None or not s.get("bytes") for s in row["source_images"]):
        problems.add("a source image is missing", row_id)
    if row["status"] == OK and row["edited_image"] is None:
        problems.add("status ok but edited_image is null", row_id)
    if row["status"] == OK and not (row["instruction"] or "").strip():
        problems.add("status ok but the instruction is empty", row_id)
    for column in ("params", "usage"):
        try:
            json.loads(row[column] or "{}")
        except json.JSONDecodeError:
            problems.add(f"{column} is not JSON", row_id)


def _check_provenance(row_id: str, sources: list[dict[str, Any]], edited: dict[str, Any],
                      edited_owner: dict[str, tuple[str, str]], smells: _Problems) -> None:
    edited_sha = image_digest(edited.get("bytes"))
    source_shas = [image_digest(s.get("bytes")) for s in sources if s]
    if edited_sha in source_shas:
        smells.add("edited image is byte-identical to its source", row_id)
    sources_key = "|".join(source_shas)
    owner = edited_owner.setdefault(edited_sha, (row_id, sources_key))
    if owner[0] != row_id and owner[1] != sources_key:
        smells.add(f"edited image also belongs to row {owner[0]!r}, which has other sources", row_id)
