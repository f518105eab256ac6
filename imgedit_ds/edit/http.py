"""What the HTTP backends share: options, retries, rate and concurrency limits, errors, cost.

One policy for every service, in one place (the SDK's own retries are off):
- a row's request is retried with exponential backoff and jitter on 408/409/429/5xx, timeouts,
  connection errors and replies that are malformed or carry a broken image, waiting at least
  what `Retry-After` asks;
- refusals (moderation) and other 4xx fail or refuse the row at once;
- 401/402/403, an unknown model (404) or a base URL that is not an API stop the run at the first
  such reply, so at most the first window of `concurrency` requests goes out (none is billed);
- `concurrency` requests are in flight at once across everything this process runs, on any event
  loop (a sliding window, not batch by batch); `requests_per_minute` spaces their starts.
"""

from __future__ import annotations

import asyncio
import email.utils
import heapq
import itertools
import logging
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import NoReturn
from urllib.parse import urlsplit

import httpx2
import openai

from imgedit_ds.edit.base import CHUNK_ORDER, REFUSED, ConfigError, EditResult, FatalBackendError, SourceImage
from imgedit_ds.images import ImageEncoder
from imgedit_ds.options import check_fields

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 429}
# OpenRouter and some relays answer an unknown model with 400 and words only.
UNKNOWN_MODEL = re.compile(r"not a valid model|model \S+ (?:does not exist|not found)", re.IGNORECASE)
MAX_RETRY_AFTER_S = 300.0  # a Retry-After beyond this is more likely a broken header than a plan
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
PRICE_KEYS = ("usd_per_1m_input", "usd_per_1m_output", "usd_per_image")


class AttemptFailed(Exception):
    """One attempt went wrong in a way another attempt may not: retried while retries are left."""

    def __init__(self, cause: str, detail: str = "", retry_after: float | None = None, usage: dict | None = None):
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause, self.detail, self.retry_after, self.usage = cause, detail, retry_after, usage or {}


class NotAnAPI(Exception):
    """The server answered, but not in JSON: a web page, or a proxy's error page."""


@dataclass
class HttpOptions:
    """The options every HTTP backend takes (backend.<name> in the config)."""

    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 300.0
    max_retries: int = 5
    retry_backoff: float = 1.0
    retry_backoff_max: float = 60.0
    concurrency: int = 16
    requests_per_minute: float | None = None
    prices: dict[str, float] = field(default_factory=dict)
    max_download_mb: float = 50.0

    def __post_init__(self) -> None:
        self.prices = dict(self.prices or {})  # `backend.prices=null` means no prices

    def check(self) -> None:
        """Raise ConfigError naming the option that cannot work."""
        check_fields(self, "backend")
        if not self.api_key_env or not os.environ.get(self.api_key_env):
            raise ConfigError(
                f"the environment variable {self.api_key_env or '(empty name)'} holding the API key is not set: "
                f"export it, or set backend.api_key_env to the variable that holds your key"
            )
        if self.base_url is not None and urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ConfigError(f"backend.base_url={self.base_url!r}: give an http(s) URL, e.g. https://host/v1")
        positive = {"timeout": self.timeout, "concurrency": self.concurrency, "max_download_mb": self.max_download_mb}
        if self.requests_per_minute is not None:
            positive["requests_per_minute"] = self.requests_per_minute
        for name, value in positive.items():
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"backend.{name}={value!r}: use a number above 0")
        for name in ("max_retries", "retry_backoff", "retry_backoff_max"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) < 0:
                raise ConfigError(f"backend.{name}={getattr(self, name)!r}: use a number of 0 or more")
        unknown = sorted(set(self.prices) - set(PRICE_KEYS))
        if unknown:
            raise ConfigError(f"backend.prices has unknown keys {unknown}: use {', '.join(PRICE_KEYS)} (USD)")
        if any(not isinstance(v, (int, float)) or v < 0 for v in self.prices.values()):
            raise ConfigError(f"backend.prices={self.prices}: prices are numbers of 0 or more (USD)")

    @property
    def shown_url(self) -> str:
        """The base URL as it may be printed: no user, password or query."""
        parts = urlsplit(self.base_url or "https://api.openai.com/v1")
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"

    def api_key(self) -> str:
        return os.environ.get(self.api_key_env, "")

    def redact(self, text: str) -> str:
        """Remove the key from text that came from elsewhere (server messages, exceptions)."""
        key = self.api_key()
        return text.replace(key, "***") if key else text

    def open_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=self.api_key(),
            base_url=self.base_url,
            timeout=httpx2.Timeout(self.timeout, connect=min(self.timeout, 15.0)),
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(
                limits=httpx2.Limits(max_connections=None, max_keepalive_connections=int(self.concurrency))
            ),
        )


def source_bytes(source: SourceImage) -> tuple[bytes, str]:
    """The bytes to send for a source image and their MIME type: as they came where services take them."""
    if source.data and source.format.upper() in MIME_TYPES:
        return source.data, MIME_TYPES[source.format.upper()]
    return ImageEncoder("png").encode(source.image), MIME_TYPES["PNG"]


def add_usage(total: dict[str, float], more: dict[str, float]) -> dict[str, float]:
    return {k: total.get(k, 0) + more.get(k, 0) for k in {**total, **more}}


def retry_after(headers: httpx2.Headers) -> float | None:
    """Seconds the server asks to wait: retry-after-ms, or Retry-After in seconds or as a date."""
    if headers.get("retry-after-ms"):
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if email.utils.parsedate_tz(value) else None
        return max(0.0, when.timestamp() - time.time()) if when else None


class RateLimiter:
    """Spaces request starts evenly, so no more than `per_minute` start in any minute."""

    def __init__(self, per_minute: float) -> None:
        self._interval = 60.0 / per_minute
        self._next = 0.0
        self._lock = threading.Lock()  # reservations may come from loops on other threads

    async def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            await asyncio.sleep(start - now)


class SharedLimit:
    """At most `limit` holders at once across every event loop of the process, earliest chunk first.

    For an HTTP backend the runner keeps two chunks in progress on two threads (each `datasets.map`
    call has a loop of its own). Waiters are served by chunk position (`CHUNK_ORDER`), then in
    arrival order: the later chunk only gets the slots the earlier one cannot fill while it waits for
    its last replies, so the window stays full across chunk boundaries.
    """

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._lock = threading.Lock()
        self._waiters: list[tuple[int, int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            future: asyncio.Future[None] = loop.create_future()
            entry = (CHUNK_ORDER.get(), next(self._arrivals), loop, future)
            heapq.heappush(self._waiters, entry)
        try:
            await future
        except asyncio.CancelledError:
            with self._lock:
                waiting = entry in self._waiters
                if waiting:
                    self._waiters.remove(entry)
                    heapq.heapify(self._waiters)
            if not waiting and future.done() and not future.cancelled():
                self.release()  # handed a slot just as the task was cancelled: pass it on
            raise  # (a handover still on its way sees the cancelled future and passes the slot on)

    def release(self) -> None:
        with self._lock:
            while self._waiters:
                _, _, loop, future = heapq.heappop(self._waiters)
                if not loop.is_closed():
                    loop.call_soon_threadsafe(_hand_over, future, self)
                    return
            self._free += 1

    @asynccontextmanager
    async def slot(self):
        await self.acquire()
        try:
            yield
        finally:
            self.release()


def _hand_over(future: asyncio.Future[None], limit: SharedLimit) -> None:
    if future.cancelled():
        limit.release()
    else:
        future.set_result(None)


@dataclass
class _LoopState:
    """What belongs to one event loop: a connection pool must not cross loops."""

    client: openai.AsyncOpenAI | None = None
    active: int = 0


class HttpRuntime:
    """Runs each row's attempts under the shared limits and the one retry policy."""

    def __init__(self, options: HttpOptions, model: str) -> None:
        httpx_logger = logging.getLogger("httpx2")
        if httpx_logger.level == logging.NOTSET:  # one INFO line per request would bury the run's own log
            httpx_logger.setLevel(logging.WARNING)
        self.options = options
        self.model = model
        self.reachable = False  # set by the first JSON reply; until then a bad base URL is fatal
        self._fatal: FatalBackendError | None = None
        self._limit = SharedLimit(int(options.concurrency))
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()
        rpm = options.requests_per_minute
        self._limiter = RateLimiter(rpm) if rpm else None

    async def run(self, attempt: Callable[[openai.AsyncOpenAI], Awaitable[EditResult]], row: str) -> EditResult:
        """Call `attempt(client)` until it gives a result or the retries are spent."""
        usage: dict[str, float] = {}
        attempts = 0
        while True:
            if self._fatal is not None:
                raise self._fatal
            attempts += 1
            try:
                try:
                    async with self._client() as client:
                        result = await asyncio.wait_for(attempt(client), self.options.timeout)
                    self.reachable = True
                    result.usage = {**add_usage(usage, result.usage), "requests": attempts}
                    return result
                except (openai.APIError, NotAnAPI, asyncio.TimeoutError) as err:
                    result = self._classify(err)
                    result.usage = {**usage, "requests": attempts}
                    return result
            except AttemptFailed as failure:
                usage = add_usage(usage, failure.usage)
                if attempts > self.options.max_retries:
                    result = EditResult.failed(failure.cause, f"{failure.detail} (gave up after {attempts} attempts)")
                    result.usage = {**usage, "requests": attempts}
                    return result
                delay = self._backoff(attempts, failure.retry_after)
                logger.debug("row %s: %s; retry %d in %.2fs", row, failure, attempts, delay)
                await asyncio.sleep(delay)

    def _backoff(self, attempts: int, hinted: float | None) -> float:
        """Exponential backoff with equal jitter; never shorter than the server's own hint."""
        step = min(self.options.retry_backoff_max, self.options.retry_backoff * 2 ** (attempts - 1))
        hinted = min(hinted or 0.0, MAX_RETRY_AFTER_S)
        return max(hinted, step / 2 + random.uniform(0, step / 2))

    @asynccontextmanager
    async def _client(self):
        """One concurrency slot and the loop's client; the client closes when its loop goes idle."""
        state = self._states.setdefault(asyncio.get_running_loop(), _LoopState())
        async with self._limit.slot():
            if self._limiter is not None:
                await self._limiter.wait()
            if self._fatal is not None:  # stopped while this row waited for its slot
                raise self._fatal
            if state.client is None:
                state.client = self.options.open_client()
            client = state.client
            state.active += 1
            try:
                yield client
            finally:
                state.active -= 1
                if state.active == 0 and state.client is client:
                    state.client = None
                    await client.close()

    def _classify(self, err: Exception) -> EditResult:
        """Turn a failed request into a result, a retry (AttemptFailed) or the end of the run."""
        opts, url = self.options, self.options.shown_url
        if isinstance(err, (asyncio.TimeoutError, openai.APITimeoutError)):
            raise AttemptFailed("timeout", f"no complete reply within backend.timeout={opts.timeout}s")
        if isinstance(err, NotAnAPI):
            if not self.reachable:
                self._stop(
                    f"backend.base_url={url} answered {err}, not as an OpenAI-compatible API: "
                    f"check the URL (it usually ends in /v1)"
                )
            raise AttemptFailed("malformed reply", str(err))
        if isinstance(err, openai.APIConnectionError):
            cause = opts.redact(f"{type(err.__cause__ or err).__name__}: {err.__cause__ or err}")
            if not self.reachable and isinstance(err.__cause__, httpx2.ConnectError):
                self._stop(f"cannot connect to backend.base_url={url} ({cause}): check the URL and the server")
            raise AttemptFailed("connection error", cause)
        if not isinstance(err, openai.APIStatusError):
            raise AttemptFailed("malformed reply", opts.redact(str(err)))
        return self._classify_status(err)

    def _classify_status(self, err: openai.APIStatusError) -> EditResult:
        status, body = err.status_code, err.body if isinstance(err.body, dict) else {}
        code = str(body.get("code") or "")
        message = self.options.redact(str(body.get("message") or err.message))[:500]
        self.reachable = self.reachable or "json" in err.response.headers.get("content-type", "")
        metadata = body.get("metadata")
        # OpenRouter answers 403 with metadata.reasons when a moderated model's input was flagged.
        flagged = status == 403 and (
            "flagged" in message.lower() or (isinstance(metadata, dict) and "reasons" in metadata)
        )
        if code == "moderation_blocked" or flagged:
            return EditResult(status=REFUSED, error=f"{code or 'flagged'}: {message}")
        env, url = self.options.api_key_env, self.options.shown_url
        if status in (401, 403):
            # The server's own text may quote part of the key, so it is left out here.
            self._stop(
                f"{url} rejected the API key in ${env} (HTTP {status}): set a valid key in {env} "
                f"or point backend.api_key_env at the variable that holds one"
            )
        if status == 402:
            self._stop(f"{url} answered HTTP 402 (payment required): {message}")
        if status in (404, 405) or code == "model_not_found" or (status == 400 and UNKNOWN_MODEL.search(message)):
            self._stop(
                f"{url} answered HTTP {status}: backend.model={self.model!r} is unknown there, or "
                f"backend.base_url is wrong (it usually ends in /v1). Server said: {message}"
            )
        if status in RETRYABLE_STATUS or status >= 500:
            raise AttemptFailed(f"HTTP {status}", message, retry_after(err.response.headers))
        return EditResult.failed(f"HTTP {status}", message)

    def _stop(self, message: str) -> NoReturn:
        """Stop the run: this request and every later one raise the same error."""
        if self._fatal is None:
            logger.error("stopping the run: %s", message)
            self._fatal = FatalBackendError(message)
        raise self._fatal
