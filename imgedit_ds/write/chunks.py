"""Committed chunks: how a run survives a crash and resumes without losing or repeating rows.

Each finished chunk of rows lives in `OUTPUT/chunks/<start>-<end>-<fingerprint>-g<generation>/`:
its Arrow file(s) from `Dataset.map` and a `meta.json` written last. A chunk is committed by one
atomic directory rename; a directory without `meta.json` is never read. A chunk whose failed rows are
retried is committed again under the next generation, and the older one is removed.
The final `OUTPUT/dataset/` is assembled from the committed chunks by hard links (no copy).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, DatasetInfo, Features, concatenate_datasets

CHUNK_DIR = re.compile(r"^(\d{9})-(\d{9})-([0-9a-f]{16})-g(\d+)$")


@dataclass(frozen=True)
class Chunk:
    start: int
    end: int

    @property
    def rows(self) -> int:
        return self.end - self.start


@dataclass
class CommittedChunk:
    chunk: Chunk
    path: Path
    generation: int
    status: dict[str, int]
    computed: int
    computed_ok: int
    committed_at: float

    def files(self) -> list[Path]:
        return sorted(self.path.glob("data*.arrow"))

    def load(self, features: Features | None = None) -> Dataset:
        """The chunk's rows; `features` re-types columns without a rewrite (e.g. undecoded images)."""
        info = DatasetInfo(features=features) if features is not None else None
        parts = [Dataset.from_file(str(f), info=info) for f in self.files()]
        return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def plan_chunks(num_rows: int, chunk_size: int) -> list[Chunk]:
    return [Chunk(s, min(s + chunk_size, num_rows)) for s in range(0, num_rows, chunk_size)]


class ChunkStore:
    """The `chunks/` folder of one output directory, for one run fingerprint."""

    def __init__(self, output_dir: Path, fingerprint: str) -> None:
        self.root = output_dir / "chunks"
        self.fingerprint = fingerprint[:16]
        self.root.mkdir(parents=True, exist_ok=True)

    def committed(self) -> dict[Chunk, CommittedChunk]:
        """The newest committed generation of each chunk made with this fingerprint."""
        found: dict[Chunk, CommittedChunk] = {}
        for path in self.root.iterdir():
            match = CHUNK_DIR.match(path.name)
            if not match or match.group(3) != self.fingerprint or not (path / "meta.json").is_file():
                continue
            chunk = Chunk(int(match.group(1)), int(match.group(2)))
            generation = int(match.group(4))
            if chunk not in found or found[chunk].generation < generation:
                meta = json.loads((path / "meta.json").read_text())
                found[chunk] = CommittedChunk(chunk, path, generation, meta["status"], meta["computed"],
                                              meta["computed_ok"], meta["committed_at"])
        return found

    def staging_dir(self, chunk: Chunk) -> Path:
        path = self.root / f".staging-{chunk.start:09d}-{chunk.end:09d}-{socket.gethostname()}-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        return path

    def commit(self, chunk: Chunk, staging: Path, status: dict[str, int], computed: int,
               previous: CommittedChunk | None) -> Path:
        """Atomically publish a staged chunk; then drop the generation it replaces."""
        computed_ok = status.get("ok", 0) - (previous.status.get("ok", 0) if previous else 0)
        meta = {"start": chunk.start, "end": chunk.end, "status": status, "computed": computed,
                "computed_ok": computed_ok, "committed_at": time.time()}
        tmp = staging / "meta.json.tmp"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, staging / "meta.json")
        generation = previous.generation + 1 if previous else 0
        final = self.root / f"{chunk.start:09d}-{chunk.end:09d}-{self.fingerprint}-g{generation}"
        os.rename(staging, final)
        if previous:
            shutil.rmtree(previous.path, ignore_errors=True)
        return final

    def other_configs(self) -> tuple[int, int]:
        """(chunks, bytes) committed here by runs with another fingerprint: kept so that going back to
        that config reuses them, but worth knowing about on a full disk."""
        count = size = 0
        for path in self.root.iterdir():
            match = CHUNK_DIR.match(path.name)
            if match and match.group(3) != self.fingerprint:
                count += 1
                size += sum(f.stat().st_size for f in path.glob("*") if f.is_file())
        return count, size

    def clean_stale(self) -> None:
        """Remove staging folders left by crashed processes of this machine (other ranks' are live)."""
        host = socket.gethostname()
        for path in self.root.glob(f".staging-*-{host}-*"):
            pid = int(path.name.rsplit("-", 1)[1])
            if not _pid_alive(pid):
                shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def assemble(committed: list[CommittedChunk], features: Features, dest: Path, fingerprint: str) -> None:
    """Write `dest` as a `save_to_disk` folder whose shards are hard links to the chunks' files."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = [f for c in committed for f in c.files()]
    names = []
    for i, src in enumerate(files):
        name = f"data-{i:05d}-of-{len(files):05d}.arrow"
        try:
            os.link(src, tmp / name)
        except OSError:
            shutil.copyfile(src, tmp / name)
        names.append({"filename": name})
    state = {"_data_files": names, "_fingerprint": fingerprint[:16], "_format_columns": None,
             "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False, "_split": None}
    info = {"citation": "", "description": "", "features": features.to_dict(), "homepage": "", "license": ""}
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    (tmp / "dataset_info.json").write_text(json.dumps(info, indent=2))
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.rename(dest, old)
    os.rename(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
