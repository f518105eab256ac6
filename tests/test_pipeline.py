"""The whole run in-process: the seed's example, bad input, determinism, reuse, retries."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from helpers import SEED_EXAMPLE, dataflow_row, draw_photo, read_report, write_jsonl
from PIL import Image

from imgedit_ds.edit.backends.pil import OPERATIONS, parse_operation
from imgedit_ds.pipeline import compose_config, run
from imgedit_ds.schema import SCHEMA_COLUMNS, row_seed


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.chdir(tmp_path)


def run_job(output: Path, *overrides: str) -> dict:
    return run(compose_config([f"output.dir={output}", *overrides]))


def load(output: Path) -> datasets.Dataset:
    return datasets.load_from_disk(str(output / "dataset"))


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


@pytest.fixture
def seed_example(tmp_path: Path) -> Path:
    if not (SEED_EXAMPLE / "prompts.jsonl").is_file():
        pytest.skip(f"the seed's example is not at {SEED_EXAMPLE}")
    copy = tmp_path / "dataflow"
    shutil.copytree(SEED_EXAMPLE, copy)
    return copy / "prompts.jsonl"


def test_seed_example_with_template_instructions_and_pil(tmp_path: Path, seed_example: Path) -> None:
    out = tmp_path / "out"
    report = run_job(out, "data=dataflow_jsonl", f"data.path={seed_example}", "instructions=template")
    assert report["status"] == {"ok": 3} and report["computed"] == 3 and report["reused"] == 0
    ds = load(out)
    assert set(SCHEMA_COLUMNS) | {"conversations", "images", "edited_images"} <= set(ds.column_names)
    originals = [json.loads(line) for line in seed_example.read_text().splitlines()]
    for row, original in zip(ds, originals):
        assert row["conversations"] == original["conversations"]  # input columns carried through
        source = row["source_images"][0]
        assert source.size == (1024, 1024)
        op, _ = parse_operation(row["instruction"])
        assert row["category"] and json.loads(row["params"])["operation"] == op
        assert (pixels(row["edited_image"]) == pixels(OPERATIONS[op](source.convert("RGB")))).all()
        assert row["seed"] == row_seed(0, row["id"])
    assert (out / "preview.png").is_file() and Image.open(out / "preview.png").size[1] > 100


def test_seed_example_own_instructions_are_unsupported_not_copied(tmp_path: Path, seed_example: Path) -> None:
    out = tmp_path / "out"
    report = run_job(out, "data=dataflow_jsonl", f"data.path={seed_example}")
    assert report["status"] == {"unsupported": 3}
    for row in load(out):
        assert row["edited_image"] is None
        assert row["error"].startswith("unsupported instruction")
        assert row["instruction"] in seed_example.read_text()
        assert row["source_images"][0].size == (1024, 1024)


def test_every_bad_row_fails_alone_with_its_cause(tmp_path: Path, make_images) -> None:
    good = [str(p) for p in make_images(3)]
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(Path(good[0]).read_bytes()[:200])
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    Image.new("1", (9000, 9000)).save(tmp_path / "bomb.png")
    rows = [
        dataflow_row("Make the image black and white.", good[0]),
        dataflow_row("Invert the colors of the image.", str(tmp_path / "missing.png")),
        dataflow_row("Invert the colors of the image.", str(truncated)),
        dataflow_row("Invert the colors of the image.", str(tmp_path / "zero.png")),
        dataflow_row("Invert the colors of the image.", str(tmp_path / "text.png")),
        dataflow_row("Invert the colors of the image.", str(tmp_path / "bomb.png")),
        dataflow_row("", good[1]),
        dataflow_row("Rotate the image 180 degrees.", good[2]),
    ]
    jsonl = write_jsonl(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "out"
    report = run_job(out, "data=dataflow_jsonl", f"data.path={jsonl}", "data.max_pixels=50000000",
                     "run.batch_size=3")
    ds = load(out)
    statuses = ds["status"]
    assert statuses == ["ok", "failed", "failed", "failed", "failed", "failed", "failed", "ok"]
    errors = ds["error"]
    assert errors[1].startswith("file not found") and "missing.png" in errors[1]
    assert errors[2].startswith("truncated or corrupt image") and "truncated.png" in errors[2]
    assert errors[3].startswith("empty file") and "zero.png" in errors[3]
    assert errors[4].startswith("not an image") and "text.png" in errors[4]
    assert errors[5].startswith("image too large") and "bomb.png" in errors[5]
    assert errors[6].startswith("empty instruction")
    assert report["failures"]["file not found"] == 1 and report["status"] == {"ok": 2, "failed": 6}
    assert ds[6]["source_images"][0].size == (96, 64)  # a readable source is kept on a failed row


def test_output_stays_readable_when_inputs_are_gone(tmp_path: Path, make_images) -> None:
    images = make_images(4)
    jsonl = write_jsonl(tmp_path / "rows.jsonl", [dataflow_row("Flip the image horizontally.", str(p)) for p in images])
    out = tmp_path / "out"
    run_job(out, "data=dataflow_jsonl", f"data.path={jsonl}")
    shutil.rmtree(images[0].parent)
    moved = tmp_path / "moved"
    shutil.move(str(out), moved)
    ds = load(moved)
    for row, path in zip(ds, images):
        assert row["source_images"][0].size == (96, 64)
        assert pixels(row["edited_image"]).tolist() == pixels(draw_photo(seed=int(path.stem[3:])).transpose(
            Image.Transpose.FLIP_LEFT_RIGHT)).tolist()


def _edited_bytes(output: Path) -> list[bytes | None]:
    table = load(output).data
    return [r and r["bytes"] for r in table.column("edited_image").to_pylist()]


def test_same_seed_gives_identical_bytes_whatever_the_batching(tmp_path: Path, make_images) -> None:
    make_images(9)
    folder = tmp_path / "images"
    base = ["experiment=pil_template", f"data.path={folder}"]
    run_job(tmp_path / "a", *base, "run.batch_size=4")
    run_job(tmp_path / "b", *base, "run.batch_size=4")
    run_job(tmp_path / "c", *base, "run.batch_size=1", "run.chunk_size=2")
    run_job(tmp_path / "d", *base, "run.batch_size=3", "run.num_proc=2", "run.chunk_size=4")
    reference = load(tmp_path / "a").to_list()
    assert all(r["status"] == "ok" for r in load(tmp_path / "a"))
    for other in "bcd":
        assert _edited_bytes(tmp_path / other) == _edited_bytes(tmp_path / "a")
        assert load(tmp_path / other).to_list() == reference
    shifted = load(run_job(tmp_path / "e", *base, "run.seed=1") and tmp_path / "e")
    assert shifted["instruction"] != load(tmp_path / "a")["instruction"]


def test_rerun_reuses_chunks_but_a_changed_config_does_not(tmp_path: Path, make_images) -> None:
    make_images(6)
    base = ["experiment=pil_template", f"data.path={tmp_path / 'images'}", "run.chunk_size=4"]
    out = tmp_path / "out"
    first = run_job(out, *base)
    again = run_job(out, *base)
    assert (first["computed"], first["reused"]) == (6, 0)
    assert (again["computed"], again["reused"]) == (0, 6)
    changed = run_job(out, *base, "run.seed=7")
    assert (changed["computed"], changed["reused"]) == (6, 0)
    assert set(load(out)["seed"]) == {row_seed(7, i) for i in load(out)["id"]}
    output_png = run_job(out, *base, "run.seed=7", "output.image_format=jpeg")
    assert output_png["computed"] == 6
    assert Image.open(io.BytesIO(load(out).data.column("edited_image")[0].as_py()["bytes"])).format == "JPEG"


def test_failed_rows_are_retried_on_the_next_run(tmp_path: Path, make_images) -> None:
    images = make_images(5)
    late = tmp_path / "late.png"
    rows = [dataflow_row("Invert the colors of the image.", str(p)) for p in images]
    rows.insert(2, dataflow_row("Invert the colors of the image.", str(late)))
    jsonl = write_jsonl(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "out"
    first = run_job(out, "data=dataflow_jsonl", f"data.path={jsonl}", "run.chunk_size=2")
    assert first["status"] == {"ok": 5, "failed": 1}
    before = _edited_bytes(out)
    draw_photo(seed=99).save(late)
    second = run_job(out, "data=dataflow_jsonl", f"data.path={jsonl}", "run.chunk_size=2")
    assert second["status"] == {"ok": 6}
    assert (second["computed"], second["reused"]) == (1, 5)
    after = _edited_bytes(out)
    assert [a for i, a in enumerate(after) if i != 2] == [b for i, b in enumerate(before) if i != 2]
    assert read_report(out)["status"] == {"ok": 6}


def test_a_finished_dataset_fed_back_in_is_edited_afresh(tmp_path: Path, make_images) -> None:
    make_images(4)
    first = tmp_path / "first"
    run_job(first, "experiment=pil_template", f"data.path={tmp_path / 'images'}")
    again = tmp_path / "again"
    report = run_job(again, "data=disk", f"data.path={first / 'dataset'}", "data.image_column=source_images",
                     "instructions=template", "run.seed=5")
    assert report["computed"] == 4 and report["status"] == {"ok": 4}
    for row in load(again):  # each edit follows its new instruction, not the old row's
        assert json.loads(row["params"])["operation"] == parse_operation(row["instruction"])[0]
        assert row["seed"] == row_seed(5, row["id"])


def test_inputs_in_hand_and_limited_trials_get_folders_of_their_own(tmp_path: Path, make_images) -> None:
    from imgedit_ds.pipeline import edit_dataset

    paths = [str(p) for p in make_images(3)]
    one = datasets.Dataset.from_dict({"image": paths[:2], "instruction": ["Blur the image."] * 2})
    two = datasets.Dataset.from_dict({"image": paths[1:], "instruction": ["Invert the colors of the image."] * 2})
    assert edit_dataset(one)["instruction"] == ["Blur the image."] * 2
    assert edit_dataset(two)["instruction"] == ["Invert the colors of the image."] * 2
    assert len(list((tmp_path / "outputs").iterdir())) == 2
    run(compose_config(["data.limit=2"]))
    run(compose_config([]))
    assert len(list((tmp_path / "outputs").iterdir())) == 4  # a trial never replaces the full run


def test_secrets_in_urls_never_reach_config_yaml() -> None:
    from imgedit_ds.pipeline import redact

    cleaned = redact({"backend": {"base_url": "http://me:sk-123@relay.example:8080/v1?key=sk-123",
                                  "api_key_env": "DF_API_KEY", "hf_token": "hf_abc", "max_tokens": 5}})
    assert "sk-123" not in json.dumps(cleaned) and "hf_abc" not in json.dumps(cleaned)
    assert cleaned["backend"]["base_url"] == "http://relay.example:8080/v1"
    assert cleaned["backend"]["api_key_env"] == "DF_API_KEY" and cleaned["backend"]["max_tokens"] == 5
