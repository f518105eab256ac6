"""Reading source images safely and encoding edited ones.

Every failure here is a `RowError`: it fails one row, with a cause the report can count and a
detail that names the file.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from imgedit_ds.edit.base import SourceImage

# Formats stored as they came (when RGB or gray and not EXIF-rotated); anything else is re-encoded
# so the stored bytes show exactly what the backend saw.
KEEP_AS_IS = {"PNG", "JPEG", "WEBP"}
DEFAULT_MAX_PIXELS = 64_000_000

# Our own pixel limit (below) is the one that applies; Pillow's global check would otherwise warn
# or raise at a limit the user did not choose.
Image.MAX_IMAGE_PIXELS = None
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


class RowError(Exception):
    """A problem with one row; `cause` is short and countable, `detail` names the file."""

    def __init__(self, cause: str, detail: str = "") -> None:
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause
        self.detail = detail


def read_image_bytes(ref: dict[str, Any] | str) -> tuple[bytes, str]:
    """Return (bytes, name) of an image given as a path or a datasets Image dict {bytes, path}."""
    if isinstance(ref, str):
        ref = {"bytes": None, "path": ref}
    path = ref.get("path") or ""
    if ref.get("bytes") is not None:
        return bytes(ref["bytes"]), os.path.basename(path) or "<embedded image>"
    if not path:
        raise RowError("missing image", "the row has an empty image path")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise RowError("file not found", path) from None
    except IsADirectoryError:
        raise RowError("not a file", path) from None
    except OSError as err:
        raise RowError("unreadable file", f"{path} ({err.strerror or err})") from None
    if not data:
        raise RowError("empty file", path)
    return data, path


def decode_image(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> SourceImage:
    """Decode fully, check the pixel limit, apply EXIF orientation and convert to RGB."""
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as err:
        raise RowError("not an image", f"{name} ({type(err).__name__})") from None
    width, height = img.size
    if width * height > max_pixels:
        raise RowError(
            "image too large",
            f"{name} is {width}x{height} = {width * height} pixels, over data.max_pixels={max_pixels}",
        )
    fmt = img.format or "UNKNOWN"
    try:
        img.load()
    except Exception as err:
        raise RowError("truncated or corrupt image", f"{name} ({err})") from None
    rotated = img.getexif().get(0x0112, 1) not in (0, 1)
    rgb = to_rgb(ImageOps.exif_transpose(img) if rotated else img)
    # Stored bytes must decode to what the backend saw: plain RGB (or gray) files stay as they came;
    # transparency, palettes, CMYK, 16-bit and EXIF rotations are stored as the converted RGB image.
    needs_reencode = fmt not in KEEP_AS_IS or rotated or img.mode not in ("RGB", "L")
    return SourceImage(image=rgb, data=b"" if needs_reencode else data, format=fmt)


def load_source(ref: dict[str, Any] | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> SourceImage:
    data, name = read_image_bytes(ref)
    return decode_image(data, name, max_pixels)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited onto white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _wide_to_rgb(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "PA", "La"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    return img.convert("RGB")


def _wide_to_rgb(img: Image.Image) -> Image.Image:
    """16-bit and float images: scale the full range to 8 bits instead of clipping at 255."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        arr = arr / 257.0
    elif arr.size and arr.max() > 255:
        arr = arr * (255.0 / arr.max())
    elif img.mode == "F" and arr.size and arr.max() <= 1.0:
        arr = arr * 255.0
    gray = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    return gray.convert("RGB")


@dataclass(frozen=True)
class ImageEncoder:
    """How edited images are stored: output.image_format, png_compress_level, quality."""

    image_format: str = "png"
    png_compress_level: int = 1
    quality: int = 95

    def encode(self, img: Image.Image) -> bytes:
        buf = io.BytesIO()
        fmt = self.image_format.lower()
        if fmt == "png":
            img.save(buf, format="PNG", compress_level=self.png_compress_level)
        elif fmt in ("jpeg", "jpg"):
            to_rgb(img).save(buf, format="JPEG", quality=self.quality)
        elif fmt == "webp":
            img.save(buf, format="WEBP", quality=self.quality)
        else:
            raise ValueError(f"output.image_format={self.image_format!r}: use png, jpeg or webp")
        return buf.getvalue()

    def source_bytes(self, source: SourceImage) -> bytes:
        """The bytes stored for a source image: as it came, unless it had to be normalized."""
        return source.data or self.encode(source.image)


def check_image_bytes(data: bytes) -> str:
    """Decode bytes fully (raises RowError if broken) and return the format name."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as err:
        raise RowError("invalid image bytes", f"{type(err).__name__}: {err}") from None
    return img.format or "UNKNOWN"
