"""Finding the edited image in a service's reply, and checking its bytes.

Chat models hand back images in several shapes; they are looked for in this order:
1. `message.images[].image_url.url` (OpenRouter, LiteLLM, most relays of Gemini image models);
2. image parts of `message.content` (`{"type": "image_url", "image_url": {"url": ...}}`);
3. a `data:image/...;base64,...` URL in the text, as a markdown image or bare;
4. an http(s) URL in the text, downloaded with a size and a time limit. No other scheme is read.
A streamed reply is the sum of its deltas (text, content parts and `delta.images`).
Returned bytes are decoded once to check them and then kept exactly as they came.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx2

from imgedit_ds.edit.http import AttemptFailed, NotAnAPI
from imgedit_ds.images import RowError, check_image_bytes

DATA_URL = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,[A-Za-z0-9+/=_-]*")
MARKDOWN_HTTP_URL = re.compile(r"!\[[^\]]*\]\((https?://[^\s)]+)\)")
BARE_HTTP_URL = re.compile(r"https?://[^\s<>\"')\]]+")
INLINE_DECODE_BYTES = 256 * 1024


@dataclass
class ChatReply:
    """The parts of a chat completion that matter here, from one reply or summed from a stream."""

    text: str = ""
    images: list[str] = field(default_factory=list)  # message.images, in order
    content_images: list[str] = field(default_factory=list)  # image parts of message.content
    finish_reason: str = ""
    usage: dict[str, Any] = field(default_factory=dict)

    def add_content(self, content: Any) -> None:
        if isinstance(content, str):
            self.text += content
            return
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                self.text += str(part.get("text") or "")
            elif part.get("type") == "image_url":
                self.content_images += _urls([part])

    def add_choice(self, choice: dict[str, Any], message: dict[str, Any]) -> None:
        self.add_content(message.get("content"))
        self.images += _urls(message.get("images"))
        # Gemini's own reason (IMAGE_SAFETY, PROHIBITED_CONTENT) says more than the mapped one.
        reason = choice.get("native_finish_reason") or choice.get("finish_reason")
        self.finish_reason = str(reason) if reason else self.finish_reason

    def image_url(self) -> str | None:
        """The first image in the order of the module docstring, or None."""
        attached = self.images + self.content_images
        if attached:
            return attached[0]
        for pattern in (DATA_URL, MARKDOWN_HTTP_URL, BARE_HTTP_URL):
            found = pattern.search(self.text)
            if found:
                return found.group(1) if pattern.groups else found.group(0)
        return None


def _urls(items: Any) -> list[str]:
    """URLs of image items shaped {"image_url": {"url": u}}, {"image_url": u} or {"url": u}."""
    urls = []
    for item in items if isinstance(items, list) else []:
        ref = item.get("image_url", item) if isinstance(item, dict) else None
        url = ref.get("url") if isinstance(ref, dict) else ref
        if isinstance(url, str):
            urls.append(url)
    return urls


def _check_error(obj: dict[str, Any]) -> None:
    """Some relays answer 200 and put the failure in the body (or in a stream's last chunk)."""
    error = obj.get("error")
    if error:
        message = error.get("message", error) if isinstance(error, dict) else error
        raise AttemptFailed("service error", str(message)[:500])


def chat_reply(obj: Any) -> ChatReply:
    """Parse a non-streamed chat completion."""
    if not isinstance(obj, dict):
        raise AttemptFailed("malformed reply", "the reply is not a JSON object")
    _check_error(obj)
    try:
        choice = obj["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise AttemptFailed("malformed reply", "no choices[0].message in the reply") from None
    reply = ChatReply(usage=obj.get("usage") or {})
    reply.add_choice(choice, message if isinstance(message, dict) else {})
    return reply


async def stream_reply(lines: AsyncIterator[str]) -> ChatReply:
    """Sum the deltas of an SSE stream; every chunk counts, not only the last."""
    reply = ChatReply()
    data: list[str] = []
    async for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].strip())
            continue
        if line.strip() or not data:  # comments (": keep-alive"), event names, blank gaps
            continue
        payload, data = "\n".join(data), []
        if payload == "[DONE]":
            break
        _add_chunk(reply, payload)
    if data and data != ["[DONE]"]:
        _add_chunk(reply, "\n".join(data))
    return reply


def _add_chunk(reply: ChatReply, payload: str) -> None:
    try:
        chunk = json.loads(payload)
    except ValueError as err:
        raise AttemptFailed("malformed reply", f"a stream chunk is not JSON ({err})") from None
    if not isinstance(chunk, dict):
        raise AttemptFailed("malformed reply", "a stream chunk is not a JSON object")
    _check_error(chunk)
    for choice in chunk.get("choices") or []:
        if isinstance(choice, dict):
            reply.add_choice(choice, choice.get("delta") or {})
    reply.usage = chunk.get("usage") or reply.usage


def read_json(response: httpx2.Response) -> Any:
    """The reply's JSON; NotAnAPI for HTML and the like, AttemptFailed for broken JSON."""
    ctype = response.headers.get("content-type", "")
    if "json" not in ctype and response.content.lstrip()[:1] != b"{":
        raise NotAnAPI(f"HTTP {response.status_code} with content-type {ctype or 'none'}")
    try:
        return json.loads(response.content)
    except ValueError as err:
        raise AttemptFailed("malformed reply", f"not valid JSON ({err})") from None


def usage_of(reported: dict[str, Any] | None, prices: dict[str, float], images: int) -> dict[str, float]:
    """Token counts of one reply, with its cost: the server's own figure, else from backend.prices."""
    reported = reported if isinstance(reported, dict) else {}
    inp = _count(reported.get("input_tokens", reported.get("prompt_tokens")))
    out = _count(reported.get("output_tokens", reported.get("completion_tokens")))
    usage: dict[str, float] = {"input_tokens": inp, "output_tokens": out}
    usage["total_tokens"] = _count(reported.get("total_tokens")) or inp + out
    if isinstance(reported.get("cost"), (int, float)):
        usage["cost_usd"] = float(reported["cost"])
    elif prices:
        usage["cost_usd"] = (
            inp * prices.get("usd_per_1m_input", 0.0) / 1e6
            + out * prices.get("usd_per_1m_output", 0.0) / 1e6
            + images * prices.get("usd_per_image", 0.0)
        )
    return usage


def _count(value: Any) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _shown(url: str) -> str:
    """A URL as it may go into a row's error: without its query, which may hold a signature."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"[:200]


def decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise AttemptFailed("invalid image", f"the base64 image does not decode ({err})") from None


async def image_bytes(url: str, max_bytes: int, timeout: float) -> bytes:
    """The bytes behind an image URL: a data URL, or an http(s) download within the limits."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if not header.endswith(";base64"):
            raise AttemptFailed("invalid image", f"a data URL that is not base64 ({header[:40]})")
        return decode_base64(payload)
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise AttemptFailed("invalid image", f"the reply links to {url[:60]!r}; only http(s) URLs are read")
    try:
        return await asyncio.wait_for(_download(url, max_bytes, timeout), timeout)
    except (httpx2.HTTPError, asyncio.TimeoutError) as err:
        raise AttemptFailed("download failed", f"{_shown(url)} ({type(err).__name__})") from None


async def _download(url: str, max_bytes: int, timeout: float) -> bytes:
    # A client of its own: the service's API key must never go to a host named in a reply.
    client = httpx2.AsyncClient(timeout=timeout, follow_redirects=True, max_redirects=3)
    async with client, client.stream("GET", url) as response:
        if response.status_code != 200:
            raise AttemptFailed("download failed", f"{_shown(url)} answered HTTP {response.status_code}")
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise AttemptFailed("download failed", f"{_shown(url)} is over backend.max_download_mb")
            chunks.append(chunk)
    return b"".join(chunks)


async def checked_format(data: bytes) -> str:
    """Decode the image fully and return its format; a broken one is a failed attempt (retried).

    Large images are decoded on a thread so the event loop keeps serving other requests; small
    ones inline, where the hop to a thread (and back through the GIL) costs more than the decode.
    """
    if not data:
        raise AttemptFailed("invalid image", "the reply's image is empty (0 bytes)")
    try:
        if len(data) < INLINE_DECODE_BYTES:
            return check_image_bytes(data)
        return await asyncio.to_thread(check_image_bytes, data)
    except RowError as err:
        raise AttemptFailed("invalid image", err.detail) from None
