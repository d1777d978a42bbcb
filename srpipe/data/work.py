"""Per-image work of ``srpipe prepare``, run in pool processes: hash, decode, convert, downscale, compare.

:func:`process_image` never raises for a bad file: it returns :class:`Skip` with a one-line reason.
It returns whole arrays (not sub-images: they overlap, so they would be up to 4× more bytes to send);
the parent cuts sub-images with :meth:`Decoded.patches` while it writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from srpipe.batch import failure_reason
from srpipe.digest import file_sha256
from srpipe.errors import SrpipeError

VALID_MIN_FACTOR = 8  # validation images need a side >= 8 x the largest scale (see docs/prepare.md)


@dataclass(frozen=True)
class Task:
    """One input image and the settings needed to process it."""

    path: Path
    rel: str
    official_lr: dict[int, Path]
    split: str
    scales: tuple[int, ...]
    hr_size: int
    stride: int
    boundary: str
    max_pixels: int


@dataclass(frozen=True)
class Skip:
    """An input not used: ``kind`` is "unreadable" (a bad file) or "too-small" (fine, but too small)."""

    rel: str
    kind: str
    reason: str
    megapixels: float = 0.0


@dataclass(frozen=True)
class Decoded:
    """A usable image: ``hr`` (H×W×3 uint8, whole), ``lrs[s]`` from its modcrop to ``s``, and provenance.

    ``official`` rows are ``(scale, max_abs, differing pixels, pixels)``; ``max_abs`` is -1 when the
    official file's size differs from srpipe's LR and -2 when it cannot be read.
    """

    rel: str
    sha256: str
    shape: tuple[int, int, int]  # of the decoded file: H, W, channels
    bit_depth: int
    hr: np.ndarray
    lrs: dict[int, np.ndarray]
    grid: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())  # sub-image offsets (train only)
    hr_size: int = 0
    official: list[tuple[int, int, int, int]] = field(default_factory=list)

    @property
    def megapixels(self) -> float:
        return self.shape[0] * self.shape[1] / 1e6

    def patches(self) -> tuple[np.ndarray, dict[int, np.ndarray], np.ndarray]:
        """Train sub-images: HR ``(k, P, P, 3)``, LR per scale ``(k, P/s, P/s, 3)``, boxes ``(k, 4)``
        as ``(y0, x0, y1, x1)`` in HR pixels, row-major over the grid."""
        p = self.hr_size
        boxes = np.array([(y, x, y + p, x + p) for y in self.grid[0] for x in self.grid[1]], np.int32)
        hr = np.stack([self.hr[y0:y1, x0:x1] for y0, x0, y1, x1 in boxes])
        lrs = {s: np.stack([lr[y0 // s : y1 // s, x0 // s : x1 // s] for y0, x0, y1, x1 in boxes])
               for s, lr in self.lrs.items()}
        return hr, lrs, boxes


def grid_offsets(length: int, size: int, stride: int) -> tuple[int, ...]:
    """Offsets ``0, stride, 2·stride, ...`` plus one flush with the end, so every pixel is covered."""
    offsets = list(range(0, length - size + 1, stride))
    if offsets and offsets[-1] + size < length:
        offsets.append(length - size)
    return tuple(offsets)


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """The training colour rule: drop alpha, 16-bit → round(x / 257); gray stays ``H×W`` (replicated
    to RGB after resizing, which gives the same values at a third of the cost)."""
    from srpipe.imaging.color import to_uint8

    if pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[..., :3]
    return np.ascontiguousarray(to_uint8(pixels))


def _rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a


def process_image(task: Task) -> Decoded | Skip:
    """Decode ``task.path`` and compute its LR images (see the module docstring)."""
    from srpipe.imaging.io import read_image
    from srpipe.imaging.resize import imresize, modcrop

    try:
        digest = file_sha256(task.path)
        image = read_image(task.path, max_pixels=task.max_pixels)
    except SrpipeError as exc:
        return Skip(task.rel, "unreadable", failure_reason(exc, task.path))
    except OSError as exc:
        return Skip(task.rel, "unreadable", f"cannot read: {failure_reason(exc, task.path)}")
    pixels = image.pixels
    h, w = pixels.shape[:2]
    shape = (h, w, 1 if pixels.ndim == 2 else pixels.shape[2])
    if task.split == "train":
        lcm = math.lcm(*task.scales)
        if min(h, w) < task.hr_size:
            reason = f"smaller than hr_size {task.hr_size} ({w}×{h} px)"
            return Skip(task.rel, "too-small", reason, h * w / 1e6)
        grid = (grid_offsets(h - h % lcm, task.hr_size, task.stride),
                grid_offsets(w - w % lcm, task.hr_size, task.stride))
    else:
        least = VALID_MIN_FACTOR * max(task.scales)
        if min(h, w) < least:
            reason = f"smaller than {least} px, the validation minimum ({w}×{h} px)"
            return Skip(task.rel, "too-small", reason, h * w / 1e6)
        grid = ((), ())
    try:
        rgb8 = to_rgb8(pixels)
        lrs = {s: imresize(modcrop(rgb8, s), 1 / s, boundary=task.boundary) for s in task.scales}  # type: ignore[arg-type]
    except MemoryError:
        return Skip(task.rel, "unreadable", f"not enough memory to process {w}×{h} px", h * w / 1e6)
    official = [_compare(s, lrs[s], path, task.max_pixels) for s, path in sorted(task.official_lr.items())]
    return Decoded(rel=task.rel, sha256=digest, shape=shape, bit_depth=image.bit_depth, hr=_rgb(rgb8),
                   lrs={s: _rgb(lr) for s, lr in lrs.items()}, grid=grid, hr_size=task.hr_size,
                   official=official)


def _compare(scale: int, ours: np.ndarray, path: Path, max_pixels: int) -> tuple[int, int, int, int]:
    """``(scale, max |Δ|, differing pixels, pixels)`` of srpipe's LR against an official LR file."""
    from srpipe.imaging.io import read_image

    try:
        theirs = to_rgb8(read_image(path, max_pixels=max_pixels).pixels)
    except SrpipeError:
        return (scale, -2, 0, 0)
    if theirs.shape != ours.shape:
        return (scale, -1, 0, 0)
    delta = np.abs(theirs.astype(np.int16) - ours.astype(np.int16))
    differing = delta.reshape(ours.shape[0], ours.shape[1], -1).max(axis=2) > 0
    return (scale, int(delta.max(initial=0)), int(differing.sum()), int(differing.size))
