"""The CLI's output channels: the one stderr console (logs, progress bars, notes) and JSON on stdout.

Only the CLI imports this module (and :mod:`srpipe.render`); rich is imported inside the functions so
``srpipe --help`` stays instant. The library reports progress through ``ProgressFn`` and never prints.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from collections.abc import Iterator
from typing import Any

import click

from srpipe.progress import Progress, ProgressFn


@functools.cache
def stderr_console() -> Any:
    """The one stderr console shared by logs, progress bars and notes (so bars and logs never tear)."""
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def progress_bars(enabled: bool = True) -> Iterator[ProgressFn]:
    """Yield a ``ProgressFn`` that draws one rich bar per ``Progress.task`` on stderr.

    The bars start at the first update (a command that fails early prints only its error) and are off
    under ``srpipe -q``.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    ctx = click.get_current_context(silent=True)
    if not enabled or (ctx is not None and ctx.find_root().params.get("quiet")):
        yield lambda p: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    rich = RichProgress(*columns, console=stderr_console(), transient=False)
    bars: dict[str, Any] = {}

    def update(p: Progress) -> None:
        if not bars:
            rich.start()
        if p.task not in bars:
            bars[p.task] = rich.add_task(p.task, total=p.total, info=p.info)
        rich.update(bars[p.task], completed=p.done, total=p.total, info=p.info)

    try:
        yield update
    finally:
        if bars:
            rich.stop()


def json_props(props: dict[str, str]) -> dict[str, Any]:
    """ONNX metadata (always strings) for JSON: numbers and arrays of numbers as such, everything else
    (text, and hashes however many of their digits are decimal) unchanged."""
    return {key: text if key.endswith("hash") else _json_number(text) for key, text in props.items()}


def _json_number(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    numbers = value if isinstance(value, list) else [value]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        return value
    return text


def emit_json(payload: Any) -> None:
    """Write a machine-readable result to stdout: valid UTF-8 JSON (ASCII, escapes for the rest) even
    when a file name is not valid UTF-8 (see ``json_text``)."""
    click.echo(json.dumps(_json_safe(payload), indent=2, default=lambda v: json_text(str(v))))


def json_text(text: str) -> str:
    """``text`` with the bytes of a file name that are not valid UTF-8 written as ``\\xNN``.

    Python decodes such bytes on Linux to lone surrogates (``surrogateescape``), which no strict JSON
    reader accepts; ``a\\xff.png`` in a report names the file whose bytes are ``a``, 0xFF, ``.png``
    (``os.fsencode`` of the input path). Other lone surrogates become ``\\udXXX``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _json_safe(value: Any) -> Any:
    if isinstance(value, str):
        return json_text(value)
    if isinstance(value, dict):
        return {_json_safe(k) if isinstance(k, str) else k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
