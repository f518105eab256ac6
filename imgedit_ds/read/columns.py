"""Bring any input dataset to the prepared columns: id, source_images, instruction, category.

Map function `ColumnMapper` (batched, with_indices) — input columns: the image column (a path, a
list of paths, an Image or a list of Images), the instruction column (a string, or DataFlow
`conversations`), optional id and category columns; output columns: `id`, `source_images`
(list of {bytes, path}; paths resolved, files not read yet), `instruction`, `category`.
Other columns pass through unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, Image, List

from imgedit_ds.edit.base import ConfigError
from imgedit_ds.schema import source_features


def resolve_path(path: str, roots: Sequence[Path]) -> str:
    """Resolve a relative image path against each root, then its trailing parts against each root.

    DataFlow writes paths relative to its own repository root (./dataflow/example/.../images/x.png),
    so when the whole path is not found under a root, shorter tails (images/x.png, x.png) are tried.
    The first candidate is returned when nothing exists, so the row's error names a real path.
    """
    expanded = os.path.expanduser(path)
    if os.path.isabs(expanded) or "://" in expanded:
        return expanded
    parts = Path(expanded).parts
    candidates = [root / Path(*parts[i:]) for i in range(len(parts)) for root in roots]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return str(candidates[0]) if candidates else expanded


def _as_refs(value: Any, roots: Sequence[Path]) -> list[dict[str, Any]]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    refs = []
    for item in items:
        if isinstance(item, str):
            refs.append({"bytes": None, "path": resolve_path(item, roots) if item else ""})
        elif isinstance(item, dict):
            path = item.get("path") or ""
            if item.get("bytes") is None and path:
                path = resolve_path(path, roots)
            refs.append({"bytes": item.get("bytes"), "path": path})
    return refs


def instruction_from(value: Any) -> str:
    """An instruction string, or the last user turn of a DataFlow `conversations` list."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        turns = [t for t in value if isinstance(t, dict)]
        user = [t for t in turns if t.get("role") in ("user", "human")] or turns
        if user:
            content = user[-1].get("content") or user[-1].get("value") or ""
            return content.strip() if isinstance(content, str) else ""
    return ""


@dataclass
class ColumnMapper:
    image_column: str
    instruction_column: str | None
    roots: Sequence[Path]
    id_column: str | None = None
    category_column: str | None = None

    def __call__(self, batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        n = len(indices)
        ids = batch[self.id_column] if self.id_column else [f"{i:06d}" for i in indices]
        instructions = batch[self.instruction_column] if self.instruction_column else [""] * n
        categories = batch[self.category_column] if self.category_column else [""] * n
        return {
            "id": [str(x) for x in ids],
            "source_images": [_as_refs(v, self.roots) for v in batch[self.image_column]],
            "instruction": [instruction_from(v) for v in instructions],
            "category": [str(c) if c is not None else "" for c in categories],
        }

    def fingerprint(self, parent: str) -> str:
        state = [parent, self.image_column, self.instruction_column, self.id_column,
                 self.category_column, [str(r) for r in self.roots]]
        return hashlib.sha256(json.dumps(state).encode()).hexdigest()[:32]


def _undecoded(feature: Any) -> Any:
    if isinstance(feature, Image):
        return Image(decode=False)
    if isinstance(feature, List) and isinstance(feature.feature, Image):
        return List(Image(decode=False))
    return feature


def prepare(
    ds: Dataset,
    image_column: str = "image",
    instruction_column: str | None = "instruction",
    roots: Sequence[Path] = (),
    id_column: str | None = None,
    category_column: str | None = None,
    limit: int | None = None,
) -> Dataset:
    """Map `ds` to the prepared columns; raise ConfigError naming a missing column."""
    for option, column in (("image_column", image_column), ("instruction_column", instruction_column),
                           ("id_column", id_column), ("category_column", category_column)):
        if column is not None and column not in ds.column_names:
            raise ConfigError(f"data.{option}={column!r} is not a column of the input; it has {ds.column_names}")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    if image_column in ds.features:
        ds = ds.cast_column(image_column, _undecoded(ds.features[image_column]))
    mapper = ColumnMapper(image_column, instruction_column, [Path(r) for r in roots], id_column, category_column)
    # An embedded image column becomes source_images; keeping it too would store every image twice.
    image_feature = ds.features[image_column]
    holds_images = isinstance(image_feature, Image) or (
        isinstance(image_feature, List) and isinstance(image_feature.feature, Image)
    )
    dropped = [image_column] if holds_images and image_column != "source_images" else []
    features = ds.features.copy()
    for column in dropped:
        del features[column]
    features.update(source_features(decode=False))
    return ds.map(
        mapper,
        batched=True,
        with_indices=True,
        features=features,
        remove_columns=dropped,
        writer_batch_size=100,  # rows may carry embedded images: keep Arrow write batches small
        new_fingerprint=mapper.fingerprint(ds._fingerprint),
        desc="Reading input",
    )
