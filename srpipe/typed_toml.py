"""Typed TOML for frozen dataclasses: the one loader behind :mod:`srpipe.config`.

Contract: :func:`from_dict` builds a dataclass from parsed TOML, recursing into nested dataclass
fields, and :func:`apply_overrides` applies ``key=value`` assignments (dotted keys reach nested
configs) with ``dataclasses.replace``. Every key must be a field (unknown keys are rejected, naming
the source and the dotted key and listing the known ones), and every value must fit its annotation
(bool, int, float, str, Path, Literal, unions with None, tuples); arrays become tuples, strings
become paths where annotated so. Range checks belong to the dataclasses themselves (``__post_init__``
raising ``ConfigError`` that names the dotted key); their message gets the source in front. Errors are
``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from srpipe.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any], *, source: str, prefix: str = "") -> T:
    """Build dataclass ``cls`` from parsed TOML, checking every key and value."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{dotted}' (known: {', '.join(sorted(names))})")
        kwargs[key] = _coerce(hints[key], value, source=source, key=dotted)
    try:
        obj = cls(**kwargs)
    except ConfigError as exc:  # the dataclass's own value checks name the dotted key already
        raise ConfigError(f"{source}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'}: {exc}") from exc
    return obj


def apply_overrides(obj: T, assignments: list[str] | tuple[str, ...], *, source: str = "--set") -> T:
    """Return ``obj`` with ``key=value`` assignments applied (dotted keys reach nested configs).

    Values are TOML literals (``lr=2e-4``, ``betas=[0.9, 0.99]``, ``loss="charbonnier"``); a bare word that
    is not valid TOML is taken as a string (``loss=charbonnier``).
    """
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{source}: expected key=value, got '{assignment}'")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        obj = _replace_path(obj, key.split("."), value, source=source, dotted=key)
    return obj


def _replace_path(obj: Any, parts: list[str], value: Any, *, source: str, dotted: str) -> Any:
    names = {f.name for f in dataclasses.fields(obj)}
    head = parts[0]
    if head not in names:
        raise ConfigError(f"{source}: unknown key '{dotted}' (known here: {', '.join(sorted(names))})")
    if len(parts) > 1:
        child = getattr(obj, head)
        if not dataclasses.is_dataclass(child):
            raise ConfigError(f"{source}: '{dotted}': '{head}' has no sub-keys")
        new = _replace_path(child, parts[1:], value, source=source, dotted=dotted)
    else:
        new = _coerce(typing.get_type_hints(type(obj))[head], value, source=source, key=dotted)
    return _replace_checked(obj, head, new, source=source)


def _replace_checked(obj: Any, name: str, value: Any, *, source: str) -> Any:
    try:
        return dataclasses.replace(obj, **{name: value})
    except ConfigError as exc:
        if str(exc).startswith(f"{source}: "):  # raised (and named) by a nested config already
            raise
        raise ConfigError(f"{source}: {exc}") from exc


def _coerce(tp: Any, value: Any, *, source: str, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` and convert it (lists to tuples, str to Path, ...)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: key '{key}' must be {expected}, got {value!r}")

    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad("a table")
        return from_dict(tp, value, source=source, prefix=f"{key}.")
    if origin is Literal:
        if value not in args:
            raise bad("one of " + ", ".join(repr(a) for a in args))
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, source=source, key=key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad("an array")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, source=source, key=key) for v in value)
        if len(value) != len(args):
            raise bad(f"an array of {len(args)} values")
        return tuple(_coerce(a, v, source=source, key=key) for a, v in zip(args, value, strict=True))
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise bad("a path string")
        return Path(value)
    raise ConfigError(f"{source}: key '{key}' has an unsupported type {tp!r}")  # pragma: no cover
