"""The one interface every editing backend implements.

A backend is cheap to construct (it only keeps its options), checks its options in `check()`
before anything heavy happens, loads its model or client in `load(device)`, and edits a batch of
rows in `edit_batch` (local models) or `aedit` (one row at a time, async, for HTTP services).
`unload()` drops the heavy state so the object can be pickled into worker processes.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar

from PIL import Image

OK, FAILED, REFUSED, UNSUPPORTED = "ok", "failed", "refused", "unsupported"

# The first row of the chunk being edited, set by the runner. When two chunks are in progress at once,
# a service backend gives its free request slots to the earlier chunk first.
CHUNK_ORDER: ContextVar[int] = ContextVar("imgedit_chunk_order", default=0)
STATUSES = (OK, FAILED, REFUSED, UNSUPPORTED)


class ConfigError(ValueError):
    """A configuration the run cannot start with; the message says which option to change."""


class FatalBackendError(RuntimeError):
    """An error that every further row would hit too (bad key, unknown model): stop the run."""


@dataclass
class SourceImage:
    """One decoded source image (None for backends that only take bytes) and its stored bytes."""

    image: Image.Image | None
    data: bytes
    format: str


@dataclass
class EditRequest:
    """One row to edit: its id, instruction, decoded source images (RGB) and seed."""

    id: str
    instruction: str
    sources: list[SourceImage]
    seed: int

    @property
    def images(self) -> list[Image.Image]:
        return [s.image for s in self.sources]


@dataclass
class EditResult:
    """What a backend made of one row.

    Give `image` (a PIL image, encoded by the pipeline) or `data` (already encoded bytes, stored as
    they came). `error` reads "cause: detail"; the cause is what the run report counts.
    `params` holds per-row generation parameters merged into the row's `params` column;
    `usage` holds token counts and cost where a service reports them.
    """

    status: str
    image: Image.Image | None = None
    data: bytes | None = None
    error: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failed(cls, cause: str, detail: str = "") -> EditResult:
        return cls(status=FAILED, error=f"{cause}: {detail}" if detail else cause)


class EditBackend:
    """Base class of all backends; subclasses override `edit_batch` or `aedit`.

    Class attributes:
        name: the backend's config name, written into every row's `backend` column.
        needs_decoded_images: False for services that take the source bytes as they are.
        batches_in_flight: how many map batches may be in progress at once in one process
            (local models: one on the device, one decoding, one encoding).
        uses_gpu: True for backends that run a model on this machine's accelerator; the others
            are given "cpu" and never import torch.
    """

    name: ClassVar[str] = "base"
    uses_gpu: ClassVar[bool] = False
    needs_decoded_images: ClassVar[bool] = True
    batches_in_flight: ClassVar[int] = 3

    model: str = ""

    def check(self) -> None:
        """Validate options before any model loads; raise ConfigError naming the option."""

    def load(self, device: str) -> None:
        """Load the model or client onto `device` ("cpu", "cuda:0", ...); called once per process."""

    def unload(self) -> None:
        """Drop heavy state; the object must stay picklable and loadable again."""

    def params(self) -> dict[str, Any]:
        """Generation parameters that change the output; stored per row and fingerprinted."""
        return {}

    def edit_batch(self, requests: list[EditRequest]) -> list[EditResult]:
        """Edit a batch synchronously; return exactly one result per request, in order."""
        raise NotImplementedError(f"{type(self).__name__} implements neither edit_batch nor aedit")

    async def aedit(self, request: EditRequest) -> EditResult:
        """Edit one row asynchronously (HTTP backends override this)."""
        raise NotImplementedError

    @property
    def is_async(self) -> bool:
        return type(self).aedit is not EditBackend.aedit

    async def aedit_batch(self, requests: list[EditRequest]) -> list[EditResult]:
        """Run a batch without blocking the event loop.

        Async backends run their rows concurrently; synchronous ones run on one dedicated thread,
        so the device sees one batch at a time while other batches decode and encode.
        """
        if self.is_async:
            return list(await asyncio.gather(*(self._guarded_aedit(r) for r in requests)))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._device_thread(), self.edit_batch, requests)

    async def _guarded_aedit(self, request: EditRequest) -> EditResult:
        try:
            return await self.aedit(request)
        except FatalBackendError:
            raise
        except Exception as err:  # one bad row fails alone
            return EditResult.failed("backend error", f"{type(err).__name__}: {err}")

    def _device_thread(self) -> ThreadPoolExecutor:
        pool = self.__dict__.get("_device_pool")
        if pool is None:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-device")
            self.__dict__["_device_pool"] = pool
        return pool

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_device_pool", None)
        return state
