"""The edit step as a `datasets.map` function.

    edit = EditFunction(backend, seed=0)
    ds.map(edit.edit_batch, batched=True, with_rank=True, batch_size=8,
           features=output_features(ds.features))

(`edit_batch` is a bound async method: datasets recognises it as a coroutine function, which it
would not for an object with an async `__call__`.)

Input columns: `id`, `source_images` (list of {bytes, path}: paths are read here), `instruction`;
and, when the runner retries a committed chunk, `status` and `_input_source_images`: rows already
`ok`, `refused` or `unsupported` pass through untouched, `failed` rows are tried again with their
sources read from `_input_source_images` (a failed row may have no readable source bytes to keep).
Output columns: `source_images` (bytes embedded), `edited_image`, `status`, `error`, `seed`,
`backend`, `model`, `params`, `usage`.

The function is async: `datasets.map` keeps several batches in progress, so one batch decodes its
sources and another encodes its results (on a thread pool) while the backend works on a third.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from imgedit_ds.edit.base import FAILED, OK, EditBackend, EditRequest, EditResult, FatalBackendError
from imgedit_ds.images import DEFAULT_MAX_PIXELS, ImageEncoder, RowError, load_source
from imgedit_ds.schema import OUTPUT_COLUMNS, row_seed

logger = logging.getLogger(__name__)

KEEP_STATUSES = ("ok", "refused", "unsupported")
RETRY_SOURCES = "_input_source_images"


def pick_device(rank: int | None) -> str:
    """cuda:{rank} when this process has a rank and GPUs exist; else cuda, else cpu."""
    try:
        import torch
    except ImportError:
        return "cpu"
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{(rank or 0) % torch.cuda.device_count()}"


class EditFunction:
    """Edits a batch of rows with one backend, loaded lazily once per process."""

    def __init__(
        self,
        backend: EditBackend,
        seed: int = 0,
        encoder: ImageEncoder | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        device: str | None = None,
        on_rows_done: Callable[[int], None] | None = None,
    ) -> None:
        self.backend = backend
        self.seed = seed
        self.encoder = encoder or ImageEncoder()
        self.max_pixels = max_pixels
        self.device = device
        self.on_rows_done = on_rows_done
        self._loaded = False
        self._load_lock = threading.Lock()  # the runner may edit two chunks at once on two threads
        self._pool: ThreadPoolExecutor | None = None
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_loaded=False, _pool=None, _slots=None, on_rows_done=None, _load_lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _load_lock=threading.Lock(), _slots=weakref.WeakKeyDictionary())

    def load(self, rank: int | None = None) -> None:
        with self._load_lock:
            self._load_once(rank)

    def _load_once(self, rank: int | None) -> None:
        if not self._loaded:
            device = self.device or (pick_device(rank) if self.backend.uses_gpu else "cpu")
            log = logger.info if self.backend.uses_gpu else logger.debug
            log("Loading backend %s (%s) on %s", self.backend.name, self.backend.model, device)
            self.backend.load(device)
            self._pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="imgedit-io")
            self._loaded = True

    def _semaphore(self) -> asyncio.Semaphore:
        """Batches in progress on this event loop (each `datasets.map` call runs a loop of its own)."""
        loop = asyncio.get_running_loop()
        return self._slots.setdefault(loop, asyncio.Semaphore(self.backend.batches_in_flight))

    async def _in_pool(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def edit_batch(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        self.load(rank)
        # datasets formats a batch lazily and not thread-safely: read every column here, once.
        ids = [str(x) for x in batch["id"]]
        instructions = list(batch["instruction"])
        refs = list(batch["source_images"])
        n = len(ids)
        # Only the runner's own retries keep finished rows; an input that merely has a `status` column
        # (a finished dataset fed back in) is edited afresh.
        retry = RETRY_SOURCES in batch
        statuses = list(batch["status"]) if retry else [None] * n
        out = {column: list(batch[column]) if column in batch else [None] * n for column in OUTPUT_COLUMNS}
        out["source_images"] = refs
        todo = [i for i in range(n) if statuses[i] not in KEEP_STATUSES]
        inputs = list(batch[RETRY_SOURCES]) if RETRY_SOURCES in batch else refs
        async with self._semaphore():
            rows = await asyncio.gather(
                *(self._in_pool(self._prepare_row, ids[i], instructions[i], inputs[i]) for i in todo))
            results = await self._edit([r for r in rows if isinstance(r, EditRequest)])
            encoded = await asyncio.gather(*(self._in_pool(self._finish_row, r, results) for r in rows))
        for i, (sources, result, image_bytes) in zip(todo, encoded):
            self._write_row(out, i, ids[i], inputs[i] or [], sources, result, image_bytes)
        if self.on_rows_done:
            self.on_rows_done(n)
        return out

    def _prepare_row(self, row_id: str, instruction: str | None, refs: list[dict] | None) -> EditRequest | EditResult:
        instruction = (instruction or "").strip()
        try:
            if not refs:
                raise RowError("missing image", "the row has no source image")
            sources = [load_source(ref, self.max_pixels) for ref in refs]
        except RowError as err:
            return EditResult.failed(err.cause, err.detail)
        for source in sources:
            source.data = self.encoder.source_bytes(source)
            if not self.backend.needs_decoded_images:
                source.image = None  # services get the bytes; a chunk's decoded pixels need not wait in memory
        request = EditRequest(id=row_id, instruction=instruction, sources=sources,
                              seed=row_seed(self.seed, row_id))
        if not instruction:
            return EditResult(status=FAILED, error="empty instruction: the row has no instruction text",
                              params={"_sources": sources})
        return request

    async def _edit(self, requests: list[EditRequest]) -> dict[int, EditResult]:
        """Results keyed by id(request); a batch that raises is retried row by row to isolate the bad row."""
        if not requests:
            return {}
        try:
            results = await self.backend.aedit_batch(requests)
        except FatalBackendError:
            raise
        except Exception as err:
            if len(requests) == 1:
                return {id(requests[0]): EditResult.failed("backend error", f"{type(err).__name__}: {err}")}
            logger.warning("A batch of %d failed (%s); retrying its rows one by one", len(requests), err)
            merged: dict[int, EditResult] = {}
            for request in requests:
                merged.update(await self._edit([request]))
            return merged
        if len(results) != len(requests):
            raise RuntimeError(
                f"backend {self.backend.name} returned {len(results)} results for {len(requests)} rows"
            )
        return {id(req): res for req, res in zip(requests, results)}

    def _finish_row(
        self, row: EditRequest | EditResult, results: dict[int, EditResult]
    ) -> tuple[list[Any], EditResult, bytes | None]:
        if isinstance(row, EditResult):
            sources = row.params.pop("_sources", [])
            return sources, row, None
        result = results[id(row)]
        image_bytes = None
        if result.status == OK:
            try:
                image_bytes = result.data if result.data is not None else self.encoder.encode(result.image)
            except Exception as err:
                result = EditResult.failed("encoding failed", f"{type(err).__name__}: {err}")
        return row.sources, result, image_bytes

    def _write_row(self, out: dict[str, list], i: int, row_id: str, refs: list[dict], sources: list[Any],
                   result: EditResult, image_bytes: bytes | None) -> None:
        names = [os.path.basename(r.get("path") or "") or None for r in refs]
        out["source_images"][i] = [{"bytes": s.data, "path": name} for s, name in zip(sources, names)]
        ok = result.status == OK and image_bytes is not None
        out["edited_image"][i] = {"bytes": image_bytes, "path": None} if ok else None
        out["status"][i] = result.status
        out["error"][i] = "" if ok else (result.error or result.status)
        out["seed"][i] = row_seed(self.seed, row_id)
        out["backend"][i] = self.backend.name
        out["model"][i] = self.backend.model
        out["params"][i] = json.dumps({**self.backend.params(), **result.params}, sort_keys=True, default=str)
        out["usage"][i] = json.dumps(result.usage, sort_keys=True, default=str)
