"""``--strength``: one upscaler per distinct strength between the default and the photo model.

Contract of :class:`StrengthUpscaler`: :meth:`choose` takes a photo (its path and decoded pixels),
decides its strength (the fixed one, or ``auto``: :func:`srpipe.photo.estimate.estimate`) and makes the
matching model current; calling the object then upscales with it, like a ``TiledUpscaler``. Models are
built by :func:`srpipe.photo.blend.blend` (cached on disk) and opened by ``opener`` on first use; at most
``keep`` stay open (least recently used first out), so a folder of mixed photos costs one model build per
distinct strength (strengths are rounded to ``estimate.STEP``). The strength-1 model (the photo model
itself) is opened up front: a bad model fails before any file, and it gives the report its provider,
tile and overlap (the same for every strength: one architecture).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from srpipe.infer.session import bundled_model
from srpipe.infer.upscaler import TiledUpscaler, UpscaleStats
from srpipe.photo.blend import blend
from srpipe.photo.estimate import Estimate, estimate

log = logging.getLogger(__name__)


def open_photo(scale: int, strength: float | str | None, *, opener: Callable[[Path], TiledUpscaler],
               cache_dir: Path) -> StrengthUpscaler:
    """The bundled photo model of ``scale`` (4 when 0) against the bundled default one; ``strength``
    None or ``"auto"`` = auto."""
    scale = scale or 4
    photo, default = bundled_model("photo", scale), bundled_model("default", scale)
    fixed = None if strength in (None, "auto") else float(strength)  # type: ignore[arg-type]
    return StrengthUpscaler(default, photo, strength=fixed, opener=opener, cache_dir=cache_dir)


class StrengthUpscaler:
    """See the module docstring. ``strength`` None = auto."""

    def __init__(self, default: Path, photo: Path, *, strength: float | None,
                 opener: Callable[[Path], TiledUpscaler], cache_dir: Path, keep: int = 2) -> None:
        self.default, self.photo, self.fixed = default, photo, strength
        self.opener, self.cache_dir, self.keep = opener, cache_dir, max(1, keep)
        self._open: OrderedDict[float, TiledUpscaler] = OrderedDict()
        self._closed = UpscaleStats()
        first = self._get(1.0)
        self.scale, self.overlap, self.batch, self.tile = first.scale, first.overlap, first.batch, first.tile
        self.ensemble, self.provider = first.ensemble, first.provider
        self.overlap_source = first.overlap_source
        self.name = f"{photo.stem} (strength {'auto' if strength is None else f'{strength:g}'})"
        self.current = self._get(strength) if strength is not None else first
        self.last: Estimate | None = None

    def _get(self, strength: float) -> TiledUpscaler:
        if strength in self._open:
            self._open.move_to_end(strength)
            return self._open[strength]
        path = blend(self.default, self.photo, strength, self.cache_dir)
        log.info("strength %g: %s", strength, path)
        up = self.opener(path)
        if self._open:
            up.tile = min(up.tile, next(iter(self._open.values())).tile) or up.tile  # an OOM halving holds
        self._open[strength] = up
        while len(self._open) > self.keep:
            _, old = self._open.popitem(last=False)
            self._retire(old)
        return up

    def _retire(self, up: TiledUpscaler) -> None:
        _add(self._closed, up.stats)
        close = getattr(up.backend, "close", None)
        if close is not None:
            close()

    def choose(self, source: Path | None, pixels: np.ndarray) -> Estimate:
        """Make the model for this photo current; returns what was estimated (strength included)."""
        est = estimate(source, pixels)
        if self.fixed is not None:
            est = Estimate(est.jpeg_quality, est.jpeg_exact, est.noise_sigma, self.fixed)
        self.current = self._get(est.strength)
        self.last = est
        return est

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        out = self.current(pixels)
        self.tile = self.current.tile
        return out

    @property
    def stats(self) -> UpscaleStats:
        total = UpscaleStats(**vars(self._closed))
        for up in self._open.values():
            _add(total, up.stats)
        return total

    @property
    def notes(self) -> tuple[str, ...]:
        return self.current.notes

    def close(self) -> None:
        while self._open:
            self._retire(self._open.popitem(last=False)[1])


def _add(total: UpscaleStats, more: UpscaleStats) -> None:
    """Add ``more``'s counters into ``total``."""
    for name, value in vars(more).items():
        setattr(total, name, getattr(total, name) + value)
