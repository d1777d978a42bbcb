"""The tiled engine: one image in, its super-resolved copy out, through tiles and one ``Backend``.

Every upscale in srpipe goes through :class:`TiledUpscaler`: ``process`` and ``evaluate`` of ONNX
models (``OrtSession``), ``evaluate`` of PyTorch checkpoints and training validation
(``TorchBackend``).

Contract: ``upscaler(pixels)`` takes an ``H×W`` (gray), ``H×W×3`` (RGB) or ``H×W×4`` (RGBA) ``uint8`` or
``uint16`` array and returns ``(H·s)×(W·s)`` of the same layout and dtype. Colour goes through the
model as RGB floats in [0, 1] (``imaging.color``); gray is replicated to RGB and averaged back; 16-bit
stays float end to end (x / 65535 in, x · 65535 rounded out: no 8-bit step). Quantisation happens once,
at the end (clip, scale, round half to even). Alpha is upscaled by the *same model through the same
tiles*: it rides along as a second batch item (the alpha plane replicated to RGB, averaged back), so its
edges are as sharp as the colour's and the tiling cannot misalign them; it costs one extra model pass
per tile. The model rings near edges and corners, so an output pixel whose source pixel has alpha all
0 (all maximum) within ``ALPHA_RADIUS`` LR px is set to exactly 0 (the maximum): fully transparent
areas stay fully transparent and opaque ones opaque (``imaging.color.settled_alpha``).

Tiling (``tiling``): tiles of at most ``tile`` LR pixels overlapping by ``overlap``, blended with a
smooth weight-normalised window; ``tile=0`` runs the whole image in one call. The one overlap rule,
checked once when the upscaler is built (``check_tiling``): ``0 <= 2 · overlap <= tile`` unless
``tile`` is 0. Up to ``batch`` equal-size tiles go to the backend per call. ``ensemble`` averages the 8
flips/rotations of every tile (EDSR+, :func:`dihedral_mean`): 8× the compute. A device out-of-memory
error halves the tile, logs it, and retries the image; the smaller tile is kept for later images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srpipe.errors import UsageError
from srpipe.imaging.color import from_rgb_float, settled_alpha, split_alpha, to_rgb_float
from srpipe.infer.backends import Backend, BackendChoice, Precision, is_out_of_memory, open_onnx_backend
from srpipe.infer.session import Device
from srpipe.infer.tiling import Blender, plan_tiles

log = logging.getLogger(__name__)

MIN_TILE = 16  # below this an OOM is not worth fighting: the device is simply too small
ALPHA_RADIUS = 2  # LR px around a pixel whose alpha must be all 0 (all max) to keep it exactly so


def check_tiling(tile: int, overlap: int, batch: int = 1) -> None:
    """The one overlap rule; ``UsageError`` saying what to pass instead."""
    if tile < 0 or overlap < 0 or batch < 1:
        raise UsageError(f"tile ({tile}) and overlap ({overlap}) must be >= 0, batch ({batch}) >= 1")
    if tile and 2 * overlap > tile:
        raise UsageError(f"--tile {tile} is smaller than twice the tile overlap ({overlap} LR px); use "
                         f"--tile {2 * overlap} or more, or --tile 0 for whole images")


def exact_overlap(radius: int) -> int:
    """The overlap at which tiled output equals whole-image output (up to float summation order) for a
    model of receptive ``radius`` LR px: the blend gives zero weight to the outer third of every shared
    strip, so that third must cover the radius."""
    return 3 * radius


def dihedral_mean(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """Self-ensemble (EDSR+): the float32 mean of ``run`` over the 8 flips/rotations of the NCHW batch
    ``x`` in its image plane, each output transformed back before averaging, so the result is aligned
    with ``x``."""
    total: np.ndarray | None = None
    for flip in (False, True):
        xf = np.flip(x, 3) if flip else x
        for k in range(4):
            y = np.rot90(run(np.ascontiguousarray(np.rot90(xf, k, axes=(2, 3)))), -k, axes=(2, 3))
            y = np.flip(y, 3) if flip else y
            total = y.astype(np.float32) if total is None else total + y
    assert total is not None
    return total / np.float32(8.0)


@dataclass
class UpscaleStats:
    """Counters across all images: tiles computed, LR pixels computed and requested, OOM retries."""

    tiles: int = 0
    computed_lr_pixels: int = 0
    image_lr_pixels: int = 0
    oom_retries: int = 0


class TiledUpscaler:
    """Tiled super-resolution of whole images with one backend (see the module docstring)."""

    def __init__(self, backend: Backend, *, overlap: int, tile: int = 384, batch: int = 1,
                 ensemble: bool = False, name: str = "model") -> None:
        check_tiling(tile, overlap, batch)
        self.backend, self.scale, self.overlap = backend, backend.scale, overlap
        self.tile, self.batch, self.ensemble = tile, batch, ensemble
        self.stats = UpscaleStats()
        self.name = name + ("+ensemble" if ensemble else "")  # for reports (evaluate's Upscaler protocol)
        tiling = f"tiles of {tile} LR px, overlap {overlap}" if tile else "whole images"
        self.notes: tuple[str, ...] = (f"{backend.provider}, {tiling}",
                                       *(("self-ensemble: mean of 8 flips/rotations",) if ensemble else ()))

    @classmethod
    def open(cls, model: Path, *, device: Device = "auto", threads: int = 0, tile: int = 384,
             overlap: int = 0, batch: int = 0, ensemble: bool = False, io_binding: bool = True,
             cache_dir: Path | None = None, backend: BackendChoice = "auto",
             precision: Precision = "auto") -> TiledUpscaler:
        """``model`` run by ``backends.open_onnx_backend`` (ONNX Runtime or OpenVINO), tiled.
        ``overlap`` 0 = the model's own: its metadata, else measured once and cached in ``cache_dir``
        (``infer.measured``); with ``tile`` 0 nothing is measured. ``batch`` 0 = auto: 1 on the CPU,
        where batching measured no faster (docs/performance.md) and multiplies the activation memory;
        on CUDA 4 for tiles up to 256 px (small tiles alone leave a GPU idle; not measurable on our
        CPU-only machines), else 1."""
        from srpipe.infer.measured import overlap_for

        session = open_onnx_backend(model, device=device, backend=backend, precision=precision,
                                    threads=threads, io_binding=io_binding)
        batch = batch or (4 if session.on_cuda and 0 < tile <= 256 else 1)
        if overlap:
            session.descriptor = session.descriptor.with_overlap(overlap, "given")
        elif tile:
            session.descriptor = overlap_for(session.descriptor, cache_dir)
            overlap = session.descriptor.overlap
        return cls(session, overlap=overlap, tile=tile, batch=batch, ensemble=ensemble,
                   name=Path(model).stem)

    @property
    def provider(self) -> str:
        return self.backend.provider

    @property
    def overlap_source(self) -> str:
        """Where the overlap came from: "metadata", "measured" or "given" (always "given" for a backend
        without a model file, e.g. ``TorchBackend``)."""
        desc = getattr(self.backend, "descriptor", None)
        return desc.overlap_source if desc is not None else "given"

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        color, alpha = split_alpha(pixels)
        planes = [to_rgb_float(color)] + ([to_rgb_float(alpha)] if alpha is not None else [])
        h, w = pixels.shape[:2]
        s = self.scale
        out = np.empty((h * s, w * s, *pixels.shape[2:]), dtype=pixels.dtype)
        clear, opaque = settled_alpha(alpha, ALPHA_RADIUS) if alpha is not None else (None, None)

        def emit(row0: int, band: np.ndarray) -> None:
            rows = slice(row0, row0 + band.shape[0])
            if alpha is None:
                out[rows] = from_rgb_float(band, like=color)
                return
            out[rows, :, :3] = from_rgb_float(band[..., :3], like=color)
            a = from_rgb_float(band[..., 3:], like=alpha)
            assert clear is not None and opaque is not None
            source = np.arange(row0, row0 + band.shape[0]) // s  # nearest: the LR row of each HR row
            a[np.repeat(clear[source], s, axis=1)] = 0
            a[np.repeat(opaque[source], s, axis=1)] = np.iinfo(alpha.dtype).max
            out[rows, :, 3] = a

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
            return self.backend.run(x)
        return dihedral_mean(self.backend.run, x)
