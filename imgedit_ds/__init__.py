"""imgedit-ds: build image-editing training data as Hugging Face datasets.

    from imgedit_ds import edit_dataset, EditFunction, prepare, output_features
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "edit_dataset": "imgedit_ds.pipeline",
    "run": "imgedit_ds.pipeline",
    "compose_config": "imgedit_ds.pipeline",
    "EditFunction": "imgedit_ds.edit.map_fn",
    "prepare": "imgedit_ds.read.columns",
    "output_features": "imgedit_ds.schema",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import on first use, so `import imgedit_ds` stays cheap."""
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'imgedit_ds' has no attribute {name!r}")
