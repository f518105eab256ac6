"""Exports: DataFlow JSONL and an imagefolder that `load_dataset` and the training scripts read."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import pytest
from fakes.output_folder import make_output_folder, make_row
from PIL import Image

from imgedit_ds.publish import export_dataflow, export_imagefolder, export_output
from imgedit_ds.publish.cli import main
from imgedit_ds.read.inputs import DataflowJsonl


def local_ok_rows(output_dir: Path) -> list[dict]:
    rows = datasets.load_from_disk(str(output_dir / "dataset")).data.table.to_pylist()
    return [r for r in rows if r["status"] == "ok"]


def test_imagefolder_loads_with_the_columns_training_scripts_take(output_dir: Path) -> None:
    folder = export_imagefolder(output_dir)

    loaded = datasets.load_dataset(str(folder), split="train")

    local = local_ok_rows(output_dir)
    assert loaded["id"] == [r["id"] for r in local]
    assert {"source_image", "edited_image", "instruction"} <= set(loaded.column_names)
    assert isinstance(loaded.features["source_image"], datasets.Image)
    assert "status" not in loaded.column_names
    for got, mine in zip(loaded, local):
        assert got["instruction"] == mine["instruction"]
        expected = Image.open(io.BytesIO(mine["edited_image"]["bytes"]))
        assert got["edited_image"].tobytes() == expected.tobytes()
    metadata = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert metadata[1]["edited_image_file_name"].endswith(".jpg")  # row-1 was made as JPEG
    for entry, mine in zip(metadata, local):  # the bytes are the dataset's, not re-encoded
        assert (folder / entry["edited_image_file_name"]).read_bytes() == mine["edited_image"]["bytes"]
        assert (folder / entry["source_image_file_name"]).read_bytes() == mine["source_images"][0]["bytes"]


def test_rows_with_several_sources_export_a_list_column(tmp_path: Path) -> None:
    output = make_output_folder(tmp_path / "out", [make_row(0, sources=2), make_row(1, sources=3)])

    loaded = datasets.load_dataset(str(export_imagefolder(output)), split="train")

    assert [len(images) for images in loaded["source_images"]] == [2, 3]
    assert "source_image" not in loaded.column_names


def test_dataflow_export_is_dataflow_input_again(output_dir: Path, tmp_path: Path) -> None:
    jsonl = export_dataflow(output_dir)

    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    local = local_ok_rows(output_dir)
    assert [r["id"] for r in records] == [r["id"] for r in local]
    for record, mine in zip(records, local):
        assert record["conversations"] == mine["conversations"]  # kept from the input
        assert [(jsonl.parent / p).read_bytes() for p in record["images"]] == [
            s["bytes"] for s in mine["source_images"]]
        assert (jsonl.parent / record["edited_images"][0]).read_bytes() == mine["edited_image"]["bytes"]

    again = DataflowJsonl(path=str(jsonl)).load(tmp_path / "cache")  # our own DataFlow reader
    assert again["instruction"] == [r["instruction"] for r in local]
    assert all(Path(s["path"]).is_file() for row in again["source_images"] for s in row)


def test_dataflow_builds_conversations_when_the_instruction_was_written_by_the_run(tmp_path: Path) -> None:
    row = make_row(0)
    row["conversations"] = [{"content": "an older instruction", "role": "user"}]
    output = make_output_folder(tmp_path / "out", [row])

    record = json.loads(export_dataflow(output).read_text())

    assert record["conversations"] == [{"role": "user", "content": row["instruction"]}]


def test_export_again_replaces_but_never_overwrites_other_folders(output_dir: Path) -> None:
    first = export_output(output_dir, ["dataflow", "imagefolder"])
    (first["imagefolder"] / "stale.txt").write_text("from an earlier export")
    again = export_output(output_dir, ["imagefolder"])
    assert not (again["imagefolder"] / "stale.txt").exists()

    foreign = output_dir / "mine"
    (foreign / "notes.txt").parent.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an earlier export"):
        export_imagefolder(output_dir, foreign)
    with pytest.raises(ValueError, match=r"output\.export takes dataflow, imagefolder"):
        export_output(output_dir, ["webdataset"])


def test_cli_writes_exports_and_gallery(output_dir: Path) -> None:
    assert main([str(output_dir), "--export", "dataflow", "--export", "imagefolder", "--gallery"]) == 0

    assert (output_dir / "export" / "dataflow" / "dataflow.jsonl").is_file()
    assert (output_dir / "export" / "imagefolder" / "metadata.jsonl").is_file()
    assert (output_dir / "gallery.html").is_file()
