from __future__ import annotations

import numpy as np
import pytest
from helpers import draw_photo
from PIL import Image, ImageOps

from imgedit_ds.edit.backends.pil import OPERATIONS, PilBackend, parse_operation
from imgedit_ds.edit.base import EditRequest, SourceImage
from imgedit_ds.instruct.template import TEMPLATES


@pytest.mark.parametrize("op", sorted(TEMPLATES))
def test_every_template_phrasing_is_performed(op: str) -> None:
    for phrasing in TEMPLATES[op][1]:
        assert parse_operation(phrasing)[0] == op, phrasing


@pytest.mark.parametrize("text", [
    "Change the vase to red.", "Make the dog look cool.", "Rotate the image 45 degrees.",
    "Make it black and white and blur it.", "The woman is dancing with the prince in a sacred ballroom.", "",
    "Rotate the image 90 degrees and flip it horizontally.", "Make the image slightly less blurry.",
    "Make it less warm.", "Make the image less contrasty.", "Rotate the image 90 degrees and 180 degrees.",
])
def test_other_instructions_are_unsupported(text: str) -> None:
    assert parse_operation(text)[0] is None


@pytest.mark.parametrize("text,op", [
    ("rotate 90 degrees to the left", "rotate_90_ccw"), ("Rotate by 270° counterclockwise", "rotate_90_cw"),
    ("please mirror the photo", "flip_horizontal"), ("flip it upside down", "flip_vertical"),
])
def test_free_phrasings(text: str, op: str) -> None:
    assert parse_operation(text)[0] == op


def _edit(instruction: str, *images: Image.Image):
    sources = [SourceImage(image=im, data=b"", format="PNG") for im in images]
    return PilBackend().edit_batch([EditRequest("r", instruction, sources, seed=0)])[0]


def test_edits_are_pixel_exact_and_change_the_image() -> None:
    photo = draw_photo((60, 40))
    rotated = _edit("Rotate the image 90 degrees clockwise.", photo)
    assert rotated.status == "ok" and rotated.image.size == (40, 60)
    assert np.array_equal(np.asarray(rotated.image), np.asarray(photo.rotate(-90, expand=True)))
    gray = _edit("Convert the photo to grayscale.", photo).image
    assert np.array_equal(np.asarray(gray)[..., 0], np.asarray(ImageOps.grayscale(photo)))
    for op, fn in OPERATIONS.items():
        assert not np.array_equal(np.asarray(fn(photo).resize(photo.size)), np.asarray(photo)), op


def test_unsupported_is_reported_never_copied() -> None:
    result = _edit("Change the vase to red.", draw_photo())
    assert result.status == "unsupported" and result.image is None and "vase" in result.error
    two = _edit("Invert the colors of the image.", draw_photo(), draw_photo(seed=2))
    assert two.status == "unsupported" and "one image" in two.error
