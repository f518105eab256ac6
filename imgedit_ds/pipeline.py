"""The whole run: read -> instruct -> edit (in committed chunks) -> write dataset, report, preview.

`run(cfg)` is what the CLI calls; `edit_dataset(ds, overrides)` is the same run on a Dataset in hand.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import datasets
import pyarrow.compute as pc
from datasets import Dataset, concatenate_datasets
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from imgedit_ds.edit.base import ConfigError, EditBackend, FatalBackendError
from imgedit_ds.edit.map_fn import KEEP_STATUSES, RETRY_SOURCES, EditFunction
from imgedit_ds.images import ImageEncoder
from imgedit_ds.options import check_fields
from imgedit_ds.read.inputs import InputReader
from imgedit_ds.schema import output_features
from imgedit_ds.write.chunks import Chunk, ChunkStore, CommittedChunk, assemble, plan_chunks
from imgedit_ds.write.preview import write_preview
from imgedit_ds.write.report import build_report, summary_lines, write_report

logger = logging.getLogger(__name__)
_LOADED_AT = time.time()
SECRET_KEY = re.compile(r"(^|_)(api_?key|token|secret|password)$", re.IGNORECASE)


@dataclass(frozen=True)
class RunSettings:
    """The `run` and `output` options, checked once at start."""

    seed: int = 0
    batch_size: int = 8
    num_proc: int = 1
    chunk_size: int = 256
    writer_batch_size: int = 100
    retry_failed: bool = True
    output_dir: str | None = None
    image_format: str = "png"
    png_compress_level: int = 1
    quality: int = 95
    preview_rows: int = 8

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RunSettings:
        run, out = cfg.run, cfg.output
        settings = cls(
            seed=run.seed, batch_size=run.batch_size, num_proc=run.num_proc, chunk_size=run.chunk_size,
            writer_batch_size=run.writer_batch_size, retry_failed=run.retry_failed, output_dir=out.dir,
            image_format=out.image_format, png_compress_level=out.png_compress_level, quality=out.quality,
            preview_rows=out.preview_rows,
        )
        settings.check()
        return settings

    def check(self) -> None:
        output_options = {"output_dir": "output.dir", "image_format": "output.image_format",
                          "png_compress_level": "output.png_compress_level", "quality": "output.quality",
                          "preview_rows": "output.preview_rows"}
        check_fields(self, "run", output_options)
        positive = {"run.batch_size": self.batch_size, "run.num_proc": self.num_proc,
                    "run.chunk_size": self.chunk_size, "run.writer_batch_size": self.writer_batch_size}
        for option, value in positive.items():
            if value < 1:
                raise ConfigError(f"{option}={value}: use a whole number of at least 1")
        if self.image_format.lower() not in ("png", "jpeg", "jpg", "webp"):
            raise ConfigError(f"output.image_format={self.image_format}: use png, jpeg or webp")
        if not 0 <= self.png_compress_level <= 9:
            raise ConfigError(f"output.png_compress_level={self.png_compress_level}: use 0 (fastest) to 9")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"output.quality={self.quality}: use 1 to 100")

    def encoder(self) -> ImageEncoder:
        return ImageEncoder(self.image_format.lower(), self.png_compress_level, self.quality)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def redact(config: Any) -> Any:
    """A plain copy of a config with secret-looking values replaced (names of env vars stay) and URLs
    stripped of credentials and query strings."""
    if isinstance(config, dict):
        return {k: "***" if SECRET_KEY.search(str(k)) and v else redact(v) for k, v in config.items()}
    if isinstance(config, list):
        return [redact(v) for v in config]
    if isinstance(config, str) and "://" in config:
        parts = urlsplit(config)
        if parts.username or parts.password or parts.query:
            host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
            return urlunsplit((parts.scheme, host, parts.path, "", ""))
    return config


def check_publish(out: DictConfig) -> None:
    """Publishing options fail at start, not after hours of editing."""
    from imgedit_ds.publish import EXPORTS

    unknown = sorted(set(out.get("export") or []) - set(EXPORTS))
    if unknown:
        raise ConfigError(f"output.export has unknown {unknown}: choose from {sorted(EXPORTS)}")
    repo = out.get("push_to_hub")
    if repo:
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(repo)):
            raise ConfigError(f"output.push_to_hub={repo}: use ORG/NAME, e.g. output.push_to_hub=me/my-edits")
        if not os.environ.get("HF_TOKEN"):
            raise ConfigError("output.push_to_hub needs a Hub token: set HF_TOKEN in the environment")


def _build(cfg: DictConfig, group: str) -> Any:
    """Instantiate one config group, turning Hydra's errors into one line naming the option."""
    try:
        return instantiate(cfg[group], _convert_="all")
    except (MissingMandatoryValue, InterpolationToMissingValueError) as err:
        raise ConfigError(f"{err.full_key} is required: add {err.full_key}=... to the command") from None
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        cause = err.__cause__ or err
        raise ConfigError(f"{group}={cfg[group].get('_target_')}: {type(cause).__name__}: {cause}") from None


@dataclass
class Job:
    """Everything a process needs to edit chunks; built from the config before anything heavy."""

    cfg: DictConfig
    settings: RunSettings
    backend: EditBackend
    reader: InputReader | None
    instructions: Any

    @classmethod
    def from_config(cls, cfg: DictConfig, with_reader: bool = True) -> Job:
        settings = RunSettings.from_config(cfg)
        reader = _build(cfg, "data") if with_reader else None
        instructions = _build(cfg, "instructions")
        if hasattr(instructions, "seed"):
            instructions.seed = settings.seed
        backend = _build(cfg, "backend")
        if reader is not None:
            reader.check()
            if not reader.has_instructions and not instructions.writes_instructions:
                raise ConfigError("this input has no instructions: add instructions=template, "
                                  "or use data=jsonl/csv/parquet with data.instruction_column")
        backend.check()
        check_publish(cfg.output)
        return cls(cfg, settings, backend, reader, instructions)

    def identity(self, dataset: Dataset | None = None) -> dict[str, Any]:
        """What decides the output; a change here never reuses old chunks (nor, by default, the folder)."""
        data = OmegaConf.to_container(self.cfg.data, resolve=True) if dataset is None else {
            "dataset": dataset._fingerprint}
        s = self.settings
        return {
            "data": data, "instructions": self.instructions.describe(), "backend": self.backend.name,
            "model": self.backend.model, "params": self.backend.params(), "seed": s.seed,
            "encoding": [s.image_format, s.png_compress_level, s.quality],
        }

    def output_dir(self, input_name: str, dataset: Dataset | None = None) -> Path:
        if self.settings.output_dir:
            return Path(self.settings.output_dir).expanduser().resolve()
        name = f"{input_name}-{self.backend.name}-{_digest(self.identity(dataset))[:8]}"
        return (Path("outputs") / name).resolve()

    def edit_function(self, device: str | None = None, on_rows_done: Callable[[int], None] | None = None,
                      max_pixels: int | None = None) -> EditFunction:
        limit = max_pixels or (self.reader.max_pixels if self.reader else None)
        kwargs = {"max_pixels": limit} if limit else {}
        return EditFunction(self.backend, seed=self.settings.seed, encoder=self.settings.encoder(),
                            device=device, on_rows_done=on_rows_done, **kwargs)


def add_instructions(ds: Dataset, instructions: Any) -> Dataset:
    if not instructions.writes_instructions:
        return ds
    return ds.map(instructions, batched=True, desc="Writing instructions", writer_batch_size=100,
                  new_fingerprint=_digest([ds._fingerprint, instructions.describe(), instructions.seed])[:32])


def edit_chunk(job: Job, ds: Dataset, chunk: Chunk, store: ChunkStore, edit: EditFunction,
               previous: CommittedChunk | None) -> int:
    """Edit one chunk (or retry its failed rows) and commit it; return the rows computed."""
    rows = ds.select(range(chunk.start, chunk.end))
    if previous is not None:
        inputs = rows.select_columns(["source_images"]).rename_column("source_images", RETRY_SOURCES)
        source = concatenate_datasets([previous.load(output_features(ds.features, decode=False)), inputs], axis=1)
        computed = sum(n for status, n in previous.status.items() if status not in KEEP_STATUSES)
    else:
        source, computed = rows, chunk.rows
    staging = store.staging_dir(chunk)
    edited = source.map(
        edit.edit_batch,
        batched=True,
        with_rank=True,
        batch_size=job.settings.batch_size,
        features=output_features(ds.features),
        remove_columns=[RETRY_SOURCES] if previous is not None else None,
        cache_file_name=str(staging / "data.arrow"),
        writer_batch_size=job.settings.writer_batch_size,
        load_from_cache_file=False,
        new_fingerprint=_digest([store.fingerprint, chunk.start, chunk.end, previous and previous.generation])[:32],
    )
    counts = pc.value_counts(edited.data.column("status")).to_pylist()
    status = {c["values"]: c["counts"] for c in counts}
    del edited
    store.commit(chunk, staging, status, computed, previous)
    return computed


def chunks_to_do(chunks: list[Chunk], committed: dict[Chunk, CommittedChunk], retry_failed: bool) -> list[Chunk]:
    return [c for c in chunks if c not in committed or (retry_failed and committed[c].status.get("failed"))]


def rank_share(chunks: list[Chunk], rank: int, world_size: int) -> list[Chunk]:
    """A contiguous block of the run's chunks for one rank (the same split whatever is done)."""
    per, extra = divmod(len(chunks), world_size)
    start = rank * per + min(rank, extra)
    return chunks[start:start + per + (1 if rank < extra else 0)]


def prepare_input(job: Job, output_dir: Path, dataset: Dataset | None) -> Dataset:
    if dataset is None:
        assert job.reader is not None
        verbosity = datasets.logging.get_verbosity()
        datasets.logging.set_verbosity(logging.CRITICAL)  # its own error lines would repeat ours below
        try:
            dataset = job.reader.load(output_dir / ".cache" / "input")
        except (ConfigError, FileNotFoundError, ConnectionError):
            raise
        except Exception as err:  # a file the format's reader cannot parse: say which and why, in one line
            where = getattr(job.reader, "path", "") or getattr(job.reader, "name", "")
            root = err.__cause__ or err
            first_line = (str(root).strip().splitlines() or [""])[0][:300]
            raise ConfigError(f"data={type(job.reader).__name__} cannot read {where}: "
                              f"{type(root).__name__}: {first_line}") from None
        finally:
            datasets.logging.set_verbosity(verbosity)
    if len(dataset) == 0:
        raise ConfigError("the input has no rows: check data.path / data.split / data.limit")
    return add_instructions(dataset, job.instructions)


def run(cfg: DictConfig, dataset: Dataset | None = None) -> dict[str, Any]:
    """Run the configured job end to end and return its report."""
    from imgedit_ds.parallel import distributed_rank, edit_chunks

    started = time.perf_counter()
    job = Job.from_config(cfg, with_reader=dataset is None)
    output_dir = job.output_dir(job.reader.label() if job.reader else "dataset", dataset)
    output_dir.mkdir(parents=True, exist_ok=True)
    with quiet_datasets():
        ds = prepare_input(job, output_dir, dataset)
        store = ChunkStore(output_dir, _digest([job.identity(dataset), ds._fingerprint]))
        rank, world_size = distributed_rank()
        if rank == 0:
            store.clean_stale()
            _write_config(job, output_dir)
        earlier = {c.path for c in store.committed().values()}
        chunks = plan_chunks(len(ds), job.settings.chunk_size)
        computed_here = edit_chunks(job, ds, store, chunks, rank, world_size)
        if rank != 0:
            return {"rank": rank, "computed": computed_here}
        report = write_outputs(job, ds, store, chunks, earlier, output_dir, started, world_size)
    for line in summary_lines(report):
        logger.info(line)
    publish(cfg.output, output_dir)
    return report


def write_outputs(job: Job, ds: Dataset, store: ChunkStore, chunks: list[Chunk], earlier: set[Path],
                  output_dir: Path, started: float, world_size: int) -> dict[str, Any]:
    """Assemble `dataset/` from the committed chunks, check it, write report.json and preview.png."""
    committed = store.committed()
    final = [committed[c] for c in chunks]
    if world_size > 1:
        # Other ranks may commit before this one has even listed the chunks: count by commit time
        # against this process's start (the launcher starts every rank at once).
        earlier = {c.path for c in final if c.committed_at < process_start_time()}
    fresh = [c for c in final if c.path not in earlier]  # committed by this invocation, every rank
    computed, computed_ok = sum(c.computed for c in fresh), sum(c.computed_ok for c in fresh)
    assemble(final, output_features(ds.features), output_dir / "dataset", store.fingerprint)
    result = datasets.load_from_disk(str(output_dir / "dataset"))
    if len(result) != len(ds):
        raise RuntimeError(f"assembled {len(result)} rows for {len(ds)} input rows in {output_dir}")
    report = build_report(result.data, computed=computed, computed_ok=computed_ok, reused=len(ds) - computed,
                          wall_s=time.perf_counter() - started, output_dir=output_dir,
                          backend=job.backend.name, model=job.backend.model)
    write_report(report, output_dir / "report.json")
    write_preview(result.data.slice(0, job.settings.preview_rows).to_pylist(), output_dir / "preview.png")
    others, size = store.other_configs()
    if others:
        logger.info("%s/chunks also holds %d chunks (%.1f MB) made with other configs: they are reused if you "
                    "go back to those, else delete them", output_dir, others, size / 1e6)
    return report


def publish(out: DictConfig, output_dir: Path) -> None:
    """Gallery, exports and the Hub push. A failure here loses nothing: the run is already written."""
    from huggingface_hub.errors import HfHubHTTPError

    from imgedit_ds.publish import InvalidOutputError, PublishError, export_output, push_output
    from imgedit_ds.write.gallery import write_gallery

    if out.get("gallery", True):
        logger.info("Gallery: %s", write_gallery(output_dir))
    if out.get("export"):
        for kind, path in export_output(output_dir, list(out.export)).items():
            logger.info("Export (%s): %s", kind, path)
    if not out.get("push_to_hub"):
        logger.info("Push it to the Hub: HF_TOKEN=... imgedit-ds-push %s ORG/NAME", output_dir)
        return
    try:
        result = push_output(output_dir, out.push_to_hub, private=bool(out.private), config_name=out.config_name,
                             max_shard_size=out.max_shard_size, revision=out.revision,
                             create_pr=bool(out.create_pr), license=out.license)
    except (PublishError, InvalidOutputError, HfHubHTTPError) as err:
        raise FatalBackendError(f"the push to {out.push_to_hub} failed ({err}); the run is saved: "
                                f"retry with `imgedit-ds-push {output_dir}`") from None
    logger.info("Pushed to %s (commit %s)", out.push_to_hub, result.get("commit") or "none: nothing changed")


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """datasets' own progress bars off while a run shows its one bar."""
    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


def process_start_time() -> float:
    """When this process started (wall clock), from /proc on Linux; else when this module was loaded."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _LOADED_AT


def _write_config(job: Job, output_dir: Path) -> None:
    config = redact(OmegaConf.to_container(job.cfg, resolve=True))
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The packaged configuration with Hydra overrides applied, outside of a Hydra app."""
    from hydra import compose, initialize_config_dir

    from imgedit_ds.cli import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def edit_dataset(dataset: Dataset, overrides: Sequence[str] = (), *, image_column: str = "image",
                 instruction_column: str | None = "instruction", id_column: str | None = None,
                 output_dir: str | os.PathLike | None = None) -> Dataset:
    """Edit a Dataset in hand with the packaged config plus Hydra-style overrides.

    `dataset` needs an image column (path, Image, or a list of either) and, unless
    `instructions=template` is among the overrides, an instruction column. Returns the edited
    dataset (loaded from `<output_dir>/dataset`).
    """
    from imgedit_ds.read.columns import prepare

    cfg = compose_config(list(overrides) + ([f"output.dir={output_dir}"] if output_dir else []))
    if instruction_column is None and cfg.instructions.get("_target_", "").endswith("KeepInstructions"):
        raise ConfigError("instruction_column=None needs instructions=template among the overrides")
    with quiet_datasets():
        prepared = prepare(dataset, image_column, instruction_column, [Path.cwd()], id_column)
    report = run(cfg, dataset=prepared)
    return datasets.load_from_disk(str(Path(report["output_dir"]) / "dataset"))
