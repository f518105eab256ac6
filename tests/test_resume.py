"""Crash and resume: kill -9 a real run mid-way, rerun the same command, lose and repeat nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
from helpers import read_report

from imgedit_ds.write.chunks import CHUNK_DIR


def _committed_rows(output: Path) -> int:
    rows = 0
    for path in (output / "chunks").glob("*"):
        match = CHUNK_DIR.match(path.name)
        if match and (path / "meta.json").is_file():
            rows += int(match.group(2)) - int(match.group(1))
    return rows


def test_kill_9_then_rerun_computes_only_the_missing_chunks(tmp_path: Path, make_images, cli_env, run_cli) -> None:
    total = 90
    make_images(total, size=(320, 320))
    out = tmp_path / "out"
    args = ["experiment=pil_template", f"data.path={tmp_path / 'images'}", f"output.dir={out}",
            "run.chunk_size=6", "run.batch_size=2", "output.png_compress_level=9"]
    proc = subprocess.Popen([sys.executable, "-m", "imgedit_ds", *args], cwd=tmp_path, env=cli_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while _committed_rows(out) < 12 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005) if (out / "chunks").is_dir() else time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _committed_rows(out)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed; make it longer"
    assert 12 <= done_before < total
    assert not (out / "report.json").exists()

    run_cli(*args)
    report = read_report(out)
    assert report["reused"] == done_before
    assert report["computed"] == total - done_before
    ds = datasets.load_from_disk(str(out / "dataset"))
    ids = ds["id"]
    assert len(ids) == total and len(set(ids)) == total
    assert sorted(ids) == sorted(p.stem for p in (tmp_path / "images").iterdir())
    assert set(ds["status"]) == {"ok"}

    fresh = tmp_path / "fresh"
    run_cli(*args[:2], f"output.dir={fresh}", "run.chunk_size=7", "run.batch_size=5", "output.png_compress_level=9")
    reference = datasets.load_from_disk(str(fresh / "dataset"))
    assert reference.data.column("edited_image").to_pylist() == ds.data.column("edited_image").to_pylist()
