"""Fixtures for the HTTP backends: the fake server on loopback, rows to edit, loaded backends."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable

import pytest
from fakes.openai_server import FakeOpenAIServer, encode, fake_edit
from PIL import Image

from imgedit_ds.edit.backends.chat_image import ChatImageBackend
from imgedit_ds.edit.backends.openai_images import OpenAIImagesBackend
from imgedit_ds.edit.base import EditBackend, EditRequest, EditResult, SourceImage

KEY_ENV = "IMGEDIT_TEST_API_KEY"
# Short waits everywhere, so that faults and retries take milliseconds.
FAST = {"retry_backoff": 0.01, "retry_backoff_max": 0.05, "timeout": 2.0, "max_retries": 2}


@pytest.fixture
def server():
    with FakeOpenAIServer(hang_s=5.0) as fake:
        yield fake


@pytest.fixture
def api_key(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, server.api_key)
    return server.api_key


def source(i: int, fmt: str = "PNG", size: tuple[int, int] = (24, 16)) -> SourceImage:
    """A small image of its own colour per index, with the bytes a reader would hand over."""
    image = Image.new("RGB", size, ((37 * i) % 256, (91 * i) % 256, (53 * i + 100) % 256))
    image.putpixel((0, 0), (255, 255, 255))
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    data = buf.getvalue()
    return SourceImage(image=Image.open(io.BytesIO(data)).convert("RGB"), data=data, format=fmt)


def request(i: int, sources: list[SourceImage] | None = None) -> EditRequest:
    return EditRequest(id=f"row-{i}", instruction=f"tint row {i}", sources=sources or [source(i)], seed=1000 + i)


def expected_png(req: EditRequest) -> bytes:
    """The bytes the fake server returns for a row edited as PNG."""
    return encode(fake_edit(req.instruction, req.sources[0].image))


def edit(backend: EditBackend, requests: list[EditRequest]) -> list[EditResult]:
    return asyncio.run(backend.aedit_batch(requests))


@pytest.fixture
def chat_image(server: FakeOpenAIServer, api_key: str) -> Callable[..., ChatImageBackend]:
    def make(**options) -> ChatImageBackend:
        config = {"model": "gemini-2.5-flash-image", "base_url": server.base_url, "api_key_env": KEY_ENV, **FAST}
        backend = ChatImageBackend(**{**config, **options})
        backend.check()
        backend.load("cpu")
        return backend

    return make


@pytest.fixture
def openai_images(server: FakeOpenAIServer, api_key: str) -> Callable[..., OpenAIImagesBackend]:
    def make(**options) -> OpenAIImagesBackend:
        config = {"base_url": server.base_url, "api_key_env": KEY_ENV, **FAST}
        backend = OpenAIImagesBackend(**{**config, **options})
        backend.check()
        backend.load("cpu")
        return backend

    return make


# Test files reach the helpers above through these fixtures (conftest is not imported by name).
@pytest.fixture
def make_source() -> Callable[..., SourceImage]:
    return source


@pytest.fixture
def make_request() -> Callable[..., EditRequest]:
    return request


@pytest.fixture
def png_of() -> Callable[[EditRequest], bytes]:
    return expected_png


@pytest.fixture
def run_edit() -> Callable[[EditBackend, list[EditRequest]], list[EditResult]]:
    return edit
