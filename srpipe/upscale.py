"""Upscalers: the one interface ``evaluate`` drives, and :func:`open_upscaler`, which builds one from a
name (``bicubic``, ``default``), an ONNX file or a PyTorch checkpoint.

Contract of an :class:`Upscaler`: attributes ``name`` (for reports), ``scale`` and ``notes``; calling it
with an 8-bit gray (``H×W``) or RGB (``H×W×3``) LR image returns the 8-bit SR image in the same layout,
``(H·scale)×(W·scale)[×3]``. Every model runs through the one tiled engine
(``srpipe.infer.upscaler.TiledUpscaler``: ONNX Runtime or PyTorch backend, the self-ensemble inside,
one quantisation at the end); bicubic is MATLAB's ``imresize``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import numpy as np

from srpipe.errors import InputError, SrpipeError, UsageError
from srpipe.hardware import resolve_device
from srpipe.imaging.resize import imresize
from srpipe.infer.backends import BackendChoice, Precision, TorchBackend
from srpipe.infer.session import BUNDLED_NAMES, Device, find_model
from srpipe.infer.upscaler import TiledUpscaler, exact_overlap
from srpipe.workspace import Workspace

log = logging.getLogger(__name__)


class Upscaler(Protocol):
    """Maps an ``H×W`` or ``H×W×3`` uint8 image to its ``scale``× SR image, uint8 in the same layout."""

    @property
    def name(self) -> str: ...

    @property
    def scale(self) -> int: ...

    @property
    def notes(self) -> tuple[str, ...]: ...

    def __call__(self, lr: np.ndarray, /) -> np.ndarray: ...


def upscale_image(upscaler: Upscaler, lr: np.ndarray) -> np.ndarray:
    """Run ``upscaler`` on an 8-bit gray (``H×W``) or RGB image and check what comes back: uint8 of
    the same layout at ``scale`` × the size. A NaN/inf model output is an error, not a black image."""
    try:
        sr = upscaler(np.ascontiguousarray(lr))
    except ValueError as exc:
        raise SrpipeError(f"{upscaler.name}: {exc}") from exc
    expected = (lr.shape[0] * upscaler.scale, lr.shape[1] * upscaler.scale, *lr.shape[2:])
    if sr.shape != expected or sr.dtype != np.uint8:
        raise SrpipeError(f"{upscaler.name} returned {sr.dtype} {sr.shape} for a {lr.shape} input, "
                          f"expected uint8 {expected}")
    return sr


@dataclass(frozen=True)
class BicubicUpscaler:
    """MATLAB ``imresize(lr, scale, 'bicubic')`` (mirror boundary, uint8 rounding between passes)."""

    scale: int
    name: str = "bicubic"
    notes: tuple[str, ...] = ()

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        return imresize(lr, self.scale)


def open_upscaler(spec: str | None, *, workspace: Workspace, scale: int = 0, device: str = "auto",
                  tile: int = 0, tile_overlap: int = 0, ensemble: bool = False, use_ema: bool = True,
                  backend: BackendChoice = "auto", precision: Precision = "fp32",
                  strength: float | str | None = None) -> Upscaler:
    """The upscaler ``spec`` names: ``bicubic``; a model as ``srpipe process`` chooses it (``default``:
    the bundled model of ``scale``; None: ``process``'s automatic choice, the newest workspace export of
    ``scale`` (4 when 0) that is not an install check, else the bundled one; an ``.onnx`` file; see
    ``infer.session.find_model``), run by ONNX
    Runtime; or a checkpoint / run directory / EDSR-PyTorch or BasicSR weight file, run by PyTorch.
    ``scale`` 0 takes the model's own; a different one is an error. ``tile_overlap`` 0 = the model's
    (ONNX metadata, else measured like export does). ``ensemble``: the 8-fold self-ensemble.
    ``backend`` and ``precision`` choose what runs an ONNX model (``infer.backends.open_onnx_backend``);
    PyTorch models run in fp32.
    ``use_ema`` False takes a training checkpoint's raw weights instead of its EMA average.
    ``photo``: the bundled photo model blended with the default one at ``strength`` (None = auto:
    the caller calls ``choose`` per image; ``srpipe.photo.strength``); other models refuse a strength."""
    if strength is not None and spec != "photo":
        raise UsageError("--strength needs the photo model (MODEL photo): it blends the bundled default "
                         "and photo models of the scale")
    is_onnx = spec is None or spec in BUNDLED_NAMES or Path(spec).suffix.lower() == ".onnx"
    if not use_ema and (spec == "bicubic" or is_onnx):
        raise UsageError(f"{spec or 'an ONNX model'}: raw weights can only be chosen for a training "
                         "checkpoint or run directory")
    if spec == "bicubic":
        if scale < 2:
            raise UsageError("bicubic needs --scale (2 or more)")
        if ensemble:
            raise UsageError("--ensemble needs a model; bicubic has nothing to ensemble")
        return BicubicUpscaler(scale)
    if spec == "photo":
        return _open_photo(workspace=workspace, scale=scale, device=device, tile=tile, overlap=tile_overlap,
                           ensemble=ensemble, backend=backend, precision=precision, strength=strength)
    if spec is None or is_onnx:
        return _open_onnx(spec, workspace=workspace, scale=scale, device=device, tile=tile,
                          overlap=tile_overlap, ensemble=ensemble, backend=backend, precision=precision)
    if precision == "bf16":
        raise UsageError(f"{spec}: --precision bf16 applies to ONNX models (OpenVINO backend)")
    return _open_torch(Path(spec), scale=scale, device=device, tile=tile, overlap=tile_overlap,
                       ensemble=ensemble, use_ema=use_ema)


def _open_onnx(spec: str | None, *, workspace: Workspace, scale: int, device: str, tile: int, overlap: int,
               ensemble: bool, backend: BackendChoice, precision: Precision) -> TiledUpscaler:
    if spec == "default" and not scale:
        log.info("no --scale given: the bundled x4 model (as srpipe process and srpipe info choose)")
    path = find_model(scale, model=spec, workspace=workspace)
    known = device if device in ("auto", "cuda", "cpu") else "auto"
    upscaler = TiledUpscaler.open(path, device=cast(Device, known), tile=tile, overlap=overlap,
                                  ensemble=ensemble, cache_dir=workspace.cache, backend=backend,
                                  precision=precision)
    if scale and scale != upscaler.scale:
        raise UsageError(f"{path}: the model is x{upscaler.scale} but --scale {scale} was asked for")
    return upscaler


def _open_photo(*, workspace: Workspace, scale: int, device: str, tile: int, overlap: int, ensemble: bool,
                backend: BackendChoice, precision: Precision, strength: float | str | None) -> Upscaler:
    from srpipe.photo.strength import open_photo

    known = cast(Device, device if device in ("auto", "cuda", "cpu") else "auto")

    def opener(path: Path) -> TiledUpscaler:
        return TiledUpscaler.open(path, device=known, tile=tile, overlap=overlap, ensemble=ensemble,
                                  cache_dir=workspace.cache, backend=backend, precision=precision)

    if not scale:
        log.info("no --scale given: the bundled x4 photo model (as srpipe process and srpipe info choose)")
    return open_photo(scale, strength, opener=opener, cache_dir=workspace.cache)


def _open_torch(path: Path, *, scale: int, device: str, tile: int, overlap: int, ensemble: bool,
                use_ema: bool) -> TiledUpscaler:
    if not path.exists():
        raise InputError(f"{path}: no such model file or run directory (or use 'bicubic' or 'default')")
    from srpipe.model.checkpoint import load_model
    from srpipe.model.edsr import receptive_radius

    model, cfg = load_model(path, use_ema=use_ema)
    if scale and scale != cfg.scale:
        raise UsageError(f"{path}: the model is x{cfg.scale} but --scale {scale} was asked for")
    dev = resolve_device(device)
    log.info("%s: EDSR x%d, %d blocks x %d features, on %s", path, cfg.scale, cfg.n_resblocks, cfg.n_feats,
             dev)
    backend = TorchBackend(model.to(dev).eval(), scale=cfg.scale, device=dev)
    if not overlap and tile:
        overlap = exact_overlap(receptive_radius(cfg))
    name = (path.stem if path.is_file() else path.name) + ("" if use_ema else "-raw")
    return TiledUpscaler(backend, overlap=overlap, tile=tile, ensemble=ensemble, name=name)
