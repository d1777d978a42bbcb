"""What every batch command (``prepare``, ``downscale``, ``process``, ``evaluate``) shares about files:
which inputs a folder holds, where their outputs go, and how one file's fate is told.

Contracts:

- :func:`walk`: a file is taken as given; a folder is walked (recursively unless ``recursive=False``)
  keeping names whose suffix, in any case, is one of ``suffixes`` (by default
  :data:`srpipe.imaging.formats.IMAGE_SUFFIXES`, the one list of image suffixes). Hidden files and
  folders (leading ``.``, which includes the temporaries of ``imaging.atomic``) are skipped.
  Symlinked folders are never followed, so a walk cannot loop or leave the tree; symlinked files are
  kept, and one that is broken or loops fails when it is read, with the system's reason. A subfolder
  that cannot be listed is returned in ``Walk.unreadable`` with the system's reason; the folder given
  itself is an ``InputError``. Files come sorted by their relative path (as a string), whatever the
  listing order.
- :func:`plan_outputs`: the relative tree is mirrored; the suffix is kept or replaced by the target.
  Names never collide, compared case-insensitively (macOS and Windows file systems): a file whose name
  does not change keeps it; a file that would take a name already claimed keeps its old suffix in the
  name when it had another format (``a.jpg`` → ``a.jpg.png`` beside ``a.png``), then ``-2``, ``-3``
  ... are added to the stem until the name is free. Decided over the whole list, independent of its
  order, so every shard and every rerun agrees.
- :func:`failure_reason`: any exception as one line, without the file's own path (the report names
  the file beside it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from srpipe.errors import InputError, SrpipeError
from srpipe.imaging.atomic import listing_errors
from srpipe.imaging.formats import IMAGE_SUFFIXES

__all__ = ["IMAGE_SUFFIXES", "InputFile", "Outcome", "Status", "Walk", "failure_reason", "plan_outputs",
           "walk"]

Status = Literal["ok", "skipped", "failed"]


@dataclass(frozen=True)
class InputFile:
    """One input: its path and its path relative to the walked folder (the name alone for a file)."""

    path: Path
    rel: PurePosixPath


@dataclass(frozen=True)
class Outcome:
    """What became of one input (a file, or a folder that could not be listed): its status and, unless
    it is ``ok``, a one-line reason; ``output`` where it was (or would have been) written."""

    source: Path
    status: Status
    reason: str = ""
    output: Path | None = None


@dataclass(frozen=True)
class Walk:
    """The inputs :func:`walk` found, and the subfolders it could not list (``failed`` outcomes whose
    reason is ``cannot list the folder: <the system's reason>``)."""

    files: tuple[InputFile, ...]
    unreadable: tuple[Outcome, ...] = ()


def walk(root: Path, *, suffixes: Iterable[str] = IMAGE_SUFFIXES, recursive: bool = True) -> Walk:
    """The inputs under ``root`` (see the module docstring). Raises ``InputError`` when ``root`` does
    not exist or cannot be listed."""
    root = Path(root)
    if root.is_file():
        return Walk((InputFile(root, PurePosixPath(root.name)),))
    if not root.is_dir():
        raise InputError(f"{root}: no such file or folder")
    wanted = {s.lower() for s in suffixes}
    unreadable: list[tuple[Path, str]] = []
    found: list[InputFile] = []
    for folder, dirs, names in os.walk(root, onerror=listing_errors(root, unreadable), followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        rel_folder = PurePosixPath(Path(folder).relative_to(root).as_posix())
        found.extend(InputFile(Path(folder) / name, rel_folder / name) for name in names
                     if not name.startswith(".") and Path(name).suffix.lower() in wanted)
    found.sort(key=lambda f: str(f.rel))
    return Walk(tuple(found), tuple(Outcome(folder, "failed", why) for folder, why in unreadable))


def plan_outputs(rels: Sequence[PurePosixPath], suffix: str | None = None) -> list[PurePosixPath]:
    """Collision-free output paths relative to the output folder, one per input in the same order:
    ``rels`` mirrored, their suffix replaced by ``suffix`` (kept when None). Policy: module docstring."""
    wanted = [r if suffix is None else r.with_suffix(suffix) for r in rels]
    taken: set[str] = set()
    result: dict[int, PurePosixPath] = {}
    # Files whose name does not change claim it first; then the others, both in sorted order.
    for i in sorted(range(len(rels)), key=lambda i: (rels[i].name != wanted[i].name, str(rels[i]))):
        rel, candidate = rels[i], wanted[i]
        if str(candidate).casefold() in taken and rel.suffix.lower() != candidate.suffix.lower():
            candidate = rel.with_name(rel.name + candidate.suffix)
        n = 2
        while str(candidate).casefold() in taken:
            candidate = rel.with_name(f"{rel.stem}-{n}{wanted[i].suffix}")
            n += 1
        taken.add(str(candidate).casefold())
        result[i] = candidate
    return [result[i] for i in range(len(rels))]


def failure_reason(exc: BaseException, path: Path | str | None = None) -> str:
    """Why a file failed, in one line: srpipe's own errors and ``ValueError`` by their message, an
    ``OSError`` by the system's reason (and the path it concerns when that is not ``path``), anything
    else by its type and message. A leading ``"<path>: "`` is dropped, as the report names the file."""
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc)
        if exc.filename is not None and exc.strerror and str(exc.filename) != str(path):
            text = f"{text}: {exc.filename}"
    elif isinstance(exc, (SrpipeError, ValueError)):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.splitlines()).strip() or type(exc).__name__
    if path is not None and text.startswith(f"{path}: "):
        text = text[len(f"{path}: "):]
    return text
