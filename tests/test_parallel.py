"""Several processes give the same dataset as one: run.num_proc, and ranks from accelerate launch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from helpers import read_report


def _rows(output: Path) -> list[dict]:
    return datasets.load_from_disk(str(output / "dataset")).data.to_pylist()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate is in the [local] extra")
def test_accelerate_launch_ranks_share_chunks_and_match_one_process(tmp_path: Path, make_images, cli_env,
                                                                     run_cli) -> None:
    make_images(11)
    common = ["experiment=pil_template", f"data.path={tmp_path / 'images'}", "run.chunk_size=3"]
    run_cli(*common, f"output.dir={tmp_path / 'single'}")
    # accelerate's --cpu starts one process (several need MPI); --multi_gpu is torchrun underneath and
    # starts N ranks on a CPU-only machine too.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "imgedit_ds"]
    proc = subprocess.run([*launch, *common, f"output.dir={tmp_path / 'ranks'}"], cwd=tmp_path, env=cli_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _rows(tmp_path / "ranks") == _rows(tmp_path / "single")
    report = read_report(tmp_path / "ranks")
    assert (report["rows"], report["computed"], report["reused"]) == (11, 11, 0)
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "ranks" / "chunks").iterdir()) == [
        f"{start:09d}" for start in range(0, 11, 3)]


def test_num_proc_workers_match_one_process(tmp_path: Path, make_images, run_cli) -> None:
    make_images(7)
    common = ["experiment=pil_template", f"data.path={tmp_path / 'images'}", "run.chunk_size=2"]
    run_cli(*common, f"output.dir={tmp_path / 'one'}")
    run_cli(*common, "run.num_proc=2", f"output.dir={tmp_path / 'two'}")
    assert _rows(tmp_path / "two") == _rows(tmp_path / "one")
    assert read_report(tmp_path / "two")["computed"] == 7
