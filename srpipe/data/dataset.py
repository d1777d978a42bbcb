"""Torch Datasets over the patch stores: random aligned LR/HR training pairs and whole validation images.

Contracts:

- :class:`PatchDataset` item ``i`` → ``(lr, hr)``: float32 CHW tensors in [0, 1], ``lr`` is
  ``3×p×p`` and ``hr`` is ``3×(p·s)×(p·s)`` for ``patch_size`` p and ``scale`` s. ``hr`` is cropped at
  an HR offset that is exactly ``s`` times the LR offset, and both get the same flip/rot90 transform, so
  the pair stays aligned. Everything random about item ``i`` comes from :func:`item_draws` ``(seed, i)``
  (a counter-based hash): the same pair in any process, with any number of DataLoader workers.
- With ``length=None`` the dataset has one item per stored sub-image (item ``i`` crops sub-image ``i``);
  with ``length=L`` it has ``L`` items, each cropping a sub-image drawn by its own RNG. Training should use
  ``length = iterations × batch size`` with :class:`PatchLoader` (sequential order, the fast batched
  path): no two items repeat a random draw, and resuming at iteration k starts at item ``k × batch size``.
  A plain ``DataLoader(dataset, ...)`` works too (same items), just slower.
- The HDF5 file is opened lazily in the process that reads (re-opened after a fork, dropped when pickled
  for spawn), so DataLoader workers never share a handle.
- With ``degrade`` (a :class:`~srpipe.config.DegradeConfig` that is enabled) each item's LR is degraded
  after the crop and flip/rot90 (:mod:`srpipe.data.degrade`: blur before the bicubic, noise, JPEG), drawn
  from ``(seed, i)`` too, so the JPEG block grid sits on the patch as it would on a photo.
- :class:`ValidationSet` item → ``(name, lr, hr)``: uint8 HWC arrays of a whole image; ``hr`` is the stored
  HR cropped bottom/right to a multiple of ``scale`` — exactly the image ``lr`` was computed from. With
  ``degrade``, ``lr`` is degraded the same way (its own stream, keyed by the image index: the same
  degraded image at every validation).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset

from srpipe.config import DegradeConfig
from srpipe.data import degrade as deg
from srpipe.data.store import open_read, open_store, read_table
from srpipe.errors import StoreError

# Random crops never hit the same chunk twice in a row, so a big cache only costs memcpy; a few
# chunks' worth lets HDF5 read each touched chunk with one call.
RDCC_NBYTES = 4 << 20


class _LazyFile:
    """An ``h5py.File`` opened on first use in the current process; never shared across fork/pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: h5py.File | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        self._pid = -1

    def get(self, name: str) -> h5py.Dataset:
        """Dataset ``name``; the lookup is cached because h5py's path lookup costs ~0.1 ms."""
        if self._file is None or self._pid != os.getpid():
            # After a fork the inherited handle belongs to the parent's HDF5 state: open our own.
            self._file = open_read(self.path, rdcc_nbytes=RDCC_NBYTES)
            self._datasets, self._pid = {}, os.getpid()
        ds = self._datasets.get(name)
        if ds is None:
            ds = self._datasets[name] = self._file[name]
        return ds

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_file": None, "_datasets": {}, "_pid": -1}


_M64 = (1 << 64) - 1


def _mix64(z: int) -> int:
    """splitmix64's finaliser: a bijective 64-bit hash with full avalanche."""
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def item_draws(seed: int, i: int, bounds: tuple[int, ...]) -> list[int]:
    """Uniform integers in ``[0, b)`` for each ``b`` in ``bounds``, a pure function of ``(seed, i)``.

    A counter-based generator (splitmix64 of ``(seed, i, draw number)``, mapped to ``[0, b)`` by
    Lemire's multiply-shift, bias < b / 2**64). Four draws cost ~6 µs here, against ~50-100 µs for
    ``np.random.default_rng([seed, i])`` per item, which showed up in the loader profile.
    """
    key = _mix64(_mix64(seed & _M64) ^ (i & _M64))
    return [(_mix64(key + n + 1) * b) >> 64 for n, b in enumerate(bounds)]


def transform_into(src: np.ndarray, code: int, dst: np.ndarray) -> None:
    """Write one of the 8 flip/rot90 variants of HWC ``src`` into ``dst``: ``code`` bit 0 flips left-right,
    bit 1 flips up-down, bit 2 transposes (applied in that order).

    OpenCV does it: numpy's strided copy of a flipped or transposed 192×192×3 uint8 view took ~300 µs,
    cv2.flip / cv2.transpose ~10-20 µs, which was most of the loader's time.
    """
    if code & 3:
        src = cv2.flip(src, {1: 1, 2: 0, 3: -1}[code & 3])
    if code & 4:
        out = cv2.transpose(src, dst=dst)
        if not np.may_share_memory(out, dst):  # OpenCV reallocates instead of failing on a mismatch
            dst[...] = out
    else:
        dst[...] = src


class PatchDataset(Dataset):
    """Random aligned ``(lr, hr)`` training pairs for one ``scale`` from a ``train.h5`` store."""

    def __init__(self, store: Path, *, scale: int, patch_size: int = 48, augment: bool = True,
                 seed: int = 0, length: int | None = None, degrade: DegradeConfig | None = None) -> None:
        self.info = open_store(Path(store), split="train")
        if scale not in self.info.scales:
            raise StoreError(f"{store}: has scales {list(self.info.scales)}, not x{scale}; "
                             f"re-run `srpipe prepare --set scales=[...]` including {scale}")
        if patch_size < 1 or patch_size * scale > self.info.hr_size:
            raise StoreError(f"{store}: HR patch {patch_size}×{scale} = {patch_size * scale} px does not fit "
                             f"its {self.info.hr_size}-px sub-images; use a smaller patch size")
        if self.info.n_patches == 0:
            raise StoreError(f"{store}: holds no training sub-images (were all inputs skipped?)")
        if length is not None and length < 1:
            raise ValueError(f"length must be positive, got {length}")
        self.scale, self.patch_size, self.augment, self.seed = scale, patch_size, augment, seed
        self.length = length
        self.degrade = degrade if degrade is not None and degrade.enabled else None
        self._file = _LazyFile(Path(store))

    def __len__(self) -> int:
        return self.length if self.length is not None else self.info.n_patches

    def draw(self, i: int) -> tuple[int, int, int, int]:
        """``(sub-image, lr_y, lr_x, transform code)`` of item ``i``: a pure function of ``(seed, i)``."""
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        n, room = self.info.n_patches, self.info.hr_size // self.scale - self.patch_size + 1
        draw_k, y, x, code = item_draws(self.seed, i, (n, room, room, 8))
        k = i if self.length is None else draw_k
        code = code if self.augment else 0
        return k, y, x, code

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        lr, hr = self.read_batch([int(i)])
        return to_float(lr)[0], to_float(hr)[0]

    def read_batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Items ``indices`` as uint8 NHWC arrays ``(lr, hr)`` (augmented, not yet converted to float)."""
        p, s, n = self.patch_size, self.scale, len(indices)
        lr = np.empty((n, p, p, 3), np.uint8)
        hr = np.empty((n, p * s, p * s, 3), np.uint8)
        lr_store, hr_store = self._file.get(f"lr_x{s}"), self._file.get("hr")
        for b, i in enumerate(indices):
            k, y, x, code = self.draw(int(i))
            # One hyperslab read each for LR and HR: h5py's per-call overhead is ~40 µs.
            transform_into(lr_store[k, y : y + p, x : x + p], code, lr[b])
            transform_into(hr_store[k, y * s : (y + p) * s, x * s : (x + p) * s], code, hr[b])
            if self.degrade is not None:
                lr[b] = deg.degrade(lr[b], hr[b], scale=s, cfg=self.degrade, seed=self.seed, item=int(i))
        return lr, hr


class _BatchReader(Dataset):
    """Item = a list of indices (from a BatchSampler) → one uint8 batch; what PatchLoader's workers run."""

    def __init__(self, dataset: PatchDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.dataset.read_batch(indices)


def _as_is(batch: Any) -> Any:
    # numpy arrays cross to the main process pickled through the worker's pipe. Tensors would go
    # through torch's shared memory instead, whose per-batch segment set-up and page faults cost
    # ~15 ms a batch on this VM (docs/performance.md).
    return batch


class PatchLoader:
    """Batches of :class:`PatchDataset` items: ``(lr, hr)`` float32 NCHW in [0, 1], equal to stacking
    ``dataset[i]`` for the batch's indices.

    Order: items ``start, start+1, ...`` (or ``indices``). Item ``i`` is random in itself (module
    docstring), so this sequential order is what makes runs exact: resuming after ``k`` batches is
    ``start = k × batch_size``; distributed ranks pass their own ``indices`` (e.g. ``range(start + rank,
    len(dataset), world_size)``).

    Speed: workers read whole batches and ship them as **uint8** numpy arrays; the conversion to float
    happens here, on ``device`` when one is given (a quarter of the bytes cross the pipe and PCIe; the
    uint8 batch is pinned for a non-blocking copy). ``channels_last`` returns that memory format (same
    shape and values). Measurements: docs/performance.md.
    """

    def __init__(self, dataset: PatchDataset, *, batch_size: int, workers: int, start: int = 0,
                 indices: Sequence[int] | None = None, device: str | torch.device | None = None,
                 channels_last: bool = False, drop_last: bool = True) -> None:
        order = indices if indices is not None else range(start, len(dataset))
        self.device = torch.device(device) if device is not None else None
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.loader = DataLoader(_BatchReader(dataset), sampler=BatchSampler(order, batch_size, drop_last),
                                 batch_size=None, collate_fn=_as_is, num_workers=workers,
                                 persistent_workers=workers > 0,
                                 prefetch_factor=4 if workers > 0 else None)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for lr, hr in self.loader:
            yield to_float(lr, self.device, self.memory_format), to_float(hr, self.device, self.memory_format)


def to_float(batch: np.ndarray | Tensor, device: torch.device | None = None,
             memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
    """uint8 NHWC → float32 NCHW in [0, 1] (correctly rounded x / 255), on ``device`` if given.

    On the CPU numpy does it single-threaded in one pass: torch's permuted ``.to(float32)`` was 1.5-12×
    slower here and its intra-op threads fought the loader workers for the 2 cores.
    """
    if device is not None and device.type != "cpu":
        host = torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch
        if device.type == "cuda":  # pinned host memory makes the copy asynchronous
            host = host.pin_memory()
        moved = host.to(device, non_blocking=True).permute(0, 3, 1, 2)
        return moved.to(torch.float32).div_(255.0).contiguous(memory_format=memory_format)
    n, h, w, _ = batch.shape
    out = torch.empty((n, 3, h, w), dtype=torch.float32, memory_format=memory_format)
    src = batch.numpy() if isinstance(batch, Tensor) else batch
    np.divide(src.transpose(0, 3, 1, 2), np.float32(255), out=out.numpy(), dtype=np.float32)
    return out


class ValidationSet(Dataset):
    """Whole validation images of a ``valid.h5`` store for one ``scale``: item → ``(name, lr, hr)``.

    ``name`` is the source's relative path without its extension (e.g. ``DIV2K_valid_HR/0801``).
    """

    def __init__(self, store: Path, *, scale: int, degrade: DegradeConfig | None = None,
                 seed: int = 0) -> None:
        self.info = open_store(Path(store), split="valid")
        if scale not in self.info.scales:
            raise StoreError(f"{store}: has scales {list(self.info.scales)}, not x{scale}; "
                             f"re-run `srpipe prepare --set scales=[...]` including {scale}")
        self.scale, self.seed = scale, seed
        self.degrade = degrade if degrade is not None and degrade.enabled else None
        paths = read_table(Path(store), "sources")["path"]
        self.names = [str(Path(p).with_suffix("").as_posix()) for p in paths]
        self._file = _LazyFile(Path(store))

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        s = self.scale
        hr_store = self._file.get(f"images/{i:06d}/hr")
        h, w = hr_store.shape[:2]
        lr = self._file.get(f"images/{i:06d}/lr_x{s}")[()]
        hr = hr_store[: h - h % s, : w - w % s]  # the HR that ``lr`` was made from
        if self.degrade is not None:
            lr = deg.degrade(lr, hr, scale=s, cfg=self.degrade, seed=self.seed, item=i,
                             stream=deg.VALID_STREAM)
        return self.names[i], lr, hr
