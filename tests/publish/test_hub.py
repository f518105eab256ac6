"""push_output against a fake Hub on loopback: what lands in the repo is what a user would check."""

from __future__ import annotations

import io
import logging
import re
import time
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from datasets.utils.metadata import MetadataConfigs
from fakes.hub_server import FAKE_TOKEN, FakeHub
from fakes.output_folder import default_config, default_rows, make_output_folder, make_row
from huggingface_hub import DatasetCard
from huggingface_hub.errors import HfHubHTTPError

from imgedit_ds.publish import InvalidOutputError, push_output, stage
from imgedit_ds.publish.cli import main

REPO = "org/edits"


def stored_tables(hub: FakeHub, repo: str, revision: str = "main", data_dir: str = "data") -> dict[str, list]:
    """Rows of each split as stored in the repo's Parquet shards (images as {bytes, path})."""
    splits: dict[str, list] = {}
    for path, data in sorted(hub.files(repo, revision).items()):
        match = re.fullmatch(rf"{data_dir}/(\w+)-\d{{5}}-of-\d{{5}}\.parquet", path)
        if match:
            splits.setdefault(match[1], []).extend(pq.read_table(io.BytesIO(data)).to_pylist())
    return splits


def local_rows(output_dir: Path) -> list[dict[str, Any]]:
    return datasets.load_from_disk(str(output_dir / "dataset")).data.table.to_pylist()


def test_push_publishes_clean_train_split_and_failures_with_their_errors(
        fake_hub: FakeHub, output_dir: Path) -> None:
    result = push_output(output_dir, REPO, license="cc-by-4.0")

    local = {r["id"]: r for r in local_rows(output_dir)}
    stored = stored_tables(fake_hub, REPO)
    assert result["splits"] == {"train": 4, "failed": 3}
    assert [r["id"] for r in stored["train"]] == ["row-0", "row-1", "row-2", "row-3"]
    assert {r["id"]: r["error"] for r in stored["failed"]} == {
        "row-4": "timeout: no answer in 60s", "row-5": "content_policy: the service refused the request",
        "row-6": "unsupported: the model takes one image"}
    for row in stored["train"] + stored["failed"]:
        mine = local[row["id"]]
        assert [s["bytes"] for s in row["source_images"]] == [s["bytes"] for s in mine["source_images"]]
        assert row["source_image"]["bytes"] == mine["source_images"][0]["bytes"]
        assert (row["edited_image"] or {}).get("bytes") == (mine["edited_image"] or {}).get("bytes")
        assert [row[k] for k in ("instruction", "status", "seed")] == [
            mine[k] for k in ("instruction", "status", "seed")]
        assert "/home/alice" not in str(row["source_images"]), "local paths must not be published"
    for path, data in fake_hub.files(REPO).items():
        if path.endswith(".parquet"):
            groups = pq.ParquetFile(io.BytesIO(data)).metadata
            assert all(groups.row_group(i).num_rows <= 100 for i in range(groups.num_row_groups))


def test_card_metadata_matches_the_pushed_splits_and_documents_the_run(
        fake_hub: FakeHub, output_dir: Path) -> None:
    push_output(output_dir, REPO, license="cc-by-4.0")
    files = fake_hub.files(REPO)
    card = DatasetCard(files["README.md"].decode())

    assert card.data.task_categories == ["image-to-image"] and card.data.license == "cc-by-4.0"
    assert card.data.size_categories == ["n<1K"]
    data_files = MetadataConfigs.from_dataset_card_data(card.data)["default"]["data_files"]
    assert {f["split"] for f in data_files} == {"train", "failed"}
    for entry in data_files:
        assert any(re.fullmatch(entry["path"].replace("*", ".*"), p) for p in files)
    splits = {s["name"]: s["num_examples"] for s in card.data.dataset_info["splits"]}
    assert splits == {"train": 4, "failed": 3}
    body = card.text
    assert "![Preview" in body and "data/preview.png" in files
    assert "--original_image_column=source_image" in body and "--edited_image_column=edited_image" in body
    assert "--cond_image_column=source_image" in body and "--caption_column=instruction" in body
    assert "| timeout | 1 |" in body and "gpt-image-1" in body
    assert "instructions.system_prompt" in body  # prompts are listed with their hash
    assert "range 1000..1006" in body

    loaded = datasets.load_dataset(REPO, split="train", token=FAKE_TOKEN)
    assert loaded.num_rows == 4 and loaded[0]["edited_image"].size == (32, 24)


def test_second_push_uploads_and_commits_nothing(fake_hub: FakeHub, output_dir: Path) -> None:
    push_output(output_dir, REPO)
    commits, uploads = len(fake_hub.commits(REPO)), len(fake_hub.lfs_uploads)

    again = push_output(output_dir, REPO)

    assert again["commit"] is None and again["uploaded"] == [] and again["deleted"] == []
    assert len(fake_hub.commits(REPO)) == commits and len(fake_hub.lfs_uploads) == uploads
    assert not (output_dir / "publish").exists(), "staged files are removed after a successful push"


def test_new_shard_size_replaces_old_shards_and_keeps_row_groups_small(
        fake_hub: FakeHub, tmp_path: Path) -> None:
    output = make_output_folder(tmp_path / "out", [make_row(i) for i in range(250)])
    push_output(output, REPO)
    first = sorted(p for p in fake_hub.files(REPO) if p.endswith(".parquet"))
    assert first == ["data/train-00000-of-00001.parquet"]

    result = push_output(output, REPO, max_shard_size="40KB")

    shards = sorted(p for p in fake_hub.files(REPO) if p.endswith(".parquet"))
    assert len(shards) > 2 and all(s.endswith(f"-of-{len(shards):05d}.parquet") for s in shards)
    assert result["deleted"] == ["data/train-00000-of-00001.parquet"]
    rows = stored_tables(fake_hub, REPO)["train"]
    assert [r["id"] for r in rows] == [f"row-{i}" for i in range(250)]
    for shard in shards:
        data = fake_hub.files(REPO)[shard]
        assert len(data) < 40_000 * 1.2  # cut from real byte counts
        meta = pq.ParquetFile(io.BytesIO(data)).metadata
        assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= 100


def test_no_secret_reaches_the_hub(
        fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-secret-value-0042"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    config = default_config()
    config["backend"].update(api_key=secret, max_tokens=512)
    config["data"]["url"] = f"https://example.org/data?key={secret}"  # a leak under an innocent key
    output = make_output_folder(tmp_path / "out", config=config)

    push_output(output, REPO)

    blobs = list(fake_hub.files(REPO).values()) + list(fake_hub.lfs_store.values())
    messages = [c.title.encode() for c in fake_hub.commits(REPO)]
    for value in (secret, FAKE_TOKEN):
        assert not any(value.encode() in blob for blob in blobs + messages)
    assert "max_tokens: 512" in fake_hub.files(REPO)["README.md"].decode()  # not every *token* is a secret
    writes = [h for m, p, h in fake_hub.requests if m == "POST" and p.startswith("/api/")]
    assert writes and all(h.get("authorization") == f"Bearer {FAKE_TOKEN}" for h in writes)


@pytest.mark.parametrize(("breakage", "message"), [
    ("undecodable", "edited_image does not decode"),
    ("null_edit", "status ok but edited_image is null"),
    ("duplicate_id", "duplicate id"),
])
def test_validation_stops_a_broken_dataset_before_any_request(
        fake_hub: FakeHub, tmp_path: Path, breakage: str, message: str) -> None:
    rows = default_rows()
    if breakage == "undecodable":
        rows[2]["edited_image"] = {"bytes": b"\x89PNG truncated", "path": None}
    elif breakage == "null_edit":
        rows[2]["edited_image"] = None
    else:
        rows[2]["id"] = "row-1"
    output = make_output_folder(tmp_path / "out", rows)

    with pytest.raises(InvalidOutputError, match=message) as err:
        push_output(output, REPO)

    assert ("'row-1'" if breakage == "duplicate_id" else "'row-2'") in str(err.value)
    assert fake_hub.repos == {} and not [r for r in fake_hub.requests if "/api/repos" in r[1]]


def test_push_refuses_runs_without_finished_edits_and_bad_config_names(
        fake_hub: FakeHub, tmp_path: Path, output_dir: Path) -> None:
    failed_only = make_output_folder(tmp_path / "failed", [make_row(0, "failed", error="timeout: x")])
    with pytest.raises(InvalidOutputError, match="no row with status ok"):
        push_output(failed_only, REPO)
    with pytest.raises(ValueError, match=r"output\.config_name='\.\./x'"):
        push_output(output_dir, REPO, config_name="../x")
    assert fake_hub.repos == {}


def test_rows_mixed_up_while_staging_are_caught(
        fake_hub: FakeHub, output_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepare = stage._prepare

    def shift_edited_images(rows: pa.Table, features: datasets.Features) -> pa.Table:
        """A staging bug: every row gets the next row's edited image."""
        rows = prepare(rows, features)
        column = rows.column("edited_image")
        shifted = pa.concat_arrays([*column.slice(1).chunks, *column.slice(0, 1).chunks])
        return rows.set_column(rows.column_names.index("edited_image"), "edited_image", shifted)

    monkeypatch.setattr(stage, "_prepare", shift_edited_images)
    with pytest.raises(InvalidOutputError, match="row 'row-0' does not hold the images validated for it"):
        push_output(output_dir, REPO)
    assert fake_hub.repos == {}


def test_suspicious_edits_are_pushed_with_warnings(fake_hub: FakeHub, tmp_path: Path) -> None:
    rows = default_rows()
    rows[0]["edited_image"] = dict(rows[0]["source_images"][0])  # the backend returned its input
    rows[2]["edited_image"] = dict(rows[1]["edited_image"])  # row-2 holds row-1's output

    result = push_output(make_output_folder(tmp_path / "out", rows), REPO)

    assert any("byte-identical to its source" in w and "'row-0'" in w for w in result["warnings"])
    assert any("also belongs to row 'row-1'" in w and "'row-2'" in w for w in result["warnings"])


def test_rate_limited_commit_waits_as_retry_after_says(fake_hub: FakeHub, output_dir: Path) -> None:
    fake_hub.fail_next("POST", r"/commit/", 429, {"Retry-After": "1"})
    started = time.monotonic()

    result = push_output(output_dir, REPO)

    assert time.monotonic() - started >= 1
    assert result["commit"] is not None
    assert sum(1 for m, p, _ in fake_hub.requests if m == "POST" and "/commit/" in p) == 2


def test_create_pr_and_branch_leave_main_untouched(fake_hub: FakeHub, output_dir: Path) -> None:
    pr = push_output(output_dir, REPO, create_pr=True)
    branch = push_output(output_dir, REPO, revision="v1")

    assert pr["revision"] == "refs/pr/1" and pr["pr_url"].endswith("/discussions/1")
    assert fake_hub.files(REPO) == {}
    assert "README.md" in fake_hub.files(REPO, "refs/pr/1")
    assert branch["revision"] == "v1" and stored_tables(fake_hub, REPO, "v1")["train"]


def test_rows_with_several_sources_have_no_flat_column(fake_hub: FakeHub, tmp_path: Path) -> None:
    output = make_output_folder(tmp_path / "out", [make_row(0, sources=2), make_row(1)])

    push_output(output, REPO)

    row = stored_tables(fake_hub, REPO)["train"][0]
    assert "source_image" not in row and len(row["source_images"]) == 2
    assert "train_instruct_pix2pix" not in fake_hub.files(REPO)["README.md"].decode()


def test_a_second_config_keeps_the_first(fake_hub: FakeHub, output_dir: Path, tmp_path: Path) -> None:
    push_output(output_dir, REPO)
    other = make_output_folder(tmp_path / "other", [make_row(10), make_row(11)])

    push_output(other, REPO, config_name="v2")

    card = DatasetCard(fake_hub.files(REPO)["README.md"].decode())
    assert sorted(MetadataConfigs.from_dataset_card_data(card.data)) == ["default", "v2"]
    assert datasets.load_dataset(REPO, "default", split="train", token=FAKE_TOKEN).num_rows == 4
    assert datasets.load_dataset(REPO, "v2", split="train", token=FAKE_TOKEN)["id"] == ["row-10", "row-11"]


def test_cli_retries_a_failed_push_from_the_staged_shards(
        fake_hub: FakeHub, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = default_config()
    config["output"].update(push_to_hub=REPO, license="mit")
    output = make_output_folder(tmp_path / "out", config=config)
    fake_hub.fail_next("POST", r"/commit/", 500)
    with pytest.raises(HfHubHTTPError):
        push_output(output, REPO)
    assert (output / "publish" / "default" / "manifest.json").is_file()

    with caplog.at_level(logging.INFO):
        assert main([str(output)]) == 0

    assert "reusing the shards staged" in caplog.text
    assert DatasetCard(fake_hub.files(REPO)["README.md"].decode()).data.license == "mit"
    assert not (output / "publish").exists()


def test_cli_dry_run_stages_card_and_shards_without_network(fake_hub: FakeHub, output_dir: Path) -> None:
    assert main([str(output_dir), REPO, "--dry-run", "--license", "cc-by-4.0"]) == 0

    staged = output_dir / "publish" / "default"
    card = (staged / "README.md").read_text()
    assert yaml.safe_load(card.split("---")[1])["license"] == "cc-by-4.0"
    assert (staged / "data" / "train-00000-of-00001.parquet").is_file()
    assert fake_hub.requests == []
