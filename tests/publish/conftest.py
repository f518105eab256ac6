"""Fixtures for publishing tests: an OUTPUT folder built by hand and a fake Hub on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import datasets.config
import huggingface_hub.constants
import pytest
from fakes.hub_server import FAKE_TOKEN, FakeHub
from fakes.output_folder import make_output_folder
from huggingface_hub import HfFileSystem


@pytest.fixture(autouse=True)
def datasets_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`load_dataset` in these tests caches under tmp_path, not in the user's cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    return make_output_folder(tmp_path / "out")


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A fresh fake Hub; huggingface_hub and datasets point at it, with HF_TOKEN set and caches in tmp.

    The libraries read HF_ENDPOINT when they are imported, so their module constants are patched too.
    """
    hub = FakeHub().start()
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # the fake has no Xet CAS
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", hub.url)
    monkeypatch.setattr(datasets.config, "HUB_DATASETS_URL",
                        hub.url + "/datasets/{repo_id}/resolve/{revision}/{path}")
    HfFileSystem.clear_instance_cache()  # an instance made for another endpoint must not be reused
    yield hub
    HfFileSystem.clear_instance_cache()
    hub.stop()
