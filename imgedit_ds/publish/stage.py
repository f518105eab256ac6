"""Stage a run for the Hub: validate it, then write the exact files a push uploads.

Staged files live in OUTPUT/publish/<config_name>/ under the paths they get in the repo:
`<data_dir>/<split>-00000-of-0000N.parquet` and `<data_dir>/preview.png`, plus `manifest.json`.
Shards are cut from real byte counts (the embedded image bytes of each row), Parquet row groups hold at
most 100 rows so the Hub's dataset viewer can page through them, and the same OUTPUT always stages the
same bytes, so pushing it again uploads nothing. A push that fails reuses the staged files when OUTPUT
and the options are unchanged; a push that succeeds removes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Features
from datasets import config as datasets_config
from datasets.table import embed_table_storage
from datasets.utils.py_utils import convert_file_size_to_int

from imgedit_ds.arrow import take
from imgedit_ds.publish.card import PushedSplit
from imgedit_ds.publish.output import (
    FLAT_SOURCE,
    TRAIN_SPLIT,
    RunOutput,
    has_single_source,
    image_columns,
    publish_features,
    split_indices,
)
from imgedit_ds.publish.validate import InvalidOutputError, row_digest, validate_output

logger = logging.getLogger(__name__)

STAGE_FORMAT = 1
ROWS_PER_GROUP = 100
ROW_GROUP_BYTES = 128 * 1024 * 1024
DIGEST_COLUMNS = ["id", "source_images", "edited_image"]
# Content-defined chunking, as datasets writes Parquet: pages that did not change stay byte-identical
# between pushes, so the Hub's Xet storage keeps them once. (Only where datasets and pyarrow have it.)
CDC = ({"use_content_defined_chunking": datasets_config.DEFAULT_CDC_OPTIONS}
       if hasattr(datasets_config, "DEFAULT_CDC_OPTIONS") else {})


@dataclass(frozen=True)
class StagedFile:
    path_in_repo: str
    sha256: str
    size: int


@dataclass
class Staged:
    """The files of one config, ready to upload, and what a reader must find in them."""

    root: Path
    data_dir: str
    files: list[StagedFile]
    splits: list[PushedSplit]
    features: Features
    first_rows: dict[str, tuple[str, str]]  # split -> (row id, row digest) of its first row
    warnings: list[str]

    def local(self, file: StagedFile) -> Path:
        return self.root / file.path_in_repo


def data_dir_for(config_name: str) -> str:
    """The repo folder of a config's files; the same rule as `datasets`' push_to_hub."""
    if config_name == "data" or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", config_name):
        raise ValueError(f"output.config_name={config_name!r}: use letters, digits, '.', '_' and '-' "
                         "(and not 'data', the folder of the default config)")
    return "data" if config_name == "default" else config_name


def stage_output(run: RunOutput, config_name: str = "default", max_shard_size: str | int = "500MB") -> Staged:
    """Validate OUTPUT and write its shards, or reuse what an earlier failed push staged."""
    data_dir = data_dir_for(config_name)
    root = run.path / "publish" / config_name
    key = _stage_key(run, config_name, max_shard_size)
    reused = _load_manifest(root, key)
    if reused is not None:
        logger.info("reusing the shards staged in %s", root)
        return reused
    validation = validate_output(run)
    validation.raise_for_errors(str(run.path / "dataset"))
    splits_rows = split_indices(run.dataset)
    if TRAIN_SPLIT not in splits_rows:
        raise InvalidOutputError(f"{run.path / 'dataset'} has no row with status ok: there is nothing to "
                                 "train on (report.json says why the edits failed)")
    shutil.rmtree(root, ignore_errors=True)
    features = publish_features(run.dataset.features, has_single_source(run.dataset))
    limit = convert_file_size_to_int(max_shard_size)
    sizes = _row_bytes(run.table, features)
    files, splits, first_rows = [], [], {}
    for split, indices in splits_rows.items():
        shards = _write_split(run.table, features, split, indices, sizes[indices], limit, root, data_dir)
        files += shards
        first_id = str(run.table.column("id")[int(indices[0])].as_py())
        first_rows[split] = (first_id, validation.digests[first_id])
        arrow_bytes = int(sizes[indices].sum())
        splits.append(PushedSplit(split, len(indices), arrow_bytes, sum(f.size for f in shards)))
    _check_shards(root, files, validation.digests)
    if run.preview is not None:
        files.append(_copy(run.preview, root, f"{data_dir}/preview.png"))
    staged = Staged(root, data_dir, files, splits, features, first_rows, validation.warnings)
    _write_manifest(staged, key)
    return staged


def _write_split(table: pa.Table, features: Features, split: str, indices: np.ndarray, sizes: np.ndarray,
                 limit: int, root: Path, data_dir: str) -> list[StagedFile]:
    """The split's rows (`indices` into `table`, `sizes` their bytes) as Parquet shards of <= limit bytes."""
    bounds = _shard_bounds(sizes, limit)
    files = []
    for i, (start, end) in enumerate(bounds):
        path_in_repo = f"{data_dir}/{split}-{i:05d}-of-{len(bounds):05d}.parquet"
        rows = _prepare(take(table, indices[start:end].tolist()), features)
        # Row groups of at most 100 rows, fewer when rows are large: the Hub's viewer reads one at a time.
        group = max(1, min(ROWS_PER_GROUP, ROW_GROUP_BYTES // max(1, int(sizes[start:end].mean()))))
        files.append(_write_parquet(rows, root / path_in_repo, path_in_repo, group))
    return files


def _row_bytes(table: pa.Table, features: Features) -> np.ndarray:
    """Bytes each row takes once published: its image bytes, exactly, plus an even share of the rest."""
    n = table.num_rows
    images = dict(image_columns(features))
    others = [c for c in table.column_names if c not in images]
    sizes = np.full(n, table.select(others).nbytes // max(n, 1), dtype=np.int64)
    for name, is_list in images.items():
        if name not in table.column_names:
            continue
        column = table.column(name)
        if is_list:
            lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy()
            flat = pc.binary_length(pc.struct_field(pc.list_flatten(column), "bytes"))
            owners = np.repeat(np.arange(n), lengths)
            per_row = np.bincount(owners, weights=pc.fill_null(flat, 0).to_numpy(), minlength=n)
            sizes += per_row.astype(np.int64)
        else:
            sizes += pc.fill_null(pc.binary_length(pc.struct_field(column, "bytes")), 0).to_numpy()
    if FLAT_SOURCE in features:
        first = pc.list_element(table.column("source_images"), 0)
        sizes += pc.fill_null(pc.binary_length(pc.struct_field(first, "bytes")), 0).to_numpy()
    return sizes


def _shard_bounds(sizes: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Contiguous row ranges of at most `limit` bytes each (a single larger row gets a shard alone)."""
    bounds, start, total = [], 0, 0
    for i, size in enumerate(sizes.tolist()):
        if i > start and total + size > limit:
            bounds.append((start, i))
            start, total = i, 0
        total += size
    bounds.append((start, len(sizes)))
    return bounds


def _prepare(rows: pa.Table, features: Features) -> pa.Table:
    """Embed images read from paths, keep only file names in paths, add the flat source column."""
    rows = embed_table_storage(rows)
    if FLAT_SOURCE in features:
        position = rows.column_names.index("source_images") + 1
        rows = rows.add_column(position, FLAT_SOURCE, pc.list_element(rows.column("source_images"), 0))
    return rows.cast(features.arrow_schema)


def _write_parquet(rows: pa.Table, path: Path, path_in_repo: str, row_group_size: int) -> StagedFile:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows, path, row_group_size=row_group_size, write_page_index=True, **CDC)
    return StagedFile(path_in_repo, _sha256(path), path.stat().st_size)


def _check_shards(root: Path, files: list[StagedFile], digests: dict[str, str]) -> None:
    """Read every shard back: each row's images must be the ones validated under its id."""
    seen = 0
    for file in files:
        for batch in pq.ParquetFile(root / file.path_in_repo).iter_batches(ROWS_PER_GROUP, columns=DIGEST_COLUMNS):
            for row in batch.to_pylist():
                if digests.get(str(row["id"])) != row_digest(row["source_images"], row["edited_image"]):
                    raise InvalidOutputError(f"{file.path_in_repo}: row {row['id']!r} does not hold the images "
                                             "validated for it; staging is broken, nothing was pushed")
            seen += batch.num_rows
    if seen != len(digests):
        raise InvalidOutputError(f"the staged shards hold {seen} rows, the dataset {len(digests)}")


def _copy(source: Path, root: Path, path_in_repo: str) -> StagedFile:
    target = root / path_in_repo
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return StagedFile(path_in_repo, _sha256(target), target.stat().st_size)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stage_key(run: RunOutput, config_name: str, max_shard_size: str | int) -> str:
    """Changes whenever OUTPUT's files or the staging options change."""
    files = sorted(
        (str(p.relative_to(run.path)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in [*run.path.joinpath("dataset").rglob("*"), run.path / "preview.png"] if p.is_file()
    )
    payload = [STAGE_FORMAT, config_name, convert_file_size_to_int(max_shard_size), files]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def _write_manifest(staged: Staged, key: str) -> None:
    manifest = {
        "key": key, "data_dir": staged.data_dir, "files": [asdict(f) for f in staged.files],
        "splits": [asdict(s) for s in staged.splits], "features": staged.features.to_dict(),
        "first_rows": staged.first_rows, "warnings": staged.warnings,
    }
    (staged.root / "manifest.json").write_text(json.dumps(manifest, indent=1))


def _load_manifest(root: Path, key: str) -> Staged | None:
    path = root / "manifest.json"
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    files = [StagedFile(**f) for f in manifest["files"]]
    intact = all((root / f.path_in_repo).is_file() and (root / f.path_in_repo).stat().st_size == f.size
                 for f in files)
    if manifest["key"] != key or not intact:
        return None
    return Staged(root, manifest["data_dir"], files, [PushedSplit(**s) for s in manifest["splits"]],
                  Features.from_dict(manifest["features"]),
                  {k: (v[0], v[1]) for k, v in manifest["first_rows"].items()}, manifest["warnings"])
