"""The gallery opens from file:// in headless Chromium, shows the rows, and filters them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fakes.output_folder import default_rows, make_output_folder, make_row
from PIL import Image, ImageStat

from imgedit_ds.write import gallery
from imgedit_ds.write.gallery import write_gallery

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs headless Chromium: apt-get update && apt-get install -y chromium")
OK_GREEN = (30, 130, 60)


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", *args, url],
        capture_output=True, text=True, timeout=60, check=True,
    )


def pixels_near(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 10) -> int:
    return int((np.abs(pixels - np.array(colour)).max(axis=2) < tolerance).sum())


def visible_rows(dom: str) -> list[str]:
    """data-status/data-category of each article the page's script left visible."""
    return [f"{m[1]}/{m[2]}" for m in re.finditer(r'<article class="row" data-status="([^"]*)" '
                                                 r'data-category="([^"]*)"(?P<hidden> hidden="")?>', dom)
            if not m["hidden"]]


@pytest.fixture
def page(tmp_path: Path) -> Path:
    return write_gallery(make_output_folder(tmp_path / "out"))


@needs_chromium
def test_screenshot_shows_rows_with_images(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    chromium(tmp_path, page.as_uri(), "--window-size=1200,900", f"--screenshot={shot}")
    image = Image.open(shot).convert("RGB")
    assert max(ImageStat.Stat(image).stddev) > 20, "the screenshot is blank"
    pixels = np.asarray(image).astype(int)
    assert pixels_near(pixels, OK_GREEN) > 100, "no 'ok' status badge is drawn"
    first_source = (100 * 53 % 256, 100 * 97 % 256, 100 * 29 % 256)  # the first source's background
    assert pixels_near(pixels, first_source) > 100, "the first source thumbnail is not on screen"


@needs_chromium
@pytest.mark.parametrize(("fragment", "expected"), [
    ("", ["ok/color", "ok/color", "ok/style", "ok/object", "failed/style", "refused/object",
          "unsupported/color"]),
    ("#status=failed", ["failed/style"]),
    ("#status=ok&category=style", ["ok/style"]),
])
def test_filters_by_status_and_category(
        page: Path, tmp_path: Path, fragment: str, expected: list[str]) -> None:
    dom = chromium(tmp_path, page.as_uri() + fragment, "--dump-dom").stdout
    assert visible_rows(dom) == expected
    assert f">{len(expected)} shown<" in dom


def test_small_runs_inline_their_thumbnails(page: Path) -> None:
    html = page.read_text()
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == 7 + 4  # a source per row, an edited image per ok row
    assert all(s.startswith("data:image/jpeg;base64,") for s in sources)
    assert not re.search(r'(src|href)="https?:', html), "the page must open without a network"


def test_large_runs_write_thumbnail_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gallery, "INLINE_LIMIT", 0)
    page = write_gallery(make_output_folder(tmp_path / "out"))
    sources = re.findall(r'<img src="([^"]+)"', page.read_text())
    assert sources and all((page.parent / s).is_file() and s.startswith("gallery/") for s in sources)


def test_rows_per_status_are_capped_and_broken_images_are_shown(tmp_path: Path) -> None:
    rows = [*default_rows(), make_row(7)]
    rows[0]["edited_image"] = {"bytes": b"not an image", "path": None}
    page = write_gallery(make_output_folder(tmp_path / "out", rows), max_rows_per_status=2)
    html = page.read_text()
    assert html.count('<article class="row"') == 2 + 1 + 1 + 1
    assert "does not decode" in html
    assert "8 rows: 5 ok, 1 failed, 1 refused, 1 unsupported" in html
