"""`backend=chat_image`: an OpenAI-compatible chat-completions endpoint that answers with an image.

This is how nano-banana (gemini-2.5-flash-image and its successors) is reached through OpenRouter,
LiteLLM, the Vercel AI gateway or private relays. A request is the instruction plus every source
image as an `image_url` data URL, with `modalities: ["image", "text"]` and an optional
`image_config` (aspect ratio, size). Where the reply puts the image is in imgedit_ds/edit/replies.py.
A reply without an image is `refused`, with the model's text and finish reason (e.g. IMAGE_SAFETY)
in `error`; refusals are never retried.
"""

from __future__ import annotations

import base64
from typing import Any, ClassVar

import httpx2
import openai

from imgedit_ds.edit.base import OK, REFUSED, ConfigError, EditBackend, EditRequest, EditResult
from imgedit_ds.edit.http import AttemptFailed, HttpOptions, HttpRuntime, source_bytes
from imgedit_ds.edit.replies import (
    ChatReply,
    chat_reply,
    checked_format,
    image_bytes,
    read_json,
    stream_reply,
    usage_of,
)


class ChatImageBackend(EditBackend):
    """Chat completions with image output, one request per row."""

    name: ClassVar[str] = "chat_image"
    needs_decoded_images: ClassVar[bool] = False
    # Rows are limited by backend.concurrency across everything in flight, so the map may run
    # as many batches at once as it likes.
    batches_in_flight: ClassVar[int] = 1000

    def __init__(
        self,
        model: str = "",
        stream: bool = False,
        image_config: dict[str, Any] | None = None,
        extra_body: dict[str, Any] | None = None,
        send_seed: bool = True,
        **http: Any,
    ) -> None:
        """`http`: the options of `HttpOptions` (base_url, api_key_env, timeout, retries, concurrency, ...)."""
        self.model = model
        self.stream = stream
        self.image_config = dict(image_config or {})
        self.extra_body = dict(extra_body or {})
        self.send_seed = send_seed
        self.http = HttpOptions(**http)
        self._runtime: HttpRuntime | None = None

    def check(self) -> None:
        if not self.model:
            raise ConfigError("backend.model is empty: name the chat model, e.g. google/gemini-2.5-flash-image")
        if not self.http.base_url:
            raise ConfigError("backend.base_url is not set: give the chat API's URL, e.g. https://openrouter.ai/api/v1")
        self.http.check()

    def load(self, device: str) -> None:
        self._runtime = HttpRuntime(self.http, self.model)

    def unload(self) -> None:
        self._runtime = None

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_runtime": None}

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model, "base_url": self.http.shown_url, "send_seed": self.send_seed}
        if self.image_config:
            params["image_config"] = self.image_config
        if self.extra_body:
            params["extra_body"] = self.extra_body
        return params

    async def aedit(self, request: EditRequest) -> EditResult:
        if self._runtime is None:
            self.load("cpu")
        return await self._runtime.run(lambda client: self._attempt(client, request), request.id)

    def _request(self, request: EditRequest) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": request.instruction}]
        for source in request.sources:
            data, mime = source_bytes(source)
            url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
            content.append({"type": "image_url", "image_url": {"url": url}})
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "modalities": ["image", "text"],
            **({"image_config": self.image_config} if self.image_config else {}),
            **({"seed": request.seed % 2**31} if self.send_seed else {}),  # Gemini takes 32-bit seeds
            **self.extra_body,
        }
        return body

    async def _attempt(self, client: openai.AsyncOpenAI, request: EditRequest) -> EditResult:
        body = self._request(request)
        if self.stream:
            rest = {k: v for k, v in body.items() if k not in ("model", "messages")}
            streamed = client.chat.completions.with_streaming_response.create(
                model=body["model"], messages=body["messages"], stream=True, extra_body=rest
            )
            async with streamed as response:
                if "text/event-stream" in response.http_response.headers.get("content-type", ""):
                    reply = await stream_reply(response.iter_lines())
                else:  # a server that ignores stream=true answers in one piece
                    await response.read()
                    reply = chat_reply(read_json(response.http_response))
        else:
            # The SDK's generic post sends the body as built here; chat.completions.create would
            # first walk it against its typed schema, which costs more CPU than the rest of the row.
            response = await client.post("/chat/completions", body=body, cast_to=httpx2.Response)
            reply = chat_reply(read_json(response))
        return await self._result(reply)

    async def _result(self, reply: ChatReply) -> EditResult:
        url = reply.image_url()
        usage = usage_of(reply.usage, self.http.prices, images=1 if url else 0)
        if url is None:
            said = " ".join(reply.text.split())[:500] or "(no text)"
            error = f"no image in reply: finish_reason={reply.finish_reason or 'none'}; model said: {said}"
            return EditResult(status=REFUSED, error=self.http.redact(error), usage=usage)
        try:
            data = await image_bytes(url, int(self.http.max_download_mb * 2**20), self.http.timeout)
            fmt = await checked_format(data)
        except AttemptFailed as failure:
            failure.usage = usage  # a reply with a broken image is billed all the same
            raise
        return EditResult(status=OK, data=data, usage=usage, params={"image_format": fmt})
