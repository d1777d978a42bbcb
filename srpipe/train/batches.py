"""Where training batches come from: PatchLoader over the store, or the whole store on the device.

Contract shared by both sources: the batch of iteration ``k`` on rank ``r`` of ``world`` processes is
made of :class:`~srpipe.data.dataset.PatchDataset` items ``k·B + r·b … k·B + r·b + b − 1`` (``B`` the
global batch, ``b = B / world``), each a pure function of ``(seed, index)``. Hence

- resuming at iteration ``k`` needs no sampler state — just start at ``k``;
- ranks see disjoint patches, and world size N with per-rank batch b sees exactly the patches one
  process with batch N·b would;
- the two sources yield bit-identical batches (``tests/test_train.py`` checks it), so
  ``data_on_device`` is a pure speed option.

Batches arrive on the training device as float32 NCHW in [0, 1], both in channels_last when asked (the
model's output then has the target's layout, which keeps the loss's elementwise kernels fast).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import overload

import torch

from srpipe.data.dataset import PatchDataset, PatchLoader
from srpipe.data.store import open_read

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


def iteration_indices(iteration: int, *, batch_size: int, rank: int, world_size: int) -> range:
    """Dataset indices of ``rank``'s share of the global batch of ``iteration``."""
    per_rank = batch_size // world_size
    start = iteration * batch_size + rank * per_rank
    return range(start, start + per_rank)


class RankIndices(Sequence[int]):
    """Dataset indices of iterations ``start … stop − 1`` for one rank, in order (lazy, O(1) memory)."""

    def __init__(self, start: int, stop: int, *, batch_size: int, rank: int, world_size: int) -> None:
        self.start, self.stop = start, max(start, stop)
        self.batch_size, self.rank, self.per_rank = batch_size, rank, batch_size // world_size

    def __len__(self) -> int:
        return (self.stop - self.start) * self.per_rank

    @overload
    def __getitem__(self, pos: int) -> int: ...
    @overload
    def __getitem__(self, pos: slice) -> list[int]: ...

    def __getitem__(self, pos: int | slice) -> int | list[int]:
        if isinstance(pos, slice):
            return [self[i] for i in range(*pos.indices(len(self)))]
        if pos < 0:
            pos += len(self)
        if not 0 <= pos < len(self):
            raise IndexError(pos)
        it, j = divmod(pos, self.per_rank)
        return (self.start + it) * self.batch_size + self.rank * self.per_rank + j


def loader_batches(dataset: PatchDataset, *, start: int, stop: int, batch_size: int, rank: int,
                   world_size: int, workers: int, device: torch.device,
                   channels_last: bool) -> Iterator[Batch]:
    """Batches of iterations ``start … stop − 1`` through :class:`~srpipe.data.dataset.PatchLoader`
    (worker processes read whole batches as uint8; the float conversion happens on ``device``)."""
    indices = RankIndices(start, stop, batch_size=batch_size, rank=rank, world_size=world_size)
    loader = PatchLoader(dataset, batch_size=batch_size // world_size, workers=workers, indices=indices,
                         device=device, channels_last=channels_last)
    yield from loader


def store_bytes(store: Path, scale: int) -> int:
    """Bytes the HR and x``scale`` LR arrays of a training store occupy uncompressed."""
    with open_read(store) as f:
        return sum(int(f[name].size) * f[name].dtype.itemsize for name in ("hr", f"lr_x{scale}"))


def free_bytes(device: torch.device) -> int:
    """Memory available for holding the store: free GPU memory, or available RAM on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume it does not fit
        return 0


class DeviceBatches:
    """The whole store (uint8) held on ``device``; crops and flips/rotations done there with gathers.

    Crop positions and transforms come from ``dataset.draw(i)`` — the same draws the DataLoader path
    uses — so the batches are identical; only where the work happens differs.
    """

    def __init__(self, dataset: PatchDataset, device: torch.device) -> None:
        self.dataset, self.device = dataset, device
        s = dataset.scale
        with open_read(dataset.info.path) as f:
            self.hr = torch.from_numpy(f["hr"][()]).to(device)
            self.lr = torch.from_numpy(f[f"lr_x{s}"][()]).to(device)
        self.arange = torch.arange(dataset.patch_size * s, device=device)
        # Divide by a device tensor, not a Python scalar: CUDA turns scalar division into a multiply by
        # the reciprocal, which rounds differently from the loader's x / 255.
        self.levels = torch.tensor(255.0, device=device)

    def _gather(self, store: torch.Tensor, params: torch.Tensor, size: int, step: int) -> torch.Tensor:
        """B×size×size×3 crops: ``params`` rows are (image, y, x, transform code) in LR units."""
        k, y0, x0, code = (params[:, c].view(-1, 1, 1) for c in range(4))
        i, j = self.arange[:size].view(1, size, 1), self.arange[:size].view(1, 1, size)
        transpose, flip_h, flip_w = (code & 4) != 0, (code & 2) != 0, (code & 1) != 0
        # Output (i, j) reads source (r, c): undo the transpose, then the flips (dataset._transform order).
        r, c = torch.where(transpose, j, i), torch.where(transpose, i, j)
        r, c = torch.where(flip_h, size - 1 - r, r), torch.where(flip_w, size - 1 - c, c)
        return store[k, y0 * step + r, x0 * step + c]

    def batch(self, indices: range, channels_last: bool) -> Batch:
        p, s = self.dataset.patch_size, self.dataset.scale
        params = torch.tensor([self.dataset.draw(i) for i in indices], dtype=torch.int64)
        params = params.to(self.device, non_blocking=False)
        lr = self._gather(self.lr, params, p, 1).permute(0, 3, 1, 2).float() / self.levels
        hr = self._gather(self.hr, params, p * s, s).permute(0, 3, 1, 2).float() / self.levels
        # The permuted uint8 crops are NHWC in memory, so the float copies already are channels_last.
        return (lr, hr) if channels_last else (lr.contiguous(), hr.contiguous())


def device_batches(source: DeviceBatches, *, start: int, stop: int, batch_size: int, rank: int,
                   world_size: int, channels_last: bool) -> Iterator[Batch]:
    """Batches of iterations ``start … stop − 1`` from a :class:`DeviceBatches`."""
    for it in range(start, stop):
        yield source.batch(iteration_indices(it, batch_size=batch_size, rank=rank, world_size=world_size),
                           channels_last)


def training_batches(dataset: PatchDataset, *, start: int, stop: int, batch_size: int, rank: int,
                     world_size: int, workers: int, device: torch.device, channels_last: bool,
                     on_device: bool) -> tuple[Iterator[Batch], str]:
    """The batches of iterations ``start`` to ``stop`` and where they come from: ``"device"`` (the whole
    store held on ``device``: ``on_device`` asked and the store needs less than half its free memory)
    or ``"loader"`` (:func:`loader_batches`)."""
    if on_device:
        need = store_bytes(dataset.info.path, dataset.scale)
        free = free_bytes(device)
        if need < free // 2:  # leave room for the model, activations and the allocator's slack
            log.info("holding the store on %s (%.2f GiB)", device, need / 2**30)
            feed = device_batches(DeviceBatches(dataset, device), start=start, stop=stop,
                                  batch_size=batch_size, rank=rank, world_size=world_size,
                                  channels_last=channels_last)
            return feed, "device"
        log.warning("data_on_device: the store needs %.2f GiB but only %.2f GiB are free on %s; "
                    "using the DataLoader", need / 2**30, free / 2**30, device)
    return loader_batches(dataset, start=start, stop=stop, batch_size=batch_size, rank=rank,
                          world_size=world_size, workers=workers, device=device,
                          channels_last=channels_last), "loader"
