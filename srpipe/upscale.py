"""Upscalers: the one interface ``evaluate`` drives, so any model kind (PyTorch, bicubic, and later
ONNX or a self-ensemble wrapper) plugs in the same way.

Contract of an :class:`Upscaler`: attributes ``name`` (for reports) and ``scale``; calling it with an
8-bit RGB LR image (``H×W×3`` uint8, C-contiguous) returns the SR image ``(H·scale)×(W·scale)×3``,
either float32 on the [0, 1] scale (unclamped; preferred, so wrappers such as an 8-fold self-ensemble
can average before rounding) or uint8. :func:`upscale_image` adds the parts common to all of them:
gray input replicated to RGB and reduced back by the channel mean, and one final quantisation to
8-bit levels (clip, ×255, round) — what saving the image does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, cast

import numpy as np

from srpipe.errors import InputError, SrpipeError, UsageError
from srpipe.imaging.color import from_rgb_float
from srpipe.imaging.resize import imresize

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class Upscaler(Protocol):
    """Maps an ``H×W×3`` uint8 RGB image to its ``scale``× SR image (float32 [0, 1] or uint8)."""

    @property
    def name(self) -> str: ...

    @property
    def scale(self) -> int: ...

    def __call__(self, lr: np.ndarray, /) -> np.ndarray: ...


def upscale_image(upscaler: Upscaler, lr: np.ndarray) -> np.ndarray:
    """Run ``upscaler`` on an 8-bit gray (``H×W``) or RGB image; returns uint8 in the same layout.

    Quantisation is ``srpipe.imaging.color.from_rgb_float`` (what saving does): gray = channel mean,
    clip, ×255, round half to even. A NaN/inf output is an error, not a black image.
    """
    gray = lr.ndim == 2
    rgb = np.ascontiguousarray(np.repeat(lr[:, :, None], 3, axis=2) if gray else lr)
    sr = upscaler(rgb)
    expected = (lr.shape[0] * upscaler.scale, lr.shape[1] * upscaler.scale, 3)
    if sr.shape != expected:
        raise SrpipeError(f"{upscaler.name} returned {sr.shape} for a {lr.shape} input, expected {expected}")
    if sr.dtype == np.uint8:
        return sr.mean(axis=2).round().astype(np.uint8) if gray else sr
    try:
        return from_rgb_float(sr, lr)
    except ValueError as exc:
        raise SrpipeError(f"{upscaler.name}: {exc}") from exc


@dataclass(frozen=True)
class BicubicUpscaler:
    """MATLAB ``imresize(lr, scale, 'bicubic')`` (mirror boundary, uint8 rounding between passes)."""

    scale: int
    name: str = "bicubic"
    notes: tuple[str, ...] = ()

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        return imresize(lr, self.scale).astype(np.float32) / np.float32(255.0)


def resolve_device(device: Literal["auto", "cuda", "cpu"] | str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; an explicit ``cuda`` without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available to PyTorch here; use --device cpu")
    return device


class TorchUpscaler:
    """A PyTorch SR model (NCHW float [0, 1] in and out), whole image or tiled with weighted blending."""

    def __init__(self, model: torch.nn.Module, *, scale: int, name: str, device: str = "cpu", tile: int = 0,
                 overlap: int = 16) -> None:
        if tile and not 0 <= overlap < tile:
            raise UsageError(f"tile overlap must be in [0, tile): got overlap {overlap} for tile {tile}")
        self.model = model.to(device).eval()
        self.scale, self.name, self.device = scale, name, device
        self.tile, self.overlap = tile, overlap
        tiling = f", tiles of {tile} LR px, overlap {overlap}" if tile else ""
        self.notes = (f"PyTorch on {device}{tiling}",)

    def _forward(self, x: torch.Tensor) -> np.ndarray:
        import torch

        try:
            with torch.inference_mode():
                y = self.model(x)
        except torch.OutOfMemoryError as exc:
            raise SrpipeError(f"out of memory on {self.device} for a {x.shape[-1]}x{x.shape[-2]} input; "
                              "use a smaller --tile (e.g. --tile 256)") from exc
        return y[0].permute(1, 2, 0).float().cpu().numpy()

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        import torch

        from srpipe.infer.tiling import Blender, plan_tiles

        x = torch.from_numpy(np.require(lr, requirements=["C", "W"]))  # decoded images may be read-only
        x = x.to(self.device).permute(2, 0, 1)[None].float().div_(255.0)
        h, w, s = lr.shape[0], lr.shape[1], self.scale
        if not self.tile or (self.tile >= h and self.tile >= w):
            return self._forward(x)
        out = np.empty((h * s, w * s, 3), dtype=np.float32)

        def emit(row0: int, rows: np.ndarray) -> None:
            out[row0 : row0 + rows.shape[0]] = rows

        plan = plan_tiles(h, w, tile=self.tile, overlap=self.overlap)
        blender = Blender(plan, s, 3, emit)
        for t in plan.tiles:
            blender.add(t, self._forward(x[..., t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w]))
        blender.finish()
        return out


def dihedral_mean(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, *, axes: tuple[int, int],
                  out_axes: tuple[int, int] | None = None) -> np.ndarray:
    """Self-ensemble (EDSR+): the float32 mean of ``run`` over the 8 flips/rotations of ``x`` in the
    plane ``axes``, each output transformed back (in ``out_axes``, default ``axes``) before averaging,
    so the result is aligned with ``x``. uint8 outputs are taken as 8-bit levels (÷ 255)."""
    oy, ox = out_axes or axes
    total: np.ndarray | None = None
    for flip in (False, True):
        xf = np.flip(x, axes[1]) if flip else x
        for k in range(4):
            y = run(np.ascontiguousarray(np.rot90(xf, k, axes=axes)))
            y = y.astype(np.float32) / np.float32(255.0) if y.dtype == np.uint8 else y.astype(np.float32)
            y = np.rot90(y, -k, axes=(oy, ox))
            y = np.flip(y, ox) if flip else y
            total = y.copy() if total is None else total + y
    assert total is not None
    return total / np.float32(8.0)


class EnsembleUpscaler:
    """EDSR+ self-ensemble around any upscaler (:func:`dihedral_mean` over the image plane). Costs 8
    model runs."""

    def __init__(self, inner: Upscaler) -> None:
        self.inner, self.scale, self.name = inner, inner.scale, f"{inner.name}+ensemble"
        self.notes = (*getattr(inner, "notes", ()), "self-ensemble: mean of 8 flips/rotations")

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        return dihedral_mean(self.inner, lr, axes=(0, 1))


def open_upscaler(spec: str, *, scale: int = 0, device: str = "auto", tile: int = 0,
                  tile_overlap: int = 16, ensemble: bool = False, use_ema: bool = True) -> Upscaler:
    """The upscaler ``spec`` names: ``bicubic``; ``default`` (the bundled ONNX model of ``scale``); an
    ``.onnx`` export (ONNX Runtime, the same session code as ``srpipe process``); or a checkpoint / run
    directory / EDSR-PyTorch or BasicSR weight file (PyTorch). ``scale`` 0 takes the model's own; a
    different one is an error. ``ensemble`` wraps the model in the 8-fold self-ensemble. ``use_ema`` False
    takes a training checkpoint's raw weights instead of its EMA average (an error for other models)."""
    if not use_ema and (spec in ("bicubic", "default") or Path(spec).suffix.lower() == ".onnx"):
        raise UsageError(f"{spec}: raw weights can only be chosen for a training checkpoint or run directory")
    if spec == "bicubic":
        if scale < 2:
            raise UsageError("bicubic needs --scale (2 or more)")
        if ensemble:
            raise UsageError("--ensemble needs a model; bicubic has nothing to ensemble")
        return BicubicUpscaler(scale)
    path = Path(spec)
    if spec == "default" or path.suffix.lower() == ".onnx":
        return _open_onnx(spec, scale=scale, device=device, tile=tile, ensemble=ensemble)
    if not path.exists():
        raise InputError(f"{path}: no such model file or run directory (or use 'bicubic' or 'default')")
    from srpipe.model.convert import load_weights

    model, cfg = load_weights(path, use_ema=use_ema)
    if scale and scale != cfg.scale:
        raise UsageError(f"{path}: the model is x{cfg.scale} but --scale {scale} was asked for")
    dev = resolve_device(device)
    log.info("%s: EDSR x%d, %d blocks x %d features, on %s", path, cfg.scale, cfg.n_resblocks, cfg.n_feats,
             dev)
    name = (path.stem if path.is_file() else path.name) + ("" if use_ema else "-raw")
    torch_upscaler = TorchUpscaler(model, scale=cfg.scale, name=name,
                                   device=dev, tile=tile, overlap=tile_overlap)
    return EnsembleUpscaler(torch_upscaler) if ensemble else torch_upscaler


def _open_onnx(spec: str, *, scale: int, device: str, tile: int, ensemble: bool) -> Upscaler:
    """An ONNX model through ``srpipe.infer`` (tiles use the overlap measured at export)."""
    from srpipe.infer.session import find_model, read_model_info
    from srpipe.infer.upscaler import OnnxUpscaler
    from srpipe.workspace import Workspace

    if spec == "default":
        if scale < 2:
            raise UsageError("'default' needs --scale to pick the bundled model (2, 3 or 4)")
        path = find_model(scale, model="default", workspace=Workspace.resolve())
    else:
        path = Path(spec)
        if not path.is_file():
            raise InputError(f"{path}: no such ONNX model file")
    model_scale = read_model_info(path).scale
    if scale and scale != model_scale:
        raise UsageError(f"{path}: the model is x{model_scale} but --scale {scale} was asked for")
    known = device if device in ("auto", "cuda", "cpu") else "auto"
    onnx_device = cast(Literal["auto", "cuda", "cpu"], known)
    upscaler = OnnxUpscaler.open(path, device=onnx_device, tile=tile, ensemble=ensemble)
    upscaler.notes = (f"ONNX Runtime on {upscaler.provider}",)
    return upscaler
