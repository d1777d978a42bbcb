"""``OnnxUpscaler``: one image in, its super-resolved copy out, through tiles and one ONNX Runtime session.

Contract: ``upscaler(pixels)`` takes an ``H×W`` (gray), ``H×W×3`` (RGB) or ``H×W×4`` (RGBA) ``uint8`` or
``uint16`` array and returns ``(H·s)×(W·s)`` of the same layout and dtype. Colour goes through the
model as RGB floats in [0, 1] (``imaging.color``); gray is replicated to RGB and averaged back; 16-bit
stays float end to end (x / 65535 in, x · 65535 rounded out: no 8-bit step). Alpha is upscaled by the
*same model through the same tiles*: it rides along as a second batch item (the alpha plane replicated
to RGB, averaged back), so its edges are as sharp as the colour's and the tiling cannot misalign them;
it costs one extra model pass per tile.

Tiling (``tiling``): tiles of at most ``tile`` LR pixels overlapping by ``overlap`` (the model's
measured recommendation by default), blended with a smooth weight-normalised window; ``tile=0`` runs
the whole image in one call. Up to ``batch`` equal-size tiles go to the session per call. ``ensemble``
averages the 8 flips/rotations of every tile (EDSR+): 8× the compute. A device out-of-memory error
halves the tile, logs it, and retries the image; the smaller tile is kept for later images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from srpipe.errors import UsageError
from srpipe.imaging.color import from_rgb_float, split_alpha, to_rgb_float
from srpipe.infer.session import Device, OrtSession, is_out_of_memory
from srpipe.infer.tiling import Blender, plan_tiles
from srpipe.upscale import dihedral_mean

log = logging.getLogger(__name__)

MIN_TILE = 16  # below this an OOM is not worth fighting: the device is simply too small


class Runner(Protocol):
    """What the upscaler needs from a session (``OrtSession`` satisfies it; tests may fake it)."""

    provider: str

    def run(self, x: np.ndarray) -> np.ndarray:
        """NCHW float32 batch → NCHW float32 at ``scale`` × the size."""
        ...


@dataclass
class UpscaleStats:
    """Counters across all images: tiles computed, LR pixels computed and requested, OOM retries."""

    tiles: int = 0
    computed_lr_pixels: int = 0
    image_lr_pixels: int = 0
    oom_retries: int = 0


class OnnxUpscaler:
    """Tiled super-resolution of whole images with one session (see the module docstring)."""

    def __init__(self, session: Runner, *, scale: int, overlap: int, tile: int = 384, batch: int = 1,
                 ensemble: bool = False) -> None:
        if tile < 0 or batch < 1 or overlap < 0:
            raise UsageError(f"tile ({tile}) and overlap ({overlap}) must be >= 0, batch ({batch}) >= 1")
        if tile and 2 * overlap > tile:
            raise UsageError(f"--tile {tile} is smaller than twice the overlap ({overlap}); use --tile "
                             f"{2 * overlap} or more, or --tile 0 for whole images")
        self.session, self.scale, self.overlap = session, scale, overlap
        self.tile, self.batch, self.ensemble = tile, batch, ensemble
        self.stats = UpscaleStats()
        self.name = "onnx" + ("+ensemble" if ensemble else "")  # for reports (evaluate's Upscaler protocol)
        self.notes: tuple[str, ...] = ()  # lines for evaluate's report (srpipe.upscale sets them)

    @classmethod
    def open(cls, model: Path, *, device: Device = "auto", threads: int = 0, tile: int = 384,
             overlap: int = 0, batch: int = 0, ensemble: bool = False,
             io_binding: bool = True) -> OnnxUpscaler:
        """Create the session for ``model``; ``overlap`` 0 = the model's recommendation; ``batch`` 0 =
        auto: 1 on the CPU, where batching measured no faster (docs/performance.md) and multiplies the
        activation memory; on CUDA 4 for tiles up to 256 px (small tiles alone leave a GPU idle; not
        measurable on our CPU-only machines), else 1."""
        session = OrtSession(model, device=device, threads=threads, io_binding=io_binding)
        batch = batch or (4 if session.on_cuda and 0 < tile <= 256 else 1)
        if not overlap:
            overlap = session.info.overlap
            if not overlap and tile:
                overlap = 16
                log.warning("%s has no srpipe metadata: using a tile overlap of 16 LR px (not measured "
                            "for this model; set --overlap)", model)
        upscaler = cls(session, scale=session.info.scale, overlap=overlap, tile=tile, batch=batch,
                       ensemble=ensemble)
        upscaler.name = Path(model).stem + ("+ensemble" if ensemble else "")
        return upscaler

    @property
    def provider(self) -> str:
        return self.session.provider

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        color, alpha = split_alpha(pixels)
        planes = [to_rgb_float(color)] + ([to_rgb_float(alpha)] if alpha is not None else [])
        h, w = pixels.shape[:2]
        s = self.scale
        out = np.empty((h * s, w * s, *pixels.shape[2:]), dtype=pixels.dtype)

        def emit(row0: int, band: np.ndarray) -> None:
            rows = slice(row0, row0 + band.shape[0])
            if alpha is None:
                out[rows] = from_rgb_float(band, like=color)
            else:
                out[rows, :, :3] = from_rgb_float(band[..., :3], like=color)
                out[rows, :, 3] = from_rgb_float(band[..., 3:], like=alpha)

        stacked = np.concatenate(planes, axis=2) if len(planes) > 1 else planes[0]
        self.upscale_planes(stacked, emit)
        self.stats.image_lr_pixels += h * w
        return out

    def upscale_planes(self, planes: np.ndarray, emit: Callable[[int, np.ndarray], None]) -> None:
        """Upscale ``H×W×3k`` float32 (k RGB planes, each a batch item) and ``emit`` finished HR rows.

        After an out-of-memory error the image is redone with half the tile, so rows already emitted
        arrive again: ``emit`` must tolerate that (writing into an array, as ``__call__`` does, is fine).
        """
        while True:
            try:
                self._run_plan(planes, self.tile, emit)
                return
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                smaller = (self.tile or max(planes.shape[:2])) // 2
                if smaller < max(MIN_TILE, 2 * self.overlap):
                    raise
                log.warning("device out of memory with tile %s; retrying with tile %d",
                            self.tile or "whole image", smaller)
                self.tile = smaller
                self.stats.oom_retries += 1

    def _run_plan(self, planes: np.ndarray, tile: int, emit: Callable[[int, np.ndarray], None]) -> None:
        h, w, c = planes.shape
        k, s = c // 3, self.scale
        plan = plan_tiles(h, w, tile=tile, overlap=self.overlap if tile else 0)
        th, tw = plan.tile_shape
        blender = Blender(plan, s, c, emit)
        tiles = plan.tiles
        for i in range(0, len(tiles), self.batch):
            chunk = tiles[i:i + self.batch]
            n = len(chunk)
            x = np.stack([planes[t.y0:t.y0 + th, t.x0:t.x0 + tw] for t in chunk])  # n, th, tw, 3k
            # k planes per tile become k batch items: (n, th, tw, k, 3) -> (n·k, 3, th, tw)
            x = np.ascontiguousarray(x.reshape(n, th, tw, k, 3).transpose(0, 3, 4, 1, 2))
            x = x.reshape(n * k, 3, th, tw)
            y = self._forward(x)
            y = y.reshape(n, k, 3, th * s, tw * s).transpose(0, 3, 4, 1, 2).reshape(n, th * s, tw * s, c)
            for t, yt in zip(chunk, y, strict=True):
                blender.add(t, yt)
            self.stats.tiles += n
            self.stats.computed_lr_pixels += n * th * tw
        blender.finish()

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """The model on a batch, or the mean over the 8 dihedral transforms (self-ensemble)."""
        if not self.ensemble:
            return self.session.run(x)
        return dihedral_mean(self.session.run, x, axes=(2, 3))
