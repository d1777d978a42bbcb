"""Where exactly ``srpipe process`` writes, and which shard does what.

The inputs are walked and their outputs named by :mod:`srpipe.batch` (``walk``, ``plan_outputs``:
the mirrored tree, no collisions), over the whole list before sharding, so every shard agrees.

Contracts:

- ``shard_of``: a stable hash of the relative path, so shards are disjoint, cover everything, and do
  not move when files are added.
- ``safe_output_path``: refuses anything that would land outside ``--out`` (``..``, absolute parts,
  folders that are symlinks leading elsewhere) or write through a symlink, or onto the input itself.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from srpipe.errors import OutputError, UsageError
from srpipe.imaging.atomic import check_writable_folder

FORMAT_SUFFIX = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif"}  # --format; "same": none


@dataclass(frozen=True)
class Job:
    """One input file, its path relative to the input root, and its output relative to ``--out``."""

    source: Path
    rel: PurePosixPath
    out_rel: PurePosixPath


def shard_of(rel: PurePosixPath, count: int) -> int:
    """Which of ``count`` shards handles ``rel`` (stable across runs, machines and file additions)."""
    digest = hashlib.sha1(os.fsencode(str(rel))).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str | None, environ: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """``"K/N"`` (0 <= K < N) → ``(K, N)``; without it, torchrun's RANK/WORLD_SIZE; else ``(0, 1)``."""
    if text is None:
        if "WORLD_SIZE" in environ and "RANK" in environ:
            text = f"{environ['RANK']}/{environ['WORLD_SIZE']}"
        else:
            return 0, 1
    k_text, sep, n_text = text.partition("/")
    try:
        k, n = int(k_text), int(n_text)
    except ValueError:
        k, n = -1, 0
    if not sep or not 0 <= k < n:
        raise UsageError(f"--shard must be K/N with 0 <= K < N (e.g. 0/4 ... 3/4), got '{text}'")
    return k, n


def check_roots(source: Path, out: Path) -> None:
    """Refuse an ``--out`` that is, or lies inside, the input folder (outputs would mix with inputs),
    and one that cannot be written (``OutputError``: read-only, or a file in its path), before any
    work is done."""
    src, dst = source.resolve(), out.resolve()
    if source.is_dir() and (dst == src or src in dst.parents):
        raise UsageError(f"--out {out} is inside the input folder {source}; srpipe never writes into "
                         "its input: choose an output folder outside it")
    if dst.exists() and not dst.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    check_writable_folder(out)


def safe_output_path(out_root: Path, rel: PurePosixPath, source: Path) -> Path:
    """Create the parent folders of ``out_root / rel`` and return the path, or raise ``OutputError``."""
    if rel.is_absolute() or any(part in ("", ".", "..") for part in rel.parts):
        raise OutputError(f"{rel}: refusing an output path that is absolute or contains '..'")
    root = out_root.resolve()
    path = out_root.joinpath(*rel.parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    parent = path.parent.resolve()
    if parent != root and root not in parent.parents:
        raise OutputError(f"{path}: its folder leads outside --out (symlink to {parent}); not writing there")
    if path.is_symlink():
        raise OutputError(f"{path}: is a symlink; refusing to write through it")
    if path.exists() and source.exists() and os.path.samefile(path, source):
        raise OutputError(f"{path}: is the input file itself; srpipe never overwrites its input")
    remove_stale_temporaries(path)
    return path


def remove_stale_temporaries(path: Path) -> None:
    """Delete what a killed earlier run left while writing ``path``: the hidden temporaries of
    ``imaging.atomic.atomic_path`` (``.<name>.<8 hex>.tmp``). Only that exact pattern is touched."""
    pattern = re.compile(rf"\.{re.escape(path.name[:120])}\.[0-9a-f]{{8}}\.tmp")
    for candidate in path.parent.glob(f".{glob.escape(path.name[:120])}.*.tmp"):
        if pattern.fullmatch(candidate.name) and candidate.is_file() and not candidate.is_symlink():
            with contextlib.suppress(OSError):
                candidate.unlink()
