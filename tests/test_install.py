"""A non-editable install: the wheel carries its configs and runs outside the checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import REPO, read_report


@pytest.mark.slow
def test_wheel_install_runs_the_default_job_from_another_folder(tmp_path: Path, cli_env: dict) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(wheels)],
                   check=True, cwd=tmp_path, capture_output=True)
    (wheel,) = wheels.glob("imgedit_ds-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "imgedit_ds/conf/config.yaml" in names and "imgedit_ds/conf/backend/pil.yaml" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = dict(cli_env, PYTHONPATH=str(target))
    work = tmp_path / "work"
    work.mkdir()
    where = subprocess.run([sys.executable, "-c", "import imgedit_ds; print(imgedit_ds.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(target))
    proc = subprocess.run([sys.executable, "-m", "imgedit_ds", "data.rows=3", "output.dir=made"], cwd=work, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert read_report(work / "made")["rows"] == 3
