"""Input readers, one per `data=` config: each checks its options, then loads a prepared Dataset.

Every reader returns the prepared columns of `imgedit_ds.read.columns.prepare` (id, source_images,
instruction, category) plus the input's own columns. Image files are not opened here: a missing or
broken file fails its own row later, not the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets import Dataset

from imgedit_ds.edit.base import ConfigError
from imgedit_ds.images import DEFAULT_MAX_PIXELS
from imgedit_ds.options import check_fields
from imgedit_ds.read.columns import prepare

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class InputReader:
    """Options every reader shares."""

    limit: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    has_instructions: bool = True

    def check(self) -> None:
        check_fields(self, "data")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"data.limit={self.limit}: use a positive number of rows, or null for all")
        if self.max_pixels < 1:
            raise ConfigError(f"data.max_pixels={self.max_pixels}: use a positive pixel count")

    def label(self) -> str:
        """A short name for the input, used in the default output folder name."""
        return type(self).__name__.lower()

    def load(self, cache_dir: Path) -> Dataset:
        raise NotImplementedError


def _existing_file(path: str, option: str = "data.path") -> Path:
    if not path:
        raise ConfigError(f"{option} is not set: give the input file, e.g. {option}=prompts.jsonl")
    resolved = Path(os.path.expanduser(path)).resolve()
    if not resolved.is_file():
        raise ConfigError(f"{option}={path}: no such file (looked at {resolved})")
    return resolved


@dataclass
class DataflowJsonl(InputReader):
    """DataFlow's format: conversations (last user turn = instruction), images, edited_images."""

    path: str = ""
    image_root: str | None = None

    def check(self) -> None:
        super().check()
        _existing_file(self.path)
        if self.image_root and not Path(self.image_root).expanduser().is_dir():
            raise ConfigError(f"data.image_root={self.image_root}: no such folder")

    def label(self) -> str:
        return Path(self.path).stem

    def roots(self) -> list[Path]:
        if self.image_root:
            return [Path(self.image_root).expanduser().resolve()]
        return [_existing_file(self.path).parent, Path.cwd()]

    def load(self, cache_dir: Path) -> Dataset:
        ds = Dataset.from_json(str(_existing_file(self.path)), cache_dir=str(cache_dir))
        for column in ("conversations", "images"):
            if column not in ds.column_names:
                raise ConfigError(
                    f"data.path={self.path} has no '{column}' field: it is not DataFlow JSONL; "
                    "use data=jsonl with data.image_column and data.instruction_column"
                )
        return prepare(ds, "images", "conversations", self.roots(), limit=self.limit,
                       id_column="id" if "id" in ds.column_names else None)


@dataclass
class TableFile(InputReader):
    """`data=jsonl|csv|parquet`: one row per edit, columns named by the options."""

    path: str = ""
    format: str = "jsonl"
    image_column: str = "image"
    instruction_column: str | None = "instruction"
    id_column: str | None = None
    category_column: str | None = None
    image_root: str | None = None

    def check(self) -> None:
        super().check()
        _existing_file(self.path)
        if self.format not in ("jsonl", "json", "csv", "parquet"):
            raise ConfigError(f"data.format={self.format!r}: use jsonl, csv or parquet")

    def label(self) -> str:
        return Path(self.path).stem

    def load(self, cache_dir: Path) -> Dataset:
        path = str(_existing_file(self.path))
        readers = {"jsonl": Dataset.from_json, "json": Dataset.from_json,
                   "csv": Dataset.from_csv, "parquet": Dataset.from_parquet}
        ds = readers[self.format](path, cache_dir=str(cache_dir))
        roots = [Path(self.image_root).expanduser().resolve()] if self.image_root else [Path(path).parent, Path.cwd()]
        return prepare(ds, self.image_column, self.instruction_column, roots,
                       self.id_column, self.category_column, self.limit)


@dataclass
class ImageFolder(InputReader):
    """`data=imagefolder`: every image under a folder, sorted by path; no instructions."""

    path: str = ""
    recursive: bool = True
    has_instructions: bool = False

    def check(self) -> None:
        super().check()
        if not self.path or not Path(self.path).expanduser().is_dir():
            raise ConfigError(f"data.path={self.path!r}: no such folder of images")

    def label(self) -> str:
        return Path(self.path).resolve().name

    def load(self, cache_dir: Path) -> Dataset:
        root = Path(self.path).expanduser().resolve()
        pattern = "**/*" if self.recursive else "*"
        files = sorted(str(p) for p in root.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise ConfigError(f"data.path={self.path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
        relative = [os.path.relpath(f, root) for f in files]
        ds = Dataset.from_dict({"id": [os.path.splitext(r)[0] for r in relative], "source_file": relative,
                                "_path": files})
        # The absolute path was only needed to read the file: it is not the user's data to publish.
        return prepare(ds, "_path", None, [root], id_column="id", limit=self.limit).remove_columns("_path")


@dataclass
class HubDataset(InputReader):
    """`data=hub` (a Hub dataset by name) or `data=disk` (a `save_to_disk` folder)."""

    name: str = ""
    path: str = ""
    split: str = "train"
    revision: str | None = None
    subset: str | None = None
    from_disk: bool = False
    image_column: str = "image"
    instruction_column: str | None = "instruction"
    id_column: str | None = None
    category_column: str | None = None

    def check(self) -> None:
        super().check()
        option, value = ("data.path", self.path) if self.from_disk else ("data.name", self.name)
        if not value:
            raise ConfigError(f"{option} is not set")
        if self.from_disk and not Path(self.path).expanduser().is_dir():
            raise ConfigError(f"data.path={self.path}: no such save_to_disk folder")

    def label(self) -> str:
        return Path((self.path if self.from_disk else self.name).rstrip("/")).name

    def load(self, cache_dir: Path) -> Dataset:
        if self.from_disk:
            loaded = datasets.load_from_disk(str(Path(self.path).expanduser()))
            if isinstance(loaded, datasets.DatasetDict):
                if self.split not in loaded:
                    raise ConfigError(f"data.split={self.split!r}: the folder has splits {list(loaded)}")
                loaded = loaded[self.split]
        else:
            loaded = datasets.load_dataset(self.name, self.subset, split=self.split,
                                           revision=self.revision, cache_dir=str(cache_dir))
        return prepare(loaded, self.image_column, self.instruction_column, [Path.cwd()],
                       self.id_column, self.category_column, self.limit)
