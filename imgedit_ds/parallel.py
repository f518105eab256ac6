"""Running the chunks of a job: in this process, in one spawned process per GPU (`run.num_proc`), or
as one rank of an `accelerate launch` / `torchrun` job spread over machines.

Chunks are split between ranks by position (a contiguous block each), never by what is left to
do, so every process agrees on who owns a chunk however far an earlier run got.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import datasets
from datasets import Dataset
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from imgedit_ds.edit.base import CHUNK_ORDER, FatalBackendError
from imgedit_ds.edit.map_fn import EditFunction
from imgedit_ds.pipeline import Job, chunks_to_do, edit_chunk, rank_share
from imgedit_ds.write.chunks import Chunk, ChunkStore, CommittedChunk

logger = logging.getLogger(__name__)


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment; (0, 1) when not launched."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _local_device(job: Job) -> str | None:
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is None or not job.backend.uses_gpu:
        return None
    from imgedit_ds.edit.map_fn import pick_device

    return pick_device(int(local_rank))


def edit_chunks(job: Job, ds: Dataset, store: ChunkStore, chunks: list[Chunk], rank: int, world_size: int) -> int:
    """Edit this process's share of the chunks; return the rows computed here."""
    if world_size > 1:
        if job.settings.num_proc > 1:
            from imgedit_ds.edit.base import ConfigError

            raise ConfigError("run.num_proc must be 1 under accelerate launch/torchrun: "
                              "the launcher starts the processes")
        computed = _edit_here(job, ds, store, rank_share(chunks, rank, world_size), _local_device(job), rank == 0)
        if rank == 0:
            _wait_for_all(store, chunks)
        return computed
    if job.settings.num_proc > 1:
        return _edit_in_workers(job, ds, store, chunks)
    return _edit_here(job, ds, store, chunks, None, True)


def _edit_here(job: Job, ds: Dataset, store: ChunkStore, chunks: list[Chunk], device: str | None,
               show_progress: bool) -> int:
    committed = store.committed()
    todo = chunks_to_do(chunks, committed, job.settings.retry_failed)
    edit = job.edit_function(device=device)
    if todo:
        edit.load()  # a model that cannot load stops the run here, before the progress bar starts
    bar = tqdm(total=sum(c.rows for c in todo), unit="row", desc=f"Editing with {job.backend.name}",
               disable=not show_progress or not todo, dynamic_ncols=True)
    edit.on_rows_done = bar.update
    try:
        return edit_in_order(job, ds, store, todo, committed, edit)
    finally:
        bar.close()


def edit_in_order(job: Job, ds: Dataset, store: ChunkStore, todo: list[Chunk],
                  committed: dict[Chunk, CommittedChunk], edit: EditFunction) -> int:
    """Edit chunks one after the other; for service backends, two at a time.

    A chunk of HTTP requests ends waiting for its slowest replies with most of the request window
    idle. With the next chunk already in progress (on a thread of its own, served only with the slots
    the earlier chunk leaves free), the window stays full.
    """
    if not job.backend.is_async or len(todo) < 2:
        return sum(edit_chunk(job, ds, chunk, store, edit, committed.get(chunk)) for chunk in todo)

    def edit_one(chunk: Chunk) -> int:
        CHUNK_ORDER.set(chunk.start)
        return edit_chunk(job, ds, chunk, store, edit, committed.get(chunk))

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="imgedit-chunk") as pool:
        return sum(pool.map(edit_one, todo))


def _wait_for_all(store: ChunkStore, chunks: list[Chunk]) -> None:
    """Rank 0 assembles only when every rank has committed its chunks."""
    last_log = time.monotonic()
    while missing := [c for c in chunks if c not in store.committed()]:
        if time.monotonic() - last_log > 60:
            logger.info("Waiting for other ranks: %d chunks not committed yet (first: rows %d-%d)",
                        len(missing), missing[0].start, missing[0].end)
            last_log = time.monotonic()
        time.sleep(1.0)


def _worker(config: dict[str, Any], max_pixels: int, ds: Dataset, store: ChunkStore, chunks: list[Chunk],
            rank: int, messages: Any) -> None:
    """One spawned process: load the backend once on its GPU, edit its chunks, report progress."""
    logging.basicConfig(level=logging.WARNING)
    datasets.disable_progress_bars()
    try:
        job = Job.from_config(OmegaConf.create(config), with_reader=False)
        from imgedit_ds.edit.map_fn import pick_device

        device = pick_device(rank) if job.backend.uses_gpu else "cpu"
        edit = job.edit_function(device=device, max_pixels=max_pixels,
                                 on_rows_done=lambda n: messages.put(("rows", rank, n)))
        committed = store.committed()
        todo = chunks_to_do(chunks, committed, job.settings.retry_failed)
        messages.put(("done", rank, edit_in_order(job, ds, store, todo, committed, edit)))
    except BaseException as err:  # the parent reports it and stops the other workers
        messages.put(("error", rank, f"{type(err).__name__}: {err}"))
        raise SystemExit(1) from None


def _edit_in_workers(job: Job, ds: Dataset, store: ChunkStore, chunks: list[Chunk]) -> int:
    num_proc = min(job.settings.num_proc, len(chunks))
    todo = chunks_to_do(chunks, store.committed(), job.settings.retry_failed)
    context = mp.get_context("spawn")  # CUDA cannot be used in forked children
    messages = context.Queue()
    config = OmegaConf.to_container(job.cfg, resolve=True)
    max_pixels = job.reader.max_pixels if job.reader else 0
    workers = [
        context.Process(target=_worker, name=f"imgedit-ds-rank{rank}",
                        args=(config, max_pixels, ds, store, rank_share(chunks, rank, num_proc), rank, messages))
        for rank in range(num_proc)
    ]
    for worker in workers:
        worker.start()
    bar = tqdm(total=sum(c.rows for c in todo), unit="row", desc=f"Editing with {job.backend.name} x{num_proc}",
               disable=not todo, dynamic_ncols=True)
    computed, finished = 0, set()
    try:
        while len(finished) < num_proc:
            try:
                kind, rank, value = messages.get(timeout=1.0)
            except queue.Empty:
                dead = [w for i, w in enumerate(workers) if i not in finished and w.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"worker {dead[0].name} died (exit code {dead[0].exitcode}); "
                                       "rerun the same command to resume from the committed chunks") from None
                continue
            if kind == "rows":
                bar.update(value)
            elif kind == "done":
                finished.add(rank)
                computed += value
            else:
                raise FatalBackendError(f"worker rank {rank} stopped: {value}") from None
    finally:
        bar.close()
        for worker in workers:
            if worker.is_alive() and len(finished) < num_proc:
                worker.terminate()
            worker.join()
    return computed
