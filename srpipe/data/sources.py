"""Finding the input images of ``srpipe prepare`` and splitting them into train and validation.

Two layouts are recognised under ``ROOT``:

- **DIV2K**: ``ROOT/DIV2K_train_HR/`` (required) and ``ROOT/DIV2K_valid_HR/`` (optional; without it the
  validation images are held out of the training folder as below). Official LR files
  ``ROOT/DIV2K_{train,valid}_LR_bicubic/X{s}/NNNNx{s}.png`` are attached to their HR image when present.
- **Any folder**: every image file in the tree, as :func:`srpipe.batch.walk` finds them (the suffixes
  of :data:`srpipe.batch.IMAGE_SUFFIXES`, any case; hidden files and folders skipped). ``valid_count``
  images are held out for validation: those whose
  ``sha256(f"{seed}:{relative path}")`` sorts first. The split depends only on names and the seed, not
  on listing order or file contents, and adding files rarely moves existing ones across the split.

Relative paths are POSIX strings relative to ``ROOT``; they identify a file in the stores.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from srpipe.batch import IMAGE_SUFFIXES, walk
from srpipe.errors import InputError

DIV2K_SPLITS = ("train", "valid")


@dataclass(frozen=True)
class Source:
    """One input image; ``official_lr`` maps a scale to an official LR file for it, when one exists."""

    path: Path
    rel: str
    official_lr: dict[int, Path] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class InputSet:
    """The inputs of one prepare run, each split sorted by relative path."""

    root: Path
    layout: Literal["div2k", "folder"]
    train: tuple[Source, ...]
    valid: tuple[Source, ...]


def _images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (:func:`srpipe.batch.walk`), sorted by relative path; none when
    ``folder`` does not exist (an optional ``DIV2K_valid_HR``).

    Raises ``InputError`` for a folder in the tree that cannot be listed: a store silently missing
    its images would look complete."""
    if not folder.is_dir():
        return []
    found = walk(folder)
    for failed in found.unreadable[:1]:
        raise InputError(f"{failed.source}: {failed.reason}; fix its permissions or move it out of the "
                         "input folder")
    return [f.path for f in found.files]


def _split_key(rel: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{rel}".encode()).hexdigest()


def split_holdout(rels: list[str], valid_count: int, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic (train, valid) split of relative paths; both returned sorted."""
    ranked = sorted(rels, key=lambda r: _split_key(r, seed))
    return sorted(ranked[valid_count:]), sorted(ranked[:valid_count])


def _official_lr(root: Path, split: str, image: Path, scales: tuple[int, ...]) -> dict[int, Path]:
    found = {}
    for s in scales:
        candidate = root / f"DIV2K_{split}_LR_bicubic" / f"X{s}" / f"{image.stem}x{s}.png"
        if candidate.is_file():
            found[s] = candidate
    return found


def find_inputs(root: Path, *, scales: tuple[int, ...], valid_count: int, seed: int = 0) -> InputSet:
    """Find and split the inputs under ``root``.

    Raises ``InputError`` when ``root`` is missing or not a folder, holds no images, or holds too few
    for ``valid_count`` validation images plus at least one training image.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: input folder does not exist")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; give the folder that holds the images")

    def source(path: Path, split: str | None) -> Source:
        lr = _official_lr(root, split, path, scales) if split else {}
        return Source(path=path, rel=path.relative_to(root).as_posix(), official_lr=lr)

    if (root / "DIV2K_train_HR").is_dir():
        train = [source(p, "train") for p in _images(root / "DIV2K_train_HR")]
        valid = [source(p, "valid") for p in _images(root / "DIV2K_valid_HR")]
        if not train:
            raise InputError(f"{root / 'DIV2K_train_HR'}: no images found ({', '.join(IMAGE_SUFFIXES)})")
        if not valid:  # no official validation split: hold some out of the training folder
            train, valid = _holdout(root, train, valid_count, seed)
        return InputSet(root, "div2k", tuple(train), tuple(valid))
    images = [source(p, None) for p in _images(root)]
    if not images:
        raise InputError(f"{root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} in the tree)")
    train, valid = _holdout(root, images, valid_count, seed)
    return InputSet(root, "folder", tuple(train), tuple(valid))


def _holdout(
    root: Path, items: list[Source], valid_count: int, seed: int
) -> tuple[list[Source], list[Source]]:
    if valid_count >= len(items):
        raise InputError(f"{root}: only {len(items)} images; holding out {valid_count} for validation "
                         "would leave none for training (lower --valid-count)")
    by_rel = {s.rel: s for s in items}
    train, valid = split_holdout(list(by_rel), valid_count, seed)
    return [by_rel[r] for r in train], [by_rel[r] for r in valid]


def fingerprint(sources: tuple[Source, ...] | list[Source]) -> str:
    """sha256 over (relative path, size, mtime_ns) of every source: cheap change detection for re-runs.

    An edit that keeps both size and modification time is not detected (use ``--force``).
    """
    h = hashlib.sha256()
    for s in sources:
        st = s.path.stat()
        h.update(f"{s.rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        for scale, lr in sorted(s.official_lr.items()):
            h.update(f"x{scale}:{lr.stat().st_size}\n".encode())
    return h.hexdigest()
