"""The map function on its own, as a user calls it with `ds.map`."""

from __future__ import annotations

import datasets
import pytest
from helpers import draw_photo

from imgedit_ds.edit.backends.pil import PilBackend
from imgedit_ds.edit.base import EditBackend, EditRequest, EditResult, FatalBackendError
from imgedit_ds.edit.map_fn import EditFunction
from imgedit_ds.read.columns import prepare
from imgedit_ds.schema import output_features


class FlakyBackend(EditBackend):
    """Raises for one instruction (the whole batch call fails), like a model hitting a bad input."""

    name = "flaky"

    def __init__(self, fatal: bool = False) -> None:
        self.fatal = fatal
        self.calls: list[int] = []

    def edit_batch(self, requests: list[EditRequest]) -> list[EditResult]:
        self.calls.append(len(requests))
        if any(r.instruction == "explode" for r in requests):
            raise (FatalBackendError("key revoked") if self.fatal else RuntimeError("CUDA error: bad row"))
        return [EditResult(status="ok", image=r.images[0].transpose(2)) for r in requests]


def _input(tmp_path, instructions: list[str]) -> datasets.Dataset:
    paths = []
    for i, _ in enumerate(instructions):
        paths.append(str(tmp_path / f"{i}.png"))
        draw_photo(seed=i).save(paths[-1])
    return prepare(datasets.Dataset.from_dict({"image": paths, "instruction": instructions}))


def test_a_backend_exception_fails_only_its_row(tmp_path) -> None:
    ds = _input(tmp_path, ["a", "explode", "b", "c"])
    backend = FlakyBackend()
    edit = EditFunction(backend, seed=1)
    out = ds.map(edit.edit_batch, batched=True, batch_size=4, with_rank=True, features=output_features(ds.features))
    assert out["status"] == ["ok", "failed", "ok", "ok"]
    assert out[1]["error"] == "backend error: RuntimeError: CUDA error: bad row"
    assert backend.calls[0] == 4 and sorted(backend.calls[1:]) == [1, 1, 1, 1]
    assert out[0]["edited_image"].size == (64, 96)


def test_a_fatal_backend_error_stops_the_map(tmp_path) -> None:
    ds = _input(tmp_path, ["a", "explode"])
    edit = EditFunction(FlakyBackend(fatal=True))
    with pytest.raises(FatalBackendError, match="key revoked"):
        ds.map(edit.edit_batch, batched=True, with_rank=True, features=output_features(ds.features))


def test_map_with_num_proc_matches_a_single_process(tmp_path) -> None:
    ds = _input(tmp_path, ["Invert the colors of the image.", "Blur the image.", "Sepia tone please", "x"] * 2)
    edit = EditFunction(PilBackend(), seed=3)
    one = ds.map(edit.edit_batch, batched=True, batch_size=2, with_rank=True, features=output_features(ds.features))
    two = ds.map(edit.edit_batch, batched=True, batch_size=3, with_rank=True, num_proc=2,
                 features=output_features(ds.features))
    assert one.data.to_pylist() == two.data.to_pylist()
    assert one["status"][:4] == ["ok", "ok", "ok", "unsupported"]
