"""The HDF5 patch-store format (``train.h5`` / ``valid.h5``), specified in docs/store-format.md: its
constants and attributes, and reading it (the writer is :mod:`srpipe.data.writer`).

Contract: a store at its final name is always complete (``StoreWriter`` writes ``<name>.partial`` and
renames it when finished, after setting ``complete``). :func:`open_store` validates a finished store
or raises ``StoreError`` naming the file and saying what to run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from srpipe.errors import StoreError

log = logging.getLogger(__name__)

FORMAT = "srpipe-patch-store"
FORMAT_VERSION = 1
KERNEL = "matlab-bicubic-a-0.5-antialias"
PARTIAL_SUFFIX = ".partial"
CHUNK_TARGET = 120  # HR/LR chunk tile side: why 120, measured, in docs/performance.md (prepare / loader)
Split = Literal["train", "valid"]


@dataclass(frozen=True)
class StoreMeta:
    """What a store is made of; written as root attributes when the store is created."""

    split: Split
    scales: tuple[int, ...]
    hr_size: int  # HR sub-image side (train); 0 for valid
    stride: int  # step between sub-images (train); 0 for valid
    boundary: str
    settings: str  # canonical JSON of the output-affecting settings
    settings_hash: str
    inputs_hash: str


@dataclass(frozen=True)
class StoreInfo:
    """A finished store's attributes, as read by :func:`open_store`."""

    path: Path
    meta: StoreMeta
    n_images: int  # sources that contributed (train) or whole images (valid)
    n_patches: int  # HR sub-images (train); 0 for valid
    n_skipped: int
    srpipe_version: str
    created: str
    scales: tuple[int, ...]  # = meta.scales
    hr_size: int  # = meta.hr_size


def partial_path(final: Path) -> Path:
    """The temporary name a store is written under until it is complete."""
    return final.with_name(final.name + PARTIAL_SUFFIX)


def chunk_side(side: int, target: int = CHUNK_TARGET) -> int:
    """Largest divisor of ``side`` up to ``target`` (no partial edge chunks), else ``min(side, target)``."""
    best = max(d for d in range(1, min(side, target) + 1) if side % d == 0)
    return best if best * 2 > min(side, target) else min(side, target)


def open_read(path: Path, **kwargs: Any) -> h5py.File:
    """Open a store read-only; without file locking where locking fails (NFS without locks, or this
    process holds the file open with locking off). Finished stores are never written to."""
    try:
        return h5py.File(path, "r", **kwargs)
    except OSError as exc:
        if "lock" not in str(exc).lower():
            raise
        return h5py.File(path, "r", locking=False, **kwargs)


def _meta_from_attrs(attrs: Any) -> StoreMeta:
    text = {k: str(attrs[k]) for k in ("boundary", "settings", "settings_hash", "inputs_hash")}
    return StoreMeta(split=str(attrs["split"]), scales=tuple(int(s) for s in attrs["scales"]),  # type: ignore[arg-type]
                     hr_size=int(attrs["hr_size"]), stride=int(attrs["stride"]), **text)


def open_store(path: Path, *, split: Split | None = None) -> StoreInfo:
    """Validate the finished store at ``path`` and return its attributes.

    Raises ``StoreError`` for a missing, unfinished (``.partial``), foreign, newer-format or wrong-split
    file; the message names the file and says to run ``srpipe prepare``.
    """
    path = Path(path)
    hint = "run `srpipe prepare ROOT` (it writes train.h5 and valid.h5 to the workspace's stores/ folder)"
    if path.is_dir():
        raise StoreError(f"{path}: is a folder; expected a store file such as {path / 'train.h5'}")
    if not path.exists():
        partial = partial_path(path)
        extra = f" ({partial.name} exists: a prepare was interrupted; re-run it)" if partial.exists() else ""
        raise StoreError(f"{path}: no such store{extra}; {hint}")
    try:
        with open_read(path) as f:
            attrs = dict(f.attrs)
            if attrs.get("format") != FORMAT:
                raise StoreError(f"{path}: not an srpipe patch store (no format='{FORMAT}'); {hint}")
            version = int(attrs.get("format_version", -1))
            if version > FORMAT_VERSION:
                raise StoreError(f"{path}: store format {version} is newer than this srpipe "
                                 f"({FORMAT_VERSION}); upgrade srpipe or re-run `srpipe prepare`")
            if not bool(attrs.get("complete", False)) or path.name.endswith(PARTIAL_SUFFIX):
                raise StoreError(f"{path}: store is incomplete (an interrupted prepare); "
                                 "re-run `srpipe prepare`")
            meta = _meta_from_attrs(attrs)
            info = StoreInfo(path, meta, n_images=int(attrs["n_images"]), n_patches=int(attrs["n_patches"]),
                             n_skipped=int(attrs["n_skipped"]), srpipe_version=str(attrs["srpipe_version"]),
                             created=str(attrs["created"]), scales=meta.scales, hr_size=meta.hr_size)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read as HDF5 ({exc}); {hint}") from exc
    except KeyError as exc:
        raise StoreError(f"{path}: store lacks attribute {exc}; re-run `srpipe prepare --force`") from exc
    if split is not None and info.meta.split != split:
        raise StoreError(f"{path}: is a {info.meta.split} store, expected a {split} store")
    return info


def read_table(path: Path, group: str) -> dict[str, np.ndarray]:
    """Columns of ``/sources`` or ``/skipped`` (strings decoded); ``/official_lr`` as ``{"rows": ...}``."""
    with open_read(path) as f:
        items = [("rows", f[group])] if isinstance(f[group], h5py.Dataset) else list(f[group].items())
        return {k: (ds.asstr()[()] if ds.dtype.kind == "O" else ds[()]) for k, ds in items}


def settings_digest(settings: dict[str, Any]) -> tuple[str, str]:
    """Canonical JSON of ``settings`` and its sha256 (what ``settings_hash`` means)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return text, hashlib.sha256(text.encode()).hexdigest()
