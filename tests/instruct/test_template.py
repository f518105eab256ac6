from __future__ import annotations

from imgedit_ds.edit.backends.pil import parse_operation
from imgedit_ds.instruct.template import TEMPLATES, TemplateInstructions


def test_sampling_is_deterministic_per_row_and_covers_operations() -> None:
    writer = TemplateInstructions(seed=5)
    ids = [f"{i:06d}" for i in range(400)]
    first = writer({"id": ids})
    again = TemplateInstructions(seed=5)({"id": list(reversed(ids))})
    assert first["instruction"] == list(reversed(again["instruction"]))
    ops = {parse_operation(t)[0] for t in first["instruction"]}
    assert ops == set(TEMPLATES)
    assert TemplateInstructions(seed=6)({"id": ids})["instruction"] != first["instruction"]


def test_operations_narrow_the_choice() -> None:
    out = TemplateInstructions(operations=["grayscale", "blur"])({"id": [str(i) for i in range(50)]})
    assert set(out["category"]) == {"color", "filter"}
    assert {parse_operation(t)[0] for t in out["instruction"]} == {"grayscale", "blur"}
