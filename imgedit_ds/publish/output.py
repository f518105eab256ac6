"""Read a finished run's OUTPUT folder and decide what each published split holds.

OUTPUT holds `dataset/` (datasets.load_from_disk, the schema in `imgedit_ds.schema`), `report.json`,
`preview.png` and `config.yaml` (the resolved config). Everything after a run — push, card, exports,
gallery — starts from `load_output(output_dir)`, so a failed push is retried without recomputing rows.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from datasets import Dataset, Features, Image, load_from_disk

from imgedit_ds.edit.base import OK

TRAIN_SPLIT = "train"
FAILED_SPLIT = "failed"
FLAT_SOURCE = "source_image"

# Names (config keys, environment variables) whose values are credentials, as whole words:
# `hf_token`, `OPENAI_API_KEY`, `AWS_SECRET_ACCESS_KEY` match; `max_tokens` does not.
SECRET_KEY = re.compile(r"(?:^|[_-])(?:token|secret|password|passwd|api[_-]?key|access[_-]?key|authorization"
                        r"|credentials?|cookie)(?:$|[_-])", re.I)
REMOVED = "***"  # the marker the core writes into config.yaml too


@dataclass
class RunOutput:
    """A run's OUTPUT folder, loaded."""

    path: Path
    dataset: Dataset
    report: dict[str, Any]
    config: dict[str, Any]

    @property
    def preview(self) -> Path | None:
        path = self.path / "preview.png"
        return path if path.is_file() else None

    @property
    def table(self) -> pa.Table:
        """The dataset's Arrow table (memory-mapped; rows in dataset order)."""
        return self.dataset.data.table


def load_output(output_dir: str | Path) -> RunOutput:
    """Load OUTPUT; the error names the missing piece and what writes it."""
    path = Path(output_dir)
    if not (path / "dataset").is_dir():
        raise FileNotFoundError(
            f"{path / 'dataset'} does not exist: pass the OUTPUT folder of a finished imgedit-ds run"
        )
    dataset = load_from_disk(str(path / "dataset"))
    if not isinstance(dataset, Dataset):
        raise ValueError(f"{path / 'dataset'} holds a DatasetDict; imgedit-ds writes a single Dataset there")
    report = json.loads((path / "report.json").read_text()) if (path / "report.json").is_file() else {}
    config = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").is_file() else {}
    return RunOutput(path=path, dataset=dataset, report=report, config=scrub(config or {}))


def secret_values() -> list[str]:
    """Values of the environment's credentials (HF_TOKEN, *_API_KEY, ...): they must never be published."""
    return [v for k, v in os.environ.items() if SECRET_KEY.search(k) and len(v) >= 8]


def scrub(value: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a config with credentials replaced by "***" (by key name and by known value)."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, dict):
        return {k: REMOVED if _secret_key(str(k)) and v not in (None, "") else scrub(v, secrets)
                for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, str) and any(s in value for s in secrets):
        return REMOVED
    return value


def _secret_key(key: str) -> bool:
    # `*_env` keys name the environment variable that holds a secret, not the secret itself.
    return bool(SECRET_KEY.search(key)) and not key.lower().endswith("_env")


def split_indices(dataset: Dataset) -> dict[str, np.ndarray]:
    """Row indices of each published split: `train` holds the ok rows, `failed` every other row."""
    ok = pc.equal(dataset.data.table.column("status"), OK).to_numpy(zero_copy_only=False)
    ok = np.asarray(ok, dtype=bool)
    splits = {TRAIN_SPLIT: np.flatnonzero(ok), FAILED_SPLIT: np.flatnonzero(~ok)}
    return {name: idx for name, idx in splits.items() if len(idx)}


def has_single_source(dataset: Dataset) -> bool:
    """True when every row has exactly one source image: the training scripts then get a flat column."""
    lengths = pc.list_value_length(dataset.data.table.column("source_images"))
    return len(dataset) > 0 and pc.all(pc.equal(lengths, 1)).as_py() is True


def publish_features(features: Features, single_source: bool) -> Features:
    """The dataset's features, with a flat `source_image` after `source_images` when rows have one source."""
    out: dict[str, Any] = {}
    for name, feature in features.items():
        out[name] = feature
        if name == "source_images" and single_source:
            out[FLAT_SOURCE] = Image()
    return Features(out)


def image_columns(features: Features) -> Iterator[tuple[str, bool]]:
    """(column, is_list) for each image column of the schema, single images and lists of images."""
    for name, feature in features.items():
        if isinstance(feature, Image):
            yield name, False
        elif isinstance(getattr(feature, "feature", None), Image):
            yield name, True
