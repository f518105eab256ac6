"""Type checks for options, so `run.seed=1.5` or `data.limit=abc` fail at start with the option's name."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from imgedit_ds.edit.base import ConfigError

_NAMES = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}


def _allowed(hint: Any) -> tuple[tuple[type, ...], bool] | None:
    """The plain types a hint allows and whether None is allowed; None for hints not checked here."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    plain = tuple(a for a in args if a in _NAMES)
    if len(plain) + (type(None) in args) != len(args):
        return None  # lists, dicts and other shapes are left to the code that uses them
    return plain, type(None) in args


def check_value(option: str, value: Any, hint: Any) -> None:
    allowed = _allowed(hint)
    if allowed is None:
        return
    plain, optional = allowed
    if value is None and optional:
        return
    ok = any(
        isinstance(value, t) and not (t in (int, float) and isinstance(value, bool)) for t in plain
    ) or (float in plain and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        wanted = " or ".join(_NAMES[t] for t in plain) + (" or null" if optional else "")
        raise ConfigError(f"{option}={value!r}: use {wanted}")


def check_fields(options: Any, prefix: str, names: dict[str, str] | None = None) -> None:
    """Check every field of a dataclass instance against its annotation; `names` maps field -> option."""
    hints = typing.get_type_hints(type(options))
    for field in dataclasses.fields(options):
        option = (names or {}).get(field.name, f"{prefix}.{field.name}")
        check_value(option, getattr(options, field.name), hints[field.name])
