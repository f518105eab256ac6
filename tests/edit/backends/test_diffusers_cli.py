"""The diffusers presets through the real command line, on tiny random-weight pipelines.

`python -m imgedit_ds backend=<preset> backend.model=<folder> data=jsonl ...` as a user runs it:
the dataset, report and preview it writes, reruns that reuse ok rows, and rows that do not depend on
how they were batched or spread over processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("diffusers", reason="the local extra is not installed")

import datasets
import numpy as np
import tiny_pipelines
from helpers import draw_photo, read_report, write_jsonl

pytestmark = pytest.mark.slow  # each run starts a Python that imports torch and diffusers

TINY = ["backend.num_inference_steps=2", "backend.max_area=4096"]
KONTEXT = ["backend=flux_kontext", *TINY, "+backend.call_kwargs._auto_resize=false"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):
    return lambda name: tiny_pipelines.build_once(name, tmp_path_factory)


def write_rows(folder: Path, n: int, multi: bool = False) -> Path:
    """n single-image rows of 96x64 photos (plus one two-image row) as jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"photo{i}.png")
        draw_photo((96, 64), seed=i).save(paths[-1])
    rows = [{"image": str(p), "instruction": f"turn photo {i} into autumn"} for i, p in enumerate(paths)]
    if multi:
        rows.append({"image": [str(paths[0]), str(paths[1])], "instruction": "put both in one scene"})
    return write_jsonl(folder / "rows.jsonl", rows)


def edited(output: Path) -> list[np.ndarray]:
    ds = datasets.load_from_disk(str(output / "dataset"))
    assert set(ds["status"]) == {"ok"}, ds["error"]
    return [np.asarray(image, dtype=np.int16) for image in ds["edited_image"]]


def test_kontext_preset_end_to_end(tmp_path: Path, tiny_model, run_cli) -> None:
    model = tiny_model("flux_kontext")
    rows = write_rows(tmp_path / "in", 4, multi=True)
    args = [
        *KONTEXT,
        f"backend.model={model}",
        "backend.multi_image=grid",
        "data=jsonl",
        f"data.path={rows}",
        f"output.dir={tmp_path / 'out'}",
        "run.batch_size=4",
    ]
    proc = run_cli(*args)

    report = read_report(tmp_path / "out")
    assert report["rows"] == 5 and report["status"] == {"ok": 5}
    assert report["backend"] == "diffusers" and report["model"] == str(model)
    assert (tmp_path / "out" / "preview.png").is_file()
    ds = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    assert [image.size for image in ds["edited_image"]] == [(80, 48)] * 4 + [(96, 32)]
    params = [json.loads(p) for p in ds["params"]]
    assert params[0]["num_inference_steps"] == 2 and params[0]["guidance_scale"] == 3.5
    assert "multi_image" not in params[0] and params[4]["multi_image"] == "grid"
    assert "Loading pipeline components" not in proc.stdout + proc.stderr, "one progress bar per run"

    again = run_cli(*args)
    assert read_report(tmp_path / "out")["reused"] == 5 and "reused 5" in again.stdout


def test_rows_do_not_depend_on_batch_size_or_processes(tmp_path: Path, tiny_model, run_cli) -> None:
    rows = write_rows(tmp_path / "in", 6)
    common = [
        "backend=instruct_pix2pix",
        *TINY,
        f"backend.model={tiny_model('instruct_pix2pix')}",
        "data=jsonl",
        f"data.path={rows}",
    ]
    run_cli(*common, "run.batch_size=6", f"output.dir={tmp_path / 'batched'}")
    run_cli(*common, "run.batch_size=6", f"output.dir={tmp_path / 'again'}")
    run_cli(*common, "run.batch_size=1", "run.num_proc=2", f"output.dir={tmp_path / 'spread'}")

    batched, again, spread = edited(tmp_path / "batched"), edited(tmp_path / "again"), edited(tmp_path / "spread")
    assert all(np.array_equal(a, b) for a, b in zip(batched, again)), "same seed and batch: identical images"
    for a, b in zip(batched, spread):
        diff = np.abs(a - b)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.02, "batching changes float rounding only"


def test_a_model_the_preset_does_not_fit_stops_the_run_with_the_fix(tmp_path: Path, tiny_model, run_cli) -> None:
    rows = write_rows(tmp_path / "in", 1)
    proc = run_cli(
        *KONTEXT,
        f"backend.model={tiny_model('instruct_pix2pix')}",
        "data=jsonl",
        f"data.path={rows}",
        f"output.dir={tmp_path / 'out'}",
        check=False,
    )

    assert proc.returncode != 0
    assert "backend.convention=pix2pix" in proc.stdout + proc.stderr
    assert not (tmp_path / "out" / "dataset").exists()
