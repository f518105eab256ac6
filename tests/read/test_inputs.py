"""Every input format, through the real pipeline: columns mapped, paths resolved, limits applied."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets
import pytest
from helpers import SEED_EXAMPLE, dataflow_row, draw_photo, write_jsonl
from PIL import Image

from imgedit_ds.pipeline import compose_config, edit_dataset, run
from imgedit_ds.read.columns import instruction_from, resolve_path


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.chdir(tmp_path)


def _run(tmp_path: Path, *overrides: str) -> datasets.Dataset:
    out = tmp_path / "out"
    run(compose_config([f"output.dir={out}", *overrides]))
    return datasets.load_from_disk(str(out / "dataset"))


def test_dataflow_paths_resolve_like_dataflow_writes_them(tmp_path: Path) -> None:
    if not SEED_EXAMPLE.is_dir():
        pytest.skip("the seed's example is not beside the checkout")
    jsonl = SEED_EXAMPLE / "prompts.jsonl"
    first = json.loads(jsonl.read_text().splitlines()[0])["images"][0]
    assert first.startswith("./dataflow/example/")  # relative to DataFlow's repo, not the JSONL
    assert resolve_path(first, [SEED_EXAMPLE, tmp_path]) == str(SEED_EXAMPLE / "images" / "image1.png")
    ds = _run(tmp_path, "data=dataflow_jsonl", f"data.path={jsonl}", "data.limit=2", "instructions=template")
    assert len(ds) == 2 and ds["status"] == ["ok", "ok"]


def test_image_root_overrides_and_several_images_per_row(tmp_path: Path, make_images) -> None:
    make_images(2, folder="pics")
    rows = [dataflow_row("Blur the image.", "pics/img0000.png", "pics/img0001.png"),
            dataflow_row("Blur the image.", "pics/img0001.png")]
    (tmp_path / "sub").mkdir()
    jsonl = write_jsonl(tmp_path / "sub" / "x.jsonl", rows)
    ds = _run(tmp_path, "data=dataflow_jsonl", f"data.path={jsonl}", f"data.image_root={tmp_path}")
    assert [len(s) for s in ds["source_images"]] == [2, 1]
    assert ds["status"] == ["unsupported", "ok"]  # pil edits one image; the row says so


def test_jsonl_csv_parquet_with_column_mapping(tmp_path: Path, make_images) -> None:
    paths = make_images(3)
    records = [{"key": f"k{i}", "picture": str(p.relative_to(tmp_path)), "prompt": "Sharpen the image.",
                "kind": "filter", "extra": i} for i, p in enumerate(paths)]
    write_jsonl(tmp_path / "t.jsonl", records)
    with open(tmp_path / "t.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    datasets.Dataset.from_list(records).to_parquet(str(tmp_path / "t.parquet"))
    for fmt in ("jsonl", "csv", "parquet"):
        ds = _run(tmp_path, f"data={fmt}", f"data.path={tmp_path / f't.{fmt}'}", "data.image_column=picture",
                  "data.instruction_column=prompt", "data.id_column=key", "data.category_column=kind")
        assert ds["id"] == ["k0", "k1", "k2"] and ds["category"] == ["filter"] * 3
        assert ds["status"] == ["ok"] * 3 and ds["extra"] == [0, 1, 2], fmt


def test_imagefolder_with_template_and_limit(tmp_path: Path, make_images) -> None:
    make_images(5)
    ds = _run(tmp_path, "experiment=pil_template", f"data.path={tmp_path / 'images'}", "data.limit=3")
    assert ds["id"] == ["img0000", "img0001", "img0002"]
    assert ds["source_file"] == ["img0000.png", "img0001.png", "img0002.png"]
    assert str(tmp_path) not in json.dumps(ds.remove_columns(["source_images", "edited_image"]).to_list())
    assert all(ds["instruction"]) and all(ds["category"]) and set(ds["status"]) == {"ok"}


def test_save_to_disk_input_with_embedded_images(tmp_path: Path) -> None:
    table = datasets.Dataset.from_dict(
        {"image": [draw_photo(seed=i) for i in range(3)], "instruction": ["Invert the colors of the image."] * 3},
        features=datasets.Features({"image": datasets.Image(), "instruction": datasets.Value("string")}),
    )
    table.save_to_disk(str(tmp_path / "saved"))
    ds = _run(tmp_path, "data=disk", f"data.path={tmp_path / 'saved'}")
    assert "image" not in ds.column_names  # the image column became source_images, not a second copy
    assert ds["status"] == ["ok"] * 3 and ds[0]["source_images"][0].size == (96, 64)


def test_edit_dataset_api_and_the_map_function(tmp_path: Path, make_images) -> None:
    paths = make_images(4)
    ds = datasets.Dataset.from_dict({"file": [str(p) for p in paths], "text": ["Flip the image vertically."] * 4})
    edited = edit_dataset(ds, ["run.batch_size=3"], image_column="file", instruction_column="text",
                          output_dir=tmp_path / "api")
    assert edited["status"] == ["ok"] * 4
    flipped = Image.open(paths[1]).transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    assert list(edited[1]["edited_image"].getdata()) == list(flipped.getdata())


def test_instruction_from_conversations() -> None:
    turns = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
             {"role": "user", "content": " second "}]
    assert instruction_from(turns) == "second"
    assert instruction_from(None) == "" and instruction_from("  x ") == "x"
