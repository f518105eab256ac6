"""The real command line against the fake server under faults: nothing lost, nothing paid twice."""

from __future__ import annotations

import io
from pathlib import Path

import datasets
import pytest
from fakes.openai_server import encode, fake_edit
from helpers import read_report, write_jsonl
from PIL import Image

KEY_ENV = "IMGEDIT_TEST_API_KEY"
# Faults a retry gets past (max_retries=2), then faults that outlast the retries, then refusals.
RECOVERS = ["429", "500", "503", "hang", "malformed_json", "truncated_b64", "empty_image"]
OUTLASTS = [("500", "503", "500"), ("truncated_b64",) * 3]
REFUSES = ["refusal", "moderation"]


@pytest.fixture
def rows(tmp_path: Path, make_images) -> list[dict]:
    paths = make_images(16, size=(40, 32))
    rows = [{"id": f"r{i:02d}", "image": str(p), "instruction": f"tint row {i}"} for i, p in enumerate(paths)]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    return rows


def _command(tmp_path: Path, server, backend: str, *extra: str) -> list[str]:
    return [
        "data=jsonl",
        f"data.path={tmp_path / 'rows.jsonl'}",
        "data.id_column=id",
        f"backend={backend}",
        f"backend.base_url={server.base_url}",
        f"backend.api_key_env={KEY_ENV}",
        "backend.max_retries=2",
        "backend.retry_backoff=0.01",
        "backend.retry_backoff_max=0.05",
        "backend.timeout=1",
        f"output.dir={tmp_path / 'out'}",
        "run.chunk_size=6",
        "run.batch_size=4",
        *extra,
    ]


def _files_containing(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_chat_run_under_faults_accounts_for_every_row_once_and_reruns_only_failures(
    tmp_path: Path, rows: list[dict], server, cli_env: dict, run_cli
) -> None:
    plan = [(fault,) for fault in RECOVERS] + OUTLASTS + [(fault,) for fault in REFUSES]  # the other rows: ok
    scripted = {row["instruction"]: steps for row, steps in zip(rows, plan, strict=False)}
    for instruction, steps in scripted.items():
        server.script(instruction, *steps)
    env = {**cli_env, KEY_ENV: server.api_key}
    args = _command(tmp_path, server, "chat_image", "backend.model=gemini-2.5-flash-image", "backend.stream=true")

    first = run_cli(*args, env=env)
    out = tmp_path / "out"
    report = read_report(out)
    failed = [r["instruction"] for r in rows[len(RECOVERS) : len(RECOVERS) + len(OUTLASTS)]]
    assert report["status"] == {"ok": 12, "failed": 2, "refused": 2}
    assert report["usage"]["requests"] == sum(server.requests.values())
    ds = datasets.load_from_disk(str(out / "dataset"))
    assert sorted(ds["id"]) == [r["id"] for r in rows]
    by_id = {r["id"]: r for r in rows}
    for row in ds:
        source = by_id[row["id"]]
        steps = scripted.get(source["instruction"], ())
        if row["status"] == "ok":
            expected = encode(fake_edit(source["instruction"], Image.open(source["image"])))
            assert row["edited_image"].tobytes() == Image.open(io.BytesIO(expected)).tobytes(), row["id"]
            assert server.requests[source["instruction"]] == 1 + len(steps)
        elif row["status"] == "refused":
            assert server.requests[source["instruction"]] == 1 and row["edited_image"] is None
    refused_text = ds.filter(lambda r: r["status"] == "refused")["error"]
    assert any("IMAGE_SAFETY" in e for e in refused_text) and any("moderation_blocked" in e for e in refused_text)

    counts = dict(server.requests)
    second = run_cli(*args, env=env)  # the script is spent: failed rows now succeed
    report = read_report(out)
    assert report["status"] == {"ok": 14, "refused": 2}
    assert report["computed"] == 2
    assert {k: v - counts.get(k, 0) for k, v in server.requests.items() if v != counts.get(k, 0)} == {
        instruction: 1 for instruction in failed
    }
    ds = datasets.load_from_disk(str(out / "dataset"))
    assert sorted(ds["id"]) == [r["id"] for r in rows]
    for proc in (first, second):
        assert server.api_key not in proc.stdout + proc.stderr
    assert _files_containing(out, server.api_key) == []


def test_images_run_stores_the_returned_bytes(tmp_path: Path, rows: list[dict], server, cli_env, run_cli) -> None:
    env = {**cli_env, KEY_ENV: server.api_key}
    run_cli(*_command(tmp_path, server, "openai_images", "backend.output_format=webp", "data.limit=5"), env=env)
    ds = datasets.load_from_disk(str(tmp_path / "out" / "dataset")).cast_column(
        "edited_image", datasets.Image(decode=False)
    )
    assert ds["status"] == ["ok"] * 5
    for row, source in zip(ds, rows, strict=False):
        expected = encode(fake_edit(source["instruction"], Image.open(source["image"])), "webp")
        assert row["edited_image"]["bytes"] == expected
    assert _files_containing(tmp_path / "out", server.api_key) == []


def test_bad_key_stops_the_run_with_exit_3_and_no_bill(tmp_path, rows, server, cli_env, run_cli) -> None:
    env = {**cli_env, KEY_ENV: "sk-a-wrong-key-31337"}
    # A generous timeout: under load a 1 s timeout would retry a request and blur what is counted here.
    args = _command(tmp_path, server, "chat_image", "backend.model=gemini-2.5-flash-image", "backend.concurrency=2",
                    "backend.timeout=30")
    proc = run_cli(*args, env=env, check=False)
    assert proc.returncode == 3
    assert f"rejected the API key in ${KEY_ENV}" in proc.stdout + proc.stderr
    assert "sk-a-wrong-key-31337" not in proc.stdout + proc.stderr
    assert sum(server.requests.values()) <= 2
    assert _files_containing(tmp_path / "out", "sk-a-wrong-key-31337") == []
