"""Writing a patch store (docs/store-format.md; the format and its reader are :mod:`srpipe.data.store`).

Contract: :class:`StoreWriter` writes ``<name>.partial`` and renames it in :meth:`StoreWriter.finalize`
after setting ``complete``, so a store at its final name is always complete. A ``.partial`` file records
the inputs it has committed (``inputs_done``); a writer opened on it with the same ``settings_hash`` and
``inputs_hash`` resumes there, anything else starts over.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import threading
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from srpipe import __version__
from srpipe.data import store as st
from srpipe.data.recovery import clear_open_for_write, opens_cleanly
from srpipe.data.store import FORMAT, FORMAT_VERSION, KERNEL, StoreMeta, chunk_side, partial_path
from srpipe.errors import StoreError

log = logging.getLogger("srpipe.data.store")
_STR = h5py.string_dtype("utf-8")


def _grow(ds: h5py.Dataset, rows: np.ndarray) -> None:
    ds.resize(ds.shape[0] + len(rows), axis=0)
    ds[ds.shape[0] - len(rows) :] = rows


# Small resizable tables: name -> (dtype, row shape, root attribute counting committed rows).
_TABLES: dict[str, tuple[Any, tuple[int, ...], str]] = {
    "sources/path": (_STR, (), "n_images"), "sources/sha256": ("S64", (), "n_images"),
    "sources/shape": (np.int32, (3,), "n_images"), "sources/bit_depth": (np.uint8, (), "n_images"),
    "skipped/path": (_STR, (), "n_skipped"), "skipped/kind": (_STR, (), "n_skipped"),
    "skipped/reason": (_STR, (), "n_skipped"), "official_lr": (np.int64, (5,), "n_official")}
_TRAIN_TABLES = {"patch_source": (np.int32, (), "n_patches"), "patch_box": (np.int32, (4,), "n_patches")}
_COUNTERS = ("inputs_done", "n_images", "n_patches", "n_skipped", "n_official")


class StoreWriter:
    """Appends inputs to ``<final>.partial``; :meth:`finalize` renames it to ``final``.

    Use :meth:`open` (it resumes or restarts). Sub-images and whole images are written at once; the
    small tables (sources, boxes, skipped, official-LR rows) are buffered until :meth:`commit`, which
    writes them, records how many inputs are done and flushes. A resume drops everything after the last
    commit, so a kill loses at most the inputs since then.
    """

    def __init__(self, final: Path, f: h5py.File, meta: StoreMeta) -> None:
        self.final, self.temp, self.f, self.meta = final, partial_path(final), f, meta
        names = list(_TABLES) + (["hr", *(f"lr_x{s}" for s in meta.scales), *_TRAIN_TABLES]
                                 if meta.split == "train" else [])
        self._ds: dict[str, h5py.Dataset] = {n: f[n] for n in names}  # h5py path lookups are slow
        self._pending: dict[str, list[Any]] = {n: [] for n in (*_TABLES, *_TRAIN_TABLES)}
        self._writeback: threading.Thread | None = None

    @classmethod
    def open(cls, final: Path, meta: StoreMeta) -> StoreWriter:
        """Resume ``final.partial`` if made with the same settings and inputs, else recreate it. A file
        left by a killed writer is reopened after :func:`clear_open_for_write`."""
        temp = partial_path(final)
        if temp.exists():
            try:
                clear_open_for_write(temp)
                if not opens_cleanly(temp):
                    raise OSError("the leftover does not open cleanly")
                f = h5py.File(temp, "r+")
            except OSError as exc:
                if "lock" in str(exc).lower():
                    raise StoreError(f"{temp}: another srpipe prepare is writing this store") from exc
            else:
                try:
                    if (f.attrs.get("settings_hash"), f.attrs.get("inputs_hash")) == (
                            meta.settings_hash, meta.inputs_hash):
                        writer = cls(final, f, meta)
                        writer._truncate_to_committed()
                        log.info("%s: resuming after %d inputs", temp, writer.inputs_done)
                        return writer
                except (KeyError, OSError, ValueError):  # damaged by the kill: start over
                    pass
                f.close()
            log.info("%s: leftover of an interrupted run (other settings or inputs, or damaged); "
                     "starting over", temp)
            temp.unlink()
        return cls(final, cls._create(temp, meta), meta)

    @staticmethod
    def _create(temp: Path, meta: StoreMeta) -> h5py.File:
        # libver 'latest': dense attribute storage and the extensible-array chunk index for resizable data.
        f = h5py.File(temp, "w", libver="latest")
        f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "complete": False,
                        "split": meta.split, "scales": np.asarray(meta.scales, np.int64),
                        "hr_size": meta.hr_size, "stride": meta.stride, "boundary": meta.boundary,
                        "kernel": KERNEL, "settings": meta.settings, "settings_hash": meta.settings_hash,
                        "inputs_hash": meta.inputs_hash, "srpipe_version": __version__, "created": "",
                        **dict.fromkeys(_COUNTERS, 0)})
        tables = {**_TABLES, **_TRAIN_TABLES} if meta.split == "train" else _TABLES
        for name, (dtype, tail, _) in tables.items():
            f.create_dataset(name, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype,
                             chunks=(max(1, 4096 // max(1, int(np.prod(tail)))), *tail))
        if meta.split == "train":
            p = meta.hr_size
            for name, side in [("hr", p)] + [(f"lr_x{s}", p // s) for s in meta.scales]:
                c = chunk_side(side, st.CHUNK_TARGET)  # read at call time: benchmarks vary it
                f.create_dataset(name, shape=(0, side, side, 3), maxshape=(None, side, side, 3),
                                 dtype=np.uint8, chunks=(1, c, c, 3))
        else:
            f.create_group("images")
        return f

    @property
    def inputs_done(self) -> int:
        return int(self.f.attrs["inputs_done"])

    def _truncate_to_committed(self) -> None:
        """Drop rows written after the last commit (a kill between ``add_*`` and ``commit``)."""
        a = self.f.attrs
        for name, ds in self._ds.items():
            ds.resize(int(a[{**_TABLES, **_TRAIN_TABLES}.get(name, (0, 0, "n_patches"))[2]]), axis=0)
        if self.meta.split == "valid":
            for key in list(self.f["images"]):
                if int(key) >= int(a["n_images"]):
                    del self.f["images"][key]

    def add_source(self, rel: str, sha256: str, shape: tuple[int, int, int], bit_depth: int) -> int:
        """Record a contributing input file; returns its index in ``/sources``."""
        index = self._ds["sources/path"].shape[0] + len(self._pending["sources/path"])
        for name, value in (("path", rel), ("sha256", sha256), ("shape", shape), ("bit_depth", bit_depth)):
            self._pending[f"sources/{name}"].append(value)
        return index

    def add_patches(self, source: int, hr: np.ndarray, lrs: dict[int, np.ndarray], boxes: np.ndarray) -> None:
        """Append ``k`` HR sub-images ``(k, P, P, 3)``, LR ``{s: (k, P/s, P/s, 3)}``, boxes ``(k, 4)``."""
        _grow(self._ds["hr"], hr)
        for s in self.meta.scales:
            _grow(self._ds[f"lr_x{s}"], lrs[s])
        self._pending["patch_source"].extend([source] * len(hr))
        self._pending["patch_box"].extend(boxes.tolist())

    def add_whole(self, source: int, hr: np.ndarray, lrs: dict[int, np.ndarray]) -> None:
        """Store validation image ``source`` whole: ``hr`` (H, W, 3) and ``lr_x{s}`` per scale."""
        group = self.f["images"].create_group(f"{source:06d}")
        group.create_dataset("hr", data=hr)
        for s in self.meta.scales:
            group.create_dataset(f"lr_x{s}", data=lrs[s])

    def add_skipped(self, rel: str, kind: str, reason: str) -> None:
        """Record an input that was not used: ``kind`` "unreadable" or "too-small", and why."""
        for name, value in (("path", rel), ("kind", kind), ("reason", reason)):
            self._pending[f"skipped/{name}"].append(value)

    def add_official_check(self, source: int, scale: int, max_abs: int, n_diff: int, n_total: int) -> None:
        """Record how srpipe's LR compares with an official LR file for one source and scale."""
        self._pending["official_lr"].append((source, scale, max_abs, n_diff, n_total))

    def commit(self, inputs_done: int) -> None:
        """Write the buffered tables, mark the first ``inputs_done`` inputs as done, flush to disk."""
        for name, rows in self._pending.items():
            if rows:
                dtype = self._ds[name].dtype
                _grow(self._ds[name], np.array(rows, dtype=object if dtype.kind == "O" else dtype))
                rows.clear()
        self.f.attrs.update({"inputs_done": inputs_done, "n_images": self._ds["sources/path"].shape[0],
                             "n_skipped": self._ds["skipped/path"].shape[0],
                             "n_official": self._ds["official_lr"].shape[0],
                             "n_patches": self._ds["hr"].shape[0] if self.meta.split == "train" else 0})
        self.f.flush()
        self._start_writeback()

    def _start_writeback(self) -> None:
        """Start pushing what is written so far to disk in the background (``fdatasync`` on its own
        descriptor releases the GIL), unless the last one is still running. Without it the kernel keeps
        gigabytes dirty until :meth:`finalize`'s fsync, which then stalls the run (2.0 of 5.9 s for a
        1.2-GB store, docs/performance.md). Errors are left to that final fsync, which reports them."""
        if self._writeback is not None and self._writeback.is_alive():
            return

        def sync(path: Path = self.temp) -> None:
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    getattr(os, "fdatasync", os.fsync)(fd)  # macOS has no fdatasync
                finally:
                    os.close(fd)
            except OSError as exc:
                log.debug("%s: background writeback failed (the final fsync will tell): %s", path, exc)

        self._writeback = threading.Thread(target=sync, name="srpipe-store-writeback", daemon=True)
        self._writeback.start()

    def _join_writeback(self) -> None:
        if self._writeback is not None:
            self._writeback.join()
            self._writeback = None

    def finalize(self) -> Path:
        """Mark complete, close and atomically rename to the final name."""
        self.f.attrs["complete"] = True
        self.f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.close()
        with open(self.temp, "rb") as fh:
            os.fsync(fh.fileno())  # the rename must not become visible before the data
        os.replace(self.temp, self.final)
        return self.final

    def close(self) -> None:
        """Close without finishing; the ``.partial`` file stays for a later resume."""
        self._join_writeback()
        if self.f.id.valid:
            self.f.close()
