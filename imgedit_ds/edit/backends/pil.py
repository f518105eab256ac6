"""`backend=pil`: exact programmatic edits, offline, with pixel-exact targets.

An instruction is performed only when it clearly asks for exactly one known operation and every
word in it is one this backend understands; anything else ("Change the vase to red.") is
`unsupported`, never a silent copy of the input.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from imgedit_ds.edit.base import UNSUPPORTED, EditBackend, EditRequest, EditResult
from imgedit_ds.instruct.template import TEMPLATES

Op = Callable[[Image.Image], Image.Image]


def _channel_gain(red: float, blue: float) -> Op:
    def apply(img: Image.Image) -> Image.Image:
        r, g, b = img.split()
        r = r.point(lambda v: min(255, round(v * red)))
        b = b.point(lambda v: min(255, round(v * blue)))
        return Image.merge("RGB", (r, g, b))

    return apply


def _sepia(img: Image.Image) -> Image.Image:
    return ImageOps.colorize(ImageOps.grayscale(img), black=(38, 24, 10), white=(255, 240, 196))


def _blur(img: Image.Image) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius=max(1.0, min(img.size) / 150)))


def _zoom_center(img: Image.Image) -> Image.Image:
    w, h = img.size
    cw, ch = max(1, round(w / 1.5)), max(1, round(h / 1.5))
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.LANCZOS)


OPERATIONS: dict[str, Op] = {
    "grayscale": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "sepia": _sepia,
    "invert": ImageOps.invert,
    "rotate_90_cw": lambda im: im.transpose(Image.Transpose.ROTATE_270),
    "rotate_180": lambda im: im.transpose(Image.Transpose.ROTATE_180),
    "rotate_90_ccw": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "flip_horizontal": ImageOps.mirror,
    "flip_vertical": ImageOps.flip,
    "brighten": lambda im: ImageEnhance.Brightness(im).enhance(1.35),
    "darken": lambda im: ImageEnhance.Brightness(im).enhance(0.7),
    "contrast_up": lambda im: ImageEnhance.Contrast(im).enhance(1.5),
    "contrast_down": lambda im: ImageEnhance.Contrast(im).enhance(0.6),
    "saturate": lambda im: ImageEnhance.Color(im).enhance(1.6),
    "desaturate": lambda im: ImageEnhance.Color(im).enhance(0.45),
    "blur": _blur,
    "sharpen": lambda im: im.filter(ImageFilter.UnsharpMask(radius=2, percent=160, threshold=2)),
    "posterize": lambda im: ImageOps.posterize(im, 3),
    "warmer": _channel_gain(red=1.12, blue=0.88),
    "cooler": _channel_gain(red=0.88, blue=1.12),
    "zoom_center": _zoom_center,
}

# Keyword patterns per operation family; rotation is resolved separately from its angle.
PATTERNS: dict[str, str] = {
    "grayscale": r"gr[ae]y ?scale|black[- ]and[- ]white|monochrome|remove (?:all )?(?:the )?colou?rs?",
    "sepia": r"sepia",
    "invert": r"invert|negative",
    "rotate": r"rotat\w*|quarter turn|half a turn|half turn",
    "flip": r"flip\w*|mirror\w*",
    "brighten": r"brighter|brighten|(?:increase|raise|boost) (?:the )?brightness|lighten",
    "darken": r"darker|darken|(?:decrease|reduce|lower) (?:the )?brightness",
    "contrast_up": r"(?:increase|boost|raise|more|higher) (?:the )?contrast|(?:more )?contrasty",
    "contrast_down": r"(?:decrease|reduce|lower|less) (?:the )?contrast|flatter",
    "saturate": r"more saturated|(?:increase|boost|raise) (?:the )?(?:colou?r )?saturation|more vivid",
    "desaturate": r"less saturated|(?:decrease|reduce|lower) (?:the )?(?:colou?r )?saturation|mute\w*",
    "blur": r"blur\w*",
    "sharpen": r"sharpen\w*|sharper|crisper",
    "posterize": r"posteri[sz]\w*|poster",
    "warmer": r"warmer|warm",
    "cooler": r"cooler|cool",
    "zoom_center": r"zoom\w*|crop to the (?:middle|cent(?:er|re))",
}

EXTRA_WORDS = set("""a an the this that it its to of in on by and with into please slightly bit little
much more less image photo picture photograph degrees degree clockwise counterclockwise anticlockwise
counter anti left right up down colour color colours colors tone tones whole entire overall
make give apply turn rotate set""".split())  # noqa: SIM905 (a word list reads best as text)
_VOCABULARY = {w for _, (_, ph) in TEMPLATES.items() for p in ph for w in re.findall(r"[a-z]+", p.lower())}
_VOCABULARY.update(EXTRA_WORDS)


def _rotation(text: str) -> str | None:
    degrees = re.search(r"(\d+)\s*(?:°|degrees?)", text)
    if degrees:
        angle = int(degrees.group(1))
    elif "quarter" in text:
        angle = 90
    elif "half" in text or "upside down" in text:
        angle = 180
    else:
        return None
    counter = re.search(r"counter[- ]?clockwise|anti[- ]?clockwise|to the left|\bleft\b", text)
    clockwise = (-angle if counter else angle) % 360
    return {90: "rotate_90_cw", 180: "rotate_180", 270: "rotate_90_ccw"}.get(clockwise)


def parse_operation(instruction: str) -> tuple[str | None, str]:
    """Return (operation, reason); operation is None when pil cannot perform the instruction."""
    text = " ".join(instruction.lower().split())
    unknown = sorted({w for w in re.findall(r"[a-z]+", text) if w not in _VOCABULARY})
    if unknown:
        return None, f"words outside backend=pil's operations: {', '.join(unknown[:5])}"
    families = [name for name, pattern in PATTERNS.items() if re.search(rf"\b(?:{pattern})\b", text)]
    leftover = text
    for name in families:
        leftover = re.sub(rf"\b(?:{PATTERNS[name]})\b", " ", leftover)
    # "less blurry", "more warm": a degree the matched words do not carry would invert the edit.
    if re.search(r"\b(?:less|more)\b", leftover):
        return None, "a degree (less/more) that backend=pil's operations do not express"
    if len(re.findall(r"\d+\s*(?:°|degrees?)", text)) > 1:
        return None, "several angles"
    if "rotate" in families and "flip" in families:
        return None, "several operations: rotate and flip"
    if "rotate" in families:
        op = _rotation(text)
        families = [f for f in families if f != "rotate"] + ([op] if op else [])
        if op is None:
            return None, "rotation by an angle other than 90, 180 or 270 degrees"
    if "flip" in families:
        vertical = re.search(r"vertical|top to bottom|bottom to top|upside", text)
        families = [f for f in families if f != "flip"]
        families.append("flip_vertical" if vertical else "flip_horizontal")
    if "sepia" in families and "warmer" in families:
        families.remove("warmer")
    if len(families) != 1:
        return None, "no known operation" if not families else f"several operations: {families}"
    return families[0], ""


class PilBackend(EditBackend):
    """Pillow operations chosen from the instruction. Needs nothing but Pillow."""

    name: ClassVar[str] = "pil"
    model: str = "pillow"

    def params(self) -> dict[str, Any]:
        return {"operations_version": 1}

    def edit_batch(self, requests: list[EditRequest]) -> list[EditResult]:
        return [self.edit_one(r) for r in requests]

    def edit_one(self, request: EditRequest) -> EditResult:
        op, reason = parse_operation(request.instruction)
        if op is None:
            return EditResult(status=UNSUPPORTED, error=f"unsupported instruction: {reason}")
        if len(request.images) != 1:
            return EditResult(
                status=UNSUPPORTED,
                error=f"unsupported instruction: backend=pil edits one image, the row has {len(request.images)}",
            )
        return EditResult(status="ok", image=OPERATIONS[op](request.images[0]), params={"operation": op})
