"""Fixtures shared by the whole suite: test images and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import draw_photo


@pytest.fixture
def make_images(tmp_path: Path):
    """Write `n` distinct PNG photos under tmp_path/images and return their paths."""

    def make(n: int, size: tuple[int, int] = (96, 64), folder: str = "images") -> list[Path]:
        root = tmp_path / folder
        root.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(n):
            path = root / f"img{i:04d}.png"
            draw_photo(size, seed=i).save(path)
            paths.append(path)
        return paths

    return make


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: caches under tmp_path, no network, no progress noise."""
    env = dict(os.environ)
    env.update(XDG_CACHE_HOME=str(tmp_path / "xdg-cache"), HF_HOME=str(tmp_path / "hf-home"),
               HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def run_cli(tmp_path: Path, cli_env: dict[str, str]):
    """Run `python -m imgedit_ds ARGS` in `cwd` (default tmp_path); return the CompletedProcess."""

    def run(*args: str, cwd: Path | None = None, check: bool = True, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "imgedit_ds", *args], cwd=cwd or tmp_path,
                              env=env or cli_env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"imgedit-ds {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run

