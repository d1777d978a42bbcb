"""Progress reporting contract between the library and the CLI.

Library functions take an optional ``progress: ProgressFn | None``. They call it with a ``Progress``
record whenever something countable advances; the CLI renders it (rich), tests may record it.
The library never imports rich.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """One progress update.

    ``task`` names the bar (e.g. ``"prepare"``), ``done``/``total`` count units (``total`` None when
    unknown), ``info`` is a short free-text status such as ``"12.3 MP/s"`` or ``"loss 0.0213"``.
    """

    task: str
    done: int
    total: int | None = None
    info: str = ""


ProgressFn = Callable[[Progress], None]


def report(
    progress: ProgressFn | None, task: str, done: int, total: int | None = None, info: str = ""
) -> None:
    """Call ``progress`` if one was given."""
    if progress is not None:
        progress(Progress(task, done, total, info))
