"""`backend=openai_images`: the OpenAI Images edit endpoint (gpt-image-1 family) through the openai SDK.

Every source image of a row is sent as it came (PNG, JPEG or WebP; anything else as PNG).
`backend.base_url` points it at any server that speaks the same endpoint. Retries, limits and
fatal errors follow imgedit_ds/edit/http.py; the SDK's own retries are off so that there is one
policy, with one count of attempts per row.
"""

from __future__ import annotations

from typing import Any, ClassVar

import openai

from imgedit_ds.edit.base import OK, ConfigError, EditBackend, EditRequest, EditResult
from imgedit_ds.edit.http import AttemptFailed, HttpOptions, HttpRuntime, source_bytes
from imgedit_ds.edit.replies import checked_format, decode_base64, image_bytes, read_json, usage_of

OUTPUT_FORMATS = ("png", "jpeg", "webp")


class OpenAIImagesBackend(EditBackend):
    """images.edit of the OpenAI API or a compatible server."""

    name: ClassVar[str] = "openai_images"
    needs_decoded_images: ClassVar[bool] = False
    # Rows are limited by backend.concurrency across everything in flight, so the map may run
    # as many batches at once as it likes.
    batches_in_flight: ClassVar[int] = 1000

    def __init__(
        self,
        model: str = "gpt-image-1",
        size: str | None = None,
        quality: str | None = None,
        input_fidelity: str | None = None,
        output_format: str | None = None,
        background: str | None = None,
        **http: Any,
    ) -> None:
        """`http`: the options of `HttpOptions` (base_url, api_key_env, timeout, retries, concurrency, ...)."""
        self.model = model
        self.options = {
            "size": size,
            "quality": quality,
            "input_fidelity": input_fidelity,
            "output_format": output_format,
            "background": background,
        }
        self.http = HttpOptions(**{"concurrency": 8, **http})  # image edits are slow and costly: fewer at once
        self._runtime: HttpRuntime | None = None

    def check(self) -> None:
        self.http.check()
        fmt = self.options["output_format"]
        if fmt is not None and fmt not in OUTPUT_FORMATS:
            raise ConfigError(f"backend.output_format={fmt!r}: use one of {', '.join(OUTPUT_FORMATS)}")

    def load(self, device: str) -> None:
        self._runtime = HttpRuntime(self.http, self.model)

    def unload(self) -> None:
        self._runtime = None

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_runtime": None}

    def params(self) -> dict[str, Any]:
        chosen = {k: v for k, v in self.options.items() if v is not None}
        return {"model": self.model, "base_url": self.http.shown_url, **chosen}

    async def aedit(self, request: EditRequest) -> EditResult:
        if self._runtime is None:
            self.load("cpu")
        return await self._runtime.run(lambda client: self._attempt(client, request), request.id)

    async def _attempt(self, client: openai.AsyncOpenAI, request: EditRequest) -> EditResult:
        files = []
        for i, source in enumerate(request.sources):
            data, mime = source_bytes(source)
            files.append((f"image_{i}.{mime.split('/')[1]}", data, mime))
        chosen = {k: v for k, v in self.options.items() if v is not None}
        raw = await client.images.with_raw_response.edit(
            image=files, prompt=request.instruction, model=self.model, **chosen
        )
        body = read_json(raw.http_response)
        usage = usage_of(body.get("usage") if isinstance(body, dict) else None, self.http.prices, images=1)
        try:
            item = _first_image(body)
            if item.get("b64_json") is not None:
                data = decode_base64(item["b64_json"])
            else:
                data = await image_bytes(item["url"], int(self.http.max_download_mb * 2**20), self.http.timeout)
            fmt = await checked_format(data)
        except AttemptFailed as failure:
            failure.usage = usage  # a reply with a broken image is billed all the same
            raise
        return EditResult(status=OK, data=data, usage=usage, params={"image_format": fmt})


def _first_image(body: Any) -> dict[str, Any]:
    try:
        item = body["data"][0]
    except (KeyError, IndexError, TypeError):
        raise AttemptFailed("malformed reply", "no data[0] in the reply") from None
    if not isinstance(item, dict) or (item.get("b64_json") is None and not isinstance(item.get("url"), str)):
        raise AttemptFailed("malformed reply", "data[0] has neither b64_json nor url")
    return item
