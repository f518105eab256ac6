"""Reading sources: every kind of bad file fails with a cause naming it; odd modes convert right."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from helpers import draw_photo
from PIL import Image

from imgedit_ds.images import ImageEncoder, RowError, load_source, to_rgb


def _cause(ref, **kwargs) -> tuple[str, str]:
    with pytest.raises(RowError) as info:
        load_source(ref, **kwargs)
    return info.value.cause, str(info.value)


def test_bad_files_fail_with_their_cause_and_name(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    draw_photo((64, 64)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    folder = tmp_path / "folder.png"
    folder.mkdir()

    assert _cause(str(tmp_path / "missing.png")) == ("file not found", f"file not found: {tmp_path / 'missing.png'}")
    for path, cause in [(truncated, "truncated or corrupt image"), (empty, "empty file"),
                        (text, "not an image"), (folder, "not a file")]:
        got_cause, message = _cause(str(path))
        assert got_cause == cause
        assert path.name in message
    assert load_source(str(good)).image.size == (64, 64)


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb)  # 144 Mpx in a few kB
    assert bomb.stat().st_size < 100_000
    cause, message = _cause(str(bomb))
    assert cause == "image too large"
    assert "12000x12000" in message and "data.max_pixels" in message
    small = tmp_path / "small.png"
    draw_photo((100, 100)).save(small)
    assert _cause(str(small), max_pixels=5000)[0] == "image too large"


def test_modes_convert_to_rgb_correctly() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red -> white
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4))
    palette.putpalette([0, 0, 255] + [0] * 765)
    palette.info["transparency"] = 1
    assert to_rgb(palette).getpixel((0, 0)) == (0, 0, 255)
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    assert to_rgb(cmyk).getpixel((0, 0)) == (255, 0, 0)
    wide = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert wide.mode.startswith("I;16")
    assert to_rgb(wide).getpixel((0, 0)) == (255, 255, 255)
    half = Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16))
    assert to_rgb(half).getpixel((0, 0)) == (128, 128, 128)
    assert to_rgb(Image.new("L", (4, 4), 77)).getpixel((0, 0)) == (77, 77, 77)
    assert to_rgb(Image.new("LA", (4, 4), (0, 0))).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_png_and_cmyk_jpeg_files_load(tmp_path: Path) -> None:
    wide = tmp_path / "wide.png"
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(wide)
    loaded = load_source(str(wide))
    assert loaded.image.mode == "RGB" and loaded.image.getpixel((7, 7))[0] == round(63000 / 257)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(cmyk)
    r, g, b = load_source(str(cmyk)).image.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_applied_and_stored_bytes_match(tmp_path: Path) -> None:
    photo = draw_photo((80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    photo.save(path, exif=exif, quality=95)
    source = load_source(str(path))
    assert source.image.size == (40, 80)
    stored = ImageEncoder().source_bytes(source)
    assert stored != path.read_bytes()  # re-encoded: the stored image shows what the backend saw
    assert Image.open(io.BytesIO(stored)).size == (40, 80)


def test_plain_png_bytes_are_stored_as_they_came(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    draw_photo().save(path)
    assert ImageEncoder().source_bytes(load_source(str(path))) == path.read_bytes()


def test_transparent_sources_are_stored_as_the_rgb_the_backend_saw(tmp_path: Path) -> None:
    path = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(path)
    stored = Image.open(io.BytesIO(ImageEncoder().source_bytes(load_source(str(path)))))
    assert stored.mode == "RGB" and stored.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encoder_formats_decode(fmt: str) -> None:
    data = ImageEncoder(image_format=fmt).encode(draw_photo())
    assert Image.open(io.BytesIO(data)).format == ("JPEG" if fmt == "jpeg" else fmt.upper())
