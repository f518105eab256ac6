"""The row schema of every dataset imgedit-ds writes.

| column          | type                | meaning                                                     |
|-----------------|---------------------|-------------------------------------------------------------|
| id              | string              | stable row id (the input's `id`, else the row's index)      |
| source_images   | list of Image       | one or more source images, bytes embedded                   |
| instruction     | string              | the edit instruction                                        |
| category        | string              | edit category ("" when unknown)                             |
| edited_image    | Image or null       | the edited image; null unless status is ok                  |
| status          | string              | ok, failed, refused or unsupported                          |
| error           | string              | "cause: detail"; empty when ok                              |
| seed            | int64               | the row's seed, from run.seed and the id                    |
| backend, model  | string              | what made the row                                           |
| params          | string (JSON)       | generation parameters that produced the row                 |
| usage           | string (JSON)       | tokens and cost a service reported ("{}" when none)         |

Input columns the pipeline does not use are carried through unchanged.
"""

from __future__ import annotations

import hashlib

from datasets import Features, Image, List, Value

SOURCE_COLUMNS = ("id", "source_images", "instruction", "category")
OUTPUT_COLUMNS = ("edited_image", "status", "error", "seed", "backend", "model", "params", "usage")
SCHEMA_COLUMNS = SOURCE_COLUMNS + OUTPUT_COLUMNS


def source_features(decode: bool = False) -> Features:
    """Features of the prepared input (images may still be paths to read)."""
    return Features(
        {
            "id": Value("string"),
            "source_images": List(Image(decode=decode)),
            "instruction": Value("string"),
            "category": Value("string"),
        }
    )


def output_features(input_features: Features | None = None, decode: bool = True) -> Features:
    """Features of an edited dataset: the input's own columns first, then the schema's."""
    features = Features(dict(input_features or {}))
    features.update(source_features(decode=decode))
    features.update(
        {
            "edited_image": Image(decode=decode),
            "status": Value("string"),
            "error": Value("string"),
            "seed": Value("int64"),
            "backend": Value("string"),
            "model": Value("string"),
            "params": Value("string"),
            "usage": Value("string"),
        }
    )
    return features


def row_seed(run_seed: int, row_id: str) -> int:
    """A row's seed: from run.seed and the row id only, so it is independent of batching and order."""
    digest = hashlib.sha256(f"{run_seed}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)
