"""The command line as a user runs it: default job, other folders, one-line configuration errors."""

from __future__ import annotations

import os
from pathlib import Path

import datasets
from helpers import read_report


def test_default_job_runs_offline_from_any_folder(tmp_path: Path, run_cli) -> None:
    elsewhere = tmp_path / "some" / "other" / "folder"
    elsewhere.mkdir(parents=True)
    proc = run_cli(cwd=elsewhere)
    outputs = list((elsewhere / "outputs").iterdir())
    assert len(outputs) == 1 and outputs[0].name.startswith("demo-pil-")
    report = read_report(outputs[0])
    assert report["rows"] == 12 and report["status"]["ok"] >= 9
    assert "Output:" in proc.stdout and str(outputs[0]) in proc.stdout
    ds = datasets.load_from_disk(str(outputs[0] / "dataset"))
    assert ds[0]["edited_image"].size == ds[0]["source_images"][0].size
    assert (outputs[0] / "preview.png").is_file() and (outputs[0] / "config.yaml").is_file()
    assert sorted(os.listdir(elsewhere)) == ["outputs"]  # nothing else left in the working folder

    again = run_cli(cwd=elsewhere)
    assert read_report(outputs[0])["reused"] == 12 and "reused 12" in again.stdout
    run_cli("run.seed=3", cwd=elsewhere)
    assert len(list((elsewhere / "outputs").iterdir())) == 2  # a changed config gets its own folder


def _error(run_cli, *args: str) -> str:
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def test_configuration_errors_fail_at_start_with_one_line(tmp_path: Path, run_cli) -> None:
    assert "data.path=nope.jsonl: no such file" in _error(run_cli, "data=dataflow_jsonl", "data.path=nope.jsonl")
    assert "data.path is required" in _error(run_cli, "data=dataflow_jsonl")
    assert "run.batch_size=0" in _error(run_cli, "run.batch_size=0")
    assert "output.image_format=gif" in _error(run_cli, "output.image_format=gif")
    assert "run.chunk_size='lots': use a whole number" in _error(run_cli, "run.chunk_size=lots")
    assert "run.seed=1.5" in _error(run_cli, "run.seed=1.5")
    assert "run.retry_failed='maybe': use true or false" in _error(run_cli, "run.retry_failed=maybe")
    assert "data.limit='abc'" in _error(run_cli, "data.limit=abc")
    assert "backend.concurrency='lots'" in _error(run_cli, "backend=nano_banana", "backend.concurrency=lots")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"image": "a.png", "instruction": "Blur the image."}\n{"image": "b.png", "instr\n')
    assert f"cannot read {broken}" in _error(run_cli, "data=jsonl", f"data.path={broken}")
    assert "instructions.operations" in _error(run_cli, "instructions=template", "instructions.operations=[paint]")
    (tmp_path / "imgs").mkdir()
    assert "instructions=template" in _error(run_cli, "data=imagefolder", f"data.path={tmp_path / 'imgs'}")
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("report.json"))


def test_unknown_backend_names_the_choices(run_cli) -> None:
    proc = run_cli("backend=nonesuch", check=False)
    assert proc.returncode != 0
    assert "nonesuch" in proc.stderr and "pil" in proc.stderr


def test_multirun_sweeps_into_one_folder_per_job(tmp_path: Path, run_cli) -> None:
    run_cli("-m", "run.seed=0,1", "data.limit=2")
    folders = sorted(p.name for p in (tmp_path / "outputs").iterdir() if p.is_dir())
    assert len(folders) == 2 and all(name.startswith("demo-pil-") for name in folders)
    assert {read_report(tmp_path / "outputs" / name)["rows"] for name in folders} == {2}
    assert set(os.listdir(tmp_path)) <= {"outputs", "xdg-cache", "hf-home"}  # no Hydra folders beside them
